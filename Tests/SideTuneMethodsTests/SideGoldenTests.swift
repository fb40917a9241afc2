import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import Testing

/// LST and LAST side networks against their PyTorch twins (scripts/goldens/side_goldens.py) on
/// small random weights: logits, loss and every gradient (parameters and taps).
@Suite struct SideGoldenTests {
    static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Goldens/side_goldens.safetensors")

    func tensor(_ f: SafetensorsFile, _ name: String) throws -> Tensor {
        Tensor(try f.floats(name), shape: try f.info(name).shape)
    }

    func check(_ method: String, _ build: (BertEncoder, MethodOptions) throws -> any TapReader) throws {
        let f = try SafetensorsFile(path: Self.url.path)
        var o = MethodOptions()
        o.reduction = 4
        o.rank = 4
        o.dropout = 0
        o.sideInit = .random
        let side = try build(tinyBackbone(), o)
        var params: [String: Tensor] = [:]
        for (name, _) in side.namedParameters() { params[name] = try tensor(f, "\(method).param.\(name)") }
        try side.load(params, strict: true)
        let taps = try (0...2).map { try tensor(f, "tap.\($0)") }
        for t in taps { t.requiresGrad = true }
        let mask = try f.floats("mask")
        let labels = try f.floats("labels").map { Int32($0) }
        let logits = side(taps: taps, keyPadding: mask)
        let expected = try tensor(f, "\(method).logits")
        let d = maxAbsDiff(logits, expected)
        testLog("\(method) logits maxdiff \(d) first \(logits.toArray().prefix(3)) vs \(expected.toArray().prefix(3))")
        #expect(d < 1e-4, "\(method) logits differ by \(d)")
        let loss = logits.crossEntropy(targets: labels)
        #expect(abs(loss.item() - (try f.floats("\(method).loss"))[0]) < 1e-5)
        loss.backward()
        for (name, p) in side.namedParameters() {
            let g = try tensor(f, "\(method).grad.\(name)")
            let diff = maxAbsDiff(p.grad!, g)
            let scale = g.toArray().map { abs($0) }.max() ?? 1
            #expect(diff <= 1e-4 + 1e-3 * scale, "\(method) grad \(name): maxdiff \(diff) (scale \(scale))")
        }
        for (i, t) in taps.enumerated() {
            let g = try tensor(f, "\(method).grad.tap.\(i)")
            #expect(maxAbsDiff(t.grad!, g) < 1e-4, "\(method) grad of tap \(i)")
        }
    }

    @Test func lstMatchesPyTorch() throws {
        try check("lst") { c, o in
            var rng = SplitMix64(seed: 1)
            return try LSTSide(backbone: c, classes: 3, options: o, rng: &rng)
        }
    }

    @Test func lastMatchesPyTorch() throws {
        try check("last") { c, o in
            var rng = SplitMix64(seed: 1)
            return try LASTSide(backbone: c, classes: 3, options: o, rng: &rng)
        }
    }
}
