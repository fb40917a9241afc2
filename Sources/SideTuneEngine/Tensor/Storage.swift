import Foundation
import CSideTuneKernels

/// A block of tensor bytes, 64-byte aligned, tagged in the memory ledger for its whole life.
/// Storage may also borrow bytes from elsewhere (a memory-mapped file); `owner` keeps that alive.
public final class TensorStorage: @unchecked Sendable {
    public let raw: UnsafeMutableRawPointer
    public let byteCount: Int
    public let dtype: DType
    public private(set) var category: MemoryCategory
    let ledger: MemoryLedger
    /// Non-nil when the bytes belong to someone else (e.g. a mapped file): not freed here.
    let owner: AnyObject?

    /// Allocates uninitialised storage for `byteCount` bytes.
    public init(byteCount: Int, dtype: DType, category: MemoryCategory = MemoryLedger.currentCategory) {
        raw = alignedAllocate(byteCount, what: category.rawValue)
        self.byteCount = byteCount
        self.dtype = dtype
        self.category = category
        owner = nil
        ledger = MemoryLedger.current
        ledger.didAllocate(byteCount, category)
    }

    /// Wraps bytes owned by `owner` (zero-copy). Counted in the ledger while alive.
    public init(borrowing raw: UnsafeMutableRawPointer, byteCount: Int, dtype: DType, owner: AnyObject,
                category: MemoryCategory = .weights) {
        self.raw = raw
        self.byteCount = byteCount
        self.dtype = dtype
        self.category = category
        self.owner = owner
        ledger = MemoryLedger.current
        ledger.didAllocate(byteCount, category)
    }

    deinit {
        ledger.didFree(byteCount, category)
        if owner == nil { alignedFree(raw, byteCount) }
    }

    /// Changes the ledger category of these bytes (e.g. a parameter created as an activation).
    public func retag(_ newCategory: MemoryCategory) {
        ledger.move(byteCount, from: category, to: newCategory)
        category = newCategory
    }

    @inline(__always) public var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }
}

/// Scratch memory for kernels (packing buffers), tagged `.workspace`.
public final class Workspace {
    public let raw: UnsafeMutableRawPointer
    public let byteCount: Int
    let ledger = MemoryLedger.current
    public init(floats: Int) {
        byteCount = floats * 4
        raw = alignedAllocate(byteCount, what: "workspace")
        ledger.didAllocate(byteCount, .workspace)
    }
    deinit {
        ledger.didFree(byteCount, .workspace)
        alignedFree(raw, byteCount)
    }
    @inline(__always) public var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }
}

/// 64-byte aligned memory. Large blocks are 2 MiB aligned and advised to use transparent huge
/// pages: GEMM operands of tens of megabytes otherwise miss the TLB on every row (measured: 2048^3
/// ran at 71% of peak against 89% for 1024^3 before this). Large blocks come from `LargeBlockCache`.
func alignedAllocate(_ byteCount: Int, what: String) -> UnsafeMutableRawPointer {
    let n = max(byteCount, 64)
    // More than the machine has (memory and swap) cannot succeed; with overcommit it would
    // "succeed" and the kernel would kill the process later, mid-run.
    if n > OutOfMemory.machineBytes { OutOfMemory.fail(byteCount, what: what) }
    if n >= LargeBlockCache.threshold {
        return LargeBlockCache.shared.allocate(n, what: what)
    }
    var p: UnsafeMutableRawPointer?
    guard posix_memalign(&p, 64, (n + 63) & ~63) == 0, let p else {
        OutOfMemory.fail(byteCount, what: what)
    }
    return p
}

func alignedFree(_ p: UnsafeMutableRawPointer, _ byteCount: Int) {
    if max(byteCount, 64) >= LargeBlockCache.threshold { LargeBlockCache.shared.release(p, byteCount) } else { free(p) }
}

/// Keeps freed large blocks for later requests. A training step allocates much the same shapes
/// every time; without reuse each one is a fresh mapping whose pages the kernel zeroes on first
/// touch (measured: 15% of a side-network step in clear_page, and more than half of LAST's step
/// from cached taps when the pool was capped below what one step frees).
///
/// Idle memory is kept as free address ranges, split to serve a request and merged with free
/// neighbours when a block comes back (anonymous mappings that touch are one contiguous range, so
/// ranges merge across mappings), as PyTorch's caching allocator splits its segments. Phases of a
/// step with different shapes then share pages: a side network's activations are carved from the
/// frozen backbone's freed scratch instead of needing blocks of their own sizes. (Whole blocks
/// matched by size class kept both sets mapped: with a 16 MiB bound, LST's computed step faulted
/// 26 MiB afresh every step, its backbone scratch being evicted for the side network's blocks.)
///
/// The bound: mapped bytes (live + idle) stay within the peak of live bytes since the last `trim()`
/// plus a slack (`SIDETUNE_BLOCK_CACHE_MB`, default 16; 0 turns reuse off), so idle memory adds
/// at most the slack to the process's peak RSS. When a request must map, idle ranges are unmapped
/// first, largest first. Requests round up to 64 KiB, and from 4 MiB to 2 MiB multiples placed on
/// 2 MiB boundaries (huge pages). As with PyTorch's "allocated" against "reserved", the ledger
/// counts live tensors; idle ranges are reserved memory.
public final class LargeBlockCache: @unchecked Sendable {
    public static let shared = LargeBlockCache()
    /// Blocks from 256 KiB up are pooled; smaller ones go to malloc.
    static let threshold = 256 << 10
    /// From 4 MiB up: 2 MiB multiples, huge-page aligned and advised.
    static let hugeThreshold = 4 << 20
    static let granule = 2 << 20
    static let quantum = 64 << 10
    let slackBytes: Int
    let reuse: Bool
    /// Free ranges by start address, and the start of each by its end (for merging).
    private var freeByStart: [Int: Int] = [:], freeByEnd: [Int: Int] = [:]
    /// The size of every block handed out.
    private var liveSize: [Int: Int] = [:]
    public private(set) var idleBytes = 0
    /// Bytes of the blocks handed out and not yet released, and their peak since `trim()`.
    public private(set) var liveBytes = 0, peakLiveBytes = 0
    /// Requests served from idle ranges, requests that mapped new memory, idle ranges unmapped
    /// (wholly or in part) to stay within the bound.
    public private(set) var hits = 0, misses = 0, evictions = 0
    /// Bytes mapped by misses: pages the kernel zeroes on first touch.
    public private(set) var freshBytes = 0
    /// Idle ranges now (after merging).
    public var idleRanges: Int { lock.lock(); defer { lock.unlock() }; return freeByStart.count }
    private let lock = NSLock()

    /// `slackMB`: idle MiB allowed above the live peak (default: SIDETUNE_BLOCK_CACHE_MB, else 16).
    public init(slackMB: Int? = nil) {
        let mb = slackMB ?? KernelEnvironment.blockCacheMB ?? 16
        slackBytes = max(0, mb) << 20
        reuse = mb > 0
    }

    /// 64 KiB multiples; 2 MiB multiples from 4 MiB up.
    public static func sizeClass(_ n: Int) -> Int {
        let q = n >= hugeThreshold ? granule : quantum
        return (n + q - 1) / q * q
    }

    private func addFree(_ start: Int, _ size: Int) {
        var (s, n) = (start, size)
        if let before = freeByEnd.removeValue(forKey: s) {
            let m = freeByStart.removeValue(forKey: before)!
            (s, n) = (before, n + m)
        }
        if let m = freeByStart.removeValue(forKey: s + n) {
            freeByEnd.removeValue(forKey: s + n + m)
            n += m
        }
        freeByStart[s] = n
        freeByEnd[s + n] = s
    }

    private func removeFree(_ start: Int) -> Int {
        let n = freeByStart.removeValue(forKey: start)!
        freeByEnd.removeValue(forKey: start + n)
        return n
    }

    /// Where a block of `size` goes inside the free range [start, start + n), if it fits.
    private static func placement(_ start: Int, _ n: Int, _ size: Int) -> Int? {
        let at = size >= hugeThreshold ? (start + granule - 1) / granule * granule : start
        return at + size <= start + n ? at : nil
    }

    public func allocate(_ n: Int, what: String) -> UnsafeMutableRawPointer {
        let size = Self.sizeClass(n)
        lock.lock()
        // Best fit: the smallest free range that holds the block; the rest stays free.
        var best: (start: Int, n: Int, at: Int)?
        for (start, len) in freeByStart where len >= size && len < (best?.n ?? .max) {
            if let at = Self.placement(start, len, size) { best = (start, len, at) }
        }
        if let best {
            _ = removeFree(best.start)
            if best.at > best.start { addFree(best.start, best.at - best.start) }
            let end = best.at + size, rangeEnd = best.start + best.n
            if rangeEnd > end { addFree(end, rangeEnd - end) }
            idleBytes -= size
            book(best.at, size)
            hits += 1
            lock.unlock()
            return UnsafeMutableRawPointer(bitPattern: best.at)!
        }
        misses += 1
        freshBytes += size
        book(nil, size)
        // Make room under the bound: unmap idle memory, largest ranges first, a range's tail when
        // only part of it must go.
        var unmap: [(Int, Int)] = []
        while liveBytes + idleBytes > peakLiveBytes + slackBytes,
              let (start, len) = freeByStart.max(by: { $0.value < $1.value }) {
            let excess = (liveBytes + idleBytes - peakLiveBytes - slackBytes + 4095) / 4096 * 4096
            _ = removeFree(start)
            let cut = min(len, excess)
            if cut < len { addFree(start, len - cut) }
            unmap.append((start + len - cut, cut))
            idleBytes -= cut
            evictions += 1
        }
        lock.unlock()
        for (start, len) in unmap { munmap(UnsafeMutableRawPointer(bitPattern: start), len) }
        let huge = size >= Self.hugeThreshold
        guard let p = Self.map(size, alignment: huge ? Self.granule : 4096) else {
            OutOfMemory.fail(n, what: what)
        }
        #if os(Linux)
        if huge { _ = madvise(p, size, 14) } // MADV_HUGEPAGE
        #endif
        lock.lock()
        liveSize[Int(bitPattern: p)] = size
        lock.unlock()
        return p
    }

    /// Books a block as live (lock held); a fresh mapping's address is recorded once it exists.
    private func book(_ start: Int?, _ size: Int) {
        if let start { liveSize[start] = size }
        liveBytes += size
        peakLiveBytes = max(peakLiveBytes, liveBytes)
    }

    /// Large blocks are mapped and unmapped directly rather than through malloc: glibc raises its
    /// mmap threshold each time it unmaps a block, after which large blocks come from the heap,
    /// whose freed middle is never returned (measured: a 260 MiB heap in a side-tuning run whose
    /// ledger peaked at 192 MiB). Mapped, a freed block leaves the process's RSS at once.
    static func map(_ size: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        let span = size + (alignment > 4096 ? alignment : 0)
        guard let base = mmap(nil, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            return nil
        }
        guard alignment > 4096 else { return base }
        // Trim the mapping to an aligned start and the block's length.
        let start = (Int(bitPattern: base) + alignment - 1) / alignment * alignment
        let head = start - Int(bitPattern: base), tail = span - head - size
        if head > 0 { munmap(base, head) }
        let p = UnsafeMutableRawPointer(bitPattern: start)!
        if tail > 0 { munmap(p + size, tail) }
        return p
    }

    public func release(_ p: UnsafeMutableRawPointer, _ n: Int) {
        let start = Int(bitPattern: p)
        lock.lock()
        let size = liveSize.removeValue(forKey: start) ?? Self.sizeClass(max(n, 64))
        liveBytes -= size
        if reuse {
            // Mapped bytes are unchanged by keeping it, so the bound still holds.
            addFree(start, size)
            idleBytes += size
            lock.unlock()
            return
        }
        lock.unlock()
        munmap(p, size)
    }

    /// Returns all idle memory, and the C heap's free pages, to the system and starts a new peak
    /// (e.g. before measuring one).
    public func trim() {
        lock.lock()
        let ranges = freeByStart
        freeByStart = [:]
        freeByEnd = [:]
        idleBytes = 0
        peakLiveBytes = liveBytes
        lock.unlock()
        for (start, len) in ranges { munmap(UnsafeMutableRawPointer(bitPattern: start), len) }
        sidetune_release_free_heap()
    }
}

/// Ends the process from where an error cannot be thrown (an allocation, a batch being made on a
/// pool thread): the message to stderr, `beforeExit` (a run's lock file is removed), the code.
public enum ProcessExit {
    /// Run before the process exits.
    nonisolated(unsafe) public static var beforeExit: (() -> Void)?

    public static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data(("sidetune: " + message + "\n").utf8))
        beforeExit?()
        exit(code)
    }
}

/// Running out of memory ends the process with a message and exit code 3, not a crash: it names
/// the request, what the ledger holds by category, and (`advice`) flags that need less.
public enum OutOfMemory {
    public static let exitCode: Int32 = 3
    /// Printed after the figures; the CLI names its flags here.
    nonisolated(unsafe) public static var advice = "use smaller batches or shorter inputs"

    /// Physical memory plus swap (/proc/meminfo), the most any allocation could get.
    public static let machineBytes: Int = {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return .max }
        var kib = 0
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") || line.hasPrefix("SwapTotal:") {
            kib += Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        return kib > 0 ? kib * 1024 : .max
    }()

    public static func fail(_ bytes: Int, what: String) -> Never {
        let held = MemoryLedger.current.snapshot()
        let parts = MemoryCategory.allCases.compactMap { c -> String? in
            let b = held.current[c] ?? 0
            return b > 0 ? "\(c.rawValue) \(formatBytes(b))" : nil
        }
        ProcessExit.fail("out of memory: cannot allocate \(formatBytes(bytes)) for \(what) (the machine has "
                         + "\(formatBytes(machineBytes)) with swap; the ledger holds \(parts.isEmpty ? "nothing" : parts.joined(separator: ", "))); "
                         + advice, code: exitCode)
    }
}
