import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN
import SideTuneTokenizers

/// LST on any backbone: the ladder below reads every tap h_0 ... h_L; its side blocks are the
/// backbone's block type at width d/r. The side starts from the backbone's layers pruned by
/// Fisher importance (`--side-init fisher`, the default) or |W| on BERT encoders, at random elsewhere.
public enum LSTMethod: AdaptationMethod {
    public static let kind = MethodKind.lst
    public static let summary = "Ladder Side-Tuning: a d/r-wide ladder of backbone-type blocks fed by gated, downsampled taps"
    public static let defaultLearningRate: Float = 3e-3
    public static let readsFrozenTaps = true

    public static func build<B: Backbone>(_ c: inout MethodContext<B>) throws -> any TrainableModel<B.Input> {
        let side = try LSTSide(backbone: c.backbone, classes: c.classes, options: c.options, rng: &c.rng)
        if c.options.sideInit != .random {
            if let bert = c.backbone as? BertEncoder {
                // B is BertEncoder here, so its inputs are token rows.
                let examples = c.trainingExamples.map { f in { (n: Int) in f(n).map { (input: $0.input as! BatchEncoding, label: $0.label) } } }
                try side.initialize(from: bert, options: c.options, classes: c.classes, examples: examples, rng: &c.rng,
                                    progress: c.progress)
            } else {
                // The default; the pruned initialisation is built for BERT's post-LN layers only.
                c.progress?("LST on a \(B.family.summary): side blocks start random (--side-init \(c.options.sideInit.rawValue) prunes BERT layers only)")
            }
        }
        return Classifier(backbone: c.backbone, method: kind, classes: c.classes, options: c.options, reader: side,
                          tapsRead: Array(0...c.backbone.depth))
    }
}

/// Ladder Side-Tuning (Sung, Cho, Bansal 2022) beside a frozen backbone.
///
///     s_0 = Down_0(h_0)
///     s_i = SideBlock_i(mu_i * s_{i-1} + (1 - mu_i) * Down_i(h_i)),  mu_i = sigmoid(alpha_i / T)
///     logits = Head(pool(Up(Dropout(SideNorm(s_L)))))
///
/// Side blocks are the backbone's block type at width d/r (FFN d_ff/r, same head count): post-LN
/// BERT layers for text, pre-LN ViT blocks for images, decoder layers for an LLM. Dropped layers
/// have no block, Down or gate: s passes through them. The head is Linear, tanh, Linear. The
/// pruned initialisation (`initializeFromBackbone`) exists for BERT only.
public final class LSTSide: Module, TapReader {
    public let down0: Linear
    public let downs: [Linear]
    public let blocks: [any SideBlock]
    /// alpha_i, one per kept layer, 0 at start (mu = 0.5).
    public let gates: Tensor
    public let sideNorm: any NormLayer
    public let dropout: Dropout
    public let up: Linear
    public let headHidden: Linear
    public let headOut: Linear
    /// Backbone layer numbers (1...L) that have a side block.
    public let _keptLayers: [Int]
    let _temperature: Float
    let _pooling: MethodOptions.Pooling
    let _reduction: Int
    let _matmul: MatmulPrecision

    public init<B: Backbone>(backbone: B, classes: Int, options o: MethodOptions, rng: inout SplitMix64) throws {
        let d = backbone.width, depth = backbone.depth
        guard o.reduction >= 1, d % o.reduction == 0 else { throw MethodError("LST: reduction \(o.reduction) must divide the width \(d)") }
        let ds = d / o.reduction
        let kept = (1...depth).filter { !o.droppedLayers.contains($0) }
        guard !kept.isEmpty else { throw MethodError("LST: every layer is dropped") }
        for l in o.droppedLayers where l < 1 || l > depth {
            throw MethodError("LST: dropped layer \(l) is outside 1...\(depth)")
        }
        down0 = Linear(d, ds, rng: &rng)
        downs = kept.map { _ in Linear(d, ds, rng: &rng) }
        var built: [any SideBlock] = []
        do {
            for _ in kept { built.append(try backbone.sideBlock(reduction: o.reduction, rng: &rng)) }
        } catch { throw MethodError("LST: \(error)") }
        blocks = built
        gates = parameter(.zeros([kept.count]), name: "gates")
        sideNorm = backbone.sideNorm(width: ds)
        dropout = Dropout(o.dropout, seed: rng.next())
        up = Linear(ds, d, rng: &rng)
        headHidden = Linear(d, d, rng: &rng)
        headOut = Linear(d, classes, rng: &rng)
        _keptLayers = kept
        _temperature = o.gateTemperature
        _pooling = o.pooling
        _reduction = o.reduction
        _matmul = o.sideMatmul ?? .float32
        super.init()
    }

    public func callAsFunction(taps: [Tensor], layout: TokenLayout) -> Tensor {
        Tensor.withMatmulPrecision(_matmul) { sideForward(taps, layout) }
    }

    public var readsPackedTaps: Bool { blocks.allSatisfy(\.supportsPackedTokens) }

    /// Taps go only into the Down projections, which read bf16 as stored: on AMX tiles, or with
    /// the thin GEMM's bf16 tiles. Where neither applies the cache converts them to f32 instead
    /// (in parallel, where `Tensor.linear` would convert on one thread).
    public var readsBFloat16Taps: Bool {
        Tensor.linearReadsBFloat16(inFeatures: down0.weight.shape[1], outFeatures: down0.weight.shape[0])
    }

    private func sideForward(_ taps: [Tensor], _ layout: TokenLayout) -> Tensor {
        var s = down0(taps[0])
        for (j, layer) in _keptLayers.enumerated() {
            let mu = (gates.slice(axis: 0, j, j + 1) * (1 / _temperature)).sigmoid() // [1]
            let mixed = Tensor.mix(s, downs[j](taps[layer]), weight: mu)
            s = blocks[j](mixed, layout: layout)
        }
        // Head(pool(Up(y))) computed as Head(Up(pool(y))): Up is affine and pooling a mean or a
        // row pick, so they commute, and Up then runs on B rows instead of every token.
        let pooled = pool(dropout(sideNorm(s)), layout: layout, _pooling)
        return headOut(headHidden(up(pooled)).tanh())
    }

    /// The pruned initialisation the options ask for (`magnitude`, or `fisher` over up to
    /// `fisherExamples` of `examples`).
    func initialize(from backbone: BertEncoder, options o: MethodOptions, classes: Int,
                    examples: ((Int) -> [(input: BatchEncoding, label: Int)])?, rng: inout SplitMix64,
                    progress: ((String) -> Void)?) throws {
        switch o.sideInit {
        case .random: return
        case .magnitude:
            try initializeFromBackbone(backbone, importance: Importance.magnitude(backbone))
        case .fisher:
            let data = examples?(o.fisherExamples) ?? []
            guard !data.isEmpty else { throw MethodError("LST fisher initialisation needs training examples") }
            progress?("LST: Fisher importance over \(data.count) training examples")
            let imp = Importance.fisher(backbone, classes: classes, examples: data.map { (ids: $0.input.ids, label: $0.label) }, rng: &rng)
            try initializeFromBackbone(backbone, importance: imp)
        }
    }

    /// Starts side block j from backbone layer `_keptLayers[j]` pruned to the side width, keeping
    /// the rows with the largest importance (|W| or Fisher). `importance` maps the backbone's
    /// parameter names to tensors of the same shapes.
    public func initializeFromBackbone(_ backbone: BertEncoder, importance: [String: Tensor]) throws {
        let c = backbone.config, side = try BertEncoder.sideConfig(c, reduction: _reduction)
        let d = c.hiddenSize, ds = side.hiddenSize, heads = c.numAttentionHeads, hd = d / heads, hds = ds / heads
        func imp(_ name: String) throws -> Tensor {
            guard let t = importance[name] else { throw MethodError("LST init: no importance for backbone tensor \(name)") }
            return t
        }
        // Kept hidden indices: columns of the embedding matrix with the largest total importance.
        let emb = try imp("embeddings.wordEmbeddings.weight")
        var colScore = [Double](repeating: 0, count: d)
        for r in 0..<emb.shape[0] { for j in 0..<d { colScore[j] += Double(emb.data[r * d + j]) } }
        let hidden = topIndices(colScore, ds)
        for (j, layerNumber) in _keptLayers.enumerated() {
            let p = "layers.\(layerNumber - 1)."
            let src = backbone.layers[layerNumber - 1]
            guard let dst = blocks[j] as? BertLayer else { throw MethodError("LST init: side block \(j) is not a BERT layer") }
            // q, k, v share their kept rows: per head, the hds dims with the largest summed importance.
            var qkvScore = [Double](repeating: 0, count: d)
            for name in ["query", "key", "value"] {
                let w = try imp(p + "attention.\(name).weight")
                for r in 0..<d { for col in hidden { qkvScore[r] += Double(w.data[r * d + col]) } }
            }
            var attnRows: [Int] = []
            for h in 0..<heads {
                let local = topIndices(Array(qkvScore[(h * hd)..<((h + 1) * hd)]), hds)
                attnRows += local.map { h * hd + $0 }
            }
            try copyPruned(src.attention.query, dst.attention.query, rows: attnRows, cols: hidden)
            try copyPruned(src.attention.key, dst.attention.key, rows: attnRows, cols: hidden)
            try copyPruned(src.attention.value, dst.attention.value, rows: attnRows, cols: hidden)
            // Outputs that join the residual stream keep the hidden indices.
            try copyPruned(src.attention.output, dst.attention.output, rows: hidden, cols: attnRows)
            let ffIn = try imp(p + "intermediate.weight")
            let ff = ffIn.shape[0]
            var ffScore = [Double](repeating: 0, count: ff)
            for r in 0..<ff { for col in hidden { ffScore[r] += Double(ffIn.data[r * d + col]) } }
            let ffRows = topIndices(ffScore, dst.intermediate.outFeatures)
            try copyPruned(src.intermediate, dst.intermediate, rows: ffRows, cols: hidden)
            try copyPruned(src.output, dst.output, rows: hidden, cols: ffRows)
            copyNorm(src.attentionNorm, dst.attentionNorm, hidden)
            copyNorm(src.outputNorm, dst.outputNorm, hidden)
        }
    }
}

/// a[j] += g[j] * g[j] for j in 0..<n, 16 lanes at a time (the same rounding as the scalar form).
func squareAccumulate(_ n: Int, _ g: UnsafePointer<Float>, into a: UnsafeMutablePointer<Float>) {
    var j = 0
    while j + 16 <= n {
        let v = loadV(g + j)
        storeV(a + j, loadV(a + j) + v * v)
        j += 16
    }
    while j < n { a[j] += g[j] * g[j]; j += 1 }
}

/// The k indices with the largest scores, ascending.
func topIndices(_ scores: [Double], _ k: Int) -> [Int] {
    Array(scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(k)).sorted()
}

func copyPruned(_ srcLayer: any LinearLayer, _ dstLayer: any LinearLayer, rows: [Int], cols: [Int]) throws {
    guard let src = srcLayer.plain, let dst = dstLayer.plain else {
        throw MethodError("LST init: pruning needs plain F32 layers (not NF4 or wrapped ones); use --side-init random")
    }
    precondition(dst.weight.shape == [rows.count, cols.count], "pruned shape \([rows.count, cols.count]) vs \(dst.weight.shape)")
    let inF = src.inFeatures
    for (i, r) in rows.enumerated() {
        for (j, c) in cols.enumerated() { dst.weight.data[i * cols.count + j] = src.weight.data[r * inF + c] }
        if let sb = src.bias, let db = dst.bias { db.data[i] = sb.data[r] }
    }
}

func copyNorm(_ src: LayerNorm, _ dst: LayerNorm, _ idx: [Int]) {
    for (i, k) in idx.enumerated() {
        dst.weight?.data[i] = src.weight?.data[k] ?? 1
        dst.bias?.data[i] = src.bias?.data[k] ?? 0
    }
}

/// Importance of every backbone parameter for LST's pruned initialisation.
public enum Importance {
    /// |W| for every parameter.
    public static func magnitude(_ backbone: BertEncoder) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (n, p) in backbone.namedParameters() {
            let t = Tensor(shape: p.shape, category: .workspace)
            for i in 0..<p.count { t.data[i] = abs(p.data[i]) }
            out[n] = t
        }
        return out
    }

    /// Fisher information: the sum over `examples` (batch 1) of squared per-example gradients of
    /// the task loss on the plain backbone with a fresh mean-pool linear head.
    public static func fisher(_ backbone: BertEncoder, classes: Int, examples: [(ids: [Int32], label: Int)],
                              rng: inout SplitMix64, progress: ((Int) -> Void)? = nil) -> [String: Tensor] {
        let params = backbone.namedParameters()
        let saved = params.map { $0.1.requiresGrad }
        defer { for (p, s) in zip(params, saved) { p.1.requiresGrad = s; p.1.zeroGrad() } }
        backbone.unfreeze()
        let head = Linear(backbone.config.hiddenSize, classes, rng: &rng)
        let wordEmbeddings = backbone.embeddings.wordEmbeddings.weight
        var acc: [String: Tensor] = [:]
        for (n, p) in params { acc[n] = Tensor.zeros(p.shape, category: .workspace) }
        for (i, ex) in examples.enumerated() {
            let t = ex.ids.count
            let out = backbone(ids: ex.ids, attentionMask: [Int32](repeating: 1, count: t), batch: 1, seq: t)
            let pooled = BertEncoder.meanPool(out.last, attentionMask: [Int32](repeating: 1, count: t))
            let loss = head(pooled).crossEntropy(targets: [Int32(ex.label)])
            loss.backward()
            for (n, p) in params {
                guard let g = p.grad else { continue }
                let pa = acc[n]!.data, pg = g.data
                if p === wordEmbeddings {
                    // Only the example's tokens' rows have a gradient; the other rows would add
                    // zeros (the word embeddings are half of MiniLM's parameters).
                    let width = p.shape[1]
                    for row in Set(ex.ids.map(Int.init)) {
                        squareAccumulate(width, pg + row * width, into: pa + row * width)
                    }
                } else {
                    parallelElementwise(p.count) { lo, hi in squareAccumulate(hi - lo, pg + lo, into: pa + lo) }
                }
                p.zeroGrad()
            }
            head.weight.zeroGrad(); head.bias?.zeroGrad()
            progress?(i + 1)
        }
        return acc
    }
}
