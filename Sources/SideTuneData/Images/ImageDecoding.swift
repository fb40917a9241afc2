import CSideTuneImage
import Foundation
import SideTuneEngine

/// One image of any size as a file holds it: 8-bit samples, channels last, 1 (grey) or 3 (RGB).
public struct DecodedImage: Sendable, Equatable {
    public var pixels: [UInt8]
    public var width: Int
    public var height: Int
    public var channels: Int

    public init(pixels: [UInt8], width: Int, height: Int, channels: Int) {
        precondition(pixels.count == width * height * channels, "\(pixels.count) bytes for \(width)x\(height)x\(channels)")
        self.pixels = pixels
        self.width = width
        self.height = height
        self.channels = channels
    }
}

/// Image files by content, whatever their extension says: JPEG (libjpeg-turbo; EXIF orientation
/// applied), PNG (libpng; palette, grey, alpha dropped), Netpbm maps and NumPy uint8 arrays.
public enum ImageDecoder {
    public static let extensions = ["jpg", "jpeg", "png", "pgm", "ppm", "pnm", "npy"]
    /// Larger images are refused before they are decoded (a header can claim any size).
    public static let maxPixels = 1 << 27

    public enum Format: String, Sendable { case jpeg, png, netpbm, npy }

    /// The format `bytes` start with, if one of ours.
    public static func format(of bytes: some Collection<UInt8>) -> Format? {
        let b = Array(bytes.prefix(8))
        if b.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if b.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return .png }
        if b.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) { return .npy }
        if b.count >= 2 && b[0] == UInt8(ascii: "P") && [UInt8(ascii: "2"), UInt8(ascii: "3"), UInt8(ascii: "5"), UInt8(ascii: "6")].contains(b[1]) {
            return .netpbm
        }
        return nil
    }

    /// Reads and decodes `path`. `minSide` > 0 lets JPEG decoding scale down in the DCT while the
    /// shorter side stays >= minSide (what the preprocessing will resize to anyway).
    public static func decode(file path: String, minSide: Int = 0) throws -> DecodedImage {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError(file: path, "cannot open image: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw DataError(file: path, "not a regular file") }
        let size = Int(st.st_size)
        guard size > 0 else { throw DataError(file: path, "empty file") }
        var bytes = [UInt8](repeating: 0, count: size)
        let got = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, size) }
        guard got == size else { throw DataError(file: path, "cannot read image: \(got < 0 ? String(cString: strerror(errno)) : "short read")") }
        return try decode(bytes, file: path, minSide: minSide)
    }

    public static func decode(_ bytes: [UInt8], file: String, minSide: Int = 0) throws -> DecodedImage {
        guard let format = format(of: bytes) else {
            throw DataError(file: file, "not an image SideTune reads: JPEG, PNG, PGM/PPM or NPY (by content, not extension)")
        }
        switch format {
        case .jpeg, .png:
            var img = st_image()
            let status = bytes.withUnsafeBufferPointer { b in
                format == .jpeg ? st_decode_jpeg(b.baseAddress, b.count, Int32(minSide), Int32(maxPixels), &img)
                                : st_decode_png(b.baseAddress, b.count, Int32(maxPixels), &img)
            }
            defer { st_image_free(&img) }
            guard status == 0, let p = img.pixels else {
                let message = withUnsafeBytes(of: img.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                throw DataError(file: file, message.isEmpty ? "\(format.rawValue): cannot decode" : message)
            }
            let (w, h, c) = (Int(img.width), Int(img.height), Int(img.channels))
            return DecodedImage(pixels: Array(UnsafeBufferPointer(start: p, count: w * h * c)), width: w, height: h, channels: c)
        case .netpbm:
            return try single(Netpbm.parse(bytes, file: file), file: file)
        case .npy:
            let (shape, values) = try NPY.parse(bytes, file: file)
            guard case .uint8(let v) = values else { throw DataError(file: file, "NPY: images must be uint8 (0-255), not float32") }
            switch shape.count {
            case 2 where shape[0] > 0 && shape[1] > 0:
                return DecodedImage(pixels: v, width: shape[1], height: shape[0], channels: 1)
            case 3 where (shape[2] == 1 || shape[2] == 3) && shape[0] > 0 && shape[1] > 0:
                return DecodedImage(pixels: v, width: shape[1], height: shape[0], channels: shape[2])
            default:
                throw DataError(file: file, "NPY: shape \(shape) is not one image ([H, W] or [H, W, 1|3])")
            }
        }
    }

    static func single(_ set: ImageSet, file: String) throws -> DecodedImage {
        guard set.count == 1 else { throw DataError(file: file, "holds \(set.count) images; one file per image is expected") }
        return DecodedImage(pixels: set.pixels, width: set.width, height: set.height, channels: set.channels)
    }
}

/// How an image of any size becomes the backbone's square input, as DINOv2's image processor
/// does it (at 224: the shorter side resized to 256, bicubic, then the centre 224 x 224): the
/// shorter side to round(size * 256 / 224) with Pillow's antialiased bicubic, then the centre
/// size x size crop, grey repeated to RGB, ImageNet mean and standard deviation.
public struct CentreCropPreprocessor: Sendable {
    public var size: Int
    public var mean: [Float]
    public var std: [Float]

    public init(size: Int, mean: [Float] = ImagePreprocessor.imageNetMean, std: [Float] = ImagePreprocessor.imageNetStd) {
        self.size = size
        self.mean = mean
        self.std = std
    }

    /// The side the shorter side is resized to before the crop.
    public var resizeSide: Int { Int((Double(size) * 256 / 224).rounded()) }

    /// Writes `image` as [channels, size, size] floats at `out`.
    public func write(_ image: DecodedImage, into out: UnsafeMutablePointer<Float>) {
        let (w, h) = (image.width, image.height)
        let r = resizeSide
        let (rw, rh) = w <= h ? (r, max(r, Int((Double(h) * Double(r) / Double(w)).rounded())))
                              : (max(r, Int((Double(w) * Double(r) / Double(h)).rounded())), r)
        let left = (rw - size) / 2, top = (rh - size) / 2
        let status = image.pixels.withUnsafeBufferPointer { p in
            st_resize_crop_normalize(p.baseAddress, Int32(w), Int32(h), Int32(image.channels), Int32(rw), Int32(rh), Int32(left), Int32(top),
                                     Int32(size), Int32(size), Int32(ST_FILTER_BICUBIC), mean, std, Int32(mean.count), out)
        }
        if status != 0 { OutOfMemory.fail(rw * 4 * size, what: "resizing an image") }
    }

    /// Decodes the files at `paths` and preprocesses them into [B, channels, size, size], in
    /// parallel. A file that cannot be decoded is an error naming it.
    public func batch(_ paths: [String]) throws -> Tensor {
        let plane = mean.count * size * size
        let t = Tensor(shape: [paths.count, mean.count, size, size])
        let failures = FailureList()
        let p = t.data
        ThreadPool.shared.parallelFor(paths.count) { b in
            do {
                write(try ImageDecoder.decode(file: paths[b], minSide: resizeSide), into: p + b * plane)
            } catch {
                failures.add(b, error)
            }
        }
        if let error = failures.first { throw error }
        return t
    }
}

/// Errors from parallel work; `first` is the lowest index's.
final class FailureList: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(Int, any Error)] = []
    func add(_ index: Int, _ error: any Error) { lock.lock(); items.append((index, error)); lock.unlock() }
    var first: (any Error)? { lock.lock(); defer { lock.unlock() }; return items.min { $0.0 < $1.0 }?.1 }
}

/// How images become the backbone's square input; recorded in checkpoints so that eval and predict
/// preprocess as training did.
public enum ImagePipeline: String, Codable, Sendable {
    /// Stretched to size x size (bilinear): fixed-size sets such as Fashion-MNIST's 28 x 28 images.
    case resize
    /// The shorter side resized, then the centre crop (`CentreCropPreprocessor`): image files of
    /// any size and shape.
    case centreCrop = "centre-crop"
}

/// Images of any size to a [B, 3, size, size] batch by `pipeline`.
public struct ImageInput: Sendable {
    public var size: Int
    public var pipeline: ImagePipeline
    /// The backbone's patch side (sizes must be multiples of it).
    public var patch: Int

    public init(size: Int, pipeline: ImagePipeline, patch: Int = 14) {
        self.size = size
        self.pipeline = pipeline
        self.patch = patch
    }

    public func pixels(_ images: [DecodedImage]) -> Tensor {
        let t = Tensor(shape: [images.count, 3, size, size])
        let plane = 3 * size * size, p = t.data
        let centre = CentreCropPreprocessor(size: size), stretch = ImagePreprocessor(size: size)
        ThreadPool.shared.parallelFor(images.count) { b in
            let image = images[b]
            switch pipeline {
            case .centreCrop: centre.write(image, into: p + b * plane)
            case .resize:
                let set = ImageSet(pixels: image.pixels, labels: [-1], height: image.height, width: image.width, channels: image.channels)
                stretch.image(set, 0).values.withUnsafeBufferPointer { (p + b * plane).update(from: $0.baseAddress!, count: plane) }
            }
        }
        return t
    }
}

extension ImageSet {
    /// Image `i` as a decoded image.
    public func decoded(_ i: Int) -> DecodedImage {
        DecodedImage(pixels: Array(image(i)), width: width, height: height, channels: channels)
    }
}
