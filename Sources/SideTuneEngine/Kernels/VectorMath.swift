import CSideTuneKernels
import Foundation

/// SIMD building blocks for elementwise kernels: 16-lane loads and stores, and vectorised exp,
/// erf, tanh (the transcendental calls in libm are scalar and would dominate GELU and softmax).
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

// The 16-lane transcendentals are C (Sources/CSideTuneKernels/include/vecmath.h): the same
// formulas in Swift SIMD compiled to mask shuffles over four xmm registers and out-of-line calls.

/// exp(x), Cephes-style: 2^n * p(r) with r = x - n ln2 split in two parts; about 2 ulp.
@inline(__always) public func vexp(_ x: V16) -> V16 { st_exp16(x) }

/// Scalar exp: libm's expf (running the 16-lane polynomial for one value cost ~10x more, and showed
/// up as 18% of decoding time in attention's per-score loop).
@inline(__always) public func vexp(_ x: Float) -> Float { Foundation.exp(x) }

/// erf(x) as a rational function x P(x^2) / Q(x^2) on [-4, 4] (Eigen's single-precision fit).
@inline(__always) public func verf(_ x: V16) -> V16 { st_erf16(x) }

/// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, absolute error ~1e-7.
@inline(__always) public func vtanh(_ x: V16) -> V16 { st_tanh16(x) }

@inline(__always) public func vsigmoid(_ x: V16) -> V16 { st_sigmoid16(x) }

/// GELU, exact form, and its derivative.
@inline(__always) public func vgelu(_ x: V16) -> V16 { st_gelu16(x) }
@inline(__always) public func vgeluDerivative(_ x: V16) -> V16 { st_gelu_derivative16(x) }

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
