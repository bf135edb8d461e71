/* bench_remix_step: one stage-3 (remix) training step on the cpu backend, against the PyTorch
 * twin (torch_remix_step.py) on the same weights and inputs.
 *
 * A step is what train/stage_remix.c (remix_loss) and train/trainer.c do for one micro-batch on
 * one rank (no all-reduce, no clipping):
 *   zero the gradients;
 *   targets    the frozen encoder on the originals x (content features, latents z) and on the
 *              styles xs (Gram matrices, latents zs), rmx_remix_loss_targets;
 *   noising    z_t = a z + b eps (axpby_samples);
 *   DiT        eps_hat = DiT(z_t, t, y = null class, style tokens of zs, keep), forward_style;
 *   losses     mse = mean (eps_hat - eps)^2, and rmx_remix_loss_eps: x0_hat = (z_t - b eps_hat)
 *              / a / latent_scale, the frozen decoder, the frozen encoder's feature taps of the
 *              decoded mel, content + style (Gram) + tv, backward through the frozen decoder and
 *              encoder (input gradients only) to d / d eps_hat;
 *   backward   d total / d eps_hat = lambda d mse + d remix; rmx_dit_backward;
 *   update     the gradient's global norm read back to the host; AdamW (lr 2e-5, betas 0.9 /
 *              0.999, eps 1e-8, weight decay 0: configs/remix.yaml); the EMA (rmx_stage_ema_update,
 *              remix.ema_decay 0.999).
 * Loss weights and layers are configs/remix.yaml's: 1 content [enc.mid.res] + 10 style
 * [enc.conv_in, enc.down.0.res.0, enc.down.1.res.0] + 0.1 tv + 10 mse.
 *
 * Sizes (--size): bench, the brief's bench sizes (autoencoder 1x128x256, C 32, mult [1, 2, 4],
 * latent 8 x 32 x 64; DiT hidden 384, depth 12, heads 6, patch 2: 512 content + 512 style
 * tokens; batch 8); demo, configs/demo-vae.yaml and demo-diffusion.yaml's (autoencoder C 8,
 * latent 4 x 32 x 64; DiT hidden 128, depth 4, heads 4, patch 4: 128 + 128 tokens; batch 8).
 * --batch overrides the batch.
 *
 * The case (weights and inputs, all from Philox with BENCH_SEED, bench/bench_step.h):
 *   the autoencoder at its own initialisation (rmx_ae_create, seed BENCH_SEED), frozen;
 *   the DiT's trained tensors randomised as bench_dit_step's (matrices U(+-sqrt(3 / fan_in)),
 *   the label table U(+-1), biases U(+-0.2), so that the adaLN-Zero layers carry real values),
 *   pos_embed the fixed grid;
 *   originals x: bench_batch_make's normal "mels"; the style of sample i is the original of
 *   sample i + 1 (mod batch): another segment, as the stage pairs one; the last sample's style is
 *   dropped (keep 0: null style tokens, its style target the original itself, as the stage does);
 *   t = strength T, strength ~ U[0.3, 0.8] (remix.strength_min / max), eps ~ N(0, I), linear
 *   schedule 1000 steps 1e-4 .. 0.02; latent_scale = 1 / std of the originals' latents.
 * The case is regenerated bit for bit from the seed on every run.
 *   --write FILE  runs step 0's forward + backward (no update) and writes the case with its loss
 *                 terms and gradient norm to FILE (format below) for the twin; then exits.
 *   --case FILE   reads FILE's reference terms and checks that this run's step 0 (before any
 *                 update) gives FILE's total loss to --tol relative (exit 1 otherwise): the timed
 *                 steps do the checked work.
 *
 * After --warmup steps (1), --steps timed steps (3) on --threads threads (every core): median and
 * min, the process CPU time per step, each step's phases (targets, DiT forward, losses through the
 * autoencoder, DiT backward, update), peak memory. Output: a report and one "RESULT key=value ..."
 * line for run_remix_bench.sh.
 *
 * Case file: a text header, one item per line, then the little-endian data of the "tensor" and
 * "input" items in header order:
 *   RMXREMIX-BENCH-CASE 1
 *   <key> <value>                 size batch seed; ae_channels ae_mult (comma list) ae_res_blocks
 *                                 ae_latent mels frames; patch hidden depth heads mlp_ratio
 *                                 num_classes freq_dim; w_content w_style w_tv w_mse
 *                                 content_layers style_layers (comma lists); latent_scale lr
 *                                 ema_decay; step 0's loss content style tv mse grad_norm
 *   tensor <name> <ndim> <dims>   float32: dit.<name> (trained registry in order, then
 *                                 pos_embed), then ae.<name>
 *   input <name> <ndim> <dims>    x, xs [B, 1, M, T]; eps [B, C, H, W]; t, a, b, keep float32
 *                                 [B]; y int32 [B]
 *   end
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_step.h"
#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "model/diffusion.h"
#include "model/dit.h"
#include "model/params.h"
#include "model/remix_loss.h"
#include "train/stage.h"
#include "util/rng.h"

#define CASE_MAGIC "RMXREMIX-BENCH-CASE 1"
#define CONTENT_LAYERS "enc.mid.res"
#define STYLE_LAYERS "enc.conv_in,enc.down.0.res.0,enc.down.1.res.0"
#define STRENGTH_MIN 0.3f
#define STRENGTH_MAX 0.8f
#define LR 2e-5f
#define EMA_DECAY 0.999f

enum { TERM_MSE = RMX_REMIX_N_TERMS, N_TERMS, SLOT_SUMSQ = N_TERMS, N_SLOTS };
enum { PH_TARGETS, PH_DIT_FWD, PH_LOSSES, PH_DIT_BWD, PH_UPDATE, N_PHASES };
static const char *const phase_names[N_PHASES] = {
    "targets (encoder on originals and styles)", "DiT forward (content + style tokens)",
    "mse + decode, encoder taps, content/style/tv, backward through the AE", "DiT backward",
    "grad norm, AdamW, EMA"};
static const char *const term_names[N_TERMS] = {"content", "style", "tv", "mse"};

typedef struct {
    const char *size;
    rmx_ae_hparams ae_hp;
    rmx_dit_hparams dit_hp;
    rmx_backend *be;
    rmx_ae *ae;
    rmx_dit *dit;
    rmx_remix_loss *loss;
    float weight[N_TERMS];
    int batch;
    size_t mel_per, latent_per;
    float latent_scale;
    bench_batch orig;             /* x: the originals */
    float *xs, *z, *zs, *zt, *eps, *deps, *deps_remix, *scalars;
    float *t, *a, *b;             /* host [B] */
    int32_t *y;
    uint8_t *keep;
    double phase[N_PHASES];       /* seconds of the last step */
} remix_case;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of this process (all threads): under other processes' load, wall time measures the
 * machine's sharing as much as the step. */
static double own_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_remix_step: out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place. */
static double median_sorted(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------------------------------------------ */
/* sizes and set-up                                                                            */

static int pick_size(const char *name, rmx_ae_hparams *ae, rmx_dit_hparams *dit) {
    rmx_ae_hparams_default(ae);
    rmx_dit_hparams_default(dit);
    dit->style = 1;
    if (!strcmp(name, "bench")) return 0;
    if (strcmp(name, "demo")) return -1;
    ae->channels = 8;
    ae->latent_channels = 4;
    dit->hidden = 128;
    dit->depth = 4;
    dit->heads = 4;
    dit->patch = 4;
    return 0;
}

/* bench_dit_step's (and make_dit_reference.py's) ranges: matrices sqrt(3 / fan_in), the label
 * table 1, biases 0.2. */
static float randomise_range(const rmx_param_info *in) {
    if (strstr(in->name, "embedding_table")) return 1.0f;
    if (in->ndim >= 2) return sqrtf(3.0f / (float)(in->numel / (size_t)in->shape[0]));
    return 0.2f;
}

static void randomise_dit(remix_case *c) {
    rmx_params *p = rmx_dit_params(c->dit);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *in = rmx_params_get(p, i);
        float range = randomise_range(in), *h = xmalloc(in->numel * sizeof *h);
        for (size_t e = 0; e < in->numel; e++)
            h[e] = (2.0f * rmx_u01(rmx_u32(BENCH_SEED, RMX_RNG_DEMO, 200, (uint64_t)i, (uint32_t)e)) - 1.0f) *
                   range;
        c->be->to_backend(c->be, rmx_params_data(p, i), h, in->numel * sizeof *h);
        free(h);
    }
}

static float *backend_floats(rmx_backend *be, size_t n) { return be->alloc(be, n * sizeof(float)); }

/* 1 / standard deviation of the originals' latents (stage 2's latent_scale, on this batch). */
static float measure_latent_scale(remix_case *c) {
    size_t n = (size_t)c->batch * c->latent_per;
    rmx_remix_loss_targets(c->loss, c->batch, c->orig.x, c->orig.x, 1.0f, c->z, NULL);
    float *h = xmalloc(n * sizeof *h);
    c->be->to_host(c->be, h, c->z, n * sizeof *h);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += h[i], s2 += (double)h[i] * h[i];
    free(h);
    double var = s2 / (double)n - (s / (double)n) * (s / (double)n);
    return (float)(1.0 / sqrt(var > 1e-12 ? var : 1e-12));
}

/* Styles, noise, timesteps, keep flags (see the top of the file). */
static void make_inputs(remix_case *c) {
    rmx_backend *be = c->be;
    const int B = c->batch;
    for (int i = 0; i < B; i++) {
        c->keep[i] = i != B - 1;
        const float *src = c->orig.x + (c->keep[i] ? (size_t)((i + 1) % B) : (size_t)i) * c->mel_per;
        be->copy(be, c->xs + (size_t)i * c->mel_per, src, c->mel_per * sizeof(float));
    }
    be->randn(be, c->eps, B, c->latent_per, BENCH_SEED, RMX_RNG_REMIX_EPS, 0, c->orig.index);
    rmx_noise_schedule sched;
    if (rmx_noise_schedule_linear(&sched, 1000, 1e-4, 0.02) != 0) abort();
    int32_t *ti = xmalloc((size_t)B * sizeof *ti);
    for (int i = 0; i < B; i++) {
        float u = rmx_u01(rmx_u32(BENCH_SEED, RMX_RNG_REMIX_T, 0, (uint64_t)i, 0));
        int t = (int)((STRENGTH_MIN + u * (STRENGTH_MAX - STRENGTH_MIN)) * (float)sched.timesteps);
        ti[i] = t < 0 ? 0 : t > sched.timesteps - 1 ? sched.timesteps - 1 : t;
        c->t[i] = (float)ti[i];
        c->y[i] = c->dit_hp.num_classes; /* the null class: the style tokens are the condition */
    }
    rmx_noise_coefs(&sched, B, ti, c->a, c->b);
    free(ti);
    rmx_noise_schedule_free(&sched);
}

/* 0, or -1 for an unknown size. */
static int case_create(remix_case *c, rmx_backend *be, const char *size, int batch) {
    char err[512];
    memset(c, 0, sizeof *c);
    if (pick_size(size, &c->ae_hp, &c->dit_hp) != 0) return -1;
    c->be = be;
    c->size = size;
    c->batch = batch;
    c->ae_hp.micro_batch = batch;
    c->dit_hp.micro_batch = batch;
    c->ae = rmx_ae_create(be, &c->ae_hp, BENCH_SEED, err, sizeof err);
    if (!c->ae) {
        fprintf(stderr, "bench_remix_step: autoencoder: %s\n", err);
        exit(1);
    }
    rmx_ae_set_frozen(c->ae, 1);
    rmx_ae_latent_shape(c->ae, &c->dit_hp.in_channels, &c->dit_hp.height, &c->dit_hp.width);
    c->dit = rmx_dit_create(be, &c->dit_hp, BENCH_SEED, err, sizeof err);
    if (!c->dit) {
        fprintf(stderr, "bench_remix_step: DiT: %s\n", err);
        exit(1);
    }
    randomise_dit(c);
    rmx_params_alloc_ema(rmx_dit_params(c->dit)); /* a copy of the randomised weights */
    rmx_remix_loss_config lc = {.content_weight = 1.0f, .style_weight = 10.0f, .tv_weight = 0.1f};
    if (rmx_remix_parse_layers(c->ae, CONTENT_LAYERS, lc.content, &lc.n_content, err, sizeof err) != 0 ||
        rmx_remix_parse_layers(c->ae, STYLE_LAYERS, lc.style, &lc.n_style, err, sizeof err) != 0) {
        fprintf(stderr, "bench_remix_step: %s\n", err);
        exit(1);
    }
    c->weight[RMX_REMIX_CONTENT] = lc.content_weight;
    c->weight[RMX_REMIX_STYLE] = lc.style_weight;
    c->weight[RMX_REMIX_TV] = lc.tv_weight;
    c->weight[TERM_MSE] = 10.0f;
    c->loss = rmx_remix_loss_create(c->ae, &lc, batch);
    c->mel_per = (size_t)c->ae_hp.mels * c->ae_hp.frames;
    c->latent_per = (size_t)c->dit_hp.in_channels * c->dit_hp.height * c->dit_hp.width;
    size_t lat = c->latent_per * (size_t)batch;
    c->orig = bench_batch_make(be, &c->ae_hp, batch);
    c->xs = backend_floats(be, c->mel_per * (size_t)batch);
    float **lats[] = {&c->z, &c->zs, &c->zt, &c->eps, &c->deps, &c->deps_remix};
    for (size_t i = 0; i < sizeof lats / sizeof lats[0]; i++) *lats[i] = backend_floats(be, lat);
    c->scalars = backend_floats(be, N_SLOTS);
    c->t = xmalloc((size_t)batch * sizeof *c->t);
    c->a = xmalloc((size_t)batch * sizeof *c->a);
    c->b = xmalloc((size_t)batch * sizeof *c->b);
    c->y = xmalloc((size_t)batch * sizeof *c->y);
    c->keep = xmalloc((size_t)batch);
    c->latent_scale = measure_latent_scale(c);
    make_inputs(c);
    return 0;
}

static void case_free(remix_case *c) {
    rmx_backend *be = c->be;
    float *bufs[] = {c->xs, c->z, c->zs, c->zt, c->eps, c->deps, c->deps_remix, c->scalars};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be, bufs[i]);
    bench_batch_free(be, &c->orig);
    rmx_remix_loss_free(c->loss);
    rmx_dit_free(c->dit);
    rmx_ae_free(c->ae);
    free(c->t), free(c->a), free(c->b), free(c->y), free(c->keep);
}

/* ------------------------------------------------------------------------------------------ */
/* the step                                                                                    */

typedef struct {
    float terms[N_TERMS];
    double total, norm;
} step_result;

static double mark(remix_case *c, int phase, double t0) {
    c->be->sync(c->be);
    double t1 = now();
    c->phase[phase] = t1 - t0;
    return t1;
}

/* As remix_loss (train/stage_remix.c) with train on, plus the trainer's norm and update. */
static step_result train_step(remix_case *c, int step, int update) {
    rmx_backend *be = c->be;
    rmx_params *p = rmx_dit_params(c->dit);
    const int n = c->batch;
    const size_t lat = c->latent_per * (size_t)n;
    const float scale = 1.0f / (float)n; /* one micro-batch is the whole batch */
    double t = now();
    be->fill(be, c->scalars, 0.0f, N_SLOTS);
    rmx_dit_step_begin(c->dit);
    rmx_remix_loss_targets(c->loss, n, c->orig.x, c->xs, c->latent_scale, c->z, c->zs);
    be->axpby_samples(be, n, c->latent_per, c->a, c->z, c->b, c->eps, c->zt);
    t = mark(c, PH_TARGETS, t);
    const float *eps_hat = rmx_dit_forward_style(c->dit, n, c->zt, c->t, c->y, c->zs, c->keep);
    t = mark(c, PH_DIT_FWD, t);
    be->mse_loss(be, lat, eps_hat, c->eps, scale / (float)c->latent_per, c->scalars + TERM_MSE, c->deps);
    rmx_remix_loss_eps(c->loss, n, c->zt, eps_hat, c->a, c->b, c->latent_scale, scale, c->scalars, c->deps_remix);
    be->scale(be, lat, c->weight[TERM_MSE], c->deps);
    be->axpy(be, lat, 1.0f, c->deps_remix, c->deps);
    t = mark(c, PH_LOSSES, t);
    rmx_dit_backward(c->dit, n, c->deps, NULL);
    t = mark(c, PH_DIT_BWD, t);
    be->sumsq(be, p->span, p->grad, c->scalars + SLOT_SUMSQ);
    float host[N_SLOTS];
    be->to_host(be, host, c->scalars, sizeof host);
    if (update) {
        rmx_adamw_hparams ahp = {.lr = LR, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f,
                                 .t = step + 1};
        be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ahp);
        rmx_stage_ema_update(p, EMA_DECAY, step);
    }
    mark(c, PH_UPDATE, t);
    step_result r = {.total = 0, .norm = sqrt((double)host[SLOT_SUMSQ])};
    for (int k = 0; k < N_TERMS; k++) {
        r.terms[k] = host[k];
        r.total += (double)c->weight[k] * host[k];
    }
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* the case file                                                                               */

static void write_item(FILE *f, const char *kind, const char *prefix, const char *name, int ndim,
                       const int64_t *shape) {
    fprintf(f, "%s %s%s %d", kind, prefix, name, ndim);
    for (int k = 0; k < ndim; k++) fprintf(f, " %lld", (long long)shape[k]);
    fprintf(f, "\n");
}

static void write_registry_header(FILE *f, const char *prefix, const rmx_params *p) {
    for (int i = 0; i < p->count; i++) write_item(f, "tensor", prefix, p->info[i].name, p->info[i].ndim, p->info[i].shape);
}

static void write_host(FILE *f, const void *h, size_t bytes, const char *path) {
    if (fwrite(h, 1, bytes, f) != bytes) {
        perror(path);
        exit(1);
    }
}

static void write_backend(FILE *f, rmx_backend *be, const float *src, size_t n, const char *path) {
    float *h = xmalloc(n * sizeof *h);
    be->to_host(be, h, src, n * sizeof *h);
    write_host(f, h, n * sizeof *h, path);
    free(h);
}

static void write_registry_data(FILE *f, rmx_backend *be, const rmx_params *p, const char *path) {
    for (int i = 0; i < p->count; i++) write_backend(f, be, rmx_params_data(p, i), p->info[i].numel, path);
}

static void case_write(const char *path, remix_case *c, const step_result *r) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    const rmx_ae_hparams *ah = &c->ae_hp;
    const rmx_dit_hparams *dh = &c->dit_hp;
    fprintf(f, "%s\nsize %s\nbatch %d\nseed %u\n", CASE_MAGIC, c->size, c->batch, BENCH_SEED);
    fprintf(f, "ae_channels %d\nae_mult ", ah->channels);
    for (int i = 0; i < ah->n_levels; i++) fprintf(f, "%s%d", i ? "," : "", ah->channel_mult[i]);
    fprintf(f, "\nae_res_blocks %d\nae_latent %d\nmels %d\nframes %d\n", ah->res_blocks, ah->latent_channels,
            ah->mels, ah->frames);
    fprintf(f, "patch %d\nhidden %d\ndepth %d\nheads %d\nmlp_ratio %.9g\nnum_classes %d\nfreq_dim %d\n", dh->patch,
            dh->hidden, dh->depth, dh->heads, (double)dh->mlp_ratio, dh->num_classes, dh->freq_dim);
    fprintf(f, "w_content %g\nw_style %g\nw_tv %g\nw_mse %g\ncontent_layers %s\nstyle_layers %s\n",
            (double)c->weight[0], (double)c->weight[1], (double)c->weight[2], (double)c->weight[3], CONTENT_LAYERS,
            STYLE_LAYERS);
    fprintf(f, "latent_scale %.9g\nlr %g\nema_decay %g\n", (double)c->latent_scale, (double)LR, (double)EMA_DECAY);
    fprintf(f, "loss %.9g\n", r->total);
    for (int k = 0; k < N_TERMS; k++) fprintf(f, "%s %.9g\n", term_names[k], (double)r->terms[k]);
    fprintf(f, "grad_norm %.9g\n", r->norm);
    rmx_params *dp = rmx_dit_params(c->dit), *ds = rmx_dit_state(c->dit), *ap = rmx_ae_params(c->ae);
    write_registry_header(f, "dit.", dp);
    write_registry_header(f, "dit.", ds);
    write_registry_header(f, "ae.", ap);
    int64_t mel[4] = {c->batch, 1, ah->mels, ah->frames};
    int64_t lat[4] = {c->batch, dh->in_channels, dh->height, dh->width}, vec[1] = {c->batch};
    write_item(f, "input", "", "x", 4, mel);
    write_item(f, "input", "", "xs", 4, mel);
    write_item(f, "input", "", "eps", 4, lat);
    static const char *const per_sample[] = {"t", "a", "b", "keep", "y"};
    for (int k = 0; k < 5; k++) write_item(f, "input", "", per_sample[k], 1, vec);
    fprintf(f, "end\n");
    write_registry_data(f, c->be, dp, path);
    write_registry_data(f, c->be, ds, path);
    write_registry_data(f, c->be, ap, path);
    const size_t B = (size_t)c->batch;
    write_backend(f, c->be, c->orig.x, B * c->mel_per, path);
    write_backend(f, c->be, c->xs, B * c->mel_per, path);
    write_backend(f, c->be, c->eps, B * c->latent_per, path);
    float *keep = xmalloc(B * sizeof *keep);
    for (size_t i = 0; i < B; i++) keep[i] = (float)c->keep[i];
    write_host(f, c->t, B * sizeof *c->t, path);
    write_host(f, c->a, B * sizeof *c->a, path);
    write_host(f, c->b, B * sizeof *c->b, path);
    write_host(f, keep, B * sizeof *keep, path);
    write_host(f, c->y, B * sizeof *c->y, path);
    free(keep);
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* The value of header key `key` of a case file, as text (static buffer); exits when absent. */
static const char *case_value(const char *path, const char *key) {
    static char value[256];
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    char line[512], k[128];
    if (!fgets(line, sizeof line, f) || strncmp(line, CASE_MAGIC, strlen(CASE_MAGIC)) != 0) {
        fprintf(stderr, "bench_remix_step: %s: not a bench_remix_step case file\n", path);
        exit(1);
    }
    while (fgets(line, sizeof line, f) && strcmp(line, "end\n") != 0)
        if (sscanf(line, "%127s %255s", k, value) == 2 && !strcmp(k, key)) {
            fclose(f);
            return value;
        }
    fclose(f);
    fprintf(stderr, "bench_remix_step: %s: no '%s' in the header\n", path, key);
    exit(1);
}

/* Exit 1 unless the case file was written for this size and batch (checked before any work). */
static void check_case_shape(const char *path, const char *size, int batch) {
    char case_size[64];
    snprintf(case_size, sizeof case_size, "%s", case_value(path, "size"));
    int case_batch = atoi(case_value(path, "batch"));
    if (strcmp(case_size, size) != 0 || case_batch != batch) {
        fprintf(stderr, "bench_remix_step: %s holds size %s batch %d, not %s batch %d (--size, --batch)\n", path,
                case_size, case_batch, size, batch);
        exit(1);
    }
}

/* Exit 1 unless step 0 gives the case's total loss to tol relative. */
static void check_against_case(const char *path, const step_result *r, double tol) {
    double ref = atof(case_value(path, "loss")), ref_norm = atof(case_value(path, "grad_norm"));
    double rel = fabs(r->total - ref) / fabs(ref), reln = fabs(r->norm - ref_norm) / fabs(ref_norm);
    printf("  check: step-0 loss %.9g against the case's %.9g: relative %.2e (tolerance %.0e); gradient norm "
           "relative %.2e\n",
           r->total, ref, rel, tol, reln);
    if (!(rel <= tol)) {
        fprintf(stderr, "bench_remix_step: FAIL: the step-0 loss differs from %s's\n", path);
        exit(1);
    }
}

/* ------------------------------------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr, "usage: bench_remix_step [--size bench|demo] [--batch B] [--threads N] [--steps N]\n"
                    "                        [--warmup N] [--write FILE | --case FILE] [--tol R]\n");
    exit(2);
}

static void print_plan(const remix_case *c, int threads) {
    const rmx_ae_hparams *ah = &c->ae_hp;
    const rmx_dit_hparams *dh = &c->dit_hp;
    printf("Remixer remix train step (%s size): autoencoder 1x%dx%d, C %d, %d levels, latent %dx%dx%d (%zu "
           "parameters, frozen); DiT hidden %d, depth %d, heads %d, patch %d, %d tokens per sample (content + "
           "style), %zu trained parameters; batch %d; latent_scale %.4g; cpu backend, %d threads\n",
           c->size, ah->mels, ah->frames, ah->channels, ah->n_levels, dh->in_channels, dh->height, dh->width,
           rmx_ae_params(c->ae)->numel, dh->hidden, dh->depth, dh->heads, dh->patch, rmx_dit_sequence(c->dit),
           rmx_dit_params(c->dit)->numel, c->batch, (double)c->latent_scale, threads);
}

static void print_result(const step_result *r, int s, int warmup, double dt) {
    printf("  step %d%s: %9.1f ms  loss %.7g (content %.5g style %.5g tv %.5g mse %.5g)  grad norm %.6g\n", s,
           s < warmup ? " (warm-up)" : "", 1e3 * dt, r->total, (double)r->terms[0], (double)r->terms[1],
           (double)r->terms[2], (double)r->terms[3], r->norm);
}

int main(int argc, char **argv) {
    const char *size = "bench", *write_path = NULL, *case_path = NULL;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), batch = 8, steps = 3, warmup = 1;
    double tol = 1e-5;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *k = argv[i], *v = argv[++i];
        if (!strcmp(k, "--size")) size = v;
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
        else if (!strcmp(k, "--write")) write_path = v;
        else if (!strcmp(k, "--case")) case_path = v;
        else if (!strcmp(k, "--tol")) tol = atof(v);
        else usage();
    }
    if (threads < 1 || batch < 1 || steps < 1 || warmup < 0 || (write_path && case_path)) usage();
    if (case_path) check_case_shape(case_path, size, batch);
    rmx_backend *be = rmx_backend_cpu_create(threads);
    remix_case c;
    if (case_create(&c, be, size, batch) != 0) {
        fprintf(stderr, "bench_remix_step: --size: expected bench or demo, got '%s'\n", size);
        return 2;
    }
    print_plan(&c, threads);
    if (write_path) {
        step_result r = train_step(&c, 0, 0);
        case_write(write_path, &c, &r);
        printf("case written to %s: step-0 loss %.9g (content %.9g style %.9g tv %.9g mse %.9g), gradient norm "
               "%.9g\n",
               write_path, r.total, (double)r.terms[0], (double)r.terms[1], (double)r.terms[2], (double)r.terms[3],
               r.norm);
        case_free(&c);
        be->destroy(be);
        return 0;
    }
    double *times = xmalloc((size_t)steps * sizeof *times), *cpu = xmalloc((size_t)steps * sizeof *cpu), *phases = xmalloc((size_t)steps * N_PHASES * sizeof *phases);
    step_result first = {0}, last = {0};
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = now(), c0 = own_cpu_s();
        step_result r = train_step(&c, s, 1);
        double dt = now() - t0, dc = own_cpu_s() - c0;
        if (!isfinite(r.total) || !isfinite(r.norm)) {
            fprintf(stderr, "bench_remix_step: non-finite loss or gradient at step %d\n", s);
            return 1;
        }
        if (s == 0) {
            first = r;
            if (case_path) check_against_case(case_path, &r, tol);
        }
        last = r;
        if (s >= warmup) {
            times[s - warmup] = dt;
            cpu[s - warmup] = dc;
            for (int k = 0; k < N_PHASES; k++) phases[k * steps + s - warmup] = c.phase[k];
        }
        print_result(&r, s, warmup, dt);
    }
    double best = times[0];
    for (int s = 1; s < steps; s++) best = times[s] < best ? times[s] : best;
    double med = median_sorted(times, steps), cpu_med = median_sorted(cpu, steps);
    printf("\nloss %.7g (step 0, gradient norm %.6g) -> %.7g over %d steps\n", first.total, first.norm, last.total,
           warmup + steps);
    printf("phases (median of the timed steps):\n");
    for (int k = 0; k < N_PHASES; k++) {
        double m = median_sorted(phases + k * steps, steps);
        printf("  %-72s %9.1f ms %5.1f %%\n", phase_names[k], 1e3 * m, 100.0 * m / med);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;
    printf("step time: median %.1f ms, min %.1f ms (%d timed steps after %d warm-up); process CPU time per step "
           "(median) %.1f ms; peak memory (ru_maxrss) %.1f MiB\n",
           1e3 * med, 1e3 * best, steps, warmup, 1e3 * cpu_med, rss_mib);
    printf("RESULT side=remixer size=%s threads=%d batch=%d step_median_ms=%.1f step_min_ms=%.1f step_cpu_ms=%.1f "
           "maxrss_mib=%.1f loss0=%.9g\n",
           size, threads, batch, 1e3 * med, 1e3 * best, 1e3 * cpu_med, rss_mib, first.total);
    free(times);
    free(cpu);
    free(phases);
    case_free(&c);
    be->destroy(be);
    return 0;
}
