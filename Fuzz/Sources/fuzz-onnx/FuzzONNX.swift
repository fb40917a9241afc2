import FuzzSupport
import SideTuneBackbones
import SideTuneFormats

/// An ONNX model: the protobuf reader, every tensor's values (initializers and attribute
/// tensors), then the DINOv2 ViT loader that walks the graph.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let parsed = Fuzz.attempt("ONNXModel") { try ONNXModel(bytes: Fuzz.bytes(data, size), name: "fuzz.onnx") }
    guard let model = parsed else { return 0 }
    for t in model.graph.initializers {
        _ = try? t.floats()
        _ = try? t.int64s()
    }
    for node in model.graph.nodes {
        for a in node.attributes {
            _ = a.kind
            _ = a.string
            if let t = a.t {
                _ = try? t.floats()
                _ = try? t.int64s()
            }
        }
    }
    _ = model.graph.initializerMap()
    _ = Fuzz.attempt("DINOv2ViT.load") { try DINOv2ViT.load(onnx: model) }
    return 0
}

@_cdecl("fuzz_onnx_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
