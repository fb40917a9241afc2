import SideTuneEngine

/// One image as floats, channels first: `values[(c * height + y) * width + x]`.
public struct FloatImage: Sendable, Equatable {
    public var channels: Int
    public var height: Int
    public var width: Int
    public var values: [Float]

    public init(channels: Int, height: Int, width: Int, values: [Float]) {
        precondition(values.count == channels * height * width, "\(values.count) values for \(channels)x\(height)x\(width)")
        self.channels = channels
        self.height = height
        self.width = width
        self.values = values
    }

    /// Bytes (channels last, as stored in `ImageSet`) scaled to [0, 1].
    public init<C: Collection>(bytes: C, height: Int, width: Int, channels: Int = 1) where C.Element == UInt8 {
        precondition(bytes.count == height * width * channels, "\(bytes.count) bytes for \(height)x\(width)x\(channels)")
        var v = [Float](repeating: 0, count: bytes.count)
        var i = 0
        for b in bytes {
            let c = i % channels, p = i / channels
            v[c * height * width + p] = Float(b) / 255
            i += 1
        }
        self.init(channels: channels, height: height, width: width, values: v)
    }
}

public enum ResizeFilter: String, Sendable, Codable {
    /// Linear interpolation, half-pixel centres, edge clamp, no antialias (torch
    /// `F.interpolate(mode="bilinear", align_corners=False)`).
    case bilinear
    /// Keys cubic, a = -0.75, half-pixel centres, edge-clamped taps, no antialias (torch "bicubic").
    case bicubic
}

/// Separable resampling weights: for each output index, (first input index, weights) with the
/// input indices already clamped into range.
enum Resample {
    /// [out][(index, weight)]
    static func taps(inSize: Int, outSize: Int, filter: ResizeFilter) -> [[(Int, Float)]] {
        let scale = Float(inSize) / Float(outSize)
        return (0..<outSize).map { i -> [(Int, Float)] in
            let raw = (Float(i) + 0.5) * scale - 0.5
            switch filter {
            case .bilinear:
                let x = max(raw, 0) // torch clamps negative source coordinates for linear modes
                let x0 = min(Int(x), inSize - 1), x1 = min(x0 + 1, inSize - 1)
                let l = x - Float(x0)
                return [(x0, 1 - l), (x1, l)]
            case .bicubic:
                let x0 = raw.rounded(.down), t = raw - x0
                let a: Float = -0.75
                func k(_ d: Float) -> Float {
                    let d = abs(d)
                    if d <= 1 { return ((a + 2) * d - (a + 3)) * d * d + 1 }
                    if d < 2 { return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a }
                    return 0
                }
                return [k(1 + t), k(t), k(1 - t), k(2 - t)].enumerated().map { n, w in
                    (min(max(Int(x0) - 1 + n, 0), inSize - 1), w)
                }
            }
        }
    }
}

extension FloatImage {
    /// Resized to height x width (rows first, then columns; each channel independently).
    public func resized(height oh: Int, width ow: Int, filter: ResizeFilter = .bilinear) -> FloatImage {
        if oh == height && ow == width { return self }
        let ty = Resample.taps(inSize: height, outSize: oh, filter: filter)
        let tx = Resample.taps(inSize: width, outSize: ow, filter: filter)
        var out = [Float](repeating: 0, count: channels * oh * ow)
        var rows = [Float](repeating: 0, count: oh * width)
        for c in 0..<channels {
            let base = c * height * width
            // Vertical pass: [oh, width]
            for y in 0..<oh {
                for x in 0..<width {
                    var s: Float = 0
                    for (iy, w) in ty[y] { s += w * values[base + iy * width + x] }
                    rows[y * width + x] = s
                }
            }
            // Horizontal pass: [oh, ow]
            for y in 0..<oh {
                for x in 0..<ow {
                    var s: Float = 0
                    for (ix, w) in tx[x] { s += w * rows[y * width + ix] }
                    out[(c * oh + y) * ow + x] = s
                }
            }
        }
        return FloatImage(channels: channels, height: oh, width: ow, values: out)
    }

    /// A grey image repeated into `count` channels (no-op for colour images).
    public func repeatingChannels(_ count: Int = 3) -> FloatImage {
        guard channels == 1 else { return self }
        return FloatImage(channels: count, height: height, width: width, values: Array((0..<count).map { _ in values }.joined()))
    }

    /// (x - mean[c]) / std[c] per channel.
    public func normalized(mean: [Float], std: [Float]) -> FloatImage {
        precondition(mean.count == channels && std.count == channels, "mean/std need \(channels) values")
        var v = values
        let plane = height * width
        for c in 0..<channels { for i in 0..<plane { v[c * plane + i] = (v[c * plane + i] - mean[c]) / std[c] } }
        return FloatImage(channels: channels, height: height, width: width, values: v)
    }

    public func flippedHorizontally() -> FloatImage {
        var v = values
        for c in 0..<channels { for y in 0..<height { for x in 0..<width {
            v[(c * height + y) * width + x] = values[(c * height + y) * width + (width - 1 - x)]
        } } }
        return FloatImage(channels: channels, height: height, width: width, values: v)
    }

    /// The window [top, top+h) x [left, left+w) of this image padded by `padding` zeros on every side.
    public func cropped(top: Int, left: Int, height h: Int, width w: Int, padding: Int = 0) -> FloatImage {
        var v = [Float](repeating: 0, count: channels * h * w)
        for c in 0..<channels { for y in 0..<h { for x in 0..<w {
            let sy = top + y - padding, sx = left + x - padding
            if sy >= 0 && sy < height && sx >= 0 && sx < width { v[(c * h + y) * w + x] = values[(c * height + sy) * width + sx] }
        } } }
        return FloatImage(channels: channels, height: h, width: w, values: v)
    }
}

/// The pipeline that turns stored images into backbone input: bytes / 255 -> (augment) -> resize
/// to `size` -> grey to 3 channels -> ImageNet mean/std. Augmentation (training only): random
/// crop of the source size from the image zero-padded by `cropPadding`, and a horizontal flip
/// with probability 1/2, both drawn from `seed` and the image's index so a run is reproducible.
public struct ImagePreprocessor: Sendable {
    public static let imageNetMean: [Float] = [0.485, 0.456, 0.406]
    public static let imageNetStd: [Float] = [0.229, 0.224, 0.225]

    public var size: Int
    public var filter: ResizeFilter
    public var mean: [Float]
    public var std: [Float]
    public var flip: Bool
    /// 0 turns random cropping off.
    public var cropPadding: Int

    public init(size: Int = 224, filter: ResizeFilter = .bilinear, mean: [Float] = imageNetMean, std: [Float] = imageNetStd,
                flip: Bool = false, cropPadding: Int = 0) {
        self.size = size
        self.filter = filter
        self.mean = mean
        self.std = std
        self.flip = flip
        self.cropPadding = cropPadding
    }

    /// One image of `set` -> [3, size, size]. `augmentSeed` nil: no augmentation.
    public func image(_ set: ImageSet, _ index: Int, augmentSeed: UInt64? = nil) -> FloatImage {
        var img = FloatImage(bytes: set.image(index), height: set.height, width: set.width, channels: set.channels)
        if let seed = augmentSeed {
            var rng = SplitMix64(seed: seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
            if cropPadding > 0 {
                let top = rng.nextInt(below: 2 * cropPadding + 1), left = rng.nextInt(below: 2 * cropPadding + 1)
                img = img.cropped(top: top, left: left, height: set.height, width: set.width, padding: cropPadding)
            }
            if flip && rng.next() & 1 == 1 { img = img.flippedHorizontally() }
        }
        return img.resized(height: size, width: size, filter: filter).repeatingChannels(mean.count).normalized(mean: mean, std: std)
    }

    /// Images at `indices` -> tensor [B, 3, size, size].
    public func batch(_ set: ImageSet, _ indices: [Int], augmentSeed: UInt64? = nil) -> Tensor {
        let c = mean.count, plane = c * size * size
        let t = Tensor(shape: [indices.count, c, size, size])
        let p = t.data
        ThreadPool.shared.parallelFor(indices.count) { b in
            let img = image(set, indices[b], augmentSeed: augmentSeed)
            img.values.withUnsafeBufferPointer { (p + b * plane).update(from: $0.baseAddress!, count: plane) }
        }
        return t
    }
}
