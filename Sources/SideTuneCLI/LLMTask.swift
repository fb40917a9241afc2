import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

/// Flags of LLM tasks (used when --model names a decoder LLM).
public struct LLMTaskOptions: ParsableArguments {
    @Option(help: "LLM block weights: nf4 (4-bit NormalFloat, double-quantised scales) or f32. Default: nf4 for qst and qlora, f32 otherwise.")
    var weights: String?
    @Option(help: "QST: side width = width / r (d_ff / r for the FFN).")
    var qstReduction: Int = 16
    @Option(help: "QST: downsample per tap: adapter (Linear-SiLU-Linear-LayerNorm), avgpool or maxpool (parameter-free).")
    var qstDownsample: String = "adapter"
    @Option(help: "QST: hidden width of the adapter downsample.")
    var qstAdapterWidth: Int = 16

    public init() {}

    public func validate() throws {
        if let w = weights, LLMTaskOptions.format(w) == nil { throw ValidationError("--weights must be nf4 or f32, got \(w)") }
        guard QSTDownsample(rawValue: qstDownsample) != nil else {
            throw ValidationError("--qst-downsample must be one of \(QSTDownsample.allCases.map(\.rawValue).joined(separator: ", ")), got \(qstDownsample)")
        }
        guard qstReduction >= 1, qstAdapterWidth >= 1 else { throw ValidationError("--qst-reduction and --qst-adapter-width must be >= 1") }
    }

    static func format(_ s: String) -> LlamaWeightFormat? {
        switch s.lowercased() {
        case "nf4": .nf4
        case "f32", "float32": .float32
        default: nil
        }
    }

    /// The block weight format for a method: the flag, else NF4 for the 4-bit methods.
    func weightFormat(for kind: MethodKind) -> LlamaWeightFormat {
        weights.flatMap(Self.format) ?? (kind == .qst || kind == .qlora ? .nf4 : .float32)
    }

    func apply(to o: inout MethodOptions) {
        o.qst.reduction = qstReduction
        o.qst.downsample = QSTDownsample(rawValue: qstDownsample)!
        o.qst.adapterWidth = qstAdapterWidth
    }
}

/// A decoder LLM, its tokenizer and the identity of its weights file.
struct LoadedLLM {
    var llama: Llama
    var tokenizer: ByteLevelBPE
    var name: String
    var sha256: String

    static func load(_ model: String, weights: LlamaWeightFormat, log: (String) -> Void) throws -> LoadedLLM {
        let store = AssetStore()
        _ = try store.fetch(model) { if case .downloading = $0 { log("fetching \(model) ...") } }
        let path = try store.path(of: model, file: .gguf).path
        let t0 = Date()
        let file = try GGUFFile(path: path)
        let llama = try Llama.load(gguf: file, weights: weights)
        let tok = try ByteLevelBPE(gguf: file)
        let sha = try SHA256.hexDigest(ofFile: path)
        log(String(format: "loaded %@ (%d blocks, width %d, %@ blocks) in %.1f s", model, llama.config.layers, llama.config.dim,
                   weights.rawValue, Date().timeIntervalSince(t0)))
        // The checkpoint's backbone identity includes the block format (NF4 weights differ from F32).
        return LoadedLLM(llama: llama, tokenizer: tok, name: "\(model)-\(weights.rawValue)", sha256: sha + "-\(weights.rawValue)")
    }
}

/// Byte-level BPE ids of a text for classification: the text alone, truncated to `maxLength`
/// tokens (the classifier reads the last one), never empty (an empty text becomes EOS).
func llmClassificationIds(_ tok: ByteLevelBPE, _ text: String, maxLength: Int) -> [Int32] {
    let ids = Array(tok.encode(text).prefix(maxLength))
    return ids.isEmpty ? [tok.eosId ?? 0] : ids
}

extension SideTuneCommand.Train {
    /// Classification on the LLM backbone: the texts tokenised by the model's byte-level BPE,
    /// right-padded batches, the logits at each row's last token.
    func runLLMTraining(_ kind: MethodKind, log: @escaping (String) -> Void) throws -> TrainingReport {
        guard LLMClassifier.methods.contains(kind) else {
            throw ValidationError("--method \(kind.rawValue) is not available on --model \(task.model) (available: \(LLMClassifier.methods.map(\.rawValue).joined(separator: ", ")))")
        }
        let format = llm.weightFormat(for: kind)
        let loaded = try LoadedLLM.load(task.model, weights: format, log: log)
        let (labels, train, validation, test) = try loadTextSplits(task, log: log) {
            llmClassificationIds(loaded.tokenizer, $0, maxLength: task.maxLength)
        }
        var options = try methodFlags.options()
        llm.apply(to: &options)
        let model = try LLMClassifier(backbone: loaded.llama, method: kind, classes: labels.count, options: options, seed: task.seed)
        let config = CheckpointConfig(method: kind, options: options, labels: labels, maxLength: task.maxLength,
                                      backboneName: loaded.name, backboneSHA256: loaded.sha256, seed: task.seed, epoch: 0,
                                      validationAccuracy: nil)
        return try self.train(model, train: train, validation: validation, test: test, config: config, log: log)
    }
}
