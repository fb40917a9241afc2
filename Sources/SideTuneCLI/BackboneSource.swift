import ArgumentParser
import Foundation
import SideTuneAssets
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneTokenizers

/// A backbone as loaded for a task: the model, and what turns raw examples into its input.
enum LoadedBackbone {
    case bert(BertEncoder, WordPieceTokenizer)
    case vit(DINOv2ViT)
    case llama(Llama, ByteLevelBPE)
}

/// Where a backbone comes from (an asset, a Hugging Face folder, an ONNX or GGUF file), which
/// family it is, and the identity of its weights file: what `train` records in checkpoints and
/// `eval`, `predict` and `generate` check. The CLI's one backbone registry: a new family adds a
/// case to `resolve` and to `load`.
struct BackboneSource {
    var family: BackboneFamily
    /// The asset name, or the file's or folder's name.
    var name: String
    /// The weights file (a folder's model.safetensors, the .onnx or .gguf file).
    var weightsFile: URL
    /// The folder or file when given by path, recorded in checkpoints.
    var path: String?
    var sha256: String

    /// Resolves `--model` (an asset name, or a path to a .onnx or .gguf file) and `--model-dir` (a
    /// BERT-family Hugging Face folder), fetching an asset on first use.
    static func resolve(model: String, modelDir: String?, log: (String) -> Void) throws -> BackboneSource {
        let fm = FileManager.default
        var isFolder: ObjCBool = false
        if let dir = modelDir ?? (fm.fileExists(atPath: model, isDirectory: &isFolder) && isFolder.boolValue ? model : nil) {
            let url = URL(fileURLWithPath: dir, isDirectory: true).standardizedFileURL
            // A folder without config.json gets LocalModelFolder's list of what is missing.
            let family = fm.fileExists(atPath: url.appendingPathComponent("config.json").path)
                ? try HuggingFaceFolder.family(of: url).family : .bert
            switch family {
            case .bert:
                let folder = try LocalModelFolder(path: dir)
                return try BackboneSource(family: .bert, name: folder.url.lastPathComponent, weightsFile: folder.weights, path: folder.url.path)
            case .vit, .llama:
                var missing = ["model.safetensors"].filter { !fm.fileExists(atPath: url.appendingPathComponent($0).path) }
                if family == .llama && !fm.fileExists(atPath: url.appendingPathComponent("tokenizer.json").path) { missing.append("tokenizer.json") }
                guard missing.isEmpty else { throw AssetError.incompleteModelFolder(path: url.path, missing: missing) }
                return try BackboneSource(family: family, name: url.lastPathComponent, weightsFile: url.appendingPathComponent("model.safetensors"),
                                          path: url.path)
            }
        }
        if model.hasSuffix(".onnx") || model.hasSuffix(".gguf") || fm.fileExists(atPath: model) {
            guard fm.fileExists(atPath: model) else { throw ValidationError("--model \(model): no such file") }
            let url = URL(fileURLWithPath: model).standardizedFileURL
            switch url.pathExtension.lowercased() {
            case "onnx": return try BackboneSource(family: .vit, name: url.lastPathComponent, weightsFile: url, path: url.path)
            case "gguf": return try BackboneSource(family: .llama, name: url.lastPathComponent, weightsFile: url, path: url.path)
            default: throw ValidationError("--model \(model): a model file must be a DINOv2 .onnx or a Llama-family .gguf (for a BERT folder use --model-dir)")
            }
        }
        let store = AssetStore()
        guard let d = try? store.descriptor(model) else {
            let models = AssetCatalog.all.filter { $0.files[.modelFolder] != nil || $0.files[.onnx] != nil || $0.files[.gguf] != nil }
            throw ValidationError("--model \(model): not a known model (known: \(models.map(\.name).joined(separator: ", ")); or a .onnx or .gguf file, or --model-dir)")
        }
        let family: BackboneFamily, file: AssetFile
        if d.files[.onnx] != nil { (family, file) = (.vit, .onnx) }
        else if d.files[.gguf] != nil { (family, file) = (.llama, .gguf) }
        else if d.files[.modelFolder] != nil { (family, file) = (.bert, .weights) }
        else { throw ValidationError("--model \(model) is a data set, not a model") }
        _ = try store.fetch(model) { if case .downloading = $0 { log("fetching \(model) ...") } }
        return try BackboneSource(family: family, name: model, weightsFile: try store.path(of: model, file: file), path: nil)
    }

    /// The family `--model` / `--model-dir` name, without fetching or reading anything large (so a
    /// method that cannot run there is refused first).
    static func family(model: String, modelDir: String?) throws -> BackboneFamily {
        var isFolder: ObjCBool = false
        if let dir = modelDir ?? (FileManager.default.fileExists(atPath: model, isDirectory: &isFolder) && isFolder.boolValue ? model : nil) {
            let url = URL(fileURLWithPath: dir, isDirectory: true)
            return FileManager.default.fileExists(atPath: url.appendingPathComponent("config.json").path)
                ? try HuggingFaceFolder.family(of: url).family : .bert
        }
        switch URL(fileURLWithPath: model).pathExtension.lowercased() {
        case "onnx": return .vit
        case "gguf": return .llama
        default: break
        }
        guard let d = try? AssetStore().descriptor(model) else {
            if FileManager.default.fileExists(atPath: model) { return try resolve(model: model, modelDir: nil, log: { _ in }).family }
            let models = AssetCatalog.all.filter { $0.files[.modelFolder] != nil || $0.files[.onnx] != nil || $0.files[.gguf] != nil }
            throw ValidationError("--model \(model): not a known model (known: \(models.map(\.name).joined(separator: ", ")); or a .onnx or .gguf file, or --model-dir)")
        }
        if d.files[.onnx] != nil { return .vit }
        if d.files[.gguf] != nil { return .llama }
        if d.files[.modelFolder] != nil { return .bert }
        throw ValidationError("--model \(model) is a data set, not a model")
    }

    init(family: BackboneFamily, name: String, weightsFile: URL, path: String?) throws {
        self.family = family
        self.name = name
        self.weightsFile = weightsFile
        self.path = path
        sha256 = try SHA256.hexDigest(ofFile: weightsFile.path)
    }

    /// Loads the backbone with its projections in `weights` (NF4 is applied at load where the file
    /// is read block by block; otherwise the method registry quantises the F32 model).
    func load(weights: WeightFormat, log: (String) -> Void) throws -> LoadedBackbone {
        let t0 = Date()
        defer { log(String(format: "loaded %@ (%@) in %.1f s", name, family.summary, Date().timeIntervalSince(t0))) }
        switch family {
        case .bert:
            let folder = weightsFile.deletingLastPathComponent()
            let tokenizer = try WordPieceTokenizer.load(modelFolder: folder)
            let encoder = try BertEncoder.load(folder: folder)
            // Every id the tokenizer can give must be a row of the embedding.
            guard tokenizer.vocabSize <= encoder.config.vocabSize else {
                throw BertError("\(folder.path): the tokenizer has \(tokenizer.vocabSize) tokens, but the word embedding has \(encoder.config.vocabSize) rows (vocab_size in config.json): they belong to different models")
            }
            return .bert(encoder, tokenizer)
        case .vit:
            if weightsFile.pathExtension == "safetensors" { return .vit(try DINOv2ViT.load(huggingFace: weightsFile.deletingLastPathComponent())) }
            return .vit(try MemoryLedger.withCategory(.weights) { try DINOv2ViT.load(onnx: ONNXModel(path: weightsFile.path)).0 })
        case .llama:
            let tokenizer: ByteLevelBPE, llama: Llama
            if weightsFile.pathExtension == "safetensors" {
                let folder = weightsFile.deletingLastPathComponent()
                tokenizer = try ByteLevelBPE(tokenizerJSON: folder.appendingPathComponent("tokenizer.json"))
                llama = try Llama.load(huggingFace: folder, weights: weights)
            } else {
                let file = try GGUFFile(path: weightsFile.path)
                tokenizer = try ByteLevelBPE(gguf: file)
                llama = try Llama.load(gguf: file, weights: weights)
            }
            guard tokenizer.vocabSize <= llama.config.vocabSize else {
                throw FormatError(.shapeMismatch, file: weightsFile.path, tensor: "token_embd.weight", "the tokenizer has \(tokenizer.vocabSize) tokens, but token_embd.weight has \(llama.config.vocabSize) rows")
            }
            return .llama(llama, tokenizer)
        }
    }

    /// A checkpoint's backbone: `hint` (--model, --model-dir) if given, else the recorded path while
    /// it exists, else the recorded asset. The SHA-256 must be the checkpoint's.
    static func of(checkpoint c: CheckpointConfigView, hint: BackboneHint, checkpointPath: String,
                   log: (String) -> Void) throws -> BackboneSource {
        let recorded = c.backbonePath.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let source: BackboneSource
        if let dir = hint.modelDir ?? (hint.model == nil && c.family == .bert ? recorded : nil) {
            source = try resolve(model: "", modelDir: dir, log: log)
        } else if let model = hint.model ?? recorded ?? (isAsset(c.backboneName) ? c.backboneName : nil) {
            source = try resolve(model: model, modelDir: nil, log: log)
        } else {
            let flag = c.family == .bert ? "--model-dir FOLDER" : c.family == .vit ? "--model FILE.onnx" : "--model FILE.gguf"
            throw ValidationError("\(checkpointPath): the checkpoint's backbone '\(c.backboneName)' is not a known asset\(c.backbonePath.map { " and \($0) is gone" } ?? ""): pass \(flag)")
        }
        guard source.family == c.family else {
            throw ValidationError("\(checkpointPath): the checkpoint is for a \(c.family.summary), but \(source.name) is a \(source.family.summary)")
        }
        guard source.sha256 == c.backboneSHA256 else {
            throw ValidationError("\(checkpointPath): checkpoint was trained on backbone '\(c.backboneName)' with weights sha256 \(c.backboneSHA256.prefix(12))..., but \(source.weightsFile.path) has sha256 \(source.sha256.prefix(12))...")
        }
        return source
    }

    static func isAsset(_ name: String) -> Bool { (try? AssetStore().descriptor(name)) != nil }
}

/// What `BackboneSource.of(checkpoint:)` reads of a checkpoint.
struct CheckpointConfigView {
    var family: BackboneFamily
    var backboneName: String
    var backbonePath: String?
    var backboneSHA256: String
}

/// Where eval and predict may find a checkpoint's backbone besides what the checkpoint records:
/// --model-dir (a BERT folder) or --model (an asset name, or a .onnx or .gguf file).
struct BackboneHint {
    var model: String?
    var modelDir: String?
}
