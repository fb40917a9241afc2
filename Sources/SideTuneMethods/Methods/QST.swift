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

/// QST on any backbone: the 4-bit NF4 frozen backbone (`--weights nf4`, the default) with the
/// QST side network of its block type; the output mix is read by the backbone's read-out and a
/// Linear (Llama: at the last real token, no bias, as the released code's classifier).
public enum QSTMethod: AdaptationMethod {
    public static let kind = MethodKind.qst
    public static let summary = "Quantized Side Tuning: 4-bit NF4 backbone, gated d/r-wide side layers of its block type"
    public static let defaultLearningRate: Float = 3e-3
    public static let readsFrozenTaps = true
    public static var defaultWeights: WeightFormat { .nf4 }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let reader = try QSTReader(backbone: c.backbone, classes: c.classes, options: c.options.qst, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: reader,
                          tapsRead: Array(0...c.backbone.depth))
    }
}

/// Quantized Side Tuning (Zhang et al., ACL 2024) beside a frozen (4-bit) backbone:
///
///     s_0 = Down_0(h_0)
///     s_i = Side_i((1 - sigmoid(z_i)) * Down_{max(i-1, 0)}(h_i) + sigmoid(z_i) * s_{i-1}),  i = 1...L
///     out = (1 - sigmoid(z)) * Up(SideNorm(s_L)) + sigmoid(z) * FrozenNorm(h_L)
///
/// (the released code's indexing: L downsamples, the first serving both h_0 and h_1). Side layers are
/// the backbone's block at width d/r and FFN d_ff/r with the same head counts (Llama: decoder
/// layers with the same KV heads), PyTorch-default random initialisation (the released code does
/// not call `post_init` on them); SideNorm is the backbone's kind of norm. FrozenNorm is the
/// backbone's final norm (none on a post-LN BERT, whose h_L is normalised already). `out` feeds the
/// frozen LM head, or a classifier on the backbone's read-out.
public final class QSTSide: Module {
    public let downs: [QSTDownsampler]
    /// z_i, one row of d/r per side layer.
    public let gates: Tensor
    public let blocks: [any SideBlock]
    public let sideNorm: any NormLayer
    public let up: Linear
    /// z of the output mix, [d].
    public let outputGate: Tensor
    /// The backbone's final norm (frozen, not ours: a closure keeps it out of the parameters).
    let _frozenNorm: (Tensor) -> Tensor

    public init<B: Backbone>(backbone: B, options o: QSTOptions, rng: inout SplitMix64) throws {
        let (d, depth) = (backbone.width, backbone.depth)
        guard o.reduction >= 1, d % o.reduction == 0 else { throw MethodError("QST: reduction \(o.reduction) must divide the width \(d)") }
        if o.downsample == .adapter && o.adapterWidth < 1 { throw MethodError("QST: adapter width must be >= 1") }
        let ds = d / o.reduction
        downs = (0..<depth).map { _ in QSTDownsampler(width: d, sideWidth: ds, options: o, rng: &rng) }
        gates = parameter(.full([depth, ds], o.gateInit), name: "gates")
        var built: [any SideBlock] = []
        do {
            for _ in 0..<depth { built.append(try backbone.sideBlock(reduction: o.reduction, rng: &rng)) }
        } catch { throw MethodError("QST: \(error)") }
        blocks = built
        sideNorm = backbone.sideNorm(width: ds)
        up = Linear(ds, d, rng: &rng)
        outputGate = parameter(.full([d], o.outputGateInit), name: "output_gate")
        _frozenNorm = { backbone.finalNorm($0) }
        super.init()
    }

    /// s_0 = Down_0(h_0).
    public func start(_ h0: Tensor) -> Tensor { downs[0](h0) }

    /// The gated input of side layer i (i = 1...L) from h_i and s_{i-1}.
    func gatedInput(_ i: Int, tap: Tensor, state s: Tensor) -> Tensor {
        let z = gates.slice(axis: 0, i - 1, i).sigmoid() // [1, d/r], broadcast over [B, T, d/r]
        return downs[i - 1](tap) * (1 - z) + s * z
    }

    /// s_i from h_i and s_{i-1} (i = 1...L).
    public func step(_ i: Int, tap: Tensor, state s: Tensor, layout: TokenLayout) -> Tensor {
        blocks[i - 1](gatedInput(i, tap: tap, state: s), layout: layout)
    }

    /// SideNorm(s_L) from the taps h_0 ... h_L.
    public func sideStates(taps: [Tensor], layout: TokenLayout) -> Tensor {
        precondition(taps.count == blocks.count + 1, "QST reads \(blocks.count + 1) taps, got \(taps.count)")
        var s = start(taps[0])
        for i in 1...blocks.count { s = step(i, tap: taps[i], state: s, layout: layout) }
        return sideNorm(s)
    }

    /// (1 - sigmoid(z)) * Up(side) + sigmoid(z) * FrozenNorm(last) for side [.., d/r] and the
    /// matching rows of h_L [.., d].
    public func mix(side: Tensor, last: Tensor) -> Tensor {
        let z = outputGate.sigmoid()
        let frozen = noGrad { _frozenNorm(last) }
        return up(side) * (1 - z) + frozen * z
    }
}

/// QST as a classifier: the side network, then the backbone's read-out of the output mix and a
/// Linear (no dropout, as the released code's head). Reads the taps as the backbone yields them
/// when nothing is cached, so a backbone that runs block by block (Llama) holds one tap at a time
/// in evaluation.
public final class QSTReader: Module, StreamingTapReader {
    public let side: QSTSide
    public let score: Linear
    let _pool: (Tensor, TokenLayout) -> Tensor
    let _poolFirst: Bool
    let _packs: Bool

    public init<B: Backbone>(backbone: B, classes: Int, options: QSTOptions, rng: inout SplitMix64) throws {
        side = try QSTSide(backbone: backbone, options: options, rng: &rng)
        score = Linear(backbone.pooledWidth, classes, bias: backbone.headHasBias, rng: &rng)
        _pool = { backbone.pool($0, layout: $1) }
        _poolFirst = backbone.poolPicksRows
        _packs = side.blocks.allSatisfy(\.supportsPackedTokens) && backbone.packsFrozenTaps
        super.init()
    }

    public var readsPackedTaps: Bool { _packs }

    public func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor {
        readOut(side: side.sideStates(taps: taps, layout: layout), last: taps[taps.count - 1], layout: layout)
    }

    public func callAsFunction(streaming run: ((Int, Tensor) -> Void) -> Void, layout: TokenLayout) -> Tensor {
        var s: Tensor?, last: Tensor?
        let depth = side.blocks.count
        run { i, h in
            s = i == 0 ? side.start(h) : side.step(i, tap: h, state: s!, layout: layout)
            if i == depth { last = h }
        }
        return readOut(side: side.sideNorm(s!), last: last!, layout: layout)
    }

    /// The mix is per position: where the read-out picks rows, it is taken at those rows only.
    func readOut(side s: Tensor, last: Tensor, layout: TokenLayout) -> Tensor {
        if _poolFirst { return score(side.mix(side: _pool(s, layout), last: _pool(last, layout))) }
        return score(_pool(side.mix(side: s, last: last), layout))
    }
}
