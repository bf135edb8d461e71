/* Stage 3, `stage: remix`: the stage-2 transformer, extended with style tokens (model/dit.h), learns
 * to remix an original in the style of another segment, with neural style transfer's losses
 * measured by the frozen autoencoder (model/remix_loss.h).
 *
 * Start: diffusion.checkpoint (a stage-2 checkpoint) gives the autoencoder, latent_scale, the
 * schedule and the transformer's EMA weights; the style part is new (style_embedder copied from
 * x_embedder). Per sample of a micro-batch (global stream position s, step k):
 *   style  a training segment of another genre (remix.pairing other-genre; or any): candidate
 *          index (seed, REMIX_PAIR, k, s, attempt) for attempts 0..15, the first of another
 *          genre; when none is, the last candidate
 *   keep   the style tokens, or (probability remix.style_drop, (seed, STYLE_DROP, k, s)) the null
 *          style; a dropped sample's style target is the original itself, so the null style
 *          learns "keep your own character" and guidance moves away from it towards the style
 *   t      = strength T, strength ~ U[remix.strength_min, remix.strength_max]  (seed, REMIX_T, k, s)
 *   eps    ~ N(0, I)  (seed, REMIX_EPS, k, s);  z_t = a z0 + b eps,  z0 = latent_scale latents(x)
 *   y      the null class (the style tokens are the condition)
 *   loss   alpha content + beta style + gamma tv (of x0_hat decoded, model/remix_loss.h)
 *          + lambda mean (eps_hat - eps)^2
 * EMA of the weights after each step, as in stage 2 (remix.ema_decay).
 *
 * Checkpoints: /model, /optim, /ema (the style transformer), /diffusion (latent_scale, schedule,
 * the stage-2 config, source and step), /autoencoder, /audio: all remixer-remix needs.
 *
 * Evaluation (EMA weights): the four terms over the validation set at t = remix.eval_strength T
 * with fixed noise, each original paired with a validation segment of another genre; and a PNG
 * with remix.eval_pairs rows original | style | remix (DDIM from eval_strength with style
 * guidance remix.style_scale), originals and styles the first validation segments of successive
 * genres. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/diffusion.h"
#include "model/dit.h"
#include "model/remix_loss.h"
#include "train/diffusion_ckpt.h"
#include "train/evaluate.h"
#include "train/stage.h"
#include "train/trainer.h"
#include "util/exitcodes.h"
#include "util/log.h"
#include "util/rng.h"

enum { PAIR_ATTEMPTS = 16, TERM_MSE = RMX_REMIX_N_TERMS, N_TERMS = RMX_REMIX_N_TERMS + 1 };

#define EVAL_NOISE_STEP UINT64_MAX

typedef struct {
    rmx_stage base; /* first */
    rmx_backend *be;
    rmx_diffusion_ckpt src;  /* autoencoder, style transformer, schedule, latent_scale */
    float *ae_at_setup[2];
    rmx_params scale_reg;    /* latent_scale [1], under /diffusion */
    rmx_remix_loss *loss;
    rmx_dataset *styles;     /* the training split again: read by this thread, not the loader's */
    size_t mel_per, latent_per;
    int null_class;
    float weight[N_TERMS];   /* alpha, beta, gamma, lambda in term order */
    /* one micro-batch */
    float *x, *xs;           /* [m, 1, M, T]: originals, styles */
    float *z, *zs, *zt;      /* [m, C, H, W] */
    float *eps, *deps, *deps_remix;
    float *saved;            /* the trained weights while the EMA ones are swapped in */
    float *host_styles;      /* host [m, M, T] */
    int64_t *style_index;
    int32_t *t, *y;
    uint8_t *keep;
    float *tf, *a, *b;
    int64_t *genre_example;  /* per genre, the first validation sample (-1: none) */
    int32_t *val_genre;      /* genres of the validation split */
} remix_stage;

static remix_stage *remix_of(rmx_stage *s) { return (remix_stage *)s; }

/* ---- set-up ---- */

static int parse_loss(remix_stage *r, const rmx_config *c, int m, char *err, size_t errlen) {
    rmx_remix_loss_config lc = {.content_weight = c->remix.content_weight,
                                .style_weight = c->remix.style_weight,
                                .tv_weight = c->remix.tv_weight};
    char why[1024];
    if (rmx_remix_parse_layers(r->src.fae.ae, c->remix.content_layers, lc.content, &lc.n_content, why,
                               sizeof why) != 0)
        return rmx_seterr(err, errlen, "%s: remix.content_layers: %s", c->path, why);
    if (rmx_remix_parse_layers(r->src.fae.ae, c->remix.style_layers, lc.style, &lc.n_style, why, sizeof why) != 0)
        return rmx_seterr(err, errlen, "%s: remix.style_layers: %s", c->path, why);
    r->loss = rmx_remix_loss_create(r->src.fae.ae, &lc, m);
    return 0;
}

static void layout_checkpoint(remix_stage *r) {
    rmx_ckpt_layout *l = &r->base.layout;
    rmx_params *p = rmx_dit_params(r->src.dit), *state = rmx_dit_state(r->src.dit);
    rmx_ckpt_layout_add(l, "model", p, 1);
    rmx_ckpt_layout_add(l, "model", state, 0);
    rmx_ckpt_layout_add_values(l, "ema", p, p->ema);
    rmx_ckpt_layout_add(l, "ema", state, 0);
    rmx_diffusion_ckpt_layout(&r->src, &r->scale_reg, l);
    rmx_frozen_ae_layout(&r->src.fae, l);
}

static void alloc_buffers(remix_stage *r, int m) {
    rmx_backend *be = r->be;
    const size_t lat = r->latent_per * (size_t)m, mel = r->mel_per * (size_t)m;
    r->x = be->alloc(be, sizeof(float) * mel);
    r->xs = be->alloc(be, sizeof(float) * mel);
    float **lats[] = {&r->z, &r->zs, &r->zt, &r->eps, &r->deps, &r->deps_remix};
    for (size_t i = 0; i < sizeof lats / sizeof lats[0]; i++) *lats[i] = be->alloc(be, sizeof(float) * lat);
    r->saved = be->alloc(be, sizeof(float) * rmx_dit_params(r->src.dit)->span);
    r->host_styles = malloc(sizeof(float) * mel);
    r->style_index = calloc((size_t)m, sizeof *r->style_index);
    r->t = calloc((size_t)m, sizeof *r->t);
    r->y = calloc((size_t)m, sizeof *r->y);
    r->keep = calloc((size_t)m, sizeof *r->keep);
    r->tf = calloc((size_t)m, sizeof *r->tf);
    r->a = calloc((size_t)m, sizeof *r->a);
    r->b = calloc((size_t)m, sizeof *r->b);
}

static int remix_create(rmx_trainer *t, rmx_stage **out, char *err, size_t errlen) {
    const rmx_config *c = &t->cfg;
    const int m = c->train.micro_batch;
    remix_stage *r = calloc(1, sizeof *r);
    if (!r) return rmx_seterr(err, errlen, "out of memory"), RMX_EXIT_FAILURE;
    *out = &r->base;
    r->base.ops = &rmx_stage_remix;
    r->be = t->be;
    char why[2048];
    int code = rmx_diffusion_ckpt_load(t->be, c->diffusion.checkpoint, m, RMX_DIT_EXTEND, c->train.seed, &r->src,
                                       why, sizeof why);
    if (code != RMX_EXIT_OK) {
        rmx_seterr(err, errlen, "%s: diffusion.checkpoint: %s", c->path, why);
        return code;
    }
    if (rmx_frozen_ae_check_data(&r->src.fae, rmx_dataset_params(t->train), c->data.train, c->path,
                                 "diffusion.checkpoint", c->diffusion.checkpoint, err, errlen) != 0)
        return RMX_EXIT_DATA;
    rmx_frozen_ae_snapshot(&r->src.fae, r->ae_at_setup);
    r->styles = rmx_dataset_open(c->data.train, why, sizeof why);
    if (!r->styles) {
        rmx_seterr(err, errlen, "%s: data.train: %s", c->path, why);
        return RMX_EXIT_DATA;
    }
    rmx_dataset_set_on_corrupt(r->styles,
                               strcmp(c->data.on_corrupt, "skip") == 0 ? RMX_ON_CORRUPT_SKIP : RMX_ON_CORRUPT_STOP);
    if (parse_loss(r, c, m, err, errlen) != 0) return RMX_EXIT_USAGE;
    rmx_params *p = rmx_dit_params(r->src.dit);
    rmx_params_alloc_ema(p);
    rmx_params_init(&r->scale_reg, t->be, 0, 0);
    int64_t one = 1;
    rmx_params_add(&r->scale_reg, "latent_scale", 1, &one, RMX_INIT_CONST, 1.0f);
    rmx_params_finalize(&r->scale_reg);
    t->be->to_backend(t->be, r->scale_reg.data, &r->src.latent_scale, sizeof(float));
    int lc, lh, lw;
    rmx_ae_latent_shape(r->src.fae.ae, &lc, &lh, &lw);
    r->latent_per = (size_t)lc * lh * lw;
    r->mel_per = rmx_dataset_sample_floats(t->train);
    r->null_class = r->src.fae.audio.n_genres;
    r->weight[RMX_REMIX_CONTENT] = c->remix.content_weight;
    r->weight[RMX_REMIX_STYLE] = c->remix.style_weight;
    r->weight[RMX_REMIX_TV] = c->remix.tv_weight;
    r->weight[TERM_MSE] = c->remix.diffusion_weight;
    layout_checkpoint(r);
    alloc_buffers(r, m);

    rmx_stage *s = &r->base;
    s->trained = p;
    s->n_terms = N_TERMS;
    s->term_names[RMX_REMIX_CONTENT] = "content";
    s->term_names[RMX_REMIX_STYLE] = "style";
    s->term_names[RMX_REMIX_TV] = "tv";
    s->term_names[TERM_MSE] = "mse";
    s->input_shape[0] = 1;
    s->input_shape[1] = r->src.fae.hp.mels;
    s->input_shape[2] = r->src.fae.hp.frames;
    s->memory_bytes = 6 * sizeof(float) * p->span + rmx_dit_arena_bytes(r->src.dit) +
                      sizeof(float) * (rmx_ae_params(r->src.fae.ae)->span + rmx_ae_state(r->src.fae.ae)->span) +
                      rmx_ae_arena_bytes(r->src.fae.ae);
    return RMX_EXIT_OK;
}

static void remix_free(rmx_stage *s) {
    remix_stage *r = remix_of(s);
    rmx_backend *be = r->be;
    float *bufs[] = {r->x, r->xs, r->z, r->zs, r->zt, r->eps, r->deps, r->deps_remix, r->saved};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    rmx_remix_loss_free(r->loss);
    if (r->styles) rmx_dataset_close(r->styles);
    if (r->scale_reg.info) rmx_params_free(&r->scale_reg);
    rmx_diffusion_ckpt_free(&r->src);
    void *host[] = {r->ae_at_setup[0], r->ae_at_setup[1], r->host_styles, r->style_index, r->t, r->y, r->keep,
                    r->tf, r->a, r->b, r->genre_example, r->val_genre};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    free(r);
}

static void remix_set_grad_ready(rmx_stage *s, void (*fn)(void *, int), void *arg) {
    rmx_dit_set_grad_ready(remix_of(s)->src.dit, fn, arg);
}

static int remix_start(rmx_stage *s, rmx_trainer *t, const char *resumed_from) {
    remix_stage *r = remix_of(s);
    int code = RMX_EXIT_OK;
    if (resumed_from) {
        char why[1024], what[RMX_PATH_MAX * 2 + 64];
        snprintf(what, sizeof what, "diffusion.checkpoint %s has another autoencoder than %s",
                 t->cfg.diffusion.checkpoint, resumed_from);
        if (rmx_frozen_ae_compare(&r->src.fae, r->ae_at_setup, what, why, sizeof why) != 0) {
            if (t->comm.rank == 0)
                rmx_error("%s; refusing to resume (point diffusion.checkpoint at the checkpoint this run started "
                          "from, or start afresh with checkpoint.resume=never)",
                          why);
            code = RMX_EXIT_CHECKPOINT;
        }
        r->be->to_host(r->be, &r->src.latent_scale, r->scale_reg.data, sizeof(float));
    }
    for (int i = 0; i < 2; i++) {
        free(r->ae_at_setup[i]);
        r->ae_at_setup[i] = NULL;
    }
    return code;
}

/* ---- training ---- */

static void remix_step_begin(rmx_stage *s, rmx_trainer *t) {
    (void)t;
    rmx_dit_step_begin(remix_of(s)->src.dit);
}

/* The style segment of the sample at stream position pos with genre `genre`. */
static int pick_style(remix_stage *r, const rmx_config *c, int64_t step, uint64_t pos, int32_t genre, int64_t *out,
                      char *err, size_t errlen) {
    const uint64_t n = (uint64_t)rmx_dataset_length(r->styles);
    const int other = strcmp(c->remix.pairing, "other-genre") == 0;
    for (uint32_t k = 0; k < PAIR_ATTEMPTS; k++) {
        uint32_t u = rmx_u32(c->train.seed, RMX_RNG_REMIX_PAIR, (uint64_t)step, pos, k);
        *out = (int64_t)(((uint64_t)u * n) >> 32);
        int32_t g = -1;
        if (rmx_dataset_read(r->styles, *out, NULL, &g, err, errlen) != 0) return -1;
        if (!other || g != genre) break;
    }
    return 0;
}

/* The per-sample draws of a training step and the style segments (into r->xs). */
static int draw(remix_stage *r, const rmx_config *c, int64_t step, const rmx_batch *b, char *err, size_t errlen) {
    const int T = r->src.sched.timesteps;
    for (int i = 0; i < b->m; i++) {
        uint64_t pos = (uint64_t)b->position[i];
        if (pick_style(r, c, step, pos, b->genre[i], &r->style_index[i], err, errlen) != 0) return -1;
        float u = rmx_u01(rmx_u32(c->train.seed, RMX_RNG_REMIX_T, (uint64_t)step, pos, 0));
        float strength = c->remix.strength_min + u * (c->remix.strength_max - c->remix.strength_min);
        int ti = (int)(strength * (float)T);
        r->t[i] = ti < 0 ? 0 : ti > T - 1 ? T - 1 : ti;
        r->tf[i] = (float)r->t[i];
        r->keep[i] = rmx_u01(rmx_u32(c->train.seed, RMX_RNG_STYLE_DROP, (uint64_t)step, pos, 0)) >= c->remix.style_drop;
        r->y[i] = r->null_class;
    }
    if (rmx_dataset_read_batch(r->styles, r->style_index, b->m, r->host_styles, NULL, err, errlen) != 0) return -1;
    /* a dropped style's target is the original itself */
    for (int i = 0; i < b->m; i++)
        if (!r->keep[i]) memcpy(r->host_styles + (size_t)i * r->mel_per, b->mel + (size_t)i * r->mel_per,
                                sizeof(float) * r->mel_per);
    return 0;
}

/* The whole loss of n samples whose originals are in r->x, styles in r->xs, draws in r->t, keep;
 * noise in r->eps. Accumulates the terms; weight gradients when `train`. */
static void remix_loss(remix_stage *r, const rmx_config *c, int n, float scale, float *loss_terms, int train) {
    rmx_backend *be = r->be;
    const size_t lat = r->latent_per * (size_t)n;
    rmx_remix_loss_targets(r->loss, n, r->x, r->xs, r->src.latent_scale, r->z, r->zs);
    rmx_noise_coefs(&r->src.sched, n, r->t, r->a, r->b);
    be->axpby_samples(be, n, r->latent_per, r->a, r->z, r->b, r->eps, r->zt);
    const float *eps_hat = rmx_dit_forward_style(r->src.dit, n, r->zt, r->tf, r->y, r->zs, r->keep);
    be->mse_loss(be, lat, eps_hat, r->eps, scale / (float)r->latent_per, loss_terms + TERM_MSE, r->deps);
    rmx_remix_loss_eps(r->loss, n, r->zt, eps_hat, r->a, r->b, r->src.latent_scale, scale, loss_terms,
                       r->deps_remix);
    if (!train) return;
    be->scale(be, lat, c->remix.diffusion_weight, r->deps);
    be->axpy(be, lat, 1.0f, r->deps_remix, r->deps);
    rmx_dit_backward(r->src.dit, n, r->deps, NULL);
}

static void remix_forward_backward(rmx_stage *s, rmx_trainer *t, const rmx_batch *b, float scale,
                                   float *loss_terms) {
    remix_stage *r = remix_of(s);
    const rmx_config *c = &t->cfg;
    char err[1024];
    if (draw(r, c, t->step, b, err, sizeof err) != 0) {
        /* the training split read fine a moment ago through the loader: a failure here is the disk */
        rmx_error("rank %d: reading the style segments: %s", t->comm.rank, err);
        exit(RMX_EXIT_DATA);
    }
    r->be->to_backend(r->be, r->x, b->mel, sizeof(float) * r->mel_per * (size_t)b->m);
    r->be->to_backend(r->be, r->xs, r->host_styles, sizeof(float) * r->mel_per * (size_t)b->m);
    r->be->randn(r->be, r->eps, b->m, r->latent_per, c->train.seed, RMX_RNG_REMIX_EPS, (uint64_t)t->step,
                 b->position);
    remix_loss(r, c, b->m, scale, loss_terms, 1);
}

static double remix_total_loss(const rmx_stage *s, const float *terms) {
    const remix_stage *r = (const remix_stage *)s;
    double total = 0;
    for (int k = 0; k < N_TERMS; k++) total += (double)r->weight[k] * terms[k];
    return total;
}

static void remix_after_update(rmx_stage *s, rmx_trainer *t) {
    rmx_stage_ema_update(rmx_dit_params(remix_of(s)->src.dit), t->cfg.remix.ema_decay, t->step);
}

/* ---- evaluation (EMA weights) ---- */

/* Genres of the validation split, read once. */
static int read_val_genres(remix_stage *r, rmx_trainer *t) {
    if (r->val_genre) return 0;
    const int64_t n = rmx_dataset_length(t->val);
    r->val_genre = malloc(sizeof(int32_t) * (size_t)n);
    char err[1024];
    for (int64_t i = 0; i < n; i++)
        if (rmx_dataset_read(t->val, i, NULL, &r->val_genre[i], err, sizeof err) != 0) {
            rmx_error("rank %d: evaluation: %s", t->comm.rank, err);
            return -1;
        }
    return 0;
}

/* The validation segment paired with validation segment i: the first of another genre from
 * halfway round the split on (the one halfway round when every segment has i's genre). */
static int64_t val_partner(const remix_stage *r, int64_t n, int64_t i) {
    for (int64_t k = 0; k < n; k++) {
        int64_t j = (i + n / 2 + k) % n;
        if (r->val_genre[j] != r->val_genre[i]) return j;
    }
    return (i + n / 2) % n;
}

static int remix_eval_chunk(void *arg, rmx_trainer *t, const rmx_eval_chunk *c, float *loss_terms) {
    remix_stage *r = arg;
    const rmx_config *cfg = &t->cfg;
    const int n = c->n, T = r->src.sched.timesteps;
    const int64_t n_val = rmx_dataset_length(t->val);
    int64_t partner[64];
    char err[1024];
    for (int i0 = 0; i0 < n; i0 += 64) {
        int k = n - i0 < 64 ? n - i0 : 64;
        for (int i = 0; i < k; i++) partner[i] = val_partner(r, n_val, c->index[i0 + i]);
        if (rmx_dataset_read_batch(t->val, partner, k, c->scratch + (size_t)i0 * r->mel_per, NULL, err,
                                   sizeof err) != 0) {
            rmx_error("rank %d: evaluation: %s", t->comm.rank, err);
            return -1;
        }
    }
    int ti = (int)(cfg->remix.eval_strength * (float)T);
    for (int i = 0; i < n; i++) {
        r->t[i] = ti < 0 ? 0 : ti > T - 1 ? T - 1 : ti;
        r->tf[i] = (float)r->t[i];
        r->keep[i] = 1;
        r->y[i] = r->null_class;
    }
    r->be->to_backend(r->be, r->x, c->mel, sizeof(float) * r->mel_per * (size_t)n);
    r->be->to_backend(r->be, r->xs, c->scratch, sizeof(float) * r->mel_per * (size_t)n);
    r->be->randn(r->be, r->eps, n, r->latent_per, cfg->train.seed, RMX_RNG_REMIX_EPS, EVAL_NOISE_STEP, c->index);
    remix_loss(r, cfg, n, c->scale, loss_terms, 0);
    return 0;
}

/* One row of the PNG: original | style | remix. */
static int remix_panel_row(remix_stage *r, rmx_trainer *t, rmx_eval_panels *png, int row, int64_t orig,
                           int64_t style) {
    const rmx_config *c = &t->cfg;
    rmx_backend *be = r->be;
    float *mel = malloc(sizeof(float) * r->mel_per * 2);
    char err[1024];
    int64_t idx[2] = {orig, style};
    if (rmx_dataset_read_batch(t->val, idx, 2, mel, NULL, err, sizeof err) != 0) {
        rmx_error("rank %d: evaluation: %s", t->comm.rank, err);
        free(mel);
        return -1;
    }
    rmx_eval_panel_set(png, row, 0, mel);
    rmx_eval_panel_set(png, row, 1, mel + r->mel_per);
    /* one sample at a time: r->x, r->xs, r->z and r->zs hold train.micro_batch samples, maybe 1 */
    be->to_backend(be, r->x, mel, sizeof(float) * r->mel_per);
    be->to_backend(be, r->xs, mel + r->mel_per, sizeof(float) * r->mel_per);
    rmx_frozen_ae_scaled_latents(&r->src.fae, 1, r->x, r->src.latent_scale, r->z);
    rmx_frozen_ae_scaled_latents(&r->src.fae, 1, r->xs, r->src.latent_scale, r->zs);
    int64_t key = row;
    rmx_style_eps ctx;
    rmx_eps_model model = rmx_dit_style_eps_model(r->src.dit, 1, r->zs, &ctx);
    rmx_ddim_config dc = {.steps = c->remix.sample_steps, .cfg = c->remix.style_scale, .seed = c->train.seed,
                          .keys = &key};
    rmx_remix_sample(&model, &r->src.sched, &dc, 1, c->remix.eval_strength, r->z);
    rmx_style_eps_free(&ctx);
    be->scale(be, r->latent_per, 1.0f / r->src.latent_scale, r->z);
    const float *xhat = rmx_ae_decode_latents(r->src.fae.ae, 1, r->z);
    be->to_host(be, mel, xhat, sizeof(float) * r->mel_per);
    rmx_eval_panel_set(png, row, 2, mel);
    free(mel);
    return 0;
}

/* This rank's rows (row mod world == rank): originals and styles from successive genres. */
static int remix_panels(remix_stage *r, rmx_trainer *t, rmx_eval_panels *png, int rows) {
    const int G = rmx_dataset_params(t->val)->n_genres;
    if (!r->genre_example) {
        r->genre_example = malloc(sizeof(int64_t) * (size_t)G);
        if (rmx_eval_genre_examples(t, r->genre_example) != 0) return -1;
    }
    for (int row = t->comm.rank; row < rows; row += t->comm.world) {
        int64_t orig = r->genre_example[row % G], style = r->genre_example[(row + 1) % G];
        if (orig < 0 || style < 0) continue;
        if (remix_panel_row(r, t, png, row, orig, style) != 0) return -1;
    }
    return 0;
}

static void remix_report(remix_stage *r, rmx_trainer *t, int64_t label_step, const float *terms,
                         const rmx_eval_set *set, rmx_eval_panels *png) {
    rmx_terms m = {0};
    double total = remix_total_loss(&r->base, terms);
    rmx_terms_add(&m, "loss", total);
    for (int k = 0; k < N_TERMS; k++) rmx_terms_add(&m, r->base.term_names[k], terms[k]);
    rmx_metrics_write(&t->metrics, label_step, "val", &m, NULL);
    char path[RMX_PATH_MAX + 64];
    rmx_eval_png_path(t, label_step, path, sizeof path);
    rmx_progress_finish(&t->bar);
    printf("eval %6" PRId64 " | val loss %.4f (EMA; content %.4g style %.4g tv %.4g mse %.4f) | %" PRId64
           " samples | %s\n",
           label_step, total, terms[RMX_REMIX_CONTENT], terms[RMX_REMIX_STYLE], terms[RMX_REMIX_TV], terms[TERM_MSE],
           set->n_eval, path);
    fflush(stdout);
    rmx_eval_panels_write(png, path);
    rmx_eval_plot_losses(t);
}

static int remix_evaluate(rmx_stage *s, rmx_trainer *t, int64_t label_step) {
    remix_stage *r = remix_of(s);
    const rmx_mel_params *mp = rmx_dataset_params(t->val);
    rmx_eval_set set;
    rmx_eval_set_make(t, &set);
    int rows = t->cfg.remix.eval_pairs;
    rmx_eval_panels *png = rmx_eval_panels_create(rows, 3, mp->n_mels, mp->segment_frames);
    float terms[RMX_METRICS_MAX_TERMS];
    rmx_stage_use_ema(rmx_dit_params(r->src.dit), r->saved, 1);
    int bad = read_val_genres(r, t) != 0;
    int code = rmx_comm_any(&t->comm, bad) ? RMX_EXIT_DATA : rmx_eval_run(t, &set, remix_eval_chunk, r, N_TERMS, terms);
    if (code == 0 && rmx_comm_any(&t->comm, remix_panels(r, t, png, rows) != 0)) code = RMX_EXIT_DATA;
    rmx_stage_use_ema(rmx_dit_params(r->src.dit), r->saved, 0);
    if (code == 0) {
        rmx_eval_panels_gather(png, &t->comm);
        if (t->comm.rank == 0) remix_report(r, t, label_step, terms, &set, png);
    }
    rmx_eval_panels_free(png);
    return code;
}

static void remix_print_plan(const rmx_stage *s, const rmx_trainer *t) {
    const remix_stage *r = (const remix_stage *)s;
    const rmx_params *p = rmx_dit_params(r->src.dit);
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(r->src.dit);
    const rmx_config *c = &t->cfg;
    printf("  model          DiT with style tokens (hidden %d, depth %d, heads %d, patch %d): %zu trained parameters "
           "in %d tensors, %d tokens per sample in the blocks (content, then style)\n",
           hp->hidden, hp->depth, hp->heads, hp->patch, p->numel, p->count, rmx_dit_sequence(r->src.dit));
    printf("  starts from    %s (stage 2, step %" PRId64 "; autoencoder step %" PRId64 ", frozen)\n",
           c->diffusion.checkpoint, r->src.step, r->src.fae.step);
    printf("  loss           %g content [%s] + %g style [%s] + %g tv + %g mse; strength %g .. %g, pairing %s, "
           "style drop %g\n",
           c->remix.content_weight, c->remix.content_layers, c->remix.style_weight, c->remix.style_layers,
           c->remix.tv_weight, c->remix.diffusion_weight, c->remix.strength_min, c->remix.strength_max,
           c->remix.pairing, c->remix.style_drop);
    printf("  encoder layers");
    for (int k = 0; k < rmx_ae_feature_count(r->src.fae.ae); k++) {
        char name[64];
        int fc, fh, fw;
        rmx_ae_feature_name(r->src.fae.ae, k, name, sizeof name);
        rmx_ae_feature_shape(r->src.fae.ae, k, &fc, &fh, &fw);
        printf(" %s [%d x %d x %d]%s", name, fc, fh, fw, k + 1 < rmx_ae_feature_count(r->src.fae.ae) ? "," : "\n");
    }
}

const rmx_stage_ops rmx_stage_remix = {
    .name = "remix",
    .create = remix_create,
    .free = remix_free,
    .set_grad_ready = remix_set_grad_ready,
    .start = remix_start,
    .step_begin = remix_step_begin,
    .forward_backward = remix_forward_backward,
    .total_loss = remix_total_loss,
    .before_update = NULL,
    .after_update = remix_after_update,
    .evaluate = remix_evaluate,
    .print_plan = remix_print_plan,
};
