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
    @Option(help: "A local Hugging Face model folder (config.json + model.safetensors): BERT (with vocab.txt or tokenizer.json), ViT or DINOv2, or a Llama, Mistral or Qwen2 decoder (with tokenizer.json); overrides --model.")
    var modelDir: String?
    @Option(help: "A Llama-family GGUF file (as generate's --gguf); the same as --model FILE.gguf.")
    var gguf: String?
    @Option(help: "Data set, split by --seed: an asset name (tweets, fashion-mnist-1k), a CSV, TSV or JSONL file of texts, or for images a folder with one subfolder of images per class (train/, val/, test/ subfolders give the split) or a CSV of path,label.")
    var data: String = "tweets"
    @Option(help: "Fixed splits instead of --data: the training file (text) or image folder or CSV.")
    var trainData: String?
    @Option(help: "Fixed splits: the validation file or folder (default: a stratified tenth of --train-data).")
    var validationData: String?
    @Option(help: "Fixed splits: the test file or folder (default: a stratified tenth of --train-data).")
    var testData: String?
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
        if gguf != nil && (modelDir != nil || model != "minilm") { throw ValidationError("--gguf names the model: drop --model and --model-dir") }
        if let gguf, !gguf.lowercased().hasSuffix(".gguf") { throw ValidationError("--gguf \(gguf): not a .gguf file") }
        if trainData == nil && (validationData != nil || testData != nil) {
            throw ValidationError("--validation-data and --test-data go with --train-data (fixed splits)")
        }
    }

    /// --model, or --gguf when given.
    var modelName: String { gguf ?? model }

    /// The data's description for messages and run fingerprints.
    var dataDescription: String {
        guard let trainData else { return data }
        return "train \(trainData), validation \(validationData ?? "(from train)"), test \(testData ?? "(from train)")"
    }
}

/// Fixed splits: the training set's classes decide the labels; validation and test examples of
/// classes the training set lacks are dropped and reported (they could never be predicted).
/// Missing validation or test sets are stratified tenths of the training set.
func fixedSplits<T: LabelledData>(train: T, validation: T?, test: T?, classes: (T) -> [String], seed: UInt64,
                                  relabel: (T, [String]) -> (T, [String: Int]), subset: (T, [Int]) -> T,
                                  log: (String) -> Void) -> (train: T, validation: T, test: T) {
    let names = classes(train)
    var carved = DatasetSplit(train: Array(0..<train.labels.count), validation: [], test: [])
    if validation == nil || test == nil {
        let cut = train.stratifiedSplit(train: validation == nil && test == nil ? 0.8 : 0.9,
                                        validation: validation == nil ? 0.1 : 0, test: test == nil ? 0.1 : 0, seed: seed)
        carved = cut
    }
    func kept(_ set: T?, _ name: String, _ fallback: [Int]) -> T {
        guard let set else { return subset(train, fallback) }
        let (out, dropped) = relabel(set, names)
        if !dropped.isEmpty {
            log("\(name): dropped \(dropped.values.reduce(0, +)) example(s) of classes the training data lacks: "
                + dropped.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", "))
        }
        return out
    }
    return (subset(train, carved.train), kept(validation, "validation data", carved.validation), kept(test, "test data", carved.test))
}

/// The data of a text task (--data, columns, stratified split, limits; or --train-data,
/// --validation-data, --test-data), each text encoded by `encode`: shared by the encoder
/// (WordPiece) and the LLM (byte-level BPE) paths.
func loadTextSplits(_ o: TextTaskOptions, log: (String) -> Void, encode encodeText: (String) -> [Int32]) throws
    -> (labels: [String], train: EncodedSplit, validation: EncodedSplit, test: EncodedSplit) {
    var train: TextDataset, validation: TextDataset, test: TextDataset
    if let trainPath = o.trainData {
        let first = try loadTextFile(trainPath, o, flag: "--train-data", log: log)
        let v = try o.validationData.map { try loadTextFile($0, o, flag: "--validation-data", log: log) }
        let t = try o.testData.map { try loadTextFile($0, o, flag: "--test-data", log: log) }
        (train, validation, test) = fixedSplits(train: first, validation: v, test: t, classes: { $0.labelVocabulary.labels }, seed: o.seed,
                                                relabel: relabel, subset: { $0.subset($1) }, log: log)
    } else {
        let dataset = try loadTextFile(o.data, o, flag: "--data", log: log)
        let split = dataset.stratifiedSplit(seed: o.seed)
        (train, validation, test) = (dataset.subset(split.train), dataset.subset(split.validation), dataset.subset(split.test))
    }
    if o.trainLimit > 0 { train = train.subset(train.stratifiedSample(o.trainLimit, seed: o.seed)) }
    if o.evalLimit > 0 {
        validation = validation.subset(validation.stratifiedSample(o.evalLimit, seed: o.seed &+ 1))
        test = test.subset(test.stratifiedSample(o.evalLimit, seed: o.seed &+ 2))
    }
    func encode(_ d: TextDataset) -> EncodedSplit { EncodedSplit(ids: d.texts.map(encodeText), labels: d.labels) }
    let t = encode(train), v = encode(validation), te = encode(test)
    log("split (\(o.trainData == nil ? "seed \(o.seed)" : "fixed files")): \(t.count) train, \(v.count) validation, \(te.count) test; labels \(train.labelVocabulary.labels.joined(separator: ", "))")
    guard t.count > 0, v.count > 0, te.count > 0 else {
        throw ValidationError("\(o.dataDescription): the split leaves \(t.count) train, \(v.count) validation and \(te.count) test examples; each needs at least one")
    }
    return (train.labelVocabulary.labels, t, v, te)
}

/// One text data file (or the tweets asset) with the task's columns.
func loadTextFile(_ path: String, _ o: TextTaskOptions, flag: String, log: (String) -> Void) throws -> TextDataset {
    let store = AssetStore()
    let dataURL: URL
    var options = LoadOptions(textColumn: o.textColumn ?? "text", labelColumn: o.labelColumn ?? "label")
    options.strict = o.strict
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
        guard !isFolder.boolValue else {
            throw ValidationError("\(flag) \(path) is a folder; a text task reads one CSV, TSV or JSONL file")
        }
        guard FileManager.default.isReadableFile(atPath: path) else { throw ValidationError("\(flag) \(path): not readable (permissions)") }
        dataURL = URL(fileURLWithPath: path)
    } else if (try? store.descriptor(path)) != nil {
        _ = try store.fetch(path) { if case .downloading = $0 { log("fetching \(path) ...") } }
        dataURL = try store.path(of: path, file: .csv)
        if path == "tweets" {
            options.textColumn = o.textColumn ?? "text"
            options.labelColumn = o.labelColumn ?? "sentiment"
        }
    } else {
        throw ValidationError("\(flag) \(path): no such file, and not a known data set (known: tweets)")
    }
    let dataset = try TextDataset.load(dataURL, options: options)
    log("data \(dataURL.lastPathComponent): \(dataset.report.summary)")
    return dataset
}

/// `d` with its labels renamed into `classes`; rows of other labels dropped, counted by label.
func relabel(_ d: TextDataset, _ classes: [String]) -> (TextDataset, [String: Int]) {
    let vocabulary = LabelVocabulary(labels: classes)
    var keep: [Int] = [], labels: [Int] = [], dropped: [String: Int] = [:]
    for (i, l) in d.labels.enumerated() {
        let name = d.labelVocabulary.label(for: l)
        if let c = vocabulary.index(of: name) { keep.append(i); labels.append(c) } else { dropped[name, default: 0] += 1 }
    }
    let kept = d.subset(keep)
    return (TextDataset(texts: kept.texts, pairs: kept.pairs, labels: labels, labelVocabulary: vocabulary, report: d.report), dropped)
}


