import ArgumentParser
import Foundation
import SideTuneBackbones
import SideTuneCLI
import SideTuneEngine
import SideTuneFormats
import SideTuneTestSupport
import SideTuneTrainer
import Testing

/// Bad input, as a careful user or an adversary gives it, through the CLI: every case must end in
/// a clear message and an exit code, never a signal. Each case's row (input, message, exit code)
/// is appended to the file named by SIDETUNE_BAD_INPUT_TABLE (scripts/bad_inputs_table.sh builds
/// docs/reliability.md's table from it).
@Suite(.serialized) struct BadInputTests {
    static let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + ["good", "great", "fine", "happy", "nice", "love", "best", "fun", "warm", "bright", "calm", "kind",
           "bad", "awful", "sad", "poor", "hate", "worst", "dull", "cold", "dark", "rude", "grim", "sour",
           "the", "a", "is", "was", "day", "food", "film", "book", "trip", "song", "game"]
    static let positive = Array(vocab[5..<17]), negative = Array(vocab[17..<29]), neutral = Array(vocab[29..<40])

    /// A tiny BERT folder (width 16, 2 layers, vocabulary 40, 16 positions) and a labelled CSV.
    struct Fixture {
        let root: URL, model: URL, data: URL
        var modelArgs: [String] { ["--model-dir", model.path, "--data", data.path] }
        /// Flags of a quick LST run on the fixture.
        var quick: [String] {
            modelArgs + ["--method", "lst", "--max-length", "12", "--epochs", "2", "--batch-size", "8", "--fisher-examples", "8",
                         "--reduction", "4"]
        }
    }

    static func fixture(rows: Int = 60, configEdits: [String: Any] = [:], vocab extra: [String] = [],
                        weights: (String, inout [Float]) -> Void = { _, _ in }) throws -> Fixture {
        let root = scratchFolder("bad-input")
        let model = root.appendingPathComponent("model")
        try writeBertFolder(tinyBackbone(), vocab: vocab + extra, to: model, config: configEdits, weights: weights)
        var rng = SplitMix64(seed: 5)
        var csv = "text,label\n"
        for i in 0..<rows {
            let (words, label) = [(positive, "pos"), (negative, "neg")][i % 2]
            csv += (0..<6).map { _ in words[rng.nextInt(below: words.count)] }.joined(separator: " ") + "," + label + "\n"
        }
        let data = root.appendingPathComponent("data.csv")
        try Data(csv.utf8).write(to: data)
        return Fixture(root: root, model: model, data: data)
    }

    /// Runs the command in-process as `sidetune` would and returns what its main would print and
    /// exit with (0 and "" on success).
    static func outcome(_ args: [String]) -> (message: String, code: Int32) {
        do {
            var command = try SideTuneCommand.parseAsRoot(args)
            _ = try captureStandardOutput { try command.run() }
            return ("", 0)
        } catch {
            return (SideTuneCommand.fullMessage(for: error), SideTuneCommand.exitCode(for: error).rawValue)
        }
    }

    /// Expects `args` to fail with `code` and a message containing `fragment`, and records the row.
    static func expectRefused(_ input: String, _ args: [String], code: Int32, _ fragment: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        let (message, got) = outcome(args)
        #expect(got == code && message.contains(fragment), "\(input): exit \(got), \(message)", sourceLocation: sourceLocation)
        record(input, message, got)
    }

    static func record(_ input: String, _ message: String, _ code: Int32) {
        guard let path = ProcessInfo.processInfo.environment["SIDETUNE_BAD_INPUT_TABLE"] else { return }
        let firstLines = message.split(separator: "\n").prefix(3).joined(separator: " / ")
            .replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: NSTemporaryDirectory(), with: "$TMP/")
        let row = "| \(input) | \(firstLines) | \(code) |\n"
        if let h = FileHandle(forWritingAtPath: path) {
            h.seekToEndOfFile()
            h.write(Data(row.utf8))
            h.closeFile()
        } else {
            try? Data(row.utf8).write(to: URL(fileURLWithPath: path))
        }
    }

    /// Sizes in config.json that used to crash (a signal) or allocate without bound.
    @Test(arguments: [
        ("intermediate_size", -5, "intermediate_size is -5, expected 1...1048576"),
        ("hidden_size", 1_000_000_000, "hidden_size is 1000000000, expected 1...65536"),
        ("num_hidden_layers", -1, "num_hidden_layers is -1, expected 1...1024"),
        ("vocab_size", 0, "vocab_size is 0"),
        ("max_position_embeddings", -7, "max_position_embeddings is -7"),
        ("type_vocab_size", 1 << 40, "type_vocab_size is 1099511627776"),
        ("num_attention_heads", 0, "num_attention_heads is 0"),
        ("num_hidden_layers", 40, "checkpoint does not match config (40 layers, width 16):\n  missing 608 tensor(s)"),
        ("vocab_size", 2_000_000, "checkpoint shape [40, 16], config expects [2000000, 16]"),
    ])
    func configSizesAreChecked(field: String, value: Int, fragment: String) throws {
        let f = try Self.fixture(configEdits: [field: value])
        Self.expectRefused("config.json `\(field): \(value)`", ["train"] + f.quick, code: 1, fragment)
    }

    @Test func layerNormEpsilonMustBePositive() throws {
        let f = try Self.fixture(configEdits: ["layer_norm_eps": -1e-12])
        Self.expectRefused("config.json `layer_norm_eps: -1e-12`", ["train"] + f.quick, code: 1, "layer_norm_eps is -1e-12")
    }

    /// Token ids the embedding does not have: a vocab.txt longer than vocab_size.
    @Test func tokenizerLongerThanTheEmbedding() throws {
        let f = try Self.fixture(vocab: ["extra1", "extra2", "extra3"])
        Self.expectRefused("vocab.txt with 43 tokens, vocab_size 40", ["train"] + f.quick, code: 1,
                           "the tokenizer has 43 tokens, but the word embedding has 40 rows")
    }

    @Test func nonFiniteWeightsAreRefusedAtLoad() throws {
        let f = try Self.fixture { name, values in if name.hasSuffix("layer.1.output.dense.weight") { values[3] = .nan } }
        Self.expectRefused("a NaN in model.safetensors", ["train"] + f.quick, code: 1, "holds NaN or infinite values")
    }

    @Test func maxLengthBeyondThePositionTable() throws {
        let f = try Self.fixture()
        Self.expectRefused("--max-length 32 with max_position_embeddings 16", ["train"] + f.quick + ["--max-length", "32"], code: 64,
                           "more than the 16 positions")
    }

    /// Numbers no run can use, refused before anything loads.
    @Test(arguments: [
        (["--fisher-examples=-3"], "--fisher-examples must be >= 1, got -3"),
        (["--lr=-1"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--dropout", "2"], "--dropout must be in [0, 1), got 2.0"),
        (["--warmup=-1"], "--warmup in [0, 1]"),
        (["--clip-norm=-1"], "--clip-norm"),
        (["--patience=-1"], "--patience"),
        (["--gate-temperature", "0"], "--gate-temperature and --attention-temperature must be > 0"),
        (["--epochs", "0"], "--epochs and --batch-size must be >= 1"),
        (["--micro-batches", "0"], "--micro-batches must be >= 1"),
        (["--max-length", "0"], "--max-length must be in 4...512"),
        (["--resume", "--overwrite", "--output", "/tmp"], "choose one"),
    ])
    func nonsenseNumbersAreRefused(flags: [String], fragment: String) throws {
        let f = try Self.fixture()
        Self.expectRefused("`\(flags.joined(separator: " "))`", ["train"] + f.quick + flags, code: 64, fragment)
    }

    /// --output: a file, a folder holding a run, a second run while one is live; --resume with other
    /// settings; --data a folder.
    @Test func runFolderMistakes() throws {
        let f = try Self.fixture()
        let run = f.root.appendingPathComponent("run")
        #expect(Self.outcome(["train"] + f.quick + ["--output", run.path]).code == 0)

        Self.expectRefused("`--output` naming a file", ["train"] + f.quick + ["--output", f.data.path], code: 64, "is a file")
        Self.expectRefused("`--output` holding a run, without --resume or --overwrite", ["train"] + f.quick + ["--output", run.path],
                           code: 64, "holds a run already")
        Self.expectRefused("`--resume` with another `--seed`", ["train"] + f.quick + ["--output", run.path, "--resume", "--seed", "7"],
                           code: 1, "seed: the run has 42 (model 42), this one 7 (model 7)")
        Self.expectRefused("`--resume` with another `--max-length`", ["train"] + f.quick + ["--output", run.path, "--resume", "--max-length", "10"],
                           code: 1, "max length: the run has 12, this one 10")
        let lock = try RunLock(folder: run)
        Self.expectRefused("a second run on a folder in use", ["train"] + f.quick + ["--output", run.path, "--overwrite"],
                           code: 1, "another run (pid \(getpid())) is training in this folder")
        lock.release()
        #expect(Self.outcome(["train"] + f.quick + ["--output", run.path, "--overwrite"]).code == 0)
        Self.expectRefused("`--data` naming a folder", ["train"] + f.quick.map { $0 == f.data.path ? f.root.path : $0 },
                           code: 64, "is a folder; a text task reads one CSV, TSV or JSONL file")

        // An optimizer state of the wrong size (same run and epoch stamps): refused, not read past its end.
        let optimizer = run.appendingPathComponent("last/optimizer.safetensors")
        let saved = try Data(contentsOf: optimizer)
        let moments = try SafetensorsFile(path: optimizer.path)
        var resized = SafetensorsWriter(metadata: moments.metadata)
        for name in moments.names { try resized.add(name, floats: [1, 2, 3], shape: [3]) }
        try resized.write(to: optimizer.path)
        Self.expectRefused("`--resume` with an optimizer state of the wrong size", ["train"] + f.quick + ["--output", run.path, "--resume"],
                           code: 1, "has shape [3], parameter 0 has")
        try saved.write(to: optimizer)

        // Checkpoints: a run folder instead of its best epoch, a max_length of 0, NaN weights.
        Self.expectRefused("`eval --checkpoint RUN` (the run folder)", ["eval", "--checkpoint", run.path, "--data", f.data.path],
                           code: 1, "is a run folder: pass its checkpoint")
        let best = run.appendingPathComponent("best").resolvingSymlinksInPath()
        let config = best.appendingPathComponent("checkpoint.json")
        let original = try Data(contentsOf: config)
        var json = try JSONSerialization.jsonObject(with: original) as! [String: Any]
        json["max_length"] = 0
        try JSONSerialization.data(withJSONObject: json).write(to: config)
        Self.expectRefused("checkpoint.json `max_length: 0`", ["eval", "--checkpoint", best.path, "--data", f.data.path], code: 1,
                           "max_length must be in 1...1048576, got 0")
        try original.write(to: config)
        let weights = best.appendingPathComponent("weights.safetensors")
        let file = try SafetensorsFile(path: weights.path)
        var writer = SafetensorsWriter(metadata: file.metadata)
        for name in file.names {
            let info = try file.info(name)
            try writer.add(name, floats: [Float](repeating: .nan, count: info.elementCount), shape: info.shape)
        }
        try writer.write(to: weights.path)
        Self.expectRefused("an all-NaN checkpoint to `eval`", ["eval", "--checkpoint", best.path, "--data", f.data.path], code: 1,
                           "holds NaN or infinite values")
    }

    /// Image folders: a class folder without images, a truncated JPEG, an image smaller than the
    /// patch; each named before training starts.
    @Test func imageFolderMistakes() throws {
        let goldens = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SideTuneDataTests/Goldens/images")
        let vit = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SideTuneBackbonesTests/Goldens/tiny/vit").path
        func folder(_ edit: (URL) throws -> Void) throws -> URL {
            let root = scratchFolder("bad-images")
            for c in ["cats", "dogs"] {
                let f = root.appendingPathComponent(c)
                try FileManager.default.createDirectory(at: f, withIntermediateDirectories: true)
                for name in ["rgb.jpg", "grey.png", "palette.png", "rgba.png", "exif6.jpg"] {
                    try FileManager.default.copyItem(at: goldens.appendingPathComponent(name), to: f.appendingPathComponent(name))
                }
            }
            try edit(root)
            return root
        }
        let args = { (data: URL) in ["train", "--model-dir", vit, "--data", data.path, "--method", "linear", "--image-size", "28", "--epochs", "1"] }
        let empty = try folder { try FileManager.default.createDirectory(at: $0.appendingPathComponent("birds"), withIntermediateDirectories: true) }
        Self.expectRefused("an image folder with an empty class folder", args(empty), code: 1, "class folder 'birds' holds no images")
        let truncated = try folder { root in
            let jpeg = try Data(contentsOf: goldens.appendingPathComponent("rgb.jpg"))
            try jpeg.prefix(300).write(to: root.appendingPathComponent("cats/cut.jpg"))
        }
        Self.expectRefused("a truncated JPEG in an image folder", args(truncated), code: 1, "cats/cut.jpg")
        let small = try folder { root in
            try Data(Array("P5 5 4 255\n".utf8) + [UInt8](repeating: 9, count: 20)).write(to: root.appendingPathComponent("dogs/tiny.pgm"))
        }
        Self.expectRefused("an image smaller than the patch", args(small), code: 1, "5x4 pixels is smaller than the 7-pixel patch")
    }

    /// Cases that end the process: they run the built `sidetune`.
    static let binary: URL? = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return ["release", "debug"].map { root.appendingPathComponent(".build/\($0)/sidetune") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    /// Starts the binary with `args`, stdout and stderr to files, TMPDIR set to `tmp`.
    static func start(_ args: [String], tmp: URL, out: URL) throws -> Process {
        let p = Process()
        p.executableURL = binary!
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = tmp.path
        p.environment = env
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: out.appendingPathExtension("err").path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: out.appendingPathExtension("err"))
        try p.run()
        return p
    }

    /// Waits (up to 120 s) until `file` contains `text`.
    static func wait(for text: String, in file: URL) -> Bool {
        for _ in 0..<1200 {
            if let s = try? String(contentsOf: file, encoding: .utf8), s.contains(text) { return true }
            usleep(100_000)
        }
        return false
    }

    /// Running out of memory is exit 3 with the figures, not a crash.
    @Test(.enabled(if: binary != nil, "needs the built sidetune")) func outOfMemoryIsAnError() throws {
        let dir = scratchFolder("oom"), out = dir.appendingPathComponent("out.txt")
        let p = try Self.start(["bench", "gemm", "--shapes", "300000x300000x300000", "--threads", "1", "--seconds", "0.01"], tmp: dir, out: out)
        p.waitUntilExit()
        let err = (try? String(contentsOf: out.appendingPathExtension("err"), encoding: .utf8)) ?? ""
        #expect(p.terminationReason == .exit && p.terminationStatus == 3, "\(p.terminationReason) \(p.terminationStatus): \(err)")
        #expect(err.contains("out of memory: cannot allocate 335.28 GiB"), "\(err)")
        Self.record("`bench gemm --shapes 300000x300000x300000` (335 GiB per matrix)", err, p.terminationStatus)
    }

    /// SIGINT stops after the step, keeps the complete epochs and says how to resume (exit 130);
    /// SIGKILL leaves no feature cache behind either, and the epoch lines already printed are in
    /// the log (stdout is line-buffered); the dead run's lock does not block the resumed run.
    @Test(.enabled(if: binary != nil, "needs the built sidetune")) func signalsLoseNothing() throws {
        let f = try Self.fixture(rows: 3000)
        let args = ["train"] + f.quick.map { $0 == "2" ? "60" : $0 } // 60 epochs of 3000 rows: long enough to be stopped
        for (signal, name) in [(SIGINT, "SIGINT"), (SIGKILL, "SIGKILL")] {
            let tmp = scratchFolder("signal-tmp"), run = f.root.appendingPathComponent("run-\(name)")
            let out = f.root.appendingPathComponent("\(name).txt")
            let p = try Self.start(args + ["--output", run.path], tmp: tmp, out: out)
            #expect(Self.wait(for: "epoch 2:", in: out), "no epoch line in the log while the run is alive")
            kill(p.processIdentifier, signal)
            p.waitUntilExit()
            let err = (try? String(contentsOf: out.appendingPathExtension("err"), encoding: .utf8)) ?? ""
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: tmp.path)
            #expect(leftovers.isEmpty, "\(name) left \(leftovers)")
            if signal == SIGINT {
                #expect(p.terminationReason == .exit && p.terminationStatus == 130, "\(p.terminationStatus)")
                #expect(err.contains("SIGINT: stopped in epoch") && err.contains("--resume"), "\(err)")
                #expect(!FileManager.default.fileExists(atPath: run.appendingPathComponent("run.lock").path))
                Self.record("SIGINT during training", err.components(separatedBy: "\n").first { $0.hasPrefix("SIGINT") } ?? err, 130)
            } else {
                #expect(p.terminationReason == .uncaughtSignal)
                #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("run.lock").path))
            }
            // Either way a complete epoch is kept to resume from, and a dead run's lock does not
            // block the next run (exact resumption itself: RunFolderTests).
            let state = run.appendingPathComponent("last/state.json")
            #expect(FileManager.default.fileExists(atPath: state.path), "\(name): no complete epoch kept")
            try RunLock(folder: run).release()
        }
    }
}
