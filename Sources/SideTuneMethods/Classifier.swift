import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// What the trainer needs of a model, whatever its backbone (BERT text encoder, ViT, LLM), its
/// input (token ids, images) and its objective (labels, or next tokens for a language model).
/// `Batch` is the backbone's input for a batch.
public protocol TrainableModel<Batch>: Module {
    associatedtype Batch
    var method: MethodKind { get }
    /// Columns of the logits: the labels (the vocabulary for a language model).
    var classes: Int { get }
    /// Tap indices the method reads from a frozen backbone, which the feature cache may keep.
    /// Empty when backprop runs through the backbone (nothing can be cached).
    var tapsRead: [Int] { get }
    /// Number of taps the backbone yields (h_0...h_L) and their width.
    var tapCount: Int { get }
    var tapWidth: Int { get }
    /// The backbone's taps for a batch, without autograd: [B, T, d], or packed [1, N, d] (the
    /// batch's real tokens end to end) when `readsPackedTaps`.
    func frozenTaps(_ batch: Batch) -> [Tensor]
    /// The forward pass behind `logits`, as autograd records it. Callers use `logits`, which runs
    /// it under the model's `activationBits`, so no model can leave the setting out.
    func recordLogits(_ batch: Batch, taps: [Tensor]?) -> Tensor
    /// Bits per element of what backward keeps (`--activation-bits`): every model states its own.
    var activationBits: ActivationBits { get }
    /// Whether `logits` takes packed taps ([1, N, d], the batch's real tokens end to end, as the
    /// feature cache's `packedTaps` builds them) and computes nothing for padding.
    var readsPackedTaps: Bool { get }
    /// Whether `logits` takes cached taps in bf16 as the feature cache stores them (else f32).
    var readsBFloat16Taps: Bool { get }
    /// Whether each example's logits depend on that example alone (no batch statistics such as
    /// BatchNorm's), so a training batch may run as parts on separate threads (`MicroBatches`).
    var examplesAreIndependent: Bool { get }
}

extension TrainableModel {
    /// Logits, one row per target the data gives for the batch ([B, classes] for a classifier).
    /// `taps` (from the feature cache, only when `tapsRead` is not empty) replaces the backbone
    /// pass. What backward keeps follows `activationBits`.
    public func logits(_ batch: Batch, taps: [Tensor]?) -> Tensor {
        Tensor.withActivationBits(activationBits) { recordLogits(batch, taps: taps) }
    }

    public var readsPackedTaps: Bool { false }
    public var readsBFloat16Taps: Bool { false }
    public var examplesAreIndependent: Bool { false }
}

/// A split the trainer can batch: token rows, images, prompt/response pairs ...
public protocol TrainingData<Batch> {
    associatedtype Batch
    var count: Int { get }
    /// Tokens example `i` occupies in the backbone's taps (what the feature cache stores).
    func tokenCount(_ i: Int) -> Int
    /// The backbone input for these examples, in this order.
    func batch(_ indices: [Int]) -> Batch
    /// The target of each logits row of `batch(indices)`, in order.
    func targets(_ indices: [Int]) -> [Int32]
}

/// A labelled split: one target per example, its label.
public protocol ClassificationData<Batch>: TrainingData {
    var labels: [Int] { get }
}

extension ClassificationData {
    public func targets(_ indices: [Int]) -> [Int32] { indices.map { Int32(labels[$0]) } }
}

/// A backbone and what a method built on it (`MethodRegistry.build`): the one classifier of every
/// method but HST. Side methods (`tapsRead` not empty) run the backbone without autograd and
/// never backpropagate into it; the others run its trained forward and read its last hidden state.
///
/// Only `trainableParameters()` are saved in checkpoints and seen by the optimizer.
public final class Classifier<B: Backbone>: Module, TrainableModel {
    public typealias Batch = B.Input
    public let backbone: B
    public let reader: any TapReader
    /// Prompt tuning's prompt vectors [P, d] (nil for other methods).
    public let prompt: Tensor?
    let _method: MethodKind
    let _options: MethodOptions
    let _classes: Int
    let _tapsRead: [Int]

    /// Whether batches run packed where the method allows (`readsPackedTaps`, `trainsPacked`);
    /// false runs every method padded, the reference the packed paths are tested against.
    public var packing: Bool

    public init(backbone: B, method: MethodKind, classes: Int, options: MethodOptions, reader: any TapReader,
                tapsRead: [Int], prompt: Tensor? = nil) {
        self.backbone = backbone
        self.reader = reader
        self.prompt = prompt
        _method = method
        _options = options
        _classes = classes
        _tapsRead = tapsRead
        packing = options.packing ?? true
        super.init()
    }

    public var method: MethodKind { _method }
    public var options: MethodOptions { _options }
    public var classes: Int { _classes }
    public var tapsRead: [Int] { _tapsRead }
    public var tapCount: Int { backbone.depth + 1 }
    public var tapWidth: Int { backbone.width }
    /// Side methods read frozen taps only: backprop never enters the backbone.
    public var readsFrozenTaps: Bool { !_tapsRead.isEmpty }

    /// Side methods whose reader has a packed path run it: no side-network work for padding,
    /// which is most of a padded batch of short texts.
    public var readsPackedTaps: Bool { readsFrozenTaps && packing && backbone.packsFrozenTaps && reader.readsPackedTaps }
    public var readsBFloat16Taps: Bool { readsFrozenTaps && reader.readsBFloat16Taps }

    /// Every backbone and every method's additions here treat each example apart (attention
    /// within it, per-token norms, pooling per example, prompts per row).
    public var examplesAreIndependent: Bool { true }

    /// Methods that train the backbone run it packed with autograd where it can, so neither
    /// forward nor backward computes padding rows (for batches with enough padding:
    /// `paddingWorthSkipping`). Prompt tuning stays padded: its prompts are positions of every row.
    public var trainsPacked: Bool {
        !readsFrozenTaps && prompt == nil && packing && backbone.packsTrainedForward && reader.readsPackedTaps
    }

    /// Packing pays for the backprop methods when at least an eighth of the padded batch is
    /// padding. On equal lengths the padded path's GEMM attention (32-dim heads on MiniLM) was
    /// faster: a LoRA step took 0.46 s padded and 0.52 s packed (`bench step --seq 33`).
    static func paddingWorthSkipping(_ lengths: [Int]) -> Bool {
        8 * lengths.reduce(0, +) <= 7 * lengths.count * (lengths.max() ?? 0)
    }

    /// The backbone's taps for a batch, without autograd (what side methods read, and cache):
    /// packed when the reader takes packed taps, so the frozen forward skips padding too.
    public func frozenTaps(_ batch: B.Input) -> [Tensor] {
        Tensor.withMatmulPrecision(backbonePrecision) { backbone.frozenTaps(batch, packed: readsPackedTaps) }
    }

    /// The backbone's products: f32, or bf16 operands with f32 sums (`--backbone-precision`). Side
    /// methods' frozen forward; for the methods that train inside the backbone, its forward and
    /// backward products (the gradients' sums stay f32, the weights and optimizer state f32).
    public var backbonePrecision: MatmulPrecision { _options.backbonePrecision ?? .float32 }

    /// The backbone's trained forward (autograd on) in the backbone's precision.
    func trainedForward(_ batch: B.Input, packed: Bool, prompt: Tensor?) -> Tensor {
        Tensor.withMatmulPrecision(backbonePrecision) { backbone.trainedForward(batch, packed: packed, prompt: prompt) }
    }

    /// Bits per element of what backward keeps (`--activation-bits`; 32 unless set).
    public var activationBits: ActivationBits { MethodRegistry.activationBits(method, options: _options) }

    public func recordLogits(_ batch: B.Input, taps cached: [Tensor]?) -> Tensor {
        Tensor.withAttentionRecompute(MethodRegistry.method(method).recomputesAttentionProjections) {
            recordedLogits(batch, taps: cached)
        }
    }

    private func recordedLogits(_ batch: B.Input, taps cached: [Tensor]?) -> Tensor {
        if readsPackedTaps {
            // Taps computed here, the first epoch's fresh ones and the cache's come packed [1, N, d];
            // padded ones a caller hands in are packed here. With one row the two layouts are the same.
            let lengths = backbone.tokenLengths(batch)
            let segments = TokenSegments(lengths: lengths)
            var taps = cached ?? frozenTaps(batch)
            noGrad {
                for i in taps.indices where taps[i].rank == 3 && taps[i].shape[0] == lengths.count && lengths.count > 1 {
                    taps[i] = taps[i].packed(segments)
                }
            }
            return reader(taps: taps, layout: .packed(segments))
        }
        let layout = backbone.paddedLayout(batch)
        if readsFrozenTaps {
            if cached == nil, let streaming = reader as? any StreamingTapReader {
                return streaming(streaming: { body in
                    Tensor.withMatmulPrecision(backbonePrecision) { backbone.forEachFrozenTap(batch, body) }
                }, layout: layout)
            }
            return reader(taps: cached ?? frozenTaps(batch), layout: layout)
        }
        if trainsPacked {
            let lengths = backbone.tokenLengths(batch)
            if Self.paddingWorthSkipping(lengths) {
                let last = trainedForward(batch, packed: true, prompt: nil)
                return reader(taps: [last], layout: .packed(TokenSegments(lengths: lengths)))
            }
        }
        return reader(taps: [trainedForward(batch, packed: false, prompt: prompt)], layout: layout)
    }

    public func callAsFunction(_ batch: B.Input, taps: [Tensor]? = nil) -> Tensor { logits(batch, taps: taps) }
}
