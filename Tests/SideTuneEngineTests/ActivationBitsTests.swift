import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// `--activation-bits`: what ops keep for backward below 32 bits (codes of f', bf16 copies), how
/// many bytes that is (the ledger), and how far the gradients move from exact ones.
@Suite struct ActivationBitsTests {
    /// dx of f at `bits` and exact, for x ~ N(0, std^2) (n values) and a random upstream gradient.
    func gradients(_ f: (Tensor) -> Tensor, bits: ActivationBits, std: Float, n: Int = 1 << 16)
        -> (coded: [Float], exact: [Float]) {
        func run(_ b: ActivationBits) -> [Float] {
            var rng = SplitMix64(seed: 7)
            let x = Tensor.randn([n], std: std, rng: &rng)
            let g = Tensor.randn([n], rng: &rng)
            x.requiresGrad = true
            Tensor.withActivationBits(b) { f(x).backward(seed: g) }
            return x.grad!.toArray()
        }
        return (run(bits), run(.thirtyTwo))
    }

    func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        var num: Double = 0, den: Double = 0
        for (x, y) in zip(a, b) { num += Double((x - y) * (x - y)); den += Double(y * y) }
        return Float((num / den).squareRoot())
    }

    /// Measured on this construction (Gaussian x, std 1 and 3): GELU and SiLU 4-bit codes give dx
    /// within about 3-6% relative error, 8-bit within about 0.5%, bf16 inputs within 0.5%; ReLU's
    /// 1-bit code is exact. The bounds leave some room above what was measured.
    @Test(arguments: [("gelu", 0), ("gelu_tanh", 1), ("silu", 2)])
    func smoothFunctionsStayCloseToExact(name: String, index: Int) {
        let f: (Tensor) -> Tensor = [{ $0.gelu() }, { $0.geluTanh() }, { $0.silu() }][index]
        for std: Float in [1, 3] {
            let e4 = relativeError(gradients(f, bits: .four, std: std).coded, gradients(f, bits: .four, std: std).exact)
            let e8 = relativeError(gradients(f, bits: .eight, std: std).coded, gradients(f, bits: .eight, std: std).exact)
            let e16 = relativeError(gradients(f, bits: .sixteen, std: std).coded,
                                    gradients(f, bits: .sixteen, std: std).exact)
            testLog("\(name) x ~ N(0, \(std)^2): dx relative error 4-bit \(e4), 8-bit \(e8), bf16 \(e16)")
            #expect(e4 < 0.08 && e4 > 0, "\(name) 4-bit")
            #expect(e8 < 0.01 && e8 < e4 / 4, "\(name) 8-bit")
            #expect(e16 < 0.01, "\(name) bf16 input")
        }
    }

    @Test func reluCodeIsExact() {
        for bits in [ActivationBits.four, .eight, .sixteen] {
            let (coded, exact) = gradients({ $0.relu() }, bits: bits, std: 1)
            #expect(coded == exact)
        }
    }

    /// The forward is unchanged by the setting (only what backward keeps changes).
    @Test func forwardIsUnchanged() {
        var rng = SplitMix64(seed: 3)
        let x = Tensor.randn([1000], std: 2, rng: &rng)
        x.requiresGrad = true
        let exact = x.gelu().toArray()
        for bits in [ActivationBits.four, .eight, .sixteen] {
            #expect(Tensor.withActivationBits(bits) { x.gelu().toArray() } == exact)
        }
    }

    /// Bytes kept between forward and backward, from the ledger, against the arithmetic: 4 bits
    /// per GELU input, 8 at 8 bits, 2 bytes (bf16) at 16, 4 at 32; bf16 copies for LayerNorm's
    /// input and a linear layer's input at 16 bits or fewer.
    @Test func keptBytesFollowTheSetting() {
        func kept(_ bits: ActivationBits, _ forward: () -> Tensor) -> Int {
            let ledger = MemoryLedger()
            return MemoryLedger.withLedger(ledger) {
                Tensor.withActivationBits(bits) {
                    let out = forward()
                    let bytes = ledger.current(.activations) - out.count * 4
                    out.backward(seed: Tensor.full(out.shape, 1))
                    return bytes
                }
            }
        }
        func trainable(_ shape: [Int], seed: UInt64) -> Tensor {
            let p = randomTensor(shape, seed: seed)
            p.storage.retag(.weights)
            p.requiresGrad = true
            return p * 2
        }
        let n = 64 * 96
        let expected: [ActivationBits: Int] = [.four: n / 2, .eight: n, .sixteen: 2 * n, .thirtyTwo: 4 * n]
        for (bits, bytes) in expected {
            #expect(kept(bits) { trainable([64, 96], seed: 1).gelu() } == bytes, "GELU at \(bits.rawValue) bits")
            #expect(kept(bits) { trainable([64, 96], seed: 1).silu() } == bytes, "SiLU at \(bits.rawValue) bits")
        }
        for bits in ActivationBits.allCases {
            let scalar = bits.roundsToBFloat16 ? 2 : 4
            // LayerNorm with a trainable input: x (rounded) and 2 statistics per row in f32.
            #expect(kept(bits) {
                let w = randomTensor([96], seed: 2), b = randomTensor([96], seed: 3)
                w.storage.retag(.weights); b.storage.retag(.weights)
                return trainable([64, 96], seed: 1).layerNorm(weight: w, bias: b)
            } == n * scalar + 64 * 2 * 4)
            // A trainable weight over a constant input keeps the input for dW.
            #expect(kept(bits) {
                let w = randomTensor([32, 96], seed: 2), b = randomTensor([32], seed: 3)
                for p in [w, b] { p.storage.retag(.weights); p.requiresGrad = true }
                return Tensor.linear(randomTensor([64, 96], seed: 1), weight: w, bias: b)
            } == n * scalar)
        }
    }

    /// Attention keeps q, k, v and its output, in bf16 at 16 bits or fewer; gradients stay within
    /// bf16 rounding of exact ones.
    @Test func attentionKeepsBFloat16Copies() {
        let (b, h, t, d) = (2, 3, 20, 16)
        func run(_ bits: ActivationBits) -> (kept: Int, grads: [Float]) {
            let ledger = MemoryLedger()
            return MemoryLedger.withLedger(ledger) {
                var rng = SplitMix64(seed: 5)
                let qkv = Tensor.randn([3, b, h, t, d], rng: &rng)
                qkv.storage.retag(.weights)
                qkv.requiresGrad = true
                let g = Tensor.randn([b, h, t, d], rng: &rng)
                return Tensor.withActivationBits(bits) {
                    func forward() -> Tensor { // q, k and v are dropped on return unless attention kept them
                        let parts = (qkv * 1).split(axis: 0, sizes: [1, 1, 1]).map { $0.reshaped([b, h, t, d]) }
                        return Tensor.attention(parts[0], parts[1], parts[2], kernel: .blocked)
                    }
                    let out = forward()
                    let kept = ledger.current(.activations) - out.count * 4 - g.count * 4
                    out.backward(seed: g)
                    return (kept, qkv.grad!.toArray())
                }
            }
        }
        let exact = run(.thirtyTwo), rounded = run(.sixteen)
        let tensor = b * h * t * d, lse = b * h * t * 4
        #expect(exact.kept == 3 * tensor * 4 + lse, "q, k, v in f32 (the output is its own) and the row statistics")
        #expect(rounded.kept == 4 * tensor * 2 + lse, "q, k, v and a copy of the output in bf16")
        let err = relativeError(rounded.grads, exact.grads)
        testLog("attention gradients with bf16 q, k, v, o: relative error \(err)")
        #expect(err > 0 && err < 0.02)
    }
}
