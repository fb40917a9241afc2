// AdamW update: see adamw.h.
#include "adamw.h"
#include <math.h>

#pragma clang fp contract(off)

typedef float st_v16 __attribute__((ext_vector_type(16)));
typedef float st_v16u __attribute__((ext_vector_type(16), aligned(4)));

void sidetune_adamw_update(float *p, const float *g, float *m, float *v, long lo, long hi, float lr, float b1,
                           float b2, float bc1, float bc2, float eps, float wd) {
    const float c1 = 1 - b1, c2 = 1 - b2;
    long j = lo;
    for (; j + 16 <= hi; j += 16) {
        const st_v16 gj = *(const st_v16u *)(g + j);
        const st_v16 mj = b1 * *(const st_v16u *)(m + j) + c1 * gj;
        const st_v16 vj = b2 * *(const st_v16u *)(v + j) + c2 * gj * gj;
        *(st_v16u *)(m + j) = mj;
        *(st_v16u *)(v + j) = vj;
        const st_v16 update = (mj / bc1) / (__builtin_elementwise_sqrt(vj / bc2) + eps);
        const st_v16 pj = *(const st_v16u *)(p + j);
        *(st_v16u *)(p + j) = pj - lr * (update + wd * pj);
    }
    for (; j < hi; j++) {
        const float gj = g[j];
        m[j] = b1 * m[j] + c1 * gj;
        v[j] = b2 * v[j] + c2 * gj * gj;
        const float update = (m[j] / bc1) / (sqrtf(v[j] / bc2) + eps);
        p[j] -= lr * (update + wd * p[j]);
    }
}
