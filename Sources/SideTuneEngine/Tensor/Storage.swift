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
        if owner == nil { free(raw) }
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
        free(raw)
    }
    @inline(__always) public var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }
}

/// 64-byte aligned memory. Large blocks are 2 MiB aligned and advised to use transparent huge
/// pages: GEMM operands of tens of megabytes otherwise miss the TLB on every row (measured: 2048^3
/// ran at 71% of peak against 89% for 1024^3 before this).
func alignedAllocate(_ byteCount: Int, what: String) -> UnsafeMutableRawPointer {
    let hugeThreshold = 4 << 20, huge = 2 << 20
    var p: UnsafeMutableRawPointer?
    let n = max(byteCount, 64)
    if n >= hugeThreshold {
        let rounded = (n + huge - 1) / huge * huge
        guard posix_memalign(&p, huge, rounded) == 0, let p else {
            fatalError("SideTune: out of memory allocating \(formatBytes(byteCount)) for \(what)")
        }
        #if os(Linux)
        _ = madvise(p, rounded, 14) // MADV_HUGEPAGE
        #endif
        return p
    }
    guard posix_memalign(&p, 64, (n + 63) & ~63) == 0, let p else {
        fatalError("SideTune: out of memory allocating \(formatBytes(byteCount)) for \(what)")
    }
    return p
}
