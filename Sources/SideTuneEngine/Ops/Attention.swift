import CSideTuneKernels
import Foundation

/// Masks for scaled dot-product attention.
public struct AttentionMask: Sendable {
    /// [batch, keys]: 1 for a real token, 0 for padding (a tokenizer's attention mask).
    public var keyPadding: [Float]?
    /// Query i may attend only to keys j <= i + (keys - queries) (decoder self-attention).
    public var causal: Bool
    public init(keyPadding: [Float]? = nil, causal: Bool = false) {
        self.keyPadding = keyPadding
        self.causal = causal
    }
    public static let none = AttentionMask()

    /// The additive mask [batch, 1, queries, keys] (0 keep, -inf drop) used by the reference path.
    func additive(batch: Int, queries: Int, keys: Int) -> Tensor? {
        if keyPadding == nil && !causal { return nil }
        let m = Tensor.zeros([batch, 1, queries, keys])
        for b in 0..<batch {
            for i in 0..<queries {
                for j in 0..<keys where !allowed(b, i, j, queries, keys) {
                    m.data[(b * queries + i) * keys + j] = -Float.infinity
                }
            }
        }
        return m
    }

    /// Per query row i, how many keys it may see: all, or (causal) those j <= i + (keys - queries).
    func causalLimits(queries tq: Int, keys tk: Int) -> (Int) -> Int {
        let causal = self.causal
        return { i in causal ? max(0, min(tk, i + (tk - tq) + 1)) : tk }
    }

    @inline(__always) func allowed(_ b: Int, _ i: Int, _ j: Int, _ queries: Int, _ keys: Int) -> Bool {
        if let keyPadding, keyPadding[b * keys + j] == 0 { return false }
        if causal && j > i + (keys - queries) { return false }
        return true
    }
}

extension Tensor {
    /// softmax(q k^T * scale + mask) v for q [B, H, Tq, D], k and v [B, H, Tk, D] -> [B, H, Tq, D].
    /// Reference path: composed from the autograd ops, keeps the [B, H, Tq, Tk] probabilities.
    public static func attentionReference(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask = .none,
                                          scale: Float? = nil) -> Tensor {
        let (b, tq, tk, d) = (q.shape[0], q.shape[2], k.shape[2], q.shape[3])
        let s = scale ?? 1 / Float(d).squareRoot()
        let scores = Tensor.matmul(q, k, transposeB: true) * s
        let p = scores.softmax(mask: mask.additive(batch: b, queries: tq, keys: tk))
        return Tensor.matmul(p, v)
    }

    /// Same result as `attentionReference`, blocked: per (batch, head) and block of 64 queries the
    /// scores live only in a scratch buffer, and backward recomputes them from q and k and each
    /// row's log-sum-exp. Kept for backward: O(B H Tq) statistics instead of O(B H Tq Tk).
    /// `kernel` picks the implementation (tests compare them); `.automatic` takes the row-wise one
    /// for heads of at most 8 dimensions.
    public static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask = .none,
                                 scale: Float? = nil, kernel: AttentionKernel = .automatic) -> Tensor {
        precondition(q.rank == 4 && k.rank == 4 && v.rank == 4, "attention needs [B, H, T, D] tensors")
        let (bsz, h, d) = (q.shape[0], q.shape[1], q.shape[3])
        let tk = k.shape[2], dv = v.shape[3]
        precondition(k.shape == [bsz, h, tk, d] && v.shape[0...2] == [bsz, h, tk],
                     "attention shapes q \(q.shape) k \(k.shape) v \(v.shape)")
        if let kp = mask.keyPadding {
            precondition(kp.count == bsz * tk, "key padding mask needs \(bsz * tk) values, got \(kp.count)")
        }
        let s = scale ?? 1 / Float(d).squareRoot()
        let fitsSmall = (2 * (d + dv) + 2) * (tk + 15) <= smallHeadScratchFloats
        if kernel == .smallHeads || (kernel == .automatic && d <= smallHeadDims && dv <= smallHeadDims && fitsSmall) {
            precondition(fitsSmall, "attention: the small-head kernel's scratch does not fit \(tk) keys of \(d) + \(dv) dims")
            return attentionSmallHeads(q, k, v, mask: mask, scale: s)
        }
        let (out, lse) = blockedAttentionForward(q, k, v, mask: mask, scale: s)
        let kept = AttentionSaved(q, k, v, output: out)
        return record(out, "attention", [q, k, v]) { [lse] g in
            let (q, k, v, o) = kept.float32() // (shadowing the forward's: this rule reads only its own)
            let (gq, gk, gv) = blockedAttentionBackward(q, k, v, output: o, lse: lse, gradient: g, mask: mask, scale: s)
            return kept.gradients(gq, gk, gv)
        }
    }

    /// The blocked kernel's forward for contiguous q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv]:
    /// the output [B, H, Tq, Dv] and each row's log-sum-exp [B, H, Tq] (what backward recomputes the
    /// probabilities from). Records nothing.
    static func blockedAttentionForward(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask,
                                        scale s: Float) -> (output: Tensor, lse: Tensor) {
        let (bsz, h, tq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let tk = k.shape[2], dv = v.shape[3]
        let out = Tensor(shape: [bsz, h, tq, dv])
        let lse = Tensor(shape: [bsz, h, tq])
        let block = attentionBlockRows
        let pq = q.data, pk = k.data, pv = v.data, po = out.data, pl = lse.data
        // The key-padding mask as a plain buffer (read in the inner loop without array overhead).
        let keyPaddingBuffer = mask.keyPadding.map { kp in Tensor(kp, shape: [kp.count]) }
        let keyPadding: UnsafePointer<Float>? = keyPaddingBuffer.map { UnsafePointer($0.data) }
        defer { withExtendedLifetime(keyPaddingBuffer) {} }
        let causalLimit = mask.causalLimits(queries: tq, keys: tk)
        ThreadPool.shared.parallelFor(bsz * h) { bh in
            let b = bh / h
            withUnsafeTemporaryAllocation(of: Float.self, capacity: block * tk) { scratch in
                let sc = scratch.baseAddress!
                var i0 = 0
                while i0 < tq {
                    let rows = min(block, tq - i0)
                    let qb = pq + (bh * tq + i0) * d
                    gemm(GEMMShape(m: rows, n: tk, k: d, transB: true), qb, lda: d, pk + bh * tk * d, ldb: d, sc, ldc: tk,
                         singleThreaded: true)
                    for r in 0..<rows {
                        let row = sc + r * tk, i = i0 + r
                        // Key padding (the same row mask for every query of batch b) and the causal limit.
                        st_scale_mask_row(row, tk, s, 0, keyPadding.map { $0 + b * tk }, causalLimit(i))
                        // Vectorised max / exp / normalise; an all-masked row gives zeros and lse -inf.
                        pl[bh * tq + i] = softmaxRow(row, row, tk)
                    }
                    gemm(GEMMShape(m: rows, n: dv, k: tk), sc, lda: tk, pv + bh * tk * dv, ldb: dv, po + (bh * tq + i0) * dv,
                         ldc: dv, singleThreaded: true)
                    i0 += rows
                }
            }
        }
        return (out, lse)
    }

    /// The blocked kernel's backward: the gradients of q, k and v from the output's gradient `g`
    /// [B, H, Tq, Dv], with the probabilities recomputed from q, k and the rows' log-sum-exps.
    static func blockedAttentionBackward(_ q: Tensor, _ k: Tensor, _ v: Tensor, output o: Tensor, lse: Tensor,
                                         gradient g: Tensor, mask: AttentionMask,
                                         scale s: Float) -> (q: Tensor, k: Tensor, v: Tensor) {
        let (bsz, h, tq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let tk = k.shape[2], dv = v.shape[3]
        let block = attentionBlockRows
        let keyPaddingBuffer = mask.keyPadding.map { kp in Tensor(kp, shape: [kp.count]) }
        let causalLimit = mask.causalLimits(queries: tq, keys: tk)
        let pq = q.data, pk = k.data, pv = v.data
        let pl = lse.data
        let keyPadding: UnsafePointer<Float>? = keyPaddingBuffer.map { UnsafePointer($0.data) }
        let gq = Tensor.zeros(q.shape), gk = Tensor.zeros(k.shape), gv = Tensor.zeros(v.shape)
        let pg = g.data, po = o.data
        // Per (batch, head): dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO * O)), dQ = dS K s, dK = dS^T Q s.
        ThreadPool.shared.parallelFor(bsz * h) { bh in
            let b = bh / h
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * block * tk) { scratch in
                let p = scratch.baseAddress!, dp = p + block * tk
                var i0 = 0
                while i0 < tq {
                    let rows = min(block, tq - i0)
                    let qb = pq + (bh * tq + i0) * d, gb = pg + (bh * tq + i0) * dv
                    gemm(GEMMShape(m: rows, n: tk, k: d, transB: true), qb, lda: d, pk + bh * tk * d, ldb: d, p, ldc: tk,
                         singleThreaded: true)
                    for r in 0..<rows {
                        let i = i0 + r, l = pl[bh * tq + i], row = p + r * tk
                        if l == -Float.infinity { row.initialize(repeating: 0, count: tk); continue }
                        // P = exp(S s - lse), vectorised; masked keys are -inf first, then exactly 0.
                        st_scale_mask_row(row, tk, s, l, keyPadding.map { $0 + b * tk }, causalLimit(i))
                        expRowMasked(row, tk)
                    }
                    // dV += P^T dO
                    gemm(GEMMShape(m: tk, n: dv, k: rows, transA: true), p, lda: tk, gb, ldb: dv, gv.data + bh * tk * dv,
                         ldc: dv, accumulate: true, singleThreaded: true)
                    // dP = dO V^T
                    gemm(GEMMShape(m: rows, n: tk, k: dv, transB: true), gb, lda: dv, pv + bh * tk * dv, ldb: dv, dp, ldc: tk,
                         singleThreaded: true)
                    for r in 0..<rows {
                        let i = i0 + r
                        let delta = dot(dv, gb + r * dv, po + (bh * tq + i) * dv)
                        st_softmax_grad_row(p + r * tk, dp + r * tk, tk, delta, s)
                    }
                    // dQ = dS K ; dK += dS^T Q
                    gemm(GEMMShape(m: rows, n: d, k: tk), dp, lda: tk, pk + bh * tk * d, ldb: d, gq.data + (bh * tq + i0) * d,
                         ldc: d, singleThreaded: true)
                    gemm(GEMMShape(m: tk, n: d, k: rows, transA: true), dp, lda: tk, qb, ldb: d, gk.data + bh * tk * d,
                         ldc: d, accumulate: true, singleThreaded: true)
                    i0 += rows
                }
            }
        }
        return withExtendedLifetime((q, k, v, o, lse, g, keyPaddingBuffer)) { (gq, gk, gv) }
    }
}

/// row[j] *= scale for j < n, and -inf where `keep` (a key-padding row) is 0: a score row ready for
/// `softmaxRow`. Shared by the blocked attention and the fused inference path.
@inline(__always) func scaleAndMaskRow(_ row: UnsafeMutablePointer<Float>, _ n: Int, scale: Float, keep: UnsafePointer<Float>?) {
    st_scale_mask_row(row, n, scale, 0, keep, n)
}

/// Which attention implementation runs: both give the same results and gradients.
public enum AttentionKernel: Sendable {
    case automatic
    /// 64-query blocks with GEMMs for QK^T and PV (heads of any size).
    case blocked
    /// Row by row with axpys over transposed keys (thin heads).
    case smallHeads
}

/// Queries per block in the blocked kernel (its scratch holds this many score rows).
let attentionBlockRows = 64

/// Heads up to this many dimensions take the row-wise kernel (LST's side blocks have 12 of 4).
/// Measured per layer of 32 x 64 tokens: 4 dims 9.5 against 11.9 ms (blocked); at 16 dims the
/// blocked GEMMs win (1.4 against 1.7 ms).
public let smallHeadDims = 8
/// Its per-task scratch (transposed K and V, their gradients, two rows) must stay small: it lives
/// on the worker's stack and in L1/L2.
let smallHeadScratchFloats = 32 * 1024

extension Tensor {
    /// `attention` for thin heads. With d of 4, the GEMM formulation spends its time on d-long
    /// dots and, in backward, on gathering strided columns of P and dS for P^T dO and dS^T Q. Here
    /// K and V are transposed once per (batch, head) into rows padded to 16 keys; a query's scores
    /// are built 16 keys at a time in registers (d FMAs each, mask and max in the same pass), and
    /// backward accumulates dK^T and dV^T with axpys, writing them back once. Causal rows stop at
    /// their last allowed key. Saved for backward, as in the blocked path: the row log-sum-exps.
    static func attentionSmallHeads(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask, scale s: Float) -> Tensor {
        let (bsz, h, tq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let tk = k.shape[2], dv = v.shape[3], tkp = (tk + 15) / 16 * 16
        let out = Tensor(shape: [bsz, h, tq, dv])
        let lse = Tensor(shape: [bsz, h, tq])
        // An additive key mask per batch entry, tkp long: 0 keeps a key, -inf drops padding and the
        // round-up to 16 keys.
        let keyMask = Tensor(shape: [bsz, tkp])
        for b in 0..<bsz {
            for j in 0..<tkp {
                let keep = j < tk && (mask.keyPadding.map { $0[b * tk + j] != 0 } ?? true)
                keyMask.data[b * tkp + j] = keep ? 0 : -.infinity
            }
        }
        let pq = UnsafePointer(q.data), pk = UnsafePointer(k.data), pv = UnsafePointer(v.data), po = out.data, pl = lse.data
        let pm = UnsafePointer(keyMask.data)
        let causal = mask.causal

        /// dst [c, tkp] = src [tk, c] for the (batch, head) bh, zeros past tk.
        @inline(__always) func transpose(_ src: UnsafePointer<Float>, _ c: Int, _ bh: Int, _ dst: UnsafeMutablePointer<Float>) {
            let base = src + bh * tk * c
            for p in 0..<c { (dst + p * tkp + tk).initialize(repeating: 0, count: tkp - tk) }
            for j in 0..<tk { for p in 0..<c { dst[p * tkp + j] = base[j * c + p] } }
        }

        // The rows of one (batch, head) are the C kernel's (rowkernels.c): scores 16 keys at a time
        // in registers (d multiply-adds each, mask and max in the same pass), exp, P V.
        ThreadPool.shared.parallelFor(bsz * h) { bh in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: (d + dv + 1) * tkp) { buffer in
                let kT = buffer.baseAddress!, vT = kT + d * tkp, row = vT + dv * tkp
                transpose(pk, d, bh, kT)
                transpose(pv, dv, bh, vT)
                st_attention_small_forward(tq, tk, tkp, d, dv, pq + bh * tq * d, kT, vT, pm + (bh / h) * tkp, causal, s,
                                           po + bh * tq * dv, pl + bh * tq, row)
            }
        }
        let kept = AttentionSaved(q, k, v, output: out), shapes = (q.shape, k.shape, v.shape)
        return record(out, "attention", [q, k, v]) { [lse, keyMask] g in
            withExtendedLifetime(keyMask) {}
            let (q, k, v, o) = kept.float32() // (shadowing the forward's: this rule reads only its own)
            let pq = UnsafePointer(q.data), pk = UnsafePointer(k.data), pv = UnsafePointer(v.data)
            let pl = UnsafePointer(lse.data), pg = UnsafePointer(g.data), po = UnsafePointer(o.data)
            let gq = Tensor(shape: shapes.0), gk = Tensor(shape: shapes.1), gv = Tensor(shape: shapes.2)
            // Per row i: P = exp(S - lse); dV^T += dO_i P; dP = dO_i V^T; dS = P (dP - dO_i . O_i) s;
            // dQ_i = dS K; dK^T += q_i dS.
            ThreadPool.shared.parallelFor(bsz * h) { bh in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: (2 * (d + dv) + 2) * tkp) { buffer in
                    let kT = buffer.baseAddress!, vT = kT + d * tkp, dkT = vT + dv * tkp, dvT = dkT + d * tkp
                    let p = dvT + dv * tkp, ds = p + tkp
                    transpose(pk, d, bh, kT)
                    transpose(pv, dv, bh, vT)
                    dkT.initialize(repeating: 0, count: (d + dv) * tkp)
                    st_attention_small_backward(tq, tk, tkp, d, dv, pq + bh * tq * d, kT, vT, pm + (bh / h) * tkp, causal, s,
                                                pg + bh * tq * dv, po + bh * tq * dv, pl + bh * tq, gq.data + bh * tq * d,
                                                dkT, dvT, p, ds)
                    let gkb = gk.data + bh * tk * d, gvb = gv.data + bh * tk * dv
                    for j in 0..<tk {
                        for e in 0..<d { gkb[j * d + e] = dkT[e * tkp + j] }
                        for cd in 0..<dv { gvb[j * dv + cd] = dvT[cd * tkp + j] }
                    }
                }
            }
            return withExtendedLifetime((q, k, v, o)) { kept.gradients(gq, gk, gv) }
        }
    }
}

/// What attention's backward reads: q, k, v and the output (the probabilities are recomputed from
/// q, k and each row's log-sum-exp, never kept), rounded to bf16 under `--activation-bits` 16 or
/// fewer and widened again for backward.
struct AttentionSaved {
    let q: SavedTensor, k: SavedTensor, v: SavedTensor, o: SavedTensor
    let needs: (Bool, Bool, Bool)

    init(_ q: Tensor, _ k: Tensor, _ v: Tensor, output: Tensor) {
        let recording = Autograd.isEnabled && (q.requiresGrad || k.requiresGrad || v.requiresGrad)
        let bits: ActivationBits = recording ? .current : .thirtyTwo // nothing rounded when nothing is kept
        self.q = SavedTensor(q, bits: bits)
        self.k = SavedTensor(k, bits: bits)
        self.v = SavedTensor(v, bits: bits)
        o = SavedTensor(output.detach(), bits: bits) // never `output` itself: its node would own it
        needs = (q.requiresGrad, k.requiresGrad, v.requiresGrad)
    }

    func float32() -> (Tensor, Tensor, Tensor, Tensor) { (q.float32, k.float32, v.float32, o.float32) }

    func gradients(_ gq: Tensor, _ gk: Tensor, _ gv: Tensor) -> [Tensor?] {
        [needs.0 ? gq : nil, needs.1 ? gk : nil, needs.2 ? gv : nil]
    }
}

/// x[j] = exp(x[j]) in place, with exactly 0 where x[j] is -infinity (the vector exp clamps to ~1e-38).
@inline(__always) func expRowMasked(_ x: UnsafeMutablePointer<Float>, _ n: Int) { st_exp_row_masked(x, n) }
