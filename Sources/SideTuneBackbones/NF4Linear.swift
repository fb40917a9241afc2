import SideTuneEngine
import SideTuneNN

/// A frozen linear layer y = x W^T with W stored in NF4 (QLoRA / QST backbone weights). It holds
/// no trainable parameters; gradients flow to x only.
public final class NF4Linear: Module, LinearLayer {
    public let _weight: NF4Weight

    public init(_ weight: NF4Weight) {
        _weight = weight
        super.init()
    }

    /// Quantises a linear layer's weight (bias unsupported: Llama projections have none).
    public convenience init(quantizing linear: Linear) {
        precondition(linear.bias == nil, "NF4Linear has no bias")
        self.init(NF4Weight(quantizing: linear.weight))
    }

    public var inFeatures: Int { _weight.cols }
    public var outFeatures: Int { _weight.rows }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.matmulNF4(_weight) }
}

/// How `Llama.load` stores the block projections.
public enum LlamaWeightFormat: String, Sendable, CaseIterable {
    /// De-quantised to F32 (exact w.r.t. the file).
    case float32
    /// Re-quantised to NF4 with double-quantised scales (QST's 4-bit backbone); embeddings, norms
    /// and the LM head stay F32.
    case nf4
}
