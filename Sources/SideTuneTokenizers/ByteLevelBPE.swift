import Foundation
import SideTuneFormats

/// Byte-level BPE (GPT-2 style) as Hugging Face builds it from a GGUF file whose
/// `tokenizer.ggml.model` is "gpt2" (transformers' `byte_level_tokenizer` + GPT2Tokenizer):
///
/// 1. CONTROL tokens (`token_type` 3, e.g. `<|im_start|>`) are cut out of the raw text whole
///    (leftmost, longest first) and map straight to their ids.
/// 2. The rest is split by GPT-2's regex
///    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
///    (HF `ByteLevel(add_prefix_space=False, use_regex=True)`; transformers maps no special split
///    regex for `tokenizer.ggml.pre` = "smollm", so this is the one it uses, without digit
///    splitting: digits still come out one per token because the vocabulary has no digit merges).
/// 3. Each piece's UTF-8 bytes are spelled with GPT-2's byte -> printable-character table and
///    merged pairwise, lowest merge rank first (leftmost on ties), as the `merges` list orders them.
///
/// No normaliser, and no BOS/EOS added (`tokenizer.ggml.add_bos_token` is false for SmolLM2).
/// Immutable after loading: share one instance between threads.
public final class ByteLevelBPE: Sendable {
    public let tokens: [String]
    public let bosId: Int32?
    public let eosId: Int32?
    public let padId: Int32?
    public let unkId: Int32?
    /// `tokenizer.ggml.pre` as stored (informational; see the type's documentation).
    public let preTokenizer: String
    /// The chat template string stored in the file, if any.
    public let chatTemplate: String?
    /// CONTROL tokens matched whole in the text.
    public let specialTokens: [String: Int32]
    public let specialIds: Set<Int32>

    private let vocab: [String: Int32]
    /// (left id << 32 | right id) -> (rank, merged id).
    private let merges: [UInt64: (rank: Int32, id: Int32)]
    /// Token id of each byte's one-character spelling.
    private let byteIds: [Int32]
    /// Bytes each token stands for (its spelling mapped back through the byte table).
    private let tokenBytes: [[UInt8]]
    private let specialsByLength: [(bytes: [UInt8], id: Int32)]

    public var vocabSize: Int { tokens.count }
    public func id(of token: String) -> Int32? { vocab[token] }
    public func token(of id: Int32) -> String? { id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : nil }

    /// - Parameters:
    ///   - tokens: the vocabulary in id order, spelled in GPT-2's byte alphabet.
    ///   - merges: "left right" pairs, best first.
    ///   - tokenTypes: llama.cpp token types (1 normal, 3 control, 4 user-defined, ...), same count as tokens.
    public init(tokens: [String], merges mergeList: [String], tokenTypes: [Int]?, bosId: Int? = nil, eosId: Int? = nil,
                padId: Int? = nil, unkId: Int? = nil, preTokenizer: String = "gpt2", chatTemplate: String? = nil,
                source: String = "<tokenizer>") throws {
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw TokenizerError(file: source, "token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        let table = ByteLevelBPE.byteToUnicode
        let alphabet = Set(table)
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(tokens.count)
        var spelled = tokens
        for (i, t) in tokens.enumerated() {
            // As transformers does: a token using characters outside the byte alphabet is stored as
            // raw text; spell its UTF-8 bytes. A later duplicate wins (Python dict semantics).
            if !t.unicodeScalars.allSatisfy({ alphabet.contains($0) }) {
                spelled[i] = String(String.UnicodeScalarView(t.utf8.map { table[Int($0)] }))
            }
            vocab[spelled[i]] = Int32(i)
        }
        // Bytes without a token (SmolLM2 lacks a few control bytes) get -1 and are dropped, as HF's
        // BPE drops characters it cannot look up when there is no unk token.
        var byteIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { byteIds[b] = vocab[String(table[b])] ?? -1 }
        guard byteIds.filter({ $0 >= 0 }).count >= 128 else {
            throw TokenizerError(file: source, "the vocabulary has tokens for only \(byteIds.filter { $0 >= 0 }.count) of the 256 byte characters: not a byte-level BPE vocabulary")
        }
        var merges: [UInt64: (rank: Int32, id: Int32)] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, m) in mergeList.enumerated() {
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError(file: source, line: rank + 1, "merge \(String(reflecting: m)) is not two tokens separated by one space")
            }
            guard let a = vocab[String(parts[0])], let b = vocab[String(parts[1])], let ab = vocab[String(parts[0] + parts[1])] else {
                throw TokenizerError(file: source, line: rank + 1, "merge \(String(reflecting: m)) uses a token that is not in the vocabulary")
            }
            let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
            if merges[key] == nil { merges[key] = (Int32(rank), ab) }
        }
        var inverse = [UInt8](repeating: 0, count: 0x180)
        for (b, s) in table.enumerated() { inverse[Int(s.value)] = UInt8(b) }
        tokenBytes = spelled.map { s in
            s.unicodeScalars.allSatisfy({ $0.value < 0x180 && table[Int(inverse[Int($0.value)])] == $0 })
                ? s.unicodeScalars.map { inverse[Int($0.value)] } : Array(s.utf8)
        }
        var specials: [String: Int32] = [:]
        if let tokenTypes {
            for (i, t) in tokens.enumerated() where tokenTypes[i] == 3 && t.unicodeScalars.allSatisfy({ alphabet.contains($0) }) {
                specials[t] = Int32(i)
            }
        }
        func checked(_ id: Int?, _ what: String) throws -> Int32? {
            guard let id else { return nil }
            guard id >= 0 && id < tokens.count else {
                throw TokenizerError(file: source, "\(what) id \(id) is outside the vocabulary of \(tokens.count)")
            }
            return Int32(id)
        }
        self.tokens = tokens
        self.vocab = vocab
        self.merges = merges
        self.byteIds = byteIds
        self.bosId = try checked(bosId, "bos")
        self.eosId = try checked(eosId, "eos")
        self.padId = try checked(padId, "pad")
        self.unkId = try checked(unkId, "unk")
        self.preTokenizer = preTokenizer
        self.chatTemplate = chatTemplate
        specialTokens = specials
        specialIds = Set(specials.values)
        specialsByLength = specials.map { (Array($0.key.utf8), $0.value) }.sorted { $0.bytes.count > $1.bytes.count }
    }

    /// Reads `tokenizer.ggml.*` and `tokenizer.chat_template` from a GGUF file.
    public convenience init(gguf f: GGUFFile) throws {
        let model = try f.string("tokenizer.ggml.model")
        guard model == "gpt2" else {
            throw TokenizerError(file: f.path, "tokenizer.ggml.model is \"\(model)\", expected \"gpt2\" (byte-level BPE)")
        }
        func optionalInt(_ key: String) throws -> Int? { f[key] == nil ? nil : try f.int(key) }
        try self.init(tokens: try f.strings("tokenizer.ggml.tokens"), merges: try f.strings("tokenizer.ggml.merges"),
                      tokenTypes: f["tokenizer.ggml.token_type"] == nil ? nil : try f.ints("tokenizer.ggml.token_type"),
                      bosId: try optionalInt("tokenizer.ggml.bos_token_id"), eosId: try optionalInt("tokenizer.ggml.eos_token_id"),
                      padId: try optionalInt("tokenizer.ggml.padding_token_id"),
                      unkId: try optionalInt("tokenizer.ggml.unknown_token_id"),
                      preTokenizer: f["tokenizer.ggml.pre"]?.stringValue ?? "gpt2",
                      chatTemplate: f["tokenizer.chat_template"]?.stringValue, source: f.path)
    }

    // MARK: encoding

    /// Token ids of `text`; CONTROL tokens written in the text become their ids.
    public func encode(_ text: String) -> [Int32] {
        var out: [Int32] = []
        let bytes = Array(text.utf8)
        var start = 0, i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "<"), let (len, id) = special(at: i, in: bytes) {
                if start < i { encodeOrdinary(bytes[start..<i], into: &out) }
                out.append(id)
                i += len
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { encodeOrdinary(bytes[start..<bytes.count], into: &out) }
        return out
    }

    /// Token strings of `text` (spelled in the byte alphabet, as HF's `tokenize` shows them).
    public func tokenize(_ text: String) -> [String] { encode(text).map { tokens[Int($0)] } }

    private func special(at i: Int, in bytes: [UInt8]) -> (Int, Int32)? {
        for (s, id) in specialsByLength where i + s.count <= bytes.count {
            var match = true
            for k in 0..<s.count where bytes[i + k] != s[k] { match = false; break }
            if match { return (s.count, id) }
        }
        return nil
    }

    /// Text without special tokens: pre-tokenise, then BPE each piece.
    private func encodeOrdinary(_ bytes: ArraySlice<UInt8>, into out: inout [Int32]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let scalars = Array(text.unicodeScalars)
        var utf8Offsets = [Int](repeating: 0, count: scalars.count + 1)
        for (k, s) in scalars.enumerated() { utf8Offsets[k + 1] = utf8Offsets[k] + UTF8.width(s) }
        let utf8 = Array(text.utf8)
        for r in ByteLevelBPE.splitGPT2(scalars) {
            bpe(utf8[utf8Offsets[r.lowerBound]..<utf8Offsets[r.upperBound]], into: &out)
        }
    }

    /// Merges one piece's bytes, lowest rank first.
    private func bpe(_ piece: ArraySlice<UInt8>, into out: inout [Int32]) {
        var syms = piece.compactMap { byteIds[Int($0)] >= 0 ? byteIds[Int($0)] : nil }
        while syms.count > 1 {
            var best: Int32 = .max, at = -1, merged: Int32 = 0
            for k in 0..<(syms.count - 1) {
                if let m = merges[UInt64(UInt32(syms[k])) << 32 | UInt64(UInt32(syms[k + 1]))], m.rank < best {
                    best = m.rank; at = k; merged = m.id
                }
            }
            if at < 0 { break }
            // Merge every non-overlapping occurrence of this pair, left to right (same rank = same pair).
            let a = syms[at], b = syms[at + 1]
            var next: [Int32] = []
            next.reserveCapacity(syms.count)
            var k = 0
            while k < syms.count {
                if k + 1 < syms.count && syms[k] == a && syms[k + 1] == b { next.append(merged); k += 2 } else { next.append(syms[k]); k += 1 }
            }
            syms = next
        }
        out.append(contentsOf: syms)
    }

    // MARK: GPT-2 split

    enum CharClass: UInt8 { case letter, number, space, other }

    @inline(__always) static func charClass(_ s: Unicode.Scalar) -> CharClass {
        if s.value < 0x80 {
            let v = s.value
            if (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A) { return .letter }
            if v >= 0x30 && v <= 0x39 { return .number }
            if v == 0x20 || (v >= 0x09 && v <= 0x0D) { return .space }
            return .other
        }
        // Oniguruma's \s is Unicode White_Space; \p{L} and \p{N} are the general categories.
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Ranges of scalars matched by
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, in order.
    static func splitGPT2(_ s: [Unicode.Scalar]) -> [Range<Int>] {
        let n = s.count
        let cls = s.map(charClass)
        var out: [Range<Int>] = []
        var i = 0
        func run(_ from: Int, _ c: CharClass) -> Int {
            var j = from
            while j < n && cls[j] == c { j += 1 }
            return j
        }
        while i < n {
            // Contractions (case-sensitive).
            if s[i] == "'" && i + 1 < n {
                let a = s[i + 1], b: Unicode.Scalar? = i + 2 < n ? s[i + 2] : nil
                if a == "s" || a == "t" || a == "m" || a == "d" { out.append(i..<(i + 2)); i += 2; continue }
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { out.append(i..<(i + 3)); i += 3; continue }
            }
            let c = cls[i]
            // ` ?X+` for letters, numbers, and other (not space, letter or number).
            if c != .space {
                let j = run(i, c)
                out.append(i..<j); i = j; continue
            }
            if s[i] == " " && i + 1 < n && cls[i + 1] != .space {
                let j = run(i + 1, cls[i + 1])
                out.append(i..<j); i = j; continue
            }
            // Whitespace: `\s+(?!\S)` leaves the last space for the next word; else `\s+`.
            let j = run(i, .space)
            if j < n && j - i >= 2 {
                out.append(i..<(j - 1)); i = j - 1
            } else {
                out.append(i..<j); i = j
            }
        }
        return out
    }

    // MARK: decoding

    /// Text of `ids` (bytes joined, invalid UTF-8 replaced with U+FFFD as HF's `errors="replace"`).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            if skipSpecialTokens && specialIds.contains(id) { continue }
            bytes += tokenBytes[Int(id)]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Bytes of one token (for streaming output, where a character may span tokens).
    public func bytes(of id: Int32) -> [UInt8] { id >= 0 && Int(id) < tokens.count ? tokenBytes[Int(id)] : [] }

    // MARK: byte alphabet

    /// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
    /// for U+0100 + n in byte order, so every token is printable text.
    public static let byteToUnicode: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()
}

/// A chat message for `ChatTemplate`.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
    public static func system(_ c: String) -> ChatMessage { .init(role: "system", content: c) }
    public static func user(_ c: String) -> ChatMessage { .init(role: "user", content: c) }
    public static func assistant(_ c: String) -> ChatMessage { .init(role: "assistant", content: c) }
}

/// Chat templates written as code. The Jinja source each replaces is kept verbatim, and a file
/// whose template differs is refused (rather than silently formatted some other way).
public enum ChatTemplate: Sendable, Equatable {
    /// SmolLM2-Instruct (ChatML): a default system message when the first message is not one,
    /// each message `<|im_start|>role\ncontent<|im_end|>\n`, then `<|im_start|>assistant\n`.
    case smolLM2

    public static let smolLM2DefaultSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

    /// The Jinja template this case implements, byte for byte as SmolLM2's GGUF stores it.
    public static let smolLM2Source = """
        {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
        You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
        ' }}{% endif %}{{'<|im_start|>' + message['role'] + '
        ' + message['content'] + '<|im_end|>' + '
        '}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
        ' }}{% endif %}
        """

    /// The case whose source equals `template`, or an error naming the mismatch.
    public init(source template: String?, file: String = "<tokenizer>") throws {
        guard let template else { throw TokenizerError(file: file, "the file has no tokenizer.chat_template") }
        guard template == Self.smolLM2Source else {
            throw TokenizerError(file: file, "unsupported chat template (SideTune implements SmolLM2's ChatML template only): \(template.prefix(120))...")
        }
        self = .smolLM2
    }

    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        switch self {
        case .smolLM2:
            var s = ""
            for (i, m) in messages.enumerated() {
                if i == 0 && messages[0].role != "system" {
                    s += "<|im_start|>system\n\(Self.smolLM2DefaultSystem)<|im_end|>\n"
                }
                s += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
            }
            if addGenerationPrompt { s += "<|im_start|>assistant\n" }
            return s
        }
    }
}
