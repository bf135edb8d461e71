/* NCCL between the ranks of a GPU run: one communicator over MPI_COMM_WORLD, one GPU per rank.
 *
 * Start-up (rmx_nccl_create, collective over the world): every rank checks that it holds a CUDA
 * backend and that no other rank shares its GPU (NCCL refuses that), the ranks agree that all is
 * well before any NCCL call (a rank that bailed out alone would leave the others waiting in
 * ncclCommInitRank), rank 0 makes the ncclUniqueId, MPI broadcasts it, and each rank joins with
 * ncclCommInitRank on the backend's device (its local rank).
 *
 * Ordering: the collectives run on a communication stream of their own, high priority, so a
 * gradient bucket's all-reduce overlaps the backward kernels still queued on the compute stream.
 * Each collective first waits (on the GPU, through an event) for the compute work queued before
 * it; when its result is needed, the compute stream waits for the communication stream. The host
 * never blocks, except in rmx_nccl_max_int, whose answer it needs.
 *
 * Compiled only with the CUDA backend (REMIXER_HAVE_CUDA). */
#ifndef RMX_COMM_NCCL_H
#define RMX_COMM_NCCL_H

#include <stddef.h>

#include "kernels/backend.h"
#include "train/comm.h"
#include "train/reducer.h"

typedef struct rmx_nccl rmx_nccl;

/* Collective over c->world_comm. NULL and a message (the same on every rank where the cause is
 * global, e.g. two ranks on one GPU) when it cannot be made. */
rmx_nccl *rmx_nccl_create(const rmx_comm *c, rmx_backend *be, char *err, size_t errlen);
void rmx_nccl_free(rmx_nccl *nc);

/* In-place sum over ranks of n floats of backend (device) memory, ordered after the compute
 * work queued so far and before the compute work queued next: the loss scalars, the vq
 * statistics, or the whole gradient buffer without buckets. */
void rmx_nccl_sum_floats(rmx_nccl *nc, float *buf, size_t n);

/* The largest `value` over ranks, through a device int and ncclMax (the step boundary's verdict:
 * a stop signal, a data error); blocks the host until the answer is there. It records no event on
 * the compute stream and makes it wait for nothing, but it is queued on the communication stream
 * behind the collectives issued before it: called while gradient buckets are still pending (between
 * rmx_reducer_begin and the end of the backward pass) it waits, through them, for the compute work
 * they wait for. */
int rmx_nccl_max_int(rmx_nccl *nc, int value);

/* The reducer's transport over this communicator (train/reducer.h): start = ncclAllReduce of a
 * bucket after the compute work queued so far; finish = the compute stream waits for every
 * bucket. The transport does not own the communicator. */
rmx_reduce_transport rmx_nccl_reduce_transport(rmx_nccl *nc);

#endif
