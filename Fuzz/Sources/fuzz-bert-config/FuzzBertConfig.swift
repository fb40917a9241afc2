import FuzzSupport
import SideTuneBackbones

/// A BERT config.json: decoding and validation, then the encoder built from it with the tiny BERT
/// fixture's weights (names and shapes checked against the config before allocation).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let folder = Fuzz.modelFolder("bert", weightsOf: "bert")
    let url = Fuzz.write(data, size, to: folder.appendingPathComponent("config.json"))
    guard let config = Fuzz.attempt("BertConfig.load", { try BertConfig.load(url) }) else { return 0 }
    _ = Fuzz.attempt("BertEncoder.sideConfig") { try BertEncoder.sideConfig(config, reduction: 8) }
    _ = Fuzz.attempt("BertEncoder.load") { try BertEncoder.load(folder: folder) }
    return 0
}

@_cdecl("fuzz_bert_config_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
