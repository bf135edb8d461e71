#include "data/schedule.h"

#include <stdlib.h>

#include "util/log.h"
#include "util/rng.h"

struct rmx_schedule {
    rmx_schedule_config cfg;
    int64_t n;           /* dataset size N */
    int accum;           /* A */
    int64_t cached_epoch; /* epoch whose permutation `perm` holds, -1 for none */
    int64_t *perm;       /* N dataset indices */
};

int rmx_schedule_check(const rmx_schedule_config *cfg, int *accum_steps, char *err, size_t errlen) {
    if (cfg->global_batch < 1)
        return rmx_seterr(err, errlen, "train.global_batch is %lld, expected >= 1",
                          (long long)cfg->global_batch);
    if (cfg->micro_batch < 1)
        return rmx_seterr(err, errlen, "train.micro_batch is %d, expected >= 1", cfg->micro_batch);
    if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world)
        return rmx_seterr(err, errlen, "rank %d is outside a world of %d ranks", cfg->rank, cfg->world);
    int64_t per_step = (int64_t)cfg->world * cfg->micro_batch;
    if (cfg->global_batch % per_step != 0)
        return rmx_seterr(err, errlen,
                          "train.global_batch %lld is not divisible by world size %d x train.micro_batch %d",
                          (long long)cfg->global_batch, cfg->world, cfg->micro_batch);
    int64_t accum = cfg->global_batch / per_step;
    if (accum > 1 << 30)
        return rmx_seterr(err, errlen, "train.global_batch %lld needs %lld accumulation steps, too many",
                          (long long)cfg->global_batch, (long long)accum);
    if (accum_steps) *accum_steps = (int)accum;
    return 0;
}

/* A uniform integer in [0, bound) from the two words of one Philox draw. Reducing 64 random bits
 * modulo a bound below 2^63 is biased by less than bound / 2^64: far below anything observable. */
static uint64_t uniform_below(uint64_t seed, int64_t epoch, int64_t i, uint64_t bound) {
    uint64_t hi = rmx_u32(seed, RMX_RNG_PERMUTATION, (uint64_t)epoch, (uint64_t)i, 0);
    uint64_t lo = rmx_u32(seed, RMX_RNG_PERMUTATION, (uint64_t)epoch, (uint64_t)i, 1);
    return ((hi << 32) | lo) % bound;
}

void rmx_epoch_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    /* Fisher-Yates from the top: position i swaps with a uniform j in [0, i], keyed by (epoch, i),
     * so the permutation depends on nothing but (seed, epoch, n). */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)uniform_below(seed, epoch, i, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

rmx_schedule *rmx_schedule_create(const rmx_schedule_config *cfg, int64_t n_samples, char *err,
                                  size_t errlen) {
    int accum = 0;
    if (rmx_schedule_check(cfg, &accum, err, errlen)) return NULL;
    if (n_samples < 1) {
        rmx_seterr(err, errlen, "the dataset has no samples to schedule");
        return NULL;
    }
    rmx_schedule *s = calloc(1, sizeof *s);
    int64_t *perm = malloc((size_t)n_samples * sizeof *perm);
    if (!s || !perm) {
        free(s);
        free(perm);
        rmx_seterr(err, errlen, "out of memory for the permutation of %lld samples", (long long)n_samples);
        return NULL;
    }
    s->cfg = *cfg;
    s->n = n_samples;
    s->accum = accum;
    s->cached_epoch = -1;
    s->perm = perm;
    return s;
}

void rmx_schedule_free(rmx_schedule *s) {
    if (!s) return;
    free(s->perm);
    free(s);
}

int rmx_schedule_accum_steps(const rmx_schedule *s) { return s->accum; }
const rmx_schedule_config *rmx_schedule_config_of(const rmx_schedule *s) { return &s->cfg; }
int64_t rmx_schedule_samples(const rmx_schedule *s) { return s->n; }

int64_t rmx_schedule_index_at(rmx_schedule *s, int64_t stream_position) {
    int64_t epoch = stream_position / s->n;
    if (epoch != s->cached_epoch) {
        rmx_epoch_permutation(s->cfg.seed, epoch, s->n, s->perm);
        s->cached_epoch = epoch;
    }
    return s->perm[stream_position % s->n];
}

int64_t rmx_schedule_first_position(const rmx_schedule *s, int64_t step, int micro) {
    const rmx_schedule_config *c = &s->cfg;
    int64_t per_rank = c->global_batch / c->world;
    return step * c->global_batch + c->rank * per_rank + (int64_t)micro * c->micro_batch;
}

int rmx_schedule_micro_batch(rmx_schedule *s, int64_t step, int micro, int64_t *dataset_index,
                             int64_t *stream_position) {
    if (step < 0 || micro < 0 || micro >= s->accum) return -1;
    int64_t first = rmx_schedule_first_position(s, step, micro);
    for (int k = 0; k < s->cfg.micro_batch; k++) {
        if (stream_position) stream_position[k] = first + k;
        if (dataset_index) dataset_index[k] = rmx_schedule_index_at(s, first + k);
    }
    return 0;
}
