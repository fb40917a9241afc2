#ifndef SIDETUNE_PREFETCH_H
#define SIDETUNE_PREFETCH_H
// Swift has no prefetch intrinsic; the GEMM micro-kernel asks for its C tile early so the final
// read-modify-write does not wait on L3 or DRAM.
static inline void sidetune_prefetch_write(const void *p) { __builtin_prefetch(p, 1, 3); }
static inline void sidetune_prefetch_read(const void *p) { __builtin_prefetch(p, 0, 3); }
#endif
