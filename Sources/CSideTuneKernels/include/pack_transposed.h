#ifndef SIDETUNE_PACK_TRANSPOSED_H
#define SIDETUNE_PACK_TRANSPOSED_H
// Packs a GEMM panel whose source runs along k: dst[p * nr + q] = src[q * lds + p] for p < kc and
// q < cols, zero for cols <= q < nr. That is a B panel of a transposed operand (a linear layer's
// weight [out, in] read as op(B) = W^T) and an A panel of an untransposed one (nr = MR rows).
// Scalar gathers for these took about 8% of a frozen encoder step; with AVX-512 the panel is built
// from 16x16 register transposes instead, with a plain loop for k's tail and elsewhere.
void sidetune_pack_transposed_panel(const float *src, long lds, long kc, long cols, long nr, float *dst);
#endif
