import Foundation
import Testing
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneNN
import SideTuneTestSupport

func tinyConfig() -> ViTConfig {
    var c = ViTConfig()
    c.hiddenSize = 16
    c.layers = 2
    c.heads = 2
    c.mlpSize = 32
    c.patchSize = 2
    c.positionGrid = 3
    return c
}


@Suite struct CubicResizeTests {
    @Test func identityAtSameSize() {
        let w = CubicResize.weights(inSize: 5, outSize: 5)
        for i in 0..<5 { for j in 0..<5 { #expect(w[i * 5 + j] == (i == j ? 1 : 0)) } }
    }

    @Test func halvingMatchesHandComputedKeysWeights() {
        // 4 -> 2: output 0 samples x = 0.5; taps -1(clamped to 0), 0, 1, 2 with Keys a = -0.75:
        // k(1.5) = -0.09375, k(0.5) = 0.59375.
        let w = CubicResize.weights(inSize: 4, outSize: 2)
        #expect(abs(w[0] - 0.5) < 1e-6 && abs(w[1] - 0.59375) < 1e-6 && abs(w[2] + 0.09375) < 1e-6 && w[3] == 0)
        #expect(abs(w[4] - 0) < 1e-6 && abs(w[5] + 0.09375) < 1e-6 && abs(w[6] - 0.59375) < 1e-6 && abs(w[7] - 0.5) < 1e-6)
    }

    @Test func rowsSumToOne() {
        for (i, o) in [(37, 16), (37, 23), (37, 40), (3, 7)] {
            let w = CubicResize.weights(inSize: i, outSize: o)
            for r in 0..<o { #expect(abs(w[r * i..<(r + 1) * i].reduce(0, +) - 1) < 1e-5) }
        }
    }
}

@Suite struct ViTModuleTests {
    @Test func parameterNamesAndCount() {
        let vit = DINOv2ViT(config: tinyConfig())
        let names = vit.namedParameters().map(\.0)
        #expect(names.contains("embeddings.clsToken"))
        #expect(names.contains("embeddings.positionEmbeddings"))
        #expect(names.contains("embeddings.patchProjection.weight"))
        #expect(names.contains("layers.1.attention.query.weight"))
        #expect(names.contains("layers.0.layerScale2"))
        #expect(names.contains("norm.bias"))
        // 2 blocks x (4 attention Linear x 2 + 2 norms x 2 + 2 fc x 2 + 2 layer scales) + 4 embedding tensors + final norm 2
        #expect(names.count == 2 * (8 + 4 + 4 + 2) + 4 + 2)
        // ViT-S/14: about 22M parameters (DINOv2 ViT-S/14: 22.06M).
        let s = DINOv2ViT()
        #expect(s.parameterCount == 22_056_192)
    }

    @Test func shapesTapsAndAnyMultipleOfThePatch() {
        let vit = DINOv2ViT(config: tinyConfig(), seed: 3)
        var rng = SplitMix64(seed: 1)
        for (h, w) in [(6, 6), (6, 8), (10, 4)] {
            let x = Tensor.randn([2, 3, h, w], rng: &rng)
            let out = noGrad { vit(x) }
            let n = 1 + (h / 2) * (w / 2)
            #expect(out.hidden.shape == [2, n, 16])
            #expect(out.taps.count == 3)
            #expect(out.taps.allSatisfy { $0.shape == [2, n, 16] })
            #expect(out.grid == (h / 2, w / 2))
            #expect(Autograd.graphSize(out.hidden) == 0)
        }
    }

    /// The fused no-grad blocks compute what the block-by-block path does: every tap, with
    /// LayerScales and norms off their initial values, f32 projections, a prompt's extra tokens,
    /// and all projections stored in bf16 (the same products, but the fused attention multiplies
    /// with bf16 operands too: within 1% of the taps' largest value). A LoRA-wrapped projection
    /// turns the fused path off.
    @Test func fusedInferenceMatchesTheBlockByBlockPath() {
        let vit = DINOv2ViT(config: tinyConfig(), seed: 5)
        var rng = SplitMix64(seed: 6)
        for block in vit.layers {
            for t in [block.layerScale1, block.layerScale2, block.norm1.weight!, block.norm2.bias!] {
                for i in 0..<t.count { t.data[i] = rng.nextFloat() * 2 - 0.5 }
            }
        }
        vit.freeze()
        let x = Tensor.randn([3, 3, 6, 8], rng: &rng), prompt = Tensor.randn([2, 16], rng: &rng)
        for (p, bf16) in [(nil, false), (prompt, false), (nil, true)] {
            if bf16 {
                vit.convertProjectionsToBFloat16()
                #expect(vit.storesBFloat16Projections)
            }
            #expect(vit.layers.allSatisfy { $0.supportsFusedInference })
            func taps(fused: Bool) -> [Tensor] { // with a prompt: the last block's output (prompts cut out)
                vit.fusedInferenceEnabled = fused
                return noGrad { p.map { [vit.trainedForward(x, packed: false, prompt: $0)] } ?? vit(x).taps }
            }
            let (fused, plain) = (taps(fused: true), taps(fused: false))
            #expect(fused.count == plain.count && fused.count == (p == nil ? 3 : 1))
            for (i, (a, b)) in zip(fused, plain).enumerated() {
                #expect(a.shape == b.shape)
                let diff = zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? .infinity
                let bound = bf16 ? 0.01 * max(1, b.toArray().map(abs).max() ?? 0) : 1e-5
                #expect(diff < bound, "prompt \(p != nil) bf16 \(bf16) tap \(i): max diff \(diff)")
            }
        }
        let lora = LoRALinear(wrapping: vit.layers[1].fc2, rank: 2, alpha: 2, rng: &rng)
        vit.layers[1].fc2 = lora
        #expect(!vit.layers[1].supportsFusedInference && vit.layers[0].supportsFusedInference)
    }

    @Test func batchItemsAreIndependent() {
        let vit = DINOv2ViT(config: tinyConfig(), seed: 4)
        var rng = SplitMix64(seed: 2)
        let x = Tensor.randn([2, 3, 6, 8], rng: &rng)
        let both = noGrad { vit(x).hidden }
        let second = noGrad { vit(x.slice(axis: 0, 1, 2)).hidden }
        let a = both.slice(axis: 0, 1, 2).toArray(), b = second.toArray()
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 1e-5)
    }

    /// The reshape + matmul patch embedding equals a direct 2x2 stride-2 convolution.
    @Test func patchEmbeddingIsAConvolution() {
        let c = tinyConfig()
        let vit = DINOv2ViT(config: c, seed: 5)
        var rng = SplitMix64(seed: 3)
        let x = Tensor.randn([1, 3, 4, 6], rng: &rng)
        let pos = noGrad { vit.embeddings.positionEmbedding(h: 2, w: 3) }
        let tokens = noGrad { vit.embeddings(x) - pos }
        let wt = vit.embeddings.patchProjection.weight, bias = vit.embeddings.patchProjection.bias!
        for i in 0..<2 {
            for j in 0..<3 {
                for o in 0..<c.hiddenSize {
                    var s = bias.data[o]
                    for ch in 0..<3 { for dy in 0..<2 { for dx in 0..<2 {
                        s += wt[o, (ch * 2 + dy) * 2 + dx] * x[0, ch, 2 * i + dy, 2 * j + dx]
                    } } }
                    #expect(abs(tokens[0, 1 + i * 3 + j, o] - s) < 1e-4)
                }
            }
        }
        // The CLS row is the token plus its position.
        for o in 0..<c.hiddenSize { #expect(abs(tokens[0, 0, o] - vit.embeddings.clsToken[0, 0, o]) < 1e-6) }
    }

    @Test func positionGridIsUnchangedAtTheTrainingSize() {
        let vit = DINOv2ViT(config: tinyConfig(), seed: 6)
        let p = noGrad { vit.embeddings.positionEmbedding(h: 3, w: 3) }
        #expect(p.toArray() == vit.embeddings.positionEmbeddings.toArray())
    }

    @Test func gradientsReachInputsAndParameters() {
        var c = tinyConfig()
        c.layers = 1
        let vit = DINOv2ViT(config: c, seed: 7)
        var rng = SplitMix64(seed: 4)
        let x = Tensor.randn([1, 3, 4, 6], rng: &rng)
        let blk = vit.layers[0]
        gradCheck("vit", [x, blk.layerScale1, blk.norm2.weight!, vit.embeddings.clsToken], atol: 3e-3, rtol: 3e-2) { _ in vit(x, collectTaps: false).hidden }
        // Position table gradient flows through the bicubic resize (grid 3 -> 2x3).
        gradCheck("pos", [vit.embeddings.positionEmbeddings], atol: 3e-3, rtol: 3e-2) { _ in vit.embeddings.positionEmbedding(h: 2, w: 3) }
    }

    /// With `AttentionRecompute` on (S2A), a block's attention keeps its normalised input instead
    /// of q, k and v: the same output, the same bias gradients, fewer bytes kept for backward.
    @Test func recomputedAttentionProjectionsKeepLessForTheSameGradients() {
        func run(recompute: Bool) -> (hidden: [Float], grads: [[Float]], kept: Int) {
            let ledger = MemoryLedger()
            return MemoryLedger.withLedger(ledger) {
                var c = tinyConfig()
                (c.hiddenSize, c.mlpSize) = (32, 64) // heads of 16: the blocked kernel, as the recomputing op's
                let vit = DINOv2ViT(config: c, seed: 9)
                _ = vit.freeze()
                let biases = vit.namedParameters().filter { $0.0.hasSuffix(".bias") }.map(\.1)
                for b in biases { b.requiresGrad = true }
                var rng = SplitMix64(seed: 5)
                let x = Tensor.randn([2, 3, 6, 6], rng: &rng)
                let before = ledger.current(.activations)
                let hidden = Tensor.withAttentionRecompute(recompute) { vit(x, collectTaps: false).hidden }
                let kept = ledger.current(.activations) - before - hidden.count * 4
                let values = hidden.toArray()
                (hidden * hidden).sum().backward()
                return (values, biases.map { $0.grad!.toArray() }, kept)
            }
        }
        let plain = run(recompute: false), recomputed = run(recompute: true)
        #expect(plain.hidden == recomputed.hidden, "the forward is the same computation")
        // (Relative to the largest: the keys' bias gradients are 0 up to rounding.)
        let scale = plain.grads.joined().map(abs).max()!
        for (p, r) in zip(plain.grads, recomputed.grads) {
            #expect(zip(p, r).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "bias gradients \(p) against \(r)")
        }
        // Per block: q, k and v (3 x 10 tokens x 32 values per image) give way to x (1 x).
        #expect(plain.kept - recomputed.kept == 2 * 2 * (2 * 10 * 32) * 4, "kept \(plain.kept) against \(recomputed.kept) B")
    }

    /// HST's hook: a meta token per block, prepended before it and removed after it. Checked
    /// against the blocks run by hand on [meta, cls, patches].
    @Test func metaTokensArePrependedAndRemovedAroundEachBlock() {
        let vit = DINOv2ViT(config: tinyConfig(), seed: 8)
        var rng = SplitMix64(seed: 5)
        let x = Tensor.randn([2, 3, 4, 6], rng: &rng)
        let metas = (0..<2).map { _ in Tensor.randn([1, 16], rng: &rng) }
        let out = noGrad { vit(x, metaTokens: metas) }
        #expect(out.taps.count == 3 && out.taps.allSatisfy { $0.shape == [2, 7, 16] })
        #expect(out.metaOutputs.count == 2 && out.metaOutputs.allSatisfy { $0.shape == [2, 1, 16] })
        var h = noGrad { vit.embeddings(x) }
        for (i, block) in vit.layers.enumerated() {
            let withMeta = noGrad { Tensor.concat([Tensor.concat([metas[i], metas[i]], axis: 0).reshaped([2, 1, 16]), h], axis: 1) }
            let y = noGrad { block(withMeta) }
            h = noGrad { y.slice(axis: 1, 1, 8) }
            #expect(maxAbsDiff(out.taps[i + 1], h) < 1e-5)
            #expect(maxAbsDiff(out.metaOutputs[i], noGrad { y.slice(axis: 1, 0, 1) }) < 1e-5)
        }
        // The meta tokens change what the other tokens see; without them the plain path runs.
        let plain = noGrad { vit(x) }
        #expect(plain.metaOutputs.isEmpty)
        #expect(maxAbsDiff(plain.taps[2], out.taps[2]) > 1e-3)
    }

    /// HST trains the meta tokens and the blocks' LayerNorms through the frozen backbone.
    @Test func metaTokenAndLayerNormGradients() {
        var c = tinyConfig()
        c.layers = 2
        let vit = DINOv2ViT(config: c, seed: 9)
        vit.freezeAllButBlockLayerNorms()
        #expect(vit.trainableParameters().map(\.0).sorted() == ["layers.0.norm1.bias", "layers.0.norm1.weight", "layers.0.norm2.bias",
            "layers.0.norm2.weight", "layers.1.norm1.bias", "layers.1.norm1.weight", "layers.1.norm2.bias", "layers.1.norm2.weight"])
        var rng = SplitMix64(seed: 6)
        let x = Tensor.randn([2, 3, 4, 4], rng: &rng)
        let metas = (0..<2).map { _ in parameter(Tensor.randn([1, 16], std: 0.5, rng: &rng)) }
        let blk = vit.layers[0]
        gradCheck("vit meta", metas + [blk.norm1.weight!, blk.norm2.bias!], atol: 3e-3, rtol: 3e-2) { _ in
            let o = vit(x, metaTokens: metas)
            return Tensor.concat([o.taps[2], o.metaOutputs[1]], axis: 1)
        }
        // Frozen weights get no gradient even though backprop passes through them.
        #expect(blk.fc1.plain!.weight.grad == nil && blk.attention.query.plain!.weight.grad == nil)
    }

    @Test func loaderRejectsAGraphWithoutTheBackbone() throws {
        // ModelProto { graph { name: "empty" } }
        let graph: [UInt8] = [0x12, 0x05] + Array("empty".utf8)
        let model = try ONNXModel(bytes: [0x3a, UInt8(graph.count)] + graph)
        do {
            _ = try DINOv2ViT.load(onnx: model)
            Issue.record("expected an error")
        } catch let e as ONNXError {
            #expect(e.kind == .missing && e.description.contains("backbone.embeddings.cls_token"), "\(e)")
        }
    }

    /// Edited copies of the real graph: each defect gives an error naming what is wrong.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func malformedGraphsGiveClearErrors() throws {
        let model = try ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!)
        func expectError(_ kind: ONNXError.Kind, _ contains: String, _ edit: (inout ONNXGraph) -> Void,
                         sourceLocation: SourceLocation = #_sourceLocation) {
            var g = model.graph
            edit(&g)
            do {
                _ = try DINOv2ViT.load(graph: g, file: "edited.onnx")
                Issue.record("expected an error", sourceLocation: sourceLocation)
            } catch let e as ONNXError {
                #expect(e.kind == kind && e.description.contains(contains), "\(e)", sourceLocation: sourceLocation)
            } catch { Issue.record("\(error)", sourceLocation: sourceLocation) }
        }
        let resize = model.graph.nodes.firstIndex { $0.opType == "Resize" && $0.name.contains("embeddings") }!
        expectError(.unsupported, "mode linear") { g in
            let a = g.nodes[resize].attributes.firstIndex { $0.name == "mode" }!
            g.nodes[resize].attributes[a].s = Array("linear".utf8)
        }
        let fc1 = model.graph.nodes.firstIndex { $0.name == "/backbone/encoder/layer.4/mlp/fc1/MatMul" }!
        expectError(.badGraph, "module paths disagree") { g in g.nodes[fc1].name = "/backbone/encoder/layer.5/mlp/fc1/MatMul" }
        expectError(.badGraph, "not followed by an Add with a named bias") { g in
            g.initializers.removeAll { $0.name == "backbone.encoder.layer.4.mlp.fc1.bias" }
        }
        expectError(.missing, "layer.7.attention.attention.value") { g in
            let v = g.nodes.firstIndex { $0.name == "/backbone/encoder/layer.7/attention/attention/value/MatMul" }!
            g.nodes.remove(at: v)
        }
        expectError(.badGraph, "not numbered") { g in
            g.initializers.removeAll { $0.name.hasPrefix("backbone.encoder.layer.3.") }
        }
    }

    /// HST's case: the real backbone frozen except the blocks' LayerNorms; backprop passes through
    /// all blocks and only the LayerNorm parameters (and the input) receive gradients.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func backpropThroughTheRealBackboneToItsLayerNorms() throws {
        let (vit, _) = try DINOv2ViT.load(onnx: ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!))
        vit.freeze()
        let lnNames = Set(vit.namedParameters().map(\.0).filter { $0.contains(".norm1.") || $0.contains(".norm2.") })
        vit.unfreeze(keys: lnNames)
        #expect(vit.trainableParameterCount == 12 * 4 * 384)
        var rng = SplitMix64(seed: 9)
        let x = Tensor.randn([1, 3, 28, 42], rng: &rng)
        x.requiresGrad = true
        let out = vit(x, collectTaps: false)
        out.hidden.square().mean().backward()
        for (name, p) in vit.namedParameters() {
            if lnNames.contains(name) {
                let g = try #require(p.grad, "\(name) has no gradient")
                #expect(g.toArray().contains { $0 != 0 } && g.toArray().allSatisfy { $0.isFinite }, "\(name)")
            } else {
                #expect(p.grad == nil, "\(name) is frozen but got a gradient")
            }
        }
        #expect(x.grad?.shape == [1, 3, 28, 42])
        #expect(Autograd.graphSize(out.hidden) == 0)
        // Central difference on the largest gradient entry of one LayerNorm weight.
        let w = vit.layers[5].norm2.weight!, g = w.grad!.toArray()
        let j = g.indices.max { abs(g[$0]) < abs(g[$1]) }!
        func loss() -> Double { noGrad { Double(vit(x, collectTaps: false).hidden.square().mean().item()) } }
        let saved = w.data[j], eps: Float = 1e-2
        w.data[j] = saved + eps
        let plus = loss()
        w.data[j] = saved - eps
        let minus = loss()
        w.data[j] = saved
        let numeric = Float((plus - minus) / Double(2 * eps))
        #expect(abs(numeric - g[j]) <= 0.05 * abs(g[j]) + 1e-5, "analytic \(g[j]) numeric \(numeric)")
    }

    /// The real file: every unnamed MatMul weight is found and goes where the graph says.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"] != nil))
    func loadsTheRealFile() throws {
        let model = try ONNXModel(path: ProcessInfo.processInfo.environment["SIDETUNE_VIT_ONNX"]!)
        let (vit, map) = try DINOv2ViT.load(onnx: model)
        #expect(vit.config == ViTConfig())
        let bySource = Dictionary(map.map { ($0.initializer, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        #expect(map.filter(\.transposed).count == 72)
        // From the graph: layer 0's key, value, query, output, fc1, fc2 MatMuls in file order.
        #expect(bySource["onnx::MatMul_1966"] == "layers.0.attention.key.weight")
        #expect(bySource["onnx::MatMul_1969"] == "layers.0.attention.value.weight")
        #expect(bySource["onnx::MatMul_1972"] == "layers.0.attention.query.weight")
        #expect(bySource["onnx::MatMul_1980"] == "layers.0.attention.output.weight")
        #expect(bySource["onnx::MatMul_2168"] == "layers.11.fc1.weight")
        #expect(bySource["onnx::MatMul_2169"] == "layers.11.fc2.weight")
        // [in, out] in the file, [out, in] here.
        let src = try model.graph.initializerMap()["onnx::MatMul_2168"]!.floats()   // [384, 1536]
        let w = vit.layers[11].fc1.plain!.weight                                               // [1536, 384]
        #expect(w.shape == [1536, 384])
        for (i, j) in [(0, 0), (5, 700), (383, 1535)] { #expect(w[j, i] == src[i * 1536 + j]) }
    }
}

/// A one-layer DINOv2 ONNX graph (width 4, 2 heads, MLP 8, patch 2, a 2x2 position grid) with the
/// node patterns of Hugging Face's export that `DINOv2ViT.load(onnx:)` walks; Fuzz/make-seeds.py
/// writes the same graph as a seed.
enum TinyDINOv2ONNX {
    static func varint(_ value: UInt64) -> [UInt8] {
        var v = value, b: [UInt8] = []
        while v >= 0x80 { b.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        return b + [UInt8(v)]
    }
    static func ld(_ field: UInt64, _ payload: [UInt8]) -> [UInt8] { varint(field << 3 | 2) + varint(UInt64(payload.count)) + payload }
    static func int(_ field: UInt64, _ v: Int64) -> [UInt8] { varint(field << 3) + varint(UInt64(bitPattern: v)) }
    static func str(_ field: UInt64, _ s: String) -> [UInt8] { ld(field, Array(s.utf8)) }
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    static func tensor(_ name: String, _ dims: [Int], ints: [Int64]? = nil) -> [UInt8] {
        let head = dims.flatMap { int(1, Int64($0)) } + int(2, ints == nil ? 1 : 7) + str(8, name)
        if let ints { return head + ld(9, ints.flatMap(le)) }
        return head + ld(9, (0..<dims.reduce(1, *)).flatMap { le((0.5 + Float($0 % 7) / 10).bitPattern) })
    }
    static func node(_ op: String, _ inputs: [String], _ outputs: [String], _ name: String = "",
                     _ attributes: [[UInt8]] = []) -> [UInt8] {
        inputs.flatMap { str(1, $0) } + outputs.flatMap { str(2, $0) } + str(3, name) + str(4, op)
            + attributes.flatMap { ld(5, $0) }
    }

    /// The model's bytes; `heads` are the two constants whose product must be the width (2 x 2).
    static func model(heads: (Int64, Int64) = (2, 2)) -> [UInt8] {
        let l = "backbone.encoder.layer.0."
        var inits = [tensor("backbone.embeddings.cls_token", [1, 1, 4]),
                     tensor("backbone.embeddings.patch_embeddings.projection.weight", [4, 3, 2, 2]),
                     tensor("pos", [1, 4, 4]), tensor("cls_pos", [1, 1, 4]), tensor("grid_shape", [4], ints: [1, 2, 2, 4]),
                     tensor("heads", [1], ints: [heads.0]), tensor("head_dim", [1], ints: [heads.1])]
        for n in ["embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias"] {
            inits.append(tensor("backbone." + n, [4]))
        }
        for n in ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "layer_scale1.lambda1", "layer_scale2.lambda1"] {
            inits.append(tensor(l + n, [4]))
        }
        var nodes: [[UInt8]] = []
        let linears = [("attention.attention.query", 4, 4), ("attention.attention.key", 4, 4), ("attention.attention.value", 4, 4),
                       ("attention.output.dense", 4, 4), ("mlp.fc1", 4, 8), ("mlp.fc2", 8, 4)]
        for (k, (path, i, o)) in linears.enumerated() {
            inits += [tensor("onnx::MatMul_\(k)", [i, o]), tensor(l + path + ".bias", [o])]
            nodes += [node("MatMul", ["x", "onnx::MatMul_\(k)"], ["mm\(k)"]), node("Add", [l + path + ".bias", "mm\(k)"], ["lin\(k)"])]
        }
        let cubic = str(1, "mode") + ld(4, Array("cubic".utf8)) + int(20, 3)
        nodes += [node("Concat", ["zero", "zero", "heads", "head_dim"], ["q_shape"]), node("Reshape", ["lin0", "q_shape"], ["q"]),
                  node("Reshape", ["pos", "grid_shape"], ["grid"]),
                  node("Resize", ["grid"], ["resized"], "/backbone/embeddings/Resize", [cubic]),
                  node("Reshape", ["resized", "grid_shape"], ["flat"]), node("Concat", ["cls_pos", "flat"], ["positions"])]
        return int(1, 8) + ld(7, nodes.flatMap { ld(1, $0) } + inits.flatMap { ld(5, $0) })
    }
}

@Suite struct ViTONNXLoaderTests {
    @Test func tinyGraphLoads() throws {
        let (vit, map) = try DINOv2ViT.load(onnx: ONNXModel(bytes: TinyDINOv2ONNX.model()))
        #expect(vit.config.hiddenSize == 4 && vit.config.heads == 2 && vit.config.mlpSize == 8 && vit.config.layers == 1)
        #expect(vit.config.positionGrid == 2 && vit.config.patchSize == 2 && map.count == 2 + 18 + 4)
    }

    func expectBadGraph(_ contains: String, _ model: [UInt8], sourceLocation: SourceLocation = #_sourceLocation,
                        edit: (inout ONNXGraph) -> Void = { _ in }) throws {
        var graph = try ONNXModel(bytes: model).graph
        edit(&graph)
        do {
            _ = try DINOv2ViT.load(graph: graph, file: "edited.onnx")
            Issue.record("expected an error", sourceLocation: sourceLocation)
        } catch let e as ONNXError {
            #expect(e.kind == .badGraph && e.description.contains(contains), "\(e)", sourceLocation: sourceLocation)
        }
    }

    /// Found by Fuzz/fuzz-onnx: head-count constants whose product overflows Int64 trapped.
    @Test func headCountConstantsOverflowing() throws {
        try expectBadGraph("could not read the head count", TinyDINOv2ONNX.model(heads: (1 << 62, 4)))
    }

    /// Found with Fuzz/fuzz-onnx: a 3.5 KB graph whose initializers declare a width of 20000 but
    /// hold no values allocated the 20000-wide model (over 6 GB) before reading any of them.
    @Test func dimsWithoutDataAllocateNothing() throws {
        let width = 20_000
        var graph = try ONNXModel(bytes: TinyDINOv2ONNX.model(heads: (2, Int64(width / 2)))).graph
        for i in graph.initializers.indices where graph.initializers[i].dataType == .float {
            let t = graph.initializers[i]
            graph.initializers[i].dims = t.name == "pos" ? [1, 4, width] : t.dims.map { $0 == 4 ? width : $0 }
            graph.initializers[i].rawRange = nil
        }
        let ledger = MemoryLedger()
        do {
            _ = try MemoryLedger.withLedger(ledger) { try DINOv2ViT.load(graph: graph, file: "wide.onnx") }
            Issue.record("expected an error")
        } catch let e as ONNXError {
            #expect(e.kind == .badTensor && e.description.contains("typed data field holds 0"), "\(e)")
        }
        #expect(ledger.peakTotal < 1 << 20, "\(ledger.peakTotal) bytes allocated")
    }

    /// Graphs the loader walks could index past a node's inputs or outputs, or loop forever on a
    /// cycle of Reshape nodes (found while fixing the above).
    @Test func resizeWithoutOutputAndReshapeCycle() throws {
        let model = TinyDINOv2ONNX.model()
        try expectBadGraph("has no input or no output", model) { g in
            g.nodes[g.nodes.firstIndex { $0.opType == "Resize" }!].outputs = []
        }
        try expectBadGraph("does not lead back to an initializer", model) { g in
            g.nodes[g.nodes.firstIndex { $0.outputs == ["grid"] }!].inputs = ["grid", "grid_shape"]
        }
    }
}
