import SideTuneBackbones
import SideTuneEngine
import Foundation

/// Every adaptation method SideTune trains. What each is, and on which backbones it runs, is in
/// its file under `Methods/` and in `MethodRegistry`.
public enum MethodKind: String, CaseIterable, Codable, Sendable {
    case lst, last, hst, qst, full, linear, bitfit, lora, qlora, adapter, prompt, s2a
}

/// How LST's side blocks start.
public enum SideInit: String, Codable, Sendable, CaseIterable {
    /// Pruned from the backbone by Fisher importance (squared per-example gradients).
    case fisher
    /// Pruned by |W|.
    case magnitude
    /// PyTorch-style random initialisation.
    case random
}

/// Options of every method (defaults from the papers, see docs/methods.md), each default written
/// here once: the CLI's flags take theirs from `MethodOptions()`. Codable: saved with checkpoints
/// so a run can be reproduced and a checkpoint reloaded with its exact network.
public struct MethodOptions: Codable, Sendable, Equatable {
    // LST
    public var reduction = 8
    public var gateTemperature: Float = 0.1
    public var sideInit: SideInit = .fisher
    public var fisherExamples = 1024
    /// Side layers (1-based backbone layer numbers) that are dropped; s passes through them.
    public var droppedLayers: [Int] = []
    /// Pool the side output over tokens (mean) or take the first token.
    public var pooling: Pooling = .mean
    // LAST
    public var rank = 16
    public var groupSize = 1
    public var attentionTemperature: Float = 1
    public var biasCorrection = true
    // LoRA / adapters / prompts
    public var loraRank = 8
    public var loraAlpha: Float = 16
    public var adapterBottleneck = 64
    public var promptLength = 20
    /// S2A's prompt tokens at the input (nil: none). Prompts make backward reach every block (and
    /// keep batches padded), whatever `s2aLayers` says.
    public var s2aPromptLength: Int?
    /// S2A: how many of the top blocks tune their biases (nil: the top half, rounded up). Blocks
    /// below record nothing for backward.
    public var s2aLayers: Int?
    // all
    public var dropout: Float = 0.1
    /// LST and LAST: the side network's linear products in f32 (nil, the default) or with bf16
    /// operands and f32 sums (`MatmulPrecision.bfloat16`). Optional so older checkpoints load.
    public var sideMatmul: MatmulPrecision?
    /// Side methods and the linear probe: the frozen backbone's products in f32 (nil, the default)
    /// or with bf16 operands and f32 sums (LayerNorm, softmax, GELU and residual sums stay f32).
    public var backbonePrecision: MatmulPrecision?
    /// Bits per element of the tensors kept for backward (`ActivationBits`); nil is 32, exact.
    /// Optional so older checkpoints load.
    public var activationBits: ActivationBits?
    /// The backbone's projections: nil for the method's default (NF4 for qst and qlora, F32 else).
    public var weights: WeightFormat?
    /// Whether batches run packed (real tokens only) where the method and backbone allow; nil is
    /// on. Off runs every batch padded: the reference the packed paths are tested against.
    public var packing: Bool?
    // QST
    public var qst = QSTOptions()
    // HST: the side network's shape (nil: the paper's, `HSTConfig()`).
    public var hst: HSTConfig?

    public enum Pooling: String, Codable, Sendable, CaseIterable { case mean, first }

    public init() {}

    /// Refuses values no method can build with (read from a checkpoint or set in code), naming
    /// each field and what it must be.
    public func validate() throws {
        var problems: [String] = []
        func atLeast1(_ name: String, _ v: Int) { if v < 1 || v > 1 << 20 { problems.append("\(name) must be in 1...\(1 << 20), got \(v)") } }
        func positive(_ name: String, _ v: Float) { if !(v > 0 && v.isFinite) { problems.append("\(name) must be a positive number, got \(v)") } }
        atLeast1("reduction", reduction)
        atLeast1("fisherExamples", fisherExamples)
        atLeast1("rank", rank)
        atLeast1("groupSize", groupSize)
        atLeast1("loraRank", loraRank)
        atLeast1("adapterBottleneck", adapterBottleneck)
        atLeast1("promptLength", promptLength)
        if let n = s2aPromptLength, n < 0 || n > 1 << 12 { problems.append("s2aPromptLength must be in 0...4096, got \(n)") }
        if let n = s2aLayers { atLeast1("s2aLayers", n) }
        atLeast1("qst.reduction", qst.reduction)
        atLeast1("qst.adapterWidth", qst.adapterWidth)
        positive("gateTemperature", gateTemperature)
        positive("attentionTemperature", attentionTemperature)
        if !loraAlpha.isFinite { problems.append("loraAlpha must be finite, got \(loraAlpha)") }
        if !(dropout >= 0 && dropout < 1) { problems.append("dropout must be in [0, 1), got \(dropout)") }
        if !qst.gateInit.isFinite || !qst.outputGateInit.isFinite { problems.append("qst gate initial values must be finite") }
        if let bad = droppedLayers.first(where: { $0 < 1 }) { problems.append("droppedLayers are 1-based layer numbers, got \(bad)") }
        if let h = hst {
            if h.dims.isEmpty || h.dims.count != h.depths.count || h.dims.count != h.heads.count {
                problems.append("hst dims, depths and heads must be lists of one length, got \(h.dims.count), \(h.depths.count), \(h.heads.count)")
            } else if let i = h.dims.indices.first(where: { h.dims[$0] < 1 || h.depths[$0] < 0 || h.heads[$0] < 1 || h.dims[$0] % h.heads[$0] != 0 }) {
                problems.append("hst stage \(i + 1): width \(h.dims[i]) must be a positive multiple of its \(h.heads[i]) heads, depth >= 0")
            }
            atLeast1("hst.mlpRatio", h.mlpRatio)
        }
        if !problems.isEmpty { throw MethodError("method options: " + problems.joined(separator: "; ")) }
    }
}

public struct MethodError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
