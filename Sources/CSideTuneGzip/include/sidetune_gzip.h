#ifndef SIDETUNE_GZIP_H
#define SIDETUNE_GZIP_H
#include <stddef.h>
#include <stdint.h>

/// Decompresses a whole gzip (or zlib) buffer with the system zlib, checking the trailer's CRC-32
/// and length. Concatenated gzip members are joined. On success returns 0 and sets *out (free with
/// sidetune_gzip_free) and *out_len. On failure returns a nonzero code and writes a message into
/// err: 1 truncated stream, 2 corrupt data, 3 out of memory, 4 output over max_out bytes.
int sidetune_gunzip(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len,
                    char *err, size_t err_len);
void sidetune_gzip_free(uint8_t *p);

#endif
