import ArgumentParser
import SideTuneAssets
import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTrainer

extension SideTuneCommand {
    public struct Train: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Adapt a backbone to a classification task with one method, and report accuracy, memory and time.",
            discussion: """
            Methods: \(MethodKind.allCases.map { "\($0.rawValue) (\($0.summary))" }.joined(separator: "; ")). \
            Side methods (lst, last, linear) run the backbone without autograd and, from epoch 2 on, \
            read its taps from a bf16 feature cache built in epoch 1 (--no-cache turns it off). Every \
            method but full fine-tuning and HST runs each step as micro-batches, one per thread, each \
            with its own forward and backward (SIDETUNE_MICROBATCHES=1 runs whole batches, op by op). \
            Memory is measured by the engine's ledger (bytes by category) and the process's peak RSS.

            Example: sidetune train --model minilm --data tweets --method lst --epochs 3 --train-limit 2000
            """
        )
        @OptionGroup var task: TextTaskOptions
        @OptionGroup(title: "Image tasks (--model vit-s14)") var image: ImageTaskOptions
        @OptionGroup(title: "LLM tasks (--model smollm2)") var llm: LLMTaskOptions
        @Option(help: "Method: \(MethodKind.allCases.map(\.rawValue).joined(separator: ", ")).")
        var method: String = "lst"
        @OptionGroup var methodFlags: MethodFlags
        @Option(help: "Epochs.")
        var epochs: Int = 3
        @Option(help: "Examples per optimizer step.")
        var batchSize: Int = 32
        @Option(help: "Examples per evaluation batch (default: --batch-size, so that evaluation fits where training does).")
        var evalBatchSize: Int?
        @Option(name: .customLong("lr"), help: "Peak learning rate (default depends on the method: 5e-5 full, 1e-3 LoRA/BitFit/adapter, 3e-3 side methods).")
        var learningRate: Float?
        @Option(help: "AdamW decoupled weight decay.")
        var weightDecay: Float = 0.01
        @Option(help: "Fraction of steps spent warming the learning rate up (then cosine decay).")
        var warmup: Float = 0.06
        @Option(help: "Clip the global gradient norm to this (0 = off).")
        var clipNorm: Float = 1
        @Option(help: "Early stopping: epochs without a better validation accuracy (0 = never).")
        var patience: Int = 2
        @Flag(help: "Side methods: recompute the backbone every epoch instead of caching its taps.")
        var noCache = false
        @Option(help: "Largest feature cache to build, in MiB.")
        var cacheLimitMb: Int = 4096
        @Option(help: "Folder for checkpoints (best/, last/, state.json).")
        var output: String?
        @Flag(help: "Continue an interrupted run from --output's last checkpoint (the folder must exist; one without a saved epoch starts fresh).")
        var resume = false
        @Option(help: "Also write the report as JSON to this file.")
        var report: String?

        public init() {}

        public func validate() throws {
            guard MethodKind(rawValue: method) != nil else {
                throw ValidationError("--method must be one of \(MethodKind.allCases.map(\.rawValue).joined(separator: ", ")), got \(method)")
            }
            guard epochs >= 1, batchSize >= 1 else { throw ValidationError("--epochs and --batch-size must be >= 1") }
            if let e = evalBatchSize, e < 1 { throw ValidationError("--eval-batch-size must be >= 1, got \(e)") }
            if resume && output == nil { throw ValidationError("--resume needs --output (the folder of the interrupted run)") }
            // A folder without state (a run stopped in its first epoch) starts fresh; a missing
            // folder is more likely a mistyped path than a run to start, so it is refused.
            if resume, let out = output, !FileManager.default.fileExists(atPath: out) {
                throw ValidationError("--resume: \(out) does not exist, so there is no run to continue (check the path, or drop --resume to start a new run)")
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
            try runTraining()
        }

        /// Runs the training, prints the report table and returns the report (also written to
        /// --report; the table is printed first, so a failed write loses nothing).
        @discardableResult
        func runTraining() throws -> TrainingReport {
            let kind = MethodKind(rawValue: method)!
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            let result: TrainingReport
            switch try BackboneFamily(model: task.model, modelDir: task.modelDir) {
            case .bert: result = try runTextTraining(kind, log: log)
            case .vit: result = try runImageTraining(kind, log: log)
            case .llama: result = try runLLMTraining(kind, log: log)
            }
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

        func runTextTraining(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
            let prepared = try PreparedTextTask.prepare(task, log: log)
            let backbone = try prepared.backbone.load()
            let options = try methodFlags.options()
            let fisher = kind == .lst && options.sideInit == .fisher
                ? zip(prepared.train.ids, prepared.train.labels).map { (ids: $0, label: $1) } : []
            let model = try TextClassifier(backbone: backbone, method: kind, classes: prepared.labels.count, options: options,
                                           seed: task.seed, fisherData: fisher, progress: log)
            let config = CheckpointConfig(method: kind, options: options, labels: prepared.labels, maxLength: task.maxLength,
                                          backboneName: prepared.backbone.name, backboneSHA256: prepared.backbone.sha256,
                                          seed: task.seed, epoch: 0, validationAccuracy: nil, backboneFamily: BackboneFamily.bert.rawValue,
                                          backbonePath: prepared.backbone.path)
            return try train(model, train: prepared.train, validation: prepared.validation, test: prepared.test, config: config, log: log)
        }

        /// The trainer's settings from the flags.
        func trainingParameters(_ kind: MethodKind) -> TrainingParameters {
            var p = TrainingParameters()
            p.epochs = epochs
            p.batchSize = batchSize
            p.evalBatchSize = evalBatchSize
            p.learningRate = learningRate ?? defaultLearningRate(kind)
            p.weightDecay = weightDecay
            p.warmupFraction = warmup
            p.clipNorm = clipNorm
            p.seed = task.seed
            p.patience = patience
            p.useCache = !noCache
            p.cacheLimitBytes = cacheLimitMb << 20
            p.outputFolder = output.map { URL(fileURLWithPath: $0, isDirectory: true) }
            p.resume = resume
            return p
        }

        /// Trains any classifier with the flags' settings and a progress bar (shared by every task).
        func train<M: ClassifierModel, S: ClassificationData>(_ model: M, train: S, validation: S, test: S, config: CheckpointConfig,
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
            let trainer = try Trainer(model: model, parameters: trainingParameters(model.method), train: train, validation: validation,
                                      test: test, checkpointConfig: config)
            let bar = ProgressBar()
            return try trainer.run(progress: bar.update)
        }
    }
}

/// Which kind of backbone a --model names: it decides the task path (text, image, LLM).
enum BackboneFamily: String {
    case bert, vit, llama

    init(model: String, modelDir: String?) throws {
        if modelDir != nil { self = .bert; return }
        if model.hasSuffix(".onnx") { self = .vit; return } // a DINOv2 ONNX file given by path
        guard let d = try? AssetStore().descriptor(model) else {
            throw ValidationError("--model \(model): not a known model (known: \(AssetCatalog.all.filter { $0.files[.modelFolder] != nil || $0.files[.onnx] != nil || $0.files[.gguf] != nil }.map(\.name).joined(separator: ", ")); or use --model-dir)")
        }
        if d.files[.onnx] != nil { self = .vit } else if d.files[.gguf] != nil { self = .llama } else if d.files[.modelFolder] != nil { self = .bert } else {
            throw ValidationError("--model \(model) is a data set, not a model")
        }
    }

    /// The family a checkpoint was trained on: recorded in newer checkpoints, else inferred from
    /// the backbone's name ("<asset>-nf4|float32" for LLMs, an ONNX file or asset for ViTs).
    init(checkpoint c: CheckpointConfig) throws {
        if let recorded = c.backboneFamily {
            guard let f = BackboneFamily(rawValue: recorded) else { throw ValidationError("unknown backbone family '\(recorded)' in the checkpoint") }
            self = f
        } else if LoadedLLM.parse(backboneName: c.backboneName) != nil {
            self = .llama
        } else if c.backboneName.hasSuffix(".onnx") || (try? AssetStore().descriptor(c.backboneName))?.files[.onnx] != nil {
            self = .vit
        } else {
            self = .bert
        }
    }
}
