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
                 learningRate: Float = 3e-2, sideMatmul: MatmulPrecision? = nil, microBatches: Int? = nil) throws -> Trainer<Classifier<BertEncoder>, EncodedSplit> {
    let enc = tinyBackbone()
    var o = MethodOptions()
    o.sideInit = .magnitude
    o.reduction = 4
    o.rank = 4
    o.dropout = dropout
    o.sideMatmul = sideMatmul
    let model = try makeClassifier(enc, method, classes: 3, options: o, seed: 1)
    var p = TrainingParameters()
    p.epochs = epochs
    p.batchSize = 8
    p.learningRate = learningRate
    p.useCache = cache
    p.outputFolder = folder
    p.resume = resume
    p.patience = 0
    p.stopAfterEpoch = stopAfter
    if let microBatches { p.microBatches = microBatches } // else the default (SIDETUNE_MICROBATCHES or one per thread)
    let cfg = CheckpointConfig(method: method, options: o, labels: ["a", "b", "c"], maxLength: 16, backboneName: "tiny",
                               backboneSHA256: sha, seed: 1, epoch: 0, validationAccuracy: nil)
    return try Trainer(model: model, parameters: p, train: syntheticSplit(64, seed: 1), validation: syntheticSplit(24, seed: 2),
                       test: syntheticSplit(24, seed: 3), checkpointConfig: cfg)
}

/// Backward of the whole batch `all`, then of `parts` as micro-batches: the parameters'
/// gradients (the largest above `minScale`, so there is something to compare) and the mean loss
/// must agree to float rounding.
func expectPartsGiveTheWholeBatchGradients(_ params: [Tensor], all: [Int], parts: [[Int]], minScale: Float = 1e-3,
                                           sourceLocation: SourceLocation = #_sourceLocation, loss: ([Int]) -> Tensor) {
    let wholeLoss = loss(all)
    wholeLoss.backward()
    let whole = params.map { $0.grad!.toArray() }
    for p in params { p.zeroGrad() }
    let partsLoss = microBatchedBackward(parts, loss: loss)
    #expect(abs(partsLoss - wholeLoss.item()) <= 1e-5 * wholeLoss.item(), sourceLocation: sourceLocation)
    let scale = whole.map { $0.map(abs).max()! }.max()!
    let worst = zip(whole, params.map { $0.grad!.toArray() }).map { zip($0, $1).map { abs($0 - $1) }.max()! }.max()!
    #expect(scale > minScale && worst <= 1e-5 * scale, "worst \(worst) of \(scale)", sourceLocation: sourceLocation)
}

/// `expectPartsGiveTheWholeBatchGradients` for a token-id model on all of `split` cut into
/// `parts`: side methods' parts read their taps from a feature cache filled by one frozen pass (as
/// the trainer's cached steps do); the others run the backbone with autograd in each part.
func expectPartsGiveTheWholeSplitGradients<Model: TrainableModel>(_ model: Model, _ split: EncodedSplit, parts: Int, minScale: Float = 1e-3,
                                                                   sourceLocation: SourceLocation = #_sourceLocation) throws
    where Model.Batch == BatchEncoding {
    let all = Array(0..<split.count)
    let cache = model.method.readsFrozenTaps
        ? try FeatureCache(url: tempFolder().appendingPathComponent("taps.bin"), lengths: split.ids.map(\.count),
                           taps: model.tapsRead, width: model.tapWidth) : nil
    cache?.store(all, from: model.frozenTaps(split.batch(all)), readBy: model)
    expectPartsGiveTheWholeBatchGradients(model.trainableParameters().map(\.1), all: all,
                                          parts: cutByTokens(all, parts: parts, tokens: split.tokenCount), minScale: minScale,
                                          sourceLocation: sourceLocation) { part in
        model.logits(split.batch(part), taps: cache?.taps(for: part, readBy: model))
            .crossEntropy(targets: part.map { Int32(split.labels[$0]) })
    }
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
        func evaluator(_ evalBatch: Int?) throws -> Trainer<Classifier<BertEncoder>, BatchSizeRecorder> {
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

    /// Every step of a method whose examples are independent runs as micro-batches (one per
    /// thread by default): side methods' epoch-1 parts each run the frozen backbone on their
    /// examples and store their taps in the feature cache, later epochs' parts read them back;
    /// LoRA's parts backprop through the backbone. Without dropout the losses track the
    /// whole-batch run's to float rounding (but not bit for bit: the parts did run), with or
    /// without the cache; with dropout the same seed gives the same run. Full fine-tuning runs
    /// whole batches (a gradient copy per part would cost a model's size). (That the thread count
    /// does not matter is MicroBatchTests'.)
    @Test(arguments: [MethodKind.lst, .last, .lora, .full])
    func stepsRunAsMicroBatches(method: MethodKind) throws {
        func run(_ microBatches: Int, dropout: Float = 0, cache: Bool = true) throws -> (losses: [Double], report: TrainingReport) {
            var losses: [Double] = []
            let t = try makeTrainer(method, folder: nil, epochs: 4, cache: cache, dropout: dropout,
                                    learningRate: method == .full ? 3e-3 : 3e-2, microBatches: microBatches)
            let report = try t.run { if case let .epochEnd(_, loss, _, _, _, _) = $0 { losses.append(loss) } }
            return (losses, report)
        }
        for cache in method.readsFrozenTaps ? [true, false] : [false] {
            let whole = try run(1, cache: cache), parts = try run(2, cache: cache)
            #expect((parts.report.secondsPerStepCached != nil) == cache)
            #expect(whole.report.microBatches == 1 && parts.report.microBatches == (method == .full ? 1 : 2))
            #expect(parts.report.table().contains(method == .full ? "whole batches" : "each step as 2 micro-batches"))
            if method == .full {
                #expect(whole.losses == parts.losses, "full fine-tuning ran in parts")
                continue
            }
            #expect(whole.losses[1...] != parts.losses[1...], "later epochs ran the same operations as whole batches")
            for e in 0..<4 { #expect(abs(whole.losses[e] - parts.losses[e]) <= 1e-4 * whole.losses[e], "\(whole.losses) vs \(parts.losses)") }
        }
        guard method != .full else { return }
        // With dropout, parts draw their own masks, so epoch 1 shows that the parts ran; the same
        // seed still gives the same run.
        let a = try run(2, dropout: 0.1), b = try run(2, dropout: 0.1), c = try run(1, dropout: 0.1)
        #expect(a.losses == b.losses && a.report.accuracy == b.report.accuracy)
        #expect(a.losses[0] != c.losses[0])
    }

    /// Epoch 1's parts compute their own examples' taps and store them in the feature cache at the
    /// same time, on two threads: the cache then holds what one whole-batch store gives (to bf16
    /// rounding of float sums that may differ in their last bit).
    @Test(arguments: [MethodKind.lst, .last])
    func partsStoreTheSameCacheAsWholeBatches(method: MethodKind) throws {
        let model = try makeTrainer(method, folder: nil, dropout: 0).model
        let split = syntheticSplit(9, seed: 7), all = Array(0..<9)
        let lengths = split.ids.map(\.count)
        func newCache(_ name: String) throws -> FeatureCache {
            try FeatureCache(url: tempFolder().appendingPathComponent(name), lengths: lengths, taps: model.tapsRead, width: model.tapWidth)
        }
        func store(_ rows: [Int], in cache: FeatureCache) { cache.store(rows, from: model.frozenTaps(split.batch(rows)), readBy: model) }
        let whole = try newCache("whole.bin"), parts = try newCache("parts.bin")
        store(all, in: whole)
        let cut = cutByTokens(all, parts: 2, tokens: split.tokenCount)
        let pool = ThreadPool(threads: 2)
        MicroBatches.run(cut.count, pool: pool) { i in store(cut[i], in: parts) }
        #expect(parts.isComplete)
        let a = whole.taps(for: all, readBy: model), b = parts.taps(for: all, readBy: model)
        for t in model.tapsRead {
            let x = a[t].toArray(), y = b[t].toArray()
            let scale = x.map(abs).max()!, worst = zip(x, y).map { abs($0 - $1) }.max()!
            #expect(scale > 0.1 && worst <= 1e-2 * scale, "tap \(t): worst \(worst) of \(scale)")
        }
    }

    /// Every text method's examples are independent (BERT keeps no batch statistics): gradients
    /// from micro-batches are the whole batch's, and so is the mean loss. Side methods' parts read
    /// their taps from a feature cache, as the trainer's cached steps do; the baselines' parts run
    /// the backbone with autograd on their own texts. (The trainer runs all but full fine-tuning in
    /// parts: it would keep a gradient copy of every weight per part.)
    @Test(arguments: [MethodKind.lst, .last, .linear, .lora, .bitfit, .adapter, .prompt, .full])
    func textGradientsAreTheSumOverParts(method: MethodKind) throws {
        let model = try makeTrainer(method, folder: nil, dropout: 0).model
        #expect(model.examplesAreIndependent)
        try expectPartsGiveTheWholeSplitGradients(model, syntheticSplit(9, seed: 6), parts: 3)
    }

    /// The LLM's methods: gradients over parts are the whole batch's (each part is padded to its
    /// own longest text; QST's and the probe's parts read their padded taps from a feature cache,
    /// QLoRA's dequantise the NF4 backbone on both threads).
    @Test(arguments: [MethodKind.qst, .linear, .lora, .qlora])
    func llmGradientsAreTheSumOverParts(method: MethodKind) throws {
        var o = MethodOptions()
        o.qst.reduction = 4
        o.qst.adapterWidth = 4
        o.dropout = 0
        if method != .qlora { o.weights = .f32 } // a width NF4 cannot take
        // QLoRA's NF4 blocks need rows of 64.
        let backbone = method == .qlora ? tinyLlama(dim: 64, ffnDim: 64, nf4: true) : tinyLlama()
        let model = try makeClassifier(backbone, method, classes: 3, options: o, seed: 2)
        #expect(model.examplesAreIndependent)
        try expectPartsGiveTheWholeSplitGradients(model, syntheticSplit(7, seed: 8), parts: 2, minScale: 1e-4)
    }

    /// Parts are runs of consecutive examples, none empty, with about equal token counts.
    @Test func cutByTokensBalancesTokens() {
        var rng = SplitMix64(seed: 4)
        let tokens = (0..<40).map { _ in 3 + rng.nextInt(below: 60) }
        let examples = (0..<32).map { _ in rng.nextInt(below: 40) }
        for parts in 1...5 {
            let cut = cutByTokens(examples, parts: parts) { tokens[$0] }
            #expect(cut.count == parts)
            #expect(Array(cut.joined()) == examples)
            #expect(cut.allSatisfy { !$0.isEmpty })
            let total = examples.reduce(0) { $0 + tokens[$1] }, sums = cut.map { $0.reduce(0) { $0 + tokens[$1] } }
            // Each cut lands within half an example (at most 62 tokens) of its share of the total.
            var running = 0
            for (k, sum) in sums.dropLast().enumerated() {
                running += sum
                #expect(abs(running * parts - total * (k + 1)) <= 31 * parts, "cut \(k + 1) of \(parts): \(sums)")
            }
            #expect(sums.reduce(0, +) == total)
        }
        #expect(cutByTokens([7, 8], parts: 4) { _ in 1 } == [[7], [8]])
        #expect(cutByTokens([1, 2, 3], parts: 3) { $0 == 1 ? 100 : 1 } == [[1], [2], [3]])
        #expect(cutByTokens([5], parts: 2) { _ in 9 } == [[5]])
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
