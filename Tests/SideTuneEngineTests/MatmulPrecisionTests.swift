import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// Mixed-precision products (bf16 operands, f32 sums): the vdpbf16ps kernel and its packers
/// against a Double reference on the bf16-rounded operands, and linear layers recorded with
/// `MatmulPrecision.bfloat16`.
@Suite struct MatmulPrecisionTests {
    func rounded(_ x: Float) -> Double { Double(bfloat16BitsToFloat(floatToBFloat16Bits(x))) }

    /// C = op(A) op(B) in Double on bf16-rounded operands, and the sum of |terms| per element
    /// (the scale of f32 summation error).
    func reference(_ s: GEMMShape, _ a: [Float], lda: Int, _ b: [Float], ldb: Int) -> (c: [Double], scale: [Double]) {
        var c = [Double](repeating: 0, count: s.m * s.n), scale = c
        for i in 0..<s.m {
            for j in 0..<s.n {
                for p in 0..<s.k {
                    let x = rounded(s.transA ? a[p * lda + i] : a[i * lda + p])
                    let y = rounded(s.transB ? b[j * ldb + p] : b[p * ldb + j])
                    c[i * s.n + j] += x * y
                    scale[i * s.n + j] += abs(x * y)
                }
            }
        }
        return (c, scale)
    }

    /// Every transpose mode; odd k (a zero-padded last pair); m and n off the 8-row and 16-lane
    /// tiles; f32 and bf16 operands (A in place when untransposed); accumulate on and off; one and
    /// two threads; the vdpbf16ps kernel and the plain loop.
    @Test func productsMatchTheReference() {
        let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]
        var checked = 0
        for (m, n, k) in [(37, 53, 48), (8, 16, 7), (130, 48, 384), (48, 200, 301), (1, 5, 2)] {
            for (transA, transB) in [(false, true), (false, false), (true, false), (true, true)] {
                for aBF16 in [false, true] {
                    let s = GEMMShape(m: m, n: n, k: k, transA: transA, transB: transB)
                    // A bf16 A stored untransposed with even k and stride is read in place (cached taps).
                    let lda = (transA ? m : k) + (aBF16 && !transA && k % 2 == 0 ? 0 : 3), ldb = (transB ? k : n) + 1
                    let aRows = transA ? k : m, bRows = transB ? n : k
                    let a = randomTensor([aRows * lda], seed: UInt64(m + k)).toArray()
                    let b = randomTensor([bRows * ldb], seed: UInt64(n + 7)).toArray()
                    let bits = a.map(floatToBFloat16Bits)
                    let (want, scale) = reference(s, a, lda: lda, b, ldb: ldb)
                    for accumulate in [false, true] {
                        for pool in pools {
                            for plain in [false, true] {
                                let start = (0..<(m * n)).map { Float($0 % 7) - 3 }
                                var c = start
                                b.withUnsafeBufferPointer { pb in
                                    a.withUnsafeBufferPointer { pa in
                                        bits.withUnsafeBufferPointer { pbits in
                                            let aop: GEMMOperand = aBF16 ? .bf16(pbits.baseAddress!) : .f32(pa.baseAddress!)
                                            gemmBFloat16Products(s, aop, lda: lda, .f32(pb.baseAddress!), ldb: ldb, &c, ldc: n,
                                                                 accumulate: accumulate, pool: pool, plainKernel: plain)
                                        }
                                    }
                                }
                                var worst = 0.0
                                for e in 0..<(m * n) {
                                    let expected = want[e] + (accumulate ? Double(start[e]) : 0)
                                    worst = max(worst, abs(Double(c[e]) - expected) / (scale[e] + 1e-30))
                                }
                                #expect(worst < 1e-5, "\(m)x\(n)x\(k) tA \(transA) tB \(transB) bf16 A \(aBF16) acc \(accumulate) threads \(pool.activeThreads) plain \(plain): \(worst)")
                                checked += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(checked == 5 * 4 * 2 * 2 * 2 * 2)
    }

    /// A frozen weight packed once (`PackedBFloat16Weight`) and `gemmBFloat16` with its row
    /// epilogue: the same bits as `gemmBFloat16Products` on the f32 weight (same rounding, same
    /// kernel, same order of sums), the epilogue called once per row, on one and two threads, with
    /// the vdpbf16ps kernel and the plain loop (within the reference's tolerance).
    @Test func packedWeightMatchesPerCallPacking() {
        for (m, n, k) in [(37, 53, 48), (300, 1152, 384), (64, 384, 1536), (9, 16, 7), (1, 3, 1)] {
            let ldx = k + 2
            let x = randomTensor([m * ldx], seed: UInt64(m + n)).toArray(), w = randomTensor([n, k], seed: UInt64(k))
            let packed = PackedBFloat16Weight(w)
            #expect(packed.byteCount == 4 * ((k + 1) / 2) * n)
            var want = [Float](repeating: 0, count: m * n)
            x.withUnsafeBufferPointer { px in
                gemmBFloat16Products(GEMMShape(m: m, n: n, k: k, transB: true), .f32(px.baseAddress!), lda: ldx, .f32(w.data),
                                     ldb: k, &want, ldc: n)
            }
            for pool in [ThreadPool(threads: 1), ThreadPool(threads: 2)] {
                for plain in [false, true] {
                    var c = [Float](repeating: .nan, count: m * n)
                    var seen = [Int](repeating: 0, count: m)
                    let lock = NSLock()
                    x.withUnsafeBufferPointer { px in
                        c.withUnsafeMutableBufferPointer { pc in
                            gemmBFloat16(m: m, px.baseAddress!, ldx: ldx, packed, pc.baseAddress!, ldc: n, pool: pool,
                                         plainKernel: plain) { rows in lock.withLock { for r in rows { seen[r] += 1 } } }
                        }
                    }
                    #expect(seen.allSatisfy { $0 == 1 }, "epilogue per row")
                    let worst = zip(c, want).map { abs($0 - $1) / (abs($1) + 1) }.max() ?? 0
                    // The plain loop sums in another order: f32 rounding, up to k = 1536 terms.
                    if plain { #expect(worst < 1e-4, "\(m)x\(n)x\(k) plain: \(worst)") } else {
                        #expect(c == want, "\(m)x\(n)x\(k) threads \(pool.activeThreads): \(worst)")
                    }
                }
            }
        }
    }

    /// The panel layout's bookkeeping: `float32()` gives back exactly the rounded weight, and q, k
    /// and v stacked give the same weight as their rows concatenated and packed once, with widths
    /// off the 48-column panels and odd k.
    @Test func packedWeightRoundTripsAndStacks() {
        for (widths, k) in [([53, 48, 7], 33), ([384, 384, 384], 384), ([1, 100], 1)] {
            let parts = widths.enumerated().map { randomTensor([$0.element, k], seed: UInt64(10 + $0.offset)) }
            let packed = parts.map { PackedBFloat16Weight($0) }
            for (part, p) in zip(parts, packed) {
                #expect(p.float32().toArray() == part.toArray().map { Float(rounded($0)) }, "\(part.shape)")
            }
            let whole = Tensor(parts.flatMap { $0.toArray() }, shape: [widths.reduce(0, +), k])
            let stacked = PackedBFloat16Weight(stacking: packed)
            #expect(stacked.outFeatures == whole.shape[0] && stacked.inFeatures == k)
            #expect(stacked.float32().toArray() == PackedBFloat16Weight(whole).float32().toArray(), "\(widths) k \(k)")
        }
    }

    /// The cached LST step's products at 1,056 tokens on 2 and 4 threads, where packing runs in
    /// parallel items and a weight gradient splits C by columns: the same values as on one thread.
    @Test func largeProductsSplitOverThreads() {
        let shapes = [GEMMShape(m: 48, n: 384, k: 1056, transA: true), GEMMShape(m: 144, n: 48, k: 1056, transA: true),
                      GEMMShape(m: 1056, n: 48, k: 384, transB: true), GEMMShape(m: 1056, n: 48, k: 192)]
        for s in shapes {
            let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
            let a = randomTensor([s.m * s.k], seed: 21).toArray(), b = randomTensor([s.k * s.n], seed: 22).toArray()
            var results: [[Float]] = []
            for threads in [1, 2, 4] {
                var c = [Float](repeating: 0, count: s.m * s.n)
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        gemmBFloat16Products(s, .f32(pa.baseAddress!), lda: lda, .f32(pb.baseAddress!), ldb: ldb, &c, ldc: s.n,
                                             pool: ThreadPool(threads: threads))
                    }
                }
                results.append(c)
            }
            #expect(results[1] == results[0] && results[2] == results[0], "\(s)")
            let (want, scale) = reference(s, a, lda: lda, b, ldb: ldb)
            let worst = (0..<(s.m * s.n)).map { abs(Double(results[0][$0]) - want[$0]) / scale[$0] }.max()!
            #expect(worst < 1e-5, "\(s): \(worst)")
        }
    }

    /// A bias-less product with a 2-D weight (LAST's fused q/k/v, a Linear without bias) records
    /// the precision too: forward, dx and dW move by bf16 rounding only.
    @Test func matmulRecordsItsPrecision() {
        func results(_ precision: MatmulPrecision) -> [[Float]] {
            let x = randomTensor([3, 40, 48], seed: 31), w = randomTensor([12, 48], seed: 32, scale: 0.2)
            let r = randomTensor([3, 40, 12], seed: 33)
            for p in [x, w] { p.requiresGrad = true; p.zeroGrad() }
            let y = Tensor.withMatmulPrecision(precision) { x.matmul(w, transposeOther: true) }
            (y * r).sum().backward()
            return [y.toArray(), x.grad!.toArray(), w.grad!.toArray()]
        }
        let half = results(.bfloat16), full = results(.float32)
        for (name, i) in [("output", 0), ("dx", 1), ("dW", 2)] {
            let e = zip(half[i], full[i]).map { abs($0 - $1) }.max()! / full[i].map(abs).max()!
            #expect(e > 1e-5 && e < 1e-2, "\(name): \(e)")
        }
    }

    /// A bf16 B operand (cached taps read by a weight gradient) packs the same as its f32 values.
    @Test func bf16RowPairsMatchFloat32() {
        let s = GEMMShape(m: 48, n: 96, k: 257, transA: true)
        let g = randomTensor([257 * 48], seed: 5).toArray(), x = randomTensor([257 * 96], seed: 6).toArray()
        let xb = x.map(floatToBFloat16Bits), xr = xb.map(bfloat16BitsToFloat)
        var fromBits = [Float](repeating: 0, count: 48 * 96), fromFloats = fromBits
        g.withUnsafeBufferPointer { pg in
            xb.withUnsafeBufferPointer { gemmBFloat16Products(s, .f32(pg.baseAddress!), lda: 48, .bf16($0.baseAddress!), ldb: 96, &fromBits, ldc: 96) }
            xr.withUnsafeBufferPointer { gemmBFloat16Products(s, .f32(pg.baseAddress!), lda: 48, .f32($0.baseAddress!), ldb: 96, &fromFloats, ldc: 96) }
        }
        #expect(fromBits == fromFloats)
    }

    /// Output, dx, dW and db of a linear layer (plain and with a residual) recorded in `precision`.
    func linearResults(_ precision: MatmulPrecision, residual: Bool) -> [[Float]] {
        let x = randomTensor([70, 48], seed: 11), w = randomTensor([144, 48], seed: 12, scale: 0.2)
        let bias = randomTensor([144], seed: 13), r = randomTensor([70, 144], seed: 14), h = randomTensor([70, 144], seed: 15)
        for p in [x, w, bias] { p.requiresGrad = true; p.zeroGrad() }
        let y = Tensor.withMatmulPrecision(precision) {
            residual ? Tensor.linear(x, weight: w, bias: bias, residuals: [h]) : Tensor.linear(x, weight: w, bias: bias)
        }
        // Backward runs outside the scope: it must use the precision the forward was recorded in.
        (y * r).sum().backward()
        return [y.toArray(), x.grad!.toArray(), w.grad!.toArray(), bias.grad!.toArray()]
    }

    /// In bf16 the layer's results differ from f32 by bf16 rounding (about 2^-9 relative per
    /// operand, far above f32's), and match products of the bf16-rounded operands; db is exact.
    @Test func linearRecordsItsPrecision() {
        func relativeError(_ a: [Float], _ b: [Float]) -> Float {
            zip(a, b).map { abs($0 - $1) }.max()! / max(b.map(abs).max()!, 1e-30)
        }
        for residual in [false, true] {
            let half = linearResults(.bfloat16, residual: residual), full = linearResults(.float32, residual: residual)
            for (name, i) in [("output", 0), ("dx", 1), ("dW", 2)] {
                let e = relativeError(half[i], full[i])
                #expect(e > 1e-5 && e < 1e-2, "residual \(residual) \(name): \(e)")
            }
            #expect(half[3] == full[3], "db is a sum of the f32 output gradient")
        }
        // The forward against the reference on rounded operands.
        let x = randomTensor([70, 48], seed: 11).toArray(), w = randomTensor([144, 48], seed: 12, scale: 0.2).toArray()
        let bias = randomTensor([144], seed: 13).toArray()
        let (want, scale) = reference(GEMMShape(m: 70, n: 144, k: 48, transB: true), x, lda: 48, w, ldb: 48)
        let got = linearResults(.bfloat16, residual: false)[0]
        for e in 0..<(70 * 144) {
            #expect(abs(Double(got[e]) - want[e] - Double(bias[e % 144])) <= 1e-5 * (scale[e] + abs(Double(bias[e % 144]))))
        }
    }
}
