import SideTuneEngine
import Foundation

/// Every adaptation method SideTune trains (not every backbone supports every method: HST is for
/// ViTs, QST and QLoRA for the LLM).
public enum MethodKind: String, CaseIterable, Codable, Sendable {
    case lst, last, hst, qst, full, linear, bitfit, lora, qlora, adapter, prompt

    /// Side methods read frozen taps only: backprop never enters the backbone, and the taps can be
    /// computed once and cached. (HST trains the ViT's LayerNorms and meta tokens, so it does not.)
    public var readsFrozenTaps: Bool { self == .lst || self == .last || self == .qst || self == .linear }

    /// The methods a BERT-family text encoder supports.
    public static let textEncoderMethods: [MethodKind] = [.lst, .last, .full, .linear, .bitfit, .lora, .adapter, .prompt]

    public var summary: String {
        switch self {
        case .lst: "Ladder Side-Tuning: a d/r-wide ladder of backbone-type blocks fed by gated downsampled taps"
        case .last: "Low-rank Attention Side-Tuning: rank-r attention blocks over the taps, bias-corrected head"
        case .hst: "Hierarchical Side-Tuning (ViT): meta tokens per block and a 4-stage convolutional side network"
        case .qst: "Quantized Side Tuning (LLM): 4-bit NF4 backbone, gated d/r-wide side decoder layers"
        case .qlora: "QLoRA (LLM): LoRA on the query and value projections of the 4-bit NF4 backbone"
        case .full: "full fine-tuning (every backbone weight trains)"
        case .linear: "linear probe on the frozen last layer"
        case .bitfit: "BitFit: only biases (and the head) train"
        case .lora: "LoRA on the query and value projections"
        case .adapter: "Houlsby adapters after attention and FFN"
        case .prompt: "prompt tuning: trainable tokens prepended to the embeddings"
        }
    }
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

/// Options of every method (defaults from the papers, see shared/methods.md). Codable: saved with
/// checkpoints so a run can be reproduced and a checkpoint reloaded with its exact network.
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
    // all
    public var dropout: Float = 0.1
    /// LST and LAST: the side network's linear products in f32 (nil, the default) or with bf16
    /// operands and f32 sums (`MatmulPrecision.bfloat16`). Optional so older checkpoints load.
    public var sideMatmul: MatmulPrecision?
    // QST (LLM)
    public var qst = QSTOptions()

    public enum Pooling: String, Codable, Sendable { case mean, first }

    public init() {}
}

public struct MethodError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
