/// Matrix products with autograd. Transposes are flags handled by the GEMM's packing, so
/// backward never materialises a transposed copy:
///   C = op(A) op(B):  dA = dC op(B)^T (or its transpose), dB = op(A)^T dC (or its transpose).
extension Tensor {
    /// [..., M, K] x [K, N] -> [..., M, N] (leading axes of `self` are flattened into M), or a
    /// batched product when `other` has the same leading axes: [..., M, K] x [..., K, N].
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) -> Tensor {
        Tensor.matmul(self, other, transposeA: transposeSelf, transposeB: transposeOther)
    }

    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank >= 2, got \(a.shape) and \(b.shape)")
        if b.rank == 2 && !(transposeA && a.rank > 2) {
            return linearProduct(a, b, transposeA: transposeA, transposeB: transposeB)
        }
        return batchedProduct(a, b, transposeA: transposeA, transposeB: transposeB)
    }

    /// a [..., M, K] (flattened to rows) times a 2-D b.
    static func linearProduct(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> Tensor {
        let rowsA = a.shape[a.rank - 2], colsA = a.shape[a.rank - 1]
        let lead = a.count / max(rowsA * colsA, 1)
        let m = transposeA ? colsA : lead * rowsA, k = transposeA ? rowsA : colsA
        let (kb, n) = transposeB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        precondition(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") x \(b.shape)\(transposeB ? "ᵀ" : "")")
        let outShape = transposeA ? [m, n] : Array(a.shape.dropLast()) + [n]
        let out = Tensor(shape: outShape)
        let bb = b.dtype == .float32 ? b : b.float32()
        let precision = MatmulPrecision.current
        linearGEMM(precision, GEMMShape(m: m, n: n, k: k, transA: transposeA, transB: transposeB), .f32(a.data), lda: colsA,
                   .f32(bb.data), ldb: b.shape[1], out.data, ldc: n)
        // dA reads B and dB reads A: each kept only where the other's gradient is wanted.
        let needA = a.requiresGrad, needB = b.requiresGrad
        let savedA = saved(a, if: needB), savedB = saved(b, if: needA) // b as stored, widened again if need be
        let shapeA = a.shape, shapeB = b.shape
        return record(out, "matmul", [a, b]) { g in
            var ga: Tensor?, gb: Tensor?
            if needA, let b = savedB {
                let bb = b.dtype == .float32 ? b : b.float32()
                // op(A) = G op(B)^T; if A was transposed, A = (G op(B)^T)^T = op(B) G^T.
                ga = Tensor(shape: shapeA)
                if !transposeA {
                    linearGEMM(precision, GEMMShape(m: m, n: k, k: n, transA: false, transB: !transposeB), .f32(g.data), lda: n,
                               .f32(bb.data), ldb: shapeB[1], ga!.data, ldc: k)
                } else {
                    linearGEMM(precision, GEMMShape(m: k, n: m, k: n, transA: transposeB, transB: true), .f32(bb.data),
                               lda: shapeB[1], .f32(g.data), ldb: n, ga!.data, ldc: m)
                }
            }
            if needB, let a = savedA {
                // op(B) = op(A)^T G; if B was transposed, B = G^T op(A).
                gb = Tensor(shape: shapeB)
                if !transposeB {
                    linearGEMM(precision, GEMMShape(m: k, n: n, k: m, transA: !transposeA, transB: false), .f32(a.data),
                               lda: colsA, .f32(g.data), ldb: n, gb!.data, ldc: n)
                } else {
                    linearGEMM(precision, GEMMShape(m: n, n: k, k: m, transA: true, transB: transposeA), .f32(g.data), lda: n,
                               .f32(a.data), ldb: colsA, gb!.data, ldc: k)
                }
            }
            return [ga, gb]
        }
    }

    /// x W^T + b for x [..., in], weight [out, in] (PyTorch layout), bias [out] -> [..., out].
    /// Fused: the output starts as the bias rows and the GEMM accumulates into it, so no second
    /// pass and no intermediate tensor. Backward: dx = g W, dW = g^T x, db = column sums of g.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor) -> Tensor {
        precondition(weight.rank == 2 && bias.count == weight.shape[0] && x.shape.last == weight.shape[1],
                     "linear: x \(x.shape), weight \(weight.shape), bias \(bias.shape)")
        if x.dtype == .bfloat16 { return linearBFloat16Input(x, weight: weight, bias: bias) }
        return linear(x, reading: .f32(x.data), weight: weight, bias: bias, op: "linear")
    }

    /// `linear`'s body with x's values read through `xs` (x's storage as f32, or as bf16 for a
    /// constant x: the feature cache's taps; see `linearBFloat16Input`).
    static func linear(_ x: Tensor, reading xs: GEMMOperand, weight: Tensor, bias: Tensor, op: String) -> Tensor {
        let n = weight.shape[0], k = weight.shape[1], m = x.count / max(k, 1)
        let out = Tensor(shape: Array(x.shape.dropLast()) + [n])
        let w = weight.dtype == .float32 ? weight : weight.float32()
        let precision = MatmulPrecision.current
        out.fillRows(with: bias)
        linearGEMM(precision, GEMMShape(m: m, n: n, k: k, transA: false, transB: true), xs, lda: k, .f32(w.data), ldb: k,
                   out.data, ldc: n, accumulate: true)
        let grads = LinearGradients(x: x, reading: xs, weight: weight, precision: precision)
        let needBias = bias.requiresGrad, biasShape = bias.shape
        return record(out, op, [x, weight, bias]) { g in
            let (gx, gw) = grads(g)
            return [gx, gw, needBias ? g.columnSums(rows: m, shape: biasShape) : nil]
        }
    }

    /// Sets each of this [..., n] tensor's rows to `row` (n values), in parallel.
    func fillRows(with row: Tensor) {
        let n = row.count, m = count / max(n, 1), po = data, pb = UnsafePointer(row.data)
        ThreadPool.shared.parallelChunks(m, minChunk: max(1, (1 << 14) / max(n, 1))) { r in
            for i in r { (po + i * n).update(from: pb, count: n) }
        }
    }

    /// Sums of the columns of this tensor read as [rows, n], shaped `shape` (n elements): a bias's gradient.
    func columnSums(rows m: Int, shape: [Int]) -> Tensor {
        let s = Tensor.zeros(shape), n = s.count
        for row in 0..<m { axpy(n, 1, data + row * n, s.data) }
        return s
    }

    /// [B..., M, K] x [B..., K, N] with identical leading axes; each product single-threaded and
    /// the batch spread over the pool (attention's many small products).
    static func batchedProduct(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> Tensor {
        precondition(a.rank == b.rank && a.shape.dropLast(2) == b.shape.dropLast(2),
                     "batched matmul needs equal leading axes: \(a.shape) x \(b.shape)")
        let r = a.rank
        let (ra, ca, rb, cb) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 2], b.shape[r - 1])
        let (m, k) = transposeA ? (ca, ra) : (ra, ca)
        let (kb, n) = transposeB ? (cb, rb) : (rb, cb)
        precondition(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") x \(b.shape)\(transposeB ? "ᵀ" : "")")
        let batch = a.count / max(ra * ca, 1)
        let out = Tensor(shape: Array(a.shape.dropLast(2)) + [m, n])
        batchedGEMM(batch, GEMMShape(m: m, n: n, k: k, transA: transposeA, transB: transposeB),
                    a.data, ra * ca, ca, b.data, rb * cb, cb, out.data, m * n, n)
        let needA = a.requiresGrad, needB = b.requiresGrad
        let savedA = saved(a, if: needB), savedB = saved(b, if: needA)
        let shapeA = a.shape, shapeB = b.shape
        return record(out, "bmm", [a, b]) { g in
            var ga: Tensor?, gb: Tensor?
            if needA, let b = savedB {
                ga = Tensor(shape: shapeA)
                if !transposeA {
                    batchedGEMM(batch, GEMMShape(m: m, n: k, k: n, transA: false, transB: !transposeB),
                                g.data, m * n, n, b.data, rb * cb, cb, ga!.data, ra * ca, ca)
                } else {
                    batchedGEMM(batch, GEMMShape(m: k, n: m, k: n, transA: transposeB, transB: true),
                                b.data, rb * cb, cb, g.data, m * n, n, ga!.data, ra * ca, ca)
                }
            }
            if needB, let a = savedA {
                gb = Tensor(shape: shapeB)
                if !transposeB {
                    batchedGEMM(batch, GEMMShape(m: k, n: n, k: m, transA: !transposeA, transB: false),
                                a.data, ra * ca, ca, g.data, m * n, n, gb!.data, rb * cb, cb)
                } else {
                    batchedGEMM(batch, GEMMShape(m: n, n: k, k: m, transA: true, transB: transposeA),
                                g.data, m * n, n, a.data, ra * ca, ca, gb!.data, rb * cb, cb)
                }
            }
            return [ga, gb]
        }
    }
}

/// `batch` independent GEMMs with fixed element strides between matrices.
public func batchedGEMM(_ batch: Int, _ s: GEMMShape, _ a: UnsafePointer<Float>, _ strideA: Int, _ lda: Int,
                        _ b: UnsafePointer<Float>, _ strideB: Int, _ ldb: Int,
                        _ c: UnsafeMutablePointer<Float>, _ strideC: Int, _ ldc: Int, accumulate: Bool = false) {
    if batch == 1 {
        gemm(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate)
        return
    }
    ThreadPool.shared.parallelChunks(batch) { r in
        for i in r {
            gemm(s, a + i * strideA, lda: lda, b + i * strideB, ldb: ldb, c + i * strideC, ldc: ldc,
                 accumulate: accumulate, singleThreaded: true)
        }
    }
}

/// A linear layer's backward, dx = g W and dW = g^T x, holding only what those read: the weight
/// when x needs a gradient (as stored: a non-f32 weight is widened again in backward rather than
/// kept widened), and x when the weight needs one (read through `xs`, x's storage as f32 or bf16;
/// an f32 x is rounded to bf16 under `--activation-bits` 16 or fewer). Shared by `linear` and
/// `linear(_:weight:bias:residuals:)`.
struct LinearGradients {
    let needX: Bool, needW: Bool
    let xShape: [Int], weightShape: [Int]
    let weight: Tensor?, x: Tensor?, xs: GEMMOperand?
    let precision: MatmulPrecision

    init(x: Tensor, reading xs: GEMMOperand, weight: Tensor, precision: MatmulPrecision) {
        // (Nothing is kept, nor rounded, when nothing is recorded.)
        needX = x.requiresGrad && Autograd.isEnabled
        needW = weight.requiresGrad && Autograd.isEnabled
        xShape = x.shape
        weightShape = weight.shape
        self.weight = saved(weight, if: needX)
        if needW && x.dtype == .float32 && ActivationBits.current.roundsToBFloat16 {
            (self.xs, self.x) = SavedTensor(x).operand
        } else {
            self.x = saved(x, if: needW)
            self.xs = needW ? xs : nil
        }
        self.precision = precision
    }

    func callAsFunction(_ g: Tensor) -> (x: Tensor?, weight: Tensor?) {
        let n = weightShape[0], k = weightShape[1], m = xShape.reduce(1, *) / max(k, 1)
        var gx: Tensor?, gw: Tensor?
        if needX, let weight {
            let w = weight.dtype == .float32 ? weight : weight.float32()
            gx = Tensor(shape: xShape)
            linearGEMM(precision, GEMMShape(m: m, n: k, k: n), .f32(g.data), lda: n, .f32(w.data), ldb: k, gx!.data, ldc: k)
        }
        if needW, let xs {
            gw = Tensor(shape: weightShape)
            withExtendedLifetime(x) {
                linearGEMM(precision, GEMMShape(m: n, n: k, k: m, transA: true), .f32(g.data), lda: n, xs, ldb: k, gw!.data,
                           ldc: k)
            }
        }
        return (gx, gw)
    }
}
