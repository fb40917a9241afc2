// bf16 dot-product GEMM and its packers: see bf16_dot.h.
#include "bf16_dot.h"
#include "isa.h"
#include <string.h>
#if ST_X86
#include <immintrin.h>
#endif

bool sidetune_bf16dot_native(void) { return sidetune_isa() >= SIDETUNE_ISA_AVX512BF16; }

// As vcvtneps2bf16: denormal inputs become signed zeros, NaNs quiet NaNs, the rest round to
// nearest even.
static inline uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline uint16_t element(const void *src, bool srcBF16, long i) {
    return srcBF16 ? ((const uint16_t *)src)[i] : to_bf16(((const float *)src)[i]);
}

#if ST_X86
// The vdpbf16ps paths: each does the part it can in whole vectors and returns where it stopped.

ST_TARGET_AVX512BF16 static long pairs_along_row_avx512bf16(const float *s, long full, uint32_t *o) {
    long p = 0;
    for (; p + 16 <= full; p += 16) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 2 * p + 16), _mm512_loadu_ps(s + 2 * p));
        _mm512_storeu_si512((void *)(o + p), (__m512i)v);
    }
    return p;
}

ST_TARGET_AVX512BF16 static long pairs_across_rows_avx512bf16(const void *src, bool srcBF16, long ld, long r0, long r1,
                                                              long cols, uint32_t *o) {
    long c = 0;
    if (srcBF16) {
        const uint16_t *s0 = (const uint16_t *)src + r0 * ld, *s1 = (const uint16_t *)src + r1 * ld;
        for (; c + 16 <= cols; c += 16) {
            __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s0 + c)));
            __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s1 + c)));
            _mm512_storeu_si512((void *)(o + c), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    } else {
        const float *s0 = (const float *)src + r0 * ld, *s1 = (const float *)src + r1 * ld;
        for (; c + 16 <= cols; c += 16) {
            __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s0 + c)));
            __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s1 + c)));
            _mm512_storeu_si512((void *)(o + c), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
    return c;
}

// 16 pairs rounded at once, then stored down the column (the rounding per element in scalar code
// made this pack 1.5% of a cached LST step, on the calling thread).
ST_TARGET_AVX512BF16 static long pairs_transposed_avx512bf16(const float *s, long r, long cols, uint32_t *out, long ldo) {
    uint32_t lanes[16];
    long p = 0;
    for (; p + 16 <= cols / 2; p += 16) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 2 * p + 16), _mm512_loadu_ps(s + 2 * p));
        _mm512_storeu_si512((void *)lanes, (__m512i)v);
        for (long l = 0; l < 16; l++) out[(p + l) * ldo + r] = lanes[l];
    }
    return p;
}
#endif

/// Whether the vdpbf16ps paths may run.
static inline bool native(void) {
#if ST_X86
    return sidetune_isa() >= SIDETUNE_ISA_AVX512BF16;
#else
    return false;
#endif
}

void sidetune_bf16_pairs_along_rows(const void *src, bool srcBF16, long ld, long rows, long cols, uint32_t *out, long ldo) {
    const long full = cols / 2, pairs = (cols + 1) / 2;
    for (long r = 0; r < rows; r++) {
        uint32_t *o = out + r * ldo;
        long p = 0;
        if (srcBF16) {
            const uint16_t *s = (const uint16_t *)src + r * ld;
            memcpy(o, s, (size_t)full * 4);
            p = full;
        } else {
            const float *s = (const float *)src + r * ld;
#if ST_X86
            if (native()) p = pairs_along_row_avx512bf16(s, full, o);
#endif
            for (; p < full; p++) o[p] = (uint32_t)to_bf16(s[2 * p]) | ((uint32_t)to_bf16(s[2 * p + 1]) << 16);
        }
        if (pairs > full) o[full] = element(src, srcBF16, r * ld + cols - 1);
    }
}

void sidetune_bf16_pairs_across_rows(const void *src, bool srcBF16, long ld, long rows, long cols, long p0, long p1,
                                     uint32_t *out, long ldo) {
    for (long p = p0; p < p1; p++) {
        const long r0 = 2 * p, r1 = 2 * p + 1;
        uint32_t *o = out + p * ldo;
        long c = 0;
        if (r1 >= rows) {
            for (; c < cols; c++) o[c] = element(src, srcBF16, r0 * ld + c);
            continue;
        }
#if ST_X86
        if (native()) c = pairs_across_rows_avx512bf16(src, srcBF16, ld, r0, r1, cols, o);
#endif
        for (; c < cols; c++)
            o[c] = (uint32_t)element(src, srcBF16, r0 * ld + c) | ((uint32_t)element(src, srcBF16, r1 * ld + c) << 16);
    }
}

void sidetune_bf16_pairs_along_rows_transposed(const float *src, long ld, long rows, long cols, uint32_t *out, long ldo) {
    const long pairs = (cols + 1) / 2;
    for (long r = 0; r < rows; r++) {
        const float *s = src + r * ld;
        long p = 0;
#if ST_X86
        if (native()) p = pairs_transposed_avx512bf16(s, r, cols, out, ldo);
#endif
        for (; p < pairs; p++) {
            const uint16_t lo = to_bf16(s[2 * p]), hi = 2 * p + 1 < cols ? to_bf16(s[2 * p + 1]) : 0;
            out[p * ldo + r] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
}

#if ST_X86
// An MR x (16 NV) tile; the last vector masked to `mask` lanes. MR and NV are constants after inlining.
ST_TARGET_AVX512BF16 static inline __attribute__((always_inline))
void tile(const long MR, const long NV, __mmask16 mask, long pairs, const uint32_t *a, long sam, long sap,
          const uint32_t *b, long ldb, float *c, long ldc, bool accumulate) {
    __m512 acc[8][3];
    for (long i = 0; i < MR; i++)
        for (long v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (long p = 0; p < pairs; p++) {
        __m512bh bv[3];
        for (long v = 0; v < NV; v++) {
            const uint32_t *bp = b + p * ldb + 16 * v;
            bv[v] = (__m512bh)(v == NV - 1 ? _mm512_maskz_loadu_epi32(mask, bp) : _mm512_loadu_si512((const void *)bp));
        }
        const uint32_t *ap = a + p * sap;
        for (long i = 0; i < MR; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)ap[i * sam]);
            for (long v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
        }
    }
    for (long i = 0; i < MR; i++) {
        for (long v = 0; v < NV; v++) {
            float *cp = c + i * ldc + 16 * v;
            const __mmask16 mk = v == NV - 1 ? mask : 0xffff;
            __m512 r = acc[i][v];
            if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, cp));
            _mm512_mask_storeu_ps(cp, mk, r);
        }
    }
}

#define ROWS(NV) \
    switch (mr) { \
    case 8: tile(8, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 7: tile(7, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 6: tile(6, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 5: tile(5, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 4: tile(4, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 3: tile(3, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    case 2: tile(2, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    default: tile(1, NV, mask, pairs, ap, sam, sap, bp, ldb, cp, ldc, accumulate); break; \
    }

ST_TARGET_AVX512BF16 static void gemm_avx512bf16(long m, long n, long pairs, const uint32_t *a, long sam, long sap,
                                                 const uint32_t *b, long ldb, float *c, long ldc, bool accumulate) {
    // Column blocks of 48 outer: B's panel (pairs x 48) stays in cache while A's rows stream past.
    for (long j0 = 0; j0 < n; j0 += 48) {
        const long w = n - j0 < 48 ? n - j0 : 48, nv = (w + 15) / 16, last = w - 16 * (nv - 1);
        const __mmask16 mask = (__mmask16)(last == 16 ? 0xffff : (1u << last) - 1);
        const uint32_t *bp = b + j0;
        for (long i0 = 0; i0 < m; i0 += 8) {
            const long mr = m - i0 < 8 ? m - i0 : 8;
            const uint32_t *ap = a + i0 * sam;
            float *cp = c + i0 * ldc + j0;
            if (nv == 3) { ROWS(3) } else if (nv == 2) { ROWS(2) } else { ROWS(1) }
        }
    }
}

// Rows outer, panels inner: the 8 packed rows stay in L1 while the weight's panels stream past.
ST_TARGET_AVX512BF16 static void gemm_panels_avx512bf16(long m, long n, long k, const float *x, long ldx,
                                                        const uint32_t *w, float *c, long ldc, uint32_t *scratch) {
    const long pairs = (k + 1) / 2, sam = pairs, sap = 1;
    const bool accumulate = false;
    for (long i0 = 0; i0 < m; i0 += 8) {
        const long mr = m - i0 < 8 ? m - i0 : 8;
        const uint32_t *ap = scratch;
        sidetune_bf16_pairs_along_rows(x + i0 * ldx, false, ldx, mr, k, scratch, pairs);
        for (long j0 = 0; j0 < n; j0 += SIDETUNE_BF16_PANEL) {
            const long wd = n - j0 < SIDETUNE_BF16_PANEL ? n - j0 : SIDETUNE_BF16_PANEL, nv = (wd + 15) / 16;
            const long last = wd - 16 * (nv - 1), ldb = wd;
            const __mmask16 mask = (__mmask16)(last == 16 ? 0xffff : (1u << last) - 1);
            const uint32_t *bp = w + j0 * pairs;
            float *cp = c + i0 * ldc + j0;
            if (nv == 3) { ROWS(3) } else if (nv == 2) { ROWS(2) } else { ROWS(1) }
        }
    }
}
#endif

void sidetune_bf16_pack_panels(const float *w, long ld, long n, long k, long j0, long j1, uint32_t *out) {
    const long pairs = (k + 1) / 2;
    for (long p0 = j0; p0 < j1 && p0 < n; p0 += SIDETUNE_BF16_PANEL) {
        const long wd = n - p0 < SIDETUNE_BF16_PANEL ? n - p0 : SIDETUNE_BF16_PANEL;
        sidetune_bf16_pairs_along_rows_transposed(w + p0 * ld, ld, wd, k, out + p0 * pairs, wd);
    }
}

void sidetune_bf16dot_gemm_panels(long m, long n, long k, const float *x, long ldx, const uint32_t *w, float *c,
                                  long ldc, uint32_t *scratch) {
#if ST_X86
    if (native()) {
        gemm_panels_avx512bf16(m, n, k, x, ldx, w, c, ldc, scratch);
        return;
    }
#endif
    sidetune_bf16dot_gemm_panels_plain(m, n, k, x, ldx, w, c, ldc, scratch);
}

void sidetune_bf16dot_gemm_panels_plain(long m, long n, long k, const float *x, long ldx, const uint32_t *w, float *c,
                                        long ldc, uint32_t *scratch) {
    const long pairs = (k + 1) / 2;
    for (long i = 0; i < m; i++) {
        sidetune_bf16_pairs_along_rows(x + i * ldx, false, ldx, 1, k, scratch, pairs);
        for (long j = 0; j < n; j++) {
            float acc = 0;
            for (long p = 0; p < pairs; p++) {
                const uint32_t a = scratch[p], b = w[sidetune_bf16_panel_offset(n, pairs, p, j)];
                acc += from_bf16((uint16_t)a) * from_bf16((uint16_t)b);
                acc += from_bf16((uint16_t)(a >> 16)) * from_bf16((uint16_t)(b >> 16));
            }
            c[i * ldc + j] = acc;
        }
    }
}

void sidetune_bf16dot_gemm(long m, long n, long pairs, const uint32_t *a, long sam, long sap, const uint32_t *b, long ldb,
                           float *c, long ldc, bool accumulate) {
#if ST_X86
    if (native()) {
        gemm_avx512bf16(m, n, pairs, a, sam, sap, b, ldb, c, ldc, accumulate);
        return;
    }
#endif
    sidetune_bf16dot_gemm_plain(m, n, pairs, a, sam, sap, b, ldb, c, ldc, accumulate);
}

void sidetune_bf16dot_gemm_plain(long m, long n, long pairs, const uint32_t *a, long sam, long sap, const uint32_t *b,
                                 long ldb, float *c, long ldc, bool accumulate) {
    for (long i = 0; i < m; i++) {
        for (long j = 0; j < n; j++) {
            float acc = 0;
            for (long p = 0; p < pairs; p++) {
                const uint32_t x = a[i * sam + p * sap], y = b[p * ldb + j];
                acc += from_bf16((uint16_t)x) * from_bf16((uint16_t)y);
                acc += from_bf16((uint16_t)(x >> 16)) * from_bf16((uint16_t)(y >> 16));
            }
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
        }
    }
}
