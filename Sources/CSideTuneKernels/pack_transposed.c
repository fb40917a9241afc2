#include "pack_transposed.h"
#include "isa.h"
#if ST_X86
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

#if ST_X86
// r[i] holds row i of a 16x16 block; afterwards r[c] holds column c.
ST_TARGET_AVX512 static inline void transpose16x16(__m512 r[16]) {
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

/// The panel's whole 16-deep slices of k by register transposes; returns how far it got.
ST_TARGET_AVX512 static long pack_transposed_avx512(const float *src, long lds, long kc, long cols, long nr, float *dst) {
    long p0 = 0;
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
    return p0;
}

// r[i] holds row i of an 8x8 block; afterwards r[c] holds column c.
ST_TARGET_AVX2 static inline void transpose8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/// The AVX2 form: 8x8 transposes over 8-deep slices of k, masked stores for groups narrower than
/// 8 (the A panels' 6 rows). Returns how far along k it got.
ST_TARGET_AVX2 static long pack_transposed_avx2(const float *src, long lds, long kc, long cols, long nr, float *dst) {
    long p0 = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; p0 + 8 <= kc; p0 += 8) {
        for (long q0 = 0; q0 < nr; q0 += 8) {
            const long width = nr - q0 < 8 ? nr - q0 : 8;
            __m256 r[8];
            if (q0 >= cols) {
                for (int i = 0; i < 8; i++) r[i] = zero;
            } else {
                for (int i = 0; i < 8; i++) r[i] = q0 + i < cols ? _mm256_loadu_ps(src + (q0 + i) * lds + p0) : zero;
                transpose8x8(r);
            }
            if (width == 8) {
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (p0 + i) * nr + q0, r[i]);
            } else if (q0 == 0) {
                // A panel narrower than 8 (the A panels' 6 rows): a whole vector per row, in order,
                // so each store's spill past the row is overwritten by the next row's; the last row
                // goes through a buffer (its spill would leave the slice). Masked stores
                // (vmaskmovps) are microcoded and slow on AMD's cores.
                for (int i = 0; i < 7; i++) _mm256_storeu_ps(dst + (p0 + i) * nr, r[i]);
                float last[8];
                _mm256_storeu_ps(last, r[7]);
                for (long j = 0; j < width; j++) dst[(p0 + 7) * nr + j] = last[j];
            } else {
                // The narrower last group of a wider panel: through a buffer, row by row.
                for (int i = 0; i < 8; i++) {
                    float row[8];
                    _mm256_storeu_ps(row, r[i]);
                    for (long j = 0; j < width; j++) dst[(p0 + i) * nr + q0 + j] = row[j];
                }
            }
        }
    }
    return p0;
}
#endif

void sidetune_pack_transposed_panel(const float *src, long lds, long kc, long cols, long nr, float *dst) {
    long p0 = 0;
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) p0 = pack_transposed_avx512(src, lds, kc, cols, nr, dst);
    else if (isa >= SIDETUNE_ISA_AVX2) p0 = pack_transposed_avx2(src, lds, kc, cols, nr, dst);
#endif
    pack_transposed_scalar(src, lds, p0, kc, cols, nr, dst);
}
