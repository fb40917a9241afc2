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
#endif
