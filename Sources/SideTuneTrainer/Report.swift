import Foundation
import SideTuneEngine
import SideTuneMethods

/// What a training run measured. JSON keys as documented in the README (`--report FILE`).
public struct TrainingReport: Codable, Sendable {
    public var method: String
    public var accuracy: Double
    public var macroF1: Double
    public var validationAccuracy: Double
    public var trainableParams: Int
    public var totalParams: Int
    /// Peak bytes per ledger category during training, plus "total" (the peak of the sum).
    public var peakBytes: [String: Int]
    public var peakRSSBytes: Int
    /// Mean seconds per optimizer step with the backbone computed (the first epoch, or all).
    public var secondsPerStep: Double
    /// Mean seconds per step when the taps came from the feature cache (nil without a cache).
    public var secondsPerStepCached: Double?
    public var epochSeconds: [Double]
    public var trainExamples: Int
    public var testExamples: Int
    public var batchSize: Int
    public var maxLength: Int
    public var threads: Int
    /// Parts each training step ran as, one per thread (1: whole batches); with the seed and the
    /// thread count, what a run's result depends on. Nil where the trainer did not say.
    public var microBatches: Int?
    public var cacheBytes: Int?
    /// The backbone projections' format ("f32", "nf4") and whether batches ran packed where the
    /// method allows: settings that change a result, recorded with it (nil in older reports).
    public var weights: String?
    public var packing: Bool?
    /// The frozen backbone's products ("f32", "bf16"; nil in older reports).
    public var backbonePrecision: String?
    /// Bits per element kept for backward (`--activation-bits`; nil in older reports).
    public var activationBits: Int?
    /// Share of the machine's CPU time the hypervisor stole while training ran (nil where
    /// /proc/stat is not readable): times measured under steal are slower than the code.
    public var stolenCPUShare: Double?

    public init(method: String, accuracy: Double, macroF1: Double, validationAccuracy: Double, trainableParams: Int, totalParams: Int,
                peakBytes: [String: Int], peakRSSBytes: Int, secondsPerStep: Double, secondsPerStepCached: Double?,
                epochSeconds: [Double], trainExamples: Int, testExamples: Int, batchSize: Int, maxLength: Int, threads: Int,
                cacheBytes: Int?, stolenCPUShare: Double? = nil, microBatches: Int? = nil) {
        self.method = method; self.accuracy = accuracy; self.macroF1 = macroF1; self.validationAccuracy = validationAccuracy
        self.trainableParams = trainableParams; self.totalParams = totalParams; self.peakBytes = peakBytes
        self.peakRSSBytes = peakRSSBytes; self.secondsPerStep = secondsPerStep; self.secondsPerStepCached = secondsPerStepCached
        self.epochSeconds = epochSeconds; self.trainExamples = trainExamples; self.testExamples = testExamples
        self.batchSize = batchSize; self.maxLength = maxLength; self.threads = threads; self.cacheBytes = cacheBytes
        self.stolenCPUShare = stolenCPUShare; self.microBatches = microBatches
    }

    enum CodingKeys: String, CodingKey {
        case method, accuracy, threads
        case macroF1 = "macro_f1", validationAccuracy = "validation_accuracy", trainableParams = "trainable_params"
        case totalParams = "total_params", peakBytes = "peak_bytes", peakRSSBytes = "peak_rss_bytes"
        case secondsPerStep = "seconds_per_step", secondsPerStepCached = "seconds_per_step_cached"
        case epochSeconds = "epoch_seconds", trainExamples = "train_examples", testExamples = "test_examples"
        case batchSize = "batch_size", maxLength = "max_length", cacheBytes = "cache_bytes"
        case stolenCPUShare = "stolen_cpu_share", microBatches = "micro_batches", weights, packing
        case backbonePrecision = "backbone_precision", activationBits = "activation_bits"
    }

    public func jsonString() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try! enc.encode(self), as: UTF8.self)
    }

    /// The final report table.
    public func table() -> String {
        var lines = ["", "method            \(method)",
                     String(format: "test accuracy     %.2f%%   macro-F1 %.2f%%   (validation accuracy %.2f%%, %d test examples)",
                            100 * accuracy, 100 * macroF1, 100 * validationAccuracy, testExamples),
                     "trainable params  \(trainableParams) of \(totalParams) (\(String(format: "%.2f", 100 * Double(trainableParams) / Double(max(totalParams, 1))))%)",
                     "peak memory (ledger, during training):"]
        for c in MemoryCategory.allCases {
            lines.append(String(format: "  %-12@ %12@", c.rawValue as NSString, formatBytes(peakBytes[c.rawValue] ?? 0) as NSString))
        }
        lines.append(String(format: "  %-12@ %12@", "total" as NSString, formatBytes(peakBytes["total"] ?? 0) as NSString))
        lines.append(String(format: "  %-12@ %12@", "peak RSS" as NSString, formatBytes(peakRSSBytes) as NSString))
        var speed = String(format: "seconds/step      %.3f (backbone computed)", secondsPerStep)
        if let c = secondsPerStepCached { speed += String(format: ", %.4f from the feature cache (%.1fx faster)", c, secondsPerStep / max(c, 1e-9)) }
        lines.append(speed)
        lines.append("epoch seconds     " + epochSeconds.map { String(format: "%.1f", $0) }.joined(separator: ", "))
        if let mb = microBatches {
            lines.append("threads           \(threads), " + (mb > 1 ? "each step as \(mb) micro-batches" : "whole batches")
                         + (packing == false ? ", padded batches (--no-packing)" : ""))
        }
        if let weights {
            lines.append("weights           \(weights) backbone projections" + (weights == "bf16" ? " (f32 sums)" : ""))
        }
        if let bits = activationBits, bits < 32 {
            lines.append("kept for backward \(bits)-bit activations (--activation-bits; see docs/methods.md)")
        }
        if let st = stolenCPUShare {
            lines.append(String(format: "cpu stolen        %.1f%% of the machine's CPU time while training (the hypervisor ran other guests; times are slower by that much or more)", 100 * st))
        }
        return lines.joined(separator: "\n")
    }
}
