#include "nf4_gemv.h"
#include "isa.h"
#if ST_X86
#include <immintrin.h>
#endif

// The block scale is dyn * a2 + offset rounded twice, as the Swift reference computes it: no FMA.
#pragma clang fp contract(off)
static inline float block_scale(const uint8_t *q, const float *a2, const float *dyn, float offset, ptrdiff_t b) {
    float s = dyn[q[b]] * a2[b >> 8];
    return s + offset;
}
#pragma clang fp contract(on)

// Position i of a 64-block of permuted x holds element xp_source(i): vector v = i / 8 (v < 4: the
// high nibbles, i.e. even elements; v >= 4: the low nibbles, odd elements), 128-bit lane l and slot p
// come from the unpack order in dot32, which takes code byte j = 16 l + 4 (v % 4) + p.
static inline int xp_source(int i) {
    int v = i >> 3, l = (i >> 2) & 1, p = i & 3;
    return 2 * (l * 16 + (v & 3) * 4 + p) + (v >> 2);
}

void sidetune_nf4_permute_x(const float *x, float *xp, ptrdiff_t cols) {
    for (ptrdiff_t b = 0; b < cols; b += 64)
        for (int i = 0; i < 64; i++) xp[b + i] = x[b + xp_source(i)];
}

/// The portable loop: the kernel where the CPU (or SIDETUNE_ISA) has no AVX2.
static void nf4_gemv_plain(const uint8_t *codes, const uint8_t *q, const float *a2, float offset,
                           const float *levels, const float *dyn, const float *xp, float *y,
                           ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1, int accumulate) {
    const ptrdiff_t bpr = cols / 64;
    for (ptrdiff_t o = r0; o < r1; o++) {
        const uint8_t *src = codes + o * bpr * 32;
        float acc = 0;
        for (ptrdiff_t bi = 0; bi < bpr; bi++) {
            float d = 0;
            for (int i = 0; i < 64; i++) {
                int e = xp_source(i);
                uint8_t byte = src[bi * 32 + e / 2];
                d += levels[e % 2 == 0 ? byte >> 4 : byte & 15] * xp[bi * 64 + i];
            }
            acc += d * block_scale(q, a2, dyn, offset, o * bpr + bi);
        }
        y[o] = accumulate ? y[o] + acc : acc;
    }
}

int sidetune_nf4_gemv_is_vectorized(void) { return sidetune_isa() >= SIDETUNE_ISA_AVX2; }

#if ST_X86
ST_TARGET_AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
// 32 codes (one per byte of c) -> 32 floats, exactly: four in-lane byte lookups (vpshufb) give
// byte 0, 1, 2 and 3 of each code's f32 level, two rounds of unpacks interleave them into floats.
// The unpacks leave the floats in the order sidetune_nf4_permute_x puts x in.
ST_TARGET_AVX2 static inline __m256 dot32(__m256i c, const float *xb, __m256i t0, __m256i t1, __m256i t2, __m256i t3, __m256 acc) {
    __m256i b0 = _mm256_shuffle_epi8(t0, c), b1 = _mm256_shuffle_epi8(t1, c);
    __m256i b2 = _mm256_shuffle_epi8(t2, c), b3 = _mm256_shuffle_epi8(t3, c);
    __m256i w01l = _mm256_unpacklo_epi8(b0, b1), w01h = _mm256_unpackhi_epi8(b0, b1);
    __m256i w23l = _mm256_unpacklo_epi8(b2, b3), w23h = _mm256_unpackhi_epi8(b2, b3);
    __m256 f0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01l, w23l));
    __m256 f1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01l, w23l));
    __m256 f2 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(w01h, w23h));
    __m256 f3 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(w01h, w23h));
    __m256 a = _mm256_mul_ps(f0, _mm256_loadu_ps(xb));
    __m256 b = _mm256_mul_ps(f1, _mm256_loadu_ps(xb + 8));
    a = _mm256_fmadd_ps(f2, _mm256_loadu_ps(xb + 16), a);
    b = _mm256_fmadd_ps(f3, _mm256_loadu_ps(xb + 24), b);
    return _mm256_add_ps(_mm256_add_ps(a, b), acc);
}
ST_TARGET_AVX2 static void nf4_gemv_avx2(const uint8_t *codes, const uint8_t *q, const float *a2, float offset,
                                         const float *levels, const float *dyn, const float *xp, float *y,
                                         ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1, int accumulate) {
    // tb[j]: byte j of each of the 16 levels, repeated for both 128-bit lanes.
    uint8_t tb[4][32];
    for (int k = 0; k < 16; k++) { uint32_t u; __builtin_memcpy(&u, &levels[k], 4);
        for (int j = 0; j < 4; j++) { tb[j][k] = (u >> (8 * j)) & 255; tb[j][k + 16] = tb[j][k]; } }
    const __m256i t0 = _mm256_loadu_si256((const __m256i *)tb[0]), t1 = _mm256_loadu_si256((const __m256i *)tb[1]);
    const __m256i t2 = _mm256_loadu_si256((const __m256i *)tb[2]), t3 = _mm256_loadu_si256((const __m256i *)tb[3]);
    const __m256i m4 = _mm256_set1_epi8(15);
    const ptrdiff_t bpr = cols / 64;
    for (ptrdiff_t o = r0; o < r1; o++) {
        const uint8_t *src = codes + o * bpr * 32;
        __m256 acc = _mm256_setzero_ps();
        for (ptrdiff_t bi = 0; bi < bpr; bi++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(src + bi * 32));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            const float *xb = xp + bi * 64;
            __m256 d = dot32(hi, xb, t0, t1, t2, t3, _mm256_setzero_ps());
            d = dot32(lo, xb + 32, t0, t1, t2, t3, d);
            acc = _mm256_fmadd_ps(d, _mm256_set1_ps(block_scale(q, a2, dyn, offset, o * bpr + bi)), acc);
        }
        float v = hsum(acc);
        y[o] = accumulate ? y[o] + v : v;
    }
}

#endif

void sidetune_nf4_gemv(const uint8_t *codes, const uint8_t *q, const float *a2, float offset,
                       const float *levels, const float *dyn, const float *xp, float *y,
                       ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1, int accumulate) {
#if ST_X86
    if (sidetune_isa() >= SIDETUNE_ISA_AVX2) {
        nf4_gemv_avx2(codes, q, a2, offset, levels, dyn, xp, y, cols, r0, r1, accumulate);
        return;
    }
#endif
    nf4_gemv_plain(codes, q, a2, offset, levels, dyn, xp, y, cols, r0, r1, accumulate);
}
