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
    func callAsFunction(_ x: Tensor, keyPadding: [Float]) -> Tensor { up(attend(x, layout: .padded(keyPadding: keyPadding))) }

    /// x [B, T, d] padded or [1, N, d] packed -> Attn(LN(x)) [B, T, r] or [1, N, r], before Up.
    func attend(_ x: Tensor, layout: TokenLayout) -> Tensor {
        let (b, t) = (x.shape[0], x.shape[1])
        let y = norm(x)
        let r = query.outFeatures
        // One [d -> 3r] product instead of three skinny ones: LN(x) is packed, read and (in
        // backward) its gradient accumulated once rather than three times.
        let w = Tensor.concat([query.weight, key.weight, value.weight], axis: 0)
        let qkv = y.matmul(w, transposeOther: true)
        let keyPadding: [Float]
        switch layout {
        case .packed(let segments):
            precondition(r <= packedHeadMaxDims, "LAST: packed tokens need rank <= \(packedHeadMaxDims), got \(r)")
            return Tensor.attentionPacked(qkv, heads: 1, segments: segments, scale: _scale)
        case .padded(let kp): keyPadding = kp
        }
        if r <= smallHeadDims {
            // Thin ranks: attention read from the [B, T, 3r] product in place (no split copies).
            // From 16 dims on, the blocked kernel's GEMMs are faster (measured at r = 16).
            return Tensor.attentionPacked(qkv, heads: 1, keyPadding: keyPadding, scale: _scale)
        }
        let parts = qkv.split(axis: 2, sizes: [r, r, r])
        func heads(_ z: Tensor) -> Tensor { z.reshaped([b, 1, t, r]) }
        let a = Tensor.attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), mask: AttentionMask(keyPadding: keyPadding),
                                 scale: _scale)
        return a.reshaped([b, t, r])
    }
}

/// Low-rank Attention Side-Tuning (Tang et al.). With z_i the frozen output after group i:
///
///     u_0 = z_0;  x_i = u_{i-1} + z_i;  u_i = x_i + Up_i(Attn(LN(x_i)))
///     head reads u_m - sum_{i<m} z_i   (bias correction; u_m without it)
///
/// Default head (as DTL): mean over tokens -> LayerNorm -> Linear. A backbone can pass its own
/// `head` instead, which then reads the corrected stream as the single tap [out] ([B, T, d]).
public final class LASTSide: Module, PackedTapReader {
    public let blocks: [LSABlock]
    /// The default head's parts; nil when `head` is given.
    public let headNorm: LayerNorm?
    public let classifier: Linear?
    public let head: (any TapReader)?
    let _groupSize: Int
    let _biasCorrection: Bool
    let _matmul: MatmulPrecision

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
        _matmul = o.sideMatmul ?? .float32
        super.init()
    }

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor { forward(taps, .padded(keyPadding: keyPadding)) }

    /// Packed taps need the default head and a rank the packed attention kernel takes.
    public var readsPackedTaps: Bool { head == nil && (blocks.first?.query.outFeatures ?? 0) <= packedHeadMaxDims }

    public func callAsFunction(taps: [Tensor], segments: TokenSegments) -> Tensor { forward(taps, .packed(segments)) }

    func forward(_ taps: [Tensor], _ layout: TokenLayout) -> Tensor {
        Tensor.withMatmulPrecision(_matmul) { sideForward(taps, layout) }
    }

    private func sideForward(_ taps: [Tensor], _ layout: TokenLayout) -> Tensor {
        // Each block's Up joins the stream in one op: x_{i+1} = x_i + Up_i(...) + z_{i+1} (that is
        // u_i + z_{i+1}); after the last block the bias correction's -sum z_i is added the same way.
        // The [B, T, d] stream is written once per block instead of by three separate adds.
        let m = blocks.count, g = _groupSize
        var x = Tensor.sum([taps[0], taps[g]])
        for (i, block) in blocks.enumerated() {
            let a = block.attend(x, layout: layout)
            var joining = [x]
            if i + 1 < m {
                joining.append(taps[(i + 2) * g])
            } else if _biasCorrection {
                joining.append(Tensor.sum((0..<m).map { taps[$0 * g] }, scale: -1)) // z_0 + ... + z_{m-1}
            }
            x = Tensor.linear(a, weight: block.up.weight, bias: block.up.bias!, residuals: joining)
        }
        let out = x
        if let head {
            guard case .padded(let keyPadding) = layout else { preconditionFailure("LAST: a custom head reads padded taps only") }
            return head(taps: [out], keyPadding: keyPadding)
        }
        return classifier!(headNorm!(pool(out, layout: layout, .mean)))
    }
}
