import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// How QST shrinks a tap h_i [.., d] to the side width d/r.
public enum QSTDownsample: String, Codable, Sendable, CaseIterable {
    /// The released code's `AdapterLinear`: Linear(d -> w, no bias) -> SiLU -> Linear(w -> d/r, no
    /// bias) -> LayerNorm (w = `adapterWidth`, 16).
    case adapter
    /// Parameter-free (our design for the paper's "gradient-free" downsamples): the mean / max of
    /// each group of r consecutive channels, then a LayerNorm without affine parameters, because
    /// the residual stream's scale grows with depth and the side needs inputs of a fixed scale.
    case avgpool, maxpool
}

/// QST's settings (shared/methods.md; defaults from the released code).
public struct QSTOptions: Codable, Sendable, Equatable {
    /// Side width d / r, FFN width d_ff / r.
    public var reduction = 16
    /// Hidden width of the adapter downsample.
    public var adapterWidth = 16
    public var downsample: QSTDownsample = .adapter
    /// Raw z_i of the per-channel ladder gates (sigmoid(0.5) = 0.62 of s_{i-1} at start).
    public var gateInit: Float = 0.5
    /// Raw z of the output mix (sigmoid(1) = 0.73 of the frozen model's output at start).
    public var outputGateInit: Float = 1
    public init() {}
}

/// One per-tap downsample of QST.
public final class QSTDownsampler: Module {
    public let a: Linear?
    public let b: Linear?
    public let norm: LayerNorm
    let _kind: QSTDownsample
    let _groups: Int

    init(width d: Int, sideWidth ds: Int, options o: QSTOptions, rng: inout SplitMix64) {
        _kind = o.downsample
        _groups = ds
        switch o.downsample {
        case .adapter:
            a = Linear(d, o.adapterWidth, bias: false, rng: &rng)
            b = Linear(o.adapterWidth, ds, bias: false, rng: &rng)
            norm = LayerNorm(ds)
        case .avgpool, .maxpool:
            a = nil; b = nil
            norm = LayerNorm(ds, affine: false)
        }
        super.init()
    }

    /// h [.., d] -> [.., d/r].
    public func callAsFunction(_ h: Tensor) -> Tensor {
        switch _kind {
        case .adapter:
            return norm(b!(a!(h).silu()))
        case .avgpool, .maxpool:
            let d = h.shape[h.rank - 1], r = d / _groups
            let grouped = h.reshaped(Array(h.shape.dropLast()) + [_groups, r])
            return norm(_kind == .avgpool ? grouped.mean(axes: [-1]) : grouped.maxLastAxis())
        }
    }
}

/// Quantized Side Tuning (Zhang et al., ACL 2024) on a frozen (4-bit) Llama decoder:
///
///     s_0 = Down_0(h_0)
///     s_i = Side_i((1 - sigmoid(z_i)) * Down_{max(i-1, 0)}(h_i) + sigmoid(z_i) * s_{i-1}),  i = 1...L
///     out = (1 - sigmoid(z)) * Up(SideNorm(s_L)) + sigmoid(z) * FrozenNorm(h_L)
///
/// (the released code's indexing: L downsamples, the first serving both h_0 and h_1). Side layers are
/// the backbone's decoder layer at width d/r and FFN d_ff/r with the same numbers of heads and KV
/// heads, PyTorch-default random initialisation (the released code does not call `post_init` on
/// them). `out` feeds the frozen LM head, or a classifier at the last real token.
public final class QSTSide: Module {
    public let downs: [QSTDownsampler]
    /// z_i, one row of d/r per side layer.
    public let gates: Tensor
    public let blocks: [LlamaBlock]
    public let sideNorm: RMSNorm
    public let up: Linear
    /// z of the output mix, [d].
    public let outputGate: Tensor
    /// The backbone's final norm (frozen, not ours: `_` keeps it out of the parameters).
    let _frozenNorm: RMSNorm
    let _rope: RoPE
    public let _sideConfig: LlamaConfig

    /// The side layers' configuration: width d/r, FFN d_ff/r, same heads and KV heads.
    public static func sideConfig(_ c: LlamaConfig, reduction r: Int) throws -> LlamaConfig {
        guard r >= 1, c.dim % r == 0, c.ffnDim % r == 0, (c.dim / r) % c.heads == 0, (c.dim / r / c.heads) % 2 == 0 else {
            throw MethodError("QST: reduction \(r) must divide width \(c.dim) and FFN width \(c.ffnDim) into \(c.heads) heads of an even size")
        }
        return LlamaConfig(vocabSize: c.vocabSize, dim: c.dim / r, ffnDim: c.ffnDim / r, layers: c.layers, heads: c.heads,
                           kvHeads: c.kvHeads, headDim: c.dim / r / c.heads, ropeTheta: c.ropeTheta, rmsEps: c.rmsEps,
                           contextLength: c.contextLength, tiedEmbeddings: c.tiedEmbeddings)
    }

    public init(backbone: Llama, options o: QSTOptions, rng: inout SplitMix64) throws {
        let c = backbone.config
        let s = try Self.sideConfig(c, reduction: o.reduction)
        if o.downsample == .adapter && o.adapterWidth < 1 { throw MethodError("QST: adapter width must be >= 1") }
        downs = (0..<c.layers).map { _ in QSTDownsampler(width: c.dim, sideWidth: s.dim, options: o, rng: &rng) }
        gates = parameter(.full([c.layers, s.dim], o.gateInit), name: "gates")
        let kv = s.kvHeads * s.headDim
        blocks = (0..<c.layers).map { _ in
            func lin(_ i: Int, _ out: Int) -> Linear { Linear(i, out, bias: false, rng: &rng) }
            return LlamaBlock(config: s, attentionNorm: RMSNorm(s.dim, eps: s.rmsEps), query: lin(s.dim, s.dim),
                              key: lin(s.dim, kv), value: lin(s.dim, kv), output: lin(s.dim, s.dim),
                              ffnNorm: RMSNorm(s.dim, eps: s.rmsEps), gate: lin(s.dim, s.ffnDim), up: lin(s.dim, s.ffnDim),
                              down: lin(s.ffnDim, s.dim))
        }
        sideNorm = RMSNorm(s.dim, eps: s.rmsEps)
        up = Linear(s.dim, c.dim, rng: &rng)
        outputGate = parameter(.full([c.dim], o.outputGateInit), name: "output_gate")
        _frozenNorm = backbone.norm
        _rope = RoPE(headDim: s.headDim, theta: s.ropeTheta)
        _sideConfig = s
        super.init()
    }

    /// SideNorm(s_L) [B, T, d/r] from the taps h_0 ... h_L [B, T, d].
    public func sideStates(taps: [Tensor], keyPadding: [Float]?) -> Tensor {
        precondition(taps.count == blocks.count + 1, "QST reads \(blocks.count + 1) taps, got \(taps.count)")
        var s = start(taps[0])
        for i in 1...blocks.count { s = step(i, tap: taps[i], state: s, keyPadding: keyPadding) }
        return sideNorm(s)
    }

    /// s_0 = Down_0(h_0).
    public func start(_ h0: Tensor) -> Tensor { downs[0](h0) }

    /// s_i from h_i and s_{i-1} (i = 1...L). Called block by block alongside the backbone, no tap
    /// needs to outlive its step unless backward needs it (the adapter's first Linear does).
    /// With a `cache` (decoding), the rows are positions start ..< start + T and the side layers'
    /// keys and values are appended to it; the caller advances the cache after the last layer.
    public func step(_ i: Int, tap: Tensor, state s: Tensor, keyPadding: [Float]?, start: Int = 0, cache: KVCache? = nil) -> Tensor {
        let z = gates.slice(axis: 0, i - 1, i).sigmoid() // [1, d/r], broadcast over [B, T, d/r]
        let mixed = downs[i - 1](tap) * (1 - z) + s * z
        return blocks[i - 1](mixed, rope: _rope, start: start, cache: cache, layer: i - 1, keyPadding: keyPadding)
    }

    /// An empty KV cache shaped for the side layers (width d/r, same heads).
    public func makeCache(batch: Int = 1, capacity: Int) -> KVCache {
        KVCache(config: _sideConfig, batch: batch, capacity: capacity)
    }

    /// SideNorm(s_L).
    public func finish(_ s: Tensor) -> Tensor { sideNorm(s) }

    /// SideNorm(s_L) [B, T, d/r] and h_L [B, T, d] for ids [B * T]: the backbone runs block by block
    /// in `noGrad`, interleaved with the side layers, so a tap lives only as long as backward needs
    /// it (in evaluation and generation: one block).
    ///
    /// With `caches` (incremental decoding, no key padding), ids are the positions after those
    /// already cached; both caches advance by T.
    public func run(_ backbone: Llama, ids: [Int32], batch: Int, keyPadding: [Float]?,
                    caches: (backbone: KVCache, side: KVCache)? = nil) -> (side: Tensor, last: Tensor) {
        let t = ids.count / batch
        precondition(caches == nil || keyPadding == nil, "key padding is for training batches, not cached decoding")
        precondition(caches.map { $0.backbone.length == $0.side.length } ?? true, "backbone and side caches out of step")
        let p0 = caches?.backbone.length ?? 0
        var h = noGrad { backbone.embedding(ids, shape: [batch, t]) }
        var s = start(h)
        for (i, block) in backbone.layers.enumerated() {
            h = noGrad { block(h, rope: backbone.rope, start: p0, cache: caches?.backbone, layer: i, keyPadding: keyPadding) }
            s = step(i + 1, tap: h, state: s, keyPadding: keyPadding, start: p0, cache: caches?.side)
        }
        caches?.backbone.advance(by: t)
        caches?.side.advance(by: t)
        return (finish(s), h)
    }

    /// (1 - sigmoid(z)) * Up(side) + sigmoid(z) * FrozenNorm(last) for side [.., d/r] and the
    /// matching rows of h_L [.., d].
    public func mix(side: Tensor, last: Tensor) -> Tensor {
        let z = outputGate.sigmoid()
        let frozen = noGrad { _frozenNorm(last) }
        return up(side) * (1 - z) + frozen * z
    }
}
