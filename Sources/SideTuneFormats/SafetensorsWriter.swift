#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SideTuneEngine

/// Collects named tensors and string metadata and writes one safetensors file.
///
/// Output is deterministic: header keys sorted by name; data ordered by element size (largest
/// first) then name, so every tensor starts aligned to its element size (the header is padded
/// with spaces to a multiple of 8, as the spec allows) and F32 tensors read back zero-copy.
/// The file appears atomically: written to a temporary file in the same folder, fsynced, renamed.
public struct SafetensorsWriter: Sendable {
    private struct Entry: Sendable {
        let storageType: SafetensorsDType
        let shape: [Int]
        let bytes: [UInt8]
    }

    public var metadata: [String: String]
    private var entries: [String: Entry] = [:]

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    public var names: [String] { entries.keys.sorted() }

    /// Adds `values` (row-major, `shape`) stored as `dtype` (F32, F16 or BF16; halves round to
    /// nearest even).
    public mutating func add(_ name: String, floats values: [Float], shape: [Int], as dtype: DType = .float32) throws(FormatError) {
        guard let st = SafetensorsDType(dtype) else {
            throw FormatError(.unsupported, file: "<writer>", tensor: name, "cannot store \(dtype.rawValue) in safetensors; use F32, F16 or BF16")
        }
        let bytes: [UInt8]
        switch st {
        case .f16: bytes = float16Bits(of: values).withUnsafeBytes { Array($0) }
        case .bf16: bytes = bfloat16Bits(of: values).withUnsafeBytes { Array($0) }
        default: bytes = values.withUnsafeBytes { Array($0) }
        }
        try add(name, rawBytes: bytes, storageType: st, shape: shape)
    }

    /// Adds already-encoded little-endian bytes.
    public mutating func add(_ name: String, rawBytes: [UInt8], storageType: SafetensorsDType, shape: [Int]) throws(FormatError) {
        func fail(_ m: String) -> FormatError { FormatError(.unsupported, file: "<writer>", tensor: name, m) }
        if name == "__metadata__" || name.isEmpty { throw fail("reserved or empty tensor name") }
        if entries[name] != nil { throw fail("added twice") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw fail("negative dimension in shape \(shape)") }
        let needed = shape.reduce(1, *) * storageType.size
        guard needed == rawBytes.count else {
            throw FormatError(.shapeMismatch, file: "<writer>", tensor: name,
                              "shape \(shape) of \(storageType.rawValue) needs \(needed) bytes, got \(rawBytes.count)")
        }
        entries[name] = Entry(storageType: storageType, shape: shape, bytes: rawBytes)
    }

    /// Data-section order: larger elements first keeps every tensor aligned to its element size.
    private var dataOrder: [String] {
        entries.keys.sorted { a, b in
            let sa = entries[a]!.storageType.size, sb = entries[b]!.storageType.size
            return sa != sb ? sa > sb : a < b
        }
    }

    /// The 8-byte length plus the padded JSON header.
    public func headerBytes() -> [UInt8] {
        var offsets: [String: (Int, Int)] = [:]
        var cursor = 0
        for name in dataOrder {
            let n = entries[name]!.bytes.count
            offsets[name] = (cursor, cursor + n)
            cursor += n
        }
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(JSONWriter.quote($0)):\(JSONWriter.quote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        for name in entries.keys.sorted() {
            let e = entries[name]!
            let (b, en) = offsets[name]!
            let shape = e.shape.map(String.init).joined(separator: ",")
            parts.append("\(JSONWriter.quote(name)):{\"dtype\":\"\(e.storageType.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(b),\(en)]}")
        }
        var json = Array("{\(parts.joined(separator: ","))}".utf8)
        // Pad so the data section starts 8-aligned (8 + json.count is a multiple of 8).
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        let len = UInt64(json.count).littleEndian
        return withUnsafeBytes(of: len) { Array($0) } + json
    }

    /// Writes the file atomically: a reader sees either the old file or the complete new one.
    public func write(to path: String) throws(FormatError) {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let tmp = "\(dir)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func ioError(_ what: String) -> FormatError {
            FormatError(.io, file: path, "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw ioError("cannot create temporary file \(tmp)") }
        var ok = false
        defer {
            if !ok { unlink(tmp) }
        }
        do {
            defer { close(fd) }
            try Self.writeAll(fd, headerBytes(), ioError)
            for name in dataOrder { try Self.writeAll(fd, entries[name]!.bytes, ioError) }
            if fsync(fd) != 0 { throw ioError("fsync failed") }
        }
        if rename(tmp, path) != 0 { throw ioError("cannot rename \(tmp) into place") }
        ok = true
        // fsync the folder so the rename itself survives a crash.
        let dfd = open(dir, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ ioError: (String) -> FormatError) throws(FormatError) {
        // withUnsafeBytes only rethrows untyped errors, so report failure as a value.
        let failed = bytes.withUnsafeBytes { (buf: UnsafeRawBufferPointer) -> Bool in
            var done = 0
            while done < buf.count {
                let n = sysWrite(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return true
                }
                done += n
            }
            return false
        }
        if failed { throw ioError("write failed") }
    }
}

#if canImport(Glibc)
private let sysWrite = Glibc.write
#elseif canImport(Darwin)
private let sysWrite = Darwin.write
#endif
