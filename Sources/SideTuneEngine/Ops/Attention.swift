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
    public static func attention(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: AttentionMask = .none,
                                 scale: Float? = nil) -> Tensor {
        precondition(q.rank == 4 && k.rank == 4 && v.rank == 4, "attention needs [B, H, T, D] tensors")
        let (bsz, h, tq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let tk = k.shape[2], dv = v.shape[3]
        precondition(k.shape == [bsz, h, tk, d] && v.shape[0...2] == [bsz, h, tk], "attention shapes q \(q.shape) k \(k.shape) v \(v.shape)")
        if let kp = mask.keyPadding { precondition(kp.count == bsz * tk, "key padding mask needs \(bsz * tk) values, got \(kp.count)") }
        let s = scale ?? 1 / Float(d).squareRoot()
        let out = Tensor(shape: [bsz, h, tq, dv])
        let lse = Tensor(shape: [bsz, h, tq])
        let block = 64
        let pq = q.data, pk = k.data, pv = v.data, po = out.data, pl = lse.data
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
                        var m = -Float.infinity
                        for j in 0..<tk {
                            row[j] = mask.allowed(b, i, j, tq, tk) ? row[j] * s : -Float.infinity
                            m = max(m, row[j])
                        }
                        if m == -Float.infinity {
                            row.initialize(repeating: 0, count: tk)
                            pl[bh * tq + i] = -Float.infinity
                            continue
                        }
                        // exp 16 lanes at a time (a scalar vexp call costs a whole vector).
                        let mv = V16(repeating: m)
                        var acc = V16()
                        var j = 0
                        while j + 16 <= tk { let e = vexp(loadV(row + j) - mv); storeV(row + j, e); acc += e; j += 16 }
                        var sum = acc.sum()
                        while j < tk { let e = vexp(row[j] - m); row[j] = e; sum += e; j += 1 }
                        let inv = 1 / sum
                        for j in 0..<tk { row[j] *= inv }
                        pl[bh * tq + i] = m + Foundation.log(sum)
                    }
                    gemm(GEMMShape(m: rows, n: dv, k: tk), sc, lda: tk, pv + bh * tk * dv, ldb: dv, po + (bh * tq + i0) * dv,
                         ldc: dv, singleThreaded: true)
                    i0 += rows
                }
            }
        }
        let o = out.detach()
        let unmasked = mask.keyPadding == nil && !mask.causal
        return record(out, "attention", [q, k, v]) { [lse] g in
            let pl = lse.data // the row statistics must live as long as this rule
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
                            let sv = V16(repeating: s), lv = V16(repeating: l)
                            var j = 0
                            while j + 16 <= tk { storeV(row + j, vexp(loadV(row + j) * sv - lv)); j += 16 }
                            while j < tk { row[j] = vexp(row[j] * s - l); j += 1 }
                            if !unmasked { for j in 0..<tk where !mask.allowed(b, i, j, tq, tk) { row[j] = 0 } }
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
                            let prow = p + r * tk, drow = dp + r * tk
                            for j in 0..<tk { drow[j] = prow[j] * (drow[j] - delta) * s }
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
            return [q.requiresGrad ? gq : nil, k.requiresGrad ? gk : nil, v.requiresGrad ? gv : nil]
        }
    }
}
