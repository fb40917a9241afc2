#ifndef SIDETUNE_SGEMM_AVX2_H
#define SIDETUNE_SGEMM_AVX2_H
#include <stdbool.h>
// The 6x16 AVX2 GEMM micro-kernel in C intrinsics: the same contract as the Swift reference
// `microKernel6x16` (packed A: 6 floats per k; packed B: 16 floats per k; C row stride ldc).
// Swift's SIMD code gives one k step per loop trip; here the loop is unrolled and B is prefetched.
// Available where sidetune_isa() allows AVX2 (it must not be called elsewhere).
bool sidetune_sgemm_avx2_available(void);
#if defined(__x86_64__)
void sidetune_sgemm_6x16_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate);
#endif
#endif
