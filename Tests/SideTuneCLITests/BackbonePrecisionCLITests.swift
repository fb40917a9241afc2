import Foundation
import SideTuneCLI
import SideTuneEngine
import Testing

/// `--backbone-precision bf16` end to end on a tiny BERT: recorded in the report and the
/// checkpoint, used again by `eval` (which reproduces the run's test accuracy) and part of the
/// run's fingerprint. (The golden tests show that the bf16 path changes the taps.)
@Suite(.serialized) struct BackbonePrecisionCLITests {
    @Test func recordedReusedAndFingerprinted() throws {
        let f = try BadInputTests.fixture(rows: 80)
        func train(_ precision: String) throws -> (run: URL, report: [String: Any]) {
            let run = f.root.appendingPathComponent("run-\(precision)"), report = f.root.appendingPathComponent("\(precision).json")
            var cmd = try SideTuneCommand.parseAsRoot(["train"] + f.quick + ["--output", run.path, "--report", report.path,
                                                                            "--backbone-precision", precision, "--dropout", "0"])
            _ = try captureStandardOutput { try cmd.run() }
            return (run, try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as! [String: Any])
        }
        let (run, report) = try train("bf16")
        let (_, f32) = try train("f32")
        #expect(report["backbone_precision"] as? String == "bf16" && f32["backbone_precision"] as? String == "f32")
        let checkpoint = try String(contentsOf: run.appendingPathComponent("best/checkpoint.json"), encoding: .utf8)
        #expect(checkpoint.contains("\"backbonePrecision\" : \"bf16\"") || checkpoint.contains("\"backbonePrecision\":\"bf16\""),
                "\(checkpoint)")

        // eval restores the precision with the checkpoint: the run's test accuracy again.
        var eval = try SideTuneCommand.parseAsRoot(["eval", "--checkpoint", run.appendingPathComponent("best").path,
                                                    "--data", f.data.path])
        let out = try captureStandardOutput { try eval.run() }
        let accuracy = String(format: "test: accuracy %.2f%%", 100 * (report["accuracy"] as! Double))
        #expect(out.contains(accuracy), "\(out) vs \(accuracy)")

        // A resumed run must keep the precision.
        let (message, code) = BadInputTests.outcome(["train"] + f.quick + ["--output", run.path, "--resume", "--dropout", "0"])
        #expect(code == 1 && message.contains("method options"), "\(message)")
    }
}
