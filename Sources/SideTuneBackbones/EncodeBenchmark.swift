import Foundation
import SideTuneEngine
import SideTuneTokenizers

/// The benchmark behind `sidetune bench encode`: a frozen, no-grad BERT forward over one padded
/// batch, timed against the machine's FP32 peak measured in the same run.
///
/// FLOPs counted per sequence of T tokens, per layer: the six projections
/// 2*T*(4 d^2 + 2 d d_ff) plus attention's two products 4*T*T*d. Padded, T is the padded length
/// (padding positions included: the padded forward and PyTorch compute them); packed, T is each
/// sequence's real length (the packed forward computes nothing else). Embeddings, LayerNorm,
/// GELU and softmax are not counted.
public enum EncodeBenchmark {
    public struct Report: Codable, Sendable {
        public var engine: String
        public var cpu: String
        public var threads: Int
        public var batch: Int
        public var seq: Int
        /// "padded" (every sequence computed at `seq` tokens) or "packed" (real tokens only).
        public var layout: String
        /// The products' precision: "f32", or "bf16" (bf16 operands, f32 sums).
        public var precision: String?
        public var realTokens: Int
        public var iterations: Int
        public var secondsMedian: Double
        public var secondsBest: Double
        public var sentencesPerSecond: Double
        public var gflops: Double
        public var peakGFLOPS: Double
        public var fractionOfPeak: Double
        /// Ledger peaks by category during the timed forwards (bytes), and the process's peak RSS.
        public var peakBytes: [String: Int]
        public var peakLedgerTotal: Int
        public var peakRSS: Int

        enum CodingKeys: String, CodingKey {
            case engine, cpu, threads, batch, seq, layout, iterations, gflops, precision
            case realTokens = "real_tokens", secondsMedian = "seconds_median", secondsBest = "seconds_best"
            case sentencesPerSecond = "sentences_per_second", peakGFLOPS = "peak_gflops", fractionOfPeak = "fraction_of_peak"
            case peakBytes = "peak_bytes", peakLedgerTotal = "peak_ledger_total", peakRSS = "peak_rss"
        }

        public func jsonString() -> String {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            return String(decoding: try! enc.encode(self), as: UTF8.self)
        }

        public func table() -> String {
            var lines = [
                "cpu: \(cpu), \(threads) thread(s), FP32 peak \(String(format: "%.1f", peakGFLOPS)) GFLOPS",
                "batch \(batch) x \(seq) tokens (\(realTokens) real), \(layout): "
                    + (layout == "packed" ? "only the real tokens computed" : "padding computed too") + ", \(iterations) timed batches"
                    + (precision == "bf16" ? ", bf16 products (f32 sums)" : ""),
                String(format: "median %.3f s, best %.3f s per batch", secondsMedian, secondsBest),
                String(format: "%.1f sentences/s, %.1f GFLOPS effective = %.1f%% of peak", sentencesPerSecond, gflops, 100 * fractionOfPeak),
                "peak memory (ledger) during the timed forwards:",
            ]
            for c in MemoryCategory.allCases {
                lines.append(String(format: "  %-12@ %12@", c.rawValue as NSString, formatBytes(peakBytes[c.rawValue] ?? 0) as NSString))
            }
            lines.append(String(format: "  %-12@ %12@", "total" as NSString, formatBytes(peakLedgerTotal) as NSString))
            lines.append(String(format: "  %-12@ %12@", "peak RSS" as NSString, formatBytes(peakRSS) as NSString))
            return lines.joined(separator: "\n")
        }
    }

    /// FLOPs of one sequence of `seq` tokens (matmuls and attention products).
    public static func flopsPerSequence(_ c: BertConfig, seq: Int) -> Double {
        let d = Double(c.hiddenSize), dff = Double(c.intermediateSize), t = Double(seq)
        return Double(c.numHiddenLayers) * (2 * t * (4 * d * d + 2 * d * dff) + 4 * t * t * d)
    }

    /// `batch` texts, repeated if there are fewer, padded and truncated to `seq` tokens.
    public static func encode(_ texts: [String], tokenizer: WordPieceTokenizer, batch: Int, seq: Int) -> BatchEncoding {
        precondition(!texts.isEmpty, "no texts to encode")
        let picked = (0..<batch).map { texts[$0 % texts.count] }
        return tokenizer.encodeBatch(picked, maxLength: seq, padding: .maxLength)
    }

    /// `packed`: run `packedHiddenStates` (the real tokens end to end) instead of the padded forward.
    public static func run(model: BertEncoder, input: BatchEncoding, iterations: Int, packed: Bool = false,
                           precision: MatmulPrecision = .float32, pool: ThreadPool = .shared,
                           progress: ((String) -> Void)? = nil) -> Report {
        let cpu = CPUInfo.current()
        let threads = pool.activeThreads
        let peak = PeakFLOPS.measure(threads: threads)
        progress?(String(format: "FP32 peak on %d thread(s): %.1f GFLOPS", threads, peak))
        func forward() {
            Tensor.withMatmulPrecision(precision) {
                _ = packed ? model.packedHiddenStates(input).hiddenStates : noGrad { model(input).hiddenStates }
            }
        }
        forward() // warm-up (first touches of weights and allocator; bf16 weights packed)
        MemoryLedger.shared.resetPeaks()
        var times: [Double] = []
        for i in 0..<max(1, iterations) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            forward()
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            times.append(dt)
            progress?(String(format: "batch %d: %.3f s (%.1f sentences/s)", i + 1, dt, Double(input.batchSize) / dt))
        }
        let snap = MemoryLedger.shared.snapshot()
        let sorted = times.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        let flops = packed ? input.lengths.reduce(0) { $0 + flopsPerSequence(model.config, seq: $1) }
            : flopsPerSequence(model.config, seq: input.seqLength) * Double(input.batchSize)
        let gflops = flops / median / 1e9
        var peaks: [String: Int] = [:]
        for c in MemoryCategory.allCases { peaks[c.rawValue] = snap.peak[c] ?? 0 }
        return Report(engine: "SideTune", cpu: cpu.model, threads: threads, batch: input.batchSize, seq: input.seqLength,
                      layout: packed ? "packed" : "padded",
                      precision: precision.rawValue, realTokens: input.lengths.reduce(0, +), iterations: times.count, secondsMedian: median,
                      secondsBest: sorted[0], sentencesPerSecond: Double(input.batchSize) / median, gflops: gflops,
                      peakGFLOPS: peak, fractionOfPeak: gflops / peak, peakBytes: peaks, peakLedgerTotal: snap.peakTotal,
                      peakRSS: snap.peakRSS)
    }
}
