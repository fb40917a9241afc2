import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTokenizers
import SideTuneTrainer

extension SideTuneCommand.Bench {
    public struct StepBench: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "step",
            abstract: "Time the trainer's training step (forward, backward, clipping, AdamW) of each method on the text backbone.",
            discussion: """
            Builds each method on the MiniLM backbone through the method registry (random side \
            initialisation), feeds --batch rows of --seq real tokens (random ids), and times the \
            trainer's own step (`Trainer.step`, what `train` runs) over --iterations steps after one \
            warm-up, reporting the median: with the backbone computed, and, for side methods, with \
            the taps read from a bf16 feature cache file, as a cached training epoch reads them. As in \
            train, every method but full fine-tuning runs each step as micro-batches, one per thread \
            (--micro-batches). Methods run in turn, so every ratio comes from one run; --rounds \
            repeats the whole list and keeps each method's best median (noisy machines).
            """
        )
        @Option(help: "Comma-separated text methods.")
        var methods = MethodList([.lst, .last, .lora, .full])
        @Option(help: "A Hugging Face-style model folder instead of the cached minilm asset.")
        var modelDir: String?
        @Option(help: "Rows per step.")
        var batch: Int = 32
        @Option(help: "Tokens per row.")
        var seq: Int = 64
        @Option(help: "Timed steps per method and round.")
        var iterations: Int = 5
        @Option(help: "Rounds over the method list (each method's best median is kept).")
        var rounds: Int = 1
        @Flag(help: "Time by the process's CPU time (user + system) instead of the wall clock: steadier on a busy machine; use with --threads 1.")
        var cpuTime = false
        @Flag(help: "Side methods only: time just the steps from the cache (for profiling the side network).")
        var tapsOnly = false
        @Option(help: ArgumentHelp("LST, LAST: precision of the side network's linear products (as train's --side-matmul).", valueName: "f32|bf16|auto"))
        var sideMatmul: SideMatmulChoice = .f32
        @Option(help: ArgumentHelp("Run each step as this many micro-batches, one per thread, as train does for every method but full fine-tuning (default: one per thread; 1: the whole batch op by op).", valueName: "n"))
        var microBatches: Int?
        @Option(help: ArgumentHelp("Threads (default: every core).", valueName: "n"))
        var threads: Int?
        @Option(help: ArgumentHelp("Bits per element of what backward keeps, as train's --activation-bits (default: "
                                   + "4 for s2a, 32 otherwise).", valueName: "4|8|16|32"))
        var activationBits: ActivationBits?

        public init() {}

        public func validate() throws {
            if let m = microBatches {
                guard m >= 1 else { throw ValidationError("--micro-batches must be >= 1, got \(m)") }
            }
            if let t = threads, t < 1 { throw ValidationError("--threads must be >= 1, got \(t)") }
            guard batch >= 1, seq >= 2, iterations >= 1, rounds >= 1 else {
                throw ValidationError("--batch, --iterations, --rounds must be >= 1 and --seq >= 2")
            }
            let text = MethodRegistry.methods(on: .bert)
            for k in methods.kinds where !text.contains(k) {
                throw ValidationError("--methods: '\(k.rawValue)' does not run on a BERT text encoder (\(text.map(\.rawValue).joined(separator: ", ")))")
            }
        }

        /// Seconds on the chosen clock.
        func now() -> Double {
            if cpuTime {
                var t = timespec()
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
                return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
            }
            return Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        }

        public func run() throws {
            if let threads { ThreadPool.shared.activeThreads = threads }
            let source = try BackboneSource.resolve(model: "minilm", modelDir: modelDir, log: eprint)
            var rng = SplitMix64(seed: 7)
            var best: [MethodKind: (computed: Double, cached: Double?)] = [:]
            for round in 0..<rounds {
                for kind in methods.kinds {
                    var options = MethodOptions()
                    options.sideInit = .random
                    options.dropout = 0
                    options.sideMatmul = sideMatmul.asSideMatmulOption
                    options.activationBits = activationBits
                    guard case let .bert(backbone, _) = try source.load(weights: MethodRegistry.weights(kind, options: options), log: { _ in }) else {
                        throw ValidationError("bench step runs on a BERT text encoder")
                    }
                    let model = try MethodRegistry.build(kind, on: backbone, classes: 3, options: options, seed: 1)
                    let vocab = backbone.config.vocabSize
                    let tokenRows = (0..<batch).map { _ in (0..<seq).map { _ in Int32(1000 + rng.nextInt(below: vocab - 1000)) } }
                    let labels = (0..<batch).map { _ in rng.nextInt(below: 3) }
                    let (computed, cached, note) = try time(model, split: EncodedSplit(ids: tokenRows, labels: labels), kind: kind)
                    let old = best[kind]
                    best[kind] = (min(computed, old?.computed ?? .infinity), cached.map { min($0, old?.cached ?? .infinity) })
                    let times = (computed.isNaN ? [] : [String(format: "%.4f s computed", computed)])
                        + (cached.map { [String(format: "%.4f s from the cache", $0)] } ?? [])
                    eprint("round \(round + 1) \(kind.rawValue): \(times.joined(separator: ", "))\(note)")
                }
            }
            let reference = best[.lora]?.computed
            let bits = activationBits.map { ", --activation-bits \($0.rawValue)" } ?? ""
            print("batch \(batch) x \(seq) tokens, \(ThreadPool.shared.activeThreads) threads, median of \(iterations) steps, "
                  + "best of \(rounds) round(s)\(cpuTime ? ", process CPU seconds" : "")\(bits)")
            print("method   s/step (backbone computed)   vs LoRA   s/step (from the cache)   speed-up from the cache")
            for kind in methods.kinds {
                guard let b = best[kind] else { continue }
                // --taps-only times no computed step: its columns show "-".
                let timed = !b.computed.isNaN
                func dash(_ width: Int) -> String { String(repeating: " ", count: width - 1) + "-" }
                let computedText = timed ? String(format: " %27.4f", b.computed) : dash(28)
                let vsLoRA = timed ? reference.map { String(format: "%6.0f%%", 100 * b.computed / $0) } ?? dash(6) : dash(6)
                let cachedText = b.cached.map {
                    String(format: "%23.4f   ", $0) + (timed ? String(format: "%22.1fx", b.computed / $0) : dash(23))
                } ?? ""
                print(kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + computedText + "   " + vsLoRA + "  " + cachedText)
            }
        }

        /// Median seconds of the trainer's step with the backbone computed and (side methods) from
        /// a feature cache that holds the batch, and a note on the block pool's traffic per step.
        func time<M: TrainableModel>(_ model: M, split: EncodedSplit, kind: MethodKind) throws
            -> (computed: Double, cached: Double?, note: String) where M.Batch == BatchEncoding {
            var parameters = TrainingParameters()
            parameters.learningRate = 1e-4
            parameters.microBatches = microBatches
            let config = CheckpointConfig(method: kind, options: MethodOptions(), labels: ["a", "b", "c"], maxLength: seq,
                                          backboneName: "bench", backboneSHA256: "", seed: 1, epoch: 0, validationAccuracy: nil)
            let trainer = try Trainer(model: model, parameters: parameters, train: split, validation: split, test: split, checkpointConfig: config)
            let rows = Array(0..<split.count)
            let pool = LargeBlockCache.shared
            var note = ""
            func median(_ label: String, _ context: Trainer<M, EncodedSplit>.StepContext) -> Double {
                trainer.step(rows, context: context) // warm-up (and, with a cache, the step that fills it)
                let (h0, m0, e0, f0) = (pool.hits, pool.misses, pool.evictions, pool.freshBytes)
                let times = (0..<iterations).map { _ in
                    let t0 = now()
                    trainer.step(rows, context: context)
                    return now() - t0
                }.sorted()
                // Fresh bytes are pages the kernel zeroes on first touch: in steady state there should be few.
                let per = { (a: Int, b: Int) in Double(a - b) / Double(iterations) }
                note += String(format: "; block pool per step (%@): %.1f reused, %.1f mapped, %.1f evicted, %.1f MiB fresh",
                               label as NSString, per(pool.hits, h0), per(pool.misses, m0), per(pool.evictions, e0), per(pool.freshBytes, f0) / 1048576)
                return times[times.count / 2]
            }
            let computed = tapsOnly && !model.tapsRead.isEmpty ? Double.nan : median("computed", trainer.makeStepContext())
            guard !model.tapsRead.isEmpty else { return (computed, nil, note) }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-bench-taps-\(getpid()).bin")
            let cache = try FeatureCache(url: url, lengths: rows.map(split.tokenCount), taps: model.tapsRead, width: model.tapWidth)
            return (computed, median("from the cache", trainer.makeStepContext(cache: cache)), note)
        }
    }
}
