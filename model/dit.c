#include "model/dit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/layers.h"
#include "util/log.h"

/* Init streams of the two registries: apart from the autoencoder's (0, 1), so that one seed does
 * not give the two models' first tensors the same numbers. */
#define RMX_DIT_STREAM_PARAMS 16
#define RMX_DIT_STREAM_STATE 17

/* DiT's initialisation scales. */
#define RMX_DIT_EMBED_STD 0.02f

/* A Linear: weight [out, in] and bias [out] by tensor number. */
typedef struct {
    int weight, bias;
    int in, out;
} dit_linear;

typedef struct {
    dit_linear qkv, proj, fc1, fc2, ada;
    /* Activations the backward reads, [m, ...] (m = the arena's capacity). */
    float *mod;           /* adaLN output [m, 6D]: shift, scale, gate (msa), then (mlp) */
    float *norm1, *rstd1; /* LN1 output [m, N, D], its rstd [m N] */
    float *qkv_out;       /* [m, N, 3D] */
    float *attn;          /* attention output, the proj input [m, N, D] */
    float *lse;           /* [m, heads, N] */
    float *proj_out;      /* [m, N, D] */
    float *norm2, *rstd2;
    float *fc1_out;       /* before GELU [m, N, Dm] */
    float *fc2_out;       /* [m, N, D] */
} dit_block;

struct rmx_dit {
    rmx_backend *be;
    rmx_dit_hparams hp;
    rmx_params params, state;
    int frozen;
    void (*grad_ready)(void *arg, int tensor);
    void *grad_ready_arg;

    int gh, gw, tokens;  /* grid and N */
    int seq;             /* tokens per sample in the blocks: N, or 2N with style tokens */
    int patch_dim;       /* C p p: x_embedder input and final_layer output per token */
    int mlp_dim;         /* int(D mlp_ratio) */
    dit_linear x_embed, t_mlp0, t_mlp2, final_linear, final_ada;
    int y_table, pos_embed; /* y_table in params, pos_embed in state */
    dit_linear style_embed; /* style on: style_embedder.proj (in = C p p, out = D) */
    int style_type, style_null; /* style on: [1, 1, D] each (else -1) */
    dit_block *blocks;

    /* The arena and everything in it besides the blocks' activations. */
    void *arena;
    size_t arena_bytes;
    int capacity; /* samples */
    int last_n;   /* n of the last forward (0: none since the arena was planned) */
    float *t_in;         /* timesteps [m] */
    int32_t *y_in;       /* labels [m] */
    float *patches;      /* [m, N, C p p] (c, p, q) */
    float *style_patches; /* style on: [m, N, C p p] (c, p, q), zero for a dropped sample */
    uint8_t *keep;        /* style on: HOST [m], the last forward's style_keep */
    float *t_freq;       /* [m, F] */
    float *t_hidden;     /* mlp.0 output [m, D] */
    float *t_act;        /* SiLU of it [m, D] */
    float *t_emb, *y_emb; /* [m, D] */
    float *c, *c_act;    /* c and SiLU(c) [m, D] */
    float *stream;       /* the residual stream [m, L, D] (L = seq), updated in place block by
                          * block; with style, sample i's rows are its N content tokens then its
                          * N style tokens */
    float *final_mod;    /* [m, 2D]: shift, scale */
    float *final_norm, *final_rstd; /* content rows only [m, N, D], [m N] */
    float *final_out;    /* [m, N, p p C] (p, q, c) */
    float *out;          /* [m, C, H, W] */
    float *ws;           /* attention workspace */
    float *mod_tmp;      /* a modulated LN output [m, L, D]: read once by the next linear */
    float *act_tmp;      /* a GELU output [m, L, Dm]: likewise; backward scratch of that size */
    float *dstream, *dA, *dB; /* [m, L, D] */
    float *dwide;        /* [m, L, max(3D, Dm)] */
    float *dtok_out;     /* [m, N, p p C] */
    float *dpatches;     /* [m, N, C p p] */
    float *dmod;         /* [m, 6D] */
    float *dc_act, *dtmp, *dc, *dt_act, *dt_hidden; /* [m, D] */
};

static void dit_abort(const char *msg) {
    fprintf(stderr, "remixer: internal error: dit: %s\n", msg);
    abort();
}

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) dit_abort("out of host memory");
    return p;
}

static int mlp_width(const rmx_dit_hparams *hp) {
    return (int)((double)hp->hidden * (double)hp->mlp_ratio); /* Python's int(D * ratio) */
}

/* ------------------------------------------------------------------------------------------ */
/* hyper-parameters                                                                            */

void rmx_dit_hparams_default(rmx_dit_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    hp->in_channels = 8;
    hp->height = 32;
    hp->width = 64;
    hp->patch = 2;
    hp->hidden = 384;
    hp->depth = 12;
    hp->heads = 6;
    hp->mlp_ratio = 4.0f;
    hp->num_classes = 4;
    hp->freq_dim = 256;
    hp->micro_batch = 8;
}

int rmx_dit_validate(const rmx_dit_hparams *hp, char *err, size_t errlen) {
    if (hp->in_channels < 1 || hp->height < 1 || hp->width < 1)
        return rmx_seterr(err, errlen, "the latent shape (%d x %d x %d) must be positive",
                          hp->in_channels, hp->height, hp->width);
    if (hp->patch < 1)
        return rmx_seterr(err, errlen, "dit.patch must be at least 1, got %d", hp->patch);
    if (hp->height % hp->patch != 0 || hp->width % hp->patch != 0)
        return rmx_seterr(err, errlen, "dit.patch (%d) must divide the latent grid %d x %d",
                          hp->patch, hp->height, hp->width);
    if (hp->hidden < 4 || hp->hidden % 4 != 0)
        return rmx_seterr(err, errlen,
                          "dit.hidden (%d) must be a positive multiple of 4 (the 2-D sin-cos "
                          "positions give each grid axis D/2 features, half sine, half cosine)",
                          hp->hidden);
    if (hp->heads < 1)
        return rmx_seterr(err, errlen, "dit.heads must be at least 1, got %d", hp->heads);
    if (hp->hidden % hp->heads != 0)
        return rmx_seterr(err, errlen, "dit.heads (%d) must divide dit.hidden (%d)", hp->heads,
                          hp->hidden);
    if (hp->depth < 1)
        return rmx_seterr(err, errlen, "dit.depth must be at least 1, got %d", hp->depth);
    if (!(hp->mlp_ratio > 0.0f) || !(hp->mlp_ratio < 1024.0f) || mlp_width(hp) < 1)
        return rmx_seterr(err, errlen,
                          "dit.mlp_ratio (%g) must give an MLP of at least one unit "
                          "(dit.hidden %d)",
                          hp->mlp_ratio, hp->hidden);
    if (hp->num_classes < 1)
        return rmx_seterr(err, errlen, "the label embedding needs at least one genre, got %d",
                          hp->num_classes);
    if (hp->freq_dim < 2 || hp->freq_dim % 2 != 0)
        return rmx_seterr(err, errlen, "the timestep embedding width (%d) must be even and >= 2",
                          hp->freq_dim);
    if (hp->micro_batch < 1)
        return rmx_seterr(err, errlen, "the micro-batch must hold at least 1 sample, got %d",
                          hp->micro_batch);
    if (hp->style != 0 && hp->style != 1)
        return rmx_seterr(err, errlen, "dit.style must be 0 (no style tokens) or 1, got %d",
                          hp->style);
    double rows = (double)hp->micro_batch * (hp->height / hp->patch) * (hp->width / hp->patch) *
                  (hp->style ? 2.0 : 1.0);
    if (rows * 4.0 * fmax(hp->hidden, mlp_width(hp)) > 2e9)
        return rmx_seterr(err, errlen,
                          "a micro-batch of %d latents of %d x %d in patches of %d is too large "
                          "for one call; use a smaller train.micro_batch",
                          hp->micro_batch, hp->height, hp->width, hp->patch);
    return 0;
}

double rmx_dit_flops_per_sample(const rmx_dit_hparams *hp) {
    double n = (double)(hp->height / hp->patch) * (hp->width / hp->patch);
    double d = hp->hidden, dm = mlp_width(hp), f = hp->freq_dim;
    double pd = (double)hp->in_channels * hp->patch * hp->patch;
    double l = hp->style ? 2.0 * n : n;        /* tokens in the blocks: N, or N + N style */
    double flops = 2.0 * n * pd * d;           /* x_embedder */
    if (hp->style) flops += 2.0 * n * pd * d;  /* style_embedder */
    flops += 2.0 * f * d + 2.0 * d * d;        /* t_embedder */
    double block = 2.0 * l * d * 3.0 * d       /* qkv */
                   + 4.0 * l * l * d           /* q k^T and attn v over all heads */
                   + 2.0 * l * d * d           /* proj */
                   + 4.0 * l * d * dm          /* fc1, fc2 */
                   + 2.0 * d * 6.0 * d;        /* adaLN */
    flops += hp->depth * block;
    flops += 2.0 * d * 2.0 * d + 2.0 * n * d * pd; /* final adaLN and linear */
    return flops;
}

/* MAE's 2-D sin-cos positions as DiT builds them, for a gh x gw grid: token r gw + c gets
 * [sin(c w), cos(c w), sin(r w), cos(r w)], each D/4 wide, w_i = 10000^(-i / (D/4)); the
 * frequencies and products in double like numpy, rounded to float at the end. */
void rmx_dit_pos_embed(int gh, int gw, int d, float *out) {
    int q = d / 4;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            float *row = out + ((size_t)r * gw + c) * d;
            for (int i = 0; i < q; i++) {
                double omega = 1.0 / pow(10000.0, (double)i / q);
                row[i] = (float)sin(c * omega);
                row[q + i] = (float)cos(c * omega);
                row[2 * q + i] = (float)sin(r * omega);
                row[3 * q + i] = (float)cos(r * omega);
            }
        }
}

/* ------------------------------------------------------------------------------------------ */
/* registration                                                                                */

/* A Linear as DiT's _basic_init leaves it (xavier-uniform weight, zero bias), or all zeros. */
enum { INIT_XAVIER, INIT_ZERO, INIT_NORMAL };

static void register_linear(rmx_params *p, dit_linear *l, const char *name, int in, int out,
                            int init) {
    char full[RMX_PARAM_NAME_MAX];
    int64_t wshape[2] = {out, in}, bshape[1] = {out};
    float bound = sqrtf(6.0f / (float)(in + out));
    snprintf(full, sizeof full, "%s.weight", name);
    l->weight = init == INIT_XAVIER ? rmx_params_add(p, full, 2, wshape, RMX_INIT_UNIFORM, bound)
                : init == INIT_NORMAL
                    ? rmx_params_add(p, full, 2, wshape, RMX_INIT_NORMAL, RMX_DIT_EMBED_STD)
                    : rmx_params_add(p, full, 2, wshape, RMX_INIT_CONST, 0.0f);
    snprintf(full, sizeof full, "%s.bias", name);
    l->bias = rmx_params_add(p, full, 1, bshape, RMX_INIT_CONST, 0.0f);
    l->in = in;
    l->out = out;
}

static void register_model(rmx_dit *dit) {
    const rmx_dit_hparams *hp = &dit->hp;
    rmx_params *p = &dit->params;
    int d = hp->hidden, c = hp->in_channels, k = hp->patch;
    char name[RMX_PARAM_NAME_MAX];

    int64_t pos[3] = {1, dit->tokens, d};
    dit->pos_embed = rmx_params_add(&dit->state, "pos_embed", 3, pos, RMX_INIT_CONST, 0.0f);

    /* The patch embedding: a Conv2d's [D, C, p, p] weight, xavier on its [D, C p p] view. */
    int64_t pw[4] = {d, c, k, k}, pb[1] = {d};
    dit->x_embed.weight = rmx_params_add(p, "x_embedder.proj.weight", 4, pw, RMX_INIT_UNIFORM,
                                         sqrtf(6.0f / (float)(dit->patch_dim + d)));
    dit->x_embed.bias = rmx_params_add(p, "x_embedder.proj.bias", 1, pb, RMX_INIT_CONST, 0.0f);
    dit->x_embed.in = dit->patch_dim;
    dit->x_embed.out = d;

    register_linear(p, &dit->t_mlp0, "t_embedder.mlp.0", hp->freq_dim, d, INIT_NORMAL);
    register_linear(p, &dit->t_mlp2, "t_embedder.mlp.2", d, d, INIT_NORMAL);
    int64_t table[2] = {hp->num_classes + 1, d};
    dit->y_table = rmx_params_add(p, "y_embedder.embedding_table.weight", 2, table, RMX_INIT_NORMAL,
                                  RMX_DIT_EMBED_STD);

    dit->blocks = xcalloc((size_t)hp->depth, sizeof *dit->blocks);
    for (int i = 0; i < hp->depth; i++) {
        dit_block *b = &dit->blocks[i];
        snprintf(name, sizeof name, "blocks.%d.attn.qkv", i);
        register_linear(p, &b->qkv, name, d, 3 * d, INIT_XAVIER);
        snprintf(name, sizeof name, "blocks.%d.attn.proj", i);
        register_linear(p, &b->proj, name, d, d, INIT_XAVIER);
        snprintf(name, sizeof name, "blocks.%d.mlp.fc1", i);
        register_linear(p, &b->fc1, name, d, dit->mlp_dim, INIT_XAVIER);
        snprintf(name, sizeof name, "blocks.%d.mlp.fc2", i);
        register_linear(p, &b->fc2, name, dit->mlp_dim, d, INIT_XAVIER);
        snprintf(name, sizeof name, "blocks.%d.adaLN_modulation.1", i);
        register_linear(p, &b->ada, name, d, 6 * d, INIT_ZERO);
    }
    register_linear(p, &dit->final_linear, "final_layer.linear", d, dit->patch_dim, INIT_ZERO);
    register_linear(p, &dit->final_ada, "final_layer.adaLN_modulation.1", d, 2 * d, INIT_ZERO);

    /* Stage 3: the style tensors, after every stage-2 tensor (whose numbers, and so whose init
     * streams and checkpoint names, stay as they are). */
    dit->style_embed = (dit_linear){-1, -1, 0, 0};
    dit->style_type = dit->style_null = -1;
    if (!hp->style) return;
    dit->style_embed.weight = rmx_params_add(p, "style_embedder.proj.weight", 4, pw,
                                             RMX_INIT_UNIFORM,
                                             sqrtf(6.0f / (float)(dit->patch_dim + d)));
    dit->style_embed.bias = rmx_params_add(p, "style_embedder.proj.bias", 1, pb, RMX_INIT_CONST,
                                           0.0f);
    dit->style_embed.in = dit->patch_dim;
    dit->style_embed.out = d;
    int64_t tok[3] = {1, 1, d};
    dit->style_type = rmx_params_add(p, "style_type", 3, tok, RMX_INIT_NORMAL, RMX_DIT_EMBED_STD);
    dit->style_null = rmx_params_add(p, "style_null", 3, tok, RMX_INIT_CONST, 0.0f);
}

/* ------------------------------------------------------------------------------------------ */
/* the arena                                                                                   */

static void plan_model(rmx_dit *dit, rmx_arena *a) {
    size_t m = (size_t)a->batch, n = (size_t)dit->seq, d = (size_t)dit->hp.hidden;
    size_t dm = (size_t)dit->mlp_dim, pd = (size_t)dit->patch_dim;
    size_t rows = m * n;                      /* block rows: m L */
    size_t crows = m * (size_t)dit->tokens;   /* content rows: m N (= rows without style) */
    dit->t_in = rmx_arena_floats(a, m);
    dit->y_in = rmx_arena_ints(a, m);
    dit->patches = rmx_arena_floats(a, crows * pd);
    if (dit->hp.style) dit->style_patches = rmx_arena_floats(a, crows * pd);
    dit->t_freq = rmx_arena_floats(a, m * (size_t)dit->hp.freq_dim);
    dit->t_hidden = rmx_arena_floats(a, m * d);
    dit->t_act = rmx_arena_floats(a, m * d);
    dit->t_emb = rmx_arena_floats(a, m * d);
    dit->y_emb = rmx_arena_floats(a, m * d);
    dit->c = rmx_arena_floats(a, m * d);
    dit->c_act = rmx_arena_floats(a, m * d);
    dit->stream = rmx_arena_floats(a, rows * d);
    for (int i = 0; i < dit->hp.depth; i++) {
        dit_block *b = &dit->blocks[i];
        b->mod = rmx_arena_floats(a, m * 6 * d);
        b->norm1 = rmx_arena_floats(a, rows * d);
        b->rstd1 = rmx_arena_floats(a, rows);
        b->qkv_out = rmx_arena_floats(a, rows * 3 * d);
        b->attn = rmx_arena_floats(a, rows * d);
        b->lse = rmx_arena_floats(a, m * (size_t)dit->hp.heads * n);
        b->proj_out = rmx_arena_floats(a, rows * d);
        b->norm2 = rmx_arena_floats(a, rows * d);
        b->rstd2 = rmx_arena_floats(a, rows);
        b->fc1_out = rmx_arena_floats(a, rows * dm);
        b->fc2_out = rmx_arena_floats(a, rows * d);
    }
    dit->final_mod = rmx_arena_floats(a, m * 2 * d);
    dit->final_norm = rmx_arena_floats(a, crows * d);
    dit->final_rstd = rmx_arena_floats(a, crows);
    dit->final_out = rmx_arena_floats(a, crows * pd);
    dit->out = rmx_arena_floats(a, crows * pd);
    dit->mod_tmp = rmx_arena_floats(a, rows * d);
    dit->act_tmp = rmx_arena_floats(a, rows * dm);
    dit->dstream = rmx_arena_floats(a, rows * d);
    dit->dA = rmx_arena_floats(a, rows * d);
    dit->dB = rmx_arena_floats(a, rows * d);
    dit->dwide = rmx_arena_floats(a, rows * (3 * d > dm ? 3 * d : dm));
    dit->dtok_out = rmx_arena_floats(a, crows * pd);
    dit->dpatches = rmx_arena_floats(a, crows * pd);
    dit->dmod = rmx_arena_floats(a, m * 6 * d);
    dit->dc_act = rmx_arena_floats(a, m * d);
    dit->dtmp = rmx_arena_floats(a, m * d);
    dit->dc = rmx_arena_floats(a, m * d);
    dit->dt_act = rmx_arena_floats(a, m * d);
    dit->dt_hidden = rmx_arena_floats(a, m * d);
    dit->ws = rmx_arena_floats(a, dit->be->attention_workspace(dit->be, a->batch, dit->seq,
                                                                dit->hp.hidden, dit->hp.heads));
}

static void create_arena(rmx_dit *dit, int capacity) {
    rmx_arena counting = {.be = dit->be, .batch = capacity};
    plan_model(dit, &counting);
    dit->arena_bytes = counting.used;
    dit->arena = dit->be->alloc(dit->be, counting.used);
    rmx_arena real = {.be = dit->be, .base = dit->arena, .batch = capacity};
    plan_model(dit, &real);
    if (real.used != counting.used) dit_abort("arena plan is not repeatable");
    dit->capacity = capacity;
    dit->last_n = 0;
    if (dit->hp.style) {
        free(dit->keep);
        dit->keep = xcalloc((size_t)capacity, sizeof *dit->keep);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* life cycle                                                                                  */

rmx_dit *rmx_dit_create(rmx_backend *be, const rmx_dit_hparams *hp, uint64_t init_seed, char *err,
                        size_t errlen) {
    if (rmx_dit_validate(hp, err, errlen) != 0) return NULL;
    rmx_dit *dit = xcalloc(1, sizeof *dit);
    dit->be = be;
    dit->hp = *hp;
    dit->gh = hp->height / hp->patch;
    dit->gw = hp->width / hp->patch;
    dit->tokens = dit->gh * dit->gw;
    dit->seq = hp->style ? 2 * dit->tokens : dit->tokens;
    dit->patch_dim = hp->in_channels * hp->patch * hp->patch;
    dit->mlp_dim = mlp_width(hp);
    rmx_params_init(&dit->params, be, 1, RMX_DIT_STREAM_PARAMS);
    rmx_params_init(&dit->state, be, 0, RMX_DIT_STREAM_STATE);
    register_model(dit);
    rmx_params_finalize(&dit->params);
    rmx_params_finalize(&dit->state);
    create_arena(dit, hp->micro_batch);
    rmx_dit_init_params(dit, init_seed);
    return dit;
}

void rmx_dit_free(rmx_dit *dit) {
    if (!dit) return;
    if (dit->arena) dit->be->free(dit->be, dit->arena);
    rmx_params_free(&dit->params);
    rmx_params_free(&dit->state);
    free(dit->blocks);
    free(dit->keep);
    free(dit);
}

void rmx_dit_init_params(rmx_dit *dit, uint64_t seed) {
    rmx_params_initialize(&dit->params, seed);
    rmx_params_initialize(&dit->state, seed);
    size_t count = (size_t)dit->tokens * dit->hp.hidden;
    float *pos = xcalloc(count, sizeof *pos);
    rmx_dit_pos_embed(dit->gh, dit->gw, dit->hp.hidden, pos);
    dit->be->to_backend(dit->be, rmx_params_data(&dit->state, dit->pos_embed), pos,
                        count * sizeof *pos);
    free(pos);
}

void rmx_dit_reserve(rmx_dit *dit, int n) {
    if (n <= dit->capacity) return;
    dit->be->sync(dit->be);
    dit->be->free(dit->be, dit->arena);
    create_arena(dit, n);
}

rmx_params *rmx_dit_params(rmx_dit *dit) { return &dit->params; }
rmx_params *rmx_dit_state(rmx_dit *dit) { return &dit->state; }
const rmx_dit_hparams *rmx_dit_hparams_of(const rmx_dit *dit) { return &dit->hp; }
int rmx_dit_tokens(const rmx_dit *dit) { return dit->tokens; }
int rmx_dit_sequence(const rmx_dit *dit) { return dit->seq; }
size_t rmx_dit_arena_bytes(const rmx_dit *dit) { return dit->arena_bytes; }
int rmx_dit_capacity(const rmx_dit *dit) { return dit->capacity; }
void rmx_dit_set_frozen(rmx_dit *dit, int frozen) { dit->frozen = frozen; }

void rmx_dit_set_grad_ready(rmx_dit *dit, void (*fn)(void *arg, int tensor), void *arg) {
    dit->grad_ready = fn;
    dit->grad_ready_arg = arg;
}

void rmx_dit_step_begin(rmx_dit *dit) { rmx_params_zero_grad(&dit->params); }

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                     */

static const float *value(const rmx_dit *dit, int id) { return rmx_params_data(&dit->params, id); }

static void linear_fwd(rmx_dit *dit, const dit_linear *l, int rows, const float *x, float *y) {
    dit->be->linear_fwd(dit->be, rows, l->in, l->out, x, value(dit, l->weight),
                        value(dit, l->bias), y);
}

static void block_forward(rmx_dit *dit, dit_block *b, int n) {
    rmx_backend *be = dit->be;
    int N = dit->seq, d = dit->hp.hidden, rows = n * N, ld = 6 * d;
    linear_fwd(dit, &b->ada, n, dit->c_act, b->mod);
    /* attention branch: x += gate_msa * proj(attn(modulate(LN(x), shift_msa, scale_msa))) */
    be->layernorm_fwd(be, rows, d, RMX_DIT_LN_EPS, dit->stream, b->norm1, b->rstd1);
    be->modulate_fwd(be, n, N, d, b->norm1, b->mod, b->mod + d, ld, dit->mod_tmp);
    linear_fwd(dit, &b->qkv, rows, dit->mod_tmp, b->qkv_out);
    be->attention_fwd(be, n, N, d, dit->hp.heads, b->qkv_out, b->attn, b->lse, dit->ws);
    linear_fwd(dit, &b->proj, rows, b->attn, b->proj_out);
    be->gated_add_fwd(be, n, N, d, b->proj_out, b->mod + 2 * d, ld, dit->stream);
    /* MLP branch: x += gate_mlp * fc2(gelu(fc1(modulate(LN(x), shift_mlp, scale_mlp)))) */
    be->layernorm_fwd(be, rows, d, RMX_DIT_LN_EPS, dit->stream, b->norm2, b->rstd2);
    be->modulate_fwd(be, n, N, d, b->norm2, b->mod + 3 * d, b->mod + 4 * d, ld, dit->mod_tmp);
    linear_fwd(dit, &b->fc1, rows, dit->mod_tmp, b->fc1_out);
    be->gelu_fwd(be, (size_t)rows * dit->mlp_dim, b->fc1_out, dit->act_tmp);
    linear_fwd(dit, &b->fc2, rows, dit->act_tmp, b->fc2_out);
    be->gated_add_fwd(be, n, N, d, b->fc2_out, b->mod + 5 * d, ld, dit->stream);
}

/* With style tokens: the N-row blocks [n, N, D] of a contiguous buffer to or from token rows
 * [at, at + N) of each sample of a [n, L, D] sequence buffer. */
static void seq_put(rmx_dit *dit, int n, const float *src, int at, float *seq) {
    size_t block = (size_t)dit->tokens * dit->hp.hidden;
    for (int i = 0; i < n; i++)
        dit->be->copy(dit->be, seq + ((size_t)i * dit->seq + at) * dit->hp.hidden,
                      src + (size_t)i * block, block * sizeof(float));
}

static void seq_get(rmx_dit *dit, int n, const float *seq, int at, float *dst) {
    size_t block = (size_t)dit->tokens * dit->hp.hidden;
    for (int i = 0; i < n; i++)
        dit->be->copy(dit->be, dst + (size_t)i * block,
                      seq + ((size_t)i * dit->seq + at) * dit->hp.hidden, block * sizeof(float));
}

/* The style tokens of the n samples, written into stream rows [N, 2N) of each sample (positions
 * not yet added): style_embedder(patches) + style_type, or style_null + style_type for a dropped
 * sample (keep[i] == 0). A dropped sample's patches are zeroed, so that the weight gradient sums
 * exact zeros for it whatever its latent holds. dB is the scratch. */
static void style_tokens_fwd(rmx_dit *dit, int n, const float *style) {
    rmx_backend *be = dit->be;
    const rmx_dit_hparams *hp = &dit->hp;
    int N = dit->tokens, d = hp->hidden, pd = dit->patch_dim;
    size_t tokd = (size_t)N * d, tokp = (size_t)N * pd;
    if (style)
        be->patchify(be, n, hp->in_channels, hp->height, hp->width, hp->patch, RMX_PATCH_CPQ,
                     style, dit->style_patches);
    for (int i = 0; i < n; i++)
        if (!style || !dit->keep[i]) be->fill(be, dit->style_patches + (size_t)i * tokp, 0.0f, tokp);
    linear_fwd(dit, &dit->style_embed, n * N, dit->style_patches, dit->dB);
    for (int i = 0; i < n; i++)
        if (!dit->keep[i]) {
            be->fill(be, dit->dB + (size_t)i * tokd, 0.0f, tokd);
            be->add_broadcast(be, N, (size_t)d, value(dit, dit->style_null), dit->dB + (size_t)i * tokd);
        }
    be->add_broadcast(be, n * N, (size_t)d, value(dit, dit->style_type), dit->dB);
    seq_put(dit, n, dit->dB, N, dit->stream);
}

static const float *forward_impl(rmx_dit *dit, int n, const float *x, const float *t,
                                 const int32_t *y, const float *style) {
    if (n < 1 || n > dit->capacity) dit_abort("batch larger than the arena (rmx_dit_reserve)");
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] > dit->hp.num_classes) {
            fprintf(stderr, "remixer: internal error: dit: label %d of sample %d outside [0, %d]\n",
                    (int)y[i], i, dit->hp.num_classes);
            abort();
        }
    rmx_backend *be = dit->be;
    const rmx_dit_hparams *hp = &dit->hp;
    int N = dit->tokens, d = hp->hidden, rows = n * N;
    be->to_backend(be, dit->t_in, t, (size_t)n * sizeof(float));
    be->to_backend(be, dit->y_in, y, (size_t)n * sizeof(int32_t));

    /* tokens: patch embedding + fixed positions (with style: content rows, then style rows, the
     * positions added to both) */
    be->patchify(be, n, hp->in_channels, hp->height, hp->width, hp->patch, RMX_PATCH_CPQ, x,
                 dit->patches);
    if (!hp->style) {
        linear_fwd(dit, &dit->x_embed, rows, dit->patches, dit->stream);
        be->add_broadcast(be, n, (size_t)N * d, rmx_params_data(&dit->state, dit->pos_embed),
                          dit->stream);
    } else {
        linear_fwd(dit, &dit->x_embed, rows, dit->patches, dit->dA);
        seq_put(dit, n, dit->dA, 0, dit->stream);
        style_tokens_fwd(dit, n, style);
        be->add_broadcast(be, 2 * n, (size_t)N * d, rmx_params_data(&dit->state, dit->pos_embed),
                          dit->stream);
    }

    /* conditioning: c = t_embedder(t) + y_embedder(y); every adaLN reads SiLU(c) */
    be->timestep_embed(be, n, hp->freq_dim, dit->t_in, dit->t_freq);
    linear_fwd(dit, &dit->t_mlp0, n, dit->t_freq, dit->t_hidden);
    be->silu_fwd(be, (size_t)n * d, dit->t_hidden, dit->t_act);
    linear_fwd(dit, &dit->t_mlp2, n, dit->t_act, dit->t_emb);
    be->embedding_fwd(be, n, d, dit->y_in, value(dit, dit->y_table), dit->y_emb);
    be->add(be, (size_t)n * d, dit->t_emb, dit->y_emb, dit->c);
    be->silu_fwd(be, (size_t)n * d, dit->c, dit->c_act);

    for (int i = 0; i < hp->depth; i++) block_forward(dit, &dit->blocks[i], n);

    /* final layer: linear(modulate(LN(x), shift, scale)) over the content tokens, then the tokens
     * back to an image */
    const float *content = dit->stream;
    if (hp->style) {
        seq_get(dit, n, dit->stream, 0, dit->dA);
        content = dit->dA;
    }
    linear_fwd(dit, &dit->final_ada, n, dit->c_act, dit->final_mod);
    be->layernorm_fwd(be, rows, d, RMX_DIT_LN_EPS, content, dit->final_norm, dit->final_rstd);
    be->modulate_fwd(be, n, N, d, dit->final_norm, dit->final_mod, dit->final_mod + d, 2 * d,
                     dit->mod_tmp);
    linear_fwd(dit, &dit->final_linear, rows, dit->mod_tmp, dit->final_out);
    be->unpatchify(be, n, hp->in_channels, hp->height, hp->width, hp->patch, RMX_PATCH_PQC,
                   dit->final_out, dit->out);
    dit->last_n = n;
    return dit->out;
}

const float *rmx_dit_forward(rmx_dit *dit, int n, const float *x, const float *t,
                             const int32_t *y) {
    if (dit->hp.style) {
        if (n < 1 || n > dit->capacity) dit_abort("batch larger than the arena (rmx_dit_reserve)");
        memset(dit->keep, 0, (size_t)n * sizeof *dit->keep); /* every style dropped */
    }
    return forward_impl(dit, n, x, t, y, NULL);
}

const float *rmx_dit_forward_style(rmx_dit *dit, int n, const float *x, const float *t,
                                   const int32_t *y, const float *style,
                                   const uint8_t *style_keep) {
    if (!dit->hp.style) dit_abort("rmx_dit_forward_style on a model without style tokens");
    if (n < 1 || n > dit->capacity) dit_abort("batch larger than the arena (rmx_dit_reserve)");
    for (int i = 0; i < n; i++) {
        dit->keep[i] = style_keep[i] ? 1 : 0;
        if (dit->keep[i] && !style) dit_abort("a kept style needs the style latents (style NULL)");
    }
    return forward_impl(dit, n, x, t, y, style);
}

int rmx_dit_copy_style_embedder_from_x(rmx_dit *dit) {
    if (!dit->hp.style) return -1;
    rmx_params *p = &dit->params;
    int from[2] = {dit->x_embed.weight, dit->x_embed.bias};
    int to[2] = {dit->style_embed.weight, dit->style_embed.bias};
    for (int k = 0; k < 2; k++) {
        size_t bytes = rmx_params_get(p, from[k])->numel * sizeof(float);
        dit->be->copy(dit->be, rmx_params_data(p, to[k]), rmx_params_data(p, from[k]), bytes);
        if (p->ema)
            dit->be->copy(dit->be, rmx_params_ema(p, to[k]), rmx_params_ema(p, from[k]), bytes);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* backward                                                                                    */

static float *weight_grad(const rmx_dit *dit, int id) {
    return dit->frozen ? NULL : rmx_params_grad(&dit->params, id);
}

/* A Linear's backward: dx written (NULL: skip), weight and bias gradients accumulated and
 * announced (unless frozen). */
static void linear_bwd(rmx_dit *dit, const dit_linear *l, int rows, const float *x, const float *dy,
                       float *dx) {
    dit->be->linear_bwd(dit->be, rows, l->in, l->out, x, value(dit, l->weight), dy, dx,
                        weight_grad(dit, l->weight), weight_grad(dit, l->bias));
    if (dit->frozen || !dit->grad_ready) return;
    dit->grad_ready(dit->grad_ready_arg, l->weight);
    dit->grad_ready(dit->grad_ready_arg, l->bias);
}

/* dstream holds d loss / d (the block's output stream) and leaves with d loss / d (its input).
 * Unfrozen, the block's d SiLU(c) is added to dc_act. */
static void block_backward(rmx_dit *dit, const dit_block *b, int n) {
    rmx_backend *be = dit->be;
    int N = dit->seq, d = dit->hp.hidden, rows = n * N, ld = 6 * d, fr = dit->frozen;
    size_t count = (size_t)rows * d;
    float *dmod = fr ? NULL : dit->dmod;

    /* MLP branch */
    be->gated_add_bwd(be, n, N, d, b->fc2_out, b->mod + 5 * d, ld, dit->dstream, dit->dA,
                      fr ? NULL : dmod + 5 * d);
    be->gelu_fwd(be, (size_t)rows * dit->mlp_dim, b->fc1_out, dit->act_tmp); /* recompute */
    linear_bwd(dit, &b->fc2, rows, dit->act_tmp, dit->dA, dit->dwide);
    be->gelu_bwd(be, (size_t)rows * dit->mlp_dim, b->fc1_out, dit->dwide, dit->act_tmp);
    be->modulate_fwd(be, n, N, d, b->norm2, b->mod + 3 * d, b->mod + 4 * d, ld, dit->mod_tmp);
    linear_bwd(dit, &b->fc1, rows, dit->mod_tmp, dit->act_tmp, dit->dA);
    be->modulate_bwd(be, n, N, d, b->norm2, b->mod + 4 * d, ld, dit->dA, dit->dB,
                     fr ? NULL : dmod + 3 * d, fr ? NULL : dmod + 4 * d);
    be->layernorm_bwd(be, rows, d, b->norm2, b->rstd2, dit->dB, dit->dA);
    be->axpy(be, count, 1.0f, dit->dA, dit->dstream);

    /* attention branch */
    be->gated_add_bwd(be, n, N, d, b->proj_out, b->mod + 2 * d, ld, dit->dstream, dit->dA,
                      fr ? NULL : dmod + 2 * d);
    linear_bwd(dit, &b->proj, rows, b->attn, dit->dA, dit->dB);
    be->attention_bwd(be, n, N, d, dit->hp.heads, b->qkv_out, b->attn, b->lse, dit->dB,
                      dit->dwide, dit->ws);
    be->modulate_fwd(be, n, N, d, b->norm1, b->mod, b->mod + d, ld, dit->mod_tmp);
    linear_bwd(dit, &b->qkv, rows, dit->mod_tmp, dit->dwide, dit->dA);
    be->modulate_bwd(be, n, N, d, b->norm1, b->mod + d, ld, dit->dA, dit->dB, fr ? NULL : dmod,
                     fr ? NULL : dmod + d);
    be->layernorm_bwd(be, rows, d, b->norm1, b->rstd1, dit->dB, dit->dA);
    be->axpy(be, count, 1.0f, dit->dA, dit->dstream);

    if (fr) return;
    linear_bwd(dit, &b->ada, n, dit->c_act, dmod, dit->dtmp);
    be->axpy(be, (size_t)n * d, 1.0f, dit->dtmp, dit->dc_act);
}

/* Unfrozen, with style: the style rows of dstream reach style_type (every style token),
 * style_null (a dropped sample's tokens) and style_embedder (a kept sample's tokens); no
 * gradient w.r.t. the style latents. Column sums are linear_bwd's bias sums (dx, dw NULL). */
static void style_tokens_bwd(rmx_dit *dit, int n) {
    rmx_backend *be = dit->be;
    int N = dit->tokens, d = dit->hp.hidden;
    size_t tokd = (size_t)N * d;
    seq_get(dit, n, dit->dstream, N, dit->dB);
    be->linear_bwd(be, n * N, 1, d, NULL, NULL, dit->dB, NULL, NULL,
                   rmx_params_grad(&dit->params, dit->style_type));
    for (int i = 0; i < n; i++)
        if (!dit->keep[i]) {
            be->linear_bwd(be, N, 1, d, NULL, NULL, dit->dB + (size_t)i * tokd, NULL, NULL,
                           rmx_params_grad(&dit->params, dit->style_null));
            be->fill(be, dit->dB + (size_t)i * tokd, 0.0f, tokd);
        }
    linear_bwd(dit, &dit->style_embed, n * N, dit->style_patches, dit->dB, NULL);
    if (!dit->grad_ready) return;
    dit->grad_ready(dit->grad_ready_arg, dit->style_type);
    dit->grad_ready(dit->grad_ready_arg, dit->style_null);
}

void rmx_dit_backward(rmx_dit *dit, int n, const float *deps, float *dx) {
    if (n != dit->last_n) dit_abort("backward without a forward on the same batch");
    if (dit->frozen && !dx) return; /* nothing to compute */
    rmx_backend *be = dit->be;
    const rmx_dit_hparams *hp = &dit->hp;
    int N = dit->tokens, d = hp->hidden, rows = n * N, fr = dit->frozen;

    /* final layer; its adaLN's d SiLU(c) starts dc_act */
    be->patchify(be, n, hp->in_channels, hp->height, hp->width, hp->patch, RMX_PATCH_PQC, deps,
                 dit->dtok_out);
    be->modulate_fwd(be, n, N, d, dit->final_norm, dit->final_mod, dit->final_mod + d, 2 * d,
                     dit->mod_tmp);
    linear_bwd(dit, &dit->final_linear, rows, dit->mod_tmp, dit->dtok_out, dit->dA);
    be->modulate_bwd(be, n, N, d, dit->final_norm, dit->final_mod + d, 2 * d, dit->dA, dit->dB,
                     fr ? NULL : dit->dmod, fr ? NULL : dit->dmod + d);
    if (!hp->style) {
        be->layernorm_bwd(be, rows, d, dit->final_norm, dit->final_rstd, dit->dB, dit->dstream);
    } else { /* the style rows do not reach the final layer: their gradient starts at 0 */
        be->layernorm_bwd(be, rows, d, dit->final_norm, dit->final_rstd, dit->dB, dit->dA);
        be->fill(be, dit->dstream, 0.0f, (size_t)n * dit->seq * d);
        seq_put(dit, n, dit->dA, 0, dit->dstream);
    }
    if (!fr) linear_bwd(dit, &dit->final_ada, n, dit->c_act, dit->dmod, dit->dc_act);

    for (int i = hp->depth - 1; i >= 0; i--) block_backward(dit, &dit->blocks[i], n);

    /* the positions are constant: d tokens = dstream (its content rows) */
    const float *dcontent = dit->dstream;
    if (hp->style) {
        seq_get(dit, n, dit->dstream, 0, dit->dA);
        dcontent = dit->dA;
    }
    linear_bwd(dit, &dit->x_embed, rows, dit->patches, dcontent, dx ? dit->dpatches : NULL);
    if (dx)
        be->unpatchify(be, n, hp->in_channels, hp->height, hp->width, hp->patch, RMX_PATCH_CPQ,
                       dit->dpatches, dx);
    if (fr) return;
    if (hp->style) style_tokens_bwd(dit, n);

    /* conditioning: dc = SiLU'(c) dc_act reaches both embedders */
    be->silu_bwd(be, (size_t)n * d, dit->c, dit->dc_act, dit->dc);
    linear_bwd(dit, &dit->t_mlp2, n, dit->t_act, dit->dc, dit->dt_act);
    be->silu_bwd(be, (size_t)n * d, dit->t_hidden, dit->dt_act, dit->dt_hidden);
    linear_bwd(dit, &dit->t_mlp0, n, dit->t_freq, dit->dt_hidden, NULL);
    be->embedding_bwd(be, n, d, hp->num_classes + 1, dit->y_in, dit->dc,
                      rmx_params_grad(&dit->params, dit->y_table));
    if (dit->grad_ready) dit->grad_ready(dit->grad_ready_arg, dit->y_table);
}
