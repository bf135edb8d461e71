/* Throughput of the cpu backend's transformer GEMM ops at DiT-S shapes (d 384, 6 heads, MLP 4d),
 * against the machine's sgemm rate.
 *
 *   bench_transformer [--threads N] [--batch B] [--tokens T ...] [--reps R] [--cpu-time]
 *
 * Prints, per shape: the linears of a block (qkv, proj, fc1, fc2) forward and backward (dx, dw,
 * db), attention forward and backward, as milliseconds (the best of R runs during which other
 * processes used under 10 % of the machine, when there is one) and GFLOP/s; and the sgemm
 * reference: one 2048^3 sgemm per thread, all threads at once (the rate the backend's one-sgemm-
 * per-thread decomposition can reach), through the same GEMM the ops call (rmx_cpu_sgemm), and
 * OpenBLAS's cblas_sgemm for comparison.
 *
 * FLOPs counted (2 per multiply-add): linear forward 2 R I O, backward 4 R I O (dx and dw);
 * attention forward 4 B N^2 d (Q K^T and P V), backward 10 B N^2 d (the recomputed Q K^T, dO V^T,
 * dS K, dS^T Q, P^T dO). Softmax, bias and reductions are not counted. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *rnd(rmx_backend *be, size_t n, float scale) {
    float *p = be->alloc(be, n * sizeof(float));
    uint64_t s = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        p[i] = scale * ((float)((s * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f - 0.5f);
    }
    return p;
}

/* CPU seconds the whole machine spent busy (every process) since boot, from /proc/stat. */
static double machine_busy_s(void) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                     &v[6], &v[7]);
    fclose(f);
    if (got != 8) return 0;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double own_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* Runs taken so far, and runs where other processes took more than 10 % of the machine. */
static int g_runs, g_noisy;
/* --cpu-time: time runs by this process's CPU seconds (user + system) instead of the wall clock,
 * which on a shared machine leaves out the time other processes held the cores; meant for
 * --threads 1, where it is the single core's throughput whatever else runs. */
static int g_cpu_time;

/* The best of `reps` timings of fn(ctx) (after one warm-up call), among the runs during which other
 * processes used under 10 % of the machine when there are such runs (a shared 2-core machine
 * slows every parallel region down to its delayed thread). */
typedef void (*bench_fn)(void *ctx);
static double best_of(int reps, bench_fn fn, void *ctx) {
    fn(ctx);
    double best = 1e30, best_quiet = 1e30;
    int cores = omp_get_num_procs();
    for (int r = 0; r < reps; r++) {
        double b0 = machine_busy_s(), o0 = own_cpu_s(), t0 = now();
        fn(ctx);
        double t = now() - t0, own = own_cpu_s() - o0, foreign = (machine_busy_s() - b0) - own;
        if (g_cpu_time) t = own;
        int quiet = foreign < 0.1 * t * cores;
        g_runs++;
        g_noisy += !quiet;
        if (t < best) best = t;
        if (quiet && t < best_quiet) best_quiet = t;
    }
    return best_quiet < 1e30 ? best_quiet : best;
}

/* ---- sgemm reference ---- */

typedef struct {
    int nt, n, own;
    float **a, **b, **c;
} peak_ctx;

static void peak_run(void *vc) {
    peak_ctx *p = vc;
#pragma omp parallel num_threads(p->nt)
    {
        int t = omp_get_thread_num();
        if (p->own)
            rmx_cpu_sgemm(0, 0, p->n, p->n, p->n, 1.0f, p->a[t], p->n, p->b[t], p->n, 0.0f, p->c[t], p->n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->n, p->n, p->n, 1.0f, p->a[t], p->n,
                        p->b[t], p->n, 0.0f, p->c[t], p->n);
    }
}

static double sgemm_peak(rmx_backend *be, int nt, int own, int reps) {
    int n = 2048;
    peak_ctx p = {
        nt, n, own, calloc(nt, sizeof(float *)), calloc(nt, sizeof(float *)), calloc(nt, sizeof(float *))};
    for (int t = 0; t < nt; t++)
        p.a[t] = rnd(be, (size_t)n * n, 1), p.b[t] = rnd(be, (size_t)n * n, 1),
        p.c[t] = rnd(be, (size_t)n * n, 1);
    double s = best_of(reps, peak_run, &p);
    for (int t = 0; t < nt; t++) be->free(be, p.a[t]), be->free(be, p.b[t]), be->free(be, p.c[t]);
    free(p.a), free(p.b), free(p.c);
    return 2.0 * n * n * (double)n * nt / s / 1e9;
}

/* ---- ops ---- */

typedef struct {
    rmx_backend *be;
    int rows, in, out, batch, tokens, d, heads;
    float *x, *w, *b, *y, *dy, *dx, *dw, *db, *qkv, *o, *lse, *dout, *dqkv, *ws;
} op_ctx;

static void lin_fwd(void *v) {
    op_ctx *c = v;
    c->be->linear_fwd(c->be, c->rows, c->in, c->out, c->x, c->w, c->b, c->y);
}

static void lin_bwd(void *v) {
    op_ctx *c = v;
    c->be->linear_bwd(c->be, c->rows, c->in, c->out, c->x, c->w, c->dy, c->dx, c->dw, c->db);
}

static void att_fwd(void *v) {
    op_ctx *c = v;
    c->be->attention_fwd(c->be, c->batch, c->tokens, c->d, c->heads, c->qkv, c->o, c->lse, c->ws);
}

static void att_bwd(void *v) {
    op_ctx *c = v;
    c->be->attention_bwd(c->be, c->batch, c->tokens, c->d, c->heads, c->qkv, c->o, c->lse, c->dout, c->dqkv,
                         c->ws);
}

static void bench_linear(rmx_backend *be, const char *name, int rows, int in, int out, int reps, double *tf,
                         double *tb, double *flops) {
    op_ctx c = {be,   rows, in,   out,  0,    0,    0,    0,    NULL, NULL, NULL,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    c.x = rnd(be, (size_t)rows * in, 2), c.w = rnd(be, (size_t)out * in, 0.1f), c.b = rnd(be, out, 1);
    c.y = rnd(be, (size_t)rows * out, 1), c.dy = rnd(be, (size_t)rows * out, 1),
    c.dx = rnd(be, (size_t)rows * in, 1);
    c.dw = rnd(be, (size_t)out * in, 1), c.db = rnd(be, out, 1);
    double f = best_of(reps, lin_fwd, &c), b = best_of(reps, lin_bwd, &c), fl = 2.0 * rows * in * (double)out;
    printf("  linear %-5s %5d x %4d -> %4d   fwd %7.2f ms %6.1f GFLOP/s   bwd %7.2f ms %6.1f GFLOP/s\n", name,
           rows, in, out, 1e3 * f, fl / f / 1e9, 1e3 * b, 2 * fl / b / 1e9);
    *tf += f, *tb += b, *flops += fl;
    be->free(be, c.x), be->free(be, c.w), be->free(be, c.b), be->free(be, c.y), be->free(be, c.dy);
    be->free(be, c.dx), be->free(be, c.dw), be->free(be, c.db);
}

static void bench_attention(rmx_backend *be, int batch, int tokens, int d, int heads, int reps) {
    op_ctx c = {be,   0,    0,    0,    batch, tokens, d,    heads, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL, NULL,  NULL,   NULL, NULL,  NULL, NULL, NULL};
    size_t nq = (size_t)batch * tokens * 3 * d, no = (size_t)batch * tokens * d;
    size_t nws = be->attention_workspace(be, batch, tokens, d, heads);
    c.qkv = rnd(be, nq, 4), c.o = rnd(be, no, 1), c.lse = rnd(be, (size_t)batch * heads * tokens, 1);
    c.dout = rnd(be, no, 1), c.dqkv = rnd(be, nq, 1), c.ws = rnd(be, nws, 1);
    double f = best_of(reps, att_fwd, &c), b = best_of(reps, att_bwd, &c);
    double fl = 2.0 * batch * (double)tokens * tokens * d; /* one of the GEMMs */
    double full = (double)batch * heads * tokens * (double)tokens * 4 / 1048576.0;
    printf("  attention B %d N %d d %d H %d   fwd %7.2f ms %6.1f GFLOP/s   bwd %7.2f ms %6.1f GFLOP/s   "
           "workspace %.1f MiB (all heads' N x N scores: %.0f MiB)\n",
           batch, tokens, d, heads, 1e3 * f, 2 * fl / f / 1e9, 1e3 * b, 5 * fl / b / 1e9, nws * 4 / 1048576.0,
           full);
    be->free(be, c.qkv), be->free(be, c.o), be->free(be, c.lse), be->free(be, c.dout), be->free(be, c.dqkv);
    be->free(be, c.ws);
}

int main(int argc, char **argv) {
    int threads = 0, batch = 8, reps = 5, ntok = 0, tokens[8];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc && ntok < 8)
            tokens[ntok++] = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu-time"))
            g_cpu_time = 1;
        else {
            fprintf(stderr, "usage: bench_transformer [--threads N] [--batch B] [--tokens T]... [--reps R] "
                            "[--cpu-time]\n");
            return 2;
        }
    }
    if (!ntok) tokens[ntok++] = 512, tokens[ntok++] = 2048;
    rmx_backend *be = rmx_backend_cpu_create(threads);
    int nt = rmx_cpu_threads(be), d = 384, heads = 6;
    const char *generic = getenv("RMX_CPU_GENERIC");
    printf("cpu backend, %d threads; OpenBLAS %s kernels%s; %s\n", nt, openblas_get_corename(),
           generic && *generic && strcmp(generic, "0") ? "; RMX_CPU_GENERIC set" : "",
           g_cpu_time ? "timed in this process's CPU seconds" : "timed by the wall clock");
    double peak_own = sgemm_peak(be, nt, 1, reps), peak_blas = sgemm_peak(be, nt, 0, reps);
    double peak1 = sgemm_peak(be, 1, 1, reps);
    printf("sgemm 2048^3, one per thread at once: %.1f GFLOP/s (rmx_cpu_sgemm; 1 thread alone %.1f), "
           "%.1f GFLOP/s (cblas_sgemm)\n",
           peak_own, peak1, peak_blas);
    for (int k = 0; k < ntok; k++) {
        int rows = batch * tokens[k];
        printf("DiT-S block, batch %d, %d tokens (%d rows):\n", batch, tokens[k], rows);
        double tf = 0, tb = 0, fl = 0;
        bench_linear(be, "qkv", rows, d, 3 * d, reps, &tf, &tb, &fl);
        bench_linear(be, "proj", rows, d, d, reps, &tf, &tb, &fl);
        bench_linear(be, "fc1", rows, d, 4 * d, reps, &tf, &tb, &fl);
        bench_linear(be, "fc2", rows, 4 * d, d, reps, &tf, &tb, &fl);
        printf("  linears together: fwd %.1f GFLOP/s (%.0f%% of the sgemm rate), bwd %.1f GFLOP/s (%.0f%%)\n",
               fl / tf / 1e9, 100 * fl / tf / 1e9 / peak_own, 2 * fl / tb / 1e9,
               100 * 2 * fl / tb / 1e9 / peak_own);
        bench_attention(be, batch, tokens[k], d, heads, reps);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak memory (ru_maxrss, inputs and outputs included): %.0f MiB\n", ru.ru_maxrss / 1024.0);
    printf("%d timed runs, %d of them with other processes above 10%% of the machine (best quiet run kept "
           "where there was one)\n",
           g_runs, g_noisy);
    be->destroy(be);
    return 0;
}
