/* The prefetching loader: this rank's micro-batches, in schedule order, read ahead by a background
 * thread while the caller computes.
 *
 * Micro-batch k after the start is (step = start_step + k / A, micro = k % A), A accumulation
 * steps per step (data/schedule.h). With depth > 0 a thread fills a ring of depth + 1 buffers, so up
 * to `depth` micro-batches are ready while the caller holds the one it is working on. Depth 0
 * reads synchronously inside rmx_loader_next(): the same data, no thread (for tests and debugging).
 * An error in the thread (I/O, a non-finite value) is handed to the caller by the rmx_loader_next()
 * call that would have returned the failed micro-batch, with the reader's message. */
#ifndef RMX_LOADER_H
#define RMX_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "data/schedule.h"

typedef struct {
    int64_t step;       /* global step */
    int micro;          /* micro-batch within the step, 0 <= micro < accum_steps */
    int accum_steps;    /* A */
    int m;              /* samples in this micro-batch */
    float *mel;         /* [m * M * T], sample-major, then mel bin, then frame */
    int32_t *genre;     /* [m] genre ids */
    int64_t *index;     /* [m] dataset indices read (a damaged one's replacement under skip) */
    int64_t *position;  /* [m] stream positions: the global sample index keying per-sample noise */
    int replaced;       /* samples whose scheduled segment was damaged and replaced (skip policy) */
} rmx_batch;

typedef struct {
    rmx_schedule_config schedule;
    int64_t start_step; /* first step to deliver (a resumed run starts where it stopped) */
    int depth;          /* micro-batches read ahead; 0 = synchronous */
    /* Allocator for the mel buffers (e.g. pinned host memory for GPU copies); NULL = malloc/free. */
    void *(*alloc_buffer)(size_t bytes);
    void (*free_buffer)(void *p);
} rmx_loader_config;

typedef struct rmx_loader rmx_loader;

/* The dataset must stay open until rmx_loader_close(). Fails on a schedule error (the
 * divisibility message of rmx_schedule_check) or when the thread cannot start. */
rmx_loader *rmx_loader_create(rmx_dataset *ds, const rmx_loader_config *cfg, char *err, size_t errlen);
/* The next micro-batch, valid until the next call (or close); NULL with the message on error.
 * *waited_s (may be NULL) gets the seconds this call blocked waiting for data. */
const rmx_batch *rmx_loader_next(rmx_loader *l, double *waited_s, char *err, size_t errlen);
int rmx_loader_accum_steps(const rmx_loader *l);
/* Samples replaced because their segment was damaged (rmx_dataset_set_on_corrupt skip), summed over
 * the micro-batches handed to the caller so far (not those only read ahead): the same for a given
 * dataset and run length whatever the prefetch depth, and summed over ranks, whatever the world size. */
int64_t rmx_loader_replaced(const rmx_loader *l);
/* Stops the thread (after the read in progress, if any) and frees everything. */
void rmx_loader_close(rmx_loader *l);

#endif
