import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneNN
import SideTuneTestSupport
import SideTuneTrainer
import Testing

/// `Sweep`: configurations trained over one tap stream equal the same configurations trained alone.
@Suite(.serialized) struct SweepTests {
    struct Config { var method: MethodKind; var lr: Float; var rank: Int; var temperature: Float }

    func trainer(_ c: Config, on enc: BertEncoder, epochs: Int = 3, cache: Bool = true, seed: UInt64 = 42,
                 folder: URL? = nil) throws -> Trainer<Classifier<BertEncoder>, EncodedSplit> {
        var o = MethodOptions()
        o.sideInit = .magnitude
        o.reduction = 4
        o.rank = c.rank
        o.attentionTemperature = c.temperature
        let model = try makeClassifier(enc, c.method, classes: 3, options: o, seed: 1)
        var p = TrainingParameters()
        p.epochs = epochs
        p.batchSize = 8
        p.learningRate = c.lr
        p.useCache = cache
        p.patience = 0
        p.seed = seed
        p.outputFolder = folder
        let cfg = CheckpointConfig(method: c.method, options: o, labels: ["a", "b", "c"], maxLength: 16, backboneName: "tiny",
                                   backboneSHA256: "abc", seed: 1, epoch: 0, validationAccuracy: nil)
        return try Trainer(model: model, parameters: p, train: syntheticSplit(64, seed: 1), validation: syntheticSplit(24, seed: 2),
                           test: syntheticSplit(24, seed: 3), checkpointConfig: cfg)
    }

    func weights(_ t: Trainer<Classifier<BertEncoder>, EncodedSplit>) -> [[Float]] {
        t.model.trainableParameters().map { $0.1.toArray() }
    }

    /// Every configuration of a sweep (methods reading different taps among them) ends with the
    /// weights, validation accuracies and test accuracy it reaches alone, with the cache and without.
    @Test(arguments: [true, false])
    func configurationsTrainAsTheyWouldAlone(cache: Bool) throws {
        let configs = [Config(method: .last, lr: 3e-2, rank: 4, temperature: 1), Config(method: .last, lr: 1e-2, rank: 8, temperature: 0.5),
                       Config(method: .lst, lr: 3e-2, rank: 4, temperature: 1), Config(method: .linear, lr: 3e-2, rank: 4, temperature: 1)]
        var alone: [(TrainingReport, [[Float]])] = []
        for c in configs {
            let t = try trainer(c, on: tinyBackbone(), cache: cache)
            alone.append((try t.run(), weights(t)))
        }
        let shared = tinyBackbone() // one backbone under every configuration
        let sweepers = try configs.map { try trainer($0, on: shared, cache: cache) }
        let reports = try Sweep(sweepers).run()
        testLog("sweep (cache \(cache)): test accuracy \(reports.map(\.accuracy)), alone \(alone.map(\.0.accuracy))")
        #expect(weights(sweepers[0]) != weights(sweepers[1]), "the configurations differ (so the comparison can fail)")
        for (k, (report, (single, singleWeights))) in zip(reports, alone).enumerated() {
            #expect(report.accuracy == single.accuracy, "configuration \(k): test accuracy")
            #expect(report.validationAccuracy == single.validationAccuracy, "configuration \(k): best validation accuracy")
            #expect(weights(sweepers[k]) == singleWeights, "configuration \(k): best weights bit for bit")
            #expect((report.secondsPerStepCached != nil) == (single.secondsPerStepCached != nil))
            #expect(report.secondsPerStep > 0, "configuration \(k): epoch 1's steps count as steps with the backbone's taps")
        }
    }

    /// The ledger holds one backbone and one cache whatever the number of configurations: a sweep
    /// of 4 peaks well under 4 separate runs' sum, and its weights are one backbone plus 4 side
    /// networks.
    @Test func memoryGrowsByTheSideNetworksOnly() throws {
        let c = Config(method: .last, lr: 3e-2, rank: 4, temperature: 1)
        func peakWeights(_ k: Int) throws -> (weights: Int, total: Int) {
            let ledger = MemoryLedger()
            return try MemoryLedger.withLedger(ledger) {
                let enc = tinyBackbone()
                let trainers = try (0..<k).map { _ in try trainer(c, on: enc) }
                let r = try Sweep(trainers).run()[0]
                return (r.peakBytes["weights"]!, r.peakBytes["total"]!)
            }
        }
        let one = try peakWeights(1), four = try peakWeights(4)
        let enc = tinyBackbone(), side = try trainer(c, on: enc).model.trainableParameters().reduce(0) { $0 + $1.1.count * 4 }
        #expect(four.weights - one.weights <= 3 * side + 4096, "weights grow by the side networks: \(one.weights) -> \(four.weights)")
        #expect(four.total < 2 * one.total, "total \(one.total) -> \(four.total)")
    }

    @Test func configurationsThatCannotShareAStreamAreRefused() throws {
        let enc = tinyBackbone()
        let last = Config(method: .last, lr: 3e-2, rank: 4, temperature: 1)
        #expect(throws: TrainerError.self) {
            _ = try Sweep([trainer(last, on: enc), trainer(last, on: enc, seed: 7)])
        }
        #expect(throws: TrainerError.self) {
            _ = try Sweep([trainer(last, on: enc), trainer(Config(method: .lora, lr: 1e-3, rank: 4, temperature: 1), on: enc)])
        }
        #expect(throws: TrainerError.self) { _ = try Sweep([Trainer<Classifier<BertEncoder>, EncodedSplit>]()) }
    }
}
