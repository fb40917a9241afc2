import Foundation
import SideTuneEngine
import Testing

/// The pool's admission protocol (a helper joins a job only while it is open; the caller waits only
/// for helpers that joined): every index runs exactly once, whether the helper is spinning, asleep
/// on the condition variable or late, and regions can follow each other with no gap.
@Suite struct ThreadPoolTests {
    @Test func everyIndexRunsExactlyOnce() {
        let pool = ThreadPool(threads: 2)
        var rng = SplitMix64(seed: 11)
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { slots.deallocate() }
        for region in 0..<20_000 {
            let count = 1 + Int(rng.next() % 64)
            slots.initialize(repeating: 0, count: count)
            pool.parallelFor(count) { i in slots[i] += 1 }
            let runs = (0..<count).map { slots[$0] }
            #expect(runs.allSatisfy { $0 == 1 }, "region \(region): indices ran \(runs) times")
            if runs.contains(where: { $0 != 1 }) { break }
            // Now and then let the helper fall asleep on the condition variable before the next job.
            if region % 2_000 == 1_999 { usleep(20_000) }
        }
    }

    @Test func chunksCoverTheRangeOnce() {
        let pool = ThreadPool(threads: 2)
        for count in [1, 2, 3, 17, 1000] {
            let seen = UnsafeMutablePointer<Int>.allocate(capacity: count)
            defer { seen.deallocate() }
            seen.initialize(repeating: 0, count: count)
            for _ in 0..<500 { pool.parallelChunks(count) { r in for i in r { seen[i] += 1 } } }
            #expect((0..<count).allSatisfy { seen[$0] == 500 }, "count \(count)")
        }
    }
}
