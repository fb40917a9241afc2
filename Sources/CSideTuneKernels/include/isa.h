#ifndef SIDETUNE_ISA_H
#define SIDETUNE_ISA_H
#include <stdbool.h>

// Run-time dispatch. Every hot kernel is compiled for each instruction set it has a path for
// (function-level target attributes, no build flags), and the one the CPU allows, capped by
// SIDETUNE_ISA, runs. Levels are ordered: each includes the ones below it.
enum sidetune_isa {
    SIDETUNE_ISA_GENERIC = 0,    // portable C (x86-64 baseline SSE2, arm64 NEON)
    SIDETUNE_ISA_AVX2 = 1,       // AVX2 + FMA + F16C
    SIDETUNE_ISA_AVX512 = 2,     // AVX-512 F, BW, DQ, VL
    SIDETUNE_ISA_AVX512BF16 = 3, // AVX-512 BF16 (and AMX tiles where the CPU has them)
};

/// The highest level the CPU (and the OS's saved register state) supports.
int sidetune_isa_detected(void);
/// The level in use: the detected one, capped by SIDETUNE_ISA=generic|avx2|avx512|avx512bf16
/// (read once). An unknown or too-high value leaves the detected level.
int sidetune_isa(void);
/// The name of a level ("generic", "avx2", "avx512", "avx512bf16").
const char *sidetune_isa_name(int level);
/// Whether the CPU has AMX tiles with bf16 (the level in use must also be avx512bf16 to use them).
bool sidetune_cpu_has_amx_bf16(void);

// Target attributes of each level's functions (x86-64 only; elsewhere only generic code builds).
#if defined(__x86_64__)
#define ST_X86 1
#define ST_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ST_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define ST_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")))
#endif
#endif
