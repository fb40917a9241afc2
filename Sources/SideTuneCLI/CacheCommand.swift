import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneMethods
import SideTuneTrainer

extension SideTuneCommand {
    public struct Cache: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Build the frozen backbone's feature cache ahead of training, in shards over many machines, "
                      + "and merge them.",
            discussion: """
            A corpus too large to pass through the backbone on one machine splits without communication: \
            `cache build --shard i/N` computes the taps of a contiguous share of the training examples \
            (whole batches) and writes cache-<i>-of-<N>.bin with a manifest (.json); `cache merge` checks the \
            manifests (backbone, data, split, taps, shard count, every part once) and joins the parts into \
            one cache, byte for byte the one a single `cache build` writes. `train --feature-cache FILE` \
            (and `sweep`) then read it from epoch 1 on. See docs/distributed.md.
            """,
            subcommands: [Build.self, Merge.self]
        )
        public init() {}
    }
}

extension SideTuneCommand.Cache {
    public struct Build: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Compute the taps of one shard of the training examples into a cache part.",
            discussion: "Example: sidetune cache build --shard 0/4 --output /shared/cache-tweets --data tweets "
                        + "--train-limit 200000"
        )
        @Option(help: ArgumentHelp("Which share of the training examples: i/N, auto (a Slurm job array) or auto/N "
                                   + "(Slurm, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX).",
                                   valueName: "i/N|auto|auto/N"))
        var shard = "0/1"
        @Option(help: "Folder for cache-<i>-of-<N>.bin and its manifest.")
        var output: String
        @Argument(parsing: .allUnrecognized,
                  help: ArgumentHelp("The task, as `sidetune train` takes it (--model, --data, --max-length, "
                                     + "--train-limit, --seed, --batch-size, --backbone-precision, ...)."))
        var trainArguments: [String] = []

        public init() {}

        public func run() throws {
            let spec = try ShardSpec(shard, environment: ProcessInfo.processInfo.environment)
            let folder = URL(fileURLWithPath: output, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let train: SideTuneCommand.Train
            do { train = try SideTuneCommand.Train.parse(["--method", "linear"] + trainArguments) } catch {
                throw ValidationError(SideTuneCommand.Train.message(for: error))
            }
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            let url = folder.appendingPathComponent("cache-\(spec.index)-of-\(spec.count).bin")
            let m = try train.buildCache(spec, to: url, log: log)
            print("wrote \(url.path) (\(formatBytes(m.bytes)): examples \(m.first)..<\(m.first + m.count) "
                  + "of \(m.lengths.count), \(m.taps.count) taps) and its manifest")
        }
    }

    public struct Merge: ParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Join the cache parts of every shard into one feature cache, "
                      + "after checking they are one cache's.",
            discussion: "Example: sidetune cache merge /shared/cache-tweets --output /shared/tweets.cache"
        )
        @Argument(help: "Folders (or files) holding the parts cache-<i>-of-<N>.bin with their manifests.")
        var parts: [String]
        @Option(help: "The merged cache file (its manifest goes beside it, <file>.json).")
        var output: String

        public init() {}

        public func run() throws {
            let fm = FileManager.default
            var found: [URL] = []
            for p in parts {
                var isFolder: ObjCBool = false
                guard fm.fileExists(atPath: p, isDirectory: &isFolder) else {
                    throw ValidationError("\(p): does not exist")
                }
                if isFolder.boolValue {
                    found += try fm.contentsOfDirectory(atPath: p)
                        .filter { $0.hasPrefix("cache-") && $0.hasSuffix(".bin") }.sorted()
                        .map { URL(fileURLWithPath: p).appendingPathComponent($0) }
                } else {
                    found.append(URL(fileURLWithPath: p))
                }
            }
            let manifests = try found.map { url -> (URL, FeatureCacheManifest) in
                do { return (url, try FeatureCacheManifest.read(for: url)) } catch { throw ValidationError("\(error)") }
            }
            let merged = try Self.check(manifests)
            let out = URL(fileURLWithPath: output)
            let partial = URL(fileURLWithPath: output + ".partial")
            guard fm.createFile(atPath: partial.path, contents: nil) else {
                throw ValidationError("\(partial.path): could not create the merged cache's file (is its folder writable?)")
            }
            let writer = try FileHandle(forWritingTo: partial)
            do {
                for (url, m) in merged.parts {
                    // Each part must still be what its manifest says (size and SHA-256).
                    guard try SHA256.hexDigest(ofFile: url.path) == m.sha256 else {
                        throw ValidationError("\(url.path): its SHA-256 is not the one its manifest records "
                                              + "(the part changed or is incomplete)")
                    }
                    let reader = try FileHandle(forReadingFrom: url)
                    while let chunk = try reader.read(upToCount: 1 << 24), !chunk.isEmpty {
                        try writer.write(contentsOf: chunk)
                    }
                    try reader.close()
                }
                try writer.close()
            } catch {
                try? writer.close()
                try? fm.removeItem(at: partial)
                throw error
            }
            var m = merged.manifest
            m.bytes = (try fm.attributesOfItem(atPath: partial.path)[.size] as? Int) ?? 0
            m.sha256 = try SHA256.hexDigest(ofFile: partial.path)
            try? fm.removeItem(at: out)
            try fm.moveItem(at: partial, to: out)
            try m.write(for: out)
            print("wrote \(out.path) (\(formatBytes(m.bytes)), \(merged.parts.count) parts, "
                  + "\(m.lengths.count) examples); train with --feature-cache \(out.path)")
        }

        /// The parts in order and the merged manifest; refuses parts of different caches, a
        /// doubled or missing shard, or parts that do not cover the examples end to end.
        static func check(_ found: [(URL, FeatureCacheManifest)]) throws
            -> (parts: [(URL, FeatureCacheManifest)], manifest: FeatureCacheManifest) {
            guard let (firstURL, first) = found.first else {
                throw ValidationError("cache merge: no cache-<i>-of-<N>.bin parts found")
            }
            var byShard: [Int: (URL, FeatureCacheManifest)] = [:]
            for (url, m) in found {
                var differs: [String] = []
                if m.shards != first.shards {
                    differs.append("shard count (\(m.shards) against \(first.shards))")
                }
                if m.lengths != first.lengths || m.split != first.split || m.data != first.data {
                    differs.append("data or split")
                }
                if m.backboneSHA256 != first.backboneSHA256 { differs.append("backbone") }
                if m.taps != first.taps || m.width != first.width { differs.append("taps") }
                if m.backbonePrecision != first.backbonePrecision || m.packed != first.packed {
                    differs.append("backbone precision or layout")
                }
                guard differs.isEmpty else {
                    throw ValidationError("cache merge: \(url.path) is a part of another cache than \(firstURL.path): "
                                          + "its \(differs.joined(separator: ", ")) differs")
                }
                if let other = byShard[m.shard] {
                    throw ValidationError("cache merge: shard \(m.shard) of \(m.shards) is there twice: "
                                          + "\(other.0.path) and \(url.path)")
                }
                byShard[m.shard] = (url, m)
            }
            let missing = (0..<first.shards).filter { byShard[$0] == nil }
            guard missing.isEmpty else {
                throw ValidationError("cache merge: shard\(missing.count == 1 ? "" : "s") "
                                      + "\(missing.map(String.init).joined(separator: ", ")) "
                                      + "of \(first.shards) missing")
            }
            let parts = (0..<first.shards).map { byShard[$0]! }
            var next = 0
            for (url, m) in parts {
                guard m.first == next else {
                    throw ValidationError("cache merge: \(url.path) starts at example \(m.first), "
                                          + "the parts before it end at \(next)")
                }
                next += m.count
            }
            guard next == first.lengths.count else {
                throw ValidationError("cache merge: the parts cover \(next) of \(first.lengths.count) examples")
            }
            var merged = first
            merged.shard = 0
            merged.shards = 1
            merged.first = 0
            merged.count = first.lengths.count
            return (parts, merged)
        }
    }
}

extension SideTuneCommand.Train {
    /// Loads the backbone and data, and writes the taps of shard `spec`'s training examples.
    func buildCache(_ spec: ShardSpec, to url: URL, log: @escaping (String) -> Void) throws -> FeatureCacheManifest {
        training.applyThreads()
        let source = try BackboneSource.resolve(model: task.modelName, modelDir: task.modelDir, log: log)
        return try withBackboneAndSplits(source, weights: .f32, log: log,
                                         CacheOnSplits(command: self, spec: spec, url: url, source: source, log: log))
    }

    /// The shard's examples are whole batches of --batch-size in the split's order (batch b goes
    /// to shard b * N / batches), so every shard computes exactly the batches one process would.
    func buildCache<B: Backbone, S: ClassificationData>(_ spec: ShardSpec, to url: URL, backbone: B,
                                                        source: BackboneSource, split: S,
                                                        log: @escaping (String) -> Void) throws -> FeatureCacheManifest
        where S.Batch == B.Input {
        let options = methodFlags.options()
        let precision = options.backbonePrecision ?? .float32
        let packed = (options.packing ?? true) && backbone.packsFrozenTaps
        backbone.freeze()
        if precision == .bfloat16 { backbone.convertProjectionsToBFloat16() }
        let n = split.count, bs = training.batchSize, batches = (n + bs - 1) / bs
        let b0 = spec.index * batches / spec.count, b1 = (spec.index + 1) * batches / spec.count
        let first = min(n, b0 * bs), end = min(n, b1 * bs)
        let lengths = (0..<n).map(split.tokenCount)
        let taps = Array(0...backbone.depth)
        let cache = try FeatureCache(url: url, lengths: Array(lengths[first..<end]), taps: taps, width: backbone.width,
                                     keepFile: true)
        log("cache shard \(spec.index) of \(spec.count): examples \(first)..<\(end) of \(n), "
            + "\(taps.count) taps x \(backbone.width)")
        var b = b0
        while b < b1 {
            let rows = Array((b * bs)..<min(n, (b + 1) * bs))
            let t = Tensor.withMatmulPrecision(precision) {
                noGrad { backbone.frozenTaps(split.batch(rows), packed: packed) }
            }
            guard t.allSatisfy(\.allFinite) else {
                throw ValidationError("the backbone produced NaN or infinite taps for examples \(rows.first!)...")
            }
            let segments = packed ? TokenSegments(lengths: rows.map { lengths[$0] }) : nil
            for (row, e) in rows.enumerated() { cache.store(e - first, row: row, from: t, packed: segments) }
            b += 1
            if b == b1 || (b - b0) % 20 == 0 { log("  \(b - b0)/\(b1 - b0) batches") }
        }
        let bytes = cache.byteCount
        withExtendedLifetime(cache) {}
        let manifest = FeatureCacheManifest(
            shard: spec.index, shards: spec.count, first: first, count: end - first, lengths: lengths, taps: taps,
            width: backbone.width, backboneSHA256: source.sha256, backbonePrecision: precision.rawValue, packed: packed,
            split: "\(n) examples, hash \(Trainer<Classifier<B>, S>.hash(split))", data: runIdentity(), bytes: bytes,
            sha256: try SHA256.hexDigest(ofFile: url.path))
        try manifest.write(for: url)
        return manifest
    }
}

/// `cache build`'s body for any backbone family: the training split's taps.
struct CacheOnSplits: BackboneTaskBody {
    let command: SideTuneCommand.Train
    let spec: ShardSpec
    let url: URL
    let source: BackboneSource
    let log: (String) -> Void

    func run<B: Backbone, S: ClassificationData>(_ backbone: B, _ splits: TaskSplits<S>) throws
        -> FeatureCacheManifest where S.Batch == B.Input {
        try command.buildCache(spec, to: url, backbone: backbone, source: source, split: splits.train, log: log)
    }
}
