/* What the CPU and GPU training-step benchmarks share: the model seed, and the synthetic input
 * batch with its sample indices, uploaded to the backend. */
#ifndef RMX_BENCH_STEP_H
#define RMX_BENCH_STEP_H

#include <stdint.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "util/rng.h"

#define BENCH_SEED 42u

typedef struct {
    float *x;       /* backend [batch, 1, M, T]: standard normals, a stand-in for normalised log-mel */
    float *scalars; /* backend [RMX_AE_N_LOSS + 1]: the loss terms, then the gradient's sum of squares */
    int64_t *index; /* host [batch]: the samples' global indices (keys of the latent noise) */
} bench_batch;

static inline bench_batch bench_batch_make(rmx_backend *be, const rmx_ae_hparams *hp, int batch) {
    size_t per_x = (size_t)hp->mels * hp->frames, nx = (size_t)batch * per_x;
    bench_batch b;
    float *hx = malloc(nx * sizeof *hx);
    b.index = malloc((size_t)batch * sizeof *b.index);
    if (!hx || !b.index) abort();
    for (size_t i = 0; i < nx; i++)
        hx[i] = rmx_normal(BENCH_SEED, RMX_RNG_DEMO, 0, i / per_x, (uint32_t)(i % per_x));
    for (int i = 0; i < batch; i++) b.index[i] = i;
    b.x = be->alloc(be, nx * sizeof *b.x);
    b.scalars = be->alloc(be, (RMX_AE_N_LOSS + 1) * sizeof *b.scalars);
    be->to_backend(be, b.x, hx, nx * sizeof *hx);
    free(hx);
    return b;
}

static inline void bench_batch_free(rmx_backend *be, bench_batch *b) {
    be->free(be, b->x);
    be->free(be, b->scalars);
    free(b->index);
}

#endif
