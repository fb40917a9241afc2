import FuzzSupport
import SideTuneFormats

/// A safetensors file (SafetensorsFile maps a path): header, every tensor's bytes and its Float
/// conversion.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Fuzz.write(data, size, to: Fuzz.scratch.appendingPathComponent("model.safetensors"))
    guard let file = Fuzz.attempt("SafetensorsFile", { try SafetensorsFile(path: url.path) }) else { return 0 }
    var sum: Float = 0
    for t in file.tensors {
        _ = try? file.rawBytes(t.name)
        _ = try? file.isZeroCopyFloat32(t.name)
        if let f = Fuzz.attempt("file.floats", { try file.floats(t.name) }) { sum += f.first ?? 0 }
        _ = try? file.withFloat32(t.name) { sum += $0.first ?? 0 }
    }
    _ = try? file.info("not a tensor")
    _ = (sum, file.metadata, file.warnings)
    return 0
}

@_cdecl("fuzz_safetensors_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
