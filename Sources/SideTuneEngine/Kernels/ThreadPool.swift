import Foundation
import Synchronization

/// A fixed pool of worker threads for data-parallel kernels. The caller takes part as worker 0, so
/// a pool of N threads starts N - 1 OS threads. Size: `SIDETUNE_THREADS` if set, else the number of
/// online cores. Work is split statically by index so results do not depend on timing.
///
/// Workers spin briefly on a generation counter before sleeping: kernels dispatch many short jobs
/// and a futex wake per job would cost more than the job.
public final class ThreadPool: @unchecked Sendable {
    public static let shared = ThreadPool(threads: ThreadPool.defaultThreadCount())

    public static func defaultThreadCount() -> Int {
        if let s = ProcessInfo.processInfo.environment["SIDETUNE_THREADS"], let n = Int(s), n >= 1 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    public let maxThreads: Int
    /// Threads that `parallelFor` uses; may be lowered below `maxThreads` (e.g. to compare 1 and 2).
    public var activeThreads: Int {
        get { active.load(ordering: .relaxed) }
        set { active.store(min(max(1, newValue), maxThreads), ordering: .relaxed) }
    }
    private let active = Atomic<Int>(1)

    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let nextIndex = Atomic<Int>(0)
    nonisolated(unsafe) private var job: ((Int) -> Void)?
    nonisolated(unsafe) private var jobCount = 0
    nonisolated(unsafe) private var participants = 0
    // The caller's ledger scope and allocation category, taken on by the workers for the job so a
    // tensor made on a worker is counted where the caller's would be.
    nonisolated(unsafe) private var jobLedger: MemoryLedger?
    nonisolated(unsafe) private var jobCategory: MemoryCategory?
    private let lock = NSCondition()
    private let busy = NSLock() // one parallel region at a time; nested calls run inline
    nonisolated(unsafe) private var inRegion = false

    public init(threads: Int) {
        maxThreads = max(1, threads)
        active.store(maxThreads, ordering: .relaxed)
        for w in 1..<maxThreads {
            let t = Thread { [unowned self] in self.workerLoop(w) }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    /// Runs `body(i)` for i in 0..<count on up to `activeThreads` threads and returns when all are
    /// done. Indices are handed out dynamically; use `parallelChunks` for a static split.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        let threads = min(activeThreads, count)
        if threads <= 1 || inRegion {
            for i in 0..<count { body(i) }
            return
        }
        busy.lock()
        inRegion = true
        withoutActuallyEscaping(body) { body in
            nextIndex.store(0, ordering: .relaxed)
            jobCount = count
            participants = threads
            let callerState = ThreadState.current
            jobLedger = callerState.ledger
            jobCategory = callerState.categories.last
            job = body
            remaining.store(threads - 1, ordering: .relaxed)
            lock.lock()
            generation.add(1, ordering: .releasing)
            lock.broadcast()
            lock.unlock()
            runIndices(body)
            // Wait for the helpers; they finish within the same job, so spinning is short.
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins > 1000 { sched_yield() }
            }
            job = nil
        }
        inRegion = false
        busy.unlock()
    }

    /// Splits 0..<count into `activeThreads` contiguous ranges and runs them in parallel.
    public func parallelChunks(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let threads = max(1, min(activeThreads, count / max(minChunk, 1)))
        if threads <= 1 { body(0..<count); return }
        parallelFor(threads) { t in
            let lo = count * t / threads, hi = count * (t + 1) / threads
            if lo < hi { body(lo..<hi) }
        }
    }

    private func runIndices(_ body: (Int) -> Void) {
        while true {
            let i = nextIndex.add(1, ordering: .relaxed).oldValue
            if i >= jobCount { break }
            body(i)
        }
    }

    private func workerLoop(_ w: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins > 20_000 {
                    lock.lock()
                    while generation.load(ordering: .acquiring) == seen { lock.wait() }
                    lock.unlock()
                    break
                }
            }
            seen = generation.load(ordering: .acquiring)
            if w < participants {
                // The job closure must not outlive this block: the caller checks that it did not escape.
                do {
                    if let body = job {
                        let state = ThreadState.current
                        state.ledger = jobLedger
                        if let c = jobCategory { state.categories = [c] } else { state.categories.removeAll() }
                        runIndices(body)
                    }
                }
                remaining.subtract(1, ordering: .releasing)
            }
        }
    }
}
