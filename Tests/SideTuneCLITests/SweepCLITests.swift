import Foundation
import SideTuneCLI
import SideTuneTrainer
import Testing

/// `sidetune sweep` end to end on a tiny BERT folder: each configuration's test accuracy equals
/// `sidetune train` with the same flags, the outputs are written, and bad grids are refused.
@Suite(.serialized) struct SweepCLITests {
    @Test func configurationsMatchSeparateTrainRuns() throws {
        let f = try BadInputTests.fixture(rows: 80)
        let common = f.modelArgs + ["--max-length", "12", "--epochs", "2", "--batch-size", "8", "--dropout", "0.1"]
        let out = f.root.appendingPathComponent("sweep")
        var sweep = try SideTuneCommand.parseAsRoot(["sweep", "--methods", "last,linear", "--grid", "lr=1e-2,3e-3",
                                                     "--output", out.path] + common)
        _ = try captureStandardOutput { try sweep.run() }
        let reports = try JSONDecoder().decode([String: TrainingReport].self,
                                               from: Data(contentsOf: out.appendingPathComponent("sweep.json")))
        #expect(reports.count == 4)
        for name in ["last,lr=1e-2", "linear,lr=3e-3"] {
            let parts = name.split(separator: ",")
            let method = String(parts[0]), lr = String(parts[1].dropFirst(3))
            let report = f.root.appendingPathComponent("\(name).json")
            var train = try SideTuneCommand.parseAsRoot(["train", "--method", method, "--lr", lr, "--report", report.path] + common)
            _ = try captureStandardOutput { try train.run() }
            let alone = try JSONDecoder().decode(TrainingReport.self, from: Data(contentsOf: report))
            #expect(reports[name]?.accuracy == alone.accuracy, "\(name): sweep \(reports[name]?.accuracy ?? -1), train \(alone.accuracy)")
            #expect(reports[name]?.validationAccuracy == alone.validationAccuracy)
        }
        for file in ["sweep.md", "sweep.csv", "sweep.svg", "best/best/checkpoint.json"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), "\(file)")
        }
        let csv = try String(contentsOf: out.appendingPathComponent("sweep.csv"), encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 5 && csv.hasPrefix("configuration,method,lr,"))

        // Nothing is lost: the same sweep into the same folder is refused unless told to replace.
        let again = ["sweep", "--methods", "last,linear", "--grid", "lr=1e-2,3e-3", "--output", out.path] + common
        let (message, code) = BadInputTests.outcome(again)
        #expect(code != 0 && message.contains("holds a run already"), "\(message)")
        #expect(BadInputTests.outcome(again + ["--overwrite"]).code == 0)
        // QST (NF4 weights by default) and LAST (F32) cannot share one backbone.
        let mixed = BadInputTests.outcome(["sweep", "--methods", "qst,last", "--output", f.root.appendingPathComponent("mixed").path]
                                          + common)
        #expect(mixed.code != 0 && mixed.message.contains("one sweep shares one backbone"), "\(mixed.message)")
    }

    /// The built tool (`swift build -c release` puts it beside the tests).
    static func executable() -> URL? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL
        let build = root.appendingPathComponent(".build")
        let candidates = [build.appendingPathComponent("release/sidetune")]
            + ((try? FileManager.default.contentsOfDirectory(atPath: build.path)) ?? []).map {
                build.appendingPathComponent("\($0)/release/sidetune")
            }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Runs the tool as task `id` of a Slurm job array of `count` (SLURM_ARRAY_TASK_MIN `min`, unset
    /// if nil), quietly; returns its exit status.
    static func runAsSlurmTask(_ exe: URL, _ arguments: [String], id: Int, min: Int?, count: Int) throws -> Int32 {
        let p = Process()
        p.executableURL = exe
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["SLURM_ARRAY_TASK_ID"] = String(id)
        env["SLURM_ARRAY_TASK_MIN"] = min.map(String.init)
        env["SLURM_ARRAY_TASK_COUNT"] = String(count)
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// Rows of sweep.csv without its timing and memory columns (which differ between processes).
    static func results(_ folder: URL) throws -> [String] {
        let lines = try String(contentsOf: folder.appendingPathComponent("sweep.csv"), encoding: .utf8).split(separator: "\n")
        return lines.map { line in
            // The configuration name is quoted (it holds commas): compare everything before the timings.
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            return fields.dropLast(3).joined(separator: ",")
        }
    }

    /// Three machines simulated as three processes of the built tool with Slurm's job-array
    /// variables set (IDs 1-3): their shards merge into the table one process makes.
    @Test func threeSlurmShardsMergeToTheSingleProcessSweep() throws {
        guard let exe = Self.executable() else {
            Issue.record("build the tool first (swift build -c release --product sidetune): the test runs it as three processes")
            return
        }
        let f = try BadInputTests.fixture(rows: 80)
        let common = f.modelArgs + ["--max-length", "12", "--epochs", "2", "--batch-size", "8"]
        let grid = ["--methods", "last,linear", "--grid", "lr=1e-2,3e-3"]
        let single = f.root.appendingPathComponent("single"), sharded = f.root.appendingPathComponent("sharded")
        var one = try SideTuneCommand.parseAsRoot(["sweep"] + grid + ["--output", single.path] + common)
        _ = try captureStandardOutput { try one.run() }
        for id in 1...3 {
            let status = try Self.runAsSlurmTask(exe, ["sweep", "--shard", "auto"] + grid + ["--output", sharded.path] + common,
                                                 id: id, min: 1, count: 3)
            #expect(status == 0, "shard \(id - 1) exited with \(status)")
        }
        let merged = sharded.appendingPathComponent("merged")
        var m = try SideTuneCommand.parseAsRoot(["sweep", "--merge", sharded.path, "--output", merged.path])
        _ = try captureStandardOutput { try m.run() }
        let a = try Self.results(single), b = try Self.results(merged)
        #expect(a.count == 5 && a == b, "single process:\n\(a.joined(separator: "\n"))\nmerged:\n\(b.joined(separator: "\n"))")
        #expect(FileManager.default.fileExists(atPath: merged.appendingPathComponent("best/best/checkpoint.json").path))

        // A missing or doubled shard is refused, naming it.
        let partial = f.root.appendingPathComponent("partial"), other = f.root.appendingPathComponent("other")
        for d in [partial, other] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        for i in [0, 2] {
            try FileManager.default.copyItem(at: sharded.appendingPathComponent("shard-\(i)-of-3.json"),
                                             to: partial.appendingPathComponent("shard-\(i)-of-3.json"))
        }
        try FileManager.default.copyItem(at: sharded.appendingPathComponent("shard-0-of-3.json"),
                                         to: other.appendingPathComponent("shard-0-of-3.json"))
        for (dirs, fragment) in [([partial.path], "shard 1 of 3 missing"), ([sharded.path, other.path], "shard 0 of 3 is there twice")] {
            let (message, code) = BadInputTests.outcome(["sweep", "--merge"] + dirs + ["--output", f.root.appendingPathComponent("x").path])
            #expect(code != 0 && message.contains(fragment), "\(message)")
        }
    }

    @Test func shardSpecsFromSchedulers() throws {
        #expect(try ShardSpec("2/5", environment: [:]) == ShardSpec(index: 2, count: 5))
        #expect(try ShardSpec("auto", environment: ["SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "3",
                                                    "SLURM_ARRAY_TASK_COUNT": "3"]) == ShardSpec(index: 1, count: 3))
        #expect(try ShardSpec("auto/4", environment: ["JOB_COMPLETION_INDEX": "3"]) == ShardSpec(index: 3, count: 4))
        for (spec, env) in [("auto", [String: String]()), ("auto", ["JOB_COMPLETION_INDEX": "0"]), ("3/3", [:]), ("x", [:])] {
            #expect(throws: (any Error).self) { try ShardSpec(spec, environment: env) }
        }
    }

    @Test func badGridsAreRefused() {
        for (args, fragment) in [(["--grid", "seed=1,2"], "must be the same for every configuration"),
                                 (["--grid", "rank"], "expected KEY=V1,V2"),
                                 (["--methods", "lora", "--grid", "lr=1e-3"], "backpropagates through the backbone"),
                                 (["--grid", "rank=4", "--grid", "rank=8"], "given twice")] {
            do {
                _ = try SideTuneCommand.parseAsRoot(["sweep"] + args)
                Issue.record("\(args) was accepted")
            } catch {
                let message = SideTuneCommand.message(for: error)
                #expect(message.contains(fragment), "\(args): \(message)")
            }
        }
    }
}

/// `sidetune cache build --shard` as three processes with Slurm's variables, then `cache merge`:
/// the same bytes as one `cache build`, and `train --feature-cache` reads it.
@Suite(.serialized) struct CacheShardCLITests {
    @Test func threeShardsMergeToTheOneProcessCache() throws {
        guard let exe = SweepCLITests.executable() else {
            Issue.record("build the tool first (swift build -c release --product sidetune): the test runs it as three processes")
            return
        }
        let f = try BadInputTests.fixture(rows: 80)
        let task = f.modelArgs + ["--max-length", "12", "--batch-size", "8"]
        let single = f.root.appendingPathComponent("cache-single"), sharded = f.root.appendingPathComponent("cache-sharded")
        var one = try SideTuneCommand.parseAsRoot(["cache", "build", "--output", single.path] + task)
        _ = try captureStandardOutput { try one.run() }
        for id in 0..<3 {
            let status = try SweepCLITests.runAsSlurmTask(exe, ["cache", "build", "--shard", "auto", "--output", sharded.path] + task,
                                                          id: id, min: nil, count: 3)
            #expect(status == 0, "shard \(id) exited with \(status)")
        }
        let merged = f.root.appendingPathComponent("merged.cache")
        var m = try SideTuneCommand.parseAsRoot(["cache", "merge", sharded.path, "--output", merged.path])
        _ = try captureStandardOutput { try m.run() }
        let a = try Data(contentsOf: single.appendingPathComponent("cache-0-of-1.bin")), b = try Data(contentsOf: merged)
        #expect(a.count > 0 && a == b, "merged \(b.count) bytes against \(a.count) from one process")

        // Training reads it from epoch 1 (every step from the cache); a cache of another split is refused.
        let report = f.root.appendingPathComponent("r.json")
        var train = try SideTuneCommand.parseAsRoot(["train", "--method", "last", "--epochs", "2", "--feature-cache", merged.path,
                                                     "--report", report.path] + task)
        _ = try captureStandardOutput { try train.run() }
        let r = try JSONDecoder().decode(TrainingReport.self, from: Data(contentsOf: report))
        #expect(r.secondsPerStep == 0 && r.secondsPerStepCached != nil, "no step computed the backbone")
        let (message, code) = BadInputTests.outcome(["train", "--method", "last", "--seed", "7", "--feature-cache", merged.path] + task)
        #expect(code != 0 && message.contains("does not belong to this run") && message.contains("training split"), "\(message)")

        // A missing part is refused, naming it.
        try FileManager.default.removeItem(at: sharded.appendingPathComponent("cache-1-of-3.bin"))
        let (missing, status) = BadInputTests.outcome(["cache", "merge", sharded.path, "--output", merged.path + "2"])
        #expect(status != 0 && missing.contains("shard 1 of 3 missing"), "\(missing)")
    }
}
