/// Conversions between Float32 and the 16-bit storage types. bfloat16 keeps Float32's exponent and
/// the top 7 mantissa bits; rounding is to nearest, ties to even, as PyTorch and safetensors do.
@inline(__always) public func bfloat16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) } // keep it a quiet NaN
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

@inline(__always) public func floatFromBFloat16(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

@inline(__always) public func float16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

@inline(__always) public func floatFromFloat16(_ b: UInt16) -> Float { Float(Float16(bitPattern: b)) }

/// Converts `count` stored values of `dtype` (F32, F16 or BF16) at `src` to Float32 at `dst`.
public func convertToFloat32(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .float32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .bfloat16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = floatFromBFloat16(s[i]) }
    case .float16:
        let s = src.assumingMemoryBound(to: Float16.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    default:
        dequantize(src, dtype: dtype, count: count, into: dst)
    }
}

/// Converts `count` Float32 values to F16 or BF16 storage at `dst`.
public func convertFromFloat32(_ src: UnsafePointer<Float>, to dtype: DType, count: Int, into dst: UnsafeMutableRawPointer) {
    switch dtype {
    case .float32:
        dst.assumingMemoryBound(to: Float.self).update(from: src, count: count)
    case .bfloat16:
        let d = dst.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { d[i] = bfloat16Bits(src[i]) }
    case .float16:
        let d = dst.assumingMemoryBound(to: Float16.self)
        for i in 0..<count { d[i] = Float16(src[i]) }
    default:
        quantize(src, to: dtype, count: count, into: dst)
    }
}
