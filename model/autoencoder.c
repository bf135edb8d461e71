#include "model/autoencoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/layers.h"
#include "util/log.h"
#include "util/rng.h"

/* Tensor numbers are per registry; the init streams keep the two registries apart. */
#define RMX_AE_STREAM_PARAMS 0
#define RMX_AE_STREAM_STATE 1

typedef struct {
    rmx_conv conv_in;
    rmx_resblock *res; /* [n_levels * res_blocks], level-major */
    rmx_conv downsample[RMX_AE_MAX_LEVELS]; /* levels 0 .. n_levels-2 */
    rmx_resblock mid;
    rmx_norm_act norm_out;
    rmx_conv conv_out;
} rmx_encoder;

typedef struct {
    rmx_conv conv_in;
    rmx_resblock mid;
    rmx_resblock *res; /* [n_levels * res_blocks], level-major */
    rmx_upsample upsample[RMX_AE_MAX_LEVELS]; /* levels 1 .. n_levels-1 */
    rmx_norm_act norm_out;
    rmx_conv conv_out;
} rmx_decoder;

struct rmx_ae {
    rmx_backend *be;
    rmx_ae_hparams hp;
    rmx_params params, state;
    int frozen;
    void (*grad_ready)(void *arg, int tensor); /* see rmx_layer_ctx */
    void *grad_ready_arg;
    rmx_encoder enc;
    rmx_decoder dec;
    int latent_c, latent_h, latent_w, latent_hw;

    /* The arena and what it holds besides the layers' own activations. */
    void *arena;
    size_t arena_bytes;
    float *workspace;     /* conv scratch */
    float *grad[4];       /* backward scratch, each the size of the largest activation */
    float *scratch;       /* transient activations (layers.h), the same size */
    float *dxhat;         /* [m, 1, M, T] */
    float *dlatent;       /* d z (kl) or d z_q (vq) [m, latent, h, w] */
    float *dencoded;      /* d moments [m, 2*latent, h, w] (kl) or d z_e (vq) */
    float *eps;           /* kl noise [m, latent, h, w] */
    float *z;             /* kl sample or mean, vq z_q [m, latent, h, w] */
    float *loss_sink;     /* [RMX_AE_N_LOSS]: losses computed only for their gradient */
    int32_t *codes;       /* vq assignments [m * h * w] */
    int32_t *restart_rows;/* vq restart gather rows [m * h * w] */

    /* vq: state tensor numbers, the step's statistics, host-side bookkeeping. */
    int codebook_id, ema_count_id, ema_sum_id;
    float *stats;
    size_t stats_count;
    float *counts, *sums, *restart_counts, *restart_sums;
    uint32_t *priority;       /* host [K]: all-reduced by the trainer (MAX) */
    uint32_t *priority_local; /* host [K]: this rank's best, kept for settle */
    int *restart_pick;        /* host [K]: position picked in the current micro-batch, or -1 */
    int32_t *host_rows;       /* host [m * h * w] */
    float *host_ema_count;    /* host [K] */
    float *host_counts;       /* host [K + 1] */
};

static void ae_abort(const char *msg) {
    fprintf(stderr, "remixer: internal error: autoencoder: %s\n", msg);
    abort();
}

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) ae_abort("out of host memory");
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* hyper-parameters                                                                            */

void rmx_ae_hparams_default(rmx_ae_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    hp->channels = 32;
    hp->channel_mult[0] = 1;
    hp->channel_mult[1] = 2;
    hp->channel_mult[2] = 4;
    hp->n_levels = 3;
    hp->res_blocks = 1;
    hp->latent_channels = 8;
    hp->bottleneck = RMX_AE_KL;
    hp->kl_weight = 1e-6f;
    hp->codebook_size = 512;
    hp->commitment = 0.25f;
    hp->ema_decay = 0.99f;
    hp->ema_epsilon = 1e-5f;
    hp->dead_code_threshold = 1.0f;
    hp->mels = 128;
    hp->frames = 256;
    hp->micro_batch = 8;
}

int rmx_ae_validate(const rmx_ae_hparams *hp, char *err, size_t errlen) {
    if (hp->n_levels < 1 || hp->n_levels > RMX_AE_MAX_LEVELS)
        return rmx_seterr(err, errlen, "model.channel_mult must have 1 to %d entries, got %d",
                          RMX_AE_MAX_LEVELS, hp->n_levels);
    if (hp->channels < 1)
        return rmx_seterr(err, errlen, "model.channels must be at least 1, got %d", hp->channels);
    for (int i = 0; i < hp->n_levels; i++) {
        int c = hp->channels * hp->channel_mult[i];
        int groups = c < RMX_GN_MAX_GROUPS ? c : RMX_GN_MAX_GROUPS;
        if (hp->channel_mult[i] < 1)
            return rmx_seterr(err, errlen, "model.channel_mult[%d] must be at least 1, got %d", i,
                              hp->channel_mult[i]);
        if (c % groups != 0)
            return rmx_seterr(err, errlen,
                              "model.channels x model.channel_mult[%d] = %d channels cannot be "
                              "split into GroupNorm's %d groups; use a multiple of %d",
                              i, c, groups, RMX_GN_MAX_GROUPS);
    }
    if (hp->res_blocks < 1)
        return rmx_seterr(err, errlen, "model.res_blocks must be at least 1, got %d", hp->res_blocks);
    if (hp->latent_channels < 1)
        return rmx_seterr(err, errlen, "model.latent_channels must be at least 1, got %d",
                          hp->latent_channels);
    if (hp->micro_batch < 1)
        return rmx_seterr(err, errlen, "the micro-batch must hold at least 1 sample, got %d",
                          hp->micro_batch);
    if (hp->mels < 1 || hp->frames < 1)
        return rmx_seterr(err, errlen, "the input size (%d x %d) must be positive", hp->mels,
                          hp->frames);
    int factor = 1 << (hp->n_levels - 1);
    int bad = hp->mels % factor ? hp->mels : hp->frames % factor ? hp->frames : 0;
    if (bad)
        return rmx_seterr(err, errlen,
                          "model.channel_mult has %d levels, so the input (%d x %d) must be "
                          "divisible by %d in both dimensions; %d is not",
                          hp->n_levels, hp->mels, hp->frames, factor, bad);
    if (hp->bottleneck == RMX_AE_KL) {
        if (!(hp->kl_weight >= 0.0f))
            return rmx_seterr(err, errlen, "model.kl_weight must be >= 0, got %g", hp->kl_weight);
    } else if (hp->bottleneck == RMX_AE_VQ) {
        if (hp->codebook_size < 1)
            return rmx_seterr(err, errlen, "model.codebook_size must be at least 1, got %d",
                              hp->codebook_size);
        if (!(hp->commitment >= 0.0f))
            return rmx_seterr(err, errlen, "model.commitment must be >= 0, got %g", hp->commitment);
        if (!(hp->ema_decay > 0.0f && hp->ema_decay < 1.0f))
            return rmx_seterr(err, errlen, "model.ema_decay must lie in (0, 1), got %g",
                              hp->ema_decay);
        if (!(hp->ema_epsilon > 0.0f))
            return rmx_seterr(err, errlen, "the codebook's Laplace smoothing must be > 0, got %g",
                              hp->ema_epsilon);
        if (!(hp->dead_code_threshold >= 0.0f))
            return rmx_seterr(err, errlen, "the dead-code threshold must be >= 0, got %g",
                              hp->dead_code_threshold);
    } else {
        return rmx_seterr(err, errlen, "model.bottleneck must be kl or vq");
    }
    return 0;
}

double rmx_ae_total_loss(const rmx_ae_hparams *hp, const float terms[RMX_AE_N_LOSS]) {
    if (hp->bottleneck == RMX_AE_KL)
        return (double)terms[RMX_AE_LOSS_REC] + (double)hp->kl_weight * terms[RMX_AE_LOSS_KL];
    return (double)terms[RMX_AE_LOSS_REC] + (double)hp->commitment * terms[RMX_AE_LOSS_COMMIT];
}

/* ------------------------------------------------------------------------------------------ */
/* building: registration (names and shapes) and planning (activation memory)                  */

static int level_channels(const rmx_ae_hparams *hp, int level) {
    return hp->channels * hp->channel_mult[level];
}

static void register_encoder(rmx_encoder *e, rmx_params *p, const rmx_ae_hparams *hp) {
    char name[RMX_PARAM_NAME_MAX];
    int L = hp->n_levels, R = hp->res_blocks;
    int c = hp->channels;
    rmx_conv_register(&e->conv_in, p, "enc.conv_in", 1, c, 3, 1, 1);
    e->res = xcalloc((size_t)(L * R), sizeof *e->res);
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < R; j++) {
            snprintf(name, sizeof name, "enc.down.%d.res.%d", i, j);
            rmx_resblock_register(&e->res[i * R + j], p, name, c, level_channels(hp, i));
            c = level_channels(hp, i);
        }
        if (i < L - 1) {
            snprintf(name, sizeof name, "enc.down.%d.downsample", i);
            rmx_conv_register(&e->downsample[i], p, name, c, c, 3, 2, 1);
        }
    }
    rmx_resblock_register(&e->mid, p, "enc.mid.res", c, c);
    rmx_norm_act_register(&e->norm_out, p, "enc.norm_out", c);
    int out = hp->bottleneck == RMX_AE_KL ? 2 * hp->latent_channels : hp->latent_channels;
    rmx_conv_register(&e->conv_out, p, "enc.conv_out", c, out, 3, 1, 1);
}

static void register_decoder(rmx_decoder *d, rmx_params *p, const rmx_ae_hparams *hp) {
    char name[RMX_PARAM_NAME_MAX];
    int L = hp->n_levels, R = hp->res_blocks;
    int c = level_channels(hp, L - 1);
    rmx_conv_register(&d->conv_in, p, "dec.conv_in", hp->latent_channels, c, 3, 1, 1);
    rmx_resblock_register(&d->mid, p, "dec.mid.res", c, c);
    d->res = xcalloc((size_t)(L * R), sizeof *d->res);
    for (int i = L - 1; i >= 0; i--) {
        for (int j = 0; j < R; j++) {
            snprintf(name, sizeof name, "dec.up.%d.res.%d", i, j);
            rmx_resblock_register(&d->res[i * R + j], p, name, c, level_channels(hp, i));
            c = level_channels(hp, i);
        }
        if (i > 0) {
            snprintf(name, sizeof name, "dec.up.%d.upsample", i);
            rmx_upsample_register(&d->upsample[i], p, name, c);
        }
    }
    rmx_norm_act_register(&d->norm_out, p, "dec.norm_out", c);
    rmx_conv_register(&d->conv_out, p, "dec.conv_out", c, 1, 3, 1, 1);
}

static void register_codebook(rmx_ae *ae) {
    int64_t k = ae->hp.codebook_size, d = ae->hp.latent_channels;
    int64_t table[2] = {k, d}, per_code[1] = {k};
    /* U(-1/K, 1/K) like the usual PyTorch VQ-VAE embedding; codes that no encoder output
     * chooses are restarted from encoder outputs after the first step anyway. */
    ae->codebook_id = rmx_params_add(&ae->state, "vq.codebook", 2, table, RMX_INIT_UNIFORM,
                                     1.0f / (float)k);
    ae->ema_count_id = rmx_params_add(&ae->state, "vq.ema_count", 1, per_code, RMX_INIT_CONST, 1.0f);
    ae->ema_sum_id = rmx_params_add(&ae->state, "vq.ema_sum", 2, table, RMX_INIT_CONST, 0.0f);
}

static void plan_encoder(rmx_encoder *e, rmx_arena *a, const rmx_ae_hparams *hp) {
    int h = hp->mels, w = hp->frames, L = hp->n_levels, R = hp->res_blocks;
    rmx_conv_plan(&e->conv_in, a, h, w);
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < R; j++) rmx_resblock_plan(&e->res[i * R + j], a, h, w);
        if (i < L - 1) {
            rmx_conv_plan(&e->downsample[i], a, h, w);
            h = e->downsample[i].hout;
            w = e->downsample[i].wout;
        }
    }
    rmx_resblock_plan(&e->mid, a, h, w);
    rmx_norm_act_plan(&e->norm_out, a, h * w);
    rmx_conv_plan(&e->conv_out, a, h, w);
}

static void plan_decoder(rmx_decoder *d, rmx_arena *a, const rmx_ae_hparams *hp) {
    int L = hp->n_levels, R = hp->res_blocks;
    int h = hp->mels >> (L - 1), w = hp->frames >> (L - 1);
    rmx_conv_plan(&d->conv_in, a, h, w);
    rmx_resblock_plan(&d->mid, a, h, w);
    for (int i = L - 1; i >= 0; i--) {
        for (int j = 0; j < R; j++) rmx_resblock_plan(&d->res[i * R + j], a, h, w);
        if (i > 0) {
            rmx_upsample_plan(&d->upsample[i], a, h, w);
            h *= 2;
            w *= 2;
        }
    }
    rmx_norm_act_plan(&d->norm_out, a, h * w);
    rmx_conv_plan(&d->conv_out, a, h, w);
}

/* Hands out every activation of the model; with a->base == NULL it only counts. */
static void plan_model(rmx_ae *ae, rmx_arena *a) {
    const rmx_ae_hparams *hp = &ae->hp;
    size_t m = (size_t)hp->micro_batch;
    size_t latent = m * ae->latent_c * ae->latent_hw;
    size_t encoded = hp->bottleneck == RMX_AE_KL ? 2 * latent : latent;
    plan_encoder(&ae->enc, a, hp);
    plan_decoder(&ae->dec, a, hp);
    /* The backward scratch holds any one activation: size it after the layers are planned. */
    size_t largest = a->largest;
    for (int i = 0; i < 4; i++) ae->grad[i] = rmx_arena_floats(a, largest);
    ae->scratch = rmx_arena_floats(a, largest);
    ae->dxhat = rmx_arena_floats(a, m * hp->mels * hp->frames);
    ae->dlatent = rmx_arena_floats(a, latent);
    ae->dencoded = rmx_arena_floats(a, encoded);
    ae->eps = rmx_arena_floats(a, latent);
    ae->z = rmx_arena_floats(a, latent);
    ae->loss_sink = rmx_arena_floats(a, RMX_AE_N_LOSS);
    ae->codes = rmx_arena_ints(a, m * ae->latent_hw);
    ae->restart_rows = rmx_arena_ints(a, m * ae->latent_hw);
    /* Last, once every conv has reported its needs. */
    ae->workspace = rmx_arena_floats(a, a->workspace);
}

static void create_arena(rmx_ae *ae) {
    rmx_arena counting = {.be = ae->be, .batch = ae->hp.micro_batch};
    plan_model(ae, &counting);
    ae->arena_bytes = counting.used;
    ae->arena = ae->be->alloc(ae->be, counting.used);
    rmx_arena real = {.be = ae->be, .base = ae->arena, .batch = ae->hp.micro_batch};
    plan_model(ae, &real);
    if (real.used != counting.used) ae_abort("arena plan is not repeatable");
}

static void create_vq_buffers(rmx_ae *ae) {
    size_t k = (size_t)ae->hp.codebook_size, d = (size_t)ae->hp.latent_channels;
    ae->stats_count = k + k * d + (k + 1) + (k + 1) * d;
    ae->stats = ae->be->alloc(ae->be, ae->stats_count * sizeof(float));
    ae->counts = ae->stats;
    ae->sums = ae->counts + k;
    ae->restart_counts = ae->sums + k * d;
    ae->restart_sums = ae->restart_counts + (k + 1);
    ae->priority = xcalloc(k, sizeof *ae->priority);
    ae->priority_local = xcalloc(k, sizeof *ae->priority_local);
    ae->restart_pick = xcalloc(k, sizeof *ae->restart_pick);
    ae->host_rows = xcalloc((size_t)ae->hp.micro_batch * ae->latent_hw, sizeof *ae->host_rows);
    ae->host_ema_count = xcalloc(k, sizeof *ae->host_ema_count);
    ae->host_counts = xcalloc(k + 1, sizeof *ae->host_counts);
}

/* A trained model has gradients and Adam state; a frozen one (later stages) has neither. */
static rmx_ae *build(rmx_backend *be, const rmx_ae_hparams *hp, uint64_t init_seed, int trained, char *err,
                     size_t errlen) {
    if (rmx_ae_validate(hp, err, errlen) != 0) return NULL;
    rmx_ae *ae = xcalloc(1, sizeof *ae);
    ae->be = be;
    ae->hp = *hp;
    ae->latent_c = hp->latent_channels;
    ae->latent_h = hp->mels >> (hp->n_levels - 1);
    ae->latent_w = hp->frames >> (hp->n_levels - 1);
    ae->latent_hw = ae->latent_h * ae->latent_w;
    rmx_params_init(&ae->params, be, trained, RMX_AE_STREAM_PARAMS);
    ae->frozen = !trained;
    rmx_params_init(&ae->state, be, 0, RMX_AE_STREAM_STATE);
    register_encoder(&ae->enc, &ae->params, hp);
    register_decoder(&ae->dec, &ae->params, hp);
    if (hp->bottleneck == RMX_AE_VQ) register_codebook(ae);
    rmx_params_finalize(&ae->params);
    rmx_params_finalize(&ae->state);
    create_arena(ae);
    if (hp->bottleneck == RMX_AE_VQ) create_vq_buffers(ae);
    rmx_ae_init_params(ae, init_seed);
    return ae;
}

rmx_ae *rmx_ae_create(rmx_backend *be, const rmx_ae_hparams *hp, uint64_t init_seed, char *err,
                      size_t errlen) {
    return build(be, hp, init_seed, 1, err, errlen);
}

rmx_ae *rmx_ae_create_frozen(rmx_backend *be, const rmx_ae_hparams *hp, char *err, size_t errlen) {
    return build(be, hp, 0, 0, err, errlen);
}

void rmx_ae_reserve(rmx_ae *ae, int n) {
    if (n <= ae->hp.micro_batch) return;
    ae->be->sync(ae->be);
    ae->be->free(ae->be, ae->arena);
    ae->hp.micro_batch = n;
    create_arena(ae);
    if (ae->host_rows) {
        free(ae->host_rows);
        ae->host_rows = xcalloc((size_t)n * ae->latent_hw, sizeof *ae->host_rows);
    }
}

void rmx_ae_free(rmx_ae *ae) {
    if (!ae) return;
    if (ae->stats) ae->be->free(ae->be, ae->stats);
    if (ae->arena) ae->be->free(ae->be, ae->arena);
    rmx_params_free(&ae->params);
    rmx_params_free(&ae->state);
    free(ae->enc.res);
    free(ae->dec.res);
    free(ae->priority);
    free(ae->priority_local);
    free(ae->restart_pick);
    free(ae->host_rows);
    free(ae->host_ema_count);
    free(ae->host_counts);
    free(ae);
}

void rmx_ae_init_params(rmx_ae *ae, uint64_t seed) {
    rmx_params_initialize(&ae->params, seed);
    rmx_params_initialize(&ae->state, seed);
    if (ae->hp.bottleneck == RMX_AE_VQ) {
        size_t table = (size_t)ae->hp.codebook_size * ae->hp.latent_channels;
        ae->be->copy(ae->be, rmx_params_data(&ae->state, ae->ema_sum_id),
                     rmx_params_data(&ae->state, ae->codebook_id), table * sizeof(float));
    }
}

const rmx_ae_hparams *rmx_ae_hparams_of(const rmx_ae *ae) { return &ae->hp; }
rmx_backend *rmx_ae_backend(const rmx_ae *ae) { return ae->be; }
rmx_params *rmx_ae_params(rmx_ae *ae) { return &ae->params; }
rmx_params *rmx_ae_state(rmx_ae *ae) { return &ae->state; }
size_t rmx_ae_arena_bytes(const rmx_ae *ae) { return ae->arena_bytes; }
void rmx_ae_set_frozen(rmx_ae *ae, int frozen) { ae->frozen = frozen || !ae->params.trained; }

void rmx_ae_set_grad_ready(rmx_ae *ae, void (*fn)(void *arg, int tensor), void *arg) {
    ae->grad_ready = fn;
    ae->grad_ready_arg = arg;
}

void rmx_ae_latent_shape(const rmx_ae *ae, int *channels, int *height, int *width) {
    *channels = ae->latent_c;
    *height = ae->latent_h;
    *width = ae->latent_w;
}

/* ------------------------------------------------------------------------------------------ */
/* encoder and decoder, forward and backward                                                   */

static rmx_layer_ctx layer_ctx(const rmx_ae *ae) {
    rmx_layer_ctx ctx = {ae->be,         &ae->params,    ae->frozen,         ae->workspace,
                         ae->scratch,    ae->grad_ready, ae->grad_ready_arg};
    return ctx;
}

static void check_batch(const rmx_ae *ae, int n) {
    if (n < 1 || n > ae->hp.micro_batch) ae_abort("batch larger than the arena's micro-batch");
}

/* The encoder body as a list of steps (conv_in, each level's ResBlocks and downsample, mid), so
 * the perceptual losses of stage 3 can read any step's output and inject gradients there. */
enum { ENC_STEP_CONV = 0, ENC_STEP_RES = 1 };

static int encoder_steps(const rmx_ae_hparams *hp) {
    return 1 + hp->n_levels * hp->res_blocks + (hp->n_levels - 1) + 1;
}

/* Step k: its kind, its layer, and (name != NULL) its name. */
static void *encoder_step(rmx_ae *ae, int k, int *kind, char *name, size_t namelen) {
    rmx_encoder *e = &ae->enc;
    int L = ae->hp.n_levels, R = ae->hp.res_blocks;
    if (k == 0) {
        if (name) snprintf(name, namelen, "enc.conv_in");
        *kind = ENC_STEP_CONV;
        return &e->conv_in;
    }
    k--;
    for (int i = 0; i < L; i++) {
        if (k < R) {
            if (name) snprintf(name, namelen, "enc.down.%d.res.%d", i, k);
            *kind = ENC_STEP_RES;
            return &e->res[i * R + k];
        }
        k -= R;
        if (i < L - 1) {
            if (k == 0) {
                if (name) snprintf(name, namelen, "enc.down.%d.downsample", i);
                *kind = ENC_STEP_CONV;
                return &e->downsample[i];
            }
            k--;
        }
    }
    if (name) snprintf(name, namelen, "enc.mid.res");
    *kind = ENC_STEP_RES;
    return &e->mid;
}

static const float *encoder_step_forward(rmx_ae *ae, const rmx_layer_ctx *ctx, int k, int n,
                                         const float *h) {
    int kind;
    void *layer = encoder_step(ae, k, &kind, NULL, 0);
    return kind == ENC_STEP_CONV ? rmx_conv_forward(ctx, layer, n, h)
                                 : rmx_resblock_forward(ctx, layer, n, h);
}

/* Runs steps 0 .. last; out[k] (NULL: not kept) gets each step's output (arena memory). */
static const float *encoder_body_forward(rmx_ae *ae, const rmx_layer_ctx *ctx, int last, int n,
                                         const float *x, const float **out) {
    const float *h = x;
    for (int k = 0; k <= last; k++) {
        h = encoder_step_forward(ae, ctx, k, n, h);
        if (out) out[k] = h;
    }
    return h;
}

static const float *encoder_forward_keep(rmx_ae *ae, const rmx_layer_ctx *ctx, int n, const float *x,
                                        const float **steps) {
    rmx_encoder *e = &ae->enc;
    const float *h = encoder_body_forward(ae, ctx, encoder_steps(&ae->hp) - 1, n, x, steps);
    h = rmx_norm_act_forward(ctx, &e->norm_out, n, h);
    return rmx_conv_forward(ctx, &e->conv_out, n, h);
}

static const float *encoder_forward(rmx_ae *ae, const rmx_layer_ctx *ctx, int n, const float *x) {
    return encoder_forward_keep(ae, ctx, n, x, NULL);
}

/* Backward through steps last .. 0 from the gradient of step last's output in g[cur]; inject[k]
 * (when inject is given and inject[k] != NULL) is added to the gradient of step k's output.
 * grad[0] and grad[1] carry the gradient from step to step, grad[2] and grad[3] are the
 * blocks' scratch; dx written (NULL: skip). */
static void encoder_body_backward(rmx_ae *ae, const rmx_layer_ctx *ctx, int last, int n, int cur,
                                  const float *const *inject, float *dx) {
    float **g = ae->grad;
    for (int k = last; k >= 0; k--) {
        int kind, c, h, w;
        void *layer = encoder_step(ae, k, &kind, NULL, 0);
        if (inject && inject[k] && k < last) {
            rmx_ae_feature_shape(ae, k, &c, &h, &w);
            ae->be->axpy(ae->be, (size_t)n * c * h * w, 1.0f, inject[k], g[cur]);
        }
        float *dst = k == 0 ? dx : g[1 - cur]; /* step 0 is conv_in, which takes dx NULL */
        if (kind == ENC_STEP_CONV)
            rmx_conv_backward(ctx, layer, n, g[cur], dst);
        else
            rmx_resblock_backward(ctx, layer, n, g[cur], dst, g[2], g[3]);
        cur = 1 - cur;
    }
}

static void encoder_backward(rmx_ae *ae, const rmx_layer_ctx *ctx, int n, const float *dout,
                             float *dx) {
    rmx_encoder *e = &ae->enc;
    float **g = ae->grad;
    rmx_norm_act_recompute(ctx, &e->norm_out, n);
    rmx_conv_backward(ctx, &e->conv_out, n, dout, g[0]);
    rmx_norm_act_backward(ctx, &e->norm_out, n, g[0], g[0], g[1]);
    encoder_body_backward(ae, ctx, encoder_steps(&ae->hp) - 1, n, 0, NULL, dx);
}

static const float *decoder_forward(rmx_ae *ae, const rmx_layer_ctx *ctx, int n, const float *z) {
    rmx_decoder *d = &ae->dec;
    int L = ae->hp.n_levels, R = ae->hp.res_blocks;
    const float *h = rmx_conv_forward(ctx, &d->conv_in, n, z);
    h = rmx_resblock_forward(ctx, &d->mid, n, h);
    for (int i = L - 1; i >= 0; i--) {
        for (int j = 0; j < R; j++) h = rmx_resblock_forward(ctx, &d->res[i * R + j], n, h);
        if (i > 0) h = rmx_upsample_forward(ctx, &d->upsample[i], n, h);
    }
    h = rmx_norm_act_forward(ctx, &d->norm_out, n, h);
    return rmx_conv_forward(ctx, &d->conv_out, n, h);
}

static void decoder_backward(rmx_ae *ae, const rmx_layer_ctx *ctx, int n, const float *dxhat,
                             float *dz) {
    rmx_decoder *d = &ae->dec;
    float **g = ae->grad;
    int L = ae->hp.n_levels, R = ae->hp.res_blocks;
    rmx_norm_act_recompute(ctx, &d->norm_out, n);
    rmx_conv_backward(ctx, &d->conv_out, n, dxhat, g[0]);
    rmx_norm_act_backward(ctx, &d->norm_out, n, g[0], g[0], g[1]);
    int cur = 0;
    for (int i = 0; i < L; i++) {
        if (i > 0) {
            rmx_upsample_backward(ctx, &d->upsample[i], n, g[cur], g[1 - cur], g[2]);
            cur = 1 - cur;
        }
        for (int j = R - 1; j >= 0; j--) {
            rmx_resblock_backward(ctx, &d->res[i * R + j], n, g[cur], g[1 - cur], g[2], g[3]);
            cur = 1 - cur;
        }
    }
    rmx_resblock_backward(ctx, &d->mid, n, g[cur], g[1 - cur], g[2], g[3]);
    cur = 1 - cur;
    rmx_conv_backward(ctx, &d->conv_in, n, g[cur], dz);
}

/* ------------------------------------------------------------------------------------------ */
/* bottlenecks                                                                                 */

static size_t latent_count(const rmx_ae *ae, int n) {
    return (size_t)n * ae->latent_c * ae->latent_hw;
}

/* kl, deterministic: z = mean (the sample with eps = 0). */
static const float *kl_mean(rmx_ae *ae, int n, const float *moments) {
    ae->be->fill(ae->be, ae->eps, 0.0f, latent_count(ae, n));
    ae->be->gaussian_sample_fwd(ae->be, n, ae->latent_c, ae->latent_hw, moments, ae->eps, ae->z);
    return ae->z;
}

static const float *kl_sample(rmx_ae *ae, int n, const float *moments,
                              const int64_t *sample_index, uint64_t seed, int64_t step) {
    rmx_backend *be = ae->be;
    be->randn(be, ae->eps, n, (size_t)ae->latent_c * ae->latent_hw, seed, RMX_RNG_LATENT,
              (uint64_t)step, sample_index);
    be->gaussian_sample_fwd(be, n, ae->latent_c, ae->latent_hw, moments, ae->eps, ae->z);
    return ae->z;
}

/* d moments = d sample + kl_weight * d KL; reports the unweighted KL. */
static void kl_backward(rmx_ae *ae, int n, const float *moments, float loss_scale,
                        float *loss_terms) {
    rmx_backend *be = ae->be;
    int c = ae->latent_c, hw = ae->latent_hw;
    be->gaussian_sample_bwd(be, n, c, hw, moments, ae->eps, ae->dlatent, ae->dencoded);
    be->kl_loss(be, n, c, hw, moments, ae->hp.kl_weight * loss_scale, ae->loss_sink, ae->dencoded);
    be->kl_loss(be, n, c, hw, moments, loss_scale, loss_terms + RMX_AE_LOSS_KL, NULL);
}

static const float *vq_quantize(rmx_ae *ae, int n, const float *z_e) {
    ae->be->vq_quantize(ae->be, n, ae->latent_c, ae->latent_hw, z_e,
                        rmx_params_data(&ae->state, ae->codebook_id), ae->hp.codebook_size,
                        ae->codes, ae->z);
    return ae->z;
}

/* Straight-through: d z_e = d z_q + commitment * d ||z_e - sg(z_q)||^2; reports the unweighted
 * commitment loss. */
static void vq_backward(rmx_ae *ae, int n, const float *z_e, float loss_scale, float *loss_terms) {
    rmx_backend *be = ae->be;
    size_t count = latent_count(ae, n);
    be->mse_loss(be, count, z_e, ae->z, ae->hp.commitment * loss_scale, ae->loss_sink,
                 ae->dencoded);
    be->axpy(be, count, 1.0f, ae->dlatent, ae->dencoded);
    be->mse_loss(be, count, z_e, ae->z, loss_scale, loss_terms + RMX_AE_LOSS_COMMIT, NULL);
}

/* Gathers, for each code in restart_pick, the z_e vector at the picked position into its row of
 * the restart sums (vq_stats with one extra row K that collects every position nobody picked).
 * Two codes may pick the same position: the later one waits for another pass. */
static void vq_gather_picks(rmx_ae *ae, int n, const float *z_e, int pending) {
    rmx_backend *be = ae->be;
    int k = ae->hp.codebook_size, positions = n * ae->latent_hw;
    while (pending > 0) {
        for (int p = 0; p < positions; p++) ae->host_rows[p] = k;
        for (int code = 0; code < k; code++) {
            int p = ae->restart_pick[code];
            if (p < 0 || ae->host_rows[p] != k) continue;
            ae->host_rows[p] = code;
            ae->restart_pick[code] = -1;
            pending--;
        }
        be->to_backend(be, ae->restart_rows, ae->host_rows, (size_t)positions * sizeof(int32_t));
        be->vq_stats(be, n, ae->latent_c, ae->latent_hw, z_e, ae->restart_rows, k + 1,
                     ae->restart_counts, ae->restart_sums);
        /* Empty the extra row again so the statistics depend only on the picks. */
        be->fill(be, ae->restart_counts + k, 0.0f, 1);
        be->fill(be, ae->restart_sums + (size_t)k * ae->latent_c, 0.0f, (size_t)ae->latent_c);
    }
}

/* Keeps, per code that may die this step, the candidate of highest priority seen so far. */
static void vq_collect_restart_candidates(rmx_ae *ae, int n, const float *z_e,
                                          const int64_t *sample_index, uint64_t seed,
                                          int64_t step) {
    rmx_backend *be = ae->be;
    int k = ae->hp.codebook_size, d = ae->latent_c, hw = ae->latent_hw;
    if (ae->hp.dead_code_threshold <= 0.0f) return;
    float may_die = ae->hp.dead_code_threshold / ae->hp.ema_decay;
    int pending = 0;
    for (int code = 0; code < k; code++) {
        ae->restart_pick[code] = -1;
        if (ae->host_ema_count[code] >= may_die) continue;
        for (int i = 0; i < n; i++) {
            philox4x32_ctr_t r = rmx_philox(seed, RMX_RNG_CODE_RESTART, (uint64_t)step,
                                            (uint64_t)sample_index[i], (uint32_t)code);
            uint32_t priority = r.v[0] | 1u; /* 0 means "no candidate" */
            if (priority <= ae->priority_local[code]) continue;
            ae->priority_local[code] = priority;
            ae->priority[code] = priority;
            ae->restart_pick[code] = i * hw + (int)(r.v[1] % (uint32_t)hw);
        }
        if (ae->restart_pick[code] < 0) continue;
        /* A better candidate replaces the one an earlier micro-batch left. */
        be->fill(be, ae->restart_counts + code, 0.0f, 1);
        be->fill(be, ae->restart_sums + (size_t)code * d, 0.0f, (size_t)d);
        pending++;
    }
    vq_gather_picks(ae, n, z_e, pending);
}

/* ------------------------------------------------------------------------------------------ */
/* public forward / backward                                                                   */

const float *rmx_ae_encoder_forward(rmx_ae *ae, int n, const float *x) {
    check_batch(ae, n);
    rmx_layer_ctx ctx = layer_ctx(ae);
    return encoder_forward(ae, &ctx, n, x);
}

void rmx_ae_encoder_backward(rmx_ae *ae, int n, const float *dout, float *dx) {
    check_batch(ae, n);
    rmx_layer_ctx ctx = layer_ctx(ae);
    encoder_backward(ae, &ctx, n, dout, dx);
}

int rmx_ae_feature_count(const rmx_ae *ae) { return encoder_steps(&ae->hp); }

int rmx_ae_feature_index(const rmx_ae *ae, const char *name) {
    char step[64];
    int kind;
    for (int k = 0; k < encoder_steps(&ae->hp); k++) {
        encoder_step((rmx_ae *)ae, k, &kind, step, sizeof step);
        if (strcmp(step, name) == 0) return k;
    }
    return -1;
}

void rmx_ae_feature_name(const rmx_ae *ae, int k, char *name, size_t namelen) {
    int kind;
    encoder_step((rmx_ae *)ae, k, &kind, name, namelen);
}

void rmx_ae_feature_shape(const rmx_ae *ae, int k, int *c, int *h, int *w) {
    int kind;
    const void *layer = encoder_step((rmx_ae *)ae, k, &kind, NULL, 0);
    if (kind == ENC_STEP_CONV) {
        const rmx_conv *conv = layer;
        *c = conv->cout, *h = conv->hout, *w = conv->wout;
    } else {
        const rmx_resblock *rb = layer;
        *c = rb->cout, *h = rb->h, *w = rb->w;
    }
}

void rmx_ae_features(rmx_ae *ae, int n, const float *x, int last, const float **out) {
    check_batch(ae, n);
    if (last < 0 || last >= encoder_steps(&ae->hp)) ae_abort("feature index out of range");
    rmx_layer_ctx ctx = layer_ctx(ae);
    encoder_body_forward(ae, &ctx, last, n, x, out);
}

const float *rmx_ae_latents_features(rmx_ae *ae, int n, const float *x, const float **out) {
    check_batch(ae, n);
    rmx_layer_ctx ctx = layer_ctx(ae);
    const float *encoded = encoder_forward_keep(ae, &ctx, n, x, out);
    return ae->hp.bottleneck == RMX_AE_KL ? kl_mean(ae, n, encoded) : encoded;
}

void rmx_ae_features_backward(rmx_ae *ae, int n, int last, const float *const *dfeat, float *dx) {
    check_batch(ae, n);
    if (last < 0 || last >= encoder_steps(&ae->hp) || !dfeat[last])
        ae_abort("features backward must start at a step with a gradient");
    rmx_layer_ctx ctx = layer_ctx(ae);
    int c, h, w;
    rmx_ae_feature_shape(ae, last, &c, &h, &w);
    ae->be->copy(ae->be, ae->grad[0], dfeat[last], sizeof(float) * (size_t)n * c * h * w);
    encoder_body_backward(ae, &ctx, last, n, 0, dfeat, dx);
}

const float *rmx_ae_encode(rmx_ae *ae, int n, const float *x) {
    const float *encoded = rmx_ae_encoder_forward(ae, n, x);
    return ae->hp.bottleneck == RMX_AE_KL ? kl_mean(ae, n, encoded) : vq_quantize(ae, n, encoded);
}

const float *rmx_ae_latents(rmx_ae *ae, int n, const float *x) {
    const float *encoded = rmx_ae_encoder_forward(ae, n, x);
    return ae->hp.bottleneck == RMX_AE_KL ? kl_mean(ae, n, encoded) : encoded;
}

const float *rmx_ae_decode_latents(rmx_ae *ae, int n, const float *z) {
    if (ae->hp.bottleneck == RMX_AE_VQ) z = vq_quantize(ae, n, z);
    return rmx_ae_decode(ae, n, z);
}

const float *rmx_ae_decode(rmx_ae *ae, int n, const float *z) {
    check_batch(ae, n);
    rmx_layer_ctx ctx = layer_ctx(ae);
    return decoder_forward(ae, &ctx, n, z);
}

void rmx_ae_decode_backward(rmx_ae *ae, int n, const float *dxhat, float *dz) {
    check_batch(ae, n);
    rmx_layer_ctx ctx = layer_ctx(ae);
    decoder_backward(ae, &ctx, n, dxhat, dz);
}

const float *rmx_ae_forward(rmx_ae *ae, int n, const float *x, float loss_scale, float *loss_terms) {
    rmx_backend *be = ae->be;
    const float *z = rmx_ae_encode(ae, n, x);
    const float *xhat = rmx_ae_decode(ae, n, z);
    if (loss_terms) {
        const float *encoded = ae->enc.conv_out.out;
        be->mse_loss(be, (size_t)n * ae->hp.mels * ae->hp.frames, xhat, x, loss_scale,
                     loss_terms + RMX_AE_LOSS_REC, NULL);
        if (ae->hp.bottleneck == RMX_AE_KL)
            be->kl_loss(be, n, ae->latent_c, ae->latent_hw, encoded, loss_scale,
                        loss_terms + RMX_AE_LOSS_KL, NULL);
        else
            be->mse_loss(be, latent_count(ae, n), encoded, z, loss_scale,
                         loss_terms + RMX_AE_LOSS_COMMIT, NULL);
    }
    return xhat;
}

void rmx_ae_forward_backward(rmx_ae *ae, int n, const float *x, float *dx,
                             const int64_t *sample_index, uint64_t seed, int64_t step,
                             float loss_scale, float *loss_terms) {
    check_batch(ae, n);
    rmx_backend *be = ae->be;
    rmx_layer_ctx ctx = layer_ctx(ae);
    /* The sink takes the weighted losses (computed for their gradients only) and, without
     * loss_terms, the reported ones too; clearing it keeps it from growing over a long run. */
    be->fill(be, ae->loss_sink, 0.0f, RMX_AE_N_LOSS);
    float *terms = loss_terms ? loss_terms : ae->loss_sink;

    const float *encoded = encoder_forward(ae, &ctx, n, x);
    const float *z;
    if (ae->hp.bottleneck == RMX_AE_KL) {
        z = kl_sample(ae, n, encoded, sample_index, seed, step);
    } else {
        z = vq_quantize(ae, n, encoded);
        be->vq_stats(be, n, ae->latent_c, ae->latent_hw, encoded, ae->codes,
                     ae->hp.codebook_size, ae->counts, ae->sums);
        vq_collect_restart_candidates(ae, n, encoded, sample_index, seed, step);
    }
    const float *xhat = decoder_forward(ae, &ctx, n, z);

    be->mse_loss(be, (size_t)n * ae->hp.mels * ae->hp.frames, xhat, x, loss_scale,
                 terms + RMX_AE_LOSS_REC, ae->dxhat);
    decoder_backward(ae, &ctx, n, ae->dxhat, ae->dlatent);
    if (ae->hp.bottleneck == RMX_AE_KL)
        kl_backward(ae, n, encoded, loss_scale, terms);
    else
        vq_backward(ae, n, encoded, loss_scale, terms);
    if (ae->frozen && !dx) return; /* nothing left to compute */
    encoder_backward(ae, &ctx, n, ae->dencoded, dx);
    /* x is also the target of the reconstruction loss: d/dx of ||x - xhat||^2 = -d/dxhat. */
    if (dx) be->axpy(be, (size_t)n * ae->hp.mels * ae->hp.frames, -1.0f, ae->dxhat, dx);
}

/* ------------------------------------------------------------------------------------------ */
/* steps and the vq codebook                                                                   */

void rmx_ae_step_begin(rmx_ae *ae) {
    rmx_params_zero_grad(&ae->params);
    if (ae->hp.bottleneck != RMX_AE_VQ) return;
    int k = ae->hp.codebook_size;
    ae->be->fill(ae->be, ae->stats, 0.0f, ae->stats_count);
    memset(ae->priority, 0, (size_t)k * sizeof *ae->priority);
    memset(ae->priority_local, 0, (size_t)k * sizeof *ae->priority_local);
    /* Read back every step rather than cached: a checkpoint may have replaced the state. */
    ae->be->to_host(ae->be, ae->host_ema_count, rmx_params_data(&ae->state, ae->ema_count_id),
                    (size_t)k * sizeof(float));
}

float *rmx_ae_vq_stats(rmx_ae *ae, size_t *count) {
    if (count) *count = ae->stats_count;
    return ae->stats;
}

uint32_t *rmx_ae_vq_restart_priority(rmx_ae *ae, int *codes) {
    if (codes) *codes = ae->hp.bottleneck == RMX_AE_VQ ? ae->hp.codebook_size : 0;
    return ae->priority;
}

void rmx_ae_vq_restart_settle(rmx_ae *ae) {
    if (ae->hp.bottleneck != RMX_AE_VQ) return;
    int d = ae->latent_c;
    for (int code = 0; code < ae->hp.codebook_size; code++) {
        if (ae->priority_local[code] == 0 || ae->priority_local[code] == ae->priority[code])
            continue;
        ae->be->fill(ae->be, ae->restart_counts + code, 0.0f, 1);
        ae->be->fill(ae->be, ae->restart_sums + (size_t)code * d, 0.0f, (size_t)d);
    }
}

double rmx_vq_perplexity(const float *counts, int k) {
    double total = 0.0, entropy = 0.0;
    for (int i = 0; i < k; i++) total += counts[i];
    if (total <= 0.0) return 0.0;
    for (int i = 0; i < k; i++) {
        double p = counts[i] / total;
        if (p > 0.0) entropy -= p * log(p);
    }
    return exp(entropy);
}

/* Replaces the dead codes that have a candidate; returns how many. */
static int vq_restart_dead_codes(rmx_ae *ae) {
    rmx_backend *be = ae->be;
    int k = ae->hp.codebook_size, d = ae->latent_c;
    float *codebook = rmx_params_data(&ae->state, ae->codebook_id);
    float *ema_sum = rmx_params_data(&ae->state, ae->ema_sum_id);
    float *ema_count = rmx_params_data(&ae->state, ae->ema_count_id);
    be->to_host(be, ae->host_ema_count, ema_count, (size_t)k * sizeof(float));
    be->to_host(be, ae->host_counts, ae->restart_counts, (size_t)k * sizeof(float));
    int restarted = 0;
    for (int code = 0; code < k; code++) {
        float candidates = ae->host_counts[code];
        if (ae->host_ema_count[code] >= ae->hp.dead_code_threshold || candidates <= 0.0f) continue;
        float *row = codebook + (size_t)code * d;
        be->copy(be, row, ae->restart_sums + (size_t)code * d, (size_t)d * sizeof(float));
        be->scale(be, (size_t)d, 1.0f / candidates, row);
        be->copy(be, ema_sum + (size_t)code * d, row, (size_t)d * sizeof(float));
        be->fill(be, ema_count + code, 1.0f, 1);
        ae->host_ema_count[code] = 1.0f;
        restarted++;
    }
    return restarted;
}

void rmx_ae_vq_apply_ema(rmx_ae *ae, rmx_vq_report *report) {
    if (ae->hp.bottleneck != RMX_AE_VQ) {
        if (report) memset(report, 0, sizeof *report);
        return;
    }
    rmx_backend *be = ae->be;
    int k = ae->hp.codebook_size;
    be->to_host(be, ae->host_counts, ae->counts, (size_t)k * sizeof(float));
    double perplexity = rmx_vq_perplexity(ae->host_counts, k);
    int used = 0;
    for (int code = 0; code < k; code++) used += ae->host_counts[code] > 0.0f;
    be->vq_ema_update(be, k, ae->latent_c, ae->hp.ema_decay, ae->hp.ema_epsilon, ae->counts,
                      ae->sums, rmx_params_data(&ae->state, ae->ema_count_id),
                      rmx_params_data(&ae->state, ae->ema_sum_id),
                      rmx_params_data(&ae->state, ae->codebook_id));
    int restarted = ae->hp.dead_code_threshold > 0.0f ? vq_restart_dead_codes(ae) : 0;
    if (report) {
        report->perplexity = perplexity;
        report->codes_used = used;
        report->codes_restarted = restarted;
    }
}

const int32_t *rmx_ae_vq_codes(const rmx_ae *ae) {
    return ae->hp.bottleneck == RMX_AE_VQ ? ae->codes : NULL;
}
