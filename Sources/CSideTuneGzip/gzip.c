#include "sidetune_gzip.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void sidetune_gzip_free(uint8_t *p) { free(p); }

int sidetune_gunzip(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len,
                    char *err, size_t err_len) {
    *out = NULL;
    *out_len = 0;
    size_t cap = in_len * 4 + 1024, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) { snprintf(err, err_len, "out of memory"); return 3; }
    size_t pos = 0;
    int members = 0;
    while (pos < in_len) {
        z_stream s;
        memset(&s, 0, sizeof s);
        if (inflateInit2(&s, 15 + 32) != Z_OK) { free(buf); snprintf(err, err_len, "zlib init failed"); return 3; }
        int rc = Z_OK;
        while (rc != Z_STREAM_END) {
            if (len == cap) {
                if (cap >= max_out) { inflateEnd(&s); free(buf); snprintf(err, err_len, "output exceeds %zu bytes", max_out); return 4; }
                size_t ncap = cap * 2 > max_out ? max_out : cap * 2;
                uint8_t *nb = realloc(buf, ncap);
                if (!nb) { inflateEnd(&s); free(buf); snprintf(err, err_len, "out of memory"); return 3; }
                buf = nb; cap = ncap;
            }
            size_t avail_in = in_len - pos;
            s.next_in = (Bytef *)(in + pos);
            s.avail_in = avail_in > 0x40000000u ? 0x40000000u : (uInt)avail_in;
            size_t avail_out = cap - len;
            s.next_out = buf + len;
            s.avail_out = avail_out > 0x40000000u ? 0x40000000u : (uInt)avail_out;
            uInt in_before = s.avail_in, out_before = s.avail_out;
            rc = inflate(&s, Z_NO_FLUSH);
            pos += in_before - s.avail_in;
            len += out_before - s.avail_out;
            if (rc == Z_STREAM_END) break;
            if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
                snprintf(err, err_len, "corrupt compressed data after %zu input bytes: %s", pos, s.msg ? s.msg : "data error");
                inflateEnd(&s); free(buf); return 2;
            }
            if (rc == Z_MEM_ERROR) { inflateEnd(&s); free(buf); snprintf(err, err_len, "out of memory"); return 3; }
            if (pos >= in_len && s.avail_out > 0) {
                snprintf(err, err_len, "stream ends after %zu bytes before the end of the compressed data (truncated file?)", in_len);
                inflateEnd(&s); free(buf); return 1;
            }
        }
        inflateEnd(&s);
        members++;
        /* Trailing zero padding after the last member is tolerated (some tools add it). */
        size_t p = pos;
        while (p < in_len && in[p] == 0) p++;
        if (p == in_len) break;
    }
    if (members == 0) { free(buf); snprintf(err, err_len, "empty input"); return 1; }
    *out = buf;
    *out_len = len;
    return 0;
}
