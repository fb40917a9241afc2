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
    /// Continue from `outputFolder/last` if it exists.
    public var resume = false
    /// Stop after this epoch as if interrupted (time-boxed runs; tests of `resume`).
    public var stopAfterEpoch: Int?
    /// Steps of a model whose examples are independent (every method but HST and full
    /// fine-tuning; side methods in epoch 1 and from the cache alike) run as this many
    /// micro-batches, one per thread (`MicroBatches`); nil: one per thread of the pool, 1: the
    /// whole batch op by op (`train --micro-batches`).
    public var microBatches: Int?
    public init() {}
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

/// Resume state written after every epoch.
struct TrainerState: Codable {
    var epochsDone: Int
    var bestValidationAccuracy: Double
    var epochsWithoutImprovement: Int
    var optimizerStep: Int
    var epochSeconds: [Double]
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

    /// `checkpointConfig` is what checkpoints record (nil: the model's method, default options,
    /// labels "0", "1", ..., no backbone identity; for library use without `sidetune eval`).
    public init(model: Model, parameters: TrainingParameters, train: Split, validation: Split,
                test: Split, checkpointConfig: CheckpointConfig? = nil) throws {
        guard train.count > 0 else { throw TrainerError("no training examples") }
        guard validation.count > 0, test.count > 0 else { throw TrainerError("validation and test splits must not be empty") }
        guard parameters.batchSize >= 1, parameters.epochs >= 1 else {
            throw TrainerError("batch size and epochs must be >= 1 (got \(parameters.batchSize), \(parameters.epochs))")
        }
        if let e = parameters.evalBatchSize, e < 1 { throw TrainerError("evaluation batch size must be >= 1 (got \(e))") }
        self.model = model
        self.parameters = parameters
        self.train = train
        self.validation = validation
        self.test = test
        self.checkpointConfig = checkpointConfig
            ?? CheckpointConfig(method: model.method, options: MethodOptions(), labels: (0..<model.classes).map(String.init),
                                maxLength: 0, backboneName: "", backboneSHA256: "", seed: parameters.seed, epoch: 0,
                                validationAccuracy: nil)
        self.ledger = MemoryLedger.current
    }

    /// Predictions (argmax of every logits row) and metrics against the split's targets, without
    /// autograd and with dropout off.
    public func evaluate(_ split: Split) -> ClassificationMetrics {
        model.train(false)
        defer { model.train(true) }
        var predictions: [Int] = [], targets: [Int] = []
        noGrad {
            var i = 0
            while i < split.count {
                let rows = Array(i..<min(i + (parameters.evalBatchSize ?? parameters.batchSize), split.count))
                let logits = model.logits(split.batch(rows), taps: nil)
                let c = logits.shape[1]
                for r in 0..<logits.shape[0] {
                    var best = 0
                    for j in 1..<c where logits.data[r * c + j] > logits.data[r * c + best] { best = j }
                    predictions.append(best)
                }
                targets += split.targets(rows).map(Int.init)
                i += rows.count
            }
        }
        return ClassificationMetrics(predictions: predictions, labels: targets, classes: model.classes)
    }

    /// What one step needs besides the batch: the optimizer, and the feature cache if any.
    public struct StepContext {
        public let optimizer: AdamW
        public let trainable: [Tensor]
        public var cache: FeatureCache?
        public let microBatches: Int
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
    /// model allows), gradient clipping and AdamW. Returns the batch's mean loss and whether the
    /// taps came from the cache. `bench step` times exactly this.
    @discardableResult
    public func step(_ idx: [Int], context c: StepContext) -> (loss: Float, fromCache: Bool) {
        let fromCache = c.cache.map { cache in idx.allSatisfy(cache.contains) } ?? false
        let input = { [train, model, cache = c.cache] (rows: [Int]) -> (batch: Split.Batch, taps: [Tensor]?) in
            let batch = train.batch(rows)
            guard let cache else { return (batch, nil) }
            if fromCache { return (batch, cache.taps(for: rows, readBy: model)) }
            let fresh = model.frozenTaps(batch)
            cache.store(rows, from: fresh, readBy: model)
            return (batch, fresh)
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
        if parameters.clipNorm > 0 { clipGradNorm(c.trainable, maxNorm: parameters.clipNorm) }
        c.optimizer.step()
        return (l, fromCache)
    }

    public func run(progress: (TrainingEvent) -> Void = { _ in }) throws -> TrainingReport {
        try MemoryLedger.withLedger(ledger) { try runMeasured(progress: progress) }
    }

    private func runMeasured(progress: (TrainingEvent) -> Void) throws -> TrainingReport {
        let p = parameters
        let stepsPerEpoch = (train.count + p.batchSize - 1) / p.batchSize
        let schedule = LRSchedule(peak: p.learningRate, warmupSteps: Int(Float(stepsPerEpoch * p.epochs) * p.warmupFraction),
                                  totalSteps: stepsPerEpoch * p.epochs, decay: .cosine)
        var state = TrainerState(epochsDone: 0, bestValidationAccuracy: -1, epochsWithoutImprovement: 0, optimizerStep: 0, epochSeconds: [])
        // The best epoch's checkpoint, which the test set is scored with. Without an output folder
        // it goes to a temporary one, removed at the end (a copy in memory would show in the
        // ledger's and RSS peaks, by the whole model for full fine-tuning).
        let checkpoints = p.outputFolder
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-best-\(getpid())-\(UUID().uuidString)")
        let bestFolder = checkpoints.appendingPathComponent("best")
        defer { if p.outputFolder == nil { try? FileManager.default.removeItem(at: checkpoints) } }

        var context = makeStepContext()
        let optimizer = context.optimizer
        if p.resume, let out = p.outputFolder { try resumeIfPossible(out, optimizer: optimizer, state: &state, progress: progress) }

        // Feature cache for side methods: estimate first, build during the first epoch.
        var cache: FeatureCache?
        let lengths = (0..<train.count).map(train.tokenCount)
        if !model.tapsRead.isEmpty && p.useCache && p.epochs - state.epochsDone > 1 {
            let bytes = FeatureCache.estimateBytes(lengths: lengths, taps: model.tapsRead.count, width: model.tapWidth)
            if bytes > p.cacheLimitBytes {
                progress(.message("feature cache: would need \(formatBytes(bytes)), over the limit of \(formatBytes(p.cacheLimitBytes)); training without it (raise --cache-limit-mb or shorten --max-length)"))
            } else {
                let folder = p.cacheFolder ?? FileManager.default.temporaryDirectory
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                let url = folder.appendingPathComponent("sidetune-taps-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).bin")
                progress(.message("feature cache: \(formatBytes(bytes)) of bf16 taps (\(model.tapsRead.count) taps x \(lengths.reduce(0, +)) tokens x \(model.tapWidth)) at \(url.path), built in epoch 1"))
                cache = try FeatureCache(url: url, lengths: lengths, taps: model.tapsRead, width: model.tapWidth)
            }
        }

        context.cache = cache

        // Blocks left idle by set-up (Fisher pass, loading) are not part of training's footprint.
        LargeBlockCache.shared.trim()
        ledger.resetPeaks()
        ProcessMemory.resetPeak()
        let cpuAtStart = CPUTimes.now()
        var uncachedStepTimes: [Double] = [], cachedStepTimes: [Double] = []
        model.train(true)
        for epoch in state.epochsDone..<p.epochs {
            // The order depends only on the seed and the epoch, so a resumed run sees the same batches.
            var order = Array(0..<train.count)
            var shuffler = SplitMix64(seed: p.seed &+ UInt64(epoch) &* 0x9E37_79B9)
            shuffler.shuffle(&order)
            let epochStart = DispatchTime.now().uptimeNanoseconds
            var lossSum = 0.0
            var usedCache = false
            for s in 0..<stepsPerEpoch {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let idx = Array(order[(s * p.batchSize)..<min((s + 1) * p.batchSize, train.count)])
                optimizer.learningRate = schedule.rate(at: state.optimizerStep)
                let (l, fromCache) = step(idx, context: context)
                usedCache = usedCache || fromCache
                state.optimizerStep += 1
                guard l.isFinite else { throw TrainerError("loss became \(l) at epoch \(epoch + 1) step \(s + 1): lower --lr") }
                lossSum += Double(l)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if fromCache { cachedStepTimes.append(dt) } else { uncachedStepTimes.append(dt) }
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
                let done = s + 1
                progress(.step(epoch: epoch + 1, step: done, stepsPerEpoch: stepsPerEpoch, loss: l,
                               examplesPerSecond: Double(min(done * p.batchSize, train.count)) / max(elapsed, 1e-9),
                               etaSeconds: elapsed / Double(done) * Double(stepsPerEpoch - done)))
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
            state.epochSeconds.append(seconds)
            let val = evaluate(validation)
            let improved = val.accuracy > state.bestValidationAccuracy
            if improved {
                state.bestValidationAccuracy = val.accuracy
                state.epochsWithoutImprovement = 0
                var cfg = checkpointConfig
                cfg.epoch = epoch + 1
                cfg.validationAccuracy = val.accuracy
                try Checkpoint.save(model, config: cfg, to: bestFolder)
            } else {
                state.epochsWithoutImprovement += 1
            }
            state.epochsDone = epoch + 1
            if let out = p.outputFolder { try saveResumeState(out, optimizer: optimizer, state: state) }
            progress(.epochEnd(epoch: epoch + 1, trainLoss: lossSum / Double(stepsPerEpoch), validation: val, seconds: seconds,
                               fromCache: usedCache, improved: improved))
            if let stop = p.stopAfterEpoch, epoch + 1 >= stop, epoch + 1 < p.epochs {
                progress(.message("stopping after epoch \(epoch + 1) as asked; continue with --resume"))
                break
            }
            if p.patience > 0 && state.epochsWithoutImprovement >= p.patience && epoch + 1 < p.epochs {
                progress(.message("early stopping: no better validation accuracy for \(p.patience) epoch(s)"))
                break
            }
        }
        let snapshot = ledger.snapshot()
        var stolen: Double?
        if let a = cpuAtStart, let b = CPUTimes.now() { stolen = CPUTimes.stolenShare(from: a, to: b) }
        // Test with the best weights.
        if FileManager.default.fileExists(atPath: bestFolder.appendingPathComponent("checkpoint.json").path) {
            _ = try Checkpoint.load(into: model, from: bestFolder, backboneSHA256: checkpointConfig.backboneSHA256)
        }
        let testMetrics = evaluate(test)
        var peak = [String: Int]()
        for c in MemoryCategory.allCases { peak[c.rawValue] = snapshot.peak[c] ?? 0 }
        peak["total"] = snapshot.peakTotal
        let mean = { (xs: [Double]) -> Double in xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }
        return TrainingReport(method: model.method.rawValue, accuracy: testMetrics.accuracy, macroF1: testMetrics.macroF1,
                              validationAccuracy: state.bestValidationAccuracy, trainableParams: model.trainableParameterCount,
                              totalParams: model.parameterCount, peakBytes: peak, peakRSSBytes: snapshot.peakRSS,
                              secondsPerStep: mean(uncachedStepTimes), secondsPerStepCached: cachedStepTimes.isEmpty ? nil : mean(cachedStepTimes),
                              epochSeconds: state.epochSeconds, trainExamples: train.count, testExamples: test.count,
                              batchSize: p.batchSize, maxLength: checkpointConfig.maxLength, threads: ThreadPool.shared.activeThreads,
                              cacheBytes: cache?.byteCount, stolenCPUShare: stolen, microBatches: model.runsAsMicroBatches ? max(1, min(context.microBatches, p.batchSize)) : 1)
    }

    // MARK: resume

    func saveResumeState(_ out: URL, optimizer: AdamW, state: TrainerState) throws {
        var cfg = checkpointConfig
        cfg.epoch = state.epochsDone
        try Checkpoint.save(model, config: cfg, to: out.appendingPathComponent("last"))
        var writer = SafetensorsWriter(metadata: ["step": String(optimizer.stepCount)])
        let (_, m, v) = optimizer.state
        for (i, (mi, vi)) in zip(m, v).enumerated() {
            if let mi { try writer.add("m.\(i)", floats: mi.toArray(), shape: mi.shape) }
            if let vi { try writer.add("v.\(i)", floats: vi.toArray(), shape: vi.shape) }
        }
        try writer.write(to: out.appendingPathComponent("last/optimizer.safetensors").path)
        try writeJSONAtomically(state, to: out.appendingPathComponent("state.json"))
    }

    func resumeIfPossible(_ out: URL, optimizer: AdamW, state: inout TrainerState, progress: (TrainingEvent) -> Void) throws {
        let stateURL = out.appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: stateURL.path) else {
            progress(.message("resume: no state in \(out.path); starting fresh"))
            return
        }
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw TrainerError("\(stateURL.path): cannot resume: \(error)")
        }
        _ = try Checkpoint.load(into: model, from: out.appendingPathComponent("last"), backboneSHA256: checkpointConfig.backboneSHA256)
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: out.appendingPathComponent("last/optimizer.safetensors").path) } catch {
            throw TrainerError("\(out.path)/last/optimizer.safetensors: \(error)")
        }
        let n = optimizer.parameters.count
        var m = [Tensor?](repeating: nil, count: n), v = [Tensor?](repeating: nil, count: n)
        try MemoryLedger.withCategory(.optimizer) {
            for i in 0..<n {
                let shape = optimizer.parameters[i].shape
                if file.contains("m.\(i)") { m[i] = Tensor(try file.floats("m.\(i)"), shape: shape) }
                if file.contains("v.\(i)") { v[i] = Tensor(try file.floats("v.\(i)"), shape: shape) }
            }
        }
        optimizer.restore(step: state.optimizerStep, m: m, v: v)
        progress(.message("resumed after epoch \(state.epochsDone) (step \(state.optimizerStep)) from \(out.path)"))
    }
}

