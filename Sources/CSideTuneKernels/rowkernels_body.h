// The row kernels of rowkernels.h, compiled once per instruction set by rowkernels.c: ST_FN names
// each copy's functions, ST_FMA(a, b, c) is c + a b fused where the target has FMA. Not a header
// to include elsewhere.

#include "vecmath_body.h"

static inline __attribute__((always_inline)) st_f16 ST_FN(ld)(const float *p) { return *(const st_f16u *)p; }
static inline __attribute__((always_inline)) void ST_FN(st)(float *p, st_f16 v) { *(st_f16u *)p = v; }
static inline __attribute__((always_inline)) st_f16 ST_FN(fma)(st_f16 a, st_f16 b, st_f16 c) { return ST_FMA(a, b, c); }

/// The lanes' sum as a tree of halves.
static inline __attribute__((always_inline)) float ST_FN(hsum)(st_f16 v) {
    st_f8 a = v.lo + v.hi;
    st_f4 b = a.lo + a.hi;
    st_f2 c = b.lo + b.hi;
    return c.x + c.y;
}

static inline __attribute__((always_inline)) float ST_FN(hmax)(st_f16 v) {
    st_f8 a = __builtin_elementwise_max(v.lo, v.hi);
    st_f4 b = __builtin_elementwise_max(a.lo, a.hi);
    st_f2 c = __builtin_elementwise_max(b.lo, b.hi);
    return c.x > c.y ? c.x : c.y;
}

/// The first n < 16 values of p in a vector, zeros after.
static inline __attribute__((always_inline)) st_f16 ST_FN(ld_part)(const float *p, long n) {
    float t[16] = {0};
    for (long j = 0; j < n; j++) t[j] = p[j];
    return ST_FN(ld)(t);
}

static inline __attribute__((always_inline)) void ST_FN(st_part)(float *p, st_f16 v, long n) {
    float t[16];
    ST_FN(st)(t, v);
    for (long j = 0; j < n; j++) p[j] = t[j];
}

static float ST_FN(dot)(long n, const float *x, const float *y) {
    st_f16 s0 = 0, s1 = 0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = ST_FN(fma)(ST_FN(ld)(x + i), ST_FN(ld)(y + i), s0);
        s1 = ST_FN(fma)(ST_FN(ld)(x + i + 16), ST_FN(ld)(y + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = ST_FN(fma)(ST_FN(ld)(x + i), ST_FN(ld)(y + i), s0);
    float s = ST_FN(hsum)(s0 + s1);
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static void ST_FN(axpy)(long n, float alpha, const float *x, float *y) {
    const st_f16 a = alpha;
    long i = 0;
    for (; i + 16 <= n; i += 16) ST_FN(st)(y + i, ST_FN(fma)(a, ST_FN(ld)(x + i), ST_FN(ld)(y + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

static float ST_FN(sum)(const float *p, long n) {
    st_f16 s0 = 0, s1 = 0;
    long i = 0;
    for (; i + 32 <= n; i += 32) { s0 += ST_FN(ld)(p + i); s1 += ST_FN(ld)(p + i + 16); }
    for (; i + 16 <= n; i += 16) s0 += ST_FN(ld)(p + i);
    float s = ST_FN(hsum)(s0 + s1);
    for (; i < n; i++) s += p[i];
    return s;
}

static float ST_FN(softmax_row)(const float *x, float *y, long n) {
    float m = -INFINITY;
    long j0 = 0;
    if (n >= 16) {
        st_f16 vm = -INFINITY;
        for (; j0 + 16 <= n; j0 += 16) vm = __builtin_elementwise_max(vm, ST_FN(ld)(x + j0));
        m = ST_FN(hmax)(vm);
    }
    for (; j0 < n; j0++) m = m > x[j0] ? m : x[j0];
    if (m == -INFINITY) {
        for (long j = 0; j < n; j++) y[j] = 0;
        return -INFINITY;
    }
    st_f16 vs = 0;
    long j = 0;
    for (; j + 16 <= n; j += 16) {
        const st_f16 e = ST_FN(st_exp16)(ST_FN(ld)(x + j) - m);
        ST_FN(st)(y + j, e);
        vs += e;
    }
    float s = ST_FN(hsum)(vs);
    for (; j < n; j++) { const float e = expf(x[j] - m); y[j] = e; s += e; }
    const float inv = 1 / s;
    j = 0;
    for (; j + 16 <= n; j += 16) ST_FN(st)(y + j, ST_FN(ld)(y + j) * inv);
    for (; j < n; j++) y[j] *= inv;
    return m + logf(s);
}

static void ST_FN(layer_norm_row)(const float *x, float *o, long d, const float *w, const float *b, float eps, float *meanOut,
                                  float *rstdOut) {
    const float mean = ST_FN(sum)(x, d) / (float)d;
    st_f16 acc = 0;
    long j = 0;
    for (; j + 16 <= d; j += 16) { const st_f16 c = ST_FN(ld)(x + j) - mean; acc = ST_FN(fma)(c, c, acc); }
    float v = ST_FN(hsum)(acc);
    for (; j < d; j++) { const float c = x[j] - mean; v += c * c; }
    const float rstd = 1 / sqrtf(v / (float)d + eps);
    j = 0;
    for (; j + 16 <= d; j += 16) ST_FN(st)(o + j, ((ST_FN(ld)(x + j) - mean) * rstd) * ST_FN(ld)(w + j) + ST_FN(ld)(b + j));
    for (; j < d; j++) o[j] = (x[j] - mean) * rstd * w[j] + b[j];
    *meanOut = mean;
    *rstdOut = rstd;
}

static void ST_FN(layer_norm_backward_rows)(long r0, long r1, long d, const float *px, const float *pg, const float *ps,
                                            const float *pw, float *gwp, float *gbp, float *gx) {
    for (long row = r0; row < r1; row++) {
        const float *xr = px + row * d, *gr = pg + row * d;
        const float mean = ps[2 * row], rstd = ps[2 * row + 1];
        st_f16 sDn = 0, sDnX = 0;
        float tDn = 0, tDnX = 0;
        long j = 0;
        for (; j + 16 <= d; j += 16) {
            const st_f16 xhat = (ST_FN(ld)(xr + j) - mean) * rstd, gv = ST_FN(ld)(gr + j);
            const st_f16 dn = gv * ST_FN(ld)(pw + j);
            sDn += dn;
            sDnX = ST_FN(fma)(dn, xhat, sDnX);
            if (gwp) ST_FN(st)(gwp + j, ST_FN(fma)(gv, xhat, ST_FN(ld)(gwp + j)));
            if (gbp) ST_FN(st)(gbp + j, ST_FN(ld)(gbp + j) + gv);
        }
        for (; j < d; j++) {
            const float xhat = (xr[j] - mean) * rstd, dn = gr[j] * pw[j];
            tDn += dn;
            tDnX += dn * xhat;
            if (gwp) gwp[j] += gr[j] * xhat;
            if (gbp) gbp[j] += gr[j];
        }
        const float dnMean = (ST_FN(hsum)(sDn) + tDn) / (float)d, dnXhatMean = (ST_FN(hsum)(sDnX) + tDnX) / (float)d;
        if (!gx) continue;
        float *o = gx + row * d;
        j = 0;
        for (; j + 16 <= d; j += 16) {
            const st_f16 xhat = (ST_FN(ld)(xr + j) - mean) * rstd;
            const st_f16 dn = ST_FN(ld)(gr + j) * ST_FN(ld)(pw + j);
            ST_FN(st)(o + j, rstd * (dn - dnMean - xhat * dnXhatMean));
        }
        for (; j < d; j++) {
            const float xhat = (xr[j] - mean) * rstd;
            o[j] = rstd * (gr[j] * pw[j] - dnMean - xhat * dnXhatMean);
        }
    }
}

static inline __attribute__((always_inline)) st_f16 ST_FN(unary_value)(int kind, st_f16 x) {
    switch (kind) {
    case ST_UNARY_EXP: return ST_FN(st_exp16)(x);
    case ST_UNARY_SQRT: return __builtin_elementwise_sqrt(x);
    case ST_UNARY_TANH: return ST_FN(st_tanh16)(x);
    case ST_UNARY_SIGMOID: return ST_FN(st_sigmoid16)(x);
    case ST_UNARY_RELU: return ST_FN(st_relu16)(x);
    case ST_UNARY_SQUARE: return x * x;
    case ST_UNARY_SILU: return x * ST_FN(st_sigmoid16)(x);
    case ST_UNARY_GELU: return ST_FN(st_gelu16)(x);
    case ST_UNARY_GELU_TANH: return 0.5f * x * (1.0f + ST_FN(st_tanh16)(0.79788456f * (x + 0.044715f * x * x * x)));
    default: return x;
    }
}

static inline __attribute__((always_inline)) st_f16 ST_FN(unary_derivative)(int kind, st_f16 x, st_f16 y) {
    switch (kind) {
    case ST_UNARY_EXP: return y;
    case ST_UNARY_SQRT: return 0.5f / y;
    case ST_UNARY_TANH: return 1.0f - y * y;
    case ST_UNARY_SIGMOID: return y * (1.0f - y);
    case ST_UNARY_RELU: return x <= 0 ? (st_f16)0 : (st_f16)1;
    case ST_UNARY_SQUARE: return 2.0f * x;
    case ST_UNARY_SILU: { const st_f16 s = ST_FN(st_sigmoid16)(x); return s * (1.0f + x * (1.0f - s)); }
    case ST_UNARY_GELU: return ST_FN(st_gelu_derivative16)(x);
    case ST_UNARY_GELU_TANH: {
        const st_f16 x2 = x * x;
        const st_f16 t = ST_FN(st_tanh16)(0.79788456f * (x + 0.044715f * x2 * x));
        const st_f16 dInner = 0.79788456f * (1.0f + 3.0f * 0.044715f * x2);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dInner;
    }
    default: return 1.0f;
    }
}

// The kind is a constant inside each specialised loop, so the switch leaves the inner loop.
#define ST_UNARY_CASES(BODY) \
    switch (kind) { \
    case ST_UNARY_EXP: { const int K = ST_UNARY_EXP; BODY } break; \
    case ST_UNARY_SQRT: { const int K = ST_UNARY_SQRT; BODY } break; \
    case ST_UNARY_TANH: { const int K = ST_UNARY_TANH; BODY } break; \
    case ST_UNARY_SIGMOID: { const int K = ST_UNARY_SIGMOID; BODY } break; \
    case ST_UNARY_RELU: { const int K = ST_UNARY_RELU; BODY } break; \
    case ST_UNARY_SQUARE: { const int K = ST_UNARY_SQUARE; BODY } break; \
    case ST_UNARY_SILU: { const int K = ST_UNARY_SILU; BODY } break; \
    case ST_UNARY_GELU: { const int K = ST_UNARY_GELU; BODY } break; \
    case ST_UNARY_GELU_TANH: { const int K = ST_UNARY_GELU_TANH; BODY } break; \
    default: { const int K = ST_UNARY_IDENTITY; BODY } break; \
    }

static void ST_FN(unary_forward)(int kind, long n, const float *x, float *y) {
    ST_UNARY_CASES({
        long i = 0;
        for (; i + 16 <= n; i += 16) ST_FN(st)(y + i, ST_FN(unary_value)(K, ST_FN(ld)(x + i)));
        if (i < n) ST_FN(st_part)(y + i, ST_FN(unary_value)(K, ST_FN(ld_part)(x + i, n - i)), n - i);
    })
}

static void ST_FN(unary_backward)(int kind, long n, const float *x, const float *y, const float *g, float *dx) {
    ST_UNARY_CASES({
        long i = 0;
        for (; i + 16 <= n; i += 16)
            ST_FN(st)(dx + i, ST_FN(ld)(g + i) * ST_FN(unary_derivative)(K, ST_FN(ld)(x + i), ST_FN(ld)(y + i)));
        if (i < n) {
            const long r = n - i;
            ST_FN(st_part)(dx + i, ST_FN(ld_part)(g + i, r) * ST_FN(unary_derivative)(K, ST_FN(ld_part)(x + i, r),
                                                                                       ST_FN(ld_part)(y + i, r)), r);
        }
    })
}

static void ST_FN(bias_activation_row)(int kind, float *row, const float *bias, long n) {
    ST_UNARY_CASES({
        long j = 0;
        for (; j + 16 <= n; j += 16) ST_FN(st)(row + j, ST_FN(unary_value)(K, ST_FN(ld)(row + j) + ST_FN(ld)(bias + j)));
        if (j < n) {
            const long r = n - j;
            ST_FN(st_part)(row + j, ST_FN(unary_value)(K, ST_FN(ld_part)(row + j, r) + ST_FN(ld_part)(bias + j, r)), r);
        }
    })
}

static void ST_FN(residual_layer_norm_row)(float *c, const float *bias, const float *residual, long d, const float *w,
                                           const float *b, float eps, float *out) {
    long j = 0;
    for (; j + 16 <= d; j += 16) ST_FN(st)(c + j, ST_FN(ld)(c + j) + ST_FN(ld)(bias + j) + ST_FN(ld)(residual + j));
    for (; j < d; j++) c[j] = c[j] + bias[j] + residual[j];
    float mean, rstd;
    ST_FN(layer_norm_row)(c, out, d, w, b, eps, &mean, &rstd);
}

static void ST_FN(scaled_residual_row)(float *c, const float *bias, const float *scale, const float *residual, long d) {
    long j = 0;
    for (; j + 16 <= d; j += 16) {
        const st_f16 branch = ST_FN(ld)(c + j) + ST_FN(ld)(bias + j);
        ST_FN(st)(c + j, ST_FN(fma)(branch, ST_FN(ld)(scale + j), ST_FN(ld)(residual + j)));
    }
    for (; j < d; j++) c[j] = residual[j] + (c[j] + bias[j]) * scale[j];
}

/// row[j] = row[j] scale - shift for keys j < limit with keep[j] != 0 (keep may be null), -inf
/// for the others.
static void ST_FN(scale_mask_row)(float *row, long n, float scale, float shift, const float *keep, long limit) {
    const st_f16 iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    long j = 0;
    for (; j + 16 <= n; j += 16) {
        st_f16 v = ST_FN(ld)(row + j) * scale - shift;
        if (keep) v = ST_FN(ld)(keep + j) != 0 ? v : (st_f16)(-INFINITY);
        if (limit < n) v = iota + (float)j < (float)limit ? v : (st_f16)(-INFINITY);
        ST_FN(st)(row + j, v);
    }
    for (; j < n; j++) row[j] = (!keep || keep[j] != 0) && j < limit ? row[j] * scale - shift : -INFINITY;
}

/// dS = P (dP - delta) scale, in place over dP.
static void ST_FN(softmax_grad_row)(const float *p, float *dp, long n, float delta, float scale) {
    long j = 0;
    for (; j + 16 <= n; j += 16) ST_FN(st)(dp + j, ST_FN(ld)(p + j) * (ST_FN(ld)(dp + j) - delta) * scale);
    for (; j < n; j++) dp[j] = p[j] * (dp[j] - delta) * scale;
}

/// x[j] = exp(x[j]) in place, exactly 0 where x[j] is -infinity (the vector exp clamps to ~1e-38).
static void ST_FN(exp_row_masked)(float *x, long n) {
    long j = 0;
    for (; j + 16 <= n; j += 16) {
        const st_f16 v = ST_FN(ld)(x + j);
        ST_FN(st)(x + j, v == (st_f16)(-INFINITY) ? (st_f16)0 : ST_FN(st_exp16)(v));
    }
    for (; j < n; j++) x[j] = x[j] == -INFINITY ? 0 : expf(x[j]);
}

// MARK: attention for thin heads (one batch entry and head)

/// The 16 scores s q . k_j + mask for keys 16c ..< 16c + 16, -inf at and past `visible` when causal.
static inline __attribute__((always_inline)) st_f16 ST_FN(small_scores)(const float *qi, long d, const float *kT, long tkp,
                                                                       const float *keyMask, long c, bool causal, long visible,
                                                                       float s) {
    st_f16 acc = ST_FN(ld)(keyMask + 16 * c);
    for (long p = 0; p < d; p++) acc = ST_FN(fma)((st_f16)(qi[p] * s), ST_FN(ld)(kT + p * tkp + 16 * c), acc);
    if (causal) {
        const st_f16 iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        acc = iota >= (st_f16)(float)(visible - 16 * c) ? (st_f16)(-INFINITY) : acc;
    }
    return acc;
}

/// x[j] = exp(x[j] - shift) in place for n a multiple of 16, exactly 0 where x[j] is -infinity;
/// returns the sum.
static inline __attribute__((always_inline)) float ST_FN(exp_shifted_sum)(float *x, long n, float shift) {
    st_f16 acc = 0;
    for (long j = 0; j < n; j += 16) {
        const st_f16 v = ST_FN(ld)(x + j);
        const st_f16 e = v == (st_f16)(-INFINITY) ? (st_f16)0 : ST_FN(st_exp16)(v - shift);
        ST_FN(st)(x + j, e);
        acc += e;
    }
    return ST_FN(hsum)(acc);
}

static inline __attribute__((always_inline)) long ST_FN(visible_keys)(bool causal, long i, long tq, long tk) {
    if (!causal) return tk;
    const long v = i + (tk - tq) + 1;
    return v < 0 ? 0 : (v > tk ? tk : v);
}

static void ST_FN(attention_small_forward)(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT,
                                           const float *vT, const float *keyMask, bool causal, float s, float *out, float *lse,
                                           float *row) {
    for (long i = 0; i < tq; i++) {
        const long n = ST_FN(visible_keys)(causal, i, tq, tk), chunks = (n + 15) / 16, width = 16 * chunks;
        const float *qi = q + i * d;
        float *oi = out + i * dv;
        st_f16 vmax = -INFINITY;
        for (long c = 0; c < chunks; c++) {
            const st_f16 x = ST_FN(small_scores)(qi, d, kT, tkp, keyMask, c, causal, n, s);
            ST_FN(st)(row + 16 * c, x);
            vmax = __builtin_elementwise_max(vmax, x);
        }
        const float m = ST_FN(hmax)(vmax);
        if (m == -INFINITY) {
            for (long c = 0; c < dv; c++) oi[c] = 0;
            lse[i] = -INFINITY;
            continue;
        }
        const float sum = ST_FN(exp_shifted_sum)(row, width, m);
        lse[i] = m + logf(sum);
        for (long c = 0; c < dv; c++) oi[c] = ST_FN(dot)(width, row, vT + c * tkp) / sum;
    }
}

static void ST_FN(attention_small_backward)(long tq, long tk, long tkp, long d, long dv, const float *q, const float *kT,
                                            const float *vT, const float *keyMask, bool causal, float s, const float *g,
                                            const float *o, const float *lse, float *gq, float *dkT, float *dvT, float *p,
                                            float *ds) {
    for (long i = 0; i < tq; i++) {
        const long n = ST_FN(visible_keys)(causal, i, tq, tk), chunks = (n + 15) / 16, width = 16 * chunks;
        const float l = lse[i];
        const float *qi = q + i * d, *gi = g + i * dv;
        float *gqi = gq + i * d;
        if (n == 0 || l == -INFINITY) {
            for (long e = 0; e < d; e++) gqi[e] = 0;
            continue;
        }
        for (long c = 0; c < chunks; c++) ST_FN(st)(p + 16 * c, ST_FN(small_scores)(qi, d, kT, tkp, keyMask, c, causal, n, s));
        (void)ST_FN(exp_shifted_sum)(p, width, l);
        for (long c = 0; c < dv; c++) ST_FN(axpy)(width, gi[c], p, dvT + c * tkp);
        const st_f16 delta = ST_FN(dot)(dv, gi, o + i * dv);
        for (long c = 0; c < chunks; c++) {
            st_f16 dp = 0;
            for (long cd = 0; cd < dv; cd++) dp = ST_FN(fma)((st_f16)gi[cd], ST_FN(ld)(vT + cd * tkp + 16 * c), dp);
            ST_FN(st)(ds + 16 * c, ST_FN(ld)(p + 16 * c) * (dp - delta) * s);
        }
        for (long e = 0; e < d; e++) gqi[e] = ST_FN(dot)(width, ds, kT + e * tkp);
        for (long e = 0; e < d; e++) ST_FN(axpy)(width, qi[e], ds, dkT + e * tkp);
    }
}

// MARK: packed attention, heads of any width (16 queries in the lanes)

/// acc_c (c < 4) = sum_j w[wld j ..< wld j + 16] rows[j ld + c] for j < n.
static inline __attribute__((always_inline)) void ST_FN(weighted_rows4)(const float *w, long wld, const float *rows, long ld,
                                                                       long n, st_f16 acc[4]) {
    st_f16 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (long jj = 0; jj < n; jj++) {
        const st_f16 e = ST_FN(ld)(w + wld * jj);
        const float *r = rows + jj * ld;
        a0 = ST_FN(fma)(e, (st_f16)r[0], a0);
        a1 = ST_FN(fma)(e, (st_f16)r[1], a1);
        a2 = ST_FN(fma)(e, (st_f16)r[2], a2);
        a3 = ST_FN(fma)(e, (st_f16)r[3], a3);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

/// The kept keys' k and v rows copied into contiguous rows of hdp >= hd floats (zero past hd).
static inline void ST_FN(gather_keys)(long hd, long hdp, long n, const int *keys, const float *base, long ld, long dm, long col,
                                      float *kc, float *vc) {
    for (long jj = 0; jj < n; jj++) {
        const float *kr = base + (long)keys[jj] * ld + dm + col, *vr = kr + dm;
        for (long p = 0; p < hdp; p++) { kc[jj * hdp + p] = p < hd ? kr[p] : 0; vc[jj * hdp + p] = p < hd ? vr[p] : 0; }
    }
}

static void ST_FN(attention_packed_forward)(long hd, long t, long n, const int *keys, const float *base, long ld, long dm,
                                            long col, float s, float *o, long ldo, float *lse, float *scratch) {
    const long hdp = (hd + 3) / 4 * 4;
    float *kc = scratch, *vc = kc + n * hdp, *sc = vc + n * hdp, *qT = sc + 16 * n;
    ST_FN(gather_keys)(hd, hdp, n, keys, base, ld, dm, col, kc, vc);
    for (long i0 = 0; i0 < t; i0 += 16) {
        const long lanes = t - i0 < 16 ? t - i0 : 16;
        // q^T, pre-scaled; lanes past the end are 0 (their results are not stored).
        for (long p = 0; p < hd; p++) {
            for (long l = 0; l < 16; l++) qT[16 * p + l] = l < lanes ? base[(i0 + l) * ld + col + p] * s : 0;
        }
        st_f16 m = -INFINITY;
        for (long jj = 0; jj < n; jj++) {
            const float *kr = kc + jj * hdp;
            st_f16 x = 0;
            for (long p = 0; p < hd; p++) x = ST_FN(fma)(ST_FN(ld)(qT + 16 * p), (st_f16)kr[p], x);
            ST_FN(st)(sc + 16 * jj, x);
            m = __builtin_elementwise_max(m, x);
        }
        st_f16 sum = 0;
        for (long jj = 0; jj < n; jj++) {
            const st_f16 e = ST_FN(st_exp16)(ST_FN(ld)(sc + 16 * jj) - m);
            ST_FN(st)(sc + 16 * jj, e);
            sum += e;
        }
        const st_f16 inv = 1.0f / sum;
        for (long c0 = 0; c0 < hd; c0 += 4) {
            st_f16 acc[4];
            ST_FN(weighted_rows4)(sc, 16, vc + c0, hdp, n, acc);
            for (long c = 0; c < 4 && c0 + c < hd; c++) {
                float r[16];
                ST_FN(st)(r, acc[c] * inv);
                for (long l = 0; l < lanes; l++) o[(i0 + l) * ldo + c0 + c] = r[l];
            }
        }
        float mv[16], sv[16];
        ST_FN(st)(mv, m);
        ST_FN(st)(sv, sum);
        for (long l = 0; l < lanes; l++) lse[i0 + l] = mv[l] + logf(sv[l]);
    }
}

/// Queries per backward group: P and dS for a group are kept key-major, then dV = P^T dO and
/// dK = dS^T (s Q) are reduced over the group's queries.
#define ST_PACKED_GROUP 64

static void ST_FN(attention_packed_backward)(long hd, long t, long n, const int *keys, const float *base, long ld, long dm,
                                             long col, float s, const float *go, const float *oo, const float *lse, float *gq,
                                             float *scratch) {
    const long hdp = (hd + 3) / 4 * 4, group = ST_PACKED_GROUP;
    float *kc = scratch, *vc = kc + n * hdp, *dkc = vc + n * hdp, *dvc = dkc + n * hd;
    float *pT = dvc + n * hd, *dsT = pT + n * group, *qT = dsT + n * group, *dT = qT + hd * group;
    ST_FN(gather_keys)(hd, hdp, n, keys, base, ld, dm, col, kc, vc);
    for (long j = 0; j < 2 * n * hd; j++) dkc[j] = 0;
    for (long g0 = 0; g0 < t; g0 += group) {
        const long gl = t - g0 < group ? t - g0 : group, blocks = (gl + 15) / 16;
        // q^T (pre-scaled, as in forward) and dO^T for the group, zero past the end (those lanes
        // then give P = 1, dS = 0 and add nothing: their dO is 0).
        for (long p = 0; p < hd; p++) {
            for (long l = 0; l < 16 * blocks; l++) {
                const long i = g0 + l;
                qT[p * group + l] = l < gl ? base[i * ld + col + p] * s : 0;
                dT[p * group + l] = l < gl ? go[i * dm + p] : 0;
            }
        }
        for (long blk = 0; blk < blocks; blk++) {
            const long l0 = 16 * blk, lanes = gl - l0 < 16 ? gl - l0 : 16;
            float lvs[16] = {0}, dds[16] = {0};
            for (long l = 0; l < lanes; l++) {
                const long i = g0 + l0 + l;
                lvs[l] = lse[i];
                float x = 0;
                for (long c = 0; c < hd; c++) x += go[i * dm + c] * oo[i * dm + c];
                dds[l] = x;
            }
            const st_f16 lv = ST_FN(ld)(lvs), dd = ST_FN(ld)(dds);
            // Per key: P = exp(S - lse) (the exp in a pass of its own), then dS = P (dP - D).
            float *pb = pT + l0, *db = dsT + l0;
            for (long jj = 0; jj < n; jj++) {
                const float *kr = kc + jj * hdp;
                st_f16 x = 0;
                for (long p = 0; p < hd; p++) x = ST_FN(fma)(ST_FN(ld)(qT + p * group + l0), (st_f16)kr[p], x);
                ST_FN(st)(pb + jj * group, x);
            }
            for (long jj = 0; jj < n; jj++) ST_FN(st)(pb + group * jj, ST_FN(st_exp16)(ST_FN(ld)(pb + group * jj) - lv));
            for (long jj = 0; jj < n; jj++) {
                const float *vr = vc + jj * hdp;
                st_f16 dp = 0;
                for (long c = 0; c < hd; c++) dp = ST_FN(fma)(ST_FN(ld)(dT + c * group + l0), (st_f16)vr[c], dp);
                ST_FN(st)(db + jj * group, ST_FN(ld)(pb + jj * group) * (dp - dd));
            }
            // dQ = s dS K, four dims at a time in registers.
            for (long c0 = 0; c0 < hd; c0 += 4) {
                st_f16 acc[4];
                ST_FN(weighted_rows4)(db, group, kc + c0, hdp, n, acc);
                for (long c = 0; c < 4 && c0 + c < hd; c++) {
                    float r[16];
                    ST_FN(st)(r, acc[c] * s);
                    for (long l = 0; l < lanes; l++) gq[(g0 + l0 + l) * ld + c0 + c] = r[l];
                }
            }
        }
        // dV[j] += sum_i P[j][i] dO[i];  dK[j] += sum_i dS[j][i] (s q[i]).
        const long width = 16 * blocks;
        for (long jj = 0; jj < n; jj++) {
            for (long c = 0; c < hd; c++) {
                dvc[jj * hd + c] += ST_FN(dot)(width, pT + jj * group, dT + c * group);
                dkc[jj * hd + c] += ST_FN(dot)(width, dsT + jj * group, qT + c * group);
            }
        }
    }
    for (long jj = 0; jj < n; jj++) {
        const long j = keys[jj];
        for (long p = 0; p < hd; p++) {
            gq[j * ld + dm + p] = dkc[jj * hd + p];
            gq[j * ld + 2 * dm + p] = dvc[jj * hd + p];
        }
    }
}
