import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTokenizers
import Testing

/// Right-padded token rows of the tiny Llama's vocabulary (ids 1...49), lengths 6, 4, 6, 3.
func llamaBatch(seed: UInt64 = 2) -> BatchEncoding {
    var rng = SplitMix64(seed: seed)
    let lengths = [6, 4, 6, 3]
    var ids: [Int32] = [], mask: [Int32] = []
    for l in lengths {
        for j in 0..<6 {
            ids.append(j < l ? Int32(1 + rng.nextInt(below: 49)) : 0)
            mask.append(j < l ? 1 : 0)
        }
    }
    return BatchEncoding(ids: ids, attentionMask: mask, typeIds: [Int32](repeating: 0, count: 24), batchSize: 4, seqLength: 6,
                         lengths: lengths)
}

func qstOptions(reduction: Int = 4, downsample: QSTDownsample = .adapter) -> MethodOptions {
    var o = MethodOptions()
    o.qst.reduction = reduction
    o.qst.adapterWidth = 4
    o.qst.downsample = downsample
    o.loraRank = 2
    return o
}

@Suite("QST and the LLM classifier", .serialized)
struct QSTTests {
    @Test("side config: width d/r, FFN d_ff/r, same heads and KV heads; bad reductions are refused")
    func sideConfig() throws {
        let c = LlamaConfig(vocabSize: 49152, dim: 576, ffnDim: 1536, layers: 30, heads: 9, kvHeads: 3)
        let s = try Llama.sideConfig(c, reduction: 16)
        #expect(s.dim == 36 && s.ffnDim == 96 && s.heads == 9 && s.kvHeads == 3 && s.headDim == 4 && s.layers == 30)
        #expect(throws: BackboneError.self) { try Llama.sideConfig(c, reduction: 7) }
    }

    @Test("QST side network against finite differences (adapter, avgpool, maxpool downsamples)",
          arguments: [QSTDownsample.adapter, .avgpool, .maxpool])
    func gradients(downsample: QSTDownsample) throws {
        var o = qstOptions(downsample: downsample)
        o.weights = .f32 // a width NF4 cannot take: the side network is what is checked here
        let model = try makeClassifier(tinyLlama(), .qst, classes: 3, options: o, seed: 4)
        let side = (model.reader as! QSTReader).side
        // Gates away from their start so both arms of every mix are exercised.
        var rng = SplitMix64(seed: 9)
        for i in 0..<side.gates.count { side.gates.data[i] = rng.nextNormal() }
        for i in 0..<side.outputGate.count { side.outputGate.data[i] = rng.nextNormal() }
        let batch = llamaBatch()
        let taps = model.frozenTaps(batch)
        let params = model.trainableParameters()
        #expect(params.allSatisfy { $0.0.hasPrefix("reader.side.") || $0.0.hasPrefix("reader.score.") })
        gradCheck("QST \(downsample)", params.map { $0.1 }) { _ in model.logits(batch, taps: taps) }
        // Interleaved with the backbone block by block, or from the taps: the same logits.
        #expect(maxAbsDiff(noGrad { model.logits(batch, taps: nil) }, noGrad { model.logits(batch, taps: taps) }) < 1e-5)
    }

    @Test("padded rows give the same logits as each row alone (every method)", arguments: MethodRegistry.methods(on: .llama))
    func paddingInvariance(method: MethodKind) throws {
        let nf4 = method == .qst || method == .qlora
        let m = try makeClassifier(tinyLlama(dim: 64, ffnDim: 128, nf4: nf4), method, classes: 3,
                                  options: qstOptions(), seed: 4)
        m.train(false) // dropout off
        let batch = llamaBatch()
        let all = noGrad { m.logits(batch, taps: nil) }.toArray()
        for r in 0..<4 {
            let ids = Array(batch.ids[(r * 6)..<(r * 6 + batch.lengths[r])])
            let one = BatchEncoding(ids: ids, attentionMask: [Int32](repeating: 1, count: ids.count), typeIds: ids.map { _ in 0 },
                                    batchSize: 1, seqLength: ids.count, lengths: [ids.count])
            let alone = noGrad { m.logits(one, taps: nil) }.toArray()
            #expect(zip(alone, all[(r * 3)..<(r * 3 + 3)]).allSatisfy { abs($0 - $1) < 1e-4 }, "\(method) row \(r)")
        }
    }

    /// Backprop never enters the 4-bit backbone: no backbone tensor gets a gradient, the gradient
    /// bytes are exactly the trainable ones, and what the forward keeps alive beyond the side
    /// network's own activations is the taps themselves, nothing of the blocks.
    @Test("QST on NF4: no backbone gradients, no backbone activations kept (ledger); QLoRA keeps them")
    func backpropNeverEntersTheBackbone() throws {
        let ledger = MemoryLedger()
        try MemoryLedger.withLedger(ledger) {
            let backbone = tinyLlama(dim: 64, ffnDim: 128, layers: 3, nf4: true)
            let model = try makeClassifier(backbone, .qst, classes: 3, options: qstOptions(), seed: 1)
            let batch = llamaBatch()
            let labels: [Int32] = [0, 1, 2, 1]
            // Activations alive after the forward pass, taps computed inside vs handed in.
            let before1 = ledger.current(.activations)
            let loss1 = model.logits(batch, taps: nil).crossEntropy(targets: labels)
            let kept1 = ledger.current(.activations) - before1
            let taps = model.frozenTaps(batch)
            #expect(taps.allSatisfy { !$0.requiresGrad }, "taps carry no graph")
            let tapBytes = taps.reduce(0) { $0 + $1.count * 4 }
            let before2 = ledger.current(.activations)
            let loss2 = model.logits(batch, taps: taps).crossEntropy(targets: labels)
            let kept2 = ledger.current(.activations) - before2
            #expect(kept1 - kept2 == tapBytes, "the backbone kept \(kept1 - kept2 - tapBytes) bytes beyond its taps")
            _ = loss2
            let gradsBefore = ledger.current(.gradients)
            loss1.backward()
            for (name, p) in backbone.namedParameters() { #expect(p.grad == nil, "backbone tensor \(name) got a gradient") }
            let trainableBytes = model.trainableParameters().reduce(0) { $0 + $1.1.count * 4 }
            #expect(ledger.current(.gradients) - gradsBefore == trainableBytes)
            #expect(model.trainableParameters().allSatisfy { !$0.0.hasPrefix("backbone.") })

            // QLoRA on the same backbone keeps every block's activations for backward.
            let qlora = try makeClassifier(tinyLlama(dim: 64, ffnDim: 128, layers: 3, nf4: true), .qlora, classes: 3,
                                          options: qstOptions(), seed: 1)
            let before3 = ledger.current(.activations)
            let loss3 = qlora.logits(batch, taps: nil).crossEntropy(targets: labels)
            let kept3 = ledger.current(.activations) - before3
            // At least each block's SwiGLU (gate input for SiLU', SiLU output and up projection for
            // the product's two gradients) over the batch's 19 real tokens, 3 blocks, 128 wide.
            #expect(kept3 - kept1 >= 3 * 3 * 19 * 128 * 4, "QLoRA kept \(kept3) bytes, QST \(kept1)")
            loss3.backward()
            #expect(qlora.trainableParameters().allSatisfy { $0.0.hasPrefix("reader.") || $0.0.contains("lora") })
        }
    }

    @Test("methods refused where they cannot work")
    func refusals() {
        var f32 = qstOptions()
        f32.weights = .f32
        #expect(throws: MethodError.self) { try makeClassifier(tinyLlama(), .qlora, classes: 2, options: f32, seed: 1) }
        #expect(throws: MethodError.self) {
            try makeClassifier(tinyLlama(dim: 64, ffnDim: 128, nf4: true), .full, classes: 2, options: qstOptions(), seed: 1)
        }
        #expect(throws: MethodError.self) { try makeClassifier(tinyLlama(), .hst, classes: 2, options: qstOptions(), seed: 1) }
        // NF4's blocks are 64 weights: a narrower backbone is refused by layer name, not crashed on.
        do {
            _ = try makeClassifier(tinyLlama(), .qlora, classes: 2, options: qstOptions(), seed: 1)
            Issue.record("NF4 on a 32-wide model should be refused")
        } catch {
            #expect("\(error)".contains("layers.0.query") && "\(error)".contains("multiple of NF4"), "\(error)")
        }
    }

    @Test("every LLM method fits a tiny task (loss falls)", arguments: MethodRegistry.methods(on: .llama))
    func everyMethodLearns(method: MethodKind) throws {
        let nf4 = method == .qst || method == .qlora
        let model = try makeClassifier(tinyLlama(dim: 64, ffnDim: 128, nf4: nf4), method, classes: 3,
                                      options: qstOptions(), seed: 5)
        let trainable = model.trainableParameters()
        switch method {
        case .full: #expect(trainable.count == model.parameters().count)
        case .lora, .qlora: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.contains("lora") }
                                    && trainable.contains { $0.0.contains("lora") })
        case .bitfit, .s2a: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.hasSuffix(".bias") })
        case .adapter: #expect(trainable.filter { $0.0.hasPrefix("backbone.") }.allSatisfy { $0.0.contains(".adapter.") })
        default: #expect(trainable.allSatisfy { !$0.0.hasPrefix("backbone.") })
        }
        let batch = llamaBatch()
        let labels: [Int32] = [0, 1, 2, 1]
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
}

@Suite("QST causal-LM tuning", .serialized)
struct QSTLanguageModelTests {
    @Test("the loss covers response tokens only")
    func responseOnlyLoss() throws {
        let lm = try QSTLanguageModel(backbone: tinyLlama(), options: qstOptions().qst, seed: 3)
        let ids: [Int32] = [5, 9, 13, 2, 40, 7]
        let loss = noGrad { lm.loss([LMExample(ids: ids, responseStart: 4)]) }.item()
        let l = noGrad { lm.logits(ids) }
        let v = 50
        func nll(_ p: Int, _ target: Int32) -> Float {
            let row = Array(l.toArray()[(p * v)..<((p + 1) * v)])
            let m = row.max()!
            let lse = m + Foundation.log(row.reduce(Float(0)) { $0 + Foundation.exp($1 - m) })
            return lse - row[Int(target)]
        }
        // Targets: ids[4] from position 3 and ids[5] from position 4.
        #expect(abs(loss - (nll(3, 40) + nll(4, 7)) / 2) < 1e-4)
    }

    /// `--activation-bits` reaches the LM model's side network, as it reaches `Classifier`'s: fewer
    /// bytes kept between forward and backward at 4 bits than exactly.
    @Test("--activation-bits applies to the side network")
    func activationBitsApply() throws {
        func kept(_ bits: ActivationBits) throws -> Int {
            let ledger = MemoryLedger()
            return try MemoryLedger.withLedger(ledger) {
                let lm = try QSTLanguageModel(backbone: tinyLlama(), options: qstOptions().qst, activationBits: bits, seed: 3)
                let split = LMSplit([LMExample(ids: [5, 9, 13, 2, 40, 7, 11, 12], responseStart: 4)])
                let before = ledger.current(.activations)
                let logits = lm.logits(split.batch([0]), taps: nil)
                let kept = ledger.current(.activations) - before - logits.count * 4
                logits.crossEntropy(targets: split.targets([0])).backward()
                return kept
            }
        }
        let exact = try kept(.thirtyTwo), coded = try kept(.four)
        testLog("QST LM kept between forward and backward: 32-bit \(exact) B, 4-bit \(coded) B")
        #expect(coded < exact)
    }

    /// A fixed output format taught to the side network alone: every response is [7, 8, 9] then
    /// the stop token 2, whatever the prompt; held-out prompts must produce exactly that.
    @Test("QST learns a fixed response format that holds on held-out prompts")
    func teachesFormat() throws {
        let lm = try QSTLanguageModel(backbone: tinyLlama(dim: 64, ffnDim: 128, nf4: true), options: qstOptions().qst, seed: 3)
        var rng = SplitMix64(seed: 11)
        // Random "user" tokens, then 3 (the template's assistant header: where the answer starts).
        func prompt() -> [Int32] { (0..<(3 + rng.nextInt(below: 3))).map { _ in Int32(10 + rng.nextInt(below: 40)) } + [3] }
        let format: [Int32] = [7, 8, 9, 2]
        let train = (0..<16).map { _ in let p = prompt(); return LMExample(ids: p + format, responseStart: p.count) }
        let held = (0..<4).map { _ in prompt() }
        let before = held.map { lm.generate(prompt: $0, maxTokens: 4, stopTokens: [2]) }
        #expect(!before.allSatisfy { $0 == [7, 8, 9] }, "the untrained model already answers in the format")
        let opt = AdamW(parameters: lm.trainableParameters().map { $0.1 }, learningRate: 1e-2, weightDecay: 0)
        for step in 0..<100 {
            let batch = Array(train[((step * 8) % 16)..<((step * 8) % 16 + 8)])
            let loss = lm.loss(batch)
            opt.zeroGrad()
            loss.backward()
            opt.step()
        }
        for p in held {
            #expect(lm.generate(prompt: p, maxTokens: 6, stopTokens: [2]) == [7, 8, 9], "prompt \(p)")
        }
        #expect(lm.backbone.trainableParameterCount == 0)
    }

    /// The KV-cached decoding path (backbone and side layers) picks the same tokens as recomputing
    /// the whole sequence per step, on NF4 and F32 backbones and prompts of several lengths.
    @Test("QST generation with KV caches equals recomputing the sequence", arguments: [false, true])
    func cachedGeneration(nf4: Bool) throws {
        var o = qstOptions().qst
        o.gateInit = 0.3  // side and backbone both matter in the mix
        let lm = try QSTLanguageModel(backbone: tinyLlama(dim: 64, ffnDim: 128, nf4: nf4), options: o, seed: 5)
        var rng = SplitMix64(seed: 21)
        var distinct = Set<[Int32]>()
        for len in [1, 2, 5, 9] {
            let p = (0..<len).map { _ in Int32(1 + rng.nextInt(below: 49)) }
            let ref = lm.generate(prompt: p, maxTokens: 12, stopTokens: [], cached: false)
            let fast = lm.generate(prompt: p, maxTokens: 12, stopTokens: [], cached: true)
            #expect(ref.count == 12 && fast == ref, "prompt \(p): cached \(fast) vs recomputed \(ref)")
            distinct.insert(ref)
        }
        #expect(distinct.count > 1, "all prompts gave the same tokens: the comparison would not see a wrong cache")

        // Logits too (greedy tokens can hide small errors, e.g. a wrong RoPE position): feed a
        // sequence in pieces through the caches and compare each piece's logits with the full pass.
        let seq = (0..<10).map { _ in Int32(1 + rng.nextInt(below: 49)) }
        let full = noGrad { lm.logits(seq) }.toArray()
        let caches = (backbone: KVCache(config: lm.backbone.config, capacity: 4), side: lm.side.makeCache(capacity: 4))
        var pos = 0
        for piece in [3, 1, 1, 4, 1] {
            let part = Array(seq[pos..<(pos + piece)])
            let got = noGrad {
                let (s, last) = lm.side.run(lm.backbone, ids: part, batch: 1, keyPadding: nil, caches: caches)
                return lm.backbone.lmLogits(lm.side.mix(side: s, last: last))
            }.toArray()
            let want = Array(full[(pos * 50)..<((pos + piece) * 50)])
            let scale = want.map(abs).max()!, diff = zip(got, want).map { abs($0 - $1) }.max()!
            #expect(diff <= 1e-4 * scale, "positions \(pos)..<\(pos + piece): max diff \(diff), scale \(scale)")
            pos += piece
        }
        #expect(caches.side.length == 10 && caches.backbone.length == 10)
    }
}
