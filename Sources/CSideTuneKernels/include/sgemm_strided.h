#ifndef SIDETUNE_SGEMM_STRIDED_H
#define SIDETUNE_SGEMM_STRIDED_H
#include <stdbool.h>
// GEMM micro-kernels that read their operands in place (scripts/gen_strided_kernels.py):
// C[MR, NR] (+)= A[MR, kc] B[kc, NR], A's element (i, p) at a[i * ars + p * acs], B's row p at
// b + p * ldb (NR contiguous floats), C's rows ldc apart. For thin products, where packing an
// operand that is used once or twice would cost as much as the arithmetic.
bool sidetune_sgemm_strided_avx512_available(void);
bool sidetune_sgemm_strided_avx2_available(void);
void sidetune_sgemm_strided_12x32_avx512(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                         long ldc, bool accumulate);
void sidetune_sgemm_strided_6x16_avx2(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                      long ldc, bool accumulate);
void sidetune_sgemm_strided_8x32_avx512(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                        long ldc, bool accumulate);
void sidetune_sgemm_strided_8x48_avx512(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                        long ldc, bool accumulate);
void sidetune_sgemm_strided_24x16_avx512(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                         long ldc, bool accumulate);
void sidetune_sgemm_strided_12x8_avx2(long kc, const float *a, long ars, long acs, const float *b, long ldb, float *c,
                                      long ldc, bool accumulate);
#endif
