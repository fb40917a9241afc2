import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// Prompt tuning: P trainable tokens (20 by default) prepended to the embeddings' output (on a
/// ViT, between the CLS token and the patches, as VPT-shallow), stripped before the head. They
/// start from random rows of the token table (Lester et al.), or a small normal draw on a ViT.
public enum PromptTuningMethod: AdaptationMethod {
    public static let kind = MethodKind.prompt
    public static let summary = "prompt tuning: trainable tokens prepended to the embeddings"
    public static let defaultLearningRate: Float = 3e-3

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let n = c.options.promptLength
        guard n >= 1 else { throw MethodError("prompt tuning needs --prompt-length >= 1, got \(n)") }
        let prompt = Self.prompt(n, &c)
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [],
                          prompt: prompt)
    }

    /// n trainable prompt tokens: random rows of the token table, or a small normal draw.
    static func prompt<B: Backbone>(_ n: Int, _ c: inout MethodContext<B>) -> Tensor {
        let d = c.backbone.width
        let p: Tensor
        if let table = c.backbone.promptInitTable {
            p = Tensor(shape: [n, d])
            for i in 0..<n {
                let row = c.rng.nextInt(below: table.shape[0])
                (p.data + i * d).update(from: table.data + row * d, count: d)
            }
        } else {
            p = .randn([n, d], std: 0.02, rng: &c.rng)
        }
        return parameter(p, name: "prompt")
    }
}
