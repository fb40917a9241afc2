// Linear layers on bf16 inputs with AMX tiles: see amx_bf16.h.
//
// Tile registers: 0-3 accumulate C (f32, 16 x 16 each), 4 and 5 hold A operands, 6 a B operand.
// Tile numbers are immediates in the instructions, hence the small switches.
#include "amx_bf16.h"
#include "isa.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__)
#define ST_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef ST_AMX
static int amx_granted = -1;

bool sidetune_amx_bf16_available(void) {
    if (amx_granted < 0) {
        // Linux hands out the 8 KiB tile state only to processes that ask (ARCH_REQ_XCOMP_PERM for
        // XFEATURE_XTILEDATA); without it the first tile instruction faults.
        amx_granted = sidetune_isa() >= SIDETUNE_ISA_AVX512BF16 && sidetune_cpu_has_amx_bf16()
            && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    }
    return amx_granted == 1;
}

// Everything below runs only where sidetune_amx_bf16_available() said yes.
#pragma clang attribute push(__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma"))), apply_to = function)
/// 16 floats -> hi and lo bf16 bits in the low halves of 32-bit lanes (round to nearest even).
static inline void split16(__m512 v, __m512i *hi, __m512i *lo) {
    const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v));
    const __m512 rest = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
    *hi = h;
    *lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(rest));
}

/// Lane r of `even` | lane r of `odd` << 16 stored as the 32-bit word at words + 16 r.
static inline void scatter_pairs(uint16_t *words, __m512i even, __m512i odd) {
    const __m512i index = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                             _mm512_set1_epi32(16));
    _mm512_i32scatter_epi32(words, index, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)), 4);
}

void sidetune_amx_pack_weight(const float *w, long n, long k, uint16_t *packed) {
    const long jbs = (n + 15) / 16, kbs = k / 32;
    for (long jb = 0; jb < jbs; jb++) {
        for (long kb = 0; kb < kbs; kb++) {
            uint16_t *hi = packed + (jb * kbs + kb) * 1024, *lo = hi + 512;
            for (long c = 0; c < 16; c++) {
                const long j = 16 * jb + c;
                // Row j's 32 values: pair r (elements 2r, 2r + 1) is the word at row r, column c.
                if (j < n) {
                    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
                    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                    const float *row = w + j * k + 32 * kb;
                    const __m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
                    __m512i eh, el, oh, ol;
                    split16(_mm512_permutex2var_ps(a, even, b), &eh, &el);
                    split16(_mm512_permutex2var_ps(a, odd, b), &oh, &ol);
                    scatter_pairs(hi + 2 * c, eh, oh);
                    scatter_pairs(lo + 2 * c, el, ol);
                    continue;
                }
                for (long r = 0; r < 16; r++) hi[32 * r + 2 * c] = hi[32 * r + 2 * c + 1] = lo[32 * r + 2 * c] = lo[32 * r + 2 * c + 1] = 0;
            }
        }
    }
}

void sidetune_amx_pack_grad(const float *g, long ldg, long m, long n, long mb0, long mb1, uint16_t *packed) {
    const long nbs = (n + 15) / 16, mbs = (m + 31) / 32;
    for (long nb = 0; nb < nbs; nb++) {
        for (long mb = mb0; mb < mb1; mb++) {
            uint16_t *hi = packed + (nb * mbs + mb) * 1024, *lo = hi + 512;
            // Rows i, i + 1 (pair p) of G's 16 columns: their words land at column p of rows r.
            const long cols = n - 16 * nb < 16 ? n - 16 * nb : 16;
            const __mmask16 valid = (__mmask16)((1u << cols) - 1);
            for (long p = 0; p < 16; p++) {
                const long i = 32 * mb + 2 * p;
                const __m512 a = i < m ? _mm512_maskz_loadu_ps(valid, g + i * ldg + 16 * nb) : _mm512_setzero_ps();
                const __m512 b = i + 1 < m ? _mm512_maskz_loadu_ps(valid, g + (i + 1) * ldg + 16 * nb) : _mm512_setzero_ps();
                __m512i ah, al, bh, bl;
                split16(a, &ah, &al);
                split16(b, &bh, &bl);
                scatter_pairs(hi + 2 * p, ah, bh);
                scatter_pairs(lo + 2 * p, al, bl);
            }
        }
    }
}

void sidetune_amx_pack_row_pairs(const uint16_t *x, long ldx, long m, long k, long p0, long p1, uint16_t *xv) {
    for (long p = p0; p < p1; p++) {
        const long i = 2 * p;
        uint16_t *dst = xv + p * 2 * k;
        const uint16_t *a = i < m ? x + i * ldx : NULL, *b = i + 1 < m ? x + (i + 1) * ldx : NULL;
        if (a && b) {
            // dst[2c + e] = (e ? b : a)[c], 32 columns per step: two word permutes.
            const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                                39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
            const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
            for (long c = 0; c < k; c += 32) {
                const __m512i va = _mm512_loadu_si512(a + c), vb = _mm512_loadu_si512(b + c);
                _mm512_storeu_si512(dst + 2 * c, _mm512_permutex2var_epi16(va, lo, vb));
                _mm512_storeu_si512(dst + 2 * c + 32, _mm512_permutex2var_epi16(va, hi, vb));
            }
            continue;
        }
        for (long c = 0; c < k; c++) {
            dst[2 * c] = a ? a[c] : 0;
            dst[2 * c + 1] = b ? b[c] : 0;
        }
    }
}

struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/// All eight tiles 16 rows of 64 bytes. Tile configuration is per thread: every kernel call sets it.
static void configure_tiles(void) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

static inline void load_c(int t, const float *p, long stride) {
    switch (t) {
    case 0: _tile_loadd(0, p, stride); break;
    case 1: _tile_loadd(1, p, stride); break;
    case 2: _tile_loadd(2, p, stride); break;
    default: _tile_loadd(3, p, stride); break;
    }
}

static inline void store_c(int t, float *p, long stride) {
    switch (t) {
    case 0: _tile_stored(0, p, stride); break;
    case 1: _tile_stored(1, p, stride); break;
    case 2: _tile_stored(2, p, stride); break;
    default: _tile_stored(3, p, stride); break;
    }
}

/// C tile t += A (tile 4) B (tile 6), then += A (tile 5) B (tile 6) when `both`.
static inline void multiply_c(int t, bool both) {
    switch (t) {
    case 0: _tile_dpbf16ps(0, 4, 6); if (both) _tile_dpbf16ps(0, 5, 6); break;
    case 1: _tile_dpbf16ps(1, 4, 6); if (both) _tile_dpbf16ps(1, 5, 6); break;
    case 2: _tile_dpbf16ps(2, 4, 6); if (both) _tile_dpbf16ps(2, 5, 6); break;
    default: _tile_dpbf16ps(3, 4, 6); if (both) _tile_dpbf16ps(3, 5, 6); break;
    }
}

/// A 16 x 16 block of a row-major f32 matrix with `rows` x `cols` valid entries, as a tile
/// source: in place when whole, else through a zero-padded copy in `buffer`.
struct c_block {
    float *at;
    long ld, rows, cols;
    float *buffer;
};

static inline const float *c_block_source(struct c_block *b, long *stride) {
    if (b->rows == 16 && b->cols == 16) {
        *stride = b->ld * 4;
        return b->at;
    }
    memset(b->buffer, 0, 256 * sizeof(float));
    for (long r = 0; r < b->rows; r++) memcpy(b->buffer + 16 * r, b->at + r * b->ld, b->cols * sizeof(float));
    *stride = 64;
    return b->buffer;
}

static inline void c_block_finish(struct c_block *b) {
    if (b->rows == 16 && b->cols == 16) return;
    for (long r = 0; r < b->rows; r++) memcpy(b->at + r * b->ld, b->buffer + 16 * r, b->cols * sizeof(float));
}

void sidetune_amx_linear_rows(const uint16_t *x, long ldx, long i0, long i1, long n, long k, const uint16_t *packedW,
                              float *y, long ldy) {
    const long jbs = (n + 15) / 16, kbs = k / 32;
    float cbuf[4][256];
    uint16_t *tail = NULL;
    configure_tiles();
    for (long ib = i0; ib < i1; ib += 16) {
        const long rows = i1 - ib < 16 ? i1 - ib : 16;
        const uint16_t *a = x + ib * ldx;
        long lda = ldx * 2;
        if (rows < 16) {
            // The last rows: copied into a zero-padded block so the tile reads no row past i1.
            tail = calloc(16 * k, sizeof(uint16_t));
            if (!tail) abort();
            for (long r = 0; r < rows; r++) memcpy(tail + r * k, a + r * ldx, k * sizeof(uint16_t));
            a = tail;
            lda = k * 2;
        }
        for (long j0 = 0; j0 < jbs; j0 += 4) {
            const int count = jbs - j0 < 4 ? (int)(jbs - j0) : 4;
            struct c_block blocks[4];
            for (int t = 0; t < count; t++) {
                const long j = 16 * (j0 + t);
                blocks[t] = (struct c_block){y + ib * ldy + j, ldy, rows, n - j < 16 ? n - j : 16, cbuf[t]};
                long stride;
                const float *src = c_block_source(&blocks[t], &stride);
                load_c(t, src, stride);
            }
            for (long kb = 0; kb < kbs; kb++) {
                _tile_loadd(4, a + 32 * kb, lda);
                for (int t = 0; t < count; t++) {
                    const uint16_t *w = packedW + ((j0 + t) * kbs + kb) * 1024;
                    // Here the hi and lo halves are B operands: tile 6 holds one, then the other.
                    _tile_loadd(6, w, 64);
                    multiply_c(t, false);
                    _tile_loadd(6, w + 512, 64);
                    multiply_c(t, false);
                }
            }
            for (int t = 0; t < count; t++) {
                const bool whole = blocks[t].rows == 16 && blocks[t].cols == 16;
                store_c(t, whole ? blocks[t].at : blocks[t].buffer, whole ? ldy * 4 : 64);
                c_block_finish(&blocks[t]);
            }
        }
    }
    _tile_release();
    free(tail);
}

void sidetune_amx_weight_grad_block(long m, long n, long k, const uint16_t *packedG, const uint16_t *xv, long nb,
                                    long cb0, long cb1, float *dw) {
    const long mbs = (m + 31) / 32, rows = n - 16 * nb < 16 ? n - 16 * nb : 16;
    float cbuf[4][256];
    configure_tiles();
    for (long c0 = cb0; c0 < cb1; c0 += 4) {
        const int count = cb1 - c0 < 4 ? (int)(cb1 - c0) : 4;
        struct c_block blocks[4];
        for (int t = 0; t < count; t++) {
            blocks[t] = (struct c_block){dw + 16 * nb * k + 16 * (c0 + t), k, rows, 16, cbuf[t]};
            long stride;
            const float *src = c_block_source(&blocks[t], &stride);
            load_c(t, src, stride);
        }
        for (long mb = 0; mb < mbs; mb++) {
            const uint16_t *g = packedG + (nb * mbs + mb) * 1024;
            _tile_loadd(4, g, 64);
            _tile_loadd(5, g + 512, 64);
            for (int t = 0; t < count; t++) {
                _tile_loadd(6, xv + (16 * mb * k + 16 * (c0 + t)) * 2, k * 4);
                multiply_c(t, true);
            }
        }
        for (int t = 0; t < count; t++) {
            store_c(t, rows == 16 ? blocks[t].at : blocks[t].buffer, rows == 16 ? k * 4 : 64);
            c_block_finish(&blocks[t]);
        }
    }
    _tile_release();
}
#pragma clang attribute pop

#else

// Built without AMX: callers check sidetune_amx_bf16_available() and never reach the others.
bool sidetune_amx_bf16_available(void) { return false; }
void sidetune_amx_pack_weight(const float *w, long n, long k, uint16_t *packed) {
    (void)w, (void)n, (void)k, (void)packed;
    abort();
}
void sidetune_amx_pack_grad(const float *g, long ldg, long m, long n, long mb0, long mb1, uint16_t *packed) {
    (void)g, (void)ldg, (void)m, (void)n, (void)mb0, (void)mb1, (void)packed;
    abort();
}
void sidetune_amx_pack_row_pairs(const uint16_t *x, long ldx, long m, long k, long p0, long p1, uint16_t *xv) {
    (void)x, (void)ldx, (void)m, (void)k, (void)p0, (void)p1, (void)xv;
    abort();
}
void sidetune_amx_linear_rows(const uint16_t *x, long ldx, long i0, long i1, long n, long k, const uint16_t *packedW,
                              float *y, long ldy) {
    (void)x, (void)ldx, (void)i0, (void)i1, (void)n, (void)k, (void)packedW, (void)y, (void)ldy;
    abort();
}
void sidetune_amx_weight_grad_block(long m, long n, long k, const uint16_t *packedG, const uint16_t *xv, long nb,
                                    long cb0, long cb1, float *dw) {
    (void)m, (void)n, (void)k, (void)packedG, (void)xv, (void)nb, (void)cb0, (void)cb1, (void)dw;
    abort();
}

#endif
