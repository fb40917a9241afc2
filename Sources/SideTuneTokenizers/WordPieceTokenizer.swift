import Foundation

/// One encoded text (or text pair), special tokens included, not padded.
public struct Encoding: Sendable, Equatable {
    public var ids: [Int32]
    /// 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`.
    public var typeIds: [Int32]
    /// All 1: an unpadded encoding has no padding to mask.
    public var attentionMask: [Int32]
    public var tokens: [String]
}

public enum Padding: Sendable, Equatable {
    /// Pad every row to the longest row in the batch.
    case longest
    /// Pad every row to `maxLength`.
    case maxLength
}

/// A padded batch. Arrays are row-major `[batchSize * seqLength]`.
public struct BatchEncoding: Sendable, Equatable {
    public var ids: [Int32]
    public var attentionMask: [Int32]
    public var typeIds: [Int32]
    public var batchSize: Int
    public var seqLength: Int
    /// Unpadded length of each row.
    public var lengths: [Int]

    public init(ids: [Int32], attentionMask: [Int32], typeIds: [Int32], batchSize: Int, seqLength: Int, lengths: [Int]) {
        self.ids = ids
        self.attentionMask = attentionMask
        self.typeIds = typeIds
        self.batchSize = batchSize
        self.seqLength = seqLength
        self.lengths = lengths
    }
}

/// Pads token id rows into a batch (to the longest row).
public func makeBatch(_ rows: [[Int32]], padId: Int32 = 0) -> BatchEncoding {
    let seq = max(rows.map(\.count).max() ?? 1, 1)
    var ids: [Int32] = [], mask: [Int32] = []
    ids.reserveCapacity(rows.count * seq)
    mask.reserveCapacity(rows.count * seq)
    for r in rows {
        ids += r + [Int32](repeating: padId, count: seq - r.count)
        mask += [Int32](repeating: 1, count: r.count) + [Int32](repeating: 0, count: seq - r.count)
    }
    return BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: ids.count), batchSize: rows.count,
                         seqLength: seq, lengths: rows.map(\.count))
}

/// BERT WordPiece tokenizer matching Hugging Face's fast `BertTokenizerFast` / tokenizers
/// `BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing` pipeline.
///
/// Immutable after loading, so one instance can be shared between threads.
public final class WordPieceTokenizer: Sendable {
    /// Piece of a post-processing template: `[CLS] $A [SEP] $B:1 [SEP]:1`.
    public enum TemplatePiece: Sendable, Equatable {
        case special(ids: [Int32], typeId: Int32)
        /// `second == false` is sequence A.
        case sequence(second: Bool, typeId: Int32)
    }

    public let normalizerOptions: BertNormalizerOptions
    /// Default truncation length (tokenizer.json `truncation.max_length`, else
    /// tokenizer_config.json `model_max_length`, else 512), special tokens included.
    public let maxLength: Int
    public let unkToken: String
    public let unkId: Int32
    public let padId: Int32
    public let maxInputCharsPerWord: Int
    public let singleTemplate: [TemplatePiece]
    public let pairTemplate: [TemplatePiece]
    /// Tokens matched verbatim in the raw text before normalization (HF "added tokens").
    public let specialTokens: [String: Int32]
    /// Token ids that `decode(_:skipSpecialTokens:)` drops.
    public let specialIds: Set<Int32>

    let vocab: WordPieceVocabulary
    let preTokenizer: BertPreTokenizer
    private let specialScalars: [(scalars: [UInt32], id: Int32)]
    private let specialFirstScalars: Set<UInt32>

    public var vocabSize: Int { vocab.tokens.count }
    public func id(of token: String) -> Int32? { vocab.ids[token] }
    public func token(of id: Int32) -> String? { id >= 0 && Int(id) < vocab.tokens.count ? vocab.tokens[Int(id)] : nil }

    init(vocab: WordPieceVocabulary, options: BertNormalizerOptions, unkToken: String, padToken: String?,
         padId: Int32?, maxInputCharsPerWord: Int, maxLength: Int,
         single: [TemplatePiece], pair: [TemplatePiece], specialTokens: [String: Int32], file: String) throws {
        guard let unkId = vocab.ids[unkToken] else {
            throw TokenizerError(file: file, "unknown token \"\(unkToken)\" is not in the vocabulary")
        }
        // Ids the encoder emits (special tokens, template pieces, padding) must name vocabulary entries.
        let templateIds = (single + pair).flatMap { piece -> [Int32] in
            if case .special(let ids, _) = piece { return ids }
            return []
        }
        let emitted = specialTokens.sorted { $0.key < $1.key }.map { ("special token \"\($0.key)\"", $0.value) }
            + templateIds.map { ("post_processor special token", $0) } + (padId.map { [("padding pad_id", $0)] } ?? [])
        if let (what, id) = emitted.first(where: { !(0..<Int32(vocab.tokens.count)).contains($0.1) }) {
            throw TokenizerError(file: file, "\(what) has id \(id), outside the vocabulary of \(vocab.tokens.count)")
        }
        self.vocab = vocab
        self.normalizerOptions = options
        self.preTokenizer = BertPreTokenizer(options: options)
        self.unkToken = unkToken
        self.unkId = unkId
        self.padId = padId ?? padToken.flatMap { vocab.ids[$0] } ?? 0
        self.maxInputCharsPerWord = maxInputCharsPerWord
        self.maxLength = maxLength
        self.singleTemplate = single
        self.pairTemplate = pair
        self.specialTokens = specialTokens
        self.specialIds = Set(specialTokens.values)
        // Longest first, so the first hit at a position is HF's leftmost-longest match.
        let scalars = specialTokens.map { (scalars: $0.key.unicodeScalars.map(\.value), id: $0.value) }
            .filter { !$0.scalars.isEmpty }
            .sorted { $0.scalars.count > $1.scalars.count }
        self.specialScalars = scalars
        self.specialFirstScalars = Set(scalars.map { $0.scalars[0] })
    }

    // MARK: Loading

    /// Loads `tokenizer.json` if the folder has one, else `vocab.txt` (+ `tokenizer_config.json`).
    public static func load(modelFolder: URL) throws -> WordPieceTokenizer {
        let json = modelFolder.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: json.path) {
            return try WordPieceTokenizer(tokenizerJSONURL: json)
        }
        let vocab = modelFolder.appendingPathComponent("vocab.txt")
        guard FileManager.default.fileExists(atPath: vocab.path) else {
            throw TokenizerError(file: modelFolder.path, "neither tokenizer.json nor vocab.txt found in this folder")
        }
        return try WordPieceTokenizer(vocabURL: vocab, configURL: modelFolder.appendingPathComponent("tokenizer_config.json"))
    }

    /// Loads a `vocab.txt` (one token per line, id = line - 1) with BERT uncased defaults.
    /// If `configURL` exists (tokenizer_config.json), `do_lower_case`, `strip_accents`,
    /// `tokenize_chinese_chars` and `model_max_length` are read from it.
    public convenience init(vocabURL: URL, configURL: URL? = nil) throws {
        let file = vocabURL.lastPathComponent
        let bytes = try readBytes(vocabURL)
        var tokens: [String] = []
        var lineStart = 0
        var line = 1
        while lineStart < bytes.count {
            let end = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            let lineBytes = bytes[lineStart..<end]
            guard let token = String(validating: lineBytes, as: UTF8.self) else {
                throw TokenizerError(file: file, line: line, "token is not valid UTF-8")
            }
            guard !token.isEmpty else {
                throw TokenizerError(file: file, line: line, "empty line; expected one token per line")
            }
            tokens.append(token)
            lineStart = end + 1
            line += 1
        }
        guard !tokens.isEmpty else { throw TokenizerError(file: file, "vocabulary file is empty") }
        let vocab = try WordPieceVocabulary(tokens: tokens, continuingPrefix: "##", file: file, lineOf: { $0 + 1 })

        var options = BertNormalizerOptions()
        var maxLength = 512
        if let configURL, FileManager.default.fileExists(atPath: configURL.path) {
            let cfile = configURL.lastPathComponent
            let config = try parseJSONObject(configURL)
            let lower = try optionalBool(config, "do_lower_case", file: cfile) ?? true
            options = BertNormalizerOptions(
                handleChineseChars: try optionalBool(config, "tokenize_chinese_chars", file: cfile) ?? true,
                stripAccents: try optionalBool(config, "strip_accents", file: cfile),
                lowercase: lower)
            // HF stores "no limit" as a huge number; keep 512 then.
            if let m = config["model_max_length"] as? NSNumber, m.intValue > 0, m.intValue < 1_000_000 {
                maxLength = m.intValue
            }
        }
        var specials: [String: Int32] = [:]
        for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] { if let id = vocab.ids[t] { specials[t] = id } }
        guard let cls = vocab.ids["[CLS]"], let sep = vocab.ids["[SEP]"] else {
            throw TokenizerError(file: file, "vocabulary has no [CLS] or no [SEP] token")
        }
        try self.init(vocab: vocab, options: options, unkToken: "[UNK]", padToken: "[PAD]", padId: nil,
                      maxInputCharsPerWord: 100, maxLength: maxLength,
                      single: [.special(ids: [cls], typeId: 0), .sequence(second: false, typeId: 0), .special(ids: [sep], typeId: 0)],
                      pair: [.special(ids: [cls], typeId: 0), .sequence(second: false, typeId: 0), .special(ids: [sep], typeId: 0),
                             .sequence(second: true, typeId: 1), .special(ids: [sep], typeId: 1)],
                      specialTokens: specials, file: file)
    }

    /// Loads a Hugging Face `tokenizer.json` with a WordPiece model, BertNormalizer and
    /// BertPreTokenizer. Anything else is rejected with an error naming the JSON key.
    public convenience init(tokenizerJSONURL url: URL) throws {
        let file = url.lastPathComponent
        let root = try parseJSONObject(url)

        guard let model = root["model"] as? [String: Any] else { throw TokenizerError(file: file, "missing object \"model\"") }
        let modelType = model["type"] as? String ?? "WordPiece"
        guard modelType == "WordPiece" else {
            throw TokenizerError(file: file, "model.type is \"\(modelType)\"; expected \"WordPiece\"")
        }
        guard let rawVocab = model["vocab"] as? [String: Any] else {
            throw TokenizerError(file: file, "missing object \"model.vocab\" (token -> id)")
        }
        var ids: [String: Int32] = [:]
        for (token, value) in rawVocab {
            guard let n = value as? NSNumber, let id = Int32(exactly: n.doubleValue) else {
                throw TokenizerError(file: file, "model.vocab[\"\(token)\"] is \(value); expected an integer id")
            }
            ids[token] = id
        }
        let prefix = try optionalString(model, "continuing_subword_prefix", file: file, path: "model") ?? "##"
        let vocab = try WordPieceVocabulary(ids: ids, continuingPrefix: prefix, file: file)
        let unk = try optionalString(model, "unk_token", file: file, path: "model") ?? "[UNK]"
        let maxChars = (model["max_input_chars_per_word"] as? NSNumber)?.intValue ?? 100

        var options = BertNormalizerOptions(cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false)
        if let normalizer = root["normalizer"] as? [String: Any] {
            let type = normalizer["type"] as? String ?? "?"
            guard type == "BertNormalizer" else {
                throw TokenizerError(file: file, "normalizer.type \"\(type)\" is not supported; expected \"BertNormalizer\"")
            }
            let lower = try optionalBool(normalizer, "lowercase", file: file, path: "normalizer") ?? true
            options = BertNormalizerOptions(
                cleanText: try optionalBool(normalizer, "clean_text", file: file, path: "normalizer") ?? true,
                handleChineseChars: try optionalBool(normalizer, "handle_chinese_chars", file: file, path: "normalizer") ?? true,
                stripAccents: try optionalBool(normalizer, "strip_accents", file: file, path: "normalizer"),
                lowercase: lower)
        } else if !(root["normalizer"] is NSNull || root["normalizer"] == nil) {
            throw TokenizerError(file: file, "normalizer must be an object or null")
        }
        if let pre = root["pre_tokenizer"] as? [String: Any] {
            let type = pre["type"] as? String ?? "?"
            guard type == "BertPreTokenizer" else {
                throw TokenizerError(file: file, "pre_tokenizer.type \"\(type)\" is not supported; expected \"BertPreTokenizer\"")
            }
        } else {
            throw TokenizerError(file: file, "missing object \"pre_tokenizer\"; expected {\"type\": \"BertPreTokenizer\"}")
        }

        var specials: [String: Int32] = [:]
        if let added = root["added_tokens"] as? [[String: Any]] {
            for (i, t) in added.enumerated() {
                guard let content = t["content"] as? String, let id = (t["id"] as? NSNumber)?.int32Value else {
                    throw TokenizerError(file: file, "added_tokens[\(i)] needs \"content\" (string) and \"id\" (integer)")
                }
                // Only the plain form BERT uses is implemented; refuse rather than tokenize differently.
                for key in ["lstrip", "rstrip", "single_word", "normalized"] where (t[key] as? Bool) == true {
                    throw TokenizerError(file: file, "added_tokens[\(i)] (\"\(content)\") has \(key)=true, which is not supported")
                }
                specials[content] = id
            }
        }

        var single: [TemplatePiece] = []
        var pair: [TemplatePiece] = []
        if let post = root["post_processor"] as? [String: Any] {
            switch post["type"] as? String {
            case "TemplateProcessing":
                single = try parseTemplate(post, "single", file: file, vocab: vocab)
                pair = try parseTemplate(post, "pair", file: file, vocab: vocab)
            case "BertProcessing":
                guard let cls = post["cls"] as? [Any], let sep = post["sep"] as? [Any],
                      let clsId = (cls.last as? NSNumber)?.int32Value, let sepId = (sep.last as? NSNumber)?.int32Value else {
                    throw TokenizerError(file: file, "post_processor BertProcessing needs \"cls\" and \"sep\" as [token, id]")
                }
                single = [.special(ids: [clsId], typeId: 0), .sequence(second: false, typeId: 0), .special(ids: [sepId], typeId: 0)]
                pair = single + [.sequence(second: true, typeId: 1), .special(ids: [sepId], typeId: 1)]
            case let other:
                throw TokenizerError(file: file, "post_processor.type \"\(other ?? "?")\" is not supported; expected TemplateProcessing or BertProcessing")
            }
        } else {
            single = [.sequence(second: false, typeId: 0)]
            pair = [.sequence(second: false, typeId: 0), .sequence(second: true, typeId: 1)]
        }

        var maxLength = 512
        if let trunc = root["truncation"] as? [String: Any], let m = (trunc["max_length"] as? NSNumber)?.intValue, m > 0 {
            maxLength = m
        }
        let padding = root["padding"] as? [String: Any]
        try self.init(vocab: vocab, options: options, unkToken: unk, padToken: padding?["pad_token"] as? String ?? "[PAD]",
                      padId: (padding?["pad_id"] as? NSNumber)?.int32Value, maxInputCharsPerWord: maxChars,
                      maxLength: maxLength, single: single, pair: pair, specialTokens: specials, file: file)
    }

    // MARK: Encoding

    /// WordPiece ids of `text` without special tokens or truncation.
    public func tokenize(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        appendIds(of: text, to: &ids)
        return ids
    }

    /// Token strings of `text` without special tokens.
    public func tokenizeToStrings(_ text: String) -> [String] {
        tokenize(text).map { vocab.tokens[Int($0)] }
    }

    /// Encodes a text or text pair with special tokens. With `truncation`, the result has at most
    /// `maxLength ?? self.maxLength` ids; pairs are cut HF "longest_first" style.
    public func encode(_ text: String, pair: String? = nil, maxLength: Int? = nil, truncation: Bool = true) -> Encoding {
        var a = tokenize(text)
        var b = pair.map { tokenize($0) }
        if truncation {
            Self.truncate(&a, &b, budget: (maxLength ?? self.maxLength) - addedTokens(pair: b != nil))
        }
        var ids: [Int32] = []
        var typeIds: [Int32] = []
        assemble(a, b, ids: &ids, typeIds: &typeIds)
        return Encoding(ids: ids, typeIds: typeIds, attentionMask: [Int32](repeating: 1, count: ids.count),
                        tokens: ids.map { vocab.tokens[Int($0)] })
    }

    /// Encodes, truncates to `maxLength` and pads a batch. `pairs`, if given, must have one entry per text.
    public func encodeBatch(_ texts: [String], pairs: [String]? = nil, maxLength: Int, padding: Padding = .longest) -> BatchEncoding {
        precondition(pairs == nil || pairs!.count == texts.count, "encodeBatch: \(pairs!.count) pairs for \(texts.count) texts")
        var rows: [([Int32], [Int32])] = []
        rows.reserveCapacity(texts.count)
        for (i, text) in texts.enumerated() {
            var a = tokenize(text)
            var b = pairs.map { tokenize($0[i]) }
            Self.truncate(&a, &b, budget: maxLength - addedTokens(pair: b != nil))
            var ids: [Int32] = []
            var typeIds: [Int32] = []
            assemble(a, b, ids: &ids, typeIds: &typeIds)
            rows.append((ids, typeIds))
        }
        let seq = padding == .maxLength ? maxLength : (rows.map { $0.0.count }.max() ?? 0)
        var ids = [Int32](repeating: padId, count: rows.count * seq)
        var mask = [Int32](repeating: 0, count: rows.count * seq)
        var types = [Int32](repeating: 0, count: rows.count * seq)
        for (r, row) in rows.enumerated() {
            for j in 0..<min(row.0.count, seq) {
                ids[r * seq + j] = row.0[j]
                types[r * seq + j] = row.1[j]
                mask[r * seq + j] = 1
            }
        }
        return BatchEncoding(ids: ids, attentionMask: mask, typeIds: types, batchSize: rows.count, seqLength: seq,
                             lengths: rows.map { min($0.0.count, seq) })
    }

    /// Joins tokens, gluing `##` continuations, then applies HF's WordPiece decoder cleanup
    /// (" ." -> ".", " n't" -> "n't", ...).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = true) -> String {
        var out = ""
        for id in ids {
            if skipSpecialTokens && specialIds.contains(id) { continue }
            guard let t = token(of: id) else { continue }
            if !out.isEmpty && t.hasPrefix(vocab.continuingPrefix) && !vocab.continuingPrefix.isEmpty {
                out += t.dropFirst(vocab.continuingPrefix.count)
            } else {
                if !out.isEmpty { out += " " }
                out += t
            }
        }
        for (from, to) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            out = out.replacingOccurrences(of: from, with: to)
        }
        return out
    }

    /// Number of special tokens the template adds.
    public func addedTokens(pair: Bool) -> Int {
        (pair ? pairTemplate : singleTemplate).reduce(0) { n, piece in
            if case .special(let ids, _) = piece { return n + ids.count }
            return n
        }
    }

    /// HF tokenizers' `truncate_encodings` with LongestFirst, stride 0, right side.
    public static func truncate(_ a: inout [Int32], _ b: inout [Int32]?, budget rawBudget: Int) {
        let budget = max(rawBudget, 0)
        guard var second = b else {
            if a.count > budget { a.removeLast(a.count - budget) }
            return
        }
        guard a.count + second.count > budget else { return }
        var n1 = a.count, n2 = second.count
        let swap = n1 > n2
        if swap { (n1, n2) = (n2, n1) }
        // n1 is now the shorter one: keep it whole if the longer one can absorb the cut.
        n2 = n1 > budget ? n1 : max(n1, budget - n1)
        if n1 + n2 > budget {
            n1 = budget / 2
            n2 = n1 + budget % 2
        }
        if swap { (n1, n2) = (n2, n1) }
        if a.count > n1 { a.removeLast(a.count - n1) }
        if second.count > n2 { second.removeLast(second.count - n2) }
        b = second
    }

    private func assemble(_ a: [Int32], _ b: [Int32]?, ids: inout [Int32], typeIds: inout [Int32]) {
        ids.reserveCapacity(a.count + (b?.count ?? 0) + 4)
        for piece in b == nil ? singleTemplate : pairTemplate {
            switch piece {
            case .special(let sids, let type):
                ids.append(contentsOf: sids)
                typeIds.append(contentsOf: repeatElement(type, count: sids.count))
            case .sequence(let second, let type):
                let seq = second ? (b ?? []) : a
                ids.append(contentsOf: seq)
                typeIds.append(contentsOf: repeatElement(type, count: seq.count))
            }
        }
    }

    private func appendIds(of text: String, to ids: inout [Int32]) {
        var scalars: [UInt32] = []
        scalars.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars { scalars.append(s.value) }
        scalars.withUnsafeBufferPointer { all in
            // Special tokens are matched on the raw text first (HF added vocabulary), and the
            // text between them is normalized and split on its own.
            var segmentStart = 0
            var i = 0
            if !specialScalars.isEmpty {
                while i < all.count {
                    if specialFirstScalars.contains(all[i]), let hit = specialMatch(all, at: i) {
                        wordPieces(UnsafeBufferPointer(rebasing: all[segmentStart..<i]), into: &ids)
                        ids.append(hit.id)
                        i += hit.length
                        segmentStart = i
                    } else {
                        i += 1
                    }
                }
            }
            wordPieces(UnsafeBufferPointer(rebasing: all[segmentStart..<all.count]), into: &ids)
        }
    }

    private func specialMatch(_ all: UnsafeBufferPointer<UInt32>, at i: Int) -> (id: Int32, length: Int)? {
        for special in specialScalars where i + special.scalars.count <= all.count {
            var matches = true
            for (k, s) in special.scalars.enumerated() where all[i + k] != s {
                matches = false
                break
            }
            if matches { return (special.id, special.scalars.count) }
        }
        return nil
    }

    private func wordPieces(_ segment: UnsafeBufferPointer<UInt32>, into ids: inout [Int32]) {
        if segment.isEmpty { return }
        preTokenizer.words(segment) { word in
            // Greedy longest-match-first; a word that cannot be covered becomes one [UNK].
            if word.count > maxInputCharsPerWord {
                ids.append(unkId)
                return
            }
            let rollback = ids.count
            var start = 0
            while start < word.count {
                guard let m = vocab.longestMatch(word, from: start, to: word.count,
                                                 root: start == 0 ? vocab.initialRoot : vocab.continuationRoot) else {
                    ids.removeLast(ids.count - rollback)
                    ids.append(unkId)
                    return
                }
                ids.append(m.id)
                start = m.end
            }
        }
    }
}

// MARK: JSON helpers

func readBytes(_ url: URL) throws -> [UInt8] {
    do {
        return [UInt8](try Data(contentsOf: url))
    } catch {
        throw TokenizerError(file: url.path, "cannot read file: \(error.localizedDescription)")
    }
}

/// Parses a JSON object; syntax errors report line and column when Foundation gives an offset.
func parseJSONObject(_ url: URL) throws -> [String: Any] {
    let file = url.lastPathComponent
    let bytes = try readBytes(url)
    let object: Any
    do {
        object = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
    } catch {
        let ns = error as NSError
        // Darwin gives the offset in userInfo; swift-corelibs only in the text ("around character 34").
        var index = ns.userInfo["NSJSONSerializationErrorIndex"] as? Int
        if index == nil, let debug = ns.userInfo[NSDebugDescriptionErrorKey] as? String,
           let range = debug.range(of: #"character \d+"#, options: .regularExpression) {
            index = Int(debug[range].dropFirst("character ".count))
        }
        if let index {
            let (line, column) = lineAndColumn(of: index, in: bytes)
            throw TokenizerError(file: file, line: line, column: column, "invalid JSON: \(ns.userInfo[NSDebugDescriptionErrorKey] as? String ?? ns.localizedDescription)")
        }
        throw TokenizerError(file: file, "invalid JSON: \(error)")
    }
    guard let dict = object as? [String: Any] else { throw TokenizerError(file: file, line: 1, "expected a JSON object at the top level") }
    return dict
}

func optionalBool(_ dict: [String: Any], _ key: String, file: String, path: String = "") throws -> Bool? {
    guard let value = dict[key], !(value is NSNull) else { return nil }
    // JSONSerialization yields NSNumber for both booleans and numbers; accept only 0/1.
    if let b = value as? Bool { return b }
    throw TokenizerError(file: file, "\(path.isEmpty ? "" : path + ".")\(key) is \(value); expected true, false or null")
}

func optionalString(_ dict: [String: Any], _ key: String, file: String, path: String) throws -> String? {
    guard let value = dict[key], !(value is NSNull) else { return nil }
    guard let s = value as? String else { throw TokenizerError(file: file, "\(path).\(key) is \(value); expected a string") }
    return s
}

private func parseTemplate(_ post: [String: Any], _ key: String, file: String, vocab: WordPieceVocabulary) throws -> [WordPieceTokenizer.TemplatePiece] {
    guard let items = post[key] as? [[String: Any]] else {
        throw TokenizerError(file: file, "post_processor.\(key) must be a list of {SpecialToken} / {Sequence} items")
    }
    let specials = post["special_tokens"] as? [String: Any] ?? [:]
    return try items.enumerated().map { i, item in
        if let s = item["SpecialToken"] as? [String: Any], let name = s["id"] as? String {
            let type = (s["type_id"] as? NSNumber)?.int32Value ?? 0
            if let entry = specials[name] as? [String: Any], let ids = entry["ids"] as? [NSNumber] {
                return .special(ids: ids.map(\.int32Value), typeId: type)
            }
            guard let id = vocab.ids[name] else {
                throw TokenizerError(file: file, "post_processor.\(key)[\(i)]: special token \"\(name)\" is neither in special_tokens nor in the vocabulary")
            }
            return .special(ids: [id], typeId: type)
        }
        if let s = item["Sequence"] as? [String: Any], let name = s["id"] as? String, name == "A" || name == "B" {
            return .sequence(second: name == "B", typeId: (s["type_id"] as? NSNumber)?.int32Value ?? 0)
        }
        throw TokenizerError(file: file, "post_processor.\(key)[\(i)] is \(item); expected {\"SpecialToken\": {...}} or {\"Sequence\": {\"id\": \"A\"|\"B\"}}")
    }
}
