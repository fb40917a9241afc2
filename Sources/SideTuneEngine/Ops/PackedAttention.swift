import Foundation
import CSideTuneKernels

extension Tensor {
    /// Multi-head self-attention read straight from a fused q/k/v projection:
    /// qkv [B, T, 3 H hd] holds [q | k | v], each H heads of hd columns (head h at h hd..<(h+1) hd);
    /// returns softmax(q k^T * scale + mask) v as [B, T, H hd], heads side by side (what the output
    /// projection reads). The same computation as splitting, permuting to [B, H, T, hd] and calling
    /// `attention`, without the split and permute copies (and their backward copies). Key padding
    /// only (no causal mask); a batch entry whose keys are all padding gives zeros.
    ///
    /// Kernel: per (batch, head), 16 queries at a time in the vector lanes, so the row max, the
    /// softmax sum and dQ need no horizontal reductions; padded keys are dropped from the loops (they
    /// contribute exactly 0). Backward recomputes the probabilities from q, k and each row's
    /// log-sum-exp (saved: O(B H T)); dK and dV are reduced over the queries once per 64 queries.
    /// Heads of 4, 8 and 16 dims (LST's and LAST's side networks) take C kernels instead
    /// (attention_narrow.c): the same forward with the exp and P V in one pass, and a backward with
    /// keys in the lanes, which needs no reductions for dK and dV.
    public static func attentionPacked(_ qkv: Tensor, heads: Int, keyPadding: [Float]? = nil, scale: Float? = nil) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[2] % (3 * heads) == 0, "attentionPacked: qkv \(qkv.shape) is not [B, T, 3 x \(heads) heads x dims]")
        let (bsz, t) = (qkv.shape[0], qkv.shape[1])
        if let kp = keyPadding { precondition(kp.count == bsz * t, "key padding mask needs \(bsz * t) values, got \(kp.count)") }
        let rows = (0..<bsz).map { (start: $0 * t, length: t) }
        return packedAttention(qkv, heads: heads, rows: rows, kept: PackedKeys(keyPadding, batch: bsz, keys: t), scale: scale)
    }

    /// The same attention over a packed batch: qkv [1, N, 3 H hd] holds the sequences of
    /// `segments` end to end with no padding rows, and each token attends only within its own
    /// sequence. Returns [1, N, H hd]. No query or key of padding is ever computed, which is what
    /// side networks gain from reading packed taps.
    public static func attentionPacked(_ qkv: Tensor, heads: Int, segments: TokenSegments, scale: Float? = nil) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[0] == 1 && qkv.shape[1] == segments.total && qkv.shape[2] % (3 * heads) == 0,
                     "attentionPacked: qkv \(qkv.shape) is not [1, \(segments.total) tokens, 3 x \(heads) heads x dims]")
        let rows = zip(segments.starts, segments.lengths).map { (start: $0, length: $1) }
        return packedAttention(qkv, heads: heads, rows: rows, kept: PackedKeys(lengths: segments.lengths), scale: scale)
    }

    /// Shared by both layouts: entry b is `rows[b].length` query rows from row `rows[b].start` of
    /// the flattened [rows, 3 dm] qkv, whose keys are `kept`'s entry b (indices within the entry).
    /// Log-sum-exps of (entry, head) sit at start * H + h * length (the [B, H, T] layout when padded).
    private static func packedAttention(_ qkv: Tensor, heads: Int, rows: [(start: Int, length: Int)], kept: PackedKeys,
                                        scale: Float?) -> Tensor {
        let dm = qkv.shape[2] / 3, hd = dm / heads, totalRows = qkv.shape[0] * qkv.shape[1]
        precondition(hd <= packedHeadMaxDims, "attentionPacked: heads of \(hd) dims (at most \(packedHeadMaxDims))")
        let s = scale ?? 1 / Float(hd).squareRoot()
        let out = Tensor(shape: [qkv.shape[0], qkv.shape[1], dm])
        let lse = Tensor(shape: [totalRows * heads])
        let px = UnsafePointer(qkv.data), po = out.data, pl = lse.data
        parallelEntryHeads(rows.count, heads) { b, h in
            let (r0, t) = rows[b]
            let geom = PackedGeometry(base: px + r0 * 3 * dm, ld: 3 * dm, dm: dm, col: h * hd, t: t)
            let o = po + r0 * dm + h * hd, l = pl + r0 * heads + h * t
            packedForward(hd, geom, kept, b, s, o, dm, l)
        }
        // Backward reads qkv and the output (bf16 under `--activation-bits` 16 or fewer).
        let recording = Autograd.isEnabled && qkv.requiresGrad
        let bits: ActivationBits = recording ? .current : .thirtyTwo
        let keptQKV = SavedTensor(qkv, bits: bits), keptO = SavedTensor(out.detach(), bits: bits)
        return record(out, "attention_packed", [qkv]) { [lse] g in
            let qkv = keptQKV.float32, o = keptO.float32 // (shadowing the forward's)
            let px = UnsafePointer(qkv.data)
            let gx = Tensor(shape: qkv.shape)
            let pg = UnsafePointer(g.data), po = UnsafePointer(o.data), pl = UnsafePointer(lse.data), pgx = gx.data
            parallelEntryHeads(rows.count, heads) { b, h in
                let (r0, t) = rows[b]
                let geom = PackedGeometry(base: px + r0 * 3 * dm, ld: 3 * dm, dm: dm, col: h * hd, t: t)
                let go = pg + r0 * dm + h * hd, oo = po + r0 * dm + h * hd, gq = pgx + r0 * 3 * dm + h * hd
                let l = pl + r0 * heads + h * t
                packedBackward(hd, geom, kept, b, s, go, oo, l, gq)
            }
            return withExtendedLifetime((qkv, o)) { [gx] }
        }
    }
}

/// body(b, h) for every (entry, head) on the shared pool. Heads of one entry write neighbouring
/// floats of the same rows, so a thread takes whole entries (heads spread over two threads shared
/// cache lines: the backward kernel ran 2x slower per token on 2 threads), unless there are too
/// few entries to go round.
private func parallelEntryHeads(_ entries: Int, _ heads: Int, _ body: (Int, Int) -> Void) {
    let pool = ThreadPool.shared
    if entries >= 2 * pool.activeThreads {
        pool.parallelFor(entries) { b in for h in 0..<heads { body(b, h) } }
    } else {
        pool.parallelFor(entries * heads) { bh in body(bh / heads, bh % heads) }
    }
}

/// Heads wider than this take the split path (`attention`): the lanes-over-queries kernel's
/// scratch grows with the head size and GEMMs win on wide heads.
public let packedHeadMaxDims = 32

/// Where one (batch, head)'s q, k and v live in the packed [T, 3 dm] rows of its batch entry.
struct PackedGeometry {
    let base: UnsafePointer<Float>
    let ld: Int, dm: Int, col: Int, t: Int
    @inline(__always) func q(_ i: Int) -> UnsafePointer<Float> { base + i * ld + col }
    @inline(__always) func k(_ j: Int) -> UnsafePointer<Float> { base + i0(j) + dm }
    @inline(__always) func v(_ j: Int) -> UnsafePointer<Float> { base + i0(j) + 2 * dm }
    @inline(__always) private func i0(_ j: Int) -> Int { j * ld + col }
}

/// The kept (non-padding) key indices of every batch entry.
struct PackedKeys: @unchecked Sendable {
    let indices: [Int32]
    let starts: [Int]
    init(_ keyPadding: [Float]?, batch: Int, keys: Int) {
        var idx: [Int32] = [], st = [0]
        idx.reserveCapacity(batch * keys)
        for b in 0..<batch {
            for j in 0..<keys where keyPadding.map({ $0[b * keys + j] != 0 }) ?? true { idx.append(Int32(j)) }
            st.append(idx.count)
        }
        indices = idx
        starts = st
    }
    /// Every key of each packed sequence (no padding to drop).
    init(lengths: [Int]) {
        var idx: [Int32] = [], st = [0]
        idx.reserveCapacity(lengths.reduce(0, +))
        for l in lengths {
            for j in 0..<l { idx.append(Int32(j)) }
            st.append(idx.count)
        }
        indices = idx
        starts = st
    }
    @inline(__always) func count(_ b: Int) -> Int { starts[b + 1] - starts[b] }
    @inline(__always) func key(_ b: Int, _ jj: Int) -> Int { Int(indices[starts[b] + jj]) }
    /// body(entry b's kept key indices, contiguous), for the C kernels.
    func withKeys(_ b: Int, _ body: (UnsafePointer<Int32>) -> Void) {
        indices.withUnsafeBufferPointer { body($0.baseAddress! + starts[b]) }
    }
}

/// Forward of one (batch, head): out rows at `o` (stride ldo), log-sum-exps at `lse`.
private func packedForward(_ hd: Int, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                        _ o: UnsafeMutablePointer<Float>, _ ldo: Int, _ lse: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t
    if n == 0 {
        for i in 0..<t { (o + i * ldo).initialize(repeating: 0, count: hd); lse[i] = -.infinity }
        return
    }
    if sidetune_attention_narrow_supported(hd) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: sidetune_attention_forward_narrow_scratch(hd, n)) { buffer in
            kept.withKeys(b) { sidetune_attention_forward_narrow(hd, t, n, $0, g.base, g.ld, g.dm, g.col, s, o, ldo, lse, buffer.baseAddress!) }
        }
        return
    }
    // The C kernel for other widths (rowkernels.c): 16 queries in the lanes.
    withUnsafeTemporaryAllocation(of: Float.self, capacity: st_attention_packed_forward_scratch(hd, n)) { buffer in
        kept.withKeys(b) { st_attention_packed_forward(hd, t, n, $0, g.base, g.ld, g.dm, g.col, s, o, ldo, lse, buffer.baseAddress!) }
    }
}

/// Backward of one (batch, head). go, oo: dO and O rows (stride dm); gq: this head's dQ columns in
/// the [T, 3 dm] gradient rows (dK at + dm, dV at + 2 dm), all written (zeros for padded keys).
private func packedBackward(_ hd: Int, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                         _ go: UnsafePointer<Float>, _ oo: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                                         _ gq: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t, dm = g.dm, ld = g.ld
    // Padded keys (and every key when all are padding) get zero dK, dV; the kernels write the kept
    // keys', so when every key is kept there is nothing to clear.
    if n < t {
        for j in 0..<t {
            (gq + j * ld + dm).initialize(repeating: 0, count: hd)
            (gq + j * ld + 2 * dm).initialize(repeating: 0, count: hd)
        }
    }
    if n == 0 {
        for i in 0..<t { (gq + i * ld).initialize(repeating: 0, count: hd) }
        return
    }
    if sidetune_attention_narrow_supported(hd) {
        // The C kernel, with keys in the lanes: no reductions over queries per key.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: sidetune_attention_backward_narrow_scratch(hd, t, n)) { buffer in
            kept.withKeys(b) {
                sidetune_attention_backward_narrow(hd, t, n, $0, g.base, ld, dm, g.col, s, go, oo, dm, lse, gq, buffer.baseAddress!)
            }
        }
        return
    }
    withUnsafeTemporaryAllocation(of: Float.self, capacity: st_attention_packed_backward_scratch(hd, n)) { buffer in
        kept.withKeys(b) {
            st_attention_packed_backward(hd, t, n, $0, g.base, ld, dm, g.col, s, go, oo, lse, gq, buffer.baseAddress!)
        }
    }
}
