import Foundation
import Testing
import SideTuneData
import SideTuneEngine

func load(_ text: String, _ options: LoadOptions = LoadOptions(), name: String = "t.csv") throws -> TextDataset {
    try TextDataset.load(bytes: Array(text.utf8), fileName: name, options: options)
}

func loadError(_ bytes: [UInt8], _ options: LoadOptions = LoadOptions(), name: String = "t.csv") -> DataError? {
    do {
        _ = try TextDataset.load(bytes: bytes, fileName: name, options: options)
        return nil
    } catch {
        return error as? DataError
    }
}

@Suite("CSV / TSV / JSONL loading")
struct LoaderTests {
    @Test func rfc4180QuotingNewlinesAndCRLF() throws {
        let csv = "label,text\r\npos,\"hello, world\"\r\nneg,\"she said \"\"no\"\"\"\r\npos,\"two\r\nlines\"\r\nneg,plain\r\n"
        let d = try load(csv)
        #expect(d.texts == ["hello, world", "she said \"no\"", "two\r\nlines", "plain"])
        #expect(d.labelVocabulary.labels == ["neg", "pos"])
        #expect(d.labels == [1, 0, 1, 0])
        #expect(d.report.rowsRead == 4 && d.report.skippedCount == 0)
    }

    @Test func lineNumbersCountEmbeddedNewlines() throws {
        // Row 2 spans lines 2-3, so the bad row is on line 5 (a blank line 4 is ignored).
        let csv = "label,text\na,\"x\ny\"\n\nb,too,many\nb,ok\n"
        let d = try load(csv)
        #expect(d.report.skipped == [SkippedRow(line: 5, reason: "expected 2 fields (label,text), found 3")])
        #expect(d.texts == ["x\ny", "ok"])
    }

    @Test func malformedRowsAreSkippedAndCounted() throws {
        let csv = """
        label,text
        a,good one
        ,no label
        b,
        b,   
        a,"closed" junk
        b,fine
        a,"never closed
        b,swallowed
        """
        let d = try load(csv)
        #expect(d.texts == ["good one", "fine"])
        #expect(d.report.rowsRead == 7)
        #expect(d.report.skippedCount == 5)
        let lines = d.report.skipped.map(\.line)
        #expect(lines == [3, 4, 5, 6, 8])
        #expect(d.report.skipped[0].reason.contains("missing label"))
        #expect(d.report.skipped[1].reason.contains("empty text"))
        #expect(d.report.skipped[3].reason.contains("after its closing quote"))
        #expect(d.report.skipped[4].reason.contains("unterminated quoted field opened at line 8"))
    }

    @Test func strictModeThrowsWithLine() {
        let e = loadError(Array("label,text\na,ok\nb,x,y\n".utf8), LoadOptions(strict: true))
        #expect(e?.line == 3)
        #expect(e?.description == "t.csv:3: expected 2 fields (label,text), found 3")
    }

    @Test func invalidUTF8IsRepairedAndCounted() throws {
        // 0xD1 without continuation, then a 3-byte sequence cut short, then a valid U+FFFD.
        let bytes: [UInt8] = Array("label,text\na,cars_".utf8) + [0xD1] + Array("_no ".utf8) + [0xE2, 0x82]
            + Array(" end \u{FFFD}\nb,clean\n".utf8)
        let d = try TextDataset.load(bytes: bytes, fileName: "t.csv", options: LoadOptions())
        #expect(d.texts[0] == "cars_\u{FFFD}_no \u{FFFD} end \u{FFFD}")
        #expect(d.report.repairedRows == 1)
        #expect(d.report.replacementCharacters == 2)
    }

    @Test func fileLevelErrors() {
        #expect(loadError([])?.message.contains("empty") == true)
        #expect(loadError(Array("label,text\n".utf8))?.message.contains("no usable rows") == true)
        let missing = loadError(Array("sentiment,tweet\na,b\n".utf8))
        #expect(missing?.description == "t.csv:1: text column \"text\" not found; the CSV header has: \"sentiment\", \"tweet\"")
        let single = loadError(Array("label,text\na,x\na,y\n".utf8))
        #expect(single?.message.contains("same label \"a\"") == true)
        #expect(single?.message.contains("skipped") == false)
        // An unterminated quote swallows the rows after it: the error names it, not only the label count.
        let swallowed = loadError(Array("text,label\nhello,pos\n\"broken,neg\nfine,neg\n".utf8))
        #expect(swallowed?.message.contains("same label \"pos\"") == true)
        #expect(swallowed?.message.contains("line 3: unterminated quoted field") == true, "\(swallowed?.message ?? "no error")")
        #expect(loadError(Array("label,text\n,x\n".utf8))?.message.contains("missing label") == true)
    }

    @Test func tsvAndPairs() throws {
        let tsv = "premise\thypothesis\tlabel\nA \"quoted\" man\tA man\tentail\nSky\tGround\tcontra\n"
        let d = try load(tsv, LoadOptions(textColumn: "premise", labelColumn: "label", pairColumn: "hypothesis", format: .tsv), name: "t.tsv")
        #expect(d.texts == ["A \"quoted\" man", "Sky"])
        #expect(d.pairs == ["A man", "Ground"])
        #expect(d.labelVocabulary.labels == ["contra", "entail"])
    }

    @Test func jsonLines() throws {
        let jsonl = """
        {"text": "good", "label": 1}
        {"text": "bad", "label": 0}

        {"text": "broken", "label": 
        {"label": 1}
        {"text": 5, "label": 1}
        [1, 2]
        {"text": "fine", "label": "1"}
        """
        let d = try load(jsonl, LoadOptions(format: .jsonl), name: "t.jsonl")
        #expect(d.texts == ["good", "bad", "fine"])
        #expect(d.labelVocabulary.labels == ["0", "1"])
        #expect(d.labels == [1, 0, 1])
        #expect(d.report.skipped.map(\.line) == [4, 5, 6, 7])
        #expect(d.report.skipped[0].reason.hasPrefix("invalid JSON"))
        #expect(d.report.skipped[1].reason == "missing key \"text\"")
        let e = loadError(Array(#"{"sentence": "x", "label": 1}"#.utf8), LoadOptions(format: .jsonl), name: "t.jsonl")
        #expect(e?.message == "text key \"text\" not found in any row; keys seen: \"label\", \"sentence\"")
    }

    @Test func skipListKeepsFirstTwenty() throws {
        var csv = "label,text\na,x\nb,y\n"
        for _ in 0..<30 { csv += "a,1,2\n" }
        let d = try load(csv)
        #expect(d.report.skippedCount == 30 && d.report.skipped.count == 20)
        #expect(d.report.skipped.first?.line == 4)
    }

    @Test func labelVocabularyRoundTrips() throws {
        let v = LabelVocabulary(labels: ["pos", "neg", "neutral", "neg"])
        #expect(v.labels == ["neg", "neutral", "pos"])
        #expect(v.index(of: "pos") == 2 && v.index(of: "x") == nil)
        let back = try JSONDecoder().decode(LabelVocabulary.self, from: try JSONEncoder().encode(v))
        #expect(back == v && back.index(of: "neutral") == 1)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(LabelVocabulary.self, from: Data(#"{"labels":["a","a"]}"#.utf8)) }
    }
}

@Suite("Seeded stratified splits")
struct SplitTests {
    static func synthetic() -> TextDataset {
        // 500 a, 300 b, 200 c.
        let labels = (0..<1000).map { $0 < 500 ? 0 : ($0 < 800 ? 1 : 2) }
        return TextDataset(texts: labels.indices.map { "t\($0)" }, labels: labels, labelVocabulary: LabelVocabulary(labels: ["a", "b", "c"]))
    }

    @Test func splitMix64KnownValues() {
        // Reference values of SplitMix64 seeded with 1234567 (from the published C code).
        var r = SplitMix64(seed: 1234567)
        #expect([r.next(), r.next(), r.next()] == [6457827717110365317, 3203168211198807973, 9817491932198370423])
    }

    @Test func stratifiedDeterministicAndDisjoint() {
        let d = Self.synthetic()
        let s = d.stratifiedSplit(seed: 42)
        #expect(s == d.stratifiedSplit(seed: 42))
        #expect(s != d.stratifiedSplit(seed: 43))
        #expect(s.train.count == 800 && s.validation.count == 100 && s.test.count == 100)
        #expect(Set(s.train + s.validation + s.test).count == 1000)
        func counts(_ idx: [Int]) -> [Int] { d.subset(idx).classCounts }
        #expect(counts(s.validation) == [50, 30, 20])
        #expect(counts(s.test) == [50, 30, 20])
    }

    @Test func stratifiedSampleKeepsProportionsAndRareClasses() {
        let d = Self.synthetic()
        let sample = d.stratifiedSample(10, seed: 7)
        #expect(sample.count == 10 && d.subset(sample).classCounts == [5, 3, 2])
        let tiny = d.stratifiedSample(3, seed: 7)
        #expect(d.subset(tiny).classCounts == [1, 1, 1])
        let s = d.stratifiedSplit(seed: 1).subset(maxPerSplit: 20, of: d, seed: 1)
        #expect(s.train.count == 20 && s.validation.count == 20 && s.test.count == 20)
        #expect(Set(s.train).isSubset(of: Set(d.stratifiedSplit(seed: 1).train)))
    }
}
