/// Batch normalisation over axis 1 of [N, C] or [N, C, H, W] (PyTorch's BatchNorm1d/2d).
///
/// Training: each channel is normalised with the batch's mean and biased variance, and the running
/// statistics move toward the batch's (running_var takes the unbiased variance, as PyTorch does):
///     running = (1 - momentum) * running + momentum * batch
/// Evaluation: the running statistics normalise, and the op is a per-channel affine map.
extension Tensor {
    public static func batchNorm(_ x: Tensor, runningMean: Tensor, runningVar: Tensor, weight: Tensor?, bias: Tensor?,
                                 training: Bool, momentum: Float = 0.1, eps: Float = 1e-5) -> Tensor {
        precondition(x.rank >= 2, "batchNorm input must be [N, C] or [N, C, ...], got \(x.shape)")
        let (n, c) = (x.shape[0], x.shape[1])
        let spatial = x.count / max(n * c, 1)
        precondition(runningMean.shape == [c] && runningVar.shape == [c],
                     "batchNorm: running statistics \(runningMean.shape), \(runningVar.shape) for \(c) channels")
        if let weight { precondition(weight.shape == [c], "batchNorm: weight \(weight.shape) for \(c) channels") }
        if let bias { precondition(bias.shape == [c], "batchNorm: bias \(bias.shape) for \(c) channels") }
        let m = n * spatial
        precondition(!training || m > 1, "batchNorm in training needs more than 1 value per channel, input \(x.shape)")
        let px = x.data
        // Per channel: mean and 1/sqrt(var + eps) of whichever statistics normalise.
        let stats = Tensor(shape: [c, 2])
        let ps = stats.data
        ThreadPool.shared.parallelFor(c) { ch in
            var mean: Double, variance: Double
            if training {
                var s = 0.0
                for b in 0..<n { s += Double(sumFloats(px + (b * c + ch) * spatial, spatial)) }
                mean = s / Double(m)
                var v = 0.0
                for b in 0..<n {
                    let p = px + (b * c + ch) * spatial
                    for i in 0..<spatial { let d = Double(p[i]) - mean; v += d * d }
                }
                variance = v / Double(m)
                let rm = runningMean.data, rv = runningVar.data
                rm[ch] = (1 - momentum) * rm[ch] + momentum * Float(mean)
                rv[ch] = (1 - momentum) * rv[ch] + momentum * Float(v / Double(m - 1))
            } else {
                mean = Double(runningMean.data[ch])
                variance = Double(runningVar.data[ch])
            }
            ps[2 * ch] = Float(mean)
            ps[2 * ch + 1] = Float(1 / (variance + Double(eps)).squareRoot())
        }
        let out = Tensor(shape: x.shape)
        let po = out.data, pw = weight?.data, pb = bias?.data
        ThreadPool.shared.parallelFor(n * c) { p in
            let ch = p % c
            let scale = ps[2 * ch + 1] * (pw?[ch] ?? 1)
            let shift = (pb?[ch] ?? 0) - ps[2 * ch] * scale
            let src = px + p * spatial, dst = po + p * spatial
            for i in 0..<spatial { dst[i] = src[i] * scale + shift }
        }
        let inputs = [x] + [weight, bias].compactMap { $0 }
        // Every gradient reads x (through px) and the statistics.
        let needX = x.requiresGrad, needW = weight?.requiresGrad == true, needB = bias?.requiresGrad == true
        return record(out, "batch_norm", inputs) { [stats, x] g in
            let ps = stats.data, pg = g.data
            // Per channel: sum(g) and sum(g * xhat), which every gradient needs.
            var sums = [Float](repeating: 0, count: 2 * c)
            sums.withUnsafeMutableBufferPointer { sp in
                let s = sp.baseAddress!
                ThreadPool.shared.parallelFor(c) { ch in
                    let mean = ps[2 * ch], rstd = ps[2 * ch + 1]
                    var sg = 0.0, sgx = 0.0
                    for b in 0..<n {
                        let o = (b * c + ch) * spatial
                        for i in 0..<spatial {
                            sg += Double(pg[o + i])
                            sgx += Double(pg[o + i]) * Double((px[o + i] - mean) * rstd)
                        }
                    }
                    s[2 * ch] = Float(sg); s[2 * ch + 1] = Float(sgx)
                }
            }
            var gx: Tensor?
            if needX {
                gx = Tensor(shape: x.shape)
                let pd = gx!.data
                sums.withUnsafeBufferPointer { sp in
                    let s = sp.baseAddress!
                    ThreadPool.shared.parallelFor(n * c) { p in
                        let ch = p % c
                        let mean = ps[2 * ch], rstd = ps[2 * ch + 1], w = pw?[ch] ?? 1
                        let src = px + p * spatial, gr = pg + p * spatial, dst = pd + p * spatial
                        if training {
                            // dx = w rstd (g - mean(g) - xhat mean(g xhat)): the statistics depend on x.
                            let mg = s[2 * ch] / Float(m), mgx = s[2 * ch + 1] / Float(m)
                            for i in 0..<spatial {
                                let xhat = (src[i] - mean) * rstd
                                dst[i] = w * rstd * (gr[i] - mg - xhat * mgx)
                            }
                        } else {
                            for i in 0..<spatial { dst[i] = gr[i] * w * rstd }
                        }
                    }
                }
            }
            var grads: [Tensor?] = [gx]
            if weight != nil { grads.append(needW ? Tensor((0..<c).map { sums[2 * $0 + 1] }, shape: [c]) : nil) }
            if bias != nil { grads.append(needB ? Tensor((0..<c).map { sums[2 * $0] }, shape: [c]) : nil) }
            return grads
        }
    }
}
