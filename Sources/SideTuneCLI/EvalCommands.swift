import ArgumentParser
import Foundation
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

extension TextTaskOptions {
    /// --model and --model-dir as places to look for a checkpoint's backbone (--model's default,
    /// minilm, is no hint: the checkpoint names its own backbone).
    var backboneHint: BackboneHint { BackboneHint(model: gguf ?? (model == "minilm" ? nil : model), modelDir: modelDir) }
}

extension SideTuneCommand {
    public struct Eval: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Evaluate a saved checkpoint (text, image or LLM classifier) on the validation and test splits of a data set.",
            discussion: """
            The checkpoint names its backbone, method, labels, max length and image size. Use the same --data,
            --seed and limits as in training to get the same split (text and LLM: --train-limit, --eval-limit;
            images: --test-limit).
            """
        )
        @Option(help: "Checkpoint folder (e.g. RUN/best).")
        var checkpoint: String
        @OptionGroup var task: TextTaskOptions
        @Option(help: "Image checkpoints: a stratified sample of this many test images (0 = the full 10,000), as in training.")
        var testLimit: Int = 0

        public init() {}

        public func run() throws {
            for (name, m) in try zip(["validation", "test"], evaluate()) {
                print(String(format: "%@: accuracy %.2f%%, macro-F1 %.2f%% on %d examples", name, 100 * m.accuracy, 100 * m.macroF1, m.count))
            }
        }

        /// Validation and test metrics.
        func evaluate() throws -> [ClassificationMetrics] {
            let restored = try RestoredClassifier.load(checkpoint, hint: task.backboneHint, log: eprint)
            switch restored.input {
            case let .tokens(model, encode):
                var t = task
                t.maxLength = restored.config.maxLength
                let (labels, _, validation, test) = try loadTextSplits(t, log: eprint, encode: encode)
                try restored.checkLabels(labels, data: task.data)
                return try evaluateSplits(model, [validation, test], config: restored.config)
            case let .images(model, input):
                let data = try ImageSplits.load(task, imageSize: input.size, patch: input.patch, testLimit: testLimit, log: eprint)
                guard data.pipeline == input.pipeline else {
                    throw ValidationError("--data \(task.data): the checkpoint was trained on \(input.pipeline == .resize ? "a fixed-size set (Fashion-MNIST)" : "image files"), this data is \(data.pipeline == .resize ? "a fixed-size set" : "image files"): its images would be prepared differently")
                }
                try restored.checkLabels(data.labels, data: task.data)
                return try evaluateSplits(model, [data.validation, data.test], config: restored.config)
            }
        }
    }

    public struct Predict: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Label texts or images with a saved checkpoint: prints CSV rows of label and class probabilities.",
            discussion: """
            Text and LLM checkpoints: texts from the arguments, or one per line from --input (or a CSV column with
            --text-column); rows are label, p_<class>..., text. Image checkpoints: image files (\(ImageFile.extensions.map { "." + $0 }.joined(separator: ", ")); PNG/JPEG
            must be converted) from the arguments or listed one per line in --input, and/or --data fashion-mnist-1k
            --limit N (the first N test images); rows are input, label, p_<class>....
            """
        )
        @Option(help: "Checkpoint folder (e.g. RUN/best).")
        var checkpoint: String
        @Option(help: "A text file (one text, or image path, per line) or a CSV file (with --text-column).")
        var input: String?
        @Option(help: "Text column when --input is a CSV file.")
        var textColumn: String = "text"
        @Option(help: "The checkpoint's backbone as a Hugging Face folder, if the one it records has moved.")
        var modelDir: String?
        @Option(help: "The backbone (an asset, a ViT .onnx or a .gguf file), if the checkpoint's cannot be found.")
        var model: String?
        @Option(help: "The checkpoint's backbone as a GGUF file (the same as --model FILE.gguf).")
        var gguf: String?
        @Option(help: "Image checkpoints: label images of this data set's test split (fashion-mnist-1k or a Fashion-MNIST folder).")
        var data: String?
        @Option(help: "With --data: only the first N test images (0 = all).")
        var limit: Int = 0
        @Option(help: "Write the CSV to this file (atomically) instead of standard output.")
        var output: String?
        @Argument(help: "Texts to label (text and LLM checkpoints), or image files (image checkpoints).")
        var texts: [String] = []

        public init() {}

        public func validate() throws {
            guard limit >= 0 else { throw ValidationError("--limit must be >= 0") }
        }

        public func run() throws {
            if data != nil {
                // Refused before the backbone is loaded.
                let config = try Checkpoint.readConfig(URL(fileURLWithPath: checkpoint, isDirectory: true))
                if !config.labels.isEmpty, BackboneFamily(checkpoint: config) != .vit {
                    throw ValidationError("--data is for image checkpoints; texts come from the arguments or --input")
                }
            }
            let restored = try RestoredClassifier.load(checkpoint, hint: BackboneHint(model: gguf ?? model, modelDir: modelDir), log: eprint)
            let labels = restored.config.labels
            var rows: [String] = []
            switch restored.input {
            case let .tokens(model, encode):
                let lines = try texts + inputLines()
                guard !lines.isEmpty else { throw ValidationError("nothing to label: pass texts or --input") }
                let probs = classProbabilities(model, count: lines.count) { rows in makeBatch(rows.map { encode(lines[$0]) }) }
                rows.append((["label"] + labels.map { "p_\($0)" } + ["text"]).joined(separator: ","))
                for (text, row) in zip(lines, probs) { rows.append((predictionFields(row, labels) + [csvQuoted(text)]).joined(separator: ",")) }
            case let .images(model, input):
                var items: [(name: String, image: DecodedImage)] = []
                for path in try texts + inputLines() {
                    let head = FileManager.default.contents(atPath: path).map { [UInt8]($0.prefix(8)) } ?? []
                    if [.jpeg, .png].contains(ImageDecoder.format(of: head)) {
                        items.append((path, try ImageDecoder.decode(file: path)))
                    } else {
                        let set = try ImageFile.load(path)
                        items += (0..<set.count).map { (set.count == 1 ? path : "\(path)[\($0)]", set.decoded($0)) }
                    }
                }
                if let data {
                    let test = try ImageSplits.loadSets(data: data, log: eprint).test
                    items += (0..<(limit > 0 ? min(limit, test.count) : test.count)).map { ("\(data):test/\($0)", test.decoded($0)) }
                }
                guard !items.isEmpty else { throw ValidationError("nothing to label: pass image files, --input or --data") }
                let probs = classProbabilities(model, count: items.count) { rows in
                    MemoryLedger.withCategory(.activations) { input.pixels(rows.map { items[$0].image }) }
                }
                rows.append((["input", "label"] + labels.map { "p_\($0)" }).joined(separator: ","))
                for (item, row) in zip(items, probs) { rows.append(([csvQuoted(item.name)] + predictionFields(row, labels)).joined(separator: ",")) }
            }
            if let output {
                let text = rows.map { $0 + "\n" }.joined()
                do { try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic) } catch {
                    throw ValidationError("cannot write --output \(output): \(error.localizedDescription)")
                }
                eprint("wrote \(rows.count - 1) predictions to \(output)")
            } else {
                for row in rows { print(row) }
            }
        }

        /// Lines of --input: a text file's lines, or a CSV file's --text-column.
        func inputLines() throws -> [String] {
            guard let input else { return [] }
            let url = URL(fileURLWithPath: input)
            guard let data = FileManager.default.contents(atPath: url.path) else { throw ValidationError("--input \(input): cannot read") }
            if url.pathExtension.lowercased() == "csv" { return try loadCSVTexts(url, column: textColumn) }
            return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init)
        }
    }
}
