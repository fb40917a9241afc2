import Foundation
import SideTuneEngine

/// A linear map y = x W^T (+ b) whose weight may be stored in any form: F32 `Linear`, a frozen
/// 4-bit `NF4Linear`, or a wrapper that adds trainable parts (`LoRALinear`, `AdaptedLinear`,
/// `BiasedLinear`). Backbones hold their projections as `any LinearLayer`, so methods swap them
/// by name (`Backbone.linearSlots()`) without knowing how they are stored.
public protocol LinearLayer: Module {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Whether y includes a bias term (BitFit trains it; bias-free layers get a `BiasedLinear`).
    var hasBias: Bool { get }
    func callAsFunction(_ x: Tensor) -> Tensor
}

extension LinearLayer {
    /// The layer a wrapper (LoRA, adapter, added bias) wraps; nil for a layer that stores its weight.
    public var wrapped: (any LinearLayer)? { (self as? any WrappingLinearLayer)?.base }

    /// The layer that stores the weight, under any wrappers.
    public var innermost: any LinearLayer { wrapped?.innermost ?? self }

    /// The layer as a plain F32 `Linear` (nil when quantised or wrapped): fused kernels take only these.
    public var plain: Linear? {
        guard let l = self as? Linear, l.weight.dtype == .float32 else { return nil }
        return l
    }
}

/// A linear layer that adds something to another (`LoRALinear`, `AdaptedLinear`, `BiasedLinear`).
public protocol WrappingLinearLayer: LinearLayer {
    var base: any LinearLayer { get }
}

/// y = x W^T + b, W stored [out, in] as in PyTorch checkpoints. PyTorch's default initialisation:
/// uniform(-1/sqrt(in), 1/sqrt(in)) for both.
public final class Linear: Module, LinearLayer {
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
    public var hasBias: Bool { bias != nil }

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

/// A per-token normalisation (LayerNorm, RMSNorm): what a side network of a backbone's type uses.
public protocol NormLayer: Module {
    func callAsFunction(_ x: Tensor) -> Tensor
}

public final class LayerNorm: Module, NormLayer {
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

public final class RMSNorm: Module, NormLayer {
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
public final class Dropout: Module, RandomStateful {
    public let p: Float
    private var _rng: SplitMix64
    public init(_ p: Float, seed: UInt64 = 0) {
        self.p = p
        _rng = SplitMix64(seed: seed)
        super.init()
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard training, p > 0 else { return x }
        return x.dropout(p, seed: nextSeed(), training: true)
    }

    /// The generator's state between steps (saved with a run, restored on resume).
    public var randomState: UInt64 {
        get { _lock.lock(); defer { _lock.unlock() }; return _rng.state }
        set { _lock.lock(); defer { _lock.unlock() }; _rng.state = newValue }
    }

    // Inside `MicroBatches.run` the parts call this layer concurrently, in any order. The k-th
    // call of every part draws on the k-th seed of the run (drawn from `_rng` by whichever part
    // gets there first, so `_rng` advances as it would for the whole batch), mixed with the
    // part's index: each part gets its own mask, and the masks do not depend on thread timing.
    private let _lock = NSLock()
    private var _runSeeds: (run: Int, seeds: [UInt64], calls: [Int]) = (-1, [], [])

    private func nextSeed() -> UInt64 {
        guard let part = MicroBatches.current else { return _rng.next() }
        _lock.lock()
        defer { _lock.unlock() }
        if _runSeeds.run != part.run { _runSeeds = (part.run, [], [Int](repeating: 0, count: part.count)) }
        let k = _runSeeds.calls[part.index]
        _runSeeds.calls[part.index] += 1
        while _runSeeds.seeds.count <= k { _runSeeds.seeds.append(_rng.next()) }
        var mix = SplitMix64(seed: _runSeeds.seeds[k] ^ UInt64(part.index) &* 0xD1B5_4A32_D192_ED03)
        return mix.next()
    }
}

/// 2-D convolution, weight [out, in, kh, kw] as in PyTorch; PyTorch's default initialisation
/// (uniform +-1/sqrt(in * kh * kw) for weight and bias).
public final class Conv2d: Module {
    public let weight: Tensor
    public let bias: Tensor?
    let _stride: (Int, Int)
    let _padding: (Int, Int)

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true,
                rng: inout SplitMix64) {
        let bound = 1 / Float(inChannels * kernel * kernel).squareRoot()
        weight = parameter(.uniform([outChannels, inChannels, kernel, kernel], low: -bound, high: bound, rng: &rng))
        self.bias = bias ? parameter(.uniform([outChannels], low: -bound, high: bound, rng: &rng)) : nil
        _stride = (stride, stride)
        _padding = (padding, padding)
        super.init()
    }

    public var outChannels: Int { weight.shape[0] }

    /// [N, in, H, W] -> [N, out, Ho, Wo]
    public func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.conv2d(x, weight: weight, bias: bias, stride: _stride, padding: _padding)
    }
}

/// Batch normalisation over axis 1 of [N, C] (BatchNorm1d) or [N, C, H, W] (BatchNorm2d). In
/// training mode the batch's statistics normalise and update the running ones (momentum 0.1);
/// in evaluation mode (`train(false)`) the running statistics normalise. The running statistics
/// are buffers: saved in checkpoints, never trained.
public final class BatchNorm: Module {
    public let weight: Tensor?
    public let bias: Tensor?
    public let runningMean: Buffer
    public let runningVar: Buffer
    public let eps: Float
    public let momentum: Float

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true) {
        weight = affine ? parameter(.ones([channels])) : nil
        bias = affine ? parameter(.zeros([channels])) : nil
        runningMean = Buffer(.zeros([channels]))
        runningVar = Buffer(.ones([channels]))
        self.eps = eps
        self.momentum = momentum
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.batchNorm(x, runningMean: runningMean.value, runningVar: runningVar.value, weight: weight, bias: bias,
                         training: training, momentum: momentum, eps: eps)
    }
}
