import CSideTuneKernels

/// The precision of a linear layer's products (its forward, dx and dW GEMMs).
/// - `float32`: f32 operands and sums.
/// - `bfloat16`: mixed precision, as autocast on GPUs: the operands are rounded to bf16 (to nearest
///   even) and the products summed in f32 (bf16_dot.h). With AVX512_BF16 a vdpbf16ps does twice
///   the multiply-adds of an f32 FMA. Outputs, gradients, weights and optimizer state stay f32.
///   (On AMX machines a linear layer on cached bf16 taps keeps its AMX path, which splits the
///   weight into two bf16 terms: closer to f32 than this.)
public enum MatmulPrecision: String, Codable, Sendable, CaseIterable {
    case float32 = "f32", bfloat16 = "bf16"

    /// Where bf16 products run at their full rate (vdpbf16ps); elsewhere the kernel is a plain loop.
    public static let bfloat16IsNative: Bool = sidetune_bf16dot_native()

    /// The precision `Tensor.linear` uses for layers recorded inside `Tensor.withMatmulPrecision`
    /// (a task-local, so concurrent tests do not see each other's); backward uses the forward's.
    @TaskLocal static var current: MatmulPrecision = .float32

    /// The precision in effect here (set by `Tensor.withMatmulPrecision`): fused layers that call
    /// their own kernels follow it too.
    public static var inEffect: MatmulPrecision { current }
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
/// O(mnk). On several threads the product is split along C's rows or columns, and the packing
/// along the source's rows (see below).
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
    let (pa, aIsBF16) = (a.raw, a.isBFloat16), (pb, bIsBF16) = (b.raw, b.isBFloat16)
    let aSize = aIsBF16 ? 2 : 4
    precondition(!(bIsBF16 && s.transB), "bf16 products: a transposed B (a weight) must be f32")
    // Scratch for the packed operands, counted in the ledger as workspace (as the f32 GEMM's
    // packing buffers are), freed on return.
    let inPlace = !s.transA && aIsBF16 && k % 2 == 0 && lda % 2 == 0 && Int(bitPattern: pa) % 4 == 0
    let aScratch = Tensor(shape: [inPlace ? 1 : m * pairs], category: .workspace)
    let bScratch = Tensor(shape: [pairs * n], category: .workspace)
    // A(i, p) at ap[i * sam + p * sap].
    let ap = inPlace ? UnsafeMutablePointer(mutating: pa.assumingMemoryBound(to: UInt32.self))
                     : UnsafeMutableRawPointer(aScratch.data).assumingMemoryBound(to: UInt32.self)
    let (sam, sap) = inPlace ? (lda / 2, 1) : (s.transA ? (1, m) : (pairs, 1))
    // The packers walk the source's rows (contiguous reads): `packARows` rows of an untransposed A,
    // `packAPairs` pairs of rows of a transposed one, `packB` pairs of rows of B (or, transposed,
    // rows of the weight). Column strips instead read 1.6-1.8x slower on one thread and did not scale
    // (scripts/bench_bf16_dot.c).
    func packARows(_ r: Range<Int>) {
        if r.isEmpty { return }
        sidetune_bf16_pairs_along_rows(pa + r.lowerBound * lda * aSize, aIsBF16, lda, r.count, k, ap + r.lowerBound * pairs, pairs)
    }
    func packAPairs(_ r: Range<Int>) {
        if r.isEmpty { return }
        sidetune_bf16_pairs_across_rows(pa, aIsBF16, lda, k, m, r.lowerBound, r.upperBound, ap, m)
    }
    // B(p, j) at bp[p * n + j].
    let bp = UnsafeMutableRawPointer(bScratch.data).assumingMemoryBound(to: UInt32.self)
    func packB(_ r: Range<Int>) {
        if r.isEmpty { return }
        if !s.transB {
            sidetune_bf16_pairs_across_rows(pb, bIsBF16, ldb, k, n, r.lowerBound, r.upperBound, bp, n)
        } else {
            sidetune_bf16_pairs_along_rows_transposed(pb.assumingMemoryBound(to: Float.self) + r.lowerBound * ldb, ldb, r.count, k,
                                                      bp + r.lowerBound, n)
        }
    }
    let aUnits = inPlace ? 0 : (s.transA ? pairs : m), bUnits = s.transB ? n : pairs
    func packA(_ r: Range<Int>) { if s.transA { packAPairs(r) } else { packARows(r) } }
    let kernel = plainKernel ? sidetune_bf16dot_gemm_plain : sidetune_bf16dot_gemm
    func multiply(rows: Range<Int>, columns: Range<Int>) {
        kernel(rows.count, columns.count, pairs, ap + rows.lowerBound * sam, sam, sap, bp + columns.lowerBound, n,
               c + rows.lowerBound * ldc + columns.lowerBound, ldc, accumulate)
    }
    let threads = gemmThreads(s, pool: pool, singleThreaded: false)
    withExtendedLifetime((aScratch, bScratch)) {
        if threads == 1 {
            packA(0..<aUnits); packB(0..<bUnits); multiply(rows: 0..<m, columns: 0..<n)
            return
        }
        // An untransposed A is packed by each row block's item, with its product. The rest (B, and
        // A when transposed: a weight gradient's) is packed first, split along the source's rows,
        // then the product runs: a second hand-off to the pool. Below 64 Ki values that packing
        // runs on the calling thread (a hand-off would cost more than it saves).
        let rowsInItems = !s.transA && !inPlace
        let aFirst = rowsInItems ? 0 : aUnits
        if (aFirst > 0 ? m * pairs : 0) + pairs * n < 1 << 16 {
            packA(0..<aFirst); packB(0..<bUnits)
        } else {
            let aItems = min(aFirst, 2 * threads), bItems = min(bUnits, 2 * threads)
            pool.parallelFor(aItems + bItems) { item in
                if item < aItems {
                    packA(aFirst * item / aItems..<aFirst * (item + 1) / aItems)
                } else {
                    let j = item - aItems
                    packB(bUnits * j / bItems..<bUnits * (j + 1) / bItems)
                }
            }
        }
        // About four items per thread, handed out as claimed: a worker that wakes late still finds
        // some (with two fixed halves the caller ran both when it did). Row blocks of 8 (the
        // kernel's tile) when there are enough, else column blocks of 48.
        let blocks = (m + 7) / 8
        if !s.transA || blocks >= 2 * threads || (n + 47) / 48 < 2 * threads {
            let per = max(1, blocks / (4 * threads)), items = (blocks + per - 1) / per
            pool.parallelFor(items) { item in
                let rows = 8 * per * item..<min(m, 8 * per * (item + 1))
                if rowsInItems { packA(rows) }
                multiply(rows: rows, columns: 0..<n)
            }
        } else {
            pool.parallelFor((n + 47) / 48) { item in
                multiply(rows: 0..<m, columns: 48 * item..<min(n, 48 * (item + 1)))
            }
        }
    }
}
