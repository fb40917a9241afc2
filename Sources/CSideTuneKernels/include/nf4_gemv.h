#ifndef SIDETUNE_NF4_GEMV_H
#define SIDETUNE_NF4_GEMV_H
#include <stddef.h>
#include <stdint.h>

// NF4 GEMV kernels (y[o] = sum_i x[i] w[o, i] for rows o in [r0, r1)), layout as NF4Weight:
// 64-element blocks of 32 bytes, element 2j in the high nibble of byte j, 2j+1 in the low one;
// block b's scale = dyn[q[b]] * a2[b / 256] + offset.

// Reorders x once per GEMV into the order the kernel produces weights in (`cols` floats, a
// fixed permutation within each 64-block; see xp_source in nf4_gemv.c).
void sidetune_nf4_permute_x(const float *x, float *xp, ptrdiff_t cols);

// xp: x as permuted by sidetune_nf4_permute_x. levels: the 16 NF4 levels; dyn: 256-entry map.
void sidetune_nf4_gemv(const uint8_t *codes, const uint8_t *q, const float *a2, float offset,
                       const float *levels, const float *dyn, const float *xp, float *y,
                       ptrdiff_t cols, ptrdiff_t r0, ptrdiff_t r1, int accumulate);

// 1 when the vectorised (AVX2) path runs (sidetune_isa() allows it), 0 for the portable scalar loop.
int sidetune_nf4_gemv_is_vectorized(void);
#endif
