#ifndef SIDETUNE_HEAP_TRIM_H
#define SIDETUNE_HEAP_TRIM_H
#include <stddef.h>

// Returns the C heap's free pages to the system (glibc's malloc_trim; nothing elsewhere): setup
// (reading a data set, tokenising) leaves freed chunks that would otherwise count in peak RSS.
void sidetune_release_free_heap(void);
#endif
