/// 2-D convolution (PyTorch's `F.conv2d`, groups = 1, dilation = 1) as im2col + the engine's GEMM.
/// Per image: out[O, Ho*Wo] = W[O, C*kh*kw] x cols[C*kh*kw, Ho*Wo], so the output is already NCHW.
/// The column buffers are workspace, freed when the op returns; backward rebuilds them from the
/// saved input (input-sized memory kept for backward instead of kh*kw/stride^2 times that).

/// Sizes of one convolution, checked once.
public struct Conv2DGeometry: Equatable, Sendable {
    public var batch: Int, channels: Int, height: Int, width: Int
    public var outChannels: Int, kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int, padH: Int, padW: Int
    public var outH: Int { (height + 2 * padH - kernelH) / strideH + 1 }
    public var outW: Int { (width + 2 * padW - kernelW) / strideW + 1 }
    /// Rows of one image's column matrix (C * kh * kw).
    public var patch: Int { channels * kernelH * kernelW }

    public init(input: [Int], weight: [Int], stride: (Int, Int), padding: (Int, Int)) {
        precondition(input.count == 4, "conv2d input must be [N, C, H, W], got \(input)")
        precondition(weight.count == 4, "conv2d weight must be [O, C, kh, kw], got \(weight)")
        precondition(weight[1] == input[1], "conv2d: weight \(weight) expects \(weight[1]) input channels, input \(input) has \(input[1])")
        precondition(stride.0 >= 1 && stride.1 >= 1 && padding.0 >= 0 && padding.1 >= 0,
                     "conv2d: stride \(stride) must be >= 1 and padding \(padding) >= 0")
        (batch, channels, height, width) = (input[0], input[1], input[2], input[3])
        (outChannels, kernelH, kernelW) = (weight[0], weight[2], weight[3])
        (strideH, strideW, padH, padW) = (stride.0, stride.1, padding.0, padding.1)
        precondition(height + 2 * padH >= kernelH && width + 2 * padW >= kernelW,
                     "conv2d: kernel \(kernelH)x\(kernelW) larger than the padded input \(height + 2 * padH)x\(width + 2 * padW)")
    }
}

/// cols[(c*kh + i)*kw + j, oy*Wo + ox] = x[c, oy*sh - ph + i, ox*sw - pw + j] (0 outside).
func im2col(_ g: Conv2DGeometry, _ x: UnsafePointer<Float>, _ cols: UnsafeMutablePointer<Float>) {
    let (ho, wo) = (g.outH, g.outW)
    for c in 0..<g.channels {
        let plane = x + c * g.height * g.width
        for i in 0..<g.kernelH {
            for j in 0..<g.kernelW {
                let row = cols + ((c * g.kernelH + i) * g.kernelW + j) * ho * wo
                for oy in 0..<ho {
                    let y = oy * g.strideH - g.padH + i
                    let dst = row + oy * wo
                    if y < 0 || y >= g.height { dst.initialize(repeating: 0, count: wo); continue }
                    let src = plane + y * g.width
                    if g.strideW == 1 {
                        // Contiguous run: zeros where the row falls off either edge.
                        for ox in 0..<wo {
                            let xx = ox - g.padW + j
                            dst[ox] = xx >= 0 && xx < g.width ? src[xx] : 0
                        }
                    } else {
                        for ox in 0..<wo {
                            let xx = ox * g.strideW - g.padW + j
                            dst[ox] = xx >= 0 && xx < g.width ? src[xx] : 0
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col: dx[c, y, x] += dcols[...] for every column entry that read (y, x).
/// `dx` must start at zero.
func col2im(_ g: Conv2DGeometry, _ cols: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>) {
    let (ho, wo) = (g.outH, g.outW)
    for c in 0..<g.channels {
        let plane = dx + c * g.height * g.width
        for i in 0..<g.kernelH {
            for j in 0..<g.kernelW {
                let row = cols + ((c * g.kernelH + i) * g.kernelW + j) * ho * wo
                for oy in 0..<ho {
                    let y = oy * g.strideH - g.padH + i
                    if y < 0 || y >= g.height { continue }
                    let dst = plane + y * g.width, src = row + oy * wo
                    for ox in 0..<wo {
                        let xx = ox * g.strideW - g.padW + j
                        if xx >= 0 && xx < g.width { dst[xx] += src[ox] }
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// x [N, C, H, W] (*) weight [O, C, kh, kw] + bias [O] -> [N, O, Ho, Wo], with
    /// Ho = (H + 2 ph - kh) / sh + 1 (PyTorch's `F.conv2d`, cross-correlation).
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) -> Tensor {
        conv2d(x, weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding))
    }

    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int)) -> Tensor {
        let g = Conv2DGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding)
        if let bias { precondition(bias.shape == [g.outChannels], "conv2d: bias \(bias.shape) for \(g.outChannels) output channels") }
        let (n, o, k, hw) = (g.batch, g.outChannels, g.patch, g.outH * g.outW)
        let chw = g.channels * g.height * g.width
        let out = Tensor(shape: [n, o, g.outH, g.outW])
        let w = weight.dtype == .float32 ? weight : weight.float32()
        let px = x.data, po = out.data
        if let bias { // the GEMM accumulates onto the bias planes
            let pb = bias.data
            for p in 0..<(n * o) { (po + p * hw).initialize(repeating: pb[p % o], count: hw) }
        }
        do {
            let cols = Workspace(floats: n * k * hw)
            let pc = cols.floats
            ThreadPool.shared.parallelFor(n) { i in im2col(g, px + i * chw, pc + i * k * hw) }
            // One shared weight (stride 0) against each image's columns.
            batchedGEMM(n, GEMMShape(m: o, n: hw, k: k), w.data, 0, k, pc, k * hw, hw, po, o * hw, hw,
                        accumulate: bias != nil)
        }
        let inputs = [x, weight] + [bias].compactMap { $0 }
        // dx reads the weight (as stored, widened again if need be) and dW reads x.
        let needX = x.requiresGrad, needW = weight.requiresGrad, needB = bias?.requiresGrad == true
        let xShape = x.shape, weightShape = weight.shape, hasBias = bias != nil
        let savedX = saved(x, if: needW), savedW = saved(weight, if: needX)
        return record(out, "conv2d", inputs) { grad in
            let pg = grad.data
            var gx: Tensor?, gw: Tensor?, gb: Tensor?
            if needX, let weight = savedW {
                let w = weight.dtype == .float32 ? weight : weight.float32()
                gx = Tensor.zeros(xShape)
                let pgx = gx!.data
                let dcols = Workspace(floats: n * k * hw)
                let pd = dcols.floats
                // dcols = W^T g per image, then scattered back onto the input grid.
                batchedGEMM(n, GEMMShape(m: k, n: hw, k: o, transA: true), w.data, 0, k, pg, o * hw, hw, pd, k * hw, hw)
                ThreadPool.shared.parallelFor(n) { i in col2im(g, pd + i * k * hw, pgx + i * chw) }
            }
            if needW, let x = savedX {
                let px = x.data
                gw = Tensor(shape: weightShape)
                let cols = Workspace(floats: k * hw)
                // dW = sum over images of g_i cols_i^T; one image's columns at a time.
                for i in 0..<n {
                    im2col(g, px + i * chw, cols.floats)
                    gemm(GEMMShape(m: o, n: k, k: hw, transB: true), pg + i * o * hw, lda: hw, cols.floats, ldb: hw,
                         gw!.data, ldc: k, accumulate: i > 0)
                }
                if n == 0 { gw!.data.initialize(repeating: 0, count: gw!.count) }
            }
            if needB {
                gb = Tensor.zeros([o])
                for p in 0..<(n * o) { gb!.data[p % o] += sumFloats(pg + p * hw, hw) }
            }
            var grads: [Tensor?] = [gx, gw]
            if hasBias { grads.append(gb) }
            return grads
        }
    }
}

/// Direct seven-loop convolution (no autograd, accumulates in Double): the reference the
/// im2col path is tested against.
public func conv2dReference(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int)) -> Tensor {
    let g = Conv2DGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding)
    let out = Tensor(shape: [g.batch, g.outChannels, g.outH, g.outW])
    for b in 0..<g.batch {
        for o in 0..<g.outChannels {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    var acc = Double(bias?.data[o] ?? 0)
                    for c in 0..<g.channels {
                        for i in 0..<g.kernelH {
                            let y = oy * g.strideH - g.padH + i
                            if y < 0 || y >= g.height { continue }
                            for j in 0..<g.kernelW {
                                let xx = ox * g.strideW - g.padW + j
                                if xx < 0 || xx >= g.width { continue }
                                acc += Double(x[b, c, y, xx]) * Double(weight[o, c, i, j])
                            }
                        }
                    }
                    out[b, o, oy, ox] = Float(acc)
                }
            }
        }
    }
    return out
}
