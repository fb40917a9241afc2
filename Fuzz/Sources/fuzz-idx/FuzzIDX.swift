import FuzzSupport
import SideTune

/// An IDX file (Fashion-MNIST), gzip-compressed or plain: the gzip reader, the IDX header at any
/// rank, and the image + label loader (with a label file made to match the images' count).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Fuzz.bytes(data, size)
    if Gzip.isGzip(bytes) {
        let decompressed = Fuzz.attempt("Gzip.decompress") { try Gzip.decompress(bytes, file: "fuzz.gz") }
        guard let plain = decompressed else { return 0 }
        bytes = plain
    }
    _ = Fuzz.attempt("IDX.parse") { try IDX.parse(bytes, file: "fuzz.idx") }
    _ = Fuzz.attempt("IDX.parse") { try IDX.parse(bytes, file: "fuzz.idx", expectRank: 1) }
    let header = Fuzz.attempt("IDX.parse") { try IDX.parse(bytes, file: "fuzz.idx", expectRank: 3) }
    guard let (dims, _) = header else { return 0 }
    // The images file as given, and labels 0, 1, 2, ... for as many images as it holds.
    let images = Fuzz.write(data, size, to: Fuzz.scratch.appendingPathComponent("images-idx3-ubyte"))
    let n = dims[0]
    guard n <= 1 << 16 else { return 0 } // images of 0 pixels: any count fits in no bytes
    let labels: [UInt8] = [0, 0, 8, 1] + [24, 16, 8, 0].map { UInt8(n >> $0 & 0xff) } + (0..<n).map { UInt8($0 % 11) }
    let labelsURL = labels.withUnsafeBufferPointer {
        Fuzz.write($0.baseAddress!, $0.count, to: Fuzz.scratch.appendingPathComponent("labels-idx1-ubyte"))
    }
    let loaded = Fuzz.attempt("IDX.load") { try IDX.load(images: images.path, labels: labelsURL.path) }
    guard let set = loaded else { return 0 }
    _ = set.indicesByClass(classes: 10)
    _ = set.subset(Array(set.labels.indices.prefix(4)))
    if set.count > 0 { _ = set.decoded(0) }
    return 0
}

@_cdecl("fuzz_idx_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
