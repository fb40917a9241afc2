import Foundation
import FuzzSupport
import SideTuneTokenizers

/// A tokenizer.json, read as a byte-level BPE (with the tiny Llama fixture's tokenizer_config.json
/// beside it) and as a WordPiece tokenizer; each that loads encodes and decodes a fixed text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let folder = Fuzz.folder("tokenizer")
    let config = folder.appendingPathComponent("tokenizer_config.json")
    if !FileManager.default.fileExists(atPath: config.path) {
        let fixture = Fuzz.tinyModels.appendingPathComponent("llama/tokenizer_config.json")
        try? FileManager.default.copyItem(at: fixture, to: config)
    }
    let url = Fuzz.write(data, size, to: folder.appendingPathComponent("tokenizer.json"))
    if let bpe = Fuzz.attempt("ByteLevelBPE", { try ByteLevelBPE(tokenizerJSON: url) }) {
        let ids = bpe.encode(Fuzz.sentence)
        _ = bpe.decode(ids)
        _ = bpe.decode(ids + [-1, Int32(bpe.vocabSize)], skipSpecialTokens: true)
        _ = bpe.tokenize(Fuzz.pair)
        _ = ids.map { bpe.bytes(of: $0) }
    }
    if let wordPiece = Fuzz.attempt("WordPieceTokenizer", { try WordPieceTokenizer(tokenizerJSONURL: url) }) {
        exercise(wordPiece)
    }
    return 0
}

/// Encodes the fixed texts every way the trainer does (shared with the vocab target's copy).
func exercise(_ t: WordPieceTokenizer) {
    let single = t.encode(Fuzz.sentence)
    _ = t.encode(Fuzz.sentence, pair: Fuzz.pair, maxLength: 12)
    _ = t.encode(Fuzz.sentence, truncation: false)
    _ = t.encodeBatch([Fuzz.sentence, Fuzz.pair], pairs: [Fuzz.pair, ""], maxLength: 16, padding: .maxLength)
    _ = t.encodeBatch([Fuzz.sentence, ""], maxLength: 8)
    _ = t.tokenizeToStrings(Fuzz.sentence)
    _ = t.decode(single.ids)
    _ = t.decode(single.ids, skipSpecialTokens: false)
}

@_cdecl("fuzz_tokenizer_json_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.main(argc, argv) { data, size in fuzz(data ?? UnsafePointer(bitPattern: 1)!, size) }
}
