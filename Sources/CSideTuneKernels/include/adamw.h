#ifndef SIDETUNE_ADAMW_H
#define SIDETUNE_ADAMW_H

// AdamW on elements [lo, hi) of one parameter p with gradient g and moments m, v:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g
//   p -= lr ((m / bc1) / (sqrt(v / bc2) + eps) + wd p)
// in that order, with no fused multiply-adds, in 16 lanes: the same results as the scalar loop.
// (Swift's SIMD16<Float>.squareRoot() compiled to a scalar square root per lane with branches,
// which made the optimizer 7% of a cached LST step.)
void sidetune_adamw_update(float *p, const float *g, float *m, float *v, long lo, long hi, float lr, float b1,
                           float b2, float bc1, float bc2, float eps, float wd);
#endif
