import Foundation
import SideTuneCLI
import SideTuneMethods
import SideTuneTrainer
import Testing

/// `sidetune eval` and `predict` on checkpoints of each backbone family, trained here as small
/// as the real path allows: the ViT at 28 x 28 pixels (5 tokens), SmolLM2's QST (F32 blocks) on 16 tweets.
@Suite(.serialized) struct CheckpointCLITests {
    static let env = ProcessInfo.processInfo.environment
    static let onnx = env["SIDETUNE_VIT_ONNX"], fashion = env["SIDETUNE_FASHION_DIR"]
    static let llmAssets = env["SIDETUNE_SMOLLM2_GGUF"] != nil && env["SIDETUNE_TWEETS_CSV"] != nil

    func tempFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sidetune-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func run(_ args: [String]) throws -> String {
        var cmd = try SideTuneCommand.parseAsRoot(args)
        return try captureStandardOutput { try cmd.run() }
    }

    /// Runs predict with --output and returns the file: other suites may print to the process's
    /// standard output while this one captures it.
    func predict(_ args: [String], in dir: URL) throws -> String {
        let out = dir.appendingPathComponent("predictions-\(UUID().uuidString).csv")
        _ = try run(["predict"] + args + ["--output", out.path])
        return try String(contentsOf: out, encoding: .utf8)
    }

    /// Runs `args` expecting an error that mentions `message`.
    func expectRefusal(_ args: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try run(args)
            Issue.record("\(args) should fail", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(message), "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// The train report's test accuracy and macro-F1 as eval prints them.
    func reportTestLine(_ report: URL, examples: Int) throws -> String {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as! [String: Any]
        return String(format: "test: accuracy %.2f%%, macro-F1 %.2f%% on %d examples", 100 * (json["accuracy"] as! Double),
                      100 * (json["macro_f1"] as! Double), examples)
    }

    /// CSV prediction rows (after the header): each has `classes` probabilities summing to 1 and
    /// the label of the largest. Returns the rows' first fields.
    func checkPredictions(_ csv: String, labels: [String], probabilitiesFrom first: Int,
                          sourceLocation: SourceLocation = #_sourceLocation) -> [String] {
        let lines = csv.split(separator: "\n").map(String.init)
        var firsts: [String] = []
        for line in lines.dropFirst() {
            let fields = csvFields(line)
            guard fields.count == first + labels.count || fields.count == first + labels.count + 1 else {
                Issue.record("not a prediction row: \(line)", sourceLocation: sourceLocation)
                continue
            }
            let p = fields[first..<(first + labels.count)].compactMap(Double.init)
            #expect(p.count == labels.count, "\(line)", sourceLocation: sourceLocation)
            #expect(abs(p.reduce(0, +) - 1) < 1e-3, "\(line)", sourceLocation: sourceLocation)
            let label = fields[first - 1]
            #expect(labels.firstIndex(of: label) == p.indices.max { p[$0] < p[$1] }, "\(line)", sourceLocation: sourceLocation)
            firsts.append(fields[0])
        }
        return firsts
    }

    /// Fields of a CSV line ("..." fields may hold commas and doubled quotes).
    func csvFields(_ line: String) -> [String] {
        var fields: [String] = [], field = "", quoted = false, previous: Character?
        for ch in line {
            if ch == "\"" {
                if quoted { quoted = false } else { quoted = true; if previous == "\"" { field.append("\"") } }
            } else if ch == "," && !quoted {
                fields.append(field)
                field = ""
            } else {
                field.append(ch)
            }
            previous = ch
        }
        return fields + [field]
    }

    /// Edits a copy of a checkpoint's checkpoint.json.
    func editedCopy(of checkpoint: URL, in folder: URL, name: String, _ edit: (inout [String: Any]) -> Void) throws -> URL {
        let copy = folder.appendingPathComponent(name)
        // `best` is a link to its epoch's folder: copy the folder.
        try FileManager.default.copyItem(at: checkpoint.resolvingSymlinksInPath(), to: copy)
        let file = copy.appendingPathComponent("checkpoint.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        return copy
    }

    @Test(.enabled(if: onnx != nil && fashion != nil, "set SIDETUNE_VIT_ONNX and SIDETUNE_FASHION_DIR"))
    func imageCheckpoint() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = dir.appendingPathComponent("report.json"), run = dir.appendingPathComponent("run")
        _ = try self.run(["train", "--model", Self.onnx!, "--data", Self.fashion!, "--method", "linear", "--image-size", "28",
                          "--epochs", "1", "--test-limit", "50", "--output", run.path, "--report", report.path])
        let best = run.appendingPathComponent("best")
        let config = try Checkpoint.readConfig(best)
        #expect(config.imageSize == 28 && config.backboneFamily == .vit && config.backbonePath != nil)

        // Neither the backbone nor the image size is repeated: the checkpoint names both.
        let eval = try self.run(["eval", "--checkpoint", best.path, "--data", Self.fashion!, "--test-limit", "50"])
        #expect(eval.contains(try reportTestLine(report, examples: 50)), "\(eval)")
        #expect(eval.contains("validation: accuracy") && eval.contains("on 200 examples"))

        // A grey map, a colour map and three data-set images: one row each.
        let grey = dir.appendingPathComponent("shoe.pgm"), colour = dir.appendingPathComponent("red, square.ppm")
        try Data(Array("P5 28 28 255\n".utf8) + (0..<784).map { UInt8($0 % 256) }).write(to: grey)
        try Data(Array("P6 2 2 255\n".utf8) + [255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0]).write(to: colour)
        let csv = try predict(["--checkpoint", best.path, grey.path, colour.path, "--data", Self.fashion!, "--limit", "3"], in: dir)
        #expect(csv.hasPrefix("input,label,p_T-shirt/top,"), "\(csv)")
        let inputs = checkPredictions(csv, labels: config.labels, probabilitiesFrom: 2)
        #expect(inputs == [grey.path, colour.path, "\(Self.fashion!):test/0", "\(Self.fashion!):test/1", "\(Self.fashion!):test/2"])

        // An older checkpoint (image side in max_length, no family or path): found with --model, same result.
        let old = try editedCopy(of: best, in: dir, name: "old") { json in
            for key in ["backbone_family", "image_size", "backbone_path"] { json[key] = nil }
        }
        expectRefusal(["eval", "--checkpoint", old.path, "--data", Self.fashion!], "pass --model FILE.onnx")
        let oldEval = try self.run(["eval", "--checkpoint", old.path, "--model", Self.onnx!, "--data", Self.fashion!, "--test-limit", "50"])
        #expect(oldEval.contains(try reportTestLine(report, examples: 50)), "\(oldEval)")

        // Another backbone's checkpoint, and data with other labels, are refused.
        let other = try editedCopy(of: best, in: dir, name: "other") { $0["backbone_sha256"] = String(repeating: "0", count: 64) }
        expectRefusal(["eval", "--checkpoint", other.path, "--data", Self.fashion!], "checkpoint was trained on backbone")
        expectRefusal(["predict", "--checkpoint", other.path, grey.path], "checkpoint was trained on backbone")
        let relabelled = try editedCopy(of: best, in: dir, name: "relabelled") { json in
            json["labels"] = (json["labels"] as! [String]).map { $0.uppercased() }
        }
        expectRefusal(["eval", "--checkpoint", relabelled.path, "--data", Self.fashion!], "differ from the checkpoint's")
    }

    @Test(.enabled(if: llmAssets, "set SIDETUNE_SMOLLM2_GGUF and SIDETUNE_TWEETS_CSV (the smollm2 and tweets assets)"))
    func llmCheckpoint() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = dir.appendingPathComponent("report.json"), run = dir.appendingPathComponent("run")
        let split = ["--train-limit", "16", "--eval-limit", "8"]
        // F32 blocks: NF4 quantisation costs seconds at every load.
        _ = try self.run(["train", "--model", "smollm2", "--method", "qst", "--weights", "f32", "--max-length", "16", "--epochs", "1", "--output", run.path,
                          "--report", report.path] + split)
        let best = run.appendingPathComponent("best")
        let config = try Checkpoint.readConfig(best)
        #expect(config.backboneFamily == .llama && config.backboneName == "smollm2" && config.options.weights == .f32 && config.maxLength == 16)

        // The max length and the NF4 weights come from the checkpoint.
        let eval = try self.run(["eval", "--checkpoint", best.path] + split)
        #expect(eval.contains(try reportTestLine(report, examples: 8)), "\(eval)")

        let lines = dir.appendingPathComponent("texts.txt")
        try Data("what a great, sunny day\nmy flight got cancelled again\n".utf8).write(to: lines)
        let csv = try predict(["--checkpoint", best.path, "--input", lines.path, "I love it", "meh"], in: dir)
        #expect(csv.hasPrefix("label,p_negative,p_neutral,p_positive,text"), "\(csv)")
        let rows = csv.split(separator: "\n").dropFirst()
        #expect(rows.count == 4 && rows.first!.hasSuffix(",I love it") && rows.last!.hasSuffix(",my flight got cancelled again"), "\(csv)")
        _ = checkPredictions(csv, labels: config.labels, probabilitiesFrom: 1)
        expectRefusal(["predict", "--checkpoint", best.path, "--data", "fashion-mnist-1k"], "--data is for image checkpoints")
    }

    /// A QST language-model checkpoint (train --task lm) is no classifier: refused before any model is loaded.
    @Test func languageModelCheckpointsPointAtGenerate() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = CheckpointConfig(method: .qst, options: MethodOptions(), labels: [], maxLength: 64, backboneName: "smollm2",
                                      backboneSHA256: "abc", seed: 1, epoch: 1, validationAccuracy: nil, backboneFamily: .llama)
        try JSONEncoder().encode(config).write(to: dir.appendingPathComponent("checkpoint.json"))
        expectRefusal(["eval", "--checkpoint", dir.path], "sidetune generate --checkpoint \(dir.path)")
        expectRefusal(["predict", "--checkpoint", dir.path, "hello"], "sidetune generate --checkpoint \(dir.path)")
        expectRefusal(["eval", "--checkpoint", dir.appendingPathComponent("nope").path], "no checkpoint here")
    }
}
