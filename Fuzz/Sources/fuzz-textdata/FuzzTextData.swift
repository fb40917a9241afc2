import FuzzSupport
import SideTune

/// A labelled text file read as CSV, TSV and JSON Lines (lenient and strict, with and without a
/// pair column), and as Kaggle-style image rows (`label,p0,...`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Fuzz.bytes(data, size)
    for format in [DataFormat.csv, .tsv, .jsonl] {
        for (pair, strict) in [(nil, false), ("pair", false), (nil, true)] as [(String?, Bool)] {
            let options = LoadOptions(pairColumn: pair, format: format, strict: strict)
            let loaded = Fuzz.attempt("TextDataset.load(\(format))") {
                try TextDataset.load(bytes: bytes, fileName: "fuzz.\(format.rawValue)", options: options)
            }
            guard let set = loaded else { continue }
            _ = set.classCounts
            _ = set.report.summary
            _ = set.subset(Array(set.labels.indices.reversed()))
        }
    }
    let text = String(decoding: bytes, as: UTF8.self)
    _ = Fuzz.attempt("CSVImages.parse") { try CSVImages.parse(text, file: "fuzz.csv", height: 2, width: 2) }
    return 0
}

@_cdecl("fuzz_textdata_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
