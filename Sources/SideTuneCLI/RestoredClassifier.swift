import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneData
import SideTuneEngine
import SideTuneMethods
import SideTuneTokenizers
import SideTuneTrainer

/// A classifier rebuilt from a checkpoint folder, whatever its backbone (BERT text encoder, DINOv2
/// ViT, Llama decoder): the one place eval and predict get their model from. The checkpoint
/// decides everything the model needs (family, method and options, weight format, labels, max
/// length, image size), so no training flag has to be repeated.
struct RestoredClassifier {
    enum Input {
        /// Text encoders and LLMs read token rows; `encode` is the backbone's tokenizer at the
        /// checkpoint's max length.
        case tokens(any TrainableModel<BatchEncoding>, encode: (String) -> [Int32])
        /// ViTs read pixels prepared as in training (the checkpoint's image size and pipeline).
        case images(any TrainableModel<Tensor>, ImageInput)
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
        let family = BackboneFamily(checkpoint: config)
        var options = config.options
        options.sideInit = .random // the checkpoint's weights replace any initialisation (no Fisher pass)
        let classes = config.labels.count
        let view = CheckpointConfigView(family: family, backboneName: config.backboneName, backbonePath: config.backbonePath,
                                        backboneSHA256: config.backboneSHA256)
        let source = try BackboneSource.of(checkpoint: view, hint: hint, checkpointPath: path, log: log)
        func restore<B: Backbone>(_ backbone: B) throws -> any TrainableModel<B.Input> {
            let model = try MethodRegistry.build(config.method, on: backbone, classes: classes, options: options, seed: config.seed)
            _ = try Checkpoint.load(into: model, from: folder, backboneSHA256: source.sha256)
            model.train(false)
            return model
        }
        let input: Input
        switch try source.load(weights: MethodRegistry.weights(config.method, options: options), log: log) {
        case let .bert(encoder, tokenizer):
            input = .tokens(try restore(encoder)) { tokenizer.encode($0, maxLength: config.maxLength).ids }
        case let .vit(vit):
            // Older image checkpoints kept the image side in max_length.
            let pipeline = try config.imagePipeline.map { name in
                guard let p = ImagePipeline(rawValue: name) else {
                    throw ValidationError("\(path): image_pipeline '\(name.prefix(40))' is not one this SideTune knows (resize, centre-crop)")
                }
                return p
            } ?? .resize
            input = .images(try restore(vit), ImageInput(size: config.imageSize ?? config.maxLength, pipeline: pipeline, patch: vit.config.patchSize))
        case let .llama(llama, tokenizer):
            input = .tokens(try restore(llama)) { llmClassificationIds(tokenizer, $0, maxLength: config.maxLength) }
        }
        log("checkpoint \(path): \(config.method.rawValue) on \(config.backboneName) (\(family.rawValue)), \(classes) labels")
        return RestoredClassifier(config: config, family: family, input: input)
    }

    /// Refuses data whose labels are not the checkpoint's: other names, or another order, are other classes.
    func checkLabels(_ labels: [String], data: String) throws {
        guard labels == config.labels else {
            throw ValidationError("--data \(data): its labels \(labels) differ from the checkpoint's \(config.labels)")
        }
    }
}

/// Accuracy and macro-F1 of a model on splits, measured as the trainer measures them.
func evaluateSplits<M: TrainableModel, S: TrainingData>(_ model: M, _ splits: [S], config: CheckpointConfig) throws
    -> [ClassificationMetrics] where S.Batch == M.Batch {
    let trainer = try Trainer(model: model, parameters: TrainingParameters(), train: splits[0], validation: splits[0], test: splits[0],
                              checkpointConfig: config)
    defer { model.train(false) } // evaluate turns training mode back on
    return splits.map { trainer.evaluate($0) }
}

/// Class probabilities (softmax of the logits) of `count` examples, made into batches of 64 by `batch`.
func classProbabilities<M: TrainableModel>(_ model: M, count: Int, batch: ([Int]) -> M.Batch) -> [[Float]] {
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
