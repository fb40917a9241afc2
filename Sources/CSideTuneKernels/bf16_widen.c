// bf16 -> f32 widening of a block: see bf16_widen.h.
#include "bf16_widen.h"
#include "isa.h"
#include <string.h>
#if ST_X86
#include <immintrin.h>

/// Columns [0, cols rounded down to 16) of one row; returns how far it got.
ST_TARGET_AVX512 static long widen_row_avx512(const uint16_t *s, long cols, float *d) {
    long j = 0;
    for (; j + 16 <= cols; j += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + j)));
        _mm512_storeu_ps(d + j, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    return j;
}

ST_TARGET_AVX2 static long widen_row_avx2(const uint16_t *s, long cols, float *d) {
    long j = 0;
    for (; j + 8 <= cols; j += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + j)));
        _mm256_storeu_ps(d + j, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    return j;
}
#endif

void sidetune_bf16_widen_block(const uint16_t *src, long lds, long rows, long cols, float *dst, long ldd,
                               long padRows, long padCols) {
    const int isa = sidetune_isa();
    for (long r = 0; r < rows; r++) {
        const uint16_t *s = src + r * lds;
        float *d = dst + r * ldd;
        long j = 0;
#if ST_X86
        if (isa >= SIDETUNE_ISA_AVX512) j = widen_row_avx512(s, cols, d);
        else if (isa >= SIDETUNE_ISA_AVX2) j = widen_row_avx2(s, cols, d);
#else
        (void)isa;
#endif
        for (; j < cols; j++) {
            uint32_t u = (uint32_t)s[j] << 16;
            memcpy(d + j, &u, sizeof u);
        }
        for (; j < padCols; j++) d[j] = 0;
    }
    for (long r = rows; r < padRows; r++) memset(dst + r * ldd, 0, (size_t)padCols * sizeof(float));
}
