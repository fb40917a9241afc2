import CSideTuneKernels
import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

@Suite struct GEMMTests {
    static let sizes = [1, 7, 33, 257]

    /// Fast GEMM against the plain triple loop, every transpose mode, awkward sizes, every kernel
    /// the level in use may run (run the suite under each SIDETUNE_ISA cap for all of them).
    @Test(arguments: GEMMKernel.available)
    func matchesReference(kernel: GEMMKernel) {
        var rng = SplitMix64(seed: 3)
        var shapes: [(Int, Int, Int)] = []
        for m in Self.sizes { for n in Self.sizes { for k in Self.sizes where m * n * k <= 257 * 257 * 33 { shapes.append((m, n, k)) } } }
        shapes += [(300, 65, 513), (12, 32, 256), (169, 17, 600)]
        for (m, n, k) in shapes {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = (0..<(m * k)).map { _ in rng.nextFloat() - 0.5 }, b = (0..<(k * n)).map { _ in rng.nextFloat() - 0.5 }
                var fast = [Float](repeating: 7, count: m * n), ref = fast
                let s = GEMMShape(m: m, n: n, k: k, transA: ta, transB: tb)
                let lda = ta ? m : k, ldb = tb ? k : n
                gemm(s, a, lda: lda, b, ldb: ldb, &fast, ldc: n, accumulate: true, kernel: kernel)
                gemmReference(s, a, lda: lda, b, ldb: ldb, &ref, ldc: n, accumulate: true)
                var worst: Float = 0
                for i in 0..<(m * n) { worst = max(worst, abs(fast[i] - ref[i]) / (1e-4 + 1e-4 * abs(ref[i]))) }
                #expect(worst <= 1, "\(kernel.name) \(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N"): off by \(worst)x the tolerance")
            }
        }
    }

    /// Panels packed from operands that run along k (B transposed, A untransposed; 16x16 register
    /// transposes with AVX-512) hold exactly the gathered elements, zeros past the last column and
    /// nothing past the panel: every panel width (12 and 6 are the A kernels' rows), partial
    /// panels, and k with and without a tail of less than 16.
    @Test func transposedPanelsMatchTheGather() {
        var rng = SplitMix64(seed: 11)
        for nr in [6, 12, 16, 24, 32, 48] {
            for cols in [1, 6, 7, 12, 16, 17, 31, 32, 48] where cols <= nr {
                for kc in [0, 1, 15, 16, 17, 40, 256] {
                    let lds = kc + 3
                    let src = (0..<(cols * lds)).map { _ in rng.nextFloat() - 0.5 }
                    var packed = [Float](repeating: .nan, count: kc * nr + 16) // guard: must stay NaN
                    sidetune_pack_transposed_panel(src, lds, kc, cols, nr, &packed)
                    #expect(packed[(kc * nr)...].allSatisfy { $0.isNaN }, "nr \(nr), cols \(cols), kc \(kc): wrote past the panel")
                    var wrong = 0
                    for p in 0..<kc {
                        for q in 0..<nr where packed[p * nr + q] != (q < cols ? src[q * lds + p] : 0) { wrong += 1 }
                    }
                    #expect(wrong == 0, "nr \(nr), cols \(cols), kc \(kc): \(wrong) elements wrong")
                }
            }
        }
    }

    /// The in-place path for thin products against the triple loop: every available strided
    /// kernel, transpose mode, partial edge panels, one and two threads. Operands stored in bf16
    /// (untransposed: read by the tiles' bf16 variants, edge panels widened into copies) give the
    /// f32 operands' results bit for bit.
    @Test(arguments: StridedKernel.avx512 + StridedKernel.avx2)
    func thinMatchesReference(kernel: StridedKernel) {
        var rng = SplitMix64(seed: 5)
        let pool = ThreadPool(threads: 2)
        for (m, n, k) in [(1, 1, 1), (5, 48, 384), (2048 / 16, 16, 96), (16, 384, 700), (13, 33, 17), (100, 64, 9)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                // bf16-representable values, so the bf16 copies hold the same numbers.
                let a16 = (0..<(m * k)).map { _ in floatToBFloat16Bits(rng.nextFloat() - 0.5) }
                let b16 = (0..<(k * n)).map { _ in floatToBFloat16Bits(rng.nextFloat() - 0.5) }
                let a = a16.map(bfloat16BitsToFloat), b = b16.map(bfloat16BitsToFloat)
                let s = GEMMShape(m: m, n: n, k: k, transA: ta, transB: tb)
                let lda = ta ? m : k, ldb = tb ? k : n
                var ref = [Float](repeating: 3, count: m * n)
                gemmReference(s, a, lda: lda, b, ldb: ldb, &ref, ldc: n, accumulate: true)
                var results: [[Float]] = []
                for threads in [1, 2] {
                    // Operand storage: f32/f32 first, then each bf16 combination the path reads.
                    for (aHalf, bHalf) in [(false, false), (true, false), (false, true), (true, true)] where !(aHalf && ta) && !(bHalf && tb) {
                        var fast = [Float](repeating: 3, count: m * n)
                        a.withUnsafeBufferPointer { af in b.withUnsafeBufferPointer { bf in
                            a16.withUnsafeBufferPointer { ah in b16.withUnsafeBufferPointer { bh in
                                gemmThin(s, aHalf ? .bf16(ah.baseAddress!) : .f32(af.baseAddress!), lda: lda,
                                         bHalf ? .bf16(bh.baseAddress!) : .f32(bf.baseAddress!), ldb: ldb,
                                         &fast, ldc: n, accumulate: true, pool: pool, threads: threads, kernel: kernel)
                            } }
                        } }
                        if aHalf || bHalf {
                            let differing = zip(fast, results.last!).filter { $0 != $1 }.count
                            #expect(differing == 0, "\(differing) of \(m * n): \(kernel.name) \(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N"), bf16 A \(aHalf) B \(bHalf), \(threads) thread(s): differs from f32 operands")
                            continue
                        }
                        var worst: Float = 0
                        for i in 0..<(m * n) { worst = max(worst, abs(fast[i] - ref[i]) / (1e-4 + 1e-4 * abs(ref[i]))) }
                        #expect(worst <= 1, "\(kernel.name) \(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N") on \(threads) thread(s): off by \(worst)x the tolerance")
                        results.append(fast)
                    }
                }
                #expect(results[0] == results[1], "\(kernel.name) \(m)x\(n)x\(k): one and two threads differ")
            }
        }
    }

    /// The thin path's tile is the one that pads least: side widths of 48 (and 144) take 8x48, which
    /// 12x32 would pad to 64 (the side step's 48-column products ran at 42% of peak on 24x16).
    @Test(.enabled(if: !StridedKernel.avx512.isEmpty)) func thinTileChoice() {
        let tile = { (m: Int, n: Int) in StridedKernel.best(StridedKernel.avx512, m: m, n: n)?.name }
        #expect(tile(1056, 48) == "strided 8x48")
        #expect(tile(1056, 144) == "strided 8x48")
        #expect(tile(48, 384) == "strided 12x32")
        #expect(tile(1056, 16) == "strided 24x16")
        #expect(tile(16, 384) == "strided 8x48")
        #expect(tile(16, 64) == "strided 8x32")
    }

    /// One and two threads give bit-identical results (static work split, same summation order).
    @Test func threadsAgree() {
        let pool = ThreadPool(threads: 2)
        var rng = SplitMix64(seed: 4)
        let (m, n, k) = (331, 290, 515)
        let a = (0..<(m * k)).map { _ in rng.nextFloat() - 0.5 }, b = (0..<(k * n)).map { _ in rng.nextFloat() - 0.5 }
        var one = [Float](repeating: 0, count: m * n), two = one
        pool.activeThreads = 1
        gemm(GEMMShape(m: m, n: n, k: k), a, lda: k, b, ldb: n, &one, ldc: n, pool: pool)
        pool.activeThreads = 2
        gemm(GEMMShape(m: m, n: n, k: k), a, lda: k, b, ldb: n, &two, ldc: n, pool: pool)
        #expect(one == two)
    }
}

/// The C kernels' vector transcendentals (vecmath_body.h, in every instruction set's copy) against libm.
@Suite struct VectorMathTests {
    /// y = f(x) for every x by the C kernel of `kind` (the level in use).
    func apply(_ kind: Int32, _ xs: [Float]) -> [Float] {
        var ys = [Float](repeating: 0, count: xs.count)
        st_unary_forward(kind, xs.count, xs, &ys)
        return ys
    }

    @Test func transcendentalsMatchLibm() {
        let xs = stride(from: Float(-20), to: 20, by: 0.01).map { $0 }
        let exp = apply(Int32(ST_UNARY_EXP.rawValue), xs), tanh = apply(Int32(ST_UNARY_TANH.rawValue), xs)
        let gelu = apply(Int32(ST_UNARY_GELU.rawValue), xs)
        var worstExp: Float = 0, worstGelu: Float = 0, worstTanh: Float = 0
        for (i, x) in xs.enumerated() {
            worstExp = max(worstExp, abs(exp[i] - Foundation.exp(x)) / Foundation.exp(x))
            // GELU = 0.5 x (1 + erf(x / sqrt 2)): the erf error scaled by 0.5 |x|.
            worstGelu = max(worstGelu, abs(gelu[i] - 0.5 * x * (1 + Foundation.erf(x * 0.70710678))) / max(1, abs(x)))
            worstTanh = max(worstTanh, abs(tanh[i] - Foundation.tanh(x)))
        }
        #expect(worstExp < 1e-6, "exp relative error \(worstExp)")
        #expect(worstGelu < 1e-6, "gelu (erf) error \(worstGelu)")
        #expect(worstTanh < 1e-6, "tanh absolute error \(worstTanh)")
    }

    /// Whole float range, distinct values per lane, and the clamps (exp of -100 is 0-ish, not NaN).
    @Test func expAcrossTheRangeLaneByLane() {
        var xs: [Float] = []
        var base: Float = -87
        while base < 88 {
            for l in 0..<16 { xs.append(base + Float(l) * 0.037) }
            base += 0.61
        }
        let e = apply(Int32(ST_UNARY_EXP.rawValue), xs)
        var worst: Float = 0
        for (i, x) in xs.enumerated() where x < 88.7 { worst = max(worst, abs(e[i] - Foundation.exp(x)) / Foundation.exp(x)) }
        #expect(worst < 2e-6, "exp relative error \(worst)")
        let small = apply(Int32(ST_UNARY_EXP.rawValue), [Float](repeating: -100, count: 16))[0]
        #expect(small >= 0 && small < 1e-37)
        #expect(apply(Int32(ST_UNARY_EXP.rawValue), [Float](repeating: 0, count: 16))[0] == 1)
    }
}

@Suite struct AttentionTests {
    /// The small-head kernel equals the blocked one for LST's thin heads: 4 dims (and V of 3), more
    /// keys than queries under a causal mask, key counts off the vector width, a batch entry whose
    /// keys are all padding.
    @Test func smallHeadsMatchBlocked() {
        for (tq, tk, d, dv) in [(64, 64, 4, 4), (37, 45, 4, 3), (5, 70, 8, 16)] {
            let q = randomTensor([3, 2, tq, d], seed: 11), k = randomTensor([3, 2, tk, d], seed: 12), v = randomTensor([3, 2, tk, dv], seed: 13)
            var pad = [Float](repeating: 1, count: 3 * tk)
            for j in (tk - 7)..<tk { pad[j] = 0 }
            for j in (2 * tk)..<(3 * tk) { pad[j] = 0 }
            for mask in [AttentionMask.none, AttentionMask(keyPadding: pad), AttentionMask(causal: true), AttentionMask(keyPadding: pad, causal: true)] {
                let r = randomTensor([3, 2, tq, dv], seed: 14)
                var outputs: [Tensor] = [], grads: [[Tensor]] = []
                for kernel in [AttentionKernel.blocked, .smallHeads] {
                    for t in [q, k, v] { t.requiresGrad = true; t.zeroGrad() }
                    let y = Tensor.attention(q, k, v, mask: mask, kernel: kernel)
                    (y * r).sum().backward()
                    outputs.append(y.detach())
                    grads.append([q, k, v].map { $0.grad!.copy() })
                }
                // Against the blocked kernel (itself checked against the reference below), which like
                // this one gives zeros for a row with no visible key where the reference gives NaN.
                #expect(outputs[1].toArray().allSatisfy { $0.isFinite })
                #expect(maxAbsDiff(outputs[0], outputs[1]) < 1e-5, "\(tq)x\(tk) d \(d) dv \(dv) causal \(mask.causal)")
                for (a, b) in zip(grads[0], grads[1]) { #expect(maxAbsDiff(a, b) < 1e-4) }
            }
        }
    }

    /// The packed q/k/v kernel equals splitting, permuting and the blocked kernel, outputs and
    /// gradients: head sizes with and without a specialised copy, sequences off the 16-lane blocks
    /// and across 64-query groups, padding, and a batch entry whose keys are all padding (zeros).
    @Test func packedMatchesSplit() {
        for (b, t, heads, hd) in [(3, 64, 12, 4), (3, 37, 2, 3), (2, 70, 1, 16), (3, 20, 2, 8)] {
            let dm = heads * hd
            let qkv = randomTensor([b, t, 3 * dm], seed: 31)
            var pad = [Float](repeating: 1, count: b * t)
            for j in (t - 5)..<t { pad[j] = 0 }
            for j in ((b - 1) * t)..<(b * t) { pad[j] = 0 } // the last entry: all padding
            let r = randomTensor([b, t, dm], seed: 32)
            for keyPadding in [nil, pad] {
                qkv.requiresGrad = true; qkv.zeroGrad()
                let parts = qkv.split(axis: 2, sizes: [dm, dm, dm]).map { $0.reshaped([b, t, heads, hd]).permuted([0, 2, 1, 3]) }
                let ref = Tensor.attention(parts[0], parts[1], parts[2], mask: AttentionMask(keyPadding: keyPadding), kernel: .blocked)
                    .permuted([0, 2, 1, 3]).reshaped([b, t, dm])
                (ref * r).sum().backward()
                let refGrad = qkv.grad!.copy()
                qkv.zeroGrad()
                let fast = Tensor.attentionPacked(qkv, heads: heads, keyPadding: keyPadding)
                (fast * r).sum().backward()
                #expect(fast.toArray().allSatisfy { $0.isFinite })
                #expect(maxAbsDiff(ref, fast) < 1e-5, "\(b)x\(t) heads \(heads) of \(hd) padding \(keyPadding != nil)")
                #expect(maxAbsDiff(refGrad, qkv.grad!) < 1e-4, "\(b)x\(t) heads \(heads) of \(hd) padding \(keyPadding != nil)")
            }
        }
    }

    /// A packed batch (sequences end to end, no padding rows) gives, on each real token, what the
    /// padded batch gives, outputs and gradients; its mean and first-token pooling equal the padded
    /// ones. Lengths cross the 16-lane blocks and the 64-query groups; one sequence has one token.
    @Test func packedSegmentsMatchPadded() {
        let lengths = [70, 1, 17, 33], t = 70
        let segments = TokenSegments(lengths: lengths)
        var pad = [Float](repeating: 0, count: lengths.count * t)
        for (b, l) in lengths.enumerated() { for j in 0..<l { pad[b * t + j] = 1 } }
        for (heads, hd) in [(12, 4), (1, 16), (2, 3)] {
            let dm = heads * hd
            let qkv = randomTensor([lengths.count, t, 3 * dm], seed: 33)
            qkv.requiresGrad = true
            // Padding queries read real keys, so a loss that looks at their outputs sends gradient to
            // real keys; a side network's loss never does (padding rows are masked and pooled out).
            let r = randomTensor([lengths.count, t, dm], seed: 34)
            for row in 0..<(lengths.count * t) where pad[row] == 0 { (r.data + row * dm).update(repeating: 0, count: dm) }
            let padded = Tensor.attentionPacked(qkv, heads: heads, keyPadding: pad)
            (padded * r).sum().backward()
            let paddedGrad = noGrad { qkv.grad!.packed(segments) }
            qkv.zeroGrad()
            let packedIn = noGrad { qkv.packed(segments) }
            packedIn.requiresGrad = true
            let packed = Tensor.attentionPacked(packedIn, heads: heads, segments: segments)
            (packed * noGrad { r.packed(segments) }).sum().backward()
            #expect(maxAbsDiff(noGrad { padded.packed(segments) }, packed) < 1e-6, "heads \(heads) of \(hd)")
            #expect(maxAbsDiff(paddedGrad, packedIn.grad!) < 1e-5, "heads \(heads) of \(hd)")
        }
        let x = randomTensor([lengths.count, t, 8], seed: 35)
        let xp = noGrad { x.packed(segments) }
        let weights = pad, counts = lengths.map(Float.init)
        #expect(maxAbsDiff(noGrad { x.weightedSumOverTokens(weights: weights, divisors: counts) }, noGrad { xp.segmentMean(segments) }) < 1e-6)
        #expect(maxAbsDiff(noGrad { x.slice(axis: 1, 0, 1).reshaped([lengths.count, 8]) }, noGrad { xp.segmentFirst(segments) }) == 0)
    }

    /// The blocked path equals the reference on sizes that cross its 64-query blocks.
    @Test func blockedMatchesReference() {
        let q = randomTensor([2, 3, 70, 16], seed: 1), k = randomTensor([2, 3, 70, 16], seed: 2), v = randomTensor([2, 3, 70, 16], seed: 3)
        var pad = [Float](repeating: 1, count: 140)
        for j in 60..<70 { pad[j] = 0 }
        for mask in [AttentionMask.none, AttentionMask(keyPadding: pad), AttentionMask(keyPadding: pad, causal: true)] {
            for t in [q, k, v] { t.requiresGrad = true; t.zeroGrad() }
            let r = randomTensor([2, 3, 70, 16], seed: 4)
            let ref = Tensor.attentionReference(q, k, v, mask: mask)
            (ref * r).sum().backward()
            let refGrads = [q, k, v].map { $0.grad!.copy() }
            for t in [q, k, v] { t.zeroGrad() }
            let fast = Tensor.attention(q, k, v, mask: mask, kernel: .blocked)
            (fast * r).sum().backward()
            #expect(maxAbsDiff(ref, fast) < 1e-5)
            for (g, t) in zip(refGrads, [q, k, v]) { #expect(maxAbsDiff(g, t.grad!) < 1e-4) }
        }
    }
}

@Suite struct StorageTests {
    @Test func halfPrecisionRoundTrip() {
        let x = randomTensor([1000], seed: 5)
        for dt in [DType.float16, .bfloat16] {
            let back = x.converted(to: dt).float32()
            var worst: Float = 0
            for i in 0..<x.count { worst = max(worst, abs(back.data[i] - x.data[i]) / max(abs(x.data[i]), 1e-3)) }
            #expect(worst <= (dt == .bfloat16 ? 1.0 / 256 : 1.0 / 2048), "\(dt) relative error \(worst)")
        }
        #expect(floatToBFloat16Bits(1.0) == 0x3F80)
        #expect(bfloat16BitsToFloat(0xC000) == -2)
        #expect(floatToBFloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80, "ties round to even")
        #expect(floatToBFloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82, "ties round to even")
    }

    @Test func blockQuantisationRoundTrip() {
        let x = randomTensor([4, 64], seed: 6)
        for (dt, tol) in [(DType.q8_0, Float(0.01)), (.q4_0, 0.2), (.q4_1, 0.15)] {
            let q = x.converted(to: dt)
            #expect(q.storage.byteCount == 8 * dt.bytesPerBlock)
            let back = q.float32()
            let err = maxAbsDiff(back, x)
            #expect(err < tol * 3, "\(dt) max error \(err)")
        }
    }
}
