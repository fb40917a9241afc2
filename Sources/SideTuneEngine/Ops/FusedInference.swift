import CSideTuneKernels
import Foundation

/// Fused kernels for no-grad inference of transformer encoder layers (the frozen-backbone path).
/// Nothing here records autograd nodes: callers use them only when grad mode is off. Each kernel
/// has a plain reference (composed from the autograd ops or written as loops) that tests compare
/// it against.
public enum FusedInference {
    /// The activation applied after a projection's bias.
    public enum Activation: Sendable {
        case identity, relu
        /// 0.5 x (1 + erf(x / sqrt 2)), the same formula as `Tensor.gelu`.
        case gelu
        /// The tanh approximation, the same formula as `Tensor.geluTanh`.
        case geluTanh

        var kind: UnaryKind {
            switch self {
            case .identity: .identity
            case .relu: .relu
            case .gelu: .gelu
            case .geluTanh: .geluTanh
            }
        }
    }

    /// row[j] = act(row[j] + bias[j]) for j < n, in place (the same C kernels as the autograd ops).
    @inline(__always) static func biasActivationRow(_ row: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int,
                                                    _ act: Activation) {
        st_bias_activation_row(act.kind.c, row, bias, n)
    }

    /// out = LayerNorm(c + bias + residual) over one row of d, as `Tensor.layerNorm` computes it.
    @inline(__always) static func residualLayerNormRow(_ c: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>,
                                                       _ residual: UnsafePointer<Float>, _ d: Int, _ w: UnsafePointer<Float>,
                                                       _ b: UnsafePointer<Float>, _ eps: Float, _ out: UnsafeMutablePointer<Float>) {
        st_residual_layer_norm_row(c, bias, residual, d, w, b, eps, out)
    }

    /// A projection's weight [n, k] (PyTorch layout) as the fused kernels multiply it.
    public enum Weight {
        /// f32 values, row-major: f32 products.
        case f32(UnsafePointer<Float>)
        /// Stored in bf16 and packed: bf16 operands, f32 sums.
        case bf16(PackedBFloat16Weight)

        /// The precision of this weight's products.
        public var precision: MatmulPrecision {
            if case .bf16 = self { return .bfloat16 }
            return .float32
        }
    }

    /// out[m, n] (row stride ldo) = act(x[m, k] W^T + bias) for weight [n, k] (PyTorch layout).
    /// Bias and activation are applied to each block of rows as soon as the GEMM finishes it.
    public static func linear(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int, weight: UnsafePointer<Float>, n: Int,
                              bias: UnsafePointer<Float>, activation: Activation,
                              out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool = .shared) {
        linear(x, ldx: ldx, m: m, k: k, weight: .f32(weight), n: n, bias: bias, activation: activation, out: out, ldo: ldo,
               pool: pool)
    }

    /// As above, for an f32 or a bf16 weight.
    public static func linear(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int, weight: Weight, n: Int,
                              bias: UnsafePointer<Float>, activation: Activation,
                              out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool = .shared) {
        product(x, ldx: ldx, m: m, k: k, weight: weight, n: n, out: out, ldo: ldo, pool: pool) { rows in
            for r in rows { biasActivationRow(out + r * ldo, bias, n, activation) }
        }
    }

    /// out = x W^T, `epilogue` run on each block of finished rows.
    static func product(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int, weight: Weight, n: Int,
                        out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool,
                        epilogue: @escaping (Range<Int>) -> Void) {
        switch weight {
        case .f32(let w):
            gemm(GEMMShape(m: m, n: n, k: k, transB: true), x, lda: ldx, w, ldb: k, out, ldc: ldo, pool: pool,
                 rowEpilogue: epilogue)
        case .bf16(let packed):
            precondition(packed.outFeatures == n && packed.inFeatures == k, "linear: packed weight is not [\(n), \(k)]")
            gemmBFloat16(m: m, x, ldx: ldx, packed, out, ldc: ldo, pool: pool, rowEpilogue: epilogue)
        }
    }

    /// out[m, d] = LayerNorm(x[m, k] W^T + bias + residual[m, d]) with LayerNorm weight / bias
    /// (post-LN transformer sub-layer). `scratch` holds the [m, d] pre-norm sums.
    public static func linearResidualLayerNorm(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int,
                                               weight: UnsafePointer<Float>, d: Int, bias: UnsafePointer<Float>,
                                               residual: UnsafePointer<Float>, normWeight: UnsafePointer<Float>,
                                               normBias: UnsafePointer<Float>, eps: Float,
                                               scratch: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                                               pool: ThreadPool = .shared) {
        linearResidualLayerNorm(x, ldx: ldx, m: m, k: k, weight: .f32(weight), d: d, bias: bias, residual: residual,
                                normWeight: normWeight, normBias: normBias, eps: eps, scratch: scratch, out: out, pool: pool)
    }

    /// As above, for an f32 or a bf16 weight.
    public static func linearResidualLayerNorm(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int,
                                               weight: Weight, d: Int, bias: UnsafePointer<Float>,
                                               residual: UnsafePointer<Float>, normWeight: UnsafePointer<Float>,
                                               normBias: UnsafePointer<Float>, eps: Float,
                                               scratch: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                                               pool: ThreadPool = .shared) {
        product(x, ldx: ldx, m: m, k: k, weight: weight, n: d, out: scratch, ldo: d, pool: pool) { rows in
            for r in rows {
                residualLayerNormRow(scratch + r * d, bias, residual + r * d, d, normWeight, normBias, eps, out + r * d)
            }
        }
    }

    /// out[m, d] = residual + scale * (x[m, k] W^T + bias), a pre-LN block's residual branch with
    /// LayerScale (DINOv2), and with `norm` also normOut = LayerNorm(out) (the next sub-layer's
    /// input), both applied to each block of rows as soon as the GEMM finishes it.
    public static func linearScaledResidual(_ x: UnsafePointer<Float>, ldx: Int, m: Int, k: Int, weight: Weight, d: Int,
                                            bias: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                            residual: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                            norm: NormRows? = nil, pool: ThreadPool = .shared) {
        product(x, ldx: ldx, m: m, k: k, weight: weight, n: d, out: out, ldo: d, pool: pool) { rows in
            for r in rows { st_scaled_residual_row(out + r * d, bias, scale, residual + r * d, d) }
            norm?.apply(out, rows: rows, d: d)
        }
    }

    /// An affine LayerNorm applied row by row from one buffer into another.
    public struct NormRows {
        public var weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float
        public var out: UnsafeMutablePointer<Float>
        public init(weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
                    out: UnsafeMutablePointer<Float>) {
            (self.weight, self.bias, self.eps, self.out) = (weight, bias, eps, out)
        }

        /// out[r] = LayerNorm(x[r]) for r in rows, rows of d.
        public func apply(_ x: UnsafePointer<Float>, rows: Range<Int>, d: Int) {
            var mean: Float = 0, rstd: Float = 0
            for r in rows { st_layer_norm_row(x + r * d, out + r * d, d, weight, bias, eps, &mean, &rstd) }
        }
    }

    /// Multi-head self-attention read straight from a fused projection output, without permute
    /// copies: `qkv` is [batch * seq, 3 * d] with row r = [q | k | v] of token r (head h at columns
    /// h * headDim of each part); `out` is [batch * seq, d] with head h at columns h * headDim.
    /// softmax(q k^T * scale + key padding) v per (batch, head), in parallel over batch x heads.
    /// Keys after a sequence's last real token are skipped (their probabilities are exactly 0);
    /// a sequence with no real token gives zeros, as `Tensor.attention` does. `products: .bfloat16`
    /// multiplies q k^T and the probabilities by v with bf16 operands and f32 sums (the frozen
    /// backbone in bf16); scaling, masking and softmax stay f32.
    public static func attention(qkv: UnsafePointer<Float>, batch: Int, seq: Int, heads: Int, headDim: Int,
                                 keyPadding: [Float]?, scale: Float, out: UnsafeMutablePointer<Float>,
                                 products: MatmulPrecision = .float32, pool: ThreadPool = .shared) {
        if let keyPadding { precondition(keyPadding.count == batch * seq, "key padding mask needs \(batch * seq) values, got \(keyPadding.count)") }
        // Per sequence: the number of keys up to and including the last real one.
        let entries = (0..<batch).map { b -> AttentionEntry in
            var n = seq
            if let keyPadding { while n > 0 && keyPadding[b * seq + n - 1] == 0 { n -= 1 } }
            return AttentionEntry(start: b * seq, queries: seq, keys: n)
        }
        attention(qkv: qkv, entries: entries, heads: heads, headDim: headDim, keep: keyPadding, scale: scale, out: out,
                  products: products, pool: pool)
    }

    /// The same for a packed batch: `qkv` [N, 3d] and `out` [N, d] hold the sequences of
    /// `segments` end to end, every row a real token, and each attends over its own rows only.
    public static func attention(qkv: UnsafePointer<Float>, segments: TokenSegments, heads: Int, headDim: Int,
                                 scale: Float, out: UnsafeMutablePointer<Float>, products: MatmulPrecision = .float32,
                                 pool: ThreadPool = .shared) {
        let entries = zip(segments.starts, segments.lengths).map { AttentionEntry(start: $0, queries: $1, keys: $1) }
        attention(qkv: qkv, entries: entries, heads: heads, headDim: headDim, keep: nil, scale: scale, out: out,
                  products: products, pool: pool)
    }

    /// One sequence of a batch: its query rows [start, start + queries) and its first `keys` rows as keys.
    struct AttentionEntry { var start, queries, keys: Int }

    /// The shared kernel: per (entry, head), scores for up to 256 queries at a time against the
    /// entry's keys (K^T packed once per block by the GEMM), masked by `keep` (per row of qkv, 0 =
    /// padding) when given, softmax, then the product with V written into `out`.
    static func attention(qkv: UnsafePointer<Float>, entries: [AttentionEntry], heads: Int, headDim: Int, keep: [Float]?,
                          scale: Float, out: UnsafeMutablePointer<Float>, products: MatmulPrecision, pool: ThreadPool) {
        let d = heads * headDim, ld = 3 * d
        let keepValues = keep ?? []
        entries.withUnsafeBufferPointer { entries in
            keepValues.withUnsafeBufferPointer { keepBuffer in
                let kp = keep == nil ? nil : keepBuffer.baseAddress
                pool.parallelFor(entries.count * heads) { eh in
                    let e = entries[eh / heads], h = eh % heads
                    let tk = e.keys
                    let q0 = qkv + e.start * ld + h * headDim, k0 = q0 + d, v0 = q0 + 2 * d
                    let o0 = out + e.start * d + h * headDim
                    if tk == 0 {
                        for i in 0..<e.queries { (o0 + i * d).initialize(repeating: 0, count: headDim) }
                        return
                    }
                    let block = min(max(e.queries, 1), 256)
                    if products == .bfloat16 {
                        bfloat16Head(q0, k0, v0, ld: ld, queries: e.queries, keys: tk, headDim: headDim, block: block,
                                     scale: scale, keep: kp.map { $0 + e.start }, out: o0, ldo: d)
                        return
                    }
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: block * tk) { scratch in
                        let sc = scratch.baseAddress!
                        var i0 = 0
                        while i0 < e.queries {
                            let rows = min(block, e.queries - i0)
                            gemm(GEMMShape(m: rows, n: tk, k: headDim, transB: true), q0 + i0 * ld, lda: ld, k0, ldb: ld,
                                 sc, ldc: tk, singleThreaded: true)
                            probabilities(sc, rows: rows, keys: tk, scale: scale, keep: kp.map { $0 + e.start })
                            gemm(GEMMShape(m: rows, n: headDim, k: tk), sc, lda: tk, v0, ldb: ld, o0 + i0 * d, ldc: d,
                                 singleThreaded: true)
                            i0 += rows
                        }
                    }
                }
            }
        }
    }

    /// Score rows [rows, keys] in place to probabilities: scaled, masked by `keep` (nil: no
    /// padding), softmax. In f32 whatever precision the products ran in.
    static func probabilities(_ scores: UnsafeMutablePointer<Float>, rows: Int, keys: Int, scale: Float,
                              keep: UnsafePointer<Float>?) {
        for r in 0..<rows {
            let row = scores + r * keys
            scaleAndMaskRow(row, keys, scale: scale, keep: keep)
            _ = softmaxRow(row, row, keys)
        }
    }

    /// One (sequence, head) of `attention` with bf16 products: K packed once as pairs along the head
    /// dimension, V as pairs of consecutive keys, then per block of queries their pairs, the
    /// scores, the f32 scale, mask and softmax, the probabilities' pairs, and their product with V.
    static func bfloat16Head(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>, ld: Int,
                             queries: Int, keys tk: Int, headDim: Int, block: Int, scale: Float,
                             keep: UnsafePointer<Float>?, out: UnsafeMutablePointer<Float>, ldo: Int) {
        let hp = (headDim + 1) / 2, tp = (tk + 1) / 2
        withUnsafeTemporaryAllocation(of: Float.self, capacity: block * tk) { scores in
            let pairCount = hp * tk + tp * headDim + block * max(hp, tp)
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: pairCount) { pairs in
                let sc = scores.baseAddress!, kT = pairs.baseAddress!, vP = kT + hp * tk, xP = vP + tp * headDim
                // B(p, j) = K[j][2p, 2p+1] for the scores, V[2p, 2p+1][j] for the output.
                sidetune_bf16_pairs_along_rows_transposed(k, ld, tk, headDim, kT, tk)
                sidetune_bf16_pairs_across_rows(v, false, ld, tk, headDim, 0, tp, vP, headDim)
                var i0 = 0
                while i0 < queries {
                    let rows = min(block, queries - i0)
                    sidetune_bf16_pairs_along_rows(q + i0 * ld, false, ld, rows, headDim, xP, hp)
                    sidetune_bf16dot_gemm(rows, tk, hp, xP, hp, 1, kT, tk, sc, tk, false)
                    probabilities(sc, rows: rows, keys: tk, scale: scale, keep: keep)
                    sidetune_bf16_pairs_along_rows(sc, false, tk, rows, tk, xP, tp)
                    sidetune_bf16dot_gemm(rows, headDim, tp, xP, tp, 1, vP, headDim, out + i0 * ldo, ldo, false)
                    i0 += rows
                }
            }
        }
    }

    /// The plain reference for `attention`: splits qkv into [B, H, T, hd] tensors with permute
    /// copies and runs `Tensor.attentionReference` (full [T, T] probabilities, additive mask).
    public static func attentionReference(qkv: Tensor, batch: Int, seq: Int, heads: Int, headDim: Int,
                                          keyPadding: [Float]?, scale: Float) -> Tensor {
        let d = heads * headDim
        let parts = (0..<3).map { p in
            qkv.reshaped([batch, seq, 3 * d]).slice(axis: 2, p * d, (p + 1) * d)
                .reshaped([batch, seq, heads, headDim]).permuted([0, 2, 1, 3])
        }
        let a = Tensor.attentionReference(parts[0], parts[1], parts[2], mask: AttentionMask(keyPadding: keyPadding), scale: scale)
        return a.permuted([0, 2, 1, 3]).reshaped([batch * seq, d])
    }
}

/// The scratch for one inference forward's per-layer intermediates, counted as workspace in the
/// caller's ledger while the forward runs. Not kept afterwards: the block pool (`LargeBlockCache`)
/// hands the same pages back to the next forward without faulting them again, while a kept buffer
/// stayed in every later measurement (41 MiB of workspace during training steps).
public enum InferenceScratch {
    public static func with<R>(floats: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        let buffer = Workspace(floats: floats)
        return try withExtendedLifetime(buffer) { try body(buffer.floats) }
    }
}
