import Foundation
import SideTuneEngine
import SideTuneMethods
import SideTuneNN

/// One trainer's run, phase by phase: its folder (locked, resumed or started), optimizer and
/// schedule, its steps, the end of each epoch (validation, saving, early stopping) and the test
/// with the best weights. `Trainer.run` drives one; `Sweep` drives several in lockstep over one
/// stream of frozen taps, so a configuration trains exactly as it would alone.
final class TrainingRun<Model: TrainableModel, Split: TrainingData> where Split.Batch == Model.Batch {
    let trainer: Trainer<Model, Split>
    var context: Trainer<Model, Split>.StepContext
    let schedule: LRSchedule
    var state: TrainerState
    let folder: RunFolder
    let stepsPerEpoch: Int
    /// Set when the run has done its epochs, stopped early, or was told to stop after an epoch.
    private(set) var finished = false
    private var lock: RunLock?
    private let temporaryFolder: URL?
    private var uncachedStepTimes: [Double] = [], cachedStepTimes: [Double] = []
    private var epochStart: UInt64 = 0, lossSum = 0.0, usedCache = false
    private var cpuAtStart: CPUTimes?
    private var snapshot: LedgerSnapshot?
    private var stolen: Double?

    /// Sets up the run folder: --output (locked; resumed, replaced or refused when it holds a run)
    /// or a temporary one for the best epoch (which the test set is scored with; a copy in memory
    /// would show in the ledger's and RSS peaks, by the whole model for full fine-tuning).
    init(_ trainer: Trainer<Model, Split>, cachePlanned: Bool, progress: (TrainingEvent) -> Void) throws {
        self.trainer = trainer
        let p = trainer.parameters
        stepsPerEpoch = (trainer.train.count + p.batchSize - 1) / p.batchSize
        schedule = LRSchedule(peak: p.learningRate, warmupSteps: Int(Float(stepsPerEpoch * p.epochs) * p.warmupFraction),
                              totalSteps: stepsPerEpoch * p.epochs, decay: .cosine)
        context = trainer.makeStepContext()
        let fingerprint = trainer.fingerprint(cachePlanned: cachePlanned, microBatches: context.microBatches)
        state = TrainerState(runID: UUID().uuidString, epochsDone: 0, bestValidationAccuracy: -1, bestEpoch: nil,
                             epochsWithoutImprovement: 0, optimizerStep: 0, epochSeconds: [], randomStates: [:],
                             fingerprint: fingerprint)
        let fm = FileManager.default
        let folderURL: URL
        if let out = p.outputFolder {
            var isFolder: ObjCBool = false
            if fm.fileExists(atPath: out.path, isDirectory: &isFolder), !isFolder.boolValue {
                throw TrainerError("\(out.path) is a file; the output must be a folder (it holds the run's epochs)")
            }
            do { try fm.createDirectory(at: out, withIntermediateDirectories: true) } catch {
                throw TrainerError("\(out.path): cannot create the output folder: \(error.localizedDescription)")
            }
            lock = try RunLock(folder: out)
            folderURL = out
            temporaryFolder = nil
        } else {
            FeatureCache.removeLeftovers(in: fm.temporaryDirectory)
            folderURL = fm.temporaryDirectory.appendingPathComponent("sidetune-best-\(getpid())-\(UUID().uuidString)")
            try fm.createDirectory(at: folderURL, withIntermediateDirectories: true)
            temporaryFolder = folderURL
        }
        folder = RunFolder(folderURL, beforeChange: trainer.beforeRunFolderChange)
        do {
            if p.outputFolder != nil && RunFolder.holdsRun(folderURL) {
                if p.resume {
                    try trainer.resume(folder, optimizer: context.optimizer, state: &state, progress: progress)
                } else if p.overwrite {
                    try folder.removeRun()
                    progress(.message("--overwrite: removed the run that was in \(folderURL.path)"))
                } else {
                    throw TrainerError("\(folderURL.path) holds a run already; continue it with --resume, or replace it with --overwrite")
                }
            } else if p.resume {
                progress(.message("resume: no saved epoch in \(folderURL.path); starting fresh"))
            }
            try folder.prune()
        } catch {
            close()
            throw error
        }
        finished = state.epochsDone >= p.epochs
    }

    /// Whether epochs remain that a feature cache would serve.
    var needsCache: Bool { state.epochsDone < trainer.parameters.epochs }

    /// Releases the lock and removes a temporary folder (idempotent).
    func close() {
        lock?.release()
        lock = nil
        if let t = temporaryFolder { try? FileManager.default.removeItem(at: t) }
    }

    /// Starts the peaks and CPU times the report gives: set-up (Fisher pass, loading) is not part
    /// of training's footprint, so blocks it left idle are returned first.
    func startMeasuring() {
        LargeBlockCache.shared.trim()
        trainer.ledger.resetPeaks()
        ProcessMemory.resetPeak()
        cpuAtStart = CPUTimes.now()
        trainer.model.train(true)
    }

    func beginEpoch(_ epoch: Int) {
        context.readBackFreshTaps = epoch > 0
        epochStart = DispatchTime.now().uptimeNanoseconds
        lossSum = 0
        usedCache = false
    }

    /// Step `index` of `epoch` on `examples`: the scheduled learning rate, the step, its checks
    /// (finite taps, loss and gradients) and timing, and a progress event.
    func step(epoch: Int, index s: Int, examples idx: [Int], progress: (TrainingEvent) -> Void) throws {
        let p = trainer.parameters
        if let signal = trainer.stopRequested() {
            throw TrainingInterrupted(signal: signal, epoch: epoch + 1, step: s, stepsPerEpoch: stepsPerEpoch,
                                      folder: p.outputFolder, lastEpoch: state.epochsDone, bestEpoch: state.bestEpoch)
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        context.optimizer.learningRate = schedule.rate(at: state.optimizerStep)
        let r = trainer.step(idx, context: context)
        let at = "epoch \(epoch + 1) step \(s + 1)"
        guard r.tapsFinite else {
            throw TrainerError("the frozen backbone produced NaN or infinite taps at \(at): check its weights and config (layer_norm_eps, sizes)")
        }
        guard r.loss.isFinite else { throw TrainerError("loss became \(r.loss) at \(at): lower --lr") }
        guard r.gradientNorm.isFinite else {
            throw TrainerError("gradients became \(r.gradientNorm) at \(at) (the step was not applied): lower --lr or set --clip-norm")
        }
        usedCache = usedCache || r.fromCache
        state.optimizerStep += 1
        lossSum += Double(r.loss)
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if r.fromCache { cachedStepTimes.append(dt) } else { uncachedStepTimes.append(dt) }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
        let done = s + 1
        progress(.step(epoch: epoch + 1, step: done, stepsPerEpoch: stepsPerEpoch, loss: r.loss,
                       examplesPerSecond: Double(min(done * p.batchSize, trainer.train.count)) / max(elapsed, 1e-9),
                       etaSeconds: elapsed / Double(done) * Double(stepsPerEpoch - done)))
    }

    /// The epoch's steps are done: its time is taken now, before validation.
    func endSteps() {
        state.epochSeconds.append(Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9)
    }

    /// Records the epoch's validation, saves it, and decides whether the run goes on. Returns true
    /// when the run stops here (early stopping, or stopping after this epoch as asked).
    func endEpoch(_ epoch: Int, validation val: ClassificationMetrics, progress: (TrainingEvent) -> Void) throws -> Bool {
        let p = trainer.parameters
        let seconds = state.epochSeconds.last ?? 0
        let improved = val.accuracy > state.bestValidationAccuracy
        if improved {
            state.bestValidationAccuracy = val.accuracy
            state.bestEpoch = epoch + 1
            state.epochsWithoutImprovement = 0
        } else {
            state.epochsWithoutImprovement += 1
        }
        state.epochsDone = epoch + 1
        try trainer.saveEpoch(folder, validationAccuracy: val.accuracy, improved: improved, optimizer: context.optimizer, state: state)
        progress(.epochEnd(epoch: epoch + 1, trainLoss: lossSum / Double(stepsPerEpoch), validation: val, seconds: seconds,
                           fromCache: usedCache, improved: improved))
        if state.epochsDone >= p.epochs { finished = true }
        if let stop = p.stopAfterEpoch, epoch + 1 >= stop, epoch + 1 < p.epochs {
            progress(.message("stopping after epoch \(epoch + 1) as asked; continue with --resume"))
            finished = true
        }
        if p.patience > 0 && state.epochsWithoutImprovement >= p.patience && epoch + 1 < p.epochs {
            progress(.message("early stopping: no better validation accuracy for \(p.patience) epoch(s)"))
            finished = true
        }
        return finished
    }

    /// The training peaks as they stand (a sweep takes them once, when its last run finishes).
    func takeSnapshot(_ snapshot: LedgerSnapshot? = nil) { self.snapshot = snapshot ?? trainer.ledger.snapshot() }

    /// The test with the best epoch's weights, and the report.
    func finish(cacheBytes: Int?, progress: (TrainingEvent) -> Void) throws -> TrainingReport {
        try endTraining()
        return report(test: trainer.evaluate(trainer.test), cacheBytes: cacheBytes)
    }

    /// Training is over: its peaks and stolen CPU are taken, and the best epoch's weights loaded
    /// for the test.
    func endTraining() throws {
        if snapshot == nil { snapshot = trainer.ledger.snapshot() }
        if let a = cpuAtStart, let b = CPUTimes.now() { stolen = CPUTimes.stolenShare(from: a, to: b) }
        if let best = folder.resolve("best") {
            _ = try Checkpoint.load(into: trainer.model, from: best, backboneSHA256: trainer.checkpointConfig.backboneSHA256)
        }
    }

    /// The report, with the test's metrics (after `endTraining`).
    func report(test testMetrics: ClassificationMetrics, cacheBytes: Int?) -> TrainingReport {
        let p = trainer.parameters, model = trainer.model
        let snapshot = self.snapshot ?? trainer.ledger.snapshot()
        var peak = [String: Int]()
        for c in MemoryCategory.allCases { peak[c.rawValue] = snapshot.peak[c] ?? 0 }
        peak["total"] = snapshot.peakTotal
        let mean = { (xs: [Double]) -> Double in xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }
        return TrainingReport(method: model.method.rawValue, accuracy: testMetrics.accuracy, macroF1: testMetrics.macroF1,
                              validationAccuracy: state.bestValidationAccuracy, trainableParams: model.trainableParameterCount,
                              totalParams: model.parameterCount, peakBytes: peak, peakRSSBytes: snapshot.peakRSS,
                              secondsPerStep: mean(uncachedStepTimes),
                              secondsPerStepCached: cachedStepTimes.isEmpty ? nil : mean(cachedStepTimes),
                              epochSeconds: state.epochSeconds, trainExamples: trainer.train.count,
                              testExamples: trainer.test.count, batchSize: p.batchSize,
                              maxLength: trainer.checkpointConfig.maxLength, threads: ThreadPool.shared.activeThreads,
                              cacheBytes: cacheBytes, stolenCPUShare: stolen,
                              microBatches: model.runsAsMicroBatches ? max(1, min(context.microBatches, p.batchSize)) : 1)
    }
}
