import Testing
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN
import SideTuneTestSupport

/// Two rows of lengths `a` and `b` (b < a), right-padded with id 0.
func paddedPair(_ a: [Int32], _ b: [Int32]) -> (ids: [Int32], keyPadding: [Float], lengths: [Int]) {
    let t = max(a.count, b.count)
    let pad = { (r: [Int32]) in r + [Int32](repeating: 0, count: t - r.count) }
    let mask = { (r: [Int32]) in [Float](repeating: 1, count: r.count) + [Float](repeating: 0, count: t - r.count) }
    return (pad(a) + pad(b), mask(a) + mask(b), [a.count, b.count])
}

@Suite("Llama training forward")
struct LlamaTrainingTests {
    @Test("right-padded batch: real positions equal each row run alone; last-token pooling picks them")
    func padding() {
        let m = tinyLlama()
        let a: [Int32] = [5, 9, 13, 2, 40, 7], b: [Int32] = [11, 3, 8]
        let (ids, kp, lengths) = paddedPair(a, b)
        let out = noGrad { m.hiddenStates(ids, batch: 2, taps: true, keyPadding: kp) }
        let alone = noGrad { m.hiddenStates(b, taps: true) }
        let d = m.config.dim
        // Row 1's first 3 positions of every tap and of the final norm.
        for (i, tap) in (out.taps + [out.hidden]).enumerated() {
            let row1 = Array(tap.toArray()[(6 * d)..<(9 * d)])
            let ref = (alone.taps + [alone.hidden])[i].toArray()
            #expect(maxDiff(row1, ref).diff < 1e-5, "tap \(i)")
        }
        let pooled = noGrad { Llama.lastTokenPool(out.hidden, lengths: lengths) }
        #expect(pooled.shape == [2, d])
        #expect(Array(pooled.toArray()[d...]) == Array(out.hidden.toArray()[(8 * d)..<(9 * d)]))
        #expect(Array(pooled.toArray()[..<d]) == Array(out.hidden.toArray()[(5 * d)..<(6 * d)]))
        // The logits path agrees with hiddenStates + lmLogits.
        let logits = noGrad { m.forward(ids, batch: 2, keyPadding: kp).logits }
        #expect(maxDiff(logits.toArray(), noGrad { m.lmLogits(out.hidden) }.toArray()).diff == 0)
    }

    @Test("autograd through F32 blocks: weights of both blocks, padded batch, last-token loss")
    func gradientsF32() {
        let m = tinyLlama(layers: 2)
        let (ids, kp, lengths) = paddedPair([5, 9, 13, 2], [11, 3])
        let params = [m.layers[0].query, m.layers[1].value, m.layers[1].down].map { ($0 as! Linear).weight } + [m.norm.weight]
        gradCheck("llama blocks", params) { _ in
            Llama.lastTokenPool(m.hiddenStates(ids, batch: 2, keyPadding: kp).hidden, lengths: lengths)
        }
        for p in params { p.requiresGrad = false }
    }

    @Test("autograd through NF4 blocks reaches the embedding; the NF4 weights hold no parameters")
    func gradientsNF4() {
        let m = tinyLlama(dim: 64, ffnDim: 128, layers: 2, nf4: true)
        #expect(m.layers[0].query is NF4Linear)
        #expect(!m.namedParameters().contains { $0.0.contains("query") })
        let (ids, kp, lengths) = paddedPair([5, 9, 13, 2], [11, 3])
        // Only the rows of the 6 ids used matter; check a slice of the table through a frozen rest.
        let table = m.embedding.weight
        gradCheck("llama nf4 blocks", [table], eps: 1e-2, atol: 3e-3, rtol: 3e-2) { _ in
            Llama.lastTokenPool(m.hiddenStates(ids, batch: 2, keyPadding: kp).hidden, lengths: lengths)
        }
        table.requiresGrad = false
        // Ids never used get no gradient.
        #expect(table.grad.map { g in (0..<64).allSatisfy { g.data[20 * 64 + $0] == 0 } } ?? false)
    }
}
