#ifndef SIDETUNE_BF16_DOT_H
#define SIDETUNE_BF16_DOT_H
#include <stdbool.h>
#include <stdint.h>

// bf16 products with f32 accumulation (mixed precision, like autocast on GPUs): each operand is
// rounded to bf16 (to nearest even) and packed as pairs of consecutive k, one uint32 per pair,
// low half the even k. With AVX512_BF16 one vdpbf16ps does 32 multiply-adds, twice the f32 FMA rate.

// Whether the build has AVX512_BF16 (the kernel then uses vdpbf16ps; otherwise a plain loop).
bool sidetune_bf16dot_native(void);

// out[r * ldo + p] = (src[r][2p], src[r][2p+1]) for r < rows, p < (cols + 1) / 2: pairs along a
// row's contiguous values (an odd last pair gets a zero). src is f32 (srcBF16 false) or bf16.
void sidetune_bf16_pairs_along_rows(const void *src, bool srcBF16, long ld, long rows, long cols, uint32_t *out, long ldo);

// out[p * ldo + c] = (src[2p][c], src[2p+1][c]) for p in p0..<p1, c < cols: pairs of consecutive
// rows (a missing last row reads as zero; `rows` bounds them).
void sidetune_bf16_pairs_across_rows(const void *src, bool srcBF16, long ld, long rows, long cols, long p0, long p1,
                                     uint32_t *out, long ldo);

// out[p * ldo + r] = (src[r][2p], src[r][2p+1]): pairs along rows, stored transposed (a weight
// [n][k] read as B[k][n]). f32 source.
void sidetune_bf16_pairs_along_rows_transposed(const float *src, long ld, long rows, long cols, uint32_t *out, long ldo);

// C[i][j] (+)= sum_p dot(A(i, p), B(p, j)) for i < m, j < n, p < pairs, where A(i, p) is the pair at
// a[i * sam + p * sap] and B(p, j) the pair at b[p * ldb + j] (j contiguous).
void sidetune_bf16dot_gemm(long m, long n, long pairs, const uint32_t *a, long sam, long sap, const uint32_t *b, long ldb,
                           float *c, long ldc, bool accumulate);

// The same product as a plain loop: the reference the kernel is tested against, and the kernel
// itself where the build has no AVX512_BF16.
void sidetune_bf16dot_gemm_plain(long m, long n, long pairs, const uint32_t *a, long sam, long sap, const uint32_t *b,
                                 long ldb, float *c, long ldc, bool accumulate);
// A frozen weight W [n][k] laid out for sidetune_bf16dot_gemm_panels: B(p, j) = (W[j][2p], W[j][2p+1])
// in panels of SIDETUNE_BF16_PANEL columns. The panel starting at column j0 (w = min(48, n - j0)
// columns) is [pairs][w] at offset j0 * pairs, so the kernel streams it contiguously (a [pairs][n]
// layout read 48 columns at a time strides by 4n bytes, which maps the panel onto a few L1 sets).
#define SIDETUNE_BF16_PANEL 48

// Where B(p, j) is in the panel layout of an n-column weight with `pairs` pairs.
static inline long sidetune_bf16_panel_offset(long n, long pairs, long p, long j) {
    const long j0 = j - j % SIDETUNE_BF16_PANEL, w = n - j0 < SIDETUNE_BF16_PANEL ? n - j0 : SIDETUNE_BF16_PANEL;
    return j0 * pairs + p * w + (j - j0);
}

// Packs W [n][k] (row stride ld), rounded to bf16, into the panel layout: the panels whose first
// columns are in [j0, j1) (multiples of the panel width, so threads can split the work).
void sidetune_bf16_pack_panels(const float *w, long ld, long n, long k, long j0, long j1, uint32_t *out);

// c[i][j] = sum_k bf16(x[i][k]) W(j, k) for i < m, j < n, W in the panel layout: x's rows are
// rounded and packed 8 at a time into `scratch` (8 * pairs), then multiplied by every panel while
// they are in L1, so no [m, pairs] copy of x is made.
void sidetune_bf16dot_gemm_panels(long m, long n, long k, const float *x, long ldx, const uint32_t *w, float *c,
                                  long ldc, uint32_t *scratch);

// The same product as a plain loop (the reference, and the kernel without AVX512_BF16).
void sidetune_bf16dot_gemm_panels_plain(long m, long n, long k, const float *x, long ldx, const uint32_t *w, float *c,
                                        long ldc, uint32_t *scratch);
#endif
