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

/// exp(x), Cephes-style: 2^n * p(r) with r = x - n ln2 split in two parts; about 2 ulp.
@inline(__always) public func vexp(_ x: V16) -> V16 {
    // Clamp and round with plain lane-wise selects and the 1.5 * 2^23 trick: `clamped` and
    // SIMD16<Int32>(_:rounding:) are generic and were not vectorised (they dominated profiles).
    let lo = V16(repeating: -87.33654), hi = V16(repeating: 88.72283)
    var xc = x.replacing(with: lo, where: x .< lo)
    xc = xc.replacing(with: hi, where: xc .> hi)
    let magic = V16(repeating: 12_582_912) // 1.5 * 2^23: adding it rounds to an integer (to nearest even)
    let t = xc * 1.442_695_04 + magic
    let fx = t - magic
    var r = xc - fx * 0.693_359_375
    r = r + fx * 2.121_944_4e-4
    var y = V16(repeating: 1.987_569_15e-4)
    y = y * r + 1.398_199_95e-3
    y = y * r + 8.333_451_9e-3
    y = y * r + 4.166_579_6e-2
    y = y * r + 1.666_666_55e-1
    y = y * r + 5.000_000_1e-1
    y = y * r * r + r + 1
    // t's bit pattern is 0x4B40_0000 + n for the rounded integer n (|n| < 2^22).
    let n = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let scale: V16 = unsafeBitCast((n &+ 127) &<< 23, to: V16.self)
    return y * scale
}

/// Scalar exp: libm's expf (running the 16-lane polynomial for one value cost ~10x more, and showed
/// up as 18% of decoding time in attention's per-score loop).
@inline(__always) public func vexp(_ x: Float) -> Float { Foundation.exp(x) }

/// erf(x) as a rational function x P(x^2) / Q(x^2) on [-4, 4] (Eigen's single-precision fit).
@inline(__always) public func verf(_ a: V16) -> V16 {
    let four = V16(repeating: 4)
    var x = a.replacing(with: -four, where: a .< -four)
    x = x.replacing(with: four, where: x .> four)
    let x2 = x * x
    var p = V16(repeating: -2.726_142_25e-10)
    p = p * x2 + 2.770_681_42e-08
    p = p * x2 - 2.101_024_02e-06
    p = p * x2 - 5.692_506_39e-05
    p = p * x2 - 7.349_906_30e-04
    p = p * x2 - 2.954_599_80e-03
    p = p * x2 - 1.609_603_33e-02
    p = p * x
    var q = V16(repeating: -1.456_607_18e-05)
    q = q * x2 - 2.133_740_55e-04
    q = q * x2 - 1.682_826_97e-03
    q = q * x2 - 7.373_329_17e-03
    q = q * x2 - 1.426_473_90e-02
    return p / q
}

/// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, absolute error ~1e-7.
@inline(__always) public func vtanh(_ x: V16) -> V16 {
    let ax = x.replacing(with: -x, where: x .< 0)
    let e = vexp(-2 * ax)
    let t = (1 - e) / (1 + e)
    return t.replacing(with: -t, where: x .< 0)
}

@inline(__always) public func vsigmoid(_ x: V16) -> V16 { 1 / (1 + vexp(-x)) }

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
