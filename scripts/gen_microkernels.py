#!/usr/bin/env python3
"""Writes Sources/CSideTuneKernels/sgemm_packed.c: MR x NR register-blocked GEMM micro-kernels over
packed panels, one per instruction set, each compiled with its own target attribute (no build
flags) and chosen at run time (isa.h).

Contract: packed A holds MR floats per k, packed B NR floats per k; C[MR, NR] (+)= A B with C's
rows ldc apart. Per k step: MR broadcasts of A times NR/lanes vectors of B, one fused multiply-add
per accumulator (a plain multiply and add where the target has no FMA), the same order as every
earlier version of these kernels, so results match them bit for bit.

The accumulators must be separate local variables for the compiler to keep them in registers,
so the kernels are written out rather than looped. Run from the repository root."""

def kernel(name, mr, nv, lanes, target, fma):
    out = []
    a = out.append
    vt = f"st_f{lanes}"
    a(f"{target}void {name}(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {{")
    a("    // The C tile is read and written after the k loop: ask for it now.")
    a(f"    for (int i = 0; i < {mr}; i++) {{ __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + {nv * lanes - 1}, 1, 3); }}")
    for i in range(mr):
        a(f"    {vt} " + ", ".join(f"c{i}_{j} = ({vt})0" for j in range(nv)) + ";")
    a("    for (long p = 0; p < kc; p++) {")
    a("        " + " ".join(f"{vt} b{j} = *(const {vt}u *)(b + {lanes * j});" for j in range(nv)))
    for i in range(mr):
        ops = " ".join(f"c{i}_{j} = {fma('ai', f'b{j}', f'c{i}_{j}')};" for j in range(nv))
        a(f"        {{ {vt} ai = ({vt})a[{i}]; {ops} }}")
    a(f"        a += {mr}; b += {nv * lanes};")
    a("    }")
    for i in range(mr):
        a(f"    {{ float *r = c + {i} * ldc; " + " ".join(
            f"*({vt}u *)(r + {lanes * j}) = accumulate ? *({vt}u *)(r + {lanes * j}) + c{i}_{j} : c{i}_{j};" for j in range(nv)) + " }")
    a("}")
    return "\n".join(out)

FMA = lambda x, y, z: f"__builtin_elementwise_fma({x}, {y}, {z})"
MULADD = lambda x, y, z: f"{z} + {x} * {y}"

HEADER = """// Register-blocked GEMM micro-kernels over packed panels (written out by scripts/gen_microkernels.py;
// the contract is in sgemm_packed.h). 12x32 fits AVX-512's 32 zmm registers (24 accumulators, 2 for
// B, 1 broadcast); 6x16 and 4x24 AVX2's 16 ymm; the portable 4x8 x86-64's 16 xmm (and arm64's NEON).
#include "sgemm_packed.h"
#include "isa.h"

#pragma clang fp contract(off)

typedef float st_f4 __attribute__((ext_vector_type(4)));
typedef float st_f4u __attribute__((ext_vector_type(4), aligned(4)));
typedef float st_f8 __attribute__((ext_vector_type(8)));
typedef float st_f8u __attribute__((ext_vector_type(8), aligned(4)));
typedef float st_f16 __attribute__((ext_vector_type(16)));
typedef float st_f16u __attribute__((ext_vector_type(16), aligned(4)));

"""

if __name__ == "__main__":
    parts = [HEADER]
    parts.append("// Portable: a 4x8 tile of 4-lane vectors, multiply then add (no FMA in the x86-64 baseline).")
    parts.append(kernel("sidetune_sgemm_packed_4x8_generic", 4, 2, 4, "", MULADD))
    parts.append("\n#if ST_X86")
    parts.append(kernel("sidetune_sgemm_packed_6x16_avx2", 6, 2, 8, "ST_TARGET_AVX2 ", FMA))
    parts.append("")
    parts.append(kernel("sidetune_sgemm_packed_4x24_avx2", 4, 3, 8, "ST_TARGET_AVX2 ", FMA))
    parts.append("")
    parts.append(kernel("sidetune_sgemm_packed_12x32_avx512", 12, 2, 16, "ST_TARGET_AVX512 ", FMA))
    parts.append("#endif\n")
    with open("Sources/CSideTuneKernels/sgemm_packed.c", "w") as f:
        f.write("\n".join(parts))
