import CSideTuneGzip
import Foundation

/// Grey or colour images with integer labels, pixels as bytes: image i occupies
/// `pixels[i * height * width * channels ..< (i + 1) * ...]`, channels last within a pixel
/// (channels = 1 for Fashion-MNIST).
public struct ImageSet: Sendable, Equatable {
    public var pixels: [UInt8]
    public var labels: [Int32]
    public var height: Int
    public var width: Int
    public var channels: Int

    public init(pixels: [UInt8], labels: [Int32], height: Int, width: Int, channels: Int = 1) {
        precondition(pixels.count == labels.count * height * width * channels,
                     "\(pixels.count) pixel bytes for \(labels.count) images of \(height)x\(width)x\(channels)")
        self.pixels = pixels
        self.labels = labels
        self.height = height
        self.width = width
        self.channels = channels
    }

    public var count: Int { labels.count }
    public var imageSize: Int { height * width * channels }

    public func image(_ i: Int) -> ArraySlice<UInt8> { pixels[(i * imageSize)..<((i + 1) * imageSize)] }

    /// The images at `indices`, in that order.
    public func subset(_ indices: [Int]) -> ImageSet {
        var p: [UInt8] = []
        p.reserveCapacity(indices.count * imageSize)
        for i in indices { p += image(i) }
        return ImageSet(pixels: p, labels: indices.map { labels[$0] }, height: height, width: width, channels: channels)
    }

    /// Indices of each class 0..<classes, ascending.
    public func indicesByClass(classes: Int) -> [[Int]] {
        var out = [[Int]](repeating: [], count: classes)
        for (i, l) in labels.enumerated() where Int(l) < classes && l >= 0 { out[Int(l)].append(i) }
        return out
    }
}

/// gzip via the system zlib (already required on Linux by ZIPFoundation): checks the CRC-32 and
/// length trailer; truncated or corrupt streams are errors naming the file.
public enum Gzip {
    /// True when `bytes` starts with the gzip magic 1f 8b.
    public static func isGzip(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b }

    public static func decompress(_ bytes: [UInt8], file: String = "<memory>", maxBytes: Int = 1 << 32) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var outLen = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer { b in
            sidetune_gunzip(b.baseAddress, b.count, maxBytes, &out, &outLen, &err, err.count)
        }
        guard rc == 0, let out else {
            let message = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw DataError(file: file, "gzip: \(message)")
        }
        defer { sidetune_gzip_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: outLen))
    }

    /// File bytes, decompressed when the file is gzip (by magic, not by name).
    public static func readMaybeCompressed(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(file: path, "cannot read file")
        }
        let bytes = [UInt8](data)
        return isGzip(bytes) ? try decompress(bytes, file: path) : bytes
    }
}

/// IDX files (the MNIST format): magic 00 00 <type> <rank>, rank big-endian u32 dimensions, then
/// the data. Only unsigned bytes (type 0x08) are read; images are rank 3, labels rank 1.
public enum IDX {
    public static let imagesMagic: UInt32 = 0x0000_0803
    public static let labelsMagic: UInt32 = 0x0000_0801

    /// (dimensions, data bytes) of an unsigned-byte IDX file held in memory.
    public static func parse(_ b: [UInt8], file: String, expectRank: Int? = nil) throws -> (dims: [Int], data: ArraySlice<UInt8>) {
        guard b.count >= 4 else { throw DataError(file: file, "IDX: \(b.count) bytes, too short for the 4-byte magic") }
        guard b[0] == 0, b[1] == 0 else {
            throw DataError(file: file, String(format: "IDX: bad magic %02x %02x %02x %02x (expected 00 00 08 <rank>)", b[0], b[1], b[2], b[3]))
        }
        guard b[2] == 0x08 else { throw DataError(file: file, String(format: "IDX: element type 0x%02x is not unsigned byte (0x08)", b[2])) }
        let rank = Int(b[3])
        if let expectRank, rank != expectRank {
            throw DataError(file: file, "IDX: rank \(rank), expected \(expectRank) (magic \(expectRank == 3 ? imagesMagic : labelsMagic))")
        }
        let headerBytes = 4 + 4 * rank
        guard b.count >= headerBytes else { throw DataError(file: file, "IDX: truncated header (\(b.count) bytes, rank \(rank) needs \(headerBytes))") }
        var dims: [Int] = []
        var total = 1
        for d in 0..<rank {
            let o = 4 + 4 * d
            let v = Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
            dims.append(v)
            let (product, overflow) = total.multipliedReportingOverflow(by: v)
            guard !overflow else {
                throw DataError(file: file,
                                "IDX: dims \(dims) need more than \(Int.max) bytes, file has \(b.count - headerBytes)")
            }
            total = product
        }
        let have = b.count - headerBytes
        guard have >= total else {
            throw DataError(file: file, "IDX: truncated data: dims \(dims) need \(total) bytes, file has \(have)")
        }
        guard have == total else { throw DataError(file: file, "IDX: \(have - total) unexpected bytes after the data of dims \(dims)") }
        return (dims, b[headerBytes...])
    }

    /// Images [N, H, W] and labels [N] from two IDX files (gzip or plain).
    public static func load(images: String, labels: String) throws -> ImageSet {
        let (idims, ipix) = try parse(Gzip.readMaybeCompressed(images), file: images, expectRank: 3)
        let (ldims, lbytes) = try parse(Gzip.readMaybeCompressed(labels), file: labels, expectRank: 1)
        guard (1...1 << 16).contains(idims[1]), (1...1 << 16).contains(idims[2]) else {
            throw DataError(file: images,
                            "IDX: images of \(idims[1])x\(idims[2]) pixels, expected 1...65536 on each side")
        }
        guard idims[0] == ldims[0] else {
            throw DataError(file: labels, "IDX: \(ldims[0]) labels for \(idims[0]) images in \(images)")
        }
        return ImageSet(pixels: Array(ipix), labels: lbytes.map { Int32($0) }, height: idims[1], width: idims[2])
    }
}

/// NumPy .npy arrays (format versions 1-3): little-endian float32 ('<f4') or uint8 ('|u1'), C
/// order. Fortran order and other dtypes are rejected by name.
public enum NPY {
    public enum Values: Equatable, Sendable {
        case float32([Float])
        case uint8([UInt8])

        public var floats: [Float] {
            switch self {
            case .float32(let f): return f
            case .uint8(let u): return u.map { Float($0) }
            }
        }
    }

    public static func load(_ path: String) throws -> (shape: [Int], values: Values) {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError(file: path, "cannot read file") }
        return try parse([UInt8](data), file: path)
    }

    public static func parse(_ b: [UInt8], file: String) throws -> (shape: [Int], values: Values) {
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        guard b.count >= 10, Array(b[0..<6]) == magic else { throw DataError(file: file, "NPY: missing \\x93NUMPY magic") }
        let major = b[6]
        let headerLen: Int, start: Int
        switch major {
        case 1: headerLen = Int(b[8]) | Int(b[9]) << 8; start = 10
        case 2, 3:
            guard b.count >= 12 else { throw DataError(file: file, "NPY: truncated header length") }
            headerLen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        default: throw DataError(file: file, "NPY: format version \(major) is not supported (1-3)")
        }
        guard b.count >= start + headerLen else { throw DataError(file: file, "NPY: truncated header (\(headerLen) bytes announced)") }
        let header = String(decoding: b[start..<(start + headerLen)], as: UTF8.self)
        func value(_ key: String) throws -> String {
            guard let r = header.range(of: "'\(key)':") else { throw DataError(file: file, "NPY: header has no '\(key)': \(header)") }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        let descrRaw = try value("descr")
        guard descrRaw.first == "'", let close = descrRaw.dropFirst().firstIndex(of: "'") else {
            throw DataError(file: file, "NPY: cannot read descr in \(header)")
        }
        let descr = String(descrRaw[descrRaw.index(after: descrRaw.startIndex)..<close])
        if try value("fortran_order").hasPrefix("True") { throw DataError(file: file, "NPY: Fortran order is not supported; save with np.ascontiguousarray") }
        let shapeRaw = try value("shape")
        guard shapeRaw.first == "(", let end = shapeRaw.firstIndex(of: ")") else { throw DataError(file: file, "NPY: cannot read shape in \(header)") }
        let shape = try shapeRaw[shapeRaw.index(after: shapeRaw.startIndex)..<end].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { s -> Int in
                guard let v = Int(s), v >= 0 else { throw DataError(file: file, "NPY: bad dimension '\(s)' in \(header)") }
                return v
            }
        var n = 1
        for d in shape {
            let (product, overflow) = n.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw DataError(file: file, "NPY: shape \(shape) holds more than \(Int.max) elements")
            }
            n = product
        }
        let body = b[(start + headerLen)...]
        switch descr {
        case "<f4":
            let (bytes, overflow) = n.multipliedReportingOverflow(by: 4)
            guard !overflow, body.count == bytes else {
                let needs = overflow ? "more than \(Int.max)" : "\(bytes)"
                throw DataError(file: file, "NPY: shape \(shape) float32 needs \(needs) bytes, file has \(body.count)")
            }
            var f = [Float](repeating: 0, count: n)
            f.withUnsafeMutableBytes { dst in body.withUnsafeBytes { dst.copyMemory(from: $0) } }
            return (shape, .float32(f))
        case "|u1", "<u1", "u1":
            guard body.count == n else { throw DataError(file: file, "NPY: shape \(shape) uint8 needs \(n) bytes, file has \(body.count)") }
            return (shape, .uint8(Array(body)))
        default:
            throw DataError(file: file, "NPY: dtype '\(descr)' is not supported (float32 '<f4' or uint8 '|u1')")
        }
    }
}

/// Images as CSV rows `label,p0,p1,...` (Kaggle's fashion-mnist_train.csv); an optional header
/// row (first field not a number) is skipped. Pixels must be integers 0-255.
public enum CSVImages {
    public static func load(_ path: String, height: Int, width: Int) throws -> ImageSet {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError(file: path, "cannot read file") }
        return try parse(String(decoding: data, as: UTF8.self), file: path, height: height, width: width)
    }

    public static func parse(_ text: String, file: String, height: Int, width: Int) throws -> ImageSet {
        let n = height * width
        var pixels: [UInt8] = [], labels: [Int32] = []
        var lineNo = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline }) { // "\r\n" is one Character
            lineNo += 1
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine[...]
            if line.allSatisfy({ $0 == " " }) { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            if lineNo == 1, Int(fields[0].trimmingCharacters(in: .whitespaces)) == nil { continue } // header
            guard fields.count == n + 1 else {
                throw DataError(file: file, line: lineNo, "expected a label and \(n) pixels (\(height)x\(width)), found \(fields.count) fields")
            }
            guard let label = Int32(fields[0].trimmingCharacters(in: .whitespaces)), label >= 0 else {
                throw DataError(file: file, line: lineNo, column: 1, "label '\(fields[0])' is not a non-negative integer")
            }
            labels.append(label)
            for (j, f) in fields.dropFirst().enumerated() {
                guard let v = Int(f.trimmingCharacters(in: .whitespaces)), (0...255).contains(v) else {
                    throw DataError(file: file, line: lineNo, column: j + 2, "pixel '\(f)' is not an integer 0-255")
                }
                pixels.append(UInt8(v))
            }
        }
        return ImageSet(pixels: pixels, labels: labels, height: height, width: width)
    }
}
