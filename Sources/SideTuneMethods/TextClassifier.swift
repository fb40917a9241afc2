import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN
import SideTuneTokenizers

/// A sequence classifier: a BERT-family backbone plus what a method trains. Side methods (LST,
/// LAST, linear probe) run the backbone inside `noGrad` and never backpropagate into it; the
/// others (full, BitFit, LoRA, adapters, prompts) backpropagate through it.
///
/// Only `trainableParameters()` are saved in checkpoints and seen by the optimizer.
public final class TextClassifier: Module, ClassifierModel {
    public let backbone: BertEncoder
    public let reader: any TapReader
    /// Prompt tuning's prompt vectors [P, d] (nil for other methods).
    public let prompt: Tensor?
    public let _method: MethodKind
    public let _options: MethodOptions
    public let _classes: Int

    public var method: MethodKind { _method }
    public var options: MethodOptions { _options }
    public var classes: Int { _classes }

    /// Builds the method around `backbone` (which it freezes or modifies as the method needs).
    /// `fisherData` feeds LST's Fisher initialisation (ids of training examples with labels).
    public init(backbone: BertEncoder, method: MethodKind, classes: Int, options: MethodOptions, seed: UInt64,
                fisherData: [(ids: [Int32], label: Int)] = [], progress: ((String) -> Void)? = nil) throws {
        guard classes >= 2 else { throw MethodError("a classifier needs at least 2 classes, got \(classes)") }
        var rng = SplitMix64(seed: seed)
        let c = backbone.config
        self.backbone = backbone
        _method = method
        _options = options
        _classes = classes
        backbone.freeze()
        var promptTensor: Tensor?
        switch method {
        case .hst, .qst, .qlora:
            throw MethodError("method \(method.rawValue) is not available on a BERT text encoder (\(method.summary))")
        case .lst:
            let side = try LSTSide(backbone: c, classes: classes, options: options, rng: &rng)
            switch options.sideInit {
            case .random: break
            case .magnitude:
                try side.initializeFromBackbone(backbone, importance: Importance.magnitude(backbone))
            case .fisher:
                guard !fisherData.isEmpty else { throw MethodError("LST fisher initialisation needs training examples") }
                let n = min(options.fisherExamples, fisherData.count)
                progress?("LST: Fisher importance over \(n) training examples")
                let imp = Importance.fisher(backbone, classes: classes, examples: Array(fisherData.prefix(n)), rng: &rng)
                try side.initializeFromBackbone(backbone, importance: imp)
            }
            reader = side
        case .last:
            reader = try LASTSide(backbone: c, classes: classes, options: options, rng: &rng)
        case .linear:
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: 0, rng: &rng)
        case .full:
            backbone.unfreeze()
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: options.dropout, rng: &rng)
        case .bitfit:
            backbone.unfreezeBiases()
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: options.dropout, rng: &rng)
        case .lora:
            for layer in backbone.layers {
                layer.attention.query = LoRALinear(wrapping: layer.attention.query, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
                layer.attention.value = LoRALinear(wrapping: layer.attention.value, rank: options.loraRank, alpha: options.loraAlpha, rng: &rng)
            }
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: options.dropout, rng: &rng)
        case .adapter:
            for layer in backbone.layers {
                layer.attentionAdapter = BottleneckAdapter(c.hiddenSize, bottleneck: options.adapterBottleneck, rng: &rng)
                layer.outputAdapter = BottleneckAdapter(c.hiddenSize, bottleneck: options.adapterBottleneck, rng: &rng)
            }
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: options.dropout, rng: &rng)
        case .prompt:
            // Initialised from random vocabulary embeddings, as Lester et al. suggest.
            let p = Tensor(shape: [options.promptLength, c.hiddenSize])
            let table = backbone.embeddings.wordEmbeddings.weight
            for i in 0..<options.promptLength {
                let row = rng.nextInt(below: table.shape[0])
                (p.data + i * c.hiddenSize).update(from: table.data + row * c.hiddenSize, count: c.hiddenSize)
            }
            promptTensor = parameter(p, name: "prompt")
            reader = PooledHead(width: c.hiddenSize, classes: classes, dropout: options.dropout, skip: options.promptLength, rng: &rng)
        }
        prompt = promptTensor
        super.init()
    }

    /// Which taps a side method reads (all of h_0...h_L for LST and LAST; the last for the probe;
    /// none for methods that backpropagate through the backbone).
    public var tapsRead: [Int] {
        let l = backbone.config.numHiddenLayers
        guard method.readsFrozenTaps else { return [] }
        return method == .linear ? [l] : Array(0...l)
    }
    public var tapCount: Int { backbone.config.numHiddenLayers + 1 }
    public var tapWidth: Int { backbone.config.hiddenSize }

    /// The backbone's taps for a batch, without autograd (what side methods read, and cache):
    /// packed when the reader takes packed taps, so the frozen forward skips padding too.
    public func frozenTaps(_ batch: BatchEncoding) -> [Tensor] {
        if readsPackedTaps { return backbone.packedHiddenStates(batch).hiddenStates }
        return noGrad { backbone(batch).hiddenStates }
    }

    /// Logits [B, classes]. `taps` (from the feature cache) skips the backbone for side methods.
    public func logits(_ batch: BatchEncoding, taps: [Tensor]?) -> Tensor { self(batch, taps: taps) }

    /// Side methods whose reader has a packed path run it: no side-network work for padding,
    /// which is most of a padded batch of short texts. `SIDETUNE_PACK=0` turns it off (to compare).
    public var readsPackedTaps: Bool { method.readsFrozenTaps && readerPacks }

    public var readsBFloat16Taps: Bool { method.readsFrozenTaps && reader.readsBFloat16Taps }

    /// BERT and every method's additions treat every text apart (attention within it, LayerNorm
    /// per token, pooling per text, prompts per row); nothing keeps batch statistics.
    public var examplesAreIndependent: Bool { true }

    /// Methods that train the backbone (full, BitFit, LoRA, adapters) run it packed with autograd,
    /// so neither forward nor backward computes padding rows (for batches with enough padding:
    /// `paddingWorthSkipping`). Prompt tuning stays padded: its prompts are positions of every
    /// padded row.
    public var trainsPacked: Bool { !method.readsFrozenTaps && prompt == nil && readerPacks && backbone.supportsPackedTokens }

    private var readerPacks: Bool { packing && (reader as? PackedTapReader)?.readsPackedTaps == true }

    /// Whether batches run packed where the method allows (`readsPackedTaps`, `trainsPacked`);
    /// false runs every method padded, the reference the packed paths are tested against.
    public var packing = TextClassifier.packingEnabled

    /// Packing pays for the backprop methods when at least an eighth of the padded batch is
    /// padding. On equal lengths the padded path's GEMM attention (32-dim heads on MiniLM) was
    /// faster: a LoRA step took 0.46 s padded and 0.52 s packed (`bench step --seq 33`).
    static func paddingWorthSkipping(_ batch: BatchEncoding) -> Bool {
        8 * batch.lengths.reduce(0, +) <= 7 * batch.batchSize * batch.seqLength
    }

    static let packingEnabled = ProcessInfo.processInfo.environment["SIDETUNE_PACK"] != "0"

    public func callAsFunction(_ batch: BatchEncoding, taps cached: [Tensor]? = nil) -> Tensor {
        if readsPackedTaps, let packedReader = reader as? PackedTapReader {
            // Taps computed here, the first epoch's fresh ones and the cache's come packed [1, N, d];
            // padded ones a caller hands in are packed here. With one row the two layouts are the same.
            let segments = TokenSegments(lengths: batch.lengths)
            var taps = cached ?? frozenTaps(batch)
            noGrad {
                for i in taps.indices where taps[i].rank == 3 && taps[i].shape[0] == batch.batchSize && batch.batchSize > 1 {
                    taps[i] = taps[i].packed(segments)
                }
            }
            return packedReader(taps: taps, segments: segments)
        }
        let keyPadding = batch.attentionMask.map { $0 != 0 ? Float(1) : 0 }
        if method.readsFrozenTaps {
            let taps = cached ?? frozenTaps(batch)
            return reader(taps: taps, keyPadding: keyPadding)
        }
        if trainsPacked, TextClassifier.paddingWorthSkipping(batch), let packedReader = reader as? PackedTapReader {
            let out = backbone.packedForward(batch)
            return packedReader(taps: out.hiddenStates, segments: out.segments)
        }
        let out = backbone(batch, prompt: prompt)
        return reader(taps: out.hiddenStates, keyPadding: keyPadding)
    }
}
