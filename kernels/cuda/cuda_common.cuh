/* Internals shared by the CUDA backend's .cu files: the backend's state, error checks, launch
 * geometry and the fixed-order reduction helpers.
 *
 * Determinism. Every sum in this backend has an order fixed by the problem size alone: the number
 * of blocks of a reduction is a function of its length (never of the device's multiprocessor
 * count), each thread sums a fixed set of elements in index order, a block combines its threads
 * through a fixed shuffle tree, and the per-block partials are combined by one block in order.
 * No floating-point atomics anywhere, so two runs give the same bits on the same device type. */
#ifndef RMX_CUDA_COMMON_CUH
#define RMX_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_backend.h"

typedef struct {
    int device;
    cudaStream_t stream; /* every op of the backend runs on it */
    cublasHandle_t blas;
    int tf32;            /* RMX_CUDA_TF32=1: cuBLAS may round GEMM inputs to TF32 */
    void *scratch;       /* small device scratch (reduction partials, indices), grown on demand */
    size_t scratch_bytes;
} rmx_cuda_impl;

static inline rmx_cuda_impl *cuda_impl(const rmx_backend *be) { return (rmx_cuda_impl *)be->impl; }

/* The interface has no error returns: a failing CUDA call is a broken device or a bug, so it
 * stops the process with the call and the reason, like an allocation failure on the CPU side. */
#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t err_ = (call);                                                              \
        if (err_ != cudaSuccess) {                                                              \
            fprintf(stderr, "remixer: error: CUDA: %s failed at %s:%d: %s\n", #call, __FILE__,  \
                    __LINE__, cudaGetErrorString(err_));                                        \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

#define CUBLAS_CHECK(call)                                                                      \
    do {                                                                                        \
        cublasStatus_t st_ = (call);                                                            \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                     \
            fprintf(stderr, "remixer: error: cuBLAS: %s failed at %s:%d: %s\n", #call,          \
                    __FILE__, __LINE__, cublasGetStatusString(st_));                            \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

/* After a kernel launch: catches bad launch configurations at the launch, not at the next sync. */
#define CUDA_LAUNCHED() CUDA_CHECK(cudaGetLastError())

/* A device buffer of at least `bytes`, valid for the ops queued next on the backend's stream.
 * Growth waits for the stream first, since queued kernels may still read the old buffer. */
void *rmx_cuda_scratch(rmx_backend *be, size_t bytes);

/* Host -> device copy on the backend's stream that returns at once and leaves the host buffer
 * free for reuse (it is staged through pinned memory). */
void rmx_cuda_upload(rmx_backend *be, void *dst, const void *src, size_t bytes);

/* ---- launch geometry ---- */

#define EW_THREADS 256

static inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* Blocks for a grid-stride element-wise loop over n elements. */
static inline unsigned int ew_blocks(size_t n) {
    size_t b = ceil_div(n ? n : 1, EW_THREADS);
    return (unsigned int)(b < (1u << 20) ? b : (1u << 20));
}

/* ---- fixed-order reductions ---- */

#define RED_THREADS 256      /* threads of every reduction block: a multiple of 32, <= 1024 */
#define RED_PER_BLOCK 8192   /* elements a partial block aims at */
#define RED_MAX_BLOCKS 1024  /* partials combined by the final single block */

/* Sum of v over the block, in a fixed shuffle tree; the result is valid in thread 0. Every thread
 * of the block must call it; it may be called repeatedly (it ends with a barrier). */
__device__ inline double block_sum(double v) {
    __shared__ double warp_part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    int nwarps = (int)(blockDim.x >> 5);
    v = (int)threadIdx.x < nwarps ? warp_part[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

/* block_sum with the result in every thread. */
__device__ inline double block_sum_all(double v) {
    __shared__ double total;
    v = block_sum(v);
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    v = total;
    __syncthreads();
    return v;
}

/* Partial blocks of a reduction over n elements: a function of n alone. */
static inline int red_blocks(size_t n) {
    size_t b = ceil_div(n ? n : 1, RED_PER_BLOCK);
    return (int)(b < RED_MAX_BLOCKS ? b : RED_MAX_BLOCKS);
}

/* Stage 1: block b sums term(i) for i in its contiguous slice [b chunk, (b+1) chunk), thread t
 * taking i = begin + t, begin + t + blockDim, ... (coalesced), and writes partial[b]. `term` may
 * also write per-element outputs (a gradient), so a loss and its gradient take one pass. */
template <class Term>
__global__ void reduce_partial_kernel(size_t n, size_t chunk, Term term, double *partial) {
    size_t begin = (size_t)blockIdx.x * chunk, end = begin + chunk < n ? begin + chunk : n;
    double acc = 0.0;
    for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += term(i);
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/* Stage 2: one block sums the partials in order; thread 0 hands the total to `finish`. */
template <class Finish>
__global__ void reduce_final_kernel(int nparts, const double *partial, Finish finish) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += partial[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) finish(acc);
}

/* sum over i < n of term(i), handed to finish(total) on the device, in a fixed order. */
template <class Term, class Finish>
static void fixed_order_reduce(rmx_backend *be, size_t n, Term term, Finish finish) {
    rmx_cuda_impl *impl = cuda_impl(be);
    int nblk = red_blocks(n);
    size_t chunk = ceil_div(n ? n : 1, (size_t)nblk);
    double *partial = (double *)rmx_cuda_scratch(be, sizeof(double) * (size_t)nblk);
    reduce_partial_kernel<<<nblk, RED_THREADS, 0, impl->stream>>>(n, chunk, term, partial);
    CUDA_LAUNCHED();
    reduce_final_kernel<<<1, RED_THREADS, 0, impl->stream>>>(nblk, partial, finish);
    CUDA_LAUNCHED();
}

/* The loss ops' finish: *loss += scale * total, in double as the CPU backends do. */
struct AddScaledToLoss {
    float *loss;
    float scale;
    __device__ void operator()(double total) const {
        *loss = (float)((double)*loss + (double)scale * total);
    }
};

/* Each .cu file installs its ops into the function table. */
void rmx_cuda_install_conv(rmx_backend *be);
void rmx_cuda_install_norm(rmx_backend *be);
void rmx_cuda_install_vq(rmx_backend *be);
void rmx_cuda_install_transformer(rmx_backend *be);
void rmx_cuda_install_remix(rmx_backend *be);

#endif
