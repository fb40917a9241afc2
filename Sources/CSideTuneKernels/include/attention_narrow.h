#ifndef SIDETUNE_ATTENTION_NARROW_H
#define SIDETUNE_ATTENTION_NARROW_H
#include <stdbool.h>

/// Softmax attention for one (sequence, head) whose heads are 4, 8 or 16 dims wide, the fast path
/// of `Tensor.attentionPacked` (its Swift kernels remain for other sizes and are the reference).
/// Written in C: lane masks and shuffles compile to single instructions here, where Swift's SIMD
/// types gave lane-by-lane extracts. Callers check sidetune_attention_narrow_supported(hd) and
/// pass n >= 1 kept keys; the kernels do nothing otherwise.
///
/// Layout (the packed q/k/v rows): query i's q at base[i * ld + col ...], key j's k at
/// base[j * ld + dm + col ...] and v at + 2 dm. keys[0..<n] are the kept (non-padding) key
/// indices; queries are rows 0..<t; s scales the scores.
///
/// Forward: writes out rows at o (stride ldo) and lse[i] = log sum_j exp(s q_i . k_j), i < t.
/// Backward: dO and O rows at go and oo (stride ldo), lse from forward. Writes dQ at gq[i * ld ...]
/// for every query, and dK, dV at gq[j * ld + dm ...], gq[j * ld + 2 dm ...] for kept keys only.
/// scratch holds the matching _scratch(...) count of floats.
bool sidetune_attention_narrow_supported(long hd);
long sidetune_attention_forward_narrow_scratch(long hd, long n);
void sidetune_attention_forward_narrow(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col,
                                       float s, float *o, long ldo, float *lse, float *scratch);
long sidetune_attention_backward_narrow_scratch(long hd, long t, long n);
void sidetune_attention_backward_narrow(long hd, long t, long n, const int *keys, const float *base, long ld, long dm,
                                        long col, float s, const float *go, const float *oo, long ldo, const float *lse,
                                        float *gq, float *scratch);
#endif
