/// Reverse-mode autograd. Every differentiable op records a `GradNode` on its output: one edge per
/// input (where that input's gradient goes) and a closure from the output's gradient to the
/// inputs' gradients (nil where an input needs none).
///
/// What a node keeps alive is what its derivative reads, and nothing else. An edge holds the
/// parameter a gradient accumulates into, or the node that made the input, never the input's
/// bytes: a tensor an op reads lives on only if the op's closure saved it, and each op saves only
/// what the gradients it must produce read (a linear layer with a frozen weight keeps W for dx
/// but not its input x). `backward()` walks the nodes in reverse topological order and frees each
/// node's closure as soon as it has run, so saved tensors live only until backward has used them.
final class GradNode {
    let op: String
    /// Per input: where its gradient goes.
    var edges: [GradEdge]
    /// The inputs' shapes (checked against the rule's gradients).
    let inputShapes: [[Int]]
    var backward: ((Tensor) -> [Tensor?])?

    init(op: String, inputs: [Tensor], backward: @escaping (Tensor) -> [Tensor?]) {
        self.op = op
        edges = inputs.map(GradEdge.init)
        inputShapes = inputs.map(\.shape)
        self.backward = backward
    }

    func release() {
        edges = []
        backward = nil
    }
}

/// Where one input's gradient goes: nowhere (the input needs none), into a leaf's `.grad` (a
/// parameter, kept alive by the model anyway), or on to the node that computed the input.
enum GradEdge {
    case none
    case leaf(Tensor)
    case node(GradNode)

    init(_ t: Tensor) {
        if !t.requiresGrad { self = .none } else if let node = t.gradFn { self = .node(node) } else { self = .leaf(t) }
    }
}

public enum Autograd {
    /// Whether ops on this thread record nodes for backward.
    public static var isEnabled: Bool { ThreadState.current.gradEnabled }

    /// Number of live graph nodes reachable from `t` (for tests: 0 after backward).
    public static func graphSize(_ t: Tensor) -> Int {
        guard let root = t.gradFn else { return 0 }
        var seen = Set<ObjectIdentifier>(), stack = [root], n = 0
        while let node = stack.popLast() {
            guard seen.insert(ObjectIdentifier(node)).inserted else { continue }
            if node.backward != nil { n += 1 }
            for case .node(let parent) in node.edges { stack.append(parent) }
        }
        return n
    }
}

/// Runs `body` without recording anything for backward: nothing is kept alive for a backward pass
/// (the frozen-backbone path).
public func noGrad<R>(_ body: () throws -> R) rethrows -> R {
    let state = ThreadState.current
    let saved = state.gradEnabled
    state.gradEnabled = false
    defer { state.gradEnabled = saved }
    return try body()
}

/// Attaches a backward rule to `out` when grad mode is on and an input needs a gradient. The rule
/// must capture only what it reads (see `GradNode`): input tensors it needs for the gradients
/// asked of it, never an input just to test `requiresGrad` (test that before recording).
@discardableResult
func record(_ out: Tensor, _ op: String, _ inputs: [Tensor], _ backward: @escaping (Tensor) -> [Tensor?]) -> Tensor {
    if ThreadState.current.gradEnabled && inputs.contains(where: { $0.requiresGrad }) {
        out.requiresGrad = true
        out.gradFn = GradNode(op: op, inputs: inputs, backward: backward)
    }
    return out
}

/// Whether a gradient will be asked of `t` by the op being recorded (grad mode on and `t` needs
/// one): ops decide what to save from this.
@inline(__always) func willNeedGrad(_ t: Tensor) -> Bool { t.requiresGrad && ThreadState.current.gradEnabled }

/// `t` when `condition` holds, else nil: what an op saves for backward.
@inline(__always) func saved(_ t: Tensor, if condition: Bool) -> Tensor? { condition ? t : nil }

extension Tensor {
    /// Backpropagates from this tensor (a scalar loss unless `seed` is given). Leaf gradients are
    /// added to `.grad` (accumulating across calls until `zeroGrad`); the graph is freed.
    public func backward(seed: Tensor? = nil) {
        precondition(requiresGrad, "backward() without a seed needs a tensor that requires grad")
        precondition(seed != nil || count == 1, "backward() without a seed needs a scalar, got shape \(shape)")
        let seedGrad = seed ?? MemoryLedger.withCategory(.gradients) { Tensor.full(shape, 1) }
        guard let root = gradFn else {
            MemoryLedger.withCategory(.gradients) { accumulateGrad(seedGrad) }
            return
        }
        // Topological order of the nodes reachable from the root (iterative DFS, post-order).
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Bool)] = [(root, false)]
        while let (node, expanded) = stack.popLast() {
            if expanded { order.append(node); continue }
            guard visited.insert(ObjectIdentifier(node)).inserted else { continue }
            stack.append((node, true))
            for case .node(let parent) in node.edges { stack.append((parent, false)) }
        }
        gradFn = nil
        MemoryLedger.withCategory(.gradients) {
            noGrad {
                var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): seedGrad]
                var owned = Set<ObjectIdentifier>()
                for node in order.reversed() {
                    guard let g = grads.removeValue(forKey: ObjectIdentifier(node)) else { continue }
                    guard let rule = node.backward else {
                        preconditionFailure("backward through '\(node.op)' twice: its graph was already freed")
                    }
                    let inputGrads = rule(g)
                    precondition(inputGrads.count == node.edges.count,
                                 "\(node.op): \(inputGrads.count) gradients for \(node.edges.count) inputs")
                    for (i, (edge, ig)) in zip(node.edges, inputGrads).enumerated() {
                        guard let ig else { continue }
                        precondition(ig.shape == node.inputShapes[i],
                                     "\(node.op): gradient shape \(ig.shape) != input shape \(node.inputShapes[i])")
                        switch edge {
                        case .none: continue
                        case .leaf(let leaf): leaf.accumulateGrad(ig)
                        case .node(let parent):
                            let key = ObjectIdentifier(parent)
                            // The first sum is out of place (a rule may hand the same tensor to two
                            // inputs, as add does); later ones add into that sum, which backward owns.
                            if let existing = grads[key] {
                                if owned.contains(key) { addInPlace(existing, ig) } else {
                                    grads[key] = addTensors(existing, ig)
                                    owned.insert(key)
                                }
                            } else {
                                grads[key] = ig
                            }
                        }
                    }
                    node.release()
                }
            }
        }
    }

    /// Adds `g` into `.grad` (allocating it as a gradient on first use).
    func accumulateGrad(_ g: Tensor) {
        if let sink = ThreadState.current.gradientSink {
            sink.add(g, to: self)
        } else if let existing = grad {
            addInPlace(existing, g)
        } else {
            grad = g.copy(category: .gradients) // own copy: rules may share tensors between inputs
        }
    }

    /// Drops the accumulated gradient.
    public func zeroGrad() { grad = nil }
}

/// a + b for same-shape tensors into a new tensor (one pass), no autograd.
func addTensors(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.count == b.count)
    let out = Tensor(shape: a.shape)
    let pa = a.data, pb = b.data, po = out.data
    parallelElementwise(a.count) { lo, hi in
        var i = lo
        while i + 16 <= hi { storeV(po + i, loadV(pa + i) + loadV(pb + i)); i += 16 }
        while i < hi { po[i] = pa[i] + pb[i]; i += 1 }
    }
    return out
}

/// dst += src, elementwise (same shape).
func addInPlace(_ dst: Tensor, _ src: Tensor) {
    precondition(dst.count == src.count)
    let d = dst.data, s = src.data, n = dst.count
    parallelElementwise(n) { lo, hi in
        var i = lo
        while i + 16 <= hi { storeV(d + i, loadV(d + i) + loadV(s + i)); i += 16 }
        while i < hi { d[i] += s[i]; i += 1 }
    }
}
