import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

/// Rebuilds a trained classifier from a checkpoint folder (checkpoint.json + weights.safetensors),
/// refusing a backbone whose weights differ from the one it was trained on.
func loadClassifier(checkpoint: String, task: TextTaskOptions) throws -> (TextClassifier, CheckpointConfig, WordPieceTokenizer) {
    let folder = URL(fileURLWithPath: checkpoint, isDirectory: true)
    let config = try Checkpoint.readConfig(folder)
    let modelFolder: URL
    if let dir = task.modelDir { modelFolder = try LocalModelFolder(path: dir).url } else {
        // The checkpoint names its backbone; a local folder's name is not an asset, so fall back to --model.
        let store = AssetStore()
        let asset = (try? store.descriptor(config.backboneName)) != nil ? config.backboneName : task.model
        _ = try store.fetch(asset)
        modelFolder = try store.path(of: asset, file: .modelFolder)
    }
    let sha = try SHA256.hexDigest(ofFile: modelFolder.appendingPathComponent("model.safetensors").path)
    let backbone = try BertEncoder.load(folder: modelFolder)
    var options = config.options
    options.sideInit = .random // the checkpoint's weights replace any initialisation
    let model = try TextClassifier(backbone: backbone, method: config.method, classes: config.labels.count, options: options,
                                   seed: config.seed)
    _ = try Checkpoint.load(into: model, from: folder, backboneSHA256: sha)
    model.train(false)
    return (model, config, try WordPieceTokenizer.load(modelFolder: modelFolder))
}

extension SideTuneCommand {
    public struct Eval: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Evaluate a saved checkpoint on the validation and test splits of a data set.",
            discussion: "Use the same --data, --seed and limits as in training to get the same split."
        )
        @Option(help: "Checkpoint folder (e.g. RUN/best).")
        var checkpoint: String
        @OptionGroup var task: TextTaskOptions

        public init() {}

        public func run() throws {
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            let (model, config, _) = try loadClassifier(checkpoint: checkpoint, task: task)
            var t = task
            t.maxLength = config.maxLength
            let prepared = try PreparedTextTask.prepare(t, log: log)
            guard prepared.labels == config.labels else {
                throw ValidationError("the data's labels \(prepared.labels) differ from the checkpoint's \(config.labels)")
            }
            let trainer = try Trainer(model: model, parameters: TrainingParameters(), train: prepared.train, validation: prepared.validation,
                                      test: prepared.test, checkpointConfig: config)
            for (name, split) in [("validation", prepared.validation), ("test", prepared.test)] {
                let m = trainer.evaluate(split)
                print(String(format: "%@: accuracy %.2f%%, macro-F1 %.2f%% on %d examples", name, 100 * m.accuracy, 100 * m.macroF1, m.count))
            }
        }
    }

    public struct Predict: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Label texts with a saved checkpoint: prints CSV rows of label and class probabilities.",
            discussion: "Texts come from the arguments, or one per line from --input (or a CSV column with --text-column)."
        )
        @Option(help: "Checkpoint folder (e.g. RUN/best).")
        var checkpoint: String
        @Option(help: "A text file (one text per line) or a CSV file (with --text-column).")
        var input: String?
        @Option(help: "Text column when --input is a CSV file.")
        var textColumn: String = "text"
        @Option(help: "A local model folder, if the checkpoint's backbone is not an asset.")
        var modelDir: String?
        @Argument(help: "Texts to label.")
        var texts: [String] = []

        public init() {}

        public func run() throws {
            var lines = texts
            if let input {
                let url = URL(fileURLWithPath: input)
                guard let data = FileManager.default.contents(atPath: url.path) else { throw ValidationError("--input \(input): cannot read") }
                if url.pathExtension.lowercased() == "csv" {
                    let ds = try loadCSVTexts(url, column: textColumn)
                    lines += ds
                } else {
                    lines += String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
                }
            }
            guard !lines.isEmpty else { throw ValidationError("nothing to label: pass texts or --input") }
            var task = TextTaskOptions()
            task.modelDir = modelDir
            let (model, config, tokenizer) = try loadClassifier(checkpoint: checkpoint, task: task)
            print((["label"] + config.labels.map { "p_\($0)" } + ["text"]).joined(separator: ","))
            var i = 0
            while i < lines.count {
                let chunk = Array(lines[i..<min(i + 64, lines.count)])
                let probs = noGrad { model(makeBatch(chunk.map { tokenizer.encode($0, maxLength: config.maxLength).ids })).softmax() }
                let c = config.labels.count
                for (r, text) in chunk.enumerated() {
                    let row = (0..<c).map { probs.data[r * c + $0] }
                    let best = row.indices.max { row[$0] < row[$1] }!
                    let quoted = "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
                    print(([config.labels[best]] + row.map { String(format: "%.4f", $0) } + [quoted]).joined(separator: ","))
                }
                i += chunk.count
            }
        }
    }
}
