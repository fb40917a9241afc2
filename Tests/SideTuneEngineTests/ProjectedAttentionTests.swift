import SideTuneEngine
import SideTuneTestSupport
import Testing

/// `projectedSelfAttention`: the same values and gradients as three linear layers and `attention`,
/// keeping x instead of q, k and v for backward.
@Suite struct ProjectedAttentionTests {
    let b = 2, t = 5, d = 8, heads = 2
    let mask = AttentionMask(keyPadding: [1, 1, 1, 0, 0, 1, 1, 1, 1, 1])

    /// Frozen weights (tagged as weights) and trainable biases.
    func projections(seed: UInt64) -> [Tensor.FrozenProjection] {
        (0..<3).map { i in
            let w = randomTensor([d, d], seed: seed + UInt64(i), scale: 0.4), bias = randomTensor([d], seed: seed + 10 + UInt64(i))
            w.storage.retag(.weights)
            bias.storage.retag(.weights)
            bias.requiresGrad = true
            return (w, bias)
        }
    }

    /// The composed path: three `linear`s and `attention` (the blocked kernel, as the fused op's),
    /// heads merged.
    func composed(_ x: Tensor, _ p: [Tensor.FrozenProjection]) -> Tensor {
        func split(_ y: Tensor) -> Tensor { y.reshaped([b, t, heads, d / heads]).permuted([0, 2, 1, 3]) }
        let qkv = p.map { split(Tensor.linear(x, weight: $0.weight, bias: $0.bias)) }
        return Tensor.attention(qkv[0], qkv[1], qkv[2], mask: mask, kernel: .blocked).permuted([0, 2, 1, 3]).reshaped([b, t, d])
    }

    func fused(_ x: Tensor, _ p: [Tensor.FrozenProjection]) -> Tensor {
        Tensor.projectedSelfAttention(x, query: p[0], key: p[1], value: p[2], heads: heads, mask: mask)
    }

    @Test func gradientsMatchFiniteDifferences() {
        let x = randomTensor([b, t, d], seed: 1)
        let w = projections(seed: 2).map(\.weight)
        gradCheck("projected self-attention", [x] + projections(seed: 2).map(\.bias)) { inputs in
            Tensor.projectedSelfAttention(inputs[0], query: (w[0], inputs[1]), key: (w[1], inputs[2]), value: (w[2], inputs[3]),
                                          heads: heads, mask: mask)
        }
    }

    /// Values and gradients (x and the three biases) equal the composed path's, exactly kept (32
    /// bits) and with bf16 copies (16 bits) within bf16's rounding, relative to the values' size
    /// (at least 1: the keys' bias gradient is 0 up to rounding, softmax ignoring a constant).
    @Test func matchesTheComposedPath() {
        for (bits, tolerance) in [(ActivationBits.thirtyTwo, Float(1e-5)), (.sixteen, 2e-2)] {
            var results: [[[Float]]] = []
            for path in [composed, fused] {
                let p = projections(seed: 2), x = randomTensor([b, t, d], seed: 1)
                x.requiresGrad = true
                let out = Tensor.withActivationBits(bits) { path(x, p) }
                (out * randomTensor(out.shape, seed: 9)).sum().backward()
                results.append([out.toArray(), x.grad!.toArray()] + p.map { $0.bias.grad!.toArray() })
            }
            for (name, (c, f)) in zip(["output", "dx", "dbq", "dbk", "dbv"], zip(results[0], results[1])) {
                let scale = max(1, c.map(abs).max()!)
                let worst = zip(c, f).map { abs($0 - $1) }.max()!
                #expect(worst <= tolerance * scale, "\(bits) bits, \(name): worst difference \(worst) of \(scale)")
            }
        }
    }

    /// Kept between forward and backward: x and the heads' output (and each row's log-sum-exp),
    /// against the composed path's q, k, v and output; bf16 copies at 16 bits.
    @Test func keepsTheInputNotTheProjections() {
        func kept(_ bits: ActivationBits, _ path: (Tensor, [Tensor.FrozenProjection]) -> Tensor) -> Int {
            let ledger = MemoryLedger()
            return MemoryLedger.withLedger(ledger) {
                let p = projections(seed: 2)
                var kept = 0
                do {
                    let x = randomTensor([b, t, d], seed: 1) // an activation with no gradient of its own
                    let out = Tensor.withActivationBits(bits) { path(x, p) }
                    kept = ledger.current(.activations) - out.count * 4 - x.count * 4
                    out.backward(seed: Tensor.full(out.shape, 1))
                }
                #expect(ledger.current(.activations) == 0, "backward freed what the graph kept")
                return kept
            }
        }
        let values = b * t * d, rows = b * heads * t
        #expect(kept(.thirtyTwo, fused) == values * 4 + rows * 4, "x is kept as it is (no copy), and the heads' output")
        #expect(kept(.sixteen, fused) == 2 * values * 2 + rows * 4)
        #expect(kept(.sixteen, composed) == 4 * values * 2 + rows * 4)
    }
}
