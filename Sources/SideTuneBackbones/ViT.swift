#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SideTuneEngine
import SideTuneFormats
import SideTuneNN

/// DINOv2 ViT (ViT-S/14: width 384, 12 pre-LN blocks with LayerScale, 6 heads, GELU MLP 1536,
/// learned 37x37 position grid interpolated bicubically to the input's patch grid).
///
/// Shapes: pixels [B, 3, H, W] (H, W multiples of the patch size, ImageNet-normalised);
/// tokens [B, 1 + h*w, D] with the CLS token first, h = H/14, w = W/14.
public struct ViTConfig: Codable, Sendable, Equatable {
    public var hiddenSize = 384
    public var layers = 12
    public var heads = 6
    public var mlpSize = 1536
    public var patchSize = 14
    public var channels = 3
    /// Side of the square position-embedding grid the model was trained with (37 for 518 px).
    public var positionGrid = 37
    public var layerNormEps: Float = 1e-6
    /// Keys' cubic coefficient in the position-grid resize (PyTorch's bicubic uses -0.75).
    public var cubicCoefficient: Float = -0.75

    public init() {}

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", layers = "num_hidden_layers", heads = "num_attention_heads"
        case mlpSize = "intermediate_size", patchSize = "patch_size", channels = "num_channels"
        case positionGrid = "position_grid", layerNormEps = "layer_norm_eps", cubicCoefficient = "cubic_coefficient"
    }
}

/// CLS token, position embeddings and the patch projection (a 14x14 stride-14 convolution, done as
/// a reshape into patches and one matrix product).
public final class ViTEmbeddings: Module {
    /// [1, 1, D]
    public let clsToken: Tensor
    /// [1, 1 + G*G, D]: the CLS position first, then the G x G grid row by row.
    public let positionEmbeddings: Tensor
    /// weight [D, C*P*P] (the conv weight [D, C, P, P] flattened), bias [D]
    public let patchProjection: Linear
    let _config: ViTConfig
    /// Bicubic interpolation matrices [h*w, G*G] by target grid (h, w).
    private var _interpolation: [SIMD2<Int32>: Tensor] = [:]
    private let _lock = NSLockLite()

    public init(config: ViTConfig, rng: inout SplitMix64) {
        let d = config.hiddenSize, g = config.positionGrid
        _config = config
        clsToken = parameter(.randn([1, 1, d], std: 0.02, rng: &rng))
        positionEmbeddings = parameter(.randn([1, 1 + g * g, d], std: 0.02, rng: &rng))
        patchProjection = Linear(config.channels * config.patchSize * config.patchSize, d, rng: &rng)
        super.init()
    }

    /// [B, C, H, W] -> [B, 1 + h*w, D]; with `prompt` [P, D] (prompt tuning, as VPT-shallow) the
    /// prompts sit between the CLS token and the patches: [B, 1 + P + h*w, D], no position added.
    public func callAsFunction(_ pixels: Tensor, prompt: Tensor? = nil) -> Tensor {
        let c = _config, p = c.patchSize
        precondition(pixels.rank == 4 && pixels.shape[1] == c.channels,
                     "ViT input must be [B, \(c.channels), H, W], got \(pixels.shape)")
        let (b, hPx, wPx) = (pixels.shape[0], pixels.shape[2], pixels.shape[3])
        precondition(hPx % p == 0 && wPx % p == 0 && hPx > 0 && wPx > 0,
                     "ViT input size \(hPx)x\(wPx) is not a multiple of the patch size \(p)")
        let h = hPx / p, w = wPx / p
        // [B, C, h, P, w, P] -> [B, h, w, C, P, P] -> [B, h*w, C*P*P]: the conv's patch order.
        let patches = pixels.reshaped([b, c.channels, h, p, w, p]).permuted([0, 2, 4, 1, 3, 5])
            .reshaped([b, h * w, c.channels * p * p])
        let x = patchProjection(patches)                                   // [B, h*w, D]
        let cls = Tensor.zeros([b, 1, c.hiddenSize]) + clsToken               // broadcast, with autograd
        let tokens = Tensor.concat([cls, x], axis: 1)                      // [B, 1+h*w, D]
        let placed = tokens + positionEmbedding(h: h, w: w)                // broadcast over B
        guard let prompt else { return placed }
        let n = prompt.shape[0]
        let prompts = Tensor.zeros([b, n, c.hiddenSize]) + prompt.reshaped([1, n, c.hiddenSize]) // broadcast, with autograd
        let t = placed.shape[1]
        return Tensor.concat([placed.slice(axis: 1, 0, 1), prompts, placed.slice(axis: 1, 1, t)], axis: 1)
    }

    /// Position embeddings for an h x w patch grid: [1, 1 + h*w, D]. The grid part is the G x G
    /// table resized bicubically (half-pixel centres, edge-clamped, a = -0.75, no antialias), as
    /// DINOv2's `interpolate_pos_encoding` calls `F.interpolate(size=(h, w), mode="bicubic",
    /// align_corners=False)`. The resize is linear, so it is one product with a fixed matrix and
    /// gradients reach the table.
    public func positionEmbedding(h: Int, w: Int) -> Tensor {
        let g = _config.positionGrid, d = _config.hiddenSize
        let table = positionEmbeddings.reshaped([1 + g * g, d])
        let clsPos = table.slice(axis: 0, 0, 1)
        var grid = table.slice(axis: 0, 1, 1 + g * g)                       // [G*G, D]
        if h != g || w != g {
            // In f32 under a bf16 frozen forward too: a resize of a table, not a layer's product.
            grid = Tensor.withMatmulPrecision(.float32) { interpolationMatrix(h: h, w: w).matmul(grid) } // [h*w, D]
        }
        return Tensor.concat([clsPos, grid], axis: 0).reshaped([1, 1 + h * w, d])
    }

    func interpolationMatrix(h: Int, w: Int) -> Tensor {
        let key = SIMD2(Int32(h), Int32(w))
        return _lock.withLock {
            if let m = _interpolation[key] { return m }
            let g = _config.positionGrid, a = _config.cubicCoefficient
            let rows = CubicResize.weights(inSize: g, outSize: h, a: a)    // [h, G]
            let cols = CubicResize.weights(inSize: g, outSize: w, a: a)    // [w, G]
            let m = MemoryLedger.withCategory(.weights) { Tensor.zeros([h * w, g * g]) }
            for i in 0..<h {
                for j in 0..<w {
                    let row = m.data + (i * w + j) * g * g
                    for y in 0..<g where rows[i * g + y] != 0 {
                        for x in 0..<g { row[y * g + x] += rows[i * g + y] * cols[j * g + x] }
                    }
                }
            }
            _interpolation[key] = m
            return m
        }
    }
}

/// 1-D bicubic resampling weights as PyTorch's `upsample_bicubic2d` (align_corners=False) and
/// ONNX Resize (mode=cubic, coordinate_transformation_mode=half_pixel, exclude_outside=0) compute
/// them: source x = (i + 0.5) * in/out - 0.5, taps floor(x)-1 ... floor(x)+2 clamped to the edge.
public enum CubicResize {
    /// Keys' cubic convolution kernel at distance t in [0, 2).
    @inline(__always) static func kernel(_ t: Float, _ a: Float) -> Float {
        let t = abs(t)
        if t <= 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
        if t < 2 { return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a }
        return 0
    }

    /// [outSize, inSize] row-major: output i = sum_j w[i, j] input j.
    public static func weights(inSize: Int, outSize: Int, a: Float = -0.75) -> [Float] {
        var w = [Float](repeating: 0, count: outSize * inSize)
        let scale = Float(inSize) / Float(outSize)
        for i in 0..<outSize {
            let x = (Float(i) + 0.5) * scale - 0.5
            let x0 = x.rounded(.down), t = x - x0
            let k: [Float] = [kernel(1 + t, a), kernel(t, a), kernel(1 - t, a), kernel(2 - t, a)]
            for (n, kn) in k.enumerated() {
                let j = min(max(Int(x0) - 1 + n, 0), inSize - 1)
                w[i * inSize + j] += kn
            }
        }
        return w
    }
}

/// Multi-head self-attention with separate query/key/value/output projections (LoRA targets).
public final class ViTAttention: Module, AttentionProjections {
    // `var`: methods swap these by name (`linearSlots()`), as in BertSelfAttention.
    public var query: any LinearLayer
    public var key: any LinearLayer
    public var value: any LinearLayer
    public var output: any LinearLayer
    let _heads: Int
    /// The fused path's q/k/v product (bf16 weights stacked on first use); `_`: not a parameter.
    let _qkv = FusedQKV()

    public init(config: ViTConfig, rng: inout SplitMix64) {
        let d = config.hiddenSize
        query = Linear(d, d, rng: &rng)
        key = Linear(d, d, rng: &rng)
        value = Linear(d, d, rng: &rng)
        output = Linear(d, d, rng: &rng)
        _heads = config.heads
        super.init()
    }

    /// [B, T, D] -> [B, T, D]
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        if let a = recomputedContext(x, heads: _heads, mask: .none) { return output(a) }
        let dh = d / _heads
        func heads(_ y: Tensor) -> Tensor { y.reshaped([b, t, _heads, dh]).permuted([0, 2, 1, 3]) } // [B, H, T, dh]
        let a = Tensor.attention(heads(query(x)), heads(key(x)), heads(value(x)), scale: 1 / Float(dh).squareRoot())
        return output(a.permuted([0, 2, 1, 3]).reshaped([b, t, d]))
    }
}

/// Pre-LN block with LayerScale: x += ls1 * Attn(LN1(x)); x += ls2 * MLP(LN2(x)).
public final class ViTBlock: Module {
    public let norm1: LayerNorm
    public let attention: ViTAttention
    /// [D]
    public let layerScale1: Tensor
    public let norm2: LayerNorm
    public var fc1: any LinearLayer
    public var fc2: any LinearLayer
    /// [D]
    public let layerScale2: Tensor

    public init(config: ViTConfig, rng: inout SplitMix64) {
        let d = config.hiddenSize
        norm1 = LayerNorm(d, eps: config.layerNormEps)
        attention = ViTAttention(config: config, rng: &rng)
        layerScale1 = parameter(.full([d], 1))
        norm2 = LayerNorm(d, eps: config.layerNormEps)
        fc1 = Linear(d, config.mlpSize, rng: &rng)
        fc2 = Linear(config.mlpSize, d, rng: &rng)
        layerScale2 = parameter(.full([d], 1))
        super.init()
    }

    /// [B, T, D] -> [B, T, D] (any token count: HST prepends meta tokens).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x + attention(norm1(x)) * layerScale1
        return h + fc2(fc1(norm2(h)).gelu()) * layerScale2
    }
}

// MARK: - Fused no-grad path

extension ViTBlock {
    /// Whether `fusedInference` computes exactly what `callAsFunction` does: plain projections with
    /// f32 biases (all f32, or all stored in bf16) and affine LayerNorms.
    public var supportsFusedInference: Bool {
        fusableProjections([attention.query, attention.key, attention.value, attention.output, fc1, fc2])
            && [norm1, norm2].allSatisfy { $0.weight != nil && $0.bias != nil }
    }

    /// Floats of scratch `fusedInference` needs for `tokens` = batch x tokens per image.
    static func fusedScratchFloats(_ c: ViTConfig, tokens m: Int) -> Int {
        FusedQKV.scratchFloats(d: c.hiddenSize) + m * max(3 * c.hiddenSize, c.mlpSize) + 3 * m * c.hiddenSize
    }

    /// The no-grad forward with fused kernels, as BERT's: LayerNorm 1 by rows, the q/k/v product,
    /// attention read from it with strides, the output projection with bias, LayerScale, residual
    /// and LayerNorm 2 applied as its GEMM finishes each row block, fc1 with bias and GELU, fc2 with
    /// bias, LayerScale and residual. No permute copies and no separate elementwise passes; only
    /// the returned hidden state [B, T, d] is a new tensor.
    func fusedInference(_ x: Tensor, scratch: UnsafeMutablePointer<Float>, pool: ThreadPool = .shared) -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let m = b * t, dff = fc1.outFeatures, heads = attention._heads, hd = d / heads
        let (o, f1, f2) = (fusedProjection(attention.output)!, fusedProjection(fc1)!, fusedProjection(fc2)!)
        // Scratch: the q/k/v product's, a [M, max(3d, dff)] region (q/k/v, then fc1's activations),
        // and three [M, d]: the LayerNorms' outputs, the attention context, h.
        let big = scratch + FusedQKV.scratchFloats(d: d)
        let normed = big + m * max(3 * d, dff), ctx = normed + m * d, h = ctx + m * d
        let norm = { (n: LayerNorm) in
            FusedInference.NormRows(weight: n.weight!.data, bias: n.bias!.data, eps: n.eps, out: normed)
        }
        let norm1Rows = norm(norm1)
        pool.parallelChunks(m, minChunk: 64) { norm1Rows.apply(x.data, rows: $0, d: d) }
        attention._qkv.project([attention.query, attention.key, attention.value], normed, m: m, d: d, scratch: scratch,
                               out: big)
        FusedInference.attention(qkv: big, batch: b, seq: t, heads: heads, headDim: hd, keyPadding: nil,
                                 scale: 1 / Float(hd).squareRoot(), out: ctx, products: o.weight.precision, pool: pool)
        FusedInference.linearScaledResidual(ctx, ldx: d, m: m, k: d, weight: o.weight, d: d, bias: o.bias,
                                            scale: layerScale1.data, residual: x.data, out: h, norm: norm(norm2),
                                            pool: pool)
        FusedInference.linear(normed, ldx: d, m: m, k: d, weight: f1.weight, n: dff, bias: f1.bias, activation: .gelu,
                              out: big, ldo: dff, pool: pool)
        let y = Tensor(shape: [b, t, d])
        FusedInference.linearScaledResidual(big, ldx: dff, m: m, k: dff, weight: f2.weight, d: d, bias: f2.bias,
                                            scale: layerScale2.data, residual: h, out: y.data, pool: pool)
        return y
    }
}

/// The backbone's outputs. `taps[0]` is the embedding output (h_0), `taps[i]` the hidden state
/// after block i (i = 1...L), each [B, 1 + h*w, D]; `hidden` is the final LayerNorm of the last.
public struct ViTOutput {
    public var hidden: Tensor
    public var taps: [Tensor]
    public var grid: (h: Int, w: Int)
    /// With meta tokens (HST): each block's meta token after that block, [B, 1, D]; else empty.
    public var metaOutputs: [Tensor] = []
}

public final class DINOv2ViT: Module {
    public let config: ViTConfig
    public let embeddings: ViTEmbeddings
    public let layers: [ViTBlock]
    public let norm: LayerNorm
    /// Whether no-grad forwards may use the fused inference kernels (tests turn it off to compare
    /// against the block-by-block path).
    public var fusedInferenceEnabled = true

    /// Randomly initialised (tests); real weights come from `load(onnx:)`.
    public init(config: ViTConfig = ViTConfig(), seed: UInt64 = 0) {
        var rng = SplitMix64(seed: seed)
        self.config = config
        embeddings = ViTEmbeddings(config: config, rng: &rng)
        layers = (0..<config.layers).map { _ in ViTBlock(config: config, rng: &rng) }
        norm = LayerNorm(config.hiddenSize, eps: config.layerNormEps)
        super.init()
    }

    /// pixels [B, C, H, W] -> final normalised tokens [B, 1 + h*w, D] and (optionally) all taps.
    /// Works with autograd; wrap in `noGrad` for a frozen backbone (nothing is kept for backward).
    ///
    /// `metaTokens` (HST): one [1, D] token per block, prepended before that block
    /// ([meta, cls, patches]) and removed after it; the taps keep the usual [B, 1 + h*w, D] and the
    /// meta tokens' block outputs come back in `metaOutputs`. Gradients reach the meta tokens (and
    /// any unfrozen backbone parameter) through the ordinary autograd ops.
    public func callAsFunction(_ pixels: Tensor, collectTaps: Bool = true, metaTokens: [Tensor]? = nil) -> ViTOutput {
        let out = tokens(pixels, collectTaps: collectTaps, metaTokens: metaTokens)
        let p = config.patchSize
        return ViTOutput(hidden: norm(out.last), taps: out.taps, grid: (pixels.shape[2] / p, pixels.shape[3] / p),
                         metaOutputs: out.metaOutputs)
    }

    /// The blocks' outputs before the final norm: the taps (when collected), the last block's
    /// output and HST's meta outputs. With `prompt` the prompts run through every block beside
    /// the tokens and are cut out of what comes back.
    func tokens(_ pixels: Tensor, collectTaps: Bool, metaTokens: [Tensor]? = nil, prompt: Tensor? = nil)
        -> (taps: [Tensor], last: Tensor, metaOutputs: [Tensor]) {
        if let metaTokens {
            precondition(metaTokens.count == layers.count && metaTokens.allSatisfy { $0.count == config.hiddenSize },
                         "ViT: need \(layers.count) meta tokens of \(config.hiddenSize) values, got \(metaTokens.map(\.shape))")
        }
        var x = embeddings(pixels, prompt: prompt)
        var taps = collectTaps ? [x] : []
        var metaOutputs: [Tensor] = []
        let (b, d) = (pixels.shape[0], config.hiddenSize)
        if metaTokens == nil && !Autograd.isEnabled && !x.requiresGrad && runsFused {
            let floats = ViTBlock.fusedScratchFloats(config, tokens: x.shape[0] * x.shape[1])
            InferenceScratch.with(floats: floats) { scratch in
                for block in layers {
                    x = block.fusedInference(x, scratch: scratch)
                    if collectTaps { taps.append(x) }
                }
            }
        } else {
            for (i, block) in layers.enumerated() {
                if let metaTokens {
                    let meta = Tensor.zeros([b, 1, d]) + metaTokens[i].reshaped([1, 1, d]) // broadcast, with autograd
                    let t = x.shape[1]
                    let y = block(Tensor.concat([meta, x], axis: 1))
                    metaOutputs.append(y.slice(axis: 1, 0, 1))
                    x = y.slice(axis: 1, 1, 1 + t)
                } else {
                    x = block(x)
                }
                if collectTaps { taps.append(x) }
            }
        }
        if let prompt {
            let (p, t) = (prompt.shape[0], x.shape[1])
            x = Tensor.concat([x.slice(axis: 1, 0, 1), x.slice(axis: 1, 1 + p, t)], axis: 1)
        }
        return (taps, x, metaOutputs)
    }

    /// Whether no-grad forwards may take the fused kernels: enabled, and every block plain enough.
    var runsFused: Bool { fusedInferenceEnabled && layers.allSatisfy(\.supportsFusedInference) }

    /// Names of the blocks' two LayerNorms' parameters (layers.i.norm1/norm2 .weight/.bias): what
    /// HST trains in the backbone.
    public var blockLayerNormNames: Set<String> {
        Set(namedParameters().map(\.0).filter { $0.hasPrefix("layers.") && ($0.contains(".norm1.") || $0.contains(".norm2.")) })
    }

    /// Freezes every backbone parameter except the blocks' LayerNorms (HST).
    public func freezeAllButBlockLayerNorms() {
        freeze()
        unfreeze(keys: blockLayerNormNames)
    }

    /// Multiply-adds x 2 of one forward pass at H x W per image (matrix products and attention).
    public func flops(height: Int, width: Int) -> Double {
        let c = config, n = (height / c.patchSize) * (width / c.patchSize), t = Double(n + 1)
        let d = Double(c.hiddenSize), m = Double(c.mlpSize)
        let patch = 2 * Double(n) * Double(c.channels * c.patchSize * c.patchSize) * d
        let perBlock = 2 * t * d * d * 4 + 2 * t * d * m * 2 + 2 * 2 * t * t * d
        return patch + Double(c.layers) * perBlock
    }
}

/// A tiny lock for the interpolation cache (the side network and the backbone may run on several threads).
final class NSLockLite: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

// MARK: - Backbone

extension DINOv2ViT: Backbone {
    public typealias Input = Tensor
    public static var family: BackboneFamily { .vit }
    public var width: Int { config.hiddenSize }
    public var depth: Int { config.layers }

    /// Every image has 1 + h*w tokens, all real.
    public func tokenLengths(_ pixels: Tensor) -> [Int] {
        let p = config.patchSize
        return [Int](repeating: 1 + (pixels.shape[2] / p) * (pixels.shape[3] / p), count: pixels.shape[0])
    }
    public func paddedLayout(_ pixels: Tensor) -> TokenLayout {
        .padded(keyPadding: [Float](repeating: 1, count: tokenLengths(pixels).reduce(0, +)))
    }
    /// Images have no padding to skip.
    public var packsFrozenTaps: Bool { false }
    public var packsTrainedForward: Bool { false }

    public func frozenTaps(_ pixels: Tensor, packed: Bool) -> [Tensor] {
        precondition(!packed, "DINOv2ViT: images have no padding to pack")
        return noGrad { tokens(pixels, collectTaps: true).taps }
    }

    public func trainedForward(_ pixels: Tensor, packed: Bool, prompt: Tensor?) -> Tensor {
        precondition(!packed, "DINOv2ViT: images have no padding to pack")
        return tokens(pixels, collectTaps: false, prompt: prompt).last
    }

    public func linearSlots() -> [LinearSlot] {
        layers.enumerated().flatMap { i, block -> [LinearSlot] in
            let p = "layers.\(i)."
            return block.attention.attentionSlots(p + "attention.") + [
                LinearSlot(name: p + "fc1", role: .ffnIn, layer: block.fc1) { block.fc1 = $0 },
                LinearSlot(name: p + "fc2", role: .ffnOut, layer: block.fc2) { block.fc2 = $0 },
            ]
        }
    }

    /// No token table: prompts start from a small normal draw (VPT initialises them randomly).
    public var promptInitTable: Tensor? { nil }

    public func finalNorm(_ x: Tensor) -> Tensor { norm(x) }
    public var hasFinalNorm: Bool { true }

    /// DINOv2's linear-probe read-out: the CLS token next to the mean of the patch tokens [B, 2d].
    public func pool(_ x: Tensor, layout: TokenLayout) -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let cls = x.slice(axis: 1, 0, 1).reshaped([b, d])
        let patches = x.slice(axis: 1, 1, t).mean(axes: [1])
        return Tensor.concat([cls, patches], axis: 1)
    }
    public var pooledWidth: Int { 2 * config.hiddenSize }

    public func sideBlock(reduction r: Int, rng: inout SplitMix64) throws -> any SideBlock {
        let c = config
        guard r >= 1, c.hiddenSize % r == 0, (c.hiddenSize / r) % c.heads == 0, c.mlpSize % r == 0 else {
            throw BackboneError("reduction \(r) must divide hidden size \(c.hiddenSize) into a multiple of \(c.heads) heads and divide MLP size \(c.mlpSize)")
        }
        var s = c
        s.hiddenSize = c.hiddenSize / r
        s.mlpSize = c.mlpSize / r
        s.layers = 1
        return ViTBlock(config: s, rng: &rng)
    }

    public func sideNorm(width: Int) -> any NormLayer { LayerNorm(width, eps: config.layerNormEps) }
}

extension ViTBlock: SideBlock {
    public func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor { self(x) }
    public var supportsPackedTokens: Bool { false }
}
