import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTokenizers
import Testing

@Suite struct MethodTests {
    /// LST and LAST side networks against finite differences (inputs: the taps and every parameter).
    @Test func sideNetworkGradients() throws {
        let enc = tinyBackbone()
        let batch = tinyBatch()
        let taps = noGrad { enc(batch).hiddenStates }
        let keyPadding = batch.attentionMask.map { Float($0) }
        var o = MethodOptions()
        o.sideInit = .random
        o.dropout = 0
        o.reduction = 4 // side width 4 = 2 heads of 2
        var rng = SplitMix64(seed: 3)
        let lst = try LSTSide(backbone: enc, classes: 3, options: o, rng: &rng)
        // Non-zero gates so the ladder mixing is exercised away from 0.5.
        lst.gates.data[0] = 0.03; lst.gates.data[1] = -0.05
        let lstParams = lst.parameters()
        gradCheck("LST side", [taps[0], taps[2]] + lstParams.filter { $0.count <= 64 }) { _ in
            lst(taps: taps, keyPadding: keyPadding)
        }
        o.rank = 4
        let last = try LASTSide(backbone: enc, classes: 3, options: o, rng: &rng)
        for b in last.blocks { for i in 0..<b.up.weight.count { b.up.weight.data[i] = rng.nextNormal() * 0.3 } }
        gradCheck("LAST side", [taps[0], taps[1], taps[2]] + last.parameters().filter { $0.count <= 64 }) { _ in
            last(taps: taps, keyPadding: keyPadding)
        }
    }

    /// Packed taps (each row's real tokens end to end, no padding) give the padded path's logits
    /// and parameter gradients: LST with mean and first-token pooling, and LAST. The classifier
    /// packs the taps it computes and takes the cache's packed taps as they are.
    @Test func packedTapsMatchPadded() throws {
        let enc = tinyBackbone()
        let batch = tinyBatch()
        let taps = noGrad { enc(batch).hiddenStates }
        let keyPadding = batch.attentionMask.map { Float($0) }
        let segments = TokenSegments(lengths: batch.lengths)
        let packedTaps = noGrad { taps.map { $0.packed(segments) } }
        var o = MethodOptions()
        o.sideInit = .random
        o.dropout = 0
        o.reduction = 4
        o.rank = 4
        var rng = SplitMix64(seed: 11)
        var readers: [(String, any TapReader)] = []
        for pooling in [MethodOptions.Pooling.mean, .first] {
            o.pooling = pooling
            readers.append(("LST \(pooling)", try LSTSide(backbone: enc, classes: 3, options: o, rng: &rng)))
        }
        let last = try LASTSide(backbone: enc, classes: 3, options: o, rng: &rng)
        for b in last.blocks { for i in 0..<b.up.weight.count { b.up.weight.data[i] = rng.nextNormal() * 0.3 } }
        readers.append(("LAST", last))
        let targets: [Int32] = [0, 1, 2, 1]
        for (name, reader) in readers {
            #expect(reader.readsPackedTaps, "\(name)")
            let params = reader.parameters()
            let padded = reader(taps: taps, keyPadding: keyPadding)
            padded.crossEntropy(targets: targets).backward()
            let paddedGrads = params.map { $0.grad!.copy() }
            params.forEach { $0.zeroGrad() }
            let packed = reader(taps: packedTaps, segments: segments)
            packed.crossEntropy(targets: targets).backward()
            #expect(maxAbsDiff(padded, packed) < 1e-5, "\(name) logits")
            for (p, g) in zip(params, paddedGrads) { #expect(maxAbsDiff(g, p.grad!) < 1e-5, "\(name) gradient") }
            params.forEach { $0.zeroGrad() }
        }
        let model = try makeClassifier(enc, .lst, classes: 3, options: o, seed: 1)
        #expect(model.readsPackedTaps)
        let computed = noGrad { model.logits(batch, taps: nil) }
        #expect(maxAbsDiff(computed, noGrad { model.logits(batch, taps: packedTaps) }) < 1e-6)
        #expect(maxAbsDiff(computed, noGrad { model.logits(batch, taps: taps) }) < 1e-6)
    }

    /// The methods that train the backbone run packed batches (no padding rows in forward or
    /// backward) with the padded path's logits and gradients; prompt tuning stays padded.
    @Test(arguments: [MethodKind.full, .bitfit, .lora, .adapter, .linear])
    func packedBackboneTrainingMatchesPadded(method: MethodKind) throws {
        var o = MethodOptions()
        o.dropout = 0
        o.loraRank = 2
        o.adapterBottleneck = 4
        let model = try makeClassifier(tinyBackbone(), method, classes: 3, options: o, seed: 5)
        // LoRA's B and the adapters start at zero: move every trainable tensor so their paths count.
        var rng = SplitMix64(seed: 9)
        for (_, p) in model.trainableParameters() { for i in 0..<p.count { p.data[i] += rng.nextNormal() * 0.1 } }
        #expect(model.trainsPacked == (method != .linear) && model.readsPackedTaps == (method == .linear))
        let batch = tinyBatch()
        let targets: [Int32] = [2, 0, 1, 1]
        let params = model.trainableParameters()
        func run(packed: Bool) -> (Tensor, [Tensor]) {
            model.packing = packed
            params.forEach { $0.1.zeroGrad() }
            let logits = model(batch)
            logits.crossEntropy(targets: targets).backward()
            return (logits, params.map { $0.1.grad!.copy() })
        }
        let (paddedLogits, paddedGrads) = run(packed: false)
        let (packedLogits, packedGrads) = run(packed: true)
        #expect(maxAbsDiff(paddedLogits, packedLogits) < 1e-5)
        for ((name, _), (g0, g1)) in zip(params, zip(paddedGrads, packedGrads)) {
            let scale = max(1, (0..<g0.count).reduce(Float(0)) { max($0, abs(g0.data[$1])) })
            #expect(maxAbsDiff(g0, g1) < 1e-5 * scale, "\(method) gradient of \(name)")
        }
        // Evaluation takes the fused no-grad kernels when the layers are plain, packed as well.
        #expect(maxAbsDiff(paddedLogits, noGrad { model(batch) }) < 1e-5)
        let prompt = try makeClassifier(tinyBackbone(), .prompt, classes: 3, options: o, seed: 5)
        #expect(!prompt.trainsPacked)
    }

    /// During a side-tuning step nothing of the backbone is kept for backward and no backbone
    /// weight gets gradient storage: the gradient bytes are exactly the side network's.
    @Test(arguments: [MethodKind.lst, .last, .linear])
    func backpropNeverEntersTheBackbone(method: MethodKind) throws {
        let ledger = MemoryLedger()
        try MemoryLedger.withLedger(ledger) {
            let enc = tinyBackbone()
            var o = MethodOptions()
            o.sideInit = .magnitude
            o.reduction = 4
            let model = try makeClassifier(enc, method, classes: 3, options: o, seed: 1)
            let batch = tinyBatch()
            let taps = model.frozenTaps(batch)
            #expect(taps.allSatisfy { !$0.requiresGrad }, "taps carry no graph")
            let loss = model(batch).crossEntropy(targets: [0, 1, 2, 1])
            let gradsBefore = ledger.current(.gradients)
            loss.backward()
            for (name, p) in enc.namedParameters() { #expect(p.grad == nil, "backbone weight \(name) got a gradient") }
            let trainableBytes = model.trainableParameters().reduce(0) { $0 + $1.1.count * 4 }
            #expect(ledger.current(.gradients) - gradsBefore == trainableBytes)
            #expect(model.trainableParameters().allSatisfy { !$0.0.hasPrefix("backbone.") })
        }
    }

    /// `sideMatmul: .bfloat16` runs the side network's linear products with bf16 operands: logits
    /// and gradients move by bf16 rounding (not zero, not more), and the backbone's taps are untouched.
    @Test(arguments: [MethodKind.lst, .last])
    func sideMatmulInBFloat16(method: MethodKind) throws {
        let enc = tinyBackbone(), batch = tinyBatch()
        var results: [(logits: Tensor, grads: [Tensor], taps: [Tensor])] = []
        for precision in [MatmulPrecision?.none, .bfloat16] {
            var o = MethodOptions()
            o.sideInit = .magnitude
            o.reduction = 4
            o.dropout = 0
            o.sideMatmul = precision
            let model = try makeClassifier(enc, method, classes: 3, options: o, seed: 1)
            let taps = model.frozenTaps(batch)
            let logits = model.logits(batch, taps: taps)
            logits.crossEntropy(targets: [0, 1, 2, 1]).backward()
            results.append((logits.detach(), model.trainableParameters().map { $0.1.grad!.copy() }, taps))
        }
        let (f, h) = (results[0], results[1])
        for (a, b) in zip(f.taps, h.taps) { #expect(maxAbsDiff(a, b) == 0, "taps") }
        func relative(_ a: Tensor, _ b: Tensor) -> Float { maxAbsDiff(a, b) / max(a.toArray().map(abs).max()!, 1e-30) }
        let e = relative(f.logits, h.logits)
        #expect(e > 1e-6 && e < 2e-2, "logits: \(e)")
        // Over all gradients at once: some are zero in exact arithmetic (a key bias's), so per
        // tensor they would be pure rounding noise.
        let worst = zip(f.grads, h.grads).map { maxAbsDiff($0, $1) }.max()! / f.grads.map { $0.toArray().map(abs).max()! }.max()!
        #expect(worst > 1e-6 && worst < 2e-2, "gradients: \(worst)")
    }

    /// `backbonePrecision: .bfloat16`: side methods store the frozen projections in bf16 (taps move
    /// by bf16 rounding); the methods that train inside the backbone multiply in bf16 forward and
    /// backward, so their logits and gradients move by bf16 rounding, not zero and not more.
    @Test(arguments: [MethodKind.lst, .linear, .lora, .bitfit, .adapter, .full])
    func backboneInBFloat16(method: MethodKind) throws {
        let batch = tinyBatch()
        var results: [(logits: Tensor, grads: [Tensor])] = []
        for precision in [MatmulPrecision?.none, .bfloat16] {
            var o = MethodOptions()
            o.sideInit = .magnitude
            o.reduction = 4
            o.dropout = 0
            o.loraRank = 2
            o.adapterBottleneck = 4
            o.backbonePrecision = precision
            let enc = tinyBackbone()
            let model = try makeClassifier(enc, method, classes: 3, options: o, seed: 1)
            #expect(enc.storesBFloat16Projections == (precision != nil && model.readsFrozenTaps), "\(method)")
            var rng = SplitMix64(seed: 9) // LoRA's B and the adapters start at zero: move them
            for (_, p) in model.trainableParameters() { for i in 0..<p.count { p.data[i] += rng.nextNormal() * 0.1 } }
            let logits = model(batch)
            logits.crossEntropy(targets: [0, 1, 2, 1]).backward()
            results.append((logits.detach(), model.trainableParameters().map { $0.1.grad!.copy() }))
        }
        let (f, h) = (results[0], results[1])
        let e = maxAbsDiff(f.logits, h.logits) / max(f.logits.toArray().map(abs).max()!, 1e-30)
        #expect(e > 1e-7 && e < 3e-2, "\(method) logits: \(e)")
        let worst = zip(f.grads, h.grads).map { maxAbsDiff($0, $1) }.max()! / f.grads.map { $0.toArray().map(abs).max()! }.max()!
        #expect(worst > 1e-7 && worst < 5e-2, "\(method) gradients: \(worst)")
    }

    /// Methods made for other backbones are refused by name, not half-built.
    @Test(arguments: MethodKind.allCases.filter { !MethodRegistry.methods(on: .bert).contains($0) })
    func otherBackbonesMethodsAreRefused(method: MethodKind) {
        #expect(throws: MethodError.self) { try makeClassifier(tinyBackbone(), method, classes: 3, options: MethodOptions(), seed: 1) }
    }

    /// Fisher importance equals the plain sum over examples of every parameter's squared gradient,
    /// bit for bit: the word embeddings accumulate only the example's token rows (with repeated
    /// tokens), the other tensors in parallel 16-lane chunks.
    @Test func fisherIsTheSumOfSquaredGradients() {
        let enc = tinyBackbone()
        let examples: [(ids: [Int32], label: Int)] = [([5, 9, 5, 2], 0), ([7, 3, 3, 3, 11, 1], 2), ([2, 30], 1)]
        var rng = SplitMix64(seed: 17)
        let fisher = Importance.fisher(enc, classes: 3, examples: examples, rng: &rng)
        // The reference: the same head (same seed), dense scalar accumulation.
        var rngRef = SplitMix64(seed: 17)
        let params = enc.namedParameters()
        _ = enc.unfreeze()
        let head = Linear(enc.config.hiddenSize, 3, rng: &rngRef)
        var ref = params.map { [Float](repeating: 0, count: $0.1.count) }
        for ex in examples {
            let t = ex.ids.count, mask = [Int32](repeating: 1, count: t)
            let out = enc(ids: ex.ids, attentionMask: mask, batch: 1, seq: t)
            head(BertEncoder.meanPool(out.last, attentionMask: mask)).crossEntropy(targets: [Int32(ex.label)]).backward()
            for (i, (_, p)) in params.enumerated() {
                if let g = p.grad { for j in 0..<p.count { ref[i][j] += g.data[j] * g.data[j] } }
                p.zeroGrad()
            }
            head.weight.zeroGrad(); head.bias?.zeroGrad()
        }
        for (i, (name, _)) in params.enumerated() {
            #expect(fisher[name]?.toArray() == ref[i], "\(name)")
        }
        #expect(fisher["embeddings.wordEmbeddings.weight"]!.toArray().contains { $0 > 0 })
    }

    /// Every text-encoder method builds, reports what trains, and fits a tiny task (loss falls).
    /// (The NF4 methods need rows of 64: `MethodMatrixTests` trains them on a wider model.)
    @Test(arguments: MethodRegistry.methods(on: .bert).filter { MethodRegistry.method($0).defaultWeights == .f32 })
    func everyMethodLearns(method: MethodKind) throws {
        let enc = tinyBackbone()
        var o = MethodOptions()
        o.sideInit = .fisher
        o.fisherExamples = 8
        o.reduction = 4
        o.rank = 4
        o.loraRank = 2
        o.adapterBottleneck = 4
        o.promptLength = 2
        o.dropout = 0
        let batch = tinyBatch()
        let labels: [Int32] = [0, 1, 2, 1]
        let fisher = { (n: Int) in (0..<min(n, 4)).map { i in
            (input: makeBatch([Array(batch.ids[(i * 6)..<(i * 6 + batch.lengths[i])])]), label: Int(labels[i])) } }
        let model = try MethodRegistry.build(method, on: enc, classes: 3, options: o, seed: 5, trainingExamples: fisher)
        let trainable = model.trainableParameters()
        #expect(!trainable.isEmpty)
        switch method {
        case .full: #expect(trainable.count == model.parameters().count)
        case .bitfit: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.hasSuffix(".bias") })
        case .lora: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.contains("lora") })
        case .adapter: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.contains(".adapter.") })
        case .s2a: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.hasSuffix(".bias") })
        default: #expect(trainable.allSatisfy { !$0.0.hasPrefix("backbone.") || $0.0.contains("prompt") })
        }
        let opt = AdamW(parameters: trainable.map { $0.1 }, learningRate: 1e-2, weightDecay: 0)
        var first: Float = 0, last: Float = 0
        for step in 0..<40 {
            let loss = model.logits(batch, taps: nil).crossEntropy(targets: labels)
            if step == 0 { first = loss.item() }
            last = loss.item()
            opt.zeroGrad()
            loss.backward()
            opt.step()
        }
        #expect(last < first * 0.7, "\(method): loss \(first) -> \(last)")
    }

    /// LoRA starts as the base layer and fuses back into it.
    @Test func loraStartsAsBaseAndFuses() {
        var rng = SplitMix64(seed: 1)
        let base = Linear(5, 3, rng: &rng)
        let lora = LoRALinear(wrapping: base, rank: 2, alpha: 4, rng: &rng)
        let x = randomTensor([2, 5], seed: 3)
        #expect(maxAbsDiff(lora(x), base(x)) == 0)
        for i in 0..<lora.loraB.count { lora.loraB.data[i] = rng.nextNormal() }
        #expect(maxAbsDiff(lora.fused()!(x), lora(x)) < 1e-5)
        #expect(lora.trainableParameters().map { $0.0 }.sorted() == ["loraA", "loraB"])
    }
}
