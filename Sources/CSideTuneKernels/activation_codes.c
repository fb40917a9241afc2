// Few-bit activation codes (activation_codes.h): the forward's codes and the backward's level lookup,
// one copy per instruction set (the portable scalar reference, AVX2, AVX-512), picked by sidetune_isa().
// Every copy computes the same code for every float (the comparisons are the same IEEE x > boundary,
// false for NaN) and the same product g level, so their results are bit for bit equal.
#include "activation_codes.h"
#include "activation_codes_tables.h"
#include "isa.h"
#include <stdint.h>
#include <string.h>
#if ST_X86
#include <immintrin.h>
#endif

typedef struct {
    int bits;
    const float *bounds; // 2^bits - 1, sorted
    const float *levels; // 2^bits
    const float *tree;   // 2^bits: the boundaries in Eytzinger order, [0] unused
} code_table;

#define ST_CODE_TABLE(name, b) \
    (code_table) { b, st_codes_##name##_bounds, st_codes_##name##_levels, st_codes_##name##_tree }

static int table_of(int kind, int bits, code_table *t) {
    switch (kind) {
    case ST_UNARY_RELU:
        if (bits == 1) { *t = ST_CODE_TABLE(relu_1, 1); return 1; }
        return 0;
    case ST_UNARY_GELU:
        if (bits == 4) { *t = ST_CODE_TABLE(gelu_4, 4); return 1; }
        if (bits == 8) { *t = ST_CODE_TABLE(gelu_8, 8); return 1; }
        return 0;
    case ST_UNARY_GELU_TANH:
        if (bits == 4) { *t = ST_CODE_TABLE(gelu_tanh_4, 4); return 1; }
        if (bits == 8) { *t = ST_CODE_TABLE(gelu_tanh_8, 8); return 1; }
        return 0;
    case ST_UNARY_SILU:
        if (bits == 4) { *t = ST_CODE_TABLE(silu_4, 4); return 1; }
        if (bits == 8) { *t = ST_CODE_TABLE(silu_8, 8); return 1; }
        return 0;
    default: return 0;
    }
}

int st_code_bits(int kind, int requested_bits) {
    switch (kind) {
    case ST_UNARY_RELU: return 1;
    case ST_UNARY_GELU:
    case ST_UNARY_GELU_TANH:
    case ST_UNARY_SILU: return requested_bits <= 4 ? 4 : 8;
    default: return 0;
    }
}

long st_code_bytes(int bits, long n) { return (n * bits + 7) / 8; }

int st_code_table(int kind, int bits, const float **boundaries, const float **levels) {
    code_table t;
    if (!table_of(kind, bits, &t)) return 0;
    *boundaries = t.bounds;
    *levels = t.levels;
    return 1;
}

// ---- The scalar reference.

/// #{j : x > b[j]}: a branch-free binary search over the sorted boundaries (NaN: 0).
static inline unsigned code_of(float x, const float *b, int bits) {
    unsigned c = 0;
    for (unsigned s = 1u << (bits - 1); s; s >>= 1) c += s * (unsigned)(x > b[c + s - 1]);
    return c;
}

/// Codes of x[0 ..< n] into whole bytes from codes[0] (n need not fill the last byte).
static inline void codes_scalar_bits(const float *bounds, int bits, long n, const float *x, unsigned char *codes) {
    const int per = 8 / bits;
    for (long i = 0; i < n; i += per) {
        unsigned byte = 0;
        for (int j = 0; j < per && i + j < n; j++) byte |= code_of(x[i + j], bounds, bits) << (j * bits);
        codes[i / per] = (unsigned char)byte;
    }
}

static inline void backward_scalar_bits(const float *levels, int bits, long n, const unsigned char *codes,
                                        const float *g, float *dx) {
    const unsigned mask = (1u << bits) - 1;
    for (long i = 0; i < n; i++) {
        const long bit = i * bits;
        dx[i] = g[i] * levels[(codes[bit >> 3] >> (bit & 7)) & mask];
    }
}

// The widths as constants, so the compiler unrolls the search and the unpacking.
static void codes_scalar(const code_table *t, long n, const float *x, unsigned char *codes) {
    switch (t->bits) {
    case 1: codes_scalar_bits(t->bounds, 1, n, x, codes); break;
    case 4: codes_scalar_bits(t->bounds, 4, n, x, codes); break;
    default: codes_scalar_bits(t->bounds, 8, n, x, codes); break;
    }
}

static void backward_scalar(const code_table *t, long n, const unsigned char *codes, const float *g, float *dx) {
    switch (t->bits) {
    case 1: backward_scalar_bits(t->levels, 1, n, codes, g, dx); break;
    case 4: backward_scalar_bits(t->levels, 4, n, codes, g, dx); break;
    default: backward_scalar_bits(t->levels, 8, n, codes, g, dx); break;
    }
}

// ---- AVX-512: 16 elements a step. The search walks the Eytzinger tree: k = 1, then per level
// k = 2 k + (x > tree[k]), ending at k = 2^bits + code; the level's nodes are one slice of the tree,
// looked up with in-register permutes. The vector copies return how many elements they did (a multiple
// of 16, or 8 for AVX2) and the dispatch gives the rest to the scalar reference: a call from the vector
// code would leave the upper register state dirty (gcc emits no vzeroupper before such a tail call) and
// slow the SSE code that follows.
#if ST_X86
ST_TARGET_AVX512 static inline __m512i step512(__m512i k, __m512 v, __m512 node) {
    const __mmask16 m = _mm512_cmp_ps_mask(v, node, _CMP_GT_OQ);
    k = _mm512_add_epi32(k, k);
    return _mm512_mask_add_epi32(k, m, k, _mm512_set1_epi32(1));
}

/// L[k mod 256] for 16 floats per register in L[0 ..< 16].
ST_TARGET_AVX512 static inline __m512 lut256_512(const __m512 *L, __m512i k) {
    const __mmask16 m5 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(32));
    const __mmask16 m6 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(64));
    const __mmask16 m7 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(128));
    __m512 p[8];
    for (int j = 0; j < 8; j++) p[j] = _mm512_permutex2var_ps(L[2 * j], k, L[2 * j + 1]);
    const __m512 q0 = _mm512_mask_blend_ps(m5, p[0], p[1]), q1 = _mm512_mask_blend_ps(m5, p[2], p[3]);
    const __m512 q2 = _mm512_mask_blend_ps(m5, p[4], p[5]), q3 = _mm512_mask_blend_ps(m5, p[6], p[7]);
    return _mm512_mask_blend_ps(m7, _mm512_mask_blend_ps(m6, q0, q1), _mm512_mask_blend_ps(m6, q2, q3));
}

ST_TARGET_AVX512 static long codes_avx512(const code_table *t, long n, const float *x, unsigned char *codes) {
    long i = 0;
    if (t->bits == 1) {
        const __m512 b = _mm512_set1_ps(t->bounds[0]);
        for (; i + 16 <= n; i += 16) {
            const uint16_t m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), b, _CMP_GT_OQ);
            memcpy(codes + i / 8, &m, 2); // little-endian: element i + j at bit j
        }
    } else if (t->bits == 4) {
        const __m512 T = _mm512_loadu_ps(t->tree);
        const __m512i one = _mm512_set1_epi32(1), low = _mm512_set1_epi32(15);
        for (; i + 16 <= n; i += 16) {
            const __m512 v = _mm512_loadu_ps(x + i);
            __m512i k = one;
            for (int d = 0; d < 4; d++) k = step512(k, v, _mm512_permutexvar_ps(k, T));
            // Each 64-bit lane: code 2j in bits 0-3, code 2j + 1 moved to bits 4-7; then a byte a lane.
            const __m512i c = _mm512_and_si512(k, low);
            const __m512i p = _mm512_or_si512(c, _mm512_srli_epi64(c, 28));
            _mm_storel_epi64((__m128i *)(codes + i / 2), _mm512_cvtepi64_epi8(p));
        }
    } else {
        __m512 T[16];
        for (int j = 0; j < 16; j++) T[j] = _mm512_loadu_ps(t->tree + 16 * j);
        const __m512i one = _mm512_set1_epi32(1), b5 = _mm512_set1_epi32(32), b6 = _mm512_set1_epi32(64);
        for (; i + 16 <= n; i += 16) {
            const __m512 v = _mm512_loadu_ps(x + i);
            __m512i k = one;
            for (int d = 0; d < 4; d++) k = step512(k, v, _mm512_permutexvar_ps(k, T[0])); // k < 16
            k = step512(k, v, _mm512_permutexvar_ps(k, T[1]));                             // 16 <= k < 32
            k = step512(k, v, _mm512_permutex2var_ps(T[2], k, T[3]));                      // 32 <= k < 64
            {                                                                              // 64 <= k < 128
                const __mmask16 m5 = _mm512_test_epi32_mask(k, b5);
                k = step512(k, v, _mm512_mask_blend_ps(m5, _mm512_permutex2var_ps(T[4], k, T[5]),
                                                       _mm512_permutex2var_ps(T[6], k, T[7])));
            }
            {                                                                              // 128 <= k < 256
                const __mmask16 m5 = _mm512_test_epi32_mask(k, b5), m6 = _mm512_test_epi32_mask(k, b6);
                const __m512 lo = _mm512_mask_blend_ps(m5, _mm512_permutex2var_ps(T[8], k, T[9]),
                                                       _mm512_permutex2var_ps(T[10], k, T[11]));
                const __m512 hi = _mm512_mask_blend_ps(m5, _mm512_permutex2var_ps(T[12], k, T[13]),
                                                       _mm512_permutex2var_ps(T[14], k, T[15]));
                k = step512(k, v, _mm512_mask_blend_ps(m6, lo, hi));
            }
            _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(k)); // k - 256 = k mod 256
        }
    }
    return i;
}

ST_TARGET_AVX512 static long backward_avx512(const code_table *t, long n, const unsigned char *codes, const float *g,
                                             float *dx) {
    long i = 0;
    if (t->bits == 1) {
        const __m512 l0 = _mm512_set1_ps(t->levels[0]), l1 = _mm512_set1_ps(t->levels[1]);
        for (; i + 16 <= n; i += 16) {
            uint16_t m;
            memcpy(&m, codes + i / 8, 2);
            _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(g + i), _mm512_mask_blend_ps(m, l0, l1)));
        }
    } else if (t->bits == 4) {
        const __m512 L = _mm512_loadu_ps(t->levels);
        for (; i + 16 <= n; i += 16) {
            // 8 bytes to 8 64-bit lanes; low dword keeps the low nibble in bits 0-3, the high dword gets
            // the high nibble; the permute reads only bits 0-3 of each dword.
            const __m512i q = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)(codes + i / 2)));
            const __m512i k = _mm512_or_si512(q, _mm512_slli_epi64(q, 28));
            _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(g + i), _mm512_permutexvar_ps(k, L)));
        }
    } else {
        __m512 L[16];
        for (int j = 0; j < 16; j++) L[j] = _mm512_loadu_ps(t->levels + 16 * j);
        for (; i + 16 <= n; i += 16) {
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
            _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(g + i), lut256_512(L, k)));
        }
    }
    return i;
}

// ---- AVX2: 8 elements a step; the 8-bit tables' deep levels and levels through gathers.
ST_TARGET_AVX2 static inline __m256i step256(__m256i k, __m256 v, __m256 node) {
    const __m256 m = _mm256_cmp_ps(v, node, _CMP_GT_OQ); // all ones where x > node
    return _mm256_sub_epi32(_mm256_add_epi32(k, k), _mm256_castps_si256(m));
}

/// The low 4 bytes (lane 0) and the next 4 (lane 1) picked by ctrl, as 8 bytes.
ST_TARGET_AVX2 static inline __m128i gather_bytes256(__m256i v, __m256i ctrl) {
    const __m256i s = _mm256_shuffle_epi8(v, ctrl);
    return _mm_or_si128(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

ST_TARGET_AVX2 static long codes_avx2(const code_table *t, long n, const float *x, unsigned char *codes) {
    long i = 0;
    const __m256i one = _mm256_set1_epi32(1);
    if (t->bits == 1) {
        const __m256 b = _mm256_set1_ps(t->bounds[0]);
        for (; i + 8 <= n; i += 8)
            codes[i / 8] = (unsigned char)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b, _CMP_GT_OQ));
    } else if (t->bits == 4) {
        const __m256 lo = _mm256_loadu_ps(t->tree), hi = _mm256_loadu_ps(t->tree + 8);
        const __m256i low = _mm256_set1_epi32(15);
        // Bytes 0 and 8 of each 128-bit lane (the packed pairs) to bytes 0-1 (lane 0) and 2-3 (lane 1).
        const __m256i ctrl = _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              -1, -1, 0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            __m256i k = one;
            for (int d = 0; d < 3; d++) k = step256(k, v, _mm256_permutevar8x32_ps(lo, k)); // k < 8
            k = step256(k, v, _mm256_permutevar8x32_ps(hi, k));                             // 8 <= k < 16
            const __m256i c = _mm256_and_si256(k, low);
            const __m256i p = _mm256_or_si256(c, _mm256_srli_epi64(c, 28));
            const uint32_t w = (uint32_t)_mm_cvtsi128_si32(gather_bytes256(p, ctrl));
            memcpy(codes + i / 2, &w, 4);
        }
    } else {
        const __m256 t0 = _mm256_loadu_ps(t->tree), t1 = _mm256_loadu_ps(t->tree + 8);
        const __m256 t2 = _mm256_loadu_ps(t->tree + 16), t3 = _mm256_loadu_ps(t->tree + 24);
        const __m256i ctrl = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1);
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            __m256i k = one;
            for (int d = 0; d < 3; d++) k = step256(k, v, _mm256_permutevar8x32_ps(t0, k)); // k < 8
            k = step256(k, v, _mm256_permutevar8x32_ps(t1, k));                             // 8 <= k < 16
            const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28));                // 16 <= k < 32
            k = step256(k, v, _mm256_blendv_ps(_mm256_permutevar8x32_ps(t2, k), _mm256_permutevar8x32_ps(t3, k), b3));
            for (int d = 5; d < 8; d++) k = step256(k, v, _mm256_i32gather_ps(t->tree, k, 4));
            _mm_storel_epi64((__m128i *)(codes + i), gather_bytes256(k, ctrl)); // low bytes: k mod 256
        }
    }
    return i;
}

ST_TARGET_AVX2 static long backward_avx2(const code_table *t, long n, const unsigned char *codes, const float *g,
                                         float *dx) {
    long i = 0;
    if (t->bits == 1) {
        const __m256 l0 = _mm256_set1_ps(t->levels[0]), l1 = _mm256_set1_ps(t->levels[1]);
        const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        for (; i + 8 <= n; i += 8) {
            const __m256i b = _mm256_and_si256(_mm256_set1_epi32(codes[i / 8]), bit);
            const __m256 sel = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, bit));
            _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_blendv_ps(l0, l1, sel)));
        }
    } else if (t->bits == 4) {
        const __m256 lo = _mm256_loadu_ps(t->levels), hi = _mm256_loadu_ps(t->levels + 8);
        for (; i + 8 <= n; i += 8) {
            uint32_t w;
            memcpy(&w, codes + i / 2, 4);
            const __m256i q = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)w));
            const __m256i k = _mm256_or_si256(q, _mm256_slli_epi64(q, 28)); // nibbles in bits 0-3 of dwords
            const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28)); // bit 3 to the sign
            const __m256 lv = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, k), _mm256_permutevar8x32_ps(hi, k), sel);
            _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), lv));
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
            _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_i32gather_ps(t->levels, k, 4)));
        }
    }
    return i;
}
#endif

// ---- Dispatch.

static void codes_any(const code_table *t, long n, const float *x, unsigned char *codes) {
    long i = 0;
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) i = codes_avx512(t, n, x, codes);
    else if (isa >= SIDETUNE_ISA_AVX2) i = codes_avx2(t, n, x, codes);
#endif
    if (i < n) codes_scalar(t, n - i, x + i, codes + i * t->bits / 8);
}

/// Elements per block of the forward: codes from x, then y = f(x) over the same block (still in L1,
/// and x is read before y overwrites it when they are the same array). A multiple of 16.
enum { ST_CODED_BLOCK = 2048 };

void st_unary_forward_coded(int kind, int bits, long n, const float *x, float *y, unsigned char *codes) {
    code_table t;
    if (!table_of(kind, bits, &t)) { st_unary_forward(kind, n, x, y); return; }
    for (long i = 0; i < n; i += ST_CODED_BLOCK) {
        const long m = n - i < ST_CODED_BLOCK ? n - i : ST_CODED_BLOCK;
        codes_any(&t, m, x + i, codes + i * bits / 8);
        st_unary_forward(kind, m, x + i, y + i);
    }
}

void st_unary_backward_coded(int kind, int bits, long n, const unsigned char *codes, const float *g, float *dx) {
    code_table t;
    if (!table_of(kind, bits, &t)) {
        for (long i = 0; i < n; i++) dx[i] = __builtin_nanf("");
        return;
    }
    long i = 0;
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) i = backward_avx512(&t, n, codes, g, dx);
    else if (isa >= SIDETUNE_ISA_AVX2) i = backward_avx2(&t, n, codes, g, dx);
#endif
    if (i < n) backward_scalar(&t, n - i, codes + i * bits / 8, g + i, dx + i);
}
