import Foundation
import SideTuneCLI
import SideTuneTrainer
import Testing

/// `sidetune sweep` end to end on a tiny BERT folder: each configuration's test accuracy equals
/// `sidetune train` with the same flags, the outputs are written, and bad grids are refused.
@Suite(.serialized) struct SweepCLITests {
    @Test func configurationsMatchSeparateTrainRuns() throws {
        let f = try BadInputTests.fixture(rows: 80)
        let common = f.modelArgs + ["--max-length", "12", "--epochs", "2", "--batch-size", "8", "--dropout", "0.1"]
        let out = f.root.appendingPathComponent("sweep")
        var sweep = try SideTuneCommand.parseAsRoot(["sweep", "--methods", "last,linear", "--grid", "lr=1e-2,3e-3",
                                                     "--output", out.path] + common)
        _ = try captureStandardOutput { try sweep.run() }
        let reports = try JSONDecoder().decode([String: TrainingReport].self,
                                               from: Data(contentsOf: out.appendingPathComponent("sweep.json")))
        #expect(reports.count == 4)
        for name in ["last,lr=1e-2", "linear,lr=3e-3"] {
            let parts = name.split(separator: ",")
            let method = String(parts[0]), lr = String(parts[1].dropFirst(3))
            let report = f.root.appendingPathComponent("\(name).json")
            var train = try SideTuneCommand.parseAsRoot(["train", "--method", method, "--lr", lr, "--report", report.path] + common)
            _ = try captureStandardOutput { try train.run() }
            let alone = try JSONDecoder().decode(TrainingReport.self, from: Data(contentsOf: report))
            #expect(reports[name]?.accuracy == alone.accuracy, "\(name): sweep \(reports[name]?.accuracy ?? -1), train \(alone.accuracy)")
            #expect(reports[name]?.validationAccuracy == alone.validationAccuracy)
        }
        for file in ["sweep.md", "sweep.csv", "sweep.svg", "best/best/checkpoint.json"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), "\(file)")
        }
        let csv = try String(contentsOf: out.appendingPathComponent("sweep.csv"), encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 5 && csv.hasPrefix("configuration,method,lr,"))
    }

    @Test func badGridsAreRefused() {
        for (args, fragment) in [(["--grid", "seed=1,2"], "must be the same for every configuration"),
                                 (["--grid", "rank"], "expected KEY=V1,V2"),
                                 (["--methods", "lora", "--grid", "lr=1e-3"], "backpropagates through the backbone"),
                                 (["--grid", "rank=4", "--grid", "rank=8"], "given twice")] {
            do {
                _ = try SideTuneCommand.parseAsRoot(["sweep"] + args)
                Issue.record("\(args) was accepted")
            } catch {
                let message = SideTuneCommand.message(for: error)
                #expect(message.contains(fragment), "\(args): \(message)")
            }
        }
    }
}
