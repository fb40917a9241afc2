import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN
import SideTuneTokenizers

/// One causal-LM tuning example: token ids and where the response starts (the loss covers the
/// response tokens only; the prompt is context).
public struct LMExample: Sendable, Equatable {
    public var ids: [Int32]
    public var responseStart: Int
    public init(ids: [Int32], responseStart: Int) {
        self.ids = ids
        self.responseStart = responseStart
    }
}

/// A right-padded batch of LM examples and the positions whose next token is a target.
public struct LMBatch {
    public var tokens: BatchEncoding
    /// Flat positions b * T + t (T the batch's longest example) whose next-token logits are trained
    /// on: the positions before every response token, example by example.
    public var targetPositions: [Int]

    public init(_ examples: [LMExample]) {
        precondition(!examples.isEmpty, "an LM batch needs examples")
        let t = examples.map(\.ids.count).max()!
        var ids: [Int32] = [], mask: [Int32] = [], positions: [Int] = []
        for (b, e) in examples.enumerated() {
            precondition(e.responseStart >= 1 && e.responseStart < e.ids.count, "response must start after the first token and hold a token")
            let pad = t - e.ids.count
            ids += e.ids + [Int32](repeating: 0, count: pad)
            mask += [Int32](repeating: 1, count: e.ids.count) + [Int32](repeating: 0, count: pad)
            // Position p predicts token p + 1.
            positions += ((e.responseStart - 1)..<(e.ids.count - 1)).map { b * t + $0 }
        }
        tokens = BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: ids.count), batchSize: examples.count,
                               seqLength: t, lengths: examples.map(\.ids.count))
        targetPositions = positions
    }
}

/// Prompt/response examples as the trainer batches them: the targets are every response token.
public struct LMSplit: TrainingData {
    public let examples: [LMExample]
    public init(_ examples: [LMExample]) { self.examples = examples }
    public var count: Int { examples.count }
    public func tokenCount(_ i: Int) -> Int { examples[i].ids.count }
    public func batch(_ indices: [Int]) -> LMBatch { LMBatch(indices.map { examples[$0] }) }
    public func targets(_ indices: [Int]) -> [Int32] {
        indices.flatMap { i in Array(examples[i].ids[examples[i].responseStart...]) }
    }
}

/// QST for causal-LM tuning: the side network's output mix goes through the frozen (tied) LM
/// head, as in the released code's `QSTLlamaForCausalLM`. Only the side network trains. To the
/// trainer it is a model whose logits rows are the next-token predictions at the response
/// positions (`LMBatch.targetPositions`), so the same loop, cache and checkpoints serve it.
public final class QSTLanguageModel: Module, TrainableModel {
    public let backbone: Llama
    public let side: QSTSide

    /// What the side network's backward keeps (`--activation-bits`; the backbone keeps nothing).
    public let activationBits: ActivationBits

    public init(backbone: Llama, options: QSTOptions, activationBits: ActivationBits = .thirtyTwo, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        backbone.freeze()
        self.backbone = backbone
        self.activationBits = activationBits
        side = try QSTSide(backbone: backbone, options: options, rng: &rng)
        super.init()
    }

    public var method: MethodKind { .qst }
    public var classes: Int { backbone.config.vocabSize }
    public var tapsRead: [Int] { Array(0...backbone.depth) }
    public var tapCount: Int { backbone.depth + 1 }
    public var tapWidth: Int { backbone.width }
    /// Causal attention within each example, per-token norms, per-position targets.
    public var examplesAreIndependent: Bool { true }

    public func frozenTaps(_ batch: LMBatch) -> [Tensor] { backbone.frozenTaps(batch.tokens, packed: false) }

    /// Logits [targets, vocab] at the batch's target positions (only those rows reach the head).
    public func recordLogits(_ batch: LMBatch, taps cached: [Tensor]?) -> Tensor {
        let layout = backbone.paddedLayout(batch.tokens)
        let s: Tensor, last: Tensor
        if let cached {
            (s, last) = (side.sideStates(taps: cached, layout: layout), cached[cached.count - 1])
        } else {
            (s, last) = side.run(backbone, ids: batch.tokens.ids, batch: batch.tokens.batchSize, keyPadding: keyPaddingFloats(batch.tokens.attentionMask))
        }
        let rows = batch.targetPositions.map(Int32.init)
        func gather(_ x: Tensor) -> Tensor { x.reshaped([x.count / x.shape[2], x.shape[2]]).embedding(rows) }
        return backbone.lmLogits(side.mix(side: gather(s), last: noGrad { gather(last) }))
    }

    /// Mean next-token cross-entropy over the response tokens of `examples` (right-padded).
    public func loss(_ examples: [LMExample]) -> Tensor {
        let split = LMSplit(examples), all = Array(0..<examples.count)
        return logits(split.batch(all), taps: nil).crossEntropy(targets: split.targets(all))
    }

    /// Logits [B, T, vocab] for ids [B * T] (right padding masked by `keyPadding`).
    public func logits(_ ids: [Int32], batch: Int = 1, keyPadding: [Float]? = nil) -> Tensor {
        let (s, last) = side.run(backbone, ids: ids, batch: batch, keyPadding: keyPadding)
        return backbone.lmLogits(side.mix(side: s, last: last))
    }

    /// Greedy decoding with the tuned side network. Stops at a stop token (not emitted).
    /// `cached`: the backbone and the side layers keep KV caches and each step runs the new token
    /// only; false recomputes the whole sequence per token (the reference the cache is tested against).
    public func generate(prompt: [Int32], maxTokens: Int, stopTokens: Set<Int32>, cached: Bool = true) -> [Int32] {
        precondition(!prompt.isEmpty, "generate needs a prompt token")
        return noGrad {
            var ids = prompt, out: [Int32] = []
            let v = backbone.config.vocabSize
            var rng = SplitMix64(seed: 0)
            let capacity = prompt.count + maxTokens
            let caches = cached ? (backbone: KVCache(config: backbone.config, capacity: capacity), side: side.makeCache(capacity: capacity)) : nil
            var feed = prompt
            while out.count < maxTokens {
                let l: Tensor
                if let caches {
                    let (s, last) = side.run(backbone, ids: feed, batch: 1, keyPadding: nil, caches: caches)
                    let t = feed.count
                    // The output mix and the head are per position: only the last one is needed.
                    l = backbone.lmLogits(side.mix(side: s.slice(axis: 1, t - 1, t), last: last.slice(axis: 1, t - 1, t)))
                } else {
                    l = logits(ids).slice(axis: 1, ids.count - 1, ids.count)
                }
                let next = sample(l.data, count: v, temperature: 0, rng: &rng)
                if stopTokens.contains(next) { break }
                out.append(next)
                ids.append(next)
                feed = [next]
            }
            return out
        }
    }
}

extension QSTSide {
    /// The side layers as decoder layers (QST on a Llama backbone).
    var decoderBlocks: [LlamaBlock] { blocks.map { $0 as! LlamaBlock } }

    /// An empty KV cache shaped for the side layers of a Llama backbone (width d/r, same heads).
    public func makeCache(batch: Int = 1, capacity: Int) -> KVCache {
        let c = decoderBlocks[0].config
        return KVCache(config: c, batch: batch, capacity: capacity)
    }

    /// SideNorm(s_L) [B, T, d/r] and h_L [B, T, d] for ids [B * T] on a Llama backbone: the backbone
    /// runs block by block in `noGrad`, interleaved with the side layers, so a tap lives only as
    /// long as backward needs it (in evaluation and generation: one block).
    ///
    /// With `caches` (incremental decoding, no key padding), ids are the positions after those
    /// already cached; both caches advance by T.
    public func run(_ backbone: Llama, ids: [Int32], batch: Int, keyPadding: [Float]?,
                    caches: (backbone: KVCache, side: KVCache)? = nil) -> (side: Tensor, last: Tensor) {
        let t = ids.count / batch
        precondition(caches == nil || keyPadding == nil, "key padding is for training batches, not cached decoding")
        precondition(caches.map { $0.backbone.length == $0.side.length } ?? true, "backbone and side caches out of step")
        let p0 = caches?.backbone.length ?? 0
        let sideBlocks = decoderBlocks
        var h = noGrad { backbone.embedding(ids, shape: [batch, t]) }
        var s = start(h)
        for (i, block) in backbone.layers.enumerated() {
            h = noGrad { block(h, rope: backbone.rope, start: p0, cache: caches?.backbone, layer: i, keyPadding: keyPadding) }
            let side = sideBlocks[i]
            s = side(gatedInput(i + 1, tap: h, state: s), rope: side._rope, start: p0, cache: caches?.side, layer: i,
                     keyPadding: keyPadding)
        }
        caches?.backbone.advance(by: t)
        caches?.side.advance(by: t)
        return (sideNorm(s), h)
    }
}
