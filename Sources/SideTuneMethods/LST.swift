import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneNN

/// Ladder Side-Tuning (Sung, Cho, Bansal 2022) beside a BERT-family encoder or a ViT.
///
///     s_0 = Down_0(h_0)
///     s_i = SideBlock_i(mu_i * s_{i-1} + (1 - mu_i) * Down_i(h_i)),  mu_i = sigmoid(alpha_i / T)
///     logits = Head(pool(Up(Dropout(SideNorm(s_L)))))
///
/// Side blocks are the backbone's block type at width d/r (FFN d_ff/r, same head count): post-LN
/// BERT layers for text, pre-LN ViT blocks for images. Dropped layers have no block, Down or gate:
/// s passes through them. The head is Linear, tanh, Linear. The pruned initialisation
/// (`initializeFromBackbone`) exists for BERT only; on a ViT the side blocks start random.
public final class LSTSide: Module, PackedTapReader {
    public let down0: Linear
    public let downs: [Linear]
    public let blocks: [any LadderBlock]
    /// alpha_i, one per kept layer, 0 at start (mu = 0.5).
    public let gates: Tensor
    public let sideNorm: LayerNorm
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

    public static func sideConfig(_ c: BertConfig, reduction r: Int) throws -> BertConfig {
        guard c.hiddenSize % r == 0, (c.hiddenSize / r) % c.numAttentionHeads == 0, c.intermediateSize % r == 0 else {
            throw MethodError("LST: reduction \(r) must divide hidden size \(c.hiddenSize) into a multiple of \(c.numAttentionHeads) heads and divide FFN size \(c.intermediateSize)")
        }
        var s = c
        s.hiddenSize = c.hiddenSize / r
        s.intermediateSize = c.intermediateSize / r
        s.numHiddenLayers = 1
        return s
    }

    public convenience init(backbone: BertConfig, classes: Int, options o: MethodOptions, rng: inout SplitMix64) throws {
        try self.init(shape: .bert(backbone), classes: classes, options: o, rng: &rng)
    }

    public init(shape: SideBackboneShape, classes: Int, options o: MethodOptions, rng: inout SplitMix64) throws {
        try shape.checkReduction(o.reduction)
        let d = shape.width, ds = d / o.reduction
        let kept = (1...shape.layers).filter { !o.droppedLayers.contains($0) }
        guard !kept.isEmpty else { throw MethodError("LST: every layer is dropped") }
        for l in o.droppedLayers where l < 1 || l > shape.layers {
            throw MethodError("LST: dropped layer \(l) is outside 1...\(shape.layers)")
        }
        down0 = Linear(d, ds, rng: &rng)
        downs = kept.map { _ in Linear(d, ds, rng: &rng) }
        var built: [any LadderBlock] = []
        for _ in kept { built.append(try shape.sideBlock(reduction: o.reduction, rng: &rng)) }
        blocks = built
        gates = parameter(.zeros([kept.count]), name: "gates")
        sideNorm = LayerNorm(ds, eps: shape.eps)
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

    public func callAsFunction(taps: [Tensor], keyPadding: [Float]) -> Tensor { forward(taps, .padded(keyPadding: keyPadding)) }

    public var readsPackedTaps: Bool { blocks.allSatisfy(\.supportsPackedTokens) }

    /// Taps go only into the Down projections, which read bf16 as stored: on AMX tiles, or with
    /// the thin GEMM's bf16 tiles. Where neither applies the cache converts them to f32 instead
    /// (in parallel, where `Tensor.linear` would convert on one thread).
    public var readsBFloat16Taps: Bool {
        Tensor.linearReadsBFloat16(inFeatures: down0.weight.shape[1], outFeatures: down0.weight.shape[0])
    }

    public func callAsFunction(taps: [Tensor], segments: TokenSegments) -> Tensor { forward(taps, .packed(segments)) }

    func forward(_ taps: [Tensor], _ layout: TokenLayout) -> Tensor {
        Tensor.withMatmulPrecision(_matmul) { sideForward(taps, layout) }
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

    /// Starts side block j from backbone layer `_keptLayers[j]` pruned to the side width, keeping
    /// the rows with the largest importance (|W| or Fisher). `importance` maps the backbone's
    /// parameter names to tensors of the same shapes.
    public func initializeFromBackbone(_ backbone: BertEncoder, importance: [String: Tensor]) throws {
        let c = backbone.config, side = try Self.sideConfig(c, reduction: _reduction)
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
            copyPruned(src.attention.query, dst.attention.query, rows: attnRows, cols: hidden)
            copyPruned(src.attention.key, dst.attention.key, rows: attnRows, cols: hidden)
            copyPruned(src.attention.value, dst.attention.value, rows: attnRows, cols: hidden)
            // Outputs that join the residual stream keep the hidden indices.
            copyPruned(src.attention.output, dst.attention.output, rows: hidden, cols: attnRows)
            let ffIn = try imp(p + "intermediate.weight")
            let ff = ffIn.shape[0]
            var ffScore = [Double](repeating: 0, count: ff)
            for r in 0..<ff { for col in hidden { ffScore[r] += Double(ffIn.data[r * d + col]) } }
            let ffRows = topIndices(ffScore, dst.intermediate.outFeatures)
            copyPruned(src.intermediate, dst.intermediate, rows: ffRows, cols: hidden)
            copyPruned(src.output, dst.output, rows: hidden, cols: ffRows)
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

func copyPruned(_ src: Linear, _ dst: Linear, rows: [Int], cols: [Int]) {
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

/// PyTorch-style initialisation of a freshly built block whose parameters start at zero:
/// Linear weights uniform(+-1/sqrt(in)), biases 0, LayerNorm 1 and 0.
func randomInit(_ m: Module, rng: inout SplitMix64) {
    for (name, p) in m.namedParameters() {
        if name.hasSuffix("Norm.weight") || name.hasSuffix("layerNorm.weight") {
            p.data.initialize(repeating: 1, count: p.count)
        } else if name.hasSuffix(".weight") && p.rank == 2 {
            let bound = 1 / Float(p.shape[1]).squareRoot()
            for i in 0..<p.count { p.data[i] = (rng.nextFloat() * 2 - 1) * bound }
        } else {
            p.data.initialize(repeating: 0, count: p.count)
        }
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
