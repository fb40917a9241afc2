import Foundation
import SideTuneBackbones
import SideTuneFormats
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTokenizers

/// A tiny random BERT (width 16, 2 layers, 2 heads) so method tests run in milliseconds; `width`
/// 64 (FFN 128) gives rows NF4 can store.
public func tinyBackbone(seed: UInt64 = 1, width: Int = 16) -> BertEncoder {
    let c = BertConfig(hiddenSize: width, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 2 * width, vocabSize: 40,
                       maxPositionEmbeddings: 16)
    let enc = BertEncoder(config: c)
    var rng = SplitMix64(seed: seed)
    for (name, p) in enc.namedParameters() {
        if name.hasSuffix("layerNorm.weight") || name.hasSuffix("Norm.weight") {
            p.data.initialize(repeating: 1, count: p.count)
        } else {
            for i in 0..<p.count { p.data[i] = rng.nextNormal() * 0.2 }
        }
    }
    return enc
}

/// A batch of 4 sequences of length 6 with padding in two of them.
public func tinyBatch(seed: UInt64 = 2) -> BatchEncoding {
    var rng = SplitMix64(seed: seed)
    let lengths = [6, 4, 6, 3]
    var ids: [Int32] = [], mask: [Int32] = []
    for l in lengths {
        for j in 0..<6 {
            ids.append(j < l ? Int32(1 + rng.nextInt(below: 39)) : 0)
            mask.append(j < l ? 1 : 0)
        }
    }
    return BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: 24), batchSize: 4, seqLength: 6,
                         lengths: lengths)
}

/// A tiny random Llama for tests that need no file. `nf4` stores the block projections in NF4
/// (widths must then be multiples of 64, e.g. dim 64, ffnDim 128).
public func tinyLlama(seed: UInt64 = 1, dim: Int = 32, ffnDim: Int = 48, layers: Int = 2, nf4: Bool = false) -> Llama {
    let c = LlamaConfig(vocabSize: 50, dim: dim, ffnDim: ffnDim, layers: layers, heads: 4, kvHeads: 2, ropeTheta: 10000, rmsEps: 1e-5)
    var rng = SplitMix64(seed: seed)
    func lin(_ o: Int, _ i: Int) -> any LinearLayer {
        let l = Linear(i, o, bias: false, rng: &rng).freeze()
        return nf4 ? NF4Linear(quantizing: l) : l
    }
    func norm() -> RMSNorm {
        let n = RMSNorm(c.dim, eps: c.rmsEps)
        for j in 0..<c.dim { n.weight.data[j] = 1 + 0.1 * rng.nextNormal() }
        return n
    }
    let kv = c.kvHeads * c.headDim
    let blocks = (0..<c.layers).map { _ in
        LlamaBlock(config: c, attentionNorm: norm(), query: lin(c.dim, c.dim), key: lin(kv, c.dim), value: lin(kv, c.dim),
                   output: lin(c.dim, c.dim), ffnNorm: norm(), gate: lin(c.ffnDim, c.dim), up: lin(c.ffnDim, c.dim),
                   down: lin(c.dim, c.ffnDim))
    }
    let emb = Embedding(c.vocabSize, c.dim, rng: &rng)
    return Llama(config: c, embedding: emb, layers: blocks, norm: norm(), lmHead: nil).freeze()
}

/// `method` built on `backbone` through the method registry, as the concrete classifier every
/// method but HST builds (tests reach its packing switches and parts).
public func makeClassifier<B: Backbone>(_ backbone: B, _ method: MethodKind, classes: Int = 3, options: MethodOptions = MethodOptions(),
                                        seed: UInt64 = 1,
                                        trainingExamples: ((Int) -> [(input: B.Input, label: Int)])? = nil) throws -> Classifier<B> {
    try MethodRegistry.classifier(method, on: backbone, classes: classes, options: options, seed: seed, trainingExamples: trainingExamples)
}

/// Writes `encoder` as a Hugging Face-style BERT folder (config.json, model.safetensors, vocab.txt
/// of `vocab`) for tests of the CLI's loading paths; `config` entries replace config.json's fields
/// (bad values included: the file is written as given).
public func writeBertFolder(_ encoder: BertEncoder, vocab: [String], to folder: URL, config edits: [String: Any] = [:],
                            weights: (String, inout [Float]) -> Void = { _, _ in }) throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let params = Dictionary(encoder.namedParameters(), uniquingKeysWith: { a, _ in a })
    var writer = SafetensorsWriter()
    for (module, checkpoint) in BertEncoder.checkpointNames(layers: encoder.config.numHiddenLayers) {
        var values = params[module]!.toArray()
        weights(checkpoint, &values)
        try writer.add(checkpoint, floats: values, shape: params[module]!.shape)
    }
    try writer.write(to: folder.appendingPathComponent("model.safetensors").path)
    let c = encoder.config
    var json: [String: Any] = [
        "hidden_size": c.hiddenSize, "num_hidden_layers": c.numHiddenLayers, "num_attention_heads": c.numAttentionHeads,
        "intermediate_size": c.intermediateSize, "hidden_act": c.hiddenAct, "layer_norm_eps": Double(c.layerNormEps),
        "vocab_size": c.vocabSize, "max_position_embeddings": c.maxPositionEmbeddings, "type_vocab_size": c.typeVocabSize,
        "model_type": "bert",
    ]
    for (k, v) in edits { json[k] = v }
    try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: folder.appendingPathComponent("config.json"))
    try Data((vocab.joined(separator: "\n") + "\n").utf8).write(to: folder.appendingPathComponent("vocab.txt"))
}
