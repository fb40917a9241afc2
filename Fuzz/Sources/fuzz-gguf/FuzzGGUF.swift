import FuzzSupport
import SideTuneBackbones
import SideTuneFormats
import SideTuneTokenizers

/// A GGUF file: header, metadata accessors, every tensor dequantised, then what SideTune builds
/// from one: the Llama config, the byte-level BPE tokenizer (encoding a fixed text) and the
/// decoder itself (F32 and NF4).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let parsed = Fuzz.attempt("GGUFFile") { try GGUFFile(bytes: Fuzz.bytes(data, size), name: "fuzz.gguf") }
    guard let f = parsed else { return 0 }
    for key in f.keys {
        _ = f[key]?.description
        _ = try? f.int(key)
        _ = try? f.float(key)
        _ = try? f.string(key)
        _ = try? f.strings(key)
        _ = try? f.ints(key)
    }
    for t in f.tensors {
        _ = try? f.rawBytes(t.name)
        _ = try? f.float32Tensor(t.name)
    }
    _ = Fuzz.attempt("LlamaConfig") { try LlamaConfig(gguf: f) }
    if let tokenizer = Fuzz.attempt("ByteLevelBPE", { try ByteLevelBPE(gguf: f) }) {
        let ids = tokenizer.encode(Fuzz.sentence)
        _ = tokenizer.decode(ids)
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
        _ = tokenizer.tokenize(Fuzz.pair)
        _ = Fuzz.attempt("ChatTemplate") { try ChatTemplate(source: tokenizer.chatTemplate) }
    }
    _ = Fuzz.attempt("Llama.load") { try Llama.load(gguf: f, weights: .f32) }
    _ = Fuzz.attempt("Llama.load(nf4)") { try Llama.load(gguf: f, weights: .nf4) }
    return 0
}

@_cdecl("fuzz_gguf_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
