extension Tensor {
    /// x [B, T, ...] -> [B, ...]: row b's element at position `positions[b]` along axis 1 (a decoder
    /// classifier reads each row's last real token). Backward scatters into one zero tensor of x's
    /// shape (slicing row by row would allocate a full-size gradient per row).
    public func gatherPositions(_ positions: [Int]) -> Tensor {
        precondition(rank >= 2, "gatherPositions needs [B, T, ...], got \(shape)")
        let (b, t) = (shape[0], shape[1])
        precondition(positions.count == b, "gatherPositions: \(positions.count) positions for batch \(b)")
        for (i, p) in positions.enumerated() { precondition(p >= 0 && p < t, "gatherPositions: row \(i) position \(p) outside 0..<\(t)") }
        let inner = shape[2...].reduce(1, *)
        let out = Tensor(shape: [b] + Array(shape[2...]))
        for (i, p) in positions.enumerated() { (out.data + i * inner).update(from: data + (i * t + p) * inner, count: inner) }
        let inShape = shape
        return record(out, "gather_positions", [self]) { g in
            let gx = Tensor.zeros(inShape)
            for (i, p) in positions.enumerated() { (gx.data + (i * t + p) * inner).update(from: g.data + i * inner, count: inner) }
            return [gx]
        }
    }

    /// Maximum over the last axis [..., n] -> [...]. Backward routes the gradient to the first
    /// maximum of each row (as torch.max does).
    public func maxLastAxis() -> Tensor {
        precondition(rank >= 1 && shape[rank - 1] > 0, "maxLastAxis of shape \(shape)")
        let n = shape[rank - 1], rows = count / n
        let out = Tensor(shape: Array(shape.dropLast()))
        var argmax = [Int32](repeating: 0, count: rows)
        for r in 0..<rows {
            let row = data + r * n
            var best = 0
            for j in 1..<n where row[j] > row[best] { best = j }
            argmax[r] = Int32(best)
            out.data[r] = row[best]
        }
        let inShape = shape
        return record(out, "max_last_axis", [self]) { g in
            let gx = Tensor.zeros(inShape)
            for r in 0..<rows { gx.data[r * n + Int(argmax[r])] = g.data[r] }
            return [gx]
        }
    }
}
