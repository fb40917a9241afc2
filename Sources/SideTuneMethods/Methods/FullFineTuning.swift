import SideTuneBackbones
import SideTuneEngine

/// Full fine-tuning: every backbone weight trains, with the backbone's head. The memory reference.
public enum FullFineTuningMethod: AdaptationMethod {
    public static let kind = MethodKind.full
    public static let summary = "full fine-tuning: every backbone weight trains"
    public static let defaultLearningRate: Float = 5e-5

    public static func refusal(weights: WeightFormat) -> String? {
        weights == .nf4 ? "NF4 weights cannot be trained; use --weights f32" : nil
    }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        c.backbone.unfreeze()
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [])
    }
}
