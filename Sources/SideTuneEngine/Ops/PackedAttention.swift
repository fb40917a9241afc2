import Foundation

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
    public static func attentionPacked(_ qkv: Tensor, heads: Int, keyPadding: [Float]? = nil, scale: Float? = nil) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[2] % (3 * heads) == 0, "attentionPacked: qkv \(qkv.shape) is not [B, T, 3 x \(heads) heads x dims]")
        let (bsz, t, dm) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3)
        let hd = dm / heads
        precondition(hd <= packedHeadMaxDims, "attentionPacked: heads of \(hd) dims (at most \(packedHeadMaxDims))")
        if let kp = keyPadding { precondition(kp.count == bsz * t, "key padding mask needs \(bsz * t) values, got \(kp.count)") }
        let s = scale ?? 1 / Float(hd).squareRoot()
        let out = Tensor(shape: [bsz, t, dm])
        let lse = Tensor(shape: [bsz, heads, t])
        let kept = PackedKeys(keyPadding, batch: bsz, keys: t)
        let px = UnsafePointer(qkv.data), po = out.data, pl = lse.data
        ThreadPool.shared.parallelFor(bsz * heads) { bh in
            let b = bh / heads, h = bh % heads
            let geom = PackedGeometry(base: px + b * t * 3 * dm, ld: 3 * dm, dm: dm, col: h * hd, t: t)
            // Specialised copies for the common head sizes: constant trip counts unroll, and the
            // kernels are plain generic functions (not closures) so that vexp inlines.
            let o = po + b * t * dm + h * hd, l = pl + bh * t
            switch hd {
            case 4: packedForward(Dims4(), geom, kept, b, s, o, dm, l)
            case 8: packedForward(Dims8(), geom, kept, b, s, o, dm, l)
            case 16: packedForward(Dims16(), geom, kept, b, s, o, dm, l)
            default: packedForward(DimsAny(n: hd), geom, kept, b, s, o, dm, l)
            }
        }
        let o = out.detach()
        return record(out, "attention_packed", [qkv]) { [lse] g in
            let gx = Tensor(shape: qkv.shape)
            let pg = UnsafePointer(g.data), po = UnsafePointer(o.data), pl = UnsafePointer(lse.data), pgx = gx.data
            ThreadPool.shared.parallelFor(bsz * heads) { bh in
                let b = bh / heads, h = bh % heads
                let geom = PackedGeometry(base: px + b * t * 3 * dm, ld: 3 * dm, dm: dm, col: h * hd, t: t)
                let go = pg + b * t * dm + h * hd, oo = po + b * t * dm + h * hd, gq = pgx + b * t * 3 * dm + h * hd
                switch hd {
                case 4: packedBackward(Dims4(), geom, kept, b, s, go, oo, pl + bh * t, gq)
                case 8: packedBackward(Dims8(), geom, kept, b, s, go, oo, pl + bh * t, gq)
                case 16: packedBackward(Dims16(), geom, kept, b, s, go, oo, pl + bh * t, gq)
                default: packedBackward(DimsAny(n: hd), geom, kept, b, s, go, oo, pl + bh * t, gq)
                }
            }
            return [gx]
        }
    }
}

/// Heads wider than this take the split path (`attention`): the lanes-over-queries kernel's
/// scratch grows with the head size and GEMMs win on wide heads.
public let packedHeadMaxDims = 32

/// A head size: a constant in the specialised copies, a stored value in the general one.
protocol HeadDims { var n: Int { get } }
struct Dims4: HeadDims { var n: Int { 4 } }
struct Dims8: HeadDims { var n: Int { 8 } }
struct Dims16: HeadDims { var n: Int { 16 } }
struct DimsAny: HeadDims { let n: Int }

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
    @inline(__always) func count(_ b: Int) -> Int { starts[b + 1] - starts[b] }
    @inline(__always) func key(_ b: Int, _ jj: Int) -> Int { Int(indices[starts[b] + jj]) }
}

/// Copies the kept keys' k and v rows of one (batch, head) into contiguous [n, hd] buffers.
@inline(__always)
private func gatherKeys(_ hd: Int, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int,
                        _ kc: UnsafeMutablePointer<Float>, _ vc: UnsafeMutablePointer<Float>) {
    for jj in 0..<kept.count(b) {
        let j = kept.key(b, jj)
        let kr = g.k(j), vr = g.v(j)
        for p in 0..<hd { kc[jj * hd + p] = kr[p]; vc[jj * hd + p] = vr[p] }
    }
}

/// Forward of one (batch, head): out rows at `o` (stride ldo), log-sum-exps at `lse`.
private func packedForward<D: HeadDims>(_ dims: D, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                        _ o: UnsafeMutablePointer<Float>, _ ldo: Int, _ lse: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t, hd = dims.n
    if n == 0 {
        for i in 0..<t { (o + i * ldo).initialize(repeating: 0, count: hd); lse[i] = -.infinity }
        return
    }
    // Scratch: kept k and v rows [n, hd] each, the block's scores [n] x 16 lanes, q^T and the
    // output accumulators [hd] x 16 lanes each.
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * n * hd + 16 * n + 32 * hd) { buffer in
        packedForwardKernel(dims, g, kept, b, s, o, ldo, lse, buffer.baseAddress!)
    }
}

private func packedForwardKernel<D: HeadDims>(_ dims: D, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                              _ o: UnsafeMutablePointer<Float>, _ ldo: Int, _ lse: UnsafeMutablePointer<Float>,
                                              _ scratch: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t, hd = dims.n
    let kc = scratch, vc = kc + n * hd, sc = vc + n * hd, qT = sc + 16 * n, acc = qT + 16 * hd
    gatherKeys(hd, g, kept, b, kc, vc)
    var i0 = 0
    while i0 < t {
        let lanes = min(16, t - i0)
        // q^T, pre-scaled; lanes past the end are 0 (their results are not stored).
        for p in 0..<hd {
            var v = V16()
            for l in 0..<lanes { v[l] = g.q(i0 + l)[p] * s }
            storeV(qT + 16 * p, v)
        }
        var m = V16(repeating: -.infinity)
        for jj in 0..<n {
            let kr = kc + jj * hd
            var x = V16()
            for p in 0..<hd { x.addProduct(loadV(qT + 16 * p), V16(repeating: kr[p])) }
            storeV(sc + 16 * jj, x)
            m = m.replacing(with: x, where: x .> m)
        }
        for c in 0..<hd { storeV(acc + 16 * c, V16()) }
        let sum = expLanes(sc, n, shift: m)
        for jj in 0..<n {
            let e = loadV(sc + 16 * jj)
            let vr = vc + jj * hd
            for c in 0..<hd { storeV(acc + 16 * c, loadV(acc + 16 * c).addingProduct(e, V16(repeating: vr[c]))) }
        }
        let inv = 1 / sum
        for c in 0..<hd {
            let r = loadV(acc + 16 * c) * inv
            for l in 0..<lanes { o[(i0 + l) * ldo + c] = r[l] }
        }
        for l in 0..<lanes { lse[i0 + l] = m[l] + Foundation.log(sum[l]) }
        i0 += 16
    }
}

/// Queries per backward group: P and dS for a group are kept as [n keys] x 64 (key-major), then
/// dV = P^T dO and dK = dS^T (s Q) are reduced over the group's queries.
private let packedGroup = 64

/// Backward of one (batch, head). go, oo: dO and O rows (stride dm); gq: this head's dQ columns in
/// the [T, 3 dm] gradient rows (dK at + dm, dV at + 2 dm), all written (zeros for padded keys).
private func packedBackward<D: HeadDims>(_ dims: D, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                         _ go: UnsafePointer<Float>, _ oo: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                                         _ gq: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t, dm = g.dm, ld = g.ld, hd = dims.n
    // Padded keys (and every key when all are padding) get zero dK, dV.
    for j in 0..<t {
        (gq + j * ld + dm).initialize(repeating: 0, count: hd)
        (gq + j * ld + 2 * dm).initialize(repeating: 0, count: hd)
    }
    if n == 0 {
        for i in 0..<t { (gq + i * ld).initialize(repeating: 0, count: hd) }
        return
    }
    let scratch = 4 * n * hd + 2 * n * packedGroup + 2 * hd * packedGroup + 16 * hd + 16 * n
    withUnsafeTemporaryAllocation(of: Float.self, capacity: scratch) { buffer in
        packedBackwardKernel(dims, g, kept, b, s, go, oo, lse, gq, buffer.baseAddress!)
    }
}

private func packedBackwardKernel<D: HeadDims>(_ dims: D, _ g: PackedGeometry, _ kept: PackedKeys, _ b: Int, _ s: Float,
                                               _ go: UnsafePointer<Float>, _ oo: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                                               _ gq: UnsafeMutablePointer<Float>, _ scratch: UnsafeMutablePointer<Float>) {
    let n = kept.count(b), t = g.t, dm = g.dm, ld = g.ld, hd = dims.n, group = packedGroup
    let kc = scratch, vc = kc + n * hd, dkc = vc + n * hd, dvc = dkc + n * hd
    let pT = dvc + n * hd, dsT = pT + n * group, qT = dsT + n * group, dT = qT + hd * group, dq = dT + hd * group
    let sc = dq + 16 * hd
    gatherKeys(hd, g, kept, b, kc, vc)
    dkc.initialize(repeating: 0, count: 2 * n * hd)
    var g0 = 0
    while g0 < t {
        let gl = min(group, t - g0), blocks = (gl + 15) / 16
        // q^T (pre-scaled, as in forward) and dO^T for the group, zero past the end (those lanes
        // then give P = 1, dS = 0 and add nothing: their dO is 0).
        for p in 0..<hd {
            for l in 0..<(16 * blocks) {
                let i = g0 + l
                qT[p * group + l] = l < gl ? g.q(i)[p] * s : 0
                dT[p * group + l] = l < gl ? go[i * dm + p] : 0
            }
        }
        for blk in 0..<blocks {
            let l0 = 16 * blk, lanes = min(16, gl - l0)
            var lv = V16(), dd = V16()
            for l in 0..<lanes {
                let i = g0 + l0 + l
                lv[l] = lse[i]
                var x: Float = 0
                for c in 0..<hd { x += go[i * dm + c] * oo[i * dm + c] }
                dd[l] = x
            }
            for p in 0..<hd { storeV(dq + 16 * p, V16()) }
            // P for the block: scores, then exp in one pass of its own.
            for jj in 0..<n {
                let kr = kc + jj * hd
                var x = V16()
                for p in 0..<hd { x.addProduct(loadV(qT + p * group + l0), V16(repeating: kr[p])) }
                storeV(sc + 16 * jj, x)
            }
            _ = expLanes(sc, n, shift: lv)
            for jj in 0..<n {
                let kr = kc + jj * hd, vr = vc + jj * hd
                var dp = V16()
                for c in 0..<hd { dp.addProduct(loadV(dT + c * group + l0), V16(repeating: vr[c])) }
                let pr = loadV(sc + 16 * jj)
                let ds = pr * (dp - dd)
                storeV(pT + jj * group + l0, pr)
                storeV(dsT + jj * group + l0, ds)
                for p in 0..<hd { storeV(dq + 16 * p, loadV(dq + 16 * p).addingProduct(ds, V16(repeating: kr[p]))) }
            }
            let vs = V16(repeating: s)
            for p in 0..<hd {
                let r = loadV(dq + 16 * p) * vs
                for l in 0..<lanes { gq[(g0 + l0 + l) * ld + p] = r[l] }
            }
        }
        // dV[j] += sum_i P[j][i] dO[i];  dK[j] += sum_i dS[j][i] (s q[i]).
        let width = 16 * blocks
        for jj in 0..<n {
            for c in 0..<hd {
                dvc[jj * hd + c] += dot(width, pT + jj * group, dT + c * group)
                dkc[jj * hd + c] += dot(width, dsT + jj * group, qT + c * group)
            }
        }
        g0 += group
    }
    for jj in 0..<n {
        let j = kept.key(b, jj)
        for p in 0..<hd {
            gq[j * ld + dm + p] = dkc[jj * hd + p]
            gq[j * ld + 2 * dm + p] = dvc[jj * hd + p]
        }
    }
}

/// x[16 j + l] = exp(x[16 j + l] - shift[l]) for j < n; returns the lane sums. A loop of its own
/// so that vexp inlines (inside the generic kernels it stayed a call: 15% of LST's side step).
func expLanes(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: V16) -> V16 {
    var acc = V16()
    for j in 0..<n {
        let e = vexp(loadV(x + 16 * j) - shift)
        storeV(x + 16 * j, e)
        acc += e
    }
    return acc
}
