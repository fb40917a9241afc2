/// A packed batch: B sequences of real tokens laid end to end as the rows of a [1, N, d] tensor,
/// with no padding rows. Row-wise ops (linear, LayerNorm, activations) need nothing else; the ops
/// that mix tokens (attention, pooling) take the segments. A side network reading packed taps
/// computes nothing for padding, which a padded batch of short texts is mostly made of.
public struct TokenSegments: Sendable, Equatable {
    /// Real tokens of each sequence (each >= 1).
    public let lengths: [Int]
    /// Row of each sequence's first token.
    public let starts: [Int]
    /// N, all the rows.
    public let total: Int

    public init(lengths: [Int]) {
        precondition(!lengths.isEmpty && lengths.allSatisfy { $0 >= 1 }, "TokenSegments: every sequence needs >= 1 token, got \(lengths)")
        var st: [Int] = [], acc = 0
        for l in lengths { st.append(acc); acc += l }
        self.lengths = lengths
        starts = st
        total = acc
    }

    public var count: Int { lengths.count }

    /// Rows of a padded [B, seq] layout that hold real tokens (sequence b's first lengths[b]), in order.
    public func paddedRows(seq: Int) -> [Int] {
        var rows: [Int] = []
        rows.reserveCapacity(total)
        for (b, l) in lengths.enumerated() {
            precondition(l <= seq, "TokenSegments: sequence \(b) has \(l) tokens, more than the padded length \(seq)")
            rows += (b * seq)..<(b * seq + l)
        }
        return rows
    }
}

extension Tensor {
    /// x [B, T, d] -> [1, N, d]: the real tokens of `segments` (padding rows dropped).
    public func packed(_ segments: TokenSegments) -> Tensor {
        precondition(rank == 3 && shape[0] == segments.count, "packed: \(shape) is not [\(segments.count), T, d]")
        return gatherRows(segments.paddedRows(seq: shape[1]), outShape: [1, segments.total, shape[2]])
    }

    /// x [1, N, d] -> [B, d]: each sequence's mean over its tokens.
    public func segmentMean(_ segments: TokenSegments) -> Tensor {
        checkPacked(segments, "segmentMean")
        let d = shape[2], b = segments.count
        let out = Tensor.zeros([b, d])
        let px = data, po = out.data
        for (i, (r0, l)) in zip(segments.starts, segments.lengths).enumerated() {
            for r in r0..<(r0 + l) { axpy(d, 1, px + r * d, po + i * d) }
            let inv = 1 / Float(l)
            for k in 0..<d { po[i * d + k] *= inv }
        }
        let inShape = shape
        return record(out, "segment_mean", [self]) { g in
            let gx = Tensor(shape: inShape)
            for (i, (r0, l)) in zip(segments.starts, segments.lengths).enumerated() {
                let inv = 1 / Float(l), gi = g.data + i * d
                for r in r0..<(r0 + l) {
                    let o = gx.data + r * d
                    for k in 0..<d { o[k] = gi[k] * inv }
                }
            }
            return [gx]
        }
    }

    /// x [1, N, d] -> [B, d]: each sequence's first token (a [CLS] read-out).
    public func segmentFirst(_ segments: TokenSegments) -> Tensor {
        checkPacked(segments, "segmentFirst")
        return gatherRows(segments.starts, outShape: [segments.count, shape[2]])
    }

    private func checkPacked(_ segments: TokenSegments, _ op: String) {
        precondition(rank == 3 && shape[0] == 1 && shape[1] == segments.total, "\(op): \(shape) is not packed [1, \(segments.total), d]")
    }

    /// Rows `rows` of x viewed as [rows, d] (d the last axis), copied into `outShape`. Backward
    /// adds each output row's gradient into its source row (a row may be read more than once).
    func gatherRows(_ rows: [Int], outShape: [Int]) -> Tensor {
        let d = shape[rank - 1], n = count / d
        precondition(outShape.reduce(1, *) == rows.count * d, "gatherRows: \(rows.count) rows of \(d) do not fill \(outShape)")
        for r in rows { precondition(r >= 0 && r < n, "gatherRows: row \(r) outside 0..<\(n)") }
        let out = Tensor(shape: outShape)
        for (i, r) in rows.enumerated() { (out.data + i * d).update(from: data + r * d, count: d) }
        let inShape = shape
        return record(out, "gather_rows", [self]) { g in
            let gx = Tensor.zeros(inShape)
            for (i, r) in rows.enumerated() { axpy(d, 1, g.data + i * d, gx.data + r * d) }
            return [gx]
        }
    }
}

/// How a batch's tokens are laid out: padded [B, T, d] with a key-padding mask of [B * T] 1s
/// (token) and 0s (padding), or packed [1, N, d] by segments.
public enum TokenLayout: Sendable {
    case padded(keyPadding: [Float])
    case packed(TokenSegments)
}
