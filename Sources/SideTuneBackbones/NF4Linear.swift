import SideTuneEngine
import SideTuneNN

/// A frozen linear layer y = x W^T (+ b) with W stored in NF4 (QLoRA and QST backbone weights).
/// The weight is never trained (gradients flow to x only); the bias, kept in F32, may be (BitFit).
public final class NF4Linear: Module, LinearLayer {
    public let _weight: NF4Weight
    public let bias: Tensor?

    public init(_ weight: NF4Weight, bias: Tensor? = nil) {
        _weight = weight
        self.bias = bias
        bias?.requiresGrad = false
        super.init()
    }

    /// Quantises a linear layer's weight; its bias is kept as it is.
    public convenience init(quantizing linear: Linear) {
        self.init(NF4Weight(quantizing: linear.weight), bias: linear.bias)
    }

    public var inFeatures: Int { _weight.cols }
    public var outFeatures: Int { _weight.rows }
    public var hasBias: Bool { bias != nil }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = x.matmulNF4(_weight)
        return bias.map { y + $0 } ?? y
    }
}

/// How a backbone stores its blocks' projections.
public enum WeightFormat: String, Codable, Sendable, CaseIterable {
    /// F32 (exact with respect to the file).
    case f32
    /// NF4 with double-quantised scales (QST's and QLoRA's 4-bit backbone); embeddings, norms,
    /// the patch projection and the LM head stay F32.
    case nf4

    /// Also reads the older spelling `float32` (SmolLM2 checkpoints name their backbone `<asset>-float32`).
    public init?(name: String) {
        switch name.lowercased() {
        case "f32", "float32": self = .f32
        case "nf4": self = .nf4
        default: return nil
        }
    }
}
