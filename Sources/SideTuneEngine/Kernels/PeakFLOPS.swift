import CSideTuneKernels
import Foundation

/// Measures the machine's single-precision FMA peak with a loop that never leaves registers:
/// enough independent accumulators to cover FMA latency on both FMA pipes, no memory traffic
/// (`st_peak_loop`, compiled per instruction set). The level in use decides the width: AVX2 runs
/// 12 chains of 8 lanes (16 ymm registers), AVX-512 24 chains of 16, the portable level 12 of 4.
public enum PeakFLOPS {
    /// GFLOPS of the in-register loop on `threads` threads (best of `repeats`).
    public static func measure(threads: Int, seconds: Double = 0.3, repeats: Int = 3) -> Double {
        let iterations = 1_000_000
        let flopsPerCall = Double(iterations) * Double(st_peak_flops_per_iteration())
        var best = 0.0
        let pool = ThreadPool.sized(threads)
        for _ in 0..<repeats {
            var calls = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            repeat {
                pool.parallelFor(threads) { _ in _ = st_peak_loop(iterations) }
                calls += 1
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            } while elapsed < seconds
            best = max(best, flopsPerCall * Double(calls * threads) / elapsed / 1e9)
        }
        return best
    }
}
