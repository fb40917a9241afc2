import Foundation
import SideTuneEngine
import SideTuneFormats
import SideTuneNN

/// Hugging Face model folders (config.json + model.safetensors) of the architectures SideTune
/// implements, told apart by config.json's `model_type`.
public enum HuggingFaceFolder {
    /// model_type -> the backbone family that runs it.
    public static let supported: [(modelType: String, family: BackboneFamily)] = [
        ("bert", .bert), ("vit", .vit), ("dinov2", .vit), ("llama", .llama), ("mistral", .llama), ("qwen2", .llama),
    ]

    /// The folder's `model_type` and the family that runs it; other architectures are refused by
    /// name with the supported ones listed.
    public static func family(of folder: URL) throws -> (modelType: String, family: BackboneFamily) {
        let config = try HuggingFaceConfig(folder.appendingPathComponent("config.json"))
        let type = try config.string("model_type", default: "bert")
        guard let entry = supported.first(where: { $0.modelType == type }) else {
            throw BertError("\(config.file): model_type '\(type.prefix(60))' is not an architecture SideTune implements; supported: "
                            + supported.map(\.modelType).joined(separator: ", "))
        }
        return (type, entry.family)
    }

    /// The weights file: one `model.safetensors` (sharded checkpoints are refused, naming the index).
    static func weights(_ folder: URL) throws -> SafetensorsFile {
        let url = folder.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: url.path) else {
            let sharded = FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors.index.json").path)
            throw BertError("\(folder.path): no model.safetensors" + (sharded ? " (a checkpoint sharded over several files: merge it into one model.safetensors first)" : ""))
        }
        do { return try SafetensorsFile(path: url.path) } catch { throw BertError("\(error)") }
    }
}

/// config.json read field by field: every size checked against a range before anything is
/// allocated from it, errors naming the file, the field, the value and the range.
struct HuggingFaceConfig {
    let file: String
    let fields: [String: Any]

    init(_ url: URL) throws {
        file = url.path
        guard let data = FileManager.default.contents(atPath: url.path) else { throw BertError("\(url.path): cannot read config.json") }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw BertError("\(url.path): not a JSON object")
        }
        fields = object
    }

    func has(_ key: String) -> Bool { fields[key] != nil && !(fields[key] is NSNull) }

    func int(_ key: String, _ range: ClosedRange<Int>, default value: Int? = nil) throws -> Int {
        guard has(key) else {
            guard let value else { throw BertError("\(file): missing key '\(key)'") }
            return value
        }
        guard let n = fields[key] as? NSNumber, !(fields[key] is Bool), let v = Int(exactly: n.doubleValue) else {
            throw BertError("\(file): \(key) is \(String(describing: fields[key]!).prefix(40)), expected an integer")
        }
        guard range.contains(v) else { throw BertError("\(file): \(key) is \(v), expected \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    func float(_ key: String, default value: Float, positive: Bool = true) throws -> Float {
        guard has(key) else { return value }
        guard let n = fields[key] as? NSNumber, n.doubleValue.isFinite, !positive || n.doubleValue > 0 else {
            throw BertError("\(file): \(key) is \(String(describing: fields[key]!).prefix(40)), expected a \(positive ? "positive " : "")number")
        }
        return n.floatValue
    }

    func string(_ key: String, default value: String) throws -> String {
        guard has(key) else { return value }
        guard let s = fields[key] as? String else { throw BertError("\(file): \(key) is not a string") }
        return s
    }

    func bool(_ key: String, default value: Bool) -> Bool { (fields[key] as? Bool) ?? value }
}

/// Checks a weights file against the expected tensor names and shapes before anything is
/// allocated, then hands out tensors in F32 (refusing NaN or infinity).
struct ExpectedTensors {
    let file: SafetensorsFile
    var expected: [(name: String, shape: [Int])] = []

    mutating func expect(_ name: String, _ shape: [Int]) { expected.append((name, shape)) }

    /// Every expected tensor present with its shape (errors list up to 8 of each kind); `ignored`
    /// names the file may carry unused.
    func verify(ignoring ignored: (String) -> Bool) throws {
        var missing: [String] = [], wrong: [String] = []
        for (name, shape) in expected {
            guard file.contains(name) else { missing.append(name); continue }
            let info = try file.info(name)
            if info.shape != shape { wrong.append("\(name): shape \(info.shape), config expects \(shape)") }
        }
        let used = Set(expected.map(\.name))
        let unknown = file.names.filter { !used.contains($0) && !ignored($0) }
        guard missing.isEmpty && wrong.isEmpty && unknown.isEmpty else {
            var lines: [String] = []
            if !missing.isEmpty { lines.append("missing \(missing.count) tensor(s): \(missing.prefix(8).joined(separator: ", "))") }
            lines += wrong.prefix(8)
            if !unknown.isEmpty { lines.append("\(unknown.count) unexpected tensor(s): \(unknown.prefix(8).joined(separator: ", "))") }
            throw BertError("\(file.path): the weights do not match config.json:\n  " + lines.joined(separator: "\n  "))
        }
    }

    func tensor(_ name: String, category: MemoryCategory = .weights) throws -> Tensor {
        let values = try file.floats(name)
        guard values.allSatisfy(\.isFinite) else { throw BertError("\(file.path): tensor \(name) holds NaN or infinite values") }
        let t = MemoryLedger.withCategory(category) { Tensor(values, shape: try! file.info(name).shape) }
        t.requiresGrad = false
        return t
    }
}

extension DINOv2ViT {
    /// A Hugging Face ViT (`model_type` "vit": pre-LN blocks without LayerScale) or DINOv2
    /// ("dinov2": with LayerScale) folder. Patch size, width, depth, heads, MLP width and the
    /// position grid (image_size / patch_size) come from config.json; names may carry the
    /// `vit.` / `dinov2.` prefix of *ForImageClassification checkpoints, whose heads are ignored.
    public static func load(huggingFace folder: URL) throws -> DINOv2ViT {
        let c = try HuggingFaceConfig(folder.appendingPathComponent("config.json"))
        let type = try c.string("model_type", default: "vit")
        guard type == "vit" || type == "dinov2" else { throw BertError("\(c.file): model_type '\(type)' is not a ViT (vit, dinov2)") }
        guard try c.string("hidden_act", default: "gelu") == "gelu" else {
            throw BertError("\(c.file): hidden_act '\(try c.string("hidden_act", default: ""))' is not supported (gelu)")
        }
        if c.bool("use_swiglu_ffn", default: false) { throw BertError("\(c.file): use_swiglu_ffn (DINOv2 giant) is not supported") }
        var config = ViTConfig()
        config.hiddenSize = try c.int("hidden_size", 1...65536)
        config.layers = try c.int("num_hidden_layers", 1...1024)
        config.heads = try c.int("num_attention_heads", 1...4096)
        guard config.hiddenSize % config.heads == 0 else {
            throw BertError("\(c.file): hidden_size \(config.hiddenSize) is not a multiple of num_attention_heads \(config.heads)")
        }
        config.mlpSize = type == "dinov2" ? config.hiddenSize * (try c.int("mlp_ratio", 1...64, default: 4))
                                          : try c.int("intermediate_size", 1...1 << 20)
        config.patchSize = try c.int("patch_size", 1...1024)
        config.channels = try c.int("num_channels", 1...16, default: 3)
        let imageSize = try c.int("image_size", 1...1 << 16, default: 224)
        guard imageSize % config.patchSize == 0 else { throw BertError("\(c.file): image_size \(imageSize) is not a multiple of patch_size \(config.patchSize)") }
        config.positionGrid = imageSize / config.patchSize
        config.layerNormEps = try c.float("layer_norm_eps", default: type == "dinov2" ? 1e-6 : 1e-12)
        guard config.layerNormEps < 1 else { throw BertError("\(c.file): layer_norm_eps \(config.layerNormEps) must be below 1") }
        let qkvBias = c.bool("qkv_bias", default: true)

        let file = try HuggingFaceFolder.weights(folder)
        let prefix = file.contains("embeddings.cls_token") ? "" : (file.names.first { $0.hasSuffix("embeddings.cls_token") }?.dropLast(20)).map(String.init) ?? ""
        let (d, m, g, p, ch) = (config.hiddenSize, config.mlpSize, config.positionGrid, config.patchSize, config.channels)
        var want = ExpectedTensors(file: file)
        want.expect(prefix + "embeddings.cls_token", [1, 1, d])
        want.expect(prefix + "embeddings.position_embeddings", [1, 1 + g * g, d])
        want.expect(prefix + "embeddings.patch_embeddings.projection.weight", [d, ch, p, p])
        want.expect(prefix + "embeddings.patch_embeddings.projection.bias", [d])
        want.expect(prefix + "layernorm.weight", [d])
        want.expect(prefix + "layernorm.bias", [d])
        // (ours, theirs, shape) per block; ViT and DINOv2 differ in the norms' and the MLP's names.
        let names: [(String, String, [Int])] = [
            ("attention.query", "attention.attention.query", [d, d]), ("attention.key", "attention.attention.key", [d, d]),
            ("attention.value", "attention.attention.value", [d, d]), ("attention.output", "attention.output.dense", [d, d]),
            ("fc1", type == "dinov2" ? "mlp.fc1" : "intermediate.dense", [m, d]),
            ("fc2", type == "dinov2" ? "mlp.fc2" : "output.dense", [d, m]),
        ]
        let norms = type == "dinov2" ? [("norm1", "norm1"), ("norm2", "norm2")] : [("norm1", "layernorm_before"), ("norm2", "layernorm_after")]
        for l in 0..<config.layers {
            let src = "\(prefix)encoder.layer.\(l)."
            for (ours, theirs, shape) in names {
                want.expect(src + theirs + ".weight", shape)
                if qkvBias || !ours.hasPrefix("attention.") || ours == "attention.output" { want.expect(src + theirs + ".bias", [shape[0]]) }
            }
            for (_, theirs) in norms { want.expect(src + theirs + ".weight", [d]); want.expect(src + theirs + ".bias", [d]) }
            if type == "dinov2" { want.expect(src + "layer_scale1.lambda1", [d]); want.expect(src + "layer_scale2.lambda1", [d]) }
        }
        try want.verify { $0.hasSuffix("mask_token") || $0.contains("pooler.") || $0.hasPrefix("classifier.") }

        let vit = MemoryLedger.withCategory(.weights) { DINOv2ViT(config: config) }
        var values: [String: Tensor] = [:]
        values["embeddings.clsToken"] = try want.tensor(prefix + "embeddings.cls_token")
        values["embeddings.positionEmbeddings"] = try want.tensor(prefix + "embeddings.position_embeddings")
        values["embeddings.patchProjection.weight"] = try want.tensor(prefix + "embeddings.patch_embeddings.projection.weight").reshaped([d, ch * p * p])
        values["embeddings.patchProjection.bias"] = try want.tensor(prefix + "embeddings.patch_embeddings.projection.bias")
        values["norm.weight"] = try want.tensor(prefix + "layernorm.weight")
        values["norm.bias"] = try want.tensor(prefix + "layernorm.bias")
        for l in 0..<config.layers {
            let src = "\(prefix)encoder.layer.\(l).", dst = "layers.\(l)."
            for (ours, theirs, shape) in names {
                values[dst + ours + ".weight"] = try want.tensor(src + theirs + ".weight")
                values[dst + ours + ".bias"] = file.contains(src + theirs + ".bias") ? try want.tensor(src + theirs + ".bias") : Tensor.zeros([shape[0]])
            }
            for (ours, theirs) in norms {
                values[dst + ours + ".weight"] = try want.tensor(src + theirs + ".weight")
                values[dst + ours + ".bias"] = try want.tensor(src + theirs + ".bias")
            }
            values[dst + "layerScale1"] = type == "dinov2" ? try want.tensor(src + "layer_scale1.lambda1") : Tensor.ones([d])
            values[dst + "layerScale2"] = type == "dinov2" ? try want.tensor(src + "layer_scale2.lambda1") : Tensor.ones([d])
        }
        do { try vit.load(values, strict: true) } catch { throw BertError("\(file.path): \(error)") }
        return vit
    }
}

extension Llama {
    /// A Hugging Face Llama-family decoder folder: Llama, Mistral (its sliding window is wider
    /// than any sequence SideTune trains on, so full causal attention is the same), Qwen2 (biases
    /// on the query, key and value projections). RoPE scaling variants are refused by name.
    public static func load(huggingFace folder: URL, weights format: WeightFormat = .f32) throws -> Llama {
        let c = try HuggingFaceConfig(folder.appendingPathComponent("config.json"))
        let type = try c.string("model_type", default: "llama")
        guard ["llama", "mistral", "qwen2"].contains(type) else { throw BertError("\(c.file): model_type '\(type)' is not a Llama-family decoder") }
        guard try c.string("hidden_act", default: "silu") == "silu" else { throw BertError("\(c.file): hidden_act must be silu") }
        // RoPE: `rope_theta` and `rope_scaling` (transformers 4), or `rope_parameters` (5).
        var ropeTheta = try c.float("rope_theta", default: 10000)
        for key in ["rope_scaling", "rope_parameters"] where c.has(key) {
            let rope = c.fields[key] as? [String: Any] ?? [:]
            let kind = (rope["rope_type"] ?? rope["type"]) as? String ?? "?"
            guard key == "rope_parameters" && kind == "default" else {
                throw BertError("\(c.file): \(key) of type '\(kind.prefix(40))' is not supported (plain RoPE only)")
            }
            if let theta = (rope["rope_theta"] as? NSNumber)?.floatValue {
                guard theta > 0 && theta.isFinite else { throw BertError("\(c.file): rope_theta \(theta) must be positive") }
                ropeTheta = theta
            }
        }
        if c.bool("mlp_bias", default: false) { throw BertError("\(c.file): mlp_bias is not supported") }
        let dim = try c.int("hidden_size", 1...65536), heads = try c.int("num_attention_heads", 1...4096)
        let kvHeads = try c.int("num_key_value_heads", 1...heads, default: heads)
        let headDim = try c.int("head_dim", 2...65536, default: max(dim / heads, 2))
        let config = LlamaConfig(vocabSize: try c.int("vocab_size", 1...1 << 24), dim: dim, ffnDim: try c.int("intermediate_size", 1...1 << 20),
                                 layers: try c.int("num_hidden_layers", 1...1024), heads: heads, kvHeads: kvHeads, headDim: headDim,
                                 ropeTheta: ropeTheta, rmsEps: try c.float("rms_norm_eps", default: 1e-6),
                                 contextLength: try c.int("max_position_embeddings", 1...1 << 24, default: 2048),
                                 tiedEmbeddings: c.bool("tie_word_embeddings", default: type == "qwen2"))
        guard heads % kvHeads == 0, headDim % 2 == 0, config.rmsEps < 1 else {
            throw BertError("\(c.file): \(heads) heads, \(kvHeads) key/value heads and head_dim \(headDim) do not fit (heads a multiple of key/value heads, head_dim even)")
        }
        let attentionBias = type == "qwen2" || c.bool("attention_bias", default: false)
        let widths = ["hidden_size", "intermediate_size", "num_attention_heads x head_dim"]
        if format == .nf4, let (key, n) = config.nf4Misfit(widths) {
            throw BertError("\(c.file): \(key) is \(n), not a multiple of NF4's block of \(NF4.blockSize): load as f32")
        }

        let file = try HuggingFaceFolder.weights(folder)
        let (v, f, qDim, kvDim) = (config.vocabSize, config.ffnDim, heads * headDim, kvHeads * headDim)
        var want = ExpectedTensors(file: file)
        want.expect("model.embed_tokens.weight", [v, dim])
        want.expect("model.norm.weight", [dim])
        if !config.tiedEmbeddings { want.expect("lm_head.weight", [v, dim]) }
        for i in 0..<config.layers {
            let p = "model.layers.\(i)."
            want.expect(p + "input_layernorm.weight", [dim])
            want.expect(p + "post_attention_layernorm.weight", [dim])
            for (name, shape) in [("q_proj", [qDim, dim]), ("k_proj", [kvDim, dim]), ("v_proj", [kvDim, dim]), ("o_proj", [dim, qDim])] {
                want.expect(p + "self_attn.\(name).weight", shape)
                if attentionBias && name != "o_proj" { want.expect(p + "self_attn.\(name).bias", [shape[0]]) }
            }
            if attentionBias && type != "qwen2" { want.expect(p + "self_attn.o_proj.bias", [dim]) }
            for (name, shape) in [("gate_proj", [f, dim]), ("up_proj", [f, dim]), ("down_proj", [dim, f])] { want.expect(p + "mlp.\(name).weight", shape) }
        }
        // Tied checkpoints may still carry lm_head.weight (a copy of the embedding).
        try want.verify { $0 == "lm_head.weight" || $0.hasSuffix("rotary_emb.inv_freq") }

        func linear(_ name: String) throws -> any LinearLayer {
            let w = try want.tensor(name + ".weight")
            let b = file.contains(name + ".bias") ? try want.tensor(name + ".bias") : nil
            switch format {
            case .f32: return Linear(weight: w, bias: b)
            case .nf4: return NF4Linear(NF4Weight(quantizing: w), bias: b)
            }
        }
        func norm(_ name: String) throws -> RMSNorm {
            let n = RMSNorm(dim, eps: config.rmsEps)
            let w = try want.tensor(name)
            withExtendedLifetime(w) { n.weight.data.update(from: w.data, count: dim) }
            n.weight.requiresGrad = false
            return n
        }
        var blocks: [LlamaBlock] = []
        for i in 0..<config.layers {
            let p = "model.layers.\(i)."
            blocks.append(LlamaBlock(config: config, attentionNorm: try norm(p + "input_layernorm.weight"),
                                     query: try linear(p + "self_attn.q_proj"), key: try linear(p + "self_attn.k_proj"),
                                     value: try linear(p + "self_attn.v_proj"), output: try linear(p + "self_attn.o_proj"),
                                     ffnNorm: try norm(p + "post_attention_layernorm.weight"), gate: try linear(p + "mlp.gate_proj"),
                                     up: try linear(p + "mlp.up_proj"), down: try linear(p + "mlp.down_proj")))
        }
        let head = config.tiedEmbeddings ? nil : try want.tensor("lm_head.weight")
        return Llama(config: config, embedding: Embedding(weight: try want.tensor("model.embed_tokens.weight")), layers: blocks,
                     norm: try norm("model.norm.weight"), lmHead: head)
    }
}
