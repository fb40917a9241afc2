import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// Houlsby adapters: a bottleneck (64 by default) after each block's attention-output and
/// FFN-output projections, before their residuals, Up starting at zero.
public enum AdapterMethod: AdaptationMethod {
    public static let kind = MethodKind.adapter
    public static let summary = "Houlsby adapters after each block's attention and FFN outputs"
    public static let defaultLearningRate: Float = 1e-3

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        for slot in c.backbone.linearSlots() where slot.role == .attentionOutput || slot.role == .ffnOut {
            slot.replace(with: AdaptedLinear(wrapping: slot.layer, bottleneck: c.options.adapterBottleneck, rng: &c.rng))
        }
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [])
    }
}
