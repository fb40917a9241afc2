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
            abstract: "Time one training step (forward, backward, AdamW) of each method on the text backbone.",
            discussion: """
            Builds each method on the MiniLM backbone (random side initialisation), feeds --batch rows of \
            --seq real tokens (random ids), and reports the median of --iterations steps after one \
            warm-up: with the backbone computed, and, for side methods, with the taps already computed \
            (what a feature-cache epoch costs; --read-cache also times reading them from a bf16 cache \
            file, as training does). As in train, every method but full fine-tuning runs each step as \
            micro-batches, one per thread (--micro-batches), except side methods on taps handed over \
            without --read-cache. Methods run in turn, so every ratio comes from one run; \
            --rounds repeats the whole list and keeps each method's best median (noisy machines).
            """
        )
        @Option(help: "Comma-separated text methods.")
        var methods: String = "lst,last,lora,full"
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
        @Flag(help: "Time by the process's CPU time (user + system) instead of the wall clock: steadier on a busy machine; use with SIDETUNE_THREADS=1.")
        var cpuTime = false
        @Flag(help: "Side methods only: time just the steps from given taps (for profiling the side network).")
        var tapsOnly = false
        @Flag(help: "Side methods: each timed step reads its taps from a real feature cache file (bf16, converted as a cached training epoch does) instead of being handed float taps.")
        var readCache = false
        @Option(help: ArgumentHelp("LST, LAST: precision of the side network's linear products (as train's --side-matmul).", valueName: "f32|bf16|auto"))
        var sideMatmul: SideMatmulChoice = .f32
        @Option(help: ArgumentHelp("Run each step (backbone computed, or with --read-cache from the cache) as this many micro-batches, one per thread, as train does for every method but full fine-tuning (default: one per thread; 1: the whole batch op by op). Taps handed over without --read-cache stay one batch.", valueName: "n"))
        var microBatches: Int?

        public init() {}

        public func validate() throws {
            if let m = microBatches {
                guard m >= 1 else { throw ValidationError("--micro-batches must be >= 1, got \(m)") }
            }
            guard batch >= 1, seq >= 2, iterations >= 1, rounds >= 1 else {
                throw ValidationError("--batch, --iterations, --rounds must be >= 1 and --seq >= 2")
            }
            for m in methods.split(separator: ",") {
                guard let k = MethodKind(rawValue: String(m)), MethodKind.textEncoderMethods.contains(k) else {
                    throw ValidationError("--methods: '\(m)' is not a text-encoder method (\(MethodKind.textEncoderMethods.map(\.rawValue).joined(separator: ", ")))")
                }
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
            let folder = try modelDir.map { try LocalModelFolder(path: $0).url } ?? AssetStore().path(of: "minilm", file: .modelFolder)
            let kinds = methods.split(separator: ",").compactMap { MethodKind(rawValue: String($0)) }
            var rng = SplitMix64(seed: 7)
            var best: [MethodKind: (computed: Double, cached: Double?)] = [:]
            for round in 0..<rounds {
                for kind in kinds {
                    let backbone = try BertEncoder.load(folder: folder)
                    var options = MethodOptions()
                    options.sideInit = .random
                    options.dropout = 0
                    options.sideMatmul = sideMatmul.asSideMatmulOption
                    let model = try TextClassifier(backbone: backbone, method: kind, classes: 3, options: options, seed: 1)
                    let vocab = backbone.config.vocabSize
                    let tokenRows = (0..<batch).map { _ in (0..<seq).map { _ in Int32(1000 + rng.nextInt(below: vocab - 1000)) } }
                    let input = makeBatch(tokenRows) // equal lengths: no padding
                    let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: 3)) }
                    let optimizer = AdamW(parameters: model.trainableParameters().map(\.1), learningRate: 1e-4)
                    // A step: zero the gradients, `lossBackward` (forward and backward), AdamW.
                    func step(_ lossBackward: () -> Void) -> Double {
                        let t0 = now()
                        optimizer.zeroGrad()
                        lossBackward()
                        optimizer.step()
                        return now() - t0
                    }
                    func wholeBatch(_ taps: @escaping () -> [Tensor]?) -> () -> Void {
                        { model.logits(input, taps: taps()).crossEntropy(targets: labels).backward() }
                    }
                    // As train: a model that runs as micro-batches runs its step as parts, one per thread,
                    // each with its own taps (nil: computed in the part).
                    let rows = Array(0..<batch)
                    let parts = cutByTokens(rows, parts: model.runsAsMicroBatches ? microBatches ?? ThreadPool.shared.activeThreads : 1) { _ in seq }
                    // Each part's input is built before the clock starts, as the whole batch's is.
                    let partInputs = Dictionary(uniqueKeysWithValues: parts.map { ($0[0], makeBatch($0.map { tokenRows[$0] })) })
                    func partwise(_ taps: @escaping ([Int]) -> [Tensor]?) -> () -> Void {
                        {
                            _ = microBatchedBackward(parts) { part in
                                model.logits(partInputs[part[0]]!, taps: taps(part)).crossEntropy(targets: part.map { labels[$0] })
                            }
                        }
                    }
                    let partsLabel = parts.count > 1 ? ", \(parts.count) micro-batches" : ""
                    let pool = LargeBlockCache.shared
                    var poolNote = ""
                    // `label` names the run in the pool note (calling `taps` again for it would read the cache once more).
                    func median(_ label: String, _ lossBackward: () -> Void) -> Double {
                        _ = step(lossBackward)
                        let (h0, m0, e0, f0) = (pool.hits, pool.misses, pool.evictions, pool.freshBytes)
                        let times = (0..<iterations).map { _ in step(lossBackward) }.sorted()
                        // Fresh bytes are pages the kernel zeroes on first touch: in steady state there should be few.
                        let per = { (a: Int, b: Int) in Double(a - b) / Double(iterations) }
                        poolNote += String(format: "; block pool per step (%@): %.1f reused, %.1f mapped, %.1f evicted, %.1f MiB fresh",
                                           label as NSString, per(pool.hits, h0), per(pool.misses, m0), per(pool.evictions, e0), per(pool.freshBytes, f0) / 1048576)
                        return times[times.count / 2]
                    }
                    let computed = tapsOnly && kind.readsFrozenTaps ? Double.nan
                        : median("computed" + partsLabel, parts.count > 1 ? partwise { _ in nil } : wholeBatch { nil })
                    var cached: Double?
                    if kind.readsFrozenTaps {
                        // Given taps in the layout the feature cache would hand this model (packed for readers that skip padding).
                        let given = model.frozenTaps(input)
                        if readCache {
                            let cache = try FeatureCache(url: FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-bench-taps-\(getpid()).bin"),
                                                         lengths: input.lengths, taps: model.tapsRead, width: model.tapWidth)
                            cache.store(rows, from: given, readBy: model)
                            cached = median("from taps" + partsLabel, parts.count > 1 ? partwise { cache.taps(for: $0, readBy: model) }
                                                                        : wholeBatch { cache.taps(for: rows, readBy: model) })
                        } else {
                            cached = median("from taps", wholeBatch { given })
                        }
                    }
                    let old = best[kind]
                    best[kind] = (min(computed, old?.computed ?? .infinity), cached.map { min($0, old?.cached ?? .infinity) })
                    FileHandle.standardError.write(Data("round \(round + 1) \(kind.rawValue): \(String(format: "%.4f", computed)) s computed\(cached.map { String(format: ", %.4f s from taps", $0) } ?? "")\(poolNote)\n".utf8))
                }
            }
            let reference = best[.lora]?.computed
            print("batch \(batch) x \(seq) tokens, \(ThreadPool.shared.activeThreads) threads, median of \(iterations) steps, best of \(rounds) round(s)\(cpuTime ? ", process CPU seconds" : "")")
            print("method   s/step (backbone computed)   vs LoRA   s/step (taps given)   speed-up from taps")
            for kind in kinds {
                guard let b = best[kind] else { continue }
                let vsLoRA = reference.map { String(format: "%6.0f%%", 100 * b.computed / $0) } ?? "     -"
                let cachedText = b.cached.map { String(format: "%19.4f   %17.1fx", $0, b.computed / $0) } ?? ""
                print(kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + String(format: " %27.4f", b.computed) + "   " + vsLoRA + "  " + cachedText)
            }
        }
    }
}
