import Foundation

/// Measures the machine's single-precision FMA peak with a loop that never leaves registers:
/// enough independent accumulators to cover FMA latency on both FMA pipes, no memory traffic.
/// AVX2 machines get 12 chains of 8 lanes (16 ymm registers); AVX-512 machines 24 chains of 16.
public enum PeakFLOPS {
    @inline(never)
    static func fmaLoop8(_ iterations: Int, _ seed: Float) -> Float {
        typealias V = SIMD8<Float>
        let m = V(repeating: 0.999_999), a = V(repeating: seed * 1e-7)
        var x0 = V(repeating: seed + 0)
        var x1 = V(repeating: seed + 1)
        var x2 = V(repeating: seed + 2)
        var x3 = V(repeating: seed + 3)
        var x4 = V(repeating: seed + 4)
        var x5 = V(repeating: seed + 5)
        var x6 = V(repeating: seed + 6)
        var x7 = V(repeating: seed + 7)
        var x8 = V(repeating: seed + 8)
        var x9 = V(repeating: seed + 9)
        var x10 = V(repeating: seed + 10)
        var x11 = V(repeating: seed + 11)
        for _ in 0..<iterations {
            x0 = a.addingProduct(x0, m)
            x1 = a.addingProduct(x1, m)
            x2 = a.addingProduct(x2, m)
            x3 = a.addingProduct(x3, m)
            x4 = a.addingProduct(x4, m)
            x5 = a.addingProduct(x5, m)
            x6 = a.addingProduct(x6, m)
            x7 = a.addingProduct(x7, m)
            x8 = a.addingProduct(x8, m)
            x9 = a.addingProduct(x9, m)
            x10 = a.addingProduct(x10, m)
            x11 = a.addingProduct(x11, m)
        }
        var s = x0
        s += x1
        s += x2
        s += x3
        s += x4
        s += x5
        s += x6
        s += x7
        s += x8
        s += x9
        s += x10
        s += x11
        return s.sum()
    }

    @inline(never)
    static func fmaLoop16(_ iterations: Int, _ seed: Float) -> Float {
        typealias V = SIMD16<Float>
        let m = V(repeating: 0.999_999), a = V(repeating: seed * 1e-7)
        var x0 = V(repeating: seed + 0)
        var x1 = V(repeating: seed + 1)
        var x2 = V(repeating: seed + 2)
        var x3 = V(repeating: seed + 3)
        var x4 = V(repeating: seed + 4)
        var x5 = V(repeating: seed + 5)
        var x6 = V(repeating: seed + 6)
        var x7 = V(repeating: seed + 7)
        var x8 = V(repeating: seed + 8)
        var x9 = V(repeating: seed + 9)
        var x10 = V(repeating: seed + 10)
        var x11 = V(repeating: seed + 11)
        var x12 = V(repeating: seed + 12)
        var x13 = V(repeating: seed + 13)
        var x14 = V(repeating: seed + 14)
        var x15 = V(repeating: seed + 15)
        var x16 = V(repeating: seed + 16)
        var x17 = V(repeating: seed + 17)
        var x18 = V(repeating: seed + 18)
        var x19 = V(repeating: seed + 19)
        var x20 = V(repeating: seed + 20)
        var x21 = V(repeating: seed + 21)
        var x22 = V(repeating: seed + 22)
        var x23 = V(repeating: seed + 23)
        for _ in 0..<iterations {
            x0 = a.addingProduct(x0, m)
            x1 = a.addingProduct(x1, m)
            x2 = a.addingProduct(x2, m)
            x3 = a.addingProduct(x3, m)
            x4 = a.addingProduct(x4, m)
            x5 = a.addingProduct(x5, m)
            x6 = a.addingProduct(x6, m)
            x7 = a.addingProduct(x7, m)
            x8 = a.addingProduct(x8, m)
            x9 = a.addingProduct(x9, m)
            x10 = a.addingProduct(x10, m)
            x11 = a.addingProduct(x11, m)
            x12 = a.addingProduct(x12, m)
            x13 = a.addingProduct(x13, m)
            x14 = a.addingProduct(x14, m)
            x15 = a.addingProduct(x15, m)
            x16 = a.addingProduct(x16, m)
            x17 = a.addingProduct(x17, m)
            x18 = a.addingProduct(x18, m)
            x19 = a.addingProduct(x19, m)
            x20 = a.addingProduct(x20, m)
            x21 = a.addingProduct(x21, m)
            x22 = a.addingProduct(x22, m)
            x23 = a.addingProduct(x23, m)
        }
        var s = x0
        s += x1
        s += x2
        s += x3
        s += x4
        s += x5
        s += x6
        s += x7
        s += x8
        s += x9
        s += x10
        s += x11
        s += x12
        s += x13
        s += x14
        s += x15
        s += x16
        s += x17
        s += x18
        s += x19
        s += x20
        s += x21
        s += x22
        s += x23
        return s.sum()
    }

    /// FLOPs one call of the chosen loop performs.
    static func flopsPerCall(_ iterations: Int, wide: Bool) -> Double {
        wide ? Double(iterations) * 24 * 16 * 2 : Double(iterations) * 12 * 8 * 2
    }

    /// GFLOPS of the in-register loop on `threads` threads (best of `repeats`).
    public static func measure(threads: Int, seconds: Double = 0.3, repeats: Int = 3, pool: ThreadPool = .shared) -> Double {
        let iterations = 1_000_000
        let wide = CPUInfo.current().hasAVX512
        var best = 0.0
        let saved = pool.activeThreads
        pool.activeThreads = threads
        defer { pool.activeThreads = saved }
        for _ in 0..<repeats {
            var calls = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            repeat {
                pool.parallelFor(threads) { t in _ = wide ? fmaLoop16(iterations, Float(t + 1)) : fmaLoop8(iterations, Float(t + 1)) }
                calls += 1
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            } while elapsed < seconds
            best = max(best, flopsPerCall(iterations, wide: wide) * Double(calls * threads) / elapsed / 1e9)
        }
        return best
    }
}
