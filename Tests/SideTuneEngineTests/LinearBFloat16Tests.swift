import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// Linear layers on bf16 inputs (the feature cache's taps): the AMX path (weight and output
/// gradient split into bf16 hi + lo) against the f32 GEMMs on the same input values.
@Suite struct LinearBFloat16Tests {
    /// Output, dW and db of the bf16-input linear and of the f32 linear on x's values.
    func both(m: Int, k: Int, n: Int, amx: Bool) -> (bf16: [[Float]], f32: [[Float]]) {
        let xb = randomTensor([m, k], seed: 1).converted(to: .bfloat16)
        let xf = xb.float32()
        let w = randomTensor([n, k], seed: 2, scale: 0.2), b = randomTensor([n], seed: 3)
        let r = randomTensor([m, n], seed: 4)
        var results: [[[Float]]] = []
        for bf16 in [true, false] {
            for p in [w, b] { p.requiresGrad = true; p.zeroGrad() }
            let y = bf16 ? Tensor.linearBFloat16Input(xb, weight: w, bias: b, amx: amx) : Tensor.linear(xf, weight: w, bias: b)
            (y * r).sum().backward()
            results.append([y.toArray(), w.grad!.toArray(), b.grad!.toArray()])
        }
        return (results[0], results[1])
    }

    /// max |a - b| / max |b|.
    func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()! / max(b.map(abs).max()!, 1e-30)
    }

    /// Partial row blocks (37 rows: 16 + 16 + 5, an odd row count for the row-pair pack), partial
    /// column blocks (n = 20, 33), more column blocks than the four C tiles (n = 100: a second
    /// group) and the LST down projection's shape (1,056 x 384 -> 48). A split
    /// weight keeps about 16 bits: the error stays near f32 rounding (bf16 weights alone give ~2e-3).
    @Test(.enabled(if: AMX.available, "needs AMX")) func amxMatchesFloat32() {
        for (m, k, n) in [(37, 64, 20), (5, 96, 33), (16, 32, 16), (37, 64, 100), (1056, 384, 48)] {
            let (a, f) = both(m: m, k: k, n: n, amx: true)
            for (name, i) in [("output", 0), ("dW", 1), ("db", 2)] {
                let e = relativeError(a[i], f[i])
                #expect(e <= 2e-5, "\(m)x\(k)->\(n) \(name): relative error \(e) \(a[i].prefix(20)) \(f[i].prefix(20))")
            }
        }
    }

    /// Without AMX (or on any machine with amx: false) the f32 linear's GEMMs read x as bf16: the
    /// same results bit for bit (what a machine without AMX computes for cached taps). Shapes: thin
    /// on one thread (37 x 64 -> 20), LST's down projection on two (1,056 x 384 -> 48, dW by
    /// column strips), and a product the GEMM packs, where x is widened first (300 x 64 -> 200).
    @Test func fallbackIsTheFloat32Linear() {
        for (m, k, n) in [(37, 64, 20), (1056, 384, 48), (300, 64, 200)] {
            let (a, f) = both(m: m, k: k, n: n, amx: false)
            #expect(a == f, "\(m)x\(k)->\(n)")
        }
    }

    /// Reading taps as bf16 keeps no f32 copy of them: forward and backward of a 2,048 x 384 tap
    /// (3 MiB in f32) hold less than half that besides x, the weights and the output.
    @Test func noFloat32CopyOfTheInput() {
        // amx: false below, so the thin GEMM's bf16 tiles must take both products of this shape
        // (not on every CPU: where they do not, the input is widened, as `linearReadsBFloat16` says).
        guard Tensor.thinProductsReadBFloat16(inFeatures: 384, outFeatures: 48) else { return }
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let x = randomTensor([2048, 384], seed: 11).converted(to: .bfloat16)
            let w = randomTensor([48, 384], seed: 12, scale: 0.1), b = randomTensor([48], seed: 13)
            w.requiresGrad = true
            b.requiresGrad = true
            ledger.resetPeaks()
            let before = ledger.peakTotal
            let y = Tensor.linearBFloat16Input(x, weight: w, bias: b, amx: false)
            y.sum().backward()
            #expect(w.grad?.shape == [48, 384])
            let extra = ledger.peakTotal - before, f32Bytes = 2048 * 384 * 4
            // Output, its gradient, dW and db: about 0.9 MiB.
            #expect(extra < f32Bytes / 2, "forward + backward held \(extra) more bytes (an f32 copy of x: \(f32Bytes))")
        }
    }

    @Test(.enabled(if: AMX.available, "needs AMX")) func amxGradientCheck() {
        let x = randomTensor([21, 32], seed: 5).converted(to: .bfloat16)
        gradCheck("bf16-input linear", [randomTensor([18, 32], seed: 6), randomTensor([18], seed: 7)]) {
            Tensor.linearBFloat16Input(x, weight: $0[0], bias: $0[1], amx: true)
        }
    }

    /// `Tensor.linear` sends bf16 inputs here (on any machine): the direct call's result, and the
    /// f32 linear's on x's values up to the split's rounding.
    @Test func linearTakesBFloat16Inputs() {
        let x = randomTensor([3, 7, 64], seed: 8).converted(to: .bfloat16)
        let w = randomTensor([24, 64], seed: 9), b = randomTensor([24], seed: 10)
        let y = noGrad { Tensor.linear(x, weight: w, bias: b) }
        #expect(y.shape == [3, 7, 24])
        #expect(y.toArray() == noGrad { Tensor.linearBFloat16Input(x, weight: w, bias: b) }.toArray())
        let reference = noGrad { Tensor.linear(x.float32(), weight: w, bias: b) }.toArray()
        #expect(relativeError(y.toArray(), reference) <= 2e-5)
    }
}

