import Foundation

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

/// Keeps freed large blocks (by size class: 64 KiB steps, 2 MiB from 4 MiB up) for the next request of the same size. A
/// training step allocates the same activation shapes every time; without this each one is a
/// fresh mmap whose huge pages the kernel zeroes on first touch (measured: 15% of a side-network
/// step in clear_page). As with PyTorch's "allocated" against "reserved", the ledger counts live
/// tensors only: idle blocks show in the process's RSS, not in a ledger category. At most
/// `limitBytes` stay idle (SIDETUNE_BLOCK_CACHE_MB, default 64: measured to keep the reuse of a side-network step while adding little to RSS; 0 = off).
public final class LargeBlockCache: @unchecked Sendable {
    public static let shared = LargeBlockCache()
    /// Blocks from 256 KiB up are kept (glibc maps and unmaps those, so each reuse page-faults).
    static let threshold = 256 << 10
    /// From 4 MiB up: 2 MiB classes, huge-page aligned and advised.
    static let hugeThreshold = 4 << 20
    static let granule = 2 << 20
    let limitBytes: Int
    private var idle: [Int: [UnsafeMutableRawPointer]] = [:]
    public private(set) var idleBytes = 0
    private let lock = NSLock()

    init() {
        let mb = ProcessInfo.processInfo.environment["SIDETUNE_BLOCK_CACHE_MB"].flatMap { Int($0) } ?? 64
        limitBytes = max(0, mb) << 20
    }

    static func sizeClass(_ n: Int) -> Int {
        let g = n >= hugeThreshold ? granule : 64 << 10
        return (n + g - 1) / g * g
    }

    func allocate(_ n: Int, what: String) -> UnsafeMutableRawPointer {
        let size = Self.sizeClass(n)
        lock.lock()
        if let p = idle[size]?.popLast() {
            idleBytes -= size
            lock.unlock()
            return p
        }
        lock.unlock()
        var p: UnsafeMutableRawPointer?
        let huge = size >= Self.hugeThreshold
        guard posix_memalign(&p, huge ? Self.granule : 64, size) == 0, let p else {
            fatalError("SideTune: out of memory allocating \(formatBytes(n)) for \(what)")
        }
        #if os(Linux)
        if huge { _ = madvise(p, size, 14) } // MADV_HUGEPAGE
        #endif
        return p
    }

    func release(_ p: UnsafeMutableRawPointer, _ n: Int) {
        let size = Self.sizeClass(max(n, 64))
        lock.lock()
        if idleBytes + size <= limitBytes {
            idle[size, default: []].append(p)
            idleBytes += size
            lock.unlock()
            return
        }
        lock.unlock()
        free(p)
    }

    /// Returns every idle block to the system (e.g. before measuring a fresh peak).
    public func trim() {
        lock.lock()
        let blocks = idle
        idle = [:]
        idleBytes = 0
        lock.unlock()
        for (_, ps) in blocks { for p in ps { free(p) } }
    }
}
