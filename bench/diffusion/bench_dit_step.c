/* bench_dit_step: one stage-2 training step of the DiT (model/dit.h) at the brief's bench size,
 * on the cpu backend (or the cuda backend: --backend cuda), against the PyTorch twin
 * (torch_dit_step.py) on the same weights and inputs.
 *
 * A step is what the trainer does for one micro-batch on one rank (train/stage_diffusion.c and
 * train/trainer.c, no all-reduce, no clipping): zero the gradients; noise the latents,
 * z_t = a_t z0 + b_t eps (axpby_samples); eps_hat = DiT(z_t, t, y); the eps-prediction loss
 * mean((eps_hat - eps)^2) (mse_loss with scale 1 / (n C H W)) and its gradient; the backward;
 * the gradient's sum of squares read back to the host (the global norm); AdamW (lr 1e-4, betas
 * 0.9 / 0.999, eps 1e-8, weight decay 0); the EMA of the weights (ema_update, the trainer's
 * warmed-up decay min(0.9999, (1 + k) / (10 + k)) at step k). The inputs (z0, eps, t, y) are the
 * same every step; the timesteps and labels are fixed per sample (the null class included).
 *
 * Weights and inputs ("the case"): every trained tensor randomised (as make_dit_reference.py:
 * matrices U(+-sqrt(3 / fan_in)), the label table U(+-1), biases U(+-0.2)), so that the zero-
 * initialised adaLN and final layers carry real values and the loss check below means something;
 * pos_embed the fixed sin-cos grid. Drawn from Philox (seed, RMX_RNG_DEMO, ...).
 *   --write FILE   makes the case, runs one forward + backward at those weights (no update), and
 *                  writes weights, inputs, that loss and gradient norm to FILE (format below),
 *                  which torch_dit_step.py loads; then exits.
 *   --case FILE    loads the weights and inputs from FILE (the same numbers, whoever wrote them)
 *                  and checks that the loss of step 0 (before any update) is FILE's loss to
 *                  --tol relative (exit 1 otherwise), so the timed steps do the checked work.
 * Without either, the case is made in memory and nothing is checked.
 *
 * After --warmup steps, --steps timed steps (median, min). cpu: GFLOP/s from
 * rmx_dit_flops_per_sample x batch x 3 (forward + backward), then the machine's sgemm peak with
 * the same thread count (OpenBLAS cblas_sgemm 2048^3, as bench/train; plus the backend's own GEMM,
 * rmx_cpu_sgemm, one 2048^3 per thread at once, where it runs AVX-512), peak memory (ru_maxrss).
 * cuda: TFLOP/s against the fp32 and TF32 peaks (--peak-fp32, --peak-tf32; H100 SXM / H200 by
 * default), device memory in use. --profile times every backend call by kind (linears by shape,
 * their backward split into dx and dw + db, as two calls).
 *
 * Output: a human report, then one "RESULT key=value ..." line for run_dit_bench.sh and
 * run_dit_cuda_bench.sh. Exit 77 when the cuda backend cannot be created (no GPU).
 *
 * Case file: a text header, one item per line, then the binary data (little-endian) of the items
 * "tensor" and "input" in header order:
 *   RMXDIT-BENCH-CASE 1
 *   <hyper-parameter> <value>     in_channels height width patch hidden depth heads mlp_ratio
 *                                 num_classes freq_dim batch seed backend
 *   loss <float>                  step 0's loss (the writer's backend)
 *   grad_norm <float>             its gradient's global 2-norm
 *   tensor <name> <ndim> <dims>   float32, trained registry in order, then pos_embed
 *   input <name> <ndim> <dims>    z0, eps [B, C, H, W]; t, a, b float32 [B]; y int32 [B]
 *   output eps_hat <ndim> <dims>  step 0's model output [B, C, H, W] (the twin compares it)
 *   end
 */
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
#include "kernels/cpu/cpu.h"
#include "model/diffusion.h"
#include "model/dit.h"
#include "model/params.h"
#include "util/rng.h"

#ifdef BENCH_DIT_CUDART
#include <cuda_runtime_api.h>
#endif

#define CASE_MAGIC "RMXDIT-BENCH-CASE 1"
#define CASE_SEED 42u

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

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_dit_step: out of memory\n");
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* --profile: timing wrappers around the backend's function pointers                           */

enum {
    P_LIN_FWD, P_LIN_DX, P_LIN_DW, P_ATT_FWD, P_ATT_BWD, P_LN_FWD, P_LN_BWD, P_GELU_FWD,
    P_GELU_BWD, P_MOD_FWD, P_MOD_BWD, P_GATE_FWD, P_GATE_BWD, P_AXPY_ADD, P_COPY_FILL, P_EMBED,
    P_LOSS_NOISE, P_SUMSQ, P_ADAMW, P_EMA, P_COUNT
};
static const char *const prof_names[P_COUNT] = {
    "linear forward", "linear backward dx", "linear backward dw+db", "attention forward",
    "attention backward", "layernorm forward", "layernorm backward",
    "gelu forward (x2: recomputed)", "gelu backward", "modulate fwd (x2: recomputed)",
    "modulate backward", "gated residual fwd", "gated residual bwd", "axpy / add",
    "copy / fill", "patchify, embeddings, silu", "noising + mse loss", "sumsq (grad norm)",
    "adamw", "ema update"};

#define MAX_SHAPES 32
typedef struct {
    int rows, in, out;
    double t[3];   /* forward, dx, dw+db seconds */
    long calls[3];
} lin_prof;

static struct {
    rmx_backend orig;
    int on;
    double t[P_COUNT];
    double flop[P_COUNT]; /* GEMM FLOPs of the linear and attention kinds */
    long calls[P_COUNT];
    lin_prof lin[MAX_SHAPES];
    int nlin;
    int d, dm, heads; /* to name the linears */
} prof;

static lin_prof *lin_entry(int rows, int in, int out) {
    for (int i = 0; i < prof.nlin; i++)
        if (prof.lin[i].rows == rows && prof.lin[i].in == in && prof.lin[i].out == out)
            return &prof.lin[i];
    if (prof.nlin == MAX_SHAPES) abort();
    lin_prof *e = &prof.lin[prof.nlin++];
    memset(e, 0, sizeof *e);
    e->rows = rows;
    e->in = in;
    e->out = out;
    return e;
}

/* Ends a timed call: the queued work is waited for (a no-op on the cpu backend). */
static double stop(rmx_backend *be, double t0) {
    prof.orig.sync(be);
    return now() - t0;
}

#define TIMED(cat, call)                                                                           \
    do {                                                                                           \
        prof.orig.sync(be);                                                                        \
        double t0_ = now();                                                                        \
        call;                                                                                      \
        prof.t[cat] += stop(be, t0_);                                                              \
        prof.calls[cat]++;                                                                         \
    } while (0)

static void w_linear_fwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                         const float *b, float *y) {
    prof.orig.sync(be);
    double t0 = now();
    prof.orig.linear_fwd(be, rows, in, out, x, w, b, y);
    double dt = stop(be, t0);
    lin_prof *e = lin_entry(rows, in, out);
    e->t[0] += dt;
    e->calls[0]++;
    prof.t[P_LIN_FWD] += dt;
    prof.flop[P_LIN_FWD] += 2.0 * rows * (double)in * out;
    prof.calls[P_LIN_FWD]++;
}

static void w_linear_bwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db) {
    lin_prof *e = lin_entry(rows, in, out);
    double f = 2.0 * rows * (double)in * out;
    if (dx) {
        prof.orig.sync(be);
        double t0 = now();
        prof.orig.linear_bwd(be, rows, in, out, x, w, dy, dx, NULL, NULL);
        double dt = stop(be, t0);
        e->t[1] += dt;
        e->calls[1]++;
        prof.t[P_LIN_DX] += dt;
        prof.flop[P_LIN_DX] += f;
        prof.calls[P_LIN_DX]++;
    }
    if (dw || db) {
        prof.orig.sync(be);
        double t0 = now();
        prof.orig.linear_bwd(be, rows, in, out, x, w, dy, NULL, dw, db);
        double dt = stop(be, t0);
        e->t[2] += dt;
        e->calls[2]++;
        prof.t[P_LIN_DW] += dt;
        prof.flop[P_LIN_DW] += dw ? f : 0;
        prof.calls[P_LIN_DW]++;
    }
}

static void w_att_fwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                      float *out, float *lse, float *ws) {
    TIMED(P_ATT_FWD, prof.orig.attention_fwd(be, batch, tokens, d, heads, qkv, out, lse, ws));
    prof.flop[P_ATT_FWD] += 4.0 * batch * (double)tokens * tokens * d; /* Q K^T, P V */
}
static void w_att_bwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                      const float *out, const float *lse, const float *dout, float *dqkv,
                      float *ws) {
    TIMED(P_ATT_BWD,
          prof.orig.attention_bwd(be, batch, tokens, d, heads, qkv, out, lse, dout, dqkv, ws));
    /* the recomputed Q K^T, dO V^T, dS K, dS^T Q, P^T dO */
    prof.flop[P_ATT_BWD] += 10.0 * batch * (double)tokens * tokens * d;
}
static void w_ln_fwd(rmx_backend *be, int rows, int d, float eps, const float *x, float *y,
                     float *rstd) {
    TIMED(P_LN_FWD, prof.orig.layernorm_fwd(be, rows, d, eps, x, y, rstd));
}
static void w_ln_bwd(rmx_backend *be, int rows, int d, const float *y, const float *rstd,
                     const float *dy, float *dx) {
    TIMED(P_LN_BWD, prof.orig.layernorm_bwd(be, rows, d, y, rstd, dy, dx));
}
static void w_gelu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    TIMED(P_GELU_FWD, prof.orig.gelu_fwd(be, n, x, y));
}
static void w_gelu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    TIMED(P_GELU_BWD, prof.orig.gelu_bwd(be, n, x, dy, dx));
}
static void w_mod_fwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                      const float *shift, const float *scale, int ld, float *y) {
    TIMED(P_MOD_FWD, prof.orig.modulate_fwd(be, batch, tokens, d, x, shift, scale, ld, y));
}
static void w_mod_bwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                      const float *scale, int ld, const float *dy, float *dx, float *dshift,
                      float *dscale) {
    TIMED(P_MOD_BWD,
          prof.orig.modulate_bwd(be, batch, tokens, d, x, scale, ld, dy, dx, dshift, dscale));
}
static void w_gate_fwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                       const float *gate, int ld, float *y) {
    TIMED(P_GATE_FWD, prof.orig.gated_add_fwd(be, batch, tokens, d, h, gate, ld, y));
}
static void w_gate_bwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                       const float *gate, int ld, const float *dy, float *dh, float *dgate) {
    TIMED(P_GATE_BWD, prof.orig.gated_add_bwd(be, batch, tokens, d, h, gate, ld, dy, dh, dgate));
}
static void w_axpy(rmx_backend *be, size_t n, float alpha, const float *x, float *y) {
    TIMED(P_AXPY_ADD, prof.orig.axpy(be, n, alpha, x, y));
}
static void w_add(rmx_backend *be, size_t n, const float *a, const float *b, float *y) {
    TIMED(P_AXPY_ADD, prof.orig.add(be, n, a, b, y));
}
static void w_copy(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    TIMED(P_COPY_FILL, prof.orig.copy(be, dst, src, bytes));
}
static void w_fill(rmx_backend *be, float *x, float value, size_t n) {
    TIMED(P_COPY_FILL, prof.orig.fill(be, x, value, n));
}
static void w_patchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                       const float *x, float *tokens) {
    TIMED(P_EMBED, prof.orig.patchify(be, batch, c, h, w, p, order, x, tokens));
}
static void w_unpatchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                         const float *tokens, float *x) {
    TIMED(P_EMBED, prof.orig.unpatchify(be, batch, c, h, w, p, order, tokens, x));
}
static void w_add_broadcast(rmx_backend *be, int batch, size_t n, const float *a, float *y) {
    TIMED(P_EMBED, prof.orig.add_broadcast(be, batch, n, a, y));
}
static void w_timestep(rmx_backend *be, int n, int dim, const float *t, float *y) {
    TIMED(P_EMBED, prof.orig.timestep_embed(be, n, dim, t, y));
}
static void w_emb_fwd(rmx_backend *be, int n, int d, const int32_t *idx, const float *table,
                      float *y) {
    TIMED(P_EMBED, prof.orig.embedding_fwd(be, n, d, idx, table, y));
}
static void w_emb_bwd(rmx_backend *be, int n, int d, int rows, const int32_t *idx, const float *dy,
                      float *dtable) {
    TIMED(P_EMBED, prof.orig.embedding_bwd(be, n, d, rows, idx, dy, dtable));
}
static void w_silu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    TIMED(P_EMBED, prof.orig.silu_fwd(be, n, x, y));
}
static void w_silu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    TIMED(P_EMBED, prof.orig.silu_bwd(be, n, x, dy, dx));
}
static void w_axpby(rmx_backend *be, int n, size_t per, const float *a, const float *x,
                    const float *b, const float *e, float *y) {
    TIMED(P_LOSS_NOISE, prof.orig.axpby_samples(be, n, per, a, x, b, e, y));
}
static void w_mse(rmx_backend *be, size_t count, const float *xhat, const float *x, float scale,
                  float *loss, float *dxhat) {
    TIMED(P_LOSS_NOISE, prof.orig.mse_loss(be, count, xhat, x, scale, loss, dxhat));
}
static void w_sumsq(rmx_backend *be, size_t n, const float *x, float *out) {
    TIMED(P_SUMSQ, prof.orig.sumsq(be, n, x, out));
}
static void w_adamw(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                    float *m, float *v, const rmx_adamw_hparams *hp) {
    TIMED(P_ADAMW, prof.orig.adamw(be, n, n_decay, param, grad, m, v, hp));
}
static void w_ema(rmx_backend *be, size_t n, float decay, const float *param, float *ema) {
    TIMED(P_EMA, prof.orig.ema_update(be, n, decay, param, ema));
}

static void install_profiler(rmx_backend *be, const rmx_dit_hparams *hp) {
    prof.orig = *be;
    prof.on = 1;
    prof.d = hp->hidden;
    prof.dm = (int)((double)hp->hidden * (double)hp->mlp_ratio);
    prof.heads = hp->heads;
    be->linear_fwd = w_linear_fwd;
    be->linear_bwd = w_linear_bwd;
    be->attention_fwd = w_att_fwd;
    be->attention_bwd = w_att_bwd;
    be->layernorm_fwd = w_ln_fwd;
    be->layernorm_bwd = w_ln_bwd;
    be->gelu_fwd = w_gelu_fwd;
    be->gelu_bwd = w_gelu_bwd;
    be->modulate_fwd = w_mod_fwd;
    be->modulate_bwd = w_mod_bwd;
    be->gated_add_fwd = w_gate_fwd;
    be->gated_add_bwd = w_gate_bwd;
    be->axpy = w_axpy;
    be->add = w_add;
    be->copy = w_copy;
    be->fill = w_fill;
    be->patchify = w_patchify;
    be->unpatchify = w_unpatchify;
    be->add_broadcast = w_add_broadcast;
    be->timestep_embed = w_timestep;
    be->embedding_fwd = w_emb_fwd;
    be->embedding_bwd = w_emb_bwd;
    be->silu_fwd = w_silu_fwd;
    be->silu_bwd = w_silu_bwd;
    be->axpby_samples = w_axpby;
    be->mse_loss = w_mse;
    be->sumsq = w_sumsq;
    be->adamw = w_adamw;
    be->ema_update = w_ema;
}

static void profile_reset(void) {
    memset(prof.t, 0, sizeof prof.t);
    memset(prof.flop, 0, sizeof prof.flop);
    memset(prof.calls, 0, sizeof prof.calls);
    prof.nlin = 0;
}

/* The DiT's name for a linear shape. */
static const char *lin_name(const lin_prof *e, int batch) {
    int d = prof.d, dm = prof.dm;
    if (e->rows == batch) {
        if (e->out == 6 * d) return "adaLN_modulation (x depth)";
        if (e->out == 2 * d) return "final adaLN";
        return "t_embedder mlp";
    }
    if (e->in == d && e->out == 3 * d) return "attn.qkv";
    if (e->in == d && e->out == d) return "attn.proj";
    if (e->in == d && e->out == dm) return "mlp.fc1";
    if (e->in == dm && e->out == d) return "mlp.fc2";
    if (e->out == d) return "x_embedder";
    return "final linear";
}

static void print_profile(int steps, double step_s, int batch) {
    printf("\nprofile (mean per timed step; %% of the mean step; the sum leaves out the model's own "
           "code between calls):\n");
    double sum = 0;
    for (int i = 0; i < P_COUNT; i++) {
        double ms = 1e3 * prof.t[i] / steps;
        sum += ms;
        printf("  %-30s %9.1f ms %5.1f %%  %5.0f calls", prof_names[i], ms,
               100.0 * ms / (1e3 * step_s), (double)prof.calls[i] / steps);
        if (prof.flop[i] > 0)
            printf("  %7.1f GFLOP/s", prof.flop[i] / prof.t[i] * 1e-9);
        printf("\n");
    }
    printf("  %-30s %9.1f ms %5.1f %%\n", "sum", sum, 100.0 * sum / (1e3 * step_s));
    printf("\nlinears by shape (rows x in -> out; ms per step and GFLOP/s):\n");
    printf("  %-27s %-20s %5s %17s %17s %17s\n", "layer", "shape", "calls", "forward", "dx",
           "dw+db");
    for (int i = 0; i < prof.nlin; i++) {
        const lin_prof *e = &prof.lin[i];
        char shape[48];
        snprintf(shape, sizeof shape, "%d x %d -> %d", e->rows, e->in, e->out);
        printf("  %-27s %-20s %5.0f", lin_name(e, batch), shape, (double)e->calls[0] / steps);
        double f = 2.0 * e->rows * (double)e->in * e->out;
        for (int j = 0; j < 3; j++) {
            if (e->calls[j] > 0)
                printf("  %7.1f ms %6.1f", 1e3 * e->t[j] / steps, e->calls[j] * f / e->t[j] * 1e-9);
            else
                printf("  %17s", "-");
        }
        printf("\n");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* sgemm peaks                                                                                 */

/* GFLOP/s of C = A B with n x n matrices on `threads` OpenBLAS threads: the median of reps. */
static double sgemm_peak_openblas(int n, int threads, int reps) {
    size_t nn = (size_t)n * n;
    float *a = xmalloc(nn * sizeof *a), *b = xmalloc(nn * sizeof *b), *c = xmalloc(nn * sizeof *c);
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    openblas_set_num_threads(threads);
    double *rate = xmalloc((size_t)reps * sizeof *rate);
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

/* The backend's own GEMM (rmx_cpu_sgemm, single-threaded, the transformer ops run one call per
 * thread): one n^3 product per thread, all at once; aggregate GFLOP/s, the median of reps. */
static double sgemm_peak_rmx(int n, int threads, int reps) {
    size_t nn = (size_t)n * n;
    float *a = xmalloc(nn * sizeof *a), *b = xmalloc(nn * sizeof *b);
    float *c = xmalloc((size_t)threads * nn * sizeof *c);
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
        b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    }
    double *rate = xmalloc((size_t)reps * sizeof *rate);
    for (int r = -1; r < reps; r++) {
        double t0 = now();
#pragma omp parallel num_threads(threads)
        {
            int id = omp_get_thread_num();
            rmx_cpu_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c + (size_t)id * nn, n);
        }
        double dt = now() - t0;
        if (r >= 0) rate[r] = 2.0 * threads * n * (double)n * n / dt * 1e-9;
    }
    double peak = median(rate, reps);
    free(rate);
    free(a);
    free(b);
    free(c);
    return peak;
}

/* ------------------------------------------------------------------------------------------ */
/* the case: weights and inputs                                                                */

typedef struct {
    int batch;
    size_t per;        /* C H W */
    float *z0, *eps;   /* backend [B, C, H, W] */
    float *zt, *deps;  /* backend: the noised input, d loss / d eps_hat */
    const float *eps_hat; /* the last forward's output (the model's arena) */
    float *scalars;    /* backend [2]: loss, gradient sum of squares */
    float *t;          /* host [B] */
    int32_t *y;        /* host [B] */
    float *a, *b;      /* host [B]: sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) */
    float ref_loss, ref_norm; /* from the case file; NAN when none */
} bench_case;

static void case_alloc(rmx_backend *be, bench_case *c, const rmx_dit_hparams *hp, int batch) {
    memset(c, 0, sizeof *c);
    c->batch = batch;
    c->per = (size_t)hp->in_channels * hp->height * hp->width;
    size_t bytes = (size_t)batch * c->per * sizeof(float);
    c->z0 = be->alloc(be, bytes);
    c->eps = be->alloc(be, bytes);
    c->zt = be->alloc(be, bytes);
    c->deps = be->alloc(be, bytes);
    c->scalars = be->alloc(be, 2 * sizeof(float));
    c->t = xmalloc((size_t)batch * sizeof *c->t);
    c->y = xmalloc((size_t)batch * sizeof *c->y);
    c->a = xmalloc((size_t)batch * sizeof *c->a);
    c->b = xmalloc((size_t)batch * sizeof *c->b);
    c->ref_loss = c->ref_norm = NAN;
}

static void case_free(rmx_backend *be, bench_case *c) {
    be->free(be, c->z0);
    be->free(be, c->eps);
    be->free(be, c->zt);
    be->free(be, c->deps);
    be->free(be, c->scalars);
    free(c->t);
    free(c->y);
    free(c->a);
    free(c->b);
}

/* make_dit_reference.py's ranges: matrices sqrt(3 / fan_in), the label table 1, biases 0.2. */
static float randomise_range(const rmx_param_info *in) {
    if (strstr(in->name, "embedding_table")) return 1.0f;
    if (in->ndim >= 2) return sqrtf(3.0f / (float)(in->numel / (size_t)in->shape[0]));
    return 0.2f;
}

/* Randomised trained tensors (pos_embed stays the model's sin-cos grid) and the inputs. */
static void case_make(rmx_backend *be, rmx_dit *dit, bench_case *c) {
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(dit);
    rmx_params *p = rmx_dit_params(dit);
    size_t biggest = 0;
    for (int i = 0; i < p->count; i++)
        biggest = p->info[i].numel > biggest ? p->info[i].numel : biggest;
    float *buf = xmalloc(biggest * sizeof *buf);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *in = rmx_params_get(p, i);
        float a = randomise_range(in);
        for (size_t e = 0; e < in->numel; e++)
            buf[e] = (2.0f * rmx_u01(rmx_u32(CASE_SEED, RMX_RNG_DEMO, 100, (uint64_t)i, (uint32_t)e)) -
                      1.0f) * a;
        be->to_backend(be, rmx_params_data(p, i), buf, in->numel * sizeof *buf);
    }
    free(buf);

    size_t n = (size_t)c->batch * c->per;
    float *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = rmx_normal(CASE_SEED, RMX_RNG_DEMO, 101, i / c->per, (uint32_t)(i % c->per));
    be->to_backend(be, c->z0, h, n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = rmx_normal(CASE_SEED, RMX_RNG_DEMO, 102, i / c->per, (uint32_t)(i % c->per));
    be->to_backend(be, c->eps, h, n * sizeof *h);
    free(h);

    rmx_noise_schedule sched;
    if (rmx_noise_schedule_linear(&sched, 1000, 1e-4, 0.02) != 0) abort();
    int32_t *ti = xmalloc((size_t)c->batch * sizeof *ti);
    for (int i = 0; i < c->batch; i++) {
        ti[i] = (int32_t)(((uint64_t)rmx_u32(CASE_SEED, RMX_RNG_DEMO, 103, (uint64_t)i, 0) *
                           (uint64_t)sched.timesteps) >> 32);
        c->t[i] = (float)ti[i];
        c->y[i] = i % (hp->num_classes + 1); /* the null class (num_classes) included */
    }
    rmx_noise_coefs(&sched, c->batch, ti, c->a, c->b);
    free(ti);
    rmx_noise_schedule_free(&sched);
}

static void write_item(FILE *f, const char *kind, const char *name, int ndim, const int64_t *shape) {
    fprintf(f, "%s %s %d", kind, name, ndim);
    for (int k = 0; k < ndim; k++) fprintf(f, " %lld", (long long)shape[k]);
    fprintf(f, "\n");
}

/* Backend floats -> host -> file. */
static void write_floats(rmx_backend *be, FILE *f, const float *src, size_t n) {
    float *h = xmalloc(n * sizeof *h);
    be->to_host(be, h, src, n * sizeof *h);
    if (fwrite(h, sizeof *h, n, f) != n) {
        perror("bench_dit_step: write");
        exit(1);
    }
    free(h);
}

static void case_write(const char *path, rmx_backend *be, rmx_dit *dit, const bench_case *c,
                       const char *backend_name) {
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(dit);
    rmx_params *p = rmx_dit_params(dit), *st = rmx_dit_state(dit);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "%s\n", CASE_MAGIC);
    fprintf(f, "in_channels %d\nheight %d\nwidth %d\npatch %d\nhidden %d\ndepth %d\nheads %d\n"
               "mlp_ratio %.9g\nnum_classes %d\nfreq_dim %d\nbatch %d\nseed %u\nbackend %s\n",
            hp->in_channels, hp->height, hp->width, hp->patch, hp->hidden, hp->depth, hp->heads,
            (double)hp->mlp_ratio, hp->num_classes, hp->freq_dim, c->batch, CASE_SEED, backend_name);
    fprintf(f, "loss %.9g\ngrad_norm %.9g\n", (double)c->ref_loss, (double)c->ref_norm);
    for (int i = 0; i < p->count; i++)
        write_item(f, "tensor", p->info[i].name, p->info[i].ndim, p->info[i].shape);
    for (int i = 0; i < st->count; i++)
        write_item(f, "tensor", st->info[i].name, st->info[i].ndim, st->info[i].shape);
    int64_t img[4] = {c->batch, hp->in_channels, hp->height, hp->width}, vec[1] = {c->batch};
    write_item(f, "input", "z0", 4, img);
    write_item(f, "input", "eps", 4, img);
    write_item(f, "input", "t", 1, vec);
    write_item(f, "input", "y", 1, vec);
    write_item(f, "input", "a", 1, vec);
    write_item(f, "input", "b", 1, vec);
    write_item(f, "output", "eps_hat", 4, img);
    fprintf(f, "end\n");
    for (int i = 0; i < p->count; i++) write_floats(be, f, rmx_params_data(p, i), p->info[i].numel);
    for (int i = 0; i < st->count; i++)
        write_floats(be, f, rmx_params_data(st, i), st->info[i].numel);
    write_floats(be, f, c->z0, (size_t)c->batch * c->per);
    write_floats(be, f, c->eps, (size_t)c->batch * c->per);
    size_t B = (size_t)c->batch;
    if (fwrite(c->t, sizeof *c->t, B, f) != B || fwrite(c->y, sizeof *c->y, B, f) != B ||
        fwrite(c->a, sizeof *c->a, B, f) != B || fwrite(c->b, sizeof *c->b, B, f) != B) {
        perror(path);
        exit(1);
    }
    write_floats(be, f, c->eps_hat, (size_t)c->batch * c->per);
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void case_fail(const char *path, const char *what) {
    fprintf(stderr, "bench_dit_step: %s: %s\n", path, what);
    exit(1);
}

/* Loads a case file written by case_write (checking the hyper-parameters and every tensor's shape
 * against the model) into the registries and c. */
static void case_read(const char *path, rmx_backend *be, rmx_dit *dit, bench_case *c) {
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(dit);
    rmx_params *p = rmx_dit_params(dit), *st = rmx_dit_state(dit);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    char line[512];
    if (!fgets(line, sizeof line, f) || strncmp(line, CASE_MAGIC, strlen(CASE_MAGIC)) != 0)
        case_fail(path, "not a bench_dit_step case file");
    typedef struct {
        int kind; /* 0 trained tensor, 1 state tensor, 2 input, 3 output (skipped) */
        int id;   /* tensor number, or input number */
        size_t numel;
    } item;
    item items[1024];
    int nitems = 0, seen_trained = 0, seen_state = 0;
    while (fgets(line, sizeof line, f)) {
        char key[128], name[RMX_PARAM_NAME_MAX + 1];
        if (!strcmp(line, "end\n")) break;
        if (sscanf(line, "%127s", key) != 1) case_fail(path, "empty header line");
        if (!strcmp(key, "tensor") || !strcmp(key, "input") || !strcmp(key, "output")) {
            int ndim, off = 0;
            long long dims[4] = {0};
            if (sscanf(line, "%*s %96s %d%n", name, &ndim, &off) != 2 || ndim < 1 || ndim > 4)
                case_fail(path, line);
            const char *rest = line + off;
            size_t numel = 1;
            for (int k = 0; k < ndim; k++) {
                int used = 0;
                if (sscanf(rest, "%lld%n", &dims[k], &used) != 1) case_fail(path, line);
                rest += used;
                numel *= (size_t)dims[k];
            }
            if (nitems == (int)(sizeof items / sizeof items[0])) case_fail(path, "too many items");
            item *it = &items[nitems++];
            it->numel = numel;
            if (!strcmp(key, "output")) {
                it->kind = 3;
                it->id = -1;
            } else if (!strcmp(key, "tensor")) {
                int id = rmx_params_find(p, name);
                rmx_params *reg = p;
                it->kind = 0;
                if (id < 0) {
                    id = rmx_params_find(st, name);
                    reg = st;
                    it->kind = 1;
                }
                if (id < 0) case_fail(path, "a tensor the model does not have");
                const rmx_param_info *in = rmx_params_get(reg, id);
                int same = in->ndim == ndim;
                for (int k = 0; same && k < ndim; k++) same = in->shape[k] == dims[k];
                if (!same) {
                    fprintf(stderr, "bench_dit_step: %s: %s has another shape than the model's\n",
                            path, name);
                    exit(1);
                }
                it->id = id;
                seen_trained += it->kind == 0;
                seen_state += it->kind == 1;
            } else {
                static const char *const inputs[] = {"z0", "eps", "t", "y", "a", "b"};
                it->kind = 2;
                it->id = -1;
                for (int k = 0; k < 6; k++)
                    if (!strcmp(name, inputs[k])) it->id = k;
                size_t want = it->id < 2 ? (size_t)c->batch * c->per : (size_t)c->batch;
                if (it->id < 0 || numel != want) case_fail(path, "input of another size (--batch?)");
            }
            continue;
        }
        double v;
        char sval[128];
        if (sscanf(line, "%*s %127s", sval) != 1) case_fail(path, line);
        v = atof(sval);
        if (!strcmp(key, "loss")) c->ref_loss = (float)v;
        else if (!strcmp(key, "grad_norm")) c->ref_norm = (float)v;
        else if (!strcmp(key, "batch") && (int)v != c->batch) {
            fprintf(stderr, "bench_dit_step: %s holds a batch of %d, not %d (--batch)\n", path,
                    (int)v, c->batch);
            exit(1);
        } else {
            int want = -1;
            if (!strcmp(key, "in_channels")) want = hp->in_channels;
            else if (!strcmp(key, "height")) want = hp->height;
            else if (!strcmp(key, "width")) want = hp->width;
            else if (!strcmp(key, "patch")) want = hp->patch;
            else if (!strcmp(key, "hidden")) want = hp->hidden;
            else if (!strcmp(key, "depth")) want = hp->depth;
            else if (!strcmp(key, "heads")) want = hp->heads;
            else if (!strcmp(key, "num_classes")) want = hp->num_classes;
            else if (!strcmp(key, "freq_dim")) want = hp->freq_dim;
            else if (!strcmp(key, "mlp_ratio") && (float)v != hp->mlp_ratio)
                case_fail(path, "another mlp_ratio than the model's");
            if (want >= 0 && (int)v != want) {
                fprintf(stderr, "bench_dit_step: %s: %s %s, the model has %d\n", path, key, sval,
                        want);
                exit(1);
            }
        }
    }
    if (seen_trained != p->count || seen_state != st->count)
        case_fail(path, "does not hold every tensor of the model");
    size_t biggest = (size_t)c->batch * c->per;
    for (int i = 0; i < nitems; i++) biggest = items[i].numel > biggest ? items[i].numel : biggest;
    float *buf = xmalloc(biggest * sizeof *buf);
    for (int i = 0; i < nitems; i++) {
        const item *it = &items[i];
        if (fread(buf, sizeof *buf, it->numel, f) != it->numel) case_fail(path, "truncated");
        if (it->kind == 0)
            be->to_backend(be, rmx_params_data(p, it->id), buf, it->numel * sizeof *buf);
        else if (it->kind == 1)
            be->to_backend(be, rmx_params_data(st, it->id), buf, it->numel * sizeof *buf);
        else if (it->kind == 2) {
            size_t bytes = it->numel * sizeof *buf;
            switch (it->id) {
            case 0: be->to_backend(be, c->z0, buf, bytes); break;
            case 1: be->to_backend(be, c->eps, buf, bytes); break;
            case 2: memcpy(c->t, buf, bytes); break;
            case 3: memcpy(c->y, buf, bytes); break; /* int32, same size */
            case 4: memcpy(c->a, buf, bytes); break;
            default: memcpy(c->b, buf, bytes); break;
            }
        }
    }
    free(buf);
    fclose(f);
    for (int i = 0; i < c->batch; i++)
        if (c->y[i] < 0 || c->y[i] > hp->num_classes) case_fail(path, "label out of range");
}

/* ------------------------------------------------------------------------------------------ */
/* the step                                                                                    */

/* Zero grads, noise, forward, loss, backward, the gradient norm to the host; then (update) AdamW
 * and the EMA. Writes the loss and the gradient norm. */
static void train_step(rmx_backend *be, rmx_dit *dit, bench_case *c, int step, int update,
                       float *loss, float *norm) {
    rmx_params *p = rmx_dit_params(dit);
    int n = c->batch;
    be->fill(be, c->scalars, 0.0f, 2);
    rmx_dit_step_begin(dit);
    be->axpby_samples(be, n, c->per, c->a, c->z0, c->b, c->eps, c->zt);
    const float *eps_hat = rmx_dit_forward(dit, n, c->zt, c->t, c->y);
    c->eps_hat = eps_hat;
    be->mse_loss(be, c->per * (size_t)n, eps_hat, c->eps, 1.0f / (float)(c->per * (size_t)n),
                 c->scalars, c->deps);
    rmx_dit_backward(dit, n, c->deps, NULL);
    be->sumsq(be, p->span, p->grad, c->scalars + 1);
    float host[2];
    be->to_host(be, host, c->scalars, sizeof host);
    *loss = host[0];
    *norm = sqrtf(host[1]);
    if (update) {
        rmx_adamw_hparams ahp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                 .weight_decay = 0.0f, .t = step + 1};
        be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ahp);
        double k = (double)(step + 1);
        double decay = fmin(0.9999, (1.0 + k) / (10.0 + k));
        be->ema_update(be, p->span, (float)decay, p->data, p->ema);
    }
    be->sync(be);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_dit_step [--backend cpu|cuda] [--threads N] [--device D] [--batch B]\n"
            "                      [--steps N] [--warmup N] [--write FILE | --case FILE] [--tol R]\n"
            "                      [--profile] [--sgemm-n N] [--sgemm-reps N]\n"
            "                      [--peak-fp32 TFLOPS] [--peak-tf32 TFLOPS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *backend_name = "cpu", *write_path = NULL, *case_path = NULL;
    int threads = omp_get_num_procs(), device = 0, batch = -1, steps = -1, warmup = -1;
    int profile = 0, sgemm_n = 2048, sgemm_reps = 5;
    double tol = 1e-5, peak_fp32 = 67.0, peak_tf32 = 495.0;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--profile")) {
            profile = 1;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--backend")) backend_name = v;
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--device")) device = atoi(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--write")) write_path = v;
        else if (!strcmp(k, "--case")) case_path = v;
        else if (!strcmp(k, "--tol")) tol = atof(v);
        else if (!strcmp(k, "--sgemm-n")) sgemm_n = atoi(v);
        else if (!strcmp(k, "--sgemm-reps")) sgemm_reps = atoi(v);
        else if (!strcmp(k, "--peak-fp32")) peak_fp32 = atof(v);
        else if (!strcmp(k, "--peak-tf32")) peak_tf32 = atof(v);
        else usage();
    }
    int cuda = !strcmp(backend_name, "cuda");
    if (!cuda && strcmp(backend_name, "cpu")) usage();
    if (batch < 0) batch = cuda ? 64 : 8;
    if (steps < 0) steps = cuda ? 10 : 5;
    if (warmup < 0) warmup = cuda ? 3 : 1;
    if (threads < 1 || batch < 1 || steps < 1 || sgemm_n < 1 || sgemm_reps < 1 ||
        (write_path && case_path))
        usage();

    char err[512];
    rmx_backend *be;
    if (cuda) {
        be = rmx_backend_cuda_create(device, err, sizeof err);
        if (!be) {
            printf("bench_dit_step: skipped: no GPU (%s)\n", err);
            return 77;
        }
    } else {
        be = rmx_backend_cpu_create(threads);
    }
    const char *tf32_env = getenv("RMX_CUDA_TF32");
    int tf32 = cuda && tf32_env && !strcmp(tf32_env, "1");

    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    hp.micro_batch = batch;
    rmx_dit *dit = rmx_dit_create(be, &hp, CASE_SEED, err, sizeof err);
    if (!dit) {
        fprintf(stderr, "bench_dit_step: %s\n", err);
        return 1;
    }
    rmx_params *p = rmx_dit_params(dit);
    bench_case c;
    case_alloc(be, &c, &hp, batch);
    if (case_path) case_read(case_path, be, dit, &c);
    else case_make(be, dit, &c);
    rmx_params_alloc_ema(p); /* starts as a copy of the (loaded) weights */

    char where[320];
    if (cuda) {
#ifdef BENCH_DIT_CUDART
        struct cudaDeviceProp prop;
        cudaGetDeviceProperties(&prop, device);
        snprintf(where, sizeof where, "cuda backend on %.200s, TF32 %s", prop.name, tf32 ? "on" : "off");
#else
        snprintf(where, sizeof where, "cuda backend, TF32 %s", tf32 ? "on" : "off");
#endif
    } else {
        snprintf(where, sizeof where, "cpu backend, %d threads, %s", threads,
                 rmx_cpu_avx512() ? "AVX-512 GEMM (rmx_cpu_sgemm)" : "OpenBLAS GEMM");
    }
    const double flop_step = rmx_dit_flops_per_sample(&hp) * batch * 3.0;
    printf("Remixer DiT train step: hidden %d, depth %d, heads %d, patch %d, mlp %g, latent %dx%dx%d "
           "(%d tokens), %d genres; batch %d; %zu parameters; %s; %.1f GFLOP per step "
           "(3 x forward)\n",
           hp.hidden, hp.depth, hp.heads, hp.patch, (double)hp.mlp_ratio, hp.in_channels, hp.height,
           hp.width, rmx_dit_tokens(dit), hp.num_classes, batch, p->numel, where, flop_step * 1e-9);

    if (write_path) {
        float loss, norm;
        train_step(be, dit, &c, 0, 0, &loss, &norm);
        c.ref_loss = loss;
        c.ref_norm = norm;
        case_write(write_path, be, dit, &c, backend_name);
        printf("case written to %s: step-0 loss %.9g, gradient norm %.9g\n", write_path,
               (double)loss, (double)norm);
        case_free(be, &c);
        rmx_dit_free(dit);
        be->destroy(be);
        return 0;
    }

    if (profile) install_profiler(be, &hp);
    double *times = xmalloc((size_t)steps * sizeof *times);
    const int cores = omp_get_num_procs();
    double busy0 = 0, own0 = 0, t_start = 0;
    float loss0 = 0, norm0 = 0, last_loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            busy0 = machine_busy_s();
            own0 = own_cpu_s();
            t_start = now();
            profile_reset();
        }
        float loss, norm;
        double t0 = now();
        train_step(be, dit, &c, s, 1, &loss, &norm);
        double dt = now() - t0;
        if (!isfinite(loss) || !isfinite(norm)) {
            fprintf(stderr, "bench_dit_step: non-finite loss or gradient at step %d\n", s);
            return 1;
        }
        if (s == 0) {
            loss0 = loss;
            norm0 = norm;
            if (case_path) {
                double rel = fabs((double)loss - c.ref_loss) / fabs((double)c.ref_loss);
                double reln = fabs((double)norm - c.ref_norm) / fabs((double)c.ref_norm);
                printf("  check: step-0 loss %.9g against the case's %.9g: relative %.2e "
                       "(tolerance %.0e); gradient norm relative %.2e\n",
                       (double)loss, (double)c.ref_loss, rel, tol, reln);
                if (!(rel <= tol)) {
                    fprintf(stderr, "bench_dit_step: FAIL: the step-0 loss differs from %s's\n",
                            case_path);
                    return 1;
                }
            }
        }
        last_loss = loss;
        if (s >= warmup) times[s - warmup] = dt;
        printf("  step %d%s: %8.1f ms  loss %.7g  grad norm %.6g\n", s,
               s < warmup ? " (warm-up)" : "", 1e3 * dt, (double)loss, (double)norm);
    }
    double foreign = (machine_busy_s() - busy0) - (own_cpu_s() - own0);
    double foreign_pct = 100.0 * (foreign > 0 ? foreign : 0) / ((now() - t_start) * cores);
    double med = median(times, steps), best = times[0], mean = 0;
    for (int s = 0; s < steps; s++) mean += times[s] / steps;
    for (int s = 1; s < steps; s++) best = times[s] < best ? times[s] : best;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;
    double arena_mib = (double)rmx_dit_arena_bytes(dit) / (1024.0 * 1024.0);
    double params_mib = 5.0 * p->span * sizeof(float) / (1024.0 * 1024.0);
    if (profile) print_profile(steps, mean, batch);

    double gflops = flop_step * 1e-9 / med;
    printf("\nloss %.7g (step 0, gradient norm %.6g) -> %.7g over %d steps\n", (double)loss0,
           (double)norm0, (double)last_loss, warmup + steps);
    printf("step time: median %.1f ms, min %.1f ms (%d timed steps after %d warm-up); other "
           "processes used %.1f %% of the %d cores meanwhile\n",
           1e3 * med, 1e3 * best, steps, warmup, foreign_pct, cores);
    printf("FLOP per step: %.1f G (rmx_dit_flops_per_sample %.3f G x batch %d x 3)\n",
           flop_step * 1e-9, rmx_dit_flops_per_sample(&hp) * 1e-9, batch);
    if (cuda) {
        double tflops = gflops * 1e-3;
        double used_mib = NAN;
#ifdef BENCH_DIT_CUDART
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
            used_mib = (double)(total_b - free_b) / (1024.0 * 1024.0);
#endif
        printf("achieved: %.2f TFLOP/s = %.1f %% of the fp32 peak (%.0f), %.1f %% of TF32 (%.0f); "
               "%.1f samples/s\n",
               tflops, 100.0 * tflops / peak_fp32, peak_fp32, 100.0 * tflops / peak_tf32,
               peak_tf32, batch / med);
        printf("device memory in use (cudaMemGetInfo, the whole device): %.0f MiB; host peak "
               "(ru_maxrss) %.1f MiB; arena %.1f MiB, parameters + grads + m, v, EMA %.1f MiB\n",
               used_mib, rss_mib, arena_mib, params_mib);
        printf("RESULT side=remixer backend=cuda tf32=%d batch=%d step_median_ms=%.2f "
               "step_min_ms=%.2f tflops=%.2f pct_fp32=%.1f pct_tf32=%.1f samples_s=%.1f "
               "loss0=%.9g gflop_step=%.1f device_mib=%.0f maxrss_mib=%.1f\n",
               tf32, batch, 1e3 * med, 1e3 * best, tflops, 100.0 * tflops / peak_fp32,
               100.0 * tflops / peak_tf32, batch / med, (double)loss0, flop_step * 1e-9, used_mib,
               rss_mib);
    } else {
        double busy1 = machine_busy_s(), own1 = own_cpu_s(), t1 = now();
        double peak = sgemm_peak_openblas(sgemm_n, threads, sgemm_reps);
        double peak_rmx = rmx_cpu_avx512() ? sgemm_peak_rmx(sgemm_n, threads, sgemm_reps) : NAN;
        double sg_foreign = (machine_busy_s() - busy1) - (own_cpu_s() - own1);
        double sg_foreign_pct = 100.0 * (sg_foreign > 0 ? sg_foreign : 0) / ((now() - t1) * cores);
        printf("achieved: %.1f GFLOP/s\n", gflops);
        printf("OpenBLAS sgemm %d^3 (kernels: %s), %d threads, median of %d: %.1f GFLOP/s; the step "
               "reaches %.1f %% of it\n",
               sgemm_n, openblas_get_corename(), threads, sgemm_reps, peak, 100.0 * gflops / peak);
        if (rmx_cpu_avx512())
            printf("rmx_cpu_sgemm %d^3, one per thread at once: %.1f GFLOP/s; the step reaches "
                   "%.1f %% of it\n",
                   sgemm_n, peak_rmx, 100.0 * gflops / peak_rmx);
        printf("(other processes used %.1f %% of the machine during the sgemm runs)\n",
               sg_foreign_pct);
        printf("peak memory (ru_maxrss, before the sgemm): %.1f MiB (arena %.1f MiB, parameters + "
               "grads + Adam m, v + EMA %.1f MiB)\n",
               rss_mib, arena_mib, params_mib);
        printf("RESULT side=remixer backend=cpu openblas_core=%s threads=%d batch=%d tf32=0 "
               "step_median_ms=%.1f step_min_ms=%.1f samples_s=%.2f tflops=%.3f gflop_step=%.1f "
               "gflops=%.1f "
               "sgemm_peak_gflops=%.1f peak_share_pct=%.1f rmx_sgemm_peak_gflops=%.1f "
               "maxrss_mib=%.1f loss0=%.9g foreign_cpu_pct=%.1f sgemm_foreign_cpu_pct=%.1f\n",
               openblas_get_corename(), threads, batch, 1e3 * med, 1e3 * best, batch / med,
               gflops * 1e-3, flop_step * 1e-9, gflops, peak, 100.0 * gflops / peak, peak_rmx, rss_mib, (double)loss0, foreign_pct,
               sg_foreign_pct);
    }

    free(times);
    case_free(be, &c);
    rmx_dit_free(dit);
    be->destroy(be);
    return 0;
}
