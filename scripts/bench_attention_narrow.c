// Times the narrow-head attention kernels (Sources/CSideTuneKernels/attention_narrow.c) alone, one
// thread, on random q/k/v: 12 heads of HD dims over T tokens, every key kept. Prints ns per
// (query, 16-key block) for backward and forward (best of 7 rounds) and a checksum of the gradients,
// so two versions of the kernel file can be compared for speed and for identical results:
//
//   K=Sources/CSideTuneKernels
//   clang -O3 -march=native -I$K/include scripts/bench_attention_narrow.c $K/attention_narrow.c -o /tmp/an -lm
//   /tmp/an 64 4      # T=64 tokens, heads of 4 dims (MiniLM's LST side network)
#include "attention_narrow.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    long t = argc > 1 ? atol(argv[1]) : 64, hd = argc > 2 ? atol(argv[2]) : 4;
    if (t < 1 || !sidetune_attention_narrow_supported(hd)) {
        fprintf(stderr, "usage: %s T HD (T >= 1 tokens, HD one of 4, 8, 16)\n", argv[0]);
        return 2;
    }
    const long heads = 12, dm = hd * heads, ld = 3 * dm;
    float *base = malloc(sizeof(float) * t * ld), *go = malloc(sizeof(float) * t * dm);
    float *oo = malloc(sizeof(float) * t * dm), *gq = calloc(t * ld, sizeof(float));
    float *lse = malloc(sizeof(float) * t * heads);
    int *keys = malloc(sizeof(int) * t);
    long scratch = sidetune_attention_backward_narrow_scratch(hd, t, t);
    if (sidetune_attention_forward_narrow_scratch(hd, t) > scratch) scratch = sidetune_attention_forward_narrow_scratch(hd, t);
    float *scr = malloc(sizeof(float) * scratch);
    if (!base || !go || !oo || !gq || !lse || !keys || !scr) { fprintf(stderr, "out of memory\n"); return 1; }
    for (long j = 0; j < t; j++) keys[j] = (int)j;
    srand(1);
    for (long i = 0; i < t * ld; i++) base[i] = (rand() / (float)RAND_MAX - 0.5f) * 2;
    for (long i = 0; i < t * dm; i++) go[i] = rand() / (float)RAND_MAX - 0.5f;
    const float s = 1 / sqrtf((float)hd);
    for (long h = 0; h < heads; h++)
        sidetune_attention_forward_narrow(hd, t, t, keys, base, ld, dm, h * hd, s, oo + h * hd, dm, lse + h * t, scr);
    const int reps = (int)(2000 * 64 / t) + 1;
    double backward = 1e9, forward = 1e9;
    for (int round = 0; round < 7; round++) {
        double a = now();
        for (int r = 0; r < reps; r++)
            for (long h = 0; h < heads; h++)
                sidetune_attention_backward_narrow(hd, t, t, keys, base, ld, dm, h * hd, s, go + h * hd, oo + h * hd, dm,
                                                   lse + h * t, gq, scr);
        double b = now();
        if (b - a < backward) backward = b - a;
        a = now();
        for (int r = 0; r < reps; r++)
            for (long h = 0; h < heads; h++)
                sidetune_attention_forward_narrow(hd, t, t, keys, base, ld, dm, h * hd, s, oo + h * hd, dm, lse + h * t, scr);
        b = now();
        if (b - a < forward) forward = b - a;
    }
    const double blocks = (double)reps * heads * t * ((t + 15) / 16);
    double checksum = 0;
    for (long i = 0; i < t * ld; i++) checksum += gq[i];
    printf("T=%ld heads of %ld: backward %.2f ns, forward %.2f ns per (query, 16-key block); gradient checksum %.9g\n",
           t, hd, backward / blocks * 1e9, forward / blocks * 1e9, checksum);
    return 0;
}
