/* Which samples each rank trains on at each step: a pure function of the step.
 *
 * The sample stream is the concatenation of per-epoch permutations of [0, N): stream position p is
 * dataset index perm_e(p mod N) with e = p / N, and perm_e is a Fisher-Yates shuffle driven by
 * Philox keyed by (seed, RMX_RNG_PERMUTATION, step = e). Global step s takes stream positions
 * [s*B, (s+1)*B); rank r of W takes its contiguous slice [s*B + r*B/W, s*B + (r+1)*B/W), cut into
 * A = B / (W*m) micro-batches of m. So resuming at step s, or on another world size, continues the
 * same trajectory, and the stream position ("global sample index") keys per-sample randomness. */
#ifndef RMX_SCHEDULE_H
#define RMX_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t global_batch; /* B: train.global_batch */
    int micro_batch;      /* m: train.micro_batch */
    int world;            /* W: number of ranks */
    int rank;             /* r: this rank, 0 <= r < W */
    uint64_t seed;        /* train.seed */
} rmx_schedule_config;

/* Checks B, m, W, r and that W*m divides B; the error names the config keys, e.g.
 * "train.global_batch 8 is not divisible by world size 3 x train.micro_batch 2".
 * On success *accum_steps (may be NULL) gets A = B / (W*m). */
int rmx_schedule_check(const rmx_schedule_config *cfg, int *accum_steps, char *err, size_t errlen);

typedef struct rmx_schedule rmx_schedule;

/* A schedule over a dataset of n_samples > 0 segments. Not thread-safe (it caches one epoch's
 * permutation); give each thread its own. */
rmx_schedule *rmx_schedule_create(const rmx_schedule_config *cfg, int64_t n_samples, char *err,
                                  size_t errlen);
void rmx_schedule_free(rmx_schedule *s);

int rmx_schedule_accum_steps(const rmx_schedule *s);
const rmx_schedule_config *rmx_schedule_config_of(const rmx_schedule *s);
int64_t rmx_schedule_samples(const rmx_schedule *s);

/* The stream position of element 0 of micro-batch `micro` (0 <= micro < A) of `step` on this rank. */
int64_t rmx_schedule_first_position(const rmx_schedule *s, int64_t step, int micro);
/* Fills the m elements of micro-batch `micro` of `step` on this rank: dataset indices and stream
 * positions (either may be NULL). Returns -1 when step < 0 or micro is out of
 * range. */
int rmx_schedule_micro_batch(rmx_schedule *s, int64_t step, int micro, int64_t *dataset_index,
                             int64_t *stream_position);
/* The dataset index at a stream position (>= 0). */
int64_t rmx_schedule_index_at(rmx_schedule *s, int64_t stream_position);

/* The permutation of epoch `epoch` written into perm[0..n): the function behind the stream, for
 * tests and tools. */
void rmx_epoch_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

#endif
