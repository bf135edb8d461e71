#include "train/plot.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/png.h"
#include "util/log.h"

/* Canvas and plot area (pixels): room on the left for the y tick labels and the rotated y title,
 * below for the x tick labels and the x title. */
enum { W = RMX_PLOT_WIDTH, H = RMX_PLOT_HEIGHT };
enum { PLOT_X0 = 112, PLOT_X1 = W - 32, PLOT_Y0 = 20, PLOT_Y1 = H - 64 };
enum { TICK_SCALE = 2, TITLE_SCALE = 2, LEGEND_SCALE = 2 };
#define X_TITLE "step"
#define Y_TITLE "loss (log scale)"
#define TRAIN_LABEL "train loss"
#define VAL_LABEL "validation loss"

typedef struct {
    uint8_t *rgb;
} canvas;

static const uint8_t BLACK[3] = {40, 40, 40}, GRID[3] = {228, 228, 228}, FRAME[3] = {170, 170, 170},
                     WHITE[3] = {255, 255, 255}, TRAIN[3] = {31, 119, 180}, VAL[3] = {214, 39, 40};

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

static void fill(canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    for (int y = y0; y <= y1; y++) hline(c, x0, x1, y, col);
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

/* ---------------------------------------------------------------- a 5x7 bitmap font */

/* Cells of 5 x 9 pixels: rows 0-6 above the baseline (digits and capitals' height), rows 7-8 the
 * descenders of g, j, p, q, y and ','; one byte per row, bit 4 the leftmost column. Lowercase
 * letters, digits and the punctuation of numbers and labels; capitals print as lowercase, other
 * characters as a space. */
enum { FONT_COLS = 5, FONT_ROWS = 9, FONT_HEIGHT = 7, FONT_ADVANCE = 6 };
static const char FONT_CHARS[] = "0123456789abcdefghijklmnopqrstuvwxyz.,-+():/%=_";
static const uint8_t FONT[][FONT_ROWS] = {
    {14,17,17,17,17,17,14,0,0}, {4,12,4,4,4,4,14,0,0}, {14,17,1,2,4,8,31,0,0}, {14,17,1,6,1,17,14,0,0},
    {2,6,10,18,31,2,2,0,0}, {31,16,30,1,1,17,14,0,0}, {6,8,16,30,17,17,14,0,0}, {31,1,2,4,8,8,8,0,0},
    {14,17,17,14,17,17,14,0,0}, {14,17,17,15,1,2,12,0,0}, {0,0,14,1,15,17,15,0,0},
    {16,16,30,17,17,17,30,0,0}, {0,0,14,16,16,17,14,0,0}, {1,1,15,17,17,17,15,0,0},
    {0,0,14,17,31,16,14,0,0}, {6,9,8,28,8,8,8,0,0}, {0,0,15,17,17,17,15,1,14},
    {16,16,22,25,17,17,17,0,0}, {4,0,12,4,4,4,14,0,0}, {2,0,6,2,2,2,2,18,12},
    {16,16,18,20,24,20,18,0,0}, {12,4,4,4,4,4,14,0,0}, {0,0,26,21,21,21,21,0,0},
    {0,0,22,25,17,17,17,0,0}, {0,0,14,17,17,17,14,0,0}, {0,0,30,17,17,17,30,16,16},
    {0,0,15,17,17,17,15,1,1}, {0,0,22,25,16,16,16,0,0}, {0,0,15,16,14,1,30,0,0}, {8,8,28,8,8,9,6,0,0},
    {0,0,17,17,17,19,13,0,0}, {0,0,17,17,17,10,4,0,0}, {0,0,17,17,21,21,10,0,0},
    {0,0,17,10,4,10,17,0,0}, {0,0,17,17,17,17,15,1,14}, {0,0,31,2,4,8,31,0,0}, {0,0,0,0,0,12,12,0,0},
    {0,0,0,0,0,12,4,8,0}, {0,0,0,14,0,0,0,0,0}, {0,4,4,31,4,4,0,0,0}, {2,4,8,8,8,4,2,0,0},
    {8,4,2,2,2,4,8,0,0}, {0,12,12,0,12,12,0,0,0}, {1,1,2,4,8,16,16,0,0}, {24,25,2,4,8,19,3,0,0},
    {0,0,31,0,31,0,0,0,0}, {0,0,0,0,0,0,0,0,31}};

static const uint8_t *glyph(char ch) {
    ch = (char)tolower((unsigned char)ch);
    const char *at = ch ? strchr(FONT_CHARS, ch) : NULL;
    return at ? FONT[at - FONT_CHARS] : NULL;
}

/* Width in pixels of `s` drawn at `scale` (no spacing after the last character). */
static int text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (int)(n * FONT_ADVANCE - 1) * scale : 0;
}

/* Draws `s` with the top of its digits at y (x, y: left end), or, with `up`, rotated a quarter turn
 * counter-clockwise to read from bottom to top, starting at (x, y) with the glyphs' tops on the
 * left, at column x. */
static void draw_text(canvas *c, int x, int y, const char *s, int scale, const uint8_t col[3], int up) {
    for (int k = 0; s[k]; k++) {
        const uint8_t *g = glyph(s[k]);
        int at = k * FONT_ADVANCE * scale;
        for (int r = 0; g && r < FONT_ROWS * scale; r++)
            for (int q = 0; q < FONT_COLS * scale; q++) {
                if (!(g[r / scale] & (16 >> (q / scale)))) continue;
                if (up)
                    put(c, x + r, y - at - q, col);
                else
                    put(c, x + at + q, y + r, col);
            }
    }
}

/* ---------------------------------------------------------------- metrics.jsonl */

typedef struct {
    double *step, *loss;
    int n, cap;
} series;

static int series_push(series *s, double step, double loss) {
    if (!(loss > 0) || !isfinite(loss) || !isfinite(step)) return 0; /* a log axis shows positive values */
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double *st = realloc(s->step, sizeof(double) * (size_t)cap);
        if (st) s->step = st;
        double *lo = st ? realloc(s->loss, sizeof(double) * (size_t)cap) : NULL;
        if (!lo) return -1;
        s->loss = lo;
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->loss[s->n] = loss;
    s->n++;
    return 0;
}

/* The value of "key": in a metrics line (written by train/metrics.c, one object per line). */
static int json_number(const char *ln, const char *key, double *out) {
    const char *at = strstr(ln, key);
    if (!at) return 0;
    char *end;
    *out = strtod(at + strlen(key), &end);
    return end != at + strlen(key);
}

static int read_metrics(const char *path, series *train, series *val, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return rmx_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    char *ln = NULL;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && getline(&ln, &cap, f) > 0) {
        double step, loss;
        if (!json_number(ln, "\"step\": ", &step) || !json_number(ln, "\"loss\": ", &loss)) continue;
        series *s = strstr(ln, "\"split\": \"val\"") ? val : train;
        if (series_push(s, step, loss) != 0) rc = rmx_seterr(err, errlen, "%s: out of memory", path);
    }
    free(ln);
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------- axes and ticks */

typedef struct {
    double x0, x1, y0, y1; /* steps, and log10 of the loss */
} axes;

static int px(const axes *a, double step) {
    return PLOT_X0 + (int)lround((step - a->x0) / (a->x1 - a->x0) * (PLOT_X1 - PLOT_X0));
}
static int py(const axes *a, double loss) {
    return PLOT_Y1 - (int)lround((log10(loss) - a->y0) / (a->y1 - a->y0) * (PLOT_Y1 - PLOT_Y0));
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
            if (all[k]->step[i] < a->x0) a->x0 = all[k]->step[i];
            double l = log10(all[k]->loss[i]);
            if (l < a->y0) a->y0 = l;
            if (l > a->y1) a->y1 = l;
        }
    /* one value (or all equal): half a decade either side */
    if (!(a->y1 - a->y0 > 1e-9)) {
        a->y0 -= 0.5;
        a->y1 += 0.5;
    }
    double pad = 0.05 * (a->y1 - a->y0);
    a->y0 -= pad;
    a->y1 += pad;
}

/* A "nice" tick spacing (1, 2 or 5 x 10^k) giving about `want` ticks over `span`. */
static double nice_step(double span, int want) {
    double raw = span / want, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return mag * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
}

enum { MAX_TICKS = 48 };
typedef struct {
    double v[MAX_TICKS];
    char label[MAX_TICKS][24];
    int n;
} ticks;

/* m x 10^e as people write it, in at most 5 characters: 0.002, 0.5, 20, 50000; 2e-4 and 1e5 beyond. */
static void label_power(char *buf, size_t len, int m, int e) {
    if (e >= 0 && e <= 4)
        snprintf(buf, len, "%.0f", m * pow(10, e));
    else if (e < 0 && e >= -3)
        snprintf(buf, len, "%.*f", -e, m * pow(10, e));
    else
        snprintf(buf, len, "%de%d", m, e);
}

/* Tick values for the log axis [y0, y1] (log10): decades, then 1-2-5, then every mantissa, the
 * first that puts at least 3 ticks on the axis; a range narrower than that gets linear ticks. */
static void log_ticks(double y0, double y1, ticks *t) {
    static const int SETS[3][10] = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
    static const int SET_N[3] = {1, 3, 9};
    int lo = (int)floor(y0), hi = (int)ceil(y1);
    for (int s = 0; s < 3; s++) {
        int every = s == 0 && hi - lo > 12 ? (hi - lo + 11) / 12 : 1; /* at most 12 decades labelled */
        t->n = 0;
        for (int e = lo; e <= hi; e++) {
            if ((e - lo) % every) continue;
            for (int k = 0; k < SET_N[s] && t->n < MAX_TICKS; k++) {
                double v = SETS[s][k] * pow(10, e), l = log10(v);
                if (l < y0 || l > y1) continue;
                t->v[t->n] = v;
                label_power(t->label[t->n], sizeof t->label[0], SETS[s][k], e);
                t->n++;
            }
        }
        if (t->n >= 3) return;
    }
    double a = pow(10, y0), b = pow(10, y1), d = nice_step(b - a, 5);
    int decimals = d < 1 ? (int)ceil(-log10(d) - 1e-9) : 0;
    t->n = 0;
    for (double v = ceil(a / d) * d; v <= b && t->n < MAX_TICKS; v += d) {
        t->v[t->n] = v;
        if (decimals <= 6)
            snprintf(t->label[t->n], sizeof t->label[0], "%.*f", decimals, v);
        else
            snprintf(t->label[t->n], sizeof t->label[0], "%.3g", v);
        t->n++;
    }
}

/* Whole steps, as many as fit with their labels (the widest is the last) 40 pixels apart. */
static void step_ticks(const axes *a, ticks *t) {
    char widest[32];
    snprintf(widest, sizeof widest, "%.0f", fmax(fabs(a->x0), fabs(a->x1)));
    int fit = (PLOT_X1 - PLOT_X0) / (text_width(widest, TICK_SCALE) + 40);
    double d = nice_step(a->x1 - a->x0, fit < 2 ? 2 : fit > 10 ? 10 : fit);
    if (d < 1) d = 1;
    t->n = 0;
    for (double s = ceil(a->x0 / d) * d; s <= a->x1 + 1e-9 && t->n < MAX_TICKS; s += d) {
        t->v[t->n] = s;
        snprintf(t->label[t->n], sizeof t->label[0], "%.0f", s);
        t->n++;
    }
}

static void draw_axes(canvas *c, const axes *a) {
    ticks t;
    step_ticks(a, &t);
    const int tick_h = FONT_HEIGHT * TICK_SCALE;
    for (int i = 0; i < t.n; i++) {
        int x = px(a, t.v[i]);
        vline(c, x, PLOT_Y0, PLOT_Y1, GRID);
        vline(c, x, PLOT_Y1, PLOT_Y1 + 4, BLACK);
        int w = text_width(t.label[i], TICK_SCALE), left = x - w / 2;
        if (left + w > W - 2) left = W - 2 - w; /* the last label stays inside the picture */
        draw_text(c, left, PLOT_Y1 + 9, t.label[i], TICK_SCALE, BLACK, 0);
    }
    log_ticks(a->y0, a->y1, &t);
    for (int i = 0; i < t.n; i++) {
        int y = py(a, t.v[i]);
        hline(c, PLOT_X0, PLOT_X1, y, GRID);
        hline(c, PLOT_X0 - 4, PLOT_X0, y, BLACK);
        draw_text(c, PLOT_X0 - 9 - text_width(t.label[i], TICK_SCALE), y - tick_h / 2, t.label[i], TICK_SCALE,
                  BLACK, 0);
    }
    hline(c, PLOT_X0, PLOT_X1, PLOT_Y1, BLACK);
    vline(c, PLOT_X0, PLOT_Y0, PLOT_Y1, BLACK);
    hline(c, PLOT_X0, PLOT_X1, PLOT_Y0, FRAME);
    vline(c, PLOT_X1, PLOT_Y0, PLOT_Y1, FRAME);
    /* titles: "step" centred under the tick labels, the y title read bottom to top */
    draw_text(c, (PLOT_X0 + PLOT_X1 - text_width(X_TITLE, TITLE_SCALE)) / 2, H - 24, X_TITLE, TITLE_SCALE, BLACK,
              0);
    draw_text(c, 10, (PLOT_Y0 + PLOT_Y1 + text_width(Y_TITLE, TITLE_SCALE)) / 2, Y_TITLE, TITLE_SCALE, BLACK, 1);
}

/* ---------------------------------------------------------------- series and legend */

static void marker(canvas *c, int x, int y, const uint8_t col[3]) { fill(c, x - 3, y - 3, x + 3, y + 3, col); }

static void draw_series(canvas *c, const axes *a, const series *s, const uint8_t col[3], int markers) {
    for (int i = 0; i < s->n; i++) {
        int x = px(a, s->step[i]), y = py(a, s->loss[i]);
        if (markers)
            marker(c, x, y, col);
        else if (i > 0)
            line(c, px(a, s->step[i - 1]), py(a, s->loss[i - 1]), x, y, col);
        else if (s->n == 1)
            hline(c, x - 1, x + 1, y, col);
    }
}

/* Top right inside the plot (losses fall, so it is usually empty there): one row per series shown. */
static void draw_legend(canvas *c, int has_train, int has_val) {
    const char *names[2] = {TRAIN_LABEL, VAL_LABEL};
    int shown[2] = {has_train, has_val}, rows = has_train + has_val, width = 0;
    for (int k = 0; k < 2; k++)
        if (shown[k] && text_width(names[k], LEGEND_SCALE) > width) width = text_width(names[k], LEGEND_SCALE);
    const int pad = 10, sample = 28, gap = 10, row_h = FONT_ROWS * LEGEND_SCALE + 6;
    int x1 = PLOT_X1 - 12, y0 = PLOT_Y0 + 12;
    int x0 = x1 - (pad + sample + gap + width + pad), y1 = y0 + pad + rows * row_h - 6 + pad;
    fill(c, x0, y0, x1, y1, WHITE);
    hline(c, x0, x1, y0, FRAME);
    hline(c, x0, x1, y1, FRAME);
    vline(c, x0, y0, y1, FRAME);
    vline(c, x1, y0, y1, FRAME);
    int y = y0 + pad;
    for (int k = 0; k < 2; k++) {
        if (!shown[k]) continue;
        int mid = y + FONT_HEIGHT * LEGEND_SCALE / 2, sx = x0 + pad;
        if (k == 0) {
            hline(c, sx, sx + sample, mid, TRAIN);
            hline(c, sx, sx + sample, mid - 1, TRAIN);
        } else {
            marker(c, sx + sample / 2, mid, VAL);
        }
        draw_text(c, sx + sample + gap, y, names[k], LEGEND_SCALE, BLACK, 0);
        y += row_h;
    }
}

int rmx_plot_losses(const char *metrics_path, const char *png_path, char *err, size_t errlen) {
    series train = {0}, val = {0};
    int rc = read_metrics(metrics_path, &train, &val, err, errlen);
    if (rc == 0 && train.n + val.n == 0)
        rc = rmx_seterr(err, errlen, "%s: no loss to plot yet (no line with a step and a positive loss)",
                        metrics_path);
    canvas c = {NULL};
    if (rc == 0 && !(c.rgb = malloc((size_t)W * H * 3)))
        rc = rmx_seterr(err, errlen, "%s: out of memory", png_path);
    if (rc == 0) {
        memset(c.rgb, 255, (size_t)W * H * 3);
        axes a;
        fit_axes(&a, &train, &val);
        draw_axes(&c, &a);
        draw_series(&c, &a, &train, TRAIN, 0);
        draw_series(&c, &a, &val, VAL, 1);
        draw_legend(&c, train.n > 0, val.n > 0);
        rc = rmx_png_write_rgb(png_path, c.rgb, W, H, err, errlen);
    }
    free(c.rgb);
    free(train.step);
    free(train.loss);
    free(val.step);
    free(val.loss);
    return rc;
}
