/* The small model layout the checkpoint harness and the seed maker share: a trained registry
 * (with AdamW moments under /optim), a state registry and an EMA copy under /model and /ema, the
 * audio parameters under /audio, stage "vae" -- the shape of a stage-1 checkpoint, a few hundred
 * floats. Registries live in host memory behind a minimal backend (memory functions only). */
#ifndef RMX_FUZZ_LAYOUT_H
#define RMX_FUZZ_LAYOUT_H
#include "data/shard.h"
#include "model/params.h"
#include "train/checkpoint.h"

typedef struct {
    rmx_params trained, state;
    float *ema;
    rmx_mel_params audio;
    rmx_ckpt_layout layout;
} rmx_fuzz_model;

/* Builds the layout; values are a deterministic ramp. */
void rmx_fuzz_model_init(rmx_fuzz_model *m);
void rmx_fuzz_model_free(rmx_fuzz_model *m);
/* A valid small rmx_mel_params (n_mels x frames, n_genres genres). */
rmx_mel_params rmx_fuzz_mel_params(int n_mels, int frames, int n_genres);
#endif
