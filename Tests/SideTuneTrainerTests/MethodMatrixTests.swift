import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTokenizers
import SideTuneTrainer
import Testing

/// Every cell of the method x backbone matrix that the registry says runs: built through the
/// registry on a tiny model of that backbone (64 wide, so NF4 can store it), trained a few steps by
/// the trainer's own step, then checked where gradients went: nowhere in the backbone for side
/// methods; to exactly the backbone tensors the method trains for the others. Every cell the
/// registry refuses is refused by `build` with its reason.
@Suite(.serialized) struct MethodMatrixTests {
    static let cells: [(MethodKind, BackboneFamily)] = MethodRegistry.all.flatMap { m in
        BackboneFamily.allCases.filter { m.refusal(on: $0) == nil }.map { (m.kind, $0) }
    }
    static let refused: [(MethodKind, BackboneFamily)] = MethodRegistry.all.flatMap { m in
        BackboneFamily.allCases.filter { m.refusal(on: $0) != nil }.map { (m.kind, $0) }
    }

    static func options(_ method: MethodKind) -> MethodOptions {
        var o = MethodOptions()
        o.sideInit = .magnitude     // BERT prunes, the others start random
        o.reduction = 4             // side width 16
        o.rank = 4
        o.loraRank = 2
        o.adapterBottleneck = 4
        o.promptLength = 2
        o.dropout = 0
        o.qst.reduction = 4
        o.qst.adapterWidth = 4
        o.hst = HSTConfig(dims: [4, 6, 8, 8], depths: [3, 3, 3, 3], heads: [1, 2, 2, 2])
        return o
    }

    static func parameters() -> TrainingParameters {
        var p = TrainingParameters()
        p.batchSize = 8
        p.learningRate = 1e-2
        p.microBatches = 1
        return p
    }

    /// Token rows of a 3-class task over ids 1...39 (every tiny vocabulary holds them).
    static func textSplit(_ n: Int, seed: UInt64) -> EncodedSplit {
        var rng = SplitMix64(seed: seed)
        var ids: [[Int32]] = [], labels: [Int] = []
        for _ in 0..<n {
            let label = rng.nextInt(below: 3)
            ids.append((0..<(3 + rng.nextInt(below: 5))).map { _ in Int32(1 + label * 13 + rng.nextInt(below: 13)) })
            labels.append(label)
        }
        return EncodedSplit(ids: ids, labels: labels)
    }

    static func imageSplit(_ n: Int) -> ImageSplit {
        let (pixels, labels) = tinyImageTask(count: n, seed: 7)
        return ImageSplit(labels: labels.map(Int.init), tokens: 10) { rows(pixels, $0) }
    }

    @Test(arguments: cells)
    func trainsAndSendsGradientsWhereItShould(method: MethodKind, family: BackboneFamily) throws {
        switch family {
        case .bert: try check(method, backbone: tinyBackbone(width: 64), split: Self.textSplit(16, seed: 1))
        case .vit: try check(method, backbone: tinyViT(width: 64, layers: method == .hst ? 12 : 2), split: Self.imageSplit(16))
        case .llama: try check(method, backbone: tinyLlama(dim: 64, ffnDim: 128), split: Self.textSplit(16, seed: 1))
        }
    }

    func check<B: Backbone, S: ClassificationData>(_ method: MethodKind, backbone: B, split: S) throws where S.Batch == B.Input {
        let examples = { (n: Int) in (0..<min(n, split.count)).map { (input: split.batch([$0]), label: split.labels[$0]) } }
        let model = try MethodRegistry.build(method, on: backbone, classes: 3, options: Self.options(method), seed: 3,
                                             trainingExamples: examples)
        try check(model, backbone: backbone, split: split)
    }

    func check<M: TrainableModel, B: Backbone, S: ClassificationData>(_ model: M, backbone: B, split: S) throws where S.Batch == M.Batch {
        let method = model.method, name = "\(method.rawValue) on \(B.family.rawValue)"
        let config = CheckpointConfig(method: method, options: Self.options(method), labels: ["a", "b", "c"], maxLength: 8,
                                      backboneName: "tiny", backboneSHA256: "x", seed: 3, epoch: 0, validationAccuracy: nil)
        let trainer = try Trainer(model: model, parameters: Self.parameters(), train: split, validation: split, test: split,
                                  checkpointConfig: config)
        let rows = Array(0..<8)
        func loss() -> Float {
            model.train(false)
            defer { model.train(true) }
            return noGrad { model.logits(split.batch(rows), taps: nil).crossEntropy(targets: split.targets(rows)).item() }
        }
        let before = loss()
        let context = trainer.makeStepContext()
        for _ in 0..<6 { trainer.step(rows, context: context) }
        let after = loss()
        #expect(after < before, "\(name): loss \(before) -> \(after)")

        // Where the last step's gradients went.
        let trainable = model.trainableParameters()
        #expect(!trainable.isEmpty, "\(name) trains nothing")
        #expect(trainable.allSatisfy { $0.1.grad != nil }, "\(name): a trainable tensor got no gradient")
        let inBackbone = backbone.namedParameters()
        let trainedInBackbone = inBackbone.filter { $0.1.requiresGrad }
        for (n, p) in inBackbone where !p.requiresGrad { #expect(p.grad == nil, "\(name): frozen backbone tensor \(n) got a gradient") }
        if method.readsFrozenTaps {
            #expect(trainedInBackbone.isEmpty && model.tapsRead.count > 0, "\(name): a side method trains backbone tensors")
        } else {
            #expect(model.tapsRead.isEmpty)
            let expected: (String) -> Bool = switch method {
            case .full: { _ in true }
            case .bitfit, .s2a: { $0.hasSuffix("bias") }
            case .lora, .qlora: { $0.contains("lora") }
            case .adapter: { $0.contains(".adapter.") }
            case .hst: { $0.contains("norm1") || $0.contains("norm2") }
            default: { _ in false } // prompt tuning trains its prompt, outside the backbone
            }
            #expect(trainedInBackbone.allSatisfy { expected($0.0) }, "\(name): trains \(trainedInBackbone.map(\.0).filter { !expected($0) })")
            if method != .prompt { #expect(!trainedInBackbone.isEmpty, "\(name): nothing trains in the backbone") }
        }
        if [.qst, .qlora].contains(method) { #expect(backbone.weightFormat == .nf4, "\(name) runs on NF4 weights") }
    }

    @Test(arguments: refused)
    func refusedCellsSayWhy(method: MethodKind, family: BackboneFamily) {
        do {
            switch family {
            case .bert: _ = try MethodRegistry.build(method, on: tinyBackbone(width: 64), classes: 3, options: Self.options(method), seed: 1)
            case .vit: _ = try MethodRegistry.build(method, on: tinyViT(width: 64), classes: 3, options: Self.options(method), seed: 1)
            case .llama: _ = try MethodRegistry.build(method, on: tinyLlama(dim: 64, ffnDim: 128), classes: 3, options: Self.options(method), seed: 1)
            }
            Issue.record("\(method) on \(family) should be refused")
        } catch {
            #expect("\(error)".contains(MethodRegistry.method(method).refusal(on: family)!), "\(error)")
        }
    }
}
