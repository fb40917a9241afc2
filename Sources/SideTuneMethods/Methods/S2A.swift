import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// S2A, Structure to Activation (Jin et al., arXiv 2503.08154; no public code): train only
/// structures whose own gradients read no activations, and keep what the backward pass needs of
/// the frozen nonlinearities in few bits. Here (docs/methods.md gives the choices where the paper
/// is silent):
/// - the biases of the top blocks (`--s2a-layers`, the top half unless told) and of the final
///   norm, as BitFit (zero biases are added to bias-free projections there). Blocks below have
///   nothing that trains under them, so autograd records nothing there and keeps none of their
///   activations;
/// - a light side module beside the head: a residual bottleneck (width / 8) on the pooled output,
///   which keeps B x width values, not tokens;
/// - optional prompt tokens at the input (`--s2a-prompt-length`, none unless told), as prompt
///   tuning: any prompt makes backward reach every block;
/// - 4-bit codes of GELU's and SiLU's derivative and bf16 copies of what LayerNorm and attention
///   read (`--activation-bits 4`, the method's default; `ActivationBits`);
/// - attention's q, k and v recomputed in backward from their (bf16) input on padded batches, so
///   a block keeps one copy of its normalised input instead of three projections
///   (`AttentionRecompute`).
public enum S2AMethod: AdaptationMethod {
    public static let kind = MethodKind.s2a
    public static let summary = "S2A: top blocks' biases and a pooled side module train; 4-bit activation codes"
    public static let defaultLearningRate: Float = 3e-3
    public static let defaultActivationBits = ActivationBits.four
    public static let recomputesAttentionProjections = true

    /// The first block whose biases train, of `depth`.
    static func firstTunedBlock(depth: Int, options: MethodOptions) throws -> Int {
        let k = options.s2aLayers ?? (depth + 1) / 2
        guard k >= 1 && k <= depth else { throw MethodError("s2a: --s2a-layers must be in 1...\(depth) on this backbone, got \(k)") }
        return depth - k
    }

    /// The block a parameter or layer path (`layers.3.attention.query`) sits in, if any.
    static func block(of name: String) -> Int? {
        let parts = name.split(separator: ".", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "layers" else { return nil }
        return Int(parts[1])
    }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let first = try firstTunedBlock(depth: c.backbone.depth, options: c.options)
        let tuned = { (name: String) in (block(of: name) ?? -1) >= first || name == "norm.bias" }
        for slot in c.backbone.linearSlots() where !slot.layer.hasBias && tuned(slot.name) {
            slot.replace(with: MemoryLedger.withCategory(.weights) { BiasedLinear(wrapping: slot.layer) })
        }
        for (name, p) in c.backbone.namedParameters() where name.hasSuffix(".bias") && tuned(name) { p.requiresGrad = true }
        var prompt: Tensor?
        if let n = c.options.s2aPromptLength, n > 0 { prompt = PromptTuningMethod.prompt(n, &c) }
        let head = SideModuleHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [],
                          prompt: prompt)
    }
}

/// The head with S2A's side module: pooled h -> h + up(GELU(down(h))) -> dropout -> classes. `up`
/// starts at zero, so training starts from the plain head.
public final class SideModuleHead: Module, TapReader {
    public let down: Linear
    public let up: Linear
    public let classifier: Linear
    public let dropout: Dropout
    let _readout: Readout

    public init<B: Backbone>(_ backbone: B, classes: Int, dropout p: Float, rng: inout SplitMix64) {
        let width = backbone.pooledWidth, bottleneck = max(1, width / 8)
        down = Linear(width, bottleneck, rng: &rng)
        up = Linear(bottleneck, width, rng: &rng)
        up.weight.data.initialize(repeating: 0, count: up.weight.count)
        up.bias!.data.initialize(repeating: 0, count: width)
        classifier = Linear(width, classes, bias: backbone.headHasBias, rng: &rng)
        dropout = Dropout(p, seed: rng.next())
        _readout = Readout(backbone)
        super.init()
    }

    public func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor {
        let h = _readout(taps, layout: layout)
        return classifier(dropout(h + up(down(h).gelu())))
    }

    public var readsPackedTaps: Bool { _readout.packs }
}
