
// 16-lane transcendental functions for the vector kernels, written with clang's vector extensions
// and included once per instruction set inside each kernel file's copies (ST_FN names them), so
// each copy inlines its own: exp, erf, tanh, sigmoid, GELU and its derivative, ReLU. (The same
// formulas in Swift SIMD compiled to mask shuffles across four xmm registers and out-of-line calls.)
// Needs st_f16 and st_i16 (16 floats, 16 ints) declared by the includer. Not a header of its own.


/// exp(x), Cephes-style: 2^n * p(r) with r = x - n ln2 split in two parts; about 2 ulp. Inputs
/// below -87.34 give exp(-87.34) (~1e-38), above 88.72 give exp(88.72).
static inline __attribute__((always_inline)) st_f16 ST_FN(st_exp16)(st_f16 x) {
    x = __builtin_elementwise_max(x, (st_f16)(-87.33654f));
    x = __builtin_elementwise_min(x, (st_f16)(88.72283f));
    // Adding 1.5 * 2^23 rounds to an integer (to nearest even); t's bit pattern is 0x4B400000 + n.
    st_f16 t = x * 1.44269504f + 12582912.0f;
    st_f16 fx = t - 12582912.0f;
    st_f16 r = x - fx * 0.693359375f;
    r = r + fx * 2.1219444e-4f;
    st_f16 y = (st_f16)(1.98756915e-4f);
    y = y * r + 1.39819995e-3f;
    y = y * r + 8.3334519e-3f;
    y = y * r + 4.1665796e-2f;
    y = y * r + 1.66666555e-1f;
    y = y * r + 5.0000001e-1f;
    y = y * r * r + r + 1.0f;
    st_i16 n = (st_i16)t - 0x4B400000;
    st_f16 scale = (st_f16)((n + 127) << 23);
    return y * scale;
}

/// erf(x) as a rational function x P(x^2) / Q(x^2) on [-4, 4] (Eigen's single-precision fit).
static inline __attribute__((always_inline)) st_f16 ST_FN(st_erf16)(st_f16 a) {
    st_f16 x = __builtin_elementwise_min(__builtin_elementwise_max(a, (st_f16)(-4.0f)), (st_f16)(4.0f));
    st_f16 x2 = x * x;
    st_f16 p = (st_f16)(-2.72614225e-10f);
    p = p * x2 + 2.77068142e-08f;
    p = p * x2 - 2.10102402e-06f;
    p = p * x2 - 5.69250639e-05f;
    p = p * x2 - 7.34990630e-04f;
    p = p * x2 - 2.95459980e-03f;
    p = p * x2 - 1.60960333e-02f;
    p = p * x;
    st_f16 q = (st_f16)(-1.45660718e-05f);
    q = q * x2 - 2.13374055e-04f;
    q = q * x2 - 1.68282697e-03f;
    q = q * x2 - 7.37332917e-03f;
    q = q * x2 - 1.42647390e-02f;
    return p / q;
}

/// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, absolute error ~1e-7.
static inline __attribute__((always_inline)) st_f16 ST_FN(st_tanh16)(st_f16 x) {
    st_f16 ax = __builtin_elementwise_abs(x);
    st_f16 e = ST_FN(st_exp16)(-2.0f * ax);
    st_f16 t = (1.0f - e) / (1.0f + e);
    return __builtin_elementwise_copysign(t, x);
}

static inline __attribute__((always_inline)) st_f16 ST_FN(st_sigmoid16)(st_f16 x) { return 1.0f / (1.0f + ST_FN(st_exp16)(-x)); }

/// GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)) (BERT's "gelu").
static inline __attribute__((always_inline)) st_f16 ST_FN(st_gelu16)(st_f16 x) {
    return 0.5f * x * (1.0f + ST_FN(st_erf16)(x * 0.70710678f));
}

/// d GELU / dx = Phi(x) + x phi(x).
static inline __attribute__((always_inline)) st_f16 ST_FN(st_gelu_derivative16)(st_f16 x) {
    return 0.5f * (1.0f + ST_FN(st_erf16)(x * 0.70710678f)) + x * 0.39894228f * ST_FN(st_exp16)(-0.5f * x * x);
}

/// max(x, 0).
static inline __attribute__((always_inline)) st_f16 ST_FN(st_relu16)(st_f16 x) { return __builtin_elementwise_max(x, (st_f16)(0.0f)); }
