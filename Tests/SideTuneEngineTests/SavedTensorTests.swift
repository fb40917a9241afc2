import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// Each op keeps for backward exactly what its derivative reads, decided by which inputs need a
/// gradient: the bytes the ledger shows between forward and backward are checked against that
/// arithmetic, op by op. Parameters are tagged `.weights`; whatever stays an activation after the
/// forward (besides the output) is what the graph kept.
@Suite struct SavedTensorTests {
    /// Bytes of activations alive once `forward` has returned, not counting its output, and a check
    /// that backward still runs and frees them. Inputs are made inside `forward` (so nothing
    /// outside the graph holds them).
    func keptBytes(_ forward: () -> Tensor) -> Int {
        let ledger = MemoryLedger()
        return MemoryLedger.withLedger(ledger) {
            var kept = 0
            do {
                let out = forward()
                kept = ledger.current(.activations) - out.count * 4
                if out.requiresGrad { out.backward(seed: Tensor.full(out.shape, 1)) }
            }
            #expect(ledger.current(.activations) == 0, "backward freed what the graph kept")
            return kept
        }
    }

    /// A parameter (weights) that needs a gradient, or not.
    func parameter(_ shape: [Int], seed: UInt64, trainable: Bool) -> Tensor {
        let t = randomTensor(shape, seed: seed)
        t.storage.retag(.weights)
        t.requiresGrad = trainable
        return t
    }

    /// An activation computed from a trainable parameter (so it needs a gradient and has a node):
    /// the op that made it (an affine map) keeps nothing itself.
    func trainableActivation(_ shape: [Int], seed: UInt64) -> Tensor {
        parameter(shape, seed: seed, trainable: true) * 2
    }

    /// A constant activation (frozen input, no gradient).
    func constantActivation(_ shape: [Int], seed: UInt64) -> Tensor { randomTensor(shape, seed: seed) }

    @Test func linearKeepsWhatEachGradientReads() {
        let (m, k, n) = (16, 24, 8)
        // Frozen weight, input needs a gradient: dx = g W reads only W (a parameter): no activation.
        #expect(keptBytes {
            Tensor.linear(trainableActivation([m, k], seed: 1), weight: parameter([n, k], seed: 2, trainable: false),
                          bias: parameter([n], seed: 3, trainable: false))
        } == 0)
        // Trainable weight over a constant input: dW = g^T x keeps x.
        #expect(keptBytes {
            Tensor.linear(constantActivation([m, k], seed: 1), weight: parameter([n, k], seed: 2, trainable: true),
                          bias: parameter([n], seed: 3, trainable: false))
        } == m * k * 4)
        // Bias only (BitFit): nothing at all.
        #expect(keptBytes {
            Tensor.linear(constantActivation([m, k], seed: 1), weight: parameter([n, k], seed: 2, trainable: false),
                          bias: parameter([n], seed: 3, trainable: true))
        } == 0)
        // Both: x for dW.
        #expect(keptBytes {
            Tensor.linear(trainableActivation([m, k], seed: 1), weight: parameter([n, k], seed: 2, trainable: true),
                          bias: parameter([n], seed: 3, trainable: true))
        } == m * k * 4)
    }

    @Test func matmulKeepsTheOtherOperand() {
        let (m, k, n) = (12, 20, 6)
        #expect(keptBytes { trainableActivation([m, k], seed: 1).matmul(constantActivation([k, n], seed: 2)) } == k * n * 4)
        #expect(keptBytes { constantActivation([m, k], seed: 1).matmul(trainableActivation([k, n], seed: 2)) } == m * k * 4)
        #expect(keptBytes {
            trainableActivation([m, k], seed: 1).matmul(trainableActivation([k, n], seed: 2))
        } == (m * k + k * n) * 4)
        // Batched products the same way.
        #expect(keptBytes {
            trainableActivation([3, m, k], seed: 1).matmul(constantActivation([3, k, n], seed: 2))
        } == 3 * k * n * 4)
    }

    @Test func elementwiseOpsKeepOneOperandOrNone() {
        let s = [8, 32], bytes = 8 * 32 * 4
        #expect(keptBytes { trainableActivation(s, seed: 1) + constantActivation(s, seed: 2) } == 0)
        #expect(keptBytes { trainableActivation(s, seed: 1) - constantActivation(s, seed: 2) } == 0)
        #expect(keptBytes { trainableActivation(s, seed: 1) * constantActivation(s, seed: 2) } == bytes)
        #expect(keptBytes { trainableActivation(s, seed: 1) * trainableActivation(s, seed: 2) } == 2 * bytes)
        // a / b: da reads b; db reads b and the output.
        #expect(keptBytes { trainableActivation(s, seed: 1) / (constantActivation(s, seed: 2).square() + 1) } == bytes)
        #expect(keptBytes { constantActivation(s, seed: 1) / (trainableActivation(s, seed: 2).square() + 1) }
                == 2 * bytes, "b and square's input (the output it also reads is its own bytes)")
        #expect(keptBytes { Tensor.sum([trainableActivation(s, seed: 1), constantActivation(s, seed: 2)]) } == 0)
    }

    @Test func pointwiseFunctionsKeepXOrY() {
        let s = [8, 32], bytes = 8 * 32 * 4
        // f' of x keeps the input; f' of y keeps the output, which is alive anyway: never both.
        for f: (Tensor) -> Tensor in [{ $0.gelu() }, { $0.geluTanh() }, { $0.silu() }, { $0.relu() }] {
            #expect(keptBytes { f(trainableActivation(s, seed: 1)) } == bytes)
        }
        for f: (Tensor) -> Tensor in [{ $0.exp() }, { $0.tanh() }, { $0.sigmoid() }] {
            #expect(keptBytes { f(trainableActivation(s, seed: 1)) } == 0)
        }
    }

    @Test func normsKeepInputAndStatisticsOnlyForInputOrWeightGradients() {
        let (rows, d) = (10, 48)
        let stats = rows * 2 * 4, x = rows * d * 4
        // Bias-only LayerNorm over a constant input (BitFit on a frozen layer): nothing.
        #expect(keptBytes {
            constantActivation([rows, d], seed: 1).layerNorm(weight: parameter([d], seed: 2, trainable: false),
                                                             bias: parameter([d], seed: 3, trainable: true))
        } == 0)
        // A trainable weight needs x-hat: x and the row statistics.
        #expect(keptBytes {
            constantActivation([rows, d], seed: 1).layerNorm(weight: parameter([d], seed: 2, trainable: true),
                                                             bias: parameter([d], seed: 3, trainable: false))
        } == x + stats)
        #expect(keptBytes {
            trainableActivation([rows, d], seed: 1).layerNorm(weight: parameter([d], seed: 2, trainable: false),
                                                              bias: parameter([d], seed: 3, trainable: false))
        } == x + stats)
    }

    @Test func mixKeepsItsOperandsOnlyForTheGateGradient() {
        let s = [6, 40], bytes = 6 * 40 * 4
        #expect(keptBytes {
            Tensor.mix(trainableActivation(s, seed: 1), constantActivation(s, seed: 2),
                       weight: parameter([1], seed: 3, trainable: false))
        } == 0)
        #expect(keptBytes {
            Tensor.mix(trainableActivation(s, seed: 1), constantActivation(s, seed: 2),
                       weight: parameter([1], seed: 3, trainable: true))
        } == 2 * bytes)
    }

    @Test func convolutionKeepsTheInputOnlyForTheWeightGradient() {
        let xShape = [2, 3, 8, 8]
        #expect(keptBytes {
            Tensor.conv2d(trainableActivation(xShape, seed: 1), weight: parameter([4, 3, 3, 3], seed: 2, trainable: false))
        } == 0)
        #expect(keptBytes {
            Tensor.conv2d(constantActivation(xShape, seed: 1), weight: parameter([4, 3, 3, 3], seed: 2, trainable: true))
        } == 2 * 3 * 8 * 8 * 4)
    }

    /// The node graph holds nodes, not tensors: a chain of frozen linear layers with a trainable
    /// input keeps no layer's input (each dx reads only its weight).
    @Test func aFrozenChainKeepsNoActivations() {
        #expect(keptBytes {
            var h = trainableActivation([32, 64], seed: 1)
            for i in 0..<4 {
                h = Tensor.linear(h, weight: parameter([64, 64], seed: UInt64(10 + i), trainable: false),
                                  bias: parameter([64], seed: UInt64(20 + i), trainable: false))
            }
            return h
        } == 0)
    }
}
