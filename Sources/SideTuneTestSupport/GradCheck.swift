import Foundation
import SideTuneEngine
import Testing

/// Test support shared by the test targets (not used by the tool itself).

/// Finite-difference gradient check. The scalar checked is sum(f(inputs) * R) for a fixed random R
/// (so every output element matters), accumulated in Double on the host. Central differences with
/// step `eps`; an element passes when |analytic - numeric| <= atol + rtol * |numeric|.
public func gradCheck(_ name: String, _ inputs: [Tensor], eps: Float = 1e-2, atol: Float = 2e-3, rtol: Float = 2e-2,
               sourceLocation: SourceLocation = #_sourceLocation, _ f: ([Tensor]) -> Tensor) {
    for x in inputs { x.requiresGrad = true; x.zeroGrad() }
    let out = f(inputs)
    var rng = SplitMix64(seed: 99)
    let r = Tensor.randn(out.shape, rng: &rng)
    func project(_ y: Tensor) -> Double {
        var s = 0.0
        for i in 0..<y.count { s += Double(y.data[i]) * Double(r.data[i]) }
        return s
    }
    (out * r).sum().backward()
    var worst: (Float, String) = (0, "")
    for (xi, x) in inputs.enumerated() {
        let analytic = x.grad?.toArray() ?? [Float](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let saved = x.data[i]
            x.data[i] = saved + eps
            let plus = noGrad { project(f(inputs)) }
            x.data[i] = saved - eps
            let minus = noGrad { project(f(inputs)) }
            x.data[i] = saved
            let numeric = Float((plus - minus) / Double(2 * eps))
            let err = abs(analytic[i] - numeric)
            let allowed = atol + rtol * abs(numeric)
            if err / allowed > worst.0 {
                worst = (err / allowed, "input \(xi) element \(i): analytic \(analytic[i]) numeric \(numeric)")
            }
        }
    }
    #expect(worst.0 <= 1, "\(name): gradient mismatch, worst at \(worst.1)", sourceLocation: sourceLocation)
}

public func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SplitMix64(seed: seed)
    return Tensor.randn(shape, std: scale, rng: &rng)
}

/// max |a - b| over two tensors of the same shape.
public func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape, "shapes \(a.shape) vs \(b.shape)")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a.data[i] - b.data[i])) }
    return m
}
