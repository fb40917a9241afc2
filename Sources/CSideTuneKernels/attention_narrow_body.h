// The narrow-head attention kernels, compiled once per instruction set by attention_narrow.c
// (ST_FN names each copy's functions). Not a header to include elsewhere.

#include "vecmath_body.h"
static inline __attribute__((always_inline)) float ST_FN(hsum16)(st_f16 v) {
    st_f8 a = v.lo + v.hi;
    st_f4 b = a.lo + a.hi;
    st_f2 c = b.lo + b.hi;
    return c.x + c.y;
}

static inline __attribute__((always_inline)) st_f16 ST_FN(load16)(const float *p) { return *(const st_f16u *)p; }
static inline __attribute__((always_inline)) void ST_FN(store16)(float *p, st_f16 v) { *(st_f16u *)p = v; }




static inline __attribute__((always_inline))
void ST_FN(forward_narrow)(const long HD, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s,
                    float *o, long ldo, float *lse, float *scratch) {
    float *sc = scratch, *qT = sc + 16 * n, *out = qT + 16 * HD;
    for (long i0 = 0; i0 < t; i0 += 16) {
        const long lanes = t - i0 < 16 ? t - i0 : 16;
        for (long c = 0; c < HD; c++) {
            for (long l = 0; l < 16; l++) qT[16 * c + l] = l < lanes ? base[(i0 + l) * ld + col + c] * s : 0;
        }
        st_f16 Q[16];
        for (long c = 0; c < HD; c++) Q[c] = ST_FN(load16)(qT + 16 * c);
        st_f16 m = (st_f16)(-INFINITY);
        for (long jj = 0; jj < n; jj++) {
            const float *k = base + (long)keys[jj] * ld + dm + col;
            st_f16 x = (st_f16)(0.0f);
            for (long c = 0; c < HD; c++) x += Q[c] * k[c];
            ST_FN(store16)(sc + 16 * jj, x);
            m = __builtin_elementwise_max(m, x);
        }
        st_f16 sum = (st_f16)(0.0f), O[16];
        for (long c = 0; c < HD; c++) O[c] = (st_f16)(0.0f);
        for (long jj = 0; jj < n; jj++) {
            const float *v = base + (long)keys[jj] * ld + 2 * dm + col;
            st_f16 e = ST_FN(st_exp16)(ST_FN(load16)(sc + 16 * jj) - m);
            sum += e;
            for (long c = 0; c < HD; c++) O[c] += e * v[c];
        }
        st_f16 inv = 1.0f / sum;
        for (long c = 0; c < HD; c++) ST_FN(store16)(out + 16 * c, O[c] * inv);
        for (long l = 0; l < lanes; l++) {
            for (long c = 0; c < HD; c++) o[(i0 + l) * ldo + c] = out[16 * c + l];
            lse[i0 + l] = m[l] + logf(sum[l]);
        }
    }
}

static void ST_FN(attention_forward_narrow)(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col,
                                       float s, float *o, long ldo, float *lse, float *scratch) {
    if (n <= 0) return;
    switch (hd) {
    case 4: ST_FN(forward_narrow)(4, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch); break;
    case 8: ST_FN(forward_narrow)(8, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch); break;
    case 16: ST_FN(forward_narrow)(16, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch); break;
    }
}


static inline __attribute__((always_inline))
void ST_FN(backward_narrow)(const long HD, long t, long n, const int *keys, const float *base, long ld, long dm, long col, float s,
                     const float *go, const float *oo, long ldo, const float *lse, float *gq, float *scratch) {
    const long np = round16(n), nb = np / 16;
    float *kT = scratch, *vT = kT + HD * np, *dS = vT + HD * np, *qs = dS + t * np, *dd = qs + t * HD;
    float *lanes = dd + t;
    for (long c = 0; c < HD; c++) {
        for (long jj = 0; jj < np; jj++) {
            const float *row = base + (long)keys[jj < n ? jj : 0] * ld + col;
            kT[c * np + jj] = jj < n ? row[dm + c] : 0;
            vT[c * np + jj] = jj < n ? row[2 * dm + c] : 0;
        }
    }
    for (long i = 0; i < t; i++) {
        float d = 0;
        for (long c = 0; c < HD; c++) {
            qs[i * HD + c] = base[i * ld + col + c] * s;
            d += go[i * ldo + c] * oo[i * ldo + c];
        }
        dd[i] = d;
    }
    for (long kb = 0; kb < nb; kb++) {
        // Sized for the widest head. HD is a constant after inlining: at 4 and 8 dims these live in
        // registers; at 16 the compiler keeps some in L1 (still no reductions over queries).
        st_f16 K[16], V[16], dK[16], dV[16];
        for (long c = 0; c < HD; c++) {
            K[c] = ST_FN(load16)(kT + c * np + 16 * kb);
            V[c] = ST_FN(load16)(vT + c * np + 16 * kb);
            dK[c] = (st_f16)(0.0f);
            dV[c] = (st_f16)(0.0f);
        }
        // Lanes past the last key: P forced to 0 (their k and v are 0, but exp(-lse) could overflow).
        const long valid = n - 16 * kb;
        st_i16 keep = (st_i16)(-1);
        if (valid < 16) {
            for (int l = 0; l < 16; l++) keep[l] = l < valid ? -1 : 0;
        }
        for (long i = 0; i < t; i++) {
            const float *q = qs + i * HD, *g = go + i * ldo;
            st_f16 sc = (st_f16)(0.0f), dp = (st_f16)(0.0f);
            for (long c = 0; c < HD; c++) sc += q[c] * K[c];
            st_f16 p = ST_FN(st_exp16)(sc - lse[i]);
            p = (st_f16)((st_i16)p & keep);
            for (long c = 0; c < HD; c++) dp += g[c] * V[c];
            st_f16 ds = p * (dp - dd[i]);
            ST_FN(store16)(dS + i * np + 16 * kb, ds);
            for (long c = 0; c < HD; c++) {
                dV[c] += p * g[c];
                dK[c] += ds * q[c];
            }
        }
        const long m = valid < 16 ? valid : 16;
        for (long c = 0; c < HD; c++) {
            ST_FN(store16)(lanes, dK[c]);
            for (long l = 0; l < m; l++) gq[(long)keys[16 * kb + l] * ld + dm + c] = lanes[l];
            ST_FN(store16)(lanes, dV[c]);
            for (long l = 0; l < m; l++) gq[(long)keys[16 * kb + l] * ld + 2 * dm + c] = lanes[l];
        }
    }
    // dQ_i = s sum_j dS_ij k_j, in the same order as before: lanes over key blocks, then across lanes.
    for (long i = 0; i < t; i++) {
        st_f16 acc[16];
        for (long c = 0; c < HD; c++) acc[c] = (st_f16)(0.0f);
        for (long kb = 0; kb < nb; kb++) {
            st_f16 ds = ST_FN(load16)(dS + i * np + 16 * kb);
            for (long c = 0; c < HD; c++) acc[c] += ds * ST_FN(load16)(kT + c * np + 16 * kb);
        }
        for (long c = 0; c < HD; c++) gq[i * ld + c] = s * ST_FN(hsum16)(acc[c]);
    }
}

static void ST_FN(attention_backward_narrow)(long hd, long t, long n, const int *keys, const float *base, long ld, long dm,
                                        long col, float s, const float *go, const float *oo, long ldo, const float *lse,
                                        float *gq, float *scratch) {
    if (n <= 0) return;
    switch (hd) {
    case 4: ST_FN(backward_narrow)(4, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch); break;
    case 8: ST_FN(backward_narrow)(8, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch); break;
    case 16: ST_FN(backward_narrow)(16, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch); break;
    }
}
