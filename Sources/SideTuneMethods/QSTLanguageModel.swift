import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

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

/// QST for causal-LM tuning: the side network's output mix goes through the frozen (tied) LM
/// head, as in the released code's `QSTLlamaForCausalLM`. Only the side network trains.
public final class QSTLanguageModel: Module {
    public let backbone: Llama
    public let side: QSTSide

    public init(backbone: Llama, options: QSTOptions, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        backbone.freeze()
        self.backbone = backbone
        side = try QSTSide(backbone: backbone, options: options, rng: &rng)
        super.init()
    }

    /// Logits [B, T, vocab] for ids [B * T] (right padding masked by `keyPadding`).
    public func logits(_ ids: [Int32], batch: Int = 1, keyPadding: [Float]? = nil) -> Tensor {
        let (s, last) = side.run(backbone, ids: ids, batch: batch, keyPadding: keyPadding)
        return backbone.lmLogits(side.mix(side: s, last: last))
    }

    /// Mean next-token cross-entropy over the response tokens of a right-padded batch.
    public func loss(_ examples: [LMExample]) -> Tensor {
        precondition(!examples.isEmpty, "LM loss of no examples")
        let t = examples.map(\.ids.count).max()!
        var ids: [Int32] = [], kp: [Float] = [], targets: [Int32] = []
        for e in examples {
            precondition(e.responseStart >= 1 && e.responseStart < e.ids.count, "response must start after the first token and hold a token")
            let pad = t - e.ids.count
            ids += e.ids + [Int32](repeating: 0, count: pad)
            kp += [Float](repeating: 1, count: e.ids.count) + [Float](repeating: 0, count: pad)
            // Position p predicts token p + 1; only response tokens are targets.
            for p in 0..<t {
                let next = p + 1
                targets.append(next >= e.responseStart && next < e.ids.count ? e.ids[next] : -100)
            }
        }
        let v = backbone.config.vocabSize
        return logits(ids, batch: examples.count, keyPadding: kp).reshaped([examples.count * t, v])
            .crossEntropy(targets: targets, ignoreIndex: -100)
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
