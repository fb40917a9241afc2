import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTrainer
import Testing

/// Images [N, 3, 8, 8]: class 0 bright on top, class 1 bright at the bottom, noise everywhere.
struct TinyImageSplit: ClassificationData {
    let images: Tensor
    let labels: [Int]
    var count: Int { labels.count }
    func tokenCount(_ i: Int) -> Int { 1 + 16 }
    func batch(_ indices: [Int]) -> Tensor {
        let per = 3 * 8 * 8
        let out = Tensor(shape: [indices.count, 3, 8, 8])
        for (r, i) in indices.enumerated() { (out.data + r * per).update(from: images.data + i * per, count: per) }
        return out
    }

    init(_ n: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        images = Tensor.randn([n, 3, 8, 8], std: 0.3, rng: &rng)
        var l: [Int] = []
        for i in 0..<n {
            let cls = rng.nextInt(below: 2)
            l.append(cls)
            for c in 0..<3 { for y in 0..<4 { for x in 0..<8 { images[i, c, cls == 0 ? y : y + 4, x] += 1.5 } } }
        }
        labels = l
    }
}

func tinyHSTClassifier(seed: UInt64) throws -> HSTClassifier {
    var c = ViTConfig()
    c.hiddenSize = 16; c.layers = 4; c.heads = 2; c.mlpSize = 32; c.patchSize = 2; c.positionGrid = 3
    return try HSTClassifier(backbone: DINOv2ViT(config: c, seed: seed), classes: 2,
                             config: HSTConfig(dims: [4, 6, 8, 8], depths: [1, 1, 1, 1], heads: [1, 2, 2, 2]), seed: seed + 1)
}

@Suite(.serialized) struct HSTTrainerTests {
    /// The generic trainer runs HST on images (no feature cache), and the checkpoint it keeps
    /// restores the BatchNorm running statistics with the parameters. BatchNorm's batch statistics
    /// couple the examples, so its steps never run as micro-batches.
    @Test func trainsAndCheckpointsRunningStatistics() throws {
        let folder = tempFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try tinyHSTClassifier(seed: 3)
        #expect(!model.examplesAreIndependent)
        var p = TrainingParameters()
        p.epochs = 4
        p.batchSize = 8
        p.learningRate = 1e-2
        p.outputFolder = folder
        p.patience = 0
        let cfg = CheckpointConfig(method: .hst, options: MethodOptions(), labels: ["top", "bottom"], maxLength: 28,
                                   backboneName: "tiny-vit", backboneSHA256: "abc", seed: 1, epoch: 0, validationAccuracy: nil)
        let trainer = try Trainer(model: model, parameters: p, train: TinyImageSplit(48, seed: 1),
                                  validation: TinyImageSplit(16, seed: 2), test: TinyImageSplit(32, seed: 3), checkpointConfig: cfg)
        let report = try trainer.run()
        #expect(report.accuracy >= 0.9, "test accuracy \(report.accuracy)")

        // After the run the model holds the best checkpoint (the trainer reloads it for the test).
        let fresh = try tinyHSTClassifier(seed: 3)
        _ = try Checkpoint.load(into: fresh, from: folder.appendingPathComponent("best"), backboneSHA256: "abc")
        for ((n, a), (_, b)) in zip(model.namedBuffers(), fresh.namedBuffers()) {
            #expect(a.toArray() == b.toArray(), "buffer \(n)")
        }
        #expect(fresh.side.headNorm.runningVar.value.toArray() != [Float](repeating: 1, count: 8)) // it did move
        for ((n, a), (_, b)) in zip(model.trainableParameters(), fresh.trainableParameters()) {
            #expect(a.toArray() == b.toArray(), "parameter \(n)")
        }
    }
}
