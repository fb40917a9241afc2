// Antialiased resampling of 8-bit images straight into the backbone's normalised float input,
// computing only the pixels a centre crop keeps.
#include "image_decode.h"

#include <math.h>
#include <stdlib.h>

// Pillow's filters: bicubic with a = -0.5 (support 2), bilinear (triangle, support 1).
static double filter_value(int filter, double x) {
    x = fabs(x);
    if (filter == ST_FILTER_BILINEAR) return x < 1 ? 1 - x : 0;
    const double a = -0.5;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

static double filter_support(int filter) { return filter == ST_FILTER_BILINEAR ? 1 : 2; }

// Taps of output indices first ..< first + count of a resize from `in` to `out` samples, as Pillow
// computes them: the filter widened by the scale when shrinking (antialias), weights normalised.
// starts[i], counts[i]: the input range of output i; weights[i * span + k].
static int make_taps(int in, int out, int first, int count, int filter, int **starts, int **counts, float **weights, int *span) {
    double scale = (double)in / out, fscale = scale > 1 ? scale : 1;
    double support = filter_support(filter) * fscale;
    int sp = (int)ceil(support) * 2 + 1;
    *starts = malloc(sizeof(int) * count);
    *counts = malloc(sizeof(int) * count);
    *weights = malloc(sizeof(float) * count * sp);
    if (!*starts || !*counts || !*weights) return -1;
    for (int i = 0; i < count; i++) {
        double center = (first + i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > sp) hi = lo + sp;
        double sum = 0;
        double w[hi - lo > 0 ? hi - lo : 1];
        for (int x = lo; x < hi; x++) {
            w[x - lo] = filter_value(filter, (x - center + 0.5) / fscale);
            sum += w[x - lo];
        }
        (*starts)[i] = lo;
        (*counts)[i] = hi - lo;
        for (int k = 0; k < sp; k++) (*weights)[i * sp + k] = k < hi - lo && sum != 0 ? (float)(w[k] / sum) : 0;
    }
    *span = sp;
    return 0;
}

int st_resize_crop_normalize(const uint8_t *src, int w, int h, int c, int rw, int rh, int left, int top, int ow, int oh,
                             int filter, const float *mean, const float *std, int out_channels, float *out) {
    int *xs = NULL, *xn = NULL, *ys = NULL, *yn = NULL, xspan = 0, yspan = 0, status = -1;
    float *xw = NULL, *yw = NULL, *rows = NULL;
    if (make_taps(w, rw, left, ow, filter, &xs, &xn, &xw, &xspan) != 0) goto done;
    if (make_taps(h, rh, top, oh, filter, &ys, &yn, &yw, &yspan) != 0) goto done;
    // Input rows the kept output rows read, resampled horizontally once each: [rows][ow][c].
    int y0 = ys[0], y1 = ys[oh - 1] + yn[oh - 1];
    for (int i = 0; i < oh; i++) {
        if (ys[i] < y0) y0 = ys[i];
        if (ys[i] + yn[i] > y1) y1 = ys[i] + yn[i];
    }
    rows = malloc(sizeof(float) * (size_t)(y1 - y0) * ow * c);
    if (!rows) goto done;
    for (int y = y0; y < y1; y++) {
        const uint8_t *line = src + (size_t)y * w * c;
        float *dst = rows + (size_t)(y - y0) * ow * c;
        for (int x = 0; x < ow; x++) {
            const float *wt = xw + (size_t)x * xspan;
            const uint8_t *p = line + (size_t)xs[x] * c;
            for (int ch = 0; ch < c; ch++) {
                float s = 0;
                for (int k = 0; k < xn[x]; k++) s += wt[k] * p[k * c + ch];
                // Clipped and rounded to 8 bits between the passes, as Pillow does.
                dst[x * c + ch] = s < 0 ? 0 : s > 255 ? 255 : (float)(int)(s + 0.5f);
            }
        }
    }
    // Vertical pass, then [0, 1] scaling and per-channel normalisation, channels first.
    for (int oc = 0; oc < out_channels; oc++) {
        int ch = c == 1 ? 0 : oc;
        float scale = 1.0f / (255.0f * std[oc]), shift = mean[oc] / std[oc];
        for (int y = 0; y < oh; y++) {
            const float *wt = yw + (size_t)y * yspan;
            float *dst = out + ((size_t)oc * oh + y) * ow;
            for (int x = 0; x < ow; x++) {
                float s = 0;
                for (int k = 0; k < yn[y]; k++) s += wt[k] * rows[((size_t)(ys[y] - y0 + k) * ow + x) * c + ch];
                if (s < 0) s = 0;
                if (s > 255) s = 255;
                dst[x] = s * scale - shift;
            }
        }
    }
    status = 0;
done:
    free(xs); free(xn); free(xw); free(ys); free(yn); free(yw); free(rows);
    return status;
}
