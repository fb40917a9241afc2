import Foundation
import Synchronization

/// What an allocation is for. Reports show peak bytes per category, which is the point of
/// side-tuning: it removes the backbone's activation and gradient terms.
public enum MemoryCategory: String, CaseIterable, Sendable, Codable {
    case weights, activations, gradients, optimizer, cache, workspace
}

/// Counts every tensor and workspace allocation by category: current bytes, peak bytes per
/// category, and the peak of the total (which is not the sum of per-category peaks).
public final class MemoryLedger: Sendable {
    public static let shared = MemoryLedger()

    struct State {
        var current = [Int](repeating: 0, count: MemoryCategory.allCases.count)
        var peak = [Int](repeating: 0, count: MemoryCategory.allCases.count)
        var total = 0
        var peakTotal = 0
        var allocations = 0
        var frees = 0
    }
    private let state = Mutex(State())

    static func index(_ c: MemoryCategory) -> Int {
        switch c {
        case .weights: 0
        case .activations: 1
        case .gradients: 2
        case .optimizer: 3
        case .cache: 4
        case .workspace: 5
        }
    }

    func didAllocate(_ bytes: Int, _ category: MemoryCategory) {
        let i = Self.index(category)
        state.withLock { s in
            s.current[i] += bytes
            s.peak[i] = max(s.peak[i], s.current[i])
            s.total += bytes
            s.peakTotal = max(s.peakTotal, s.total)
            s.allocations += 1
        }
    }

    func didFree(_ bytes: Int, _ category: MemoryCategory) {
        let i = Self.index(category)
        state.withLock { s in
            s.current[i] -= bytes
            s.total -= bytes
            s.frees += 1
        }
    }

    /// Moves live bytes from one category to another (a tensor re-tagged, e.g. an output kept as a
    /// cache entry).
    func move(_ bytes: Int, from: MemoryCategory, to: MemoryCategory) {
        guard from != to else { return }
        let f = Self.index(from), t = Self.index(to)
        state.withLock { s in
            s.current[f] -= bytes
            s.current[t] += bytes
            s.peak[t] = max(s.peak[t], s.current[t])
        }
    }

    public func current(_ c: MemoryCategory) -> Int { state.withLock { $0.current[Self.index(c)] } }
    public func peak(_ c: MemoryCategory) -> Int { state.withLock { $0.peak[Self.index(c)] } }
    public var currentTotal: Int { state.withLock { $0.total } }
    public var peakTotal: Int { state.withLock { $0.peakTotal } }
    /// Number of allocations and frees seen since start (not reset by `resetPeaks`).
    public var counts: (allocations: Int, frees: Int) { state.withLock { ($0.allocations, $0.frees) } }

    /// Starts a new measurement window: peaks become the current values.
    public func resetPeaks() {
        state.withLock { s in
            s.peak = s.current
            s.peakTotal = s.total
        }
    }

    public func snapshot() -> LedgerSnapshot {
        state.withLock { s in
            var cur: [MemoryCategory: Int] = [:], pk: [MemoryCategory: Int] = [:]
            for c in MemoryCategory.allCases {
                cur[c] = s.current[Self.index(c)]
                pk[c] = s.peak[Self.index(c)]
            }
            return LedgerSnapshot(current: cur, peak: pk, currentTotal: s.total, peakTotal: s.peakTotal,
                                  peakRSS: ProcessMemory.peakResidentBytes(), currentRSS: ProcessMemory.residentBytes())
        }
    }

    // MARK: scopes

    /// The category new tensors are tagged with on this thread. Op outputs are activations by
    /// default; backward runs under `.gradients`, optimizers under `.optimizer`.
    public static var currentCategory: MemoryCategory { ThreadState.current.categories.last ?? .activations }

    /// Runs `body` with new allocations on this thread tagged `category`.
    public static func withCategory<R>(_ category: MemoryCategory, _ body: () throws -> R) rethrows -> R {
        let state = ThreadState.current
        state.categories.append(category)
        defer { state.categories.removeLast() }
        return try body()
    }

    /// The ledger allocations on this thread are counted in (`shared` unless a scope says otherwise).
    public static var current: MemoryLedger { ThreadState.current.ledger ?? .shared }

    /// Counts allocations made on this thread inside `body` in `ledger` instead of the shared one:
    /// a measurement that other threads (parallel tests, say) cannot disturb. Bytes are returned to
    /// the ledger they were counted in, whenever they are freed.
    public static func withLedger<R>(_ ledger: MemoryLedger, _ body: () throws -> R) rethrows -> R {
        let state = ThreadState.current
        let saved = state.ledger
        state.ledger = ledger
        defer { state.ledger = saved }
        return try body()
    }

    public init() {}
}

/// Per-thread engine state: allocation category stack, ledger scope, autograd switch. Thread-local
/// so that worker threads and parallel tests never see each other's scopes.
final class ThreadState {
    var categories: [MemoryCategory] = []
    var ledger: MemoryLedger?
    var gradEnabled = true
    /// Inside `MicroBatches.run`: which micro-batch this thread is running, and where backward
    /// puts its leaf gradients (instead of the leaves' `.grad`, which the micro-batches share).
    var microBatch: MicroBatch?
    var gradientSink: GradientSink?

    static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { ptr in if let ptr { Unmanaged<ThreadState>.fromOpaque(ptr).release() } }
        return k
    }()

    static var current: ThreadState {
        if let p = pthread_getspecific(key) { return Unmanaged<ThreadState>.fromOpaque(p).takeUnretainedValue() }
        let s = ThreadState()
        pthread_setspecific(key, Unmanaged.passRetained(s).toOpaque())
        return s
    }
}

/// A point-in-time view of the ledger with the process's resident memory beside it.
public struct LedgerSnapshot: Sendable, Codable {
    public var current: [MemoryCategory: Int]
    public var peak: [MemoryCategory: Int]
    public var currentTotal: Int
    public var peakTotal: Int
    public var peakRSS: Int
    public var currentRSS: Int

    /// A printable table: category, current, peak; then totals and the process's peak RSS.
    public func report(title: String = "memory ledger") -> String {
        var lines = ["\(title)", String(format: "  %-12@ %12@ %12@", "category" as NSString, "current" as NSString, "peak" as NSString)]
        for c in MemoryCategory.allCases {
            lines.append(String(format: "  %-12@ %12@ %12@", c.rawValue as NSString,
                                formatBytes(current[c] ?? 0) as NSString, formatBytes(peak[c] ?? 0) as NSString))
        }
        lines.append(String(format: "  %-12@ %12@ %12@", "total" as NSString, formatBytes(currentTotal) as NSString,
                            formatBytes(peakTotal) as NSString))
        lines.append(String(format: "  %-12@ %12@ %12@", "process RSS" as NSString, formatBytes(currentRSS) as NSString,
                            formatBytes(peakRSS) as NSString))
        return lines.joined(separator: "\n")
    }
}

/// Human-readable bytes (binary units).
public func formatBytes(_ bytes: Int) -> String {
    let b = Double(bytes), m = Swift.abs(bytes)
    if m >= 1 << 30 { return String(format: "%.2f GiB", b / Double(1 << 30)) }
    if m >= 1 << 20 { return String(format: "%.1f MiB", b / Double(1 << 20)) }
    if m >= 1 << 10 { return String(format: "%.1f KiB", b / Double(1 << 10)) }
    return "\(bytes) B"
}

/// The process's resident memory from /proc (Linux); 0 where unavailable.
public enum ProcessMemory {
    /// VmHWM: peak resident set size.
    public static func peakResidentBytes() -> Int { statusField("VmHWM:") }
    /// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).
    public static func resetPeak() {
        if let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
            h.write(Data("5".utf8))
            try? h.close()
        }
    }

    /// VmRSS: current resident set size.
    public static func residentBytes() -> Int { statusField("VmRSS:") }

    static func statusField(_ field: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(field) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }
}
