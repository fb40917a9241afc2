import Foundation

/// A user-provided Hugging Face-style model folder, checked up front so a missing file is
/// reported by name before any loading starts.
public struct LocalModelFolder: Sendable, Equatable {
    public let url: URL
    public let config: URL
    public let weights: URL
    /// WordPiece vocabulary, when present.
    public let vocab: URL?
    /// Hugging Face tokenizers file, when present.
    public let tokenizer: URL?

    /// Requires `config.json`, `model.safetensors`, and `vocab.txt` or `tokenizer.json`.
    public init(_ url: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else {
            throw AssetError.incompleteModelFolder(path: url.path, missing: ["the folder itself (not found or not a folder)"])
        }
        func file(_ name: String) -> URL? {
            let u = url.appendingPathComponent(name)
            var d: ObjCBool = false
            return fm.fileExists(atPath: u.path, isDirectory: &d) && !d.boolValue ? u : nil
        }
        let config = file("config.json")
        let weights = file("model.safetensors")
        let vocab = file("vocab.txt")
        let tokenizer = file("tokenizer.json")
        var missing: [String] = []
        if config == nil { missing.append("config.json") }
        if weights == nil { missing.append("model.safetensors") }
        if vocab == nil && tokenizer == nil { missing.append("vocab.txt or tokenizer.json") }
        guard missing.isEmpty, let config, let weights else {
            throw AssetError.incompleteModelFolder(path: url.path, missing: missing)
        }
        self.url = url
        self.config = config
        self.weights = weights
        self.vocab = vocab
        self.tokenizer = tokenizer
    }

    public init(path: String) throws { try self.init(URL(fileURLWithPath: path, isDirectory: true)) }
}
