import CSideTuneKernels

/// A frozen linear weight [n, k] (PyTorch layout) rounded once to bf16 (to nearest even) and
/// packed as the bf16 GEMM reads it: pairs of consecutive k, in panels of 48 output columns, each
/// [ceil(k/2), 48] uint32 and contiguous (`sidetune_bf16_pack_panels`).
/// Half the f32 weight's bytes, counted in the ledger's weights. Frozen backbones multiply with it
/// in `gemmBFloat16` (`--backbone-precision bf16`): bf16 operands, f32 sums.
public final class PackedBFloat16Weight: @unchecked Sendable {
    public let outFeatures: Int, inFeatures: Int
    let pairs: Int
    let storage: Tensor

    /// Packs `weight` [n, k] (row stride `ld`, default k), split over the pool by weight rows.
    public init(_ weight: UnsafePointer<Float>, outFeatures n: Int, inFeatures k: Int, ld: Int? = nil,
                pool: ThreadPool = .shared) {
        precondition(n >= 0 && k >= 0, "PackedBFloat16Weight: [\(n), \(k)]")
        let ld = ld ?? k
        outFeatures = n
        inFeatures = k
        pairs = (k + 1) / 2
        storage = Tensor(shape: [2 * pairs * n], dtype: .bfloat16, category: .weights)
        let out = storage.storage.raw.assumingMemoryBound(to: UInt32.self), panel = Int(SIDETUNE_BF16_PANEL)
        pool.parallelChunks((n + panel - 1) / panel, minChunk: 1) { r in
            sidetune_bf16_pack_panels(weight, ld, n, k, r.lowerBound * panel, r.upperBound * panel, out)
        }
    }

    /// The weights of `parts` (the same inputs) stacked along the outputs, as one product computes
    /// them all (q, k and v of a fused attention layer).
    public init(stacking parts: [PackedBFloat16Weight]) {
        let k = parts[0].inFeatures, n = parts.reduce(0) { $0 + $1.outFeatures }
        precondition(parts.allSatisfy { $0.inFeatures == k }, "PackedBFloat16Weight: stacked parts need the same inputs")
        outFeatures = n
        inFeatures = k
        pairs = (k + 1) / 2
        storage = Tensor(shape: [2 * pairs * n], dtype: .bfloat16, category: .weights)
        let out = storage.storage.raw.assumingMemoryBound(to: UInt32.self), pairs = pairs
        var j0 = 0
        for part in parts {
            let w = part.outFeatures, src = part.pointer
            for p in 0..<pairs {
                for j in 0..<w { out[sidetune_bf16_panel_offset(n, pairs, p, j0 + j)] = src[part.offset(p, j)] }
            }
            j0 += w
        }
    }

    /// A weight tensor [n, k] in f32.
    public convenience init(_ weight: Tensor, pool: ThreadPool = .shared) {
        precondition(weight.rank == 2 && weight.dtype == .float32, "PackedBFloat16Weight: weight \(weight.shape) \(weight.dtype)")
        self.init(weight.data, outFeatures: weight.shape[0], inFeatures: weight.shape[1], pool: pool)
    }

    var pointer: UnsafePointer<UInt32> { UnsafePointer(storage.storage.raw.assumingMemoryBound(to: UInt32.self)) }

    /// Where the pair (k = 2p, 2p + 1) of output j is stored.
    func offset(_ p: Int, _ j: Int) -> Int { sidetune_bf16_panel_offset(outFeatures, pairs, p, j) }

    /// The weight [n, k] in f32 (exactly the bf16 values), for a caller that needs the f32 layer's
    /// gradient rule.
    public func float32() -> Tensor {
        let n = outFeatures, k = inFeatures, w = Tensor(shape: [n, k]), pw = w.data, src = pointer
        for p in 0..<pairs {
            for j in 0..<n {
                let u = src[offset(p, j)]
                pw[j * k + 2 * p] = Float(bitPattern: (u & 0xffff) << 16)
                if 2 * p + 1 < k { pw[j * k + 2 * p + 1] = Float(bitPattern: u & 0xffff_0000) }
            }
        }
        return w
    }

    /// Bytes the packed weight holds.
    public var byteCount: Int { 4 * pairs * outFeatures }
}

/// c[m, n] (row stride ldc) = x[m, k] W^T with x rounded to bf16 and W packed: bf16 products with
/// f32 sums (vdpbf16ps where the CPU has AVX512_BF16, else the plain loop). Work items are blocks
/// of x's rows: each multiplies its rows by the whole weight, packing 8 at a time into a small
/// scratch of its own, and runs `rowEpilogue` on them while they are in cache (bias, activation,
/// residual + LayerNorm in the fused layers).
public func gemmBFloat16(m: Int, _ x: UnsafePointer<Float>, ldx: Int, _ weight: PackedBFloat16Weight,
                         _ c: UnsafeMutablePointer<Float>, ldc: Int, pool: ThreadPool = .shared, plainKernel: Bool = false,
                         rowEpilogue: ((Range<Int>) -> Void)? = nil) {
    let n = weight.outFeatures, k = weight.inFeatures, pairs = weight.pairs
    if m == 0 || n == 0 { return }
    if k == 0 {
        for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) }
        rowEpilogue?(0..<m)
        return
    }
    let kernel = plainKernel ? sidetune_bf16dot_gemm_panels_plain : sidetune_bf16dot_gemm_panels
    let threads = 2 * m * n * k < 1 << 21 ? 1 : pool.activeThreads
    // Row blocks of 8 (the kernel's tile), about four items per thread, handed out as claimed.
    let blocks = (m + 7) / 8, per = max(1, blocks / (4 * threads)), items = (blocks + per - 1) / per
    let scratch = Tensor(shape: [items * 8 * pairs], category: .workspace) // uint32 pairs, f32-sized
    let ap = UnsafeMutableRawPointer(scratch.data).assumingMemoryBound(to: UInt32.self), bp = weight.pointer
    func item(_ i: Int) {
        let rows = 8 * per * i..<min(m, 8 * per * (i + 1))
        kernel(rows.count, n, k, x + rows.lowerBound * ldx, ldx, bp, c + rows.lowerBound * ldc, ldc, ap + i * 8 * pairs)
        rowEpilogue?(rows)
    }
    withExtendedLifetime((scratch, weight)) {
        if threads == 1 { for i in 0..<items { item(i) } } else { pool.parallelFor(items, item) }
    }
}
