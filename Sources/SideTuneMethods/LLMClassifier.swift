import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN
import SideTuneTokenizers

/// LoRA on any linear layer of the decoder (F32 `Linear` for LoRA, `NF4Linear` for QLoRA):
/// y = base(x) + (alpha / r) x A^T B^T, A uniform(+-1/sqrt(in)), B zero, base frozen. Backprop
/// passes through the base to x (for NF4 with the weight de-quantised tile by tile).
public final class LoRALayer: Module, LinearLayer {
    public let base: any LinearLayer
    public let loraA: Tensor
    public let loraB: Tensor
    let _scale: Float

    public init(wrapping base: any LinearLayer, rank: Int, alpha: Float, rng: inout SplitMix64) {
        let bound = 1 / Float(base.inFeatures).squareRoot()
        loraA = parameter(.uniform([rank, base.inFeatures], low: -bound, high: bound, rng: &rng), name: "lora_a")
        loraB = parameter(.zeros([base.outFeatures, rank]), name: "lora_b")
        _scale = alpha / Float(rank)
        self.base = base
        base.freeze()
        super.init()
    }

    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        base(x) + x.matmul(loraA, transposeOther: true).matmul(loraB, transposeOther: true) * _scale
    }
}

/// A sequence classifier on a Llama decoder: the logits at each row's last real token (right
/// padding), as Hugging Face's `LlamaForSequenceClassification`. Methods:
/// - `qst`: the QST side network reads the frozen taps (backbone in `noGrad`, usually NF4);
/// - `linear`: a probe on FrozenNorm(h_L) at the last token (frozen taps);
/// - `lora` / `qlora`: LoRA on the query and value projections of the F32 / NF4 backbone, with
///   backprop through every block; `full`: every backbone weight trains (F32).
/// Every method ends in `score`: Linear(d -> classes, no bias).
public final class LLMClassifier: Module, ClassifierModel {
    public let backbone: Llama
    public let side: QSTSide?
    public let score: Linear
    public let _method: MethodKind
    public let _classes: Int

    public var method: MethodKind { _method }
    public var classes: Int { _classes }

    /// The methods a Llama decoder supports here.
    public static let methods: [MethodKind] = [.qst, .qlora, .lora, .full, .linear]

    public init(backbone: Llama, method: MethodKind, classes: Int, options: MethodOptions, seed: UInt64) throws {
        guard classes >= 2 else { throw MethodError("a classifier needs at least 2 classes, got \(classes)") }
        guard Self.methods.contains(method) else {
            throw MethodError("method \(method.rawValue) is not available on a Llama decoder (available: \(Self.methods.map(\.rawValue).joined(separator: ", ")))")
        }
        let nf4 = backbone.layers.first.map { $0.query is NF4Linear || ($0.query as? LoRALayer)?.base is NF4Linear } ?? false
        if method == .qlora && !nf4 { throw MethodError("qlora needs the NF4 backbone (--weights nf4)") }
        if (method == .lora || method == .full) && nf4 {
            throw MethodError("\(method.rawValue) trains on the F32 backbone (--weights f32); NF4 weights cannot be fine-tuned")
        }
        var rng = SplitMix64(seed: seed)
        self.backbone = backbone
        _method = method
        _classes = classes
        backbone.freeze()
        switch method {
        case .qst:
            side = try QSTSide(backbone: backbone, options: options.qst, rng: &rng)
        case .lora, .qlora:
            side = nil
            for block in backbone.layers {
                block.query = LoRALayer(wrapping: block.query, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
                block.value = LoRALayer(wrapping: block.value, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
            }
        case .full:
            side = nil
            backbone.unfreeze()
        default:
            side = nil
        }
        score = Linear(backbone.config.dim, classes, bias: false, rng: &rng)
        super.init()
    }

    public var tapCount: Int { backbone.config.layers + 1 }
    public var tapWidth: Int { backbone.config.dim }
    public var tapsRead: [Int] {
        switch method {
        case .qst: Array(0...backbone.config.layers)
        case .linear: [backbone.config.layers]
        default: []
        }
    }

    /// The decoder, QST's side decoder layers and LoRA treat every text apart (causal attention
    /// within each row, RMSNorm per token, pooling at each row's last real token).
    public var examplesAreIndependent: Bool { true }

    static func keyPadding(_ batch: BatchEncoding) -> [Float] { batch.attentionMask.map { $0 != 0 ? 1 : 0 } }

    public func frozenTaps(_ batch: BatchEncoding) -> [Tensor] {
        noGrad { backbone.hiddenStates(batch.ids, batch: batch.batchSize, taps: true, keyPadding: Self.keyPadding(batch)).taps }
    }

    public func logits(_ batch: BatchEncoding, taps cached: [Tensor]?) -> Tensor {
        let lengths = batch.lengths
        switch method {
        case .qst:
            let (s, last) = qstStates(batch, taps: cached)
            // The mix is per position, so it is taken at the pooled rows only.
            let mixed = side!.mix(side: Llama.lastTokenPool(s, lengths: lengths), last: Llama.lastTokenPool(last, lengths: lengths))
            return score(mixed)
        case .linear:
            let last = cached?[backbone.config.layers] ?? frozenTaps(batch)[backbone.config.layers]
            return score(noGrad { backbone.norm(Llama.lastTokenPool(last, lengths: lengths)) })
        default:
            let hidden = backbone.hiddenStates(batch.ids, batch: batch.batchSize, keyPadding: Self.keyPadding(batch)).hidden
            return score(Llama.lastTokenPool(hidden, lengths: lengths))
        }
    }

    /// QST: SideNorm(s_L) [B, T, d/r] and h_L [B, T, d].
    func qstStates(_ batch: BatchEncoding, taps cached: [Tensor]?) -> (side: Tensor, last: Tensor) {
        let kp = Self.keyPadding(batch)
        if let cached { return (side!.sideStates(taps: cached, keyPadding: kp), cached[backbone.config.layers]) }
        return side!.run(backbone, ids: batch.ids, batch: batch.batchSize, keyPadding: kp)
    }
}
