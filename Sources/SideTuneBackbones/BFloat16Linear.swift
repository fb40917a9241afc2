import SideTuneEngine
import SideTuneNN

/// A frozen linear layer y = x W^T (+ b) with W stored once in bf16, packed as the bf16 GEMM reads
/// it (`--backbone-precision bf16`): half the f32 weight's bytes in the ledger, and products with
/// bf16 operands and f32 sums. The bias stays f32. Frozen backbones of side methods run it without
/// autograd; under autograd (a caller backpropagating into x) the weight is widened to f32 and the
/// f32 layer's rule runs, so gradients to x stay exact for the stored weight.
public final class BFloat16Linear: Module, LinearLayer {
    public let _weight: PackedBFloat16Weight
    public let bias: Tensor?

    public init(packing linear: Linear) {
        _weight = MemoryLedger.withCategory(.weights) { PackedBFloat16Weight(linear.weight) }
        bias = linear.bias
        bias?.requiresGrad = false
        super.init()
    }

    public var inFeatures: Int { _weight.inFeatures }
    public var outFeatures: Int { _weight.outFeatures }
    public var hasBias: Bool { bias != nil }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let k = inFeatures, n = outFeatures
        precondition(x.shape.last == k, "BFloat16Linear: input \(x.shape), weight [\(n), \(k)]")
        if x.requiresGrad && Autograd.isEnabled {
            let w = _weight.float32()
            return bias.map { Tensor.linear(x, weight: w, bias: $0) } ?? x.matmul(w, transposeOther: true)
        }
        let xs = x.float32(), m = xs.count / max(k, 1)
        let out = Tensor(shape: Array(x.shape.dropLast()) + [n])
        withExtendedLifetime((xs, bias)) {
            if let bias { // the fused layers' kernel: bias added to each row block as it finishes
                FusedInference.linear(xs.data, ldx: k, m: m, k: k, weight: .bf16(_weight), n: n, bias: bias.data,
                                      activation: .identity, out: out.data, ldo: n)
            } else {
                gemmBFloat16(m: m, xs.data, ldx: k, _weight, out.data, ldc: n)
            }
        }
        return out
    }
}

extension Backbone {
    /// Stores every frozen F32 projection in bf16 (`BFloat16Linear`), for a frozen forward with
    /// bf16 products: the f32 weights are released. Trainable or wrapped projections stay.
    public func convertProjectionsToBFloat16() {
        for slot in linearSlots() {
            guard let linear = slot.layer.plain, !linear.weight.requiresGrad else { continue }
            slot.replace(with: BFloat16Linear(packing: linear))
        }
    }

    /// Whether the projections are stored in bf16 (`convertProjectionsToBFloat16`).
    public var storesBFloat16Projections: Bool { linearSlots().contains { $0.layer.innermost is BFloat16Linear } }
}
