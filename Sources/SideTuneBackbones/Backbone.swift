import SideTuneEngine
import SideTuneNN
import SideTuneTokenizers

/// The kinds of backbone SideTune builds methods on. Each has one file here that makes it a
/// `Backbone`; the method registry (SideTuneMethods) refuses or builds every method against it.
public enum BackboneFamily: String, Codable, Sendable, CaseIterable {
    /// Post-LN BERT text encoders (MiniLM).
    case bert
    /// Pre-LN DINOv2 vision transformers (ViT-S/14).
    case vit
    /// Llama-family decoders (SmolLM2).
    case llama

    public var summary: String {
        switch self {
        case .bert: "BERT-family text encoder"
        case .vit: "DINOv2 ViT image encoder"
        case .llama: "Llama-family decoder LLM"
        }
    }
}

/// What a projection does in its block, so that methods pick layers by role, whatever the
/// backbone calls them (LoRA: query and value; adapters: the two outputs into the residual).
public enum LinearRole: String, Sendable, CaseIterable {
    case query, key, value, attentionOutput, ffnIn, ffnGate, ffnOut
}

/// One named projection of a backbone block and the way to swap it: LoRA, adapters, BitFit's
/// added biases and NF4 quantisation attach by name, as MLX's LoRA conversion does.
public struct LinearSlot {
    /// Module path of the layer, e.g. `layers.3.attention.query`.
    public let name: String
    public let role: LinearRole
    public let layer: any LinearLayer
    let set: (any LinearLayer) -> Void

    public init(name: String, role: LinearRole, layer: any LinearLayer, set: @escaping (any LinearLayer) -> Void) {
        self.name = name
        self.role = role
        self.layer = layer
        self.set = set
    }

    /// Puts `replacement` where the layer was.
    public func replace(with replacement: any LinearLayer) { set(replacement) }
}

/// A block of a backbone's own type at a reduced width, over padded or packed tokens: the side
/// blocks of LST and QST. Image blocks have no padding and ignore the layout.
public protocol SideBlock: Module {
    func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor
    /// Whether `.packed` layouts can run here.
    var supportsPackedTokens: Bool { get }
}

/// A pretrained transformer as every method sees it: its width and depth, the taps h_0 ... h_L a
/// side network reads (one layout for all: [B, T, d] padded, or [1, N, d] packed), its frozen
/// no-grad forward, its forward with autograd for the methods that train inside it, its named
/// projections, its classification read-out, and a block of its type at any width.
///
/// `Input` is what a batch of examples is: token rows (`BatchEncoding`) or pixels [B, 3, H, W].
public protocol Backbone: Module {
    associatedtype Input
    static var family: BackboneFamily { get }
    /// Width d of every tap.
    var width: Int { get }
    /// Blocks L: the taps are h_0 (embeddings) ... h_L.
    var depth: Int { get }
    /// The weight format of the blocks' projections.
    var weightFormat: WeightFormat { get }

    /// Real tokens of each example of a batch, and the padded layout of its taps ([B * T] key
    /// padding, T the longest example; images have no padding).
    func tokenLengths(_ input: Input) -> [Int]
    func paddedLayout(_ input: Input) -> TokenLayout
    /// Whether the frozen taps, and the trained forward, can run packed (real tokens only).
    var packsFrozenTaps: Bool { get }
    var packsTrainedForward: Bool { get }

    /// h_0 ... h_L without autograd: padded [B, T, d], or packed [1, N, d] (needs `packsFrozenTaps`).
    func frozenTaps(_ input: Input, packed: Bool) -> [Tensor]
    /// Calls `body(i, h_i)` for i = 0 ... L in order, without autograd, padded. A backbone that
    /// runs block by block lets each tap go after its call (QST in evaluation holds one block).
    func forEachFrozenTap(_ input: Input, _ body: (Int, Tensor) -> Void)
    /// h_L (before any final norm) with autograd, for the methods that train inside the backbone;
    /// `prompt` [P, d] (prompt tuning) is prepended to the tokens and stripped from the result.
    func trainedForward(_ input: Input, packed: Bool, prompt: Tensor?) -> Tensor

    /// The blocks' projections, block by block in forward order.
    func linearSlots() -> [LinearSlot]
    /// The embedding rows prompt tuning starts from (nil: a small normal draw).
    var promptInitTable: Tensor? { get }

    /// The backbone's final norm on the last tap (identity when the taps are already normalised,
    /// as a post-LN BERT's are).
    func finalNorm(_ x: Tensor) -> Tensor
    var hasFinalNorm: Bool { get }
    /// The classification read-out of a [B, T, d] or packed stream: [B, pooledWidth].
    func pool(_ x: Tensor, layout: TokenLayout) -> Tensor
    var pooledWidth: Int { get }
    /// Whether `pool` picks rows (so per-token maps commute with it: pool first, compute less).
    var poolPicksRows: Bool { get }
    /// Whether the classifier on the pooled read-out has a bias (Llama's `score` has none).
    var headHasBias: Bool { get }

    /// A randomly initialised block of this backbone's type at width d/r and FFN width d_ff/r with
    /// the same head count (LST's and QST's side blocks); throws when r does not fit.
    func sideBlock(reduction r: Int, rng: inout SplitMix64) throws -> any SideBlock
    /// A norm of this backbone's kind (LayerNorm or RMSNorm) for a side stream of width `width`.
    func sideNorm(width: Int) -> any NormLayer
}

extension Backbone {
    public func forEachFrozenTap(_ input: Input, _ body: (Int, Tensor) -> Void) {
        for (i, tap) in frozenTaps(input, packed: false).enumerated() { body(i, tap) }
    }

    public var weightFormat: WeightFormat { linearSlots().contains { $0.layer.innermost is NF4Linear } ? .nf4 : .f32 }
    public var poolPicksRows: Bool { false }
    public var headHasBias: Bool { true }

    /// Stores every F32 block projection in NF4 (`WeightFormat.nf4`); refuses rows that are not
    /// a multiple of NF4's block, naming the layer.
    public func quantizeProjections() throws {
        for slot in linearSlots() {
            guard let linear = slot.layer.plain else { continue }
            guard linear.inFeatures % NF4.blockSize == 0 else {
                throw BackboneError("\(slot.name): \(linear.inFeatures) inputs are not a multiple of NF4's block of \(NF4.blockSize); use --weights f32")
            }
            slot.replace(with: MemoryLedger.withCategory(.weights) { NF4Linear(quantizing: linear) })
        }
    }
}

/// Backbones that read token rows: each row's real tokens and its key padding come with the batch.
extension Backbone where Input == BatchEncoding {
    public func tokenLengths(_ batch: BatchEncoding) -> [Int] { batch.lengths }
    public func paddedLayout(_ batch: BatchEncoding) -> TokenLayout { .padded(keyPadding: keyPaddingFloats(batch.attentionMask)) }
}

/// An attention with separate query, key, value and output projections (every backbone's block).
public protocol AttentionProjections: AnyObject {
    var query: any LinearLayer { get set }
    var key: any LinearLayer { get set }
    var value: any LinearLayer { get set }
    var output: any LinearLayer { get set }
}

extension AttentionProjections {
    /// The four projections as slots named `prefix` + query, key, value, output.
    public func attentionSlots(_ prefix: String) -> [LinearSlot] {
        [LinearSlot(name: prefix + "query", role: .query, layer: query) { self.query = $0 },
         LinearSlot(name: prefix + "key", role: .key, layer: key) { self.key = $0 },
         LinearSlot(name: prefix + "value", role: .value, layer: value) { self.value = $0 },
         LinearSlot(name: prefix + "output", role: .attentionOutput, layer: output) { self.output = $0 }]
    }

    /// The heads' outputs side by side [B, T, d] from `Tensor.projectedSelfAttention`, which keeps x
    /// rather than q, k and v for backward, when `AttentionRecompute` asks for it and autograd will
    /// record here with q, k and v plain layers of frozen weights and biases; nil otherwise (the
    /// caller runs the projections and `attention` itself).
    public func recomputedContext(_ x: Tensor, heads: Int, mask: AttentionMask) -> Tensor? {
        guard AttentionRecompute.projections && Autograd.isEnabled else { return nil }
        let layers = [query, key, value].compactMap { $0 as? Linear }
        let projections = layers.compactMap { l in l.bias.map { (weight: l.weight, bias: $0) } }
        guard projections.count == 3 && projections.allSatisfy({ !$0.weight.requiresGrad }) else { return nil }
        return Tensor.projectedSelfAttention(x, query: projections[0], key: projections[1], value: projections[2],
                                             heads: heads, mask: mask)
    }
}

public struct BackboneError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The key padding of a padded batch as floats (1 real, 0 padding).
public func keyPaddingFloats(_ mask: [Int32]) -> [Float] { mask.map { $0 != 0 ? Float(1) : 0 } }

/// Real tokens per row of a right-padded [B * T] key padding.
public func rowLengths(_ keyPadding: [Float], rows: Int) -> [Int] {
    let t = rows == 0 ? 0 : keyPadding.count / rows
    return (0..<rows).map { r in (0..<t).reduce(0) { $0 + (keyPadding[r * t + $1] != 0 ? 1 : 0) } }
}
