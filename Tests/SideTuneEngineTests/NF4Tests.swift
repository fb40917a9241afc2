import Foundation
import Testing
import SideTuneEngine
import SideTuneTestSupport

/// One 2-thread pool for the suite, kept for the process: a pool must outlive its spinning workers.
private let pool = ThreadPool(threads: 2)

/// The best of `reps` timings of `body`, in seconds.
private func best(_ reps: Int, _ body: () -> Void) -> Double {
    var b = Double.infinity
    for _ in 0..<reps {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        b = min(b, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
    return b
}

@Suite("NF4", .serialized)
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

    /// Weights shaped like a trained layer's: per-row scales over two decades, heavy tails
    /// (Student-t-like via a Gaussian ratio) and a few outlier columns, so blocks differ widely.
    func realLikeWeight(_ r: Int, _ c: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed: seed)
        let g = Tensor.randn([r, c], rng: &rng).toArray(), h = Tensor.randn([r, c], rng: &rng).toArray()
        var v = [Float](repeating: 0, count: r * c)
        for o in 0..<r {
            let rowScale = Float(0.002) * Float(Foundation.pow(10.0, Double(o % 7) / 3))
            for i in 0..<c {
                let t = g[o * c + i] / max(0.3, abs(h[o * c + i]))
                v[o * c + i] = rowScale * t * (i % 97 == 5 ? 20 : 1)
            }
        }
        return Tensor(v, shape: [r, c])
    }

    @Test("NF4 GEMV: the C kernel equals the Swift reference and de-quantise-then-F32 on SmolLM2's shapes, 1 and 2 threads",
          arguments: [[576, 576], [192, 576], [1536, 576], [576, 1536], [3, 64], [17, 128]])
    func gemvKernels(shape: [Int]) {
        let (out, inF) = (shape[0], shape[1])
        for (wi, w) in [randomWeight(out, inF, seed: UInt64(out + inF)), realLikeWeight(out, inF, seed: UInt64(out * inF))].enumerated() {
            let q = NF4Weight(quantizing: w)
            let wf = q.dequantized()
            var rng = SplitMix64(seed: UInt64(out + wi))
            let x = Tensor.randn([1, inF], rng: &rng)
            // F32 reference in Double: sum_i x[i] * w[o, i] over the de-quantised weight.
            let xa = x.toArray(), wa = wf.toArray()
            let exact: [Double] = (0..<out).map { o in (0..<inF).reduce(0.0) { $0 + Double(xa[$1]) * Double(wa[o * inF + $1]) } }
            let scale = exact.map(abs).max()!
            for threads in [1, 2] {
                pool.activeThreads = threads
                for kernel in [NF4GemvKernel.reference, .vectorized] {
                    let y = Tensor(shape: [out])
                    nf4Gemv(x.data, q, y.data, kernel: kernel, pool: pool)
                    let diff = zip(y.toArray(), exact).map { abs(Double($0) - $1) }.max()!
                    #expect(diff <= 1e-5 * scale, "\(kernel) \(threads)T weight \(wi) [\(out)x\(inF)]: max diff \(diff), scale \(scale)")
                    // accumulate adds onto y: the result is twice the product.
                    nf4Gemv(x.data, q, y.data, kernel: kernel, accumulate: true, pool: pool)
                    let diff2 = zip(y.toArray(), exact).map { abs(Double($0) - 2 * $1) }.max()!
                    #expect(diff2 <= 2e-5 * scale, "\(kernel) accumulate: max diff \(diff2)")
                }
            }
            // Both kernels against each other: same sums up to float reassociation.
            let (ya, yb) = (Tensor(shape: [out]), Tensor(shape: [out]))
            nf4Gemv(x.data, q, ya.data, kernel: .reference, pool: pool)
            nf4Gemv(x.data, q, yb.data, kernel: .vectorized, pool: pool)
            let d = zip(ya.toArray(), yb.toArray()).map { abs($0 - $1) }.max()!
            #expect(Double(d) <= 1e-5 * scale, "reference vs vectorized: \(d)")
        }
    }

    @Test("NF4 GEMV: a wrong level or scale is caught (the comparison can fail)")
    func gemvDetectsCorruption() {
        let q = NF4Weight(quantizing: randomWeight(64, 128, seed: 9))
        var codes = q.packedCodes
        codes[5] ^= 0x10  // one high nibble moves by one level
        let bad = NF4Weight(rows: 64, cols: 128, codes: codes, quantizedScales: q.scaleIndices, scaleAbsmax: q.secondLevelScales, offset: q.offset)
        var rng = SplitMix64(seed: 2)
        let x = Tensor.randn([1, 128], rng: &rng)
        let (ya, yb) = (Tensor(shape: [64]), Tensor(shape: [64]))
        nf4Gemv(x.data, q, ya.data, kernel: .vectorized)
        nf4Gemv(x.data, bad, yb.data, kernel: .vectorized)
        let a = ya.toArray(), b = yb.toArray(), scale = a.map(abs).max()!
        #expect(abs(a[0] - b[0]) > 1e-5 * scale, "row 0 changed by one code")
        #expect(a[1...] == b[1...], "other rows unchanged")
    }

    @Test("timing: NF4 GEMV (Swift reference and C kernel) vs F32 GEMV, 1 and 2 threads, SmolLM2 shapes (printed)")
    func gemvTiming() {
        FileHandle.standardError.write(Data("NF4 GEMV C kernel uses SIMD: \(NF4GemvKernel.vectorizedUsesSIMD)\n".utf8))
        for (out, inF) in [(1536, 576), (576, 1536), (576, 576), (192, 576)] {
            let w = randomWeight(out, inF)
            let q = NF4Weight(quantizing: w)
            var rng = SplitMix64(seed: 1)
            let x = Tensor.randn([1, inF], rng: &rng)
            let y = Tensor(shape: [out])
            let flops = 2.0 * Double(out * inF)
            for threads in [1, 2] {
                pool.activeThreads = threads
                // Interleave the three so load from other processes hits them alike.
                var (f32, ref, vec) = (Double.infinity, Double.infinity, Double.infinity)
                for _ in 0..<3 {
                    f32 = min(f32, best(300) { gemm(GEMMShape(m: 1, n: out, k: inF, transB: true), x.data, lda: inF, w.data, ldb: inF, y.data, ldc: out, pool: pool) })
                    ref = min(ref, best(300) { nf4Gemv(x.data, q, y.data, kernel: .reference, pool: pool) })
                    vec = min(vec, best(300) { nf4Gemv(x.data, q, y.data, kernel: .vectorized, pool: pool) })
                }
                FileHandle.standardError.write(Data(String(format: "NF4 GEMV %dT [%dx%d]: C kernel %.1f GFLOPS, Swift reference %.1f, F32 GEMV %.1f (C/F32 %.2f, ref/F32 %.2f)\n",
                                                            threads, out, inF, flops / vec / 1e9, flops / ref / 1e9, flops / f32 / 1e9, f32 / vec, f32 / ref).utf8))
            }
        }
    }

    /// Decode runs every linear of the model once per token, so its weights stream from DRAM (SmolLM2's
    /// 30 layers are 425 MB in F32, 56 MB in NF4, against a 32 MiB L3): that is where a 4-bit GEMV
    /// earns its keep. The timing above repeats one matrix, which then sits in cache.
    @Test("timing: NF4 GEMV vs F32 GEMV over all 30 layers of SmolLM2-sized weights, as a decode step reads them (printed)")
    func gemvStreamingTiming() {
        let shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
        var f32: [Tensor] = [], nf4: [NF4Weight] = []
        for layer in 0..<30 {
            for (i, (o, k)) in shapes.enumerated() {
                let w = randomWeight(o, k, seed: UInt64(layer * 16 + i))
                nf4.append(NF4Weight(quantizing: w))
                f32.append(w)
            }
        }
        let params = f32.reduce(0) { $0 + $1.count }
        let nf4Bytes = nf4.reduce(0) { $0 + $1.storedBytes }
        var rng = SplitMix64(seed: 1)
        let xs = [576, 1536].map { Tensor.randn([1, $0], rng: &rng) }
        let y = Tensor(shape: [1536])
        func x(_ k: Int) -> UnsafeMutablePointer<Float> { xs[k == 576 ? 0 : 1].data }
        for threads in [1, 2] {
            pool.activeThreads = threads
            var (tf, tq) = (Double.infinity, Double.infinity)
            for _ in 0..<3 {
                tf = min(tf, best(5) { for w in f32 { let (o, k) = (w.shape[0], w.shape[1])
                    gemm(GEMMShape(m: 1, n: o, k: k, transB: true), x(k), lda: k, w.data, ldb: k, y.data, ldc: o, pool: pool) } })
                tq = min(tq, best(5) { for w in nf4 { nf4Gemv(x(w.cols), w, y.data, kernel: .vectorized, pool: pool) } })
            }
            #expect(tf > 0 && tq > 0)
            FileHandle.standardError.write(Data(String(format: "NF4 GEMV streaming %dT: %d matrices, %.0f MB F32 / %.0f MB NF4: F32 %.2f ms (%.1f GB/s), NF4 %.2f ms (%.1f GB/s of NF4): NF4/F32 speed %.2fx\n",
                threads, f32.count, Double(params * 4) / 1e6, Double(nf4Bytes) / 1e6, tf * 1e3, Double(params * 4) / tf / 1e9,
                tq * 1e3, Double(nf4Bytes) / tq / 1e9, tf / tq).utf8))
        }
    }

    @Test("timing: NF4 GEMV / GEMM vs F32 on SmolLM2's FFN shape (printed)")
    func timing() {
        let (out, inF) = (1536, 576)
        let w = randomWeight(out, inF)
        let q = NF4Weight(quantizing: w)
        var rng = SplitMix64(seed: 1)
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
