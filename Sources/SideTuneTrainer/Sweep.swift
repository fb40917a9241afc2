import Foundation
import SideTuneEngine
import SideTuneMethods

/// Several configurations of side methods trained over one stream of frozen taps (LAST's argument:
/// the backbone is frozen and isolated, so its forward, the expensive part, is paid once for any
/// number of side networks). Each configuration is a `Trainer` with its own model (on the shared
/// backbone), optimizer, schedule, dropout seeds, run folder, early stopping and best epoch; the
/// sweep steps them in lockstep through the same batches, and each step's taps, computed in epoch
/// 1 or read from the one feature cache after it, are handed to every configuration. So a
/// configuration trains exactly as `Trainer.run` trains it alone (a test checks this), and memory
/// grows only by each side network's own state.
public final class Sweep<Model: TrainableModel, Split: TrainingData> where Split.Batch == Model.Batch {
    public let trainers: [Trainer<Model, Split>]

    /// Refuses configurations that could not share one stream: different data, order or batches,
    /// or models that read different taps (or a method that backpropagates through the backbone).
    public init(_ trainers: [Trainer<Model, Split>]) throws {
        guard let lead = trainers.first else { throw TrainerError("a sweep needs at least one configuration") }
        let p0 = lead.parameters, m0 = lead.model
        for (i, t) in trainers.enumerated() {
            let p = t.parameters, m = t.model, name = "configuration \(i + 1) (\(m.method.rawValue))"
            guard !m.tapsRead.isEmpty else {
                throw TrainerError("\(name): only side methods share a tap stream (\(m.method.rawValue) backpropagates through the backbone)")
            }
            guard m.runsAsMicroBatches == m0.runsAsMicroBatches, m.tapCount == m0.tapCount, m.tapWidth == m0.tapWidth else {
                throw TrainerError("\(name) cannot share configuration 1's taps (another backbone, or batches cut otherwise); sweep them apart")
            }
            var differences: [String] = []
            if p.seed != p0.seed { differences.append("seed") }
            if p.batchSize != p0.batchSize { differences.append("batch size") }
            if p.epochs != p0.epochs { differences.append("epochs") }
            if p.microBatches != p0.microBatches { differences.append("micro-batches") }
            if p.useCache != p0.useCache || p.cacheLimitBytes != p0.cacheLimitBytes { differences.append("feature cache") }
            if (p.evalBatchSize ?? p.batchSize) != (p0.evalBatchSize ?? p0.batchSize) { differences.append("evaluation batch size") }
            for (a, b, split) in [(t.train, lead.train, "train"), (t.validation, lead.validation, "validation"), (t.test, lead.test, "test")]
                where a.count != b.count || Trainer<Model, Split>.hash(a) != Trainer<Model, Split>.hash(b) {
                differences.append("\(split) split")
            }
            guard differences.isEmpty else {
                throw TrainerError("\(name) differs from configuration 1 in \(differences.joined(separator: ", ")): a sweep's configurations share one stream of batches")
            }
        }
        self.trainers = trainers
    }

    /// Trains every configuration and returns their reports, in order. `progress(k, event)` gets
    /// configuration k's events.
    public func run(progress: (Int, TrainingEvent) -> Void = { _, _ in }) throws -> [TrainingReport] {
        try MemoryLedger.withLedger(trainers[0].ledger) { try runMeasured(progress: progress) }
    }

    private func runMeasured(progress: (Int, TrainingEvent) -> Void) throws -> [TrainingReport] {
        let lead = trainers[0], p = lead.parameters
        let lengths = (0..<lead.train.count).map(lead.train.tokenCount)
        // One cache holds every tap any configuration reads.
        let tapsRead = Array(Set(trainers.flatMap(\.model.tapsRead))).sorted()
        let plan = lead.plansCache(lengths: lengths, taps: tapsRead)
        var runs: [TrainingRun<Model, Split>] = []
        defer { for r in runs { r.close() } }
        for (k, t) in trainers.enumerated() {
            runs.append(try TrainingRun(t, cachePlanned: plan.planned, progress: { progress(k, $0) }))
        }
        let firstEpoch = runs.map(\.state.epochsDone).min() ?? p.epochs
        let cache = runs.contains(where: \.needsCache)
            ? try lead.makeCache(plan: plan, lengths: lengths, epoch: firstEpoch, taps: tapsRead, progress: { progress(0, $0) }) : nil
        if cache == nil { lead.reportNoCache(plan: plan, progress: { progress(0, $0) }) }
        let shared = SharedTaps()
        for r in runs {
            r.context.cache = cache
            r.context.sharedTaps = shared
            r.startMeasuring()
        }
        for epoch in firstEpoch..<p.epochs {
            let active = runs.filter { !$0.finished && $0.state.epochsDone == epoch }
            if active.isEmpty { continue }
            let order = lead.epochOrder(epoch)
            for r in active { r.beginEpoch(epoch) }
            for s in 0..<active[0].stepsPerEpoch {
                let rows = lead.batchRows(order, step: s)
                shared.fromCache = cache.map { c in rows.allSatisfy(c.contains) } ?? false
                for (k, r) in zip(runs.indices, runs) where active.contains(where: { $0 === r }) {
                    try r.step(epoch: epoch, index: s, examples: rows, progress: { progress(k, $0) })
                }
                shared.reset()
            }
            for r in active { r.endSteps() }
            let validation = Trainer.evaluate(active.map(\.trainer), lead.validation, sharingTaps: true)
            for (r, val) in zip(active, validation) {
                let k = runs.firstIndex { $0 === r }!
                _ = try r.endEpoch(epoch, validation: val, progress: { progress(k, $0) })
            }
        }
        let snapshot = lead.ledger.snapshot()
        for r in runs {
            r.takeSnapshot(snapshot)
            try r.endTraining()
        }
        let test = Trainer.evaluate(trainers, lead.test, sharingTaps: true)
        return zip(runs, test).map { $0.report(test: $1, cacheBytes: cache?.byteCount) }
    }
}

/// A step's taps by micro-batch part, shared by a sweep's configurations: the first to ask for a
/// part computes them (or reads them from the cache), the others get the same tensors. Parts are
/// asked for from the pool's threads, each part by one thread at a time.
final class SharedTaps: @unchecked Sendable {
    /// A part's taps in one layout and precision (models of other methods may read others).
    struct Key: Hashable { let rows: [Int], packed: Bool, bfloat16: Bool }
    private var taps: [Key: [Tensor]] = [:]
    private let lock = NSLock()
    /// Whether this step's taps come from the cache: decided before the first configuration steps
    /// (which may store fresh taps into it), the same for all.
    var fromCache: Bool?

    func taps(_ rows: [Int], packed: Bool, bfloat16: Bool, _ make: () -> [Tensor]) -> [Tensor] {
        let key = Key(rows: rows, packed: packed, bfloat16: bfloat16)
        lock.lock()
        let known = taps[key]
        lock.unlock()
        if let known { return known }
        let made = make()
        lock.lock()
        taps[key] = made
        lock.unlock()
        return made
    }

    /// Drops the step's taps (their memory) once every configuration has stepped.
    func reset() {
        lock.lock()
        taps = [:]
        fromCache = nil
        lock.unlock()
    }
}
