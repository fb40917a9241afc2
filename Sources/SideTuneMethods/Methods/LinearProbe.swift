import SideTuneBackbones
import SideTuneEngine

/// The linear probe: the backbone's own head (final norm, read-out, Linear) on its frozen last tap.
public enum LinearProbeMethod: AdaptationMethod {
    public static let kind = MethodKind.linear
    public static let summary = "linear probe: the backbone's read-out of its frozen last layer, then a Linear"
    public static let defaultLearningRate: Float = 3e-3
    public static let readsFrozenTaps = true

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: 0, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head,
                          tapsRead: [c.backbone.depth])
    }
}
