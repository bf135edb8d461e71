/* bench_train_step: one training step of the brief's bench-size autoencoder on the cpu backend.
 *
 * A step is what the trainer does for one global batch on one rank: step_begin (zero the
 * gradients), forward + backward of one micro-batch of B samples, the global gradient norm (sumsq
 * read back to the host) and AdamW over the flat buffer. After --warmup steps, --steps timed steps;
 * then a large square OpenBLAS sgemm with the same thread count gives the machine's peak.
 *
 * Output: a human report, then one "RESULT key=value ..." line for run_train_bench.sh.
 * --profile times every backend call by kind and every convolution by shape (the backward split
 * into its dw + db and dx halves, which the backend computes independently anyway). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "bench/bench_step.h"

#define BRIEF_GFLOP 381.0
#define BRIEF_PARAMS 1602289

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds the whole machine spent busy (every process) since boot, from /proc/stat. */
static double machine_busy_s(void) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got != 8) return 0;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of this process (all threads). */
static double own_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) abort();
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

/* ------------------------------------------------------------------------------------------ */
/* FLOP count of the convolutions (2 per multiply-add; bias, norms and activations excluded)    */

typedef struct {
    double fwd, dw, dx;
} conv_flops;

static void count_conv(conv_flops *f, int n, int cin, int cout, int k, int hout, int wout,
                       int need_dx) {
    double x = 2.0 * n * cout * (double)hout * wout * cin * k * k;
    f->fwd += x;
    f->dw += x;
    if (need_dx) f->dx += x; /* stride 1: a transposed conv; stride 2: w^T dy; same FLOPs */
}

static void count_resblock(conv_flops *f, int n, int cin, int cout, int h, int w) {
    count_conv(f, n, cin, cout, 3, h, w, 1);
    count_conv(f, n, cout, cout, 3, h, w, 1);
    if (cin != cout) count_conv(f, n, cin, cout, 1, h, w, 1);
}

/* Walks the architecture of model/autoencoder.h; the first conv needs no input gradient. */
static conv_flops count_model(const rmx_ae_hparams *hp, int n) {
    conv_flops f = {0, 0, 0};
    int L = hp->n_levels, R = hp->res_blocks, h = hp->mels, w = hp->frames, c = hp->channels;
    count_conv(&f, n, 1, c, 3, h, w, 0);
    for (int i = 0; i < L; i++) {
        int ci = hp->channels * hp->channel_mult[i];
        for (int j = 0; j < R; j++, c = ci) count_resblock(&f, n, c, ci, h, w);
        if (i < L - 1) {
            h /= 2;
            w /= 2;
            count_conv(&f, n, c, c, 3, h, w, 1);
        }
    }
    count_resblock(&f, n, c, c, h, w);
    int moments = hp->bottleneck == RMX_AE_KL ? 2 * hp->latent_channels : hp->latent_channels;
    count_conv(&f, n, c, moments, 3, h, w, 1);
    count_conv(&f, n, hp->latent_channels, c, 3, h, w, 1);
    count_resblock(&f, n, c, c, h, w);
    for (int i = L - 1; i >= 0; i--) {
        int ci = hp->channels * hp->channel_mult[i];
        for (int j = 0; j < R; j++, c = ci) count_resblock(&f, n, c, ci, h, w);
        if (i > 0) {
            h *= 2;
            w *= 2;
            count_conv(&f, n, c, c, 3, h, w, 1);
        }
    }
    count_conv(&f, n, c, 1, 3, h, w, 1);
    return f;
}

/* ------------------------------------------------------------------------------------------ */
/* --profile: timing wrappers around the backend's function pointers                           */

enum { P_CONV_FWD, P_CONV_DW, P_CONV_DX, P_GN_FWD, P_GN_BWD, P_SILU_FWD, P_SILU_BWD, P_UPSAMPLE,
       P_AXPY_COPY_FILL, P_LATENT_LOSS, P_ADAMW, P_SUMSQ, P_COUNT };
static const char *const prof_names[P_COUNT] = {
    "conv forward", "conv backward dw+db", "conv backward dx", "groupnorm forward",
    "groupnorm backward", "silu forward", "silu backward", "upsample fwd+bwd",
    "axpy/copy/fill", "randn+sample+losses", "adamw", "sumsq"};

#define MAX_SHAPES 64
typedef struct {
    rmx_conv_shape s;
    double t[3];   /* fwd, dw+db, dx seconds */
    long calls[3]; /* fwd, dw+db, dx calls */
} shape_prof;

static struct {
    rmx_backend orig;
    double t[P_COUNT];
    double elems[P_COUNT]; /* floats written by the element-wise kinds, for a per-element rate */
    shape_prof shapes[MAX_SHAPES];
    int nshapes;
} prof;

static shape_prof *shape_entry(const rmx_conv_shape *s) {
    for (int i = 0; i < prof.nshapes; i++)
        if (!memcmp(&prof.shapes[i].s, s, sizeof *s)) return &prof.shapes[i];
    if (prof.nshapes == MAX_SHAPES) abort();
    shape_prof *e = &prof.shapes[prof.nshapes++];
    memset(e, 0, sizeof *e);
    e->s = *s;
    return e;
}

#define TIMED(cat, count, call)                                                                    \
    do {                                                                                           \
        double t0_ = now();                                                                        \
        call;                                                                                      \
        prof.t[cat] += now() - t0_;                                                                \
        prof.elems[cat] += (double)(count);                                                        \
    } while (0)

static void w_conv_fwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                       const float *b, float *y, float *ws) {
    double t0 = now();
    prof.orig.conv2d_fwd(be, s, x, w, b, y, ws);
    double dt = now() - t0;
    prof.t[P_CONV_FWD] += dt;
    shape_entry(s)->t[0] += dt;
    shape_entry(s)->calls[0]++;
}

static void w_conv_bwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db, float *ws) {
    shape_prof *e = shape_entry(s);
    double t0 = now();
    if (dw || db) prof.orig.conv2d_bwd(be, s, x, w, dy, NULL, dw, db, ws);
    double t1 = now();
    if (dx) prof.orig.conv2d_bwd(be, s, x, w, dy, dx, NULL, NULL, ws);
    double t2 = now();
    prof.t[P_CONV_DW] += t1 - t0;
    prof.t[P_CONV_DX] += t2 - t1;
    e->t[1] += t1 - t0;
    e->t[2] += t2 - t1;
    e->calls[1] += dw || db;
    e->calls[2] += dx != NULL;
}

static void w_gn_fwd(rmx_backend *be, int n, int c, int hw, int groups, float eps, const float *x,
                     const float *gamma, const float *beta, float *y, float *mean, float *rstd) {
    TIMED(P_GN_FWD, (size_t)n * c * hw,
          prof.orig.groupnorm_fwd(be, n, c, hw, groups, eps, x, gamma, beta, y, mean, rstd));
}
static void w_gn_bwd(rmx_backend *be, int n, int c, int hw, int groups, const float *x,
                     const float *gamma, const float *mean, const float *rstd, const float *dy,
                     float *dx, float *dgamma, float *dbeta) {
    TIMED(P_GN_BWD, (size_t)n * c * hw,
          prof.orig.groupnorm_bwd(be, n, c, hw, groups, x, gamma, mean, rstd, dy, dx, dgamma,
                                  dbeta));
}
static void w_silu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    TIMED(P_SILU_FWD, n, prof.orig.silu_fwd(be, n, x, y));
}
static void w_silu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    TIMED(P_SILU_BWD, n, prof.orig.silu_bwd(be, n, x, dy, dx));
}
static void w_up_fwd(rmx_backend *be, int n, int c, int h, int w, const float *x, float *y) {
    TIMED(P_UPSAMPLE, 4.0 * n * c * h * w, prof.orig.upsample2x_fwd(be, n, c, h, w, x, y));
}
static void w_up_bwd(rmx_backend *be, int n, int c, int h, int w, const float *dy, float *dx) {
    TIMED(P_UPSAMPLE, (double)n * c * h * w, prof.orig.upsample2x_bwd(be, n, c, h, w, dy, dx));
}
static void w_axpy(rmx_backend *be, size_t n, float alpha, const float *x, float *y) {
    TIMED(P_AXPY_COPY_FILL, n, prof.orig.axpy(be, n, alpha, x, y));
}
static void w_copy(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    TIMED(P_AXPY_COPY_FILL, bytes / sizeof(float), prof.orig.copy(be, dst, src, bytes));
}
static void w_fill(rmx_backend *be, float *x, float value, size_t n) {
    TIMED(P_AXPY_COPY_FILL, n, prof.orig.fill(be, x, value, n));
}
static void w_randn(rmx_backend *be, float *out, int n_samples, size_t per_sample, uint64_t seed,
                    uint32_t purpose, uint64_t step, const int64_t *sample_index) {
    TIMED(P_LATENT_LOSS, 0,
          prof.orig.randn(be, out, n_samples, per_sample, seed, purpose, step, sample_index));
}
static void w_gs_fwd(rmx_backend *be, int n, int c, int hw, const float *moments, const float *eps,
                     float *z) {
    TIMED(P_LATENT_LOSS, 0, prof.orig.gaussian_sample_fwd(be, n, c, hw, moments, eps, z));
}
static void w_gs_bwd(rmx_backend *be, int n, int c, int hw, const float *moments, const float *eps,
                     const float *dz, float *dmoments) {
    TIMED(P_LATENT_LOSS, 0, prof.orig.gaussian_sample_bwd(be, n, c, hw, moments, eps, dz, dmoments));
}
static void w_mse(rmx_backend *be, size_t count, const float *xhat, const float *x, float scale,
                  float *loss, float *dxhat) {
    TIMED(P_LATENT_LOSS, 0, prof.orig.mse_loss(be, count, xhat, x, scale, loss, dxhat));
}
static void w_kl(rmx_backend *be, int n, int c, int hw, const float *moments, float scale,
                 float *loss, float *dmoments) {
    TIMED(P_LATENT_LOSS, 0, prof.orig.kl_loss(be, n, c, hw, moments, scale, loss, dmoments));
}
static void w_adamw(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                    float *m, float *v, const rmx_adamw_hparams *hp) {
    TIMED(P_ADAMW, n, prof.orig.adamw(be, n, n_decay, param, grad, m, v, hp));
}
static void w_sumsq(rmx_backend *be, size_t n, const float *x, float *out) {
    TIMED(P_SUMSQ, 0, prof.orig.sumsq(be, n, x, out));
}

static void install_profiler(rmx_backend *be) {
    prof.orig = *be;
    be->conv2d_fwd = w_conv_fwd;
    be->conv2d_bwd = w_conv_bwd;
    be->groupnorm_fwd = w_gn_fwd;
    be->groupnorm_bwd = w_gn_bwd;
    be->silu_fwd = w_silu_fwd;
    be->silu_bwd = w_silu_bwd;
    be->upsample2x_fwd = w_up_fwd;
    be->upsample2x_bwd = w_up_bwd;
    be->axpy = w_axpy;
    be->copy = w_copy;
    be->fill = w_fill;
    be->randn = w_randn;
    be->gaussian_sample_fwd = w_gs_fwd;
    be->gaussian_sample_bwd = w_gs_bwd;
    be->mse_loss = w_mse;
    be->kl_loss = w_kl;
    be->adamw = w_adamw;
    be->sumsq = w_sumsq;
}

static void print_profile(int steps, double step_s) {
    printf("\nprofile (mean per timed step; %% of the mean step; the sum leaves out the model's own "
           "code between calls):\n");
    double sum = 0;
    for (int i = 0; i < P_COUNT; i++) {
        double ms = 1e3 * prof.t[i] / steps;
        sum += ms;
        printf("  %-22s %9.1f ms %5.1f %%", prof_names[i], ms, 100.0 * ms / (1e3 * step_s));
        if (prof.elems[i] > 0)
            printf("  %6.1f M floats out, %5.2f ns each", prof.elems[i] / steps * 1e-6,
                   1e9 * prof.t[i] / prof.elems[i]);
        printf("\n");
    }
    printf("  %-22s %9.1f ms %5.1f %%\n", "sum", sum, 100.0 * sum / (1e3 * step_s));
    printf("\nconvolutions by shape (n cin h w -> cout k stride; ms per step and GFLOP/s):\n");
    printf("  %-34s %5s %15s %15s %15s\n", "shape", "calls", "forward", "dw+db", "dx");
    for (int i = 0; i < prof.nshapes; i++) {
        const shape_prof *e = &prof.shapes[i];
        const rmx_conv_shape *s = &e->s;
        double gf = 2.0 * s->n * s->cout * (double)s->hout * s->wout * s->cin * s->k * s->k * 1e-9;
        double calls = (double)e->calls[0] / steps;
        char name[64];
        snprintf(name, sizeof name, "%d %3d %3dx%-3d -> %3d k%d s%d", s->n, s->cin, s->h, s->w,
                 s->cout, s->k, s->stride);
        printf("  %-34s %5.0f", name, calls);
        for (int j = 0; j < 3; j++) {
            double ms = 1e3 * e->t[j] / steps;
            if (e->calls[j] > 0)
                printf(" %6.1f ms %5.1f", ms, (double)e->calls[j] / steps * gf / (ms * 1e-3));
            else
                printf(" %15s", "-");
        }
        printf("\n");
    }
}

/* ------------------------------------------------------------------------------------------ */

/* GFLOP/s of C = A B with n x n matrices on `threads` OpenBLAS threads: the median of reps. */
static double sgemm_peak(int n, int threads, int reps) {
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) abort();
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    openblas_set_num_threads(threads);
    double *rate = malloc((size_t)reps * sizeof *rate);
    if (!rate) abort();
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        if (r >= 0) rate[r] = 2.0 * n * (double)n * n / dt * 1e-9;
    }
    openblas_set_num_threads(1); /* the cpu backend's setting */
    double peak = median(rate, reps);
    free(rate);
    free(a);
    free(b);
    free(c);
    return peak;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_train_step [--threads N] [--steps N] [--warmup N] [--batch B]\n"
                    "                        [--sgemm-n N] [--sgemm-reps N] [--profile]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int threads = omp_get_num_procs(), steps = 5, warmup = 1, profile = 0;
    int sgemm_n = 2048, sgemm_reps = 5;
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--profile")) {
            profile = 1;
            continue;
        }
        if (i + 1 >= argc) usage();
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--steps")) steps = v;
        else if (!strcmp(argv[i], "--warmup")) warmup = v;
        else if (!strcmp(argv[i], "--batch")) hp.micro_batch = v;
        else if (!strcmp(argv[i], "--sgemm-n")) sgemm_n = v;
        else if (!strcmp(argv[i], "--sgemm-reps")) sgemm_reps = v;
        else usage();
        i++;
    }
    if (threads < 1 || steps < 1 || warmup < 0 || hp.micro_batch < 1 || sgemm_n < 1 ||
        sgemm_reps < 1)
        usage();
    const int batch = hp.micro_batch;

    rmx_backend *be = rmx_backend_cpu_create(threads);
    char err[512];
    rmx_ae *ae = rmx_ae_create(be, &hp, BENCH_SEED, err, sizeof err);
    if (!ae) {
        fprintf(stderr, "bench_train_step: %s\n", err);
        return 1;
    }
    if (profile) install_profiler(be);
    rmx_params *p = rmx_ae_params(ae);

    bench_batch in = bench_batch_make(be, &hp, batch);
    float *x = in.x, *dev = in.scalars;
    int64_t *index = in.index;

    printf("Remixer train step: autoencoder 1x%dx%d, C %d, mult [%d, %d, %d], res_blocks %d, "
           "latent %d, kl; batch %d; %zu parameters (brief: %d); cpu backend, %d threads; OpenBLAS "
           "kernels: %s\n",
           hp.mels, hp.frames, hp.channels, hp.channel_mult[0], hp.channel_mult[1],
           hp.channel_mult[2], hp.res_blocks, hp.latent_channels, batch, p->numel, BRIEF_PARAMS,
           threads, openblas_get_corename());

    double *times = malloc((size_t)steps * sizeof *times);
    if (!times) abort();
    /* Other processes' CPU time during the timed steps, as a share of the machine: on 2 cores
     * anything else running slows every OpenMP region down to its delayed thread. */
    const int cores = omp_get_num_procs();
    double busy0 = 0, own0 = 0, t_start = 0;
    float first_loss = 0, last_loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) { /* the profile and the load count the timed steps only */
            busy0 = machine_busy_s();
            own0 = own_cpu_s();
            t_start = now();
            memset(prof.t, 0, sizeof prof.t);
            memset(prof.elems, 0, sizeof prof.elems);
            prof.nshapes = 0;
        }
        double t0 = now();
        be->fill(be, dev, 0.0f, RMX_AE_N_LOSS + 1);
        rmx_ae_step_begin(ae);
        rmx_ae_forward_backward(ae, batch, x, NULL, index, BENCH_SEED, s, 1.0f / (float)batch, dev);
        be->sumsq(be, p->span, p->grad, dev + RMX_AE_N_LOSS);
        float host[RMX_AE_N_LOSS + 1];
        be->to_host(be, host, dev, sizeof host);
        rmx_adamw_hparams ahp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                 .weight_decay = 0.0f, .t = s + 1};
        be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ahp);
        be->sync(be);
        double dt = now() - t0;
        float loss = (float)rmx_ae_total_loss(&hp, host);
        if (!isfinite(loss) || !isfinite(host[RMX_AE_N_LOSS])) {
            fprintf(stderr, "bench_train_step: non-finite loss or gradient at step %d\n", s);
            return 1;
        }
        if (s == 0) first_loss = loss;
        last_loss = loss;
        if (s >= warmup) times[s - warmup] = dt;
        printf("  step %d%s: %8.1f ms  loss %.6g  grad norm %.4g\n", s, s < warmup ? " (warm-up)" : "",
               1e3 * dt, loss, sqrt(host[RMX_AE_N_LOSS]));
    }
    double foreign = (machine_busy_s() - busy0) - (own_cpu_s() - own0);
    double foreign_pct = 100.0 * (foreign > 0 ? foreign : 0) / ((now() - t_start) * cores);
    double med = median(times, steps), best = times[0], mean = 0;
    for (int s = 0; s < steps; s++) mean += times[s] / steps;
    for (int s = 1; s < steps; s++) best = times[s] < best ? times[s] : best;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;
    double arena_mib = (double)rmx_ae_arena_bytes(ae) / (1024.0 * 1024.0);
    double params_mib = 4.0 * p->span * sizeof(float) / (1024.0 * 1024.0);
    if (profile) print_profile(steps, mean);

    conv_flops f = count_model(&hp, batch);
    double own_gflop = (f.fwd + f.dw + f.dx) * 1e-9;
    double brief_gflop = BRIEF_GFLOP * batch / 8.0;
    double busy1 = machine_busy_s(), own1 = own_cpu_s(), t1 = now();
    double peak = sgemm_peak(sgemm_n, threads, sgemm_reps);
    double sgemm_foreign = (machine_busy_s() - busy1) - (own_cpu_s() - own1);
    double sgemm_foreign_pct =
        100.0 * (sgemm_foreign > 0 ? sgemm_foreign : 0) / ((now() - t1) * cores);
    double gflops = brief_gflop / med, own_gflops = own_gflop / med;

    printf("\nloss %.6g -> %.6g over %d steps\n", first_loss, last_loss, warmup + steps);
    printf("step time: median %.1f ms, min %.1f ms (%d timed steps after %d warm-up); other "
           "processes used %.1f %% of the %d cores meanwhile\n", 1e3 * med, 1e3 * best, steps, warmup,
           foreign_pct, cores);
    printf("conv FLOP per step (own count): forward %.1f G, dw %.1f G, dx %.1f G, total %.1f G; "
           "brief: %.0f G (3 x forward = %.1f G)\n",
           f.fwd * 1e-9, f.dw * 1e-9, f.dx * 1e-9, own_gflop, brief_gflop, 3 * f.fwd * 1e-9);
    printf("achieved: %.1f GFLOP/s with the brief's %.0f GFLOP, %.1f GFLOP/s with the own count\n",
           gflops, brief_gflop, own_gflops);
    printf("OpenBLAS sgemm %d^3, %d threads, median of %d: %.1f GFLOP/s (other processes %.1f %%); "
           "the step reaches %.1f %% of it\n", sgemm_n, threads, sgemm_reps, peak, sgemm_foreign_pct,
           100.0 * gflops / peak);
    printf("peak memory (ru_maxrss, before the sgemm): %.1f MiB (arena %.1f MiB, parameters + grads "
           "+ Adam m, v %.1f MiB)\n", rss_mib, arena_mib, params_mib);
    printf("RESULT openblas_core=%s threads=%d batch=%d step_median_ms=%.1f step_min_ms=%.1f "
           "gflops_brief=%.1f gflops_own=%.1f own_gflop=%.1f sgemm_peak_gflops=%.1f "
           "peak_share_pct=%.1f maxrss_mib=%.1f foreign_cpu_pct=%.1f sgemm_foreign_cpu_pct=%.1f\n",
           openblas_get_corename(), threads, batch, 1e3 * med, 1e3 * best, gflops, own_gflops,
           own_gflop, peak, 100.0 * gflops / peak, rss_mib, foreign_pct, sgemm_foreign_pct);

    free(times);
    bench_batch_free(be, &in);
    rmx_ae_free(ae);
    be->destroy(be);
    return 0;
}
