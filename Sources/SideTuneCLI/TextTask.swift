import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

/// Flags shared by train, eval, compare: which backbone, which data, how it is split.
public struct TextTaskOptions: ParsableArguments {
    @Option(help: "Backbone asset name (minilm), fetched into the cache on first use.")
    var model: String = "minilm"
    @Option(help: "A local Hugging Face-style BERT folder (config.json, model.safetensors, vocab.txt or tokenizer.json); overrides --model.")
    var modelDir: String?
    @Option(help: "Data set: an asset name (tweets) or a CSV, TSV or JSONL file.")
    var data: String = "tweets"
    @Option(help: "Text column of a data file (tweets: text).")
    var textColumn: String?
    @Option(help: "Label column of a data file (tweets: sentiment).")
    var labelColumn: String?
    @Flag(help: "Stop at the first malformed data row instead of skipping it.")
    var strict = false
    @Option(help: "Maximum tokens per example (longer texts are truncated).")
    var maxLength: Int = 128
    @Option(help: "Seed for the split, initialisation, dropout and data order.")
    var seed: UInt64 = 42
    @Option(help: "Use at most this many training examples (stratified sample; 0 = all).")
    var trainLimit: Int = 0
    @Option(help: "Use at most this many validation and test examples each (0 = all).")
    var evalLimit: Int = 0

    public init() {}

    public func validate() throws {
        guard maxLength >= 4 && maxLength <= 512 else { throw ValidationError("--max-length must be in 4...512, got \(maxLength)") }
        guard trainLimit >= 0, evalLimit >= 0 else { throw ValidationError("limits must be >= 0") }
    }
}

/// A BERT-family backbone folder and the identity of its weights file.
struct BertBackbone {
    var folder: URL
    var name: String
    var sha256: String
    /// The folder when given by path (--model-dir), recorded in checkpoints.
    var path: String?

    /// `modelDir` (a local folder) if given, else the asset `model`, fetched on first use.
    static func resolve(model: String, modelDir: String?, log: (String) -> Void) throws -> BertBackbone {
        let folder: URL, name: String
        if let dir = modelDir {
            folder = try LocalModelFolder(path: dir).url
            name = folder.lastPathComponent
        } else {
            let store = AssetStore()
            _ = try store.fetch(model) { if case .downloading = $0 { log("fetching \(model) ...") } }
            folder = try store.path(of: model, file: .modelFolder)
            name = model
        }
        let sha = try SHA256.hexDigest(ofFile: folder.appendingPathComponent("model.safetensors").path)
        return BertBackbone(folder: folder, name: name, sha256: sha, path: modelDir.map { _ in folder.path })
    }

    func load() throws -> BertEncoder { try BertEncoder.load(folder: folder) }
    func tokenizer() throws -> WordPieceTokenizer { try WordPieceTokenizer.load(modelFolder: folder) }
}

/// Everything a text run needs, loaded once.
struct PreparedTextTask {
    var backbone: BertBackbone
    var tokenizer: WordPieceTokenizer
    var labels: [String]
    var train: EncodedSplit, validation: EncodedSplit, test: EncodedSplit

    static func prepare(_ o: TextTaskOptions, log: (String) -> Void) throws -> PreparedTextTask {
        let backbone = try BertBackbone.resolve(model: o.model, modelDir: o.modelDir, log: log)
        let tokenizer = try backbone.tokenizer()
        let (labels, t, v, te) = try loadTextSplits(o, log: log) { tokenizer.encode($0, maxLength: o.maxLength).ids }
        return PreparedTextTask(backbone: backbone, tokenizer: tokenizer, labels: labels, train: t, validation: v, test: te)
    }
}

/// The data of a text task (--data, columns, stratified split, limits), each text encoded by
/// `encode`: shared by the encoder (WordPiece) and the LLM (byte-level BPE) paths.
func loadTextSplits(_ o: TextTaskOptions, log: (String) -> Void, encode encodeText: (String) -> [Int32]) throws
    -> (labels: [String], train: EncodedSplit, validation: EncodedSplit, test: EncodedSplit) {
    let store = AssetStore()
    let dataURL: URL
    var options = LoadOptions(textColumn: o.textColumn ?? "text", labelColumn: o.labelColumn ?? "label")
    options.strict = o.strict
    if FileManager.default.fileExists(atPath: o.data) {
        dataURL = URL(fileURLWithPath: o.data)
    } else if (try? store.descriptor(o.data)) != nil {
        _ = try store.fetch(o.data) { if case .downloading = $0 { log("fetching \(o.data) ...") } }
        dataURL = try store.path(of: o.data, file: .csv)
        if o.data == "tweets" {
            options.textColumn = o.textColumn ?? "text"
            options.labelColumn = o.labelColumn ?? "sentiment"
        }
    } else {
        throw ValidationError("--data \(o.data): no such file, and not a known data set (known: tweets)")
    }
    let dataset = try TextDataset.load(dataURL, options: options)
    log("data: \(dataset.report.summary)")
    var split = dataset.stratifiedSplit(seed: o.seed)
    if o.trainLimit > 0 { split.train = dataset.stratifiedSample(o.trainLimit, from: split.train, seed: o.seed) }
    if o.evalLimit > 0 {
        split.validation = dataset.stratifiedSample(o.evalLimit, from: split.validation, seed: o.seed &+ 1)
        split.test = dataset.stratifiedSample(o.evalLimit, from: split.test, seed: o.seed &+ 2)
    }
    func encode(_ idx: [Int]) -> EncodedSplit {
        EncodedSplit(ids: idx.map { encodeText(dataset.texts[$0]) }, labels: idx.map { dataset.labels[$0] })
    }
    let t = encode(split.train), v = encode(split.validation), te = encode(split.test)
    log("split (seed \(o.seed)): \(t.count) train, \(v.count) validation, \(te.count) test; labels \(dataset.labelVocabulary.labels.joined(separator: ", "))")
    return (dataset.labelVocabulary.labels, t, v, te)
}

/// `bench gemm --precision f32|bf16`, parsed and refused by name by ArgumentParser.
extension MatmulPrecision: ExpressibleByArgument {}

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

/// Method options from flags (defaults from shared/methods.md).
public struct MethodFlags: ParsableArguments {
    @Option(help: "LST: side width = hidden / r.")
    var reduction: Int = 8
    @Option(help: "LST: gate temperature T in sigmoid(alpha / T).")
    var gateTemperature: Float = 0.1
    @Option(help: "LST: side initialisation: fisher, magnitude or random.")
    var sideInit: String = "fisher"
    @Option(help: "LST: training examples used for Fisher importance.")
    var fisherExamples: Int = 1024
    @Option(help: "LST: comma-separated backbone layers (1-based) without a side block.")
    var dropLayers: String = ""
    @Option(help: "LAST: rank of the low-rank attention.")
    var rank: Int = 16
    @Option(help: "LAST: backbone blocks per side block.")
    var groupSize: Int = 1
    @Option(help: "LAST: softmax temperature.")
    var attentionTemperature: Float = 1
    @Flag(inversion: .prefixedNo, help: "LAST: bias correction (the head reads u_m minus the summed taps).")
    var biasCorrection = true
    @Option(help: "LoRA rank (query and value).")
    var loraRank: Int = 8
    @Option(help: "LoRA alpha.")
    var loraAlpha: Float = 16
    @Option(help: "Adapter bottleneck width.")
    var adapterBottleneck: Int = 64
    @Option(help: "Prompt tuning: number of prompt tokens.")
    var promptLength: Int = 20
    @Option(help: "Dropout in heads and side networks.")
    var dropout: Float = 0.1
    @Option(help: ArgumentHelp("LST, LAST: precision of the side network's linear products: \(SideMatmulChoice.help).", valueName: "f32|bf16|auto"))
    var sideMatmul: SideMatmulChoice = .f32

    public init() {}

    func options() throws -> MethodOptions {
        var o = MethodOptions()
        o.reduction = reduction
        o.gateTemperature = gateTemperature
        guard let si = SideInit(rawValue: sideInit) else {
            throw ValidationError("--side-init must be one of \(SideInit.allCases.map(\.rawValue).joined(separator: ", ")), got \(sideInit)")
        }
        o.sideInit = si
        o.fisherExamples = fisherExamples
        o.droppedLayers = try dropLayers.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--drop-layers: '\($0)' is not a number") }
            return v
        }
        o.rank = rank
        o.groupSize = groupSize
        o.attentionTemperature = attentionTemperature
        o.biasCorrection = biasCorrection
        o.loraRank = loraRank
        o.loraAlpha = loraAlpha
        o.adapterBottleneck = adapterBottleneck
        o.promptLength = promptLength
        o.dropout = dropout
        o.sideMatmul = sideMatmul.asSideMatmulOption
        return o
    }
}

/// Default peak learning rates per method (side networks and heads start from scratch and take
/// larger steps than a pretrained backbone can).
func defaultLearningRate(_ m: MethodKind) -> Float {
    switch m {
    case .full: 5e-5
    case .bitfit, .lora, .qlora, .adapter: 1e-3
    case .prompt: 3e-3
    case .lst, .last, .hst, .qst, .linear: 3e-3
    }
}

/// A one-line progress bar on stderr: step, loss, examples/s, ETA.
final class ProgressBar {
    var lastPrint = 0.0
    let interactive = isatty(2) != 0

    func update(_ e: TrainingEvent) {
        switch e {
        case .message(let m):
            clear()
            FileHandle.standardError.write(Data((m + "\n").utf8))
        case let .step(epoch, step, total, loss, eps, eta):
            let now = Date().timeIntervalSince1970
            guard step == total || now - lastPrint > (interactive ? 0.2 : 10) else { return }
            lastPrint = now
            let width = 24, filled = width * step / max(total, 1)
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let line = String(format: "epoch %d [%@] %d/%d  loss %.4f  %.1f ex/s  ETA %@", epoch, bar, step, total, loss, eps,
                              formatDuration(eta))
            if interactive {
                FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
            } else {
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
        case let .epochEnd(epoch, loss, val, seconds, cached, improved):
            clear()
            print(String(format: "epoch %d: train loss %.4f, validation accuracy %.2f%%, macro-F1 %.2f%%, %.1f s%@%@", epoch, loss,
                         100 * val.accuracy, 100 * val.macroF1, seconds, cached ? " (taps from cache)" : "", improved ? " *best" : ""))
        }
    }

    func clear() { if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    return t >= 60 ? "\(t / 60)m\(String(format: "%02d", t % 60))s" : "\(t)s"
}
