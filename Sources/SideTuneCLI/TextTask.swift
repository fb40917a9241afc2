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
    @Option(help: "Backbone: an asset name (minilm, vit-s14, smollm2), fetched into the cache on first use, or a DINOv2 .onnx or Llama .gguf file.")
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

/// The data of a text task (--data, columns, stratified split, limits), each text encoded by
/// `encode`: shared by the encoder (WordPiece) and the LLM (byte-level BPE) paths.
func loadTextSplits(_ o: TextTaskOptions, log: (String) -> Void, encode encodeText: (String) -> [Int32]) throws
    -> (labels: [String], train: EncodedSplit, validation: EncodedSplit, test: EncodedSplit) {
    let store = AssetStore()
    let dataURL: URL
    var options = LoadOptions(textColumn: o.textColumn ?? "text", labelColumn: o.labelColumn ?? "label")
    options.strict = o.strict
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: o.data, isDirectory: &isFolder) {
        guard !isFolder.boolValue else {
            throw ValidationError("--data \(o.data) is a folder; a text task reads one CSV, TSV or JSONL file")
        }
        guard FileManager.default.isReadableFile(atPath: o.data) else { throw ValidationError("--data \(o.data): not readable (permissions)") }
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

