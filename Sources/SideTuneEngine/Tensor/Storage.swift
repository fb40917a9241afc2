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
    if n >= LargeBlockCache.threshold {
        return LargeBlockCache.shared.allocate(n, what: what)
    }
    var p: UnsafeMutableRawPointer?
    guard posix_memalign(&p, 64, (n + 63) & ~63) == 0, let p else {
        fatalError("SideTune: out of memory allocating \(formatBytes(byteCount)) for \(what)")
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
/// The bound: mapped bytes (live + idle) stay within the peak of live bytes since the last `trim()`
/// plus a slack (`SIDETUNE_BLOCK_CACHE_MB`, default 16; 0 turns reuse off), so idle blocks add at
/// most the slack to the process's peak RSS. A request takes the smallest idle block of its class
/// up to twice its size (steps alternate between shapes that are never live together, and text
/// batches vary in length); when it must map, idle blocks are unmapped first, largest first, to
/// stay within the bound. Classes are four per power of two (then 2 MiB multiples from 4 MiB); the
/// unused tail of a block is never touched, so it costs address space, not RSS. As with PyTorch's
/// "allocated" against "reserved", the ledger counts live tensors; idle blocks are reserved memory.
///
/// The slack was 64 MiB; 16 keeps the side-tuning steps' page faults low (from cached taps none; a
/// step that computes the backbone maps ~30 MiB afresh) and counts for less in peak RSS, where a
/// side-tuning run is several times smaller than fine-tuning. (Reshaping idle blocks with mremap to
/// fit requests was tried: 10% fewer fresh bytes, the same RSS; not kept.)
public final class LargeBlockCache: @unchecked Sendable {
    public static let shared = LargeBlockCache()
    /// Blocks from 256 KiB up are pooled; smaller ones go to malloc.
    static let threshold = 256 << 10
    /// From 4 MiB up: 2 MiB classes, huge-page aligned and advised.
    static let hugeThreshold = 4 << 20
    static let granule = 2 << 20
    let slackBytes: Int
    let reuse: Bool
    private var idle: [Int: [UnsafeMutableRawPointer]] = [:]
    /// The mapped size of every block handed out (a block may serve a smaller request than its size).
    private var mappedSize: [UnsafeMutableRawPointer: Int] = [:]
    public private(set) var idleBytes = 0
    /// Mapped bytes of the blocks handed out and not yet released, and their peak since `trim()`.
    public private(set) var liveBytes = 0, peakLiveBytes = 0
    /// Requests served from idle blocks, requests that mapped new memory, idle blocks unmapped to
    /// stay within the bound.
    public private(set) var hits = 0, misses = 0, evictions = 0
    /// Bytes mapped by misses: pages the kernel zeroes on first touch.
    public private(set) var freshBytes = 0
    private let lock = NSLock()

    /// `slackMB`: idle MiB allowed above the live peak (default: SIDETUNE_BLOCK_CACHE_MB, else 16).
    public init(slackMB: Int? = nil) {
        let mb = slackMB ?? ProcessInfo.processInfo.environment["SIDETUNE_BLOCK_CACHE_MB"].flatMap { Int($0) } ?? 16
        slackBytes = max(0, mb) << 20
        reuse = mb > 0
    }

    /// Four classes per power of two (at most 25% over the request), page multiples; 2 MiB
    /// multiples from 4 MiB up.
    public static func sizeClass(_ n: Int) -> Int {
        let e = Int.bitWidth - 1 - n.leadingZeroBitCount
        let step = max(4096, 1 << max(0, e - 2))
        let size = (n + step - 1) / step * step
        return size >= hugeThreshold ? (size + granule - 1) / granule * granule : size
    }

    public func allocate(_ n: Int, what: String) -> UnsafeMutableRawPointer {
        let size = Self.sizeClass(n)
        lock.lock()
        if let c = idle.keys.filter({ $0 >= size && $0 <= 2 * size }).min(), let p = idle[c]?.popLast() {
            if idle[c]?.isEmpty == true { idle[c] = nil }
            idleBytes -= c
            take(p, c)
            hits += 1
            lock.unlock()
            return p
        }
        misses += 1
        freshBytes += size
        liveBytes += size
        peakLiveBytes = max(peakLiveBytes, liveBytes)
        // Make room under the bound by unmapping idle blocks, largest first.
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        for c in idle.keys.sorted(by: >) where liveBytes + idleBytes > peakLiveBytes + slackBytes {
            while liveBytes + idleBytes > peakLiveBytes + slackBytes, let q = idle[c]?.popLast() {
                idleBytes -= c
                evictions += 1
                evicted.append((q, c))
            }
            if idle[c]?.isEmpty == true { idle[c] = nil }
        }
        lock.unlock()
        for (q, c) in evicted { munmap(q, c) }
        let huge = size >= Self.hugeThreshold
        guard let p = Self.map(size, alignment: huge ? Self.granule : 4096) else {
            fatalError("SideTune: out of memory allocating \(formatBytes(n)) for \(what)")
        }
        #if os(Linux)
        if huge { _ = madvise(p, size, 14) } // MADV_HUGEPAGE
        #endif
        lock.lock()
        mappedSize[p] = size
        lock.unlock()
        return p
    }

    /// Books an idle block as live (lock held).
    private func take(_ p: UnsafeMutableRawPointer, _ size: Int) {
        mappedSize[p] = size
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
        lock.lock()
        let size = mappedSize.removeValue(forKey: p) ?? Self.sizeClass(max(n, 64))
        liveBytes -= size
        if reuse {
            // Mapped bytes are unchanged by keeping it, so the bound still holds.
            idle[size, default: []].append(p)
            idleBytes += size
            lock.unlock()
            return
        }
        lock.unlock()
        munmap(p, size)
    }

    /// Returns every idle block, and the C heap's free pages, to the system and starts a new peak
    /// (e.g. before measuring one).
    public func trim() {
        lock.lock()
        let blocks = idle
        idle = [:]
        idleBytes = 0
        peakLiveBytes = liveBytes
        lock.unlock()
        for (size, ps) in blocks { for p in ps { munmap(p, size) } }
        sidetune_release_free_heap()
    }
}
