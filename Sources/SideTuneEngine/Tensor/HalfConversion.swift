// IEEE binary16 and bfloat16 <-> Float32, written on bit patterns so results do not depend on the
// platform's Float16 support (absent on some targets). f32 -> half rounds to nearest, ties to even,
// like PyTorch and numpy, so written checkpoints match theirs bit for bit.
// Little-endian storage is assumed (x86-64 and arm64, the only hosts SideTune builds for).

/// binary16 bits -> Float. Exact: every half value is representable.
@inlinable
public func float16BitsToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = UInt32(h >> 10) & 0x1F
    let mant = UInt32(h & 0x3FF)
    if exp == 0x1F {  // inf or NaN; keep the payload
        return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
    }
    if exp == 0 {
        if mant == 0 { return Float(bitPattern: sign) }
        // Subnormal: mant * 2^-24, exact in Float.
        let v = Float(mant) * (1.0 / 16_777_216.0)
        return sign != 0 ? -v : v
    }
    return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
}

/// Float -> binary16 bits, round to nearest even; overflow gives ±inf, NaN stays a (quiet) NaN.
@inlinable
public func floatToFloat16Bits(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    let sign = UInt16(truncatingIfNeeded: (x >> 16) & 0x8000)
    let exp = Int((x >> 23) & 0xFF)
    let mant = x & 0x7F_FFFF
    if exp == 0xFF {
        // Set the quiet bit so a NaN whose payload lives only in the low bits stays a NaN.
        return sign | 0x7C00 | (mant != 0 ? UInt16(truncatingIfNeeded: 0x200 | (mant >> 13)) : 0)
    }
    let e = exp - 127 + 15
    if e >= 0x1F { return sign | 0x7C00 }
    if e <= 0 {
        // Half subnormal: value / 2^-24 = (1.mant * 2^23) >> (14 - e). Below 2^-25 rounds to 0.
        if e < -10 { return sign }
        let m = mant | 0x80_0000
        let shift = UInt32(14 - e)
        var h = m >> shift
        let rem = m & ((1 << shift) - 1)
        let half = UInt32(1) << (shift - 1)
        if rem > half || (rem == half && (h & 1) == 1) { h += 1 }  // may carry into the smallest normal: still right
        return sign | UInt16(truncatingIfNeeded: h)
    }
    var h = (UInt32(e) << 10) | (mant >> 13)
    let rem = mant & 0x1FFF
    if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) { h += 1 }  // a carry into exp 31 is inf: correct
    return sign | UInt16(truncatingIfNeeded: h)
}

/// bfloat16 bits -> Float. Exact: bf16 is the top half of a Float.
@inlinable
public func bfloat16BitsToFloat(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

/// Float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN (rounding could turn it into inf).
@inlinable
public func floatToBFloat16Bits(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    if f.isNaN { return UInt16(truncatingIfNeeded: (x >> 16) | 0x40) }
    let rounded = x &+ 0x7FFF &+ ((x >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

/// Converts `dst.count` little-endian binary16 values starting at `src` (any alignment).
public func convertFloat16ToFloat(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableBufferPointer<Float>) {
    precondition(src.count >= dst.count * 2, "convertFloat16ToFloat: source has \(src.count) bytes, need \(dst.count * 2)")
    for i in 0..<dst.count {
        dst[i] = float16BitsToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
    }
}

/// Converts `dst.count` little-endian bfloat16 values starting at `src` (any alignment).
public func convertBFloat16ToFloat(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableBufferPointer<Float>) {
    precondition(src.count >= dst.count * 2, "convertBFloat16ToFloat: source has \(src.count) bytes, need \(dst.count * 2)")
    for i in 0..<dst.count {
        dst[i] = bfloat16BitsToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
    }
}

/// Floats -> binary16 bits, round to nearest even.
public func float16Bits(of values: [Float]) -> [UInt16] {
    values.map(floatToFloat16Bits)
}

/// Floats -> bfloat16 bits, round to nearest even.
public func bfloat16Bits(of values: [Float]) -> [UInt16] {
    values.map(floatToBFloat16Bits)
}
