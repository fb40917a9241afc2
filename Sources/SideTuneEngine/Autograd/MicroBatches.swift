import Synchronization

/// One part of a batch run by `MicroBatches.run`.
public struct MicroBatch: Sendable {
    /// Which part (0..<count) and how many parts the batch has.
    public let index: Int
    public let count: Int
    /// Numbers the `run` call, so layers with per-step state (dropout's seeds) can tell steps apart.
    public let run: Int
}

/// Data parallelism inside one training step, for models whose examples do not interact (no
/// batch statistics): the batch is cut into parts, each part runs forward and backward on its own
/// thread, and the parts' leaf gradients are summed. A small side network parallelises poorly op
/// by op (its GEMMs are narrow and each op is a hand-off between threads); whole parts on whole
/// threads need one hand-off per step.
///
/// Determinism: kernels inside a part run on the part's thread only (every `parallelFor` inside a
/// part runs inline, whatever its pool), and each part's gradients are kept apart and then added
/// to `.grad` in part order. So the result depends on how the batch is cut, never on which thread
/// ran which part.
public enum MicroBatches {
    /// The part this thread is running, inside `run`; nil elsewhere.
    public static var current: MicroBatch? { ThreadState.current.microBatch }

    private static let runs = Atomic<Int>(0)

    /// Runs `body(i)` for the parts i in 0..<count on up to `count` threads of `pool`. Backward
    /// calls inside `body` collect leaf gradients per part; when every part is done they are added
    /// to the leaves' `.grad` (which accumulates as after any backward), part 0 first.
    public static func run(_ count: Int, pool: ThreadPool = .shared, _ body: (Int) -> Void) {
        precondition(count >= 1, "MicroBatches.run needs at least one part")
        precondition(current == nil, "MicroBatches.run inside a micro-batch")
        let run = runs.add(1, ordering: .relaxed).newValue
        let sinks = (0..<count).map { _ in GradientSink() }
        // Every part runs in the caller's grad mode, matmul precision, activation bits and attention
        // recompute setting, on whichever thread.
        // (The pool hands workers the caller's ledger and category; other task-locals do not cross.)
        let gradEnabled = ThreadState.current.gradEnabled, precision = MatmulPrecision.current
        let activationBits = ActivationBits.current, recompute = AttentionRecompute.current
        pool.parallelFor(count) { i in
            let state = ThreadState.current
            let saved = (state.microBatch, state.gradientSink, state.gradEnabled)
            state.microBatch = MicroBatch(index: i, count: count, run: run)
            state.gradientSink = sinks[i]
            state.gradEnabled = gradEnabled
            defer { (state.microBatch, state.gradientSink, state.gradEnabled) = saved }
            Tensor.withMatmulPrecision(precision) {
                Tensor.withActivationBits(activationBits) { Tensor.withAttentionRecompute(recompute) { body(i) } }
            }
        }
        MemoryLedger.withCategory(.gradients) {
            for sink in sinks {
                for (leaf, g) in sink.gradients {
                    if let existing = leaf.grad { addInPlace(existing, g) } else { leaf.grad = g }
                }
            }
        }
    }
}

/// Leaf gradients of one micro-batch, in the order backward first reached each leaf.
final class GradientSink {
    private(set) var gradients: [(Tensor, Tensor)] = []
    private var slot: [ObjectIdentifier: Int] = [:]

    func add(_ g: Tensor, to leaf: Tensor) {
        if let i = slot[ObjectIdentifier(leaf)] {
            addInPlace(gradients[i].1, g)
        } else {
            slot[ObjectIdentifier(leaf)] = gradients.count
            // Own copy: rules may share tensors between inputs (as `accumulateGrad` does).
            gradients.append((leaf, g.copy(category: .gradients)))
        }
    }
}
