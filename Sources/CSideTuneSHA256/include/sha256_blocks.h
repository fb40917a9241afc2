#ifndef SIDETUNE_SHA256_BLOCKS_H
#define SIDETUNE_SHA256_BLOCKS_H
#include <stddef.h>
#include <stdint.h>

// SHA-256's compression function on the CPU's SHA extensions (x86 SHA-NI), for hashing the
// assets and backbone files (every train, eval and predict hashes its backbone). SHA256Tests.throughput
// measured 784-1064 MB/s against the portable Swift rounds' 145-164 MB/s in the same runs (Xeon).

// K[0..<64], shared with the portable rounds.
const uint32_t *sidetune_sha256_round_constants(void);

// 1 when the CPU reports the SHA extensions (and SSE4.1).
int sidetune_sha256_hardware_available(void);

// Runs `blocks` 64-byte blocks of `data` through the compression function, updating `state`
// (the eight words H0..H7). Only call when sidetune_sha256_hardware_available() returns 1.
void sidetune_sha256_blocks_hardware(uint32_t state[8], const uint8_t *data, size_t blocks);
#endif
