import ArgumentParser
import SideTuneBackbones
import SideTuneMethods

/// A task's splits encoded for one backbone, with what checkpoints record of them.
struct TaskSplits<S: ClassificationData> {
    var labels: [String]
    var train: S, validation: S, test: S
    /// --max-length; for images the image side (older checkpoints read it there).
    var maxLength: Int
    var imageSize: Int?
    var imagePipeline: String?

    /// The first n training examples one by one, as method builders read them (QST's Fisher
    /// scores, LAST's initialisation).
    func trainingExamples(_ n: Int) -> [(input: S.Batch, label: Int)] {
        (0..<min(n, train.count)).map { (input: train.batch([$0]), label: train.labels[$0]) }
    }
}

/// What a command does with a loaded backbone and its task's splits. Generic over the backbone
/// family, so `train`, `sweep` and `cache build` each write one body for the three families.
protocol BackboneTaskBody {
    associatedtype Result
    func run<B: Backbone, S: ClassificationData>(_ backbone: B, _ splits: TaskSplits<S>) throws -> Result
        where S.Batch == B.Input
}

extension SideTuneCommand.Train {
    /// Loads `source` in `weights`, then the task's splits encoded for it (tokenised text, or
    /// images at --image-size), checks --max-length against the model (plus `promptTokens` on
    /// BERT, whose prompts take positions), and runs `body` on both.
    func withBackboneAndSplits<Body: BackboneTaskBody>(_ source: BackboneSource, weights: WeightFormat, promptTokens: Int = 0,
                                                       log: @escaping (String) -> Void, _ body: Body) throws -> Body.Result {
        switch try source.load(weights: weights, log: log) {
        case let .bert(encoder, tokenizer):
            let positions = task.maxLength + promptTokens, available = encoder.config.maxPositionEmbeddings
            guard positions <= available else {
                let prompts = promptTokens > 0 ? " plus \(promptTokens) prompt tokens" : ""
                throw ValidationError("--max-length \(task.maxLength)\(prompts) is more than the \(available) positions the "
                                      + "backbone has (max_position_embeddings)")
            }
            let (labels, train, validation, test) = try loadTextSplits(task, log: log) {
                tokenizer.encode($0, maxLength: task.maxLength).ids
            }
            return try body.run(encoder, TaskSplits(labels: labels, train: train, validation: validation, test: test,
                                                    maxLength: task.maxLength))
        case let .vit(vit):
            let data = try ImageSplits.load(task, imageSize: image.imageSize, patch: vit.config.patchSize, testLimit: image.testLimit,
                                            log: log)
            return try body.run(vit, TaskSplits(labels: data.labels, train: data.train, validation: data.validation, test: data.test,
                                                maxLength: data.imageSize, imageSize: data.imageSize,
                                                imagePipeline: data.pipeline.rawValue))
        case let .llama(llama, tokenizer):
            try checkContext(llama)
            let (labels, train, validation, test) = try loadTextSplits(task, log: log) {
                llmClassificationIds(tokenizer, $0, maxLength: task.maxLength)
            }
            return try body.run(llama, TaskSplits(labels: labels, train: train, validation: validation, test: test,
                                                  maxLength: task.maxLength))
        }
    }

    /// --max-length against a decoder's context.
    func checkContext(_ llama: Llama) throws {
        guard task.maxLength <= llama.config.contextLength else {
            throw ValidationError("--max-length \(task.maxLength) is more than the model's context of \(llama.config.contextLength) tokens")
        }
    }
}
