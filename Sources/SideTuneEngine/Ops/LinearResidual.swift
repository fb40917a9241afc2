extension Tensor {
    /// r_1 + ... + r_k + x W^T + b in one op, for x [..., in], weight [out, in], bias [out] and
    /// residuals shaped like the output: a residual branch's output projection and the stream it
    /// joins (LAST's u_i = x_i + Up(...), a post-LN block's h + W2 f). The output starts as the sum of
    /// the residuals and the bias rows, in one pass, and the GEMM accumulates into it: no separate
    /// add pass over the stream and no tensor for the projection alone. Backward: as `linear`, and
    /// each residual that needs one receives the output's gradient itself (d out / d r_i = 1).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor, residuals: [Tensor]) -> Tensor {
        precondition(weight.rank == 2 && bias.count == weight.shape[0] && x.shape.last == weight.shape[1],
                     "linear: x \(x.shape), weight \(weight.shape), bias \(bias.shape)")
        let n = weight.shape[0], k = weight.shape[1], m = x.count / max(k, 1)
        let outShape = Array(x.shape.dropLast()) + [n]
        for r in residuals { precondition(r.shape == outShape, "linear: residual \(r.shape) does not match the output \(outShape)") }
        let out = Tensor(shape: outShape)
        let w = weight.dtype == .float32 ? weight : weight.float32()
        let po = out.data, pb = UnsafePointer(bias.data)
        let pr = residuals.map { UnsafePointer($0.data) }
        pr.withUnsafeBufferPointer { rs in
            ThreadPool.shared.parallelChunks(m, minChunk: max(1, (1 << 14) / max(n, 1))) { range in
                for row in range {
                    let o = po + row * n
                    var j = 0
                    while j + 16 <= n {
                        var v = loadV(pb + j)
                        for r in rs { v += loadV(r + row * n + j) }
                        storeV(o + j, v)
                        j += 16
                    }
                    while j < n {
                        var v = pb[j]
                        for r in rs { v += r[row * n + j] }
                        o[j] = v
                        j += 1
                    }
                }
            }
        }
        let precision = MatmulPrecision.current
        linearGEMM(precision, GEMMShape(m: m, n: n, k: k, transA: false, transB: true), .f32(x.data), lda: k, .f32(w.data),
                   ldb: k, po, ldc: n, accumulate: true)
        let grads = LinearGradients(x: x, reading: .f32(x.data), weight: weight, precision: precision)
        let needBias = bias.requiresGrad, biasShape = bias.shape, needResiduals = residuals.map(\.requiresGrad)
        return record(out, "linear_residual", [x, weight, bias] + residuals) { g in
            let (gx, gw) = grads(g)
            let gb = needBias ? g.columnSums(rows: m, shape: biasShape) : nil
            return [gx, gw, gb] + needResiduals.map { $0 ? g : nil }
        }
    }
}
