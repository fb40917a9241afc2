import Foundation
import SideTuneEngine

/// The benchmark behind `sidetune bench encode --model vit-s14`: frozen-backbone throughput
/// (no autograd, taps collected as a side network would) with memory by ledger category.
public enum VisionEncodeBenchmark {
    public struct Parameters: Sendable {
        public var batch = 32
        public var size = 224
        public var iterations = 3
        public var threads = ThreadPool.shared.maxThreads
        public var collectTaps = true
        public init() {}
    }

    public struct Report: Codable, Sendable {
        public var model: String
        public var cpu: String
        public var threads: Int
        public var batch: Int
        public var size: Int
        /// Seconds of each timed pass.
        public var seconds: [Double]
        public var imagesPerSecond: Double
        public var gflopsPerImage: Double
        public var effectiveGFLOPS: Double
        public var peakGFLOPS: Double
        public var peakBytesByCategory: [String: Int]
        public var peakLedgerBytes: Int
        public var peakRSSBytes: Int
        public var loadSeconds: Double
        /// The products' precision: "f32", or "bf16" (bf16 operands, f32 sums).
        public var precision: String?

        enum CodingKeys: String, CodingKey {
            case model, cpu, threads, batch, size, seconds
            case imagesPerSecond = "images_per_second", gflopsPerImage = "gflops_per_image"
            case effectiveGFLOPS = "effective_gflops", peakGFLOPS = "peak_gflops"
            case peakBytesByCategory = "peak_bytes_by_category", peakLedgerBytes = "peak_ledger_bytes"
            case peakRSSBytes = "peak_rss_bytes", loadSeconds = "load_seconds", precision
        }

        public func jsonString() -> String {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self)
        }

        public func table() -> String {
            var out = ["\(model): batch \(batch) at \(size)x\(size), \(threads) thread(s), no grad, "
                       + (precision == "bf16" ? "bf16 products (f32 sums), " : "") + cpu]
            out.append(String(format: "  load %.2f s; passes: %@ s", loadSeconds, seconds.map { String(format: "%.3f", $0) }.joined(separator: ", ")))
            out.append(String(format: "  %.1f images/s (best pass); %.2f GFLOP per image; %.1f GFLOPS effective = %.0f%% of the FMA-loop peak %.1f",
                              imagesPerSecond, gflopsPerImage, effectiveGFLOPS, 100 * effectiveGFLOPS / peakGFLOPS, peakGFLOPS))
            let cats = peakBytesByCategory.filter { $0.value > 0 }.sorted { $0.value > $1.value }
                .map { "\($0.key) \(formatBytes($0.value))" }.joined(separator: ", ")
            out.append("  peak memory (ledger, per category): \(cats); ledger total peak \(formatBytes(peakLedgerBytes)); process peak RSS \(formatBytes(peakRSSBytes))")
            return out.joined(separator: "\n")
        }
    }

    /// Times `p.iterations` passes (after one warm-up) of `vit` on seeded random pixels.
    public static func run(_ vit: DINOv2ViT, model: String, loadSeconds: Double, _ p: Parameters,
                           progress: ((String) -> Void)? = nil) -> Report {
        let pool = ThreadPool.shared
        let saved = pool.activeThreads
        pool.activeThreads = p.threads
        defer { pool.activeThreads = saved }
        progress?("measuring FP32 peak on \(p.threads) thread(s)...")
        let peak = PeakFLOPS.measure(threads: p.threads)
        var rng = SplitMix64(seed: 42)
        let pixels = Tensor.randn([p.batch, vit.config.channels, p.size, p.size], rng: &rng)
        func pass() -> Double {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let out = noGrad { vit(pixels, collectTaps: p.collectTaps) }
            precondition(out.hidden.shape[0] == p.batch)
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        progress?("warm-up pass...")
        _ = pass()
        MemoryLedger.shared.resetPeaks()
        var seconds: [Double] = []
        for i in 0..<p.iterations {
            seconds.append(pass())
            progress?(String(format: "pass %d: %.3f s", i + 1, seconds.last!))
        }
        let best = seconds.min()!
        let flops = vit.flops(height: p.size, width: p.size)
        let snap = MemoryLedger.shared.snapshot()
        return Report(model: model, cpu: CPUInfo.current().description, threads: p.threads, batch: p.batch, size: p.size,
                      seconds: seconds, imagesPerSecond: Double(p.batch) / best, gflopsPerImage: flops / 1e9,
                      effectiveGFLOPS: flops * Double(p.batch) / best / 1e9, peakGFLOPS: peak,
                      peakBytesByCategory: Dictionary(uniqueKeysWithValues: snap.peak.map { ($0.key.rawValue, $0.value) }),
                      peakLedgerBytes: snap.peakTotal, peakRSSBytes: ProcessMemory.peakResidentBytes(), loadSeconds: loadSeconds)
    }
}
