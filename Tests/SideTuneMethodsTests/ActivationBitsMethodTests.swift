import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTokenizers
import Testing

/// `--activation-bits` through whole methods: what they keep between forward and backward (the
/// ledger), and that training with codes tracks training without them.
@Suite(.serialized) struct ActivationBitsMethodTests {
    /// Activations alive after a forward (minus the logits), for `method` on a tiny BERT.
    func keptBytes(_ method: MethodKind, bits: ActivationBits?, edit: (inout MethodOptions) -> Void = { _ in }) throws -> Int {
        let ledger = MemoryLedger()
        return try MemoryLedger.withLedger(ledger) {
            var o = MethodOptions()
            o.dropout = 0
            o.loraRank = 2
            o.promptLength = 2
            o.activationBits = bits
            edit(&o)
            let model = try MethodRegistry.build(method, on: tinyBackbone(width: 32), classes: 3, options: o, seed: 5)
            let batch = tinyBatch()
            let before = ledger.current(.activations)
            let logits = model.logits(batch, taps: nil)
            let kept = ledger.current(.activations) - before - logits.count * 4
            logits.crossEntropy(targets: [0, 1, 2, 1]).backward()
            return kept
        }
    }

    /// Fewer bits keep fewer bytes, method by method, and BitFit keeps less than LoRA (no
    /// linear layer's input is needed for a bias).
    @Test func fewerBitsKeepLess() throws {
        for method in [MethodKind.lora, .bitfit, .full, .adapter] {
            let b32 = try keptBytes(method, bits: .thirtyTwo), b16 = try keptBytes(method, bits: .sixteen)
            let b4 = try keptBytes(method, bits: .four)
            testLog("\(method.rawValue) kept between forward and backward: 32-bit \(b32) B, 16-bit \(b16) B, 4-bit \(b4) B")
            #expect(b16 < b32 * 7 / 10, "\(method): bf16 copies keep well under 32-bit's bytes")
            #expect(b4 < b16, "\(method): GELU codes keep less than bf16 inputs")
        }
        #expect(try keptBytes(.bitfit, bits: nil) < keptBytes(.lora, bits: nil))
        #expect(try keptBytes(.full, bits: nil) > keptBytes(.lora, bits: nil), "full fine-tuning keeps every linear input")
        // S2A runs at 4 bits unless told.
        #expect(try keptBytes(.s2a, bits: nil) == keptBytes(.s2a, bits: .four))
    }

    /// HST (its own model class, on a ViT) keeps fewer bytes at 4 bits than exactly: the setting
    /// reaches it as it reaches the methods built on `Classifier`.
    @Test func hstFollowsTheSetting() throws {
        func kept(_ bits: ActivationBits) throws -> Int {
            let ledger = MemoryLedger()
            return try MemoryLedger.withLedger(ledger) {
                var o = MethodOptions()
                o.dropout = 0
                o.activationBits = bits
                // tinyHST's shapes (HSTTests): a 4-block ViT on 16 x 16 images, one side block per stage.
                var c = ViTConfig()
                c.hiddenSize = 16; c.layers = 4; c.heads = 2; c.mlpSize = 32; c.patchSize = 2; c.positionGrid = 3
                let hst = HSTConfig(dims: [4, 6, 8, 8], depths: [1, 1, 1, 1], heads: [1, 2, 2, 2])
                let model = try HSTClassifier(backbone: DINOv2ViT(config: c, seed: 1), classes: 3, options: o, config: hst,
                                              seed: 2)
                var rng = SplitMix64(seed: 3)
                let pixels = Tensor.randn([4, 3, 16, 16], rng: &rng)
                let before = ledger.current(.activations)
                let logits = model.logits(pixels, taps: nil)
                let kept = ledger.current(.activations) - before - logits.count * 4
                logits.crossEntropy(targets: [0, 1, 2, 1]).backward()
                return kept
            }
        }
        let exact = try kept(.thirtyTwo), coded = try kept(.four)
        testLog("hst kept between forward and backward: 32-bit \(exact) B, 4-bit \(coded) B")
        #expect(coded < exact * 7 / 10)
    }

    /// S2A trains the top blocks' biases only: the blocks below record nothing for backward. On the
    /// two-block tiny BERT, tuning the top block keeps about half of what tuning both keeps, and a
    /// prompt at the input makes backward reach both blocks again.
    @Test func s2aKeepsNothingBelowItsBlocks() throws {
        let top = try keptBytes(.s2a, bits: nil) { $0.s2aLayers = 1 }
        let both = try keptBytes(.s2a, bits: nil) { $0.s2aLayers = 2 }
        let prompted = try keptBytes(.s2a, bits: nil) { $0.s2aLayers = 1; $0.s2aPromptLength = 2 }
        testLog("s2a kept: top block \(top) B, both blocks \(both) B, top block with 2 prompts \(prompted) B")
        #expect(top > 0 && top < both * 6 / 10)
        #expect(prompted > both, "a prompt at the input needs every block's activations (and pads the batch)")
        #expect(try keptBytes(.s2a, bits: nil) == top, "the top half of two blocks is one")
    }

    /// LoRA on the real MiniLM: 12 steps on one batch of random tokens, with 4-bit codes and
    /// exactly, from the same start. The loss curves stay within 2% of each other step by step.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"] != nil, "set SIDETUNE_MINILM_DIR"))
    func loraOnMiniLMTracksExactLoss() throws {
        let folder = URL(fileURLWithPath: ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"]!)
        var rng = SplitMix64(seed: 11)
        let lengths = (0..<16).map { _ in 8 + rng.nextInt(below: 40) }
        let batch = makeBatch(lengths.map { l in [101] + (0..<l).map { _ in Int32(1000 + rng.nextInt(below: 20000)) } + [102] })
        let labels = (0..<16).map { _ in Int32(rng.nextInt(below: 3)) }
        func curve(_ bits: ActivationBits) throws -> [Float] {
            var o = MethodOptions()
            o.dropout = 0
            o.activationBits = bits
            let model = try MethodRegistry.build(.lora, on: try BertEncoder.load(folder: folder), classes: 3, options: o, seed: 3)
            let opt = AdamW(parameters: model.trainableParameters().map { $0.1 }, learningRate: 2e-3, weightDecay: 0)
            var losses: [Float] = []
            for _ in 0..<12 {
                let loss = model.logits(batch, taps: nil).crossEntropy(targets: labels)
                losses.append(loss.item())
                opt.zeroGrad()
                loss.backward()
                opt.step()
            }
            return losses
        }
        let exact = try curve(.thirtyTwo), coded = try curve(.four)
        testLog("LoRA on MiniLM, loss per step: exact \(exact.map { String(format: "%.4f", $0) })")
        testLog("                            4-bit \(coded.map { String(format: "%.4f", $0) })")
        #expect(exact[0] == coded[0], "the forward does not depend on the setting")
        for (e, c) in zip(exact, coded) { #expect(abs(e - c) <= 0.02 * e, "exact \(e), 4-bit \(c)") }
        #expect(exact.last! < exact[0] * 0.8 && coded.last! < coded[0] * 0.8, "both learn the batch")
    }
}
