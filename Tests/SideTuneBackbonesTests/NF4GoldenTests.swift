import Foundation
import Testing
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneTokenizers
import SideTuneTestSupport

let nf4GoldensURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Goldens/nf4_goldens.safetensors")

@Suite("NF4 against the bitsandbytes re-implementation")
struct NF4GoldenTests {
    /// scripts/goldens/nf4_goldens.py quantised SmolLM2's blk.0.attn_k.weight with a numpy copy of
    /// bitsandbytes' algorithm; SideTune must store the same bytes and de-quantise to the same values.
    @Test("same codes, scales and de-quantised values as the Python reference")
    func golden() throws {
        let g = try SafetensorsFile(path: nf4GoldensURL.path)
        #expect(g.metadata["format"] == "sidetune-nf4-goldens")
        #expect(try g.floats("nf4") == NF4.levels)
        #expect(try g.floats("dynamic") == NF4.dynamicMap, "dynamic map differs from create_dynamic_map")
        let input = try g.floats("input")
        let w = NF4Weight(quantizing: Tensor(input, shape: [192, 576]))
        let codes = try g.floats("codes").map { UInt8($0) }
        let diffCodes = zip(w.packedCodes, codes).filter { $0 != $1 }.count
        #expect(diffCodes == 0, "\(diffCodes) of \(codes.count) code bytes differ")
        #expect(w.scaleIndices == (try g.floats("qabsmax").map { UInt8($0) }))
        #expect(w.secondLevelScales == (try g.floats("absmax2")))
        let offset = try g.floats("offset")[0]
        #expect(abs(w.offset - offset) <= offset.ulp, "offset \(w.offset) vs \(offset)")
        let deq = w.dequantized().toArray(), ref = try g.floats("dequant")
        let maxd = zip(deq, ref).map { abs($0 - $1) }.max()!
        #expect(maxd <= 1e-6, "de-quantised values differ by up to \(maxd)")
        var err = 0.0, norm = 0.0
        for (a, b) in zip(deq, input) { err += Double((a - b) * (a - b)); norm += Double(b * b) }
        testLog(String(format: "NF4 golden: codes identical, max dequant diff %.3g, round-trip relative RMS error %.4f, %.4f bytes/param",
                   maxd, (err / norm).squareRoot(), w.bytesPerParameter))
    }

    @Test("SmolLM2 with NF4 blocks: same greedy answer, ledger weights", .enabled(if: smolLM2GGUF != nil, "set SIDETUNE_SMOLLM2_GGUF"))
    func smolLM2NF4() throws {
        let file = try GGUFFile(path: smolLM2GGUF!)
        let ledger = MemoryLedger()
        let model = try MemoryLedger.withLedger(ledger) { try Llama.load(gguf: file, weights: .nf4) }
        let tok = try ByteLevelBPE(gguf: file)
        let ids = tok.encode(ChatTemplate.smolLM2.render([.user("What is the capital of France?")]))
        let t0 = Date()
        let out = model.generate(prompt: ids, parameters: GenerateParameters(maxTokens: 7))
        let secs = Date().timeIntervalSince(t0)
        let text = tok.decode(out)
        testLog(String(format: "NF4 SmolLM2: %@ (%.1f tok/s incl. prefill); weights in ledger %.1f MiB", String(reflecting: text),
                   Double(out.count) / secs, Double(ledger.current(.weights)) / 1048576))
        #expect(text.hasPrefix("The capital of France is Paris"))
        // Block projections: 30 x (4 x 576^2 / ... ) ~ 105M params at 0.516 B; embedding 28M F32 (113 MB).
        #expect(ledger.current(.weights) < 190 << 20)
    }
}
