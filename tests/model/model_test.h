/* Shared helpers of the model tests: checks that count failures, the tiny configurations, and
 * host <-> backend copies. */
#ifndef RMX_MODEL_TEST_H
#define RMX_MODEL_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "util/rng.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            g_failures++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

static inline int test_finish(const char *name) {
    if (g_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

/* Input 1x8x8, C = 4, mult [1, 2], one ResBlock per level, latent 2: every code path of the
 * architecture (skip convs, downsample, upsample) at a size finite differences can afford. */
static inline rmx_ae_hparams tiny_hparams(rmx_ae_bottleneck bottleneck, int micro_batch) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    hp.channels = 4;
    hp.channel_mult[0] = 1;
    hp.channel_mult[1] = 2;
    hp.n_levels = 2;
    hp.res_blocks = 1;
    hp.latent_channels = 2;
    hp.bottleneck = bottleneck;
    hp.kl_weight = 0.5f; /* large, so the KL gradient weighs in the checks */
    hp.codebook_size = 8;
    hp.mels = 8;
    hp.frames = 8;
    hp.micro_batch = micro_batch;
    return hp;
}

static inline rmx_ae *create_or_die(rmx_backend *be, const rmx_ae_hparams *hp, uint64_t seed) {
    char err[256];
    rmx_ae *ae = rmx_ae_create(be, hp, seed, err, sizeof err);
    if (!ae) {
        fprintf(stderr, "rmx_ae_create: %s\n", err);
        exit(1);
    }
    return ae;
}

static inline float *host_copy(rmx_backend *be, const void *src, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    be->to_host(be, h, src, n * sizeof *h);
    return h;
}

static inline int32_t *host_copy_ints(rmx_backend *be, const int32_t *src, size_t n) {
    int32_t *h = malloc((n ? n : 1) * sizeof *h);
    be->to_host(be, h, src, n * sizeof *h);
    return h;
}

static inline float host_get(rmx_backend *be, const float *src) {
    float v;
    be->to_host(be, &v, src, sizeof v);
    return v;
}

static inline void backend_set(rmx_backend *be, float *dst, float value) {
    be->to_backend(be, dst, &value, sizeof value);
}

/* A deterministic test signal in [-1, 1] (not the model's streams). */
static inline void fill_uniform(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f * rmx_u01(rmx_u32(seed, RMX_RNG_DEMO, 0, 0, (uint32_t)i)) - 1.0f;
}

static inline float *backend_input(rmx_backend *be, const float *host, size_t n) {
    float *d = be->alloc(be, n * sizeof *d);
    be->to_backend(be, d, host, n * sizeof *d);
    return d;
}

static inline double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

#endif
