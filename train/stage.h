/* A stage: what one training objective brings to the trainer (train/trainer.c), which knows stages
 * only through this interface.
 *
 *   vae        the stage-1 autoencoder (train/stage_vae.c)
 *   diffusion  the class-conditional DiT over a frozen autoencoder's latents (train/stage_diffusion.c)
 *   remix      the DiT with style tokens, trained with style-transfer losses (train/stage_remix.c)
 *
 * The trainer owns the run: config, ranks, data, backend, the loop, the optimiser over the stage's
 * trained registry, gradient all-reduce, non-finite handling, logs, checkpoints, preemption. A
 * stage owns its models and buffers, turns a micro-batch into accumulated gradients and named loss
 * terms, keeps state that other rules update (vq codebook, EMA weights), evaluates, and says what
 * its checkpoints hold.
 *
 * One optimiser step, as the trainer drives it:
 *   step_begin; forward_backward per micro-batch; (gradients summed over ranks, checked finite)
 *   before_update; AdamW on `trained`; after_update.
 * Everything a stage does at step s must be a function of its state and of (seed, s, the global
 * sample indices), so that a resumed or re-sharded run continues the same trajectory. */
#ifndef RMX_STAGE_H
#define RMX_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "data/loader.h"
#include "data/shard.h"
#include "model/autoencoder.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/metrics.h"

typedef struct rmx_trainer rmx_trainer;
typedef struct rmx_stage rmx_stage;

#define RMX_STAGE_MAX_TERMS 8

typedef struct {
    const char *name; /* the config's `stage:` value */
    /* Builds the stage from the trainer's config, training data and backend (rmx_trainer_setup),
     * fills s->trained, s->layout, the terms and input_shape. Returns an exit code, with the
     * message in err (printed by rank 0). */
    int (*create)(rmx_trainer *t, rmx_stage **out, char *err, size_t errlen);
    void (*free)(rmx_stage *s);
    /* The trained tensors' gradient-ready announcements (the bucketed all-reduce). */
    void (*set_grad_ready)(rmx_stage *s, void (*fn)(void *arg, int tensor), void *arg);
    /* After the resume, before the first step (collective): resumed_from is the checkpoint the
     * state came from, or NULL for a fresh start. A stage measures here what a fresh run measures
     * once, and checks what a resumed run must agree with. Returns an exit code. */
    int (*start)(rmx_stage *s, rmx_trainer *t, const char *resumed_from);
    void (*step_begin)(rmx_stage *s, rmx_trainer *t);
    /* One micro-batch: forward, losses, backward. Weight gradients accumulate into the trained
     * registry; loss_terms (backend memory, n_terms floats) accumulate scale-weighted terms, where
     * scale = 1 / global batch. */
    void (*forward_backward)(rmx_stage *s, rmx_trainer *t, const rmx_batch *b, float scale,
                             float *loss_terms);
    /* The objective from the step's summed terms (host copies). */
    double (*total_loss)(const rmx_stage *s, const float *terms);
    /* After the summed gradients were found finite, before AdamW (may be NULL): state updated by
     * other rules, through the trainer's collectives; `extra` gets values to log by name. */
    void (*before_update)(rmx_stage *s, rmx_trainer *t, rmx_terms *extra);
    /* After AdamW (may be NULL): e.g. the EMA of the weights. */
    void (*after_update)(rmx_stage *s, rmx_trainer *t);
    /* Evaluation on t->val (collective): metrics line, PNGs. Returns 0 or an exit code. */
    int (*evaluate)(rmx_stage *s, rmx_trainer *t, int64_t label_step);
    /* The stage's lines of the --dry-run plan (rank 0). */
    void (*print_plan)(const rmx_stage *s, const rmx_trainer *t);
} rmx_stage_ops;

struct rmx_stage {
    const rmx_stage_ops *ops;
    rmx_params *trained;     /* the registry AdamW updates (values, grads, m, v) */
    rmx_ckpt_layout layout;  /* what its checkpoints hold */
    int n_terms;             /* loss terms forward_backward accumulates */
    const char *term_names[RMX_STAGE_MAX_TERMS]; /* NULL: not logged (unused by this variant) */
    int32_t input_shape[3];  /* one sample [1, M, T], a checkpoint attribute */
    size_t memory_bytes;     /* parameters, optimiser state and activations, for the plan */
};

/* The stage named `name`, or NULL. */
const rmx_stage_ops *rmx_stage_find(const char *name);

/* The stages, for messages ("vae, diffusion"). */
const char *rmx_stage_names(void);

extern const rmx_stage_ops rmx_stage_vae;
extern const rmx_stage_ops rmx_stage_diffusion;
extern const rmx_stage_ops rmx_stage_remix;

/* The EMA of a registry's trained weights after optimiser step `step` (0-based), warmed up so that
 * short runs have a usable EMA: decay min(max_decay, (1 + n) / (10 + n)), n = step + 1. */
void rmx_stage_ema_update(rmx_params *p, float max_decay, int64_t step);
/* on: `saved` (span floats, backend) keeps the trained weights and the registry holds its EMA (for
 * evaluation); off: the trained weights are back. */
void rmx_stage_use_ema(rmx_params *p, float *saved, int on);

/* The autoencoder's hyper-parameters from a config's model.* keys and the data's input size
 * (stage 1, and later stages reading the architecture from a stage-1 checkpoint's config). */
void rmx_ae_hparams_from_config(const rmx_config *c, const rmx_mel_params *mp, rmx_ae_hparams *hp);

#endif
