import ArgumentParser
import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTrainer

// Every flag with a fixed set of values is one of these enums, parsed and refused by name by
// ArgumentParser; every default is taken from the library's own settings (`MethodOptions()`,
// `QSTOptions()`, `TrainingParameters()`), so each is written once.

extension MethodKind: ExpressibleByArgument {}
extension SideInit: ExpressibleByArgument {}
extension QSTDownsample: ExpressibleByArgument {}
extension MethodOptions.Pooling: ExpressibleByArgument {}
extension MatmulPrecision: ExpressibleByArgument {}
extension ActivationBits: ExpressibleByArgument {}

extension WeightFormat: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// A comma-separated list of methods (`--methods lst,last,lora`).
public struct MethodList: ExpressibleByArgument, Sendable, Equatable {
    public var kinds: [MethodKind]
    public init(_ kinds: [MethodKind]) { self.kinds = kinds }
    public init?(argument: String) {
        var out: [MethodKind] = []
        for part in argument.split(separator: ",") {
            guard let k = MethodKind(rawValue: part.trimmingCharacters(in: .whitespaces)) else { return nil }
            out.append(k)
        }
        guard !out.isEmpty else { return nil }
        kinds = out
    }
    public var defaultValueDescription: String { kinds.map(\.rawValue).joined(separator: ",") }
    public static var allValueStrings: [String] { MethodKind.allCases.map(\.rawValue) }
}

/// A comma-separated list of integers (`--drop-layers 1,5,9`); empty for none.
public struct IntList: ExpressibleByArgument, Sendable, Equatable {
    public var values: [Int]
    public init(_ values: [Int]) { self.values = values }
    public init?(argument: String) {
        var out: [Int] = []
        for part in argument.split(separator: ",") {
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)) else { return nil }
            out.append(v)
        }
        values = out
    }
    public var defaultValueDescription: String { values.isEmpty ? "none" : values.map(String.init).joined(separator: ",") }
}

/// What a decoder LLM is trained for.
public enum LLMTask: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Sequence classification (--data: labelled texts).
    case classify
    /// Causal-LM tuning on prompt/response pairs (--data: JSONL), QST only.
    case lm
}

/// `--side-matmul`: f32, bf16, or auto: bf16 where the CPU multiplies bf16 at full rate
/// (AVX512_BF16), else f32 (elsewhere bf16 products run a plain loop, slower than f32).
public enum SideMatmulChoice: String, ExpressibleByArgument, CaseIterable, Sendable {
    case f32, bf16, auto

    public var precision: MatmulPrecision {
        switch self {
        case .f32: .float32
        case .bf16: .bfloat16
        case .auto: MatmulPrecision.bfloat16IsNative ? .bfloat16 : .float32
        }
    }

    /// The value `MethodOptions.sideMatmul` stores: nil for f32, the default (older checkpoints have none).
    public var asSideMatmulOption: MatmulPrecision? { precision == .float32 ? nil : precision }

    static let help = "f32; bf16 (operands rounded to bf16, sums in f32: mixed precision, about twice the multiply-add rate with AVX512_BF16); or auto (bf16 where the CPU has AVX512_BF16, else f32)"
}

/// Method options from flags; defaults are `MethodOptions()`'s (see docs/methods.md).
public struct MethodFlags: ParsableArguments {
    static let defaults = MethodOptions()

    @Option(help: "LST: side width = hidden / r.")
    var reduction: Int = defaults.reduction
    @Option(help: "LST: gate temperature T in sigmoid(alpha / T).")
    var gateTemperature: Float = defaults.gateTemperature
    @Option(help: "LST: side initialisation (fisher and magnitude prune BERT layers; other backbones start random).")
    var sideInit: SideInit = defaults.sideInit
    @Option(help: "LST: training examples used for Fisher importance.")
    var fisherExamples: Int = defaults.fisherExamples
    @Option(help: "LST: comma-separated backbone layers (1-based) without a side block.")
    var dropLayers: IntList = IntList(defaults.droppedLayers)
    @Option(help: "LST: pool the side output over tokens (mean) or take the first token.")
    var pooling: MethodOptions.Pooling = defaults.pooling
    @Option(help: "LAST: rank of the low-rank attention.")
    var rank: Int = defaults.rank
    @Option(help: "LAST: backbone blocks per side block.")
    var groupSize: Int = defaults.groupSize
    @Option(help: "LAST: softmax temperature.")
    var attentionTemperature: Float = defaults.attentionTemperature
    @Flag(inversion: .prefixedNo, help: "LAST: bias correction (the head reads u_m minus the summed taps).")
    var biasCorrection = defaults.biasCorrection
    @Option(help: "LoRA and QLoRA rank (query and value).")
    var loraRank: Int = defaults.loraRank
    @Option(help: "LoRA and QLoRA alpha.")
    var loraAlpha: Float = defaults.loraAlpha
    @Option(help: "Adapter bottleneck width.")
    var adapterBottleneck: Int = defaults.adapterBottleneck
    @Option(help: "Prompt tuning: number of prompt tokens.")
    var promptLength: Int = defaults.promptLength
    @Option(help: "S2A: prompt tokens at the input (default 0; any makes backward reach every block).")
    var s2aPromptLength: Int?
    @Option(help: "S2A: top blocks whose biases train (default: the top half); the blocks below keep nothing for backward.")
    var s2aLayers: Int?
    @Option(help: "Dropout in heads and side networks.")
    var dropout: Float = defaults.dropout
    @Option(help: ArgumentHelp("LST, LAST: precision of the side network's linear products: \(SideMatmulChoice.help).", valueName: "f32|bf16|auto"))
    var sideMatmul: SideMatmulChoice = .f32
    @Option(help: ArgumentHelp("Precision of the backbone's products: \(SideMatmulChoice.help). Side methods and linear "
                               + "store the frozen projections in bf16 (half the bytes); LoRA, adapters, BitFit, prompt and "
                               + "full multiply in bf16 forward and backward (not HST). LayerNorm, softmax, GELU, sums, "
                               + "weights and optimizer state stay f32; saved in checkpoints.", valueName: "f32|bf16|auto"))
    var backbonePrecision: SideMatmulChoice = .f32
    @Option(help: ArgumentHelp("Bits per element of what backward keeps (methods that backpropagate; side networks too): 32 "
                               + "exact; 16 keeps LayerNorm, attention and linear inputs in bf16; 8 and 4 also keep GELU and "
                               + "SiLU inputs as 8- or 4-bit codes of their derivative (docs/methods.md). Default: 4 for s2a, "
                               + "32 otherwise. Saved in checkpoints.",
                               valueName: "4|8|16|32"))
    var activationBits: ActivationBits?
    @Option(help: "Backbone projections: f32, or nf4 (4-bit NormalFloat, double-quantised scales). Default: nf4 for qst and qlora, f32 otherwise.")
    var weights: WeightFormat?
    @Flag(name: .customLong("no-packing"), help: "Run every batch padded, even where the method could skip padding (packed tokens); the reference the packed paths are tested against.")
    var noPacking = false
    @Option(help: "QST: side width = width / r (d_ff / r for the FFN).")
    var qstReduction: Int = defaults.qst.reduction
    @Option(help: "QST: downsample per tap: adapter (Linear-SiLU-Linear-LayerNorm), avgpool or maxpool (parameter-free).")
    var qstDownsample: QSTDownsample = defaults.qst.downsample
    @Option(help: "QST: hidden width of the adapter downsample.")
    var qstAdapterWidth: Int = defaults.qst.adapterWidth

    public init() {}

    public func validate() throws {
        guard reduction >= 1, rank >= 1, groupSize >= 1, loraRank >= 1, adapterBottleneck >= 1, promptLength >= 1 else {
            throw ValidationError("--reduction, --rank, --group-size, --lora-rank, --adapter-bottleneck and --prompt-length must be >= 1")
        }
        guard qstReduction >= 1, qstAdapterWidth >= 1 else { throw ValidationError("--qst-reduction and --qst-adapter-width must be >= 1") }
        guard fisherExamples >= 1 else { throw ValidationError("--fisher-examples must be >= 1, got \(fisherExamples)") }
        guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1), got \(dropout)") }
        guard gateTemperature > 0, attentionTemperature > 0 else {
            throw ValidationError("--gate-temperature and --attention-temperature must be > 0")
        }
    }

    public func options() -> MethodOptions {
        var o = MethodOptions()
        o.reduction = reduction
        o.gateTemperature = gateTemperature
        o.sideInit = sideInit
        o.fisherExamples = fisherExamples
        o.droppedLayers = dropLayers.values
        o.pooling = pooling
        o.rank = rank
        o.groupSize = groupSize
        o.attentionTemperature = attentionTemperature
        o.biasCorrection = biasCorrection
        o.loraRank = loraRank
        o.loraAlpha = loraAlpha
        o.adapterBottleneck = adapterBottleneck
        o.promptLength = promptLength
        o.s2aPromptLength = s2aPromptLength
        o.s2aLayers = s2aLayers
        o.dropout = dropout
        o.sideMatmul = sideMatmul.asSideMatmulOption
        o.backbonePrecision = backbonePrecision.asSideMatmulOption
        o.activationBits = activationBits
        o.weights = weights
        o.packing = noPacking ? false : nil
        o.qst.reduction = qstReduction
        o.qst.downsample = qstDownsample
        o.qst.adapterWidth = qstAdapterWidth
        return o
    }
}
