// CPU feature detection for the kernels' run-time dispatch (see isa.h).
#include "isa.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#if defined(__x86_64__)
/// XCR0: which register states the OS saves (ymm, zmm, tile data).
static unsigned long long xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int detect(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return SIDETUNE_ISA_GENERIC;
    const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    if (!osxsave || !avx) return SIDETUNE_ISA_GENERIC;
    const unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return SIDETUNE_ISA_GENERIC; // xmm and ymm state
    if (__get_cpuid_max(0, 0) < 7) return SIDETUNE_ISA_GENERIC;
    __cpuid_count(7, 0, a, b, c, d);
    const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
               avx512vl = b & (1u << 31);
    if (!(avx2 && fma && f16c)) return SIDETUNE_ISA_GENERIC;
    if (!(avx512f && avx512dq && avx512bw && avx512vl) || (xcr0 & 0xE0) != 0xE0) return SIDETUNE_ISA_AVX2; // opmask, zmm
    __cpuid_count(7, 1, a, b, c, d);
    const bool avx512bf16 = a & (1u << 5);
    return avx512bf16 ? SIDETUNE_ISA_AVX512BF16 : SIDETUNE_ISA_AVX512;
}
#else
static int detect(void) { return SIDETUNE_ISA_GENERIC; }
#endif

int sidetune_isa_detected(void) {
    static int level = -1;
    if (level < 0) level = detect();
    return level;
}

static const char *names[] = {"generic", "avx2", "avx512", "avx512bf16"};

const char *sidetune_isa_name(int level) { return level >= 0 && level <= 3 ? names[level] : "unknown"; }

int sidetune_isa(void) {
    static int level = -1;
    if (level < 0) {
        int l = sidetune_isa_detected();
        const char *cap = getenv("SIDETUNE_ISA");
        if (cap) {
            for (int i = 0; i < 4; i++) {
                if (strcmp(cap, names[i]) == 0 && i < l) l = i;
            }
        }
        level = l;
    }
    return level;
}

bool sidetune_cpu_has_amx_bf16(void) {
#if defined(__x86_64__)
    unsigned int a, b, c, d;
    if (__get_cpuid_max(0, 0) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    return tile && bf16 && (xgetbv0() & (3ull << 17)) == (3ull << 17); // XTILECFG and XTILEDATA
#else
    return false;
#endif
}
