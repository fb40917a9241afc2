import Testing
import SideTuneEngine

@Suite struct HalfConversionTests {
    #if arch(x86_64) || arch(arm64)
    /// Every one of the 65536 half bit patterns against the platform's Float16.
    @Test func float16ToFloatIsExactForAllBitPatterns() {
        var mismatches = 0
        for bits in 0...UInt16.max {
            let ours = float16BitsToFloat(bits)
            let ref = Float(Float16(bitPattern: bits))
            if ref.isNaN ? !ours.isNaN : ours.bitPattern != ref.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    /// Round to nearest even against the platform's Float -> Float16 on random and edge values.
    @Test func floatToFloat16MatchesPlatformRounding() {
        var rng = SystemRandomNumberGenerator()
        var values: [Float] = [0, -0, 1, -1, 65504, 65519.996, 65520, -65520, 1e-8, 2.98e-8, 2.9802322e-8, 5.96e-8,
                               6.1035156e-5, 6.1e-5, .infinity, -.infinity, .greatestFiniteMagnitude,
                               .leastNonzeroMagnitude, 1.0 + 1.0 / 2048, 1.0 + 3.0 / 2048, 2049, 2051]
        // Exact ties between adjacent halves, including subnormal ones.
        for h in stride(from: UInt16(0), to: 0x7BFF, by: 97) {
            let a = float16BitsToFloat(h), b = float16BitsToFloat(h + 1)
            values.append((a + b) / 2)
        }
        for _ in 0..<300_000 { values.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))) }
        for _ in 0..<100_000 { values.append(Float.random(in: -70000...70000, using: &rng)) }
        for _ in 0..<100_000 { values.append(Float.random(in: -1e-4...1e-4, using: &rng)) }
        var mismatches: [Float] = []
        for v in values {
            let ours = floatToFloat16Bits(v)
            let ref = Float16(v)
            if ref.isNaN {
                if !float16BitsToFloat(ours).isNaN { mismatches.append(v) }
            } else if ours != ref.bitPattern {
                mismatches.append(v)
            }
        }
        #expect(mismatches.isEmpty, "first mismatches: \(mismatches.prefix(5))")
    }
    #endif

    @Test func float16RoundTripAndTies() {
        #expect(floatToFloat16Bits(1.0) == 0x3C00)
        #expect(floatToFloat16Bits(-2.0) == 0xC000)
        #expect(floatToFloat16Bits(65504) == 0x7BFF)
        #expect(floatToFloat16Bits(65520) == 0x7C00)  // halfway to the next binade rounds up to inf
        #expect(floatToFloat16Bits(1 + 1.0 / 2048) == 0x3C00)  // tie -> even (down)
        #expect(floatToFloat16Bits(1 + 3.0 / 2048) == 0x3C02)  // tie -> even (up)
        #expect(floatToFloat16Bits(5.9604645e-8) == 0x0001)  // smallest subnormal
        #expect(floatToFloat16Bits(2.9802322e-8) == 0x0000)  // half of it: tie -> 0
        #expect(float16BitsToFloat(floatToFloat16Bits(.nan)).isNaN)
        for bits: UInt16 in [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0xFC00] {
            #expect(floatToFloat16Bits(float16BitsToFloat(bits)) == bits)
        }
    }

    @Test func bfloat16RoundingAndSpecials() {
        #expect(floatToBFloat16Bits(1.0) == 0x3F80)
        #expect(bfloat16BitsToFloat(0x3F80) == 1.0)
        #expect(floatToBFloat16Bits(1 + 1.0 / 256) == 0x3F80)  // tie -> even (down)
        #expect(floatToBFloat16Bits(1 + 3.0 / 256) == 0x3F82)  // tie -> even (up)
        #expect(floatToBFloat16Bits(1 + 1.0 / 256 + 1.0 / 65536) == 0x3F81)  // above the tie -> up
        #expect(floatToBFloat16Bits(.greatestFiniteMagnitude) == 0x7F80)  // rounds to inf
        #expect(floatToBFloat16Bits(-.infinity) == 0xFF80)
        // A NaN whose payload is only in the low 16 bits must not become inf.
        let lowNaN = Float(bitPattern: 0x7F80_0001)
        #expect(bfloat16BitsToFloat(floatToBFloat16Bits(lowNaN)).isNaN)
        // Round trip is exact for every bf16 that is not NaN.
        var bad = 0
        for bits in 0...UInt16.max {
            let f = bfloat16BitsToFloat(bits)
            if !f.isNaN && floatToBFloat16Bits(f) != bits { bad += 1 }
        }
        #expect(bad == 0)
        // The result is always one of the two neighbours and the nearer one.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<100_000 {
            let v = Float.random(in: -1000...1000, using: &rng)
            let r = bfloat16BitsToFloat(floatToBFloat16Bits(v))
            let truncated = Float(bitPattern: v.bitPattern & 0xFFFF_0000)
            let up = Float(bitPattern: (v.bitPattern & 0xFFFF_0000) + 0x10000)
            #expect(r == truncated || r == up)
            #expect(abs(r - v) <= min(abs(truncated - v), abs(up - v)))
        }
    }

    @Test func bulkConversionsReadUnalignedData() {
        let values: [Float] = [1, -2, 0.5, 65504, 3.140625]
        let halves = float16Bits(of: values)
        var bytes: [UInt8] = [0xAA]  // force odd alignment
        halves.withUnsafeBytes { bytes.append(contentsOf: $0) }
        var out = [Float](repeating: 0, count: values.count)
        bytes.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { convertFloat16ToFloat(UnsafeRawBufferPointer(rebasing: raw[1...]), into: $0) }
        }
        #expect(out == values)
        var bbytes: [UInt8] = [0x55]
        bfloat16Bits(of: values).withUnsafeBytes { bbytes.append(contentsOf: $0) }
        bbytes.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { convertBFloat16ToFloat(UnsafeRawBufferPointer(rebasing: raw[1...]), into: $0) }
        }
        #expect(out == [1, -2, 0.5, 65536, 3.140625])  // 65504 is not a bf16 value; nearest is 65536
    }
}
