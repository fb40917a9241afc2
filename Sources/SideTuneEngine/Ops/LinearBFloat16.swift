import Foundation
import CSideTuneKernels

/// Intel AMX tiles for linear layers whose input is stored in bf16 (see amx_bf16.h). Asked of the
/// kernel once per process; `SIDETUNE_AMX=0` turns the path off (the inputs then take the f32
/// GEMMs: read as bf16 by the thin path's tiles, or widened first).
public enum AMX {
    public static let available: Bool =
        KernelEnvironment.amx && sidetune_amx_bf16_available()

    /// Whether a linear layer with `inFeatures` inputs multiplies a bf16 input on AMX tiles (the
    /// kernels read x's rows 32 values at a time); otherwise it takes the f32 GEMMs.
    public static func readsBFloat16(inFeatures: Int) -> Bool { available && inFeatures % 32 == 0 }
}

extension Tensor {
    /// Whether `linearBFloat16Input` reads a bf16 input as stored for a layer of this shape: on AMX
    /// tiles, or with the thin GEMM's bf16 tiles (few outputs, as LST's down projections).
    /// Otherwise the input would be widened to f32 whole, which the feature cache does faster.
    /// (Sides of 8 or fewer take `gemm`'s small path on one thread, which widens.)
    public static func linearReadsBFloat16(inFeatures k: Int, outFeatures n: Int) -> Bool {
        AMX.readsBFloat16(inFeatures: k) || thinProductsReadBFloat16(inFeatures: k, outFeatures: n)
    }

    /// Whether both GEMMs of such a layer (forward and dW) take the thin path's tiles, which read a
    /// bf16 operand in place (not on every CPU: elsewhere the input is widened to f32 first).
    public static func thinProductsReadBFloat16(inFeatures k: Int, outFeatures n: Int) -> Bool {
        let tokens = 1 << 12
        return min(n, k) > 8
            && thinKernel(GEMMShape(m: tokens, n: n, k: k, transB: true)) != nil
            && thinKernel(GEMMShape(m: n, n: k, k: tokens, transA: true)) != nil
    }

    /// `linear` for an input x stored in bf16 that needs no gradient: the feature cache's taps.
    /// With AMX (and `in` a multiple of 32) x is read as it is stored, and the f32 weight and output
    /// gradient are split into two bf16 terms each (hi + lo, about 16 significant bits), so the
    /// results match f32 GEMMs on x's values to about 1e-5 relative. Otherwise the f32 linear's
    /// GEMMs read x as bf16 (`gemm` on a `GEMMOperand`): its results on x's values bit for bit,
    /// with no f32 copy of x kept for backward (nor made, where the GEMMs take the thin path).
    public static func linearBFloat16Input(_ x: Tensor, weight: Tensor, bias: Tensor, amx: Bool = AMX.available) -> Tensor {
        precondition(x.dtype == .bfloat16 && !x.requiresGrad, "linear: a bf16 input must be a constant (frozen taps)")
        precondition(weight.rank == 2 && bias.count == weight.shape[0] && x.shape.last == weight.shape[1],
                     "linear: x \(x.shape), weight \(weight.shape), bias \(bias.shape)")
        let n = weight.shape[0], k = weight.shape[1], m = x.count / max(k, 1)
        guard amx, AMX.readsBFloat16(inFeatures: k), weight.dtype == .float32, m > 0 else {
            let px = UnsafePointer(x.storage.raw.assumingMemoryBound(to: UInt16.self))
            return linear(x, reading: .bf16(px), weight: weight, bias: bias, op: "linear_bf16")
        }
        let out = Tensor(shape: Array(x.shape.dropLast()) + [n])
        out.fillRows(with: bias)
        let px = UnsafePointer(x.storage.raw.assumingMemoryBound(to: UInt16.self)), po = out.data
        let packedW = Tensor(shape: [(n + 15) / 16 * (k / 32) * 1024], dtype: .bfloat16)
        let pw = packedW.storage.raw.assumingMemoryBound(to: UInt16.self)
        withExtendedLifetime(packedW) {
            sidetune_amx_pack_weight(weight.data, n, k, pw)
            ThreadPool.shared.parallelChunks((m + 15) / 16) { blocks in
                sidetune_amx_linear_rows(px, k, 16 * blocks.lowerBound, min(16 * blocks.upperBound, m), n, k, pw, po, n)
            }
        }
        // dW reads x (through px); x needs no gradient, so nothing else is kept.
        let needW = weight.requiresGrad, needBias = bias.requiresGrad, weightShape = weight.shape, biasShape = bias.shape
        let savedX = saved(x, if: needW)
        return record(out, "linear_bf16", [x, weight, bias]) { g in
            var gw: Tensor?, gb: Tensor?
            if needW, let x = savedX {
                gw = Tensor.zeros(weightShape)
                let mbs = (m + 31) / 32, nbs = (n + 15) / 16, pairs = 16 * mbs, colBlocks = k / 16
                let rowPairs = Tensor(shape: [pairs * 2 * k], dtype: .bfloat16)
                let packedG = Tensor(shape: [nbs * mbs * 1024], dtype: .bfloat16)
                let pv = rowPairs.storage.raw.assumingMemoryBound(to: UInt16.self)
                let pg = packedG.storage.raw.assumingMemoryBound(to: UInt16.self), pd = gw!.data
                let pgIn = UnsafePointer(g.data)
                withExtendedLifetime((rowPairs, packedG, x)) {
                    ThreadPool.shared.parallelChunks(mbs) { r in
                        sidetune_amx_pack_row_pairs(px, k, m, k, 16 * r.lowerBound, 16 * r.upperBound, pv)
                        sidetune_amx_pack_grad(pgIn, n, m, n, r.lowerBound, r.upperBound, pg)
                    }
                    // Work items: a 16-row block of dW by up to 4 column blocks (the four C tiles).
                    let groups = (colBlocks + 3) / 4
                    ThreadPool.shared.parallelFor(nbs * groups) { item in
                        let nb = item / groups, c0 = 4 * (item % groups)
                        sidetune_amx_weight_grad_block(m, n, k, pg, pv, nb, c0, min(c0 + 4, colBlocks), pd)
                    }
                }
            }
            if needBias { gb = g.columnSums(rows: m, shape: biasShape) }
            return [nil, gw, gb]
        }
    }
}
