import Foundation

/// What a feature-cache file built ahead of training holds (`sidetune cache build`, one shard of
/// the training examples per process, and `cache merge`), written beside it as `<file>.json`:
/// which examples, their token lengths, the taps and width, and what produced them (the backbone,
/// its precision, the data and split). Training with `--feature-cache` checks all of it against
/// the run, so a cache of another backbone, data, split or precision is refused, not read.
public struct FeatureCacheManifest: Codable, Equatable, Sendable {
    public static let currentFormat = "sidetune-feature-cache-1"
    public var format = currentFormat
    /// This part is shard `shard` of `shards` (a merged cache: 0 of 1).
    public var shard: Int
    public var shards: Int
    /// The training examples [first, first + count) of `lengths.count`, in the split's order.
    public var first: Int
    public var count: Int
    /// Token lengths of every training example of the split (not only this part's).
    public var lengths: [Int]
    public var taps: [Int]
    public var width: Int
    public var backboneSHA256: String
    /// The frozen forward's products ("f32", "bf16") and layout (packed real tokens or padded).
    public var backbonePrecision: String
    public var packed: Bool
    /// The training split ("N examples, hash H", as a run's fingerprint gives it) and the data's
    /// identity (file, limits, max length).
    public var split: String
    public var data: [String: String]
    /// The file's size and SHA-256.
    public var bytes: Int
    public var sha256: String

    public init(shard: Int, shards: Int, first: Int, count: Int, lengths: [Int], taps: [Int], width: Int, backboneSHA256: String,
                backbonePrecision: String, packed: Bool, split: String, data: [String: String], bytes: Int, sha256: String) {
        self.shard = shard; self.shards = shards; self.first = first; self.count = count; self.lengths = lengths
        self.taps = taps; self.width = width; self.backboneSHA256 = backboneSHA256; self.backbonePrecision = backbonePrecision
        self.packed = packed; self.split = split; self.data = data; self.bytes = bytes; self.sha256 = sha256
    }

    /// The manifest of the cache file at `url` (`<url>.json`).
    public static func url(for cache: URL) -> URL { URL(fileURLWithPath: cache.path + ".json") }

    public static func read(for cache: URL) throws -> FeatureCacheManifest {
        let url = url(for: cache)
        let m: FeatureCacheManifest
        do { m = try JSONDecoder().decode(FeatureCacheManifest.self, from: Data(contentsOf: url)) } catch {
            throw TrainerError("\(url.path): not a feature-cache manifest (\(error)); build caches with `sidetune cache build`")
        }
        guard m.format == currentFormat else { throw TrainerError("\(url.path): format \(m.format), this SideTune reads \(currentFormat)") }
        guard m.shards >= 1, (0..<m.shards).contains(m.shard), m.first >= 0, m.count >= 0, m.first + m.count <= m.lengths.count,
              m.width >= 1, !m.taps.isEmpty else {
            throw TrainerError("\(url.path): shard \(m.shard) of \(m.shards), examples \(m.first)+\(m.count) of \(m.lengths.count): inconsistent")
        }
        return m
    }

    public func write(for cache: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: Self.url(for: cache), options: .atomic)
    }

    /// Bytes of the examples [first, first + count): their tokens x taps x width in bf16.
    public var expectedBytes: Int { lengths[first..<(first + count)].reduce(0, +) * taps.count * width * 2 }
}
