import ArgumentParser
import SideTuneAssets
import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTrainer

/// Trainer settings from flags; defaults are `TrainingParameters()`'s.
public struct TrainingFlags: ParsableArguments {
    static let defaults = TrainingParameters()

    @Option(help: "Epochs.")
    var epochs: Int = defaults.epochs
    @Option(help: "Examples per optimizer step.")
    var batchSize: Int = defaults.batchSize
    @Option(help: "Examples per evaluation batch (default: --batch-size, so that evaluation fits where training does).")
    var evalBatchSize: Int?
    @Option(name: .customLong("lr"), help: "Peak learning rate (default: the method's, from `sidetune methods`: 5e-5 full, 1e-3 LoRA, QLoRA, BitFit, adapters, 3e-3 side methods and prompts).")
    var learningRate: Float?
    @Option(help: "AdamW decoupled weight decay.")
    var weightDecay: Float = defaults.weightDecay
    @Option(help: "Fraction of steps spent warming the learning rate up (then cosine decay).")
    var warmup: Float = defaults.warmupFraction
    @Option(help: "Clip the global gradient norm to this (0 = off).")
    var clipNorm: Float = defaults.clipNorm
    @Option(help: "Early stopping: epochs without a better validation accuracy (0 = never).")
    var patience: Int = defaults.patience
    @Flag(help: "Side methods: recompute the backbone every epoch instead of caching its taps.")
    var noCache = false
    @Option(help: "Largest feature cache to build, in MiB.")
    var cacheLimitMb: Int = defaults.cacheLimitBytes >> 20
    @Option(help: ArgumentHelp("Side methods: read the frozen taps from this cache, built ahead with `sidetune cache build` (and `cache merge`), from epoch 1 on; its manifest (<file>.json) must match the run.", valueName: "file"))
    var featureCache: String?
    @Option(help: ArgumentHelp("Run each step as this many micro-batches, one per thread, each with its own forward and backward (every method but full fine-tuning and HST; default: one per thread; 1: the whole batch op by op).", valueName: "n"))
    var microBatches: Int?
    @Option(help: ArgumentHelp("Threads for the kernels and micro-batches (default: every core; at most the cores).", valueName: "n"))
    var threads: Int?

    public init() {}

    public func validate() throws {
        guard epochs >= 1, batchSize >= 1 else { throw ValidationError("--epochs and --batch-size must be >= 1") }
        if let e = evalBatchSize, e < 1 { throw ValidationError("--eval-batch-size must be >= 1, got \(e)") }
        if let m = microBatches, m < 1 { throw ValidationError("--micro-batches must be >= 1, got \(m)") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be >= 1, got \(t)") }
        if let lr = learningRate, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number, got \(lr)") }
        guard weightDecay >= 0, warmup >= 0 && warmup <= 1, clipNorm >= 0, patience >= 0, cacheLimitMb >= 0 else {
            throw ValidationError("--weight-decay, --clip-norm, --patience and --cache-limit-mb must be >= 0, and --warmup in [0, 1]")
        }
    }

    /// Applies --threads to the shared pool (the kernels and micro-batches use it).
    func applyThreads() {
        if let threads { ThreadPool.shared.activeThreads = threads }
    }

    func parameters(method: MethodKind, seed: UInt64) -> TrainingParameters {
        var p = TrainingParameters()
        p.epochs = epochs
        p.batchSize = batchSize
        p.evalBatchSize = evalBatchSize
        p.learningRate = learningRate ?? MethodRegistry.method(method).defaultLearningRate
        p.weightDecay = weightDecay
        p.warmupFraction = warmup
        p.clipNorm = clipNorm
        p.seed = seed
        p.patience = patience
        p.useCache = !noCache
        p.cacheLimitBytes = cacheLimitMb << 20
        p.microBatches = microBatches
        p.prebuiltCache = featureCache.map { URL(fileURLWithPath: $0) }
        return p
    }
}

extension SideTuneCommand {
    public struct Train: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Adapt a backbone to a classification task with one method, and report accuracy, memory and time.",
            discussion: """
            Methods (`sidetune methods` shows which runs on which backbone): \(MethodRegistry.all.map { "\($0.kind.rawValue) (\($0.summary))" }.joined(separator: "; ")). \
            Side methods (lst, last, linear, qst) run the backbone without autograd and, from epoch 2 on, \
            read its taps from a bf16 feature cache built in epoch 1 (--no-cache turns it off). Every \
            method but full fine-tuning and HST runs each step as micro-batches, one per thread, each \
            with its own forward and backward (--micro-batches 1 runs whole batches, op by op). \
            Memory is measured by the engine's ledger (bytes by category) and the process's peak RSS.

            Example: sidetune train --model minilm --data tweets --method lst --epochs 3 --train-limit 2000
            """
        )
        @OptionGroup var task: TextTaskOptions
        @OptionGroup(title: "Image tasks (--model vit-s14)") var image: ImageTaskOptions
        @OptionGroup(title: "LLM tasks (--model smollm2)") var llm: LLMTaskOptions
        @Option(help: "Method (see `sidetune methods`).")
        var method: MethodKind = .lst
        @OptionGroup(title: "Method options") var methodFlags: MethodFlags
        @OptionGroup(title: "Training") var training: TrainingFlags
        @Option(help: "Folder for the run: a folder per complete epoch (weights, optimizer, state) and the links best and last to them, each switched atomically; eval, predict and generate take best or last (links: copy them with cp -rL).")
        var output: String?
        @Flag(help: "Continue the run in --output from its last complete epoch, exactly as if it had not stopped (the same data, split, seed and settings are required; the differences are listed otherwise).")
        var resume = false
        @Flag(help: "Replace the run in --output (without --resume or --overwrite, a folder holding a run is refused).")
        var overwrite = false
        @Option(help: "Also write the report as JSON to this file.")
        var report: String?

        public init() {}

        public func validate() throws {
            if resume && output == nil { throw ValidationError("--resume needs --output (the folder of the interrupted run)") }
            if overwrite && output == nil { throw ValidationError("--overwrite needs --output (the folder whose run it replaces)") }
            if resume && overwrite { throw ValidationError("--resume continues the run in --output and --overwrite replaces it: choose one") }
            // A folder without state (a run stopped in its first epoch) starts fresh; a missing
            // folder is more likely a mistyped path than a run to start, so it is refused.
            if resume, let out = output, !FileManager.default.fileExists(atPath: out) {
                throw ValidationError("--resume: \(out) does not exist, so there is no run to continue (check the path, or drop --resume to start a new run)")
            }
            if let out = output {
                // Checked now, not after loading the model and an epoch of training.
                var isFolder: ObjCBool = false
                if FileManager.default.fileExists(atPath: out, isDirectory: &isFolder), !isFolder.boolValue {
                    throw ValidationError("--output \(out) is a file; it must be a folder (it holds the run's epochs)")
                }
                if !resume && !overwrite && RunFolder.holdsRun(URL(fileURLWithPath: out, isDirectory: true)) {
                    throw ValidationError("--output \(out) holds a run already: continue it with --resume, replace it with --overwrite, or choose another folder")
                }
            }
            if let path = report {
                // Checked before training, not found out after it.
                let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) else {
                    throw ValidationError("--report \(path): folder \(folder) does not exist")
                }
                guard isDirectory.boolValue else { throw ValidationError("--report \(path): \(folder) is a file, not a folder") }
                guard FileManager.default.isWritableFile(atPath: folder) else {
                    throw ValidationError("--report \(path): folder \(folder) is not writable")
                }
            }
        }

        public func run() throws {
            Interruption.install()
            OutOfMemory.advice = "need less with a smaller --batch-size, more --micro-batches (each part holds less), --no-cache, or a shorter --max-length or --image-size"
            do {
                try runTraining()
            } catch let stop as TrainingInterrupted {
                FileHandle.standardError.write(Data("\(stop)\n".utf8))
                if stop.lastEpoch > 0 {
                    let again = CommandLine.arguments.dropFirst().filter { $0 != "--resume" && $0 != "--overwrite" } + ["--resume"]
                    FileHandle.standardError.write(Data("  sidetune \(again.joined(separator: " "))\n".utf8))
                }
                throw ExitCode(stop.exitCode)
            }
        }

        /// What identifies the run besides the trainer's parameters: a resumed run must match it.
        func runIdentity() -> [String: String] {
            var id: [String: String] = [
                "data": task.dataDescription, "train limit": String(task.trainLimit), "eval limit": String(task.evalLimit),
                "text column": task.textColumn ?? "-", "label column": task.labelColumn ?? "-", "strict": String(task.strict),
                "image size": String(image.imageSize), "test limit": String(image.testLimit), "task": llm.task.rawValue,
            ]
            for (key, path) in [("data", task.data), ("train data", task.trainData), ("validation data", task.validationData),
                                ("test data", task.testData)] {
                var isFolder: ObjCBool = false
                if let path, FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), !isFolder.boolValue,
                   let digest = try? SHA256.hexDigest(ofFile: path) {
                    id["\(key) sha256"] = digest
                }
            }
            return id
        }

        /// Runs the training, prints the report table and returns the report (also written to
        /// --report; the table is printed first, so a failed write loses nothing).
        @discardableResult
        func runTraining() throws -> TrainingReport {
            training.applyThreads()
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            let options = methodFlags.options()
            let weights = MethodRegistry.weights(method, options: options)
            // Refused before fetching or minutes of loading.
            let family = try BackboneSource.family(model: task.modelName, modelDir: task.modelDir)
            do { try MethodRegistry.check(method, on: family, weights: weights) } catch { throw ValidationError("\(error)") }
            if llm.task == .lm && (family != .llama || method != .qst) {
                throw ValidationError("--task lm tunes the QST side network of a decoder LLM (--method qst --model smollm2)")
            }
            if family != .vit, image.testLimit != 0 { throw ValidationError("--test-limit is for image tasks; text tasks use --eval-limit") }
            let source = try BackboneSource.resolve(model: task.modelName, modelDir: task.modelDir, log: log)
            var result: TrainingReport
            if llm.task == .lm {
                guard case let .llama(llama, tokenizer) = try source.load(weights: weights, log: log) else {
                    preconditionFailure("--task lm was checked to name a decoder")
                }
                try checkContext(llama)
                result = try tuneLanguageModel(llama, tokenizer: tokenizer, source: source, options: options, log: log)
            } else {
                let prompts = method == .prompt ? options.promptLength : 0
                result = try withBackboneAndSplits(source, weights: weights, promptTokens: prompts, log: log,
                                                   TrainOnSplits(command: self, source: source, options: options, log: log))
            }
            // Side methods' F32 projections are stored in bf16 under --backbone-precision bf16.
            let bf16 = options.backbonePrecision == .bfloat16 && weights == .f32 && MethodRegistry.method(method).readsFrozenTaps
            result.weights = bf16 ? "bf16" : weights.rawValue
            result.packing = options.packing ?? true
            result.backbonePrecision = (options.backbonePrecision ?? .float32).rawValue
            result.activationBits = MethodRegistry.activationBits(method, options: options).rawValue
            print(result.table())
            if let path = report {
                do {
                    try Data(result.jsonString().utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
                } catch {
                    throw TrainerError("--report \(path): could not write the JSON report (\(error.localizedDescription)); the table above has the same figures")
                }
            }
            return result
        }

        /// Builds the method on the backbone through the registry and trains it on the splits.
        func train<B: Backbone, S: ClassificationData>(_ backbone: B, source: BackboneSource, options: MethodOptions,
                                                       splits: TaskSplits<S>,
                                                       log: @escaping (String) -> Void) throws -> TrainingReport where S.Batch == B.Input {
            let model = try MethodRegistry.build(method, on: backbone, classes: splits.labels.count, options: options,
                                                 seed: task.seed, trainingExamples: splits.trainingExamples, progress: log)
            let config = checkpointConfig(method: method, options: options, source: source, splits: splits)
            return try train(model, train: splits.train, validation: splits.validation, test: splits.test, config: config, log: log)
        }

        /// What a checkpoint of `method` on these splits records before its first epoch.
        func checkpointConfig<S>(method: MethodKind, options: MethodOptions, source: BackboneSource,
                                 splits: TaskSplits<S>) -> CheckpointConfig {
            var config = CheckpointConfig(method: method, options: options, labels: splits.labels, maxLength: splits.maxLength,
                                          backboneName: source.name, backboneSHA256: source.sha256, seed: task.seed, epoch: 0,
                                          validationAccuracy: nil, backboneFamily: source.family, imageSize: splits.imageSize,
                                          backbonePath: source.path)
            config.imagePipeline = splits.imagePipeline
            return config
        }

        /// Trains any model with the flags' settings and a progress bar (every task ends here).
        func train<M: TrainableModel, S: TrainingData>(_ model: M, train: S, validation: S, test: S, config: CheckpointConfig,
                                                       log: (String) -> Void) throws -> TrainingReport where S.Batch == M.Batch {
            log("method \(model.method.rawValue): \(model.trainableParameterCount) trainable of \(model.parameterCount) parameters; \(ThreadPool.shared.activeThreads) threads")
            if config.options.sideMatmul == .bfloat16 {
                if [.lst, .last].contains(config.method) {
                    log("side network: linear products with bf16 operands and f32 sums"
                        + (MatmulPrecision.bfloat16IsNative ? "" : " (this CPU has no AVX512_BF16: a plain loop, slower than f32)"))
                } else if methodFlags.sideMatmul != .auto { // auto asks for bf16 only where it applies
                    log("note: --side-matmul applies to lst and last only; \(config.method.rawValue) runs in f32")
                }
            }
            if let bits = config.options.activationBits, MethodRegistry.method(config.method).readsFrozenTaps {
                log("note: --activation-bits \(bits.rawValue) applies to the side network only: "
                    + "\(config.method.rawValue) keeps nothing of the frozen backbone for backward")
            }
            if config.options.backbonePrecision == .bfloat16 {
                if MethodRegistry.weights(config.method, options: config.options) == .nf4 {
                    log("note: the backbone's NF4 projections multiply in f32 after dequantisation; "
                        + "--backbone-precision bf16 changes only f32 projections")
                } else {
                    let frozen = MethodRegistry.method(config.method).readsFrozenTaps
                    log((frozen ? "frozen backbone: projections stored in bf16, products with f32 sums"
                                : "backbone: forward and backward products with bf16 operands and f32 sums")
                        + (MatmulPrecision.bfloat16IsNative ? "" : " (this CPU has no AVX512_BF16: a plain loop, slower than f32)"))
                }
            }
            var parameters = training.parameters(method: model.method, seed: task.seed)
            parameters.outputFolder = output.map { URL(fileURLWithPath: $0, isDirectory: true) }
            parameters.resume = resume
            parameters.overwrite = overwrite
            parameters.runIdentity = runIdentity()
            let trainer = try Trainer(model: model, parameters: parameters, train: train, validation: validation, test: test,
                                      checkpointConfig: config)
            let bar = ProgressBar()
            return try trainer.run(progress: bar.update)
        }
    }
}

extension BackboneFamily {
    /// The family a checkpoint was trained on: recorded in newer checkpoints, else inferred from
    /// the backbone's name (an ONNX file or asset for ViTs, a GGUF for LLMs).
    init(checkpoint c: CheckpointConfig) {
        if let recorded = c.backboneFamily { self = recorded; return }
        let descriptor = try? AssetStore().descriptor(c.backboneName)
        if c.backboneName.hasSuffix(".onnx") || descriptor?.files[.onnx] != nil { self = .vit }
        else if c.backboneName.hasSuffix(".gguf") || descriptor?.files[.gguf] != nil { self = .llama }
        else { self = .bert }
    }
}

/// A one-line progress bar on stderr: step, loss, examples/s, ETA.
final class ProgressBar {
    var lastPrint = 0.0
    let interactive = isatty(2) != 0

    func update(_ e: TrainingEvent) {
        switch e {
        case .message(let m):
            clear()
            FileHandle.standardError.write(Data((m + "\n").utf8))
        case let .step(epoch, step, total, loss, eps, eta):
            let now = Date().timeIntervalSince1970
            guard step == total || now - lastPrint > (interactive ? 0.2 : 10) else { return }
            lastPrint = now
            let width = 24, filled = width * step / max(total, 1)
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let line = String(format: "epoch %d [%@] %d/%d  loss %.4f  %.1f ex/s  ETA %@", epoch, bar, step, total, loss, eps,
                              formatDuration(eta))
            if interactive {
                FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
            } else {
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
        case let .epochEnd(epoch, loss, val, seconds, cached, improved):
            clear()
            print(String(format: "epoch %d: train loss %.4f, validation accuracy %.2f%%, macro-F1 %.2f%%, %.1f s%@%@", epoch, loss,
                         100 * val.accuracy, 100 * val.macroF1, seconds, cached ? " (taps from cache)" : "", improved ? " *best" : ""))
        }
    }

    func clear() { if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    return t >= 60 ? "\(t / 60)m\(String(format: "%02d", t % 60))s" : "\(t)s"
}

/// `train`'s body for any backbone family: build the method and train it.
struct TrainOnSplits: BackboneTaskBody {
    let command: SideTuneCommand.Train
    let source: BackboneSource
    let options: MethodOptions
    let log: (String) -> Void

    func run<B: Backbone, S: ClassificationData>(_ backbone: B, _ splits: TaskSplits<S>) throws -> TrainingReport
        where S.Batch == B.Input {
        try command.train(backbone, source: source, options: options, splits: splits, log: log)
    }
}
