import Foundation
import SideTuneEngine
import SideTuneNN
import Synchronization
import Testing

final class MLP: Module {
    let fc1: Linear, fc2: Linear, fc3: Linear
    init(rng: inout SplitMix64) {
        fc1 = Linear(2, 64, rng: &rng)
        fc2 = Linear(64, 64, rng: &rng)
        fc3 = Linear(64, 2, rng: &rng)
    }
    func callAsFunction(_ x: Tensor) -> Tensor { fc3(fc2(fc1(x).tanh()).tanh()) }
}

final class Block: Module {
    let norm = LayerNorm(4)
    let layers: [Linear]
    let _notAParameter: Tensor
    init(rng: inout SplitMix64) {
        layers = [Linear(4, 4, rng: &rng), Linear(4, 4, bias: false, rng: &rng)]
        _notAParameter = Tensor.zeros([1])
    }
}

/// Two interleaved spirals, 2 x n points, labels 0 and 1.
func spirals(_ n: Int, seed: UInt64) -> (Tensor, [Int32]) {
    var rng = SplitMix64(seed: seed)
    var xs: [Float] = [], ys: [Int32] = []
    for cls in 0..<2 {
        for i in 0..<n {
            let r = Float(i) / Float(n) * 5 + 0.2
            let t = Float(i) / Float(n) * 3.5 * Float.pi + Float(cls) * Float.pi
            xs += [r * Foundation.cos(t) / 5 + rng.nextNormal() * 0.02, r * Foundation.sin(t) / 5 + rng.nextNormal() * 0.02]
            ys.append(Int32(cls))
        }
    }
    return (Tensor(xs, shape: [2 * n, 2]), ys)
}

@Suite struct NNTests {
    /// A small MLP trained with AdamW separates two interleaved spirals.
    @Test func mlpLearnsSpirals() {
        var rng = SplitMix64(seed: 42)
        let model = MLP(rng: &rng)
        let (x, y) = spirals(200, seed: 7)
        let opt = AdamW(parameters: model.parameters(), learningRate: 0.01, weightDecay: 0)
        let schedule = LRSchedule(peak: 0.01, warmupSteps: 50, totalSteps: 2000, decay: .cosine, minRatio: 0.05)
        var firstLoss: Float = 0, lastLoss: Float = 0
        for step in 0..<2000 {
            opt.learningRate = schedule.rate(at: step)
            let loss = model(x).crossEntropy(targets: y)
            if step == 0 { firstLoss = loss.item() }
            lastLoss = loss.item()
            opt.zeroGrad()
            loss.backward()
            clipGradNorm(opt.parameters, maxNorm: 5)
            opt.step()
        }
        let logits = noGrad { model(x) }
        var correct = 0
        for i in 0..<y.count where (logits[i, 1] > logits[i, 0] ? 1 : 0) == y[i] { correct += 1 }
        let accuracy = Double(correct) / Double(y.count)
        #expect(accuracy >= 0.95, "training accuracy \(accuracy), loss \(firstLoss) -> \(lastLoss)")
    }

    @Test func parameterNamesFreezeAndLoad() throws {
        var rng = SplitMix64(seed: 1)
        let block = Block(rng: &rng)
        let names = block.namedParameters().map { $0.0 }
        #expect(names == ["norm.weight", "norm.bias", "layers.0.weight", "layers.0.bias", "layers.1.weight"])
        block.freeze()
        #expect(block.trainableParameters().isEmpty)
        block.unfreeze(keys: ["layers.1.weight"])
        #expect(block.trainableParameters().map { $0.0 } == ["layers.1.weight"])
        #expect(block.trainableParameterCount == 16)
        try block.load(["norm.weight": Tensor.full([4], 2)], strict: false)
        #expect(block.norm.weight!.toArray() == [2, 2, 2, 2])
        #expect(throws: ModuleError.self) { try block.load(["norm.weight": Tensor.full([5], 2)], strict: false) }
        #expect(throws: ModuleError.self) { try block.load(["nope": Tensor.full([4], 2)], strict: false) }
        #expect(throws: ModuleError.self) { try block.load([:], strict: true) }
    }

    @Test func dropoutOnlyInTraining() {
        let d = Dropout(0.5, seed: 3)
        let x = Tensor.ones([100])
        #expect(d(x).toArray().contains(0))
        d.train(false)
        #expect(d(x).toArray() == x.toArray())
    }

    /// One AdamW step against the formula, with decoupled weight decay.
    @Test func adamWStepMatchesFormula() {
        let p = parameter(Tensor([1, -2], shape: [2]))
        p.grad = Tensor([0.5, 0.25], shape: [2])
        let opt = AdamW(parameters: [p], learningRate: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1)
        opt.step()
        // Step 1: m_hat = g, v_hat = g^2, update = g / (|g| + eps) = sign(g).
        #expect(abs(p.data[0] - (1 - 0.1 * (1 + 0.1 * 1))) < 1e-5)
        #expect(abs(p.data[1] - (-2 - 0.1 * (1 + 0.1 * -2))) < 1e-5)
    }

    /// The 16-lane AdamW step equals the formula applied element by element, bit for bit, over
    /// three steps: on a length off the lanes (vector body and tail), on one that spans several of
    /// the parallel work chunks (4,096 elements) with a partial last one, and beside a parameter
    /// without a gradient, which must not move.
    @Test func adamWVectorStepMatchesScalarFormula() {
        var rng = SplitMix64(seed: 41)
        func random(_ n: Int) -> Tensor { Tensor((0..<n).map { _ in rng.nextFloat() * 2 - 1 }, shape: [n]) }
        let sizes = [37, 9_000]
        let ps = sizes.map { parameter(random($0)) }
        let frozen = parameter(random(20))
        let frozenBefore = frozen.toArray()
        var ref = ps.map { $0.toArray() }
        var m = sizes.map { [Float](repeating: 0, count: $0) }, v = m
        let opt = AdamW(parameters: [ps[0], frozen, ps[1]], learningRate: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-6,
                        weightDecay: 0.1)
        for step in 1...3 {
            let grads = sizes.map { random($0) }
            for (p, g) in zip(ps, grads) { p.grad = g }
            opt.step()
            let bc1 = 1 - Foundation.pow(Float(0.9), Float(step)), bc2 = 1 - Foundation.pow(Float(0.99), Float(step))
            for (i, g) in grads.enumerated() {
                for j in 0..<sizes[i] {
                    let gj = g.data[j]
                    m[i][j] = 0.9 * m[i][j] + (1 - 0.9) * gj
                    v[i][j] = 0.99 * v[i][j] + (1 - 0.99) * gj * gj
                    let update = (m[i][j] / bc1) / ((v[i][j] / bc2).squareRoot() + 1e-6)
                    ref[i][j] -= 0.05 * (update + 0.1 * ref[i][j])
                }
                #expect(ps[i].toArray() == ref[i], "step \(step), parameter of \(sizes[i])")
            }
            #expect(frozen.toArray() == frozenBefore)
        }
    }

    @Test func sgdMomentum() {
        let p = parameter(Tensor([1], shape: [1]))
        let opt = SGD(parameters: [p], learningRate: 0.1, momentum: 0.9)
        p.grad = Tensor([1], shape: [1]); opt.step()
        p.grad = Tensor([1], shape: [1]); opt.step()
        // v1 = 1, p = 0.9; v2 = 1.9, p = 0.71
        #expect(abs(p.data[0] - 0.71) < 1e-6)
    }

    @Test func scheduleShape() {
        let s = LRSchedule(peak: 1, warmupSteps: 10, totalSteps: 110, decay: .cosine)
        #expect(abs(s.rate(at: 0) - 0.1) < 1e-6)
        #expect(abs(s.rate(at: 9) - 1) < 1e-6)
        #expect(abs(s.rate(at: 60) - 0.5) < 1e-6)
        #expect(s.rate(at: 110) < 1e-6)
        let l = LRSchedule(peak: 2, warmupSteps: 0, totalSteps: 100, decay: .linear, minRatio: 0.5)
        #expect(abs(l.rate(at: 50) - 1.5) < 1e-6)
    }

    @Test func clippingScalesToMaxNorm() {
        let p = parameter(Tensor([0, 0], shape: [2]))
        p.grad = Tensor([3, 4], shape: [2])
        let norm = clipGradNorm([p], maxNorm: 1)
        #expect(abs(norm - 5) < 1e-6)
        #expect(abs(p.grad!.data[0] - 0.6) < 1e-5 && abs(p.grad!.data[1] - 0.8) < 1e-5)
    }

    /// Optimizer state is counted as optimizer memory.
    @Test func optimizerStateInLedger() {
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let p = parameter(Tensor.zeros([10, 10]))
            p.grad = Tensor.ones([10, 10])
            let opt = AdamW(parameters: [p])
            opt.step()
            #expect(ledger.current(.optimizer) == 2 * 100 * 4)
            #expect(ledger.current(.weights) == 100 * 4)
        }
    }
}

/// Dropout inside `MicroBatches.run`: every part draws its own mask, the masks do not depend on
/// which thread ran which part, and the layer's generator advances by one draw per call, as for
/// the whole batch.
@Suite struct MicroBatchDropoutTests {
    @Test func partsDrawTheirOwnMasksDeterministically() {
        let x = Tensor.full([4, 64], 1)
        func run(_ layer: Dropout, threads: Int) -> [[[Float]]] {
            let outs = Mutex([[[Float]]](repeating: [], count: 2))
            MicroBatches.run(2, pool: ThreadPool(threads: threads)) { i in
                let masks = [layer(x).toArray(), layer(x).toArray()]
                outs.withLock { $0[i] = masks }
            }
            return outs.withLock { $0 }
        }
        let a = Dropout(0.5, seed: 9), b = Dropout(0.5, seed: 9), whole = Dropout(0.5, seed: 9)
        let first = run(a, threads: 2), second = run(b, threads: 1)
        #expect(first == second)
        #expect(first[0][0] != first[1][0], "both parts drew the same mask")
        #expect(first[0][0] != first[0][1], "a part's two calls drew the same mask")
        #expect(first.allSatisfy { $0.allSatisfy { m in m.contains(0) && m.contains(2) } })
        // Two calls per part used two draws, as two whole-batch calls do.
        _ = whole(x)
        _ = whole(x)
        #expect(a(x).toArray() == whole(x).toArray())
    }
}
