import Foundation
import FuzzSupport
import SideTuneBackbones

/// A Hugging Face config.json: the model_type dispatch, then the ViT/DINOv2 or Llama/Mistral/Qwen2
/// loader with that type's tiny fixture weights (every size checked before allocation).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let probe = Fuzz.folder("probe")
    Fuzz.write(data, size, to: probe.appendingPathComponent("config.json"))
    let found = Fuzz.attempt("HuggingFaceFolder.family") { try HuggingFaceFolder.family(of: probe) }
    guard let (type, family) = found else { return 0 }
    // Each model_type's tiny fixture folder has its name.
    guard ["vit", "dinov2", "llama", "mistral", "qwen2", "bert"].contains(type) else { return 0 }
    let folder = Fuzz.modelFolder(type, weightsOf: type)
    Fuzz.write(data, size, to: folder.appendingPathComponent("config.json"))
    switch family {
    case .vit: _ = Fuzz.attempt("DINOv2ViT.load") { try DINOv2ViT.load(huggingFace: folder) }
    case .llama:
        _ = Fuzz.attempt("Llama.load") { try Llama.load(huggingFace: folder) }
        _ = Fuzz.attempt("Llama.load(nf4)") { try Llama.load(huggingFace: folder, weights: .nf4) }
    case .bert: _ = Fuzz.attempt("BertEncoder.load") { try BertEncoder.load(folder: folder) }
    }
    return 0
}

@_cdecl("fuzz_hf_config_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
