/* NCCL between MPI ranks, one GPU each (train/comm_nccl.h), run with as many ranks as the node has
 * GPUs (ctest: one rank, the one-GPU case; `mpirun -np N` by hand on an N-GPU node):
 *   - rmx_nccl_sum_floats sums device buffers exactly (integer-valued floats), ordered after the
 *     compute work that wrote them and before the compute work that reads the result;
 *   - rmx_nccl_max_int agrees on a value raised by one rank (the stop / preemption verdict);
 *   - the bucketed reducer over the NCCL transport, on a parameter registry in device memory:
 *     each tensor's gradient is written by a compute-stream kernel right before its notification,
 *     the buckets' all-reduces overlap the rest, and after wait_all a compute-stream kernel sees
 *     every float summed exactly once.
 * Skips (77) unless every rank has a GPU of its own. */
#include <mpi.h>

#include "cuda_test.h"
#include "model/params.h"
#include "train/comm.h"
#include "train/comm_nccl.h"
#include "train/reducer.h"

static int failures = 0;

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            failures++;                                                                     \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", comm.rank, __FILE__,       \
                    __LINE__, #cond);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

static rmx_comm comm;

static float value(int rank, size_t e, int salt) {
    return (float)((rank + 1) * (int)((e * 13 + (size_t)salt) % 101 + 1));
}

static float summed(size_t e, int salt, int world) {
    return (float)(0.5 * world * (world + 1) * (double)((e * 13 + (size_t)salt) % 101 + 1));
}

static void test_sum(rmx_backend *be, rmx_nccl *nc) {
    size_t n = 3000017;
    float *h = malloc(n * sizeof *h);
    if (!h) abort();
    for (size_t e = 0; e < n; e++) h[e] = value(comm.rank, e, 1);
    float *d = be->alloc(be, n * sizeof(float));
    /* written on the compute stream, read back on it: the collective must sit between */
    be->fill(be, d, 0.0f, n);
    float *src = be->alloc(be, n * sizeof(float));
    be->to_backend(be, src, h, n * sizeof(float));
    be->axpy(be, n, 1.0f, src, d);
    rmx_nccl_sum_floats(nc, d, n);
    be->scale(be, n, 0.5f, d);
    be->to_host(be, h, d, n * sizeof(float));
    size_t bad = 0;
    for (size_t e = 0; e < n; e++) bad += h[e] != 0.5f * summed(e, 1, comm.world);
    CHECK(bad == 0, "sum_floats: %zu of %zu floats wrong", bad, n);
    be->free(be, d);
    be->free(be, src);
    free(h);
}

static void test_max_int(rmx_nccl *nc) {
    CHECK(rmx_nccl_max_int(nc, 0) == 0, "max(0 everywhere) is not 0");
    CHECK(rmx_nccl_max_int(nc, comm.rank == comm.world - 1 ? 15 : 0) == 15,
          "max(15 raised on the last rank) is not 15");
    CHECK(rmx_nccl_max_int(nc, comm.rank + 1) == comm.world, "max(rank + 1) is not the world size");
}

static void test_reducer(rmx_backend *be, rmx_nccl *nc) {
    rmx_params p;
    rmx_params_init(&p, be, 1, 0);
    char name[64];
    for (int l = 0; l < 24; l++) {
        int64_t w[4] = {8 + l, 4 + (l * 3) % 29, 3, 3}, b[1] = {8 + l};
        snprintf(name, sizeof name, "layer.%d.weight", l);
        rmx_params_add(&p, name, 4, w, RMX_INIT_UNIFORM, 0.1f);
        snprintf(name, sizeof name, "layer.%d.bias", l);
        rmx_params_add(&p, name, 1, b, RMX_INIT_CONST, 0.0f);
    }
    rmx_params_finalize(&p);
    rmx_reduce_transport t = rmx_nccl_reduce_transport(nc);
    rmx_reducer *r = rmx_reducer_create(&p, 4000, &t);
    int nb;
    rmx_reducer_buckets(r, &nb);
    float *h = malloc(p.span * sizeof *h);
    if (!h) abort();
    for (int step = 0; step < 3; step++) {
        for (size_t e = 0; e < p.span; e++) h[e] = value(comm.rank, e, step);
        float *staged = be->alloc(be, p.span * sizeof(float));
        be->to_backend(be, staged, h, p.span * sizeof(float));
        be->fill(be, p.grad, 0.0f, p.span);
        rmx_reducer_begin(r);
        /* the backward pass: each tensor's gradient written (compute stream), then reported */
        int started_early = 0;
        for (int i = p.count - 1; i >= 0; i--) {
            const rmx_param_info *ti = rmx_params_get(&p, i);
            size_t end = ti->offset + ti->numel;
            be->axpy(be, ti->numel, 1.0f, staged + ti->offset, p.grad + ti->offset);
            /* the padding after it belongs to its bucket too */
            size_t next = p.span;
            for (int j = 0; j < p.count; j++) {
                size_t o = rmx_params_get(&p, j)->offset;
                if (o >= end && o < next) next = o;
            }
            if (next > end) be->axpy(be, next - end, 1.0f, staged + end, p.grad + end);
            rmx_reducer_mark_ready(r, i);
            if (i > 0 && rmx_reducer_started(r) > 0) started_early = 1;
        }
        CHECK(started_early, "step %d: no bucket started before the last notification", step);
        rmx_reducer_wait_all(r);
        be->scale(be, p.span, 2.0f, p.grad); /* compute work after wait_all sees the sums */
        be->to_host(be, h, p.grad, p.span * sizeof(float));
        size_t bad = 0;
        for (size_t e = 0; e < p.span; e++) bad += h[e] != 2.0f * summed(e, step, comm.world);
        CHECK(bad == 0, "reducer step %d (%d buckets): %zu of %zu floats wrong", step, nb, bad, p.span);
        be->free(be, staged);
    }
    free(h);
    rmx_reducer_free(r);
    rmx_params_free(&p);
}

int main(int argc, char **argv) {
    rmx_comm_init(&comm, &argc, &argv);
    char err[512] = "";
    rmx_backend *be = rmx_backend_cuda_create(comm.local_rank, err, sizeof err);
    int have = be != NULL, all = 0;
    MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_LAND, comm.world_comm);
    if (!all) {
        if (!have) printf("cuda_nccl: SKIPPED: rank %d (local rank %d): %s\n", comm.rank, comm.local_rank, err);
        fflush(stdout);
        if (be) be->destroy(be);
        rmx_comm_finalize(&comm);
        return RMX_TEST_SKIP;
    }
    rmx_nccl *nc = rmx_nccl_create(&comm, be, err, sizeof err);
    if (!nc) {
        fprintf(stderr, "rank %d: rmx_nccl_create: %s\n", comm.rank, err);
        be->destroy(be);
        rmx_comm_finalize(&comm);
        return 1;
    }
    if (comm.rank == 0) printf("cuda_nccl: %d rank(s)\n", comm.world);
    test_sum(be, nc);
    test_max_int(nc);
    test_reducer(be, nc);
    rmx_nccl_free(nc);
    be->destroy(be);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, comm.world_comm);
    if (comm.rank == 0) printf(total ? "cuda_nccl: %d check(s) FAILED\n" : "cuda_nccl: all checks passed\n", total);
    rmx_comm_finalize(&comm);
    return total ? 1 : 0;
}
