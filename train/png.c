#include "train/png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "util/log.h"

enum { GAP = 4 }; /* pixels of background between panels */

/* A perceptually ordered dark-blue -> magenta -> yellow ramp (5 anchors, linear between). */
static void colormap(float v, uint8_t rgb[3]) {
    static const float anchors[5][3] = {
        {0.02f, 0.02f, 0.10f}, {0.25f, 0.05f, 0.45f}, {0.70f, 0.15f, 0.45f},
        {0.98f, 0.50f, 0.15f}, {0.99f, 0.95f, 0.60f}};
    if (!(v > 0)) v = 0; /* also maps NaN to the bottom colour */
    if (v > 1) v = 1;
    float pos = v * 4;
    int i = pos >= 4 ? 3 : (int)pos;
    float f = pos - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)(255.0f * (anchors[i][c] * (1 - f) + anchors[i + 1][c] * f) + 0.5f);
}

static void value_range(const float *const *panels, int n, size_t count, float *lo, float *hi) {
    float a = INFINITY, b = -INFINITY;
    for (int p = 0; p < n; p++)
        for (size_t i = 0; i < count; i++) {
            float v = panels[p][i];
            if (v < a) a = v;
            if (v > b) b = v;
        }
    *lo = a;
    *hi = b > a ? b : a + 1;
}

static void render(uint8_t *img, int width, const float *const *panels, int rows, int cols, int m,
                   int t, float lo, float hi) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const float *mel = panels[r * cols + c];
            int x0 = GAP + c * (t + GAP), y0 = GAP + r * (m + GAP);
            for (int y = 0; y < m; y++) {
                const float *row = mel + (size_t)(m - 1 - y) * t; /* low bins at the bottom */
                uint8_t *px = img + ((size_t)(y0 + y) * width + x0) * 3;
                for (int x = 0; x < t; x++) colormap((row[x] - lo) / (hi - lo), px + 3 * x);
            }
        }
}

/* The PNG stream into f (a file or an open_memstream); `what` names it in messages. */
static int write_png_stream(FILE *f, const char *what, const uint8_t *img, int width, int height, char *err,
                            size_t errlen) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        return rmx_seterr(err, errlen, "%s: libpng failed while writing", what);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, img + (size_t)y * width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

static int write_png(const char *path, const uint8_t *img, int width, int height, char *err,
                     size_t errlen) {
    FILE *f = fopen(path, "wb");
    if (!f) return rmx_seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    if (write_png_stream(f, path, img, width, height, err, errlen) != 0) {
        fclose(f);
        return -1;
    }
    if (fclose(f) != 0) return rmx_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

/* The panels rendered into a fresh image (*w x *h RGB, malloc'd), or NULL. */
static uint8_t *render_panels(const float *const *panels, int rows, int cols, int m, int t, float lo, float hi,
                              int *w, int *h) {
    if (lo >= hi) value_range(panels, rows * cols, (size_t)m * t, &lo, &hi);
    int width = GAP + cols * (t + GAP), height = GAP + rows * (m + GAP);
    uint8_t *img = malloc((size_t)width * height * 3);
    if (!img) return NULL;
    memset(img, 255, (size_t)width * height * 3);
    render(img, width, panels, rows, cols, m, t, lo, hi);
    *w = width;
    *h = height;
    return img;
}

int rmx_png_spectrograms_encode(const float *const *panels, int rows, int cols, int m, int t, float lo, float hi,
                                unsigned char **out, size_t *out_len, char *err, size_t errlen) {
    *out = NULL;
    *out_len = 0;
    int width = 0, height = 0;
    uint8_t *img = render_panels(panels, rows, cols, m, t, lo, hi, &width, &height);
    if (!img) return rmx_seterr(err, errlen, "PNG: out of memory for the image");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = f ? write_png_stream(f, "PNG", img, width, height, err, errlen)
               : rmx_seterr(err, errlen, "PNG: cannot open a memory stream: %s", strerror(errno));
    if (f && fclose(f) != 0 && rc == 0) rc = rmx_seterr(err, errlen, "PNG: out of memory");
    free(img);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *out = (unsigned char *)buf;
    *out_len = len;
    return 0;
}

int rmx_png_spectrograms(const char *path, const float *const *panels, int rows, int cols, int m,
                         int t, float lo, float hi, char *err, size_t errlen) {
    int width = 0, height = 0;
    uint8_t *img = render_panels(panels, rows, cols, m, t, lo, hi, &width, &height);
    if (!img) return rmx_seterr(err, errlen, "%s: out of memory for the image", path);
    int rc = rmx_png_write_rgb(path, img, width, height, err, errlen);
    free(img);
    return rc;
}

int rmx_png_write_rgb(const char *path, const unsigned char *rgb, int width, int height, char *err,
                      size_t errlen) {
    char tmp[4096];
    rmx_tmp_name(path, tmp, sizeof tmp);
    int rc = write_png(tmp, rgb, width, height, err, errlen);
    if (rc == 0) rc = rmx_commit_file(tmp, path, err, errlen);
    if (rc != 0) remove(tmp);
    return rc;
}
