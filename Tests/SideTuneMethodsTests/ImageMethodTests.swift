import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import Testing

/// The methods on a tiny random ViT and a tiny synthetic image task.
@Suite struct ImageMethodTests {
    /// Every method on the ViT but HST (its own suite) and the NF4 ones (`MethodMatrixTests`, on widths NF4 takes).
    static let imageMethods: [MethodKind] = [.lst, .last, .linear, .full, .bitfit, .lora, .adapter, .prompt]

    func options() -> MethodOptions {
        var o = MethodOptions()
        o.sideInit = .random
        o.reduction = 4 // side width 4 = 2 heads of 2, MLP 8
        o.rank = 4
        o.loraRank = 2
        o.adapterBottleneck = 4
        o.promptLength = 2
        o.dropout = 0
        return o
    }

    /// Every method builds, trains what it should, and fits the task (loss falls, accuracy above chance).
    @Test(arguments: imageMethods)
    func everyMethodLearns(method: MethodKind) throws {
        let model = try makeClassifier(tinyViT(), method, classes: 3, options: options(), seed: 5)
        let trainable = model.trainableParameters()
        #expect(!trainable.isEmpty)
        let inBackbone = trainable.filter { $0.0.hasPrefix("backbone.") }
        switch method {
        case .full: #expect(trainable.count == model.parameters().count)
        case .bitfit: #expect(!inBackbone.isEmpty && inBackbone.allSatisfy { $0.0.hasSuffix(".bias") })
        case .adapter: #expect(!inBackbone.isEmpty && inBackbone.allSatisfy { $0.0.contains(".adapter.") })
        case .lora:
            // q and v of both blocks, A and B each.
            #expect(inBackbone.count == 2 * 2 * 2)
            #expect(inBackbone.allSatisfy { $0.0.contains("lora") && ($0.0.contains(".query.") || $0.0.contains(".value.")) })
        case .lst:
            #expect(inBackbone.isEmpty)
            // Side blocks are ViT blocks at width 16 / 4, found by the module walk.
            #expect(trainable.contains { $0.0 == "reader.blocks.1.attention.query.weight" && $0.1.shape == [4, 4] })
            #expect(trainable.contains { $0.0 == "reader.blocks.0.layerScale2" })
        default: #expect(inBackbone.isEmpty)
        }
        let (pixels, labels) = tinyImageTask()
        let opt = AdamW(parameters: trainable.map { $0.1 }, learningRate: 1e-2, weightDecay: 0)
        var first: Float = 0, last: Float = 0
        for step in 0..<40 {
            let loss = model(pixels).crossEntropy(targets: labels)
            if step == 0 { first = loss.item() }
            last = loss.item()
            opt.zeroGrad()
            loss.backward()
            opt.step()
        }
        #expect(last < first * 0.7, "\(method): loss \(first) -> \(last)")
        let logits = noGrad { model(pixels) }
        var correct = 0
        for r in 0..<labels.count {
            let row = (0..<3).map { logits.data[r * 3 + $0] }
            if row.firstIndex(of: row.max()!)! == Int(labels[r]) { correct += 1 }
        }
        #expect(correct * 2 > labels.count, "\(method): \(correct)/\(labels.count) correct after training")
    }

    /// Side methods on the ViT: the taps carry no graph, no ViT weight gets a gradient and the
    /// gradient bytes in the ledger are exactly the side network's.
    @Test(arguments: [MethodKind.lst, .last, .linear])
    func backpropNeverEntersTheViT(method: MethodKind) throws {
        let ledger = MemoryLedger()
        try MemoryLedger.withLedger(ledger) {
            let vit = tinyViT()
            let model = try makeClassifier(vit, method, classes: 3, options: options(), seed: 1)
            let (pixels, labels) = tinyImageTask(count: 6)
            let taps = model.frozenTaps(pixels)
            #expect(taps.count == model.tapCount && taps.allSatisfy { !$0.requiresGrad && $0.shape == [6, 10, 16] })
            let loss = model(pixels).crossEntropy(targets: labels)
            let gradsBefore = ledger.current(.gradients)
            loss.backward()
            for (name, p) in vit.namedParameters() { #expect(p.grad == nil, "ViT weight \(name) got a gradient") }
            let trainableBytes = model.trainableParameters().reduce(0) { $0 + $1.1.count * 4 }
            #expect(ledger.current(.gradients) - gradsBefore == trainableBytes)
        }
    }

    /// Full fine-tuning and LoRA record the ViT on the tape: gradients reach its trainable weights
    /// (every block's, the patch projection's), and a side method's cached taps give the same
    /// logits as a fresh backbone pass.
    @Test func backboneMethodsGetGradientsAndCachedTapsMatch() throws {
        let (pixels, labels) = tinyImageTask(count: 6)
        for method in [MethodKind.full, .lora] {
            let model = try makeClassifier(tinyViT(), method, classes: 3, options: options(), seed: 2)
            #expect(model.tapsRead.isEmpty)
            model(pixels).crossEntropy(targets: labels).backward()
            // LoRA's A has no gradient while B is still 0.
            for (name, p) in model.trainableParameters() where !name.hasSuffix("loraA") {
                #expect(p.grad.map { g in g.toArray().contains { $0 != 0 } } == true, "\(method): no gradient for \(name)")
            }
        }
        let last = try makeClassifier(tinyViT(), .last, classes: 3, options: options(), seed: 2)
        #expect(last.tapsRead == [0, 1, 2])
        let fresh = noGrad { last(pixels) }
        let cached = noGrad { last(pixels, taps: last.frozenTaps(pixels)) }
        #expect(maxAbsDiff(fresh, cached) == 0)
    }

    /// LAST on the ViT reads its corrected stream through the probe's head: with Up = 0 that stream
    /// is h_L, so with the probe's classifier weights LAST gives the probe's logits; once an Up
    /// weight moves, the side network changes them.
    @Test func lastOnTheViTStartsAsTheLinearProbe() throws {
        let vit = tinyViT()
        let probe = try makeClassifier(vit, .linear, classes: 3, options: options(), seed: 3)
        let last = try makeClassifier(vit, .last, classes: 3, options: options(), seed: 4)
        let names = Dictionary(uniqueKeysWithValues: last.trainableParameters().map { ($0.0, $0.1.shape) })
        #expect(names["reader.head.classifier.weight"] == [3, 32] && names["reader.head.classifier.bias"] == [3])
        #expect(names["reader.headNorm.weight"] == nil && !names.keys.contains { $0.hasPrefix("backbone.") })
        let w = Dictionary(uniqueKeysWithValues: probe.namedParameters().map { ($0.0, $0.1) })
        try last.load(["reader.head.classifier.weight": w["reader.classifier.weight"]!,
                       "reader.head.classifier.bias": w["reader.classifier.bias"]!], strict: false)
        let (pixels, _) = tinyImageTask(count: 6)
        let expected = noGrad { probe(pixels) }
        #expect(expected.toArray().contains { abs($0) > 1e-2 })
        #expect(maxAbsDiff(noGrad { last(pixels) }, expected) < 1e-5)
        let up = try #require(last.namedParameters().first { $0.0 == "reader.blocks.1.up.weight" }?.1)
        // Varied across channels: a constant shift per token would vanish in the final LayerNorm.
        for i in 0..<up.count { up.data[i] = Float(i % 7) * 0.2 - 0.6 }
        #expect(maxAbsDiff(noGrad { last(pixels) }, expected) > 1e-3)
    }

    @Test func unbuiltMethodsAndOptionsAreClearErrors() throws {
        do {
            _ = try makeClassifier(tinyBackbone(), .hst, classes: 3, options: options(), seed: 1)
            Issue.record("HST on a text encoder should be refused")
        } catch {
            #expect("\(error)".contains("convolutional") && "\(error)".contains("lst"), "\(error)")
        }
        // LST's pruned initialisation is built for BERT: on the ViT it says so and starts random.
        var o = options()
        o.sideInit = .fisher
        var messages: [String] = []
        _ = try MethodRegistry.build(.lst, on: tinyViT(), classes: 3, options: o, seed: 1, progress: { messages.append($0) })
        #expect(messages.contains { $0.contains("start random") }, "\(messages)")
        o = options()
        o.reduction = 3
        #expect(throws: MethodError.self) { try makeClassifier(tinyViT(), .lst, classes: 3, options: o, seed: 1) }
    }
}
