#!/usr/bin/env python3
"""Writes Sources/SideTuneEngine/Kernels/MicroKernel.swift: MR x NR register-blocked GEMM kernels.

The accumulators must be separate local variables for the compiler to keep them in registers,
so the kernels are written out rather than looped. Run from the repository root."""

def kernel(mr, nv, lanes=16):
    """MR rows x (nv * lanes) columns; accumulators are nv vectors of `lanes` floats per row."""
    out = []
    a = out.append
    vb = lanes * 4  # bytes per vector
    a("@inline(__always)")
    a(f"func microKernel{mr}x{nv*lanes}(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,")
    a("                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {")
    a(f"    typealias V = SIMD{lanes}<Float>")
    a("    // Ask for the C tile now; it is read and written after the k loop.")
    for i in range(mr):
        a(f"    sidetune_prefetch_write(c + {i} * ldc); sidetune_prefetch_write(c + {i} * ldc + {nv*lanes-1})")
    for i in range(mr):
        a("    var " + ", ".join(f"c{i}_{j} = V()" for j in range(nv)))
    a("    var pa = a, pb = UnsafeRawPointer(b)")
    a("    for _ in 0..<kc {")
    a("        " + "; ".join(f"let b{j} = pb.load(fromByteOffset: {vb*j}, as: V.self)" for j in range(nv)))
    for i in range(mr):
        a(f"        do {{ let ai = V(repeating: pa[{i}]); " + "; ".join(f"c{i}_{j}.addProduct(ai, b{j})" for j in range(nv)) + " }")
    a(f"        pa += {mr}; pb += {nv*vb}")
    a("    }")
    a("    if accumulate {")
    for i in range(mr):
        a(f"        do {{ let r = UnsafeMutableRawPointer(c + {i} * ldc); " + "; ".join(
            f"r.storeBytes(of: r.loadUnaligned(fromByteOffset: {vb*j}, as: V.self) + c{i}_{j}, toByteOffset: {vb*j}, as: V.self)"
            for j in range(nv)) + " }")
    a("    } else {")
    for i in range(mr):
        a(f"        do {{ let r = UnsafeMutableRawPointer(c + {i} * ldc); " + "; ".join(
            f"r.storeBytes(of: c{i}_{j}, toByteOffset: {vb*j}, as: V.self)" for j in range(nv)) + " }")
    a("    }")
    a("}")
    return "\n".join(out)

HEADER = """import CSideTuneKernels

// Register-blocked GEMM micro-kernels over packed panels (written out by scripts/gen_microkernels.py).
// 6x16 fits AVX2's 16 ymm registers: 12 accumulators, 2 for B, 1 broadcast.
// 12x32 fits AVX-512's 32 zmm registers: 24 accumulators, 2 for B, 1 broadcast.
// Per k step each reads one packed row of B (NR floats) and MR packed values of A.
"""

if __name__ == "__main__":
    with open("Sources/SideTuneEngine/Kernels/MicroKernel.swift", "w") as f:
        f.write(HEADER + kernel(6, 2, 8) + "\n\n" + kernel(4, 3, 8) + "\n\n" + kernel(12, 2) + "\n")
