import CSideTuneKernels

// Register-blocked GEMM micro-kernels over packed panels (written out by scripts/gen_microkernels.py).
// 6x16 fits AVX2's 16 ymm registers: 12 accumulators, 2 for B, 1 broadcast.
// 12x32 fits AVX-512's 32 zmm registers: 24 accumulators, 2 for B, 1 broadcast.
// Per k step each reads one packed row of B (NR floats) and MR packed values of A.
@inline(__always)
func microKernel6x16(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
    typealias V = SIMD8<Float>
    // Ask for the C tile now; it is read and written after the k loop.
    sidetune_prefetch_write(c + 0 * ldc); sidetune_prefetch_write(c + 0 * ldc + 15)
    sidetune_prefetch_write(c + 1 * ldc); sidetune_prefetch_write(c + 1 * ldc + 15)
    sidetune_prefetch_write(c + 2 * ldc); sidetune_prefetch_write(c + 2 * ldc + 15)
    sidetune_prefetch_write(c + 3 * ldc); sidetune_prefetch_write(c + 3 * ldc + 15)
    sidetune_prefetch_write(c + 4 * ldc); sidetune_prefetch_write(c + 4 * ldc + 15)
    sidetune_prefetch_write(c + 5 * ldc); sidetune_prefetch_write(c + 5 * ldc + 15)
    var c0_0 = V(), c0_1 = V()
    var c1_0 = V(), c1_1 = V()
    var c2_0 = V(), c2_1 = V()
    var c3_0 = V(), c3_1 = V()
    var c4_0 = V(), c4_1 = V()
    var c5_0 = V(), c5_1 = V()
    var pa = a, pb = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = pb.load(fromByteOffset: 0, as: V.self); let b1 = pb.load(fromByteOffset: 32, as: V.self)
        do { let ai = V(repeating: pa[0]); c0_0.addProduct(ai, b0); c0_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[1]); c1_0.addProduct(ai, b0); c1_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[2]); c2_0.addProduct(ai, b0); c2_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[3]); c3_0.addProduct(ai, b0); c3_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[4]); c4_0.addProduct(ai, b0); c4_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[5]); c5_0.addProduct(ai, b0); c5_1.addProduct(ai, b1) }
        pa += 6; pb += 64
    }
    if accumulate {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c0_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c1_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c2_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c3_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 4 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c4_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c4_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 5 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c5_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c5_1, toByteOffset: 32, as: V.self) }
    } else {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c0_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c1_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c2_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c3_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 4 * ldc); r.storeBytes(of: c4_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c4_1, toByteOffset: 32, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 5 * ldc); r.storeBytes(of: c5_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c5_1, toByteOffset: 32, as: V.self) }
    }
}

@inline(__always)
func microKernel4x24(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
    typealias V = SIMD8<Float>
    // Ask for the C tile now; it is read and written after the k loop.
    sidetune_prefetch_write(c + 0 * ldc); sidetune_prefetch_write(c + 0 * ldc + 23)
    sidetune_prefetch_write(c + 1 * ldc); sidetune_prefetch_write(c + 1 * ldc + 23)
    sidetune_prefetch_write(c + 2 * ldc); sidetune_prefetch_write(c + 2 * ldc + 23)
    sidetune_prefetch_write(c + 3 * ldc); sidetune_prefetch_write(c + 3 * ldc + 23)
    var c0_0 = V(), c0_1 = V(), c0_2 = V()
    var c1_0 = V(), c1_1 = V(), c1_2 = V()
    var c2_0 = V(), c2_1 = V(), c2_2 = V()
    var c3_0 = V(), c3_1 = V(), c3_2 = V()
    var pa = a, pb = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = pb.load(fromByteOffset: 0, as: V.self); let b1 = pb.load(fromByteOffset: 32, as: V.self); let b2 = pb.load(fromByteOffset: 64, as: V.self)
        do { let ai = V(repeating: pa[0]); c0_0.addProduct(ai, b0); c0_1.addProduct(ai, b1); c0_2.addProduct(ai, b2) }
        do { let ai = V(repeating: pa[1]); c1_0.addProduct(ai, b0); c1_1.addProduct(ai, b1); c1_2.addProduct(ai, b2) }
        do { let ai = V(repeating: pa[2]); c2_0.addProduct(ai, b0); c2_1.addProduct(ai, b1); c2_2.addProduct(ai, b2) }
        do { let ai = V(repeating: pa[3]); c3_0.addProduct(ai, b0); c3_1.addProduct(ai, b1); c3_2.addProduct(ai, b2) }
        pa += 4; pb += 96
    }
    if accumulate {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c0_1, toByteOffset: 32, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c0_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c1_1, toByteOffset: 32, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c1_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c2_1, toByteOffset: 32, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c2_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 32, as: V.self) + c3_1, toByteOffset: 32, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c3_2, toByteOffset: 64, as: V.self) }
    } else {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c0_1, toByteOffset: 32, as: V.self); r.storeBytes(of: c0_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c1_1, toByteOffset: 32, as: V.self); r.storeBytes(of: c1_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c2_1, toByteOffset: 32, as: V.self); r.storeBytes(of: c2_2, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c3_1, toByteOffset: 32, as: V.self); r.storeBytes(of: c3_2, toByteOffset: 64, as: V.self) }
    }
}

@inline(__always)
func microKernel12x32(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
    typealias V = SIMD16<Float>
    // Ask for the C tile now; it is read and written after the k loop.
    sidetune_prefetch_write(c + 0 * ldc); sidetune_prefetch_write(c + 0 * ldc + 31)
    sidetune_prefetch_write(c + 1 * ldc); sidetune_prefetch_write(c + 1 * ldc + 31)
    sidetune_prefetch_write(c + 2 * ldc); sidetune_prefetch_write(c + 2 * ldc + 31)
    sidetune_prefetch_write(c + 3 * ldc); sidetune_prefetch_write(c + 3 * ldc + 31)
    sidetune_prefetch_write(c + 4 * ldc); sidetune_prefetch_write(c + 4 * ldc + 31)
    sidetune_prefetch_write(c + 5 * ldc); sidetune_prefetch_write(c + 5 * ldc + 31)
    sidetune_prefetch_write(c + 6 * ldc); sidetune_prefetch_write(c + 6 * ldc + 31)
    sidetune_prefetch_write(c + 7 * ldc); sidetune_prefetch_write(c + 7 * ldc + 31)
    sidetune_prefetch_write(c + 8 * ldc); sidetune_prefetch_write(c + 8 * ldc + 31)
    sidetune_prefetch_write(c + 9 * ldc); sidetune_prefetch_write(c + 9 * ldc + 31)
    sidetune_prefetch_write(c + 10 * ldc); sidetune_prefetch_write(c + 10 * ldc + 31)
    sidetune_prefetch_write(c + 11 * ldc); sidetune_prefetch_write(c + 11 * ldc + 31)
    var c0_0 = V(), c0_1 = V()
    var c1_0 = V(), c1_1 = V()
    var c2_0 = V(), c2_1 = V()
    var c3_0 = V(), c3_1 = V()
    var c4_0 = V(), c4_1 = V()
    var c5_0 = V(), c5_1 = V()
    var c6_0 = V(), c6_1 = V()
    var c7_0 = V(), c7_1 = V()
    var c8_0 = V(), c8_1 = V()
    var c9_0 = V(), c9_1 = V()
    var c10_0 = V(), c10_1 = V()
    var c11_0 = V(), c11_1 = V()
    var pa = a, pb = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = pb.load(fromByteOffset: 0, as: V.self); let b1 = pb.load(fromByteOffset: 64, as: V.self)
        do { let ai = V(repeating: pa[0]); c0_0.addProduct(ai, b0); c0_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[1]); c1_0.addProduct(ai, b0); c1_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[2]); c2_0.addProduct(ai, b0); c2_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[3]); c3_0.addProduct(ai, b0); c3_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[4]); c4_0.addProduct(ai, b0); c4_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[5]); c5_0.addProduct(ai, b0); c5_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[6]); c6_0.addProduct(ai, b0); c6_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[7]); c7_0.addProduct(ai, b0); c7_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[8]); c8_0.addProduct(ai, b0); c8_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[9]); c9_0.addProduct(ai, b0); c9_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[10]); c10_0.addProduct(ai, b0); c10_1.addProduct(ai, b1) }
        do { let ai = V(repeating: pa[11]); c11_0.addProduct(ai, b0); c11_1.addProduct(ai, b1) }
        pa += 12; pb += 128
    }
    if accumulate {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c0_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c1_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c2_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c3_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 4 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c4_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c4_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 5 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c5_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c5_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 6 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c6_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c6_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 7 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c7_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c7_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 8 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c8_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c8_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 9 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c9_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c9_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 10 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c10_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c10_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 11 * ldc); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 0, as: V.self) + c11_0, toByteOffset: 0, as: V.self); r.storeBytes(of: r.loadUnaligned(fromByteOffset: 64, as: V.self) + c11_1, toByteOffset: 64, as: V.self) }
    } else {
        do { let r = UnsafeMutableRawPointer(c + 0 * ldc); r.storeBytes(of: c0_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c0_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 1 * ldc); r.storeBytes(of: c1_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c1_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 2 * ldc); r.storeBytes(of: c2_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c2_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 3 * ldc); r.storeBytes(of: c3_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c3_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 4 * ldc); r.storeBytes(of: c4_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c4_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 5 * ldc); r.storeBytes(of: c5_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c5_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 6 * ldc); r.storeBytes(of: c6_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c6_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 7 * ldc); r.storeBytes(of: c7_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c7_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 8 * ldc); r.storeBytes(of: c8_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c8_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 9 * ldc); r.storeBytes(of: c9_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c9_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 10 * ldc); r.storeBytes(of: c10_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c10_1, toByteOffset: 64, as: V.self) }
        do { let r = UnsafeMutableRawPointer(c + 11 * ldc); r.storeBytes(of: c11_0, toByteOffset: 0, as: V.self); r.storeBytes(of: c11_1, toByteOffset: 64, as: V.self) }
    }
}
