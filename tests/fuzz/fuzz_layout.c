#include "fuzz_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

static void *host_alloc(rmx_backend *be, size_t bytes) {
    (void)be;
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) abort();
    return p;
}
static void host_free(rmx_backend *be, void *p) { (void)be; free(p); }
static void host_copy(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    memcpy(dst, src, bytes);
}
static void host_fill(rmx_backend *be, float *x, float value, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] = value;
}
static void host_sync(rmx_backend *be) { (void)be; }

static rmx_backend g_host = {
    .name = "fuzz-host",
    .alloc = host_alloc,
    .free = host_free,
    .to_backend = host_copy,
    .to_host = host_copy,
    .copy = host_copy,
    .fill = host_fill,
    .sync = host_sync,
};

rmx_mel_params rmx_fuzz_mel_params(int n_mels, int frames, int n_genres) {
    rmx_mel_params p;
    memset(&p, 0, sizeof p);
    p.sample_rate = 22050;
    p.n_fft = 2048;
    p.win_length = 2048;
    p.hop_length = 256;
    p.n_mels = n_mels;
    p.fmin = 0.0f;
    p.fmax = 11025.0f;
    p.log_floor = 1e-5f;
    p.norm_mean = -5.0f;
    p.norm_std = 2.5f;
    p.segment_frames = frames;
    p.n_genres = n_genres;
    static const char *const names[] = {"blues", "jazz", "rock", "pop"};
    for (int i = 0; i < n_genres; i++) snprintf(p.genre_names[i], RMX_GENRE_NAME_MAX, "%s", names[i % 4]);
    return p;
}

void rmx_fuzz_model_init(rmx_fuzz_model *m) {
    memset(m, 0, sizeof *m);
    rmx_params_init(&m->trained, &g_host, 1, 1);
    int64_t w[4] = {4, 1, 3, 3}, b[1] = {4}, c[2] = {8, 4};
    rmx_params_add(&m->trained, "enc.conv_in.weight", 4, w, RMX_INIT_CONST, 0.0f);
    rmx_params_add(&m->trained, "enc.conv_in.bias", 1, b, RMX_INIT_CONST, 0.0f);
    rmx_params_finalize(&m->trained);
    rmx_params_init(&m->state, &g_host, 0, 2);
    rmx_params_add(&m->state, "vq.codebook", 2, c, RMX_INIT_CONST, 0.0f);
    rmx_params_finalize(&m->state);
    for (size_t i = 0; i < m->trained.span; i++) {
        m->trained.data[i] = 0.01f * (float)i;
        m->trained.m[i] = 0.001f * (float)i;
        m->trained.v[i] = 0.0001f * (float)i;
    }
    for (size_t i = 0; i < m->state.span; i++) m->state.data[i] = -0.5f + 0.02f * (float)i;
    m->ema = calloc(m->trained.span, sizeof *m->ema);
    for (size_t i = 0; i < m->trained.span; i++) m->ema[i] = 0.009f * (float)i;
    rmx_ckpt_layout_add(&m->layout, "model", &m->trained, 1);
    rmx_ckpt_layout_add(&m->layout, "model", &m->state, 0);
    rmx_ckpt_layout_add_values(&m->layout, "ema", &m->trained, m->ema);
    m->audio = rmx_fuzz_mel_params(8, 16, 3);
    rmx_ckpt_layout_audio(&m->layout, "audio", &m->audio);
}

void rmx_fuzz_model_free(rmx_fuzz_model *m) {
    rmx_params_free(&m->trained);
    rmx_params_free(&m->state);
    free(m->ema);
}
