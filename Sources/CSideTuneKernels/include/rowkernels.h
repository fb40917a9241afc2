#ifndef SIDETUNE_ROWKERNELS_H
#define SIDETUNE_ROWKERNELS_H
#include <stdbool.h>
#include <stdint.h>

// The engine's vector kernels over rows and chunks (the Swift ops drive the threads and call these
// per row or chunk). Each is compiled for every instruction set (rowkernels_body.h: portable,
// AVX2 + FMA, AVX-512) and dispatched on sidetune_isa(). Where the Swift versions multiplied and
// added with a fused multiply-add these do too, so results match them; with no FMA (the x86-64
// baseline) a multiply then an add.

/// sum_i x[i] y[i]: two 16-lane accumulators, then the lanes as a tree, then the tail in order.
float st_dot(long n, const float *x, const float *y);
/// y[i] += alpha x[i].
void st_axpy(long n, float alpha, const float *x, float *y);
/// sum_i p[i].
float st_sum(const float *p, long n);

/// Numerically stable softmax of one row (x and y may be the same); a row of all -infinity gives
/// zeros. Returns the row's log-sum-exp (-infinity for an all -infinity row).
float st_softmax_row(const float *x, float *y, long n);
/// o = (x - mean) rstd w + b over one row of d; writes mean and rstd.
void st_layer_norm_row(const float *x, float *o, long d, const float *w, const float *b, float eps, float *mean, float *rstd);
/// LayerNorm's backward over rows r0 ..< r1 (x, g rows of d; stats [mean, rstd] per row; w the
/// weight or ones): adds the rows' weight and bias gradient partials into gw and gb (when not
/// null) and writes dx rows into gx (when not null).
void st_layer_norm_backward_rows(long r0, long r1, long d, const float *x, const float *g, const float *stats, const float *w,
                                 float *gw, float *gb, float *gx);

/// Elementwise functions with their derivatives in terms of x and y = f(x).
enum st_unary {
    ST_UNARY_EXP = 0, ST_UNARY_SQRT, ST_UNARY_TANH, ST_UNARY_SIGMOID, ST_UNARY_RELU, ST_UNARY_SQUARE, ST_UNARY_SILU,
    ST_UNARY_GELU, ST_UNARY_GELU_TANH, ST_UNARY_IDENTITY,
};
/// y[i] = f(x[i]).
void st_unary_forward(int kind, long n, const float *x, float *y);
/// dx[i] = g[i] f'(x[i]) (given y = f(x)).
void st_unary_backward(int kind, long n, const float *x, const float *y, const float *g, float *dx);
/// row[j] = f(row[j] + bias[j]) in place.
void st_bias_activation_row(int kind, float *row, const float *bias, long n);
/// c[j] = residual[j] + (c[j] + bias[j]) scale[j] over one row of d (a pre-LN block's residual
/// branch with LayerScale).
void st_scaled_residual_row(float *c, const float *bias, const float *scale, const float *residual, long d);
/// out = LayerNorm(c + bias + residual) over one row of d (the sum is left in c).
void st_residual_layer_norm_row(float *c, const float *bias, const float *residual, long d, const float *w, const float *b,
                                float eps, float *out);

/// row[j] = row[j] scale - shift for keys j < limit whose keep[j] is not 0 (keep may be null),
/// -infinity for the others: a score row for softmax (shift 0) or for exp (shift: the row's lse).
void st_scale_mask_row(float *row, long n, float scale, float shift, const float *keep, long limit);
/// dp[j] = p[j] (dp[j] - delta) scale: softmax's backward on one row, in place.
void st_softmax_grad_row(const float *p, float *dp, long n, float delta, float scale);
/// x[j] = exp(x[j]) in place, exactly 0 where x[j] is -infinity.
void st_exp_row_masked(float *x, long n);

/// Attention for one (batch, head) of thin heads (`Tensor.attentionSmallHeads`). kT, vT: the
/// head's keys and values transposed, [d][tkp] and [dv][tkp] (tkp: tk rounded up to 16, zeros
/// past tk); keyMask: tkp additive values (0 keeps, -inf drops); q rows of d at q + i d, outputs
/// rows of dv. causal: query i sees keys < i + (tk - tq) + 1. row: tkp floats of scratch.
void st_attention_small_forward(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT, const float *vT,
                                const float *keyMask, bool causal, float s, float *out, float *lse, float *row);
/// Its backward: dQ rows into gq, and dK^T, dV^T accumulated into dkT [d][tkp], dvT [dv][tkp].
/// g and o: dO and O rows of dv; p and ds: tkp floats of scratch each.
void st_attention_small_backward(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT, const float *vT,
                                 const float *keyMask, bool causal, float s, const float *g, const float *o, const float *lse,
                                 float *gq, float *dkT, float *dvT, float *p, float *ds);

/// Packed attention for one (entry, head) with heads of any width up to 32 (the narrow C kernels
/// take 4, 8 and 16): the same contract as attention_narrow.h. Scratch: the _scratch counts.
long st_attention_packed_forward_scratch(long hd, long n);
void st_attention_packed_forward(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s,
                                 float *o, long ldo, float *lse, float *scratch);
long st_attention_packed_backward_scratch(long hd, long n);
void st_attention_packed_backward(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s,
                                  const float *go, const float *oo, const float *lse, float *gq, float *scratch);

/// The in-register multiply-add loop that measures the machine's peak (independent accumulator
/// chains on the widest vectors of the level in use): returns a value so the loop is not removed.
/// Multiply-adds per call: iterations x st_peak_flops_per_iteration() / 2.
float st_peak_loop(long iterations);
long st_peak_flops_per_iteration(void);
#endif
