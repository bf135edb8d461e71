#include "util/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The bar last drawn and not cleared since: one terminal line, so at most one. */
static rmx_progress *g_on_screen;

double rmx_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void rmx_progress_start(rmx_progress *p, const char *label, int64_t total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start_s = rmx_now_s();
    p->last_draw_s = 0;
    p->enabled = isatty(STDERR_FILENO) && !getenv("RMX_NO_PROGRESS");
}

static void draw(const rmx_progress *p, const char *note) {
    enum { WIDTH = 30 };
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 0.0;
    if (frac > 1) frac = 1;
    int filled = (int)(frac * WIDTH);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = 0;
    double elapsed = rmx_now_s() - p->start_s;
    double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
    fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %3.0f%% eta %.0fs%s%s", p->label, bar, (long long)p->done,
            (long long)p->total, 100 * frac, eta, note ? "  " : "", note ? note : "");
    fflush(stderr);
}

void rmx_progress_update(rmx_progress *p, int64_t done, const char *note) {
    p->done = done;
    if (!p->enabled) return;
    double now = rmx_now_s();
    if (now - p->last_draw_s < 0.1 && done < p->total) return;
    p->last_draw_s = now;
    draw(p, note);
    g_on_screen = p;
}

void rmx_progress_finish(rmx_progress *p) {
    if (!p->enabled || g_on_screen != p) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
    g_on_screen = NULL;
}

void rmx_progress_clear_active(void) {
    if (g_on_screen) rmx_progress_finish(g_on_screen);
}
