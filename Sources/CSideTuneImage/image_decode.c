// JPEG (libjpeg-turbo) and PNG (libpng) decoding from memory into 8-bit grey or RGB pixels.
// Both libraries report errors by longjmp: that stays here, in C; Swift gets a status and a message.
#include "image_decode.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h> // before jpeglib.h, which uses FILE
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static void set_error(st_image *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
}

void st_image_free(st_image *img) {
    free(img->pixels);
    img->pixels = NULL;
}

// MARK: EXIF orientation

static unsigned read16(const uint8_t *p, int little) { return little ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static unsigned long read32(const uint8_t *p, int little) {
    return little ? (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24
                  : (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | (unsigned long)p[3];
}

// The Orientation tag (0x0112) of IFD0 in an APP1 "Exif\0\0" payload: 1 (as stored) to 8; 1 when
// absent or malformed (every offset is checked against the payload's length).
static int exif_orientation(const uint8_t *d, size_t n) {
    if (n < 14 || memcmp(d, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *t = d + 6;
    size_t tn = n - 6;
    int little;
    if (t[0] == 'I' && t[1] == 'I') little = 1;
    else if (t[0] == 'M' && t[1] == 'M') little = 0;
    else return 1;
    unsigned long ifd = read32(t + 4, little);
    if (ifd + 2 > tn) return 1;
    unsigned entries = read16(t + ifd, little);
    for (unsigned i = 0; i < entries; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (e + 12 > tn) return 1;
        if (read16(t + e, little) == 0x0112) {
            unsigned v = read16(t + e + 8, little);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

// Applies EXIF orientation 2-8 (mirror, rotate, or both) so the pixels stand as the camera meant.
static int orient(st_image *img, int orientation) {
    if (orientation <= 1) return 0;
    int w = img->width, h = img->height, c = img->channels;
    int swap = orientation >= 5; // 5-8 transpose the axes
    int ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *dst = malloc((size_t)w * h * c);
    if (!dst) return -1;
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (orientation) {
            case 2: sx = w - 1 - x; sy = y; break;           // mirror horizontally
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;   // rotate 180
            case 4: sx = x; sy = h - 1 - y; break;           // mirror vertically
            case 5: sx = y; sy = x; break;                   // transpose
            case 6: sx = y; sy = h - 1 - x; break;           // rotate 90 clockwise
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;   // transverse
            default: sx = w - 1 - y; sy = x; break;          // 8: rotate 90 counter-clockwise
            }
            memcpy(dst + ((size_t)y * ow + x) * c, img->pixels + ((size_t)sy * w + sx) * c, (size_t)c);
        }
    }
    free(img->pixels);
    img->pixels = dst;
    img->width = ow;
    img->height = oh;
    return 0;
}

// MARK: JPEG

struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr cinfo) {
    struct jpeg_failure *f = (struct jpeg_failure *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, f->message);
    longjmp(f->jump, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; } // warnings: corrupt-but-decodable data

int st_decode_jpeg(const uint8_t *data, size_t n, int min_side, int max_pixels, st_image *out) {
    memset(out, 0, sizeof *out);
    struct jpeg_decompress_struct cinfo;
    struct jpeg_failure fail;
    cinfo.err = jpeg_std_error(&fail.mgr);
    fail.mgr.error_exit = jpeg_fail;
    fail.mgr.emit_message = jpeg_quiet;
    volatile JSAMPARRAY rows = NULL;
    if (setjmp(fail.jump)) {
        set_error(out, "JPEG: %s", fail.message);
        jpeg_destroy_decompress(&cinfo);
        free(out->pixels);
        out->pixels = NULL;
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)n);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(&cinfo, TRUE);
    int orientation = 1;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1) orientation = exif_orientation(m->data, m->data_length);
    }
    if ((long)cinfo.image_width * cinfo.image_height > (long)max_pixels) {
        set_error(out, "JPEG: %ux%u pixels is more than the limit of %d", cinfo.image_width, cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB; // CMYK/YCCK included
    if (min_side > 0) {
        // DCT scaling: decode at the smallest of 8/8 ... 1/8 whose shorter side still covers min_side
        // (the resize that follows then starts from fewer pixels, as Pillow's draft mode does).
        unsigned shorter = cinfo.image_width < cinfo.image_height ? cinfo.image_width : cinfo.image_height;
        unsigned denom = 8;
        while (denom > 1 && shorter * 1 / denom < (unsigned)min_side) denom /= 2;
        cinfo.scale_num = 1;
        cinfo.scale_denom = denom;
    }
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, c = cinfo.output_components;
    if (c != 1 && c != 3) {
        set_error(out, "JPEG: %d output components (expected grey or RGB)", c);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    out->pixels = malloc((size_t)w * h * c);
    if (!out->pixels) {
        set_error(out, "JPEG: out of memory for %dx%d pixels", w, h);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    out->width = w;
    out->height = h;
    out->channels = c;
    (void)rows;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out->pixels + (size_t)cinfo.output_scanline * w * c;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (orient(out, orientation) != 0) {
        set_error(out, "JPEG: out of memory rotating %dx%d pixels", w, h);
        st_image_free(out);
        return -1;
    }
    return 0;
}

// MARK: PNG

struct png_source {
    const uint8_t *data;
    size_t n, at;
};

static void png_read_memory(png_structp png, png_bytep dst, png_size_t count) {
    struct png_source *s = png_get_io_ptr(png);
    if (count > s->n - s->at) png_error(png, "the file ends before the image does (truncated)");
    memcpy(dst, s->data + s->at, count);
    s->at += count;
}

static void png_fail(png_structp png, png_const_charp message) {
    st_image *out = png_get_error_ptr(png);
    set_error(out, "PNG: %s", message);
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp message) { (void)png; (void)message; }

int st_decode_png(const uint8_t *data, size_t n, int max_pixels, st_image *out) {
    memset(out, 0, sizeof *out);
    if (n < 8 || png_sig_cmp(data, 0, 8) != 0) {
        set_error(out, "PNG: no PNG signature");
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out, png_fail, png_quiet);
    if (!png) {
        set_error(out, "PNG: cannot start libpng");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    struct png_source source = {data, n, 8};
    volatile png_bytepp rows = NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        if (!info) set_error(out, "PNG: cannot start libpng");
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        free((void *)rows);
        free(out->pixels);
        out->pixels = NULL;
        return -1;
    }
    png_set_read_fn(png, &source, png_read_memory);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((double)w * h > max_pixels) png_error(png, "more pixels than the limit");
    int type = png_get_color_type(png, info);
    // To 8-bit grey or RGB as Pillow's convert("L") / convert("RGB") would: palettes and low-bit
    // grey expanded, 16 bits cut to 8, alpha (and tRNS transparency) dropped, not composited.
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    if (c != 1 && c != 3) png_error(png, "unexpected channel count after conversion");
    out->pixels = malloc((size_t)w * h * c);
    rows = malloc(sizeof(png_bytep) * h);
    if (!out->pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out->pixels + (size_t)y * w * c;
    png_read_image(png, (png_bytepp)rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free((void *)rows);
    out->width = (int)w;
    out->height = (int)h;
    out->channels = c;
    return 0;
}
