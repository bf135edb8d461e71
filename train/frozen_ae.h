/* A frozen autoencoder taken from a checkpoint: the later stages (and the programs that generate)
 * encode spectrograms to latents and decode latents back with it.
 *
 * From a stage-1 checkpoint (stage vae) the weights are /model and the architecture comes from the
 * root `config` attribute (its model.* keys) with the input size of /audio. A later stage copies all
 * of it into its own checkpoints (rmx_frozen_ae_layout):
 *   /autoencoder/<name>   the weights (and vq buffers), named as in the stage-1 /model
 *   /autoencoder attrs    config (the stage-1 config, its architecture), source (the stage-1 file),
 *                         step (its training step)
 *   /audio attrs          the audio parameters, normalisation and genre names of its data
 * so that one file is all a program needs. */
#ifndef RMX_FROZEN_AE_H
#define RMX_FROZEN_AE_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "train/checkpoint.h"
#include "train/config.h"

typedef struct {
    rmx_ae *ae;                   /* frozen: no gradients, no Adam state */
    rmx_ae_hparams hp;
    rmx_mel_params audio;         /* the data it was trained on */
    char *config;                 /* the stage-1 config text (owned) */
    char source[RMX_PATH_MAX];    /* the stage-1 checkpoint it came from */
    int64_t step;                 /* the stage-1 training step */
} rmx_frozen_ae;

/* Loads the autoencoder of checkpoint `path`: a stage-1 checkpoint, or one of a later stage (its
 * /autoencoder). micro_batch sizes the activation arena (rmx_ae_reserve grows it). Returns
 * RMX_EXIT_OK, or RMX_EXIT_CHECKPOINT with a message naming the file and what is wrong (missing,
 * not a checkpoint, damaged, no autoencoder in it). */
int rmx_frozen_ae_load(rmx_backend *be, const char *path, int micro_batch, rmx_frozen_ae *out, char *err,
                       size_t errlen);
/* The same, refusing anything but a stage-1 checkpoint (what a training stage starts from). */
int rmx_frozen_ae_load_stage1(rmx_backend *be, const char *path, int micro_batch, rmx_frozen_ae *out,
                              char *err, size_t errlen);

/* Adds the autoencoder (its weights under /autoencoder, the attributes above, /audio) to a later
 * stage's checkpoint layout. */
void rmx_frozen_ae_layout(rmx_frozen_ae *f, rmx_ckpt_layout *layout);

/* Host copies of f's weights (params, then state; malloc'd, the caller frees them), for
 * rmx_frozen_ae_compare after a resume. */
void rmx_frozen_ae_snapshot(rmx_frozen_ae *f, float *values[2]);

/* 0 when the weights now in f equal the host copies `values` (per registry: params, then state),
 * else -1 naming the first tensor that differs. */
int rmx_frozen_ae_compare(rmx_frozen_ae *f, float *const values[2], const char *what, char *err,
                          size_t errlen);

/* 0 when data `data` (shards `data_path`) was prepared like the autoencoder's own data; else -1
 * and a message naming the config file, the key the autoencoder came from (`ckpt_key` = `ckpt`)
 * and the first difference. */
int rmx_frozen_ae_check_data(const rmx_frozen_ae *f, const rmx_mel_params *data, const char *data_path,
                             const char *config_path, const char *ckpt_key, const char *ckpt, char *err,
                             size_t errlen);

/* out [n, C, h, w] (backend) = scale * the latents a diffusion model works on (rmx_ae_latents) of
 * the mels x [n, 1, M, T] (backend). */
void rmx_frozen_ae_scaled_latents(rmx_frozen_ae *f, int n, const float *x, float scale, float *out);

void rmx_frozen_ae_free(rmx_frozen_ae *f);

#endif
