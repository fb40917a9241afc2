// The engine's row kernels (rowkernels.h): one copy per instruction set, dispatched on sidetune_isa().
#include "rowkernels.h"
#include "isa.h"
// Vector helpers are always inlined: the psABI note about 512-bit arguments does not apply.
#pragma clang diagnostic ignored "-Wpsabi"
#include <math.h>

typedef float st_f16 __attribute__((ext_vector_type(16)));
typedef int st_i16 __attribute__((ext_vector_type(16)));
typedef float st_f8 __attribute__((ext_vector_type(8)));
typedef float st_f4 __attribute__((ext_vector_type(4)));
typedef float st_f2 __attribute__((ext_vector_type(2)));
typedef float st_f16u __attribute__((ext_vector_type(16), aligned(4)));

// The Swift versions of these kernels did not contract a b + c: neither do these, but where they
// fused explicitly (ST_FMA).
#pragma clang fp contract(off)

#if defined(__aarch64__)
#define ST_FMA(a, b, c) __builtin_elementwise_fma(a, b, c)
#else
#define ST_FMA(a, b, c) ((c) + (a) * (b))
#endif
#define ST_FN(name) name##_generic
#include "rowkernels_body.h"
#undef ST_FN
#undef ST_FMA

#if ST_X86
#define ST_FMA(a, b, c) __builtin_elementwise_fma(a, b, c)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define ST_FN(name) name##_avx2
#include "rowkernels_body.h"
#undef ST_FN
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), apply_to = function)
#define ST_FN(name) name##_avx512
#include "rowkernels_body.h"
#undef ST_FN
#pragma clang attribute pop
#undef ST_FMA
#endif

// Dispatch: the level in use picks the copy. (sidetune_isa() is a cached load.)
#if ST_X86
#define ST_DISPATCH(call)                                              \
    do {                                                               \
        const int isa_ = sidetune_isa();                               \
        if (isa_ >= SIDETUNE_ISA_AVX512) { ST_CALL(call, _avx512); }   \
        else if (isa_ >= SIDETUNE_ISA_AVX2) { ST_CALL(call, _avx2); }  \
        else { ST_CALL(call, _generic); }                              \
    } while (0)
#else
#define ST_DISPATCH(call) do { ST_CALL(call, _generic); } while (0)
#endif

#define ST_CALL(call, suffix) return call(suffix)

#define DOT(s) dot##s(n, x, y)
float st_dot(long n, const float *x, const float *y) { ST_DISPATCH(DOT); }
#define AXPY(s) axpy##s(n, alpha, x, y)
void st_axpy(long n, float alpha, const float *x, float *y) { ST_DISPATCH(AXPY); }
#define SUM(s) sum##s(p, n)
float st_sum(const float *p, long n) { ST_DISPATCH(SUM); }
#define SOFTMAX(s) softmax_row##s(x, y, n)
float st_softmax_row(const float *x, float *y, long n) { ST_DISPATCH(SOFTMAX); }
#define LNROW(s) layer_norm_row##s(x, o, d, w, b, eps, mean, rstd)
void st_layer_norm_row(const float *x, float *o, long d, const float *w, const float *b, float eps, float *mean, float *rstd) {
    ST_DISPATCH(LNROW);
}
#define LNBACK(s) layer_norm_backward_rows##s(r0, r1, d, x, g, stats, w, gw, gb, gx)
void st_layer_norm_backward_rows(long r0, long r1, long d, const float *x, const float *g, const float *stats, const float *w,
                                 float *gw, float *gb, float *gx) {
    ST_DISPATCH(LNBACK);
}
#define UFWD(s) unary_forward##s(kind, n, x, y)
void st_unary_forward(int kind, long n, const float *x, float *y) { ST_DISPATCH(UFWD); }
#define UBWD(s) unary_backward##s(kind, n, x, y, g, dx)
void st_unary_backward(int kind, long n, const float *x, const float *y, const float *g, float *dx) { ST_DISPATCH(UBWD); }
#define BIASACT(s) bias_activation_row##s(kind, row, bias, n)
void st_bias_activation_row(int kind, float *row, const float *bias, long n) { ST_DISPATCH(BIASACT); }
#define SCALEDRES(s) scaled_residual_row##s(c, bias, scale, residual, d)
void st_scaled_residual_row(float *c, const float *bias, const float *scale, const float *residual, long d) {
    ST_DISPATCH(SCALEDRES);
}
#define RESLN(s) residual_layer_norm_row##s(c, bias, residual, d, w, b, eps, out)
void st_residual_layer_norm_row(float *c, const float *bias, const float *residual, long d, const float *w, const float *b,
                                float eps, float *out) {
    ST_DISPATCH(RESLN);
}
#define SCALEMASK(s) scale_mask_row##s(row, n, scale, shift, keep, limit)
void st_scale_mask_row(float *row, long n, float scale, float shift, const float *keep, long limit) { ST_DISPATCH(SCALEMASK); }
#define SMGRAD(s) softmax_grad_row##s(p, dp, n, delta, scale)
void st_softmax_grad_row(const float *p, float *dp, long n, float delta, float scale) { ST_DISPATCH(SMGRAD); }
#define EXPMASK(s) exp_row_masked##s(x, n)
void st_exp_row_masked(float *x, long n) { ST_DISPATCH(EXPMASK); }
#define SMALLF(s) attention_small_forward##s(tq, tk, tkp, d, dv, q, kT, vT, keyMask, causal, s_, out, lse, row)
void st_attention_small_forward(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT, const float *vT,
                                const float *keyMask, bool causal, float s_, float *out, float *lse, float *row) {
    ST_DISPATCH(SMALLF);
}
#define SMALLB(s) attention_small_backward##s(tq, tk, tkp, d, dv, q, kT, vT, keyMask, causal, s_, g, o, lse, gq, dkT, dvT, p, ds)
void st_attention_small_backward(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT, const float *vT,
                                 const float *keyMask, bool causal, float s_, const float *g, const float *o, const float *lse,
                                 float *gq, float *dkT, float *dvT, float *p, float *ds) {
    ST_DISPATCH(SMALLB);
}

long st_attention_packed_forward_scratch(long hd, long n) {
    const long hdp = (hd + 3) / 4 * 4;
    // Kept k and v rows [n, hdp] each, the block's scores [n] x 16 lanes, q^T [hd] x 16.
    return 2 * n * hdp + 16 * n + 16 * hd;
}
#define PACKF(s) attention_packed_forward##s(hd, t, n, keys, base, ld, dm, col, s_, o, ldo, lse, scratch)
void st_attention_packed_forward(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s_,
                                 float *o, long ldo, float *lse, float *scratch) {
    ST_DISPATCH(PACKF);
}
long st_attention_packed_backward_scratch(long hd, long n) {
    const long hdp = (hd + 3) / 4 * 4;
    return 2 * n * hdp + 2 * n * hd + 2 * n * ST_PACKED_GROUP + 2 * hd * ST_PACKED_GROUP;
}
#define PACKB(s) attention_packed_backward##s(hd, t, n, keys, base, ld, dm, col, s_, go, oo, lse, gq, scratch)
void st_attention_packed_backward(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s_,
                                  const float *go, const float *oo, const float *lse, float *gq, float *scratch) {
    ST_DISPATCH(PACKB);
}

// MARK: the peak loop: 12 (24 with AVX-512) independent multiply-add chains, never leaving registers.

#define ST_CHAINS(V, N, FMA)                                                          \
    V m = 0.999999f, a = 1e-7f, x[N];                                                 \
    for (int c = 0; c < N; c++) x[c] = (V)(float)c;                                   \
    for (long it = 0; it < iterations; it++) {                                        \
        _Pragma("clang loop unroll(full)") for (int c = 0; c < N; c++) x[c] = FMA;    \
    }                                                                                 \
    V s = 0;                                                                          \
    for (int c = 0; c < N; c++) s += x[c];                                            \
    float r = 0;                                                                      \
    for (int l = 0; l < (int)(sizeof(V) / 4); l++) r += s[l];                         \
    return r;

static float peak_generic(long iterations) { ST_CHAINS(st_f4, 12, a + x[c] * m) }
#if ST_X86
ST_TARGET_AVX2 static float peak_avx2(long iterations) { ST_CHAINS(st_f8, 12, __builtin_elementwise_fma(x[c], m, a)) }
ST_TARGET_AVX512 static float peak_avx512(long iterations) { ST_CHAINS(st_f16, 24, __builtin_elementwise_fma(x[c], m, a)) }
#endif

float st_peak_loop(long iterations) {
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) return peak_avx512(iterations);
    if (isa >= SIDETUNE_ISA_AVX2) return peak_avx2(iterations);
#endif
    return peak_generic(iterations);
}

long st_peak_flops_per_iteration(void) {
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) return 24 * 16 * 2;
    if (isa >= SIDETUNE_ISA_AVX2) return 12 * 8 * 2;
#endif
    return 12 * 4 * 2;
}
