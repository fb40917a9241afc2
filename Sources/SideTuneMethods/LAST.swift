import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// One low-rank self-attention block of LAST: LN, rank-r Q/K/V, single-head attention in r
/// dimensions, Up back to d (starting at zero so the block starts as the identity).
public final class LSABlock: Module {
    public let norm: LayerNorm
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let up: Linear
    let _scale: Float

    init(width d: Int, rank r: Int, temperature: Float, eps: Float, rng: inout SplitMix64) {
        norm = LayerNorm(d, eps: eps)
        query = Linear(d, r, bias: false, rng: &rng)
        key = Linear(d, r, bias: false, rng: &rng)
        value = Linear(d, r, bias: false, rng: &rng)
        up = Linear(weight: parameter(.zeros([d, r])), bias: parameter(.zeros([d])))
        _scale = 1 / (Float(r).squareRoot() * temperature)
        super.init()
    }

    /// x [B, T, d] -> Up(Attn(LN(x))) [B, T, d] (the residual is added by the caller).
    func callAsFunction(_ x: Tensor, keyPadding: [Float]) -> Tensor {
        let (b, t) = (x.shape[0], x.shape[1])
        let y = norm(x)
        let r = query.outFeatures
        // One [d -> 3r] product instead of three skinny ones: LN(x) is packed, read and (in
        // backward) its gradient accumulated once rather than three times.
        let w = Tensor.concat([query.weight, key.weight, value.weight], axis: 0)
        let qkv = y.matmul(w, transposeOther: true)
        if r <= packedHeadMaxDims {
            // Attention read from the [B, T, 3r] product in place (no split copies).
            return up(Tensor.attentionPacked(qkv, heads: 1, keyPadding: keyPadding, scale: _scale))
        }
        let parts = qkv.split(axis: 2, sizes: [r, r, r])
        func heads(_ z: Tensor) -> Tensor { z.reshaped([b, 1, t, r]) }
        let a = Tensor.attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), mask: AttentionMask(keyPadding: keyPadding),
                                 scale: _scale)
        return up(a.reshaped([b, t, r]))
    }
}

/// Low-rank Attention Side-Tuning (Tang et al.). With z_i the frozen output after group i:
///
///     u_0 = z_0;  x_i = u_{i-1} + z_i;  u_i = x_i + Up_i(Attn(LN(x_i)))
///     head reads u_m - sum_{i<m} z_i   (bias correction; u_m without it)
///
/// Default head (as DTL): mean over tokens -> LayerNorm -> Linear. A backbone can pass its own
/// `head` instead, which then reads the corrected stream as the single tap [out] ([B, T, d]).
public final class LASTSide: Module, TapReader {
    public let blocks: [LSABlock]
    /// The default head's parts; nil when `head` is given.
    public let headNorm: LayerNorm?
    public let classifier: Linear?
    public let head: (any TapReader)?
    let _groupSize: Int
    let _biasCorrection: Bool

    public convenience init(backbone c: BertConfig, classes: Int, options o: MethodOptions, rng: inout SplitMix64) throws {
        try self.init(shape: .bert(c), classes: classes, options: o, rng: &rng)
    }

    /// Backbone-agnostic: only the width, depth and LayerNorm epsilon matter.
    public init(shape c: SideBackboneShape, classes: Int, options o: MethodOptions, head: (any TapReader)? = nil,
                rng: inout SplitMix64) throws {
        guard o.groupSize >= 1, c.layers % o.groupSize == 0 else {
            throw MethodError("LAST: group size \(o.groupSize) must divide the \(c.layers) layers")
        }
        guard o.rank >= 1 else { throw MethodError("LAST: rank must be >= 1, got \(o.rank)") }
        let m = c.layers / o.groupSize
        blocks = (0..<m).map { _ in LSABlock(width: c.width, rank: o.rank, temperature: o.attentionTemperature,
                                            eps: c.eps, rng: &rng) }
        if let head {
            self.head = head
            headNorm = nil
            classifier = nil
        } else {
            // Same construction order as before `head` existed: the BERT goldens depend on the rng draws.
            self.head = nil
            headNorm = LayerNorm(c.width, eps: c.eps)
            classifier = Linear(c.width, classes, rng: &rng)
        }
        _groupSize = o.groupSize
        _biasCorrection = o.biasCorrection
        super.init()
    }

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor {
        var u = taps[0]
        var sumZ = taps[0]
        for (i, block) in blocks.enumerated() {
            let z = taps[(i + 1) * _groupSize]
            let x = u + z
            u = x + block(x, keyPadding: keyPadding)
            if i + 1 < blocks.count { sumZ = sumZ + z }
        }
        let out = _biasCorrection ? u - sumZ : u
        if let head { return head(taps: [out], keyPadding: keyPadding) }
        return classifier!(headNorm!(pool(out, keyPadding: keyPadding, .mean)))
    }
}
