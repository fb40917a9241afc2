import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// The fused no-grad kernels against their plain references (autograd ops or loops).
@Suite struct FusedInferenceTests {
    func random(_ n: Int, _ rng: inout SplitMix64) -> [Float] { (0..<n).map { _ in rng.nextFloat() - 0.5 } }

    func maxDiff(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    /// Each row handed to the epilogue exactly once, fused (whole rows per thread) or not (a
    /// thread per column group, blocks of columns, the small-product path, one row).
    @Test func rowEpilogueSeesEveryRowOnceAfterTheProduct() {
        let pool = ThreadPool(threads: 2)
        var rng = SplitMix64(seed: 1)
        for (m, n, k) in [(300, 40, 70), (12, 2000, 300), (5, 4100, 3), (1, 64, 64), (97, 4200, 40), (700, 33, 9)] {
            for threads in [1, 2] {
                pool.activeThreads = threads
                let a = random(m * k, &rng), b = random(k * n, &rng)
                var c = [Float](repeating: 0, count: m * n), ref = c
                gemmReference(GEMMShape(m: m, n: n, k: k, transB: true), a, lda: k, b, ldb: k, &ref, ldc: n)
                let lock = NSLock()
                var seen = [Int](repeating: 0, count: m), rowSums = [Float](repeating: 0, count: m)
                c.withUnsafeMutableBufferPointer { cb in
                    let pc = cb.baseAddress!
                    gemm(GEMMShape(m: m, n: n, k: k, transB: true), a, lda: k, b, ldb: k, pc, ldc: n, pool: pool) { rows in
                        // The row must be final here: its sum is compared with the reference's.
                        for r in rows {
                            var s: Float = 0
                            for j in 0..<n { s += pc[r * n + j] }
                            lock.lock(); seen[r] += 1; rowSums[r] = s; lock.unlock()
                        }
                    }
                }
                #expect(seen.allSatisfy { $0 == 1 }, "\(m)x\(n)x\(k), \(threads) thread(s): rows seen \(Set(seen))")
                for r in 0..<m {
                    let expected = ref[(r * n)..<((r + 1) * n)].reduce(0, +)
                    #expect(abs(rowSums[r] - expected) <= 1e-3 * (1 + abs(expected)), "\(m)x\(n)x\(k) row \(r)")
                }
                #expect(maxDiff(c, ref) < 1e-4)
            }
        }
    }

    /// act(x W^T + b) against Tensor.linear followed by the activation op, into a strided output.
    @Test(arguments: [FusedInference.Activation.identity, .relu, .gelu, .geluTanh])
    func linearWithActivationMatchesOps(activation: FusedInference.Activation) {
        var rng = SplitMix64(seed: 2)
        for (m, n, k) in [(3, 5, 4), (130, 70, 33), (520, 48, 64)] {
            let x = Tensor(random(m * k, &rng), shape: [m, k]), w = Tensor(random(n * k, &rng), shape: [n, k])
            let b = Tensor(random(n, &rng), shape: [n])
            var ref = Tensor.linear(x, weight: w, bias: b)
            switch activation {
            case .identity: break
            case .relu: ref = ref.relu()
            case .gelu: ref = ref.gelu()
            case .geluTanh: ref = ref.geluTanh()
            }
            // Output with a row stride wider than n (as into a fused q/k/v buffer); the gap stays untouched.
            let ldo = n + 3
            var out = [Float](repeating: 42, count: m * ldo)
            FusedInference.linear(x.data, ldx: k, m: m, k: k, weight: w.data, n: n, bias: b.data, activation: activation,
                                  out: &out, ldo: ldo)
            let r = ref.toArray()
            var worst: Float = 0
            for i in 0..<m {
                for j in 0..<n { worst = max(worst, abs(out[i * ldo + j] - r[i * n + j])) }
                for j in n..<ldo { #expect(out[i * ldo + j] == 42) }
            }
            #expect(worst < 1e-5, "\(activation) \(m)x\(n)x\(k): max diff \(worst)")
        }
    }

    /// LayerNorm(x W^T + b + residual) against the composed ops.
    @Test func linearResidualLayerNormMatchesOps() {
        var rng = SplitMix64(seed: 3)
        for (m, d, k) in [(2, 7, 5), (300, 48, 96), (64, 384, 40)] {
            let x = Tensor(random(m * k, &rng), shape: [m, k]), w = Tensor(random(d * k, &rng), shape: [d, k])
            let b = Tensor(random(d, &rng), shape: [d]), res = Tensor(random(m * d, &rng), shape: [m, d])
            let nw = Tensor(random(d, &rng).map { $0 + 1 }, shape: [d]), nb = Tensor(random(d, &rng), shape: [d])
            let ref = (Tensor.linear(x, weight: w, bias: b) + res).layerNorm(weight: nw, bias: nb, eps: 1e-12).toArray()
            var scratch = [Float](repeating: 0, count: m * d), out = scratch
            FusedInference.linearResidualLayerNorm(x.data, ldx: k, m: m, k: k, weight: w.data, d: d, bias: b.data,
                                                   residual: res.data, normWeight: nw.data, normBias: nb.data, eps: 1e-12,
                                                   scratch: &scratch, out: &out)
            #expect(maxDiff(out, ref) < 1e-4, "\(m)x\(d)x\(k)")
        }
    }

    /// Strided attention from a fused q/k/v buffer against permute copies + the reference
    /// attention with its additive mask: no padding, padding at the end, a hole in the middle,
    /// a single real token; one and two threads. With bf16 products, on q/k/v that are exactly bf16
    /// values (so only the probabilities' rounding remains): within 2^-8 of max |v| of the reference,
    /// and not equal to it (the bf16 path ran); an odd head size pads its last pair.
    @Test func attentionFromFusedQKVMatchesReference() {
        let pool = ThreadPool(threads: 2)
        var rng = SplitMix64(seed: 4)
        for (heads, hd, seq) in [(2, 4, 6), (3, 8, 37), (12, 32, 130), (2, 5, 9)] {
            let batch = 4, d = heads * hd
            var mask = [Float](repeating: 1, count: batch * seq)
            for j in (seq / 2)..<seq { mask[1 * seq + j] = 0 }               // padding at the end
            mask[2 * seq + 1] = 0; mask[2 * seq + seq - 1] = 0                 // a hole and one padded key
            for j in 1..<seq { mask[3 * seq + j] = 0 }                         // one real token
            let qkv = Tensor(random(batch * seq * 3 * d, &rng).map { bf16Rounded($0 * 4) }, shape: [batch * seq, 3 * d])
            let scale = 1 / Float(hd).squareRoot()
            for keyPadding in [mask, nil] {
                let ref = FusedInference.attentionReference(qkv: qkv, batch: batch, seq: seq, heads: heads, headDim: hd,
                                                            keyPadding: keyPadding, scale: scale).toArray()
                for threads in [1, 2] {
                    for products in [MatmulPrecision.float32, .bfloat16] {
                        pool.activeThreads = threads
                        var out = [Float](repeating: .nan, count: batch * seq * d)
                        FusedInference.attention(qkv: qkv.data, batch: batch, seq: seq, heads: heads, headDim: hd,
                                                 keyPadding: keyPadding, scale: scale, out: &out, products: products,
                                                 pool: pool)
                        let what = "heads \(heads) x \(hd), seq \(seq), mask \(keyPadding != nil), \(threads) thread(s), "
                            + "\(products): \(maxDiff(out, ref))"
                        if products == .float32 { #expect(maxDiff(out, ref) < 1e-5, "\(what)") } else {
                            #expect(maxDiff(out, ref) < 2 / 256 && maxDiff(out, ref) > 0, "\(what)")
                        }
                    }
                }
            }
        }
    }

    /// Packed attention (sequences end to end, each attending over its own rows) against the
    /// reference run on each sequence alone: lengths 1 to 300 (past the 256-query block), one and
    /// two threads, f32 and bf16 products (on bf16 q/k/v, within 2^-8 as above).
    @Test func packedAttentionMatchesEachSequenceAlone() {
        let pool = ThreadPool(threads: 2)
        var rng = SplitMix64(seed: 6)
        for (heads, hd, lengths) in [(2, 4, [6, 1, 3]), (12, 32, [33, 300, 1, 17])] {
            let d = heads * hd, segments = TokenSegments(lengths: lengths)
            let qkv = random(segments.total * 3 * d, &rng).map { bf16Rounded($0 * 4) }
            let scale = 1 / Float(hd).squareRoot()
            var ref: [Float] = []
            for (start, l) in zip(segments.starts, lengths) {
                let one = Tensor(Array(qkv[(start * 3 * d)..<((start + l) * 3 * d)]), shape: [l, 3 * d])
                ref += FusedInference.attentionReference(qkv: one, batch: 1, seq: l, heads: heads, headDim: hd,
                                                         keyPadding: nil, scale: scale).toArray()
            }
            for threads in [1, 2] {
                for products in [MatmulPrecision.float32, .bfloat16] {
                    pool.activeThreads = threads
                    var out = [Float](repeating: .nan, count: segments.total * d)
                    FusedInference.attention(qkv: qkv, segments: segments, heads: heads, headDim: hd, scale: scale,
                                             out: &out, products: products, pool: pool)
                    let bound: Float = products == .float32 ? 1e-5 : 2 / 256
                    #expect(maxDiff(out, ref) < bound,
                            "heads \(heads) x \(hd), lengths \(lengths), \(threads) thread(s), \(products)")
                }
            }
        }
    }

    func bf16Rounded(_ x: Float) -> Float { bfloat16BitsToFloat(floatToBFloat16Bits(x)) }

    /// A sequence with no real token gives zeros (as Tensor.attention), not NaN.
    @Test func fullyMaskedSequenceGivesZeros() {
        var rng = SplitMix64(seed: 5)
        let (batch, seq, heads, hd) = (2, 5, 2, 4), d = heads * hd
        let qkv = random(batch * seq * 3 * d, &rng)
        var mask = [Float](repeating: 1, count: batch * seq)
        for j in 0..<seq { mask[seq + j] = 0 }
        var out = [Float](repeating: .nan, count: batch * seq * d)
        FusedInference.attention(qkv: qkv, batch: batch, seq: seq, heads: heads, headDim: hd, keyPadding: mask,
                                 scale: 0.5, out: &out)
        #expect(out[(seq * d)...].allSatisfy { $0 == 0 })
        #expect(out[..<(seq * d)].allSatisfy { $0.isFinite })
    }
}
