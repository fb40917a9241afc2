import Foundation
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

// MARK: - Projections as the fused no-grad kernels take them

/// A projection's weight and bias as the fused kernels take them, or nil when the layer is not a
/// plain f32 `Linear` or a `BFloat16Linear` with an f32 bias (wrapped, quantised, bias-less).
func fusedProjection(_ layer: any LinearLayer) -> (weight: FusedInference.Weight, bias: UnsafePointer<Float>)? {
    if let l = layer as? BFloat16Linear, let b = l.bias, b.dtype == .float32 {
        return (.bf16(l._weight), UnsafePointer(b.data))
    }
    if let l = layer.plain, let b = l.bias, b.dtype == .float32 { return (.f32(l.weight.data), UnsafePointer(b.data)) }
    return nil
}

/// Whether the fused kernels compute exactly what these layers do: all plain f32 with f32 biases,
/// or all stored in bf16 (`BFloat16Linear`) with f32 biases.
func fusableProjections(_ layers: [any LinearLayer]) -> Bool {
    layers.allSatisfy { $0.plain?.bias?.dtype == .float32 }
        || layers.allSatisfy { ($0 as? BFloat16Linear)?.bias?.dtype == .float32 }
}

/// q, k and v computed by one product: `out` [m, 3d] = x [m, d] [Wq | Wk | Wv]^T + [bq | bk | bv].
/// f32 weights are copied side by side into `scratch` (3d^2 + 3d floats) for each call; bf16
/// ones are stacked and packed once, in `stacked`.
final class FusedQKV: @unchecked Sendable {
    private var made: (layers: [ObjectIdentifier], weight: PackedBFloat16Weight)?
    private let lock = NSLock() // micro-batches run a layer on several threads at once

    static func scratchFloats(d: Int) -> Int { 3 * d * d + 3 * d }

    func project(_ layers: [any LinearLayer], _ x: UnsafePointer<Float>, m: Int, d: Int,
                 scratch: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        let parts = layers.map { fusedProjection($0)! }, wqkv = scratch, bqkv = scratch + 3 * d * d
        for (i, p) in parts.enumerated() { (bqkv + i * d).update(from: p.bias, count: d) }
        let weight: FusedInference.Weight
        if case .f32 = parts[0].weight {
            for (i, p) in parts.enumerated() {
                if case .f32(let w) = p.weight { (wqkv + i * d * d).update(from: w, count: d * d) }
            }
            weight = .f32(wqkv)
        } else {
            weight = .bf16(stacked(layers.map { $0 as! BFloat16Linear }))
        }
        FusedInference.linear(x, ldx: d, m: m, k: d, weight: weight, n: 3 * d, bias: bqkv, activation: .identity,
                              out: out, ldo: 3 * d)
    }

    private func stacked(_ layers: [BFloat16Linear]) -> PackedBFloat16Weight {
        let ids = layers.map(ObjectIdentifier.init)
        return lock.withLock {
            if let made, made.layers == ids { return made.weight }
            let weight = PackedBFloat16Weight(stacking: layers.map(\._weight))
            made = (ids, weight)
            return weight
        }
    }
}
