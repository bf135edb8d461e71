#include "train/plot.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/png.h"
#include "util/log.h"

enum { W = 900, H = 420, LEFT = 70, RIGHT = 20, TOP = 20, BOTTOM = 40, GLYPH_SCALE = 2 };

typedef struct {
    uint8_t *rgb;
} canvas;

static const uint8_t BLACK[3] = {40, 40, 40}, GRID[3] = {225, 225, 225}, TRAIN[3] = {31, 119, 180},
                     VAL[3] = {214, 39, 40};

static void put(canvas *c, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    memcpy(c->rgb + ((size_t)y * W + x) * 3, col, 3);
}

static void hline(canvas *c, int x0, int x1, int y, const uint8_t col[3]) {
    for (int x = x0; x <= x1; x++) put(c, x, y, col);
}

static void vline(canvas *c, int x, int y0, int y1, const uint8_t col[3]) {
    for (int y = y0; y <= y1; y++) put(c, x, y, col);
}

static void line(canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    for (int e = dx + dy;;) { /* Bresenham */
        put(c, x0, y0, col);
        if (x0 == x1 && y0 == y1) return;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}

/* 3x5 glyphs for tick labels: digits, '.', 'e', '-', '+'; one row per 3 bits. */
static const char *GLYPH_CHARS = "0123456789.e-+";
static const uint8_t GLYPHS[][5] = {
    {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
    {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
    {0, 0, 0, 0, 2}, {0, 7, 5, 6, 7}, {0, 0, 7, 0, 0}, {0, 2, 7, 2, 0}};

static int text_width(const char *s) { return (int)strlen(s) * 4 * GLYPH_SCALE; }

static void text(canvas *c, int x, int y, const char *s) {
    for (; *s; s++, x += 4 * GLYPH_SCALE) {
        const char *at = strchr(GLYPH_CHARS, *s);
        if (!at) continue;
        const uint8_t *g = GLYPHS[at - GLYPH_CHARS];
        for (int r = 0; r < 5 * GLYPH_SCALE; r++)
            for (int q = 0; q < 3 * GLYPH_SCALE; q++)
                if (g[r / GLYPH_SCALE] & (4 >> (q / GLYPH_SCALE))) put(c, x + q, y + r, BLACK);
    }
}

typedef struct {
    double *step, *loss;
    int n, cap;
} series;

static void series_push(series *s, double step, double loss) {
    if (!(loss > 0) || !isfinite(loss)) return; /* a log axis shows positive, finite values */
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->step = realloc(s->step, sizeof(double) * (size_t)s->cap);
        s->loss = realloc(s->loss, sizeof(double) * (size_t)s->cap);
    }
    s->step[s->n] = step;
    s->loss[s->n] = loss;
    s->n++;
}

static int read_metrics(const char *path, series *train, series *val, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return rmx_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    char *ln = NULL;
    size_t cap = 0;
    while (getline(&ln, &cap, f) > 0) {
        const char *st = strstr(ln, "\"step\": "), *lo = strstr(ln, "\"loss\": ");
        if (!st || !lo) continue;
        series *s = strstr(ln, "\"split\": \"val\"") ? val : train;
        series_push(s, strtod(st + 8, NULL), strtod(lo + 8, NULL));
    }
    free(ln);
    fclose(f);
    return 0;
}

typedef struct {
    double x0, x1, y0, y1; /* steps, and log10 of the loss */
} axes;

static int px(const axes *a, double step) {
    return LEFT + (int)lround((step - a->x0) / (a->x1 - a->x0) * (W - LEFT - RIGHT));
}
static int py(const axes *a, double loss) {
    return H - BOTTOM - (int)lround((log10(loss) - a->y0) / (a->y1 - a->y0) * (H - TOP - BOTTOM));
}

static void fit_axes(axes *a, const series *train, const series *val) {
    a->x0 = 0;
    a->x1 = 1;
    a->y0 = INFINITY;
    a->y1 = -INFINITY;
    const series *all[2] = {train, val};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < all[k]->n; i++) {
            if (all[k]->step[i] > a->x1) a->x1 = all[k]->step[i];
            double l = log10(all[k]->loss[i]);
            if (l < a->y0) a->y0 = l;
            if (l > a->y1) a->y1 = l;
        }
    if (!(a->y1 > a->y0)) { a->y0 -= 0.5; a->y1 += 0.5; }
    double pad = 0.05 * (a->y1 - a->y0);
    a->y0 -= pad;
    a->y1 += pad;
}

/* A "nice" tick spacing (1, 2 or 5 x 10^k) giving about `want` ticks over `span`. */
static double nice_step(double span, int want) {
    double raw = span / want, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return mag * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
}

static void draw_grid(canvas *c, const axes *a) {
    char label[32];
    double xs = nice_step(a->x1 - a->x0, 8);
    for (double s = 0; s <= a->x1 + 1e-9; s += xs) {
        int x = px(a, s);
        vline(c, x, TOP, H - BOTTOM, GRID);
        snprintf(label, sizeof label, "%.0f", s);
        text(c, x - text_width(label) / 2, H - BOTTOM + 8, label);
    }
    /* y ticks at 1, 2 and 5 x 10^k when the range spans under two decades, else at decades */
    int fine = a->y1 - a->y0 < 2;
    for (int e = (int)floor(a->y0); e <= (int)ceil(a->y1); e++)
        for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) {
            if (!fine && m != 1) continue;
            double v = m * pow(10, e);
            if (log10(v) < a->y0 || log10(v) > a->y1) continue;
            int y = py(a, v);
            hline(c, LEFT, W - RIGHT, y, GRID);
            snprintf(label, sizeof label, "%de%d", m, e);
            text(c, LEFT - 6 - text_width(label), y - 5, label);
        }
    hline(c, LEFT, W - RIGHT, H - BOTTOM, BLACK);
    vline(c, LEFT, TOP, H - BOTTOM, BLACK);
}

static void draw_series(canvas *c, const axes *a, const series *s, const uint8_t col[3], int markers) {
    for (int i = 0; i < s->n; i++) {
        int x = px(a, s->step[i]), y = py(a, s->loss[i]);
        if (markers)
            for (int d = -3; d <= 3; d++) { hline(c, x - 3, x + 3, y + d, col); }
        else if (i > 0)
            line(c, px(a, s->step[i - 1]), py(a, s->loss[i - 1]), x, y, col);
    }
}

int rmx_plot_losses(const char *metrics_path, const char *png_path, char *err, size_t errlen) {
    series train = {0}, val = {0};
    int rc = read_metrics(metrics_path, &train, &val, err, errlen);
    canvas c = {calloc((size_t)W * H * 3, 1)};
    if (rc == 0 && !c.rgb) rc = rmx_seterr(err, errlen, "%s: out of memory", png_path);
    if (rc == 0) {
        memset(c.rgb, 255, (size_t)W * H * 3);
        axes a;
        fit_axes(&a, &train, &val);
        draw_grid(&c, &a);
        draw_series(&c, &a, &train, TRAIN, 0);
        draw_series(&c, &a, &val, VAL, 1);
        rc = rmx_png_write_rgb(png_path, c.rgb, W, H, err, errlen);
    }
    free(c.rgb);
    free(train.step);
    free(train.loss);
    free(val.step);
    free(val.loss);
    return rc;
}
