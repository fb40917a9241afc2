import Foundation
import Testing
import SideTuneEngine
import SideTuneTestSupport

@Suite("NF4")
struct NF4Tests {
    func randomWeight(_ r: Int, _ c: Int, seed: UInt64 = 7) -> Tensor {
        var rng = SplitMix64(seed: seed)
        return Tensor.randn([r, c], std: 0.02, rng: &rng)
    }

    @Test("levels, thresholds and the dynamic map have bitsandbytes' shape")
    func tables() {
        #expect(NF4.levels.count == 16 && NF4.levels.first == -1 && NF4.levels.last == 1 && NF4.levels[7] == 0)
        #expect(abs(NF4.thresholds[14] - 0.8614784181118011) < 1e-7 && abs(NF4.thresholds[7] - 0.03979014977812767) < 1e-7)
        let d = NF4.dynamicMap
        #expect(d.count == 256 && d.first! > -1 && d.last == 1 && d.contains(0) && zip(d, d.dropFirst()).allSatisfy { $0 <= $1 })
        for (i, t) in NF4.thresholds.enumerated() {
            #expect(NF4.code(t) == UInt8(i), "a value on a threshold goes to the lower level")
            #expect(NF4.code(t.nextUp) == UInt8(i + 1))
        }
    }

    @Test("quantise matches a plain nearest-level reference; round trip error; bytes per parameter")
    func roundTrip() {
        let w = randomWeight(96, 192)
        let q = NF4Weight(quantizing: w)
        #expect(q.bytesPerParameter <= 0.53, "\(q.bytesPerParameter) bytes per parameter")
        let x = w.toArray(), scales = q.blockScales(), codes = q.packedCodes
        // Reference: nearest level by distance (ties never happen on random data), own absmax.
        var mismatches = 0
        for b in 0..<(x.count / 64) {
            let m = x[(b * 64)..<(b * 64 + 64)].map(abs).max()!
            for j in 0..<64 {
                let v = x[b * 64 + j] / m
                let nearest = NF4.levels.indices.min { abs(NF4.levels[$0] - v) < abs(NF4.levels[$1] - v) }!
                let byte = codes[(b * 64 + j) / 2]
                let code = j % 2 == 0 ? byte >> 4 : byte & 15
                if Int(code) != nearest { mismatches += 1 }
            }
            // Double-quantised scale close to the true absmax (8-bit dynamic code).
            #expect(abs(scales[b] - m) <= 0.02 * m)
        }
        #expect(mismatches == 0)
        let d = q.dequantized().toArray()
        var err = 0.0, ref = 0.0
        for (a, b) in zip(d, x) { err += Double((a - b) * (a - b)); ref += Double(b * b) }
        let rel = (err / ref).squareRoot()
        // NF4 on Gaussian data: ~0.1 relative RMS error (4 bits, 16 levels).
        #expect(rel < 0.12, "relative RMS error \(rel)")
    }

    @Test("quantised matmul equals de-quantise-then-F32 matmul (GEMV and GEMM), forward and dX",
          arguments: [1, 3, 37, 130])
    func matmul(rows t: Int) {
        let q = NF4Weight(quantizing: randomWeight(200, 320))
        let wf = q.dequantized()
        var rng = SplitMix64(seed: UInt64(t))
        let x = Tensor.randn([t, 320], rng: &rng)
        x.requiresGrad = true
        let y = x.matmulNF4(q)
        let xr = x.detach()
        xr.requiresGrad = true
        let yr = xr.matmul(wf, transposeOther: true)
        let (a, b) = (y.toArray(), yr.toArray())
        let scale = b.map(abs).max()!
        let diff = zip(a, b).map { abs($0 - $1) }.max()!
        #expect(diff <= 1e-5 * scale, "forward: max diff \(diff), scale \(scale)")
        let g = Tensor.randn(y.shape, rng: &rng)
        y.backward(seed: g)
        yr.backward(seed: g)
        let ga = x.grad!.toArray(), gb = xr.grad!.toArray()
        let gs = gb.map(abs).max()!, gd = zip(ga, gb).map { abs($0 - $1) }.max()!
        #expect(gd <= 1e-5 * gs, "dX: max diff \(gd), scale \(gs)")
    }

    @Test("timing: NF4 GEMV / GEMM vs F32 on SmolLM2's FFN shape (printed)")
    func timing() {
        let (out, inF) = (1536, 576)
        let w = randomWeight(out, inF)
        let q = NF4Weight(quantizing: w)
        var rng = SplitMix64(seed: 1)
        func best(_ reps: Int, _ body: () -> Void) -> Double {
            var b = Double.infinity
            for _ in 0..<reps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                body()
                b = min(b, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            return b
        }
        for t in [1, 64, 256] {
            let x = Tensor.randn([t, inF], rng: &rng)
            let y = Tensor(shape: [t, out])
            let flops = 2.0 * Double(t * out * inF)
            let reps = t == 1 ? 200 : 20
            let f32 = best(reps) { gemm(GEMMShape(m: t, n: out, k: inF, transB: true), x.data, lda: inF, w.data, ldb: inF, y.data, ldc: out) }
            let nf4 = best(reps) { nf4Matmul(x.data, m: t, q, y.data) }
            FileHandle.standardError.write(Data(String(format: "NF4 matmul T=%d [%dx%d]: NF4 %.1f GFLOPS, F32 %.1f GFLOPS (ratio %.2f)\n",
                                                        t, out, inF, flops / nf4 / 1e9, flops / f32 / 1e9, f32 / nf4).utf8))
        }
    }

    @Test("matmulNF4: dX against finite differences; backward keeps no F32 copy of the weight")
    func nf4Backward() {
        let q = NF4Weight(quantizing: randomWeight(6, 128, seed: 3))
        gradCheck("matmul_nf4", [randomTensor([2, 3, 128], seed: 4)]) { $0[0].matmulNF4(q) }

        // A 1024 x 512 weight is 2 MiB in F32; forward and backward may use 256-row tiles only.
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let big = NF4Weight(quantizing: randomWeight(1024, 512, seed: 5))
            let x = randomTensor([4, 512], seed: 6)
            x.requiresGrad = true
            ledger.resetPeaks()
            let y = x.matmulNF4(big)
            y.sum().backward()
            #expect(x.grad?.shape == [4, 512])
            let f32Bytes = 1024 * 512 * 4
            let extra = ledger.peak(.workspace) + ledger.peak(.activations) + ledger.peak(.gradients)
            #expect(extra < f32Bytes / 2, "forward + backward held \(extra) bytes besides the NF4 weight (F32 copy: \(f32Bytes))")
        }
    }
}
