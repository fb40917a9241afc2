import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// What a side network needs to know of the backbone it sits beside: width, depth, heads, FFN
/// width, LayerNorm epsilon, and its block type (LST's side blocks are the backbone's blocks at
/// width d/r). LAST only needs width, depth and epsilon, so it serves any backbone.
public struct SideBackboneShape: Sendable, Equatable {
    public enum Family: Sendable, Equatable {
        /// Post-LN BERT layers (activation from the config).
        case bert(BertConfig)
        /// Pre-LN DINOv2 ViT blocks with LayerScale.
        case vit(ViTConfig)
    }

    public var family: Family

    public static func bert(_ c: BertConfig) -> SideBackboneShape { SideBackboneShape(family: .bert(c)) }
    public static func vit(_ c: ViTConfig) -> SideBackboneShape { SideBackboneShape(family: .vit(c)) }

    public var width: Int {
        switch family { case .bert(let c): c.hiddenSize; case .vit(let c): c.hiddenSize }
    }
    public var layers: Int {
        switch family { case .bert(let c): c.numHiddenLayers; case .vit(let c): c.layers }
    }
    public var heads: Int {
        switch family { case .bert(let c): c.numAttentionHeads; case .vit(let c): c.heads }
    }
    public var ffn: Int {
        switch family { case .bert(let c): c.intermediateSize; case .vit(let c): c.mlpSize }
    }
    public var eps: Float {
        switch family { case .bert(let c): c.layerNormEps; case .vit(let c): c.layerNormEps }
    }

    /// Checks that r divides the width into a multiple of the head count and divides the FFN width.
    func checkReduction(_ r: Int) throws {
        guard r >= 1, width % r == 0, (width / r) % heads == 0, ffn % r == 0 else {
            throw MethodError("LST: reduction \(r) must divide hidden size \(width) into a multiple of \(heads) heads and divide FFN size \(ffn)")
        }
    }

    /// One backbone-type block at width d/r, FFN d_ff/r, the same head count, randomly initialised
    /// as PyTorch would (BERT: Linear uniform, LayerNorm 1/0; ViT: the same, LayerScale 1).
    func sideBlock(reduction r: Int, rng: inout SplitMix64) throws -> any LadderBlock {
        try checkReduction(r)
        switch family {
        case .bert(let c):
            let block = BertLayer(try LSTSide.sideConfig(c, reduction: r))
            randomInit(block, rng: &rng)
            return block
        case .vit(let c):
            var s = c
            s.hiddenSize = c.hiddenSize / r
            s.mlpSize = c.mlpSize / r
            s.layers = 1
            return ViTBlock(config: s, rng: &rng)
        }
    }
}

/// A block of LST's ladder: the backbone's block type, over padded or packed tokens. Image
/// blocks have no padding: they ignore the layout and are never given packed tokens.
public protocol LadderBlock: Module {
    func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor
    /// Whether `.packed` layouts can run here.
    var supportsPackedTokens: Bool { get }
}

extension BertLayer: LadderBlock {
    public var supportsPackedTokens: Bool { attention.supportsPackedTokens }
}

extension ViTBlock: LadderBlock {
    public func callAsFunction(_ x: Tensor, layout: TokenLayout) -> Tensor { self(x) }
    public var supportsPackedTokens: Bool { false }
}
