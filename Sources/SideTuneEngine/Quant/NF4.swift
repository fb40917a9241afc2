import Foundation
import CSideTuneKernels

/// QLoRA's 4-bit NormalFloat storage (bitsandbytes `quantize_4bit(quant_type="nf4", blocksize=64,
/// compress_statistics=True)`), for frozen backbone weights:
///
/// 1. The flattened weight is cut into blocks of 64; each block's absmax a_b = max |w|, and each
///    value becomes the nearest of the 16 NF4 levels to w / a_b (ties to the lower level, as
///    bitsandbytes' `dQuantizeNF4` decision tree compares `x > midpoint`). Two codes per byte:
///    element 2j in the high nibble, 2j + 1 in the low nibble.
/// 2. Double quantisation of the scales: offset = mean(a); per block of 256 scales,
///    absmax2 = max |a_b - offset| (f32) and q_b = nearest entry of (a_b - offset) / absmax2 in
///    bitsandbytes' signed 8-bit dynamic map.
/// 3. w = NF4[code] * (dynamic[q_b] * absmax2[b / 256] + offset).
///
/// Storage: 1/2 + 1/64 + 4/(64 * 256) = 0.5159 bytes per parameter (+ 4 bytes of offset).
public enum NF4 {
    public static let blockSize = 64
    public static let scaleBlockSize = 256

    /// The 16 NF4 levels (bitsandbytes `get_4bit_type("nf4")`): quantiles of N(0, 1) scaled to [-1, 1].
    public static let levels: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
        0.7229568362236023, 1.0,
    ]

    /// Midpoints between adjacent levels (the constants in bitsandbytes' `dQuantizeNF4`).
    public static let thresholds: [Float] = (0..<15).map { Float((Double(levels[$0]) + Double(levels[$0 + 1])) / 2) }

    /// bitsandbytes `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, computed in
    /// Float32 as torch does: for exponent i in 0..<7, 2^i fraction means of linspace(0.1, 1, 2^i + 1)
    /// times +-10^(i - 6); plus 0 and 1; sorted.
    public static let dynamicMap: [Float] = {
        var data: [Float] = []
        for i in 0..<7 {
            let n = (1 << i) + 1
            let step = 0.9 / Double(n - 1)
            let b: [Float] = (0..<n).map { $0 == n - 1 ? 1 : Float(Double($0) * step + 0.1) }
            let scale = Float(Foundation.pow(10.0, Double(i - 6)))
            let means = (0..<(n - 1)).map { (b[$0] + b[$0 + 1]) / 2 }
            data += means.map { scale * $0 }
            data += means.map { -scale * $0 }
        }
        data += [0, 1]
        return data.sorted()
    }()

    /// NF4 code of a value already divided by its block's absmax.
    @inline(__always) public static func code(_ x: Float) -> UInt8 {
        // Binary decision tree over the sorted thresholds: code = #{t : x > t}.
        var lo = 0, hi = 15
        while lo < hi {
            let mid = (lo + hi) / 2
            if x > thresholds[mid] { lo = mid + 1 } else { hi = mid }
        }
        return UInt8(lo)
    }

    /// Index of the nearest dynamic-map entry (first on ties, as numpy's argmin).
    static func nearestDynamic(_ x: Float) -> UInt8 {
        var best = 0
        var bestD = Float.infinity
        for (i, v) in dynamicMap.enumerated() {
            let d = abs(x - v)
            if d < bestD { bestD = d; best = i }
        }
        return UInt8(best)
    }

    /// Each byte's two levels (high nibble first), for unpacking with one 8-byte load per byte.
    static let pairTable: [SIMD2<Float>] = (0..<256).map { SIMD2(levels[$0 >> 4], levels[$0 & 15]) }
    /// The same pairs as raw 64-bit patterns (first float in the low half): one integer move each.
    static let pairBits: [UInt64] = pairTable.map { UInt64($0[0].bitPattern) | UInt64($0[1].bitPattern) << 32 }
}

/// A frozen [out, in] weight in NF4 with double-quantised scales. `in` must be a multiple of 64 so
/// that blocks never straddle rows.
public final class NF4Weight: @unchecked Sendable {  // immutable after init
    public let rows: Int
    public let cols: Int
    /// count / 2 bytes of packed codes.
    public let codes: TensorStorage
    /// One 8-bit dynamic-map index per 64-block.
    public let quantizedScales: TensorStorage
    /// One f32 absmax per 256 scales.
    public let scaleAbsmax: TensorStorage
    public let offset: Float

    public var count: Int { rows * cols }
    public var shape: [Int] { [rows, cols] }
    public var blockCount: Int { count / NF4.blockSize }
    /// Bytes of the stored format: codes, 8-bit scales, f32 second-level scales, offset.
    public var storedBytes: Int { codes.byteCount + quantizedScales.byteCount + scaleAbsmax.byteCount + 4 }
    public var bytesPerParameter: Double { Double(storedBytes) / Double(count) }

    /// Quantises `w` [out, in] (any float dtype). Storage is tagged `category` in the ledger.
    public init(quantizing w: Tensor, category: MemoryCategory = .weights) {
        precondition(w.rank == 2, "NF4 weights are matrices, got shape \(w.shape)")
        let (r, c) = (w.shape[0], w.shape[1])
        precondition(c % NF4.blockSize == 0, "NF4: row length \(c) is not a multiple of \(NF4.blockSize)")
        let x = w.float32()
        let n = r * c, nb = n / NF4.blockSize, n2 = (nb + NF4.scaleBlockSize - 1) / NF4.scaleBlockSize
        codes = TensorStorage(byteCount: n / 2, dtype: .nf4, category: category)
        quantizedScales = TensorStorage(byteCount: nb, dtype: .nf4, category: category)
        scaleAbsmax = TensorStorage(byteCount: n2 * 4, dtype: .float32, category: category)
        var absmax = [Float](repeating: 0, count: nb)
        let px = x.data, pc = codes.raw.assumingMemoryBound(to: UInt8.self)
        ThreadPool.shared.parallelChunks(nb, minChunk: 64) { range in
            for b in range {
                let v = px + b * NF4.blockSize
                var m: Float = 0
                for j in 0..<NF4.blockSize { m = max(m, abs(v[j])) }
                absmax[b] = m
                let d: Float = m == 0 ? 1 : m
                for j in 0..<(NF4.blockSize / 2) {
                    pc[b * 32 + j] = NF4.code(v[2 * j] / d) << 4 | NF4.code(v[2 * j + 1] / d)
                }
            }
        }
        // numpy's float32 mean uses pairwise summation; a Double sum rounds to the same float
        // except in rare last-bit cases, which only move the offset by one ulp.
        var sum = 0.0
        for a in absmax { sum += Double(a) }
        let offset = Float(sum / Double(nb))
        let pq = quantizedScales.raw.assumingMemoryBound(to: UInt8.self), p2 = scaleAbsmax.floats
        for b2 in 0..<n2 {
            let lo = b2 * NF4.scaleBlockSize, hi = min(nb, lo + NF4.scaleBlockSize)
            var m: Float = 0
            for b in lo..<hi { m = max(m, abs(absmax[b] - offset)) }
            p2[b2] = m
            let d: Float = m == 0 ? 1 : m
            for b in lo..<hi { pq[b] = NF4.nearestDynamic((absmax[b] - offset) / d) }
        }
        self.offset = offset
        rows = r; cols = c
    }

    /// Wraps stored arrays (e.g. read from a file).
    public init(rows: Int, cols: Int, codes packed: [UInt8], quantizedScales q: [UInt8], scaleAbsmax a2: [Float], offset: Float,
                category: MemoryCategory = .weights) {
        precondition(cols % NF4.blockSize == 0 && packed.count == rows * cols / 2 && q.count == rows * cols / NF4.blockSize
                     && a2.count == (q.count + NF4.scaleBlockSize - 1) / NF4.scaleBlockSize, "NF4 arrays do not fit [\(rows), \(cols)]")
        self.rows = rows; self.cols = cols; self.offset = offset
        codes = TensorStorage(byteCount: packed.count, dtype: .nf4, category: category)
        quantizedScales = TensorStorage(byteCount: q.count, dtype: .nf4, category: category)
        scaleAbsmax = TensorStorage(byteCount: a2.count * 4, dtype: .float32, category: category)
        codes.raw.copyMemory(from: packed, byteCount: packed.count)
        quantizedScales.raw.copyMemory(from: q, byteCount: q.count)
        scaleAbsmax.raw.copyMemory(from: a2, byteCount: a2.count * 4)
    }

    /// Block b's scale, de-quantised on the fly (one lookup and one multiply-add per 64 values).
    @inline(__always) func scale(_ b: Int, _ q: UnsafePointer<UInt8>, _ a2: UnsafePointer<Float>, _ dyn: UnsafePointer<Float>) -> Float {
        dyn[Int(q[b])] * a2[b >> 8] + offset
    }

    /// Every block's scale (count / 64 floats).
    public func blockScales() -> [Float] {
        NF4.dynamicMap.withUnsafeBufferPointer { dyn in
            (0..<blockCount).map { scale($0, quantizedScales.raw.assumingMemoryBound(to: UInt8.self), scaleAbsmax.floats, dyn.baseAddress!) }
        }
    }

    /// Packed code bytes, 8-bit scale indices and second-level scales (for tests and files).
    public var packedCodes: [UInt8] { Array(UnsafeBufferPointer(start: codes.raw.assumingMemoryBound(to: UInt8.self), count: codes.byteCount)) }
    public var scaleIndices: [UInt8] { Array(UnsafeBufferPointer(start: quantizedScales.raw.assumingMemoryBound(to: UInt8.self), count: quantizedScales.byteCount)) }
    public var secondLevelScales: [Float] { Array(UnsafeBufferPointer(start: scaleAbsmax.floats, count: scaleAbsmax.byteCount / 4)) }

    /// Rows r0 ..< r1 de-quantised into `dst` (row-major, `cols` floats per row).
    @inline(__always)
    func dequantizeRows(_ r0: Int, _ r1: Int, into dst: UnsafeMutablePointer<Float>) {
        let pc = codes.raw.assumingMemoryBound(to: UInt8.self)
        let bpr = cols / NF4.blockSize
        NF4.pairTable.withUnsafeBufferPointer { table in
            NF4.dynamicMap.withUnsafeBufferPointer { dyn in
                let q = quantizedScales.raw.assumingMemoryBound(to: UInt8.self), a2 = scaleAbsmax.floats
                let out = UnsafeMutableRawPointer(dst)
                for b in (r0 * bpr)..<(r1 * bpr) {
                    let s = SIMD2<Float>(repeating: scale(b, q, a2, dyn.baseAddress!))
                    let src = pc + b * 32
                    let o = out + (b - r0 * bpr) * 256
                    for j in 0..<32 {
                        o.storeBytes(of: table[Int(src[j])] * s, toByteOffset: j * 8, as: SIMD2<Float>.self)
                    }
                }
            }
        }
    }

    /// The whole weight as a fresh F32 tensor [out, in].
    public func dequantized() -> Tensor {
        let t = Tensor(shape: [rows, cols])
        dequantizeRows(0, rows, into: t.data)
        return t
    }

    /// y[o] = sum_i x[i] w[o, i] for one input row, rows o in r. Each row's codes are first
    /// unpacked into a scratch row (8-byte table loads), then dotted with x block by block: doing the
    /// two phases per row rather than per 64-block keeps the vector loads from hitting the 8-byte
    /// stores still in the store buffer (a store-forwarding stall that made the fused loop 3x slower).
    @inline(__always)
    func gemvRows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ r: Range<Int>, accumulate: Bool) {
        let pc = codes.raw.assumingMemoryBound(to: UInt8.self)
        let bpr = cols / NF4.blockSize
        let xr = UnsafeRawPointer(x)
        NF4.pairBits.withUnsafeBufferPointer { tableBuf in
            NF4.dynamicMap.withUnsafeBufferPointer { dyn in
                let table = tableBuf.baseAddress!
                let q = quantizedScales.raw.assumingMemoryBound(to: UInt8.self), a2 = scaleAbsmax.floats
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: cols / 2) { tmpBuf in
                    let t64 = tmpBuf.baseAddress!
                    let tmp = UnsafeMutableRawPointer(t64)
                    for o in r {
                        let src = pc + o * bpr * 32
                        for j in 0..<(bpr * 32) { t64[j] = table[Int(src[j])] }
                        var acc = SIMD16<Float>()
                        for bi in 0..<bpr {
                            let xo = bi * 256
                            var d = tmp.load(fromByteOffset: xo, as: SIMD16<Float>.self) * xr.loadUnaligned(fromByteOffset: xo, as: SIMD16<Float>.self)
                            d.addProduct(tmp.load(fromByteOffset: xo + 64, as: SIMD16<Float>.self), xr.loadUnaligned(fromByteOffset: xo + 64, as: SIMD16<Float>.self))
                            d.addProduct(tmp.load(fromByteOffset: xo + 128, as: SIMD16<Float>.self), xr.loadUnaligned(fromByteOffset: xo + 128, as: SIMD16<Float>.self))
                            d.addProduct(tmp.load(fromByteOffset: xo + 192, as: SIMD16<Float>.self), xr.loadUnaligned(fromByteOffset: xo + 192, as: SIMD16<Float>.self))
                            acc.addProduct(d, SIMD16<Float>(repeating: scale(o * bpr + bi, q, a2, dyn.baseAddress!)))
                        }
                        let v = acc.sum()
                        y[o] = accumulate ? y[o] + v : v
                    }
                }
            }
        }
    }
}

/// Which NF4 GEMV runs for one input row.
public enum NF4GemvKernel: String, Sendable {
    /// The plain Swift kernel (unpack a row through the pair table, then SIMD dots): the reference.
    case reference
    /// The C kernel (Sources/CSideTuneKernels/nf4_gemv.c): in-register level lookups, no scratch row.
    case vectorized

    /// `vectorized` unless SIDETUNE_NF4_GEMV=reference, so one binary can time both end to end.
    public static let selected: NF4GemvKernel =
        KernelEnvironment.nf4Gemv.flatMap(NF4GemvKernel.init(rawValue:)) ?? .vectorized

    /// Whether `vectorized` uses SIMD intrinsics here (AVX2 + FMA) or its portable scalar fallback.
    public static var vectorizedUsesSIMD: Bool { sidetune_nf4_gemv_is_vectorized() != 0 }
}

/// y[out] = W x for one input row x[in], rows split across the pool's threads.
public func nf4Gemv(_ x: UnsafePointer<Float>, _ w: NF4Weight, _ y: UnsafeMutablePointer<Float>,
                    kernel: NF4GemvKernel, accumulate: Bool = false, pool: ThreadPool = .shared) {
    let n = w.rows, k = w.cols
    switch kernel {
    case .reference:
        pool.parallelChunks(n, minChunk: 16) { r in w.gemvRows(x, y, r, accumulate: accumulate) }
    case .vectorized:
        // x is reordered once to the kernel's even/odd order (k floats, on the stack like a row of scratch).
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { xpBuf in
            let xp = UnsafePointer(xpBuf.baseAddress!)
            sidetune_nf4_permute_x(x, xpBuf.baseAddress!, k)
            let pc = w.codes.raw.assumingMemoryBound(to: UInt8.self)
            let q = w.quantizedScales.raw.assumingMemoryBound(to: UInt8.self), a2 = w.scaleAbsmax.floats
            let off = w.offset
            NF4.levels.withUnsafeBufferPointer { lv in
                NF4.dynamicMap.withUnsafeBufferPointer { dyn in
                    let (lp, dp) = (lv.baseAddress!, dyn.baseAddress!)
                    pool.parallelChunks(n, minChunk: 16) { r in
                        sidetune_nf4_gemv(pc, q, a2, off, lp, dp, xp, y, k, r.lowerBound, r.upperBound, accumulate ? 1 : 0)
                    }
                }
            }
        }
    }
}

/// Rows of W de-quantised per tile in the GEMM path (64 rows x in floats per thread).
let nf4TileRows = 64

/// C[M, out] = A[M, in] W^T with W in NF4 (no autograd). M == 1 runs `nf4Gemv` (the C kernel unless
/// SIDETUNE_NF4_GEMV=reference); larger M de-quantises tiles of W rows and runs the F32 GEMM on them.
public func nf4Matmul(_ a: UnsafePointer<Float>, m: Int, _ w: NF4Weight, _ c: UnsafeMutablePointer<Float>,
                      pool: ThreadPool = .shared) {
    let n = w.rows, k = w.cols
    if m == 1 {
        nf4Gemv(a, w, c, kernel: NF4GemvKernel.selected, pool: pool)
        return
    }
    if m >= 32 {
        // Many rows (training batches): de-quantise chunks of W in parallel into one scratch, then
        // one multi-threaded GEMM per chunk, so X is packed once per chunk rather than per small tile.
        forEachDequantizedChunk(w, pool: pool) { r0, r1, chunk in
            gemm(GEMMShape(m: m, n: r1 - r0, k: k, transA: false, transB: true), a, lda: k, chunk, ldb: k, c + r0, ldc: n, pool: pool)
        }
        return
    }
    let tiles = (n + nf4TileRows - 1) / nf4TileRows
    let threads = max(1, min(pool.activeThreads, tiles))
    let scratch = Workspace(floats: threads * nf4TileRows * k)
    let base = scratch.floats
    pool.parallelFor(threads) { t in
        let tile = base + t * nf4TileRows * k
        var i = t
        while i < tiles {
            let r0 = i * nf4TileRows, r1 = min(n, r0 + nf4TileRows)
            w.dequantizeRows(r0, r1, into: tile)
            gemm(GEMMShape(m: m, n: r1 - r0, k: k, transA: false, transB: true), a, lda: k, tile, ldb: k,
                 c + r0, ldc: n, singleThreaded: true)
            i += threads
        }
    }
}

/// Calls `body(r0, r1, rows)` for chunks of at most 1,024 rows of W de-quantised to F32 (threads
/// share the de-quantisation). The scratch is transient workspace, never a kept copy of W.
func forEachDequantizedChunk(_ w: NF4Weight, pool: ThreadPool,
                             _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
    let n = w.rows, k = w.cols, chunkRows = min(n, 1024)
    let scratch = Workspace(floats: chunkRows * k)
    var r0 = 0
    while r0 < n {
        let r1 = min(n, r0 + chunkRows), rows = r1 - r0
        let base = scratch.floats
        pool.parallelChunks(rows, minChunk: 16) { r in
            w.dequantizeRows(r0 + r.lowerBound, r0 + r.upperBound, into: base + r.lowerBound * k)
        }
        body(r0, r1, base)
        r0 = r1
    }
}

/// dA[M, in] (+)= dC[M, out] W for NF4 W: tiles of 256 W rows de-quantised, then the F32 GEMM.
public func nf4MatmulBackward(_ g: UnsafePointer<Float>, m: Int, _ w: NF4Weight, _ da: UnsafeMutablePointer<Float>) {
    let n = w.rows, k = w.cols, rowsPerTile = 256
    if m >= 32 {
        forEachDequantizedChunk(w, pool: .shared) { r0, r1, chunk in
            gemm(GEMMShape(m: m, n: k, k: r1 - r0), g + r0, lda: n, chunk, ldb: k, da, ldc: k, accumulate: r0 > 0)
        }
        return
    }
    let scratch = Workspace(floats: rowsPerTile * k)
    var r0 = 0
    while r0 < n {
        let r1 = min(n, r0 + rowsPerTile)
        w.dequantizeRows(r0, r1, into: scratch.floats)
        gemm(GEMMShape(m: m, n: k, k: r1 - r0), g + r0, lda: n, scratch.floats, ldb: k, da, ldc: k, accumulate: r0 > 0)
        r0 = r1
    }
}

extension Tensor {
    /// x [..., in] times an NF4 weight [out, in] transposed -> [..., out]. The weight is frozen;
    /// backward gives dX = dY W (de-quantising tiles again rather than keeping an F32 copy).
    public func matmulNF4(_ w: NF4Weight) -> Tensor {
        precondition(shape.last == w.cols, "matmulNF4: input \(shape) does not end in \(w.cols)")
        let m = count / w.cols
        let x = dtype == .float32 ? self : float32()
        let out = Tensor(shape: Array(shape.dropLast()) + [w.rows])
        nf4Matmul(x.data, m: m, w, out.data)
        let inShape = shape
        return record(out, "matmul_nf4", [self]) { g in
            let gx = Tensor(shape: inShape)
            nf4MatmulBackward(g.data, m: m, w, gx.data)
            return [gx]
        }
    }
}
