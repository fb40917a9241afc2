import Foundation

extension ByteLevelBPE {
    /// A Hugging Face `tokenizer.json` of a byte-level BPE model with GPT-2's pre-tokenizer
    /// (`ByteLevel` with `use_regex`, or a GPT-2 `Split` followed by `ByteLevel`): the vocabulary,
    /// the merges (as "a b" strings or [a, b] pairs) and the added tokens (special ones are cut out
    /// of the text whole). BOS, EOS and the chat template come from `tokenizer_config.json` beside
    /// it when present. Other tokenizers (SentencePiece-style BPE with a Metaspace pre-tokenizer or
    /// byte fallback, WordPiece, other split patterns) are refused by name.
    public convenience init(tokenizerJSON url: URL) throws {
        let file = url.path
        guard let data = FileManager.default.contents(atPath: file) else { throw TokenizerError(file: file, "cannot read the file") }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = root["model"] as? [String: Any] else {
            throw TokenizerError(file: file, "not a tokenizer.json (a JSON object with a \"model\")")
        }
        let type = model["type"] as? String ?? "?"
        guard type == "BPE" else { throw TokenizerError(file: file, "model type \(type.prefix(40)) is not BPE (byte-level BPE only)") }
        if (model["byte_fallback"] as? Bool) == true {
            throw TokenizerError(file: file, "a SentencePiece-style BPE (byte_fallback, Metaspace) is not supported: byte-level BPE only")
        }
        try Self.checkPreTokenizer(root["pre_tokenizer"], file: file)
        if let normalizer = root["normalizer"] as? [String: Any] {
            throw TokenizerError(file: file, "normalizer \((normalizer["type"] as? String ?? "?").prefix(40)) is not supported (byte-level BPE has none)")
        }
        guard let vocab = model["vocab"] as? [String: Any] else { throw TokenizerError(file: file, "model.vocab is missing") }
        var byID: [Int: String] = [:]
        for (token, value) in vocab {
            guard let id = (value as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }), id >= 0, id < 1 << 24 else {
                throw TokenizerError(file: file, "token \(String(reflecting: String(token.prefix(40)))) has id \(String(describing: value).prefix(20)), expected 0..<\(1 << 24)")
            }
            byID[id] = token
        }
        var types: [Int: Int] = [:]
        for case let added as [String: Any] in root["added_tokens"] as? [Any] ?? [] {
            guard let id = (added["id"] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }), id >= 0, id < 1 << 24,
                  let content = added["content"] as? String else {
                throw TokenizerError(file: file, "an added token without a valid id (0..<\(1 << 24)) and content")
            }
            byID[id] = content
            types[id] = (added["special"] as? Bool) == true ? 3 : 4
        }
        let count = (byID.keys.max() ?? -1) + 1
        guard count > 0, byID.count == count else {
            throw TokenizerError(file: file, "ids are not 0..<\(count) without gaps (\(byID.count) tokens): SideTune needs a dense vocabulary")
        }
        let tokens = (0..<count).map { byID[$0]! }
        var merges: [String] = []
        for (i, m) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let s = m as? String { merges.append(s) } else if let pair = m as? [String], pair.count == 2 { merges.append(pair[0] + " " + pair[1]) } else {
                throw TokenizerError(file: file, "merge \(i + 1) is neither \"a b\" nor [a, b]")
            }
        }
        // BOS, EOS and the chat template live in tokenizer_config.json.
        let configURL = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.contents(atPath: configURL.path).flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any] ?? [:]
        func tokenID(_ key: String) -> Int? {
            let name = (config[key] as? String) ?? ((config[key] as? [String: Any])?["content"] as? String)
            return name.flatMap { n in tokens.firstIndex(of: n) }
        }
        try self.init(tokens: tokens, merges: merges, tokenTypes: (0..<count).map { types[$0] ?? 1 }, bosId: tokenID("bos_token"),
                      eosId: tokenID("eos_token"), padId: tokenID("pad_token"), unkId: tokenID("unk_token"), preTokenizer: "gpt2",
                      chatTemplate: config["chat_template"] as? String, source: file)
    }

    /// The pre-tokenizers this implementation matches: ByteLevel(use_regex: true), or a Sequence
    /// of a Split on GPT-2's pattern and ByteLevel(use_regex: false).
    static func checkPreTokenizer(_ value: Any?, file: String) throws {
        guard let p = value as? [String: Any] else {
            throw TokenizerError(file: file, "no pre_tokenizer: SideTune implements GPT-2's byte-level split only")
        }
        func refuse(_ what: String) -> TokenizerError {
            TokenizerError(file: file, "pre_tokenizer \(what.prefix(80)) is not supported (GPT-2's byte-level split only)")
        }
        let type = p["type"] as? String ?? "?"
        if type == "ByteLevel" {
            guard (p["use_regex"] as? Bool) ?? true, !((p["add_prefix_space"] as? Bool) ?? false) else { throw refuse("ByteLevel with these options") }
            return
        }
        guard type == "Sequence", let parts = p["pretokenizers"] as? [[String: Any]], parts.count == 2,
              parts[0]["type"] as? String == "Split", parts[1]["type"] as? String == "ByteLevel",
              let pattern = (parts[0]["pattern"] as? [String: Any])?["Regex"] as? String else {
            throw refuse(type)
        }
        guard pattern == gpt2Pattern else { throw refuse("Split on \(pattern)") }
    }

    static let gpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
}
