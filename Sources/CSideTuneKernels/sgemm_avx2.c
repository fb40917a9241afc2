#include "sgemm_avx2.h"
#include "isa.h"

#if ST_X86
#include <immintrin.h>

#ifndef SIDETUNE_A_PREFETCH
#define SIDETUNE_A_PREFETCH 1
#endif
#if SIDETUNE_A_PREFETCH
#define SIDETUNE_PREFETCH_A(p) do { __builtin_prefetch((p) + 96, 0, 3); __builtin_prefetch((p) + 96 + 16, 0, 3); } while (0)
#else
#define SIDETUNE_PREFETCH_A(p) do { } while (0)
#endif

bool sidetune_sgemm_avx2_available(void) { return sidetune_isa() >= SIDETUNE_ISA_AVX2; }

#define STEP(off)                                                                  \
    do {                                                                           \
        __m256 b0 = _mm256_loadu_ps(b + 16 * (off));                               \
        __m256 b1 = _mm256_loadu_ps(b + 16 * (off) + 8);                           \
        __m256 ai;                                                                 \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 0);                               \
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);    \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 1);                               \
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);    \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 2);                               \
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);    \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 3);                               \
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);    \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 4);                               \
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);    \
        ai = _mm256_broadcast_ss(a + 6 * (off) + 5);                               \
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);    \
    } while (0)

#define ROW(i, r0, r1)                                                                       \
    do {                                                                                     \
        float *p = c + (i) * ldc;                                                            \
        if (accumulate) {                                                                    \
            r0 = _mm256_add_ps(_mm256_loadu_ps(p), r0);                                      \
            r1 = _mm256_add_ps(_mm256_loadu_ps(p + 8), r1);                                  \
        }                                                                                    \
        _mm256_storeu_ps(p, r0); _mm256_storeu_ps(p + 8, r1);                                \
    } while (0)

ST_TARGET_AVX2 void sidetune_sgemm_6x16_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    // The C tile is read and written after the k loop: ask for it now.
    for (int i = 0; i < 6; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + 15, 1, 3); }
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    long k = 0;
    // Four k steps per trip: the loop counter and pointer updates are amortised. The B panel stays
    // in L1 across the row panels; A streams from L2 and is prefetched a few lines ahead.
    for (; k + 4 <= kc; k += 4) {
        SIDETUNE_PREFETCH_A(a);
        STEP(0); STEP(1); STEP(2); STEP(3);
        a += 24; b += 64;
    }
    for (; k < kc; k++) {
        STEP(0);
        a += 6; b += 16;
    }
    ROW(0, c00, c01); ROW(1, c10, c11); ROW(2, c20, c21);
    ROW(3, c30, c31); ROW(4, c40, c41); ROW(5, c50, c51);
}

#else

bool sidetune_sgemm_avx2_available(void) { return false; }
void sidetune_sgemm_6x16_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    (void)kc; (void)a; (void)b; (void)c; (void)ldc; (void)accumulate;
}

#endif
