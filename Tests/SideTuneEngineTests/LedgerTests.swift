import Foundation
import SideTuneEngine
import Synchronization
import SideTuneTestSupport
import Testing

/// The ledger is a product feature: what it says must be true. Each test counts in its own ledger
/// so parallel tests cannot disturb it.
@Suite struct LedgerTests {
    func mlp(_ x: Tensor, _ w1: Tensor, _ w2: Tensor) -> Tensor {
        x.matmul(w1).gelu().matmul(w2)
    }

    @Test func noGradForwardKeepsNothing() {
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let w1 = randomTensor([32, 64], seed: 1), w2 = randomTensor([64, 8], seed: 2)
            w1.storage.retag(.weights); w2.storage.retag(.weights)
            w1.requiresGrad = true; w2.requiresGrad = true
            let x = randomTensor([16, 32], seed: 3)
            x.storage.retag(.weights)
            do {
                let y = noGrad { mlp(x, w1, w2) }
                #expect(ledger.current(.activations) == y.count * 4, "only the output is alive")
                #expect(Autograd.graphSize(y) == 0)
            }
            #expect(ledger.current(.activations) == 0)
            #expect(ledger.current(.gradients) == 0)
            #expect(ledger.peak(.activations) >= 16 * 64 * 4, "the hidden layer was counted while alive")
        }
    }

    @Test func backwardAndStepFreeActivations() {
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let w1 = randomTensor([32, 64], seed: 1), w2 = randomTensor([64, 8], seed: 2)
            for w in [w1, w2] { w.storage.retag(.weights); w.requiresGrad = true }
            let x = randomTensor([16, 32], seed: 3)
            do {
                let loss = mlp(x, w1, w2).crossEntropy(targets: (0..<16).map { Int32($0 % 8) })
                #expect(ledger.current(.activations) > 16 * 64 * 4, "forward keeps activations for backward")
                loss.backward()
                #expect(Autograd.graphSize(loss) == 0, "backward frees the graph")
            }
            // Plain SGD step on the gradients.
            for w in [w1, w2] { let g = w.grad!; for i in 0..<w.count { w.data[i] -= 0.1 * g.data[i] } }
            #expect(ledger.current(.activations) == x.count * 4, "only the input remains an activation")
            #expect(ledger.current(.gradients) == (w1.count + w2.count) * 4, "exactly the two weight gradients")
            w1.zeroGrad(); w2.zeroGrad()
            #expect(ledger.current(.gradients) == 0)
        }
    }

    @Test func totalsMatchAllocationsAndFrees() {
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            var live: [Tensor] = []
            var expected = 0
            for i in 1...20 {
                let t = MemoryLedger.withCategory(i % 2 == 0 ? .cache : .workspace) { Tensor.zeros([i, 3]) }
                live.append(t)
                expected += i * 3 * 4
            }
            #expect(ledger.currentTotal == expected)
            #expect(ledger.current(.cache) + ledger.current(.workspace) == expected)
            #expect(ledger.counts.allocations == 20)
            live.removeAll()
            #expect(ledger.currentTotal == 0)
            #expect(ledger.counts.frees == 20)
            #expect(ledger.peakTotal == expected)
            let report = ledger.snapshot().report()
            #expect(report.contains("cache") && report.contains("process RSS"))
        }
    }

    /// Tensors made on the pool's worker threads count in the caller's ledger scope and category,
    /// not in the shared ledger: scoped measurements see all of their own work and none of others'.
    @Test func workersCountInTheCallersScope() {
        let pool = ThreadPool(threads: 2)
        let ledger = MemoryLedger()
        MemoryLedger.withLedger(ledger) {
            let kept = Mutex<[Tensor]>([])
            MemoryLedger.withCategory(.cache) {
                pool.parallelFor(8) { i in
                    let t = Tensor.zeros([i + 1, 4])
                    kept.withLock { $0.append(t) }
                }
            }
            #expect(ledger.current(.cache) == (1...8).reduce(0, +) * 4 * 4)
            #expect(ledger.counts.allocations == 8)
            kept.withLock { $0.removeAll() }
            #expect(ledger.currentTotal == 0)
        }
    }

    /// The block pool reuses a freed block for a later request of its class or up to half its size,
    /// and keeps mapped bytes (live + idle) within the peak of live bytes plus its slack: a size
    /// that fits no idle block evicts idle blocks before mapping.
    @Test func blockPoolReusesWithinThePeak() {
        let mb = 1 << 20
        let pool = LargeBlockCache(slackMB: 1)
        let a = pool.allocate(3 * mb, what: "test"), b = pool.allocate(5 * mb, what: "test")
        memset(a, 1, 3 * mb); memset(b, 2, 5 * mb)
        #expect(Int(bitPattern: b) % (2 * mb) == 0, "blocks from 4 MiB sit on huge-page boundaries")
        pool.release(a, 3 * mb)
        let c = pool.allocate(2 * mb, what: "test")
        #expect(c == a && pool.idleBytes == mb, "a 2 MiB request is carved from a's 3 MiB; 1 MiB stays free")
        pool.release(b, 5 * mb)
        pool.release(c, 2 * mb)
        let peak = pool.peakLiveBytes
        #expect(pool.liveBytes == 0 && pool.idleBytes == peak && peak == 9 * mb, "3 MiB + 5 MiB rounded to 6")
        // 20 MiB fits no idle range: idle memory is unmapped first, so mapped bytes stay within the bound.
        let d = pool.allocate(20 * mb, what: "test")
        #expect(pool.idleBytes <= mb && pool.evictions >= 1)
        #expect(pool.freshBytes == (3 + 6 + 20) * mb, "every miss maps fresh pages")
        #expect(pool.liveBytes + pool.idleBytes <= pool.peakLiveBytes + mb)
        memset(d, 3, 20 * mb)
        pool.release(d, 20 * mb)
        // Blocks are carved from the freed range one after another, and merge back into one range.
        let idleBefore = pool.idleRanges
        let e = pool.allocate(2 * mb, what: "test"), f = pool.allocate(3 * mb + 1, what: "test")
        #expect(e == d && f == d + 2 * mb && pool.misses == 3, "both carved from d's pages: no new mapping")
        #expect(f.load(fromByteOffset: 0, as: UInt8.self) == 3, "reused pages are not zeroed (callers initialise)")
        pool.release(e, 2 * mb)
        pool.release(f, 3 * mb + 1)
        #expect(pool.idleRanges == idleBefore, "freed neighbours merge")
        let g = pool.allocate(20 * mb, what: "test")
        #expect(g == d && pool.misses == 3, "the merged range serves the whole size again")
        pool.release(g, 20 * mb)
        pool.trim()
        #expect(pool.idleBytes == 0 && pool.peakLiveBytes == 0 && pool.idleRanges == 0)
        #expect(LargeBlockCache.sizeClass(3 * mb + 1) == 3 * mb + 64 << 10 && LargeBlockCache.sizeClass(5 * mb) == 6 * mb)
        let off = LargeBlockCache(slackMB: 0)
        let e2 = off.allocate(mb, what: "test")
        off.release(e2, mb)
        #expect(off.idleBytes == 0, "slack 0 turns reuse off")
    }
}

/// The stolen-CPU reading that reports print next to their times.
@Suite struct CPUTimesTests {
    @Test func parsesProcStatAndComputesTheStolenShare() throws {
        let before = try #require(CPUTimes(procStat: "cpu  100 5 20 800 10 1 2 12 0 0\ncpu0 50 2 10 400 5 0 1 6 0 0\nintr 1\n"))
        #expect(before.total == 950 && before.steal == 12)
        let after = try #require(CPUTimes(procStat: "cpu  160 5 30 900 10 1 2 42 7 0\n"))
        // 200 ticks passed, 30 of them stolen.
        #expect(CPUTimes.stolenShare(from: before, to: after) == 0.15)
        #expect(CPUTimes.stolenShare(from: before, to: before) == nil)
        #expect(CPUTimes(procStat: "intr 1\n") == nil)
        #expect(CPUTimes(procStat: "cpu  1 2 3\n") == nil, "a line without the steal field")
        if FileManager.default.fileExists(atPath: "/proc/stat") { #expect(CPUTimes.now() != nil) }
    }
}
