import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// BitFit: only the biases (and the head) train. On a backbone whose projections have no biases
/// (Llama), zero biases are added to every projection and trained (the model starts unchanged).
public enum BitFitMethod: AdaptationMethod {
    public static let kind = MethodKind.bitfit
    public static let summary = "BitFit: only biases (and the head) train; bias-free projections get zero biases"
    public static let defaultLearningRate: Float = 1e-3

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        for slot in c.backbone.linearSlots() where !slot.layer.hasBias {
            slot.replace(with: MemoryLedger.withCategory(.weights) { BiasedLinear(wrapping: slot.layer) })
        }
        c.backbone.unfreezeBiases()
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [])
    }
}
