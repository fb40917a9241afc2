import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTokenizers
import SideTuneTrainer
import Testing

/// Synthetic 3-class task on the tiny backbone: the class is which of three token ranges dominates.
func syntheticSplit(_ n: Int, seed: UInt64) -> EncodedSplit {
    var rng = SplitMix64(seed: seed)
    var ids: [[Int32]] = [], labels: [Int] = []
    for _ in 0..<n {
        let label = rng.nextInt(below: 3)
        let len = 3 + rng.nextInt(below: 5)
        ids.append((0..<len).map { _ in Int32(1 + label * 13 + rng.nextInt(below: 13)) })
        labels.append(label)
    }
    return EncodedSplit(ids: ids, labels: labels)
}

func makeTrainer(_ method: MethodKind, folder: URL?, epochs: Int = 3, cache: Bool = true, resume: Bool = false,
                 sha: String = "abc", stopAfter: Int? = nil, dropout: Float = MethodOptions().dropout,
                 learningRate: Float = 3e-2, sideMatmul: MatmulPrecision? = nil) throws -> TextTrainer {
    let enc = tinyBackbone()
    var o = MethodOptions()
    o.sideInit = .magnitude
    o.reduction = 4
    o.rank = 4
    o.dropout = dropout
    o.sideMatmul = sideMatmul
    let model = try TextClassifier(backbone: enc, method: method, classes: 3, options: o, seed: 1)
    var p = TrainingParameters()
    p.epochs = epochs
    p.batchSize = 8
    p.learningRate = learningRate
    p.useCache = cache
    p.outputFolder = folder
    p.resume = resume
    p.patience = 0
    p.stopAfterEpoch = stopAfter
    let cfg = CheckpointConfig(method: method, options: o, labels: ["a", "b", "c"], maxLength: 16, backboneName: "tiny",
                               backboneSHA256: sha, seed: 1, epoch: 0, validationAccuracy: nil)
    return try Trainer(model: model, parameters: p, train: syntheticSplit(64, seed: 1), validation: syntheticSplit(24, seed: 2),
                       test: syntheticSplit(24, seed: 3), checkpointConfig: cfg)
}

func tempFolder() -> URL {
    scratchFolder("trainer")
}

@Suite(.serialized) struct TrainerTests {
    @Test func metricsAreRight() {
        let m = ClassificationMetrics(predictions: [0, 0, 1, 2, 2, 2], labels: [0, 1, 1, 2, 2, 0], classes: 3)
        #expect(abs(m.accuracy - 4.0 / 6) < 1e-12)
        // F1: class0 p=1/2 r=1/2 -> .5; class1 p=1 r=1/2 -> 2/3; class2 p=2/3 r=1 -> .8
        #expect(abs(m.macroF1 - (0.5 + 2.0 / 3 + 0.8) / 3) < 1e-12)
    }

    /// LST learns the synthetic task; epochs after the first read the taps from the cache, and the
    /// cache's bytes show in the ledger as cache. Without dropout: with it the side network (4 wide
    /// here) ended between 75% and 83% depending on which mask each token drew.
    @Test func lstTrainsWithFeatureCache() throws {
        // A ledger of its own, so that tests running beside this one cannot show in its report.
        let trainer = try MemoryLedger.withLedger(MemoryLedger()) { try makeTrainer(.lst, folder: nil, epochs: 12, dropout: 0) }
        var cachedEpochs = 0
        let report = try trainer.run { if case .epochEnd(_, _, _, _, let cached, _) = $0, cached { cachedEpochs += 1 } }
        #expect(cachedEpochs == 11)
        #expect(report.secondsPerStepCached != nil)
        #expect((report.peakBytes["cache"] ?? 0) > 0)
        // The test set is scored with the best validation epoch's weights (epoch 8 of 12 here, 87.5%
        // on 24 examples, scores 67% on the 24 test examples; the last epoch's weights scored over 80%).
        #expect(report.validationAccuracy > 0.8, "validation accuracy \(report.validationAccuracy)")
        #expect(report.accuracy > 0.6, "test accuracy \(report.accuracy)")
        #expect(report.peakBytes["total"]! >= report.peakBytes["weights"]!)
        if FileManager.default.fileExists(atPath: "/proc/stat") {
            let share = try #require(report.stolenCPUShare)
            #expect(share >= 0 && share <= 1)
            #expect(report.jsonString().contains("\"stolen_cpu_share\""))
        }
    }

    /// The cache hands back the same taps the backbone computes (to bf16 precision).
    @Test func cachedTapsMatchFreshOnes() throws {
        let enc = tinyBackbone()
        let split = syntheticSplit(5, seed: 9)
        let batch = makeBatch(split.ids)
        let fresh = noGrad { enc(batch).hiddenStates }
        let url = tempFolder().appendingPathComponent("taps.bin")
        let cache = try FeatureCache(url: url, lengths: split.ids.map(\.count), taps: [0, 1, 2], width: 16)
        for r in 0..<5 { cache.store(r, row: r, from: fresh) }
        let back = cache.taps(for: Array(0..<5), seq: batch.seqLength, totalTaps: 3)
        for t in 0..<3 {
            for r in 0..<5 {
                for j in 0..<(split.ids[r].count * 16) {
                    let a = fresh[t].data[r * batch.seqLength * 16 + j], b = back[t].data[r * batch.seqLength * 16 + j]
                    #expect(abs(a - b) <= abs(a) / 128 + 1e-6)
                }
            }
        }
        // Packed: the chosen examples' real tokens end to end, exactly the padded taps' real rows.
        let order = [3, 0, 4]
        let segments = TokenSegments(lengths: order.map { split.ids[$0].count })
        let packed = cache.packedTaps(for: order, totalTaps: 3)
        let padded = cache.taps(for: order, seq: batch.seqLength, totalTaps: 3)
        for t in 0..<3 {
            #expect(packed[t].shape == [1, segments.total, 16])
            #expect(packed[t].toArray() == noGrad { padded[t].packed(segments) }.toArray())
        }
        // Handed over in bf16 as stored (for readers that take it): the same values, zero padding.
        let packedBF16 = cache.packedTaps(for: order, totalTaps: 3, bfloat16: true)
        let paddedBF16 = cache.taps(for: order, packed: false, totalTaps: 3, bfloat16: true)
        for t in 0..<3 {
            #expect(packedBF16[t].dtype == .bfloat16 && paddedBF16[t].dtype == .bfloat16)
            #expect(packedBF16[t].toArray() == packed[t].toArray())
            #expect(paddedBF16[t].shape == [3, order.map { split.ids[$0].count }.max()!, 16])
            #expect(paddedBF16[t].toArray() == cache.taps(for: order, packed: false, totalTaps: 3)[t].toArray())
        }
        // Stored from packed taps (what a packed frozen forward yields), the cache holds the same bytes.
        let all = TokenSegments(lengths: split.ids.map(\.count))
        let freshPacked = noGrad { fresh.map { $0.packed(all) } }
        let fromPacked = try FeatureCache(url: tempFolder().appendingPathComponent("taps.bin"), lengths: split.ids.map(\.count),
                                          taps: [0, 1, 2], width: 16)
        for r in 0..<5 { fromPacked.store(r, row: r, from: freshPacked, packed: all) }
        let again = fromPacked.packedTaps(for: order, totalTaps: 3)
        for t in 0..<3 { #expect(again[t].toArray() == packed[t].toArray()) }
    }

    /// A run interrupted after 2 of 4 epochs and resumed ends where an uninterrupted run ends.
    @Test func resumeContinuesTheSameRun() throws {
        let full = tempFolder(), split = tempFolder()
        let a = try makeTrainer(.last, folder: full, epochs: 4, cache: false).run()
        let partial = try makeTrainer(.last, folder: split, epochs: 4, cache: false, stopAfter: 2).run()
        #expect(partial.epochSeconds.count == 2)
        // A new process: rebuild everything and resume.
        let b = try makeTrainer(.last, folder: split, epochs: 4, cache: false, resume: true).run()
        #expect(b.epochSeconds.count == 4)
        #expect(abs(a.validationAccuracy - b.validationAccuracy) < 1e-9)
        #expect(abs(a.accuracy - b.accuracy) < 1e-9)
        let best = try Checkpoint.readConfig(full.appendingPathComponent("best"))
        #expect(best.method == .last && best.labels == ["a", "b", "c"])
    }

    /// Checkpoints hold only the trainable parameters and refuse the wrong backbone or a corrupt file.
    @Test func checkpointsAreCheckedOnLoad() throws {
        let folder = tempFolder()
        let t = try makeTrainer(.lora, folder: folder, epochs: 1)
        _ = try t.run()
        let best = folder.appendingPathComponent("best")
        let fresh = try makeTrainer(.lora, folder: nil, epochs: 1)
        _ = try Checkpoint.load(into: fresh.model, from: best, backboneSHA256: "abc")
        for ((n1, p1), (n2, p2)) in zip(t.model.trainableParameters(), fresh.model.trainableParameters()) {
            #expect(n1 == n2 && p1.toArray() == p2.toArray())
        }
        #expect(throws: TrainerError.self) { try Checkpoint.load(into: fresh.model, from: best, backboneSHA256: "other") }
        let weights = best.appendingPathComponent("weights.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes = bytes.prefix(bytes.count / 2)
        try bytes.write(to: weights)
        #expect(throws: TrainerError.self) { try Checkpoint.load(into: fresh.model, from: best, backboneSHA256: "abc") }
        #expect(throws: TrainerError.self) { try Checkpoint.readConfig(folder.appendingPathComponent("nope")) }
    }

    /// Evaluation batches are the training batch size unless set: a batch size picked to fit
    /// memory must fit evaluation too (at a fixed 64 rows, LST's validation pass set its peak RSS).
    @Test func evaluationBatchesFollowTheTrainingBatchSize() throws {
        let t = try makeTrainer(.lst, folder: nil, epochs: 1)
        let split = BatchSizeRecorder(syntheticSplit(24, seed: 2))
        func evaluator(_ evalBatch: Int?) throws -> Trainer<TextClassifier, BatchSizeRecorder> {
            var p = t.parameters
            p.evalBatchSize = evalBatch
            return try Trainer(model: t.model, parameters: p, train: split, validation: split, test: split,
                               checkpointConfig: t.checkpointConfig)
        }
        let byDefault = try evaluator(nil).evaluate(split)
        #expect(split.sizes == [8, 8, 8])
        split.sizes = []
        let wider = try evaluator(16).evaluate(split)
        #expect(split.sizes == [16, 8])
        #expect(throws: TrainerError.self) { try evaluator(0) }
        // The batching does not change the predictions.
        #expect(byDefault.accuracy == wider.accuracy && byDefault.macroF1 == wider.macroF1)
    }

    /// Same seed and thread count, same result.
    /// Without an output folder the test set is still scored with the best epoch's weights (kept in
    /// memory), not the last epoch's. A learning rate too small to change any prediction makes
    /// epoch 1 the best (later epochs tie) while the weights still move.
    @Test func testScoresTheBestEpochWithoutAFolder() throws {
        let t = try makeTrainer(.lst, folder: nil, epochs: 3, cache: false, learningRate: 1e-6)
        let params = t.model.trainableParameters().map { $0.1 }
        func values() -> [[Float]] { params.map { Array(UnsafeBufferPointer(start: $0.data, count: $0.count)) } }
        var epochs: [(improved: Bool, values: [[Float]])] = []
        _ = try t.run { event in
            if case let .epochEnd(_, _, _, _, _, improved) = event { epochs.append((improved, values())) }
        }
        try #require(epochs.count == 3)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path)
        #expect(!leftovers.contains { $0.hasPrefix("sidetune-best-\(getpid())-") }, "the temporary best checkpoint is removed")
        let best = try #require(epochs.lastIndex { $0.improved })
        try #require(best < 2, "the last epoch improved: this setup no longer tells best from last")
        #expect(epochs[2].values != epochs[best].values, "the weights did not move after the best epoch")
        #expect(values() == epochs[best].values)
    }

    /// LST trains with the side network's products in bf16, from the cache too: its losses track
    /// the f32 run's closely but not exactly, and it learns the task about as well (83% validation
    /// for both when written).
    @Test func lstTrainsWithBFloat16Products() throws {
        var losses: [[Double]] = [], reports: [TrainingReport] = []
        for precision in [MatmulPrecision?.none, .bfloat16] {
            let t = try makeTrainer(.lst, folder: nil, epochs: 6, dropout: 0, sideMatmul: precision)
            var l: [Double] = []
            reports.append(try t.run { if case let .epochEnd(_, loss, _, _, _, _) = $0 { l.append(loss) } })
            losses.append(l)
        }
        // Early epochs track the f32 run within 1% (later ones drift apart on this 4-wide side
        // network: the trajectories separate, both still learn).
        for e in 0..<2 { #expect(abs(losses[0][e] - losses[1][e]) <= 0.01 * losses[0][e], "\(losses)") }
        #expect(losses[0] != losses[1], "bf16 products changed nothing")
        #expect(losses[1].last! < 0.5 * losses[1][0], "\(losses[1])")
        #expect(reports[1].secondsPerStepCached != nil)
        #expect(reports[1].validationAccuracy > 0.7 && reports[1].validationAccuracy >= reports[0].validationAccuracy - 0.1,
                "\(reports.map(\.validationAccuracy))")
    }

    @Test func sameSeedSameResult() throws {
        let a = try makeTrainer(.lst, folder: nil, epochs: 2, cache: false).run()
        let b = try makeTrainer(.lst, folder: nil, epochs: 2, cache: false).run()
        #expect(a.accuracy == b.accuracy && a.validationAccuracy == b.validationAccuracy)
    }
}


/// A split that records how many examples each batch it builds holds.
final class BatchSizeRecorder: ClassificationData {
    let split: EncodedSplit
    var sizes: [Int] = []
    init(_ split: EncodedSplit) { self.split = split }
    var count: Int { split.count }
    var labels: [Int] { split.labels }
    func tokenCount(_ i: Int) -> Int { split.tokenCount(i) }
    func batch(_ indices: [Int]) -> BatchEncoding {
        sizes.append(indices.count)
        return split.batch(indices)
    }
}
