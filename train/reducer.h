/* Bucketed gradient all-reduce, overlapped with the backward pass.
 *
 * The flat gradient buffer of a parameter registry (model/params.h) is cut into buckets: runs of
 * whole tensors, contiguous in memory, of at most `bucket_floats` floats (a single larger tensor
 * gets a bucket of its own), never mixing the decayed and the undecayed part of the buffer. Their
 * launch order is the order in which the backward pass is expected to finish them: a bucket is
 * done when the earliest-registered of its tensors is (the backward visits layers in reverse
 * registration order), so buckets go by their lowest tensor number, highest first.
 *
 * During the LAST micro-batch of a step, the model reports each tensor whose gradient has become
 * final (rmx_reducer_mark_ready, or rmx_reducer_hook as a callback); a bucket's all-reduce starts
 * as soon as all its tensors are final AND every bucket before it has started. That second
 * condition fixes the order of the collectives on every rank, whatever the timing of the
 * notifications, which collectives require (NCCL and MPI match them by order) and which makes the
 * sums the same from run to run. rmx_reducer_wait_all starts whatever is left, in order, and waits.
 *
 * Transport: a tiny vtable, so the bucket logic is the same on CPU (MPI_Iallreduce on host
 * buffers, here) and GPU (ncclAllReduce on a communication stream, train/comm_nccl.h), and is
 * tested on CPU with several ranks. A reducer without a transport (a world of one) does nothing. */
#ifndef RMX_REDUCER_H
#define RMX_REDUCER_H

#include <mpi.h>
#include <stddef.h>

#include "model/params.h"

/* The default bucket size: 4 Mi floats (16 MiB), large enough for full link bandwidth. */
#define RMX_REDUCER_DEFAULT_BUCKET_FLOATS ((size_t)4 << 20)

typedef struct {
    void *ctx;
    /* Starts summing buf[0, n) over all ranks, in place; returns at once. Called in the same
     * order, with the same sizes, on every rank. */
    void (*start)(void *ctx, float *buf, size_t n);
    /* Makes every started sum complete before the caller's next use of the buffer (MPI: waits;
     * NCCL: the compute stream waits for the communication stream, the host does not). */
    void (*finish)(void *ctx);
    /* Optional (may be NULL): lets started sums advance while the backward pass runs (MPI
     * progresses non-blocking collectives only inside MPI calls). */
    void (*progress)(void *ctx);
    void (*destroy)(void *ctx);
} rmx_reduce_transport;

/* MPI_Iallreduce (MPI_SUM of MPI_FLOAT, in place) on host buffers, over a duplicate of `comm`
 * (so it is collective over comm: every rank calls it, e.g. at set-up). */
rmx_reduce_transport rmx_reduce_transport_mpi(MPI_Comm comm);

typedef struct {
    size_t begin, end;   /* floats [begin, end) of the flat buffer, padding included */
    int first, last;     /* tensors [first, last] in memory order (indices into the plan) */
    int min_id;          /* lowest tensor number in it: its expected completion */
    int tensors;         /* how many */
} rmx_bucket;

typedef struct rmx_reducer rmx_reducer;

/* Plans the buckets of p's gradient buffer (p must be a trained, finalized registry).
 * bucket_floats 0 takes the default. transport NULL: a world of one, every call a no-op (the plan
 * is still made, for inspection). The reducer owns the transport and destroys it. */
rmx_reducer *rmx_reducer_create(const rmx_params *p, size_t bucket_floats,
                                const rmx_reduce_transport *transport);
void rmx_reducer_free(rmx_reducer *r);

/* Before the last micro-batch of a step: forgets the previous step's notifications and starts
 * listening. mark_ready calls outside begin .. wait_all are ignored (earlier micro-batches). */
void rmx_reducer_begin(rmx_reducer *r);

/* Tensor `tensor` (its number in the registry) has its final gradient; a second call for the
 * same tensor in one step is ignored. */
void rmx_reducer_mark_ready(rmx_reducer *r, int tensor);

/* rmx_reducer_mark_ready with the signature of a model callback: arg is the reducer. */
void rmx_reducer_hook(void *reducer, int tensor);

/* Starts every bucket not started yet (in order), then finishes them all: afterwards the whole
 * gradient buffer holds the sum over ranks, each float reduced exactly once. Without a begin
 * since the last wait_all, it reduces the whole buffer (bucket by bucket). */
void rmx_reducer_wait_all(rmx_reducer *r);

/* ---- inspection (tests, --dry-run) ---- */
const rmx_bucket *rmx_reducer_buckets(const rmx_reducer *r, int *count);
/* Buckets started since the last begin. */
int rmx_reducer_started(const rmx_reducer *r);

#endif
