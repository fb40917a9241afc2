import Foundation
import SideTuneBackbones
import SideTuneEngine
import SideTuneFormats
import SideTuneTokenizers
import Testing

/// Tiny random models of every architecture SideTune loads from a Hugging Face folder or a GGUF
/// file, against transformers' outputs on the same weights (scripts/goldens/tiny_architectures.py):
/// the tokenizer gives the same ids, the model the same outputs (within float rounding).
@Suite struct TinyArchitectureTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Goldens/tiny")
    static let texts = 4

    static func reference(_ arch: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: root.appendingPathComponent("\(arch)/reference.safetensors").path)
    }

    /// max |ours - theirs| over max |theirs|.
    static func relativeError(_ ours: [Float], _ theirs: [Float]) -> Float {
        guard ours.count == theirs.count else { return .infinity }
        let scale = theirs.map(abs).max() ?? 1
        return zip(ours, theirs).map { abs($0 - $1) }.max()! / max(scale, 1e-6)
    }

    static func expectLogits(_ llama: Llama, _ tokenizer: ByteLevelBPE, reference ref: SafetensorsFile, _ arch: String,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        let texts = try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("texts.json"))) as! [String: Any]
        let strings = texts["texts"] as! [String]
        for k in 0..<Self.texts {
            let ids = try ref.floats("ids.\(k)").map { Int32($0) }
            #expect(tokenizer.encode(strings[k]) == ids, "\(arch) text \(k): ids", sourceLocation: sourceLocation)
            let logits = noGrad { llama.forward(ids).logits }
            let err = relativeError(logits.toArray(), try ref.floats("logits.\(k)"))
            #expect(err < 1e-4, "\(arch) text \(k): relative error \(err)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: ["llama", "mistral", "qwen2"])
    func decoders(arch: String) throws {
        let folder = Self.root.appendingPathComponent(arch)
        #expect(try HuggingFaceFolder.family(of: folder).family == .llama)
        let llama = try Llama.load(huggingFace: folder)
        let tokenizer = try ByteLevelBPE(tokenizerJSON: folder.appendingPathComponent("tokenizer.json"))
        try Self.expectLogits(llama, tokenizer, reference: try Self.reference(arch), arch)
    }

    /// The llama model as llama.cpp writes it (q and k rows permuted, tokenizer in the metadata).
    @Test func gguf() throws {
        let file = try GGUFFile(path: Self.root.appendingPathComponent("llama.gguf").path)
        try Self.expectLogits(try Llama.load(gguf: file), try ByteLevelBPE(gguf: file), reference: try Self.reference("llama"), "llama.gguf")
    }

    @Test(arguments: ["vit", "dinov2"])
    func vision(arch: String) throws {
        let folder = Self.root.appendingPathComponent(arch)
        #expect(try HuggingFaceFolder.family(of: folder).family == .vit)
        let vit = try DINOv2ViT.load(huggingFace: folder)
        let ref = try Self.reference(arch)
        let pixels = Tensor(try ref.floats("pixels"), shape: try ref.info("pixels").shape)
        let hidden = noGrad { vit(pixels).hidden }
        let err = Self.relativeError(hidden.toArray(), try ref.floats("hidden"))
        #expect(err < 1e-4, "\(arch): relative error \(err)")
    }

    @Test func bert() throws {
        let folder = Self.root.appendingPathComponent("bert")
        #expect(try HuggingFaceFolder.family(of: folder).family == .bert)
        let encoder = try BertEncoder.load(folder: folder)
        let tokenizer = try WordPieceTokenizer.load(modelFolder: folder)
        let ref = try Self.reference("bert")
        let texts = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.root.appendingPathComponent("texts.json"))) as! [String: Any]
        for (k, text) in (texts["texts"] as! [String]).enumerated() {
            let ids = try ref.floats("ids.\(k)").map { Int32($0) }
            let encoding = tokenizer.encode(text)
            #expect(encoding.ids == ids, "text \(k)")
            let batch = BatchEncoding(ids: ids, attentionMask: [Int32](repeating: 1, count: ids.count), typeIds: [Int32](repeating: 0, count: ids.count),
                                      batchSize: 1, seqLength: ids.count, lengths: [ids.count])
            let hidden = noGrad { encoder(batch).last }
            let err = Self.relativeError(hidden.toArray(), try ref.floats("hidden.\(k)"))
            #expect(err < 1e-4, "text \(k): relative error \(err)")
        }
    }

    /// Architectures SideTune does not implement are refused by name, with the list.
    @Test func unsupportedArchitecturesAreNamed() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gpt2-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Data(#"{"model_type": "gpt2", "n_embd": 32}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        #expect { try HuggingFaceFolder.family(of: folder) } throws: {
            "\($0)".contains("model_type 'gpt2' is not an architecture SideTune implements; supported: bert, vit, dinov2, llama, mistral, qwen2")
        }
        // A RoPE scaling variant is refused by name.
        let llama = Self.root.appendingPathComponent("llama")
        let scaled = folder.appendingPathComponent("scaled")
        try FileManager.default.copyItem(at: llama, to: scaled)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: scaled.appendingPathComponent("config.json"))) as! [String: Any]
        config["rope_parameters"] = ["rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0]
        try JSONSerialization.data(withJSONObject: config).write(to: scaled.appendingPathComponent("config.json"))
        #expect { try Llama.load(huggingFace: scaled) } throws: { "\($0)".contains("rope_parameters of type 'llama3' is not supported") }
    }
}
