/* Run configuration: one YAML file read with libyaml's event parser and checked against a single
 * typed schema table (SCHEMA), then `--set key.path=value` overrides with the same checks, then the
 * checks that relate several keys. Every value, the defaults included, goes through the same text
 * parser, so a default cannot say something a user could not write, and the rendered config
 * (cfg->text) loads back to the same struct. */
#include "train/config.h"

#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---------------------------------------------------------------------------------------------- */
/* The schema                                                                                     */

typedef enum { K_STR, K_ENUM, K_INT, K_INT64, K_UINT64, K_FLOAT, K_INTLIST } key_type;

/* Range flags. Integers use closed bounds; the open ones are for floats ("> 0", "< 1"). */
enum {
    R_MIN = 1u << 0,
    R_MIN_OPEN = 1u << 1,
    R_MAX = 1u << 2,
    R_MAX_OPEN = 1u << 3,
    R_NONEMPTY = 1u << 4, /* strings */
};

typedef struct {
    const char *key;     /* dotted path; keys of one section must be adjacent (rendering nests them) */
    key_type type;
    size_t off, size;    /* the field in rmx_config and its size (string capacity, list capacity) */
    size_t count_off;    /* lists: the int field receiving the number of entries */
    const char *def;     /* default, written as a --set value would be */
    double lo, hi;       /* range, per the R_ flags; for lists it applies to each entry */
    unsigned range;
    const char *choices; /* enums: "a|b|c" */
    const char *doc;
} key_spec;

/* Row builders. A range is one of the R(...) forms below, so a row reads like its message. */
#define FIELD(f) .off = offsetof(rmx_config, f), .size = sizeof(((rmx_config *)0)->f)
#define AT_LEAST(x) .lo = (x), .range = R_MIN
#define ABOVE(x) .lo = (x), .range = R_MIN | R_MIN_OPEN
#define BETWEEN(a, b) .lo = (a), .hi = (b), .range = R_MIN | R_MAX
#define FRACTION .lo = 0, .hi = 1, .range = R_MIN | R_MAX | R_MAX_OPEN /* [0, 1) */
#define ANY .range = 0
#define NONEMPTY .range = R_NONEMPTY

#define STR(k, f, d, r, doc_) {.key = k, .type = K_STR, FIELD(f), .def = d, r, .doc = doc_}
#define ENUM(k, f, d, c, doc_) {.key = k, .type = K_ENUM, FIELD(f), .def = d, .choices = c, .doc = doc_}
#define NUM(k, t, f, d, r, doc_) {.key = k, .type = t, FIELD(f), .def = d, r, .doc = doc_}
#define LIST(k, f, n, d, r, doc_) \
    {.key = k, .type = K_INTLIST, FIELD(f), .count_off = offsetof(rmx_config, n), .def = d, r, .doc = doc_}

/* The one place where keys, types, ranges, defaults and their documentation live. */
static const key_spec SCHEMA[] = {
    ENUM("stage", stage, "vae", "vae|diffusion|remix",
         "objective: autoencoder, genre-conditioned latent diffusion, or remix"),
    ENUM("device", device, "auto", "auto|cpu|cuda", "where the math runs; auto takes CUDA when a GPU is visible"),

    STR("data.train", data.train, "", ANY, "training shards: a folder or a glob, relative to the current directory"),
    STR("data.val", data.val, "", ANY, "validation shards: a folder or a glob; empty: no validation"),
    NUM("data.prefetch", K_INT, data.prefetch, "4", BETWEEN(1, 1024), "micro-batches the loader thread reads ahead"),
    ENUM("data.on_corrupt", data.on_corrupt, "stop", "stop|skip",
         "a damaged segment (checksum mismatch): stop with exit 3, or skip: log it, read the next valid one in its place"),

    NUM("model.channels", K_INT, model.channels, "32", BETWEEN(1, 4096), "base channel count C of the autoencoder"),
    LIST("model.channel_mult", model.channel_mult, model.n_levels, "[1, 2, 4]", BETWEEN(1, 64),
         "channel multiplier per level; every level after the first halves height and width"),
    NUM("model.res_blocks", K_INT, model.res_blocks, "1", BETWEEN(1, 64), "ResBlocks per level"),
    NUM("model.latent_channels", K_INT, model.latent_channels, "8", BETWEEN(1, 1024), "channels of the latent z"),
    ENUM("model.bottleneck", model.bottleneck, "kl", "kl|vq", "kl: Gaussian posterior + KL term; vq: EMA codebook"),
    NUM("model.kl_weight", K_FLOAT, model.kl_weight, "1e-6", AT_LEAST(0),
        "kl: beta of L_rec + beta*L_KL (1e-6, latent-diffusion's AutoencoderKL value)"),
    NUM("model.codebook_size", K_INT, model.codebook_size, "512", BETWEEN(1, 1 << 20),
        "vq: codebook entries (at least 2 when the bottleneck is vq)"),
    NUM("model.commitment", K_FLOAT, model.commitment, "0.25", AT_LEAST(0), "vq: commitment loss weight"),
    NUM("model.ema_decay", K_FLOAT, model.ema_decay, "0.99", FRACTION, "vq: codebook EMA decay"),

    STR("autoencoder.checkpoint", autoencoder.checkpoint, "", ANY,
        "diffusion: the stage-1 checkpoint whose autoencoder (architecture and weights) is frozen and copied in"),

    NUM("dit.hidden", K_INT, dit.hidden, "384", BETWEEN(4, 16384), "diffusion: transformer width D (DiT-S: 384)"),
    NUM("dit.depth", K_INT, dit.depth, "12", BETWEEN(1, 256), "diffusion: transformer blocks"),
    NUM("dit.heads", K_INT, dit.heads, "6", BETWEEN(1, 256), "diffusion: attention heads; must divide dit.hidden"),
    NUM("dit.patch", K_INT, dit.patch, "2", BETWEEN(1, 64), "diffusion: patch size p; must divide the latent grid"),
    NUM("dit.mlp_ratio", K_FLOAT, dit.mlp_ratio, "4", ABOVE(0), "diffusion: MLP width over dit.hidden"),

    NUM("diffusion.timesteps", K_INT, diffusion.timesteps, "1000", BETWEEN(2, 100000), "diffusion: steps T of the noise schedule"),
    NUM("diffusion.beta_start", K_FLOAT, diffusion.beta_start, "1e-4", ABOVE(0), "diffusion: first beta of the linear schedule"),
    NUM("diffusion.beta_end", K_FLOAT, diffusion.beta_end, "0.02", ABOVE(0), "diffusion: last beta of the linear schedule (< 1)"),
    NUM("diffusion.label_drop", K_FLOAT, diffusion.label_drop, "0.1", FRACTION,
        "diffusion: probability a training label is replaced by the null class (classifier-free guidance)"),
    NUM("diffusion.ema_decay", K_FLOAT, diffusion.ema_decay, "0.9999", FRACTION,
        "diffusion: EMA decay of the weights, warmed up as min(decay, (1 + n) / (10 + n)) after n updates"),
    NUM("diffusion.latent_samples", K_INT, diffusion.latent_samples, "256", BETWEEN(1, 1 << 20),
        "diffusion: training segments (spread over the split) whose latents measure latent_scale = 1 / std"),
    NUM("diffusion.sample_steps", K_INT, diffusion.sample_steps, "50", BETWEEN(1, 100000),
        "diffusion: DDIM steps of the spectrograms generated at each evaluation"),
    NUM("diffusion.cfg_scale", K_FLOAT, diffusion.cfg_scale, "4", AT_LEAST(0),
        "diffusion: classifier-free guidance w of the evaluation's generations (1: conditional only)"),
    NUM("diffusion.eval_timesteps", K_INT, diffusion.eval_timesteps, "10", BETWEEN(1, 16),
        "diffusion: timesteps of the validation loss grid, evenly spaced over the schedule"),
    STR("diffusion.checkpoint", diffusion.checkpoint, "", ANY,
        "remix: the stage-2 checkpoint whose EMA transformer, autoencoder and schedule the remix model starts from"),

    NUM("remix.content_weight", K_FLOAT, remix.content_weight, "1", AT_LEAST(0),
        "remix: alpha, weight of the content loss (encoder features of the original)"),
    NUM("remix.style_weight", K_FLOAT, remix.style_weight, "10", AT_LEAST(0),
        "remix: beta, weight of the style loss (Gram matrices of the style song's encoder features)"),
    NUM("remix.tv_weight", K_FLOAT, remix.tv_weight, "0.1", AT_LEAST(0),
        "remix: gamma, weight of the total variation of the decoded mel"),
    NUM("remix.diffusion_weight", K_FLOAT, remix.diffusion_weight, "10", AT_LEAST(0),
        "remix: lambda, weight of the noise-prediction loss that keeps the model on the data"),
    STR("remix.content_layers", remix.content_layers, "enc.mid.res", NONEMPTY,
        "remix: encoder steps whose outputs measure content, comma-separated (remixer-train --dry-run lists them)"),
    STR("remix.style_layers", remix.style_layers, "enc.conv_in, enc.down.0.res.0, enc.down.1.res.0", NONEMPTY,
        "remix: encoder steps whose Gram matrices measure style, comma-separated"),
    NUM("remix.strength_min", K_FLOAT, remix.strength_min, "0.3", BETWEEN(0, 1),
        "remix: lowest strength of training: the original is noised to t = strength x T"),
    NUM("remix.strength_max", K_FLOAT, remix.strength_max, "0.8", BETWEEN(0, 1), "remix: highest training strength"),
    ENUM("remix.pairing", remix.pairing, "other-genre", "other-genre|any",
         "remix: which training segment is a sample's style: one of another genre, or any"),
    NUM("remix.style_drop", K_FLOAT, remix.style_drop, "0.1", FRACTION,
        "remix: probability the style tokens are replaced by the null style (style guidance)"),
    NUM("remix.ema_decay", K_FLOAT, remix.ema_decay, "0.999", FRACTION,
        "remix: EMA decay of the weights, warmed up as in stage 2"),
    NUM("remix.sample_steps", K_INT, remix.sample_steps, "50", BETWEEN(1, 100000),
        "remix: DDIM steps over the whole schedule for the evaluation's remixes (fewer run below the strength)"),
    NUM("remix.style_scale", K_FLOAT, remix.style_scale, "2", AT_LEAST(0),
        "remix: style guidance of the evaluation's remixes (1: style tokens only, no guidance)"),
    NUM("remix.eval_strength", K_FLOAT, remix.eval_strength, "0.6", BETWEEN(0, 1),
        "remix: strength of the evaluation's remixes"),
    NUM("remix.eval_pairs", K_INT, remix.eval_pairs, "4", BETWEEN(1, 8),
        "remix: (original, style) pairs of validation segments in the evaluation PNG"),

    NUM("train.steps", K_INT64, train.steps, "100000", AT_LEAST(1), "optimizer steps of the whole run"),
    NUM("train.global_batch", K_INT, train.global_batch, "64", AT_LEAST(1), "samples per step over all ranks (B)"),
    NUM("train.micro_batch", K_INT, train.micro_batch, "8", AT_LEAST(1),
        "samples per forward/backward on one rank (m); B/(world*m) accumulation steps"),
    NUM("train.lr", K_FLOAT, train.lr, "1e-4", ABOVE(0), "peak learning rate (AdamW)"),
    NUM("train.min_lr", K_FLOAT, train.min_lr, "0", AT_LEAST(0), "learning rate at the end of the cosine decay"),
    NUM("train.warmup", K_INT64, train.warmup, "1000", AT_LEAST(0), "steps of linear warm-up from 0 to train.lr"),
    NUM("train.weight_decay", K_FLOAT, train.weight_decay, "0", AT_LEAST(0), "AdamW decoupled weight decay"),
    NUM("train.beta1", K_FLOAT, train.beta1, "0.9", FRACTION, "Adam first-moment decay"),
    NUM("train.beta2", K_FLOAT, train.beta2, "0.999", FRACTION, "Adam second-moment decay"),
    NUM("train.eps", K_FLOAT, train.eps, "1e-8", ABOVE(0), "Adam denominator epsilon"),
    NUM("train.grad_clip", K_FLOAT, train.grad_clip, "1", AT_LEAST(0), "clip the global gradient norm to this; 0 disables"),
    NUM("train.seed", K_UINT64, train.seed, "0", ANY, "seed of every random stream (init, data order, noise)"),
    NUM("train.threads", K_INT, train.threads, "0", BETWEEN(0, 4096),
        "OpenMP threads per rank; 0 leaves the OpenMP default"),
    NUM("train.max_nonfinite", K_INT, train.max_nonfinite, "5", AT_LEAST(1),
        "stop after this many non-finite steps in a row (each one is skipped)"),

    NUM("eval.every", K_INT64, eval.every, "1000", AT_LEAST(0), "evaluate every N steps; 0 disables"),
    NUM("eval.batches", K_INT, eval.batches, "8", AT_LEAST(1), "validation micro-batches per evaluation"),

    NUM("log.every", K_INT64, log.every, "50", AT_LEAST(1), "one progress line every N steps"),

    STR("run.dir", run.dir, "runs/default", NONEMPTY,
        "run folder: metrics.jsonl, PNGs, and checkpoints unless checkpoint.dir is set"),

    STR("checkpoint.dir", checkpoint.dir, "", ANY, "checkpoint folder; empty: run.dir"),
    NUM("checkpoint.every", K_INT64, checkpoint.every, "1000", AT_LEAST(0),
        "write a checkpoint every N steps; 0 disables periodic checkpoints"),
    NUM("checkpoint.keep", K_INT, checkpoint.keep, "3", AT_LEAST(1), "newest checkpoints kept"),
    STR("checkpoint.resume", checkpoint.resume, "auto", NONEMPTY,
        "auto: newest checkpoint that verifies; never: start fresh; else a checkpoint path"),
};

#define N_KEYS (sizeof SCHEMA / sizeof SCHEMA[0])

/* Sections that belong to some stages only: setting one of their keys in a config of another stage
 * is an error, and the rendered config (a checkpoint's `config` attribute, --print-config) leaves
 * them out, so that it loads back under the same stage. */
static const struct {
    const char *prefix;
    const char *stages; /* "a|b" */
} STAGE_SECTIONS[] = {
    {"model.", "vae"},
    {"autoencoder.", "diffusion"},
    {"dit.", "diffusion"},
    {"diffusion.checkpoint", "remix"}, /* (the first matching prefix counts) */
    {"diffusion.", "diffusion"},
    {"remix.", "remix"},
};

/* The stages key `k` belongs to, or NULL for every stage. */
static const char *key_stages(size_t k) {
    for (size_t i = 0; i < sizeof STAGE_SECTIONS / sizeof STAGE_SECTIONS[0]; i++)
        if (strncmp(SCHEMA[k].key, STAGE_SECTIONS[i].prefix, strlen(STAGE_SECTIONS[i].prefix)) == 0)
            return STAGE_SECTIONS[i].stages;
    return NULL;
}

static bool stage_listed(const char *stages, const char *stage) {
    size_t n = strlen(stage);
    for (const char *p = stages; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, stage, n) == 0) return true;
        p += len + (p[len] == '|');
    }
    return false;
}

/* Whether key `k` is part of a config of stage `stage`. */
static bool key_in_stage(size_t k, const char *stage) {
    const char *stages = key_stages(k);
    return !stages || stage_listed(stages, stage);
}

/* ---------------------------------------------------------------------------------------------- */
/* Where a value came from, for messages                                                          */

enum { FROM_DEFAULT, FROM_FILE, FROM_SET };

typedef struct {
    int from;
    size_t line, col; /* FROM_FILE: 1-based; 0 when unknown */
    int ov;           /* FROM_SET: index of the override */
} origin;

typedef struct {
    rmx_config *cfg;
    const char *name; /* the file name in messages */
    const char *const *ovs;
    char *err;
    size_t errlen;
    origin org[N_KEYS]; /* per key, for the cross-key checks */
    yaml_parser_t parser;
    yaml_event_t ev; /* the current event, valid while have_ev */
    bool have_ev;
    struct {
        char path[64];
        size_t line;
    } seen[2 * N_KEYS]; /* known keys and sections met so far (duplicate detection) */
    size_t n_seen;
} ctx;

static void describe_origin(const ctx *c, const origin *at, char *out, size_t n) {
    if (at->from == FROM_SET)
        snprintf(out, n, "--set %s", c->ovs[at->ov]);
    else if (at->from == FROM_FILE && at->line > 0)
        snprintf(out, n, "%s:%zu:%zu", c->name, at->line, at->col);
    else
        snprintf(out, n, "%s", c->name);
}

static int vfail(ctx *c, const origin *at, const char *key, const char *fmt, va_list ap) {
    char where[RMX_PATH_MAX + 64], msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    describe_origin(c, at, where, sizeof where);
    if (c->err && c->errlen) {
        if (key)
            snprintf(c->err, c->errlen, "%s: %s: %s", where, key, msg);
        else
            snprintf(c->err, c->errlen, "%s: %s", where, msg);
    }
    return -1;
}

/* Writes "WHERE: KEY: MESSAGE" into the error buffer and returns -1. */
static int fail(ctx *c, const origin *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(ctx *c, const origin *at, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(c, at, key, fmt, ap);
    va_end(ap);
    return -1;
}

static origin at_mark(yaml_mark_t m) {
    return (origin){.from = FROM_FILE, .line = m.line + 1, .col = m.column + 1};
}

/* "'value'", or words for an empty one: the tail of every "got ..." in a message. */
static const char *got(const char *text, char *buf, size_t n) {
    if (!*text) return "an empty value";
    snprintf(buf, n, "'%s'", text);
    return buf;
}

/* ---------------------------------------------------------------------------------------------- */
/* Lookup and suggestions                                                                         */

static int find_key(const char *path) {
    for (size_t k = 0; k < N_KEYS; k++)
        if (strcmp(SCHEMA[k].key, path) == 0) return (int)k;
    return -1;
}

/* The first key inside section `path`, or -1 when `path` is not a section. */
static int first_in_section(const char *path) {
    size_t n = strlen(path);
    for (size_t k = 0; k < N_KEYS; k++)
        if (n > 0 && strncmp(SCHEMA[k].key, path, n) == 0 && SCHEMA[k].key[n] == '.') return (int)k;
    return -1;
}

/* Edit distance counting an adjacent transposition as one edit ("trian" -> "train"). */
static size_t edit_distance(const char *a, const char *b) {
    enum { MAXLEN = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAXLEN || lb >= MAXLEN) return SIZE_MAX;
    size_t d[MAXLEN + 1][MAXLEN + 1];
    for (size_t i = 0; i <= la; i++) d[i][0] = i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static const char *leaf(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

/* Offers `cand` when it is closer to `path` than the best so far and close enough to be a typo:
 * at most two edits, and no more than a third of the candidate, so short names are not matched
 * to anything at all. */
static void consider(const char *path, const char *cand, size_t len, char *best, size_t n, size_t *best_d) {
    char buf[64];
    size_t plen = strlen(path);
    /* Only distances up to 2 count, and the distance is at least the difference in length. */
    if (len >= sizeof buf || len + 2 < plen || plen + 2 < len) return;
    memcpy(buf, cand, len);
    buf[len] = '\0';
    size_t d = edit_distance(path, buf);
    if (d <= 2 && 3 * d <= len && d < *best_d) {
        *best_d = d;
        snprintf(best, n, "%s", buf);
    }
}

/* The known key or section `path` was most likely meant to be; false when nothing is close.
 * A key placed in the wrong section ("train.channels") is matched by its last name. */
static bool suggest(const char *path, char *out, size_t n) {
    size_t best_d = SIZE_MAX;
    for (size_t k = 0; k < N_KEYS; k++) {
        const char *key = SCHEMA[k].key;
        consider(path, key, strlen(key), out, n, &best_d);
        for (const char *dot = strchr(key, '.'); dot; dot = strchr(dot + 1, '.'))
            consider(path, key, (size_t)(dot - key), out, n, &best_d);
    }
    if (best_d != SIZE_MAX) return true;
    for (size_t k = 0; k < N_KEYS; k++) {
        if (strcmp(leaf(SCHEMA[k].key), leaf(path)) == 0) {
            snprintf(out, n, "%s", SCHEMA[k].key);
            return true;
        }
    }
    return false;
}

static int unknown_key(ctx *c, const origin *at, const char *path) {
    char hint[64];
    if (suggest(path, hint, sizeof hint)) return fail(c, at, path, "unknown key, did you mean '%s'?", hint);
    return fail(c, at, path, "unknown key");
}

/* ---------------------------------------------------------------------------------------------- */
/* What a key accepts, in words                                                                   */

static void describe_choices(const key_spec *s, char *out, size_t n) {
    size_t used = (size_t)snprintf(out, n, "one of ");
    for (const char *p = s->choices; *p && used < n; p++) {
        int w = (*p == '|') ? snprintf(out + used, n - used, ", ") : snprintf(out + used, n - used, "%c", *p);
        used += (size_t)w;
    }
}

/* The type alone: what a wrong kind of value is told it should have been. */
static void describe_type(const key_spec *s, char *out, size_t n) {
    switch (s->type) {
    case K_STR: snprintf(out, n, "a string"); break;
    case K_ENUM: describe_choices(s, out, n); break;
    case K_INT:
    case K_INT64: snprintf(out, n, "an integer"); break;
    case K_UINT64: snprintf(out, n, "a non-negative integer"); break;
    case K_FLOAT: snprintf(out, n, "a number"); break;
    case K_INTLIST: snprintf(out, n, "a list of integers"); break;
    }
}

static int64_t int_type_max(key_type t) { return t == K_INT64 ? INT64_MAX : INT_MAX; }
static int64_t int_type_min(key_type t) { return t == K_INT64 ? INT64_MIN : INT_MIN; }

/* "an integer >= 1", "an integer from 0 to 4096". The storage limit is named only when a value
 * exceeded it, since it is rarely the limit that matters. */
static void describe_int(const key_spec *s, key_type t, bool show_type_max, char *out, size_t n) {
    bool has_max = (s->range & R_MAX) || show_type_max;
    int64_t hi = (s->range & R_MAX) ? (int64_t)s->hi : int_type_max(t);
    if ((s->range & R_MIN) && has_max)
        snprintf(out, n, "an integer from %" PRId64 " to %" PRId64, (int64_t)s->lo, hi);
    else if (s->range & R_MIN)
        snprintf(out, n, "an integer >= %" PRId64, (int64_t)s->lo);
    else if (has_max)
        snprintf(out, n, "an integer from %" PRId64 " to %" PRId64, int_type_min(t), hi);
    else
        snprintf(out, n, "an integer");
}

/* "a number > 0", "a number >= 0 and < 1". */
static void describe_float(const key_spec *s, char *out, size_t n) {
    size_t used = (size_t)snprintf(out, n, "a number");
    if ((s->range & R_MIN) && used < n)
        used += (size_t)snprintf(out + used, n - used, " %s %g", (s->range & R_MIN_OPEN) ? ">" : ">=", s->lo);
    if ((s->range & R_MAX) && used < n)
        snprintf(out + used, n - used, "%s %s %g", (s->range & R_MIN) ? " and" : "",
                 (s->range & R_MAX_OPEN) ? "<" : "<=", s->hi);
}

static size_t list_capacity(const key_spec *s) { return s->size / sizeof(int); }

/* The type with its range: what an out-of-range value is told, and what --print-config shows. */
static void describe(const key_spec *s, char *out, size_t n) {
    char item[96];
    switch (s->type) {
    case K_STR: snprintf(out, n, (s->range & R_NONEMPTY) ? "a non-empty string" : "a string"); break;
    case K_INT:
    case K_INT64: describe_int(s, s->type, false, out, n); break;
    case K_FLOAT: describe_float(s, out, n); break;
    case K_INTLIST:
        describe_int(s, K_INT, false, item, sizeof item);
        snprintf(out, n, "a list of 1 to %zu entries, each %s", list_capacity(s), item);
        break;
    default: describe_type(s, out, n); break;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Values from text                                                                               */

static void *field(rmx_config *cfg, const key_spec *s) { return (char *)cfg + s->off; }
static const void *cfield(const rmx_config *cfg, const key_spec *s) { return (const char *)cfg + s->off; }

/* Strict decimal integer. Returns false when `text` is not one; *overflow when it is one that
 * does not fit in 64 bits (then it is a range problem, not a type problem). */
static bool parse_i64(const char *text, int64_t *out, bool *overflow) {
    char *end;
    *overflow = false;
    if (!*text || isspace((unsigned char)*text)) return false;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end) return false;
    *overflow = errno == ERANGE;
    *out = v;
    return true;
}

/* Parses an integer of storage type `t` with the range of `s` (lists: the range of one entry). */
static int parse_int(ctx *c, const key_spec *s, key_type t, const char *key, const char *text, const origin *at,
                     int64_t *out) {
    char g[RMX_PATH_MAX + 8], what[128];
    int64_t v = 0;
    bool overflow;
    if (!parse_i64(text, &v, &overflow)) return fail(c, at, key, "expected an integer, got %s", got(text, g, sizeof g));
    int64_t lo = (s->range & R_MIN) ? (int64_t)s->lo : int_type_min(t);
    int64_t hi = (s->range & R_MAX) ? (int64_t)s->hi : int_type_max(t);
    if (overflow || v < lo || v > hi) {
        bool beyond_type = overflow || v > int_type_max(t) || v < int_type_min(t);
        describe_int(s, t, beyond_type, what, sizeof what);
        return fail(c, at, key, "expected %s, got %s", what, got(text, g, sizeof g));
    }
    *out = v;
    return 0;
}

static int set_int(ctx *c, const key_spec *s, const char *text, const origin *at) {
    int64_t v;
    if (parse_int(c, s, s->type, s->key, text, at, &v)) return -1;
    if (s->type == K_INT64) {
        memcpy(field(c->cfg, s), &v, sizeof v);
    } else {
        int i = (int)v;
        memcpy(field(c->cfg, s), &i, sizeof i);
    }
    return 0;
}

static int set_uint64(ctx *c, const key_spec *s, const char *text, const origin *at) {
    char g[RMX_PATH_MAX + 8], *end;
    /* strtoull would accept "-1" and wrap it; only digits are a non-negative integer here. */
    if (!isdigit((unsigned char)*text))
        return fail(c, at, s->key, "expected a non-negative integer, got %s", got(text, g, sizeof g));
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end) return fail(c, at, s->key, "expected a non-negative integer, got %s", got(text, g, sizeof g));
    if (errno == ERANGE)
        return fail(c, at, s->key, "expected an integer from 0 to %" PRIu64 ", got %s", UINT64_MAX,
                    got(text, g, sizeof g));
    uint64_t u = v;
    memcpy(field(c->cfg, s), &u, sizeof u);
    return 0;
}

static bool in_float_range(const key_spec *s, double v) {
    if (s->range & R_MIN) {
        if ((s->range & R_MIN_OPEN) ? !(v > s->lo) : !(v >= s->lo)) return false;
    }
    if (s->range & R_MAX) {
        if ((s->range & R_MAX_OPEN) ? !(v < s->hi) : !(v <= s->hi)) return false;
    }
    return true;
}

/* Strict decimal number; "nan", "inf" and out-of-double-range values are not numbers here. */
static bool parse_double(const char *text, double *out) {
    char *end;
    if (!*text || isspace((unsigned char)*text)) return false;
    *out = strtod(text, &end);
    return !*end && isfinite(*out);
}

static int set_float(ctx *c, const key_spec *s, const char *text, const origin *at) {
    char g[RMX_PATH_MAX + 8], what[128];
    double d;
    if (!parse_double(text, &d)) return fail(c, at, s->key, "expected a number, got %s", got(text, g, sizeof g));
    if (fabs(d) > FLT_MAX)
        return fail(c, at, s->key, "expected a number that fits a float, got %s", got(text, g, sizeof g));
    /* The range applies to the stored float: 0.99999999999 rounds to 1 and must fail "< 1". */
    float f = (float)d;
    if (!in_float_range(s, f)) {
        describe_float(s, what, sizeof what);
        return fail(c, at, s->key, "expected %s, got %s", what, got(text, g, sizeof g));
    }
    memcpy(field(c->cfg, s), &f, sizeof f);
    return 0;
}

/* Decodes one UTF-8 sequence; returns its length, or 0 when it is not valid UTF-8. */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp) {
    size_t n;
    uint32_t min;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xE0) == 0xC0) {
        n = 2;
        *cp = p[0] & 0x1Fu;
        min = 0x80;
    } else if ((p[0] & 0xF0) == 0xE0) {
        n = 3;
        *cp = p[0] & 0x0Fu;
        min = 0x800;
    } else if ((p[0] & 0xF8) == 0xF0) {
        n = 4;
        *cp = p[0] & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0; /* also stops at the terminating NUL */
        *cp = (*cp << 6) | (p[i] & 0x3Fu);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
    return n;
}

static bool utf8_valid(const char *s) {
    uint32_t cp;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_decode(p, &cp);
        if (!n) return false;
        p += n;
    }
    return true;
}

/* Strings from a file are UTF-8 already (libyaml checks); one from --set may not be, and could
 * not be written back into the config text. */
static int set_string(ctx *c, const key_spec *s, const char *text, const origin *at) {
    char g[RMX_PATH_MAX + 8];
    size_t len = strlen(text);
    if (len >= s->size)
        return fail(c, at, s->key, "expected a string of at most %zu bytes, got %zu bytes", s->size - 1, len);
    if ((s->range & R_NONEMPTY) && len == 0)
        return fail(c, at, s->key, "expected a non-empty string, got an empty value");
    if (!utf8_valid(text)) return fail(c, at, s->key, "expected UTF-8 text, got %s", got(text, g, sizeof g));
    memset(field(c->cfg, s), 0, s->size);
    memcpy(field(c->cfg, s), text, len);
    return 0;
}

static bool is_choice(const key_spec *s, const char *text) {
    size_t n = strlen(text);
    for (const char *p = s->choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, text, n) == 0) return true;
        p += len + (p[len] == '|');
    }
    return false;
}

static int set_enum(ctx *c, const key_spec *s, const char *text, const origin *at) {
    char g[RMX_PATH_MAX + 8], what[128];
    if (!is_choice(s, text)) {
        describe_choices(s, what, sizeof what);
        return fail(c, at, s->key, "expected %s, got %s", what, got(text, g, sizeof g));
    }
    memset(field(c->cfg, s), 0, s->size);
    memcpy(field(c->cfg, s), text, strlen(text));
    return 0;
}

static int set_list_item(ctx *c, const key_spec *s, size_t i, const char *text, const origin *at) {
    char key[96];
    int64_t v;
    snprintf(key, sizeof key, "%s[%zu]", s->key, i);
    if (parse_int(c, s, K_INT, key, text, at, &v)) return -1;
    int x = (int)v;
    memcpy((char *)field(c->cfg, s) + i * sizeof x, &x, sizeof x);
    return 0;
}

/* Checks the entry count and stores it; entries past the count are zeroed so that two equal
 * configs compare equal byte for byte. */
static int finish_list(ctx *c, const key_spec *s, size_t n, const origin *at) {
    size_t cap = list_capacity(s);
    if (n == 0 || n > cap) {
        char g[48];
        snprintf(g, sizeof g, n == 0 ? "an empty list" : "%zu entries", n);
        return fail(c, at, s->key, "expected a list of 1 to %zu integers, got %s", cap, g);
    }
    memset((char *)field(c->cfg, s) + n * sizeof(int), 0, (cap - n) * sizeof(int));
    int count = (int)n;
    memcpy((char *)c->cfg + s->count_off, &count, sizeof count);
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* A list written on one line, as --set and the schema's defaults do: "[1, 2, 4]" or "1,2,4". */
static int set_list_text(ctx *c, const key_spec *s, const char *text, const origin *at) {
    char buf[512], g[RMX_PATH_MAX + 8];
    if (strlen(text) >= sizeof buf)
        return fail(c, at, s->key, "expected a list of integers, got %s", got(text, g, sizeof g));
    snprintf(buf, sizeof buf, "%s", text);
    char *body = trim(buf);
    size_t len = strlen(body);
    if (len > 0 && body[0] == '[') {
        if (body[len - 1] != ']')
            return fail(c, at, s->key, "expected a list of integers, got %s", got(text, g, sizeof g));
        body[len - 1] = '\0';
        body = trim(body + 1);
    }
    size_t n = 0;
    bool empty = *body == '\0'; /* "" and "[]" have no entries; "1," has two, the second empty */
    for (char *item = body; !empty; item++) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        if (n < list_capacity(s) && set_list_item(c, s, n, trim(item), at)) return -1;
        n++;
        if (!comma) break;
        item = comma;
    }
    return finish_list(c, s, n, at);
}

/* Sets key `k` from its text form (a YAML scalar, a --set value, a default) and records where
 * the value came from. */
static int apply_text(ctx *c, size_t k, const char *text, const origin *at) {
    const key_spec *s = &SCHEMA[k];
    int rc = -1;
    switch (s->type) {
    case K_STR: rc = set_string(c, s, text, at); break;
    case K_ENUM: rc = set_enum(c, s, text, at); break;
    case K_INT:
    case K_INT64: rc = set_int(c, s, text, at); break;
    case K_UINT64: rc = set_uint64(c, s, text, at); break;
    case K_FLOAT: rc = set_float(c, s, text, at); break;
    case K_INTLIST: rc = set_list_text(c, s, text, at); break;
    }
    if (rc == 0) c->org[k] = *at;
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* The YAML file                                                                                  */

static int syntax_error(ctx *c) {
    const yaml_parser_t *p = &c->parser;
    const char *problem = p->problem ? p->problem : "unknown problem";
    origin at = {.from = FROM_FILE};
    if (p->error == YAML_MEMORY_ERROR) return fail(c, &at, NULL, "out of memory while parsing YAML");
    /* The reader (encoding problems) knows a byte offset, not a line. */
    if (p->error == YAML_READER_ERROR)
        return fail(c, &at, NULL, "YAML syntax error: %s at byte %zu", problem, p->problem_offset);
    at = at_mark(p->problem_mark);
    if (p->context)
        return fail(c, &at, NULL, "YAML syntax error: %s (%s at line %zu, column %zu)", problem, p->context,
                    p->context_mark.line + 1, p->context_mark.column + 1);
    return fail(c, &at, NULL, "YAML syntax error: %s", problem);
}

static int next_event(ctx *c) {
    if (c->have_ev) yaml_event_delete(&c->ev);
    c->have_ev = false;
    if (!yaml_parser_parse(&c->parser, &c->ev)) return syntax_error(c);
    c->have_ev = true;
    return 0;
}

static const char *scalar(const ctx *c) { return (const char *)c->ev.data.scalar.value; }

/* A plain empty, "~" or "null" scalar: YAML's null, which we read as "nothing here". */
static bool is_null(const ctx *c) {
    if (c->ev.type != YAML_SCALAR_EVENT || c->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *v = scalar(c);
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* What the current event is, for "got ..." when it is not what was expected. */
static const char *got_event(const ctx *c, char *buf, size_t n) {
    switch (c->ev.type) {
    case YAML_SCALAR_EVENT: return is_null(c) ? "an empty value" : got(scalar(c), buf, n);
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT:
        snprintf(buf, n, "alias '*%s' (aliases are not supported)", (const char *)c->ev.data.alias.anchor);
        return buf;
    default: return "something else";
    }
}

/* "\0" escapes can put a NUL inside a scalar, which the C strings of rmx_config cannot hold. */
static bool has_nul(const ctx *c) { return strlen(scalar(c)) != c->ev.data.scalar.length; }

static int remember_key(ctx *c, const char *path, const origin *at) {
    for (size_t i = 0; i < c->n_seen; i++)
        if (strcmp(c->seen[i].path, path) == 0)
            return fail(c, at, path, "duplicate key, first given at line %zu", c->seen[i].line);
    /* Only known paths get here without an error following, so the table cannot overflow. */
    if (c->n_seen < sizeof c->seen / sizeof c->seen[0] && strlen(path) < sizeof c->seen[0].path) {
        snprintf(c->seen[c->n_seen].path, sizeof c->seen[0].path, "%s", path);
        c->seen[c->n_seen++].line = at->line;
    }
    return 0;
}

static int parse_list(ctx *c, size_t k, const origin *at) {
    const key_spec *s = &SCHEMA[k];
    char key[96], g[RMX_PATH_MAX + 8];
    size_t n = 0;
    for (;; n++) {
        if (next_event(c)) return -1;
        if (c->ev.type == YAML_SEQUENCE_END_EVENT) break;
        origin item = at_mark(c->ev.start_mark);
        if (c->ev.type != YAML_SCALAR_EVENT || has_nul(c)) {
            snprintf(key, sizeof key, "%s[%zu]", s->key, n);
            return fail(c, &item, key, "expected an integer, got %s", got_event(c, g, sizeof g));
        }
        /* Entries past the capacity are only counted, for the message about the length. */
        if (n < list_capacity(s) && set_list_item(c, s, n, is_null(c) ? "" : scalar(c), &item)) return -1;
    }
    if (finish_list(c, s, n, at)) return -1;
    c->org[k] = *at;
    return 0;
}

static int parse_value(ctx *c, size_t k) {
    const key_spec *s = &SCHEMA[k];
    char what[128], g[RMX_PATH_MAX + 8];
    origin at = at_mark(c->ev.start_mark);
    if (c->ev.type == YAML_SEQUENCE_START_EVENT && s->type == K_INTLIST) return parse_list(c, k, &at);
    if (c->ev.type == YAML_SCALAR_EVENT && s->type != K_INTLIST && !has_nul(c))
        return apply_text(c, k, is_null(c) ? "" : scalar(c), &at);
    if (c->ev.type == YAML_SCALAR_EVENT && has_nul(c))
        return fail(c, &at, s->key, "expected text without NUL characters");
    describe_type(s, what, sizeof what);
    return fail(c, &at, s->key, "expected %s, got %s", what, got_event(c, g, sizeof g));
}

static int parse_mapping(ctx *c, const char *prefix);

/* A section's value: a mapping of its keys, or nothing at all (every key stays as it was). */
static int parse_section(ctx *c, const char *path) {
    char g[RMX_PATH_MAX + 8];
    if (c->ev.type == YAML_MAPPING_START_EVENT) return parse_mapping(c, path);
    if (is_null(c)) return 0;
    origin at = at_mark(c->ev.start_mark);
    return fail(c, &at, path, "expected a mapping of %s.* keys, got %s", path, got_event(c, g, sizeof g));
}

/* One "key: value" pair. A dotted key ("train.lr: 1e-4") names the same key as the nested form. */
static int parse_entry(ctx *c, const char *prefix) {
    char path[256], g[RMX_PATH_MAX + 8];
    origin at = at_mark(c->ev.start_mark);
    if (c->ev.type != YAML_SCALAR_EVENT || has_nul(c))
        return fail(c, &at, *prefix ? prefix : NULL, "expected a key name, got %s", got_event(c, g, sizeof g));
    snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", scalar(c));
    int k = find_key(path);
    bool section = k < 0 && first_in_section(path) >= 0;
    if (k < 0 && !section) return unknown_key(c, &at, path);
    if (remember_key(c, path, &at) || next_event(c)) return -1;
    return section ? parse_section(c, path) : parse_value(c, (size_t)k);
}

static int parse_mapping(ctx *c, const char *prefix) {
    for (;;) {
        if (next_event(c)) return -1;
        if (c->ev.type == YAML_MAPPING_END_EVENT) return 0;
        if (parse_entry(c, prefix)) return -1;
    }
}

/* stream-start [document-start (mapping | null) document-end] stream-end */
static int parse_stream(ctx *c) {
    char g[RMX_PATH_MAX + 8];
    if (next_event(c) || next_event(c)) return -1;
    if (c->ev.type == YAML_STREAM_END_EVENT) return 0; /* an empty file: every default */
    if (next_event(c)) return -1;
    origin at = at_mark(c->ev.start_mark);
    if (c->ev.type == YAML_MAPPING_START_EVENT) {
        if (parse_mapping(c, "")) return -1;
    } else if (!is_null(c)) {
        return fail(c, &at, NULL, "expected a mapping of keys at the top level, got %s", got_event(c, g, sizeof g));
    }
    if (next_event(c) || next_event(c)) return -1; /* document end, then what follows it */
    if (c->ev.type == YAML_DOCUMENT_START_EVENT) {
        at = at_mark(c->ev.start_mark);
        return fail(c, &at, NULL, "expected a single YAML document, got a second one");
    }
    return 0;
}

static int parse_yaml(ctx *c, const unsigned char *text, size_t len) {
    origin at = {.from = FROM_FILE};
    if (!yaml_parser_initialize(&c->parser)) return fail(c, &at, NULL, "out of memory while parsing YAML");
    yaml_parser_set_input_string(&c->parser, text, len);
    int rc = parse_stream(c);
    if (c->have_ev) yaml_event_delete(&c->ev);
    c->have_ev = false;
    yaml_parser_delete(&c->parser);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Overrides and the checks across keys                                                           */

static int apply_override(ctx *c, int i) {
    const char *ov = c->ovs[i];
    origin at = {.from = FROM_SET, .ov = i};
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov) return fail(c, &at, NULL, "expected key.path=value");
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - ov), ov);
    int k = find_key(key);
    if (k >= 0) return apply_text(c, (size_t)k, eq + 1, &at);
    int first = first_in_section(key);
    if (first >= 0) return fail(c, &at, key, "expected a full key path such as '%s'", SCHEMA[first].key);
    return unknown_key(c, &at, key);
}

/* A relation between two keys is reported where `key` was set or, when it kept its default,
 * where `other` was: that is the line the user wrote. */
static int fail_rel(ctx *c, const char *key, const char *other, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_rel(ctx *c, const char *key, const char *other, const char *fmt, ...) {
    const origin *at = &c->org[find_key(key)];
    if (at->from == FROM_DEFAULT) at = &c->org[find_key(other)];
    va_list ap;
    va_start(ap, fmt);
    vfail(c, at, key, fmt, ap);
    va_end(ap);
    return -1;
}

static void format_float(float f, char *out, size_t n);

/* Why a later stage has no say over an earlier stage's architecture keys. */
static const char *inherited_note(const char *stage, const char *key) {
    bool architecture = strncmp(key, "model.", 6) == 0 || strncmp(key, "autoencoder.", 12) == 0 ||
                        strncmp(key, "dit.", 4) == 0 || strncmp(key, "diffusion.", 10) == 0;
    if (strcmp(stage, "diffusion") == 0 && strncmp(key, "model.", 6) == 0)
        return " (the autoencoder's architecture comes from autoencoder.checkpoint)";
    if (strcmp(stage, "remix") == 0 && architecture)
        return " (the autoencoder, the transformer and the schedule come from diffusion.checkpoint)";
    return "";
}

/* A key set (in the file or by --set) that another stage reads would be silently ignored. */
static int check_stage_keys(ctx *c) {
    for (size_t k = 0; k < N_KEYS; k++) {
        if (c->org[k].from == FROM_DEFAULT || key_in_stage(k, c->cfg->stage)) continue;
        const char *stages = key_stages(k);
        char list[64];
        snprintf(list, sizeof list, "%.*s%s", (int)strcspn(stages, "|"), stages,
                 strchr(stages, '|') ? " (and later ones)" : "");
        return fail(c, &c->org[k], SCHEMA[k].key, "belongs to stage %s, but this config's stage is %s%s", list,
                    c->cfg->stage, inherited_note(c->cfg->stage, SCHEMA[k].key));
    }
    return 0;
}

static int check_relations(ctx *c) {
    const rmx_config *g = c->cfg;
    if (check_stage_keys(c)) return -1;
    if (g->train.global_batch % g->train.micro_batch != 0)
        return fail_rel(c, "train.global_batch", "train.micro_batch",
                        "expected a multiple of train.micro_batch (%d), got '%d'", g->train.micro_batch,
                        g->train.global_batch);
    if (strcmp(g->model.bottleneck, "vq") == 0 && g->model.codebook_size < 2)
        return fail_rel(c, "model.codebook_size", "model.bottleneck",
                        "expected an integer >= 2 when model.bottleneck is vq, got '%d'", g->model.codebook_size);
    if (strcmp(g->stage, "diffusion") == 0) {
        if (g->dit.hidden % g->dit.heads != 0)
            return fail_rel(c, "dit.heads", "dit.hidden", "expected a divisor of dit.hidden (%d), got '%d'",
                            g->dit.hidden, g->dit.heads);
        if (g->dit.hidden % 4 != 0)
            return fail_rel(c, "dit.hidden", "dit.hidden",
                            "expected a multiple of 4 (the 2-D sin-cos positions), got '%d'", g->dit.hidden);
        if (!(g->diffusion.beta_start < g->diffusion.beta_end && g->diffusion.beta_end < 1)) {
            char b0[32], b1[32];
            format_float(g->diffusion.beta_start, b0, sizeof b0);
            format_float(g->diffusion.beta_end, b1, sizeof b1);
            return fail_rel(c, "diffusion.beta_end", "diffusion.beta_start",
                            "expected a number > diffusion.beta_start (%s) and < 1, got '%s'", b0, b1);
        }
        if (!g->autoencoder.checkpoint[0])
            return fail_rel(c, "autoencoder.checkpoint", "stage",
                            "expected the path of a stage-1 checkpoint (stage %s trains over a frozen autoencoder)",
                            g->stage);
    }
    if (strcmp(g->stage, "remix") == 0) {
        if (!g->diffusion.checkpoint[0])
            return fail_rel(c, "diffusion.checkpoint", "stage",
                            "expected the path of a stage-2 checkpoint (stage remix starts from its transformer "
                            "and autoencoder)");
        if (g->remix.strength_min > g->remix.strength_max) {
            char lo[32], hi[32];
            format_float(g->remix.strength_min, lo, sizeof lo);
            format_float(g->remix.strength_max, hi, sizeof hi);
            return fail_rel(c, "remix.strength_max", "remix.strength_min",
                            "expected a number >= remix.strength_min (%s), got '%s'", lo, hi);
        }
    }
    if (g->train.min_lr > g->train.lr) {
        char lr[32], min_lr[32];
        format_float(g->train.lr, lr, sizeof lr);
        format_float(g->train.min_lr, min_lr, sizeof min_lr);
        return fail_rel(c, "train.min_lr", "train.lr", "expected a number <= train.lr (%s), got '%s'", lr, min_lr);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Rendering                                                                                      */

/* The shortest text that reads back as the same float: "0.0001" rather than "9.99999975e-05". */
static void format_float(float f, char *out, size_t n) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(out, n, "%.*g", digits, (double)f);
        if ((float)strtod(out, NULL) == f) break;
    }
    if (!strpbrk(out, ".e")) strncat(out, ".0", n - strlen(out) - 1); /* shows that it is a number key */
}

/* Characters YAML lets stand for themselves inside double quotes; the rest are escaped, line
 * breaks included (a raw one would be folded into a space). */
static bool yaml_plain_char(uint32_t cp) {
    return (cp >= 0x20 && cp <= 0x7E) || (cp >= 0xA0 && cp <= 0xD7FF && cp != 0x2028 && cp != 0x2029) ||
           (cp >= 0xE000 && cp <= 0xFFFD && cp != 0xFEFF) || (cp >= 0x10000 && cp <= 0x10FFFF);
}

/* Writes a double-quoted YAML string; returns the number of bytes written. */
static int put_quoted(FILE *f, const char *s) {
    int w = fprintf(f, "\"");
    uint32_t cp;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_decode(p, &cp);
        if (!n) { /* not reachable for validated values; keeps the output well-formed regardless */
            cp = 0xFFFD;
            n = 1;
        }
        if (cp == '"' || cp == '\\')
            w += fprintf(f, "\\%c", (char)cp);
        else if (cp == '\n')
            w += fprintf(f, "\\n");
        else if (cp == '\t')
            w += fprintf(f, "\\t");
        else if (yaml_plain_char(cp))
            w += (int)fwrite(p, 1, n, f);
        else if (cp <= 0xFF)
            w += fprintf(f, "\\x%02" PRIX32, cp);
        else if (cp <= 0xFFFF)
            w += fprintf(f, "\\u%04" PRIX32, cp);
        else
            w += fprintf(f, "\\U%08" PRIX32, cp);
        p += n;
    }
    return w + fprintf(f, "\"");
}

static int put_value(FILE *f, const rmx_config *cfg, const key_spec *s) {
    const void *p = cfield(cfg, s);
    char num[64];
    int i;
    int64_t i64;
    uint64_t u64;
    float x;
    switch (s->type) {
    case K_STR: return put_quoted(f, p);
    case K_ENUM: return fprintf(f, "%s", (const char *)p);
    case K_INT: memcpy(&i, p, sizeof i); return fprintf(f, "%d", i);
    case K_INT64: memcpy(&i64, p, sizeof i64); return fprintf(f, "%" PRId64, i64);
    case K_UINT64: memcpy(&u64, p, sizeof u64); return fprintf(f, "%" PRIu64, u64);
    case K_FLOAT:
        memcpy(&x, p, sizeof x);
        format_float(x, num, sizeof num);
        return fprintf(f, "%s", num);
    case K_INTLIST: {
        int count;
        memcpy(&count, (const char *)cfg + s->count_off, sizeof count);
        int w = fprintf(f, "[");
        for (int e = 0; e < count; e++) {
            memcpy(&i, (const char *)p + (size_t)e * sizeof i, sizeof i);
            w += fprintf(f, "%s%d", e ? ", " : "", i);
        }
        return w + fprintf(f, "]");
    }
    }
    return 0;
}

/* How many leading section names two keys share ("train.lr", "train.eps" -> 1). */
static int shared_sections(const char *a, const char *b) {
    int n = 0;
    for (size_t i = 0; a[i] && a[i] == b[i]; i++)
        if (a[i] == '.') n++;
    return n;
}

static int count_dots(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '.';
    return n;
}

/* Component `d` of a dotted key, as a pointer and a length. */
static const char *component(const char *key, int d, int *len) {
    for (; d > 0; d--) key = strchr(key, '.') + 1;
    *len = (int)strcspn(key, ".");
    return key;
}

/* Every key in schema order, nested as mappings; with `comments`, each line ends with the key's
 * documentation and what it accepts. */
static void render(const rmx_config *cfg, FILE *f, bool comments) {
    enum { COMMENT_COLUMN = 36 };
    const char *prev = "";
    for (size_t k = 0; k < N_KEYS; k++) {
        const key_spec *s = &SCHEMA[k];
        if (!key_in_stage(k, cfg->stage)) continue;
        int depth = count_dots(s->key), len;
        for (int d = shared_sections(prev, s->key); d < depth; d++) {
            const char *name = component(s->key, d, &len);
            fprintf(f, "%*s%.*s:\n", 2 * d, "", len, name);
        }
        int w = fprintf(f, "%*s%s: ", 2 * depth, "", leaf(s->key));
        w += put_value(f, cfg, s);
        if (comments) {
            char what[160];
            describe(s, what, sizeof what);
            fprintf(f, "%*s# %s [%s]", w < COMMENT_COLUMN ? COMMENT_COLUMN - w : 1, "", s->doc, what);
        }
        fputc('\n', f);
        prev = s->key;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Public functions                                                                               */

static void init_ctx(ctx *c, rmx_config *cfg, const char *name, const char *const *ovs, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->name = name;
    c->ovs = ovs;
    c->err = err;
    c->errlen = errlen;
}

void rmx_config_defaults(rmx_config *cfg) {
    char err[512];
    ctx *c = malloc(sizeof *c);
    if (!c) abort();
    init_ctx(c, cfg, "config schema", NULL, err, sizeof err);
    memset(cfg, 0, sizeof *cfg);
    origin def = {.from = FROM_DEFAULT};
    for (size_t k = 0; k < N_KEYS; k++) {
        /* A default that fails its own key's checks is a bug in SCHEMA; the defaults test finds it. */
        if (apply_text(c, k, SCHEMA[k].def, &def)) {
            fprintf(stderr, "remixer: invalid default in the config schema: %s\n", err);
            abort();
        }
    }
    free(c);
}

char *rmx_config_to_yaml(const rmx_config *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    render(cfg, f, false);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Defaults, then the YAML text, then the overrides in order, then the checks across keys. */
static int load_text(rmx_config *cfg, const char *name, const unsigned char *text, size_t len,
                     const char *const *overrides, int n_overrides, char *err, size_t errlen) {
    rmx_config_defaults(cfg);
    if (strlen(name) >= sizeof cfg->path) return rmx_seterr(err, errlen, "%.80s...: file name too long", name);
    snprintf(cfg->path, sizeof cfg->path, "%s", name);
    ctx *c = malloc(sizeof *c);
    if (!c) return rmx_seterr(err, errlen, "%s: out of memory", name);
    init_ctx(c, cfg, cfg->path, overrides, err, errlen);
    int rc = parse_yaml(c, text, len);
    for (int i = 0; rc == 0 && i < n_overrides; i++) rc = apply_override(c, i);
    if (rc == 0) rc = check_relations(c);
    free(c);
    if (rc == 0 && !(cfg->text = rmx_config_to_yaml(cfg))) rc = rmx_seterr(err, errlen, "%s: out of memory", name);
    return rc;
}

static int read_file(const char *path, unsigned char **out, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return rmx_seterr(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            unsigned char *grown = realloc(buf, cap = cap ? 2 * cap : 16384);
            if (!grown) {
                free(buf);
                fclose(f);
                return rmx_seterr(err, errlen, "%s: out of memory", path);
            }
            buf = grown;
        }
        size_t got_n = fread(buf + n, 1, cap - n, f);
        n += got_n;
        if (got_n == 0) break;
    }
    int e = errno;
    if (ferror(f)) { /* a directory opens but does not read (EISDIR) */
        free(buf);
        fclose(f);
        return rmx_seterr(err, errlen, "%s: cannot read: %s", path, strerror(e));
    }
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
}

int rmx_config_load(rmx_config *cfg, const char *path, const char *const *overrides, int n_overrides, char *err,
                    size_t errlen) {
    unsigned char *text = NULL;
    size_t len = 0;
    if (read_file(path, &text, &len, err, errlen)) {
        rmx_config_defaults(cfg);
        return -1;
    }
    int rc = load_text(cfg, path, text, len, overrides, n_overrides, err, errlen);
    free(text);
    return rc;
}

int rmx_config_load_string(rmx_config *cfg, const char *name, const char *yaml, const char *const *overrides,
                           int n_overrides, char *err, size_t errlen) {
    if (!yaml) yaml = "";
    return load_text(cfg, name, (const unsigned char *)yaml, strlen(yaml), overrides, n_overrides, err, errlen);
}

void rmx_config_print(const rmx_config *cfg, void *stdio_file) {
    FILE *f = stdio_file;
    fprintf(f, "# Resolved configuration");
    if (cfg->path[0]) {
        fprintf(f, " of ");
        /* The name goes into a comment line: anything that could end the line is replaced. */
        for (const char *p = cfg->path; *p; p++) fputc(iscntrl((unsigned char)*p) ? '?' : *p, f);
    }
    fprintf(f, "\n");
    render(cfg, f, true);
}

void rmx_config_print_schema(void *stdio_file) {
    FILE *f = stdio_file;
    char what[160];
    for (size_t k = 0; k < N_KEYS; k++) {
        const key_spec *s = &SCHEMA[k];
        describe(s, what, sizeof what);
        fprintf(f, "%s (default ", s->key);
        if (s->type == K_STR)
            put_quoted(f, s->def);
        else
            fprintf(f, "%s", s->def);
        fprintf(f, ")\n    %s [%s]\n", s->doc, what);
    }
}

void rmx_config_free(rmx_config *cfg) {
    if (!cfg) return;
    free(cfg->text);
    cfg->text = NULL;
}
