import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneNN

/// What a checkpoint says about itself (`checkpoint.json`): enough to rebuild the network and to
/// refuse the wrong backbone.
public struct CheckpointConfig: Codable, Sendable {
    public var format = "sidetune-checkpoint-1"
    public var method: MethodKind
    public var options: MethodOptions
    public var labels: [String]
    public var maxLength: Int
    public var backboneName: String
    /// SHA-256 of the backbone's weights file.
    public var backboneSHA256: String
    public var seed: UInt64
    public var epoch: Int
    public var validationAccuracy: Double?
    /// Which kind of backbone (bert, vit, llama), so eval and predict rebuild the right model.
    /// Absent in older checkpoints: then inferred from the backbone's name.
    public var backboneFamily: BackboneFamily?
    /// Image checkpoints: the side images were resized to (older ones kept it in `maxLength`).
    public var imageSize: Int?
    /// A backbone given by path (a BERT folder, a ViT .onnx file) rather than by asset name: where
    /// it was at training time, tried first by eval and predict (the SHA-256 still has to match).
    public var backbonePath: String?
    /// Image checkpoints: how images became input ("resize" for fixed-size sets, the default of
    /// older checkpoints; "centre-crop" for image files of any size).
    public var imagePipeline: String?

    public init(method: MethodKind, options: MethodOptions, labels: [String], maxLength: Int, backboneName: String,
                backboneSHA256: String, seed: UInt64, epoch: Int, validationAccuracy: Double?, backboneFamily: BackboneFamily? = nil,
                imageSize: Int? = nil, backbonePath: String? = nil) {
        self.method = method
        self.options = options
        self.labels = labels
        self.maxLength = maxLength
        self.backboneName = backboneName
        self.backboneSHA256 = backboneSHA256
        self.seed = seed
        self.epoch = epoch
        self.validationAccuracy = validationAccuracy
        self.backboneFamily = backboneFamily
        self.imageSize = imageSize
        self.backbonePath = backbonePath
    }

    /// Refuses fields no model can be rebuilt from, naming the file, the field and the range.
    public func validate(file: String) throws {
        var problems: [String] = []
        if maxLength < 1 || maxLength > 1 << 20 { problems.append("max_length must be in 1...\(1 << 20), got \(maxLength)") }
        if epoch < 0 { problems.append("epoch must be >= 0, got \(epoch)") }
        if let a = validationAccuracy, !(0...1).contains(a) { problems.append("validation_accuracy must be in [0, 1], got \(a)") }
        if let s = imageSize, s < 1 || s > 4096 { problems.append("image_size must be in 1...4096, got \(s)") }
        if Set(labels).count != labels.count { problems.append("labels repeat: \(labels.prefix(8))") }
        // Classifiers need two classes; a causal-LM checkpoint (QST tuned on an LLM) has none.
        if labels.count == 1 || (labels.isEmpty && !(method == .qst && backboneFamily == .llama)) {
            problems.append("labels must name at least 2 classes, got \(labels.count)")
        }
        do { try options.validate() } catch { problems.append("\(error)") }
        if !problems.isEmpty { throw TrainerError("\(file): " + problems.joined(separator: "; ")) }
    }

    enum CodingKeys: String, CodingKey {
        case format, method, options, labels, seed, epoch
        case maxLength = "max_length", backboneName = "backbone_name", backboneSHA256 = "backbone_sha256"
        case validationAccuracy = "validation_accuracy", backboneFamily = "backbone_family", imageSize = "image_size"
        case backbonePath = "backbone_path", imagePipeline = "image_pipeline"
    }
}

/// A folder holding the trainable parameters and buffers (`weights.safetensors`) and
/// `checkpoint.json`. A run's epochs are such folders (`RunFolder`), with the optimizer and the
/// trainer's state beside them.
public enum Checkpoint {
    /// Writes the two files into `folder`, each atomically (temporary file, then rename).
    public static func save(_ model: some TrainableModel, config: CheckpointConfig, to folder: URL) throws {
        try save(module: model, config: config, to: folder)
    }

    /// Saves any module's trainable parameters (e.g. a QST side network tuned as a causal LM).
    public static func save(module model: Module, config: CheckpointConfig, to folder: URL) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try writeWeights(model, config: config, to: folder.appendingPathComponent("weights.safetensors"))
        try writeJSONAtomically(config, to: folder.appendingPathComponent("checkpoint.json"))
    }

    /// `weights.safetensors`: the trainable parameters and the buffers (BatchNorm's running
    /// statistics are state too, though never trained), with the format, the method and
    /// `extraMetadata` (a run's id and epoch) in its metadata.
    public static func writeWeights(_ model: Module, config: CheckpointConfig, extraMetadata: [String: String] = [:], to url: URL) throws {
        let metadata = ["format": config.format, "method": config.method.rawValue].merging(extraMetadata) { a, _ in a }
        var writer = SafetensorsWriter(metadata: metadata)
        for (name, p) in model.trainableParameters() + model.namedBuffers() {
            try writer.add(name, floats: p.toArray(), shape: p.shape)
        }
        try writer.write(to: url.path)
    }

    public static func readConfig(_ folder: URL) throws -> CheckpointConfig {
        let url = folder.appendingPathComponent("checkpoint.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            if RunFolder(folder).resolve("best") != nil {
                throw TrainerError("\(folder.path) is a run folder: pass its checkpoint \(folder.appendingPathComponent("best").path) (or last)")
            }
            throw TrainerError("\(url.path): no checkpoint here (expected checkpoint.json and weights.safetensors)")
        }
        let config: CheckpointConfig
        do { config = try JSONDecoder().decode(CheckpointConfig.self, from: data) } catch {
            throw TrainerError("\(url.path): not a SideTune checkpoint: \(error)")
        }
        try config.validate(file: url.path)
        return config
    }

    /// Loads the trainable parameters and buffers into `model` after checking the backbone identity
    /// (and, with `expect`, that the weights file's metadata has these values: a run's id and epoch).
    public static func load(into model: some TrainableModel, from folder: URL, backboneSHA256: String,
                            expect: [String: String] = [:]) throws -> CheckpointConfig {
        let config = try readConfig(folder)
        try checkBackbone(config, sha256: backboneSHA256, folder: folder)
        guard config.method == model.method else {
            throw TrainerError("\(folder.path): checkpoint is for method \(config.method.rawValue), model is \(model.method.rawValue)")
        }
        try loadParameters(into: model, from: folder, expect: expect)
        return config
    }

    /// Refuses a backbone whose weights differ from the ones the checkpoint was trained on.
    public static func checkBackbone(_ config: CheckpointConfig, sha256: String, folder: URL) throws {
        guard config.backboneSHA256 == sha256 else {
            throw TrainerError("\(folder.path): checkpoint was trained on backbone '\(config.backboneName)' with weights sha256 \(config.backboneSHA256.prefix(12))..., but this backbone's weights have sha256 \(sha256.prefix(12))...")
        }
    }

    /// Loads the trainable parameters of any module from `folder/weights.safetensors` (names and
    /// shapes must match exactly).
    public static func loadParameters(into model: Module, from folder: URL, expect: [String: String] = [:]) throws {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: folder.appendingPathComponent("weights.safetensors").path) } catch {
            throw TrainerError("\(folder.path)/weights.safetensors: \(error)")
        }
        for (key, value) in expect.sorted(by: { $0.key < $1.key }) where file.metadata[key] != value {
            throw TrainerError("\(folder.path)/weights.safetensors: metadata \(key) is \(file.metadata[key] ?? "missing"), expected \(value) (a file from another run or epoch)")
        }
        let params = Dictionary(model.trainableParameters() + model.namedBuffers(), uniquingKeysWith: { a, _ in a })
        let missing = Set(params.keys).subtracting(file.names)
        if !missing.isEmpty { throw TrainerError("\(folder.path)/weights.safetensors: missing \(missing.sorted().prefix(5).joined(separator: ", "))") }
        for name in file.names {
            guard let p = params[name] else { throw TrainerError("\(folder.path)/weights.safetensors: unexpected tensor \(name)") }
            let info = try file.info(name)
            guard info.shape == p.shape else {
                throw TrainerError("\(folder.path)/weights.safetensors: tensor \(name) has shape \(info.shape), the model expects \(p.shape)")
            }
            let values = try file.floats(name)
            guard values.allSatisfy(\.isFinite) else {
                throw TrainerError("\(folder.path)/weights.safetensors: tensor \(name) holds NaN or infinite values")
            }
            values.withUnsafeBufferPointer { p.data.update(from: $0.baseAddress!, count: p.count) }
        }
    }
}

/// Writes `value` as pretty JSON with sorted keys (inside a folder that is renamed into place).
func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    do { try enc.encode(value).write(to: url) } catch { throw TrainerError("\(url.path): cannot write: \(error.localizedDescription)") }
}

func writeJSONAtomically<T: Encodable>(_ value: T, to url: URL) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try enc.encode(value)
    let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    try data.write(to: tmp)
    // rename(2) replaces the old file atomically (Foundation's replaceItemAt fails on Linux here).
    guard rename(tmp.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: tmp)
        throw TrainerError("\(url.path): cannot write: \(reason)")
    }
}
