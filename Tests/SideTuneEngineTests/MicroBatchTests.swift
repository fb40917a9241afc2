import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Synchronization
import Testing

/// A pool of two threads for one test: a pool another test is inside runs parts inline, one after
/// the other. (Its worker may start late; the parts wait for each other, so it joins.)
private func twoThreads() -> ThreadPool { ThreadPool(threads: 2) }

/// `MicroBatches.run`: a batch run as parts on separate threads gives the whole batch's gradients,
/// keeps each part's gradients apart until all are done, and does not depend on the thread count.
@Suite struct MicroBatchTests {
    /// A two-layer classifier on 7 rows of 5 features, 3 classes.
    final class Net {
        let x: [Float], targets: [Int32]
        let w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
        init() {
            var rng = SplitMix64(seed: 5)
            x = (0..<35).map { _ in rng.nextNormal() }
            targets = (0..<7).map { _ in Int32(rng.nextInt(below: 3)) }
            func param(_ shape: [Int]) -> Tensor {
                let t = Tensor((0..<shape.reduce(1, *)).map { _ in rng.nextNormal() * 0.5 }, shape: shape)
                t.requiresGrad = true
                return t
            }
            (w1, b1, w2, b2) = (param([6, 5]), param([6]), param([3, 6]), param([3]))
        }
        var parameters: [Tensor] { [w1, b1, w2, b2] }
        /// Mean cross-entropy of these rows.
        func loss(_ rows: [Int]) -> Tensor {
            let xs = Tensor(rows.flatMap { x[($0 * 5)..<($0 * 5 + 5)] }, shape: [rows.count, 5])
            let h = Tensor.linear(xs, weight: w1, bias: b1).tanh()
            return Tensor.linear(h, weight: w2, bias: b2).crossEntropy(targets: rows.map { targets[$0] })
        }

        /// What each part saw while it ran (checked after the run, on the test's thread).
        struct PartRecord { var index = -1, count = -1, thread: pthread_t?, kernelThreads: Set<UInt> = [], wroteGrad = false, metOthers = false }

        /// The gradients of the batch's mean loss computed as these parts on `pool`. Each part
        /// waits (up to 5 s) until as many parts as the pool has threads have started, so on two
        /// threads two parts overlap.
        func partsGradients(_ parts: [[Int]], pool: ThreadPool) -> (grads: [[Float]], records: [PartRecord]) {
            for p in parameters { p.zeroGrad() }
            let records = Mutex([PartRecord](repeating: PartRecord(), count: parts.count))
            let started = Atomic<Int>(0)
            let total = Float(parts.reduce(0) { $0 + $1.count })
            MicroBatches.run(parts.count, pool: pool) { i in
                var r = PartRecord(index: MicroBatches.current?.index ?? -1, count: MicroBatches.current?.count ?? -1, thread: pthread_self())
                started.add(1, ordering: .relaxed)
                let deadline = Date().addingTimeInterval(5)
                let together = min(parts.count, pool.maxThreads)
                while started.load(ordering: .relaxed) < together && Date() < deadline {}
                r.metOthers = started.load(ordering: .relaxed) >= together
                // Kernels inside a part run on its thread, whatever pool they ask for.
                let seen = Mutex(Set<UInt>())
                ThreadPool.shared.parallelFor(8) { _ in seen.withLock { _ = $0.insert(UInt(bitPattern: Int(bitPattern: pthread_self()))) } }
                r.kernelThreads = seen.withLock { $0 }
                (loss(parts[i]) * (Float(parts[i].count) / total)).backward()
                r.wroteGrad = parameters.contains { $0.grad != nil }
                records.withLock { $0[i] = r }
            }
            return (parameters.map { $0.grad!.toArray() }, records.withLock { $0 })
        }
    }

    @Test(arguments: [[[0, 1, 2], [3, 4, 5, 6]], [[0, 1], [2, 3, 4], [5, 6]], [[0, 1, 2, 3, 4, 5, 6]]])
    func partsGiveTheWholeBatchsGradients(parts: [[Int]]) {
        let net = Net()
        net.loss(Array(0..<7)).backward()
        let whole = net.parameters.map { $0.grad!.toArray() }
        let (split, records) = net.partsGradients(parts, pool: twoThreads())
        for (i, r) in records.enumerated() {
            #expect(r.index == i && r.count == parts.count)
            #expect(!r.wroteGrad, "part \(i) wrote a shared .grad while the parts ran")
            #expect(r.kernelThreads == [UInt(bitPattern: Int(bitPattern: r.thread!))], "part \(i)'s kernels left its thread")
        }
        // On two threads, two parts ran at the same time, on different threads.
        #expect(records.allSatisfy { $0.metOthers })
        if parts.count >= 2 { #expect(Set(records.map { UInt(bitPattern: Int(bitPattern: $0.thread!)) }).count == 2) }
        #expect(MicroBatches.current == nil)
        for (a, b) in zip(whole, split) {
            let scale = a.map(abs).max()!
            #expect(scale > 1e-3)
            #expect(zip(a, b).map { abs($0 - $1) }.max()! <= 1e-6 * max(scale, 1), "\(a) vs \(b)")
        }
    }

    /// One thread or two, the same bits (each part's kernels run on its own thread; the sums are
    /// added in part order); and a second run adds to `.grad` (part by part) as any backward does.
    @Test func resultDoesNotDependOnTheThreadsAndAccumulates() {
        let net = Net(), parts = [[0, 1, 2], [3, 4], [5, 6]]
        let one = net.partsGradients(parts, pool: ThreadPool(threads: 1))
        let two = net.partsGradients(parts, pool: twoThreads())
        #expect(Set(one.records.map { $0.thread.map { UInt(bitPattern: Int(bitPattern: $0)) } }).count == 1)
        #expect(Set(two.records.map { $0.thread.map { UInt(bitPattern: Int(bitPattern: $0)) } }).count == 2)
        #expect(one.grads == two.grads)
        let total = Float(7)
        MicroBatches.run(parts.count, pool: twoThreads()) { i in
            (net.loss(parts[i]) * (Float(parts[i].count) / total)).backward()
        }
        for (a, b) in zip(net.parameters.map { $0.grad!.toArray() }, two.grads) {
            #expect(zip(a, b).allSatisfy { abs($0 - 2 * $1) <= 1e-6 }, "\(a) vs twice \(b)")
        }
    }

    /// Parts run in the caller's grad mode on every thread; after the run the ledger holds the
    /// parameters' gradients and nothing of the parts' sinks.
    @Test func partsTakeTheCallersModeAndLeaveOnlyGradients() {
        let modes = Mutex([Bool]())
        noGrad {
            MicroBatches.run(2, pool: twoThreads()) { _ in
                let enabled = Autograd.isEnabled
                modes.withLock { $0.append(enabled) }
            }
        }
        #expect(modes.withLock { $0 } == [false, false])
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let net = Net()
            let before = ledger.current(.gradients)
            _ = net.partsGradients([[0, 1, 2], [3, 4, 5, 6]], pool: twoThreads())
            let gradBytes = net.parameters.reduce(0) { $0 + $1.grad!.count * 4 }
            #expect(ledger.current(.gradients) - before == gradBytes)
        }
    }
}
