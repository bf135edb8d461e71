/* Sampling from a stage-2 checkpoint (infer/generator.h). */
#include "infer/generator.h"
#include "infer/infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/exitcodes.h"
#include "util/log.h"
#include "util/rng.h"

int rmx_generator_open(rmx_generator *g, const char *path, const char *device, int threads, char *err,
                       size_t errlen) {
    memset(g, 0, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s", path);
    if (!(g->be = rmx_infer_backend(device, threads, err, errlen))) return RMX_EXIT_USAGE;
    int code = rmx_diffusion_ckpt_load(g->be, path, 2, RMX_DIT_PLAIN, 0, &g->m, err, errlen);
    if (code != RMX_EXIT_OK) {
        g->be->destroy(g->be);
        g->be = NULL;
        return code;
    }
    rmx_ae_latent_shape(g->m.fae.ae, &g->lat_c, &g->lat_h, &g->lat_w);
    g->frames_per_column = g->m.fae.hp.frames / g->lat_w;
    return RMX_EXIT_OK;
}

void rmx_generator_close(rmx_generator *g) {
    if (g->m.dit) rmx_diffusion_ckpt_free(&g->m);
    if (g->be) g->be->destroy(g->be);
    memset(g, 0, sizeof *g);
}

const rmx_mel_params *rmx_generator_audio(const rmx_generator *g) { return &g->m.fae.audio; }

int rmx_generator_genre(const rmx_generator *g, const char *name) {
    for (int i = 0; i < g->m.fae.audio.n_genres; i++)
        if (strcmp(g->m.fae.audio.genre_names[i], name) == 0) return i;
    return -1;
}

int64_t rmx_generator_frames(const rmx_generator *g, double seconds) {
    const rmx_mel_params *a = &g->m.fae.audio;
    int64_t samples = (int64_t)llround(seconds * a->sample_rate);
    return samples / a->hop_length + 1;
}

/* Latent columns two consecutive segments share. */
static int overlap_columns(const rmx_generator *g, const rmx_generate_opts *o) {
    int frames = o->overlap_frames > 0 ? o->overlap_frames : g->m.fae.hp.frames / 4;
    int cols = (frames + g->frames_per_column - 1) / g->frames_per_column;
    if (cols < 1) cols = 1;
    if (cols > g->lat_w / 2) cols = g->lat_w / 2;
    return cols;
}

int rmx_generator_segments(const rmx_generator *g, const rmx_generate_opts *o, int64_t frames) {
    const int64_t seg = g->m.fae.hp.frames, advance = seg - (int64_t)overlap_columns(g, o) * g->frames_per_column;
    if (frames <= seg) return 1;
    return (int)(1 + (frames - seg + advance - 1) / advance);
}

/* ---- one segment ---- */

typedef struct {
    rmx_generator *g;
    const rmx_generate_opts *o;
    int n, ov;              /* clips, known columns (0 for the first segment) */
    float *known;           /* host [n][C][H][ov]: the known latent (scaled) */
    float *noise;           /* host [n][C][H][W]: the segment's starting noise */
    float *x;               /* host scratch [n][C][H][W] */
    int64_t done, total;
} segment_job;

/* The known columns of x (backend), noised to timestep t's level (t = -1: clean). */
static void impose_known(segment_job *j, float *x, int t) {
    rmx_generator *g = j->g;
    const int W = g->lat_w, rows = g->lat_c * g->lat_h;
    const size_t per = (size_t)rows * W;
    double ab = t >= 0 ? g->m.sched.alphas_cumprod[t] : 1.0;
    float a = (float)sqrt(ab), b = (float)sqrt(1.0 - ab);
    g->be->to_host(g->be, j->x, x, sizeof(float) * per * (size_t)j->n);
    for (int i = 0; i < j->n; i++)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < j->ov; c++) {
                size_t at = (size_t)i * per + (size_t)r * W + (size_t)c;
                j->x[at] = a * j->known[((size_t)i * rows + r) * j->ov + c] + b * j->noise[at];
            }
    g->be->to_backend(g->be, x, j->x, sizeof(float) * per * (size_t)j->n);
}

/* After each DDIM step: the known region at the new level, then the progress. */
static void on_step(void *arg, int k, int steps, float *x, int t_next) {
    (void)k, (void)steps;
    segment_job *j = arg;
    if (j->ov > 0) impose_known(j, x, t_next);
    j->done++;
    if (j->o->progress) j->o->progress(j->o->arg, j->done, j->total);
}

/* Samples segment `s` of n clips into z (backend [n][C][H][W], scaled latents). */
static void sample_segment(segment_job *j, int s, const int32_t *y, const int64_t *keys, float *z) {
    rmx_generator *g = j->g;
    rmx_backend *be = g->be;
    const size_t per = (size_t)g->lat_c * g->lat_h * g->lat_w;
    int64_t *seg_keys = malloc(sizeof(int64_t) * (size_t)j->n);
    for (int i = 0; i < j->n; i++) seg_keys[i] = keys[i] * 4096 + s; /* each segment its own stream */
    be->randn(be, z, j->n, per, j->o->seed, RMX_RNG_SAMPLING, 0, seg_keys);
    be->to_host(be, j->noise, z, sizeof(float) * per * (size_t)j->n);
    /* the sampler starts from this noise (t_start = T - 1), with the known region imposed */
    rmx_ddim_config dc = {.steps = j->o->steps, .eta = j->o->eta, .cfg = j->o->cfg,
                          .null_class = g->m.fae.audio.n_genres, .seed = j->o->seed, .keys = seg_keys,
                          .t_start = g->m.sched.timesteps - 1, .on_step = on_step, .arg = j};
    if (j->ov > 0) impose_known(j, z, g->m.sched.timesteps - 1);
    rmx_eps_model model = rmx_dit_eps_model(g->m.dit, 2 * j->n);
    rmx_ddim_sample(&model, &g->m.sched, &dc, j->n, y, z);
    free(seg_keys);
}

/* Keeps the last ov columns of z (host copy) as the next segment's known region. */
static void keep_tail(segment_job *j, const float *zh) {
    const int W = j->g->lat_w, rows = j->g->lat_c * j->g->lat_h;
    for (int i = 0; i < j->n; i++)
        for (int r = 0; r < rows; r++)
            memcpy(j->known + ((size_t)i * rows + r) * j->ov, zh + ((size_t)i * rows + r) * W + (W - j->ov),
                   sizeof(float) * (size_t)j->ov);
}

/* Adds segment mel [n][M][T] at frame `at` of the clips [n][M][frames], crossfading the first
 * `fade` frames with what is there. */
static void place_segment(const float *seg, int n, int M, int T, int64_t frames, int64_t at, int fade, float *mel) {
    for (int i = 0; i < n; i++)
        for (int m = 0; m < M; m++) {
            const float *src = seg + ((size_t)i * M + m) * T;
            float *dst = mel + ((size_t)i * M + m) * (size_t)frames;
            for (int f = 0; f < T && at + f < frames; f++) {
                float w = f < fade ? (float)(f + 1) / (float)(fade + 1) : 1.0f;
                dst[at + f] = f < fade ? (1.0f - w) * dst[at + f] + w * src[f] : src[f];
            }
        }
}

int rmx_generate_mel(rmx_generator *g, const rmx_generate_opts *o, int n, const int32_t *y,
                     const int64_t *keys, int64_t frames, float *mel, char *err, size_t errlen) {
    rmx_backend *be = g->be;
    const int M = g->m.fae.audio.n_mels, T = g->m.fae.hp.frames;
    const size_t per = (size_t)g->lat_c * g->lat_h * g->lat_w;
    const int S = rmx_generator_segments(g, o, frames), ovc = overlap_columns(g, o);
    const int64_t advance = T - (int64_t)ovc * g->frames_per_column;
    int K = o->steps < g->m.sched.timesteps ? o->steps : g->m.sched.timesteps;
    segment_job j = {.g = g, .o = o, .n = n, .ov = 0, .total = (int64_t)S * K};
    j.known = malloc(sizeof(float) * (size_t)n * g->lat_c * g->lat_h * (size_t)ovc);
    j.noise = malloc(sizeof(float) * per * (size_t)n);
    j.x = malloc(sizeof(float) * per * (size_t)n);
    float *seg = malloc(sizeof(float) * (size_t)n * M * T);
    float *z = be->alloc(be, sizeof(float) * per * (size_t)n);
    if (!j.known || !j.noise || !j.x || !seg) {
        free(j.known), free(j.noise), free(j.x), free(seg), be->free(be, z);
        return rmx_seterr(err, errlen, "out of memory for %d clips", n);
    }
    rmx_ae_reserve(g->m.fae.ae, n);
    for (int s = 0; s < S; s++) {
        sample_segment(&j, s, y, keys, z);
        be->to_host(be, j.x, z, sizeof(float) * per * (size_t)n);
        j.ov = ovc;
        keep_tail(&j, j.x);
        be->scale(be, per * (size_t)n, 1.0f / g->m.latent_scale, z);
        const float *xhat = rmx_ae_decode_latents(g->m.fae.ae, n, z);
        be->to_host(be, seg, xhat, sizeof(float) * (size_t)n * M * T);
        place_segment(seg, n, M, T, frames, (int64_t)s * advance, s ? ovc * g->frames_per_column : 0, mel);
    }
    free(j.known), free(j.noise), free(j.x), free(seg);
    be->free(be, z);
    return 0;
}
