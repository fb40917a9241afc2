/// Self-attention with its q, k and v projections in one op, for frozen projection weights: backward
/// keeps the projections' input x (bf16 under `--activation-bits` 16 or fewer) and recomputes q, k
/// and v from it, instead of keeping all three. Per token that is d values kept instead of 3d, for
/// one more [d -> 3d] product in backward. S2A's blocks use it (`AttentionRecompute`); the result
/// and the gradients are those of `linear` x 3 followed by `attention`.
extension Tensor {
    /// One projection's weight [d_out, d_in] (frozen) and bias [d_out] (may train).
    public typealias FrozenProjection = (weight: Tensor, bias: Tensor)

    /// x [B, T, d_in] -> the heads' outputs side by side [B, T, d_out]: softmax(q k^T s + mask) v per
    /// head, with q = x Wq^T + bq and so on. Gradients reach x and the biases, never the weights.
    public static func projectedSelfAttention(_ x: Tensor, query: FrozenProjection, key: FrozenProjection,
                                              value: FrozenProjection, heads: Int, mask: AttentionMask = .none,
                                              scale: Float? = nil) -> Tensor {
        let projections = [query, key, value]
        precondition(x.rank == 3, "projectedSelfAttention: x must be [B, T, d], got \(x.shape)")
        let (b, t, dOut) = (x.shape[0], x.shape[1], query.weight.shape[0])
        for p in projections {
            precondition(p.weight.rank == 2 && p.weight.shape == [dOut, x.shape[2]] && p.bias.shape == [dOut],
                         "projectedSelfAttention: weight \(p.weight.shape) and bias \(p.bias.shape) for x \(x.shape)")
            precondition(!p.weight.requiresGrad, "projectedSelfAttention recomputes frozen projections only")
        }
        precondition(heads >= 1 && dOut % heads == 0, "projectedSelfAttention: \(dOut) values in \(heads) heads")
        if let kp = mask.keyPadding { precondition(kp.count == b * t, "key padding mask needs \(b * t) values, got \(kp.count)") }
        let dh = dOut / heads, s = scale ?? 1 / Float(dh).squareRoot()
        /// [B, T, d_out] -> [B, H, T, dh] and back.
        func split(_ y: Tensor) -> Tensor { y.reshaped([b, t, heads, dh]).permuted([0, 2, 1, 3]) }
        func merge(_ y: Tensor) -> Tensor { y.permuted([0, 2, 1, 3]).reshaped([b, t, dOut]) }
        func project(_ x: Tensor) -> [Tensor] { projections.map { split(Tensor.linear(x, weight: $0.weight, bias: $0.bias)) } }

        let (headOutputs, lse) = noGrad {
            let qkv = project(x)
            return blockedAttentionForward(qkv[0], qkv[1], qkv[2], mask: mask, scale: s)
        }
        let out = noGrad { merge(headOutputs) }
        let needX = willNeedGrad(x), needBias = projections.map { willNeedGrad($0.bias) }
        guard needX || needBias.contains(true) else { return out }
        let keptX = SavedTensor(x), keptOutput = SavedTensor(headOutputs)
        let weights = projections.map(\.weight), xShape = x.shape, precision = MatmulPrecision.current
        return record(out, "projected_attention", [x, query.bias, key.bias, value.bias]) { [lse] g in
            // The three gradients [B, H, T, dh], each dropped once it has been used.
            var perHead: [Tensor?] = {
                let qkv = project(keptX.stored) // recomputed (backward runs without recording)
                let (gq, gk, gv) = blockedAttentionBackward(qkv[0], qkv[1], qkv[2], output: keptOutput.float32,
                                                            lse: lse, gradient: split(g), mask: mask, scale: s)
                return [gq, gk, gv]
            }()
            // dx = dq Wq + dk Wk + dv Wv, accumulated in one tensor; the biases' are column sums.
            let dIn = xShape[2], m = b * t
            let gx = needX ? Tensor.zeros(xShape) : nil
            var biasGradients: [Tensor?] = []
            for (i, w) in weights.enumerated() {
                let gp = merge(perHead[i]!) // [B, T, d_out]
                perHead[i] = nil
                if let gx {
                    let w32 = w.dtype == .float32 ? w : w.float32()
                    linearGEMM(precision, GEMMShape(m: m, n: dIn, k: dOut), .f32(gp.data), lda: dOut, .f32(w32.data),
                               ldb: dIn, gx.data, ldc: dIn, accumulate: true)
                }
                biasGradients.append(needBias[i] ? gp.columnSums(rows: m, shape: [dOut]) : nil)
            }
            return [gx] + biasGradients
        }
    }
}
