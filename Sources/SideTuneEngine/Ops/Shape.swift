/// Shape ops. Storage is always contiguous, so reshape is free and the others copy.
extension Tensor {
    /// Same elements, new shape (one dimension may be -1). Shares storage.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            s[i] = count / known
        }
        precondition(s.reduce(1, *) == count, "cannot reshape \(shape) (\(count) elements) to \(newShape)")
        let out = Tensor(storage: storage, shape: s)
        let inShape = shape
        return record(out, "reshape", [self]) { g in [g.reshaped(inShape)] }
    }

    /// Reorders axes: result axis i is input axis perm[i].
    public func permuted(_ perm: [Int]) -> Tensor {
        precondition(perm.sorted() == Array(0..<rank), "permutation \(perm) for rank \(rank)")
        if perm == Array(0..<rank) { return self }
        let outShape = perm.map { shape[$0] }
        let out = Tensor(shape: outShape)
        permuteCopy(data, shape, perm, out.data)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, p) in perm.enumerated() { inverse[p] = i }
        return record(out, "permute", [self]) { g in [g.permuted(inverse)] }
    }

    /// Swaps two axes.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var perm = Array(0..<rank)
        perm.swapAt(normalizeAxis(a, rank), normalizeAxis(b, rank))
        return permuted(perm)
    }

    /// Elements [start, end) along `axis`.
    public func slice(axis: Int, _ start: Int, _ end: Int) -> Tensor {
        let ax = normalizeAxis(axis, rank)
        precondition(0 <= start && start <= end && end <= shape[ax], "slice \(start)..<\(end) of axis \(ax) with size \(shape[ax])")
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *), n = shape[ax], m = end - start
        var outShape = shape
        outShape[ax] = m
        let out = Tensor(shape: outShape)
        for o in 0..<outer {
            (out.data + o * m * inner).update(from: data + (o * n + start) * inner, count: m * inner)
        }
        let inShape = shape
        return record(out, "slice", [self]) { g in
            let gx = Tensor.zeros(inShape)
            for o in 0..<outer { (gx.data + (o * n + start) * inner).update(from: g.data + o * m * inner, count: m * inner) }
            return [gx]
        }
    }

    /// Splits along `axis` into pieces of the given sizes.
    public func split(axis: Int, sizes: [Int]) -> [Tensor] {
        let ax = normalizeAxis(axis, rank)
        precondition(sizes.reduce(0, +) == shape[ax], "split sizes \(sizes) do not add up to \(shape[ax])")
        var start = 0
        return sizes.map { s in
            defer { start += s }
            return slice(axis: ax, start, start + s)
        }
    }

    /// Joins tensors along `axis`; all other dimensions must match.
    public static func concat(_ parts: [Tensor], axis: Int) -> Tensor {
        precondition(!parts.isEmpty, "concat of nothing")
        let r = parts[0].rank, ax = normalizeAxis(axis, r)
        for p in parts {
            precondition(p.rank == r && p.shape.enumerated().allSatisfy { $0.offset == ax || $0.element == parts[0].shape[$0.offset] },
                         "concat along \(ax): shape \(p.shape) does not match \(parts[0].shape)")
        }
        let outer = parts[0].shape[..<ax].reduce(1, *), inner = parts[0].shape[(ax + 1)...].reduce(1, *)
        let sizes = parts.map { $0.shape[ax] }
        let total = sizes.reduce(0, +)
        var outShape = parts[0].shape
        outShape[ax] = total
        let out = Tensor(shape: outShape)
        var offset = 0
        for (p, m) in zip(parts, sizes) {
            for o in 0..<outer {
                (out.data + (o * total + offset) * inner).update(from: p.data + o * m * inner, count: m * inner)
            }
            offset += m
        }
        let needs = parts.map(\.requiresGrad)
        return record(out, "concat", parts) { g in
            var off = 0
            return zip(needs, sizes).map { need, m in
                defer { off += m }
                return need ? g.slice(axis: ax, off, off + m) : nil
            }
        }
    }
}

/// Copies `src` (shape `shape`) into `dst` with axes reordered by `perm`. The innermost loop runs
/// over the output's last axis; a plain copy of contiguous runs when the last axis stays last.
func permuteCopy(_ src: UnsafePointer<Float>, _ shape: [Int], _ perm: [Int], _ dst: UnsafeMutablePointer<Float>) {
    let r = shape.count
    var inStrides = [Int](repeating: 1, count: r)
    for i in stride(from: r - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
    let outShape = perm.map { shape[$0] }
    let strides = perm.map { inStrides[$0] } // input stride of each output axis
    let last = outShape[r - 1], lastStride = strides[r - 1]
    let total = outShape.reduce(1, *)
    if total == 0 { return }
    let outer = total / last
    // Parallelise over the output's leading axis when large.
    let lead = outShape[0], perLead = outer / max(lead, 1)
    ThreadPool.shared.parallelChunks(lead, minChunk: max(1, (1 << 16) / max(total / max(lead, 1), 1))) { range in
        var idx = [Int](repeating: 0, count: max(r - 1, 0))
        for l in range {
            if r > 1 { idx[0] = l }
            for d in 1..<max(r - 1, 1) where r > 1 { idx[d] = 0 }
            var off = r > 1 ? l * strides[0] : 0
            for o in 0..<perLead {
                let dst0 = dst + (l * perLead + o) * last
                if lastStride == 1 { dst0.update(from: src + off, count: last) } else {
                    for j in 0..<last { dst0[j] = src[off + j * lastStride] }
                }
                var d = r - 2
                while d >= 1 {
                    idx[d] += 1; off += strides[d]
                    if idx[d] < outShape[d] { break }
                    off -= strides[d] * outShape[d]; idx[d] = 0
                    d -= 1
                }
            }
        }
    }
}
