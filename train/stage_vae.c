/* Stage 1, `stage: vae`: the autoencoder (model/autoencoder.h) with a kl or vq bottleneck.
 *
 * Loss terms (each summed over the step's samples and divided by the global batch): rec, kl (kl
 * bottleneck) or commit (vq); total = rec + kl_weight kl or rec + commitment commit. The vq
 * codebook is updated by EMA between the gradient all-reduce and AdamW, with statistics and restart
 * candidates agreed over the ranks. Checkpoints hold /model (parameters, then the vq buffers) and
 * the Adam moments. Evaluation: reconstruction losses and spectral convergence on the validation
 * split, a PNG of inputs beside reconstructions. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/autoencoder.h"
#include "train/evaluate.h"
#include "train/stage.h"
#include "train/trainer.h"
#include "util/exitcodes.h"
#include "util/log.h"

typedef struct {
    rmx_stage base; /* first: the trainer's rmx_stage * is this */
    rmx_ae_hparams hp;
    rmx_ae *ae;
    rmx_backend *be;
    float *x; /* one micro-batch on the backend [m, 1, M, T] */
} vae_stage;

static vae_stage *vae_of(rmx_stage *s) { return (vae_stage *)s; }

/* The autoencoder's hyper-parameters: architecture from model.*, input size from the data. */
void rmx_ae_hparams_from_config(const rmx_config *c, const rmx_mel_params *mp, rmx_ae_hparams *hp) {
    rmx_ae_hparams_default(hp);
    hp->channels = c->model.channels;
    hp->n_levels = c->model.n_levels;
    for (int i = 0; i < c->model.n_levels; i++) hp->channel_mult[i] = c->model.channel_mult[i];
    hp->res_blocks = c->model.res_blocks;
    hp->latent_channels = c->model.latent_channels;
    hp->bottleneck = strcmp(c->model.bottleneck, "vq") == 0 ? RMX_AE_VQ : RMX_AE_KL;
    hp->kl_weight = c->model.kl_weight;
    hp->codebook_size = c->model.codebook_size;
    hp->commitment = c->model.commitment;
    hp->ema_decay = c->model.ema_decay;
    hp->mels = mp->n_mels;
    hp->frames = mp->segment_frames;
    hp->micro_batch = c->train.micro_batch;
}

static int vae_create(rmx_trainer *t, rmx_stage **out, char *err, size_t errlen) {
    vae_stage *v = calloc(1, sizeof *v);
    if (!v) return rmx_seterr(err, errlen, "out of memory"), RMX_EXIT_FAILURE;
    *out = &v->base;
    v->base.ops = &rmx_stage_vae;
    v->be = t->be;
    rmx_ae_hparams_from_config(&t->cfg, rmx_dataset_params(t->train), &v->hp);
    char why[1024];
    if (rmx_ae_validate(&v->hp, why, sizeof why) != 0) {
        rmx_seterr(err, errlen, "%s: %s", t->cfg.path, why);
        return RMX_EXIT_USAGE;
    }
    v->ae = rmx_ae_create(t->be, &v->hp, t->cfg.train.seed, err, errlen);
    if (!v->ae) return RMX_EXIT_USAGE;
    rmx_stage *s = &v->base;
    s->trained = rmx_ae_params(v->ae);
    /* the trained registry with its Adam moments, and the vq state beside it under /model, where
     * PyTorch keeps buffers (train/checkpoint.h) */
    rmx_ckpt_layout_add(&s->layout, "model", rmx_ae_params(v->ae), 1);
    rmx_ckpt_layout_add(&s->layout, "model", rmx_ae_state(v->ae), 0);
    /* what turns this autoencoder's output back into audio (remixer-reconstruct, later stages) */
    rmx_ckpt_layout_audio(&s->layout, "audio", rmx_dataset_params(t->train));
    s->n_terms = RMX_AE_N_LOSS;
    s->term_names[RMX_AE_LOSS_REC] = "rec";
    s->term_names[v->hp.bottleneck == RMX_AE_KL ? RMX_AE_LOSS_KL : RMX_AE_LOSS_COMMIT] =
        v->hp.bottleneck == RMX_AE_KL ? "kl" : "commit";
    s->input_shape[0] = 1;
    s->input_shape[1] = v->hp.mels;
    s->input_shape[2] = v->hp.frames;
    const rmx_params *p = rmx_ae_params(v->ae), *st = rmx_ae_state(v->ae);
    s->memory_bytes = 4 * sizeof(float) * p->span + sizeof(float) * st->span + rmx_ae_arena_bytes(v->ae);
    size_t sample = rmx_dataset_sample_floats(t->train);
    v->x = t->be->alloc(t->be, sizeof(float) * sample * (size_t)t->cfg.train.micro_batch);
    return RMX_EXIT_OK;
}

static void vae_free(rmx_stage *s) {
    vae_stage *v = vae_of(s);
    if (v->x) v->be->free(v->be, v->x);
    if (v->ae) rmx_ae_free(v->ae);
    free(v);
}

static void vae_set_grad_ready(rmx_stage *s, void (*fn)(void *, int), void *arg) {
    rmx_ae_set_grad_ready(vae_of(s)->ae, fn, arg);
}

static int vae_start(rmx_stage *s, rmx_trainer *t, const char *resumed_from) {
    (void)s, (void)t, (void)resumed_from;
    return RMX_EXIT_OK;
}

static void vae_step_begin(rmx_stage *s, rmx_trainer *t) {
    (void)t;
    rmx_ae_step_begin(vae_of(s)->ae);
}

static void vae_forward_backward(rmx_stage *s, rmx_trainer *t, const rmx_batch *b, float scale,
                                 float *loss_terms) {
    vae_stage *v = vae_of(s);
    size_t sample = rmx_dataset_sample_floats(t->train);
    v->be->to_backend(v->be, v->x, b->mel, sizeof(float) * sample * (size_t)b->m);
    rmx_ae_forward_backward(v->ae, b->m, v->x, NULL, b->position, t->cfg.train.seed, t->step, scale,
                            loss_terms);
}

static double vae_total_loss(const rmx_stage *s, const float *terms) {
    return rmx_ae_total_loss(&((const vae_stage *)s)->hp, terms);
}

/* The vq codebook's EMA statistics and restart candidates, agreed over ranks (autoencoder.h). */
static void vae_before_update(rmx_stage *s, rmx_trainer *t, rmx_terms *extra) {
    vae_stage *v = vae_of(s);
    if (v->hp.bottleneck != RMX_AE_VQ) return;
    int codes = 0;
    uint32_t *priority = rmx_ae_vq_restart_priority(v->ae, &codes);
    rmx_comm_max_u32(&t->comm, priority, codes);
    rmx_ae_vq_restart_settle(v->ae);
    size_t n = 0;
    float *stats = rmx_ae_vq_stats(v->ae, &n);
    rmx_trainer_sum_floats(t, stats, n);
    rmx_vq_report report;
    rmx_ae_vq_apply_ema(v->ae, &report);
    rmx_terms_add(extra, "perplexity", report.perplexity);
}

/* ---- evaluation: reconstructions of a fixed validation set ---- */

typedef struct {
    vae_stage *v;
    const rmx_eval_set *set;
    rmx_eval_panels *png;
    const rmx_mel_params *mp;
    double sums[2]; /* spectral convergence: diff_sq, ref_sq */
} vae_eval;

static int vae_eval_chunk(void *arg, rmx_trainer *t, const rmx_eval_chunk *c, float *loss_terms) {
    vae_eval *e = arg;
    vae_stage *v = e->v;
    const size_t sample = rmx_dataset_sample_floats(t->val);
    v->be->to_backend(v->be, v->x, c->mel, sizeof(float) * sample * (size_t)c->n);
    const float *xhat = rmx_ae_forward(v->ae, c->n, v->x, c->scale, loss_terms);
    v->be->to_host(v->be, c->scratch, xhat, sizeof(float) * sample * (size_t)c->n);
    for (int i = 0; i < c->n; i++) {
        const float *xi = c->mel + (size_t)i * sample, *yi = c->scratch + (size_t)i * sample;
        rmx_spectral_sums(xi, yi, sample, e->mp->norm_mean, e->mp->norm_std, &e->sums[0], &e->sums[1]);
        int row = rmx_eval_png_row(e->set, c->first + i);
        if (row >= 0) {
            rmx_eval_panel_set(e->png, row, 0, xi);
            rmx_eval_panel_set(e->png, row, 1, yi);
        }
    }
    return 0;
}

static void vae_report(vae_stage *v, rmx_trainer *t, vae_eval *e, int64_t label_step, int64_t n_eval,
                       const float *terms) {
    double sc = e->sums[1] > 0 ? sqrt(e->sums[0] / e->sums[1]) : NAN;
    double loss = rmx_ae_total_loss(&v->hp, terms);
    rmx_terms m = {0};
    rmx_terms_add(&m, "loss", loss);
    for (int i = 0; i < v->base.n_terms; i++)
        if (v->base.term_names[i]) rmx_terms_add(&m, v->base.term_names[i], terms[i]);
    rmx_terms_add(&m, "spectral_convergence", sc);
    rmx_metrics_write(&t->metrics, label_step, "val", &m, NULL);
    char png[RMX_PATH_MAX + 64];
    rmx_eval_png_path(t, label_step, png, sizeof png);
    rmx_progress_finish(&t->bar);
    printf("eval %6" PRId64 " | val loss %.4f (rec %.4f) | spectral convergence %.4f | %" PRId64
           " samples | %s\n", label_step, loss, terms[RMX_AE_LOSS_REC], sc, n_eval, png);
    fflush(stdout);
    rmx_eval_panels_write(e->png, png);
    rmx_eval_plot_losses(t);
}

static int vae_evaluate(rmx_stage *s, rmx_trainer *t, int64_t label_step) {
    vae_stage *v = vae_of(s);
    rmx_eval_set set;
    rmx_eval_set_make(t, &set);
    vae_eval e = {.v = v, .set = &set, .mp = rmx_dataset_params(t->val)};
    e.png = rmx_eval_panels_create(rmx_eval_png_rows(&set), 2, e.mp->n_mels, e.mp->segment_frames);
    float terms[RMX_AE_N_LOSS];
    int code = rmx_eval_run(t, &set, vae_eval_chunk, &e, RMX_AE_N_LOSS, terms);
    if (code == 0) {
        rmx_comm_sum_doubles(&t->comm, e.sums, 2);
        rmx_eval_panels_gather(e.png, &t->comm);
        if (t->comm.rank == 0) vae_report(v, t, &e, label_step, set.n_eval, terms);
    }
    rmx_eval_panels_free(e.png);
    return code;
}

static void vae_print_plan(const rmx_stage *s, const rmx_trainer *t) {
    const vae_stage *v = (const vae_stage *)s;
    const rmx_params *p = rmx_ae_params(v->ae);
    printf("  model          autoencoder (%s), %zu trained parameters in %d tensors\n",
           t->cfg.model.bottleneck, p->numel, p->count);
}

const rmx_stage_ops rmx_stage_vae = {
    .name = "vae",
    .create = vae_create,
    .free = vae_free,
    .set_grad_ready = vae_set_grad_ready,
    .start = vae_start,
    .step_begin = vae_step_begin,
    .forward_backward = vae_forward_backward,
    .total_loss = vae_total_loss,
    .before_update = vae_before_update,
    .after_update = NULL,
    .evaluate = vae_evaluate,
    .print_plan = vae_print_plan,
};
