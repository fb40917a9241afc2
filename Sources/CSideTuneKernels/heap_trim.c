#define _GNU_SOURCE
#include "heap_trim.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif
void sidetune_release_free_heap(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
