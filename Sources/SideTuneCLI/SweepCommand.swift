import ArgumentParser
import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTrainer

extension SideTuneCommand {
    public struct Sweep: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Train many side-network configurations over one pass of the frozen backbone; "
                      + "write a table, a CSV, a plot and the best configuration's checkpoint.",
            discussion: """
            Every combination of the --grid values, for every method in --methods, is one configuration. \
            All of them train in one process, in lockstep over the same batches: each batch's taps are \
            computed once (epoch 1) or read once from the one feature cache (later epochs) and handed to \
            every side network, each with its own optimizer, schedule, dropout seed, early stopping and \
            best epoch. A configuration ends exactly as `sidetune train` with the same flags would (same \
            seed, same weights). Memory grows only by each side network's own state. Side methods only \
            (lst, last, linear, qst), and the configurations must read the same taps.

            Example: sidetune sweep --methods last --grid rank=8,16 --grid lr=1e-3,3e-3 \
            --grid attention-temperature=1,0.5 --train-limit 2000 --epochs 3
            """
        )
        @Option(help: ArgumentHelp("A train flag and its values, KEY=V1,V2,... (repeatable): rank, lr, "
                                   + "attention-temperature, gate-temperature, reduction, dropout, weight-decay, "
                                   + "... (any `sidetune train` option that changes only the side network or its "
                                   + "training).",
                                   valueName: "key=values"))
        var grid: [String] = []
        @Option(help: ArgumentHelp("Side methods to sweep, comma-separated (lst, last, linear, qst); "
                                   + "each runs every grid combination."))
        var methods = MethodList([.last])
        @Option(help: ArgumentHelp("Folder for sweep.md, sweep.csv, sweep.svg, sweep.json, one run folder per "
                                   + "configuration, and best (a link to the best configuration's run folder)."))
        var output: String = "runs/sweep"
        @Option(help: ArgumentHelp("Train only shard i of N: the configurations k with k % N == i (k counts from 0 "
                                   + "in the order of --methods and the grids), written with a manifest to "
                                   + "--output/shard-i-of-N.json for --merge. `auto` takes i and N from a Slurm job "
                                   + "array (SLURM_ARRAY_TASK_ID, _MIN, _COUNT); `auto/N` takes i from Slurm or a "
                                   + "Kubernetes Indexed Job (JOB_COMPLETION_INDEX). See docs/distributed.md.",
                                   valueName: "i/N|auto|auto/N"))
        var shard: String?
        @Flag(help: ArgumentHelp("Replace the runs of configurations already in --output (without it, a configuration "
                                 + "whose folder holds a run is refused before any training)."))
        var overwrite = false
        @Option(parsing: .upToNextOption,
                help: ArgumentHelp("Do not train: merge the shard manifests (shard-*-of-N.json) in these folders "
                                   + "into one sweep's outputs in --output, after checking that they belong to one "
                                   + "sweep and that every shard is there once.",
                                   valueName: "folder"))
        var merge: [String] = []
        @Argument(parsing: .allUnrecognized,
                  help: ArgumentHelp("Options given to every configuration as to `sidetune train` (--model, --data, "
                                     + "--epochs, --train-limit, ...)."))
        var trainArguments: [String] = []

        public init() {}

        /// Flags that would change the stream of batches or taps the configurations share, or the
        /// sweep's own outputs: refused as grid keys.
        static let sharedFlags: Set<String> = [
            "method", "seed", "batch-size", "eval-batch-size", "epochs", "data", "model", "model-dir", "gguf",
            "max-length", "train-limit", "eval-limit", "test-limit", "image-size", "train-data", "validation-data",
            "test-data", "text-column", "label-column", "task", "micro-batches", "threads", "no-cache",
            "cache-limit-mb", "output", "report", "resume", "overwrite", "backbone-precision", "weights", "no-packing",
            "strict", "feature-cache",
        ]

        /// One configuration: its name (a folder name), its method and its grid values.
        struct Configuration {
            let name: String
            let method: MethodKind
            let values: [(key: String, value: String)]
            var arguments: [String] { ["--method", method.rawValue] + values.flatMap { ["--\($0.key)", $0.value] } }
        }

        /// The grids, parsed and checked: (key, values) in the order given.
        func grids() throws -> [(key: String, values: [String])] {
            var out: [(key: String, values: [String])] = []
            for g in grid {
                let parts = g.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty else {
                    throw ValidationError("--grid \(g): expected KEY=V1,V2,... (for example rank=8,16)")
                }
                let key = parts[0].hasPrefix("--") ? String(parts[0].dropFirst(2)) : parts[0]
                guard !Self.sharedFlags.contains(key) else {
                    throw ValidationError("--grid \(g): \(key) must be the same for every configuration "
                                          + "(they share its batches and taps); give it once, as a train option")
                }
                let values = parts[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty }
                guard !values.isEmpty else { throw ValidationError("--grid \(g): no values after '='") }
                guard !out.contains(where: { $0.key == key }) else {
                    throw ValidationError("--grid: \(key) is given twice")
                }
                out.append((key, values))
            }
            return out
        }

        /// Every method with every combination of the grid values.
        func configurations() throws -> [Configuration] {
            let gs = try grids()
            var combos: [[(key: String, value: String)]] = [[]]
            for g in gs { combos = combos.flatMap { c in g.values.map { c + [(g.key, $0)] } } }
            var out: [Configuration] = []
            for m in methods.kinds {
                guard MethodRegistry.method(m).readsFrozenTaps else {
                    throw ValidationError("--methods: \(m.rawValue) backpropagates through the backbone, so it cannot "
                                          + "share a tap stream; sweep side methods (lst, last, linear, qst)")
                }
                for c in combos {
                    let name = ([m.rawValue] + c.map { "\($0.key)=\($0.value)" }).joined(separator: ",")
                        .replacingOccurrences(of: "/", with: "_")
                    out.append(Configuration(name: name, method: m, values: c))
                }
            }
            return out
        }

        public func validate() throws {
            if !merge.isEmpty {
                guard shard == nil, trainArguments.isEmpty else {
                    throw ValidationError("--merge only merges shards already trained: give it the shards' folders "
                                          + "and --output, nothing else")
                }
                return
            }
            let configs = try configurations()
            if let shard {
                let spec = try ShardSpec(shard, environment: ProcessInfo.processInfo.environment)
                guard spec.count <= configs.count else {
                    throw ValidationError("--shard \(shard): \(spec.count) shards for \(configs.count) configurations; "
                                          + "use at most \(configs.count)")
                }
            }
            guard !configs.isEmpty else { throw ValidationError("nothing to sweep: give --methods and --grid") }
            for flag in ["--output", "--report", "--resume", "--overwrite", "--method"]
                where trainArguments.contains(flag) {
                throw ValidationError("\(flag) is the sweep's to set "
                                      + "(each configuration's run goes to --output/<configuration>)")
            }
        }

        public func run() throws {
            Interruption.install()
            let folder = URL(fileURLWithPath: output, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            if !merge.isEmpty { return try mergeShards(into: folder) }
            let all = try configurations()
            let spec = try shard.map { try ShardSpec($0, environment: ProcessInfo.processInfo.environment) }
            let configs = spec.map { s in all.enumerated().filter { $0.offset % s.count == s.index }.map(\.element) }
                ?? all
            // Each configuration parsed as its own `train`, so every flag is checked as train checks it.
            let trains = try configs.map { c -> Train in
                let run = folder.appendingPathComponent(c.name).path
                do {
                    return try Train.parse(trainArguments + c.arguments + ["--output", run]
                                           + (overwrite ? ["--overwrite"] : []))
                } catch {
                    throw ValidationError("configuration \(c.name): \(Train.message(for: error))")
                }
            }
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            log("sweep: \(configs.count) configuration\(configs.count == 1 ? "" : "s") over one backbone pass"
                + (spec.map { ", shard \($0.index) of \($0.count) (\(all.count) configurations in all)" } ?? ""))
            let (reports, stream) = try trains[0].sweep(trains, names: configs.map(\.name), overwrite: overwrite,
                                                        log: log)
            guard let spec else { return try writeOutputs(configs, reports, folder: folder) }
            let manifest = SweepShardManifest(
                shard: spec.index, shards: spec.count, keys: (try grids()).map(\.key),
                configurations: all.map(SweepShardManifest.Entry.init), stream: stream,
                reports: Dictionary(uniqueKeysWithValues: zip(configs.map(\.name), reports)))
            let url = folder.appendingPathComponent(SweepShardManifest.fileName(spec))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(manifest).write(to: url, options: .atomic)
            print(SweepOutput.markdown(configs.map { ($0.name, $0.method.rawValue, $0.values.map(\.value)) },
                                       keys: (try grids()).map(\.key), reports))
            print("wrote \(url.path); merge every shard with: sidetune sweep --merge <their folders> --output <folder>")
        }

        /// Reads and checks the shards' manifests, then writes the whole sweep's outputs.
        func mergeShards(into folder: URL) throws {
            var found: [(url: URL, manifest: SweepShardManifest)] = []
            let fm = FileManager.default
            for dir in merge {
                let url = URL(fileURLWithPath: dir)
                var isFolder: ObjCBool = false
                guard fm.fileExists(atPath: url.path, isDirectory: &isFolder) else {
                    throw ValidationError("--merge \(dir): does not exist")
                }
                let files = isFolder.boolValue
                    ? try fm.contentsOfDirectory(atPath: url.path).filter(SweepShardManifest.isFileName).sorted()
                        .map { url.appendingPathComponent($0) }
                    : [url]
                for f in files {
                    do {
                        found.append((f, try JSONDecoder().decode(SweepShardManifest.self, from: Data(contentsOf: f))))
                    } catch {
                        throw ValidationError("\(f.path): not a sweep shard manifest (\(error))")
                    }
                }
            }
            let merged = try SweepShardManifest.merge(found)
            let configs = merged.configurations.map {
                Configuration(name: $0.name, method: MethodKind(rawValue: $0.method) ?? .last,
                              values: $0.values.map { ($0[0], $0[1]) })
            }
            try writeOutputs(configs, merged.reports, folder: folder, keys: merged.keys, runFolders: merged.runFolders,
                             shards: found.count)
        }

        func writeOutputs(_ configs: [Configuration], _ reports: [TrainingReport], folder: URL, keys: [String]? = nil,
                          runFolders: [URL]? = nil, shards: Int = 1) throws {
            let keys = keys ?? ((try? grids().map(\.key)) ?? [])
            let md = SweepOutput.markdown(configs.map { ($0.name, $0.method.rawValue, $0.values.map(\.value)) },
                                          keys: keys, reports, shards: shards)
            try Data(md.utf8).write(to: folder.appendingPathComponent("sweep.md"))
            try Data(SweepOutput.csv(configs.map { ($0.name, $0.method.rawValue, $0.values.map(\.value)) },
                                     keys: keys, reports).utf8)
                .write(to: folder.appendingPathComponent("sweep.csv"))
            try Data(SweepOutput.svg(configs.map { $0.values.map(\.value) }, keys: keys, reports).utf8)
                .write(to: folder.appendingPathComponent("sweep.svg"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let named = Dictionary(uniqueKeysWithValues: zip(configs.map(\.name), reports))
            try encoder.encode(named).write(to: folder.appendingPathComponent("sweep.json"))
            // The best configuration by validation accuracy (the first of equals): `best` links to its run.
            let best = reports.indices.max { reports[$0].validationAccuracy < reports[$1].validationAccuracy
                || (reports[$0].validationAccuracy == reports[$1].validationAccuracy && $0 > $1) }!
            let link = folder.appendingPathComponent("best")
            try? FileManager.default.removeItem(at: link)
            try FileManager.default.createSymbolicLink(
                atPath: link.path, withDestinationPath: runFolders?[best].path ?? configs[best].name)
            print(md)
            print(String(format: "best: %@ (validation accuracy %.2f%%, test %.2f%%); its checkpoint: %@/best/best",
                         configs[best].name, 100 * reports[best].validationAccuracy, 100 * reports[best].accuracy,
                         folder.path))
            print("wrote \(folder.path)/sweep.md, sweep.csv, sweep.svg, sweep.json")
        }
    }
}

extension SideTuneCommand.Train {
    /// Loads the backbone and data of these (sweep) configurations once, builds every
    /// configuration's side network on the one backbone, and trains them as a `Sweep`.
    func sweep(_ configs: [Self], names: [String], overwrite: Bool, log: @escaping (String) -> Void) throws
        -> (reports: [TrainingReport], stream: [String: String]) {
        training.applyThreads()
        if llm.task == .lm { throw ValidationError("sweep trains classifiers; --task lm is for `train`") }
        let family = try BackboneSource.family(model: task.modelName, modelDir: task.modelDir)
        for c in configs {
            let weights = MethodRegistry.weights(c.method, options: c.methodFlags.options())
            do { try MethodRegistry.check(c.method, on: family, weights: weights) } catch {
                throw ValidationError("\(error)")
            }
        }
        if family != .vit, image.testLimit != 0 {
            throw ValidationError("--test-limit is for image tasks; text tasks use --eval-limit")
        }
        let source = try BackboneSource.resolve(model: task.modelName, modelDir: task.modelDir, log: log)
        // One backbone serves every configuration, so they must agree on its weight format (QST's
        // default NF4, the others' F32).
        let weights = MethodRegistry.weights(configs[0].method, options: configs[0].methodFlags.options())
        for (c, name) in zip(configs, names)
            where MethodRegistry.weights(c.method, options: c.methodFlags.options()) != weights {
            throw ValidationError(
                "\(name) runs on \(MethodRegistry.weights(c.method, options: c.methodFlags.options()).rawValue) "
                + "backbone weights, \(names[0]) on \(weights.rawValue): one sweep shares one backbone; "
                + "sweep them apart (or give --weights)")
        }
        let prompts = configs.map { $0.method == .prompt ? $0.methodFlags.options().promptLength : 0 }.max() ?? 0
        return try withBackboneAndSplits(source, weights: weights, promptTokens: prompts, log: log,
                                         SweepOnSplits(command: self, configs: configs, names: names, source: source,
                                                       overwrite: overwrite, log: log))
    }

    func sweep<B: Backbone, S: ClassificationData>(_ configs: [Self], names: [String], backbone: B,
                                                   source: BackboneSource, splits: TaskSplits<S>, overwrite: Bool,
                                                   log: @escaping (String) -> Void) throws
        -> (reports: [TrainingReport], stream: [String: String]) where S.Batch == B.Input {
        var trainers: [Trainer<Classifier<B>, S>] = []
        for (c, name) in zip(configs, names) {
            let options = c.methodFlags.options()
            let built = try MethodRegistry.build(c.method, on: backbone, classes: splits.labels.count, options: options,
                                                 seed: task.seed, trainingExamples: splits.trainingExamples, progress: log)
            guard let model = built as? Classifier<B> else {
                throw ValidationError("\(name): \(c.method.rawValue) cannot run in a sweep")
            }
            let config = checkpointConfig(method: c.method, options: options, source: source, splits: splits)
            var parameters = c.training.parameters(method: c.method, seed: task.seed)
            parameters.outputFolder = c.output.map { URL(fileURLWithPath: $0, isDirectory: true) }
            parameters.overwrite = overwrite // (without it, `Train`'s checks refused a folder holding a run)
            parameters.runIdentity = c.runIdentity()
            trainers.append(try Trainer(model: model, parameters: parameters, train: splits.train,
                                        validation: splits.validation, test: splits.test, checkpointConfig: config))
            log("\(name): \(model.trainableParameterCount) trainable parameters")
        }
        let sweep: Sweep<Classifier<B>, S>
        do { sweep = try Sweep(trainers) } catch { throw ValidationError("\(error)") }
        let bar = SweepProgress(names: names)
        var reports = try sweep.run(progress: bar.update)
        for (i, c) in configs.enumerated() {
            reports[i].weights = MethodRegistry.weights(c.method, options: c.methodFlags.options()).rawValue
            reports[i].packing = c.methodFlags.options().packing ?? true
            reports[i].backbonePrecision = (c.methodFlags.options().backbonePrecision ?? .float32).rawValue
            reports[i].activationBits =
                MethodRegistry.activationBits(c.method, options: c.methodFlags.options()).rawValue
        }
        return (reports, trainers[0].streamFingerprint)
    }
}

/// `sweep`'s body for any backbone family.
struct SweepOnSplits: BackboneTaskBody {
    let command: SideTuneCommand.Train
    let configs: [SideTuneCommand.Train]
    let names: [String]
    let source: BackboneSource
    let overwrite: Bool
    let log: (String) -> Void

    func run<B: Backbone, S: ClassificationData>(_ backbone: B, _ splits: TaskSplits<S>) throws
        -> (reports: [TrainingReport], stream: [String: String]) where S.Batch == B.Input {
        try command.sweep(configs, names: names, backbone: backbone, source: source, splits: splits,
                          overwrite: overwrite, log: log)
    }
}

/// One progress line for the whole sweep: the configuration stepping, the epoch and step, and the
/// epochs' validation accuracies as they end.
final class SweepProgress {
    let names: [String]
    let bar = ProgressBar()
    init(names: [String]) { self.names = names }

    func update(_ k: Int, _ e: TrainingEvent) {
        switch e {
        case .message(let m): bar.update(.message("[\(names[k])] \(m)"))
        case .step:
            // One bar for the sweep: the last configuration's steps stand for the batch.
            if k == names.count - 1 { bar.update(e) }
        case let .epochEnd(epoch, _, val, _, _, improved):
            bar.clear()
            print(String(format: "epoch %d %@: validation accuracy %.2f%%%@", epoch, names[k], 100 * val.accuracy,
                         improved ? " *best" : ""))
        }
    }
}

/// The sweep's table, CSV and plot.
enum SweepOutput {
    typealias Row = (name: String, method: String, values: [String])

    /// `shards`: the number of processes the reports come from (each with its own ledger).
    static func markdown(_ rows: [Row], keys: [String], _ rs: [TrainingReport], shards: Int = 1) -> String {
        var out = ["| configuration | method | " + keys.map { "\($0) | " }.joined()
                   + "validation acc | test acc | macro-F1 | trainable params | own s/step | own s/step cached |",
                   "|---|---|" + String(repeating: "---|", count: keys.count) + "---|---|---|---|---|---|"]
        for (row, r) in zip(rows, rs) {
            out.append("| \(row.name) | \(row.method) | " + row.values.map { "\($0) | " }.joined()
                       + String(format: "%.2f | %.2f | %.2f | %d | %.3f | %@ |", 100 * r.validationAccuracy,
                                100 * r.accuracy, 100 * r.macroF1, r.trainableParams, r.secondsPerStep,
                                r.secondsPerStepCached.map { String(format: "%.4f", $0) } ?? "-"))
        }
        if shards > 1, let lo = rs.map({ $0.peakBytes["total"] ?? 0 }).min(),
           let hi = rs.map({ $0.peakBytes["total"] ?? 0 }).max() {
            out.append("")
            out.append(String(format: "Merged from %d shards, each its own process over one backbone pass: "
                                      + "ledger peaks %.1f to %.1f MiB.",
                              shards, Double(lo) / 1_048_576, Double(hi) / 1_048_576))
        } else if let r = rs.first {
            let mib = { (b: Int) in String(format: "%.1f", Double(b) / 1_048_576) }
            // Each configuration's step times are its own side network's; the first configuration's
            // also hold the backbone pass (or cache read) every configuration shares.
            let step = rs.reduce(0) { $0 + $1.secondsPerStep }, cached = rs.compactMap(\.secondsPerStepCached)
            out.append("")
            out.append(String(format: "A sweep step (every configuration, the backbone once): %.3f s", step)
                       + (cached.count == rs.count
                          ? String(format: ", %.4f s from the feature cache.", cached.reduce(0, +)) : "."))
            out.append("Ledger peak for the whole sweep (one backbone, one feature cache, \(rs.count) side networks): "
                       + "\(mib(r.peakBytes["total"] ?? 0)) MiB (weights \(mib(r.peakBytes["weights"] ?? 0)), "
                       + "activations \(mib(r.peakBytes["activations"] ?? 0)), "
                       + "cache \(mib(r.peakBytes["cache"] ?? 0))); peak RSS \(mib(r.peakRSSBytes)) MiB.")
        }
        return out.joined(separator: "\n") + "\n"
    }

    static func csv(_ rows: [Row], keys: [String], _ rs: [TrainingReport]) -> String {
        var out = [(["configuration", "method"] + keys
                    + ["validation_accuracy", "accuracy", "macro_f1", "trainable_params", "seconds_per_step",
                       "seconds_per_step_cached", "total_peak_bytes"]).joined(separator: ",")]
        for (row, r) in zip(rows, rs) {
            out.append(([row.name.contains(",") ? "\"\(row.name)\"" : row.name, row.method] + row.values
                        + [String(r.validationAccuracy), String(r.accuracy), String(r.macroF1),
                           String(r.trainableParams), String(r.secondsPerStep),
                           r.secondsPerStepCached.map { String($0) } ?? "", String(r.peakBytes["total"] ?? 0)])
                .joined(separator: ","))
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// Test accuracy against each swept key's values: one panel per key, its values evenly spaced
    /// in the order given, a point per configuration.
    static func svg(_ values: [[String]], keys: [String], _ rs: [TrainingReport]) -> String {
        let panels = max(keys.count, 1), pw = 260.0, h = 320.0, top = 40.0, bottom = 50.0, left = 60.0
        let w = left + Double(panels) * pw + 20
        let ys = rs.map { 100 * $0.accuracy }
        let yMin = max(0, (ys.min() ?? 0) - 2), yMax = min(100, (ys.max() ?? 100) + 2)
        func py(_ y: Double) -> Double { top + (yMax - y) / max(yMax - yMin, 1e-9) * (h - top - bottom) }
        var s = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" "
                 + "font-family=\"sans-serif\" font-size=\"12\">",
                 "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
                 "<text x=\"\(w / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">"
                 + "test accuracy (%) of each configuration against the swept values</text>"]
        for i in 0...4 {
            let yv = yMin + (yMax - yMin) * Double(i) / 4
            s.append("<text x=\"\(left - 8)\" y=\"\(py(yv) + 4)\" text-anchor=\"end\">"
                     + "\(String(format: "%.1f", yv))</text>")
        }
        for p in 0..<panels {
            let x0 = left + Double(p) * pw, x1 = x0 + pw - 30
            s.append("<line x1=\"\(x0)\" y1=\"\(h - bottom)\" x2=\"\(x1)\" y2=\"\(h - bottom)\" stroke=\"black\"/>")
            s.append("<line x1=\"\(x0)\" y1=\"\(top)\" x2=\"\(x0)\" y2=\"\(h - bottom)\" stroke=\"black\"/>")
            guard p < keys.count else { continue }
            var distinct: [String] = []
            for v in values.map({ $0[p] }) where !distinct.contains(v) { distinct.append(v) }
            func px(_ v: String) -> Double {
                let i = Double(distinct.firstIndex(of: v) ?? 0)
                return x0 + (i + 0.5) / Double(distinct.count) * (x1 - x0)
            }
            s.append("<text x=\"\((x0 + x1) / 2)\" y=\"\(h - 14)\" text-anchor=\"middle\">\(keys[p])</text>")
            for v in distinct {
                s.append("<text x=\"\(px(v))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(v)</text>")
            }
            for (row, y) in zip(values, ys) {
                s.append("<circle cx=\"\(px(row[p]))\" cy=\"\(py(y))\" r=\"4\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>")
            }
        }
        s.append("</svg>")
        return s.joined(separator: "\n") + "\n"
    }
}

/// Which shard of a sweep this process trains: i of N, given, or read from a scheduler's
/// environment (Slurm job arrays; Kubernetes Indexed Jobs).
public struct ShardSpec: Equatable, Sendable {
    public let index: Int, count: Int

    public init(index: Int, count: Int) { self.index = index; self.count = count }

    /// "i/N", "auto" (Slurm: SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN, and SLURM_ARRAY_TASK_COUNT)
    /// or "auto/N" (i from Slurm, else JOB_COMPLETION_INDEX).
    public init(_ spec: String, environment env: [String: String]) throws {
        let parts = spec.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let first = parts.first else {
            throw ValidationError("--shard \(spec): expected i/N, auto or auto/N")
        }
        var count = parts.count == 2 ? Int(parts[1]) : nil
        if parts.count == 2 && count == nil { throw ValidationError("--shard \(spec): N must be a whole number") }
        let index: Int
        if first == "auto" {
            if let id = env["SLURM_ARRAY_TASK_ID"].flatMap({ Int($0) }) {
                index = id - (env["SLURM_ARRAY_TASK_MIN"].flatMap { Int($0) } ?? 0)
                if count == nil { count = env["SLURM_ARRAY_TASK_COUNT"].flatMap { Int($0) } }
            } else if let k = env["JOB_COMPLETION_INDEX"].flatMap({ Int($0) }) {
                index = k
            } else {
                throw ValidationError("--shard \(spec): neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor "
                                      + "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give the shard as i/N")
            }
            guard count != nil else {
                throw ValidationError("--shard \(spec): the number of shards is not in the environment "
                                      + "(SLURM_ARRAY_TASK_COUNT); give it as auto/N")
            }
        } else {
            guard let i = Int(first), count != nil else {
                throw ValidationError("--shard \(spec): expected i/N, auto or auto/N")
            }
            index = i
        }
        guard let n = count, n >= 1, index >= 0, index < n else {
            throw ValidationError("--shard \(spec): shard \(index) of \(count ?? 0) is not one of 0..<N (N >= 1)")
        }
        self.init(index: index, count: n)
    }
}

/// What one shard of a sweep writes for `--merge`: which shard, the whole sweep's configurations,
/// what every shard must share (the backbone, data and split), and its configurations' reports.
struct SweepShardManifest: Codable {
    static let currentFormat = "sidetune-sweep-shard-1"

    struct Entry: Codable, Equatable {
        let name: String, method: String
        let values: [[String]]
        init(_ c: SideTuneCommand.Sweep.Configuration) {
            name = c.name
            method = c.method.rawValue
            values = c.values.map { [$0.key, $0.value] }
        }
    }

    var format = currentFormat
    let shard: Int, shards: Int
    let keys: [String]
    let configurations: [Entry]
    let stream: [String: String]
    let reports: [String: TrainingReport]

    init(shard: Int, shards: Int, keys: [String], configurations: [Entry], stream: [String: String],
         reports: [String: TrainingReport]) {
        self.shard = shard
        self.shards = shards
        self.keys = keys
        self.configurations = configurations
        self.stream = stream
        self.reports = reports
    }

    static func fileName(_ s: ShardSpec) -> String { "shard-\(s.index)-of-\(s.count).json" }

    static func isFileName(_ name: String) -> Bool {
        name.hasPrefix("shard-") && name.hasSuffix(".json") && name.contains("-of-")
    }

    /// The whole sweep from its shards' manifests: refused unless they are one sweep's (format,
    /// configurations, backbone and data, shard count) and every shard is there exactly once.
    static func merge(_ found: [(url: URL, manifest: SweepShardManifest)]) throws
        -> (keys: [String], configurations: [Entry], reports: [TrainingReport], runFolders: [URL]) {
        guard let (firstURL, first) = found.first else {
            throw ValidationError("--merge: no shard-*-of-N.json manifests found")
        }
        var byShard: [Int: URL] = [:]
        for (url, m) in found {
            func differs(_ what: String) -> ValidationError {
                ValidationError("--merge: \(url.path) belongs to another sweep than \(firstURL.path): "
                                + "its \(what) differs")
            }
            guard m.format == currentFormat else {
                throw ValidationError("--merge: \(url.path): format \(m.format), expected \(currentFormat)")
            }
            guard m.shards == first.shards else { throw differs("shard count (\(m.shards) against \(first.shards))") }
            guard m.configurations == first.configurations, m.keys == first.keys else {
                throw differs("list of configurations")
            }
            let changed = Set(m.stream.keys).union(first.stream.keys).filter { m.stream[$0] != first.stream[$0] }
                .sorted()
            guard changed.isEmpty else { throw differs(changed.joined(separator: ", ")) }
            guard (0..<m.shards).contains(m.shard) else {
                throw ValidationError("--merge: \(url.path): shard \(m.shard) of \(m.shards)")
            }
            if let other = byShard[m.shard] {
                throw ValidationError("--merge: shard \(m.shard) of \(m.shards) is there twice: "
                                      + "\(other.path) and \(url.path)")
            }
            byShard[m.shard] = url
        }
        let missing = (0..<first.shards).filter { byShard[$0] == nil }
        guard missing.isEmpty else {
            throw ValidationError("--merge: shard\(missing.count == 1 ? "" : "s") "
                                  + "\(missing.map(String.init).joined(separator: ", ")) of \(first.shards) missing "
                                  + "(found \(byShard.keys.sorted().map(String.init).joined(separator: ", ")))")
        }
        let manifests = Dictionary(uniqueKeysWithValues: found.map { ($0.manifest.shard, $0) })
        var reports: [TrainingReport] = [], folders: [URL] = []
        for (k, entry) in first.configurations.enumerated() {
            let (url, m) = manifests[k % first.shards]!
            guard let r = m.reports[entry.name] else {
                throw ValidationError("--merge: \(url.path) (shard \(m.shard)) has no report for configuration "
                                      + "\(entry.name)")
            }
            reports.append(r)
            folders.append(url.deletingLastPathComponent().appendingPathComponent(entry.name).standardizedFileURL)
        }
        return (first.keys, first.configurations, reports, folders)
    }
}
