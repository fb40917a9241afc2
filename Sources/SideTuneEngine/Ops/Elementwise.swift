import CSideTuneKernels
import Foundation

// Elementwise ops with NumPy broadcasting. Each op: forward kernel, then its derivative rule.
// Gradients of broadcast inputs are summed back to the input's shape (`sumToShape`), in one place.

/// The broadcast shape of two shapes (NumPy rules), or a precondition failure naming both.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
    let r = max(a.count, b.count)
    var out = [Int](repeating: 0, count: r)
    for i in 0..<r {
        let da = i < r - a.count ? 1 : a[i - (r - a.count)]
        let db = i < r - b.count ? 1 : b[i - (r - b.count)]
        precondition(da == db || da == 1 || db == 1, "shapes \(a) and \(b) do not broadcast")
        out[i] = max(da, db)
    }
    return out
}

enum BinaryKind { case add, sub, mul, div }

/// Computes out = a (op) b with broadcasting. Fast paths: equal shapes, scalar b, b broadcast over
/// leading axes (bias rows); otherwise a strided loop with a vectorised last axis.
func broadcastBinary(_ a: Tensor, _ b: Tensor, _ kind: BinaryKind) -> Tensor {
    let shape = broadcastShape(a.shape, b.shape)
    let out = Tensor(shape: shape)
    let n = out.count
    let pa = a.data, pb = b.data, po = out.data
    @inline(__always) func f(_ x: V16, _ y: V16) -> V16 {
        switch kind { case .add: x + y; case .sub: x - y; case .mul: x * y; case .div: x / y }
    }
    @inline(__always) func fs(_ x: Float, _ y: Float) -> Float {
        switch kind { case .add: x + y; case .sub: x - y; case .mul: x * y; case .div: x / y }
    }
    if a.shape == b.shape {
        switch kind {
        case .add: mapBinary(n, pa, pb, po) { $0 + $1 }
        case .sub: mapBinary(n, pa, pb, po) { $0 - $1 }
        case .mul: mapBinary(n, pa, pb, po) { $0 * $1 }
        case .div: mapBinary(n, pa, pb, po) { $0 / $1 }
        }
        return out
    }
    if a.count == n && b.count == 1 {
        let s = V16(repeating: pb[0])
        switch kind {
        case .add: mapUnary(n, pa, po) { $0 + s }
        case .sub: mapUnary(n, pa, po) { $0 - s }
        case .mul: mapUnary(n, pa, po) { $0 * s }
        case .div: mapUnary(n, pa, po) { $0 / s }
        }
        return out
    }
    if a.count == n && b.count > 0 && b.rank <= a.rank && Array(a.shape.suffix(b.rank)) == b.shape {
        // b repeats over rows of a: [rows, cols] (op) [cols].
        let cols = b.count, rows = n / cols
        ThreadPool.shared.parallelChunks(rows, minChunk: max(1, (1 << 15) / max(cols, 1))) { r in
            for row in r {
                let x = pa + row * cols, o = po + row * cols
                var j = 0
                while j + 16 <= cols { storeV(o + j, f(loadV(x + j), loadV(pb + j))); j += 16 }
                while j < cols { o[j] = fs(x[j], pb[j]); j += 1 }
            }
        }
        return out
    }
    // General strided path.
    let r = shape.count
    let sa = broadcastStrides(a.shape, to: shape), sb = broadcastStrides(b.shape, to: shape)
    let last = r == 0 ? 1 : shape[r - 1]
    let outer = last == 0 ? 0 : n / last
    let la = r == 0 ? 0 : sa[r - 1], lb = r == 0 ? 0 : sb[r - 1]
    var idx = [Int](repeating: 0, count: max(r - 1, 0))
    var oa = 0, ob = 0
    for o in 0..<outer {
        let dst = po + o * last
        if la == 1 && lb == 1 {
            for j in 0..<last { dst[j] = fs(pa[oa + j], pb[ob + j]) }
        } else {
            for j in 0..<last { dst[j] = fs(pa[oa + j * la], pb[ob + j * lb]) }
        }
        // Advance the multi-index over the leading axes.
        var d = r - 2
        while d >= 0 {
            idx[d] += 1; oa += sa[d]; ob += sb[d]
            if idx[d] < shape[d] { break }
            oa -= sa[d] * shape[d]; ob -= sb[d] * shape[d]; idx[d] = 0
            d -= 1
        }
    }
    return out
}

/// Element strides of `shape` viewed as broadcast to `target` (0 on broadcast axes).
func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    let r = target.count, off = r - shape.count
    var strides = [Int](repeating: 0, count: r)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i + off] = shape[i] == 1 ? 0 : s
        s *= shape[i]
    }
    return strides
}

/// Sums `g` over the axes that broadcasting added or stretched, giving a tensor of `shape`.
public func sumToShape(_ g: Tensor, _ shape: [Int]) -> Tensor {
    if g.shape == shape { return g }
    let r = g.rank, off = r - shape.count
    var axes: [Int] = Array(0..<off)
    for i in 0..<shape.count where shape[i] == 1 && g.shape[i + off] != 1 { axes.append(i + off) }
    let s = noGrad { g.sum(axes: axes, keepDims: true) }
    return s.reshaped(shape)
}

extension Tensor {
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastBinary(a, b, .add)
        let needA = a.requiresGrad, needB = b.requiresGrad, shapeA = a.shape, shapeB = b.shape
        return record(out, "add", [a, b]) { g in
            [needA ? sumToShape(g, shapeA) : nil, needB ? sumToShape(g, shapeB) : nil]
        }
    }

    public static func - (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastBinary(a, b, .sub)
        let needA = a.requiresGrad, needB = b.requiresGrad, shapeA = a.shape, shapeB = b.shape
        return record(out, "sub", [a, b]) { g in
            [needA ? sumToShape(g, shapeA) : nil, needB ? sumToShape(-g, shapeB) : nil]
        }
    }

    public static func * (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastBinary(a, b, .mul)
        // da reads b and db reads a.
        let needA = a.requiresGrad, needB = b.requiresGrad, shapeA = a.shape, shapeB = b.shape
        let savedA = saved(a, if: needB), savedB = saved(b, if: needA)
        return record(out, "mul", [a, b]) { g in
            [savedB.map { sumToShape(g * $0, shapeA) }, savedA.map { sumToShape(g * $0, shapeB) }]
        }
    }

    public static func / (a: Tensor, b: Tensor) -> Tensor {
        let out = broadcastBinary(a, b, .div)
        // Both gradients read b; db also reads the output (never `out` itself: its node would own
        // it, a cycle). a is never kept.
        let needA = a.requiresGrad, needB = b.requiresGrad, shapeA = a.shape, shapeB = b.shape
        let y = saved(out.detach(), if: needB)
        return record(out, "div", [a, b]) { g in
            let ga = needA ? sumToShape(g / b, shapeA) : nil
            // d(a/b)/db = -a / b^2 = -out / b
            let gb = y.map { sumToShape(-(g * $0 / b), shapeB) }
            return [ga, gb]
        }
    }

    public static prefix func - (a: Tensor) -> Tensor { a * -1 }

    public static func + (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: s) }
    public static func - (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: -s) }
    public static func * (a: Tensor, s: Float) -> Tensor { a.affine(scale: s, shift: 0) }
    public static func / (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1 / s, shift: 0) }
    public static func * (s: Float, a: Tensor) -> Tensor { a.affine(scale: s, shift: 0) }
    public static func + (s: Float, a: Tensor) -> Tensor { a.affine(scale: 1, shift: s) }
    public static func - (s: Float, a: Tensor) -> Tensor { a.affine(scale: -1, shift: s) }

    /// scale * x + shift.
    public func affine(scale: Float, shift: Float) -> Tensor {
        let out = Tensor(shape: shape)
        let vs = V16(repeating: scale), vb = V16(repeating: shift)
        mapUnary(count, data, out.data) { $0 * vs + vb }
        return record(out, "affine", [self]) { g in [g.affine(scale: scale, shift: 0)] }
    }

    /// Elementwise op with a derivative that is a function of (x, y): grad_x = g * d(x, y). The
    /// kernels are C (`st_unary_forward`, `st_unary_backward`), per chunk of the threads' split.
    func unary(_ op: String, _ kind: UnaryKind) -> Tensor {
        let out = Tensor(shape: shape)
        let px = UnsafePointer(data), po = out.data
        if requiresGrad && Autograd.isEnabled, let bits = ActivationCodes.bits(for: kind, at: .current) {
            return unaryCoded(op, kind, bits: bits, out)
        }
        parallelElementwise(count) { lo, hi in st_unary_forward(kind.c, hi - lo, px + lo, po + lo) }
        // The derivative reads x or y = f(x), never both: only that one is kept (the output's bytes
        // without its node; capturing `out` would be a cycle), x rounded to bf16 at 16 bits. The
        // kernel is handed it as both.
        let keptX = kind.derivativeReadsOutput || !(requiresGrad && Autograd.isEnabled) ? nil : SavedTensor(self)
        let keptY = kind.derivativeReadsOutput ? out.detach() : nil
        return record(out, op, [self]) { g in
            let kept = keptY ?? keptX!.float32
            let d = Tensor(shape: kept.shape)
            let pk = UnsafePointer(kept.data), pg = UnsafePointer(g.data), pd = d.data
            parallelElementwise(kept.count) { lo, hi in st_unary_backward(kind.c, hi - lo, pk + lo, pk + lo, pg + lo, pd + lo) }
            return [d]
        }
    }

    /// `unary` keeping `bits`-bit codes of f'(x) for backward in place of x (`ActivationCodes`):
    /// the forward computes y and the codes in one pass; backward multiplies g by the codes' levels.
    private func unaryCoded(_ op: String, _ kind: UnaryKind, bits: Int, _ out: Tensor) -> Tensor {
        let codes = ActivationCodes(kind: kind, bits: bits, count: count)
        let px = UnsafePointer(data), po = out.data, pc = codes.bytes, k = kind.c, b = Int32(bits)
        // Chunks start at multiples of 16 elements, so at whole bytes of codes.
        parallelElementwise(count) { lo, hi in st_unary_forward_coded(k, b, hi - lo, px + lo, po + lo, pc + lo * bits / 8) }
        return record(out, op, [self]) { g in
            let d = Tensor(shape: g.shape)
            let pg = UnsafePointer(g.data), pd = d.data, pc = UnsafePointer(codes.bytes)
            parallelElementwise(codes.count) { lo, hi in
                st_unary_backward_coded(k, b, hi - lo, pc + lo * bits / 8, pg + lo, pd + lo)
            }
            return [d]
        }
    }

    public func exp() -> Tensor { unary("exp", .exp) }

    public func log() -> Tensor {
        let out = Tensor(shape: shape)
        for i in 0..<count { out.data[i] = Foundation.log(data[i]) }
        return record(out, "log", [self]) { [self] g in [g / self.detach()] }
    }

    public func sqrt() -> Tensor { unary("sqrt", .sqrt) }
    public func tanh() -> Tensor { unary("tanh", .tanh) }
    public func sigmoid() -> Tensor { unary("sigmoid", .sigmoid) }
    public func relu() -> Tensor { unary("relu", .relu) }
    public func square() -> Tensor { unary("square", .square) }

    /// SiLU (swish): x * sigmoid(x).
    public func silu() -> Tensor {
        unary("silu", .silu)
    }

    /// GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)) (BERT's "gelu").
    public func gelu() -> Tensor {
        unary("gelu", .gelu)
    }

    /// GELU, tanh approximation (GPT-2's "gelu_new").
    public func geluTanh() -> Tensor {
        unary("gelu_tanh", .geluTanh)
    }
}

extension Tensor {
    /// scale * (p_1 + ... + p_k) for same-shape tensors, in one pass (no intermediate sums).
    /// Backward: each part that needs it receives scale * g.
    public static func sum(_ parts: [Tensor], scale: Float = 1) -> Tensor {
        precondition(!parts.isEmpty, "sum of no tensors")
        for p in parts { precondition(p.shape == parts[0].shape, "sum: shapes \(p.shape) and \(parts[0].shape) differ") }
        let out = Tensor(shape: parts[0].shape)
        let ps = parts.map { UnsafePointer($0.data) }, po = out.data, vs = V16(repeating: scale)
        ps.withUnsafeBufferPointer { src in
            parallelElementwise(out.count) { lo, hi in
                var i = lo
                while i + 16 <= hi {
                    var v = V16()
                    for p in src { v += loadV(p + i) }
                    storeV(po + i, v * vs)
                    i += 16
                }
                while i < hi {
                    var v: Float = 0
                    for p in src { v += p[i] }
                    po[i] = v * scale
                    i += 1
                }
            }
        }
        let needs = parts.map(\.requiresGrad)
        return record(out, "sum_n", parts) { g in
            let gs = scale == 1 ? g : g * scale
            return needs.map { $0 ? gs : nil }
        }
    }
}

/// The elementwise functions the C kernels compute, with their derivatives in terms of x and
/// y = f(x) (rowkernels.h's `st_unary`).
public enum UnaryKind: Sendable {
    case exp, sqrt, tanh, sigmoid, relu, square, silu
    /// GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)).
    case gelu
    /// GELU, tanh approximation: 0.5 x (1 + tanh(c (x + k x^3))), c = sqrt(2 / pi), k = 0.044715.
    case geluTanh
    case identity

    /// Whether f' is a function of y = f(x) (so backward keeps y), rather than of x.
    var derivativeReadsOutput: Bool {
        switch self {
        case .exp, .sqrt, .tanh, .sigmoid: true
        case .relu, .square, .silu, .gelu, .geluTanh, .identity: false
        }
    }

    var c: Int32 {
        switch self {
        case .exp: Int32(ST_UNARY_EXP.rawValue)
        case .sqrt: Int32(ST_UNARY_SQRT.rawValue)
        case .tanh: Int32(ST_UNARY_TANH.rawValue)
        case .sigmoid: Int32(ST_UNARY_SIGMOID.rawValue)
        case .relu: Int32(ST_UNARY_RELU.rawValue)
        case .square: Int32(ST_UNARY_SQUARE.rawValue)
        case .silu: Int32(ST_UNARY_SILU.rawValue)
        case .gelu: Int32(ST_UNARY_GELU.rawValue)
        case .geluTanh: Int32(ST_UNARY_GELU_TANH.rawValue)
        case .identity: Int32(ST_UNARY_IDENTITY.rawValue)
        }
    }
}

extension Tensor {
    /// a * w + b * (1 - w) for same-shape a and b and a one-element weight w (LST's gates), one pass
    /// forward and one backward. The broadcast ops it replaces made nine passes over [N, d], each
    /// too small to split over threads. The forward rounds as they did, (a w) + (b (1 - w)).
    /// Backward: ga = g w, gb = g (1 - w), gw = sum of g (a - b), summed in fixed chunks so the
    /// result does not depend on the thread count.
    public static func mix(_ a: Tensor, _ b: Tensor, weight w: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "mix: shapes \(a.shape) and \(b.shape) differ")
        precondition(w.count == 1, "mix: the weight must have one element, got shape \(w.shape)")
        let wv = w.data[0], ow = 1 - wv
        let out = Tensor(shape: a.shape)
        let n = out.count, pa = a.data, pb = b.data, po = out.data
        let vw = V16(repeating: wv), vow = V16(repeating: ow)
        parallelElementwise(n) { lo, hi in
            var i = lo
            while i + 16 <= hi { storeV(po + i, loadV(pa + i) * vw + loadV(pb + i) * vow); i += 16 }
            while i < hi { po[i] = pa[i] * wv + pb[i] * ow; i += 1 }
        }
        // dw reads a and b (kept only when w needs a gradient); da and db read only w's value.
        let needA = a.requiresGrad, needB = b.requiresGrad, needW = w.requiresGrad, shape = a.shape, wShape = w.shape
        let kept = needW ? (a, b) : nil
        return record(out, "mix", [a, b, w]) { g in
            let ga = needA ? Tensor(shape: shape) : nil, gb = needB ? Tensor(shape: shape) : nil
            let chunk = 4096, chunks = (n + chunk - 1) / chunk
            var partial = [Float](repeating: 0, count: needW ? chunks : 0)
            let pa = kept.map { UnsafePointer($0.0.data) }, pb = kept.map { UnsafePointer($0.1.data) }
            let pg = g.data, pga = ga?.data, pgb = gb?.data
            partial.withUnsafeMutableBufferPointer { part in
                let pp = part.baseAddress
                ThreadPool.shared.parallelFor(chunks) { c in
                    let lo = c * chunk, hi = min(n, lo + chunk)
                    var acc = V16(), tail: Float = 0
                    var i = lo
                    while i + 16 <= hi {
                        let gv = loadV(pg + i)
                        if let pga { storeV(pga + i, gv * vw) }
                        if let pgb { storeV(pgb + i, gv * vow) }
                        if let pa, let pb { acc += gv * (loadV(pa + i) - loadV(pb + i)) }
                        i += 16
                    }
                    while i < hi {
                        if let pga { pga[i] = pg[i] * wv }
                        if let pgb { pgb[i] = pg[i] * ow }
                        if let pa, let pb { tail += pg[i] * (pa[i] - pb[i]) }
                        i += 1
                    }
                    pp?[c] = acc.sum() + tail
                }
            }
            let gw = needW ? Tensor([partial.reduce(0, +)], shape: wShape) : nil
            return withExtendedLifetime(kept) { [ga, gb, gw] }
        }
    }
}
