import SideTuneEngine

/// y = x W^T + b, W stored [out, in] as in PyTorch checkpoints. PyTorch's default initialisation:
/// uniform(-1/sqrt(in), 1/sqrt(in)) for both.
public final class Linear: Module {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout SplitMix64) {
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = parameter(.uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: &rng))
        self.bias = bias ? parameter(.uniform([outFeatures], low: -bound, high: bound, rng: &rng)) : nil
        super.init()
    }

    public init(weight: Tensor, bias: Tensor?) {
        self.weight = weight
        self.bias = bias
        super.init()
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if let bias { return Tensor.linear(x, weight: weight, bias: bias) }
        return x.matmul(weight, transposeOther: true)
    }
}

/// A lookup table [vocab, dim].
public final class Embedding: Module {
    public let weight: Tensor
    public init(_ count: Int, _ dim: Int, rng: inout SplitMix64) {
        weight = parameter(.randn([count, dim], std: 1, rng: &rng))
        super.init()
    }
    public init(weight: Tensor) { self.weight = weight; super.init() }
    public func callAsFunction(_ ids: [Int32], shape: [Int]? = nil) -> Tensor { weight.embedding(ids, shape: shape) }
}

public final class LayerNorm: Module {
    public let weight: Tensor?
    public let bias: Tensor?
    public let eps: Float
    public init(_ dim: Int, eps: Float = 1e-5, affine: Bool = true) {
        weight = affine ? parameter(.ones([dim])) : nil
        bias = affine ? parameter(.zeros([dim])) : nil
        self.eps = eps
        super.init()
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.layerNorm(weight: weight, bias: bias, eps: eps) }
}

public final class RMSNorm: Module {
    public let weight: Tensor
    public let eps: Float
    public init(_ dim: Int, eps: Float = 1e-6) {
        weight = parameter(.ones([dim]))
        self.eps = eps
        super.init()
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.rmsNorm(weight: weight, eps: eps) }
}

/// Inverted dropout; a fresh mask each call, reproducible from the seed.
public final class Dropout: Module {
    public let p: Float
    private var _rng: SplitMix64
    public init(_ p: Float, seed: UInt64 = 0) {
        self.p = p
        _rng = SplitMix64(seed: seed)
        super.init()
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard training, p > 0 else { return x }
        return x.dropout(p, seed: _rng.next(), training: true)
    }
}
