import CSideTuneKernels
import Foundation
import SideTuneEngine

/// Updates parameters from their `.grad`. State tensors are allocated lazily and counted in the
/// ledger as optimizer memory.
public protocol Optimizer: AnyObject {
    var learningRate: Float { get set }
    var parameters: [Tensor] { get }
    func step()
}

extension Optimizer {
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// SGD with optional momentum (PyTorch's form: v = mu v + g; p -= lr v) and weight decay.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float, weightDecay: Float
    public let parameters: [Tensor]
    private var velocity: [Tensor?]

    public init(parameters: [Tensor], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        velocity = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        MemoryLedger.withCategory(.optimizer) {
            for (i, p) in parameters.enumerated() {
                guard let g = p.grad else { continue }
                let n = p.count, pp = p.data, pg = g.data
                if momentum > 0 {
                    if velocity[i] == nil { velocity[i] = Tensor.zeros(p.shape) }
                    let v = velocity[i]!.data
                    for j in 0..<n {
                        let gj = pg[j] + weightDecay * pp[j]
                        v[j] = momentum * v[j] + gj
                        pp[j] -= learningRate * v[j]
                    }
                } else {
                    for j in 0..<n { pp[j] -= learningRate * (pg[j] + weightDecay * pp[j]) }
                }
            }
        }
    }
}

/// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments.
public final class AdamW: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    public let parameters: [Tensor]
    private var m: [Tensor?], v: [Tensor?]
    public private(set) var stepCount = 0

    public init(parameters: [Tensor], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        m = Array(repeating: nil, count: parameters.count)
        v = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        stepCount += 1
        let bc1 = 1 - Foundation.pow(beta1, Float(stepCount)), bc2 = 1 - Foundation.pow(beta2, Float(stepCount))
        let lr = learningRate, b1 = beta1, b2 = beta2, eps = eps, wd = weightDecay
        // One parallel region over every parameter's elements in chunks: a side network's tensors
        // (48 x 384 and smaller) were each too small to split, so the update ran on one thread.
        var chunks: [(p: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
                      v: UnsafeMutablePointer<Float>, lo: Int, hi: Int)] = []
        MemoryLedger.withCategory(.optimizer) {
            for (i, p) in parameters.enumerated() {
                guard let g = p.grad else { continue }
                if m[i] == nil { m[i] = Tensor.zeros(p.shape); v[i] = Tensor.zeros(p.shape) }
                var lo = 0
                while lo < p.count {
                    let hi = min(p.count, lo + Self.chunkElements)
                    chunks.append((p.data, g.data, m[i]!.data, v[i]!.data, lo, hi))
                    lo = hi
                }
            }
        }
        let work = chunks
        ThreadPool.shared.parallelFor(work.count) { c in
            let (pp, pg, pm, pv, lo, hi) = work[c]
            // 16 lanes at a time in C (adamw.h): Swift's SIMD square root ran lane by lane.
            sidetune_adamw_update(pp, pg, pm, pv, lo, hi, lr, b1, b2, bc1, bc2, eps, wd)
        }
    }

    /// Elements per parallel work item (a multiple of 16, so chunks split no vector).
    static let chunkElements = 4096

    /// Optimizer state for checkpoints: step count and moments by parameter index.
    public var state: (step: Int, m: [Tensor?], v: [Tensor?]) { (stepCount, m, v) }
    public func restore(step: Int, m: [Tensor?], v: [Tensor?]) {
        precondition(m.count == parameters.count && v.count == parameters.count, "optimizer state does not match parameters")
        stepCount = step
        self.m = m
        self.v = v
    }
}

/// Scales all gradients so their global L2 norm is at most `maxNorm`; returns the norm before.
@discardableResult
public func clipGradNorm(_ parameters: [Tensor], maxNorm: Float) -> Float {
    var sq: Double = 0
    for p in parameters { if let g = p.grad { sq += Double(dot(g.count, g.data, g.data)) } }
    let norm = Float(sq.squareRoot())
    if norm > maxNorm && norm > 0 {
        let s = maxNorm / (norm + 1e-6)
        for p in parameters { if let g = p.grad { for j in 0..<g.count { g.data[j] *= s } } }
    }
    return norm
}

/// Learning rate as a function of the step: linear warm-up from 0, then cosine or linear decay
/// to `minRatio` of the peak (or constant).
public struct LRSchedule: Sendable, Codable {
    public enum Decay: String, Sendable, Codable { case cosine, linear, constant }
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var decay: Decay
    public var minRatio: Float

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, decay: Decay = .cosine, minRatio: Float = 0) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decay = decay
        self.minRatio = minRatio
    }

    /// Rate for 0-based `step`.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let span = max(totalSteps - warmupSteps, 1)
        let t = min(Float(step - warmupSteps) / Float(span), 1)
        let floor = peak * minRatio
        switch decay {
        case .constant: return peak
        case .linear: return floor + (peak - floor) * (1 - t)
        case .cosine: return floor + (peak - floor) * 0.5 * (1 + Foundation.cos(Float.pi * t))
        }
    }
}
