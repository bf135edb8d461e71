/* Shared helpers of the DiT tests: the tiny configuration, randomised weights (so that the layers
 * DiT starts at zero carry gradients), test inputs, and per-tensor comparisons. The generic
 * checks and host <-> backend copies come from tests/model/model_test.h. */
#ifndef RMX_DIT_TEST_H
#define RMX_DIT_TEST_H

#include "model/dit.h"
#include "model_test.h"

/* C 4, latent 8 x 12 (a 4 x 6 grid of 2 x 2 patches: non-square), D 32, 2 blocks of 4 heads,
 * 3 genres: every code path at a size finite differences can afford. */
static inline rmx_dit_hparams dit_tiny_hparams(int micro_batch) {
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    hp.in_channels = 4;
    hp.height = 8;
    hp.width = 12;
    hp.patch = 2;
    hp.hidden = 32;
    hp.depth = 2;
    hp.heads = 4;
    hp.mlp_ratio = 4.0f;
    hp.num_classes = 3;
    hp.freq_dim = 256;
    hp.micro_batch = micro_batch;
    return hp;
}

static inline rmx_dit *dit_create_or_die(rmx_backend *be, const rmx_dit_hparams *hp, uint64_t seed) {
    char err[256];
    rmx_dit *dit = rmx_dit_create(be, hp, seed, err, sizeof err);
    if (!dit) {
        fprintf(stderr, "rmx_dit_create: %s\n", err);
        exit(1);
    }
    return dit;
}

/* Every trained tensor U(-a, a) from a test stream: matrices a = sqrt(3 / fan_in), the label
 * table a = 1, vectors (biases) a = 0.2 (as bench/diffusion/make_dit_reference.py does). */
static inline void dit_randomise(rmx_dit *dit, uint64_t seed) {
    rmx_params *p = rmx_dit_params(dit);
    rmx_backend *be = p->be;
    float *host = calloc(p->span, sizeof *host);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        double a = 0.2;
        if (strstr(t->name, "embedding_table"))
            a = 1.0;
        else if (t->ndim >= 2)
            a = sqrt(3.0 / (double)(t->numel / (size_t)t->shape[0]));
        for (size_t e = 0; e < t->numel; e++)
            host[t->offset + e] =
                (float)(a * (2.0 * rmx_u01(rmx_u32(seed, RMX_RNG_DEMO, 1, (uint64_t)i, (uint32_t)e)) - 1.0));
    }
    be->to_backend(be, p->data, host, p->span * sizeof *host);
    free(host);
}

/* n samples of test inputs: x U(-1, 1) (host), timesteps spread over [0, 999] with fractions,
 * labels cycling through every class and the null class. */
static inline void dit_test_inputs(const rmx_dit_hparams *hp, int n, uint64_t seed, float *x,
                                   float *t, int32_t *y) {
    fill_uniform(x, (size_t)n * hp->in_channels * hp->height * hp->width, seed);
    static const float ts[8] = {999.0f, 0.0f, 421.0f, 37.5f, 640.25f, 5.0f, 250.0f, 880.0f};
    for (int i = 0; i < n; i++) {
        t[i] = ts[(i + (int)seed) % 8];
        y[i] = (int32_t)((i + (int)seed) % (hp->num_classes + 1));
    }
}

static inline size_t dit_sample_count(const rmx_dit_hparams *hp) {
    return (size_t)hp->in_channels * hp->height * hp->width;
}

/* max |a - b| / max |b| (0 / 0 = 0): the normwise relative difference of two tensors. */
static inline double rel_diff(const float *a, const float *b, size_t n) {
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return scale > 0.0 ? diff / scale : diff;
}

#endif
