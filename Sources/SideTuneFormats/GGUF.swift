import Foundation
import SideTuneEngine

// GGUF, llama.cpp's model file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), versions 2 and 3:
//
//   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x (string key, u32 value_type, value)        string = u64 length + UTF-8 bytes
//   tensor_count x (string name, u32 n_dims, u64 dims[n_dims] innermost first, u32 ggml_type, u64 offset)
//   padding to `general.alignment` (default 32)
//   data section; tensor offsets are relative to it and multiples of the alignment.
//
// As in ggml's gguf.cpp every read is bounded by the bytes left and every count is checked against
// what those bytes could hold before anything is allocated, so a malformed file gives a
// `FormatError` naming the key or tensor and the expectation, never a crash or a huge allocation.

/// Metadata value types (`gguf_type`).
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Bytes of one scalar value (strings and arrays: their smallest possible encoding).
    var minSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64, .string: return 8
        case .array: return 12
        }
    }
}

/// One metadata value. Arrays keep their element type so an empty array still says what it holds.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFValueType, [GGUFValue])

    /// Any integer value as Int (nil for other types or out of range).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }
    /// Float and integer values as Double.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var arrayValue: [GGUFValue]? { if case .array(_, let a) = self { return a }; return nil }

    public var typeName: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .float32: return "float32"
        case .bool: return "bool"
        case .string: return "string"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float64: return "float64"
        case .array(let t, _): return "array[\(t)]"
        }
    }

    public var description: String {
        switch self {
        case .string(let s): return String(reflecting: s)
        case .array(let t, let a):
            return a.count <= 8 ? "[\(a.map(\.description).joined(separator: ", "))]" : "[\(a.count) x \(t)]"
        case .bool(let b): return "\(b)"
        case .float32(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        default: return intValue.map { "\($0)" } ?? "?"
        }
    }
}

/// ggml tensor types by id. Only F32, F16, BF16, Q8_0, Q4_0 and Q4_1 load; the rest are named so an
/// unsupported file says what it holds.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .f64: return "F64"
        default: return "\(self)".uppercased()
        }
    }

    /// The engine storage type, nil when SideTune does not read this type.
    public var dtype: DType? {
        switch self {
        case .f32: return .float32
        case .f16: return .float16
        case .bf16: return .bfloat16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        default: return nil
        }
    }
}

/// One entry of the tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions as the file lists them: innermost (contiguous) first, like ggml's `ne`.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset in the data section (a multiple of the alignment).
    public let offset: Int
    public let byteCount: Int

    /// Row-major engine shape: `dims` reversed (a [out, in] matrix is listed as in, out).
    public var shape: [Int] { dims.reversed() }
    public var elementCount: Int { dims.reduce(1, *) }
}

/// Bytes a parser reads and that `GGUFFile` tensors point into: a mapped file or an owned copy.
final class GGUFBytes: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    private let mapping: MappedFile?
    private let owned: UnsafeMutableRawPointer?

    init(mapping: MappedFile) {
        self.mapping = mapping
        bytes = mapping.bytes
        owned = nil
    }
    init(copying data: [UInt8]) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(data.count, 1), alignment: 64)
        data.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: data.count) } }
        owned = p
        mapping = nil
        bytes = UnsafeRawBufferPointer(start: p, count: data.count)
    }
    deinit { owned?.deallocate() }
}

/// A parsed GGUF file. Opened files are memory-mapped; tensors are views of the mapping
/// (`tensor(_:)`, zero-copy, read-only) that keep it alive.
public final class GGUFFile: @unchecked Sendable {  // immutable after init
    /// Longest string accepted (keys, names, values): a larger length is a corrupt file.
    public static let maxStringBytes = 1 << 30
    public static let maxDims = 4

    public let path: String
    public let version: Int
    public let alignment: Int
    /// Metadata keys in file order, and their values.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    /// The tensor table in file order.
    public let tensors: [GGUFTensorInfo]
    /// Absolute offset of the data section.
    public let dataOffset: Int

    private let storage: GGUFBytes
    private let byName: [String: Int]

    /// Maps and parses the file at `path`.
    public convenience init(path: String) throws(FormatError) {
        try self.init(source: GGUFBytes(mapping: try MappedFile(path: path)), path: path)
    }

    /// Parses bytes held in memory (`name` appears in error messages).
    public convenience init(bytes: [UInt8], name: String = "<memory>") throws(FormatError) {
        try self.init(source: GGUFBytes(copying: bytes), path: name)
    }

    init(source: GGUFBytes, path: String) throws(FormatError) {
        self.path = path
        storage = source
        var r = GGUFReader(bytes: source.bytes, file: path)
        let magic = try r.bytes(4, "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            let shown = magic.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            throw r.fail(.badHeader, "magic is \"\(shown)\", expected \"GGUF\" (not a GGUF file?)")
        }
        let v = try r.u32("version")
        guard v == 2 || v == 3 else {
            throw r.fail(.badHeader, "version \(v) is not supported (expected 2 or 3\(v == 1 ? "; version 1 files need re-conversion" : ""))")
        }
        version = Int(v)
        let tensorCount = try r.count("tensor_count", minElementSize: 8 + 4 + 8 + 4 + 8)
        let kvCount = try r.count("kv_count", minElementSize: 8 + 4 + 1)

        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for i in 0..<kvCount {
            let key = try r.string("key of metadata entry \(i)")
            guard metadata[key] == nil else { throw r.fail(.badHeader, "metadata key '\(key)' appears twice") }
            let rawType = try r.u32("type of '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw r.fail(.badHeader, "metadata '\(key)' has value type \(rawType), expected 0...12")
            }
            metadata[key] = try r.value(type, key: key)
            keys.append(key)
        }
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard case .uint32(let av) = a else {
                throw r.fail(.badHeader, "general.alignment is \(a.typeName), expected uint32")
            }
            guard av > 0, av & (av - 1) == 0 else {
                throw r.fail(.badHeader, "general.alignment is \(av), expected a power of two")
            }
            alignment = Int(av)
        }

        var infos: [GGUFTensorInfo] = []
        var byName: [String: Int] = [:]
        infos.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let name = try r.string("name of tensor \(i)")
            guard byName[name] == nil else { throw r.fail(.badHeader, tensor: name, "tensor name appears twice in the tensor table") }
            let nDims = Int(try r.u32("n_dims of '\(name)'"))
            guard nDims >= 1 && nDims <= Self.maxDims else {
                throw r.fail(.shapeMismatch, tensor: name, "has \(nDims) dimensions, expected 1...\(Self.maxDims)")
            }
            var dims: [Int] = []
            var elements = 1
            for d in 0..<nDims {
                let x = try r.u64("dimension \(d) of '\(name)'")
                guard x <= UInt64(Int64.max) else { throw r.fail(.shapeMismatch, tensor: name, "dimension \(d) is \(x), out of range") }
                let (e, o) = elements.multipliedReportingOverflow(by: Int(x))
                guard !o, e <= Int(Int64.max) / 8 else {
                    throw r.fail(.shapeMismatch, tensor: name, "dimensions \(dims + [Int(x)]) hold more elements than fit in Int64")
                }
                dims.append(Int(x))
                elements = e
            }
            let rawType = try r.u32("type of '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw r.fail(.unknownDType, tensor: name, "ggml type \(rawType) is not a known type")
            }
            guard let dtype = type.dtype else {
                let ok = GGMLType.allCases.filter { $0.dtype != nil }.map(\.name).joined(separator: ", ")
                throw r.fail(.unknownDType, tensor: name, "type \(type.name) is not supported (supported: \(ok))")
            }
            guard dims[0] % dtype.blockSize == 0 else {
                throw r.fail(.shapeMismatch, tensor: name,
                             "row length \(dims[0]) is not a multiple of the \(type.name) block size \(dtype.blockSize)")
            }
            let offset64 = try r.u64("offset of '\(name)'")
            guard offset64 <= UInt64(Int64.max) else { throw r.fail(.badOffsets, tensor: name, "offset \(offset64) out of range") }
            let offset = Int(offset64)
            guard offset % alignment == 0 else {
                throw r.fail(.badOffsets, tensor: name, "offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            byName[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: offset,
                                        byteCount: dtype.byteCount(elements: elements)!))
        }

        // The data section starts at the next multiple of the alignment.
        let start = (r.position + alignment - 1) / alignment * alignment
        let size = source.bytes.count
        guard start <= size || infos.isEmpty else {
            throw r.fail(.truncated, "data section would start at byte \(start) but the file has \(size) bytes (truncated?)")
        }
        let dataSize = max(0, size - start)
        for t in infos {
            let (end, o) = t.offset.addingReportingOverflow(t.byteCount)
            guard !o, end <= dataSize else {
                throw r.fail(.truncated, tensor: t.name,
                             "\(t.type.name) \(t.dims) needs bytes \(t.offset)..<\(o ? Int.max : end) of the data section, which has \(dataSize) (truncated?)")
            }
        }
        // No two tensors may share bytes.
        let sorted = infos.filter { $0.byteCount > 0 }.sorted { ($0.offset, $0.name) < ($1.offset, $1.name) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.offset < a.offset + a.byteCount {
            throw FormatError(.overlap, file: path, tensor: b.name,
                              "bytes \(b.offset)..<\(b.offset + b.byteCount) overlap tensor '\(a.name)' (\(a.offset)..<\(a.offset + a.byteCount))")
        }
        self.alignment = alignment
        self.keys = keys
        self.metadata = metadata
        self.tensors = infos
        self.byName = byName
        dataOffset = start
    }

    // MARK: metadata accessors

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    func missing(_ key: String, _ expected: String) -> FormatError {
        FormatError(.badHeader, file: path, "metadata '\(key)' is missing (expected \(expected))")
    }
    func wrong(_ key: String, _ v: GGUFValue, _ expected: String) -> FormatError {
        FormatError(.badHeader, file: path, "metadata '\(key)' is \(v.typeName) \(v), expected \(expected)")
    }

    public func int(_ key: String) throws(FormatError) -> Int {
        guard let v = metadata[key] else { throw missing(key, "an integer") }
        guard let i = v.intValue else { throw wrong(key, v, "an integer") }
        return i
    }
    public func float(_ key: String) throws(FormatError) -> Float {
        guard let v = metadata[key] else { throw missing(key, "a number") }
        guard let d = v.doubleValue else { throw wrong(key, v, "a number") }
        return Float(d)
    }
    public func string(_ key: String) throws(FormatError) -> String {
        guard let v = metadata[key] else { throw missing(key, "a string") }
        guard let s = v.stringValue else { throw wrong(key, v, "a string") }
        return s
    }
    public func strings(_ key: String) throws(FormatError) -> [String] {
        guard let v = metadata[key] else { throw missing(key, "an array of strings") }
        guard case .array(.string, let a) = v else { throw wrong(key, v, "an array of strings") }
        return a.map { $0.stringValue! }
    }
    public func ints(_ key: String) throws(FormatError) -> [Int] {
        guard let v = metadata[key] else { throw missing(key, "an array of integers") }
        guard case .array(_, let a) = v else { throw wrong(key, v, "an array of integers") }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for x in a {
            guard let i = x.intValue else { throw wrong(key, v, "an array of integers") }
            out.append(i)
        }
        return out
    }

    // MARK: tensors

    public func contains(_ name: String) -> Bool { byName[name] != nil }

    public func info(_ name: String) throws(FormatError) -> GGUFTensorInfo {
        guard let i = byName[name] else {
            throw FormatError(.missingTensor, file: path, tensor: name, "no such tensor (the file has \(tensors.count))")
        }
        return tensors[i]
    }

    /// The tensor's stored bytes (valid while this object lives).
    public func rawBytes(_ name: String) throws(FormatError) -> UnsafeRawBufferPointer {
        let t = try info(name)
        return UnsafeRawBufferPointer(rebasing: storage.bytes[(dataOffset + t.offset)..<(dataOffset + t.offset + t.byteCount)])
    }

    /// The tensor as an engine tensor over the file's bytes (zero-copy, in its stored type, shape
    /// row-major = dims reversed). The bytes are a read-only mapping: never write into them; use
    /// `float32()` or `converted(to:)` for a writable copy. Counted in the ledger as `category`.
    public func tensor(_ name: String, category: MemoryCategory = .weights) throws(FormatError) -> Tensor {
        let t = try info(name)
        let raw = try rawBytes(name)
        let storage = TensorStorage(borrowing: UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 64)!),
                                    byteCount: t.byteCount, dtype: t.type.dtype!, owner: self.storage, category: category)
        let out = Tensor(storage: storage, shape: t.shape)
        out.name = name
        return out
    }

    /// The tensor dequantised / converted to a fresh Float32 tensor.
    public func float32Tensor(_ name: String, category: MemoryCategory = .weights) throws(FormatError) -> Tensor {
        let src = try tensor(name, category: category)
        let out = MemoryLedger.withCategory(category) { Tensor(shape: src.shape) }
        dequantize(src.storage.raw, dtype: src.dtype, count: src.count, into: out.data)
        out.name = name
        return out
    }
}

/// Bounds-checked little-endian cursor over the header.
struct GGUFReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var position = 0

    init(bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    var left: Int { bytes.count - position }

    func fail(_ kind: FormatError.Kind, tensor: String? = nil, _ message: String) -> FormatError {
        FormatError(kind, file: file, tensor: tensor, message)
    }

    mutating func need(_ n: Int, _ what: String) throws(FormatError) {
        guard n >= 0, n <= left else {
            throw fail(.truncated, "\(what): needs \(n) bytes at offset \(position), only \(left) left (truncated file?)")
        }
    }

    mutating func bytes(_ n: Int, _ what: String) throws(FormatError) -> UnsafeRawBufferPointer {
        try need(n, what)
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: String) throws(FormatError) -> T {
        try need(MemoryLayout<T>.size, what)
        defer { position += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }

    mutating func u32(_ what: String) throws(FormatError) -> UInt32 { try load(UInt32.self, what) }
    mutating func u64(_ what: String) throws(FormatError) -> UInt64 { try load(UInt64.self, what) }

    /// A u64 count of items that each take at least `minElementSize` bytes: rejected when the bytes
    /// left could not hold them (so a corrupt count cannot trigger a huge allocation).
    mutating func count(_ what: String, minElementSize: Int) throws(FormatError) -> Int {
        let n = try u64(what)
        guard n <= UInt64(left / max(minElementSize, 1)) else {
            throw fail(.badHeader, "\(what) is \(n), but the \(left) bytes left hold at most \(left / max(minElementSize, 1))")
        }
        return Int(n)
    }

    mutating func string(_ what: String) throws(FormatError) -> String {
        let n = try u64("length of \(what)")
        guard n <= UInt64(min(left, GGUFFile.maxStringBytes)) else {
            throw fail(.truncated, "\(what): string length \(n) but only \(left) bytes left")
        }
        let b = try bytes(Int(n), what)
        return String(decoding: b, as: UTF8.self)
    }

    mutating func value(_ type: GGUFValueType, key: String) throws(FormatError) -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .bool:
            let b = try load(UInt8.self, what)
            guard b <= 1 else { throw fail(.badHeader, "metadata '\(key)' is a bool with byte \(b), expected 0 or 1") }
            return .bool(b == 1)
        case .string: return .string(try string(what))
        case .array:
            let rawType = try u32("element type of '\(key)'")
            guard let et = GGUFValueType(rawValue: rawType) else {
                throw fail(.badHeader, "metadata '\(key)' is an array of type \(rawType), expected 0...12")
            }
            guard et != .array else { throw fail(.badHeader, "metadata '\(key)' is an array of arrays, which GGUF does not allow") }
            let n = try count("element count of '\(key)'", minElementSize: et.minSize)
            var out: [GGUFValue] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try value(et, key: key)) }
            return .array(et, out)
        }
    }
}
