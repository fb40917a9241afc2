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

/// C (+)= op(A) op(B) with bf16 products and f32 sums. Both operands are packed as bf16 pairs
/// along k (`sidetune_bf16_pairs_*`; a bf16 A stored untransposed with even k and stride is read
/// in place), then `sidetune_bf16dot_gemm` runs. Packing costs O(mk + kn) against the product's
/// O(mnk), but it is memory-bound: on two threads it scaled little here (a 48 x 384 weight
/// gradient over 1,056 tokens: 1.25x), while the kernel scaled 2x. On several threads the smaller
/// packed operand is made first on the calling thread and C is split along the other one, each
/// work item packing its own rows of A or columns of B: one hand-off to the pool per product.
/// `plainKernel` runs the reference loop instead (tests).
public func gemmBFloat16Products(_ s: GEMMShape, _ a: GEMMOperand, lda: Int, _ b: GEMMOperand, ldb: Int,
                                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false,
                                 pool: ThreadPool = .shared, plainKernel: Bool = false) {
    let m = s.m, n = s.n, k = s.k
    if m == 0 || n == 0 { return }
    if k == 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    let pairs = (k + 1) / 2
    func raw(_ x: GEMMOperand) -> (UnsafeRawPointer, Bool) {
        switch x {
        case .f32(let p): return (UnsafeRawPointer(p), false)
        case .bf16(let p): return (UnsafeRawPointer(p), true)
        }
    }
    let (pa, aIsBF16) = raw(a), (pb, bIsBF16) = raw(b)
    let aSize = aIsBF16 ? 2 : 4, bSize = bIsBF16 ? 2 : 4
    precondition(!(bIsBF16 && s.transB), "bf16 products: a transposed B (a weight) must be f32")
    // Scratch for the packed operands, tagged in the ledger as the activations they are made from.
    let inPlace = !s.transA && aIsBF16 && k % 2 == 0 && lda % 2 == 0
    let aScratch = Tensor(shape: [inPlace ? 1 : m * pairs]), bScratch = Tensor(shape: [pairs * n])
    // A(i, p) at ap[i * sam + p * sap]; `packA(rows)` fills those rows (nothing when read in place).
    let ap = inPlace ? UnsafeMutablePointer(mutating: pa.assumingMemoryBound(to: UInt32.self))
                     : UnsafeMutableRawPointer(aScratch.data).assumingMemoryBound(to: UInt32.self)
    let (sam, sap) = inPlace ? (lda / 2, 1) : (s.transA ? (1, m) : (pairs, 1))
    func packA(_ r: Range<Int>) {
        if inPlace || r.isEmpty { return }
        if !s.transA {
            sidetune_bf16_pairs_along_rows(pa + r.lowerBound * lda * aSize, aIsBF16, lda, r.count, k, ap + r.lowerBound * pairs, pairs)
        } else {
            sidetune_bf16_pairs_across_rows(pa + r.lowerBound * aSize, aIsBF16, lda, k, r.count, 0, pairs, ap + r.lowerBound, m)
        }
    }
    // B(p, j) at bp[p * n + j]; `packB(columns)` fills those columns.
    let bp = UnsafeMutableRawPointer(bScratch.data).assumingMemoryBound(to: UInt32.self)
    func packB(_ r: Range<Int>) {
        if r.isEmpty { return }
        if !s.transB {
            sidetune_bf16_pairs_across_rows(pb + r.lowerBound * bSize, bIsBF16, ldb, k, r.count, 0, pairs, bp + r.lowerBound, n)
        } else {
            sidetune_bf16_pairs_along_rows_transposed(pb.assumingMemoryBound(to: Float.self) + r.lowerBound * ldb, ldb, r.count, k,
                                                      bp + r.lowerBound, n)
        }
    }
    let kernel = plainKernel ? sidetune_bf16dot_gemm_plain : sidetune_bf16dot_gemm
    func multiply(rows: Range<Int>, columns: Range<Int>) {
        kernel(rows.count, columns.count, pairs, ap + rows.lowerBound * sam, sam, sap, bp + columns.lowerBound, n,
               c + rows.lowerBound * ldc + columns.lowerBound, ldc, accumulate)
    }
    let threads = gemmThreads(s, pool: pool, singleThreaded: false)
    withExtendedLifetime((aScratch, bScratch)) {
        if threads == 1 {
            packA(0..<m); packB(0..<n); multiply(rows: 0..<m, columns: 0..<n)
        } else if inPlace || m >= n || n < 32 {
            // Split C's rows: B, the smaller, is packed first. About four items per thread, handed
            // out as claimed: a worker that wakes late still finds some (two fixed halves left the
            // caller running both when it did, and a weight gradient did not scale past one thread).
            let blocks = (m + 7) / 8, per = max(1, blocks / (4 * threads)), items = (blocks + per - 1) / per
            packB(0..<n)
            pool.parallelFor(items) { item in
                let rows = 8 * per * item..<min(m, 8 * per * (item + 1))
                packA(rows); multiply(rows: rows, columns: 0..<n)
            }
        } else {
            // Split C's columns in the kernel's 48-wide tiles: A, the smaller, is packed first.
            packA(0..<m)
            pool.parallelFor((n + 47) / 48) { item in
                let columns = 48 * item..<min(n, 48 * (item + 1))
                packB(columns); multiply(rows: 0..<m, columns: columns)
            }
        }
    }
}
