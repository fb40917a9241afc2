#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SideTuneEngine

/// Element types the safetensors format names. The float ones map to engine `DType`s; the
/// integer ones appear in real checkpoints (BERT's I64 `position_ids`) and are read as Float on
/// request. Others (F8_*, U16/U32/U64, complex) are rejected by name when a file is opened.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64"
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// The engine's storage type for this dtype, nil for integer and F64 data (read those with
    /// `SafetensorsFile.floats`).
    public var engineDType: DType? {
        switch self {
        case .f32: return .float32
        case .f16: return .float16
        case .bf16: return .bfloat16
        default: return nil
        }
    }

    /// The safetensors dtype an engine storage type is written as (nil for quantised types,
    /// which safetensors cannot hold).
    public init?(_ dtype: DType) {
        switch dtype {
        case .float32: self = .f32
        case .float16: self = .f16
        case .bfloat16: self = .bf16
        default: return nil
        }
    }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    /// The dtype as stored in the file.
    public let storageType: SafetensorsDType
    /// Row-major shape; `[]` is a scalar.
    public let shape: [Int]
    /// Absolute byte offsets in the file (the header's `data_offsets` shifted past the header).
    public let byteRange: Range<Int>

    /// The engine storage type, nil when the file stores integers or F64.
    public var dtype: DType? { storageType.engineDType }
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A read-only private mapping of a whole file; unmapped when the last reference goes away, so
/// buffers handed out by `SafetensorsFile` stay valid while the file object is alive.
public final class MappedFile: @unchecked Sendable {  // immutable after init
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws(FormatError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw FormatError(.io, file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }  // the mapping keeps the file alive without the descriptor
        var st = stat()
        if fstat(fd, &st) != 0 { throw FormatError(.io, file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        if size == 0 {
            // mmap rejects length 0; an empty file has no bytes to map.
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        if p == MAP_FAILED || p == nil {
            throw FormatError(.io, file: path, "cannot mmap \(size) bytes: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

/// A memory-mapped safetensors file (https://github.com/huggingface/safetensors, "Format").
///
/// Layout: u64 little-endian header length N, N bytes of JSON header
/// `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`,
/// then the data section; offsets are relative to the data section. Everything is checked when
/// the file is opened, so later accessors only fail for unknown names.
public final class SafetensorsFile: @unchecked Sendable {  // immutable after init
    /// A longer header is a corrupt or hostile file; real ones are tens of KB (the safetensors
    /// library uses the same limit).
    public static let maxHeaderBytes = 100_000_000

    public let path: String
    /// String metadata from `__metadata__` (e.g. `format: pt`).
    public let metadata: [String: String]
    /// Tensor names in data-section order.
    public let names: [String]
    /// Non-fatal oddities (gaps between tensors, unused trailing bytes), one sentence each.
    public let warnings: [String]
    /// Size of the JSON header in bytes (without the 8-byte length).
    public let headerLength: Int

    private let mapping: MappedFile
    private let infos: [String: TensorInfo]

    public init(path: String) throws(FormatError) {
        self.path = path
        let file = path
        func fail(_ kind: FormatError.Kind, _ tensor: String? = nil, _ message: String) -> FormatError {
            FormatError(kind, file: file, tensor: tensor, message)
        }
        mapping = try MappedFile(path: path)
        let bytes = mapping.bytes
        guard bytes.count >= 8 else {
            throw fail(.headerLength, nil, "file has \(bytes.count) bytes, expected at least 8 (header length field)")
        }
        let n64 = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard n64 <= UInt64(Self.maxHeaderBytes) else {
            throw fail(.headerLength, nil, "header length \(n64) exceeds the limit of \(Self.maxHeaderBytes) bytes (not a safetensors file?)")
        }
        let n = Int(n64)
        guard 8 + n <= bytes.count else {
            throw fail(.headerLength, nil, "header length \(n) but only \(bytes.count - 8) bytes follow the length field (truncated file?)")
        }
        headerLength = n
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)])
        // The spec requires the header to start with '{'; trailing spaces are padding.
        guard n >= 2, headerBytes[0] == UInt8(ascii: "{") else {
            throw fail(.badHeader, nil, "header does not start with '{' (not a safetensors file?)")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(headerBytes)
        } catch {
            throw fail(.badHeader, nil, "header is not valid JSON: \(error.message) at header byte \(error.offset)")
        }
        guard case let .object(entries) = json else { throw fail(.badHeader, nil, "header is not a JSON object") }

        let dataStart = 8 + n
        let dataSize = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var parsed: [TensorInfo] = []
        for (name, value) in entries {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else {
                    throw fail(.badHeader, nil, "__metadata__ is a \(value.kindName), expected an object of strings")
                }
                for (k, v) in pairs {
                    guard let s = v.stringValue else {
                        throw fail(.badHeader, nil, "__metadata__[\"\(k)\"] is a \(v.kindName), expected a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            parsed.append(try Self.parseEntry(name, value, dataStart: dataStart, dataSize: dataSize, fail: fail))
        }

        // Overlap: sort by start; each non-empty tensor must begin at or after the previous end.
        parsed.sort { ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name) < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name) }
        var warnings: [String] = []
        var cursor = dataStart
        var last: TensorInfo?
        for t in parsed where !t.byteRange.isEmpty {
            if t.byteRange.lowerBound < cursor, let last {
                throw fail(.overlap, t.name,
                           "bytes \(t.byteRange.lowerBound - dataStart)..<\(t.byteRange.upperBound - dataStart) overlap tensor '\(last.name)' (\(last.byteRange.lowerBound - dataStart)..<\(last.byteRange.upperBound - dataStart)) in the data section")
            }
            if t.byteRange.lowerBound > cursor {
                warnings.append("\(t.byteRange.lowerBound - cursor) unused bytes before tensor '\(t.name)'")
            }
            cursor = t.byteRange.upperBound
            last = t
        }
        if cursor < bytes.count {
            warnings.append("\(bytes.count - cursor) unused bytes after the last tensor")
        }
        self.metadata = metadata
        self.names = parsed.map(\.name)
        self.infos = Dictionary(uniqueKeysWithValues: parsed.map { ($0.name, $0) })
        self.warnings = warnings
    }

    private static func parseEntry(_ name: String, _ value: JSONValue, dataStart: Int, dataSize: Int,
                                   fail: (FormatError.Kind, String?, String) -> FormatError) throws(FormatError) -> TensorInfo {
        guard case let .object(fields) = value else {
            throw fail(.badHeader, name, "entry is a \(value.kindName), expected an object with dtype, shape, data_offsets")
        }
        var dtypeName: String?
        var shapeValue: JSONValue?
        var offsetsValue: JSONValue?
        for (k, v) in fields {
            switch k {
            case "dtype":
                guard let s = v.stringValue else { throw fail(.badHeader, name, "dtype is a \(v.kindName), expected a string") }
                dtypeName = s
            case "shape": shapeValue = v
            case "data_offsets": offsetsValue = v
            default: throw fail(.badHeader, name, "unexpected key \"\(k)\" (expected dtype, shape, data_offsets)")
            }
        }
        guard let dtypeName, let shapeValue, let offsetsValue else {
            let missing = [("dtype", dtypeName == nil), ("shape", shapeValue == nil), ("data_offsets", offsetsValue == nil)]
                .filter(\.1).map(\.0)
            throw fail(.badHeader, name, "missing \(missing.joined(separator: ", "))")
        }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            let known = SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail(.unknownDType, name, "dtype \(dtypeName) is not supported (supported: \(known))")
        }
        guard case let .array(dims) = shapeValue else {
            throw fail(.badHeader, name, "shape is a \(shapeValue.kindName), expected an array of non-negative integers")
        }
        var shape: [Int] = []
        var count = 1
        for d in dims {
            guard let v = d.intValue, v >= 0 else {
                throw fail(.badHeader, name, "shape has \(d), expected non-negative integers")
            }
            let (c, overflow) = count.multipliedReportingOverflow(by: v)
            if overflow { throw fail(.shapeMismatch, name, "shape \(shape + [v]) has more elements than fit in Int") }
            shape.append(v)
            count = c
        }
        guard case let .array(offs) = offsetsValue, offs.count == 2,
              let begin = offs[0].intValue, let end = offs[1].intValue, begin >= 0, end >= 0 else {
            throw fail(.badOffsets, name, "data_offsets must be two non-negative integers [begin, end]")
        }
        guard begin <= end else {
            throw fail(.badOffsets, name, "data_offsets [\(begin), \(end)]: begin is after end")
        }
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, needed == end - begin else {
            throw fail(.shapeMismatch, name,
                       "shape \(shape) of \(dtype.rawValue) needs \(overflow ? "more than Int.max" : String(needed)) bytes but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        guard end <= dataSize else {
            throw fail(.truncated, name,
                       "data_offsets [\(begin), \(end)] reach past the data section of \(dataSize) bytes (file truncated?)")
        }
        return TensorInfo(name: name, storageType: dtype, shape: shape,
                          byteRange: (dataStart + begin)..<(dataStart + end))
    }

    /// All tensors in data-section order.
    public var tensors: [TensorInfo] { names.map { infos[$0]! } }

    public func contains(_ name: String) -> Bool { infos[name] != nil }

    public func info(_ name: String) throws(FormatError) -> TensorInfo {
        guard let i = infos[name] else {
            throw FormatError(.missingTensor, file: path, tensor: name, "no such tensor (the file has \(names.count) tensors)")
        }
        return i
    }

    /// The tensor's stored bytes, zero-copy: valid only while this object is alive.
    public func rawBytes(_ name: String) throws(FormatError) -> UnsafeRawBufferPointer {
        let r = try info(name).byteRange
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[r])
    }

    /// The tensor converted to Float (F32 copied; F16, BF16, F64 and integers converted).
    public func floats(_ name: String) throws(FormatError) -> [Float] {
        let t = try info(name)
        let src = UnsafeRawBufferPointer(rebasing: mapping.bytes[t.byteRange])
        let n = t.elementCount
        return [Float](unsafeUninitializedCapacity: n) { dst, initialized in
            Self.convert(src, t.storageType, into: dst)
            initialized = n
        }
    }

    /// Calls `body` with the tensor as Float32. Zero-copy (a view of the mapping) when it is stored
    /// as F32 at a 4-byte-aligned address; otherwise converted into a temporary buffer.
    public func withFloat32<R>(_ name: String, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        let t = try info(name)
        let src = UnsafeRawBufferPointer(rebasing: mapping.bytes[t.byteRange])
        if t.storageType == .f32, let base = src.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            return try body(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: t.elementCount))
        }
        if t.elementCount == 0 { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
        let tmp = try floats(name)
        return try tmp.withUnsafeBufferPointer(body)
    }

    /// Whether `withFloat32` would hand out the mapping itself rather than a copy.
    public func isZeroCopyFloat32(_ name: String) throws(FormatError) -> Bool {
        let t = try info(name)
        guard t.storageType == .f32, let base = mapping.bytes.baseAddress else { return false }
        return Int(bitPattern: base + t.byteRange.lowerBound) % MemoryLayout<Float>.alignment == 0
    }

    private static func convert(_ src: UnsafeRawBufferPointer, _ type: SafetensorsDType, into dst: UnsafeMutableBufferPointer<Float>) {
        let n = dst.count
        switch type {
        case .f32:
            UnsafeMutableRawBufferPointer(dst).copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<(4 * n)]))
        case .f16: convertFloat16ToFloat(src, into: dst)
        case .bf16: convertBFloat16ToFloat(src, into: dst)
        case .f64: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case .i64: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case .i32: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case .i16: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
        case .i8: for i in 0..<n { dst[i] = Float(Int8(bitPattern: src[i])) }
        case .u8: for i in 0..<n { dst[i] = Float(src[i]) }
        case .bool: for i in 0..<n { dst[i] = src[i] != 0 ? 1 : 0 }
        }
    }
}
