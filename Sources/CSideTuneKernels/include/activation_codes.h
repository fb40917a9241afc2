#ifndef SIDETUNE_ACTIVATION_CODES_H
#define SIDETUNE_ACTIVATION_CODES_H
#include "rowkernels.h"

// Few-bit activation codes (Few-Bit Backward, Novikov et al. 2022): the backward of y = f(x) needs only
// f'(x), so instead of x the forward keeps a b-bit code per element, the index of the interval of x
// among 2^b - 1 sorted boundaries, and the backward multiplies by a per-interval level. Boundaries and
// levels minimise the integral of (f' - q)^2 over [-100, 100] (uniform weight, as the paper's tables);
// scripts/fewbit_tables.py fits them and reports their errors (scripts/fewbit_tables.json).
//
// Kinds are enum st_unary: ST_UNARY_RELU (1 bit: x > 0, exact), ST_UNARY_GELU, ST_UNARY_GELU_TANH and
// ST_UNARY_SILU (4 or 8 bits). The code of x is the number of boundaries below x: x exactly on a
// boundary takes the lower interval, -inf code 0, +inf the top code, NaN code 0.
//
// Packing: element i's code sits at bit (i bits) % 8 of byte (i bits) / 8, lowest bits first (4 bits:
// even elements in the low nibble). A call writes whole bytes, unused high bits zero. Work split in
// chunks must start each chunk at a multiple of 8 elements (so at a byte), the chunk at element s
// passing x + s, y + s and codes + s bits / 8; chunks then never share a byte.

/// The code width used for kind when asked for requested_bits: ReLU 1 whatever is asked; GELU,
/// GELU_TANH and SILU 4 when requested_bits <= 4, else 8; 0 for kinds without tables.
int st_code_bits(int kind, int requested_bits);
/// Bytes holding n codes of `bits` bits: (n bits + 7) / 8.
long st_code_bytes(int bits, long n);
/// y[i] = f(x[i]) exactly as st_unary_forward computes it, and the codes of x into codes
/// (st_code_bytes(bits, n) bytes). x and y may be the same array (in place); no other overlap.
/// bits must be st_code_bits(kind, bits) and not 0; otherwise only y is written.
void st_unary_forward_coded(int kind, int bits, long n, const float *x, float *y, unsigned char *codes);
/// dx[i] = g[i] level[code_i] (the approximate f'(x[i])). g and dx may be the same array. An invalid
/// (kind, bits) pair writes NaN.
void st_unary_backward_coded(int kind, int bits, long n, const unsigned char *codes, const float *g, float *dx);
/// The table of (kind, bits): 2^bits - 1 sorted boundaries and 2^bits levels. Returns 0 (and leaves
/// the pointers) when there is none, else 1.
int st_code_table(int kind, int bits, const float **boundaries, const float **levels);
#endif
