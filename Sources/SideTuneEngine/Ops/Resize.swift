/// Bilinear resize of [N, C, H, W] as PyTorch's `F.interpolate(size=, mode="bilinear",
/// align_corners=False)` (no antialias): output pixel i samples source s = (i + 0.5) * in/out - 0.5,
/// clamped at 0, between floor(s) and the next pixel (clamped to the edge).

/// For each output index: the two source indices and the weight of the second.
struct LinearTaps {
    var lo: [Int32], hi: [Int32], frac: [Float]

    init(inSize: Int, outSize: Int) {
        lo = []; hi = []; frac = []
        let scale = Float(inSize) / Float(outSize)
        for i in 0..<outSize {
            let s = max((Float(i) + 0.5) * scale - 0.5, 0)
            let l = min(Int(s), inSize - 1)
            lo.append(Int32(l))
            hi.append(Int32(min(l + 1, inSize - 1)))
            frac.append(s - Float(l))
        }
    }
}

extension Tensor {
    /// [N, C, H, W] -> [N, C, height, width], bilinear, align_corners = false.
    public func resizedBilinear(height: Int, width: Int) -> Tensor {
        precondition(rank == 4, "resizedBilinear needs [N, C, H, W], got \(shape)")
        precondition(height >= 1 && width >= 1, "resizedBilinear to \(height)x\(width)")
        let (h, w) = (shape[2], shape[3])
        if h == height && w == width { return self }
        let planes = shape[0] * shape[1]
        let ty = LinearTaps(inSize: h, outSize: height), tx = LinearTaps(inSize: w, outSize: width)
        let out = Tensor(shape: [shape[0], shape[1], height, width])
        let px = data, po = out.data
        ThreadPool.shared.parallelChunks(planes, minChunk: max(1, 4096 / max(height * width, 1))) { r in
            for p in r {
                let src = px + p * h * w, dst = po + p * height * width
                for i in 0..<height {
                    let r0 = src + Int(ty.lo[i]) * w, r1 = src + Int(ty.hi[i]) * w, fy = ty.frac[i]
                    for j in 0..<width {
                        let (a, b, fx) = (Int(tx.lo[j]), Int(tx.hi[j]), tx.frac[j])
                        let top = r0[a] + (r0[b] - r0[a]) * fx
                        let bottom = r1[a] + (r1[b] - r1[a]) * fx
                        dst[i * width + j] = top + (bottom - top) * fy
                    }
                }
            }
        }
        let inShape = shape
        return record(out, "resize_bilinear", [self]) { g in
            // Scatter each output gradient onto its four source pixels with the same weights.
            let gx = Tensor.zeros(inShape)
            let pg = g.data, pd = gx.data
            ThreadPool.shared.parallelChunks(planes, minChunk: max(1, 4096 / max(height * width, 1))) { r in
                for p in r {
                    let src = pg + p * height * width, dst = pd + p * h * w
                    for i in 0..<height {
                        let r0 = dst + Int(ty.lo[i]) * w, r1 = dst + Int(ty.hi[i]) * w, fy = ty.frac[i]
                        for j in 0..<width {
                            let (a, b, fx) = (Int(tx.lo[j]), Int(tx.hi[j]), tx.frac[j])
                            let v = src[i * width + j]
                            let top = v * (1 - fy), bottom = v * fy
                            r0[a] += top * (1 - fx); r0[b] += top * fx
                            r1[a] += bottom * (1 - fx); r1[b] += bottom * fx
                        }
                    }
                }
            }
            return [gx]
        }
    }
}
