import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneNN
import SideTuneTokenizers
import Testing

/// Tests that need no downloaded model: config parsing, the key map, loading errors, masking.
@Suite struct BertEncoderTests {
    static let tiny = BertConfig(hiddenSize: 8, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 16,
                                 vocabSize: 11, maxPositionEmbeddings: 6, typeVocabSize: 2)

    func tempDir() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("bert-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    /// Writes a checkpoint with HF names and random values for `config` (minus `drop`, with `reshape` overrides).
    func writeCheckpoint(_ config: BertConfig, to folder: URL, drop: Set<String> = [], extra: [String: [Int]] = [:],
                         reshape: [String: [Int]] = [:]) throws -> [String: [Float]] {
        let model = BertEncoder(config: config)
        let params = Dictionary(model.namedParameters(), uniquingKeysWith: { a, _ in a })
        var w = SafetensorsWriter()
        var rng = SplitMix64(seed: 3)
        var values: [String: [Float]] = [:]
        for (m, c) in BertEncoder.checkpointNames(layers: config.numHiddenLayers) where !drop.contains(c) {
            let shape = reshape[c] ?? params[m]!.shape
            let v = (0..<shape.reduce(1, *)).map { _ in rng.nextFloat() - 0.5 }
            values[m] = v
            try w.add(c, floats: v, shape: shape)
        }
        for (name, shape) in extra { try w.add(name, floats: [Float](repeating: 0, count: shape.reduce(1, *)), shape: shape) }
        try w.write(to: folder.appendingPathComponent("model.safetensors").path)
        let json = """
            {"hidden_size": \(config.hiddenSize), "num_hidden_layers": \(config.numHiddenLayers),
             "num_attention_heads": \(config.numAttentionHeads), "intermediate_size": \(config.intermediateSize),
             "hidden_act": "\(config.hiddenAct)", "layer_norm_eps": 1e-12, "vocab_size": \(config.vocabSize),
             "max_position_embeddings": \(config.maxPositionEmbeddings), "type_vocab_size": 2, "model_type": "bert", "position_embedding_type": "absolute"}
            """
        try json.write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        return values
    }

    @Test func keyMapCoversEveryParameterOnce() {
        let model = BertEncoder(config: Self.tiny)
        let names = model.namedParameters().map(\.0)
        let map = BertEncoder.checkpointNames(layers: 2)
        #expect(Set(map.map(\.module)) == Set(names))
        #expect(Set(map.map(\.checkpoint)).count == names.count)
        #expect(names.count == 5 + 2 * 16)
        #expect(map.contains { $0 == ("layers.1.attentionNorm.weight", "encoder.layer.1.attention.output.LayerNorm.weight") })
    }

    @Test func loadsAFolderAndIgnoresPooler() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let values = try writeCheckpoint(Self.tiny, to: dir, extra: ["pooler.dense.weight": [8, 8], "pooler.dense.bias": [8]])
        let model = try BertEncoder.load(folder: dir)
        #expect(model.config == Self.tiny)
        for (name, p) in model.namedParameters() { #expect(p.toArray() == values[name]!, "\(name) not loaded") }
    }

    @Test func missingAndMismatchedTensorsAreNamed() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try writeCheckpoint(Self.tiny, to: dir, drop: ["encoder.layer.1.output.dense.bias"],
                                reshape: ["encoder.layer.0.intermediate.dense.weight": [16, 7]])
        do {
            _ = try BertEncoder.load(folder: dir)
            Issue.record("load should fail")
        } catch {
            let text = "\(error)"
            #expect(text.contains("missing 1 tensor(s): encoder.layer.1.output.dense.bias"), "\(text)")
            #expect(text.contains("encoder.layer.0.intermediate.dense.weight") && text.contains("[16, 7]") && text.contains("[16, 8]"), "\(text)")
        }
    }

    @Test func unexpectedTensorsFailWhenStrict() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try writeCheckpoint(Self.tiny, to: dir, extra: ["encoder.layer.2.output.dense.bias": [8]])
        #expect(throws: BertError.self) { _ = try BertEncoder.load(folder: dir) }
        _ = try BertEncoder.load(folder: dir, strict: false)
    }

    @Test func badConfigIsNamed() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"hidden_size": 8, "num_hidden_layers": 1}"#.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        do { _ = try BertConfig.load(dir.appendingPathComponent("config.json")); Issue.record("should fail") } catch {
            #expect("\(error)".contains("missing key"), "\(error)")
        }
    }

    /// Padding must not change the real tokens' outputs; the grad path equals the no-grad path.
    @Test func paddingIsMaskedAndModesAgree() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try writeCheckpoint(Self.tiny, to: dir)
        let model = try BertEncoder.load(folder: dir)
        let short = model(ids: [1, 4, 5, 2], attentionMask: [1, 1, 1, 1], batch: 1, seq: 4)
        let padded = noGrad { model(ids: [1, 4, 5, 2, 0, 0, 1, 7, 2, 0, 0, 0], attentionMask: [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0], batch: 2, seq: 6) }
        #expect(short.hiddenStates.count == 3 && padded.last.shape == [2, 6, 8])
        for (a, b) in zip(short.hiddenStates, padded.hiddenStates) {
            let x = a.toArray(), y = Array(b.toArray()[0..<32])
            #expect(zip(x, y).allSatisfy { abs($0 - $1) < 1e-5 })
        }
        #expect(short.last.requiresGrad && !padded.last.requiresGrad)
        let pooled = noGrad { BertEncoder.meanPool(padded.last, attentionMask: [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0], normalize: true) }
        let p = pooled.toArray()
        let last: [Float] = short.last.toArray()
        var manual = [Float](repeating: 0, count: 8)
        for i in 0..<4 { for j in 0..<8 { manual[j] += last[i * 8 + j] / 4 } }
        let n: Float = manual.map { $0 * $0 }.reduce(0, +).squareRoot()
        for j in 0..<8 { #expect(abs(p[j] - manual[j] / n) < 1e-5) }
    }

    /// The fused no-grad path gives the layer-by-layer path's hidden states: random weights,
    /// padding at the end and in the middle, a prompt, each activation; a LoRA-wrapped layer
    /// makes the encoder fall back to the plain path.
    @Test func fusedNoGradPathMatchesLayerByLayer() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (config, act) in [(Self.tiny, "gelu"),
                              (BertConfig(hiddenSize: 48, numHiddenLayers: 2, numAttentionHeads: 3, intermediateSize: 80,
                                          hiddenAct: "gelu_new", vocabSize: 11, maxPositionEmbeddings: 40), "gelu_new"),
                              (BertConfig(hiddenSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, intermediateSize: 64,
                                          hiddenAct: "relu", vocabSize: 11, maxPositionEmbeddings: 40), "relu")] {
            _ = try writeCheckpoint(config, to: dir)
            let model = try BertEncoder.load(folder: dir).freeze()
            #expect(model.config.hiddenAct == act)
            let seq = min(config.maxPositionEmbeddings - 2, 30), batch = 3
            var rng = SplitMix64(seed: 9)
            let ids = (0..<(batch * seq)).map { _ in Int32(rng.next() % 11) }
            var mask = [Int32](repeating: 1, count: batch * seq)
            for j in (seq / 3)..<seq { mask[seq + j] = 0 }
            mask[2 * seq + 2] = 0
            let prompt = Tensor((0..<(2 * config.hiddenSize)).map { _ in rng.nextFloat() - 0.5 }, shape: [2, config.hiddenSize])
            // Projections stored in bf16 too (last): the fused path's products against the
            // layer-by-layer `BFloat16Linear`s (the same rounding), except that the fused path also
            // multiplies in attention with bf16 operands: within 1% of the taps' largest value.
            for (p, precision) in [(nil, MatmulPrecision.float32), (prompt, .float32), (nil, .bfloat16)] {
                if precision == .bfloat16 {
                    model.convertProjectionsToBFloat16()
                    #expect(model.storesBFloat16Projections && model.layers.allSatisfy(\.supportsFusedInference))
                }
                model.fusedInferenceEnabled = true
                let fused = Tensor.withMatmulPrecision(precision) {
                    noGrad { model(ids: ids, attentionMask: mask, batch: batch, seq: seq, prompt: p) }
                }
                model.fusedInferenceEnabled = false
                let plain = Tensor.withMatmulPrecision(precision) {
                    noGrad { model(ids: ids, attentionMask: mask, batch: batch, seq: seq, prompt: p) }
                }
                #expect(fused.hiddenStates.count == plain.hiddenStates.count)
                for (i, (a, b)) in zip(fused.hiddenStates, plain.hiddenStates).enumerated() {
                    #expect(a.shape == b.shape)
                    let diff = zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? 0
                    let bound = precision == .float32 ? 1e-5 : 0.01 * max(1, b.toArray().map(abs).max() ?? 0)
                    #expect(diff < bound,
                            "\(act) d=\(config.hiddenSize) prompt \(p != nil) \(precision) tap \(i): max diff \(diff)")
                }
            }
        }
        // LoRA on a query: not a plain Linear, so the fused path is not taken (the LoRA term counts).
        _ = try writeCheckpoint(Self.tiny, to: dir)
        let model = try BertEncoder.load(folder: dir).freeze()
        #expect(model.layers.allSatisfy { $0.supportsFusedInference })
        var rng = SplitMix64(seed: 1)
        let lora = LoRALinear(wrapping: model.layers[0].attention.query, rank: 2, alpha: 2, rng: &rng)
        lora.loraB.data.update(repeating: 0.5, count: lora.loraB.count)
        model.layers[0].attention.query = lora
        #expect(!model.layers[0].supportsFusedInference)
        let ids: [Int32] = [1, 4, 5, 2], mask: [Int32] = [1, 1, 1, 1]
        let withLoRA = noGrad { model(ids: ids, attentionMask: mask, batch: 1, seq: 4) }
        model.fusedInferenceEnabled = false
        let plain = noGrad { model(ids: ids, attentionMask: mask, batch: 1, seq: 4) }
        #expect(withLoRA.last.toArray() == plain.last.toArray())
    }

    /// The packed frozen forward gives each tap's real rows of the padded forward: fused kernels
    /// (lengths 1 to the full sequence, two activations), and the fallback for layers the fused
    /// kernels cannot run (a LoRA-wrapped query), which packs the padded forward's outputs.
    @Test func packedForwardMatchesPaddedRealRows() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func check(_ model: BertEncoder, lengths: [Int], seq: Int, _ label: String) {
            var rng = SplitMix64(seed: 5)
            let batch = lengths.count
            let ids = (0..<(batch * seq)).map { _ in Int32(rng.next() % 11) }
            let mask = (0..<(batch * seq)).map { Int32($0 % seq < lengths[$0 / seq] ? 1 : 0) }
            let input = BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: ids.count),
                                      batchSize: batch, seqLength: seq, lengths: lengths)
            let padded = noGrad { model(input) }
            let packed = model.packedHiddenStates(input)
            #expect(packed.segments == TokenSegments(lengths: lengths))
            #expect(packed.hiddenStates.count == padded.hiddenStates.count)
            for (i, (p, q)) in zip(packed.hiddenStates, padded.hiddenStates).enumerated() {
                #expect(p.shape == [1, lengths.reduce(0, +), model.config.hiddenSize])
                let diff = zip(p.toArray(), noGrad { q.packed(packed.segments) }.toArray()).map { abs($0 - $1) }.max() ?? 0
                #expect(diff < 1e-5, "\(label) tap \(i): max diff \(diff)")
            }
        }
        for config in [Self.tiny,
                       BertConfig(hiddenSize: 48, numHiddenLayers: 2, numAttentionHeads: 3, intermediateSize: 80,
                                  hiddenAct: "gelu_new", vocabSize: 11, maxPositionEmbeddings: 40)] {
            _ = try writeCheckpoint(config, to: dir)
            let model = try BertEncoder.load(folder: dir).freeze()
            #expect(model.layers.allSatisfy { $0.supportsFusedInference })
            let seq = min(config.maxPositionEmbeddings, 30)
            check(model, lengths: [seq, 1, seq / 2, min(7, seq), seq - 1], seq: seq, "d=\(config.hiddenSize)")
            check(model, lengths: [5], seq: 5, "d=\(config.hiddenSize) one row")
        }
        _ = try writeCheckpoint(Self.tiny, to: dir)
        let model = try BertEncoder.load(folder: dir).freeze()
        var rng = SplitMix64(seed: 1)
        let lora = LoRALinear(wrapping: model.layers[0].attention.query, rank: 2, alpha: 2, rng: &rng)
        lora.loraB.data.update(repeating: 0.5, count: lora.loraB.count)
        model.layers[0].attention.query = lora
        check(model, lengths: [4, 2, 6], seq: 6, "LoRA fallback")
    }
}
