import Foundation
import Testing
import SideTuneEngine
import SideTuneFormats

/// A fresh folder per test (tests run in parallel).
func makeTempDir() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Writes a hand-made file: 8-byte length (or `lengthOverride`), header text, data bytes.
func craft(_ dir: String, header: String, data: [UInt8], lengthOverride: UInt64? = nil, name: String = "bad.safetensors") throws -> String {
    let h = Array(header.utf8)
    var bytes = withUnsafeBytes(of: (lengthOverride ?? UInt64(h.count)).littleEndian) { Array($0) }
    bytes += h + data
    let path = dir + "/" + name
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

func expectFormatError(_ kind: FormatError.Kind, tensor: String? = nil, contains: [String] = [],
                       sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected FormatError.\(kind), got success", sourceLocation: sourceLocation)
    } catch let e as FormatError {
        #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation)
        if let tensor { #expect(e.tensor == tensor, "\(e)", sourceLocation: sourceLocation) }
        for s in contains { #expect(e.description.contains(s), "'\(s)' not in: \(e)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected FormatError.\(kind), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct SafetensorsRoundTripTests {
    @Test func roundTripAllWritableTypes() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a: [Float] = (0..<6).map { Float($0) * 0.37 - 1 }
        let b: [Float] = [1, 0.1, -65504, 3.14159]
        let c: [Float] = [1e30, -0.001, 2.5]
        var w = SafetensorsWriter(metadata: ["format": "pt", "note": "quote \" and \\ ok"])
        try w.add("layer.a", floats: a, shape: [2, 3])
        try w.add("layer.b16", floats: b, shape: [4], as: .float16)
        try w.add("bf", floats: c, shape: [3, 1], as: .bfloat16)
        try w.add("ids", rawBytes: [Int64(7), -3].withUnsafeBytes { Array($0) }, storageType: .i64, shape: [2])
        try w.add("scalar", floats: [42], shape: [])
        try w.add("empty", floats: [], shape: [0, 5])
        let path = dir + "/model.safetensors"
        try w.write(to: path)

        let f = try SafetensorsFile(path: path)
        #expect(f.metadata == ["format": "pt", "note": "quote \" and \\ ok"])
        #expect(Set(f.names) == ["layer.a", "layer.b16", "bf", "ids", "scalar", "empty"])
        #expect(f.headerLength % 8 == 0)
        #expect(f.warnings.isEmpty, "\(f.warnings)")
        let ia = try f.info("layer.a")
        #expect(ia.dtype == .float32 && ia.shape == [2, 3] && ia.byteRange.count == 24)
        #expect(try f.info("layer.b16").dtype == .float16)
        #expect(try f.info("bf").dtype == .bfloat16)
        #expect(try f.info("ids").dtype == nil && f.info("ids").storageType == .i64)
        #expect(try f.floats("layer.a") == a)
        #expect(try f.floats("layer.b16") == b.map { float16BitsToFloat(floatToFloat16Bits($0)) })
        #expect(try f.floats("bf") == c.map { bfloat16BitsToFloat(floatToBFloat16Bits($0)) })
        #expect(try f.floats("ids") == [7, -3])
        #expect(try f.floats("scalar") == [42])
        #expect(try f.floats("empty") == [])
        #expect(try f.rawBytes("layer.b16").count == 8)

        // F32 tensors are laid out aligned, so withFloat32 hands out the mapping itself.
        #expect(try f.isZeroCopyFloat32("layer.a"))
        let raw = try f.rawBytes("layer.a")
        try f.withFloat32("layer.a") { buf in
            #expect(Array(buf) == a)
            #expect(UnsafeRawPointer(buf.baseAddress!) == raw.baseAddress!)
        }
        #expect(try !f.isZeroCopyFloat32("layer.b16"))
        try f.withFloat32("layer.b16") { #expect($0.count == 4 && $0[1] == float16BitsToFloat(floatToFloat16Bits(0.1))) }

        // Atomic write leaves only the final file.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["model.safetensors"])
    }

    @Test func outputIsDeterministicAndOverwritesAtomically() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func build(_ order: [String]) throws -> SafetensorsWriter {
            var w = SafetensorsWriter(metadata: ["z": "1", "a": "2"])
            for n in order { try w.add(n, floats: [1, 2, 3], shape: [3], as: n == "h" ? .float16 : .float32) }
            return w
        }
        let p1 = dir + "/one.safetensors", p2 = dir + "/two.safetensors"
        try build(["x", "h", "b"]).write(to: p1)
        try build(["b", "x", "h"]).write(to: p2)
        let d1 = try Data(contentsOf: URL(fileURLWithPath: p1))
        #expect(d1 == (try Data(contentsOf: URL(fileURLWithPath: p2))))
        // Overwrite in place with different content.
        var w = SafetensorsWriter()
        try w.add("only", floats: [9], shape: [1])
        try w.write(to: p1)
        #expect(try SafetensorsFile(path: p1).names == ["only"])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == ["one.safetensors", "two.safetensors"])
        // Sorted keys in the header.
        let header = String(decoding: d1[8..<(8 + Int(d1[0]))], as: UTF8.self)
        #expect(header.hasPrefix(#"{"__metadata__":{"a":"2","z":"1"},"b":"#))
    }

    @Test func writerRejectsBadInput() throws {
        var w = SafetensorsWriter()
        try w.add("a", floats: [1, 2], shape: [2])
        expectFormatError(.unsupported, tensor: "a", contains: ["twice"]) { try w.add("a", floats: [1, 2], shape: [2]) }
        expectFormatError(.shapeMismatch, tensor: "b", contains: ["[2, 2]", "16 bytes", "got 12"]) { try w.add("b", floats: [1, 2, 3], shape: [2, 2]) }
        expectFormatError(.unsupported, tensor: "q") { try w.add("q", floats: Array(repeating: 0, count: 32), shape: [32], as: .q8_0) }
        expectFormatError(.unsupported) { try w.add("__metadata__", floats: [1], shape: [1]) }
        expectFormatError(.io, contains: ["/nonexistent-dir/x.safetensors"]) { try w.write(to: "/nonexistent-dir/x.safetensors") }
    }
}

@Suite struct SafetensorsMalformedTests {
    let f32x2 = #""t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#
    let eight = [UInt8](repeating: 0, count: 8)

    @Test func headerLengthTooLarge() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try craft(dir, header: "{\(f32x2)}", data: eight, lengthOverride: 1 << 40)
        expectFormatError(.headerLength, contains: [p, "exceeds the limit"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func headerLengthPastEndOfFile() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try craft(dir, header: "{\(f32x2)}", data: [], lengthOverride: 5000)
        expectFormatError(.headerLength, contains: ["5000", "truncated"]) { _ = try SafetensorsFile(path: p) }
        let tiny = dir + "/tiny.safetensors"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: tiny))
        expectFormatError(.headerLength, contains: ["3 bytes"]) { _ = try SafetensorsFile(path: tiny) }
        let empty = dir + "/empty.safetensors"
        try Data().write(to: URL(fileURLWithPath: empty))
        expectFormatError(.headerLength) { _ = try SafetensorsFile(path: empty) }
    }

    @Test func truncatedData() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#
        let p = try craft(dir, header: header, data: [UInt8](repeating: 0, count: 12))
        expectFormatError(.truncated, tensor: "b", contains: ["[8, 24]", "12 bytes"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func overlappingOffsets() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let header = #"{"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"second":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#
        let p = try craft(dir, header: header, data: [UInt8](repeating: 0, count: 24))
        expectFormatError(.overlap, tensor: "second", contains: ["'first'", "0..<16"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func shapeSizeMismatch() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let header = #"{"w":{"dtype":"F16","shape":[3,2],"data_offsets":[0,8]}}"#
        let p = try craft(dir, header: header, data: eight)
        expectFormatError(.shapeMismatch, tensor: "w", contains: ["[3, 2]", "F16", "needs 12 bytes", "span 8"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func unknownDType() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let header = #"{"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#
        let p = try craft(dir, header: header, data: eight)
        expectFormatError(.unknownDType, tensor: "w", contains: ["F8_E4M3", "BF16"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func nonJSONHeader() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p1 = try craft(dir, header: "{not json at all}", data: eight, name: "a.safetensors")
        expectFormatError(.badHeader, contains: ["not valid JSON"]) { _ = try SafetensorsFile(path: p1) }
        let p2 = try craft(dir, header: "GGUF....", data: eight, name: "b.safetensors")
        expectFormatError(.badHeader, contains: ["'{'"]) { _ = try SafetensorsFile(path: p2) }
        let p3 = try craft(dir, header: #"{"w":[1,2]}"#, data: eight, name: "c.safetensors")
        expectFormatError(.badHeader, tensor: "w") { _ = try SafetensorsFile(path: p3) }
        let p4 = try craft(dir, header: #"{"w":{"dtype":"F32","shape":[2]}}"#, data: eight, name: "d.safetensors")
        expectFormatError(.badHeader, tensor: "w", contains: ["missing data_offsets"]) { _ = try SafetensorsFile(path: p4) }
        let p5 = try craft(dir, header: #"{"__metadata__":{"k":1}}"#, data: [], name: "e.safetensors")
        expectFormatError(.badHeader, contains: ["__metadata__"]) { _ = try SafetensorsFile(path: p5) }
    }

    @Test func reversedOffsets() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try craft(dir, header: #"{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}"#, data: eight)
        expectFormatError(.badOffsets, tensor: "w", contains: ["[8, 0]"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func gapsAreWarningsAndUnknownNamesAreErrors() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Padding with spaces after the JSON is allowed by the spec.
        let header = #"{"a":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}}   "#
        let p = try craft(dir, header: header, data: [9, 9, 9, 9, 5, 0, 0, 0, 1])
        let f = try SafetensorsFile(path: p)
        #expect(try f.floats("a") == [5])
        #expect(f.warnings.count == 2, "\(f.warnings)")
        #expect(f.warnings.first?.contains("4 unused bytes before tensor 'a'") == true)
        expectFormatError(.missingTensor, tensor: "nope", contains: [p]) { _ = try f.info("nope") }
    }

    @Test func missingFileIsIOError() {
        expectFormatError(.io, contains: ["/no/such/file.safetensors", "cannot open"]) {
            _ = try SafetensorsFile(path: "/no/such/file.safetensors")
        }
    }
}

/// The real all-MiniLM-L6-v2 checkpoint; set SIDETUNE_MINILM_DIR to the folder holding model.safetensors.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"] != nil,
                "set SIDETUNE_MINILM_DIR to a folder with all-MiniLM-L6-v2's model.safetensors"))
struct MiniLMSafetensorsTests {
    @Test func realCheckpointNamesShapesAndValues() throws {
        let dir = ProcessInfo.processInfo.environment["SIDETUNE_MINILM_DIR"]!
        let f = try SafetensorsFile(path: dir + "/model.safetensors")
        #expect(f.names.count == 104)
        #expect(f.metadata["format"] == "pt")
        #expect(f.warnings.isEmpty, "\(f.warnings)")
        // No `bert.` prefix in this export.
        #expect(f.names.allSatisfy { $0.hasPrefix("embeddings.") || $0.hasPrefix("encoder.") || $0.hasPrefix("pooler.") })
        let emb = try f.info("embeddings.word_embeddings.weight")
        #expect(emb.dtype == .float32 && emb.shape == [30522, 384])
        #expect(try f.info("embeddings.position_embeddings.weight").shape == [512, 384])
        #expect(try f.info("embeddings.token_type_embeddings.weight").shape == [2, 384])
        #expect(try f.info("encoder.layer.5.intermediate.dense.weight").shape == [1536, 384])
        #expect(try f.info("encoder.layer.5.output.dense.weight").shape == [384, 1536])
        #expect(try f.info("encoder.layer.0.attention.self.query.weight").shape == [384, 384])
        #expect(try f.info("pooler.dense.weight").shape == [384, 384])
        for l in 0..<6 { #expect(f.contains("encoder.layer.\(l).attention.output.LayerNorm.weight")) }
        // BERT's position_ids are stored as I64 0..<512.
        let ids = try f.info("embeddings.position_ids")
        #expect(ids.storageType == .i64 && ids.shape == [1, 512])
        #expect(try f.floats("embeddings.position_ids") == (0..<512).map(Float.init))
        // Values read with Python's struct from the same file.
        #expect(try f.isZeroCopyFloat32("embeddings.word_embeddings.weight"))
        try f.withFloat32("embeddings.word_embeddings.weight") { w in
            #expect(w.count == 30522 * 384)
            #expect(Array(w[0..<4]) == [-0.019989013671875, -0.0034027099609375, -0.014678955078125, 0.0117034912109375])
        }
        #expect(Array(try f.floats("encoder.layer.5.output.LayerNorm.weight")[0..<4]) ==
                [0.645970344543457, 0.6747910976409912, 0.6716562509536743, 0.65945965051651])
    }
}
