import CSideTuneKernels

/// The precision of a linear layer's products (its forward, dx and dW GEMMs).
/// - `float32`: f32 operands and sums.
/// - `bfloat16`: mixed precision, as autocast on GPUs: the operands are rounded to bf16 (to nearest
///   even) and the products summed in f32 (bf16_dot.h). With AVX512_BF16 a vdpbf16ps does twice
///   the multiply-adds of an f32 FMA. Outputs, gradients, weights and optimizer state stay f32.
public enum MatmulPrecision: String, Codable, Sendable, CaseIterable {
    case float32 = "f32", bfloat16 = "bf16"

    /// Where bf16 products run at their full rate (vdpbf16ps); elsewhere the kernel is a plain loop.
    public static let bfloat16IsNative: Bool = sidetune_bf16dot_native()

    /// The precision `Tensor.linear` uses for layers recorded inside `Tensor.withMatmulPrecision`
    /// (a task-local, so concurrent tests do not see each other's); backward uses the forward's.
    @TaskLocal static var current: MatmulPrecision = .float32
}

extension Tensor {
    /// Runs `body` with the linear layers it records using `precision` (the side network's forward).
    public static func withMatmulPrecision<R>(_ precision: MatmulPrecision, _ body: () throws -> R) rethrows -> R {
        try MatmulPrecision.$current.withValue(precision) { try body() }
    }
}

/// `gemm` (f32) or `gemmBFloat16Products`, as `precision` says: a linear layer's three products.
func linearGEMM(_ precision: MatmulPrecision, _ s: GEMMShape, _ a: GEMMOperand, lda: Int, _ b: GEMMOperand, ldb: Int,
                _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false) {
    switch precision {
    case .float32: gemm(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate)
    case .bfloat16: gemmBFloat16Products(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate)
    }
}

/// C (+)= op(A) op(B) with bf16 products and f32 sums: both operands are packed as bf16 pairs along
/// k (a bf16 A stored untransposed with even k and stride is read in place), then
/// `sidetune_bf16dot_gemm` runs on row blocks of C in parallel. Packing costs O(mk + kn) against
/// the product's O(mnk): at the side networks' k and n of 48 or more it is a few percent.
/// `plainKernel` runs the reference loop instead of the vdpbf16ps kernel (tests).
public func gemmBFloat16Products(_ s: GEMMShape, _ a: GEMMOperand, lda: Int, _ b: GEMMOperand, ldb: Int,
                                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false,
                                 pool: ThreadPool = .shared, plainKernel: Bool = false) {
    let m = s.m, n = s.n, k = s.k
    if m == 0 || n == 0 { return }
    let pairs = (k + 1) / 2
    if k == 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    func raw(_ x: GEMMOperand) -> (UnsafeRawPointer, Bool) {
        switch x {
        case .f32(let p): return (UnsafeRawPointer(p), false)
        case .bf16(let p): return (UnsafeRawPointer(p), true)
        }
    }
    let (pa, aIsBF16) = raw(a), (pb, bIsBF16) = raw(b)
    // Scratch for the packed operands, tagged in the ledger as the activations they are made from.
    var scratch: [Tensor] = []
    func buffer(_ count: Int) -> UnsafeMutablePointer<UInt32> {
        let t = Tensor(shape: [max(count, 1)])
        scratch.append(t)
        return UnsafeMutableRawPointer(t.data).assumingMemoryBound(to: UInt32.self)
    }
    // A(i, p) at ap[i * sam + p * sap].
    let ap: UnsafePointer<UInt32>, sam: Int, sap: Int
    if !s.transA {
        if aIsBF16 && k % 2 == 0 && lda % 2 == 0 {
            ap = pa.assumingMemoryBound(to: UInt32.self); sam = lda / 2; sap = 1
        } else {
            let out = buffer(m * pairs)
            pool.parallelChunks(m, minChunk: 64) { r in
                sidetune_bf16_pairs_along_rows(pa + r.lowerBound * lda * (aIsBF16 ? 2 : 4), aIsBF16, lda, r.count, k,
                                               out + r.lowerBound * pairs, pairs)
            }
            ap = UnsafePointer(out); sam = pairs; sap = 1
        }
    } else {
        let out = buffer(pairs * m)
        pool.parallelChunks(pairs, minChunk: 32) { r in
            sidetune_bf16_pairs_across_rows(pa, aIsBF16, lda, k, m, r.lowerBound, r.upperBound, out, m)
        }
        ap = UnsafePointer(out); sam = 1; sap = m
    }
    // B(p, j) at bp[p * n + j].
    let bp = buffer(pairs * n)
    if !s.transB {
        pool.parallelChunks(pairs, minChunk: 32) { r in
            sidetune_bf16_pairs_across_rows(pb, bIsBF16, ldb, k, n, r.lowerBound, r.upperBound, bp, n)
        }
    } else {
        precondition(!bIsBF16, "bf16 products: a transposed B (a weight) must be f32")
        sidetune_bf16_pairs_along_rows_transposed(pb.assumingMemoryBound(to: Float.self), ldb, n, k, bp, n)
    }
    let threads = gemmThreads(s, pool: pool, singleThreaded: false)
    let blocks = (m + 7) / 8
    let kernel = plainKernel ? sidetune_bf16dot_gemm_plain : sidetune_bf16dot_gemm
    withExtendedLifetime(scratch) {
        if threads == 1 || blocks == 1 {
            kernel(m, n, pairs, ap, sam, sap, bp, n, c, ldc, accumulate)
        } else {
            pool.parallelChunks(blocks) { r in
                let i0 = 8 * r.lowerBound, i1 = min(m, 8 * r.upperBound)
                kernel(i1 - i0, n, pairs, ap + i0 * sam, sam, sap, bp, n, c + i0 * ldc, ldc, accumulate)
            }
        }
    }
}
