import Foundation
import SideTuneEngine
import SideTuneFormats
import SideTuneNN
import SideTuneTokenizers

/// Llama-architecture decoder configuration, read from GGUF metadata (`llama.*` keys).
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var vocabSize: Int
    /// Model width d.
    public var dim: Int
    /// SwiGLU hidden width.
    public var ffnDim: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var ropeTheta: Float
    public var rmsEps: Float
    public var contextLength: Int
    /// The LM head is the token embedding (no `output.weight` in the file).
    public var tiedEmbeddings: Bool

    public init(vocabSize: Int, dim: Int, ffnDim: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int? = nil,
                ropeTheta: Float = 10000, rmsEps: Float = 1e-5, contextLength: Int = 2048, tiedEmbeddings: Bool = true) {
        self.vocabSize = vocabSize; self.dim = dim; self.ffnDim = ffnDim; self.layers = layers
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim ?? dim / heads
        self.ropeTheta = ropeTheta; self.rmsEps = rmsEps; self.contextLength = contextLength
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// The first input width of a projection (model width, feed-forward width, heads x head dim;
    /// `names` in that order) that NF4 cannot quantise: a row length not a multiple of its block.
    public func nf4Misfit(_ names: [String]) -> (name: String, width: Int)? {
        zip(names, [dim, ffnDim, heads * headDim]).first { $0.1 % NF4.blockSize != 0 }.map { ($0.0, $0.1) }
    }

    public init(gguf f: GGUFFile) throws {
        let arch = try f.string("general.architecture")
        guard arch == "llama" else {
            throw FormatError(.unsupported, file: f.path, "general.architecture is \"\(arch)\", expected \"llama\"")
        }
        // Each size is checked before it is used (a head count of 0 divided by zero; a huge one
        // allocated until memory ran out).
        func size(_ key: String, _ range: ClosedRange<Int>, default value: Int? = nil) throws -> Int {
            let v = f[key] == nil ? try value ?? f.int(key) : try f.int(key)
            guard range.contains(v) else {
                throw FormatError(.badHeader, file: f.path, "\(key) is \(v), expected \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        let heads = try size("llama.attention.head_count", 1...4096), dim = try size("llama.embedding_length", 1...65536)
        let vocab = try size("llama.vocab_size", 1...1 << 24, default: (try? f.strings("tokenizer.ggml.tokens").count) ?? 0)
        let kvHeads = try size("llama.attention.head_count_kv", 1...heads, default: heads)
        self.init(vocabSize: vocab, dim: dim, ffnDim: try size("llama.feed_forward_length", 1...1 << 20),
                  layers: try size("llama.block_count", 1...1024), heads: heads, kvHeads: kvHeads,
                  headDim: try size("llama.rope.dimension_count", 2...65536, default: max(dim / heads, 2)),
                  ropeTheta: f["llama.rope.freq_base"] != nil ? try f.float("llama.rope.freq_base") : 10000,
                  rmsEps: try f.float("llama.attention.layer_norm_rms_epsilon"),
                  contextLength: try size("llama.context_length", 1...1 << 24, default: 2048),
                  tiedEmbeddings: !f.contains("output.weight"))
        guard dim % heads == 0, heads % kvHeads == 0, headDim % 2 == 0, headDim * heads == dim else {
            throw FormatError(.unsupported, file: f.path,
                              "heads \(heads), kv heads \(kvHeads), head dim \(headDim) do not fit width \(dim)")
        }
        guard rmsEps > 0 && rmsEps < 1, ropeTheta > 0 && ropeTheta.isFinite else {
            throw FormatError(.badHeader, file: f.path, "llama.attention.layer_norm_rms_epsilon \(rmsEps) must be in (0, 1) and llama.rope.freq_base \(ropeTheta) positive")
        }
    }
}

/// Per-layer key/value cache for incremental decoding, batch rows of equal length. Stored
/// [B, kvHeads, capacity, headDim] and counted in the ledger as `.cache`; grows by doubling.
public final class KVCache {
    public private(set) var length = 0
    var keys: [Tensor] = []
    var values: [Tensor] = []
    var capacity = 0
    let layers: Int, batch: Int, kvHeads: Int, headDim: Int

    public init(config: LlamaConfig, batch: Int = 1, capacity: Int = 256) {
        layers = config.layers; self.batch = batch; kvHeads = config.kvHeads; headDim = config.headDim
        reserve(capacity)
    }

    public var byteCount: Int { (keys + values).reduce(0) { $0 + $1.storage.byteCount } }

    func reserve(_ n: Int) {
        guard n > capacity else { return }
        let newCap = max(n, capacity * 2)
        MemoryLedger.withCategory(.cache) {
            let (oldK, oldV) = (keys, values)
            keys = (0..<layers).map { _ in Tensor(shape: [batch, kvHeads, newCap, headDim]) }
            values = (0..<layers).map { _ in Tensor(shape: [batch, kvHeads, newCap, headDim]) }
            if length > 0 {
                for l in 0..<layers {
                    for (src, dst) in [(oldK[l], keys[l]), (oldV[l], values[l])] {
                        for bh in 0..<(batch * kvHeads) {
                            (dst.data + bh * newCap * headDim).update(from: src.data + bh * capacity * headDim, count: length * headDim)
                        }
                    }
                }
            }
        }
        capacity = newCap
    }

    /// Appends k, v [B, kvHeads, T, D] of `layer` and returns all keys and values so far
    /// ([B, kvHeads, length + T, D], contiguous copies).
    func append(layer: Int, _ k: Tensor, _ v: Tensor) -> (Tensor, Tensor) {
        let t = k.shape[2]
        reserve(length + t)
        let total = length + t
        var out: [Tensor] = []
        for (src, store) in [(k, keys[layer]), (v, values[layer])] {
            let full = Tensor(shape: [batch, kvHeads, total, headDim])
            for bh in 0..<(batch * kvHeads) {
                let base = store.data + bh * capacity * headDim
                (base + length * headDim).update(from: src.data + bh * t * headDim, count: t * headDim)
                (full.data + bh * total * headDim).update(from: base, count: total * headDim)
            }
            out.append(full)
        }
        return (out[0], out[1])
    }

    /// Called once per forward pass after every layer appended.
    public func advance(by t: Int) { length += t }

    public func reset() { length = 0 }
}

/// One pre-norm decoder block: h + Attn(RMSNorm(h)), then + SwiGLU(RMSNorm(.)).
public final class LlamaBlock: Module, AttentionProjections {
    public let attentionNorm: RMSNorm
    /// `var`: methods swap these by name (`linearSlots()`) for wrapped or quantised layers.
    public var query: any LinearLayer
    public var key: any LinearLayer
    public var value: any LinearLayer
    public var output: any LinearLayer
    public let ffnNorm: RMSNorm
    public var gate: any LinearLayer
    public var up: any LinearLayer
    public var down: any LinearLayer
    public let config: LlamaConfig
    /// Rotary tables for the block's head size, used when it runs as a side block.
    public let _rope: RoPE

    public init(config: LlamaConfig, attentionNorm: RMSNorm, query: any LinearLayer, key: any LinearLayer, value: any LinearLayer,
                output: any LinearLayer, ffnNorm: RMSNorm, gate: any LinearLayer, up: any LinearLayer, down: any LinearLayer) {
        self.config = config
        self.attentionNorm = attentionNorm; self.query = query; self.key = key; self.value = value; self.output = output
        self.ffnNorm = ffnNorm; self.gate = gate; self.up = up; self.down = down
        _rope = RoPE(headDim: config.headDim, theta: config.ropeTheta)
        super.init()
    }

    /// x [B, T, d] at positions `start ..< start + T` -> [B, T, d]. `keyPadding` [B * keys] (1 real,
    /// 0 padding) masks padded keys on top of the causal mask (right-padded training batches).
    public func callAsFunction(_ x: Tensor, rope: RoPE, start: Int, cache: KVCache?, layer: Int,
                               keyPadding: [Float]? = nil) -> Tensor {
        let (b, t) = (x.shape[0], x.shape[1])
        let c = config, hd = c.headDim
        let h = attentionNorm(x)
        // [B, T, H*D] -> [B, H, T, D]
        let q = rope(query(h).reshaped([b, t, c.heads, hd]).permuted([0, 2, 1, 3]), start: start)
        var k = rope(key(h).reshaped([b, t, c.kvHeads, hd]).permuted([0, 2, 1, 3]), start: start)
        var v = value(h).reshaped([b, t, c.kvHeads, hd]).permuted([0, 2, 1, 3])
        if let cache { (k, v) = cache.append(layer: layer, k, v) }
        let rep = c.heads / c.kvHeads
        let a = Tensor.attention(q, repeatKV(k, rep), repeatKV(v, rep), mask: AttentionMask(keyPadding: keyPadding, causal: true),
                                 scale: 1 / Float(hd).squareRoot())
        let attn = output(a.permuted([0, 2, 1, 3]).reshaped([b, t, c.heads * hd]))
        let x1 = x + attn
        let f = ffnNorm(x1)
        return x1 + down(gate(f).silu() * up(f))
    }
}

/// [B, Hkv, T, D] -> [B, Hkv * rep, T, D], query head h reading kv head h / rep (HF `repeat_kv`).
func repeatKV(_ x: Tensor, _ rep: Int) -> Tensor {
    if rep == 1 { return x }
    let (b, hk, t, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let flat = x.reshaped([b, hk, 1, t * d])
    return Tensor.concat(Array(repeating: flat, count: rep), axis: 2).reshaped([b, hk * rep, t, d])
}

/// Rotary position embedding in Hugging Face's `rotate_half` convention: dimension i pairs with
/// i + D/2. (GGUF files store Q and K rows permuted for llama.cpp's adjacent-pair convention;
/// `Llama.load` un-permutes them, as transformers' GGUF loader does, so both agree.)
public struct RoPE: Sendable {
    public let headDim: Int
    public let theta: Float
    /// inv_freq[i] = theta^(-2i / D), computed in Float32 like transformers.
    let invFreq: [Float]

    public init(headDim: Int, theta: Float) {
        self.headDim = headDim
        self.theta = theta
        invFreq = (0..<(headDim / 2)).map { 1 / Foundation.pow(theta, Float(2 * $0) / Float(headDim)) }
    }

    /// cos and sin tables [T, D/2] for positions start ..< start + T.
    func tables(start: Int, count: Int) -> (cos: [Float], sin: [Float]) {
        let half = headDim / 2
        var c = [Float](repeating: 0, count: count * half), s = c
        for p in 0..<count {
            for i in 0..<half {
                let angle = Float(start + p) * invFreq[i]
                c[p * half + i] = Foundation.cos(angle)
                s[p * half + i] = Foundation.sin(angle)
            }
        }
        return (c, s)
    }

    /// x [B, H, T, D] rotated: out[i] = x[i] cos - x[i+D/2] sin, out[i+D/2] = x[i+D/2] cos + x[i] sin.
    public func callAsFunction(_ x: Tensor, start: Int) -> Tensor {
        let t = x.shape[2], half = headDim / 2
        let (cs, sn) = tables(start: start, count: t)
        if Autograd.isEnabled && x.requiresGrad {
            // Differentiable composite: x * cos + rotate_half(x) * sin.
            let c = Tensor(interleaveHalves(cs, t, half), shape: [t, headDim])
            let s = Tensor(interleaveHalves(sn, t, half), shape: [t, headDim])
            let x1 = x.slice(axis: 3, 0, half), x2 = x.slice(axis: 3, half, headDim)
            let rotated = Tensor.concat([-x2, x1], axis: 3)
            return x * c + rotated * s
        }
        let out = Tensor(shape: x.shape)
        let rows = x.count / (t * headDim)
        let px = x.data, po = out.data
        cs.withUnsafeBufferPointer { cp in
            sn.withUnsafeBufferPointer { sp in
                for r in 0..<rows {
                    for p in 0..<t {
                        let src = px + (r * t + p) * headDim, dst = po + (r * t + p) * headDim
                        let cr = cp.baseAddress! + p * half, sr = sp.baseAddress! + p * half
                        for i in 0..<half {
                            let a = src[i], b = src[i + half]
                            dst[i] = a * cr[i] - b * sr[i]
                            dst[i + half] = b * cr[i] + a * sr[i]
                        }
                    }
                }
            }
        }
        return out
    }

    /// [T, D/2] -> [T, D] with each row's halves repeated (HF's cat((freqs, freqs))).
    func interleaveHalves(_ v: [Float], _ t: Int, _ half: Int) -> [Float] {
        var out = [Float](repeating: 0, count: t * 2 * half)
        for p in 0..<t {
            for i in 0..<half {
                out[p * 2 * half + i] = v[p * half + i]
                out[p * 2 * half + half + i] = v[p * half + i]
            }
        }
        return out
    }
}

/// What a forward pass returns.
public struct LlamaOutput {
    /// [B, T, vocab], or [B, 1, vocab] for the last position only.
    public var logits: Tensor
    /// h_0 (embeddings) and the output of every block, before the final norm: layers + 1 tensors
    /// [B, T, d] (empty unless asked for).
    public var taps: [Tensor]
    /// The final norm's output [B, T, d].
    public var hidden: Tensor
}

/// A Llama decoder (SmolLM2, Llama 2/3 shapes) with taps after every block.
public final class Llama: Module {
    public let config: LlamaConfig
    public let embedding: Embedding
    public let layers: [LlamaBlock]
    public let norm: RMSNorm
    /// Separate LM head [vocab, d]; nil when tied to the embedding.
    public let lmHead: Tensor?
    public let rope: RoPE

    public init(config: LlamaConfig, embedding: Embedding, layers: [LlamaBlock], norm: RMSNorm, lmHead: Tensor?) {
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.norm = norm
        self.lmHead = lmHead
        rope = RoPE(headDim: config.headDim, theta: config.ropeTheta)
        super.init()
    }

    /// Builds the model from a GGUF file: every weight dequantised to F32 (ledger `.weights`),
    /// Q/K rows un-permuted from llama.cpp's layout to Hugging Face's, parameters frozen.
    public static func load(gguf f: GGUFFile, weights format: WeightFormat = .f32) throws -> Llama {
        let c = try LlamaConfig(gguf: f)
        let widths = ["llama.embedding_length", "llama.feed_forward_length", "heads x head dim"]
        if format == .nf4, let (key, n) = c.nf4Misfit(widths) {
            throw FormatError(.unsupported, file: f.path,
                              "\(key) is \(n), not a multiple of NF4's block of \(NF4.blockSize): load as f32")
        }
        func weight(_ name: String) throws -> Tensor {
            let t = try f.float32Tensor(name, category: .weights)
            guard t.allFinite else { throw FormatError(.badHeader, file: f.path, tensor: name, "holds NaN or infinite values") }
            t.requiresGrad = false
            return t
        }
        func linear(_ name: String, _ outF: Int, _ inF: Int, unpermuteHeads: Int? = nil) throws -> any LinearLayer {
            var w = try weight(name)
            guard w.shape == [outF, inF] else {
                throw FormatError(.shapeMismatch, file: f.path, tensor: name, "shape \(w.shape), expected [\(outF), \(inF)]")
            }
            if let heads = unpermuteHeads { w = unpermuteRows(w, heads: heads) }
            switch format {
            case .f32: return Linear(weight: w, bias: nil)
            case .nf4: return NF4Linear(NF4Weight(quantizing: w))
            }
        }
        func rmsNorm(_ name: String) throws -> RMSNorm {
            let n = RMSNorm(c.dim, eps: c.rmsEps)
            let w = try f.tensor(name)
            guard w.shape == [c.dim] else { throw FormatError(.shapeMismatch, file: f.path, tensor: name, "shape \(w.shape), expected [\(c.dim)]") }
            guard w.allFinite else { throw FormatError(.badHeader, file: f.path, tensor: name, "holds NaN or infinite values") }
            let values = w.float32() // a new tensor unless F32: alive until the copy is done
            withExtendedLifetime(values) { n.weight.data.update(from: values.data, count: c.dim) }
            n.weight.requiresGrad = false
            return n
        }
        let emb = try weight("token_embd.weight")
        guard emb.shape == [c.vocabSize, c.dim] else {
            throw FormatError(.shapeMismatch, file: f.path, tensor: "token_embd.weight", "shape \(emb.shape), expected [\(c.vocabSize), \(c.dim)]")
        }
        var blocks: [LlamaBlock] = []
        let kvDim = c.kvHeads * c.headDim
        for i in 0..<c.layers {
            let p = "blk.\(i)."
            blocks.append(LlamaBlock(
                config: c, attentionNorm: try rmsNorm(p + "attn_norm.weight"),
                query: try linear(p + "attn_q.weight", c.heads * c.headDim, c.dim, unpermuteHeads: c.heads),
                key: try linear(p + "attn_k.weight", kvDim, c.dim, unpermuteHeads: c.kvHeads),
                value: try linear(p + "attn_v.weight", kvDim, c.dim),
                output: try linear(p + "attn_output.weight", c.dim, c.heads * c.headDim),
                ffnNorm: try rmsNorm(p + "ffn_norm.weight"),
                gate: try linear(p + "ffn_gate.weight", c.ffnDim, c.dim),
                up: try linear(p + "ffn_up.weight", c.ffnDim, c.dim),
                down: try linear(p + "ffn_down.weight", c.dim, c.ffnDim)))
        }
        let head = c.tiedEmbeddings ? nil : try weight("output.weight")
        return Llama(config: c, embedding: Embedding(weight: emb), layers: blocks, norm: try rmsNorm("output_norm.weight"), lmHead: head)
    }

    /// Runs the decoder on ids [B * T] (row-major [B, T]) at positions cache.length ..< + T.
    /// - Parameters:
    ///   - ids: token ids [B * T], row-major [B, T].
    ///   - batch: B.
    ///   - cache: the KV cache to append to (decoding), or nil.
    ///   - lastOnly: compute logits for the last position only (generation).
    ///   - keepTaps: keep h_0 ... h_L.
    ///   - keyPadding: [B * T], 1 for real tokens and 0 for right padding (no cache).
    public func forward(_ ids: [Int32], batch: Int = 1, cache: KVCache? = nil, lastOnly: Bool = false,
                        taps keepTaps: Bool = false, keyPadding: [Float]? = nil) -> LlamaOutput {
        let (taps, hn) = hiddenStates(ids, batch: batch, cache: cache, taps: keepTaps, keyPadding: keyPadding)
        let t = hn.shape[1]
        let last = lastOnly && t > 1 ? hn.slice(axis: 1, t - 1, t) : hn
        return LlamaOutput(logits: lmLogits(last), taps: taps, hidden: hn)
    }

    /// The decoder without the LM head (classification and side networks do not need the
    /// [B, T, vocab] logits): the taps h_0 ... h_L when asked for, and the final norm's output.
    /// Records on the autograd tape when grad mode is on and something upstream needs a gradient
    /// (LoRA, full fine-tuning); side methods call it inside `noGrad`.
    public func hiddenStates(_ ids: [Int32], batch: Int = 1, cache: KVCache? = nil, taps keepTaps: Bool = false,
                             keyPadding: [Float]? = nil) -> (taps: [Tensor], hidden: Tensor) {
        let (taps, last) = blockOutputs(ids, batch: batch, cache: cache, taps: keepTaps, keyPadding: keyPadding)
        return (taps, norm(last))
    }

    /// The blocks' outputs before the final norm: the taps when asked for, and h_L. `prompt`
    /// [P, d] (prompt tuning) is prepended as P always-visible tokens at positions 0 ..< P and cut
    /// out of h_L (not of the taps); `keyPadding` covers the ids only.
    ///
    /// `frozen` runs every block without autograd while `body(i, h_i)`, called after each, runs in
    /// the caller's mode (QST's side layers record their steps between the frozen blocks).
    func blockOutputs(_ ids: [Int32], batch: Int, cache: KVCache? = nil, taps keepTaps: Bool, keyPadding: [Float]?,
                      prompt: Tensor? = nil, frozen: Bool = false, body: ((Int, Tensor) -> Void)? = nil) -> (taps: [Tensor], last: Tensor) {
        func run<T>(_ f: () -> T) -> T { frozen ? noGrad(f) : f() }
        precondition(ids.count % batch == 0, "\(ids.count) ids for batch \(batch)")
        let t = ids.count / batch
        if let keyPadding {
            precondition(keyPadding.count == ids.count, "key padding has \(keyPadding.count) values for \(ids.count) ids")
            precondition(cache == nil, "key padding is for training batches, not cached decoding")
        }
        let start = cache?.length ?? 0
        var h = run { embedding(ids, shape: [batch, t]) }
        var padding = keyPadding
        let p = prompt?.shape[0] ?? 0
        if let prompt {
            precondition(cache == nil, "prompts are for training batches, not cached decoding")
            let prompts = Tensor.zeros([batch, p, config.dim]) + prompt.reshaped([1, p, config.dim]) // broadcast, with autograd
            h = Tensor.concat([prompts, h], axis: 1)
            let rows = keyPadding ?? [Float](repeating: 1, count: ids.count)
            padding = (0..<batch).flatMap { b in [Float](repeating: 1, count: p) + rows[(b * t)..<((b + 1) * t)] }
        }
        var taps: [Tensor] = keepTaps ? [h] : []
        body?(0, h)
        for (i, block) in layers.enumerated() {
            h = run { block(h, rope: rope, start: start, cache: cache, layer: i, keyPadding: padding) }
            if keepTaps { taps.append(h) }
            body?(i + 1, h)
        }
        cache?.advance(by: t)
        return (taps, p > 0 ? h.slice(axis: 1, p, p + t) : h)
    }

    /// Logits [..., vocab] of final-norm outputs [..., d] through the (tied) LM head.
    public func lmLogits(_ hidden: Tensor) -> Tensor {
        hidden.matmul(lmHead ?? embedding.weight, transposeOther: true)
    }

    /// Rows [B, d] of x [B, T, d] at each row's last real token (`lengths[b] - 1`): the pooling of
    /// a decoder classifier (right padding; Hugging Face's `LlamaForSequenceClassification`).
    public static func lastTokenPool(_ x: Tensor, lengths: [Int]) -> Tensor {
        precondition(lengths.allSatisfy { $0 >= 1 }, "lastTokenPool: every row needs a token, lengths \(lengths)")
        return x.gatherPositions(lengths.map { $0 - 1 })
    }
}

/// Undoes llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`): within each head the
/// file interleaves the two rotary halves (row 2i = HF row i, row 2i+1 = HF row i + D/2).
public func unpermuteRows(_ w: Tensor, heads: Int) -> Tensor {
    let rows = w.shape[0], cols = w.shape[1]
    let hd = rows / heads, half = hd / 2
    let out = MemoryLedger.withCategory(w.storage.category) { Tensor(shape: w.shape) }
    for h in 0..<heads {
        for i in 0..<half {
            for (k, hfRow) in [i, i + half].enumerated() {
                let src = w.data + (h * hd + 2 * i + k) * cols
                (out.data + (h * hd + hfRow) * cols).update(from: src, count: cols)
            }
        }
    }
    out.requiresGrad = w.requiresGrad
    out.name = w.name
    return out
}

/// Sampling settings for `Llama.generate`.
public struct GenerateParameters: Sendable {
    public var maxTokens: Int
    /// 0 is greedy (argmax).
    public var temperature: Float
    public var seed: UInt64
    /// Token ids that end generation (not emitted).
    public var stopTokens: Set<Int32>
    public init(maxTokens: Int = 64, temperature: Float = 0, seed: UInt64 = 0, stopTokens: Set<Int32> = []) {
        self.maxTokens = maxTokens; self.temperature = temperature; self.seed = seed; self.stopTokens = stopTokens
    }
}

/// Progress of generation, reported per token.
public enum GenerateProgress {
    /// The prompt was processed (tokens, seconds).
    case prefill(tokens: Int, seconds: Double)
    case token(Int32)
}

extension Llama {
    /// Greedy or temperature sampling with a KV cache. `onProgress` returns false to stop.
    /// Returns the generated ids (stop token excluded).
    @discardableResult
    public func generate(prompt: [Int32], parameters p: GenerateParameters,
                         onProgress: (GenerateProgress) -> Bool = { _ in true }) -> [Int32] {
        precondition(!prompt.isEmpty, "generate needs at least one prompt token")
        // Never past the context the model was trained for (RoPE positions beyond it are untrained).
        var p = p
        p.maxTokens = max(0, min(p.maxTokens, config.contextLength - prompt.count))
        return noGrad {
            let cache = KVCache(config: config, capacity: prompt.count + p.maxTokens)
            var rng = SplitMix64(seed: p.seed)
            let t0 = Date()
            var logits = forward(prompt, cache: cache, lastOnly: true).logits
            guard onProgress(.prefill(tokens: prompt.count, seconds: Date().timeIntervalSince(t0))) else { return [] }
            var out: [Int32] = []
            while out.count < p.maxTokens {
                let next = sample(logits.data, count: config.vocabSize, temperature: p.temperature, rng: &rng)
                if p.stopTokens.contains(next) { break }
                out.append(next)
                if !onProgress(.token(next)) || out.count == p.maxTokens { break }
                logits = forward([next], cache: cache, lastOnly: true).logits
            }
            return out
        }
    }
}

/// Argmax (temperature 0; the first maximum on ties, as torch.argmax) or a draw from softmax(logits / T).
public func sample(_ logits: UnsafePointer<Float>, count n: Int, temperature: Float, rng: inout SplitMix64) -> Int32 {
    if temperature <= 0 {
        var best = 0
        for i in 1..<n where logits[i] > logits[best] { best = i }
        return Int32(best)
    }
    var m = -Float.infinity
    for i in 0..<n { m = max(m, logits[i]) }
    var probs = [Double](repeating: 0, count: n)
    var sum = 0.0
    for i in 0..<n { let e = Foundation.exp(Double((logits[i] - m) / temperature)); probs[i] = e; sum += e }
    var u = Double(rng.nextFloat()) * sum
    for i in 0..<n {
        u -= probs[i]
        if u <= 0 { return Int32(i) }
    }
    return Int32(n - 1)
}

// MARK: - Backbone

extension Llama: Backbone {
    public typealias Input = BatchEncoding
    public static var family: BackboneFamily { .llama }
    public var width: Int { config.dim }
    public var depth: Int { config.layers }

    /// Causal attention over right-padded rows: no packed kernel.
    public var packsFrozenTaps: Bool { false }
    public var packsTrainedForward: Bool { false }

    public func frozenTaps(_ batch: BatchEncoding, packed: Bool) -> [Tensor] {
        precondition(!packed, "Llama: no packed path")
        return blockOutputs(batch.ids, batch: batch.batchSize, taps: true, keyPadding: keyPaddingFloats(batch.attentionMask), frozen: true).taps
    }

    /// Block by block: each tap can be dropped once `body` returns (QST in evaluation).
    public func forEachFrozenTap(_ batch: BatchEncoding, _ body: (Int, Tensor) -> Void) {
        withoutActuallyEscaping(body) { body in
            _ = blockOutputs(batch.ids, batch: batch.batchSize, taps: false, keyPadding: keyPaddingFloats(batch.attentionMask),
                             frozen: true, body: body)
        }
    }

    public func trainedForward(_ batch: BatchEncoding, packed: Bool, prompt: Tensor?) -> Tensor {
        precondition(!packed, "Llama: no packed path")
        return blockOutputs(batch.ids, batch: batch.batchSize, taps: false, keyPadding: keyPaddingFloats(batch.attentionMask),
                            prompt: prompt).last
    }

    public func linearSlots() -> [LinearSlot] {
        layers.enumerated().flatMap { i, b -> [LinearSlot] in
            let p = "layers.\(i)."
            return b.attentionSlots(p) + [
                LinearSlot(name: p + "gate", role: .ffnGate, layer: b.gate) { b.gate = $0 },
                LinearSlot(name: p + "up", role: .ffnIn, layer: b.up) { b.up = $0 },
                LinearSlot(name: p + "down", role: .ffnOut, layer: b.down) { b.down = $0 },
            ]
        }
    }

    public var promptInitTable: Tensor? { embedding.weight }

    public func finalNorm(_ x: Tensor) -> Tensor { norm(x) }
    public var hasFinalNorm: Bool { true }

    /// The row at each text's last real token (right padding), as `LlamaForSequenceClassification`.
    public func pool(_ x: Tensor, layout: TokenLayout) -> Tensor {
        guard case .padded(let keyPadding) = layout else { preconditionFailure("Llama: no packed path") }
        return Llama.lastTokenPool(x, lengths: rowLengths(keyPadding, rows: x.shape[0]))
    }
    public var pooledWidth: Int { config.dim }
    public var poolPicksRows: Bool { true }
    /// Hugging Face's `score` head has no bias.
    public var headHasBias: Bool { false }

    /// A decoder layer at width d/r and FFN d_ff/r with the same numbers of heads and KV heads,
    /// PyTorch-default random initialisation (as QST's released code leaves its side layers).
    public func sideBlock(reduction r: Int, rng: inout SplitMix64) throws -> any SideBlock {
        let s = try Llama.sideConfig(config, reduction: r)
        let kv = s.kvHeads * s.headDim
        func lin(_ i: Int, _ out: Int) -> Linear { Linear(i, out, bias: false, rng: &rng) }
        return LlamaBlock(config: s, attentionNorm: RMSNorm(s.dim, eps: s.rmsEps), query: lin(s.dim, s.dim),
                          key: lin(s.dim, kv), value: lin(s.dim, kv), output: lin(s.dim, s.dim),
                          ffnNorm: RMSNorm(s.dim, eps: s.rmsEps), gate: lin(s.dim, s.ffnDim), up: lin(s.dim, s.ffnDim),
                          down: lin(s.ffnDim, s.dim))
    }

    public func sideNorm(width: Int) -> any NormLayer { RMSNorm(width, eps: config.rmsEps) }

    /// A side layer's configuration: width d/r, FFN d_ff/r, same heads and KV heads.
    public static func sideConfig(_ c: LlamaConfig, reduction r: Int) throws -> LlamaConfig {
        guard r >= 1, c.dim % r == 0, c.ffnDim % r == 0, (c.dim / r) % c.heads == 0, (c.dim / r / c.heads) % 2 == 0 else {
            throw BackboneError("reduction \(r) must divide width \(c.dim) and FFN width \(c.ffnDim) into \(c.heads) heads of an even size")
        }
        return LlamaConfig(vocabSize: c.vocabSize, dim: c.dim / r, ffnDim: c.ffnDim / r, layers: c.layers, heads: c.heads,
                           kvHeads: c.kvHeads, headDim: c.dim / r / c.heads, ropeTheta: c.ropeTheta, rmsEps: c.rmsEps,
                           contextLength: c.contextLength, tiedEmbeddings: c.tiedEmbeddings)
    }
}

/// A decoder layer as a side block: causal attention from position 0, padded rows only.
extension LlamaBlock: SideBlock {
    public func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor {
        guard case .padded(let keyPadding) = layout else { preconditionFailure("LlamaBlock: no packed path") }
        return self(x, rope: _rope, start: 0, cache: nil, layer: 0, keyPadding: keyPadding)
    }
    public var supportsPackedTokens: Bool { false }
}
