import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// A network that turns backbone taps (h_0 ... h_L, each [B, T, d]) into logits [B, classes].
/// Side methods call it on frozen taps; the other methods on taps computed with autograd.
public protocol TapReader: Module {
    func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor
    /// Whether it takes frozen taps stored in bf16 (the feature cache's), which it may only feed to
    /// ops that read bf16 (`Tensor.linear`).
    var readsBFloat16Taps: Bool { get }
}

extension TapReader {
    public var readsBFloat16Taps: Bool { false }
}

/// A reader that can also take packed taps ([1, N, d] each, no padding rows: see `TokenSegments`),
/// computing nothing for padding. Side methods on text read them so.
public protocol PackedTapReader: TapReader {
    /// Whether this instance's configuration has a packed path (otherwise give it padded taps).
    var readsPackedTaps: Bool { get }
    func callAsFunction(taps: [Tensor], segments: TokenSegments) -> Tensor
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

/// Mean of the last tap over real tokens -> dropout -> Linear: the classifier of the linear probe
/// and of the methods that change the backbone (full, BitFit, LoRA, adapters, prompts).
public final class PooledHead: Module, PackedTapReader {
    public let classifier: Linear
    public let dropout: Dropout
    let _pooling: MethodOptions.Pooling
    /// Positions at the start of the taps that are not tokens (prompt tuning's prompts).
    let _skip: Int

    public init(width: Int, classes: Int, dropout p: Float, pooling: MethodOptions.Pooling = .mean, skip: Int = 0,
                rng: inout SplitMix64) {
        classifier = Linear(width, classes, rng: &rng)
        dropout = Dropout(p, seed: rng.next())
        _pooling = pooling
        _skip = skip
        super.init()
    }

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor {
        var last = taps[taps.count - 1]
        if _skip > 0 { last = last.slice(axis: 1, _skip, last.shape[1]) }
        return classifier(dropout(pool(last, keyPadding: keyPadding, _pooling)))
    }

    /// Packed taps have no place for prompt positions: prompt tuning reads padded ones.
    public var readsPackedTaps: Bool { _skip == 0 }

    public func callAsFunction(taps: [Tensor], segments: TokenSegments) -> Tensor {
        precondition(readsPackedTaps, "PooledHead: packed taps cannot skip prompt positions")
        return classifier(dropout(pool(taps[taps.count - 1], layout: .packed(segments), _pooling)))
    }
}
