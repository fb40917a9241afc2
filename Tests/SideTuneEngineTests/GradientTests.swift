import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// Every differentiable op against finite differences.
@Suite struct GradientTests {
    @Test func elementwiseBroadcast() {
        let a = randomTensor([3, 4, 5], seed: 1), b = randomTensor([4, 1], seed: 2)
        gradCheck("add", [a, b]) { $0[0] + $0[1] }
        gradCheck("sub", [a, b]) { $0[0] - $0[1] }
        gradCheck("mul", [a, b]) { $0[0] * $0[1] }
        let c = randomTensor([5], seed: 3)
        gradCheck("mul rows", [a, c]) { $0[0] * $0[1] }
        let pos = (randomTensor([4, 1], seed: 4) * 0.3) + 2
        gradCheck("div", [a, pos]) { $0[0] / $0[1] }
        gradCheck("scalar ops", [a]) { (($0[0] * 3) + 1) / 2 - 0.5 }
        gradCheck("neg", [a]) { -$0[0] }
        let s = randomTensor([1, 1, 5], seed: 5)
        gradCheck("broadcast both", [randomTensor([3, 1, 1], seed: 6), s]) { $0[0] * $0[1] }
        gradCheck("mix", [a, randomTensor([3, 4, 5], seed: 11), randomTensor([1], seed: 12)]) {
            Tensor.mix($0[0], $0[1], weight: $0[2])
        }
    }

    /// The fused gate mix against the ops it replaces (a * w + b * (1 - w)) on a tensor of several
    /// 4,096-element backward chunks with a partial last one: the same forward bit for bit, the
    /// same ga and gb, and gw equal up to the order of the sum.
    @Test func mixMatchesComposite() {
        let shape = [3, 3_001]
        let a = randomTensor(shape, seed: 13), b = randomTensor(shape, seed: 14), w = randomTensor([1], seed: 15)
        let r = randomTensor(shape, seed: 16)
        var grads: [[[Float]]] = []
        var outs: [[Float]] = []
        for fused in [true, false] {
            for x in [a, b, w] { x.requiresGrad = true; x.zeroGrad() }
            let y = fused ? Tensor.mix(a, b, weight: w) : a * w + b * (1 - w)
            outs.append(y.toArray())
            (y * r).sum().backward()
            grads.append([a, b, w].map { $0.grad!.toArray() })
        }
        #expect(outs[0] == outs[1])
        #expect(grads[0][0] == grads[1][0])
        #expect(grads[0][1] == grads[1][1])
        #expect(abs(grads[0][2][0] - grads[1][2][0]) <= 1e-4 * max(1, abs(grads[1][2][0])))
    }

    @Test func unary() {
        let a = randomTensor([2, 37], seed: 7)
        gradCheck("exp", [a]) { $0[0].exp() }
        gradCheck("tanh", [a]) { $0[0].tanh() }
        gradCheck("sigmoid", [a]) { $0[0].sigmoid() }
        gradCheck("gelu", [a]) { $0[0].gelu() }
        gradCheck("gelu_tanh", [a]) { $0[0].geluTanh() }
        gradCheck("silu", [a]) { $0[0].silu() }
        gradCheck("square", [a]) { $0[0].square() }
        let pos = a * a + 0.5
        gradCheck("log", [pos.detach()]) { $0[0].log() }
        gradCheck("sqrt", [pos.detach()]) { $0[0].sqrt() }
        // ReLU: keep inputs away from the kink at 0.
        let away = a + Tensor(a.toArray().map { $0 >= 0 ? 0.1 : -0.1 }, shape: a.shape)
        gradCheck("relu", [away.detach()]) { $0[0].relu() }
    }

    @Test func reductions() {
        let a = randomTensor([3, 4, 5], seed: 8)
        gradCheck("sum all", [a]) { $0[0].sum() }
        gradCheck("sum axis 1", [a]) { $0[0].sum(axes: [1]) }
        gradCheck("sum axes 0,2 keep", [a]) { $0[0].sum(axes: [0, 2], keepDims: true) }
        gradCheck("mean last", [a]) { $0[0].mean(axes: [-1]) }
    }

    @Test func shapes() {
        let a = randomTensor([2, 3, 4], seed: 9)
        gradCheck("reshape", [a]) { $0[0].reshaped([6, 4]) * $0[0].reshaped([6, 4]) }
        gradCheck("transpose", [a]) { $0[0].transposed(0, 2) }
        gradCheck("permute", [a]) { $0[0].permuted([1, 2, 0]) }
        gradCheck("slice", [a]) { $0[0].slice(axis: 1, 1, 3) }
        gradCheck("split", [a]) { x in
            let parts = x[0].split(axis: 2, sizes: [1, 3])
            return parts[0] * parts[1].sum(axes: [2], keepDims: true)
        }
        let b = randomTensor([2, 2, 4], seed: 10)
        gradCheck("concat", [a, b]) { Tensor.concat([$0[0], $0[1]], axis: 1) }
    }

    @Test func matmulAllModes() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = randomTensor(ta ? [5, 3] : [3, 5], seed: 11), b = randomTensor(tb ? [4, 5] : [5, 4], seed: 12)
            gradCheck("matmul \(ta) \(tb)", [a, b]) { Tensor.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) }
            let qa = randomTensor(ta ? [2, 5, 3] : [2, 3, 5], seed: 13), qb = randomTensor(tb ? [2, 4, 5] : [2, 5, 4], seed: 14)
            gradCheck("bmm \(ta) \(tb)", [qa, qb]) { Tensor.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) }
        }
        let x = randomTensor([2, 3, 5], seed: 15), w = randomTensor([4, 5], seed: 16)
        gradCheck("linear 3-D", [x, w]) { $0[0].matmul($0[1], transposeOther: true) }
        // Fused x W^T + b equals the composite and has the same gradients.
        var rng2 = SplitMix64(seed: 17)
        let b = Tensor.randn([w.shape[0]], rng: &rng2)
        let fused = noGrad { Tensor.linear(x, weight: w, bias: b) }.toArray()
        let composite = noGrad { x.matmul(w, transposeOther: true) + b }.toArray()
        #expect(zip(fused, composite).allSatisfy { abs($0 - $1) <= 1e-5 * (1 + abs($1)) })
        gradCheck("fused linear", [x, w, b]) { Tensor.linear($0[0], weight: $0[1], bias: $0[2]) }
        // With residuals (n = 20 crosses the 16-lane loop's tail): equals the composite adds; the
        // same tensor twice gets both gradients.
        let x2 = randomTensor([2, 3, 5], seed: 18), w2 = randomTensor([20, 5], seed: 19), b2 = randomTensor([20], seed: 20)
        let r1 = randomTensor([2, 3, 20], seed: 27), r2 = randomTensor([2, 3, 20], seed: 28)
        let withResiduals = noGrad { Tensor.linear(x2, weight: w2, bias: b2, residuals: [r1, r2]) }
        let added = noGrad { Tensor.linear(x2, weight: w2, bias: b2) + r1 + r2 }
        #expect(maxAbsDiff(withResiduals, added) <= 1e-5)
        gradCheck("linear with residuals", [x2, w2, b2, r1, r2]) {
            Tensor.linear($0[0], weight: $0[1], bias: $0[2], residuals: [$0[3], $0[4], $0[3]])
        }
        // The n-ary sum equals chained adds and passes scale * g back.
        let added3 = noGrad { (r1 + r2 + r1) * -0.5 }
        #expect(maxAbsDiff(noGrad { Tensor.sum([r1, r2, r1], scale: -0.5) }, added3) <= 1e-6)
        gradCheck("n-ary sum", [r1, r2]) { Tensor.sum([$0[0], $0[1], $0[0]], scale: -0.5) }
        // Masked mean over tokens equals the composite (mask multiply, sum over axis 1, divide).
        let h = randomTensor([2, 3, 20], seed: 29)
        let weights: [Float] = [1, 0, 1, 1, 1, 0], divisors: [Float] = [2, 2]
        let pooledComposite = noGrad { (h * Tensor(weights, shape: [2, 3, 1])).sum(axes: [1]) / Tensor(divisors, shape: [2, 1]) }
        #expect(maxAbsDiff(noGrad { h.weightedSumOverTokens(weights: weights, divisors: divisors) }, pooledComposite) <= 1e-6)
        gradCheck("weighted sum over tokens", [h]) { $0[0].weightedSumOverTokens(weights: weights, divisors: divisors) }
    }

    @Test func softmaxFamily() {
        let a = randomTensor([3, 7], seed: 17)
        gradCheck("softmax", [a]) { $0[0].softmax() }
        gradCheck("softmax temperature", [a]) { $0[0].softmax(temperature: 0.5) }
        let mask = Tensor([0, 0, -Float.infinity, 0, 0, -Float.infinity, 0], shape: [7])
        gradCheck("softmax masked", [a]) { $0[0].softmax(mask: mask) }
        gradCheck("log_softmax", [a]) { $0[0].logSoftmax() }
        gradCheck("cross_entropy", [a]) { $0[0].crossEntropy(targets: [1, -100, 6]) }
        gradCheck("cross_entropy smoothing", [a]) { $0[0].crossEntropy(targets: [1, 0, 6], labelSmoothing: 0.1) }
    }

    @Test func norms() {
        let x = randomTensor([4, 6], seed: 18), w = randomTensor([6], seed: 19) + 1, b = randomTensor([6], seed: 20)
        gradCheck("layer_norm", [x, w, b]) { $0[0].layerNorm(weight: $0[1], bias: $0[2]) }
        gradCheck("layer_norm plain", [x]) { $0[0].layerNorm(weight: nil, bias: nil) }
        gradCheck("rms_norm", [x, w]) { $0[0].rmsNorm(weight: $0[1]) }
    }

    @Test func embeddingAndDropout() {
        let table = randomTensor([5, 3], seed: 21)
        gradCheck("embedding (repeated ids)", [table]) { $0[0].embedding([1, 4, 1, 0], shape: [2, 2]) }
        let x = randomTensor([4, 8], seed: 22)
        gradCheck("dropout", [x]) { $0[0].dropout(0.3, seed: 5) }
        let y = x.dropout(0.5, seed: 5).toArray()
        #expect(y.filter { $0 == 0 }.count > 4 && y.filter { $0 == 0 }.count < 28, "dropout keeps about half")
        #expect(x.dropout(0.5, seed: 5).toArray() == y, "same seed, same mask")
    }

    @Test func attention() {
        let q = randomTensor([2, 2, 5, 4], seed: 23), k = randomTensor([2, 2, 6, 4], seed: 24), v = randomTensor([2, 2, 6, 3], seed: 25)
        let pad = AttentionMask(keyPadding: [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1])
        gradCheck("attention reference", [q, k, v]) { Tensor.attentionReference($0[0], $0[1], $0[2], mask: pad) }
        let causal = AttentionMask(causal: true)
        for kernel in [AttentionKernel.blocked, .smallHeads] {
            gradCheck("attention \(kernel)", [q, k, v]) { Tensor.attention($0[0], $0[1], $0[2], mask: pad, kernel: kernel) }
            gradCheck("attention \(kernel) causal", [q, k, v]) { Tensor.attention($0[0], $0[1], $0[2], mask: causal, kernel: kernel) }
        }
    }

    @Test func attentionPacked() {
        let pad: [Float] = [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]
        for hd in [4, 3, 8, 16] {
            let qkv = randomTensor([2, 6, 3 * 2 * hd], seed: 26)
            gradCheck("attention packed, heads of \(hd)", [qkv]) { Tensor.attentionPacked($0[0], heads: 2, keyPadding: pad) }
        }
    }

    /// The packed-batch ops: segment-wise attention, pooling and packing itself.
    @Test func packedSegments() {
        let segments = TokenSegments(lengths: [3, 1, 5])
        for hd in [4, 3] {
            let qkv = randomTensor([1, 9, 3 * 2 * hd], seed: 27)
            gradCheck("attention packed by segments, heads of \(hd)", [qkv]) { Tensor.attentionPacked($0[0], heads: 2, segments: segments) }
        }
        let x = randomTensor([1, 9, 5], seed: 28)
        gradCheck("segment mean", [x]) { $0[0].segmentMean(segments) }
        gradCheck("segment first", [x]) { $0[0].segmentFirst(segments) }
        let padded = randomTensor([3, 6, 5], seed: 29)
        gradCheck("packed", [padded]) { $0[0].packed(segments) }
    }

    @Test func gatherAndMax() {
        let a = randomTensor([3, 5, 4], seed: 21)
        gradCheck("gather positions", [a]) { $0[0].gatherPositions([4, 0, 2]) }
        // Rows of distinct values keep the maximum away from ties (where max has no derivative).
        let b = Tensor((0..<24).map { Float(($0 * 7) % 24) * 0.1 }, shape: [2, 3, 4])
        gradCheck("max last axis", [b]) { $0[0].maxLastAxis() }
        #expect(noGrad { b.maxLastAxis() }.toArray() == [21, 18, 22, 19, 23, 20].map { Float($0) * 0.1 })
    }
}
