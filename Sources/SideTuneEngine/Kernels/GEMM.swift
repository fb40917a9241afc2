import CSideTuneKernels
import Foundation

/// Row-major single-precision matrix multiply: C[M,N] (+)= op(A)[M,K] * op(B)[K,N], where op(X) is
/// X or its transpose. `lda`, `ldb`, `ldc` are the row strides of the matrices as stored.
///
/// The fast path is BLIS-shaped: B is packed in KC x NC blocks into NR-wide micro-panels, A in
/// MC x KC blocks into MR-tall micro-panels, and a 12x32 register-blocked micro-kernel runs over
/// them. Packing absorbs the transposes, so one kernel serves all four modes.
public struct GEMMShape: Sendable, Equatable {
    public var m: Int, n: Int, k: Int
    public var transA: Bool, transB: Bool
    public init(m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false) {
        self.m = m; self.n = n; self.k = k; self.transA = transA; self.transB = transB
    }
}

/// Plain triple loop, the reference every fast path is tested against (accumulates in Double).
public func gemmReference(_ s: GEMMShape, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                          _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false) {
    for i in 0..<s.m {
        for j in 0..<s.n {
            var acc: Double = accumulate ? Double(c[i * ldc + j]) : 0
            for p in 0..<s.k {
                let av = s.transA ? a[p * lda + i] : a[i * lda + p]
                let bv = s.transB ? b[j * ldb + p] : b[p * ldb + j]
                acc += Double(av) * Double(bv)
            }
            c[i * ldc + j] = Float(acc)
        }
    }
}

/// A micro-kernel with its register tile (MR x NR) and the cache blocking that suits it.
public struct GEMMKernel: Sendable {
    public var name: String
    public var mr: Int, nr: Int
    public var mc: Int, kc: Int, nc: Int
    let run: @Sendable (Int, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Bool) -> Void

    #if arch(x86_64)
    /// AVX2 (16 ymm): 6x16 tile, one k step per trip; a 16 KiB B micro-panel stays in L1 while A
    /// streams from L2.
    public static let avx2 = GEMMKernel(name: "6x16", mr: 6, nr: 16, mc: 168, kc: 256, nc: 4080, run: { kc, a, b, c, ldc, acc in
        sidetune_sgemm_packed_6x16_avx2(kc, a, b, c, ldc, acc)
    })
    /// AVX2 alternative: 4x24 tile (3 B vectors, 4 broadcasts per k).
    public static let avx2Wide = GEMMKernel(name: "4x24", mr: 4, nr: 24, mc: 168, kc: 256, nc: 4080, run: { kc, a, b, c, ldc, acc in
        sidetune_sgemm_packed_4x24_avx2(kc, a, b, c, ldc, acc)
    })
    /// AVX-512 (32 zmm): 12x32 tile.
    public static let avx512 = GEMMKernel(name: "12x32", mr: 12, nr: 32, mc: 96, kc: 256, nc: 2048, run: { kc, a, b, c, ldc, acc in
        sidetune_sgemm_packed_12x32_avx512(kc, a, b, c, ldc, acc)
    })
    /// AVX2 6x16 in C intrinsics (Sources/CSideTuneKernels/sgemm_avx2.c), unrolled by 4 k steps.
    public static let avx2C = GEMMKernel(name: "6x16c", mr: 6, nr: 16, mc: 168, kc: 256, nc: 4080, run: { kc, a, b, c, ldc, acc in
        sidetune_sgemm_6x16_avx2(kc, a, b, c, ldc, acc)
    })
    #endif
    /// Portable (no vector extensions beyond the baseline): a 4x8 tile of 4-lane vectors.
    public static let generic = GEMMKernel(name: "4x8", mr: 4, nr: 8, mc: 128, kc: 256, nc: 4096, run: { kc, a, b, c, ldc, acc in
        sidetune_sgemm_packed_4x8_generic(kc, a, b, c, ldc, acc)
    })

    /// The kernels the level in use (`ISA.current`) may run.
    public static var available: [GEMMKernel] {
        #if arch(x86_64)
        switch ISA.current {
        case .generic: [generic]
        case .avx2: [avx2C, avx2, avx2Wide, generic]
        case .avx512, .avx512bf16: [avx512, avx2C, avx2, avx2Wide, generic]
        }
        #else
        [generic]
        #endif
    }

    /// The kernel for this machine: the first of `available`. SIDETUNE_GEMM_KERNEL picks another of
    /// them by name (comparisons).
    public static let native: GEMMKernel = {
        var k = available[0]
        if let name = KernelEnvironment.gemmKernel, let named = available.first(where: { $0.name == name }) { k = named }
        // SIDETUNE_GEMM_BLOCKING=mc,kc,nc overrides the cache blocking (for tuning on a new CPU).
        if let b = KernelEnvironment.gemmBlocking, b.mc % k.mr == 0, b.nc % k.nr == 0 { (k.mc, k.kc, k.nc) = (b.mc, b.kc, b.nc) }
        return k
    }()
}

/// The fast GEMM. Threads: `pool.activeThreads`. Small problems run on the calling thread.
///
/// `rowEpilogue`, if given, is called exactly once for every row of C, on disjoint row ranges
/// (possibly from pool threads), once those rows are final over all n columns. When one block of
/// columns covers n and each thread owns whole rows, it runs right after a thread's last block of
/// rows is computed, while they are still in cache (bias + activation, LayerNorm); otherwise after
/// the product, in parallel chunks.
public func gemm(_ s: GEMMShape, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false,
                 pool: ThreadPool = .shared, singleThreaded: Bool = false, kernel: GEMMKernel = .native,
                 rowEpilogue: ((Range<Int>) -> Void)? = nil) {
    let m = s.m, n = s.n, k = s.k
    if m == 0 || n == 0 { return }
    if let rowEpilogue, k > 0 {
        // Fused only where the blocked path gives each thread whole rows in one column block.
        let fused = gemmBlocked(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate, pool: pool,
                                singleThreaded: singleThreaded, kernel: kernel, rowEpilogue: rowEpilogue)
        if !fused {
            if singleThreaded { rowEpilogue(0..<m) } else { pool.parallelChunks(m, minChunk: 16) { rowEpilogue($0) } }
        }
        return
    }
    gemmBlocked(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate, pool: pool,
                singleThreaded: singleThreaded, kernel: kernel, rowEpilogue: nil)
}

/// Threads `gemm` gives a product: one below about a million multiply-adds.
func gemmThreads(_ s: GEMMShape, pool: ThreadPool, singleThreaded: Bool) -> Int {
    singleThreaded ? 1 : (2 * s.m * s.n * s.k < 1 << 21 ? 1 : pool.activeThreads)
}

/// A side of a few elements (heads of 4 dimensions): the micro-kernel would mostly pack.
func takesSmallPath(_ s: GEMMShape, threads: Int) -> Bool {
    threads == 1 && (min(s.n, s.k) <= 8 || s.m * s.n * s.k <= 1 << 14)
}

/// Thin products (side networks' projections, their weight gradients): an operand reused for
/// only a panel or two is read in place instead of packed (packing was a quarter of LAST's step).
/// The strided tile for such a product, or nil when it is packed.
func thinKernel(_ s: GEMMShape) -> StridedKernel? {
    guard let first = StridedKernel.native.first, s.n <= 2 * first.nr || s.m <= 4 * first.mr else { return nil }
    return StridedKernel.best(StridedKernel.native, m: s.m, n: s.n)
}

/// A GEMM operand as stored: f32, or bf16 (the feature cache's taps; widening to f32 is exact).
public enum GEMMOperand {
    case f32(UnsafePointer<Float>)
    case bf16(UnsafePointer<UInt16>)

    var isBFloat16: Bool { if case .bf16 = self { return true } else { return false } }
    /// The storage's address, whatever its element type.
    var raw: UnsafeRawPointer {
        switch self {
        case .f32(let p): UnsafeRawPointer(p)
        case .bf16(let p): UnsafeRawPointer(p)
        }
    }
}

/// `gemm` with operands that may be stored in bf16: the same result, bit for bit, as `gemm` on
/// their f32 values. Where `gemm` would take the thin path (LST's down projections of the taps
/// and their weight gradients) and a bf16 operand is stored untransposed, the tiles' bf16
/// variants read it as stored and widen it in registers, so the whole operand is never widened
/// (that pass was 4.5% of LST's cached step, and its f32 copy was kept for backward). Otherwise
/// the bf16 operands are widened into temporary f32 tensors first.
public func gemm(_ s: GEMMShape, _ a: GEMMOperand, lda: Int, _ b: GEMMOperand, ldb: Int,
                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false, pool: ThreadPool = .shared) {
    let (m, n, k) = (s.m, s.n, s.k)
    if m == 0 || n == 0 { return }
    if k == 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).initialize(repeating: 0, count: n) } }
        return
    }
    let threads = gemmThreads(s, pool: pool, singleThreaded: false)
    let readable = !(a.isBFloat16 && s.transA) && !(b.isBFloat16 && s.transB)
    if readable && !(m == 1 && !s.transA) && !takesSmallPath(s, threads: threads), let kernel = thinKernel(s) {
        gemmThin(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate, pool: pool, threads: threads, kernel: kernel)
        return
    }
    // Stored extents: A is [m, k] or (transposed) [k, m]; B is [k, n] or [n, k].
    let (aRows, aCols) = s.transA ? (k, m) : (m, k), (bRows, bCols) = s.transB ? (n, k) : (k, n)
    func widened(_ op: GEMMOperand, rows: Int, cols: Int, ld: Int) -> (UnsafePointer<Float>, Tensor?) {
        switch op {
        case .f32(let p): return (p, nil)
        case .bf16(let p):
            let t = Tensor(shape: [max((rows - 1) * ld + cols, 0)])
            sidetune_bf16_widen_block(p, ld, rows, cols, t.data, ld, rows, cols)
            return (UnsafePointer(t.data), t)
        }
    }
    let (pa, ta) = widened(a, rows: aRows, cols: aCols, ld: lda), (pb, tb) = widened(b, rows: bRows, cols: bCols, ld: ldb)
    withExtendedLifetime((ta, tb)) {
        gemm(s, pa, lda: lda, pb, ldb: ldb, c, ldc: ldc, accumulate: accumulate, pool: pool)
    }
}

/// The body of `gemm`. Returns whether `rowEpilogue` was run (fused into the blocked loop).
@discardableResult
func gemmBlocked(_ s: GEMMShape, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
                 pool: ThreadPool, singleThreaded: Bool, kernel: GEMMKernel,
                 rowEpilogue: ((Range<Int>) -> Void)?) -> Bool {
    let m = s.m, n = s.n, k = s.k
    if k == 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).initialize(repeating: 0, count: n) } }
        return false
    }
    if m == 1 && !s.transA {
        // Memory-bound: split the output columns over the pool when B is large (decoding).
        if singleThreaded || n * k < 1 << 16 || pool.activeThreads == 1 {
            gemvRow(s, a, b, ldb: ldb, c, accumulate: accumulate)
        } else {
            pool.parallelChunks(n, minChunk: 64) { r in
                let sub = GEMMShape(m: 1, n: r.count, k: k, transA: false, transB: s.transB)
                gemvRow(sub, a, b + (s.transB ? r.lowerBound * ldb : r.lowerBound), ldb: ldb, c + r.lowerBound, accumulate: accumulate)
            }
        }
        return false
    }
    let mr = kernel.mr, nr = kernel.nr, mc = kernel.mc, kc0 = kernel.kc, nc0 = kernel.nc
    let threads = gemmThreads(s, pool: pool, singleThreaded: singleThreaded)
    if takesSmallPath(s, threads: threads) {
        gemmSmall(s, a, lda: lda, b, ldb: ldb, c, ldc: ldc, accumulate: accumulate)
        return false
    }
    if let strided = thinKernel(s) {
        gemmThin(s, .f32(a), lda: lda, .f32(b), ldb: ldb, c, ldc: ldc, accumulate: accumulate, pool: pool, threads: threads, kernel: strided)
        return false
    }
    let ncMax = min(nc0, roundUp(n, nr))
    let kcMax = min(kc0, k)
    // Threads own rectangles of C: rows split into `tm` even bands (whole MR panels), B panels into
    // `tn` groups, so no thread waits on another's leftover block.
    let rowPanels = (m + mr - 1) / mr
    let tm = threads == 1 ? 1 : (rowPanels >= threads * 4 || m >= n ? threads : 1)
    let tn = threads / tm
    let fuseEpilogue = rowEpilogue != nil && tn == 1 && n <= ncMax
    PackingBuffers.with(floats: kcMax * ncMax + threads * mc * kcMax) { buffer in
        let packedB = buffer, packedA = buffer + kcMax * ncMax
        var jc = 0
        while jc < n {
            let nc = min(ncMax, n - jc)
            let nPanels = (nc + nr - 1) / nr
            var pc = 0
            while pc < k {
                let kc = min(kcMax, k - pc)
                let acc = accumulate || pc > 0
                // Pack B[pc..<pc+kc, jc..<jc+nc] into nr-wide panels (in parallel by panel).
                let packB = { (panel: Int) in
                    packBPanel(s.transB, b, ldb, pc, kc, jc + panel * nr, min(nr, nc - panel * nr), nr, packedB + panel * kc * nr)
                }
                if threads > 1 { pool.parallelFor(nPanels, packB) } else { for p in 0..<nPanels { packB(p) } }
                let runThread = { (t: Int) in
                    let pa = packedA + t * mc * kcMax
                    let bandIndex = t / tn, group = t % tn
                    let r0 = rowPanels * bandIndex / tm * mr, r1 = min(m, rowPanels * (bandIndex + 1) / tm * mr)
                    let p0 = nPanels * group / tn, p1 = nPanels * (group + 1) / tn
                    if p0 >= p1 { return }
                    var ic = r0
                    while ic < r1 {
                        let mcur = min(mc, r1 - ic)
                        packABlock(s.transA, a, lda, ic, mcur, pc, kc, mr, pa)
                        macroKernel(kernel, pa, packedB, mcur, nc, kc, p0, p1, c + ic * ldc + jc, ldc, acc)
                        if fuseEpilogue && pc + kc == k { rowEpilogue!(ic..<(ic + mcur)) }
                        ic += mcur
                    }
                }
                if threads > 1 { pool.parallelFor(tm * tn, runThread) } else { runThread(0) }
                pc += kc
            }
            jc += nc
        }
    }
    return fuseEpilogue
}

/// Packing buffers reused across GEMM calls (allocating megabytes per call would page-fault every
/// time). Counted as workspace in the shared ledger for as long as they are cached.
enum PackingBuffers {
    nonisolated(unsafe) static var free: [Workspace] = []
    static let lock = NSLock()

    static func with<R>(floats: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        lock.lock()
        let index = free.firstIndex { $0.byteCount >= floats * 4 }
        let ws = index.map { free.remove(at: $0) }
        lock.unlock()
        let buffer = ws ?? MemoryLedger.withLedger(.shared) { Workspace(floats: floats) }
        defer {
            lock.lock()
            free.append(buffer)
            // Keep at most a few buffers: one per concurrent caller is enough.
            if free.count > 4 { free.sort { $0.byteCount > $1.byteCount }; free.removeLast() }
            lock.unlock()
        }
        return body(buffer.floats)
    }
}

@inline(__always) func roundUp(_ x: Int, _ m: Int) -> Int { (x + m - 1) / m * m }

/// Runs the micro-kernel over B panels p0..<p1 and every MR row panel of a packed A block.
@inline(__always)
func macroKernel(_ kernel: GEMMKernel, _ pa: UnsafeMutablePointer<Float>, _ pb: UnsafeMutablePointer<Float>, _ mcur: Int,
                 _ nc: Int, _ kc: Int, _ p0: Int, _ p1: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ acc: Bool) {
    let mr = kernel.mr, nr = kernel.nr
    withUnsafeTemporaryAllocation(of: Float.self, capacity: mr * nr) { tileBuffer in
        let tile = tileBuffer.baseAddress! // scratch for partial tiles at the edges
        for p in p0..<p1 {
            let j = p * nr, ncur = min(nr, nc - j)
            let bp = pb + p * kc * nr
            var i = 0
            while i < mcur {
                let mcurr = min(mr, mcur - i)
                let ap = pa + i * kc
                if mcurr == mr && ncur == nr {
                    kernel.run(kc, ap, bp, c + i * ldc + j, ldc, acc)
                } else {
                    kernel.run(kc, ap, bp, tile, nr, false)
                    storeEdgeTile(tile, nr, c + i * ldc + j, ldc, rows: mcurr, cols: ncur, accumulate: acc)
                }
                i += mr
            }
        }
    }
}

/// Copies (or adds) the rows x cols corner of a full micro-tile computed into scratch to C: the
/// edges of C, where a full tile would write past the matrix.
@inline(__always)
func storeEdgeTile(_ tile: UnsafePointer<Float>, _ ldt: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                   rows: Int, cols: Int, accumulate: Bool) {
    for r in 0..<rows {
        let dst = c + r * ldc, src = tile + r * ldt
        if accumulate { for q in 0..<cols { dst[q] += src[q] } } else { for q in 0..<cols { dst[q] = src[q] } }
    }
}

/// Packs op(A)[ic..<ic+mcur, pc..<pc+kc] as MR-tall panels: panel-major, then k, then row.
@inline(__always)
func packABlock(_ trans: Bool, _ a: UnsafePointer<Float>, _ lda: Int, _ ic: Int, _ mcur: Int, _ pc: Int, _ kc: Int,
                _ mr: Int, _ dst: UnsafeMutablePointer<Float>) {
    var i = 0
    while i < mcur {
        let rows = min(mr, mcur - i)
        let d = dst + i * kc
        if trans {
            // op(A)[r][p] = A[p][r]: rows are contiguous in memory for each p.
            for p in 0..<kc {
                let src = a + (pc + p) * lda + ic + i
                let o = d + p * mr
                for r in 0..<rows { o[r] = src[r] }
                for r in rows..<mr { o[r] = 0 }
            }
        } else {
            // op(A)[r][p] = A[r][p]: rows run along k, so the panel is their transpose (register
            // transposes in C; a row-at-a-time scatter took 8% of the forward, a gather 2.5%).
            sidetune_pack_transposed_panel(a + (ic + i) * lda + pc, lda, kc, rows, mr, d)
        }
        i += mr
    }
}

/// Packs op(B)[pc..<pc+kc, j0..<j0+cols] into one NR-wide panel (k-major), zero-padded.
@inline(__always)
func packBPanel(_ trans: Bool, _ b: UnsafePointer<Float>, _ ldb: Int, _ pc: Int, _ kc: Int, _ j0: Int, _ cols: Int,
                _ nr: Int, _ dst: UnsafeMutablePointer<Float>) {
    if !trans {
        if cols == nr {
            for p in 0..<kc {
                (dst + p * nr).update(from: b + (pc + p) * ldb + j0, count: nr)
            }
        } else {
            for p in 0..<kc {
                let src = b + (pc + p) * ldb + j0
                let o = dst + p * nr
                for q in 0..<cols { o[q] = src[q] }
                for q in cols..<nr { o[q] = 0 }
            }
        }
    } else {
        // op(B)[p][q] = B[q][p] (weights [out, in]): register transposes of 16x16 blocks in C.
        sidetune_pack_transposed_panel(b + j0 * ldb + pc, ldb, kc, cols, nr, dst)
    }
}

/// Small products with a thin side (attention heads of a few dimensions, tiny side networks):
/// packing would cost more than the arithmetic. Each row of C is built with vectors along the
/// longer of n and k: axpys over n (op(B) as [k, n] rows) when n >= 16, else dots over k (op(B)
/// as [n, k] columns). B is transposed into a small temporary when its layout does not fit.
func gemmSmall(_ s: GEMMShape, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
               _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
    let (m, n, k) = (s.m, s.n, s.k)
    let alongN = n >= 16
    // alongN needs op(B)[p][j] at bRows[p * n + j]; otherwise op(B)[p][j] at bCols[j * k + p].
    let needsTranspose = alongN == s.transB
    withUnsafeTemporaryAllocation(of: Float.self, capacity: k + (needsTranspose ? n * k : 0)) { buffer in
        let row = buffer.baseAddress!, tb = row + k
        if needsTranspose {
            // B is [k, n] (ldb) when !transB and [n, k] when transB: write the other layout.
            if s.transB { for j in 0..<n { for p in 0..<k { tb[p * n + j] = b[j * ldb + p] } } } else {
                for p in 0..<k { for j in 0..<n { tb[j * k + p] = b[p * ldb + j] } }
            }
        }
        let bp = needsTranspose ? UnsafePointer(tb) : b
        let bld = needsTranspose ? (alongN ? n : k) : ldb
        for i in 0..<m {
            // op(A)'s row i, contiguous.
            let ai: UnsafePointer<Float>
            if s.transA {
                for p in 0..<k { row[p] = a[p * lda + i] }
                ai = UnsafePointer(row)
            } else {
                ai = a + i * lda
            }
            let ci = c + i * ldc
            if alongN {
                if !accumulate { ci.initialize(repeating: 0, count: n) }
                for p in 0..<k { axpy(n, ai[p], bp + p * bld, ci) }
            } else {
                for j in 0..<n {
                    let d = dot(k, ai, bp + j * bld)
                    ci[j] = accumulate ? ci[j] + d : d
                }
            }
        }
    }
}

/// M == 1: c[j] = sum_p a[p] * op(B)[p][j]. Streams B once (memory-bound), vectorised over j or p.
func gemvRow(_ s: GEMMShape, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, ldb: Int,
             _ c: UnsafeMutablePointer<Float>, accumulate: Bool) {
    let n = s.n, k = s.k
    if !s.transB {
        if !accumulate { c.initialize(repeating: 0, count: n) }
        for p in 0..<k { axpy(n, a[p], b + p * ldb, c) }
    } else {
        for j in 0..<n {
            let d = dot(k, a, b + j * ldb)
            c[j] = accumulate ? c[j] + d : d
        }
    }
}

/// y += alpha * x (n floats), a fused multiply-add per element where the CPU has FMA.
@inline(__always)
public func axpy(_ n: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    st_axpy(n, alpha, x, y)
}

/// Dot product of n floats (two 16-lane accumulators, summed as a tree).
@inline(__always)
public func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
    st_dot(n, x, y)
}

/// A micro-kernel that reads A and B in place (Sources/CSideTuneKernels/sgemm_strided.c):
/// C[mr, nr] (+)= A B with A's element (i, p) at a[i * ars + p * acs] and B's row p at b + p * ldb.
/// `runBF16A` and `runBF16B` are the same tile reading A or B stored in bf16, widened in registers.
public struct StridedKernel: Sendable {
    /// The C kernels' signature as Swift imports it (pointers optional), so they are stored as they are.
    public typealias Run<A, B> = @Sendable (Int, UnsafePointer<A>?, Int, Int, UnsafePointer<B>?, Int, UnsafeMutablePointer<Float>?, Int, Bool) -> Void
    public var name: String
    public var mr: Int, nr: Int
    let run: Run<Float, Float>
    let runBF16A: Run<UInt16, Float>
    let runBF16B: Run<Float, UInt16>

    static func make(_ name: String, _ mr: Int, _ nr: Int, _ available: Bool, _ f: @escaping Run<Float, Float>,
                     _ fa: @escaping Run<UInt16, Float>, _ fb: @escaping Run<Float, UInt16>) -> StridedKernel? {
        available ? StridedKernel(name: name, mr: mr, nr: nr, run: f, runBF16A: fa, runBF16B: fb) : nil
    }
    #if arch(x86_64)
    /// AVX-512 tiles: 12x32 for most shapes, 8x48 for 48 or 144 columns (side widths; 12x32 would
    /// pad them to 64 and 160), 8x32 for 16 rows, 24x16 for 16 columns or fewer.
    public static let avx512: [StridedKernel] = {
        let on = sidetune_sgemm_strided_avx512_available()
        return [
            make("strided 12x32", 12, 32, on, sidetune_sgemm_strided_12x32_avx512,
                 sidetune_sgemm_strided_12x32_bf16a_avx512, sidetune_sgemm_strided_12x32_bf16b_avx512),
            make("strided 8x48", 8, 48, on, sidetune_sgemm_strided_8x48_avx512,
                 sidetune_sgemm_strided_8x48_bf16a_avx512, sidetune_sgemm_strided_8x48_bf16b_avx512),
            make("strided 8x32", 8, 32, on, sidetune_sgemm_strided_8x32_avx512,
                 sidetune_sgemm_strided_8x32_bf16a_avx512, sidetune_sgemm_strided_8x32_bf16b_avx512),
            make("strided 24x16", 24, 16, on, sidetune_sgemm_strided_24x16_avx512,
                 sidetune_sgemm_strided_24x16_bf16a_avx512, sidetune_sgemm_strided_24x16_bf16b_avx512),
        ].compactMap { $0 }
    }()
    /// AVX2 tiles: 6x16, and 12x8 for 8 columns or fewer.
    public static let avx2: [StridedKernel] = {
        let on = sidetune_sgemm_strided_avx2_available()
        return [
            make("strided 6x16", 6, 16, on, sidetune_sgemm_strided_6x16_avx2,
                 sidetune_sgemm_strided_6x16_bf16a_avx2, sidetune_sgemm_strided_6x16_bf16b_avx2),
            make("strided 12x8", 12, 8, on, sidetune_sgemm_strided_12x8_avx2,
                 sidetune_sgemm_strided_12x8_bf16a_avx2, sidetune_sgemm_strided_12x8_bf16b_avx2),
        ].compactMap { $0 }
    }()
    #endif
    /// This machine's tiles (empty: every product is packed, as on the portable level).
    /// SIDETUNE_GEMM_THIN=0 turns them off.
    public static let native: [StridedKernel] = {
        if !KernelEnvironment.thinGEMM { return [] }
        #if arch(x86_64)
        return ISA.current >= .avx512 && !avx512.isEmpty ? avx512 : avx2
        #else
        return []
        #endif
    }()

    /// The tile that wastes the least padding on an m x n product (the first on ties).
    public static func best(_ kernels: [StridedKernel], m: Int, n: Int) -> StridedKernel? {
        kernels.min { roundUp(m, $0.mr) * roundUp(n, $0.nr) < roundUp(m, $1.mr) * roundUp(n, $1.nr) }
    }
}

/// C (+)= op(A) op(B) tile by tile with the strided kernel, packing only what it must: op(B) when
/// B is stored transposed (a [k, n] copy) and zero-padded copies for partial edge panels. Tiles are
/// split statically over the threads. An operand stored in bf16 (untransposed) is read by the
/// tile's bf16 variant, which widens it in registers; only edge panels (and A's panels when both
/// are bf16) are widened into f32 copies. The kernels see the same values in the same order.
public func gemmThin(_ s: GEMMShape, _ a: GEMMOperand, lda: Int, _ b: GEMMOperand, ldb: Int,
              _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, pool: ThreadPool, threads: Int,
              kernel: StridedKernel) {
    precondition(!(a.isBFloat16 && s.transA) && !(b.isBFloat16 && s.transB), "gemmThin: a bf16 operand must be stored untransposed")
    let (m, n, k) = (s.m, s.n, s.k)
    let mr = kernel.mr, nr = kernel.nr
    let rowPanels = (m + mr - 1) / mr, colPanels = (n + nr - 1) / nr
    let fullCols = n / nr * nr
    // op(A)[i][p] = a[i * ars + p * acs].
    let ars = s.transA ? 1 : lda, acs = s.transA ? lda : 1
    // op(B) as [k, ldbp] rows: in place when B is stored [k, n]; else a transposed copy padded to
    // whole panels. The partial last panel of an in-place B gets its own padded [k, nr] copy.
    let copyB = s.transB
    let ldbp = copyB ? colPanels * nr : ldb
    let tailCols = n - fullCols
    let bFloats = copyB ? k * ldbp : (tailCols > 0 ? k * nr : 0)
    // Both in bf16: A's panels are widened, B is read by the bf16-B tile.
    let widenA = a.isBFloat16 && b.isBFloat16
    PackingBuffers.with(floats: max(bFloats, 1)) { bBuffer in
        switch b {
        case .f32(let b) where copyB:
            pool.parallelChunks(k, minChunk: 64) { r in
                for p in r {
                    let row = bBuffer + p * ldbp
                    for j in 0..<n { row[j] = b[j * ldb + p] }
                    for j in n..<ldbp { row[j] = 0 }
                }
            }
        case .f32(let b) where tailCols > 0:
            for p in 0..<k {
                let row = bBuffer + p * nr
                for j in 0..<tailCols { row[j] = b[p * ldb + fullCols + j] }
                for j in tailCols..<nr { row[j] = 0 }
            }
        case .bf16(let b) where tailCols > 0:
            sidetune_bf16_widen_block(b + fullCols, ldb, k, tailCols, bBuffer, nr, k, nr)
        default: break
        }
        let tiles = rowPanels * colPanels
        // When op(B) is the larger operand (weight gradients dW = g^T x: 48 rows of g^T against a
        // tap of 1,056 x 384), walk the tiles column panel by column panel, so each strip of B is
        // read from memory once and reused from cache by every row panel. (Not when A's panels are
        // widened copies: each would be widened again for every tile.)
        let columnsOuter = colPanels > 1 && n > m && !widenA
        let body = { (range: Range<Int>) in
            // Scratch: a padded A panel for the last partial row panel (or widened from bf16), and a C tile for edges.
            let aFloats = m % mr == 0 && !widenA ? 0 : mr * k
            withUnsafeTemporaryAllocation(of: Float.self, capacity: aFloats + mr * nr) { scratch in
                let tile = scratch.baseAddress!, aPad = tile + mr * nr
                var paddedPanel = -1
                for t in range {
                    let (rp, cp) = columnsOuter ? (t % rowPanels, t / rowPanels) : (t / colPanels, t % colPanels)
                    let i0 = rp * mr, j0 = cp * nr
                    let rows = min(mr, m - i0), cols = min(nr, n - j0)
                    // A as f32 (in place or a padded copy) or as bf16 in place.
                    var ap: UnsafePointer<Float>?, ap16: UnsafePointer<UInt16>?, apRow = ars, apCol = acs
                    switch a {
                    case .bf16(let a16) where rows == mr && !widenA:
                        ap16 = a16 + i0 * lda
                    case .bf16(let a16):
                        // [mr, k], rows past m zero.
                        if paddedPanel != rp {
                            sidetune_bf16_widen_block(a16 + i0 * lda, lda, rows, k, aPad, k, mr, k)
                            paddedPanel = rp
                        }
                        (ap, apRow, apCol) = (UnsafePointer(aPad), k, 1)
                    case .f32(let a) where rows == mr:
                        ap = a + i0 * ars
                    case .f32(let a):
                        if paddedPanel != rp {
                            for p in 0..<k {
                                for r in 0..<rows { aPad[p * mr + r] = a[(i0 + r) * ars + p * acs] }
                                for r in rows..<mr { aPad[p * mr + r] = 0 }
                            }
                            paddedPanel = rp
                        }
                        (ap, apRow, apCol) = (UnsafePointer(aPad), 1, mr)
                    }
                    // B: the padded copies as f32, else in place (f32 or bf16).
                    var bp: UnsafePointer<Float>?, bp16: UnsafePointer<UInt16>?, bld = ldbp
                    switch b {
                    case _ where copyB: bp = UnsafePointer(bBuffer) + j0
                    case _ where cols < nr: (bp, bld) = (UnsafePointer(bBuffer), nr)
                    case .f32(let b): bp = b + j0
                    case .bf16(let b): bp16 = b + j0
                    }
                    let full = rows == mr && cols == nr
                    let (ct, cld, acc) = full ? (c + i0 * ldc + j0, ldc, accumulate) : (tile, nr, false)
                    if let ap16, let bp {
                        kernel.runBF16A(k, ap16, apRow, apCol, bp, bld, ct, cld, acc)
                    } else if let ap, let bp16 {
                        kernel.runBF16B(k, ap, apRow, apCol, bp16, bld, ct, cld, acc)
                    } else {
                        kernel.run(k, ap!, apRow, apCol, bp!, bld, ct, cld, acc)
                    }
                    if !full { storeEdgeTile(tile, nr, c + i0 * ldc + j0, ldc, rows: rows, cols: cols, accumulate: accumulate) }
                }
            }
        }
        if threads > 1 && tiles > 1 { pool.parallelChunks(tiles) { body($0) } } else { body(0..<tiles) }
    }
}
