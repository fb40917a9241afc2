#ifndef SIDETUNE_BF16_WIDEN_H
#define SIDETUNE_BF16_WIDEN_H
#include <stdint.h>

// Widens a rows x cols block of bf16 values (src, row stride lds) to f32 at dst (row stride ldd),
// zero-filling columns cols..<padCols and rows rows..<padRows. Exact: a bf16 value is the top
// half of an f32. The thin GEMM widens bf16 edge panels this way (full tiles widen in registers;
// A's panels are copied too when both operands are bf16), and other GEMMs their whole bf16 operand.
void sidetune_bf16_widen_block(const uint16_t *src, long lds, long rows, long cols, float *dst, long ldd,
                               long padRows, long padCols);
#endif
