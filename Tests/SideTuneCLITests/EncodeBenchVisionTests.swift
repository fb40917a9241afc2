import Foundation
import SideTuneCLI
import Testing

@Suite struct EncodeBenchVisionTests {
    @Test func rejectsBadArguments() {
        #expect(throws: (any Error).self) { _ = try SideTuneCommand.parseAsRoot(["bench", "encode", "--model", "vit-s14", "--size", "100"]) }
        #expect(throws: (any Error).self) { _ = try SideTuneCommand.parseAsRoot(["bench", "encode", "--model", "vit-h"]) }
        #expect(throws: (any Error).self) { _ = try SideTuneCommand.parseAsRoot(["bench", "encode", "--batch", "0"]) }
    }

    @Test func helpNamesTheTwinScript() {
        #expect(SideTuneCommand.Bench.EncodeBenchVision.configuration.discussion.contains("bench_encode_vit_twin.py"))
        let help = SideTuneCommand.helpMessage(for: SideTuneCommand.Bench.EncodeBench.self)
        #expect(help.contains("--batch") && help.contains("--size") && help.contains("vit-s14"))
    }

    /// A tiny real run (1 image at 28x28) when the ONNX file is available.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func jsonReportOnTheRealModel() throws {
        var cmd = try SideTuneCommand.parseAsRoot(["bench", "encode", "--onnx", ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!,
                                                   "--batch", "1", "--size", "28", "--iterations", "1", "--json"])
        let output = try captureStandardOutput { try cmd.run() }
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
        let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect((o["images_per_second"] as! Double) > 0)
        #expect(o["batch"] as? Int == 1 && o["size"] as? Int == 28)
        let peaks = o["peak_bytes_by_category"] as! [String: Int]
        #expect((peaks["weights"] ?? 0) > 80 << 20) // 22M parameters, float32
        #expect((o["peak_rss_bytes"] as! Int) > 0)
    }
}
