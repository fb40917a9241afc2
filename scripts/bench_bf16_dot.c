// Times the bf16 dot-product kernel (Sources/CSideTuneKernels/bf16_dot.c) alone on packed,
// cache-resident operands, on one and on two POSIX threads (each thread its own half of the rows):
// the ceiling for `sidetune bench gemm --precision bf16`, whose figures include packing and the
// thread pool. Shape: LST's block forward at 1,056 tokens (1056 x 144 x 48). Then, on one thread,
// the pack of a weight gradient's B (pairs across rows of an f32 1,056 x 384 input) done whole row by
// row against in 48-column strips, as `gemmBFloat16Products` first did per work item.
//
//   K=Sources/CSideTuneKernels
//   clang -O3 -march=native -I$K/include scripts/bench_bf16_dot.c $K/bf16_dot.c -o /tmp/bd -lpthread
//   /tmp/bd
#include "bf16_dot.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { M = 1056, N = 144, K = 48, PAIRS = K / 2, ITERATIONS = 2000 };
static uint32_t *a, *b;
static float *c[2];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *run(void *arg) {
    const long id = (long)arg, rows = M / 2;
    for (int i = 0; i < ITERATIONS; i++)
        sidetune_bf16dot_gemm(rows, N, PAIRS, a + id * rows * PAIRS, PAIRS, 1, b, N, c[id], N, false);
    return NULL;
}

int main(void) {
    a = calloc((size_t)M * PAIRS, 4);
    b = calloc((size_t)PAIRS * N, 4);
    c[0] = malloc((size_t)M * N * 4);
    c[1] = malloc((size_t)M * N * 4);
    printf("AVX512_BF16 kernel: %s\n", sidetune_bf16dot_native() ? "yes" : "no (plain loop)");
    for (long threads = 1; threads <= 2; threads++) {
        pthread_t th[2];
        const double t0 = now();
        for (long i = 0; i < threads; i++) pthread_create(&th[i], NULL, run, (void *)i);
        for (long i = 0; i < threads; i++) pthread_join(th[i], NULL);
        const double seconds = now() - t0, flops = 2.0 * (M / 2) * N * K * ITERATIONS * threads;
        printf("%ld thread(s): %.1f GFLOPS\n", threads, flops / seconds / 1e9);
    }
    enum { T = 1056, W = 384 };
    float *x = malloc((size_t)T * W * 4);
    uint32_t *packed = malloc((size_t)(T / 2) * W * 4);
    for (long i = 0; i < (long)T * W; i++) x[i] = (float)rand() / (float)RAND_MAX;
    for (int strips = 0; strips < 2; strips++) {
        double best = 1e9;
        for (int round = 0; round < 5; round++) {
            const double t0 = now();
            for (int i = 0; i < 1000; i++) {
                if (strips) {
                    for (long j0 = 0; j0 < W; j0 += 48) sidetune_bf16_pairs_across_rows(x + j0, false, W, T, 48, 0, T / 2, packed + j0, W);
                } else {
                    sidetune_bf16_pairs_across_rows(x, false, W, T, W, 0, T / 2, packed, W);
                }
            }
            const double t = (now() - t0) / 1000;
            if (t < best) best = t;
        }
        printf("pack 1056 x 384 across rows, %s: %.1f us\n", strips ? "48-column strips" : "whole rows", best * 1e6);
    }
    return 0;
}
