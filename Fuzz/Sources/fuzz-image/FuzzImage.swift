import FuzzSupport
import SideTune

/// An image file decoded by content (JPEG and PNG through libjpeg-turbo and libpng, Netpbm, NPY),
/// then preprocessed both ways the trainer does (centre crop, stretch); Netpbm and NPY also
/// through the prediction loader `ImageFile.load`, which takes a path.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Fuzz.bytes(data, size)
    let format = ImageDecoder.format(of: bytes)
    if let image = Fuzz.attempt("ImageDecoder.decode", { try ImageDecoder.decode(bytes, file: "fuzz.img") }) {
        // Small images only: resizing a large one is slow but not a parser's business.
        if image.width * image.height <= 1 << 20 {
            let crop = CentreCropPreprocessor(size: 16)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: 3 * 16 * 16)
            crop.write(image, into: out)
            out.deallocate()
            _ = ImageInput(size: 8, pipeline: .resize).pixels([image])
        }
    }
    if format == .jpeg {
        _ = Fuzz.attempt("ImageDecoder.decode(minSide: 16)") {
            try ImageDecoder.decode(bytes, file: "fuzz.jpg", minSide: 16)
        }
    }
    if format == .npy || format == .netpbm {
        let name = format == .npy ? "image.npy" : "image.pnm"
        let url = Fuzz.write(data, size, to: Fuzz.scratch.appendingPathComponent(name))
        let loaded = Fuzz.attempt("ImageFile.load") { try ImageFile.load(url.path) }
        if let set = loaded, set.count > 0, set.imageSize <= 1 << 20 {
            _ = set.decoded(0)
        }
    }
    return 0
}

@_cdecl("fuzz_image_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
