import Foundation
import SideTuneEngine
import SideTuneTestSupport
import Synchronization
import Testing

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
        /// The gradients of the batch's mean loss, computed as these parts on `pool`; also whether
        /// any parameter's `.grad` was set while the parts ran (it must not be: parts keep theirs apart).
        func partsGradients(_ parts: [[Int]], pool: ThreadPool) -> (grads: [[Float]], touchedDuringRun: Bool) {
            for p in parameters { p.zeroGrad() }
            let touched = Atomic<Bool>(false)
            let total = Float(parts.reduce(0) { $0 + $1.count })
            MicroBatches.run(parts.count, pool: pool) { i in
                #expect(MicroBatches.current?.index == i && MicroBatches.current?.count == parts.count)
                (loss(parts[i]) * (Float(parts[i].count) / total)).backward()
                if parameters.contains(where: { $0.grad != nil }) { touched.store(true, ordering: .relaxed) }
            }
            return (parameters.map { $0.grad!.toArray() }, touched.load(ordering: .relaxed))
        }
    }

    @Test(arguments: [[[0, 1, 2], [3, 4, 5, 6]], [[0, 1], [2, 3, 4], [5, 6]], [[0, 1, 2, 3, 4, 5, 6]]])
    func partsGiveTheWholeBatchsGradients(parts: [[Int]]) {
        let net = Net()
        net.loss(Array(0..<7)).backward()
        let whole = net.parameters.map { $0.grad!.toArray() }
        let (split, touched) = net.partsGradients(parts, pool: ThreadPool(threads: 2))
        #expect(!touched, "a part wrote a shared .grad while the parts ran")
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
        let one = net.partsGradients(parts, pool: ThreadPool(threads: 1)).grads
        let two = net.partsGradients(parts, pool: ThreadPool(threads: 2)).grads
        #expect(one == two)
        let total = Float(7)
        MicroBatches.run(parts.count, pool: ThreadPool(threads: 2)) { i in
            (net.loss(parts[i]) * (Float(parts[i].count) / total)).backward()
        }
        for (a, b) in zip(net.parameters.map { $0.grad!.toArray() }, two) {
            #expect(zip(a, b).allSatisfy { abs($0 - 2 * $1) <= 1e-6 }, "\(a) vs twice \(b)")
        }
    }
}
