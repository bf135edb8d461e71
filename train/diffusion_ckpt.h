/* A stage-2 (diffusion) or stage-3 (remix) checkpoint opened as a model: the frozen autoencoder,
 * the transformer with its EMA weights, latent_scale and the noise schedule, all from that one
 * file. remixer-generate, remixer-remix, the service and the remix stage (which starts from a
 * stage-2 checkpoint) load through here.
 *
 * Where the parts live:
 *   /autoencoder, /audio    the frozen autoencoder and its data (train/frozen_ae.h)
 *   /ema                    the transformer's EMA weights (and pos_embed)
 *   /diffusion              latent_scale; attributes timesteps, beta_start, beta_end, prediction;
 *                           in a stage-3 checkpoint also config (the stage-2 run's config text,
 *                           whose dit.* and diffusion.* keys give the architecture and schedule),
 *                           source (the stage-2 file) and step (its training step)
 *   root `config`           the run's own config (stage 2: it holds dit.* and diffusion.*). */
#ifndef RMX_DIFFUSION_CKPT_H
#define RMX_DIFFUSION_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/diffusion.h"
#include "model/dit.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/frozen_ae.h"

typedef struct {
    char path[RMX_PATH_MAX];
    char stage[16];          /* diffusion | remix */
    int64_t step;            /* the checkpoint's training step */
    rmx_config cfg;          /* the checkpoint's own config */
    rmx_config dit_cfg;      /* the stage-2 config: dit.*, diffusion.* (a copy of cfg for stage 2) */
    char *dit_cfg_text;      /* its text (owned), for the checkpoints of a stage built on this one */
    char dit_source[RMX_PATH_MAX]; /* the stage-2 file (this one, for stage 2) */
    int64_t dit_step;        /* the stage-2 training step */
    rmx_frozen_ae fae;
    rmx_dit *dit;            /* the EMA weights */
    float latent_scale;
    rmx_noise_schedule sched;
} rmx_diffusion_ckpt;

/* What a caller wants from the file; each mode accepts one stage and refuses the others by name. */
typedef enum {
    RMX_DIT_PLAIN = 0,  /* a stage-2 checkpoint's transformer as trained (remixer-generate) */
    RMX_DIT_EXTEND = 1, /* a stage-2 checkpoint's transformer with a fresh style part (init_seed;
                           style_embedder copied from x_embedder): where stage 3 starts */
    RMX_DIT_REMIX = 2,  /* a stage-3 checkpoint's transformer with its style part (remixer-remix) */
} rmx_dit_mode;

/* Opens `path` (every chunk's checksum verified) as `mode` says. micro_batch sizes the arenas.
 * Returns RMX_EXIT_OK, or RMX_EXIT_CHECKPOINT with a message naming the file and what is wrong. */
int rmx_diffusion_ckpt_load(rmx_backend *be, const char *path, int micro_batch, rmx_dit_mode mode,
                            uint64_t init_seed, rmx_diffusion_ckpt *out, char *err, size_t errlen);
void rmx_diffusion_ckpt_free(rmx_diffusion_ckpt *d);

/* Adds /diffusion with latent_scale (`scale_reg`, one float) and the schedule's attributes from
 * the stage-2 config c (a stage-2 checkpoint's part). */
void rmx_diffusion_layout_schedule(rmx_ckpt_layout *layout, const rmx_config *c, rmx_params *scale_reg);

/* Adds /diffusion (latent_scale `scale_reg`, which must hold one float, the schedule's attributes
 * and the stage-2 config, source and step) to a stage-3 checkpoint's layout. */
void rmx_diffusion_ckpt_layout(rmx_diffusion_ckpt *d, rmx_params *scale_reg, rmx_ckpt_layout *layout);

#endif
