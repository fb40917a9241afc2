import CSideTuneKernels
import Foundation

// Fused neural-network ops: each a forward kernel that saves what its backward needs (per-row
// statistics, not whole intermediate tensors) and the matching backward, as in llm.c.

extension Tensor {
    /// Softmax over the last axis of (x / temperature + mask). `mask` is additive (0 to keep,
    /// -infinity to drop) and broadcasts to x; a row with nothing kept gives zeros.
    public func softmax(temperature: Float = 1, mask: Tensor? = nil) -> Tensor {
        var z = temperature == 1 ? self : self * (1 / temperature)
        if let mask { z = z + mask }
        return z.softmaxLastAxis()
    }

    func softmaxLastAxis() -> Tensor {
        let cols = shape.last ?? 1, rows = count / max(cols, 1)
        let out = Tensor(shape: shape)
        let px = data, po = out.data
        ThreadPool.shared.parallelChunks(rows, minChunk: max(1, 4096 / max(cols, 1))) { r in
            for row in r { softmaxRow(px + row * cols, po + row * cols, cols) }
        }
        let y = out.detach()
        return record(out, "softmax", [self]) { g in
            // dx = y * (g - sum(g * y))
            let gx = Tensor(shape: y.shape)
            let py = y.data, pg = g.data, pd = gx.data
            ThreadPool.shared.parallelChunks(rows, minChunk: max(1, 4096 / max(cols, 1))) { r in
                for row in r {
                    let o = row * cols
                    let s = dot(cols, pg + o, py + o)
                    for j in 0..<cols { pd[o + j] = py[o + j] * (pg[o + j] - s) }
                }
            }
            return [gx]
        }
    }

    /// log(softmax(x)) over the last axis, computed stably.
    public func logSoftmax() -> Tensor {
        let cols = shape.last ?? 1, rows = count / max(cols, 1)
        let out = Tensor(shape: shape)
        let px = data, po = out.data
        for row in 0..<rows {
            let x = px + row * cols, o = po + row * cols
            var m = -Float.infinity
            for j in 0..<cols { m = max(m, x[j]) }
            var s: Float = 0
            for j in 0..<cols { s += Foundation.exp(x[j] - m) }
            let lse = m + Foundation.log(s)
            for j in 0..<cols { o[j] = x[j] - lse }
        }
        let y = out.detach()
        return record(out, "log_softmax", [self]) { g in
            // dx = g - softmax * sum(g)
            let gx = Tensor(shape: y.shape)
            for row in 0..<rows {
                let o = row * cols
                let s = sumFloats(g.data + o, cols)
                for j in 0..<cols { gx.data[o + j] = g.data[o + j] - Foundation.exp(y.data[o + j]) * s }
            }
            return [gx]
        }
    }

    /// Mean cross-entropy of logits [N, C] (or [..., C]) against class indices; targets equal to
    /// `ignoreIndex` count neither in the loss nor in the mean. Fused softmax + NLL.
    public func crossEntropy(targets: [Int32], ignoreIndex: Int32 = -100, labelSmoothing: Float = 0) -> Tensor {
        let cols = shape.last ?? 1, rows = count / max(cols, 1)
        precondition(targets.count == rows, "crossEntropy: \(targets.count) targets for \(rows) rows of logits \(shape)")
        for t in targets where t != ignoreIndex {
            precondition(t >= 0 && Int(t) < cols, "crossEntropy: target \(t) out of range 0..<\(cols)")
        }
        let probs = Tensor(shape: shape) // softmax, kept for backward (N x C, small for classifiers)
        var total: Double = 0
        var kept = 0
        for row in 0..<rows {
            let x = data + row * cols, p = probs.data + row * cols
            softmaxRow(x, p, cols)
            let t = targets[row]
            if t == ignoreIndex { continue }
            kept += 1
            var m = -Float.infinity
            for j in 0..<cols { m = max(m, x[j]) }
            var s: Double = 0
            for j in 0..<cols { s += Foundation.exp(Double(x[j] - m)) }
            let lse = Double(m) + Foundation.log(s)
            let nll = lse - Double(x[Int(t)])
            if labelSmoothing > 0 {
                var meanLogit: Double = 0
                for j in 0..<cols { meanLogit += Double(x[j]) }
                meanLogit /= Double(cols)
                total += (1 - Double(labelSmoothing)) * nll + Double(labelSmoothing) * (lse - meanLogit)
            } else {
                total += nll
            }
        }
        let denom = Float(max(kept, 1))
        let out = Tensor.scalar(Float(total / Double(max(kept, 1))))
        let inShape = shape
        return record(out, "cross_entropy", [self]) { g in
            let scale = g.data[0] / denom
            let gx = Tensor(shape: inShape)
            let smooth = labelSmoothing / Float(cols)
            for row in 0..<rows {
                let o = row * cols, t = targets[row]
                if t == ignoreIndex {
                    (gx.data + o).initialize(repeating: 0, count: cols)
                    continue
                }
                for j in 0..<cols { gx.data[o + j] = (probs.data[o + j] - smooth) * scale }
                gx.data[o + Int(t)] -= (1 - labelSmoothing) * scale
            }
            return [gx]
        }
    }

    /// LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias.
    public func layerNorm(weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
        let d = shape.last ?? 1, rows = count / max(d, 1)
        let out = Tensor(shape: shape)
        let stats = Tensor(shape: [rows, 2]) // mean, rstd per row: all backward needs besides x
        let px = data, po = out.data, ps = stats.data
        // Missing affine parts act as ones and zeros, so one vectorised loop serves every case.
        let ones = weight == nil ? [Float](repeating: 1, count: d) : [], zeros = bias == nil ? [Float](repeating: 0, count: d) : []
        ones.withUnsafeBufferPointer { onesBuf in
            zeros.withUnsafeBufferPointer { zerosBuf in
                let pw = weight.map { UnsafePointer($0.data) } ?? onesBuf.baseAddress!
                let pb = bias.map { UnsafePointer($0.data) } ?? zerosBuf.baseAddress!
                ThreadPool.shared.parallelChunks(rows, minChunk: max(1, 8192 / max(d, 1))) { r in
                    for row in r {
                        let (mean, rstd) = layerNormRow(px + row * d, po + row * d, d, pw, pb, eps)
                        ps[2 * row] = mean; ps[2 * row + 1] = rstd
                    }
                }
            }
        }
        let inputs = [self] + [weight, bias].compactMap { $0 }
        let grads = LayerNormGradients(x: self, stats: stats, weight: weight, bias: bias)
        return record(out, "layer_norm", inputs) { g in grads(g) }
    }

    /// RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight.
    public func rmsNorm(weight: Tensor?, eps: Float = 1e-6) -> Tensor {
        let d = shape.last ?? 1, rows = count / max(d, 1)
        let out = Tensor(shape: shape)
        let rstds = Tensor(shape: [rows])
        let px = data, po = out.data, pr = rstds.data, pw = weight?.data
        ThreadPool.shared.parallelChunks(rows, minChunk: max(1, 8192 / max(d, 1))) { r in
            for row in r {
                let x = px + row * d, o = po + row * d
                let rstd = 1 / (dot(d, x, x) / Float(d) + eps).squareRoot()
                pr[row] = rstd
                for j in 0..<d { o[j] = x[j] * rstd * (pw?[j] ?? 1) }
            }
        }
        let inputs = [self] + [weight].compactMap { $0 }
        // Every gradient reads x and its rows' rstd (and the weight's values, a parameter).
        let needX = requiresGrad, needW = weight?.requiresGrad == true, recording = Autograd.isEnabled
        let keptX = recording && (needX || needW) ? SavedTensor(self) : nil
        return record(out, "rms_norm", inputs) { [rstds] g in
            let x = keptX!.float32, pr = rstds.data
            let gx = needX ? Tensor(shape: x.shape) : nil
            let gw = needW ? weight.map { Tensor.zeros($0.shape) } : nil
            for row in 0..<rows {
                let xr = x.data + row * d, gr = g.data + row * d, rstd = pr[row]
                var m: Float = 0
                for j in 0..<d {
                    let xhat = xr[j] * rstd
                    m += gr[j] * (pw?[j] ?? 1) * xhat
                    if let gw { gw.data[j] += gr[j] * xhat }
                }
                m /= Float(d)
                if let gx {
                    for j in 0..<d { gx.data[row * d + j] = rstd * (gr[j] * (pw?[j] ?? 1) - xr[j] * rstd * m) }
                }
            }
            return weight != nil ? [gx, gw] : [gx]
        }
    }

    /// Rows of this [V, D] table picked by `indices` -> [indexShape..., D]. Backward scatter-adds.
    public func embedding(_ indices: [Int32], shape indexShape: [Int]? = nil) -> Tensor {
        precondition(rank == 2, "embedding table must be [vocab, dim], got \(shape)")
        let v = shape[0], d = shape[1]
        for i in indices { precondition(i >= 0 && Int(i) < v, "embedding index \(i) out of range 0..<\(v)") }
        let outShape = (indexShape ?? [indices.count]) + [d]
        let out = Tensor(shape: outShape)
        let src = dtype == .float32 ? self : nil
        for (r, i) in indices.enumerated() {
            if let src {
                (out.data + r * d).update(from: src.data + Int(i) * d, count: d)
            } else { // quantised or half tables: convert just the rows used
                let rowBytes = dtype.byteCount(elements: d)!
                convertToFloat32(storage.raw + Int(i) * rowBytes, dtype: dtype, count: d, into: out.data + r * d)
            }
        }
        let tableShape = shape
        return record(out, "embedding", [self]) { g in
            let gw = Tensor.zeros(tableShape)
            for (r, i) in indices.enumerated() { axpy(d, 1, g.data + r * d, gw.data + Int(i) * d) }
            return [gw]
        }
    }

    /// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
    /// The mask is regenerated from `seed` in backward rather than stored.
    public func dropout(_ p: Float, seed: UInt64, training: Bool = true) -> Tensor {
        guard training && p > 0 else { return self }
        precondition(p < 1, "dropout probability must be < 1, got \(p)")
        let scale = 1 / (1 - p)
        let n = count
        func applyMask(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>) {
            var rng = SplitMix64(seed: seed)
            for i in 0..<n { dst[i] = rng.nextFloat() < p ? 0 : src[i] * scale }
        }
        let out = Tensor(shape: shape)
        applyMask(data, out.data)
        return record(out, "dropout", [self]) { g in
            let gx = Tensor(shape: g.shape)
            applyMask(g.data, gx.data)
            return [gx]
        }
    }
}

/// Numerically stable softmax of one row; a row of all -infinity gives zeros. Returns the row's
/// log-sum-exp (-infinity for an all -infinity row); `x` and `y` may be the same buffer.
@discardableResult
@inline(__always) func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
    st_softmax_row(x, y, n)
}

/// o = (x - mean) * rstd * w + b over one row of d; returns (mean, rstd). Shared by `layerNorm`
/// and the fused inference path so both normalise the same way.
@inline(__always) func layerNormRow(_ x: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ d: Int,
                                    _ pw: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, _ eps: Float) -> (Float, Float) {
    var mean: Float = 0, rstd: Float = 0
    st_layer_norm_row(x, o, d, pw, pb, eps, &mean, &rstd)
    return (mean, rstd)
}

/// LayerNorm's backward, holding what it reads: x and the rows' (mean, rstd) when x or the weight
/// needs a gradient; nothing at all for a bias-only gradient (the column sums of g). The weight's
/// values (a parameter) give dx.
struct LayerNormGradients {
    let needX: Bool, needW: Bool, needB: Bool
    let x: SavedTensor?, stats: Tensor?
    let weight: Tensor?, hasWeight: Bool, hasBias: Bool
    let shape: [Int], weightShape: [Int], biasShape: [Int]

    init(x: Tensor, stats: Tensor, weight: Tensor?, bias: Tensor?) {
        needX = x.requiresGrad
        needW = weight?.requiresGrad == true
        needB = bias?.requiresGrad == true
        let keep = (needX || needW) && Autograd.isEnabled
        self.x = keep ? SavedTensor(x) : nil
        self.stats = saved(stats, if: keep)
        self.weight = needX ? weight : nil
        hasWeight = weight != nil
        hasBias = bias != nil
        shape = x.shape
        weightShape = weight?.shape ?? []
        biasShape = bias?.shape ?? []
    }

    func callAsFunction(_ g: Tensor) -> [Tensor?] {
        let d = shape.last ?? 1, rows = shape.reduce(1, *) / max(d, 1)
        var gx: Tensor?, gw: Tensor?, gb: Tensor?
        if let saved = self.x, let stats {
            let x = saved.float32
            let ps = stats.data, pg = g.data, px = x.data
            gx = needX ? Tensor(shape: shape) : nil
            let chunks = max(1, min(ThreadPool.shared.activeThreads * 4, rows / max(1, 4096 / max(d, 1))))
            // Partials [chunk][weight d | bias d].
            let partials = Tensor.zeros([chunks, 2 * d])
            let ones = [Float](repeating: 1, count: weight == nil ? d : 0)
            let (wantW, wantB, pgx) = (needW, needB, gx?.data)
            ones.withUnsafeBufferPointer { onesBuf in
                let pw = weight.map { UnsafePointer($0.data) } ?? onesBuf.baseAddress!
                ThreadPool.shared.parallelFor(chunks) { c in
                    let r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks
                    let gwp = partials.data + c * 2 * d, gbp = gwp + d
                    st_layer_norm_backward_rows(r0, r1, d, px, pg, ps, pw, wantW ? gwp : nil, wantB ? gbp : nil, pgx)
                }
            }
            withExtendedLifetime(x) {}
            func reduce(_ offset: Int, _ shape: [Int]) -> Tensor {
                let t = Tensor.zeros(shape)
                for c in 0..<chunks { axpy(d, 1, partials.data + c * 2 * d + offset, t.data) }
                return t
            }
            if needW { gw = reduce(0, weightShape) }
            if needB { gb = reduce(d, biasShape) }
        } else if needB {
            gb = g.columnSums(rows: rows, shape: biasShape)
        }
        var grads: [Tensor?] = [gx]
        if hasWeight { grads.append(gw) }
        if hasBias { grads.append(gb) }
        return grads
    }
}
