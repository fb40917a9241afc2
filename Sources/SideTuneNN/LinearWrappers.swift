import SideTuneEngine

/// LoRA (Hu et al.): y = base(x) + (alpha / r) x A^T B^T with the base frozen and A [r, in],
/// B [out, r] trainable. A starts uniform(+-1/sqrt(in)), B at zero, so the wrapped layer starts
/// as the base. The base may be any linear layer: F32 (LoRA) or NF4 (QLoRA, where backprop
/// reaches x through the weight de-quantised tile by tile).
public final class LoRALinear: Module, WrappingLinearLayer {
    public let base: any LinearLayer
    public let loraA: Tensor
    public let loraB: Tensor
    let _scale: Float

    public init(wrapping base: any LinearLayer, rank: Int, alpha: Float, rng: inout SplitMix64) {
        let bound = 1 / Float(base.inFeatures).squareRoot()
        loraA = parameter(.uniform([rank, base.inFeatures], low: -bound, high: bound, rng: &rng), name: "lora_a")
        loraB = parameter(.zeros([base.outFeatures, rank]), name: "lora_b")
        _scale = alpha / Float(rank)
        self.base = base
        base.freeze()
        super.init()
    }

    public var scale: Float { _scale }
    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var hasBias: Bool { base.hasBias }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        base(x) + x.matmul(loraA, transposeOther: true).matmul(loraB, transposeOther: true) * _scale
    }

    /// The base layer with the low-rank update merged into its weight (for inference); nil when
    /// the base is not a plain F32 `Linear` (an NF4 weight cannot take the update exactly).
    public func fused() -> Linear? {
        guard let plain = base.plain else { return nil }
        let delta = noGrad { loraB.matmul(loraA) * _scale } // [out, in]
        let w = noGrad { plain.weight + delta }
        w.storage.retag(.weights)
        return Linear(weight: w, bias: plain.bias)
    }
}

/// Houlsby bottleneck adapter: x + Up(GELU(Down(x))), Up starting at zero (an identity at first).
public final class BottleneckAdapter: Module {
    public let down: Linear
    public let up: Linear

    public init(_ dim: Int, bottleneck: Int, rng: inout SplitMix64) {
        down = Linear(dim, bottleneck, rng: &rng)
        up = Linear(weight: parameter(.zeros([dim, bottleneck])), bias: parameter(.zeros([dim])))
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x + up(down(x).gelu()) }
}

/// A frozen linear layer followed by a trainable bottleneck adapter: adapter(base(x)). Wrapping a
/// block's attention-output and FFN-output projections puts the adapter after each sub-layer and
/// before its residual, where Houlsby et al. place it, in any backbone.
public final class AdaptedLinear: Module, WrappingLinearLayer {
    public let base: any LinearLayer
    public let adapter: BottleneckAdapter

    public init(wrapping base: any LinearLayer, bottleneck: Int, rng: inout SplitMix64) {
        adapter = BottleneckAdapter(base.outFeatures, bottleneck: bottleneck, rng: &rng)
        self.base = base
        base.freeze()
        super.init()
    }

    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var hasBias: Bool { base.hasBias }
    public func callAsFunction(_ x: Tensor) -> Tensor { adapter(base(x)) }
}

/// A bias added to a linear layer that has none, starting at zero (so the layer starts unchanged):
/// BitFit on a bias-free backbone (Llama's projections) trains these.
public final class BiasedLinear: Module, WrappingLinearLayer {
    public let base: any LinearLayer
    public let bias: Tensor

    public init(wrapping base: any LinearLayer) {
        bias = parameter(.zeros([base.outFeatures]), name: "bias")
        self.base = base
        base.freeze()
        super.init()
    }

    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var hasBias: Bool { true }
    public func callAsFunction(_ x: Tensor) -> Tensor { base(x) + bias }
}
