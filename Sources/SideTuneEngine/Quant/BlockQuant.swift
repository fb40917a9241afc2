/// GGUF block formats (layouts as llama.cpp's ggml-common.h): reference quantise and dequantise.
/// Q8_0: [f16 d][32 x int8], x = q * d.
/// Q4_0: [f16 d][16 bytes], byte j holds element j (low nibble) and j + 16 (high), x = (q - 8) * d.
/// Q4_1: [f16 d][f16 m][16 bytes], same nibble order, x = q * d + m.
public func dequantize(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    precondition(count % dtype.blockSize == 0, "\(dtype.rawValue): \(count) elements is not a whole number of blocks")
    let blocks = count / dtype.blockSize
    switch dtype {
    case .q8_0:
        for b in 0..<blocks {
            let p = src + b * 34
            let d = float16BitsToFloat(p.loadUnaligned(as: UInt16.self))
            let q = (p + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { dst[b * 32 + j] = Float(q[j]) * d }
        }
    case .q4_0:
        for b in 0..<blocks {
            let p = src + b * 18
            let d = float16BitsToFloat(p.loadUnaligned(as: UInt16.self))
            let q = (p + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                dst[b * 32 + j] = Float(Int(q[j] & 0x0F) - 8) * d
                dst[b * 32 + j + 16] = Float(Int(q[j] >> 4) - 8) * d
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let p = src + b * 20
            let d = float16BitsToFloat(p.loadUnaligned(as: UInt16.self))
            let m = float16BitsToFloat((p + 2).loadUnaligned(as: UInt16.self))
            let q = (p + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                dst[b * 32 + j] = Float(q[j] & 0x0F) * d + m
                dst[b * 32 + j + 16] = Float(q[j] >> 4) * d + m
            }
        }
    case .nf4:
        preconditionFailure("NF4 codes need their double-quantised scales: dequantise through the NF4 weight type")
    case .float32, .float16, .bfloat16:
        convertToFloat32(src, dtype: dtype, count: count, into: dst)
    }
}

/// Reference quantisers matching llama.cpp's `quantize_row_*_ref`.
public func quantize(_ src: UnsafePointer<Float>, to dtype: DType, count: Int, into dst: UnsafeMutableRawPointer) {
    precondition(count % dtype.blockSize == 0, "\(dtype.rawValue): \(count) elements is not a whole number of blocks")
    let blocks = count / dtype.blockSize
    switch dtype {
    case .q8_0:
        for b in 0..<blocks {
            let x = src + b * 32
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(x[j])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            let p = dst + b * 34
            p.storeBytes(of: floatToFloat16Bits(d), as: UInt16.self)
            let q = (p + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { q[j] = Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)) }
        }
    case .q4_0:
        for b in 0..<blocks {
            let x = src + b * 32
            var amax: Float = 0, maxv: Float = 0
            for j in 0..<32 where abs(x[j]) > amax { amax = abs(x[j]); maxv = x[j] }
            let d = maxv / -8
            let id: Float = d != 0 ? 1 / d : 0
            let p = dst + b * 18
            p.storeBytes(of: floatToFloat16Bits(d), as: UInt16.self)
            let q = (p + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let lo = UInt8(min(15, Int8(x[j] * id + 8.5)))
                let hi = UInt8(min(15, Int8(x[j + 16] * id + 8.5)))
                q[j] = lo | (hi << 4)
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let x = src + b * 32
            var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
            for j in 0..<32 { lo = min(lo, x[j]); hi = max(hi, x[j]) }
            let d = (hi - lo) / 15
            let id: Float = d != 0 ? 1 / d : 0
            let p = dst + b * 20
            p.storeBytes(of: floatToFloat16Bits(d), as: UInt16.self)
            (p + 2).storeBytes(of: floatToFloat16Bits(lo), as: UInt16.self)
            let q = (p + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let a = UInt8(min(15, Int8((x[j] - lo) * id + 0.5)))
                let c = UInt8(min(15, Int8((x[j + 16] - lo) * id + 0.5)))
                q[j] = a | (c << 4)
            }
        }
    case .nf4:
        preconditionFailure("NF4 needs per-block scales stored beside the codes: quantise through the NF4 weight type")
    case .float32, .float16, .bfloat16:
        convertFromFloat32(src, to: dtype, count: count, into: dst)
    }
}
