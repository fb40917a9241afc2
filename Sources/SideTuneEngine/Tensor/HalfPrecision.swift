// Scalar conversions live in HalfConversion.swift (bit-exact, round to nearest even).

/// Converts `count` stored values of `dtype` (F32, F16 or BF16) at `src` to Float32 at `dst`.
public func convertToFloat32(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .float32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .bfloat16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = bfloat16BitsToFloat(s[i]) }
    case .float16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = float16BitsToFloat(s[i]) }
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
        for i in 0..<count { d[i] = floatToBFloat16Bits(src[i]) }
    case .float16:
        let d = dst.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { d[i] = floatToFloat16Bits(src[i]) }
    default:
        quantize(src, to: dtype, count: count, into: dst)
    }
}
