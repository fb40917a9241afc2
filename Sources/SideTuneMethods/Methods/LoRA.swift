import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// LoRA on the query and value projections of the F32 backbone (r 8, alpha 16 by default).
public enum LoRAMethod: AdaptationMethod {
    public static let kind = MethodKind.lora
    public static let summary = "LoRA on the query and value projections"
    public static let defaultLearningRate: Float = 1e-3

    public static func refusal(weights: WeightFormat) -> String? {
        weights == .nf4 ? "LoRA on the NF4 backbone is QLoRA: use --method qlora (or --weights f32)" : nil
    }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        attach(to: c.backbone, options: c.options, rng: &c.rng)
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [])
    }

    /// Wraps every query and value projection in a `LoRALinear`, block by block.
    static func attach<B: Backbone>(to backbone: B, options o: MethodOptions, rng: inout SplitMix64) {
        for slot in backbone.linearSlots() where slot.role == .query || slot.role == .value {
            slot.replace(with: LoRALinear(wrapping: slot.layer, rank: o.loraRank, alpha: o.loraAlpha, rng: &rng))
        }
    }
}

/// QLoRA: LoRA on the query and value projections of the 4-bit NF4 backbone.
public enum QLoRAMethod: AdaptationMethod {
    public static let kind = MethodKind.qlora
    public static let summary = "QLoRA: LoRA on the query and value projections of the 4-bit NF4 backbone"
    public static let defaultLearningRate: Float = 1e-3
    public static var defaultWeights: WeightFormat { .nf4 }

    public static func refusal(weights: WeightFormat) -> String? {
        weights == .f32 ? "QLoRA is LoRA on the NF4 backbone: use --weights nf4 (or --method lora for F32)" : nil
    }

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        LoRAMethod.attach(to: c.backbone, options: c.options, rng: &c.rng)
        let head = BackboneHead(c.backbone, classes: c.classes, dropout: c.options.dropout, rng: &c.rng)
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: head, tapsRead: [])
    }
}
