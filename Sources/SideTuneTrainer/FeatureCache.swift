import Foundation
import SideTuneEngine
import SideTuneMethods

/// Frozen backbone taps of every training example, computed once (epoch 1) and reused: side
/// methods never change the backbone, so its outputs for an example never change either.
///
/// Stored in bf16 in one file of [example][tap][token][width] with only each example's real
/// tokens, memory-mapped; its bytes are counted in the ledger as `cache`.
public final class FeatureCache {
    public let url: URL
    public let width: Int
    public let taps: [Int]
    public let byteCount: Int
    let offsets: [Int]   // byte offset of each example
    let lengths: [Int]
    /// Which examples are stored; a raw buffer so that micro-batches on several threads may store
    /// their own examples at once (a Swift array's element writes would be overlapping accesses).
    private let filled: UnsafeMutableBufferPointer<Bool>
    private let base: UnsafeMutableRawPointer
    private let ledgerEntry: TensorStorage
    /// A cache opened from a finished file (`init(opening:...)`): complete, mapped read-only.
    public let isPrebuilt: Bool

    /// Bytes the cache needs for examples of these token lengths.
    public static func estimateBytes(lengths: [Int], taps: Int, width: Int) -> Int {
        lengths.reduce(0, +) * taps * width * 2
    }

    /// A new cache file at `url`, filled as examples are stored. Its name is removed once mapped
    /// (nothing is left behind however the process ends) unless `keepFile` (a cache built to keep:
    /// `sidetune cache build`).
    public init(url: URL, lengths: [Int], taps: [Int], width: Int, keepFile: Bool = false) throws {
        self.url = url
        isPrebuilt = false
        self.width = width
        self.taps = taps
        self.lengths = lengths
        var o: [Int] = [], acc = 0
        for l in lengths { o.append(acc); acc += l * taps.count * width * 2 }
        offsets = o
        byteCount = max(acc, 2)
        try? FileManager.default.removeItem(at: url)
        let fd = open(url.path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw TrainerError("feature cache: cannot create \(url.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            throw TrainerError("feature cache: cannot size \(url.path) to \(formatBytes(byteCount)): \(String(cString: strerror(errno)))")
        }
        guard let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TrainerError("feature cache: cannot map \(url.path): \(String(cString: strerror(errno)))")
        }
        base = p
        // The mapping keeps the bytes; the name goes now, so however the process ends (a signal,
        // kill -9, running out of memory) no cache file is left behind.
        if !keepFile { unlink(url.path) }
        filled = .allocate(capacity: lengths.count)
        filled.initialize(repeating: false)
        // A zero-copy storage entry whose only job is to count the mapping as cache in the ledger.
        ledgerEntry = TensorStorage(borrowing: p, byteCount: byteCount, dtype: .bfloat16, owner: NSNull(), category: .cache)
    }

    /// A finished cache file (`sidetune cache build` and `cache merge`): every example's taps, mapped
    /// read-only. The file must be exactly the size these lengths, taps and width give.
    public init(opening url: URL, lengths: [Int], taps: [Int], width: Int) throws {
        self.url = url
        self.width = width
        self.taps = taps
        self.lengths = lengths
        isPrebuilt = true
        var o: [Int] = [], acc = 0
        for l in lengths { o.append(acc); acc += l * taps.count * width * 2 }
        offsets = o
        byteCount = max(acc, 2)
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw TrainerError("feature cache \(url.path): cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, Int(info.st_size) == byteCount else {
            throw TrainerError("feature cache \(url.path): \(info.st_size) bytes, but \(lengths.count) examples of \(taps.count) taps x \(width) need \(byteCount)")
        }
        guard let p = mmap(nil, byteCount, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TrainerError("feature cache \(url.path): cannot map: \(String(cString: strerror(errno)))")
        }
        base = p
        filled = .allocate(capacity: lengths.count)
        filled.initialize(repeating: true)
        ledgerEntry = TensorStorage(borrowing: p, byteCount: byteCount, dtype: .bfloat16, owner: NSNull(), category: .cache)
    }

    deinit {
        filled.deallocate()
        munmap(base, byteCount)
    }

    /// Removes cache files and temporary checkpoint folders that processes which no longer run
    /// left in `folder` (`sidetune-taps-PID-*.bin`, `sidetune-best-PID-*`: older SideTunes named
    /// their caches until they ended). Returns the bytes freed.
    @discardableResult
    public static func removeLeftovers(in folder: URL) -> Int {
        let fm = FileManager.default
        var freed = 0
        for entry in (try? fm.contentsOfDirectory(atPath: folder.path)) ?? [] {
            guard entry.hasPrefix("sidetune-taps-") || entry.hasPrefix("sidetune-best-") else { continue }
            let fields = entry.split(separator: "-")
            guard fields.count >= 4, let pid = Int32(fields[2]), pid != getpid() else { continue }
            guard kill(pid, 0) != 0 && errno == ESRCH else { continue } // its process still runs
            let path = folder.appendingPathComponent(entry).path
            freed += ((try? fm.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
            try? fm.removeItem(atPath: path)
        }
        return freed
    }

    public func contains(_ example: Int) -> Bool { filled[example] }
    public var isComplete: Bool { !filled.contains(false) }

    /// Stores example `example`, row `row` of a batch's taps: [B, T, d] padded (its first
    /// `length` tokens), or [1, N, d] packed by `packed` (its segment). Threads may store
    /// different examples at the same time.
    public func store(_ example: Int, row: Int, from batchTaps: [Tensor], packed: TokenSegments? = nil) {
        precondition(!isPrebuilt, "feature cache \(url.path): a prebuilt cache is read-only")
        let l = lengths[example], d = width
        if let packed { precondition(packed.lengths[row] == l, "feature cache: example \(example) has \(l) tokens, its packed segment \(packed.lengths[row])") }
        var dst = base + offsets[example]
        for t in taps {
            let tap = batchTaps[t]
            let src = tap.data + (packed.map { $0.starts[row] } ?? row * tap.shape[1]) * d
            convertFromFloat32(src, to: .bfloat16, count: l * d, into: dst)
            dst += l * d * 2
        }
        filled[example] = true
    }

    /// A batch's taps as its reader takes them: packed, or padded to the batch's longest example
    /// (as a split's `batch(_:)` pads); in bf16 as stored (`bfloat16`) or converted to f32.
    public func taps(for examples: [Int], packed: Bool, totalTaps: Int, bfloat16: Bool = false) -> [Tensor] {
        packed ? packedTaps(for: examples, totalTaps: totalTaps, bfloat16: bfloat16)
            : taps(for: examples, seq: examples.map { lengths[$0] }.max() ?? 0, totalTaps: totalTaps, bfloat16: bfloat16)
    }

    /// Stores a batch's taps as `model.frozenTaps` gave them: example `examples[row]` from row
    /// `row`, its segment of the packed taps when the model reads packed ones.
    public func store<Model: TrainableModel>(_ examples: [Int], from batchTaps: [Tensor], readBy model: Model) {
        let packed = model.readsPackedTaps ? TokenSegments(lengths: examples.map { lengths[$0] }) : nil
        for (row, e) in examples.enumerated() { store(e, row: row, from: batchTaps, packed: packed) }
    }

    /// A batch's taps as `model` reads them: packed or padded, bf16 or f32 (its `readsPackedTaps`,
    /// `readsBFloat16Taps`), one tensor per backbone tap (empty where not held).
    public func taps<Model: TrainableModel>(for examples: [Int], readBy model: Model) -> [Tensor] {
        taps(for: examples, packed: model.readsPackedTaps, totalTaps: model.tapCount, bfloat16: model.readsBFloat16Taps)
    }

    /// The taps of a batch packed [1, N, d]: the examples' real tokens end to end (no padding rows),
    /// as `TokenSegments(lengths:)` of their lengths lays them out. Empty ([0]) for taps not held.
    public func packedTaps(for examples: [Int], totalTaps: Int, bfloat16: Bool = false) -> [Tensor] {
        var starts: [Int] = [], n = 0
        for e in examples { starts.append(n); n += lengths[e] }
        return assemble(totalTaps, shape: [1, n, width], bfloat16: bfloat16, zeroed: false, examples: examples) { row in
            starts[row] * width
        }
    }

    /// Rebuilds the taps [B, seq, d] of a batch from the cache (zeros at padding). Taps this
    /// cache does not hold are left empty ([0]) — side methods never read them.
    public func taps(for examples: [Int], seq: Int, totalTaps: Int, bfloat16: Bool = false) -> [Tensor] {
        assemble(totalTaps, shape: [examples.count, seq, width], bfloat16: bfloat16, zeroed: true, examples: examples,
                 maxTokens: seq) { row in row * seq * width }
    }

    /// One tensor of `shape` per held tap, the others empty ([0]); example `examples[row]`'s rows
    /// of each held tap (at most `maxTokens`) land at element `offset(row)`, copied as bf16 or
    /// converted to floats. `zeroed` when that leaves rows unwritten (padding).
    private func assemble(_ totalTaps: Int, shape: [Int], bfloat16: Bool, zeroed: Bool, examples: [Int],
                          maxTokens: Int = .max, offset: (Int) -> Int) -> [Tensor] {
        var out = [Tensor](repeating: Tensor(shape: [0]), count: totalTaps)
        var held: [UnsafeMutableRawPointer] = []
        let dtype: DType = bfloat16 ? .bfloat16 : .float32, elementBytes = dtype.byteCount(elements: 1)!
        for t in taps {
            let tensor = Tensor(shape: shape, dtype: dtype)
            if zeroed { tensor.storage.raw.initializeMemory(as: UInt8.self, repeating: 0, count: tensor.count * elementBytes) }
            held.append(tensor.storage.raw)
            out[t] = tensor
        }
        // Each (tap, example) block lands in its own rows, so the blocks copy or convert in parallel:
        // on one thread the conversion was 4% of a cached LAST step while the other thread waited.
        let count = examples.count
        ThreadPool.shared.parallelFor(held.count * count) { j in
            let k = j / count, row = j % count
            read(examples[row], tap: k, into: held[k] + offset(row) * elementBytes, bfloat16: bfloat16, maxTokens: maxTokens)
        }
        return out
    }

    /// Example `e`'s rows of its k-th held tap (at most `maxTokens`) at `dst`: copied (bf16) or
    /// converted to floats.
    private func read(_ e: Int, tap k: Int, into dst: UnsafeMutableRawPointer, bfloat16: Bool, maxTokens: Int = .max) {
        precondition(filled[e], "feature cache: example \(e) was never stored")
        let l = lengths[e], rows = min(l, maxTokens), src = base + offsets[e] + k * l * width * 2
        if bfloat16 {
            dst.copyMemory(from: src, byteCount: rows * width * 2)
        } else {
            convertToFloat32(src, dtype: .bfloat16, count: rows * width, into: dst.assumingMemoryBound(to: Float.self))
        }
    }
}

public struct TrainerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
