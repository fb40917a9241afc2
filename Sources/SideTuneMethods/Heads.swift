import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// What a method trains on top of (or beside) a backbone: it turns taps into logits [B, classes].
/// Side methods get the frozen taps h_0 ... h_L; methods that train inside the backbone get its
/// last hidden state alone ([h_L]). Taps are padded [B, T, d] or packed [1, N, d] as `layout` says.
public protocol TapReader: Module {
    func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor
    /// Whether this instance can take packed taps (`TokenLayout.packed`).
    var readsPackedTaps: Bool { get }
    /// Whether it takes frozen taps stored in bf16 (the feature cache's), which it may only feed to
    /// ops that read bf16 (`Tensor.linear`).
    var readsBFloat16Taps: Bool { get }
}

extension TapReader {
    public var readsPackedTaps: Bool { false }
    public var readsBFloat16Taps: Bool { false }

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor { self(taps: taps, layout: .padded(keyPadding: keyPadding)) }
    public func callAsFunction(taps: [Tensor], segments: TokenSegments) -> Tensor { self(taps: taps, layout: .packed(segments)) }
}

/// A reader that can consume the frozen taps one at a time as the backbone produces them, so a
/// tap need not outlive its use (QST: in evaluation the decoder's taps never all exist at once).
public protocol StreamingTapReader: TapReader {
    /// `run(body)` calls `body(i, h_i)` for i = 0 ... L in order.
    func callAsFunction(streaming run: ((Int, Tensor) -> Void) -> Void, layout: TokenLayout) -> Tensor
}

/// The classifier every backbone offers: its final norm on the last tap (unless the stream is
/// normalised already), its read-out pooling (BERT: mean of the real tokens; ViT: CLS next to the
/// mean of the patches; Llama: the last real token), dropout, Linear. The linear probe and every
/// method that trains inside the backbone end here; LAST reads its corrected stream through it
/// where the backbone has a final norm, and QST its output mix (normalised by the mix itself).
///
/// The norm and pooling are the backbone's own (frozen for side methods, trained with it by full
/// fine-tuning): held as closures, so their parameters count once, under `backbone.`.
public final class BackboneHead: Module, TapReader {
    public let classifier: Linear
    public let dropout: Dropout
    let _readout: Readout

    public init<B: Backbone>(_ backbone: B, classes: Int, dropout p: Float, normalize: Bool = true, rng: inout SplitMix64) {
        classifier = Linear(backbone.pooledWidth, classes, bias: backbone.headHasBias, rng: &rng)
        dropout = Dropout(p, seed: rng.next())
        _readout = Readout(backbone, normalize: normalize)
        super.init()
    }

    public func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor {
        classifier(dropout(_readout(taps, layout: layout)))
    }

    public var readsPackedTaps: Bool { _readout.packs }
}

/// A backbone's read-out of its last tap, before a head: the final norm (unless told not to),
/// then the pooling; and whether it takes packed taps.
struct Readout {
    let norm: ((Tensor) -> Tensor)?
    let pool: (Tensor, TokenLayout) -> Tensor
    let packs: Bool

    init<B: Backbone>(_ backbone: B, normalize: Bool = true) {
        norm = normalize && backbone.hasFinalNorm ? { backbone.finalNorm($0) } : nil
        pool = { backbone.pool($0, layout: $1) }
        packs = backbone.packsTrainedForward || backbone.packsFrozenTaps
    }

    func callAsFunction(_ taps: [Tensor], layout: TokenLayout) -> Tensor {
        var x = taps[taps.count - 1]
        if let norm { x = norm(x) }
        return pool(x, layout)
    }
}

/// Pools [B, T, d] over real tokens: their mean, or the first token.
func pool(_ x: Tensor, keyPadding: [Float], _ pooling: MethodOptions.Pooling) -> Tensor {
    switch pooling {
    case .mean:
        return BertEncoder.meanPool(x, attentionMask: keyPadding.map { $0 != 0 ? 1 : 0 })
    case .first:
        let (b, d) = (x.shape[0], x.shape[2])
        return x.slice(axis: 1, 0, 1).reshaped([b, d])
    }
}

/// `pool` for either layout: padded [B, T, d] or packed [1, N, d] -> [B, d].
func pool(_ x: Tensor, layout: TokenLayout, _ pooling: MethodOptions.Pooling) -> Tensor {
    switch layout {
    case .padded(let keyPadding): return pool(x, keyPadding: keyPadding, pooling)
    case .packed(let segments): return pooling == .mean ? x.segmentMean(segments) : x.segmentFirst(segments)
    }
}
