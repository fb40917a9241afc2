import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneData
import SideTuneEngine
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

/// Where eval and predict may find a checkpoint's backbone besides what the checkpoint records:
/// --model-dir (a BERT folder) or --model (an asset name, or a ViT .onnx file). Whatever is
/// found, its weights' SHA-256 must be the checkpoint's.
struct BackboneHint {
    var model: String?
    var modelDir: String?
}

/// A classifier rebuilt from a checkpoint folder, whatever its backbone (BERT text encoder, DINOv2
/// ViT, Llama decoder): the one place eval and predict get their model from. The checkpoint
/// decides everything the model needs (family, method and options, labels, max length, image
/// size), so no training flag has to be repeated.
struct RestoredClassifier {
    enum Input {
        /// Text encoders and LLMs read token rows; `encode` is the backbone's tokenizer at the
        /// checkpoint's max length.
        case tokens(any ClassifierModel<BatchEncoding>, encode: (String) -> [Int32])
        /// ViTs read pixels made by the preprocessor (at the checkpoint's image size).
        case images(any ClassifierModel<Tensor>, ImagePreprocessor)
    }

    var config: CheckpointConfig
    var family: BackboneFamily
    var input: Input

    static func load(_ path: String, hint: BackboneHint = BackboneHint(), log: (String) -> Void) throws -> RestoredClassifier {
        let folder = URL(fileURLWithPath: path, isDirectory: true)
        let config = try Checkpoint.readConfig(folder)
        guard !config.labels.isEmpty else {
            throw ValidationError("\(path) is a language-model checkpoint (train --task lm), not a classifier: generate with it: sidetune generate --checkpoint \(path) --prompt \"...\"")
        }
        let family = try BackboneFamily(checkpoint: config)
        var options = config.options
        options.sideInit = .random // the checkpoint's weights replace any initialisation (no Fisher pass)
        let classes = config.labels.count
        // A recorded path is used only while it still exists (the checksum decides if it is the same file).
        let recordedPath = config.backbonePath.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        func notFound(_ flag: String) -> ValidationError {
            ValidationError("\(path): the checkpoint's backbone '\(config.backboneName)' is not a known asset\(config.backbonePath.map { " and \($0) is gone" } ?? ""): pass \(flag)")
        }
        func restore(_ model: some ClassifierModel, sha: String) throws {
            _ = try Checkpoint.load(into: model, from: folder, backboneSHA256: sha)
            model.train(false)
        }
        let input: Input
        switch family {
        case .bert:
            let dir = hint.modelDir ?? (hint.model == nil ? recordedPath : nil)
            let name = hint.model ?? config.backboneName
            if dir == nil && !isAsset(name) { throw notFound("--model-dir FOLDER") }
            let bert = try BertBackbone.resolve(model: name, modelDir: dir, log: log)
            try Checkpoint.checkBackbone(config, sha256: bert.sha256, folder: folder)
            let model = try TextClassifier(backbone: bert.load(), method: config.method, classes: classes, options: options, seed: config.seed)
            try restore(model, sha: bert.sha256)
            let tokenizer = try bert.tokenizer()
            input = .tokens(model) { tokenizer.encode($0, maxLength: config.maxLength).ids }
        case .vit:
            guard let name = hint.model ?? recordedPath ?? (isAsset(config.backboneName) ? config.backboneName : nil) else {
                throw notFound("--model FILE.onnx")
            }
            let vit = try ViTBackbone.resolve(model: name, log: log)
            try Checkpoint.checkBackbone(config, sha256: vit.sha256, folder: folder)
            let model = try makeImageClassifier(backbone: vit.load(), method: config.method, classes: classes, options: options,
                                                seed: config.seed)
            try restore(model, sha: vit.sha256)
            // Older image checkpoints kept the image side in max_length.
            input = .images(model, ImagePreprocessor(size: config.imageSize ?? config.maxLength))
        case .llama:
            guard let (asset, weights) = LoadedLLM.parse(backboneName: config.backboneName) else {
                throw ValidationError("\(path): backbone name '\(config.backboneName)' is not <asset>-nf4 or <asset>-float32")
            }
            let llm = try LoadedLLM.load(hint.model ?? asset, weights: weights, log: log)
            try Checkpoint.checkBackbone(config, sha256: llm.sha256, folder: folder)
            let model = try LLMClassifier(backbone: llm.llama, method: config.method, classes: classes, options: options, seed: config.seed)
            try restore(model, sha: llm.sha256)
            input = .tokens(model) { llmClassificationIds(llm.tokenizer, $0, maxLength: config.maxLength) }
        }
        log("checkpoint \(path): \(config.method.rawValue) on \(config.backboneName) (\(family.rawValue)), \(classes) labels")
        return RestoredClassifier(config: config, family: family, input: input)
    }

    static func isAsset(_ name: String) -> Bool { (try? AssetStore().descriptor(name)) != nil }

    /// Refuses data whose labels are not the checkpoint's: other names, or another order, are other classes.
    func checkLabels(_ labels: [String], data: String) throws {
        guard labels == config.labels else {
            throw ValidationError("--data \(data): its labels \(labels) differ from the checkpoint's \(config.labels)")
        }
    }
}

/// Accuracy and macro-F1 of a model on splits, measured as the trainer measures them.
func evaluateSplits<M: ClassifierModel, S: ClassificationData>(_ model: M, _ splits: [S], config: CheckpointConfig) throws
    -> [ClassificationMetrics] where S.Batch == M.Batch {
    let trainer = try Trainer(model: model, parameters: TrainingParameters(), train: splits[0], validation: splits[0], test: splits[0],
                              checkpointConfig: config)
    defer { model.train(false) } // evaluate turns training mode back on
    return splits.map { trainer.evaluate($0) }
}

/// Class probabilities (softmax of the logits) of `count` examples, made into batches of 64 by `batch`.
func classProbabilities<M: ClassifierModel>(_ model: M, count: Int, batch: ([Int]) -> M.Batch) -> [[Float]] {
    var out: [[Float]] = []
    var i = 0
    while i < count {
        let rows = Array(i..<min(i + 64, count))
        let p = noGrad { model.logits(batch(rows), taps: nil).softmax() }
        let c = p.shape[1]
        out += rows.indices.map { r in (0..<c).map { p.data[r * c + $0] } }
        i += rows.count
    }
    return out
}
