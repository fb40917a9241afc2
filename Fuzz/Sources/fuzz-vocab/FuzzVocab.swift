import FuzzSupport
import SideTuneTokenizers

/// A vocab.txt: the WordPiece vocabulary (one token a line), then encoding a fixed text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Fuzz.write(data, size, to: Fuzz.scratch.appendingPathComponent("vocab.txt"))
    guard let t = Fuzz.attempt("WordPieceTokenizer", { try WordPieceTokenizer(vocabURL: url) }) else { return 0 }
    let single = t.encode(Fuzz.sentence)
    _ = t.encode(Fuzz.sentence, pair: Fuzz.pair, maxLength: 12)
    _ = t.encodeBatch([Fuzz.sentence, Fuzz.pair], pairs: [Fuzz.pair, ""], maxLength: 16, padding: .maxLength)
    _ = t.tokenizeToStrings(Fuzz.sentence)
    _ = t.decode(single.ids)
    return 0
}

@_cdecl("fuzz_vocab_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
