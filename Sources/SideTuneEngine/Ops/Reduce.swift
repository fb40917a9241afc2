/// Sums over axes, one axis at a time: each step views the tensor as [outer, n, inner] and adds the
/// n slices (vectorised over inner, or a row reduction when inner == 1).
func sumAxis(_ x: Tensor, _ axis: Int) -> Tensor {
    let outer = x.shape[..<axis].reduce(1, *), n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
    var shape = x.shape
    shape[axis] = 1
    let out = Tensor.zeros(shape)
    let px = x.data, po = out.data
    if inner == 1 {
        ThreadPool.shared.parallelChunks(outer, minChunk: max(1, (1 << 15) / max(n, 1))) { r in
            for o in r { po[o] = sumFloats(px + o * n, n) }
        }
    } else {
        ThreadPool.shared.parallelChunks(outer, minChunk: max(1, (1 << 15) / max(n * inner, 1))) { r in
            for o in r {
                let dst = po + o * inner
                for k in 0..<n { axpy(inner, 1, px + (o * n + k) * inner, dst) }
            }
        }
    }
    return out
}

/// Sum of n floats with vector accumulators.
@inline(__always) func sumFloats(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var s0 = V16(), s1 = V16()
    var i = 0
    while i + 32 <= n { s0 += loadV(p + i); s1 += loadV(p + i + 16); i += 32 }
    while i + 16 <= n { s0 += loadV(p + i); i += 16 }
    var s = hsum(s0 + s1)
    while i < n { s += p[i]; i += 1 }
    return s
}

extension Tensor {
    /// Sum over `axes` (all axes when nil). Negative axes count from the end.
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = Set((axes ?? Array(0..<rank)).map { normalizeAxis($0, rank) }).sorted()
        var y = self.detach()
        for a in ax.reversed() { y = sumAxis(y, a) }
        let keptShape = y.shape
        let outShape = keepDims ? keptShape : shape.enumerated().filter { !ax.contains($0.offset) }.map { $0.element }
        let out = Tensor(storage: y.storage, shape: outShape)
        let inShape = shape
        return record(out, "sum", [self]) { g in
            [g.reshaped(keptShape).expanded(to: inShape)]
        }
    }

    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = Set((axes ?? Array(0..<rank)).map { normalizeAxis($0, rank) })
        let n = ax.reduce(1) { $0 * shape[$1] }
        return sum(axes: Array(ax), keepDims: keepDims) * (1 / Float(max(n, 1)))
    }

    /// Repeats this tensor along its size-1 axes to `shape` (no autograd; used by backward rules).
    public func expanded(to target: [Int]) -> Tensor {
        if shape == target { return self }
        return noGrad { broadcastBinary(Tensor.zeros(target), self, .add) }
    }
}
