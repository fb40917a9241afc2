#ifndef SIDETUNE_FUZZ_DRIVER_H
#define SIDETUNE_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver (command-line flags, corpus, mutation loop) on `test_one_input`.
/// SwiftPM links an executable with `--defsym main=<module>_main`, so libFuzzer's own `main` is
/// never used: each target's `<module>_main` calls this instead.
int sidetune_fuzz_main(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
