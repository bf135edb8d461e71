#include "train/comm_nccl.h"

#include <limits.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_backend.h"

struct rmx_nccl {
    ncclComm_t comm;
    cudaStream_t stream;  /* communication */
    cudaStream_t compute; /* the backend's */
    cudaEvent_t ready;    /* compute -> communication */
    cudaEvent_t done;     /* communication -> compute */
    int *flag_dev;        /* rmx_nccl_max_int */
    int *flag_host;       /* pinned */
    int rank, world, device;
};

/* Failures after start-up are a broken device or link: stop with the call and the reason. */
static void nccl_check(ncclResult_t r, const char *what, ncclComm_t comm) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    const char *last = comm ? ncclGetLastError(comm) : NULL;
    fprintf(stderr, "remixer: error: NCCL: %s failed: %s%s%s\n", what, ncclGetErrorString(r),
            last && *last ? ": " : "", last ? last : "");
    abort();
}

static void cuda_check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "remixer: error: CUDA: %s failed: %s\n", what, cudaGetErrorString(e));
    abort();
}

/* ------------------------------------------------------------------------------------------ */
/* start-up                                                                                     */

#define GPU_ID_LEN 160

/* "host/PCI bus id" of this rank's GPU, or an empty string when it has none. */
static void gpu_identity(rmx_backend *be, char *id) {
    memset(id, 0, GPU_ID_LEN);
    if (!rmx_backend_is_cuda(be)) return;
    char host[MPI_MAX_PROCESSOR_NAME] = {0}, bus[32] = {0};
    int len = 0;
    MPI_Get_processor_name(host, &len);
    if (cudaDeviceGetPCIBusId(bus, (int)sizeof bus, rmx_cuda_device(be)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(bus, sizeof bus, "device %d", rmx_cuda_device(be));
    }
    snprintf(id, GPU_ID_LEN, "%.100s/%.40s", host, bus);
}

/* The first rank (in rank order) whose `ok` is 0, or -1 when every rank's is 1. */
static int first_failed(MPI_Comm comm, int rank, int ok) {
    int mine = ok ? INT_MAX : rank, first = INT_MAX;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    return first == INT_MAX ? -1 : first;
}

static int setup_streams(rmx_nccl *nc, char *err, size_t errlen) {
    int least = 0, greatest = 0;
    cudaError_t e = cudaDeviceGetStreamPriorityRange(&least, &greatest);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithPriority(&nc->stream, cudaStreamNonBlocking, greatest);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&nc->ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&nc->done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaMalloc((void **)&nc->flag_dev, sizeof(int));
    if (e == cudaSuccess) e = cudaMallocHost((void **)&nc->flag_host, sizeof(int));
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "NCCL set-up: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

static void release(rmx_nccl *nc) {
    if (nc->stream) cudaStreamSynchronize(nc->stream);
    if (nc->comm) ncclCommDestroy(nc->comm);
    if (nc->flag_host) cudaFreeHost(nc->flag_host);
    if (nc->flag_dev) cudaFree(nc->flag_dev);
    if (nc->ready) cudaEventDestroy(nc->ready);
    if (nc->done) cudaEventDestroy(nc->done);
    if (nc->stream) cudaStreamDestroy(nc->stream);
    free(nc);
}

rmx_nccl *rmx_nccl_create(const rmx_comm *c, rmx_backend *be, char *err, size_t errlen) {
    rmx_nccl *nc = calloc(1, sizeof *nc);
    char local[256] = "";
    int ok = nc != NULL;
    if (!ok) snprintf(local, sizeof local, "out of host memory");
    if (ok && !rmx_backend_is_cuda(be)) {
        snprintf(local, sizeof local, "NCCL needs the cuda backend, this rank runs on '%s'",
                 be ? be->name : "no backend");
        ok = 0;
    }
    if (ok) {
        nc->rank = c->rank;
        nc->world = c->world;
        nc->device = rmx_cuda_device(be);
        nc->compute = rmx_cuda_stream(be);
        cudaError_t e = cudaSetDevice(nc->device);
        if (e != cudaSuccess) {
            snprintf(local, sizeof local, "cudaSetDevice(%d): %s", nc->device, cudaGetErrorString(e));
            ok = 0;
        }
    }

    /* one GPU per rank: NCCL refuses two ranks on one device */
    char mine[GPU_ID_LEN];
    gpu_identity(be, mine);
    char *all = malloc((size_t)c->world * GPU_ID_LEN);
    if (!all) abort();
    MPI_Allgather(mine, GPU_ID_LEN, MPI_CHAR, all, GPU_ID_LEN, MPI_CHAR, c->world_comm);
    int clash_a = -1, clash_b = -1;
    for (int a = 0; a < c->world && clash_a < 0; a++)
        for (int b = a + 1; b < c->world && clash_a < 0; b++)
            if (all[(size_t)a * GPU_ID_LEN] && !strcmp(all + (size_t)a * GPU_ID_LEN, all + (size_t)b * GPU_ID_LEN)) {
                clash_a = a;
                clash_b = b;
            }
    if (clash_a >= 0) {
        snprintf(err, errlen,
                 "ranks %d and %d share the GPU %s: NCCL needs one GPU per rank (run at most as "
                 "many ranks per node as it has GPUs)",
                 clash_a, clash_b, all + (size_t)clash_a * GPU_ID_LEN);
        free(all);
        if (nc) release(nc);
        return NULL;
    }
    free(all);

    if (ok && setup_streams(nc, local, sizeof local) != 0) ok = 0;
    int failed = first_failed(c->world_comm, c->rank, ok);
    if (failed >= 0) {
        if (!ok)
            snprintf(err, errlen, "rank %d: %s", c->rank, local);
        else
            snprintf(err, errlen, "rank %d could not set up its GPU for NCCL (see its message)", failed);
        if (nc) release(nc);
        return NULL;
    }

    /* rank 0 makes the id; the broadcast carries whether that worked */
    struct {
        int ok;
        ncclUniqueId id;
    } hello;
    memset(&hello, 0, sizeof hello);
    ncclResult_t r = ncclSuccess;
    if (c->rank == 0) {
        r = ncclGetUniqueId(&hello.id);
        hello.ok = r == ncclSuccess;
    }
    MPI_Bcast(&hello, (int)sizeof hello, MPI_BYTE, 0, c->world_comm);
    if (!hello.ok) {
        snprintf(err, errlen, "ncclGetUniqueId on rank 0 failed%s%s",
                 c->rank == 0 ? ": " : "", c->rank == 0 ? ncclGetErrorString(r) : "");
        release(nc);
        return NULL;
    }
    r = ncclCommInitRank(&nc->comm, c->world, hello.id, c->rank);
    ok = r == ncclSuccess;
    if (!ok) snprintf(local, sizeof local, "ncclCommInitRank: %s", ncclGetErrorString(r));
    failed = first_failed(c->world_comm, c->rank, ok);
    if (failed >= 0) {
        if (!ok)
            snprintf(err, errlen, "rank %d: %s", c->rank, local);
        else
            snprintf(err, errlen, "rank %d could not join the NCCL communicator", failed);
        if (ok) ncclCommAbort(nc->comm); /* joined, but the others did not */
        nc->comm = NULL;
        release(nc);
        return NULL;
    }
    return nc;
}

void rmx_nccl_free(rmx_nccl *nc) {
    if (nc) release(nc);
}

/* ------------------------------------------------------------------------------------------ */
/* collectives                                                                                  */

/* The communication stream waits for the compute work queued so far. */
static void after_compute(rmx_nccl *nc) {
    cuda_check(cudaEventRecord(nc->ready, nc->compute), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(nc->stream, nc->ready, 0), "cudaStreamWaitEvent");
}

/* The compute work queued next waits for the collectives queued so far. */
static void before_compute(rmx_nccl *nc) {
    cuda_check(cudaEventRecord(nc->done, nc->stream), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(nc->compute, nc->done, 0), "cudaStreamWaitEvent");
}

static void allreduce_floats(rmx_nccl *nc, float *buf, size_t n) {
    nccl_check(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, nc->comm, nc->stream),
               "ncclAllReduce", nc->comm);
}

void rmx_nccl_sum_floats(rmx_nccl *nc, float *buf, size_t n) {
    if (n == 0) return;
    after_compute(nc);
    allreduce_floats(nc, buf, n);
    before_compute(nc);
}

int rmx_nccl_max_int(rmx_nccl *nc, int value) {
    *nc->flag_host = value;
    cuda_check(cudaMemcpyAsync(nc->flag_dev, nc->flag_host, sizeof(int), cudaMemcpyHostToDevice,
                               nc->stream),
               "cudaMemcpyAsync");
    nccl_check(ncclAllReduce(nc->flag_dev, nc->flag_dev, 1, ncclInt32, ncclMax, nc->comm, nc->stream),
               "ncclAllReduce", nc->comm);
    cuda_check(cudaMemcpyAsync(nc->flag_host, nc->flag_dev, sizeof(int), cudaMemcpyDeviceToHost,
                               nc->stream),
               "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(nc->stream), "cudaStreamSynchronize");
    return *nc->flag_host;
}

/* ---- the reducer's transport ---- */

static void transport_start(void *ctx, float *buf, size_t n) {
    rmx_nccl *nc = ctx;
    after_compute(nc);
    allreduce_floats(nc, buf, n);
}

static void transport_finish(void *ctx) { before_compute(ctx); }

static void transport_destroy(void *ctx) { (void)ctx; }

rmx_reduce_transport rmx_nccl_reduce_transport(rmx_nccl *nc) {
    rmx_reduce_transport t = {nc, transport_start, transport_finish, NULL, transport_destroy};
    return t;
}
