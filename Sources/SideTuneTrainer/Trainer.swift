import Foundation
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneNN
import SideTuneTokenizers

/// Training hyperparameters (what `sidetune train` maps its flags to).
public struct TrainingParameters: Codable, Sendable {
    public var epochs = 3
    public var batchSize = 32
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0.01
    public var warmupFraction: Float = 0.06
    public var clipNorm: Float = 1
    public var seed: UInt64 = 42
    /// Stop after this many epochs without a better validation accuracy (0: never).
    public var patience = 2
    /// Side methods: cache the frozen taps after epoch 1.
    public var useCache = true
    public var cacheLimitBytes = 4 << 30
    public var cacheFolder: URL?
    /// Examples per evaluation batch; nil: `batchSize`. A batch size picked to fit memory then
    /// fits evaluation too (at 64 rows, LST's validation pass set its peak RSS, above the step's).
    public var evalBatchSize: Int?
    /// Where checkpoints go (`best/`, `last/`, `state.json`); nil: keep nothing.
    public var outputFolder: URL?
    /// Continue the run in `outputFolder` from its last complete epoch (a folder without one
    /// starts fresh).
    public var resume = false
    /// Replace a run already in `outputFolder` (without it, or `resume`, such a folder is refused).
    public var overwrite = false
    /// What else identifies the run besides these parameters and the splits (the data file and its
    /// SHA-256, limits, the tokenizer's length): a resumed run must match it field by field.
    public var runIdentity: [String: String] = [:]
    /// Stop after this epoch as if interrupted (time-boxed runs; tests of `resume`).
    public var stopAfterEpoch: Int?
    /// Steps of a model whose examples are independent (every method but HST and full
    /// fine-tuning; side methods in epoch 1 and from the cache alike) run as this many
    /// micro-batches, one per thread (`MicroBatches`); nil: one per thread of the pool, 1: the
    /// whole batch op by op (`train --micro-batches`).
    public var microBatches: Int?
    /// Side methods: a feature cache built ahead (`sidetune cache build` / `cache merge`), read from
    /// epoch 1 on instead of building one; its manifest must match the run.
    public var prebuiltCache: URL?
    public init() {}

    /// Refuses values no run can use, naming the parameter and what it must be.
    public func validate() throws {
        var problems: [String] = []
        if epochs < 1 { problems.append("epochs must be >= 1, got \(epochs)") }
        if batchSize < 1 { problems.append("batch size must be >= 1, got \(batchSize)") }
        if !(learningRate > 0 && learningRate.isFinite) { problems.append("learning rate must be a positive number, got \(learningRate)") }
        if !(weightDecay >= 0 && weightDecay.isFinite) { problems.append("weight decay must be >= 0, got \(weightDecay)") }
        if !(warmupFraction >= 0 && warmupFraction <= 1) { problems.append("warm-up fraction must be in [0, 1], got \(warmupFraction)") }
        if !(clipNorm >= 0 && clipNorm.isFinite) { problems.append("clip norm must be >= 0 (0: off), got \(clipNorm)") }
        if patience < 0 { problems.append("patience must be >= 0 (0: never stop early), got \(patience)") }
        if cacheLimitBytes < 0 { problems.append("cache limit must be >= 0, got \(cacheLimitBytes)") }
        if let e = evalBatchSize, e < 1 { problems.append("evaluation batch size must be >= 1, got \(e)") }
        if let m = microBatches, m < 1 { problems.append("micro-batches must be >= 1, got \(m)") }
        if let s = stopAfterEpoch, s < 1 { problems.append("stop-after epoch must be >= 1, got \(s)") }
        if resume && overwrite { problems.append("resume and overwrite exclude each other") }
        if !problems.isEmpty { throw TrainerError("training parameters: " + problems.joined(separator: "; ")) }
    }
}

/// Tokenised examples: token ids without padding, and labels.
public struct EncodedSplit: Sendable {
    public var ids: [[Int32]]
    public var labels: [Int]
    public init(ids: [[Int32]], labels: [Int]) {
        self.ids = ids
        self.labels = labels
    }
    public var count: Int { ids.count }
}

extension EncodedSplit: ClassificationData {
    public func tokenCount(_ i: Int) -> Int { ids[i].count }
    public func batch(_ indices: [Int]) -> BatchEncoding { makeBatch(indices.map { ids[$0] }) }
}

/// A labelled image split the trainer can batch: `make` turns example indices into pixels
/// [B, 3, H, W] (decoding and preprocessing happen per batch, so only a batch of pixels is ever
/// held). `tokens` = patches + 1 (CLS), what the feature cache stores per image.
public struct ImageSplit: ClassificationData {
    public typealias Batch = Tensor
    public let count: Int
    public let labels: [Int]
    public let tokens: Int
    let make: @Sendable ([Int]) -> Tensor

    public init(labels: [Int], tokens: Int, make: @escaping @Sendable ([Int]) -> Tensor) {
        count = labels.count
        self.labels = labels
        self.tokens = tokens
        self.make = make
    }

    /// Images of side `size` cut into `patch` x `patch` patches: (size / patch)^2 + 1 tokens.
    public static func tokens(size: Int, patch: Int = 14) -> Int { (size / patch) * (size / patch) + 1 }

    public func tokenCount(_ i: Int) -> Int { tokens }
    public func batch(_ indices: [Int]) -> Tensor { make(indices) }
}

/// What the trainer reports while it runs (a progress bar and log lines are made from these).
public enum TrainingEvent: Sendable {
    case message(String)
    case step(epoch: Int, step: Int, stepsPerEpoch: Int, loss: Float, examplesPerSecond: Double, etaSeconds: Double)
    case epochEnd(epoch: Int, trainLoss: Double, validation: ClassificationMetrics, seconds: Double, fromCache: Bool, improved: Bool)
}

/// What an epoch folder holds besides the model and the optimizer (`state.json`): where the run
/// is, every generator's state, and what the run was started with.
struct TrainerState: Codable {
    static let currentFormat = "sidetune-run-2"
    var format = currentFormat
    /// Random, made when the run starts and kept when it resumes: every file of an epoch carries it.
    var runID: String
    var epochsDone: Int
    var bestValidationAccuracy: Double
    var bestEpoch: Int?
    var epochsWithoutImprovement: Int
    var optimizerStep: Int
    var epochSeconds: [Double]
    /// Dropout generators' states by module name, in hexadecimal (JSON numbers are doubles).
    var randomStates: [String: String]
    /// The run's identity (`Trainer.fingerprint`).
    var fingerprint: [String: String]

    enum CodingKeys: String, CodingKey {
        case format, fingerprint
        case runID = "run_id", epochsDone = "epochs_done", bestValidationAccuracy = "best_validation_accuracy"
        case bestEpoch = "best_epoch", epochsWithoutImprovement = "epochs_without_improvement"
        case optimizerStep = "optimizer_step", epochSeconds = "epoch_seconds", randomStates = "random_states"
    }
}

/// What `step` did.
public struct StepResult: Sendable {
    /// The batch's mean loss.
    public var loss: Float
    /// Whether the taps came from the feature cache.
    public var fromCache: Bool
    /// The gradients' global L2 norm before clipping (non-finite: the optimizer step was skipped).
    public var gradientNorm: Float
    /// False when the frozen backbone produced NaN or infinite taps for this batch.
    public var tapsFinite: Bool
}

/// Trains any classifier (text, image, LLM) on labelled splits of its input type.
public final class Trainer<Model: TrainableModel, Split: TrainingData> where Split.Batch == Model.Batch {
    public let model: Model
    public let parameters: TrainingParameters
    public let train: Split, validation: Split, test: Split
    public let checkpointConfig: CheckpointConfig
    /// Where the run's memory is measured: the ledger in scope when the trainer was made (the shared
    /// one unless a caller, such as a test running beside others, scoped its own around the model).
    public let ledger: MemoryLedger
    /// Called before every change to the run folder (`RunFolder.beforeChange`); tests throw from it
    /// to stand for a kill at that point.
    public var beforeRunFolderChange: ((String) throws -> Void)?
    /// Asked before every step whether to stop (a signal number); `Interruption` by default.
    public var stopRequested: () -> Int32? = { Interruption.requested }

    /// `checkpointConfig` is what checkpoints record (nil: the model's method, default options,
    /// labels "0", "1", ..., no backbone identity; for library use without `sidetune eval`).
    public init(model: Model, parameters: TrainingParameters, train: Split, validation: Split,
                test: Split, checkpointConfig: CheckpointConfig? = nil) throws {
        guard train.count > 0 else { throw TrainerError("no training examples") }
        guard validation.count > 0, test.count > 0 else { throw TrainerError("validation and test splits must not be empty") }
        try parameters.validate()
        self.model = model
        self.parameters = parameters
        self.train = train
        self.validation = validation
        self.test = test
        self.checkpointConfig = checkpointConfig
            ?? CheckpointConfig(method: model.method, options: MethodOptions(), labels: (0..<model.classes).map(String.init),
                                maxLength: 512, backboneName: "", backboneSHA256: "", seed: parameters.seed, epoch: 0,
                                validationAccuracy: nil)
        // Checked now: the run reads its best epoch back through the same checks at the end.
        try self.checkpointConfig.validate(file: "checkpoint config")
        self.ledger = MemoryLedger.current
    }

    /// Predictions (argmax of every logits row) and metrics against the split's targets, without
    /// autograd and with dropout off.
    public func evaluate(_ split: Split) -> ClassificationMetrics { Self.evaluate([self], split, sharingTaps: false)[0] }

    /// `evaluate` for several trainers on one split, batch by batch; with `sharingTaps` (a sweep's
    /// trainers, which read the same taps) the frozen backbone runs once per batch for all.
    static func evaluate(_ trainers: [Trainer], _ split: Split, sharingTaps: Bool) -> [ClassificationMetrics] {
        guard let lead = trainers.first else { return [] }
        for t in trainers { t.model.train(false) }
        defer { for t in trainers { t.model.train(true) } }
        var predictions = [[Int]](repeating: [], count: trainers.count), targets: [Int] = []
        noGrad {
            var i = 0
            while i < split.count {
                let rows = Array(i..<min(i + (lead.parameters.evalBatchSize ?? lead.parameters.batchSize), split.count))
                let batch = split.batch(rows)
                // One backbone pass per layout the models read (padded or packed).
                var taps: [Bool: [Tensor]] = [:]
                for (k, t) in trainers.enumerated() {
                    let packed = t.model.readsPackedTaps
                    if sharingTaps && taps[packed] == nil { taps[packed] = t.model.frozenTaps(batch) }
                    let logits = t.model.logits(batch, taps: sharingTaps ? taps[packed] : nil)
                    let c = logits.shape[1]
                    for r in 0..<logits.shape[0] {
                        var best = 0
                        for j in 1..<c where logits.data[r * c + j] > logits.data[r * c + best] { best = j }
                        predictions[k].append(best)
                    }
                }
                targets += split.targets(rows).map(Int.init)
                i += rows.count
            }
        }
        return trainers.indices.map {
            ClassificationMetrics(predictions: predictions[$0], labels: targets, classes: trainers[$0].model.classes)
        }
    }

    /// What one step needs besides the batch: the optimizer, and the feature cache if any.
    public struct StepContext {
        public let optimizer: AdamW
        public let trainable: [Tensor]
        public var cache: FeatureCache?
        public let microBatches: Int
        /// Taps computed in this step (not yet cached) are stored and read back from the cache, so
        /// they are the bf16 values a cached step reads: set after the first epoch, where an
        /// uninterrupted run reads every step from the cache, so a resumed run matches it bit for bit.
        public var readBackFreshTaps = false
        /// A sweep's taps, shared by its trainers within a step: the first to ask for a part's
        /// taps computes (or reads) them, the others get the same tensors.
        var sharedTaps: SharedTaps?
    }

    /// The optimizer over the model's trainable parameters, with the run's settings.
    public func makeStepContext(cache: FeatureCache? = nil) -> StepContext {
        let trainable = model.trainableParameters().map { $0.1 }
        return StepContext(optimizer: AdamW(parameters: trainable, learningRate: parameters.learningRate, weightDecay: parameters.weightDecay),
                           trainable: trainable, cache: cache, microBatches: parameters.microBatches ?? ThreadPool.shared.activeThreads)
    }

    /// One optimizer step on training examples `idx`: their input and taps (read from the cache
    /// when it holds them all, else computed by the frozen backbone and stored, or left to the
    /// model without a cache), forward and backward (as micro-batches, one per thread, where the
    /// model allows), gradient clipping and AdamW. Non-finite gradients skip the optimizer step
    /// (the caller sees `gradientNorm`). `bench step` times exactly this.
    @discardableResult
    public func step(_ idx: [Int], context c: StepContext) -> StepResult {
        // (In a sweep, whether the step reads the cache is decided once for every configuration:
        // the first to step stores the batch's fresh taps, which the others share.)
        let fromCache = c.sharedTaps?.fromCache ?? (c.cache.map { cache in idx.allSatisfy(cache.contains) } ?? false)
        let finite = FiniteFlag()
        let input = { [train, model, cache = c.cache, readBack = c.readBackFreshTaps, shared = c.sharedTaps]
            (rows: [Int]) -> (batch: Split.Batch, taps: [Tensor]?) in
            let batch = train.batch(rows)
            let taps = { () -> [Tensor] in
                guard let cache else {
                    let fresh = model.frozenTaps(batch)
                    if !fresh.allSatisfy(\.allFinite) { finite.clear() }
                    return fresh
                }
                if fromCache { return cache.taps(for: rows, readBy: model) }
                let fresh = model.frozenTaps(batch)
                if !fresh.allSatisfy(\.allFinite) { finite.clear() }
                cache.store(rows, from: fresh, readBy: model)
                return readBack ? cache.taps(for: rows, readBy: model) : fresh
            }
            if let shared { return (batch, shared.taps(rows, packed: model.readsPackedTaps, bfloat16: model.readsBFloat16Taps, taps)) }
            return (batch, cache == nil ? nil : taps())
        }
        let loss = { [train, model] (rows: [Int]) -> Tensor in
            let (batch, taps) = input(rows)
            return model.logits(batch, taps: taps).crossEntropy(targets: train.targets(rows))
        }
        c.optimizer.zeroGrad()
        // Parts, one per thread, each running its own forward (frozen backbone included) and
        // backward alone.
        let parts = model.runsAsMicroBatches ? cutByTokens(idx, parts: c.microBatches, tokens: train.tokenCount) : [idx]
        let l: Float
        if parts.count > 1 {
            l = microBatchedBackward(parts, targets: { [train] in train.targets($0).count }, loss: loss)
        } else {
            let whole = loss(idx)
            whole.backward()
            l = whole.item()
        }
        // The norm is taken with clipping off too, to catch non-finite gradients before they reach
        // the weights (an infinite limit scales nothing).
        let norm = clipGradNorm(c.trainable, maxNorm: parameters.clipNorm > 0 ? parameters.clipNorm : .infinity)
        if norm.isFinite && l.isFinite { c.optimizer.step() }
        return StepResult(loss: l, fromCache: fromCache, gradientNorm: norm, tapsFinite: finite.value)
    }

    public func run(progress: (TrainingEvent) -> Void = { _ in }) throws -> TrainingReport {
        try MemoryLedger.withLedger(ledger) { try runMeasured(progress: progress) }
    }

    /// Whether side taps are cached: the same answer for a run and for its resumption, so that
    /// both read the same (bf16) taps after the first epoch.
    /// (A sweep's cache holds the taps any of its models reads: `taps`.)
    func plansCache(lengths: [Int], taps: [Int]? = nil) -> (planned: Bool, bytes: Int) {
        if parameters.prebuiltCache != nil && !model.tapsRead.isEmpty { return (true, 0) }
        guard !model.tapsRead.isEmpty && parameters.useCache && parameters.epochs > 1 else { return (false, 0) }
        let bytes = FeatureCache.estimateBytes(lengths: lengths, taps: (taps ?? model.tapsRead).count, width: model.tapWidth)
        return (bytes <= parameters.cacheLimitBytes, bytes)
    }

    private func runMeasured(progress: (TrainingEvent) -> Void) throws -> TrainingReport {
        let lengths = (0..<train.count).map(train.tokenCount)
        let cachePlan = plansCache(lengths: lengths)
        let run = try TrainingRun(self, cachePlanned: cachePlan.planned, progress: progress)
        defer { run.close() }
        let cache = try run.needsCache ? makeCache(plan: cachePlan, lengths: lengths, epoch: run.state.epochsDone, progress: progress) : nil
        if cache == nil { reportNoCache(plan: cachePlan, progress: progress) }
        run.context.cache = cache
        run.startMeasuring()
        for epoch in run.state.epochsDone..<parameters.epochs {
            let order = epochOrder(epoch)
            run.beginEpoch(epoch)
            for s in 0..<run.stepsPerEpoch {
                try run.step(epoch: epoch, index: s, examples: batchRows(order, step: s), progress: progress)
            }
            run.endSteps()
            if try run.endEpoch(epoch, validation: evaluate(validation), progress: progress) { break }
        }
        return try run.finish(cacheBytes: cache?.byteCount, progress: progress)
    }

    /// The examples of an epoch in the order its steps take them: it depends only on the seed and
    /// the epoch, so a resumed run (and every configuration of a sweep) sees the same batches.
    func epochOrder(_ epoch: Int) -> [Int] {
        var order = Array(0..<train.count)
        var shuffler = SplitMix64(seed: parameters.seed &+ UInt64(epoch) &* 0x9E37_79B9)
        shuffler.shuffle(&order)
        return order
    }

    /// Step `s`'s examples of an epoch's `order`.
    func batchRows(_ order: [Int], step s: Int) -> [Int] {
        Array(order[(s * parameters.batchSize)..<min((s + 1) * parameters.batchSize, train.count)])
    }

    /// The feature cache for side methods, built during epoch `epoch` + 1 (the first, or a resumed
    /// run's first, whose taps are then read back from it).
    func makeCache(plan: (planned: Bool, bytes: Int), lengths: [Int], epoch: Int, taps: [Int]? = nil,
                   progress: (TrainingEvent) -> Void) throws -> FeatureCache? {
        guard plan.planned else { return nil }
        let taps = taps ?? model.tapsRead
        if let url = parameters.prebuiltCache { return try openPrebuiltCache(url, taps: taps, lengths: lengths, progress: progress) }
        let fm = FileManager.default
        let cacheFolder = parameters.cacheFolder ?? fm.temporaryDirectory
        try fm.createDirectory(at: cacheFolder, withIntermediateDirectories: true)
        FeatureCache.removeLeftovers(in: cacheFolder)
        let url = cacheFolder.appendingPathComponent("sidetune-taps-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).bin")
        progress(.message("feature cache: \(formatBytes(plan.bytes)) of bf16 taps (\(taps.count) taps x \(lengths.reduce(0, +)) tokens x \(model.tapWidth)) in \(cacheFolder.path), built in epoch \(epoch + 1)"))
        return try FeatureCache(url: url, lengths: lengths, taps: taps, width: model.tapWidth)
    }

    /// A cache built ahead, after checking its manifest against this run: the backbone, the split
    /// (examples, token lengths, labels' hash), the taps the models read, the width and precision.
    func openPrebuiltCache(_ url: URL, taps: [Int], lengths: [Int], progress: (TrainingEvent) -> Void) throws -> FeatureCache {
        let m = try FeatureCacheManifest.read(for: url)
        var problems: [String] = []
        if m.shards != 1 || m.first != 0 || m.count != m.lengths.count {
            problems.append("it is shard \(m.shard) of \(m.shards) (merge the shards first: sidetune cache merge)")
        }
        if m.backboneSHA256 != checkpointConfig.backboneSHA256 { problems.append("backbone \(m.backboneSHA256), the run's \(checkpointConfig.backboneSHA256)") }
        let split = "\(train.count) examples, hash \(Self.hash(train))"
        if m.split != split || m.lengths != lengths { problems.append("training split \(m.split), the run's \(split)") }
        if !Set(taps).isSubset(of: m.taps) { problems.append("taps \(m.taps), the run reads \(taps)") }
        if m.width != model.tapWidth { problems.append("width \(m.width), the backbone's \(model.tapWidth)") }
        let precision = (checkpointConfig.options.backbonePrecision ?? .float32).rawValue
        if m.backbonePrecision != precision { problems.append("backbone precision \(m.backbonePrecision), the run's \(precision)") }
        guard problems.isEmpty else {
            throw TrainerError("--feature-cache \(url.path) does not belong to this run: " + problems.joined(separator: "; "))
        }
        progress(.message("feature cache: \(url.path), built ahead (\(formatBytes(m.bytes)), \(m.taps.count) taps)"))
        return try FeatureCache(opening: url, lengths: m.lengths, taps: m.taps, width: m.width)
    }

    func reportNoCache(plan: (planned: Bool, bytes: Int), progress: (TrainingEvent) -> Void) {
        if !model.tapsRead.isEmpty && parameters.useCache && parameters.epochs > 1 && !plan.planned {
            progress(.message("feature cache: would need \(formatBytes(plan.bytes)), over the limit of \(formatBytes(parameters.cacheLimitBytes)); training without it (raise --cache-limit-mb or shorten --max-length)"))
        }
    }

    // MARK: the run's identity

    /// What a resumed run must share with the run it continues: the checkpoint's identity (method,
    /// options, labels, backbone), every training parameter that changes the result, the splits
    /// (sizes and a hash of their targets and token counts) and the caller's `runIdentity`.
    func fingerprint(cachePlanned: Bool, microBatches: Int) -> [String: String] {
        let p = parameters, c = checkpointConfig
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var f = p.runIdentity
        f["method"] = c.method.rawValue
        f["method options"] = (try? encoder.encode(c.options)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
        f["labels"] = c.labels.joined(separator: ",")
        f["max length"] = String(c.maxLength)
        f["backbone sha256"] = c.backboneSHA256
        f["seed"] = "\(p.seed) (model \(c.seed))"
        f["epochs"] = String(p.epochs)
        f["batch size"] = String(p.batchSize)
        f["learning rate"] = "\(p.learningRate)"
        f["weight decay"] = "\(p.weightDecay)"
        f["warm-up"] = "\(p.warmupFraction)"
        f["clip norm"] = "\(p.clipNorm)"
        f["patience"] = String(p.patience)
        f["feature cache"] = parameters.prebuiltCache.map { "built ahead: \($0.path)" } ?? (cachePlanned ? "yes" : "no")
        f["threads"] = String(ThreadPool.shared.activeThreads)
        f["micro-batches"] = model.runsAsMicroBatches ? String(max(1, min(microBatches, p.batchSize))) : "1"
        for (name, split) in [("train", train), ("validation", validation), ("test", test)] {
            f["\(name) split"] = "\(split.count) examples, hash \(Self.hash(split))"
        }
        return f
    }

    /// What every configuration of a sweep shares, and its shards must agree on: the backbone, the
    /// data and its split (sizes and hashes), the seed, batch size and epochs, and the caller's
    /// `runIdentity` (data file, limits).
    public var streamFingerprint: [String: String] {
        let p = parameters, c = checkpointConfig
        var f = p.runIdentity
        f["backbone sha256"] = c.backboneSHA256
        f["labels"] = c.labels.joined(separator: ",")
        f["max length"] = String(c.maxLength)
        f["seed"] = String(p.seed)
        f["epochs"] = String(p.epochs)
        f["batch size"] = String(p.batchSize)
        for (name, split) in [("train", train), ("validation", validation), ("test", test)] {
            f["\(name) split"] = "\(split.count) examples, hash \(Self.hash(split))"
        }
        return f
    }

    /// FNV-1a over a split's targets and token counts, in hexadecimal.
    public static func hash(_ split: Split) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ x: Int) { var v = UInt64(bitPattern: Int64(x)); for _ in 0..<8 { h = (h ^ (v & 0xff)) &* 0x100_0000_01b3; v >>= 8 } }
        var i = 0
        while i < split.count {
            let rows = Array(i..<min(i + 1024, split.count))
            for t in split.targets(rows) { mix(Int(t)) }
            for r in rows { mix(split.tokenCount(r)) }
            i += rows.count
        }
        return String(h, radix: 16)
    }

    // MARK: saving and resuming

    /// Writes the epoch's folder (model, optimizer, state) and points `last` (and, if it improved,
    /// `best`) at it. Without an output folder only improved epochs are written, without the
    /// optimizer: they are kept only to score the test set.
    func saveEpoch(_ folder: RunFolder, validationAccuracy: Double, improved: Bool, optimizer: AdamW, state: TrainerState) throws {
        let keepsRun = parameters.outputFolder != nil
        guard keepsRun || improved else { return }
        var state = state
        state.randomStates = model.randomStates().mapValues { String($0, radix: 16) }
        var config = checkpointConfig
        config.epoch = state.epochsDone
        config.validationAccuracy = validationAccuracy
        let stamp = ["run": state.runID, "epoch": String(state.epochsDone)]
        var files: [(name: String, write: (URL) throws -> Void)] = [
            ("weights.safetensors", { [model] in try Checkpoint.writeWeights(model, config: config, extraMetadata: stamp, to: $0) }),
        ]
        if keepsRun {
            files.append(("optimizer.safetensors", { url in
                var writer = SafetensorsWriter(metadata: stamp.merging(["step": String(optimizer.stepCount)]) { a, _ in a })
                let (_, m, v) = optimizer.state
                for (i, (mi, vi)) in zip(m, v).enumerated() {
                    if let mi { try writer.add("m.\(i)", floats: mi.toArray(), shape: mi.shape) }
                    if let vi { try writer.add("v.\(i)", floats: vi.toArray(), shape: vi.shape) }
                }
                try writer.write(to: url.path)
            }))
        }
        files.append(("checkpoint.json", { try writeJSON(config, to: $0) }))
        files.append(("state.json", { try writeJSON(state, to: $0) }))
        let name = try folder.writeEpoch(state.epochsDone, files: files)
        if improved { try folder.point("best", at: name) }
        if keepsRun { try folder.point("last", at: name) }
        try folder.prune()
    }

    /// Restores the model, the optimizer, the generators and the trainer's state from the run's
    /// last complete epoch, after checking that every file belongs to it and that the run's
    /// identity matches this one's.
    func resume(_ folder: RunFolder, optimizer: AdamW, state: inout TrainerState, progress: (TrainingEvent) -> Void) throws {
        let path = folder.url.path
        if RunFolder.isOlderLayout(folder.url) {
            throw TrainerError("\(path) holds a run written by an older SideTune (best/ and last/ folders, state.json beside them), which cannot be resumed exactly; start it again with --overwrite")
        }
        guard let last = folder.resolve("last") else {
            progress(.message("resume: no complete epoch in \(path); starting fresh"))
            return
        }
        let stateURL = last.appendingPathComponent("state.json")
        let saved: TrainerState
        do { saved = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: stateURL)) } catch {
            throw TrainerError("\(stateURL.path): cannot resume: not a readable run state (\(error))")
        }
        guard saved.format == TrainerState.currentFormat else {
            throw TrainerError("\(stateURL.path): run format \(saved.format), this SideTune reads \(TrainerState.currentFormat)")
        }
        let differences = Set(saved.fingerprint.keys).union(state.fingerprint.keys).sorted().compactMap { key -> String? in
            let (then, now) = (saved.fingerprint[key], state.fingerprint[key])
            return then == now ? nil : "\(key): the run has \(then ?? "nothing"), this one \(now ?? "nothing")"
        }
        if !differences.isEmpty {
            throw TrainerError("\(path): --resume continues a run with the same data, split, seed and settings; these differ:\n  "
                               + differences.joined(separator: "\n  ") + "\n(run with the run's settings, or start again with --overwrite)")
        }
        guard (0...parameters.epochs).contains(saved.epochsDone), saved.optimizerStep >= 0 else {
            throw TrainerError("\(stateURL.path): epoch \(saved.epochsDone) and step \(saved.optimizerStep) do not fit a run of \(parameters.epochs) epochs")
        }
        let config = try Checkpoint.load(into: model, from: last, backboneSHA256: checkpointConfig.backboneSHA256,
                                         expect: ["run": saved.runID, "epoch": String(saved.epochsDone)])
        guard config.epoch == saved.epochsDone else {
            throw TrainerError("\(last.path)/checkpoint.json: epoch \(config.epoch), but state.json is at epoch \(saved.epochsDone)")
        }
        try loadOptimizer(optimizer, from: last.appendingPathComponent("optimizer.safetensors"), state: saved)
        var generators: [String: UInt64] = [:]
        for (name, hex) in saved.randomStates {
            guard let v = UInt64(hex, radix: 16) else { throw TrainerError("\(stateURL.path): random state '\(hex)' of \(name) is not hexadecimal") }
            generators[name] = v
        }
        do { try model.restoreRandomStates(generators) } catch { throw TrainerError("\(stateURL.path): \(error)") }
        state = saved
        progress(.message("resumed after epoch \(saved.epochsDone) (step \(saved.optimizerStep)) from \(last.path)"))
    }

    /// AdamW's moments from an epoch folder: one m and v per trainable parameter, each of its shape.
    func loadOptimizer(_ optimizer: AdamW, from url: URL, state: TrainerState) throws {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: url.path) } catch { throw TrainerError("\(error)") }
        let metadata = file.metadata
        guard metadata["run"] == state.runID, metadata["epoch"] == String(state.epochsDone),
              metadata["step"] == String(state.optimizerStep) else {
            throw TrainerError("\(url.path): belongs to run \(metadata["run"] ?? "?") epoch \(metadata["epoch"] ?? "?") step \(metadata["step"] ?? "?"), not to run \(state.runID) epoch \(state.epochsDone) step \(state.optimizerStep)")
        }
        let n = optimizer.parameters.count
        let expected = Set((0..<n).flatMap { ["m.\($0)", "v.\($0)"] })
        if let stray = file.names.first(where: { !expected.contains($0) }) {
            throw TrainerError("\(url.path): tensor \(stray) is not one of the \(n) parameters' moments (the model has changed?)")
        }
        var m = [Tensor?](repeating: nil, count: n), v = [Tensor?](repeating: nil, count: n)
        try MemoryLedger.withCategory(.optimizer) {
            for i in 0..<n {
                let shape = optimizer.parameters[i].shape
                for (key, isM) in [("m.\(i)", true), ("v.\(i)", false)] where file.contains(key) {
                    let info = try file.info(key)
                    guard info.shape == shape else {
                        throw TrainerError("\(url.path): tensor \(key) has shape \(info.shape), parameter \(i) has \(shape)")
                    }
                    let t = Tensor(try file.floats(key), shape: shape)
                    guard t.allFinite else { throw TrainerError("\(url.path): tensor \(key) holds NaN or infinite values") }
                    if isM { m[i] = t } else { v[i] = t }
                }
            }
        }
        optimizer.restore(step: state.optimizerStep, m: m, v: v)
    }
}

/// Set when the frozen backbone produced a non-finite tap in a step (micro-batches set it from
/// several threads).
final class FiniteFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var finite = true
    func clear() { lock.lock(); finite = false; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return finite }
}
