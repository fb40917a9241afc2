#ifndef SIDETUNE_AMX_BF16_H
#define SIDETUNE_AMX_BF16_H
#include <stdbool.h>
#include <stdint.h>

/// Linear layers whose input x is exactly bf16 (the feature cache's taps), on AMX tiles.
///
/// The other operand (the weight in forward, the output gradient in backward) is f32. It is split
/// into two bf16 terms, hi = bf16(v) and lo = bf16(v - hi), and both are multiplied: x is exact in
/// bf16, so x (hi + lo) differs from the f32 product by about 2^-17 relative per term, the size of
/// f32 rounding, while TDPBF16PS does 16 x 16 x 32 multiply-adds per instruction.
///
/// Layouts (uint16 = bf16 bits, "tile" = 16 rows of 64 bytes):
/// - x: rows of k bf16 at x + i * ldx; k a multiple of 32.
/// - Forward weight pack (sidetune_amx_pack_weight): W [n][k] f32 -> for each 16-column block jb and
///   32-deep block kb, a hi tile then a lo tile (512 uint16 each) in the pair-interleaved (VNNI)
///   order TDPBF16PS reads: tile[r][c][e] = W[16 jb + c][32 kb + 2 r + e]. ceil(n/16) k/32 1024 uint16.
/// - Gradient pack (sidetune_amx_pack_grad): G [m][n] f32 -> G^T tiles, for each 16-row block nb of
///   n and 32-deep block mb of m, hi then lo: tile[r][c] = G[32 mb + c][16 nb + r]. ceil(n/16) ceil(m/32) 1024.
/// - Row-pair pack of x (sidetune_amx_pack_row_pairs): xv[p][col][e] = x[2 p + e][col] for
///   p < ceil(m/32) 16, zero past row m. ceil(m/32) 32 k uint16.
/// Rows and columns past m and n are zero in the packs, so partial blocks need no special case there.

/// Compiled with AMX (and AVX512-BF16) and granted the tile state by the kernel (asked once, on
/// first call). When it is false the functions below must not be called: without AMX they abort.
bool sidetune_amx_bf16_available(void);

void sidetune_amx_pack_weight(const float *w, long n, long k, uint16_t *packed);
/// Packs the 32-row blocks mb0 ..< mb1 (of ceil(m/32)) for every column block.
void sidetune_amx_pack_grad(const float *g, long ldg, long m, long n, long mb0, long mb1, uint16_t *packed);
/// Packs the row pairs p0 ..< p1 (of ceil(m/32) 16).
void sidetune_amx_pack_row_pairs(const uint16_t *x, long ldx, long m, long k, long p0, long p1, uint16_t *xv);

/// y[i][j] += sum_c x[i][c] W[j][c] for rows i0 ..< i1 (i0 a multiple of 16), every j < n.
void sidetune_amx_linear_rows(const uint16_t *x, long ldx, long i0, long i1, long n, long k, const uint16_t *packedW,
                              float *y, long ldy);
/// dw[j][c] += sum_i G[i][j] x[i][c] for j in the 16-row block nb and c in 16-column blocks
/// cb0 ..< cb1 (dw is [n][k], row stride k).
void sidetune_amx_weight_grad_block(long m, long n, long k, const uint16_t *packedG, const uint16_t *xv, long nb,
                                    long cb0, long cb1, float *dw);
#endif
