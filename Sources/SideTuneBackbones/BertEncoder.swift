import Foundation
import SideTuneEngine
import SideTuneFormats
import SideTuneNN
import SideTuneTokenizers

/// A BERT encoder (post-LN, absolute positions, GELU) built from a Hugging Face `config.json` and
/// loaded from `model.safetensors`. Forward returns every tap: h_0 (after the embeddings) and
/// h_1..h_L (after each layer), each [batch, seq, hidden].
///
/// Works under autograd (full fine-tuning) and inside `noGrad` (frozen backbone for side-tuning).

// MARK: - Config

/// The `config.json` fields a BERT encoder needs (snake_case keys as Hugging Face writes them).
public struct BertConfig: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var hiddenAct: String
    public var layerNormEps: Float
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var positionEmbeddingType: String?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size"
        case positionEmbeddingType = "position_embedding_type"
    }

    public init(hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int, intermediateSize: Int,
                hiddenAct: String = "gelu", layerNormEps: Float = 1e-12, vocabSize: Int,
                maxPositionEmbeddings: Int = 512, typeVocabSize: Int = 2) {
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.vocabSize = vocabSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        positionEmbeddingType = "absolute"
    }

    public static func load(_ url: URL) throws -> BertConfig {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BertError("\(url.path): cannot read config: \(error.localizedDescription)")
        }
        let config: BertConfig
        do { config = try JSONDecoder().decode(BertConfig.self, from: data) } catch let DecodingError.keyNotFound(key, _) {
            throw BertError("\(url.path): missing key '\(key.stringValue)'")
        } catch {
            throw BertError("\(url.path): not a BERT config: \(error)")
        }
        try config.validate(file: url.path)
        return config
    }

    /// Rejects sizes out of any sane range (before anything is allocated from them) and what this
    /// encoder does not implement, naming the file, the field, its value and what it must be.
    public func validate(file: String = "config") throws {
        let bounds: [(String, Int, ClosedRange<Int>)] = [
            ("hidden_size", hiddenSize, 1...65536), ("num_hidden_layers", numHiddenLayers, 1...1024),
            ("num_attention_heads", numAttentionHeads, 1...4096), ("intermediate_size", intermediateSize, 1...1 << 20),
            ("vocab_size", vocabSize, 1...1 << 24), ("max_position_embeddings", maxPositionEmbeddings, 1...1 << 20),
            ("type_vocab_size", typeVocabSize, 1...1024),
        ]
        for (field, value, range) in bounds where !range.contains(value) {
            throw BertError("\(file): \(field) is \(value), expected \(range.lowerBound)...\(range.upperBound)")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw BertError("\(file): hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        guard layerNormEps > 0 && layerNormEps < 1 else {
            throw BertError("\(file): layer_norm_eps is \(layerNormEps), expected a small positive number (BERT: 1e-12)")
        }
        guard ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"].contains(hiddenAct) else {
            throw BertError("\(file): hidden_act '\(hiddenAct)' is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)")
        }
        if let p = positionEmbeddingType, p != "absolute" {
            throw BertError("\(file): position_embedding_type '\(p)' is not supported (absolute only)")
        }
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
}

public struct BertError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

// MARK: - Modules

/// word + position + token-type embeddings, then LayerNorm.
public final class BertEmbeddings: Module {
    public let wordEmbeddings: Embedding      // [vocab, d]
    public let positionEmbeddings: Embedding  // [maxPositions, d]
    public let tokenTypeEmbeddings: Embedding // [typeVocab, d]
    public let layerNorm: LayerNorm

    init(_ c: BertConfig) {
        wordEmbeddings = Embedding(weight: parameter(.zeros([c.vocabSize, c.hiddenSize])))
        positionEmbeddings = Embedding(weight: parameter(.zeros([c.maxPositionEmbeddings, c.hiddenSize])))
        tokenTypeEmbeddings = Embedding(weight: parameter(.zeros([c.typeVocabSize, c.hiddenSize])))
        layerNorm = LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        super.init()
    }

    /// ids, typeIds: [batch * seq] -> [batch, seq, d].
    public func callAsFunction(ids: [Int32], typeIds: [Int32], batch: Int, seq: Int) -> Tensor {
        let words = wordEmbeddings(ids, shape: [batch, seq])                     // [B, T, d]
        let positions = positionEmbeddings.weight.slice(axis: 0, 0, seq)        // [T, d], broadcast over B
        let types = tokenTypeEmbeddings(typeIds, shape: [batch, seq])           // [B, T, d]
        return layerNorm(words + positions + types)
    }
}

/// Multi-head self-attention with its output projection (before the residual).
public final class BertSelfAttention: Module, AttentionProjections {
    // `var`: methods swap these by name (`linearSlots()`) for wrapped or quantised layers.
    public var query: any LinearLayer // [d, d]
    public var key: any LinearLayer
    public var value: any LinearLayer
    public var output: any LinearLayer
    let heads: Int

    init(_ c: BertConfig) {
        func linear(_ i: Int, _ o: Int) -> Linear { Linear(weight: parameter(.zeros([o, i])), bias: parameter(.zeros([o]))) }
        query = linear(c.hiddenSize, c.hiddenSize)
        key = linear(c.hiddenSize, c.hiddenSize)
        value = linear(c.hiddenSize, c.hiddenSize)
        output = linear(c.hiddenSize, c.hiddenSize)
        heads = c.numAttentionHeads
        super.init()
    }

    /// x [B, T, d] -> [B, T, d]; `keyPadding` is [B * T] of 1 (token) / 0 (padding).
    public func callAsFunction(_ x: Tensor, keyPadding: [Float]) -> Tensor { output(context(x, keyPadding: keyPadding)) }

    /// The heads' outputs side by side [B, T, d], before the output projection.
    func context(_ x: Tensor, keyPadding: [Float]) -> Tensor { context(x, layout: .padded(keyPadding: keyPadding)) }

    /// Whether packed batches (`TokenLayout.packed`) can run here: heads thin enough for the
    /// packed kernel. Plain q, k, v run as one fused product; wrapped ones (LoRA) side by side.
    public var supportsPackedTokens: Bool { (query.outFeatures / heads) <= packedHeadMaxDims }

    func context(_ x: Tensor, layout: TokenLayout) -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let hd = d / heads
        switch layout {
        case .packed(let segments):
            precondition(supportsPackedTokens, "BertSelfAttention: packed tokens need heads of <= \(packedHeadMaxDims) dims, got \(hd)")
            // The packed kernel reads q, k, v from one [N, 3d] product: fused when plain, else joined.
            let qkv = fusedQKV.map { Tensor.linear(x, weight: $0.weight, bias: $0.bias) }
                ?? Tensor.concat([query(x), key(x), value(x)], axis: 2)
            return Tensor.attentionPacked(qkv, heads: heads, segments: segments, scale: 1 / Float(hd).squareRoot())
        case .padded(let keyPadding):
            if let a = recomputedContext(x, heads: heads, mask: AttentionMask(keyPadding: keyPadding)) { return a }
            if hd <= smallHeadDims, let w = fusedQKV {
                // Thin heads (LST's side blocks): one [d -> 3d] product, attention read from it in place.
                let qkv = Tensor.linear(x, weight: w.weight, bias: w.bias)
                return Tensor.attentionPacked(qkv, heads: heads, keyPadding: keyPadding, scale: 1 / Float(hd).squareRoot())
            }
            func split(_ y: Tensor) -> Tensor { y.reshaped([b, t, heads, hd]).permuted([0, 2, 1, 3]) } // [B, H, T, hd]
            let q = split(query(x)), k = split(key(x)), v = split(value(x))
            let a = Tensor.attention(q, k, v, mask: AttentionMask(keyPadding: keyPadding), scale: 1 / Float(hd).squareRoot())
            return a.permuted([0, 2, 1, 3]).reshaped([b, t, d])
        }
    }
}

extension BertSelfAttention {
    /// q, k, v stacked into one [3d, d] weight and [3d] bias (built per call, so the product sees
    /// the current values and backward splits the gradient back), or nil when they are not three
    /// plain float32 linears with biases (LoRA wraps some, NF4 stores others).
    /// Not for frozen weights under autograd: the stacked copy would be kept for dx as an
    /// activation, [3d, d] per layer per step, where three products keep nothing but the weights.
    var fusedQKV: (weight: Tensor, bias: Tensor)? {
        let parts = [query, key, value].compactMap(\.plain).filter { $0.bias != nil }
        guard parts.count == 3 else { return nil }
        if Autograd.isEnabled && !parts.contains(where: { $0.weight.requiresGrad }) { return nil }
        return (Tensor.concat(parts.map(\.weight), axis: 0), Tensor.concat(parts.map { $0.bias! }, axis: 0))
    }
}

/// One post-LN encoder layer: x = LN(x + Attn(x)); x = LN(x + W2 act(W1 x)).
public final class BertLayer: Module {
    public let attention: BertSelfAttention
    public let attentionNorm: LayerNorm
    public var intermediate: any LinearLayer // [d_ff, d]
    public var output: any LinearLayer       // [d, d_ff]
    public let outputNorm: LayerNorm
    let act: String
    /// The fused path's q/k/v product (bf16 weights stacked on first use); `_`: not a parameter.
    let _qkv = FusedQKV()

    public init(_ c: BertConfig) {
        attention = BertSelfAttention(c)
        attentionNorm = LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        intermediate = Linear(weight: parameter(.zeros([c.intermediateSize, c.hiddenSize])), bias: parameter(.zeros([c.intermediateSize])))
        output = Linear(weight: parameter(.zeros([c.hiddenSize, c.intermediateSize])), bias: parameter(.zeros([c.hiddenSize])))
        outputNorm = LayerNorm(c.hiddenSize, eps: c.layerNormEps)
        act = c.hiddenAct
        super.init()
    }

    func activation(_ x: Tensor) -> Tensor {
        switch act {
        case "gelu": return x.gelu()
        case "relu": return x.relu()
        default: return x.geluTanh() // gelu_new, gelu_pytorch_tanh
        }
    }

    /// x [B, T, d] -> [B, T, d].
    public func callAsFunction(_ x: Tensor, keyPadding: [Float]) -> Tensor { self(x, layout: .padded(keyPadding: keyPadding)) }

    /// x [B, T, d] padded, or [1, N, d] packed (see `BertSelfAttention.supportsPackedTokens`).
    public func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor {
        if let a = attention.output.plain, let o = output.plain, let ab = a.bias, let ob = o.bias {
            // Each output projection adds its residual in the same op (no separate add pass).
            let h = attentionNorm(Tensor.linear(attention.context(x, layout: layout), weight: a.weight, bias: ab, residuals: [x]))
            return outputNorm(Tensor.linear(activation(intermediate(h)), weight: o.weight, bias: ob, residuals: [h]))
        }
        // Wrapped output projections (adapters sit there, before the residual) or NF4 ones.
        let h = attentionNorm(x + attention.output(attention.context(x, layout: layout)))
        return outputNorm(h + output(activation(intermediate(h))))
    }
}

// MARK: - Fused no-grad path

extension BertLayer {
    /// Whether `fusedInference` computes exactly what `callAsFunction` does: plain (not wrapped,
    /// not quantised) linears with f32 biases, their weights in f32 or all stored in bf16
    /// (`BFloat16Linear`), and affine LayerNorms.
    public var supportsFusedInference: Bool {
        fusableProjections([attention.query, attention.key, attention.value, attention.output, intermediate, output])
            && [attentionNorm, outputNorm].allSatisfy { $0.weight != nil && $0.bias != nil }
    }

    /// Floats of scratch `fusedInference` needs for `tokens` = batch x seq.
    static func fusedScratchFloats(_ c: BertConfig, tokens m: Int) -> Int {
        let d = c.hiddenSize
        return FusedQKV.scratchFloats(d: d) + m * max(3 * d, c.intermediateSize) + 2 * m * d
    }

    var fusedActivation: FusedInference.Activation {
        switch act {
        case "gelu": return .gelu
        case "relu": return .relu
        default: return .geluTanh
        }
    }

    /// The no-grad forward with fused kernels: the q/k/v products into one [M, 3d] buffer,
    /// attention read from it with strides, bias + residual + LayerNorm applied as the output
    /// GEMMs finish each row block, bias + activation likewise. Only the returned hidden state is
    /// a new tensor. x is [B, T, d] padded or [1, N, d] packed, as `layout` says.
    func fusedInference(_ x: Tensor, layout: TokenLayout, scratch: UnsafeMutablePointer<Float>) -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        let m = b * t, dff = intermediate.outFeatures, heads = attention.heads, hd = d / heads
        let (attnOut, ffIn, ffOut) = (fusedProjection(attention.output)!, fusedProjection(intermediate)!,
                                      fusedProjection(output)!)
        // Scratch: the q/k/v product's, a [M, max(3d, dff)] region (q/k/v, then the attention
        // output's pre-norm sums, then the intermediate activations), ctx and h [M, d].
        let big = scratch + FusedQKV.scratchFloats(d: d)
        let ctx = big + m * max(3 * d, dff), h = ctx + m * d
        _qkv.project([attention.query, attention.key, attention.value], x.data, m: m, d: d, scratch: scratch, out: big)
        let products = attnOut.weight.precision // attention's products in bf16 when the projections are
        switch layout {
        case .padded(let keyPadding):
            FusedInference.attention(qkv: big, batch: b, seq: t, heads: heads, headDim: hd, keyPadding: keyPadding,
                                     scale: 1 / Float(hd).squareRoot(), out: ctx, products: products)
        case .packed(let segments):
            precondition(b == 1 && t == segments.total, "BertLayer: packed input \(x.shape) is not [1, \(segments.total), d]")
            FusedInference.attention(qkv: big, segments: segments, heads: heads, headDim: hd,
                                     scale: 1 / Float(hd).squareRoot(), out: ctx, products: products)
        }
        FusedInference.linearResidualLayerNorm(ctx, ldx: d, m: m, k: d, weight: attnOut.weight, d: d, bias: attnOut.bias,
                                               residual: x.data, normWeight: attentionNorm.weight!.data,
                                               normBias: attentionNorm.bias!.data, eps: attentionNorm.eps, scratch: big, out: h)
        FusedInference.linear(h, ldx: d, m: m, k: d, weight: ffIn.weight, n: dff, bias: ffIn.bias,
                              activation: fusedActivation, out: big, ldo: dff)
        let y = Tensor(shape: [b, t, d])
        FusedInference.linearResidualLayerNorm(big, ldx: dff, m: m, k: dff, weight: ffOut.weight, d: d, bias: ffOut.bias,
                                               residual: h, normWeight: outputNorm.weight!.data,
                                               normBias: outputNorm.bias!.data, eps: outputNorm.eps, scratch: ctx, out: y.data)
        return y
    }
}

/// What the encoder returns: every tap.
public struct BertOutput {
    /// h_0 (embeddings) ... h_L (last layer), each [batch, seq, hidden].
    public var hiddenStates: [Tensor]
    public var last: Tensor { hiddenStates[hiddenStates.count - 1] }
}

public final class BertEncoder: Module {
    public let embeddings: BertEmbeddings
    public let layers: [BertLayer]
    public let _config: BertConfig // `_`: not a parameter
    public var config: BertConfig { _config }

    /// Whether no-grad forwards may use the fused inference kernels (tests turn it off to compare
    /// against the layer-by-layer path).
    public var fusedInferenceEnabled = true

    public init(config: BertConfig) {
        _config = config
        embeddings = BertEmbeddings(config)
        layers = (0..<config.numHiddenLayers).map { _ in BertLayer(config) }
        super.init()
    }

    /// ids, typeIds, attentionMask: [batch * seq] row-major. Returns h_0...h_L. `prompt` ([P, d],
    /// prompt tuning) is prepended to the embeddings' output as P always-visible tokens; the taps
    /// then have P + seq positions, prompts first.
    public func callAsFunction(ids: [Int32], typeIds: [Int32]? = nil, attentionMask: [Int32], batch: Int, seq: Int,
                               prompt: Tensor? = nil) -> BertOutput {
        precondition(ids.count == batch * seq && attentionMask.count == batch * seq,
                     "BertEncoder: expected \(batch * seq) ids and mask values for [\(batch), \(seq)], got \(ids.count) and \(attentionMask.count)")
        precondition(seq <= config.maxPositionEmbeddings, "BertEncoder: sequence length \(seq) > max_position_embeddings \(config.maxPositionEmbeddings)")
        let types = typeIds ?? [Int32](repeating: 0, count: ids.count)
        precondition(types.count == ids.count, "BertEncoder: \(types.count) type ids for \(ids.count) ids")
        var keyPadding = attentionMask.map { $0 != 0 ? Float(1) : 0 }
        var h = embeddings(ids: ids, typeIds: types, batch: batch, seq: seq)
        if let prompt {
            let p = prompt.shape[0]
            h = Tensor.concat([Tensor.zeros([batch, p, config.hiddenSize]) + prompt.reshaped([1, p, config.hiddenSize]), h], axis: 1)
            var padded: [Float] = []
            padded.reserveCapacity(batch * (p + seq))
            for b in 0..<batch { padded += [Float](repeating: 1, count: p) + keyPadding[(b * seq)..<((b + 1) * seq)] }
            keyPadding = padded
        }
        if !Autograd.isEnabled && !h.requiresGrad && runsFused {
            return BertOutput(hiddenStates: [h] + fusedLayers(h, layout: .padded(keyPadding: keyPadding)))
        }
        return BertOutput(hiddenStates: [h] + layerOutputs(h, layout: .padded(keyPadding: keyPadding)))
    }

    /// The frozen forward of a packed batch: the embeddings' real rows laid end to end ([1, N, d],
    /// `TokenSegments(lengths: batch.lengths)`), so no layer computes anything for padding. Returns
    /// h_0...h_L packed, each equal to the padded forward's real rows. No autograd: this is the path
    /// for taps that side networks read. Layers the fused kernels cannot run (adapters, wrapped
    /// linears) run the padded forward and pack its outputs.
    public func packedHiddenStates(_ batch: BatchEncoding) -> (hiddenStates: [Tensor], segments: TokenSegments) {
        let segments = TokenSegments(lengths: batch.lengths)
        return noGrad {
            guard runsFused else { return (self(batch).hiddenStates.map { $0.packed(segments) }, segments) }
            let h = embeddings(ids: batch.ids, typeIds: batch.typeIds, batch: batch.batchSize, seq: batch.seqLength).packed(segments)
            return ([h] + fusedLayers(h, layout: .packed(segments)), segments)
        }
    }

    /// The forward of a packed batch with autograd, for the methods that train the backbone (full,
    /// BitFit, LoRA, adapters): h_0...h_L packed [1, N, d] (`TokenSegments(lengths: batch.lengths)`),
    /// each equal to the padded forward's real rows, with no work for padding. Needs
    /// `supportsPackedTokens`.
    public func packedForward(_ batch: BatchEncoding) -> (hiddenStates: [Tensor], segments: TokenSegments) {
        precondition(supportsPackedTokens, "BertEncoder: packed tokens need heads of <= \(packedHeadMaxDims) dims")
        if !Autograd.isEnabled && runsFused { return packedHiddenStates(batch) } // evaluation: fused kernels, as padded
        let segments = TokenSegments(lengths: batch.lengths)
        let h = embeddings(ids: batch.ids, typeIds: batch.typeIds, batch: batch.batchSize, seq: batch.seqLength).packed(segments)
        return ([h] + layerOutputs(h, layout: .packed(segments)), segments)
    }

    /// h_1...h_L from h_0 through the layers with autograd (the twin of `fusedLayers`).
    func layerOutputs(_ h0: Tensor, layout: TokenLayout) -> [Tensor] {
        var h = h0, out: [Tensor] = []
        out.reserveCapacity(layers.count)
        for layer in layers {
            h = layer(h, layout: layout)
            out.append(h)
        }
        return out
    }

    /// Whether `packedForward` can run: every layer's heads fit the packed attention kernel.
    public var supportsPackedTokens: Bool { layers.allSatisfy(\.attention.supportsPackedTokens) }

    /// Whether no-grad forwards may take the fused kernels: enabled, and every layer plain enough.
    var runsFused: Bool { fusedInferenceEnabled && layers.allSatisfy(\.supportsFusedInference) }

    /// h_1...h_L from h_0 ([B, T, d] or packed [1, N, d], as `layout` says) through the fused
    /// no-grad layers, their intermediates in one reused scratch buffer.
    func fusedLayers(_ h0: Tensor, layout: TokenLayout) -> [Tensor] {
        var h = h0, out: [Tensor] = []
        out.reserveCapacity(layers.count)
        InferenceScratch.with(floats: BertLayer.fusedScratchFloats(config, tokens: h0.shape[0] * h0.shape[1])) { scratch in
            for layer in layers {
                h = layer.fusedInference(h, layout: layout, scratch: scratch)
                out.append(h)
            }
        }
        return out
    }

    public func callAsFunction(_ batch: BatchEncoding, prompt: Tensor? = nil) -> BertOutput {
        self(ids: batch.ids, typeIds: batch.typeIds, attentionMask: batch.attentionMask, batch: batch.batchSize, seq: batch.seqLength,
             prompt: prompt)
    }

    // MARK: Checkpoint names

    /// The one key map: module parameter name -> Hugging Face checkpoint name (without the
    /// `bert.` prefix that BertFor* checkpoints add; `load` accepts either).
    public static func checkpointNames(layers: Int) -> [(module: String, checkpoint: String)] {
        var map: [(String, String)] = [
            ("embeddings.wordEmbeddings.weight", "embeddings.word_embeddings.weight"),
            ("embeddings.positionEmbeddings.weight", "embeddings.position_embeddings.weight"),
            ("embeddings.tokenTypeEmbeddings.weight", "embeddings.token_type_embeddings.weight"),
            ("embeddings.layerNorm.weight", "embeddings.LayerNorm.weight"),
            ("embeddings.layerNorm.bias", "embeddings.LayerNorm.bias"),
        ]
        let perLayer: [(String, String)] = [
            ("attention.query", "attention.self.query"),
            ("attention.key", "attention.self.key"),
            ("attention.value", "attention.self.value"),
            ("attention.output", "attention.output.dense"),
            ("attentionNorm", "attention.output.LayerNorm"),
            ("intermediate", "intermediate.dense"),
            ("output", "output.dense"),
            ("outputNorm", "output.LayerNorm"),
        ]
        for i in 0..<layers {
            for (m, c) in perLayer {
                for p in ["weight", "bias"] { map.append(("layers.\(i).\(m).\(p)", "encoder.layer.\(i).\(c).\(p)")) }
            }
        }
        return map
    }

    /// Checkpoint tensors a BERT checkpoint may carry that the encoder does not use.
    static func isIgnorable(_ name: String) -> Bool {
        let n = name.hasPrefix("bert.") ? String(name.dropFirst(5)) : name
        return n.hasPrefix("pooler.") || n == "embeddings.position_ids" || n.hasPrefix("cls.")
    }

    /// The shape the weights file must give parameter `module` (a name of `checkpointNames`).
    static func shape(of module: String, _ c: BertConfig) -> [Int] {
        let d = c.hiddenSize, f = c.intermediateSize
        switch module {
        case "embeddings.wordEmbeddings.weight": return [c.vocabSize, d]
        case "embeddings.positionEmbeddings.weight": return [c.maxPositionEmbeddings, d]
        case "embeddings.tokenTypeEmbeddings.weight": return [c.typeVocabSize, d]
        default: break
        }
        if module.hasSuffix(".intermediate.weight") { return [f, d] }
        if module.hasSuffix(".intermediate.bias") { return [f] }
        if module.hasSuffix(".output.weight") && !module.contains("attention") { return [d, f] }
        return module.hasSuffix(".weight") && module.contains(".attention.") ? [d, d] : [d]
    }

    /// Checks a weights file against `config` by name, shape and dtype, before anything is
    /// allocated: every parameter present with its exact shape (errors name the tensor, its module
    /// name and both shapes), and, when `strict`, no unknown tensors (other than a pooler,
    /// `position_ids` or an MLM head). Returns the names' prefix ("" or "bert.").
    static func verify(_ file: SafetensorsFile, config: BertConfig, strict: Bool) throws -> String {
        let map = checkpointNames(layers: config.numHiddenLayers)
        let prefix = file.contains("embeddings.word_embeddings.weight") ? "" : (file.contains("bert.embeddings.word_embeddings.weight") ? "bert." : "")
        var missing: [String] = [], mismatched: [String] = []
        for (m, c) in map {
            let name = prefix + c, expected = shape(of: m, config)
            guard file.contains(name) else { missing.append(name); continue }
            let info = try file.info(name)
            guard info.shape == expected else {
                mismatched.append("\(name) (parameter \(m)): checkpoint shape \(info.shape), config expects \(expected)")
                continue
            }
            guard info.dtype != nil || info.storageType == .f64 else {
                mismatched.append("\(name): unsupported dtype \(info.storageType.rawValue)")
                continue
            }
        }
        if !missing.isEmpty || !mismatched.isEmpty {
            var lines: [String] = []
            if !missing.isEmpty {
                lines.append("missing \(missing.count) tensor(s): \(missing.prefix(8).joined(separator: ", "))\(missing.count > 8 ? ", ..." : "")")
            }
            lines.append(contentsOf: mismatched.prefix(8))
            throw BertError("\(file.path): checkpoint does not match config (\(config.numHiddenLayers) layers, width \(config.hiddenSize)):\n  "
                            + lines.joined(separator: "\n  "))
        }
        if strict {
            let used = Set(map.map { prefix + $0.checkpoint })
            let unknown = file.names.filter { !used.contains($0) && !Self.isIgnorable($0) }
            if !unknown.isEmpty {
                throw BertError("\(file.path): \(unknown.count) unexpected tensor(s): \(unknown.prefix(8).joined(separator: ", ")) (load with strict: false to ignore)")
            }
        }
        return prefix
    }

    /// Copies the checkpoint's tensors into the parameters after `verify`; a tensor holding NaN or
    /// infinite values is refused, named.
    public func load(weights file: SafetensorsFile, strict: Bool = true) throws {
        let prefix = try Self.verify(file, config: config, strict: strict)
        let params = Dictionary(namedParameters(), uniquingKeysWith: { a, _ in a })
        for (m, c) in Self.checkpointNames(layers: config.numHiddenLayers) {
            guard let p = params[m] else { preconditionFailure("key map names unknown parameter \(m)") }
            precondition(p.shape == Self.shape(of: m, config), "shape rule for \(m) disagrees with the module")
            try file.withFloat32(prefix + c) { src in p.data.update(from: src.baseAddress!, count: p.count) }
            if !p.allFinite { throw BertError("\(file.path): tensor \(prefix + c) holds NaN or infinite values") }
        }
    }

    /// Builds the encoder from a Hugging Face-style folder (config.json + model.safetensors).
    /// Parameters are trainable; call `freeze()` for a frozen backbone.
    public static func load(folder: URL, strict: Bool = true) throws -> BertEncoder {
        let config = try BertConfig.load(folder.appendingPathComponent("config.json"))
        let weightsURL = folder.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            throw BertError("\(folder.path): no model.safetensors")
        }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: weightsURL.path) } catch { throw BertError("\(error)") }
        // Names and shapes are checked before the encoder is allocated: a wrong size in config.json
        // could ask for terabytes.
        _ = try verify(file, config: config, strict: strict)
        let encoder = MemoryLedger.withCategory(.weights) { BertEncoder(config: config) }
        try encoder.load(weights: file, strict: strict)
        return encoder
    }
}

// MARK: - Pooling

extension BertEncoder {
    /// sentence-transformers' mean pooling: sum over tokens with mask 1 divided by
    /// max(count, 1e-9), then optionally divided by max(L2 norm, 1e-12) (its `Normalize` module).
    /// hidden [B, T, d] -> [B, d]. Differentiable.
    public static func meanPool(_ hidden: Tensor, attentionMask: [Int32], normalize: Bool = false) -> Tensor {
        let (b, t) = (hidden.shape[0], hidden.shape[1])
        precondition(attentionMask.count == b * t, "meanPool: mask has \(attentionMask.count) values for [\(b), \(t)]")
        var counts = [Float](repeating: 0, count: b)
        for i in 0..<b { for j in 0..<t { counts[i] += attentionMask[i * t + j] != 0 ? 1 : 0 } }
        let pooled = hidden.weightedSumOverTokens(weights: attentionMask.map { $0 != 0 ? 1 : 0 }, divisors: counts.map { max($0, 1e-9) })
        guard normalize else { return pooled }
        let norm = (pooled * pooled).sum(axes: [1], keepDims: true).sqrt() // [B, 1]
        return pooled / norm.clampedBelow(1e-12)
    }
}

extension Tensor {
    /// max(x, floor) elementwise with the gradient passing where x > floor (a norm guard).
    func clampedBelow(_ floor: Float) -> Tensor {
        let m = Tensor(toArray().map { $0 > floor ? 1 : 0 }, shape: shape)
        let c = Tensor(toArray().map { $0 > floor ? 0 : floor }, shape: shape)
        return self * m + c
    }
}

// MARK: - Backbone

extension BertEncoder: Backbone {
    public typealias Input = BatchEncoding
    public static var family: BackboneFamily { .bert }
    public var width: Int { config.hiddenSize }
    public var depth: Int { config.numHiddenLayers }

    /// The fused no-grad layers run packed at any head size (wrapped layers pack the padded result).
    public var packsFrozenTaps: Bool { true }
    public var packsTrainedForward: Bool { supportsPackedTokens }

    public func frozenTaps(_ batch: BatchEncoding, packed: Bool) -> [Tensor] {
        packed ? packedHiddenStates(batch).hiddenStates : noGrad { self(batch).hiddenStates }
    }

    public func trainedForward(_ batch: BatchEncoding, packed: Bool, prompt: Tensor?) -> Tensor {
        if packed {
            precondition(prompt == nil, "BertEncoder: prompts are positions of every padded row; they do not pack")
            return packedForward(batch).hiddenStates.last!
        }
        let last = self(batch, prompt: prompt).last
        guard let prompt else { return last }
        return last.slice(axis: 1, prompt.shape[0], last.shape[1])
    }

    public func linearSlots() -> [LinearSlot] {
        layers.enumerated().flatMap { i, layer -> [LinearSlot] in
            let p = "layers.\(i)."
            return layer.attention.attentionSlots(p + "attention.") + [
                LinearSlot(name: p + "intermediate", role: .ffnIn, layer: layer.intermediate) { layer.intermediate = $0 },
                LinearSlot(name: p + "output", role: .ffnOut, layer: layer.output) { layer.output = $0 },
            ]
        }
    }

    public var promptInitTable: Tensor? { embeddings.wordEmbeddings.weight }

    /// Post-LN: every tap is already a LayerNorm's output.
    public func finalNorm(_ x: Tensor) -> Tensor { x }
    public var hasFinalNorm: Bool { false }

    /// Mean over each text's real tokens (sentence-transformers' pooling).
    public func pool(_ x: Tensor, layout: TokenLayout) -> Tensor {
        switch layout {
        case .padded(let keyPadding): BertEncoder.meanPool(x, attentionMask: keyPadding.map { $0 != 0 ? 1 : 0 })
        case .packed(let segments): x.segmentMean(segments)
        }
    }
    public var pooledWidth: Int { config.hiddenSize }

    public func sideBlock(reduction r: Int, rng: inout SplitMix64) throws -> any SideBlock {
        let block = BertLayer(try BertEncoder.sideConfig(config, reduction: r))
        randomInit(block, rng: &rng)
        return block
    }

    public func sideNorm(width: Int) -> any NormLayer { LayerNorm(width, eps: config.layerNormEps) }

    /// One layer's configuration at width d/r, FFN d_ff/r, the same head count.
    public static func sideConfig(_ c: BertConfig, reduction r: Int) throws -> BertConfig {
        guard r >= 1, c.hiddenSize % r == 0, (c.hiddenSize / r) % c.numAttentionHeads == 0, c.intermediateSize % r == 0 else {
            throw BackboneError("reduction \(r) must divide hidden size \(c.hiddenSize) into a multiple of \(c.numAttentionHeads) heads and divide FFN size \(c.intermediateSize)")
        }
        var s = c
        s.hiddenSize = c.hiddenSize / r
        s.intermediateSize = c.intermediateSize / r
        s.numHiddenLayers = 1
        return s
    }
}

extension BertLayer: SideBlock {
    public var supportsPackedTokens: Bool { attention.supportsPackedTokens }
}

/// PyTorch-style initialisation of a freshly built block whose parameters start at zero:
/// Linear weights uniform(+-1/sqrt(in)), biases 0, LayerNorm 1 and 0.
public func randomInit(_ m: Module, rng: inout SplitMix64) {
    for (name, p) in m.namedParameters() {
        if name.hasSuffix("Norm.weight") || name.hasSuffix("layerNorm.weight") {
            p.data.initialize(repeating: 1, count: p.count)
        } else if name.hasSuffix(".weight") && p.rank == 2 {
            let bound = 1 / Float(p.shape[1]).squareRoot()
            for i in 0..<p.count { p.data[i] = (rng.nextFloat() * 2 - 1) * bound }
        } else {
            p.data.initialize(repeating: 0, count: p.count)
        }
    }
}
