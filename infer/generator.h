/* A stage-2 (diffusion) checkpoint opened for sampling: everything remixer-generate and the
 * inference service need, from that one file (train/frozen_ae.h, model/dit.h, model/diffusion.h).
 *
 * The transformer runs with the EMA weights (/ema), the architecture and the diffusion schedule
 * come from the checkpoint's config attribute (dit.*, diffusion.*), the latent grid from the
 * autoencoder, the genres from /audio, latent_scale from /diffusion.
 *
 * Lengths beyond one segment are made by continuation: segment s + 1 starts where segment s
 * ends minus an overlap; the overlap's latent columns are known (the end of segment s) and are
 * imposed at every sampling step, noised to that step's level with the segment's own starting
 * noise (the replacement method), then the decoded spectrograms are crossfaded linearly over the
 * overlap. Everything is a pure function of (checkpoint, options, seed, clip keys). */
#ifndef RMX_GENERATOR_H
#define RMX_GENERATOR_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "kernels/backend.h"
#include "model/diffusion.h"
#include "model/dit.h"
#include "train/config.h"
#include "train/diffusion_ckpt.h"
#include "train/frozen_ae.h"

typedef struct {
    char path[RMX_PATH_MAX];
    rmx_backend *be;
    rmx_diffusion_ckpt m;    /* autoencoder, transformer (EMA weights), schedule, latent_scale */
    int lat_c, lat_h, lat_w; /* one segment's latent */
    int frames_per_column;   /* mel frames per latent column */
} rmx_generator;

/* device: "auto" (CUDA when built with it and a GPU is visible), "cpu" or "cuda"; threads 0 = the
 * OpenMP default. Returns RMX_EXIT_OK, RMX_EXIT_USAGE (cuda asked for and absent) or
 * RMX_EXIT_CHECKPOINT (missing, damaged, not a stage-2 checkpoint) with the message in err. */
int rmx_generator_open(rmx_generator *g, const char *path, const char *device, int threads, char *err,
                       size_t errlen);
void rmx_generator_close(rmx_generator *g);

const rmx_mel_params *rmx_generator_audio(const rmx_generator *g);
/* The genre's label, or -1. */
int rmx_generator_genre(const rmx_generator *g, const char *name);

typedef struct {
    int steps;            /* DDIM steps */
    float cfg;            /* guidance w (1: conditional only, 0: unconditional) */
    float eta;
    uint64_t seed;
    int overlap_frames;   /* mel frames shared by consecutive segments (0: a quarter segment) */
    /* progress: called after each sampling step with (done, total) over all segments */
    void (*progress)(void *arg, int64_t done, int64_t total);
    void *arg;
} rmx_generate_opts;

/* Mel frames in `seconds` of audio (centred STFT: samples / hop + 1). */
int64_t rmx_generator_frames(const rmx_generator *g, double seconds);
/* Segments a clip of `frames` frames needs. */
int rmx_generator_segments(const rmx_generator *g, const rmx_generate_opts *o, int64_t frames);

/* n clips of `frames` mel frames: labels y[n] (a genre, or the genre count for unconditional),
 * keys[n] each clip's key in the noise streams. mel (host) receives [n][n_mels][frames] of
 * normalised log-mel, the dataset's representation. */
int rmx_generate_mel(rmx_generator *g, const rmx_generate_opts *o, int n, const int32_t *y,
                     const int64_t *keys, int64_t frames, float *mel, char *err, size_t errlen);

#endif
