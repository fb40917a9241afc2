import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// One low-rank self-attention block of LAST: LN, rank-r Q/K/V, single-head attention in r
/// dimensions, Up back to d (starting at zero so the block starts as the identity).
public final class LSABlock: Module {
    public let norm: any NormLayer
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let up: Linear
    let _scale: Float

    init(norm: any NormLayer, width d: Int, rank r: Int, temperature: Float, rng: inout SplitMix64) {
        self.norm = norm
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

/// LAST on any backbone: rank-r attention blocks over the taps. Its head normalises the
/// corrected stream: with the backbone's own head (final norm, read-out, Linear) where the
/// backbone has a final norm (ViT, Llama), so that with Up at zero LAST starts as the linear
/// probe; with a fresh norm, the mean of the tokens and a Linear (as DTL) on post-LN BERT.
public enum LASTMethod: AdaptationMethod {
    public static let kind = MethodKind.last
    public static let summary = "Low-rank Attention Side-Tuning: rank-r attention blocks over the taps, bias-corrected head"
    public static let defaultLearningRate: Float = 3e-3
    public static let readsFrozenTaps = true

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let head = c.backbone.hasFinalNorm ? BackboneHead(c.backbone, classes: c.classes, dropout: 0, rng: &c.rng) : nil
        let side = try LASTSide(backbone: c.backbone, classes: c.classes, options: c.options, head: head, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: side,
                          tapsRead: Array(0...c.backbone.depth))
    }
}

/// Low-rank Attention Side-Tuning (Tang et al.). With z_i the frozen output after group i:
///
///     u_0 = z_0;  x_i = u_{i-1} + z_i;  u_i = x_i + Up_i(Attn(LN(x_i)))
///     head reads u_m - sum_{i<m} z_i   (bias correction; u_m without it)
///
/// Default head (as DTL): mean over tokens -> norm -> Linear. A backbone's own `head` can be
/// given instead, which then reads the corrected stream as the single tap [out].
public final class LASTSide: Module, TapReader {
    public let blocks: [LSABlock]
    /// The default head's parts; nil when `head` is given.
    public let headNorm: (any NormLayer)?
    public let classifier: Linear?
    public let head: (any TapReader)?
    let _groupSize: Int
    let _biasCorrection: Bool
    let _matmul: MatmulPrecision

    /// Backbone-agnostic: only the width, depth and the backbone's kind of norm matter.
    public init<B: Backbone>(backbone: B, classes: Int, options o: MethodOptions, head: (any TapReader)? = nil,
                             rng: inout SplitMix64) throws {
        let (d, depth) = (backbone.width, backbone.depth)
        guard o.groupSize >= 1, depth % o.groupSize == 0 else {
            throw MethodError("LAST: group size \(o.groupSize) must divide the \(depth) layers")
        }
        guard o.rank >= 1 else { throw MethodError("LAST: rank must be >= 1, got \(o.rank)") }
        let m = depth / o.groupSize
        blocks = (0..<m).map { _ in LSABlock(norm: backbone.sideNorm(width: d), width: d, rank: o.rank,
                                            temperature: o.attentionTemperature, rng: &rng) }
        if let head {
            self.head = head
            headNorm = nil
            classifier = nil
        } else {
            // Same construction order as before `head` existed: the BERT goldens depend on the rng draws.
            self.head = nil
            headNorm = backbone.sideNorm(width: d)
            classifier = Linear(d, classes, rng: &rng)
        }
        _groupSize = o.groupSize
        _biasCorrection = o.biasCorrection
        _matmul = o.sideMatmul ?? .float32
        super.init()
    }

    public func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor {
        Tensor.withMatmulPrecision(_matmul) { sideForward(taps, layout) }
    }

    /// Packed taps need a head that pools packed streams and a rank the packed attention kernel takes.
    public var readsPackedTaps: Bool {
        (head?.readsPackedTaps ?? true) && (blocks.first?.query.outFeatures ?? 0) <= packedHeadMaxDims
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
        if let head { return head(taps: [x], layout: layout) }
        return classifier!(headNorm!(pool(x, layout: layout, .mean)))
    }
}
