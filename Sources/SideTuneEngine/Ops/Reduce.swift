import CSideTuneKernels

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

/// Sum of n floats with vector accumulators (`st_sum`).
@inline(__always) func sumFloats(_ p: UnsafePointer<Float>, _ n: Int) -> Float { st_sum(p, n) }

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

extension Tensor {
    /// out[b, :] = (sum over t of weights[b, t] * x[b, t, :]) / divisors[b] for x [B, T, D] -> [B, D]:
    /// masked mean pooling in one pass (the composite x * mask [B, T, 1] took the strided broadcast
    /// path, then a reduction and a division, each with its own backward pass).
    /// Backward: gx[b, t, :] = g[b, :] * weights[b, t] / divisors[b].
    public func weightedSumOverTokens(weights: [Float], divisors: [Float]) -> Tensor {
        precondition(rank == 3, "weightedSumOverTokens needs [B, T, D], got \(shape)")
        let (b, t, d) = (shape[0], shape[1], shape[2])
        precondition(weights.count == b * t && divisors.count == b, "weightedSumOverTokens: \(weights.count) weights, \(divisors.count) divisors for \(shape)")
        let out = Tensor.zeros([b, d])
        let px = data, po = out.data
        for i in 0..<b {
            for j in 0..<t where weights[i * t + j] != 0 { axpy(d, weights[i * t + j], px + (i * t + j) * d, po + i * d) }
            let inv = 1 / divisors[i]
            for k in 0..<d { po[i * d + k] = po[i * d + k] * inv }
        }
        let inShape = shape
        return record(out, "weighted_sum_tokens", [self]) { g in
            let gx = Tensor(shape: inShape)
            for i in 0..<b {
                for j in 0..<t {
                    let w = weights[i * t + j] / divisors[i], o = gx.data + (i * t + j) * d, gi = g.data + i * d
                    for k in 0..<d { o[k] = gi[k] * w }
                }
            }
            return [gx]
        }
    }
}

extension Tensor {
    /// Whether no element is NaN or infinite. One vectorised sum decides the common case (a finite
    /// sum has only finite terms); only a non-finite sum (which large finite values can also give)
    /// is scanned element by element.
    public var allFinite: Bool {
        let f = dtype == .float32 ? self : float32()
        if sumFloats(f.data, f.count).isFinite { return true }
        for i in 0..<f.count where !f.data[i].isFinite { return false }
        return true
    }
}
