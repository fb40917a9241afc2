import SideTuneEngine
import SideTuneNN

/// What the trainer needs of a classifier, whatever its backbone (BERT text encoder, ViT, LLM)
/// and whatever its input (token ids, images). `Batch` is the backbone's input for a batch.
public protocol ClassifierModel<Batch>: Module {
    associatedtype Batch
    var method: MethodKind { get }
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
    /// Logits [B, classes]. `taps` (from the feature cache, only when `tapsRead` is not empty)
    /// replaces the backbone pass.
    func logits(_ batch: Batch, taps: [Tensor]?) -> Tensor
    /// Whether `logits` takes packed taps ([1, N, d], the batch's real tokens end to end, as the
    /// feature cache's `packedTaps` builds them) and computes nothing for padding.
    var readsPackedTaps: Bool { get }
    /// Whether `logits` takes cached taps in bf16 as the feature cache stores them (else f32).
    var readsBFloat16Taps: Bool { get }
    /// Whether each example's logits depend on that example alone (no batch statistics such as
    /// BatchNorm's), so a training batch may run as parts on separate threads (`MicroBatches`).
    var examplesAreIndependent: Bool { get }
}

extension ClassifierModel {
    public var readsPackedTaps: Bool { false }
    public var readsBFloat16Taps: Bool { false }
    public var examplesAreIndependent: Bool { false }
}

/// A labelled split the trainer can batch: token rows, images, ...
public protocol ClassificationData<Batch> {
    associatedtype Batch
    var count: Int { get }
    var labels: [Int] { get }
    /// Tokens example `i` occupies in the backbone's taps (what the feature cache stores).
    func tokenCount(_ i: Int) -> Int
    /// The backbone input for these examples, in this order.
    func batch(_ indices: [Int]) -> Batch
}
