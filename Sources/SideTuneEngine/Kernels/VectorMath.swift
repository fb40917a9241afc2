import CSideTuneKernels
import Foundation

/// SIMD building blocks for elementwise loops: 16-lane loads and stores, a tree sum.
public typealias V16 = SIMD16<Float>

@inline(__always) public func loadV(_ p: UnsafePointer<Float>) -> V16 { UnsafeRawPointer(p).loadUnaligned(as: V16.self) }
@inline(__always) public func loadV(_ p: UnsafeMutablePointer<Float>) -> V16 { UnsafeRawPointer(p).loadUnaligned(as: V16.self) }
@inline(__always) public func storeV(_ p: UnsafeMutablePointer<Float>, _ v: V16) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V16.self) }

/// The sum of the lanes as a tree of halves: SIMD's `sum()` adds the 16 lanes one after another
/// (15 dependent scalar adds), which showed in profiles of every short dot product.
@inline(__always) public func hsum(_ v: V16) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

// The transcendental kernels (exp, tanh, GELU, softmax, LayerNorm, ...) are C, compiled per
// instruction set (Sources/CSideTuneKernels/rowkernels.c); these helpers serve the Swift loops
// that only move and add (memory-bound, so the baseline's vectors do).

/// Splits 0..<n into chunks run on the thread pool when n is large enough to pay for it.
@inline(__always)
public func parallelElementwise(_ n: Int, grain: Int = 1 << 15, _ body: (Int, Int) -> Void) {
    if n < 2 * grain || ThreadPool.shared.activeThreads == 1 {
        body(0, n)
        return
    }
    ThreadPool.shared.parallelChunks(n / 16, minChunk: grain / 16) { r in
        body(r.lowerBound * 16, r.upperBound == n / 16 ? n : r.upperBound * 16)
    }
}

/// Applies `f` lane-wise over n floats: dst[i] = f(src[i]).
@inline(__always)
public func mapUnary(_ n: Int, _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ f: (V16) -> V16) {
    parallelElementwise(n) { lo, hi in
        var i = lo
        while i + 16 <= hi { storeV(dst + i, f(loadV(src + i))); i += 16 }
        if i < hi {
            var tmp = V16()
            for j in 0..<(hi - i) { tmp[j] = src[i + j] }
            let r = f(tmp)
            for j in 0..<(hi - i) { dst[i + j] = r[j] }
        }
    }
}

/// dst[i] = f(a[i], b[i]) over n floats.
@inline(__always)
public func mapBinary(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>,
                      _ f: (V16, V16) -> V16) {
    parallelElementwise(n) { lo, hi in
        var i = lo
        while i + 16 <= hi { storeV(dst + i, f(loadV(a + i), loadV(b + i))); i += 16 }
        if i < hi {
            var ta = V16(), tb = V16()
            for j in 0..<(hi - i) { ta[j] = a[i + j]; tb[j] = b[i + j] }
            let r = f(ta, tb)
            for j in 0..<(hi - i) { dst[i + j] = r[j] }
        }
    }
}
