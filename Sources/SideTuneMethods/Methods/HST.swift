import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// Shape of HST's hierarchical side network (defaults from the paper and AFeng-x/HST).
public struct HSTConfig: Codable, Sendable, Equatable {
    public var dims = [32, 48, 64, 72]
    public var depths = [3, 3, 3, 3]
    public var heads = [2, 4, 8, 12]
    public var mlpRatio = 4

    public init() {}
    public init(dims: [Int], depths: [Int], heads: [Int], mlpRatio: Int = 4) {
        self.dims = dims; self.depths = depths; self.heads = heads; self.mlpRatio = mlpRatio
    }
}

/// timm's `trunc_normal_(std=.02)` (truncated at +-2, i.e. 100 standard deviations: a plain
/// normal in practice) for the side network's Linear weights; biases zero.
func hstLinear(_ inF: Int, _ outF: Int, rng: inout SplitMix64) -> Linear {
    Linear(weight: parameter(.randn([outF, inF], std: 0.02, rng: &rng)), bias: parameter(.zeros([outF])))
}

/// The reference's conv initialisation: normal(0, sqrt(2 / fan_out)), fan_out = k*k*out; bias zero.
func hstConvInit(_ conv: Conv2d, rng: inout SplitMix64) {
    let (o, k) = (conv.weight.shape[0], conv.weight.shape[2] * conv.weight.shape[3])
    let std = (2 / Float(k * o)).squareRoot()
    for i in 0..<conv.weight.count { conv.weight.data[i] = rng.nextNormal() * std }
    if let b = conv.bias { b.data.initialize(repeating: 0, count: b.count) }
}

/// [B, C, H, W] -> tokens [B, H*W, C] (row-major positions, as the ViT's patches).
func tokens(_ x: Tensor) -> Tensor {
    let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    return x.reshaped([b, c, h * w]).permuted([0, 2, 1])
}

/// tokens [B, H*W, C] -> [B, C, H, W]
func featureMap(_ x: Tensor, h: Int, w: Int) -> Tensor {
    let (b, c) = (x.shape[0], x.shape[2])
    return x.permuted([0, 2, 1]).reshaped([b, c, h, w])
}

/// Stage 1's entry: Conv3x3 s2 (no bias) -> BatchNorm -> ReLU -> Conv2x2 s2 -> LayerNorm (H/4).
public final class HSTStem: Module {
    public let conv1: Conv2d
    public let norm1: BatchNorm
    public let conv2: Conv2d
    public let norm: LayerNorm

    init(channels: Int, dim: Int, rng: inout SplitMix64) {
        conv1 = Conv2d(channels, dim, kernel: 3, stride: 2, padding: 1, bias: false, rng: &rng)
        norm1 = BatchNorm(dim)
        conv2 = Conv2d(dim, dim, kernel: 2, stride: 2, rng: &rng)
        norm = LayerNorm(dim)
        super.init()
        hstConvInit(conv1, rng: &rng)
        hstConvInit(conv2, rng: &rng)
    }

    /// pixels [B, 3, H, W] -> tokens [B, h*w, dim] and the grid.
    func callAsFunction(_ x: Tensor) -> (Tensor, Int, Int) {
        let y = conv2(norm1(conv1(x)).relu())
        return (norm(tokens(y)), y.shape[2], y.shape[3])
    }
}

/// Stages 2-4's entry: Conv3x3 s2 (padding 1) -> LayerNorm (the reference's OverlapPatchEmbed).
public final class HSTDownsample: Module {
    public let conv: Conv2d
    public let norm: LayerNorm

    init(_ inDim: Int, _ outDim: Int, rng: inout SplitMix64) {
        conv = Conv2d(inDim, outDim, kernel: 3, stride: 2, padding: 1, rng: &rng)
        norm = LayerNorm(outDim)
        super.init()
        hstConvInit(conv, rng: &rng)
    }

    func callAsFunction(_ x: Tensor) -> (Tensor, Int, Int) {
        let y = conv(x)
        return (norm(tokens(y)), y.shape[2], y.shape[3])
    }
}

/// Multi-head attention from the side tokens (queries) to a few key/value tokens.
public final class HSTCrossAttention: Module {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    let _heads: Int

    init(dim: Int, heads: Int, rng: inout SplitMix64) {
        query = hstLinear(dim, dim, rng: &rng)
        key = hstLinear(dim, dim, rng: &rng)
        value = hstLinear(dim, dim, rng: &rng)
        output = hstLinear(dim, dim, rng: &rng)
        _heads = heads
        super.init()
    }

    /// x [B, N, d], kv [B, M, d] -> [B, N, d]
    func callAsFunction(_ x: Tensor, _ kv: Tensor) -> Tensor {
        let (b, n, d, m) = (x.shape[0], x.shape[1], x.shape[2], kv.shape[1])
        let dh = d / _heads
        func heads(_ y: Tensor, _ t: Int) -> Tensor { y.reshaped([b, t, _heads, dh]).permuted([0, 2, 1, 3]) }
        let a = Tensor.attention(heads(query(x), n), heads(key(kv), m), heads(value(kv), m), scale: 1 / Float(dh).squareRoot())
        return output(a.permuted([0, 2, 1, 3]).reshaped([b, n, d]))
    }
}

/// x += CrossAttn(LN1(x), kv); x += f; x += MLP(LN2(x)).
public final class HSTBlock: Module {
    public let norm1: LayerNorm
    public let attention: HSTCrossAttention
    public let norm2: LayerNorm
    public let fc1: Linear
    public let fc2: Linear

    init(dim: Int, heads: Int, mlpRatio: Int, rng: inout SplitMix64) {
        norm1 = LayerNorm(dim, eps: 1e-6)
        attention = HSTCrossAttention(dim: dim, heads: heads, rng: &rng)
        norm2 = LayerNorm(dim, eps: 1e-6)
        fc1 = hstLinear(dim, dim * mlpRatio, rng: &rng)
        fc2 = hstLinear(dim * mlpRatio, dim, rng: &rng)
        super.init()
    }

    func callAsFunction(_ x: Tensor, kv: Tensor, f: Tensor) -> Tensor {
        let h = x + attention(norm1(x), kv) + f
        return h + fc2(fc1(norm2(h)).gelu())
    }
}

/// One stage: its entry (stem or downsample), the Bridge from the ViT width, one LayerNorm per
/// side block for the bridged meta token, the blocks and the stage's closing LayerNorm.
public final class HSTStage: Module {
    public let stem: HSTStem?
    public let downsample: HSTDownsample?
    public let bridge: Linear
    public let metaNorms: [LayerNorm]
    public let blocks: [HSTBlock]
    public let norm: LayerNorm

    init(index k: Int, config c: HSTConfig, vitWidth: Int, channels: Int, rng: inout SplitMix64) {
        let d = c.dims[k]
        stem = k == 0 ? HSTStem(channels: channels, dim: d, rng: &rng) : nil
        downsample = k == 0 ? nil : HSTDownsample(c.dims[k - 1], d, rng: &rng)
        bridge = hstLinear(vitWidth, d, rng: &rng)
        metaNorms = (0..<c.depths[k]).map { _ in LayerNorm(d) }
        blocks = (0..<c.depths[k]).map { _ in HSTBlock(dim: d, heads: c.heads[k], mlpRatio: c.mlpRatio, rng: &rng) }
        norm = LayerNorm(d, eps: 1e-6)
        super.init()
    }
}

/// HST's side network (Lin et al., "Hierarchical Side-Tuning for Vision Transformers"; code
/// AFeng-x/HST), see shared/methods.md. Side block j of stage k reads ViT block i = 3k + j:
///
///     f  = Bridge_k(bilinear-resize(patch map after block i))      [B, H_k*W_k, d_k]
///     kv = [LN_i(Bridge_k(meta token after block i)), mean over positions of f]
///     x += CrossAttn(LN1(x), kv);  x += f;  x += MLP(LN2(x))
///
/// Head: mean over positions -> BatchNorm1d (no affine, eps 1e-6) -> Linear.
///
/// Bridge and resize are swapped here (Bridge on the h x w ViT grid, then resize): the Bridge is
/// affine per position and bilinear weights sum to 1, so the result is the same, and the resize
/// runs on d_k channels instead of the ViT's D (at 224 px the stage-1 map is 56 x 56).
public final class HSTSide: Module {
    /// One learnable meta token per ViT block, [L, D] (xavier-uniform as the reference).
    public let metaTokens: Tensor
    public let stages: [HSTStage]
    public let headNorm: BatchNorm
    public let classifier: Linear
    public let _config: HSTConfig

    public init(vit: ViTConfig, classes: Int, config c: HSTConfig = HSTConfig(), rng: inout SplitMix64) throws {
        guard classes >= 2 else { throw MethodError("a classifier needs at least 2 classes, got \(classes)") }
        let stageCount = c.dims.count
        guard stageCount >= 1, c.depths.count == stageCount, c.heads.count == stageCount else {
            throw MethodError("HST: dims \(c.dims), depths \(c.depths) and heads \(c.heads) must have one entry per stage")
        }
        guard c.depths.reduce(0, +) == vit.layers else {
            throw MethodError("HST: side blocks \(c.depths) (\(c.depths.reduce(0, +)) in all) must match the ViT's \(vit.layers) blocks, one each")
        }
        for (d, h) in zip(c.dims, c.heads) where h < 1 || d % h != 0 {
            throw MethodError("HST: stage width \(d) is not divisible by \(h) heads")
        }
        let d = vit.hiddenSize
        let bound = (6 / Float(2 * d)).squareRoot() // xavier_uniform_ on a [1, 1, D] tensor
        metaTokens = parameter(.uniform([vit.layers, d], low: -bound, high: bound, rng: &rng), name: "meta_tokens")
        stages = (0..<stageCount).map { HSTStage(index: $0, config: c, vitWidth: d, channels: vit.channels, rng: &rng) }
        headNorm = BatchNorm(c.dims[stageCount - 1], eps: 1e-6, affine: false)
        classifier = hstLinear(c.dims[stageCount - 1], classes, rng: &rng)
        _config = c
        super.init()
    }

    /// The meta tokens as the ViT's hook takes them: one [1, D] per block.
    public var metaTokenList: [Tensor] { (0..<metaTokens.shape[0]).map { metaTokens.slice(axis: 0, $0, $0 + 1) } }

    /// pixels [B, 3, H, W]; ViT taps h_0...h_L [B, 1 + h*w, D] and meta outputs [B, 1, D] per block,
    /// from a ViT run with `metaTokenList` -> logits [B, classes].
    public func callAsFunction(pixels: Tensor, taps: [Tensor], metaOutputs: [Tensor], grid: (h: Int, w: Int)) -> Tensor {
        let layers = metaTokens.shape[0]
        precondition(taps.count == layers + 1 && metaOutputs.count == layers,
                     "HST: need \(layers + 1) taps and \(layers) meta outputs, got \(taps.count) and \(metaOutputs.count)")
        let (b, hw) = (pixels.shape[0], grid.h * grid.w)
        var x = pixels
        var xTokens = pixels
        var vitBlock = 0
        for stage in stages {
            let (t, h, w): (Tensor, Int, Int) = stage.stem.map { $0(x) } ?? stage.downsample!(x)
            xTokens = t
            for (j, block) in stage.blocks.enumerated() {
                let tap = taps[vitBlock + 1]
                precondition(tap.shape[1] == 1 + hw, "HST: tap \(vitBlock + 1) has \(tap.shape[1]) tokens, grid \(grid) needs \(1 + hw)")
                let patches = stage.bridge(tap.slice(axis: 1, 1, 1 + hw))                   // [B, hw, d]
                let f = tokens(featureMap(patches, h: grid.h, w: grid.w).resizedBilinear(height: h, width: w))
                let meta = stage.metaNorms[j](stage.bridge(metaOutputs[vitBlock]))           // [B, 1, d]
                let kv = Tensor.concat([meta, f.mean(axes: [1], keepDims: true)], axis: 1)   // [B, 2, d]
                xTokens = block(xTokens, kv: kv, f: f)
                vitBlock += 1
            }
            xTokens = stage.norm(xTokens)
            x = featureMap(xTokens, h: h, w: w)
        }
        let pooled = xTokens.mean(axes: [1])                                                 // [B, d]
        // BatchNorm1d cannot take batch statistics of one example: a lone training example is
        // normalised with the running statistics instead (PyTorch would raise).
        let normed: Tensor
        if training && b == 1 {
            headNorm.train(false)
            normed = headNorm(pooled)
            headNorm.train(true)
        } else {
            normed = headNorm(pooled)
        }
        return classifier(normed)
    }
}

/// HST: meta tokens in every ViT block and a hierarchical convolutional side network. ViTs only:
/// the side network's stages are convolutions over the patch grid.
public enum HSTMethod: AdaptationMethod {
    public static let kind = MethodKind.hst
    public static let summary = "Hierarchical Side-Tuning: meta tokens per ViT block and a 4-stage convolutional side network"
    public static let defaultLearningRate: Float = 3e-3

    public static func refusal(on family: BackboneFamily) -> String? {
        family == .vit ? nil : "its side network is convolutional, over a ViT's patch grid"
    }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        guard let vit = c.backbone as? DINOv2ViT else { throw MethodError("HST needs a ViT backbone") }
        // B is DINOv2ViT here, so its input is pixels.
        let model = try HSTClassifier(backbone: vit, classes: c.classes, options: c.options, config: c.options.hst ?? HSTConfig(),
                                      rng: &c.rng)
        return model as! any TrainableModel<B.Input>
    }
}

/// HST on a DINOv2 ViT: the backbone frozen except its blocks' LayerNorms, the meta tokens
/// prepended in every block, the side network reading the pixels, every block's patch map and
/// meta-token output. Backprop runs through the whole ViT (HST trades memory for accuracy), so
/// no taps can be cached (`tapsRead` is empty).
///
/// Checkpoints hold the trainable parameters (side network, meta tokens, the blocks' LayerNorms,
/// under their `backbone.`/`side.` names) and the BatchNorm running statistics (buffers).
public final class HSTClassifier: Module, TrainableModel {
    public let backbone: DINOv2ViT
    public let side: HSTSide
    public let _options: MethodOptions
    public let _classes: Int

    public var options: MethodOptions { _options }
    public var classes: Int { _classes }
    public var method: MethodKind { .hst }
    public var tapsRead: [Int] { [] }
    public var tapCount: Int { backbone.config.layers + 1 }
    public var tapWidth: Int { backbone.config.hiddenSize }

    /// The ViT's taps (with the meta tokens in place) without autograd. The trainer does not need
    /// them for HST (nothing is cached); for inspection.
    public func frozenTaps(_ images: Tensor) -> [Tensor] {
        noGrad { backbone(images, metaTokens: side.metaTokenList).taps }
    }

    public func recordLogits(_ images: Tensor, taps: [Tensor]?) -> Tensor {
        precondition(taps == nil, "HST backpropagates through the ViT: it cannot run on cached taps")
        return self(images)
    }

    /// Bits per element of what backward keeps (`--activation-bits`; 32 unless set).
    public var activationBits: ActivationBits { MethodRegistry.activationBits(.hst, options: _options) }

    /// Freezes `backbone` except its blocks' LayerNorms and builds the side network.
    public convenience init(backbone: DINOv2ViT, classes: Int, options: MethodOptions = MethodOptions(),
                            config: HSTConfig = HSTConfig(), seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        try self.init(backbone: backbone, classes: classes, options: options, config: config, rng: &rng)
    }

    public init(backbone: DINOv2ViT, classes: Int, options: MethodOptions, config: HSTConfig = HSTConfig(),
                rng: inout SplitMix64) throws {
        side = try HSTSide(vit: backbone.config, classes: classes, config: config, rng: &rng)
        self.backbone = backbone
        _options = options
        _classes = classes
        backbone.freezeAllButBlockLayerNorms()
        super.init()
    }

    /// images [B, 3, H, W] (ImageNet-normalised, H and W multiples of the patch) -> logits [B, classes].
    public func callAsFunction(_ images: Tensor) -> Tensor {
        let out = backbone(images, metaTokens: side.metaTokenList)
        return side(pixels: images, taps: out.taps, metaOutputs: out.metaOutputs, grid: out.grid)
    }
}
