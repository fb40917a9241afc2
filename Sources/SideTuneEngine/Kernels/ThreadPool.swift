import Foundation
import Synchronization

/// A fixed pool of worker threads for data-parallel kernels. The caller takes part as worker 0, so
/// a pool of N threads starts N - 1 OS threads. Size: `SIDETUNE_THREADS` if set, else the number of
/// online cores. Work is split statically by index so results do not depend on timing.
///
/// Workers spin briefly on a generation counter before sleeping: kernels dispatch many short jobs
/// and a futex wake per job would cost more than the job.
///
/// A helper joins a job only while it is open: once the caller has claimed every index it closes
/// the job and waits just for the helpers that joined. A helper whose vCPU the hypervisor has
/// descheduled (steal) therefore no longer stalls every short region until it runs again; the
/// caller does its share. Which thread runs an index never changes the result.
public final class ThreadPool: @unchecked Sendable {
    public static let shared = ThreadPool(threads: ThreadPool.defaultThreadCount())

    public static func defaultThreadCount() -> Int {
        if let n = KernelEnvironment.threads { return n }
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
    /// The job's admission word: generation << 16 | closed bit (1 << 15) | helpers that joined.
    private let admission = Atomic<Int>(0)
    private static let closedBit = 1 << 15
    /// Helpers that joined the current job and finished it.
    private let finished = Atomic<Int>(0)
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

    /// A pool of exactly `threads` threads for measurements (peak FLOPS, GEMM timings): the shared
    /// pool when it has that many, else one made once per size and kept. Benchmarks used to lower
    /// the shared pool's `activeThreads` while they ran, which changed the thread count, and so
    /// the micro-batches and reduction chunks, of whatever else the process was running.
    public static func sized(_ threads: Int) -> ThreadPool {
        if shared.activeThreads == threads { return shared }
        sizedLock.lock()
        defer { sizedLock.unlock() }
        if let p = sizedPools[threads] { return p }
        let p = ThreadPool(threads: threads)
        sizedPools[threads] = p
        return p
    }
    nonisolated(unsafe) private static var sizedPools: [Int: ThreadPool] = [:]
    private static let sizedLock = NSLock()

    public init(threads: Int) {
        maxThreads = max(1, threads)
        active.store(maxThreads, ordering: .relaxed)
        for w in 1..<maxThreads {
            // The worker holds the pool (its loop never returns, so a pool lives as long as the
            // process). Unowned, a pool released before a late-starting worker first ran crashed it.
            let t = Thread { self.workerLoop(w) }
            // Micro-batches run whole forward and backward passes on workers: room as on the main thread.
            t.stackSize = 8 << 20
            t.start()
        }
    }

    /// Runs `body(i)` for i in 0..<count on up to `activeThreads` threads and returns when all are
    /// done. Indices are handed out dynamically; use `parallelChunks` for a static split.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        let threads = min(activeThreads, count)
        // Inside a micro-batch every kernel runs on the part's own thread (`MicroBatches`).
        if threads <= 1 || inRegion || ThreadState.current.microBatch != nil {
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
            let gen = generation.load(ordering: .relaxed) + 1
            finished.store(0, ordering: .relaxed)
            admission.store(gen << 16, ordering: .releasing)
            lock.lock()
            generation.store(gen, ordering: .releasing)
            lock.broadcast()
            lock.unlock()
            runIndices(body)
            // Every index is claimed: close the job, then wait for the helpers that joined (they
            // are running their last index, so spinning is short).
            var word = admission.load(ordering: .acquiring)
            while true {
                let (done, current) = admission.compareExchange(expected: word, desired: word | Self.closedBit,
                                                                ordering: .acquiringAndReleasing)
                if done { break }
                word = current
            }
            let joined = word & (Self.closedBit - 1)
            var spins = 0
            while finished.load(ordering: .acquiring) < joined {
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

    /// A helper's share of the current job, in the caller's ledger and category.
    @inline(never)
    private func runJob() {
        guard let body = job else { return }
        let state = ThreadState.current
        state.ledger = jobLedger
        if let c = jobCategory { state.categories = [c] } else { state.categories.removeAll() }
        runIndices(body)
    }

    private func runIndices(_ body: (Int) -> Void) {
        while true {
            let i = nextIndex.add(1, ordering: .relaxed).oldValue
            if i >= jobCount { break }
            body(i)
        }
    }

    /// Joins job `gen` if it is still open; false if the caller has closed it or moved on.
    private func join(_ gen: Int) -> Bool {
        var word = admission.load(ordering: .acquiring)
        while word >> 16 == gen && word & Self.closedBit == 0 {
            let (done, current) = admission.compareExchange(expected: word, desired: word + 1, ordering: .acquiringAndReleasing)
            if done { return true }
            word = current
        }
        return false
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
            if w < participants && join(seen) {
                // The job closure must not outlive this: the caller checks that it did not escape
                // (`withoutActuallyEscaping`). A function of its own holds it, so the reference is gone
                // when that returns (in a do block, debug builds released it after `finished` moved on).
                runJob()
                finished.add(1, ordering: .releasing)
            }
        }
    }
}
