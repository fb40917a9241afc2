// Attention forward and backward for narrow heads (4, 8 or 16 dims): see attention_narrow.h.
//
// Forward: 16 queries sit in the lanes, so the row max and the softmax sum need no horizontal
// reductions; k and v are read as broadcast scalars straight from their rows, and the exp and the
// P V product share one pass over the keys.
//
// Backward: keys sit in the lanes and each block of 16 keys is the outer loop, so the block's k, v and its
// dK, dV accumulators stay in registers while every query streams past (their q, dO, lse are
// broadcast scalars). P needs no reduction in backward (lse is saved), dK and dV reduce over
// queries inside the lanes' own sums, and only dQ sums over keys: the loop stores each dS vector
// (one store), and a second pass per query sums dS k over the key blocks in registers with one
// horizontal sum per dim. (Accumulating dQ partials in scratch inside the loop cost a load and a
// store per dim and a memset: scripts/bench_attention_narrow.c on Zen 4 timed that backward 6-11%
// slower at 4 dims, 10-20% at 8 and 45% at 16.)
#include "attention_narrow.h"
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

static inline long round16(long n) { return (n + 15) & ~15L; }

bool sidetune_attention_narrow_supported(long hd) { return hd == 4 || hd == 8 || hd == 16; }

long sidetune_attention_forward_narrow_scratch(long hd, long n) {
    // The block's scores [n][16], q^T [hd][16], the outputs [hd][16].
    return 16 * n + 2 * 16 * hd;
}

long sidetune_attention_backward_narrow_scratch(long hd, long t, long n) {
    // k^T and v^T [hd][n rounded to 16]; dS [t][n rounded to 16]; s q [t][hd]; D [t]; a lane buffer.
    return 2 * hd * round16(n) + t * round16(n) + t * hd + t + 16;
}

// One copy of the kernels per instruction set: portable, AVX2 + FMA, AVX-512.
#define ST_FN(name) name##_generic
#include "attention_narrow_body.h"
#undef ST_FN
#if ST_X86
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define ST_FN(name) name##_avx2
#include "attention_narrow_body.h"
#undef ST_FN
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), apply_to = function)
#define ST_FN(name) name##_avx512
#include "attention_narrow_body.h"
#undef ST_FN
#pragma clang attribute pop
#endif

void sidetune_attention_forward_narrow(long hd, long t, long n, const int *keys, const float *base, long ld, long dm, long col,
                                       float s, float *o, long ldo, float *lse, float *scratch) {
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) { attention_forward_narrow_avx512(hd, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch); return; }
    if (isa >= SIDETUNE_ISA_AVX2) { attention_forward_narrow_avx2(hd, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch); return; }
#endif
    attention_forward_narrow_generic(hd, t, n, keys, base, ld, dm, col, s, o, ldo, lse, scratch);
}

void sidetune_attention_backward_narrow(long hd, long t, long n, const int *keys, const float *base, long ld, long dm,
                                        long col, float s, const float *go, const float *oo, long ldo, const float *lse,
                                        float *gq, float *scratch) {
#if ST_X86
    const int isa = sidetune_isa();
    if (isa >= SIDETUNE_ISA_AVX512) {
        attention_backward_narrow_avx512(hd, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch);
        return;
    }
    if (isa >= SIDETUNE_ISA_AVX2) {
        attention_backward_narrow_avx2(hd, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch);
        return;
    }
#endif
    attention_backward_narrow_generic(hd, t, n, keys, base, ld, dm, col, s, go, oo, ldo, lse, gq, scratch);
}
