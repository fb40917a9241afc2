/// Reverse-mode autograd. Every differentiable op records a `GradNode` on its output: the inputs
/// and a closure from the output's gradient to the inputs' gradients (nil where an input needs
/// none). `backward()` walks the nodes in reverse topological order, then frees each node's saved
/// tensors, so activations live only until backward has used them.
final class GradNode {
    let op: String
    var inputs: [Tensor]
    var backward: ((Tensor) -> [Tensor?])?

    init(op: String, inputs: [Tensor], backward: @escaping (Tensor) -> [Tensor?]) {
        self.op = op
        self.inputs = inputs
        self.backward = backward
    }

    func release() {
        inputs = []
        backward = nil
    }
}

public enum Autograd {
    /// Whether ops on this thread record nodes for backward.
    public static var isEnabled: Bool { ThreadState.current.gradEnabled }

    /// Number of live graph nodes reachable from `t` (for tests: 0 after backward).
    public static func graphSize(_ t: Tensor) -> Int {
        var seen = Set<ObjectIdentifier>(), stack = [t], n = 0
        while let x = stack.popLast() {
            guard let node = x.gradFn, seen.insert(ObjectIdentifier(node)).inserted else { continue }
            if node.backward != nil { n += 1 }
            stack.append(contentsOf: node.inputs)
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

/// Attaches a backward rule to `out` when grad mode is on and an input needs a gradient.
@discardableResult
func record(_ out: Tensor, _ op: String, _ inputs: [Tensor], _ backward: @escaping (Tensor) -> [Tensor?]) -> Tensor {
    if ThreadState.current.gradEnabled && inputs.contains(where: { $0.requiresGrad }) {
        out.requiresGrad = true
        out.gradFn = GradNode(op: op, inputs: inputs, backward: backward)
    }
    return out
}

extension Tensor {
    /// Whether backward needs this tensor's gradient (saves work computing unused gradients).
    @inline(__always) var needsGrad: Bool { requiresGrad }

    /// Backpropagates from this tensor (a scalar loss unless `seed` is given). Leaf gradients are
    /// added to `.grad` (accumulating across calls until `zeroGrad`); the graph is freed.
    public func backward(seed: Tensor? = nil) {
        precondition(requiresGrad, "backward() on a tensor that does not require grad")
        precondition(seed != nil || count == 1, "backward() without a seed needs a scalar, got shape \(shape)")
        // Topological order of the nodes reachable from self (iterative DFS, post-order).
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Bool)] = [(self, false)]
        while let (t, expanded) = stack.popLast() {
            if expanded { order.append(t); continue }
            guard visited.insert(ObjectIdentifier(t)).inserted else { continue }
            stack.append((t, true))
            if let node = t.gradFn { for i in node.inputs where i.requiresGrad { stack.append((i, false)) } }
        }
        MemoryLedger.withCategory(.gradients) {
            noGrad {
                var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(self): seed ?? Tensor.full(shape, 1)]
                var owned = Set<ObjectIdentifier>()
                for t in order.reversed() {
                    guard let g = grads.removeValue(forKey: ObjectIdentifier(t)) else { continue }
                    guard let node = t.gradFn else {
                        t.accumulateGrad(g)
                        continue
                    }
                    guard let rule = node.backward else {
                        preconditionFailure("backward through '\(node.op)' twice: its graph was already freed")
                    }
                    let inputGrads = rule(g)
                    for (input, ig) in zip(node.inputs, inputGrads) {
                        guard let ig, input.requiresGrad else { continue }
                        precondition(ig.shape == input.shape, "\(node.op): gradient shape \(ig.shape) != input shape \(input.shape)")
                        let key = ObjectIdentifier(input)
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
                    node.release()
                    t.gradFn = nil
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
