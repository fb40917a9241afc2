#include "pack_transposed.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// The plain loop: the reference, and the path for tails and machines without AVX-512.
static void pack_transposed_scalar(const float *src, long lds, long p0, long kc, long cols, long nr, float *dst) {
    for (long p = p0; p < kc; p++) {
        float *o = dst + p * nr;
        for (long q = 0; q < cols; q++) o[q] = src[q * lds + p];
        for (long q = cols; q < nr; q++) o[q] = 0;
    }
}

#if defined(__AVX512F__)
// r[i] holds row i of a 16x16 block; afterwards r[c] holds column c.
static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 16; i += 8) {
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}
#endif

void sidetune_pack_transposed_panel(const float *src, long lds, long kc, long cols, long nr, float *dst) {
    long p0 = 0;
#if defined(__AVX512F__)
    const __m512 zero = _mm512_setzero_ps();
    for (; p0 + 16 <= kc; p0 += 16) {
        // Panel columns in groups of 16 (the last one narrower when nr is not a multiple of 16:
        // the A panels' 12 rows); each group is one 16x16 transpose of 16 k by 16 source rows.
        for (long q0 = 0; q0 < nr; q0 += 16) {
            const long width = nr - q0 < 16 ? nr - q0 : 16;
            const __mmask16 keep = (__mmask16)((1u << width) - 1);
            __m512 r[16];
            if (q0 >= cols) {
                // Past the last source row (an edge panel): only zeros to store.
                for (int i = 0; i < 16; i++) r[i] = zero;
            } else {
                for (int i = 0; i < 16; i++) r[i] = q0 + i < cols ? _mm512_loadu_ps(src + (q0 + i) * lds + p0) : zero;
                transpose16x16(r);
            }
            if (width == 16) {
                for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (p0 + i) * nr + q0, r[i]);
            } else {
                for (int i = 0; i < 16; i++) _mm512_mask_storeu_ps(dst + (p0 + i) * nr + q0, keep, r[i]);
            }
        }
    }
#endif
    pack_transposed_scalar(src, lds, p0, kc, cols, nr, dst);
}
