// Register-blocked GEMM micro-kernels over packed panels (written out by scripts/gen_microkernels.py;
// the contract is in sgemm_packed.h). 12x32 fits AVX-512's 32 zmm registers (24 accumulators, 2 for
// B, 1 broadcast); 6x16 and 4x24 AVX2's 16 ymm; the portable 4x8 x86-64's 16 xmm (and arm64's NEON).
#include "sgemm_packed.h"
#include "isa.h"
// Vector helpers are always inlined: the psABI note about 512-bit arguments does not apply.
#pragma clang diagnostic ignored "-Wpsabi"

#pragma clang fp contract(off)

typedef float st_f4 __attribute__((ext_vector_type(4)));
typedef float st_f4u __attribute__((ext_vector_type(4), aligned(4)));
typedef float st_f8 __attribute__((ext_vector_type(8)));
typedef float st_f8u __attribute__((ext_vector_type(8), aligned(4)));
typedef float st_f16 __attribute__((ext_vector_type(16)));
typedef float st_f16u __attribute__((ext_vector_type(16), aligned(4)));


// Portable: a 4x8 tile of 4-lane vectors, multiply then add (no FMA in the x86-64 baseline).
void sidetune_sgemm_packed_4x8_generic(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    // The C tile is read and written after the k loop: ask for it now.
    for (int i = 0; i < 4; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + 7, 1, 3); }
    st_f4 c0_0 = (st_f4)0, c0_1 = (st_f4)0;
    st_f4 c1_0 = (st_f4)0, c1_1 = (st_f4)0;
    st_f4 c2_0 = (st_f4)0, c2_1 = (st_f4)0;
    st_f4 c3_0 = (st_f4)0, c3_1 = (st_f4)0;
    for (long p = 0; p < kc; p++) {
        st_f4 b0 = *(const st_f4u *)(b + 0); st_f4 b1 = *(const st_f4u *)(b + 4);
        { st_f4 ai = (st_f4)a[0]; c0_0 = c0_0 + ai * b0; c0_1 = c0_1 + ai * b1; }
        { st_f4 ai = (st_f4)a[1]; c1_0 = c1_0 + ai * b0; c1_1 = c1_1 + ai * b1; }
        { st_f4 ai = (st_f4)a[2]; c2_0 = c2_0 + ai * b0; c2_1 = c2_1 + ai * b1; }
        { st_f4 ai = (st_f4)a[3]; c3_0 = c3_0 + ai * b0; c3_1 = c3_1 + ai * b1; }
        a += 4; b += 8;
    }
    { float *r = c + 0 * ldc; *(st_f4u *)(r + 0) = accumulate ? *(st_f4u *)(r + 0) + c0_0 : c0_0; *(st_f4u *)(r + 4) = accumulate ? *(st_f4u *)(r + 4) + c0_1 : c0_1; }
    { float *r = c + 1 * ldc; *(st_f4u *)(r + 0) = accumulate ? *(st_f4u *)(r + 0) + c1_0 : c1_0; *(st_f4u *)(r + 4) = accumulate ? *(st_f4u *)(r + 4) + c1_1 : c1_1; }
    { float *r = c + 2 * ldc; *(st_f4u *)(r + 0) = accumulate ? *(st_f4u *)(r + 0) + c2_0 : c2_0; *(st_f4u *)(r + 4) = accumulate ? *(st_f4u *)(r + 4) + c2_1 : c2_1; }
    { float *r = c + 3 * ldc; *(st_f4u *)(r + 0) = accumulate ? *(st_f4u *)(r + 0) + c3_0 : c3_0; *(st_f4u *)(r + 4) = accumulate ? *(st_f4u *)(r + 4) + c3_1 : c3_1; }
}

#if ST_X86
ST_TARGET_AVX2 void sidetune_sgemm_packed_6x16_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    // The C tile is read and written after the k loop: ask for it now.
    for (int i = 0; i < 6; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + 15, 1, 3); }
    st_f8 c0_0 = (st_f8)0, c0_1 = (st_f8)0;
    st_f8 c1_0 = (st_f8)0, c1_1 = (st_f8)0;
    st_f8 c2_0 = (st_f8)0, c2_1 = (st_f8)0;
    st_f8 c3_0 = (st_f8)0, c3_1 = (st_f8)0;
    st_f8 c4_0 = (st_f8)0, c4_1 = (st_f8)0;
    st_f8 c5_0 = (st_f8)0, c5_1 = (st_f8)0;
    for (long p = 0; p < kc; p++) {
        st_f8 b0 = *(const st_f8u *)(b + 0); st_f8 b1 = *(const st_f8u *)(b + 8);
        { st_f8 ai = (st_f8)a[0]; c0_0 = __builtin_elementwise_fma(ai, b0, c0_0); c0_1 = __builtin_elementwise_fma(ai, b1, c0_1); }
        { st_f8 ai = (st_f8)a[1]; c1_0 = __builtin_elementwise_fma(ai, b0, c1_0); c1_1 = __builtin_elementwise_fma(ai, b1, c1_1); }
        { st_f8 ai = (st_f8)a[2]; c2_0 = __builtin_elementwise_fma(ai, b0, c2_0); c2_1 = __builtin_elementwise_fma(ai, b1, c2_1); }
        { st_f8 ai = (st_f8)a[3]; c3_0 = __builtin_elementwise_fma(ai, b0, c3_0); c3_1 = __builtin_elementwise_fma(ai, b1, c3_1); }
        { st_f8 ai = (st_f8)a[4]; c4_0 = __builtin_elementwise_fma(ai, b0, c4_0); c4_1 = __builtin_elementwise_fma(ai, b1, c4_1); }
        { st_f8 ai = (st_f8)a[5]; c5_0 = __builtin_elementwise_fma(ai, b0, c5_0); c5_1 = __builtin_elementwise_fma(ai, b1, c5_1); }
        a += 6; b += 16;
    }
    { float *r = c + 0 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c0_0 : c0_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c0_1 : c0_1; }
    { float *r = c + 1 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c1_0 : c1_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c1_1 : c1_1; }
    { float *r = c + 2 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c2_0 : c2_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c2_1 : c2_1; }
    { float *r = c + 3 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c3_0 : c3_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c3_1 : c3_1; }
    { float *r = c + 4 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c4_0 : c4_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c4_1 : c4_1; }
    { float *r = c + 5 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c5_0 : c5_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c5_1 : c5_1; }
}

ST_TARGET_AVX2 void sidetune_sgemm_packed_4x24_avx2(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    // The C tile is read and written after the k loop: ask for it now.
    for (int i = 0; i < 4; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + 23, 1, 3); }
    st_f8 c0_0 = (st_f8)0, c0_1 = (st_f8)0, c0_2 = (st_f8)0;
    st_f8 c1_0 = (st_f8)0, c1_1 = (st_f8)0, c1_2 = (st_f8)0;
    st_f8 c2_0 = (st_f8)0, c2_1 = (st_f8)0, c2_2 = (st_f8)0;
    st_f8 c3_0 = (st_f8)0, c3_1 = (st_f8)0, c3_2 = (st_f8)0;
    for (long p = 0; p < kc; p++) {
        st_f8 b0 = *(const st_f8u *)(b + 0); st_f8 b1 = *(const st_f8u *)(b + 8); st_f8 b2 = *(const st_f8u *)(b + 16);
        { st_f8 ai = (st_f8)a[0]; c0_0 = __builtin_elementwise_fma(ai, b0, c0_0); c0_1 = __builtin_elementwise_fma(ai, b1, c0_1); c0_2 = __builtin_elementwise_fma(ai, b2, c0_2); }
        { st_f8 ai = (st_f8)a[1]; c1_0 = __builtin_elementwise_fma(ai, b0, c1_0); c1_1 = __builtin_elementwise_fma(ai, b1, c1_1); c1_2 = __builtin_elementwise_fma(ai, b2, c1_2); }
        { st_f8 ai = (st_f8)a[2]; c2_0 = __builtin_elementwise_fma(ai, b0, c2_0); c2_1 = __builtin_elementwise_fma(ai, b1, c2_1); c2_2 = __builtin_elementwise_fma(ai, b2, c2_2); }
        { st_f8 ai = (st_f8)a[3]; c3_0 = __builtin_elementwise_fma(ai, b0, c3_0); c3_1 = __builtin_elementwise_fma(ai, b1, c3_1); c3_2 = __builtin_elementwise_fma(ai, b2, c3_2); }
        a += 4; b += 24;
    }
    { float *r = c + 0 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c0_0 : c0_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c0_1 : c0_1; *(st_f8u *)(r + 16) = accumulate ? *(st_f8u *)(r + 16) + c0_2 : c0_2; }
    { float *r = c + 1 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c1_0 : c1_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c1_1 : c1_1; *(st_f8u *)(r + 16) = accumulate ? *(st_f8u *)(r + 16) + c1_2 : c1_2; }
    { float *r = c + 2 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c2_0 : c2_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c2_1 : c2_1; *(st_f8u *)(r + 16) = accumulate ? *(st_f8u *)(r + 16) + c2_2 : c2_2; }
    { float *r = c + 3 * ldc; *(st_f8u *)(r + 0) = accumulate ? *(st_f8u *)(r + 0) + c3_0 : c3_0; *(st_f8u *)(r + 8) = accumulate ? *(st_f8u *)(r + 8) + c3_1 : c3_1; *(st_f8u *)(r + 16) = accumulate ? *(st_f8u *)(r + 16) + c3_2 : c3_2; }
}

ST_TARGET_AVX512 void sidetune_sgemm_packed_12x32_avx512(long kc, const float *a, const float *b, float *c, long ldc, bool accumulate) {
    // The C tile is read and written after the k loop: ask for it now.
    for (int i = 0; i < 12; i++) { __builtin_prefetch(c + i * ldc, 1, 3); __builtin_prefetch(c + i * ldc + 31, 1, 3); }
    st_f16 c0_0 = (st_f16)0, c0_1 = (st_f16)0;
    st_f16 c1_0 = (st_f16)0, c1_1 = (st_f16)0;
    st_f16 c2_0 = (st_f16)0, c2_1 = (st_f16)0;
    st_f16 c3_0 = (st_f16)0, c3_1 = (st_f16)0;
    st_f16 c4_0 = (st_f16)0, c4_1 = (st_f16)0;
    st_f16 c5_0 = (st_f16)0, c5_1 = (st_f16)0;
    st_f16 c6_0 = (st_f16)0, c6_1 = (st_f16)0;
    st_f16 c7_0 = (st_f16)0, c7_1 = (st_f16)0;
    st_f16 c8_0 = (st_f16)0, c8_1 = (st_f16)0;
    st_f16 c9_0 = (st_f16)0, c9_1 = (st_f16)0;
    st_f16 c10_0 = (st_f16)0, c10_1 = (st_f16)0;
    st_f16 c11_0 = (st_f16)0, c11_1 = (st_f16)0;
    for (long p = 0; p < kc; p++) {
        st_f16 b0 = *(const st_f16u *)(b + 0); st_f16 b1 = *(const st_f16u *)(b + 16);
        { st_f16 ai = (st_f16)a[0]; c0_0 = __builtin_elementwise_fma(ai, b0, c0_0); c0_1 = __builtin_elementwise_fma(ai, b1, c0_1); }
        { st_f16 ai = (st_f16)a[1]; c1_0 = __builtin_elementwise_fma(ai, b0, c1_0); c1_1 = __builtin_elementwise_fma(ai, b1, c1_1); }
        { st_f16 ai = (st_f16)a[2]; c2_0 = __builtin_elementwise_fma(ai, b0, c2_0); c2_1 = __builtin_elementwise_fma(ai, b1, c2_1); }
        { st_f16 ai = (st_f16)a[3]; c3_0 = __builtin_elementwise_fma(ai, b0, c3_0); c3_1 = __builtin_elementwise_fma(ai, b1, c3_1); }
        { st_f16 ai = (st_f16)a[4]; c4_0 = __builtin_elementwise_fma(ai, b0, c4_0); c4_1 = __builtin_elementwise_fma(ai, b1, c4_1); }
        { st_f16 ai = (st_f16)a[5]; c5_0 = __builtin_elementwise_fma(ai, b0, c5_0); c5_1 = __builtin_elementwise_fma(ai, b1, c5_1); }
        { st_f16 ai = (st_f16)a[6]; c6_0 = __builtin_elementwise_fma(ai, b0, c6_0); c6_1 = __builtin_elementwise_fma(ai, b1, c6_1); }
        { st_f16 ai = (st_f16)a[7]; c7_0 = __builtin_elementwise_fma(ai, b0, c7_0); c7_1 = __builtin_elementwise_fma(ai, b1, c7_1); }
        { st_f16 ai = (st_f16)a[8]; c8_0 = __builtin_elementwise_fma(ai, b0, c8_0); c8_1 = __builtin_elementwise_fma(ai, b1, c8_1); }
        { st_f16 ai = (st_f16)a[9]; c9_0 = __builtin_elementwise_fma(ai, b0, c9_0); c9_1 = __builtin_elementwise_fma(ai, b1, c9_1); }
        { st_f16 ai = (st_f16)a[10]; c10_0 = __builtin_elementwise_fma(ai, b0, c10_0); c10_1 = __builtin_elementwise_fma(ai, b1, c10_1); }
        { st_f16 ai = (st_f16)a[11]; c11_0 = __builtin_elementwise_fma(ai, b0, c11_0); c11_1 = __builtin_elementwise_fma(ai, b1, c11_1); }
        a += 12; b += 32;
    }
    { float *r = c + 0 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c0_0 : c0_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c0_1 : c0_1; }
    { float *r = c + 1 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c1_0 : c1_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c1_1 : c1_1; }
    { float *r = c + 2 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c2_0 : c2_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c2_1 : c2_1; }
    { float *r = c + 3 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c3_0 : c3_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c3_1 : c3_1; }
    { float *r = c + 4 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c4_0 : c4_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c4_1 : c4_1; }
    { float *r = c + 5 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c5_0 : c5_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c5_1 : c5_1; }
    { float *r = c + 6 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c6_0 : c6_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c6_1 : c6_1; }
    { float *r = c + 7 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c7_0 : c7_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c7_1 : c7_1; }
    { float *r = c + 8 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c8_0 : c8_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c8_1 : c8_1; }
    { float *r = c + 9 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c9_0 : c9_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c9_1 : c9_1; }
    { float *r = c + 10 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c10_0 : c10_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c10_1 : c10_1; }
    { float *r = c + 11 * ldc; *(st_f16u *)(r + 0) = accumulate ? *(st_f16u *)(r + 0) + c11_0 : c11_0; *(st_f16u *)(r + 16) = accumulate ? *(st_f16u *)(r + 16) + c11_1 : c11_1; }
}
#endif
