import Foundation

/// Unlabelled images read from files for prediction (labels are -1): Netpbm grey or colour maps
/// (.pgm, .ppm, .pnm; binary P5/P6 or plain P2/P3, maxval up to 65535, scaled to bytes) and NumPy
/// uint8 arrays (.npy: [H, W], [H, W, 1|3] for one image, [N, H, W] for N grey images).
/// PNG and JPEG are not decoded here: convert them to PGM/PPM first.
public enum ImageFile {
    public static let extensions = ["pgm", "ppm", "pnm", "npy"]

    public static func load(_ path: String) throws -> ImageSet {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError(file: path, "no such image file (image checkpoints label image files: \(extensions.map { "." + $0 }.joined(separator: ", ")))")
        }
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "pgm", "ppm", "pnm":
            guard let data = FileManager.default.contents(atPath: path) else { throw DataError(file: path, "cannot read file") }
            return try Netpbm.parse([UInt8](data), file: path)
        case "npy": return try fromNPY(path)
        case "png", "jpg", "jpeg":
            throw DataError(file: path, "PNG and JPEG are not decoded by SideTune: convert to PGM or PPM (e.g. `convert image.png image.pgm`)")
        case let ext:
            throw DataError(file: path, "'.\(ext)' is not an image format SideTune reads (\(extensions.map { "." + $0 }.joined(separator: ", ")))")
        }
    }

    static func fromNPY(_ path: String) throws -> ImageSet {
        let (shape, values) = try NPY.load(path)
        guard case .uint8(let bytes) = values else {
            throw DataError(file: path, "NPY: images must be uint8 (0-255), not float32")
        }
        let (n, h, w, c): (Int, Int, Int, Int)
        switch shape.count {
        case 2: (n, h, w, c) = (1, shape[0], shape[1], 1)
        case 3 where shape[2] == 1 || shape[2] == 3: (n, h, w, c) = (1, shape[0], shape[1], shape[2])
        case 3: (n, h, w, c) = (shape[0], shape[1], shape[2], 1)
        default: throw DataError(file: path, "NPY: shape \(shape) is not [H, W], [H, W, 1|3] or [N, H, W]")
        }
        guard h > 0, w > 0 else { throw DataError(file: path, "NPY: empty image, shape \(shape)") }
        return ImageSet(pixels: bytes, labels: [Int32](repeating: -1, count: n), height: h, width: w, channels: c)
    }
}

/// Netpbm grey (P2, P5) and colour (P3, P6) maps: header tokens separated by whitespace, `#`
/// comments to the end of a line, one whitespace byte between the header and binary pixels;
/// 16-bit binary samples are big-endian. Bitmaps (P1, P4) are refused.
public enum Netpbm {
    public static func parse(_ b: [UInt8], file: String) throws -> ImageSet {
        var i = 0
        func token() throws -> String {
            while i < b.count {
                if b[i] == UInt8(ascii: "#") { while i < b.count && b[i] != 0x0A { i += 1 } } else if isSpace(b[i]) { i += 1 } else { break }
            }
            let start = i
            while i < b.count && !isSpace(b[i]) && b[i] != UInt8(ascii: "#") { i += 1 }
            guard i > start else { throw DataError(file: file, "Netpbm: truncated header") }
            return String(decoding: b[start..<i], as: UTF8.self)
        }
        func number(_ what: String, max: Int) throws -> Int {
            let t = try token()
            guard let v = Int(t), v >= 1, v <= max else { throw DataError(file: file, "Netpbm: \(what) '\(t)' is not in 1...\(max)") }
            return v
        }
        let magic = try token()
        guard ["P2", "P3", "P5", "P6"].contains(magic) else {
            throw DataError(file: file, "Netpbm: magic '\(magic.prefix(8))' is not a grey or colour map (P2, P3, P5, P6)")
        }
        let channels = magic == "P3" || magic == "P6" ? 3 : 1
        let width = try number("width", max: 1 << 15), height = try number("height", max: 1 << 15)
        let maxval = try number("maxval", max: 65535)
        let count = width * height * channels
        func scaled(_ v: Int) throws -> UInt8 {
            guard v <= maxval else { throw DataError(file: file, "Netpbm: sample \(v) above maxval \(maxval)") }
            return UInt8((v * 255 + maxval / 2) / maxval)
        }
        var pixels = [UInt8]()
        pixels.reserveCapacity(min(count, b.count)) // a header can claim more samples than the file holds
        if magic == "P2" || magic == "P3" {
            for _ in 0..<count {
                let t = try token()
                guard let v = Int(t), v >= 0 else { throw DataError(file: file, "Netpbm: sample '\(t)' is not a number") }
                pixels.append(try scaled(v))
            }
        } else {
            i += 1 // the single whitespace byte after maxval
            let bytesPerSample = maxval > 255 ? 2 : 1
            guard b.count - i >= count * bytesPerSample else {
                throw DataError(file: file, "Netpbm: truncated pixels: \(width)x\(height)x\(channels) needs \(count * bytesPerSample) bytes, file has \(max(b.count - i, 0))")
            }
            for k in 0..<count {
                let o = i + k * bytesPerSample
                pixels.append(try scaled(bytesPerSample == 2 ? Int(b[o]) << 8 | Int(b[o + 1]) : Int(b[o])))
            }
        }
        return ImageSet(pixels: pixels, labels: [-1], height: height, width: width, channels: channels)
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C }
}
