import Foundation

/// The GEMM benchmark behind `sidetune bench gemm`: peak first, then each shape.
public enum GEMMBenchmark {
    public static let defaultShapes: [GEMMShape] = [256, 512, 1024, 1536, 2048].map { GEMMShape(m: $0, n: $0, k: $0) } + [
        GEMMShape(m: 4096, n: 1536, k: 384),  // FFN up: 32 x 128 tokens, width 384 -> 1536
        GEMMShape(m: 4096, n: 384, k: 1536),  // FFN down
        GEMMShape(m: 4096, n: 384, k: 384),   // attention projection
        GEMMShape(m: 4096, n: 384, k: 1536, transA: false, transB: true), // backward dX = dY W (W stored [out, in])
        GEMMShape(m: 384, n: 1536, k: 4096, transA: true, transB: false), // backward dW = X^T dY
    ]

    public struct Row: Codable, Sendable {
        public var m: Int, n: Int, k: Int, threads: Int, gflops: Double, seconds: Double
        public var transA: Bool, transB: Bool
        enum CodingKeys: String, CodingKey { case m, n, k, threads, gflops, seconds, transA = "trans_a", transB = "trans_b" }
    }

    public struct Report: Codable, Sendable {
        public var cpu: String
        public var cpuFamily: Int?
        public var peakGFLOPS: [String: Double]
        public var rows: [Row]
        enum CodingKeys: String, CodingKey { case cpu, cpuFamily = "cpu_family", peakGFLOPS = "peak_gflops", rows }

        public func jsonString() -> String {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            return String(decoding: try! enc.encode(self), as: UTF8.self)
        }

        public func table() -> String {
            var out = ["", "cpu: \(cpu)"]
            for (t, p) in peakGFLOPS.sorted(by: { $0.key < $1.key }) {
                out.append(String(format: "FP32 peak (in-register FMA loop), %@ thread(s): %.1f GFLOPS", t, p))
            }
            out.append("")
            out.append("     m      n      k  op     threads   GFLOPS  % of peak   seconds")
            for r in rows {
                let peak = peakGFLOPS[String(r.threads)] ?? .nan
                let op = (r.transA ? "T" : "N") + (r.transB ? "T" : "N")
                out.append(String(format: "%6d %6d %6d  %@  %9d %8.1f %9.1f%% %9.5f", r.m, r.n, r.k, op, r.threads, r.gflops,
                                  100 * r.gflops / peak, r.seconds))
            }
            return out.joined(separator: "\n")
        }
    }

    public static func parseShapes(_ text: String) throws -> [GEMMShape] {
        try text.split(separator: ",").map { item in
            // MxNxK, optionally :OP with OP one of NN NT TN TT (op(A), op(B): N as stored, T transposed).
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            let d = parts[0].split(separator: "x").compactMap { Int($0) }
            let op = parts.count > 1 ? String(parts[1]) : "NN"
            guard d.count == 3, d.allSatisfy({ $0 > 0 }), parts.count <= 2, ["NN", "NT", "TN", "TT"].contains(op) else {
                throw BenchmarkError("bad shape '\(item)': expected MxNxK[:NN|NT|TN|TT] with positive integers, e.g. 1024x1024x1024 or 4096x384x1536:NT")
            }
            return GEMMShape(m: d[0], n: d[1], k: d[2], transA: op.first == "T", transB: op.last == "T")
        }
    }

    /// `precision: .bfloat16` times `gemmBFloat16Products` (bf16 operands packed on every call, as
    /// a linear layer does) against the same FP32 peak: its products can reach twice that. With
    /// `frozenWeight` it times `gemmBFloat16` instead: B read as a weight [n, k] packed once
    /// (`PackedBFloat16Weight`), only A rounded per call, as a frozen backbone's products run.
    public static func run(shapes: [GEMMShape], threadCounts: [Int], minSeconds: Double, precision: MatmulPrecision = .float32,
                           frozenWeight: Bool = false, progress: ((String) -> Void)? = nil) -> Report {
        let cpu = CPUInfo.current()
        progress?("cpu: \(cpu.description)")
        var peaks: [String: Double] = [:]
        for t in threadCounts {
            peaks[String(t)] = PeakFLOPS.measure(threads: t)
            progress?(String(format: "peak on %d thread(s): %.1f GFLOPS", t, peaks[String(t)]!))
        }
        var rows: [Row] = []
        for s in shapes {
            let a = Workspace(floats: s.m * s.k), b = Workspace(floats: s.k * s.n), c = Workspace(floats: s.m * s.n)
            var rng = SplitMix64(seed: 1)
            for i in 0..<(s.m * s.k) { a.floats[i] = rng.nextFloat() - 0.5 }
            for i in 0..<(s.k * s.n) { b.floats[i] = rng.nextFloat() - 0.5 }
            let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
            let weight = frozenWeight ? PackedBFloat16Weight(b.floats, outFeatures: s.n, inFeatures: s.k) : nil
            for t in threadCounts {
                let pool = ThreadPool.sized(t)
                func product() {
                    switch (precision, weight) {
                    case (.float32, _):
                        gemm(s, a.floats, lda: lda, b.floats, ldb: ldb, c.floats, ldc: s.n, pool: pool)
                    case (.bfloat16, let w?):
                        gemmBFloat16(m: s.m, a.floats, ldx: s.k, w, c.floats, ldc: s.n, pool: pool)
                    case (.bfloat16, nil):
                        gemmBFloat16Products(s, .f32(a.floats), lda: lda, .f32(b.floats), ldb: ldb, c.floats, ldc: s.n,
                                             pool: pool)
                    }
                }
                product() // warm-up
                var best = Double.infinity, total = 0.0, runs = 0
                while total < minSeconds || runs < 3 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    product()
                    let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                    best = min(best, dt); total += dt; runs += 1
                }
                let gf = 2 * Double(s.m) * Double(s.n) * Double(s.k) / best / 1e9
                rows.append(Row(m: s.m, n: s.n, k: s.k, threads: t, gflops: gf, seconds: best, transA: s.transA, transB: s.transB))
                progress?(String(format: "%dx%dx%d%@ on %d thread(s): %.1f GFLOPS (%.0f%% of peak)", s.m, s.n, s.k,
                                 s.transA || s.transB ? " (\(s.transA ? "T" : "N")\(s.transB ? "T" : "N"))" : "", t, gf,
                                 100 * gf / (peaks[String(t)] ?? .nan)))
            }
        }
        // Measure the peak again at the end and keep the higher figure: these VMs have noisy
        // neighbours, and a low peak would flatter the fractions.
        for t in threadCounts {
            let again = PeakFLOPS.measure(threads: t)
            if again > peaks[String(t)]! {
                peaks[String(t)] = again
                progress?(String(format: "peak on %d thread(s) re-measured: %.1f GFLOPS", t, again))
            }
        }
        return Report(cpu: cpu.model, cpuFamily: cpu.family, peakGFLOPS: peaks, rows: rows)
    }
}

extension GEMMBenchmark {
    /// GFLOPS of the micro-kernel alone on cache-resident packed panels (one thread): the ceiling
    /// the full GEMM can reach; the gap to it is packing, edges and memory traffic.
    public static func microKernelGFLOPS(kernel: GEMMKernel = .native, kc: Int = 256, panels: Int = 28, seconds: Double = 0.3) -> Double {
        let a = Workspace(floats: panels * kernel.mr * kc), b = Workspace(floats: kc * kernel.nr)
        let c = Workspace(floats: panels * kernel.mr * kernel.nr)
        for i in 0..<(panels * kernel.mr * kc) { a.floats[i] = Float(i % 7) * 0.01 }
        for i in 0..<(kc * kernel.nr) { b.floats[i] = Float(i % 5) * 0.01 }
        var calls = 0
        let t0 = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0
        repeat {
            for p in 0..<panels {
                kernel.run(kc, a.floats + p * kernel.mr * kc, b.floats, c.floats + p * kernel.mr * kernel.nr, kernel.nr, true)
            }
            calls += panels
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        } while elapsed < seconds
        return Double(calls) * Double(2 * kernel.mr * kernel.nr * kc) / elapsed / 1e9
    }
}

extension GEMMBenchmark {
    /// A kernel by name with optional cache blocking: "6x16", "6x16c@168,384,4080" (mc,kc,nc).
    public static func parseKernel(_ text: String) throws -> GEMMKernel {
        let parts = text.split(separator: "@", maxSplits: 1)
        let all = GEMMKernel.available
        guard var k = all.first(where: { $0.name == parts.first.map(String.init) }) else {
            throw BenchmarkError("unknown kernel '\(text)': known: \(all.map(\.name).joined(separator: ", "))")
        }
        if parts.count == 2 {
            let v = parts[1].split(separator: ",").compactMap { Int($0) }
            guard v.count == 3, v.allSatisfy({ $0 > 0 }), v[0] % k.mr == 0, v[2] % k.nr == 0 else {
                throw BenchmarkError("bad blocking in '\(text)': expected mc,kc,nc with mc a multiple of \(k.mr) and nc of \(k.nr)")
            }
            (k.mc, k.kc, k.nc) = (v[0], v[1], v[2])
            k.name += "@\(v[0]),\(v[1]),\(v[2])"
        }
        return k
    }

    /// Kernels (or blockings) compared on one thread, interleaved round by round so a noisy
    /// neighbour hits all of them alike, timed by the thread's CPU time (not wall time). Returns
    /// GFLOPS per shape and kernel from each kernel's best round.
    public static func compareKernels(shapes: [GEMMShape], kernels: [GEMMKernel], rounds: Int, minSeconds: Double)
        -> [(shape: GEMMShape, gflops: [Double])] {
        func cpuNow() -> Double {
            var t = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
        }
        return shapes.map { s in
            let a = Workspace(floats: s.m * s.k), b = Workspace(floats: s.k * s.n), c = Workspace(floats: s.m * s.n)
            var rng = SplitMix64(seed: 1)
            for i in 0..<(s.m * s.k) { a.floats[i] = rng.nextFloat() - 0.5 }
            for i in 0..<(s.k * s.n) { b.floats[i] = rng.nextFloat() - 0.5 }
            let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
            var best = [Double](repeating: .infinity, count: kernels.count)
            for (i, k) in kernels.enumerated() { _ = i; gemm(s, a.floats, lda: lda, b.floats, ldb: ldb, c.floats, ldc: s.n, singleThreaded: true, kernel: k) }
            for _ in 0..<rounds {
                for (i, k) in kernels.enumerated() {
                    var total = 0.0, runs = 0
                    while total < minSeconds || runs < 2 {
                        let t0 = cpuNow()
                        gemm(s, a.floats, lda: lda, b.floats, ldb: ldb, c.floats, ldc: s.n, singleThreaded: true, kernel: k)
                        let dt = cpuNow() - t0
                        best[i] = min(best[i], dt); total += dt; runs += 1
                    }
                }
            }
            return (s, best.map { 2 * Double(s.m) * Double(s.n) * Double(s.k) / $0 / 1e9 })
        }
    }
}

public struct BenchmarkError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
