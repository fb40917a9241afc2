import Foundation
import SideTuneCLI
import SideTuneEngine
import Testing

/// `--activation-bits` end to end on a tiny BERT: recorded in the report and the checkpoint, part of
/// the run's fingerprint, and S2A's default of 4 reported as such.
@Suite(.serialized) struct ActivationBitsCLITests {
    @Test func recordedAndFingerprinted() throws {
        let f = try BadInputTests.fixture(rows: 80)
        func quick(_ method: String) -> [String] {
            var q = f.quick
            if let i = q.firstIndex(of: "--method") { q[i + 1] = method }
            return q
        }
        func train(_ method: String, _ extra: [String], name: String) throws -> (run: URL, report: [String: Any], out: String) {
            let run = f.root.appendingPathComponent("run-\(name)"), report = f.root.appendingPathComponent("\(name).json")
            var cmd = try SideTuneCommand.parseAsRoot(["train"] + quick(method) + ["--output", run.path,
                                                                            "--report", report.path, "--dropout", "0"] + extra)
            let out = try captureStandardOutput { try cmd.run() }
            return (run, try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as! [String: Any], out)
        }
        let (run, report, out) = try train("lora", ["--activation-bits", "4"], name: "lora4")
        #expect(report["activation_bits"] as? Int == 4)
        #expect(out.contains("4-bit activations"), "the report table says what backward kept")
        let checkpoint = try String(contentsOf: run.appendingPathComponent("best/checkpoint.json"), encoding: .utf8)
        #expect(checkpoint.contains("\"activationBits\" : 4") || checkpoint.contains("\"activationBits\":4"), "\(checkpoint)")
        let (_, exact, _) = try train("lora", [], name: "lora32")
        #expect(exact["activation_bits"] as? Int == 32)
        let (_, s2a, _) = try train("s2a", [], name: "s2a")
        #expect(s2a["activation_bits"] as? Int == 4, "S2A trains with 4-bit codes unless told")
        let (_, s2aExact, _) = try train("s2a", ["--activation-bits", "32"], name: "s2a32")
        #expect(s2aExact["activation_bits"] as? Int == 32, "an explicit 32 overrides S2A's default")

        // A resumed run must keep the setting.
        let (message, code) = BadInputTests.outcome(["train"] + quick("lora") + ["--output", run.path, "--resume", "--dropout", "0"])
        #expect(code == 1 && message.contains("method options"), "\(message)")
        // Values other than 4, 8, 16 and 32 are refused by the parser.
        #expect(throws: (any Error).self) { try SideTuneCommand.parseAsRoot(["train", "--activation-bits", "3"]) }
    }
}
