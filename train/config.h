/* The run configuration: one YAML file, a typed schema with documented defaults (config.c holds the
 * one table of keys, types, ranges, defaults and docs), `--set key.path=value` overrides.
 * Errors name the file, line, column and key path. */
#ifndef RMX_CONFIG_H
#define RMX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define RMX_PATH_MAX 1024
#define RMX_MAX_LEVELS 8

typedef struct {
    char stage[16];  /* vae | diffusion | remix */
    char device[8];  /* auto | cpu | cuda */

    struct {
        char train[RMX_PATH_MAX]; /* shard folder or glob */
        char val[RMX_PATH_MAX];   /* shard folder or glob; empty: no validation */
        int prefetch;             /* micro-batches read ahead by the loader thread */
        char on_corrupt[8];       /* stop | skip: what a damaged segment does (data/dataset.h) */
    } data;

    struct {
        int channels;                     /* C */
        int channel_mult[RMX_MAX_LEVELS]; /* e.g. [1, 2, 4] */
        int n_levels;                     /* entries used in channel_mult */
        int res_blocks;
        int latent_channels;
        char bottleneck[8];  /* kl | vq */
        float kl_weight;     /* beta of L_rec + beta * L_KL */
        int codebook_size;   /* vq */
        float commitment;    /* vq commitment weight (0.25) */
        float ema_decay;     /* vq codebook EMA decay (0.99) */
    } model;

    /* stage diffusion (and remix): the frozen autoencoder, the transformer, the diffusion process */
    struct {
        char checkpoint[RMX_PATH_MAX]; /* a stage-1 checkpoint: architecture and weights */
    } autoencoder;

    struct {
        int hidden;      /* D */
        int depth;       /* blocks */
        int heads;
        int patch;       /* p: tokens are p x p patches of the latent */
        float mlp_ratio; /* MLP width = mlp_ratio * D */
    } dit;

    struct {
        int timesteps;          /* T of the training schedule (1000) */
        float beta_start, beta_end; /* linear beta schedule */
        float label_drop;       /* probability a label becomes the null class (guidance) */
        float ema_decay;        /* EMA of the weights, with warm-up */
        int latent_samples;     /* training segments whose latents measure latent_scale */
        int sample_steps;       /* DDIM steps of the evaluation's generated spectrograms */
        float cfg_scale;        /* classifier-free guidance of the evaluation's generations */
        int eval_timesteps;     /* timesteps of the validation loss grid */
        char checkpoint[RMX_PATH_MAX]; /* stage remix: the stage-2 checkpoint it starts from */
    } diffusion;

    /* stage remix: the loss weights and layers, the training pairs, guidance, evaluation */
    struct {
        float content_weight, style_weight, tv_weight, diffusion_weight; /* alpha, beta, gamma, lambda */
        char content_layers[256];   /* encoder steps, comma-separated */
        char style_layers[256];
        float strength_min, strength_max; /* the original is noised to t = strength T */
        char pairing[16];           /* other-genre | any */
        float style_drop;           /* probability the style tokens are dropped (guidance) */
        float ema_decay;
        int sample_steps;           /* DDIM steps of the evaluation's remixes */
        float style_scale;          /* style guidance of the evaluation's remixes */
        float eval_strength;
        int eval_pairs;             /* rows of the evaluation PNG */
    } remix;

    struct {
        int64_t steps;
        int global_batch;   /* B */
        int micro_batch;    /* m; each rank runs B / (world * m) accumulation steps */
        float lr;
        float min_lr;       /* floor of the cosine decay */
        int64_t warmup;     /* linear warm-up steps */
        float weight_decay;
        float beta1, beta2, eps;
        float grad_clip;    /* global-norm clip; 0 disables */
        uint64_t seed;
        int threads;        /* OpenMP threads per rank; 0: leave the OpenMP default */
        int max_nonfinite;  /* stop after this many non-finite steps in a row */
    } train;

    struct {
        int64_t every;      /* evaluate every N steps; 0 disables */
        int batches;        /* validation micro-batches per evaluation */
    } eval;

    struct {
        int64_t every;      /* one human line every N steps */
    } log;

    struct {
        char dir[RMX_PATH_MAX];
    } run;

    struct {
        char dir[RMX_PATH_MAX]; /* empty: run.dir */
        int64_t every;          /* 0 disables periodic checkpoints */
        int keep;               /* newest K kept */
        char resume[RMX_PATH_MAX]; /* auto | never | <path> */
    } checkpoint;

    /* Where it came from, for messages and for the checkpoint's config attribute. */
    char path[RMX_PATH_MAX];
    char *text; /* the resolved config as YAML (owned; rmx_config_free releases it) */
} rmx_config;

/* Fills `cfg` with the defaults (cfg->text stays NULL; defaults are documented in config.c's
 * schema table and by rmx_config_print_schema). */
void rmx_config_defaults(rmx_config *cfg);

/* Loads `path`, applies the `n_overrides` "key.path=value" strings in order, validates, and
 * renders cfg->text. `cfg` need not be initialised; after a successful load release it with
 * rmx_config_free. Returns 0, or -1 with a message in err such as
 *   "configs/x.yaml:12:5: train.lr: expected a number > 0, got '-1'"
 *   "--set train.lr=abc: train.lr: expected a number, got 'abc'". */
int rmx_config_load(rmx_config *cfg, const char *path, const char *const *overrides, int n_overrides,
                    char *err, size_t errlen);

/* Loads from a string (tests); `name` stands in for the file name in messages. */
int rmx_config_load_string(rmx_config *cfg, const char *name, const char *yaml,
                           const char *const *overrides, int n_overrides, char *err, size_t errlen);

/* Writes every key with its value, type and documentation (`--print-config`). The output is
 * itself a config file that loads back to `cfg`. */
void rmx_config_print(const rmx_config *cfg, void *stdio_file);

/* Writes every key with its default, documentation and accepted values (`--help-config`). */
void rmx_config_print_schema(void *stdio_file);

/* Renders `cfg` as YAML, every key nested as mappings, in the form cfg->text holds: it loads back
 * to the same config. Returns a malloc'd string (the caller frees it), or NULL without memory. */
char *rmx_config_to_yaml(const rmx_config *cfg);

void rmx_config_free(rmx_config *cfg);

#endif
