/* loss.png (train/plot.c) from small synthetic metrics.jsonl files: the PNG decodes (libpng) at
 * the documented size, and the text, the series and the legend are where they belong.
 *
 *   test_plot CASE WORKDIR     CASE: both | train_only | val_only | one_point | empty | wide_range
 *   test_plot render METRICS PNG   draws a file (to look at the result)
 *
 * Regions (RMX_PLOT_WIDTH x RMX_PLOT_HEIGHT = 960 x 480, plot area x 112..928, y 20..416):
 *   x title "step"            centred under the x tick labels, rows 456..470
 *   y title "loss (log scale)" read bottom to top, columns 10..28
 *   x tick labels             rows 425..439; y tick labels right-aligned at x = 103
 *   legend                    the top right corner of the plot area, inside x 620..916, y 32..100 */
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/plot.h"

enum { W = RMX_PLOT_WIDTH, H = RMX_PLOT_HEIGHT };

static int failures;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                         \
            fprintf(stderr, "\n");                                                                                \
            failures++;                                                                                           \
        }                                                                                                         \
    } while (0)

typedef struct {
    int w, h;
    uint8_t *rgb;
} image;

/* Decodes an 8-bit RGB PNG with libpng; 0 on success. */
static int read_png(const char *path, image *im) {
    png_image p;
    memset(&p, 0, sizeof p);
    p.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&p, path)) {
        fprintf(stderr, "%s: %s\n", path, p.message);
        return -1;
    }
    p.format = PNG_FORMAT_RGB;
    im->w = (int)p.width;
    im->h = (int)p.height;
    im->rgb = malloc(PNG_IMAGE_SIZE(p));
    if (!im->rgb || !png_image_finish_read(&p, NULL, im->rgb, 0, NULL)) {
        fprintf(stderr, "%s: %s\n", path, p.message);
        free(im->rgb);
        png_image_free(&p);
        return -1;
    }
    return 0;
}

typedef enum { DARK, BLUE, RED } colour;

static int is(const uint8_t *px, colour c) {
    switch (c) {
    case DARK: return px[0] < 90 && px[1] < 90 && px[2] < 90;
    case BLUE: return px[2] > 150 && px[0] < 80 && px[1] > 90 && px[1] < 150;
    case RED: return px[0] > 180 && px[1] < 80 && px[2] < 80;
    }
    return 0;
}

/* Pixels of colour c in [x0, x1] x [y0, y1]. */
static int count(const image *im, int x0, int y0, int x1, int y1, colour c) {
    int n = 0;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) n += is(im->rgb + ((size_t)y * im->w + x) * 3, c);
    return n;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* A decreasing training loss over `steps` steps, a validation point every `every` steps and at 0,
 * lines as train/metrics.c writes them (a skipped step's loss is null). */
static void synthetic(const char *path, int steps, int every, int with_train, int with_val, double scale) {
    FILE *f = fopen(path, "w");
    for (int s = 0; s <= steps; s++) {
        double loss = scale * (0.05 + 2.0 * exp(-s / (steps / 4.0))) * (1.0 + 0.08 * sin(s * 1.7));
        if (with_val && s % every == 0)
            fprintf(f,
                    "{\"step\": %d, \"split\": \"val\", \"loss\": %.9g, \"rec\": %.9g, "
                    "\"spectral_convergence\": 0.5}\n",
                    s, loss * 1.1, loss);
        if (with_train && s > 0) {
            if (s == steps / 3)
                fprintf(f, "{\"step\": %d, \"split\": \"train\", \"loss\": null, \"skipped\": true}\n", s);
            else
                fprintf(f,
                        "{\"step\": %d, \"split\": \"train\", \"loss\": %.9g, \"rec\": %.9g, \"kl\": 3.5, "
                        "\"lr\": 0.0001}\n",
                        s, loss, loss);
        }
    }
    fclose(f);
}

static int render(const char *dir, const char *name, image *im, char *err, size_t errlen) {
    char metrics[4096], png[4096];
    snprintf(metrics, sizeof metrics, "%s/%s.jsonl", dir, name);
    snprintf(png, sizeof png, "%s/%s.png", dir, name);
    remove(png);
    int rc = rmx_plot_losses(metrics, png, err, errlen);
    if (rc != 0 || !im) return rc;
    CHECK(read_png(png, im) == 0, "%s does not decode", png);
    CHECK(im->w == W && im->h == H, "%s is %dx%d, expected %dx%d", png, im->w, im->h, W, H);
    return im->w == W && im->h == H ? 0 : -1;
}

/* What every plot has: axis titles, tick labels on both axes, a frame. */
static void check_frame(const image *im, const char *name) {
    int title_x = count(im, 112, 452, 928, H - 1, DARK), title_y = count(im, 0, 20, 30, 416, DARK);
    int ticks_x = count(im, 60, 422, W - 1, 445, DARK), ticks_y = count(im, 31, 10, 104, 430, DARK);
    CHECK(title_x > 60, "%s: no x title under the axis (%d dark pixels)", name, title_x);
    CHECK(title_y > 150, "%s: no y title on the left (%d dark pixels)", name, title_y);
    CHECK(ticks_x > 100, "%s: no x tick labels (%d dark pixels)", name, ticks_x);
    CHECK(ticks_y > 100, "%s: no y tick labels (%d dark pixels)", name, ticks_y);
    /* the x title is one short word in the middle: nothing dark at the far ends of its band */
    CHECK(count(im, 0, 452, 400, H - 1, DARK) == 0 && count(im, 620, 452, W - 1, H - 1, DARK) == 0,
          "%s: the x title is not centred", name);
    /* the y title reads bottom to top: a tall, narrow block of text, centred on the plot area */
    int top = count(im, 0, 0, 30, 115, DARK), middle = count(im, 10, 150, 28, 290, DARK);
    CHECK(top == 0 && middle > 100, "%s: the y title is not vertical and centred (%d, %d)", name, top, middle);
}

/* Legend rows: a blue line sample and text ("train loss"), a red square and text ("validation
 * loss"), one row per series shown, the lower row empty with one series. */
static void check_legend(const image *im, const char *name, int train, int val) {
    int blue = count(im, 620, 32, 916, 100, BLUE), red = count(im, 620, 32, 916, 100, RED);
    int dark = count(im, 620, 32, 916, 100, DARK), second_row = count(im, 620, 68, 916, 100, DARK);
    CHECK(train ? blue >= 56 : blue == 0, "%s: legend blue pixels %d (train %d)", name, blue, train);
    CHECK(val ? red == 49 : red == 0, "%s: legend red pixels %d (val %d)", name, red, val);
    CHECK(dark > (train + val) * 200, "%s: legend text: %d dark pixels for %d rows", name, dark, train + val);
    CHECK(train && val ? second_row > 200 : second_row == 0, "%s: legend second row: %d dark pixels", name,
          second_row);
    /* "validation loss" is wider than "train loss": its text starts further left */
    int left_text = count(im, 700, 32, 780, 100, DARK);
    CHECK(val ? left_text > 50 : left_text == 0, "%s: legend width does not follow its labels (%d)", name,
          left_text);
}

static int case_both(const char *dir) {
    char err[512];
    image im = {0};
    char path[4096];
    snprintf(path, sizeof path, "%s/both.jsonl", dir);
    synthetic(path, 400, 50, 1, 1, 1.0);
    if (render(dir, "both", &im, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    check_frame(&im, "both");
    check_legend(&im, "both", 1, 1);
    /* the series: blue inside the plot area, 9 red squares of 7x7 (steps 0, 50, ..., 400) and the
     * legend's */
    int blue = count(&im, 113, 21, 927, 415, BLUE), red = count(&im, 0, 0, W - 1, H - 1, RED);
    CHECK(blue > 800, "both: the training line has %d blue pixels", blue);
    CHECK(red == 10 * 49, "both: %d red pixels for 9 squares and the legend's", red);
    free(im.rgb);
    return 0;
}

static int case_train_only(const char *dir) {
    char err[512], path[4096];
    image im = {0};
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    synthetic(path, 120, 1000, 1, 0, 1.0);
    if (render(dir, "train", &im, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    check_frame(&im, "train_only");
    check_legend(&im, "train_only", 1, 0);
    CHECK(count(&im, 0, 0, W - 1, H - 1, RED) == 0, "train_only: red pixels without validation lines");
    free(im.rgb);
    return 0;
}

static int case_val_only(const char *dir) {
    char err[512], path[4096];
    image im = {0};
    snprintf(path, sizeof path, "%s/val.jsonl", dir);
    synthetic(path, 100, 25, 0, 1, 1.0);
    if (render(dir, "val", &im, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    check_frame(&im, "val_only");
    check_legend(&im, "val_only", 0, 1);
    CHECK(count(&im, 0, 0, W - 1, H - 1, BLUE) == 0, "val_only: blue pixels without training lines");
    free(im.rgb);
    return 0;
}

/* The untrained baseline alone (step 0): a plot with one square and sensible axes. */
static int case_one_point(const char *dir) {
    char err[512], path[4096];
    image im = {0};
    snprintf(path, sizeof path, "%s/one.jsonl", dir);
    write_file(path, "{\"step\": 0, \"split\": \"val\", \"loss\": 5012.25, \"spectral_convergence\": 1.0}\n");
    if (render(dir, "one", &im, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: one point: %s\n", err);
        return 1;
    }
    check_frame(&im, "one_point");
    check_legend(&im, "one_point", 0, 1);
    int red = count(&im, 0, 0, W - 1, H - 1, RED);
    CHECK(red == 2 * 49, "one_point: %d red pixels, expected one square and the legend's", red);
    free(im.rgb);
    return 0;
}

/* No loss at all (missing file, empty file, only nulls and lines without a loss): an error that
 * says so, and no PNG. */
static int case_empty(const char *dir) {
    char err[512], path[4096], png[4096];
    struct {
        const char *name, *text, *want;
    } cases[] = {
        {"empty", "", "no loss to plot yet"},
        {"nulls", "{\"step\": 1, \"split\": \"train\", \"loss\": null, \"skipped\": true}\n{\"step\": 2}\n",
         "no loss to plot yet"},
        {"garbage", "not json\n\n{\"loss\": 1.5}\n", "no loss to plot yet"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(path, sizeof path, "%s/%s.jsonl", dir, cases[k].name);
        write_file(path, cases[k].text);
        err[0] = 0;
        int rc = render(dir, cases[k].name, NULL, err, sizeof err);
        char expect[4200];
        snprintf(expect, sizeof expect, "%s: %s", path, cases[k].want);
        CHECK(rc != 0 && strncmp(err, expect, strlen(expect)) == 0, "%s: rc %d, message '%s'", cases[k].name, rc,
              err);
        snprintf(png, sizeof png, "%s/%s.png", dir, cases[k].name);
        FILE *f = fopen(png, "rb");
        CHECK(!f, "%s: a PNG was written", cases[k].name);
        if (f) fclose(f);
    }
    snprintf(path, sizeof path, "%s/missing.jsonl", dir);
    remove(path);
    int rc = render(dir, "missing", NULL, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "missing.jsonl: cannot open"), "missing: rc %d, message '%s'", rc, err);
    return 0;
}

/* Losses over many decades (tick labels switch to 1e-6 style) and over a sliver of one (linear
 * ticks): both still label the y axis. */
static int case_wide_range(const char *dir) {
    char err[512], path[4096];
    const double scales[2] = {1e-7, 1e4};
    for (int k = 0; k < 2; k++) {
        image im = {0};
        snprintf(path, sizeof path, "%s/range%d.jsonl", dir, k);
        FILE *f = fopen(path, "w");
        for (int s = 1; s <= 200; s++)
            fprintf(f, "{\"step\": %d, \"split\": \"train\", \"loss\": %.9g}\n", s * 1000,
                    k == 0 ? pow(10, 4 - s / 20.0) * scales[k] : scales[k] * (1 + 0.01 * sin(s)));
        fclose(f);
        char name[32];
        snprintf(name, sizeof name, "range%d", k);
        if (render(dir, name, &im, err, sizeof err) != 0) {
            fprintf(stderr, "FAIL: %s: %s\n", name, err);
            return 1;
        }
        check_frame(&im, name);
        check_legend(&im, name, 1, 0);
        free(im.rgb);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "render") == 0) {
        char err[512];
        if (rmx_plot_losses(argv[2], argv[3], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: test_plot CASE WORKDIR | test_plot render METRICS PNG\n");
        return 2;
    }
    const char *c = argv[1], *dir = argv[2];
    int rc = strcmp(c, "both") == 0         ? case_both(dir)
             : strcmp(c, "train_only") == 0 ? case_train_only(dir)
             : strcmp(c, "val_only") == 0   ? case_val_only(dir)
             : strcmp(c, "one_point") == 0  ? case_one_point(dir)
             : strcmp(c, "empty") == 0      ? case_empty(dir)
             : strcmp(c, "wide_range") == 0 ? case_wide_range(dir)
                                            : 2;
    if (rc == 2) fprintf(stderr, "unknown case %s\n", c);
    if (rc == 0 && failures == 0) printf("plot %s: ok\n", c);
    return rc ? rc : failures != 0;
}
