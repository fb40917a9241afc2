import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import Testing

/// A 4-block ViT of width 16 on 16 x 16 images (8 x 8 patch grid) and a 4-stage side network of
/// one block per stage, so side stage k reads ViT block k.
func tinyHST(seed: UInt64 = 1, classes: Int = 3) throws -> HSTClassifier {
    var c = ViTConfig()
    c.hiddenSize = 16; c.layers = 4; c.heads = 2; c.mlpSize = 32; c.patchSize = 2; c.positionGrid = 3
    let vit = DINOv2ViT(config: c, seed: seed)
    let hst = HSTConfig(dims: [4, 6, 8, 8], depths: [1, 1, 1, 1], heads: [1, 2, 2, 2])
    return try HSTClassifier(backbone: vit, classes: classes, config: hst, seed: seed + 1)
}

@Suite(.serialized) struct HSTTests {
    @Test func trainsOnlyTheSideMetaTokensAndBlockLayerNorms() throws {
        let model = try tinyHST()
        let names = model.trainableParameters().map(\.0)
        let backboneNames = names.filter { $0.hasPrefix("backbone.") }
        #expect(backboneNames.count == 4 * 4 && backboneNames.allSatisfy { $0.contains(".norm1.") || $0.contains(".norm2.") })
        #expect(names.contains("side.metaTokens") && names.contains("side.stages.0.stem.conv1.weight"))
        #expect(!names.contains("side.stages.0.stem.conv1.bias")) // the stem's first conv has no bias
        // BatchNorm running statistics are buffers (checkpointed, not trained).
        #expect(model.namedBuffers().map(\.0) == ["side.stages.0.stem.norm1.runningMean", "side.stages.0.stem.norm1.runningVar",
                                                  "side.headNorm.runningMean", "side.headNorm.runningVar"])
        var rng = SplitMix64(seed: 2)
        let x = Tensor.randn([3, 3, 16, 16], rng: &rng)
        #expect(noGrad { model(x) }.shape == [3, 3])
        // Odd sizes too: 14 x 18 pixels, 7 x 9 patches, side grids 4x5, 2x3, 1x2, 1x1.
        #expect(noGrad { model(Tensor.randn([2, 3, 14, 18], rng: &rng)) }.shape == [2, 3])
    }

    /// Every kind of trainable tensor against finite differences through the whole model (ViT with
    /// meta tokens, bridges, resize, cross-attention, convs, both BatchNorms in training mode).
    @Test func gradientsMatchFiniteDifferences() throws {
        let model = try tinyHST(seed: 3)
        var rng = SplitMix64(seed: 4)
        let x = Tensor.randn([3, 3, 8, 8], rng: &rng)
        let s = model.side
        let picked: [Tensor] = [
            s.metaTokens, s.stages[0].stem!.conv1.weight, s.stages[0].stem!.norm1.weight!, s.stages[0].stem!.conv2.bias!,
            s.stages[1].bridge.weight, s.stages[1].downsample!.conv.weight, s.stages[2].metaNorms[0].weight!,
            s.stages[2].blocks[0].attention.query.weight, s.stages[3].blocks[0].fc2.bias!, s.stages[3].norm.weight!,
            s.classifier.weight, model.backbone.layers[1].norm1.weight!, model.backbone.layers[2].norm2.bias!,
        ]
        // Larger random weights than the 0.02 initialisation so every path carries signal.
        for (_, p) in s.namedParameters() where p.shape.count == 2 && p !== s.metaTokens {
            for i in 0..<p.count { p.data[i] = rng.nextNormal() * 0.3 }
        }
        // A small step: at 1e-2 some stem ReLU inputs cross 0 and the difference quotient is off by ~10%.
        gradCheck("HST", picked, eps: 2e-3, atol: 3e-3, rtol: 3e-2) { _ in model(x) }
    }

    @Test func aFewStepsReduceTheLossOnATinyTask() throws {
        let model = try tinyHST(seed: 5, classes: 2)
        // Class 0: bright top half; class 1: bright bottom half; noise everywhere.
        var rng = SplitMix64(seed: 6)
        let n = 8
        let x = Tensor.randn([n, 3, 8, 8], std: 0.3, rng: &rng)
        var labels: [Int32] = []
        for i in 0..<n {
            let cls = i % 2
            labels.append(Int32(cls))
            for c in 0..<3 { for y in 0..<4 { for xx in 0..<8 { x[i, c, cls == 0 ? y : y + 4, xx] += 1.5 } } }
        }
        let opt = AdamW(parameters: model.trainableParameters().map(\.1), learningRate: 1e-2, weightDecay: 0)
        var losses: [Float] = []
        for _ in 0..<15 {
            opt.zeroGrad()
            let loss = model(x).crossEntropy(targets: labels)
            losses.append(loss.item())
            loss.backward()
            opt.step()
        }
        #expect(losses.last! < 0.5 * losses.first!, "losses \(losses)")
        // Evaluation mode (running statistics) still classifies the training images.
        model.train(false)
        let logits = noGrad { model(x) }
        let correct = (0..<n).filter { (logits[$0, 1] > logits[$0, 0]) == (labels[$0] == 1) }.count
        #expect(correct >= 7, "eval-mode accuracy \(correct)/\(n)")
    }

    /// Trainable parameters on ViT-S/14 with 10 classes, by parts (widths 32/48/64/72):
    /// bridges 384*216+216, meta tokens 12*384, block LayerNorms 12*4*384, side blocks
    /// sum 3(12d^2+13d) = 462,312, stem 5,120, downsamples 83,496, meta norms 1,296, stage norms 432,
    /// head 730. The paper's 0.78 M is on ViT-B (D = 768, 100 classes: 772,140 by the same count).
    @Test func parameterCountOnViTS14() throws {
        var rng = SplitMix64(seed: 7)
        let side = try HSTSide(vit: ViTConfig(), classes: 10, rng: &rng)
        #expect(side.parameterCount + 12 * 4 * 384 == 659_586)
        var b = ViTConfig()
        b.hiddenSize = 768
        let sideB = try HSTSide(vit: b, classes: 100, rng: &rng)
        #expect(sideB.parameterCount + 12 * 4 * 768 == 772_140)
    }

    @Test func badConfigurationsAreClearErrors() {
        var rng = SplitMix64(seed: 8)
        var c = ViTConfig()
        c.layers = 10
        #expect(throws: MethodError.self) { try HSTSide(vit: c, classes: 3, rng: &rng) }
        #expect(throws: MethodError.self) {
            try HSTSide(vit: ViTConfig(), classes: 3, config: HSTConfig(dims: [30, 48, 64, 72], depths: [3, 3, 3, 3], heads: [4, 4, 8, 12]), rng: &rng)
        }
        #expect(throws: MethodError.self) { try HSTSide(vit: ViTConfig(), classes: 1, rng: &rng) }
    }

    /// Bridge-then-resize equals the paper's resize-then-bridge (bilinear weights sum to 1).
    @Test func bridgeCommutesWithBilinearResize() {
        var rng = SplitMix64(seed: 9)
        let bridge = Linear(16, 4, rng: &rng)
        let map = Tensor.randn([2, 16, 5, 3], rng: &rng) // [B, D, h, w]
        func toTokens(_ t: Tensor) -> Tensor { t.reshaped([2, t.shape[1], -1]).permuted([0, 2, 1]) }
        func toMap(_ t: Tensor, _ h: Int, _ w: Int) -> Tensor { t.permuted([0, 2, 1]).reshaped([2, t.shape[2], h, w]) }
        let paper = noGrad { bridge(toTokens(map.resizedBilinear(height: 7, width: 4))) }
        let ours = noGrad { toTokens(toMap(bridge(toTokens(map)), 5, 3).resizedBilinear(height: 7, width: 4)) }
        #expect(maxAbsDiff(paper, ours) < 1e-5)
    }

    /// Measurement, not a check (run with SIDETUNE_VIT_ONNX=... SIDETUNE_HST_BENCH=1): seconds per
    /// training step (forward, backward, AdamW) and the ledger's peaks at batch 32 on the real
    /// ViT-S/14, at 224 and 112 px. The second of two steps is reported.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil
                   && ProcessInfo.processInfo.environment["SIDETUNE_HST_BENCH"] != nil))
    func stepTimeAndPeakMemoryOnTheRealViT() throws {
        let ledger = MemoryLedger()
        try MemoryLedger.withLedger(ledger) {
            let (vit, _) = try DINOv2ViT.load(onnx: ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!))
            let model = try HSTClassifier(backbone: vit, classes: 10, seed: 1)
            testLog("HST on ViT-S/14: \(model.trainableParameterCount) trainable of \(model.parameterCount) parameters")
            let opt = AdamW(parameters: model.trainableParameters().map(\.1), learningRate: 1e-3, weightDecay: 0.01)
            var rng = SplitMix64(seed: 1)
            let labels = (0..<32).map { Int32($0 % 10) }
            for size in ProcessInfo.processInfo.environment["SIDETUNE_HST_BENCH_SIZES"].map({ $0.split(separator: ",").compactMap { Int($0) } }) ?? [224, 112] {
                let x = Tensor.randn([32, 3, size, size], rng: &rng)
                for step in 0..<2 {
                    ledger.resetPeaks()
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    opt.zeroGrad()
                    let loss = model(x).crossEntropy(targets: labels)
                    let t1 = DispatchTime.now().uptimeNanoseconds
                    loss.backward()
                    opt.step()
                    let t2 = DispatchTime.now().uptimeNanoseconds
                    #expect(loss.item().isFinite)
                    if step == 1 {
                        let snap = ledger.snapshot()
                        let peaks = MemoryCategory.allCases.map { "\($0.rawValue) \(formatBytes(snap.peak[$0] ?? 0))" }
                        testLog(String(format: "HST step at %d px, batch 32: %.2f s (forward %.2f s, backward+AdamW %.2f s); ledger peak total %@; %@",
                                     size, Double(t2 - t0) / 1e9, Double(t1 - t0) / 1e9, Double(t2 - t1) / 1e9,
                                     formatBytes(snap.peakTotal), peaks.joined(separator: ", ")))
                    }
                }
            }
        }
    }
}
