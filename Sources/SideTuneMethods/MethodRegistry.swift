import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// What a method's build step gets: the backbone (frozen already), the task, the options, a
/// generator seeded from the run's seed, and the training examples for methods that score the
/// backbone before training (LST's Fisher importance).
public struct MethodContext<B: Backbone> {
    public let backbone: B
    public let classes: Int
    public let options: MethodOptions
    public var rng: SplitMix64
    /// Up to n labelled training examples, one input each (nil: none offered).
    public let trainingExamples: ((Int) -> [(input: B.Input, label: Int)])?
    public let progress: ((String) -> Void)?
}

/// One adaptation method: what it is, where it runs, and how it builds itself against any
/// backbone through the `Backbone` protocol (or refuses, with the reason). Each lives in its own
/// file under `Methods/` and is listed once in `MethodRegistry.all`.
public protocol AdaptationMethod {
    static var kind: MethodKind { get }
    /// One line for `sidetune methods` and the help.
    static var summary: String { get }
    /// Whether the method reads frozen taps only (a side method: backprop never enters the
    /// backbone, and the taps can be cached).
    static var readsFrozenTaps: Bool { get }
    /// Why the method cannot run on a family of backbones; nil where it runs.
    static func refusal(on family: BackboneFamily) -> String?
    /// Why the method cannot run with the backbone stored in this format; nil where it can.
    static func refusal(weights: WeightFormat) -> String?
    /// The weight format the method runs on unless told (NF4 for the 4-bit methods).
    static var defaultWeights: WeightFormat { get }
    /// Peak learning rate unless told: side networks and heads start from scratch and take larger
    /// steps than a pretrained backbone can.
    static var defaultLearningRate: Float { get }
    /// What backward keeps unless told (`--activation-bits`): exact (32) but for S2A.
    static var defaultActivationBits: ActivationBits { get }
    /// Whether attention with frozen q, k, v projections recomputes them in backward from their
    /// input rather than keeping them (`AttentionRecompute`): S2A's choice, off for the others.
    static var recomputesAttentionProjections: Bool { get }
    /// Builds the method's model around the (frozen) backbone.
    static func build<B: Backbone>(_ context: inout MethodContext<B>) throws -> any TrainableModel<B.Input>
}

extension AdaptationMethod {
    public static func refusal(on family: BackboneFamily) -> String? { nil }
    public static func refusal(weights: WeightFormat) -> String? { nil }
    public static var defaultWeights: WeightFormat { .f32 }
    public static var readsFrozenTaps: Bool { false }
    public static var defaultActivationBits: ActivationBits { .thirtyTwo }
    public static var recomputesAttentionProjections: Bool { false }
}

public enum MethodRegistry {
    /// Every method, in the order tables list them. (An immutable list of metatypes; Swift 6.2+
    /// calls protocol metatypes non-Sendable unless the protocol refines SendableMetatype, which
    /// the 6.0 tools this package supports do not have.)
    nonisolated(unsafe) public static let all: [any AdaptationMethod.Type] = [
        LSTMethod.self, LASTMethod.self, QSTMethod.self, HSTMethod.self, LinearProbeMethod.self, FullFineTuningMethod.self,
        BitFitMethod.self, LoRAMethod.self, QLoRAMethod.self, AdapterMethod.self, PromptTuningMethod.self, S2AMethod.self,
    ]

    public static func method(_ kind: MethodKind) -> any AdaptationMethod.Type {
        guard let m = all.first(where: { $0.kind == kind }) else { preconditionFailure("method \(kind) is not registered") }
        return m
    }

    /// The methods that run on a family of backbones.
    public static func methods(on family: BackboneFamily) -> [MethodKind] {
        var out: [MethodKind] = []
        for m in all where m.refusal(on: family) == nil { out.append(m.kind) }
        return out
    }

    /// What a run's backward keeps: the options' choice, else the method's default.
    public static func activationBits(_ kind: MethodKind, options: MethodOptions) -> ActivationBits {
        options.activationBits ?? method(kind).defaultActivationBits
    }

    /// The weight format a run uses: the options' choice, else the method's default.
    public static func weights(_ kind: MethodKind, options: MethodOptions) -> WeightFormat {
        options.weights ?? method(kind).defaultWeights
    }

    /// Refuses a method on a backbone family or weight format it does not run on, naming both and
    /// what does run there; checked before any backbone is loaded.
    public static func check(_ kind: MethodKind, on family: BackboneFamily, weights: WeightFormat) throws {
        let m = method(kind)
        if let why = m.refusal(on: family) {
            throw MethodError("method \(kind.rawValue) does not run on a \(family.summary): \(why) (there: \(methods(on: family).map(\.rawValue).joined(separator: ", ")))")
        }
        if let why = m.refusal(weights: weights) { throw MethodError("method \(kind.rawValue) with --weights \(weights.rawValue): \(why)") }
    }

    /// Freezes the backbone, stores its projections in the run's weight format, and builds the
    /// method on it. `seed` seeds every random draw of the build (initialisation, dropout seeds).
    public static func build<B: Backbone>(_ kind: MethodKind, on backbone: B, classes: Int, options: MethodOptions, seed: UInt64,
                                          trainingExamples: ((Int) -> [(input: B.Input, label: Int)])? = nil,
                                          progress: ((String) -> Void)? = nil) throws -> any TrainableModel<B.Input> {
        guard classes >= 2 else { throw MethodError("a classifier needs at least 2 classes, got \(classes)") }
        try options.validate()
        // Unless told, a backbone stored in NF4 already stays so where the method allows it.
        let m = method(kind)
        let weights = options.weights ?? (backbone.weightFormat == .nf4 && m.refusal(weights: .nf4) == nil ? .nf4 : m.defaultWeights)
        try check(kind, on: B.family, weights: weights)
        backbone.freeze()
        if weights == .nf4 && backbone.weightFormat != .nf4 { try backbone.quantizeProjections() }
        if weights == .f32 && backbone.weightFormat == .nf4 {
            throw MethodError("method \(kind.rawValue) needs F32 weights, but the backbone's projections are stored in NF4")
        }
        var context = MethodContext(backbone: backbone, classes: classes, options: options, rng: SplitMix64(seed: seed),
                                    trainingExamples: trainingExamples, progress: progress)
        let model = try m.build(&context)
        // A frozen backbone with bf16 products stores its F32 projections once in bf16 (after the
        // build: LST's side network starts from the f32 weights).
        if m.readsFrozenTaps && options.backbonePrecision == .bfloat16 { backbone.convertProjectionsToBFloat16() }
        return model
    }

    /// `build` for the methods that build a `Classifier` (every one but HST, which has its own
    /// model): the concrete type, for code that trains it (`Trainer(model: ...)`) or inspects it.
    public static func classifier<B: Backbone>(_ kind: MethodKind, on backbone: B, classes: Int, options: MethodOptions = MethodOptions(),
                                               seed: UInt64, trainingExamples: ((Int) -> [(input: B.Input, label: Int)])? = nil,
                                               progress: ((String) -> Void)? = nil) throws -> Classifier<B> {
        let model = try build(kind, on: backbone, classes: classes, options: options, seed: seed, trainingExamples: trainingExamples,
                              progress: progress)
        guard let classifier = model as? Classifier<B> else {
            throw MethodError("\(kind.rawValue) builds its own model, not a Classifier: use MethodRegistry.build")
        }
        return classifier
    }

    /// The method x backbone matrix: "yes" or the refusal, one row per method.
    public static func matrix() -> [(method: MethodKind, summary: String, cells: [(family: BackboneFamily, refusal: String?)])] {
        var rows: [(method: MethodKind, summary: String, cells: [(family: BackboneFamily, refusal: String?)])] = []
        for m in all {
            var cells: [(family: BackboneFamily, refusal: String?)] = []
            for f in BackboneFamily.allCases { cells.append((f, m.refusal(on: f))) }
            rows.append((m.kind, m.summary, cells))
        }
        return rows
    }

    /// The matrix as a Markdown table (the README's, generated by `sidetune methods --markdown`).
    public static func markdownMatrix(columns: [(family: BackboneFamily, title: String)]) -> String {
        var lines = ["| method | " + columns.map(\.title).joined(separator: " | ") + " | what |",
                     "|---|" + columns.map { _ in "---|" }.joined() + "---|"]
        for row in matrix() {
            let cells = columns.map { c in row.cells.first { $0.family == c.family }?.refusal == nil ? "yes" : "-" }
            lines.append("| \(row.method.rawValue) | " + cells.joined(separator: " | ") + " | \(row.summary) |")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension MethodKind {
    /// The registered method's `readsFrozenTaps`: a side method, whose taps can be cached.
    public var readsFrozenTaps: Bool { MethodRegistry.method(self).readsFrozenTaps }
    public var summary: String { MethodRegistry.method(self).summary }
}
