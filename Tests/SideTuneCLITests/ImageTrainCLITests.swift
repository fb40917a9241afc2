import Foundation
import SideTuneCLI
import Testing

/// `sidetune train` on the real DINOv2 ViT-S/14 and Fashion-MNIST-1k, small enough for a test:
/// 28 x 28 images (2 x 2 patches + CLS), LAST for 2 epochs (the second from the feature cache),
/// 500 test images. Needs SIDETUNE_VIT_ONNX and SIDETUNE_FASHION_DIR.
@Suite(.serialized) struct ImageTrainCLITests {
    static let onnx = ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]
    static let fashion = ProcessInfo.processInfo.environment["SIDETUNE_FASHION_DIR"]

    @Test(.enabled(if: onnx != nil && fashion != nil, "set SIDETUNE_VIT_ONNX and SIDETUNE_FASHION_DIR"))
    func lastOnTheRealViT() throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-image-cli-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: report) }
        var cmd = try SideTuneCommand.parseAsRoot(["train", "--model", Self.onnx!, "--data", Self.fashion!, "--method", "last",
                                                   "--image-size", "28", "--epochs", "2", "--test-limit", "500",
                                                   "--report", report.path])
        // Captured so that its report cannot land in another suite's capture of standard output.
        _ = try captureStandardOutput { try cmd.run() }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as! [String: Any]
        #expect(json["method"] as? String == "last")
        let accuracy = json["accuracy"] as! Double
        // Ten classes: chance is 10%.
        #expect(accuracy > 0.5, "test accuracy \(accuracy)")
        let peak = json["peak_bytes"] as! [String: Any]
        #expect((peak["cache"] as? Int ?? 0) > 0)
        #expect((peak["gradients"] as? Int ?? 0) < 4 << 20, "only the side network has gradients")
    }

    /// Sizes out of range are refused when parsing; a size that is not a multiple of the model's
    /// patch needs the model's config (OwnModelsCLITests checks that refusal).
    @Test func imageFlagsAreChecked() {
        for size in ["0", "5000"] {
            #expect(throws: (any Error).self) {
                _ = try SideTuneCommand.parseAsRoot(["train", "--model", "vit-s14", "--image-size", size])
            }
        }
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["train", "--model", "vit-s14", "--test-limit", "-1"])
        }
    }
}
