import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTrainer
import Testing

/// The generic trainer on images: a tiny ViT and the tiny synthetic image task.
@Suite(.serialized) struct ImageTrainerTests {
    static func split(_ n: Int, seed: UInt64) -> ImageSplit {
        let (pixels, labels) = tinyImageTask(count: n, seed: seed)
        return ImageSplit(labels: labels.map(Int.init), tokens: 10) { rows(pixels, $0) }
    }

    static func trainer(_ method: MethodKind, epochs: Int, cache: Bool, folder: URL? = nil) throws -> Trainer<Classifier<DINOv2ViT>, ImageSplit> {
        var o = MethodOptions()
        o.sideInit = .random
        o.reduction = 4
        o.rank = 4
        o.loraRank = 2
        let model = try makeClassifier(tinyViT(), method, classes: 3, options: o, seed: 1)
        var p = TrainingParameters()
        p.epochs = epochs
        p.batchSize = 8
        p.learningRate = method == .full ? 3e-3 : 3e-2
        p.useCache = cache
        p.patience = 0
        p.outputFolder = folder
        let config = CheckpointConfig(method: method, options: o, labels: ["a", "b", "c"], maxLength: 6, backboneName: "tiny-vit",
                                      backboneSHA256: "abc", seed: 1, epoch: 0, validationAccuracy: nil)
        return try Trainer(model: model, parameters: p, train: split(48, seed: 1), validation: split(12, seed: 2), test: split(30, seed: 3),
                           checkpointConfig: config)
    }

    /// The cache hands back the ViT's taps for images (to bf16 precision), the same number of
    /// tokens per image (patches + CLS).
    @Test func cachedTapsMatchFreshOnes() throws {
        let t = try Self.trainer(.last, epochs: 2, cache: true)
        let idx = [3, 0, 7, 5]
        let fresh = t.model.frozenTaps(t.train.batch(idx))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-image-cache-\(getpid()).bin")
        let cache = try FeatureCache(url: url, lengths: (0..<t.train.count).map(t.train.tokenCount), taps: t.model.tapsRead,
                                     width: t.model.tapWidth)
        cache.store(idx, from: fresh, readBy: t.model)
        let back = cache.taps(for: idx, seq: 10, totalTaps: t.model.tapCount)
        for k in t.model.tapsRead {
            #expect(back[k].shape == fresh[k].shape)
            let scale = fresh[k].toArray().map { abs($0) }.max()!
            #expect(maxAbsDiff(back[k], fresh[k]) <= scale / 128, "tap \(k): bf16 keeps 8 bits of mantissa")
        }
    }

    /// The ViT methods' examples are independent (so their steps run as micro-batches; HST's
    /// BatchNorm couples them, see HSTTrainerTests): gradients over parts are the whole batch's,
    /// for side methods and for LoRA and BitFit backpropagating through the ViT in each part.
    @Test(arguments: [MethodKind.last, .lst, .linear, .lora, .bitfit])
    func gradientsAreTheSumOverParts(method: MethodKind) throws {
        let t = try Self.trainer(method, epochs: 1, cache: false)
        #expect(t.model.examplesAreIndependent)
        t.model.train(false) // dropout off: parts draw other masks than the whole batch
        expectPartsGiveTheWholeBatchGradients(t.model.trainableParameters().map(\.1), all: Array(0..<7),
                                              parts: [[0, 1, 2], [3, 4, 5, 6]]) { part in
            t.model.logits(t.train.batch(part), taps: nil).crossEntropy(targets: part.map { Int32(t.train.labels[$0]) })
        }
    }

    /// Side methods train from the cache after epoch 1 and reach test accuracy well above chance (1/3);
    /// LoRA and full fine-tuning train through the ViT (no cache) and do too; checkpoints reload.
    @Test(arguments: [MethodKind.last, .lst, .linear, .lora, .full])
    func trainsAndReloads(method: MethodKind) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-image-run-\(getpid())-\(method.rawValue)")
        defer { try? FileManager.default.removeItem(at: folder) }
        // A ledger of its own: suites training beside this one (and building caches) must not show here.
        let t = try MemoryLedger.withLedger(MemoryLedger()) { try Self.trainer(method, epochs: 8, cache: true, folder: folder) }
        var cachedEpochs = 0, losses: [Double] = []
        let report = try t.run {
            if case .epochEnd(_, let loss, _, _, let cached, _) = $0 {
                losses.append(loss)
                if cached { cachedEpochs += 1 }
            }
        }
        #expect(cachedEpochs == (method.readsFrozenTaps ? 7 : 0))
        #expect(((report.peakBytes["cache"] ?? 0) > 0) == method.readsFrozenTaps)
        #expect(report.accuracy > 0.5, "\(method): test accuracy \(report.accuracy), train losses \(losses)")
        // The best checkpoint reloads into a fresh model with the same test accuracy.
        let fresh = try Self.trainer(method, epochs: 1, cache: false)
        _ = try Checkpoint.load(into: fresh.model, from: folder.appendingPathComponent("best"), backboneSHA256: "abc")
        #expect(abs(fresh.evaluate(fresh.test).accuracy - report.accuracy) < 1e-9)
    }
}
