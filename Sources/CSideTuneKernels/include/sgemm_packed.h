#ifndef SIDETUNE_SGEMM_PACKED_H
#define SIDETUNE_SGEMM_PACKED_H
#include <stdbool.h>

// GEMM micro-kernels over packed panels: C[MR, NR] (+)= A B with packed A holding MR floats per k,
// packed B NR floats per k, C's rows ldc apart. Each is compiled for its instruction set by a
// target attribute; call one only where sidetune_isa() allows it (the generic one anywhere).
// The 6x16 AVX2 kernel in intrinsics, unrolled four k steps, is sgemm_avx2.h's.
void sidetune_sgemm_packed_4x8_generic(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate);
#if defined(__x86_64__)
void sidetune_sgemm_packed_6x16_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate);
void sidetune_sgemm_packed_4x24_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate);
void sidetune_sgemm_packed_12x32_avx512(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate);
#endif
#endif
