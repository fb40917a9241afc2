#ifndef SIDETUNE_IMAGE_DECODE_H
#define SIDETUNE_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

/// A decoded image: 8-bit samples, channels last (1: grey, 3: RGB), rows top to bottom. `pixels`
/// is malloc'd (st_image_free); on failure it is NULL and `error` says why.
typedef struct {
    uint8_t *pixels;
    int width, height, channels;
    char error[200];
} st_image;

/// JPEG from memory (libjpeg-turbo): grey or RGB (CMYK converted), EXIF orientation applied.
/// `min_side` > 0 lets the decoder scale by 1/2, 1/4 or 1/8 in the DCT while the shorter side stays
/// >= min_side. Images of more than `max_pixels` are refused before decoding. 0 on success.
int st_decode_jpeg(const uint8_t *data, size_t n, int min_side, int max_pixels, st_image *out);

/// PNG from memory (libpng): grey, RGB, palette, with or without alpha, 1-16 bits, interlaced or
/// not, to 8-bit grey or RGB (alpha dropped, as Pillow's convert does). 0 on success.
int st_decode_png(const uint8_t *data, size_t n, int max_pixels, st_image *out);

void st_image_free(st_image *img);

enum { ST_FILTER_BILINEAR = 0, ST_FILTER_BICUBIC = 1 };

/// The window [top, top + oh) x [left, left + ow) of the 8-bit image `src` (h x w x c, channels
/// last) resized to rh x rw with Pillow's antialiased filters (bicubic a = -0.5, or bilinear),
/// written channels first as (v / 255 - mean[k]) / std[k] for k < out_channels (a grey image fills
/// every output channel). Only the kept window is computed. 0 on success, -1 out of memory.
int st_resize_crop_normalize(const uint8_t *src, int w, int h, int c, int rw, int rh, int left, int top, int ow, int oh,
                             int filter, const float *mean, const float *std, int out_channels, float *out);

#endif
