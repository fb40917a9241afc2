import Foundation
import FuzzSupport
import SideTuneTrainer

/// A checkpoint.json: decoding (method, options, labels, backbone identity) and validation, then
/// encoding it back.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let folder = Fuzz.folder("checkpoint")
    Fuzz.write(data, size, to: folder.appendingPathComponent("checkpoint.json"))
    guard let config = Fuzz.attempt("Checkpoint.readConfig", { try Checkpoint.readConfig(folder) }) else { return 0 }
    _ = Fuzz.attempt("JSONEncoder") { try JSONEncoder().encode(config) }
    return 0
}

@_cdecl("fuzz_checkpoint_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
