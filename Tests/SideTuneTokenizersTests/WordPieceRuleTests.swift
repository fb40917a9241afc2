import Foundation
import Testing
import SideTuneTokenizers
import SideTuneTestSupport

/// Writes `lines` as a vocab.txt in a fresh temporary folder.
func makeVocabFolder(_ lines: [String], trailingNewline: Bool = true, raw: [UInt8]? = nil) throws -> URL {
    let dir = scratchFolder("tok")
    let bytes = raw ?? Array((lines.joined(separator: "\n") + (trailingNewline ? "\n" : "")).utf8)
    try Data(bytes).write(to: dir.appendingPathComponent("vocab.txt"))
    return dir
}

let smallVocab = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "hello", "world", ",", "!", ".", "un", "##aff", "##able", "##affable", "aff",
    "cafe", "naive", "你", "好", "a", "##a", "b", "##b", "x", "ab", "¿", "。", "'", "s", "t", "don", "##t",
    "straße", "strasse", "i", "istanbul", "##ing", "play", "e", "é",
]

func smallTokenizer() throws -> WordPieceTokenizer {
    try WordPieceTokenizer.load(modelFolder: try makeVocabFolder(smallVocab))
}

@Suite("WordPiece rules on a hand-made vocabulary")
struct WordPieceRuleTests {
    @Test func lowercasesAndSplitsPunctuation() throws {
        let tok = try smallTokenizer()
        #expect(tok.tokenizeToStrings("Hello,WORLD!") == ["hello", ",", "world", "!"])
        #expect(tok.tokenizeToStrings("  hello \t\n world  ") == ["hello", "world"])
    }

    @Test func stripsAccentsViaNFD() throws {
        let tok = try smallTokenizer()
        #expect(tok.tokenizeToStrings("Café naïve") == ["cafe", "naive"])
        // Decomposed input (e + U+0301) strips the same way.
        #expect(tok.tokenizeToStrings("cafe\u{301}") == ["cafe"])
        // ß has no decomposition and no single-char lowercase change: stays.
        #expect(tok.tokenizeToStrings("Straße") == ["straße"])
        // İ = I + U+0307 under NFD; the dot is stripped before lower-casing.
        #expect(tok.tokenizeToStrings("İstanbul") == ["istanbul"])
    }

    @Test func keepsAccentsWhenDisabled() throws {
        let dir = try makeVocabFolder(smallVocab)
        try Data(#"{"do_lower_case": true, "strip_accents": false}"#.utf8).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        let tok = try WordPieceTokenizer.load(modelFolder: dir)
        #expect(tok.tokenizeToStrings("É e") == ["é", "e"])
    }

    @Test func splitsCJKAndUnicodePunctuation() throws {
        let tok = try smallTokenizer()
        #expect(tok.tokenizeToStrings("你好") == ["你", "好"])
        #expect(tok.tokenizeToStrings("a你b") == ["a", "你", "b"])
        #expect(tok.tokenizeToStrings("¿hello。") == ["¿", "hello", "。"])
        // U+2E45 is punctuation in current Unicode but not in HF's tables: it must NOT split.
        #expect(tok.tokenizeToStrings("a\u{2E45}b") == ["[UNK]"])
    }

    @Test func cleanTextDropsControlsAndReplacementCharacter() throws {
        let tok = try smallTokenizer()
        // Dropped characters join their neighbours; they are not spaces.
        #expect(tok.tokenizeToStrings("hel\u{0}lo wor\u{FFFD}ld") == ["hello", "world"])
        #expect(tok.tokenizeToStrings("hel\u{200B}lo\u{7}") == ["hello"])
        #expect(tok.tokenizeToStrings("\u{E000}hello") == ["hello"])
        // Unicode whitespace splits.
        #expect(tok.tokenizeToStrings("hello\u{00A0}world\u{3000}!") == ["hello", "world", "!"])
    }

    @Test func greedyLongestMatchFirst() throws {
        let tok = try smallTokenizer()
        // ##affable beats ##aff + ##able.
        #expect(tok.tokenizeToStrings("unaffable") == ["un", "##affable"])
        #expect(tok.tokenizeToStrings("aab") == ["a", "##a", "##b"])
        #expect(tok.tokenizeToStrings("abab") == ["ab", "##a", "##b"])
    }

    @Test func unsplittableWordIsOneUnknown() throws {
        let tok = try smallTokenizer()
        // "un" matches, then "##z" does not: the whole word becomes [UNK], not "un" + [UNK].
        #expect(tok.tokenizeToStrings("unz hello") == ["[UNK]", "hello"])
        #expect(tok.tokenizeToStrings("q") == ["[UNK]"])
    }

    @Test func wordsLongerThan100CharactersAreUnknown() throws {
        let tok = try smallTokenizer()
        #expect(tok.tokenize(String(repeating: "a", count: 100)).count == 100)
        #expect(tok.tokenizeToStrings(String(repeating: "a", count: 101)) == ["[UNK]"])
        // The limit counts characters after normalization: 100 scalars incl. a stripped accent.
        #expect(tok.tokenize(String(repeating: "a", count: 99) + "á").count == 100)
    }

    @Test func specialTokensAreMatchedInRawText() throws {
        let tok = try smallTokenizer()
        #expect(tok.tokenizeToStrings("hello[SEP]world") == ["hello", "[SEP]", "world"])
        #expect(tok.tokenizeToStrings("[MASK]!") == ["[MASK]", "!"])
        // Matching happens before lower-casing, so "[sep]" is ordinary punctuation + word.
        #expect(tok.tokenizeToStrings("[sep]") == ["[UNK]", "[UNK]", "[UNK]"])
        #expect(tok.tokenizeToStrings("a [sep]").count == 4)
    }

    @Test func singleAndPairTemplates() throws {
        let tok = try smallTokenizer()
        let single = tok.encode("hello world")
        #expect(single.tokens == ["[CLS]", "hello", "world", "[SEP]"])
        #expect(single.typeIds == [0, 0, 0, 0])
        #expect(single.attentionMask == [1, 1, 1, 1])
        let pair = tok.encode("hello", pair: "world !")
        #expect(pair.tokens == ["[CLS]", "hello", "[SEP]", "world", "!", "[SEP]"])
        #expect(pair.typeIds == [0, 0, 0, 1, 1, 1])
        #expect(tok.encode("", pair: "").tokens == ["[CLS]", "[SEP]", "[SEP]"])
    }

    @Test func longestFirstTruncationMatchesHF() {
        // Expected values follow tokenizers' truncate_encodings(LongestFirst).
        func cut(_ n1: Int, _ n2: Int, _ budget: Int) -> (Int, Int) {
            var a = [Int32](repeating: 1, count: n1)
            var b: [Int32]? = [Int32](repeating: 2, count: n2)
            WordPieceTokenizer.truncate(&a, &b, budget: budget)
            return (a.count, b!.count)
        }
        #expect(cut(10, 3, 8) == (5, 3))   // only the longer one is cut
        #expect(cut(3, 10, 8) == (3, 5))
        #expect(cut(6, 6, 7) == (3, 4))    // both cut: odd budget gives the extra to the second
        #expect(cut(10, 6, 7) == (4, 3))   // ... or to the longer one when they were swapped
        #expect(cut(2, 2, 7) == (2, 2))
        #expect(cut(9, 9, 0) == (0, 0))
    }

    @Test func encodeTruncatesIncludingSpecialTokens() throws {
        let tok = try smallTokenizer()
        let text = Array(repeating: "hello", count: 20).joined(separator: " ")
        let enc = tok.encode(text, maxLength: 6)
        #expect(enc.tokens == ["[CLS]", "hello", "hello", "hello", "hello", "[SEP]"])
        #expect(tok.encode(text, maxLength: 6, truncation: false).ids.count == 22)
        let pair = tok.encode(text, pair: "world world", maxLength: 8)
        #expect(pair.tokens == ["[CLS]", "hello", "hello", "hello", "[SEP]", "world", "world", "[SEP]"])
    }

    @Test func batchIsRowMajorAndPadded() throws {
        let tok = try smallTokenizer()
        let batch = tok.encodeBatch(["hello", "hello world !", "hello hello hello hello hello"], maxLength: 5, padding: .longest)
        #expect(batch.batchSize == 3)
        #expect(batch.seqLength == 5)
        #expect(batch.lengths == [3, 5, 5])
        let hello = tok.id(of: "hello")!, cls = tok.id(of: "[CLS]")!, sep = tok.id(of: "[SEP]")!
        #expect(Array(batch.ids[0..<5]) == [cls, hello, sep, 0, 0])
        #expect(Array(batch.attentionMask[0..<5]) == [1, 1, 1, 0, 0])
        #expect(Array(batch.ids[10..<15]) == [cls, hello, hello, hello, sep])
        let fixed = tok.encodeBatch(["hello"], maxLength: 7, padding: .maxLength)
        #expect(fixed.seqLength == 7 && fixed.ids.count == 7 && fixed.attentionMask.reduce(0, +) == 3)
        let pairs = tok.encodeBatch(["hello"], pairs: ["world"], maxLength: 8, padding: .longest)
        #expect(pairs.typeIds == [0, 0, 0, 1, 1])
    }

    @Test func decodeJoinsContinuations() throws {
        let tok = try smallTokenizer()
        #expect(tok.decode(tok.encode("unaffable hello , world !").ids) == "unaffable hello, world!")
        #expect(tok.decode(tok.encode("don't").ids) == "don't")
    }

    @Test func tokenizerJSONSettingsAreRead() throws {
        let dir = try makeVocabFolder([])
        let json = """
        {"version": "1.0", "truncation": {"max_length": 7},
         "added_tokens": [{"id": 2, "content": "<s>", "special": true, "lstrip": false, "rstrip": false, "normalized": false, "single_word": false}],
         "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": false},
         "pre_tokenizer": {"type": "BertPreTokenizer"},
         "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [2], "tokens": ["<s>"]}}},
         "model": {"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "@@", "max_input_chars_per_word": 3,
                   "vocab": {"<pad>": 0, "<unk>": 1, "<s>": 2, "Ab": 3, "@@c": 4, "ab": 5}}}
        """
        let url = dir.appendingPathComponent("tokenizer.json")
        try Data(json.utf8).write(to: url)
        let tok = try WordPieceTokenizer.load(modelFolder: dir)
        #expect(tok.maxLength == 7)
        #expect(!tok.normalizerOptions.lowercase && !tok.normalizerOptions.stripAccents)  // null follows lowercase
        #expect(tok.encode("Abc ab<s>").tokens == ["<s>", "Ab", "@@c", "ab", "<s>"])
        #expect(tok.encode("abcd").tokens == ["<s>", "<unk>"])  // 4 chars > max_input_chars_per_word 3
        #expect(tok.encode("ab", pair: "ab").typeIds == [0, 0, 1])
    }
}

@Suite("Tokenizer file errors")
struct TokenizerErrorTests {
    @Test func duplicateTokenNamesBothLines() throws {
        let dir = try makeVocabFolder(["[UNK]", "[CLS]", "[SEP]", "a", "b", "a"])
        #expect {
            try WordPieceTokenizer.load(modelFolder: dir)
        } throws: { error in
            let e = error as? TokenizerError
            return e?.file == "vocab.txt" && e?.line == 6 && e!.message.contains("first at line 4")
        }
    }

    @Test func emptyLineAndInvalidUTF8AndEmptyFile() throws {
        func loadError(_ dir: URL) -> TokenizerError? {
            do { _ = try WordPieceTokenizer.load(modelFolder: dir); return nil } catch { return error as? TokenizerError }
        }
        let empty = loadError(try makeVocabFolder(["[UNK]", "", "a"]))
        #expect(empty?.line == 2 && empty!.description.hasPrefix("vocab.txt:2: empty line"))
        let bad = loadError(try makeVocabFolder([], raw: Array("[UNK]\n[CLS]\n[SEP]\nok\n".utf8) + [0xFF, 0x0A]))
        #expect(bad?.line == 5 && bad!.message.contains("UTF-8"))
        #expect(loadError(try makeVocabFolder([], raw: []))?.message.contains("empty") == true)
        #expect(loadError(try makeVocabFolder(["[CLS]", "[SEP]", "a"]))?.message.contains("[UNK]") == true)
    }

    @Test func malformedJSONReportsLineAndColumn() throws {
        let dir = try makeVocabFolder([])
        try Data("{\n  \"model\": {\n    \"vocab\": [1,\n  }\n}".utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        do {
            _ = try WordPieceTokenizer.load(modelFolder: dir)
            Issue.record("expected an error")
        } catch let e as TokenizerError {
            #expect(e.file == "tokenizer.json")
            #expect(e.message.contains("invalid JSON"))
            #expect(e.line == 4, "the stray } is on line 4")
            testLog("malformed JSON error: \(e)")
        }
    }

    @Test func unsupportedPiecesAreRejected() throws {
        let dir = try makeVocabFolder([])
        let url = dir.appendingPathComponent("tokenizer.json")
        try Data(#"{"model": {"type": "BPE", "vocab": {}}}"#.utf8).write(to: url)
        #expect(throws: TokenizerError.self) { try WordPieceTokenizer(tokenizerJSONURL: url) }
        try Data(#"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "normalizer": {"type": "NFKC"}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#.utf8).write(to: url)
        do {
            _ = try WordPieceTokenizer(tokenizerJSONURL: url)
            Issue.record("expected an error")
        } catch let e as TokenizerError {
            #expect(e.message.contains("NFKC"))
        }
        try Data(#"{"model": {"type": "WordPiece", "vocab": {"[UNK]": "zero"}}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#.utf8).write(to: url)
        #expect(throws: TokenizerError.self) { try WordPieceTokenizer(tokenizerJSONURL: url) }
    }

    /// Inputs of Fuzz/fuzz-tokenizer-json: a special-token id outside the vocabulary trapped when
    /// encoding (index out of range), and a stray huge id allocated a placeholder for every id
    /// below it (2^31 of them).
    @Test func idsOutsideTheVocabularyAreRefusedAtLoad() throws {
        let url = try makeVocabFolder([]).appendingPathComponent("tokenizer.json")
        func error(_ json: String) throws -> String {
            try Data(json.utf8).write(to: url)
            do { _ = try WordPieceTokenizer(tokenizerJSONURL: url) } catch { return "\(error)" }
            return "no error"
        }
        let model = #""model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hi": 3}}"#
        let pre = #""pre_tokenizer": {"type": "BertPreTokenizer"}"#
        let cls = try error(#"{\#(model), \#(pre), "post_processor": {"type": "BertProcessing", "cls": ["[CLS]", 1000], "sep": ["[SEP]", 2]}}"#)
        #expect(cls.contains("post_processor special token has id 1000, outside the vocabulary of 4"), "\(cls)")
        let added = try error(#"{\#(model), \#(pre), "added_tokens": [{"id": -5, "content": "hi"}]}"#)
        #expect(added.contains("special token \"hi\" has id -5"), "\(added)")
        let pad = try error(#"{\#(model), \#(pre), "padding": {"pad_id": 7}}"#)
        #expect(pad.contains("padding pad_id has id 7"), "\(pad)")
        let huge = try error(#"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "big": 2147483647}}, \#(pre)}"#)
        #expect(huge.contains("id 2147483647 leaves more than 65536 ids unused (2 tokens)"), "\(huge)")
    }
}
