/* The CUDA backend: construction, memory, and the ops that are one pass over their elements
 * (element-wise, randomness, the KL bottleneck, the losses, AdamW, the gradient norm).
 * conv.cu, norm.cu, vq.cu, transformer.cu and remix.cu hold the rest.
 *
 * Every op is queued on one stream and returns without waiting, except to_host (the caller
 * reads the result) and free. The per-element arithmetic is kernels/elementwise.h and util/rng.h,
 * the functions the CPU backends run, and the build turns off multiply-add contraction
 * (--fmad=false) so a * b + c rounds twice here as it does there: element-wise results match the
 * CPU bit for bit, except where a libm function (expf, logf, sinf, cosf) is involved, whose device
 * versions may differ from glibc's in the last bit or two. */
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/elementwise.h"
#include "util/rng.h"

#define GRID_STRIDE(i, n)                                                                        \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (size_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------------------------------ */
/* memory                                                                                       */

/* Host -> device copies go through pinned staging slots, used in turn: the copy is then truly
 * asynchronous (the caller may reuse its buffer at once, and the stream is not drained), and a
 * slot is refilled only after the copy that last read it has run. Uploads above STAGE_MAX (start-up
 * and checkpoint restores, not the per-step inputs) copy directly and wait. */
#define STAGE_SLOTS 3
#define STAGE_MAX ((size_t)64 << 20)

typedef struct {
    rmx_cuda_impl base; /* first: cuda_impl() sees the shared part */
    struct {
        void *host;
        size_t bytes;
        cudaEvent_t done;
        int used;
    } stage[STAGE_SLOTS];
    int stage_next;
} rmx_cuda_state;

static rmx_cuda_state *cuda_state(const rmx_backend *be) { return (rmx_cuda_state *)be->impl; }

void *rmx_cuda_scratch(rmx_backend *be, size_t bytes) {
    rmx_cuda_impl *impl = cuda_impl(be);
    if (bytes > impl->scratch_bytes) {
        size_t grown = impl->scratch_bytes * 2;
        if (grown < bytes) grown = bytes;
        if (grown < ((size_t)1 << 20)) grown = (size_t)1 << 20;
        CUDA_CHECK(cudaStreamSynchronize(impl->stream));
        if (impl->scratch) CUDA_CHECK(cudaFree(impl->scratch));
        CUDA_CHECK(cudaMalloc(&impl->scratch, grown));
        impl->scratch_bytes = grown;
    }
    return impl->scratch;
}

static void *cuda_alloc(rmx_backend *be, size_t bytes) {
    rmx_cuda_impl *impl = cuda_impl(be);
    size_t rounded = (bytes + 255) / 256 * 256;
    if (rounded == 0) rounded = 256;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        fprintf(stderr,
                "remixer: error: out of GPU memory allocating %zu bytes on device %d "
                "(%zu of %zu bytes free): %s\n",
                bytes, impl->device, free_b, total_b, cudaGetErrorString(e));
        abort();
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, rounded, impl->stream));
    return p;
}

static void cuda_free(rmx_backend *be, void *p) {
    if (!p) return;
    /* queued kernels may still use it */
    CUDA_CHECK(cudaStreamSynchronize(cuda_impl(be)->stream));
    CUDA_CHECK(cudaFree(p));
}

void rmx_cuda_upload(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    rmx_cuda_state *st = cuda_state(be);
    cudaStream_t stream = st->base.stream;
    if (bytes == 0) return;
    if (bytes > STAGE_MAX) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        return;
    }
    int k = st->stage_next;
    st->stage_next = (k + 1) % STAGE_SLOTS;
    if (st->stage[k].used) CUDA_CHECK(cudaEventSynchronize(st->stage[k].done));
    if (st->stage[k].bytes < bytes) {
        size_t want = bytes < ((size_t)64 << 10) ? ((size_t)64 << 10) : bytes;
        if (st->stage[k].host) CUDA_CHECK(cudaFreeHost(st->stage[k].host));
        CUDA_CHECK(cudaMallocHost(&st->stage[k].host, want));
        st->stage[k].bytes = want;
    }
    memcpy(st->stage[k].host, src, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, st->stage[k].host, bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(st->stage[k].done, stream));
    st->stage[k].used = 1;
}

static void cuda_to_backend(rmx_backend *be, void *dst, const void *host_src, size_t bytes) {
    rmx_cuda_upload(be, dst, host_src, bytes);
}

static void cuda_to_host(rmx_backend *be, void *host_dst, const void *src, size_t bytes) {
    cudaStream_t stream = cuda_impl(be)->stream;
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

static void cuda_copy(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0 || dst == src) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_impl(be)->stream));
}

static void cuda_sync(rmx_backend *be) { CUDA_CHECK(cudaStreamSynchronize(cuda_impl(be)->stream)); }

/* ------------------------------------------------------------------------------------------ */
/* element-wise                                                                                 */

__global__ void fill_kernel(float *x, float value, size_t n) {
    GRID_STRIDE(i, n) x[i] = value;
}

__global__ void add_kernel(const float *a, const float *b, float *y, size_t n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void axpy_kernel(float alpha, const float *x, float *y, size_t n) {
    GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void scale_kernel(float alpha, float *x, size_t n) {
    GRID_STRIDE(i, n) x[i] *= alpha;
}

static void cuda_fill(rmx_backend *be, float *x, float value, size_t n) {
    if (!n) return;
    fill_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(x, value, n);
    CUDA_LAUNCHED();
}

static void cuda_add(rmx_backend *be, size_t n, const float *a, const float *b, float *y) {
    if (!n) return;
    add_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(a, b, y, n);
    CUDA_LAUNCHED();
}

static void cuda_axpy(rmx_backend *be, size_t n, float alpha, const float *x, float *y) {
    if (!n) return;
    axpy_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(alpha, x, y, n);
    CUDA_LAUNCHED();
}

static void cuda_scale(rmx_backend *be, size_t n, float alpha, float *x) {
    if (!n) return;
    scale_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(alpha, x, n);
    CUDA_LAUNCHED();
}

/* ------------------------------------------------------------------------------------------ */
/* randomness: the Philox stream of util/rng.h, element for element what the CPU draws           */

__global__ void randn_kernel(float *out, size_t per_sample, size_t total, uint64_t seed,
                             uint32_t purpose, uint64_t step, const int64_t *sample_index) {
    GRID_STRIDE(e, total) {
        size_t i = e / per_sample, j = e % per_sample;
        out[e] = rmx_normal(seed, purpose, step, (uint64_t)sample_index[i], (uint32_t)j);
    }
}

static void cuda_randn(rmx_backend *be, float *out, int n_samples, size_t per_sample, uint64_t seed,
                       uint32_t purpose, uint64_t step, const int64_t *sample_index) {
    size_t total = (size_t)n_samples * per_sample;
    if (!total) return;
    /* sample_index is host memory: the kernel reads a device copy of it */
    int64_t *index = (int64_t *)rmx_cuda_scratch(be, sizeof(int64_t) * (size_t)n_samples);
    rmx_cuda_upload(be, index, sample_index, sizeof(int64_t) * (size_t)n_samples);
    randn_kernel<<<ew_blocks(total), EW_THREADS, 0, cuda_impl(be)->stream>>>(
        out, per_sample, total, seed, purpose, step, index);
    CUDA_LAUNCHED();
}

/* ------------------------------------------------------------------------------------------ */
/* KL bottleneck: moments [n, 2c, hw] = mean channels then log-variance channels                */

__global__ void gaussian_sample_fwd_kernel(size_t chw, size_t total, const float *moments,
                                           const float *eps, float *z) {
    GRID_STRIDE(e, total) {
        size_t b = e / chw, i = e % chw;
        const float *mean = moments + b * 2 * chw;
        z[e] = rmx_gaussian_sample(mean[i], mean[chw + i], eps[e]);
    }
}

__global__ void gaussian_sample_bwd_kernel(size_t chw, size_t total, const float *moments,
                                           const float *eps, const float *dz, float *dmoments) {
    GRID_STRIDE(e, total) {
        size_t b = e / chw, i = e % chw;
        float *dmean = dmoments + b * 2 * chw;
        dmean[i] = dz[e];
        dmean[chw + i] = dz[e] * rmx_gaussian_sample_dlogvar(moments[b * 2 * chw + chw + i], eps[e]);
    }
}

static void cuda_gaussian_sample_fwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                     const float *eps, float *z) {
    size_t chw = (size_t)c * hw, total = (size_t)n * chw;
    if (!total) return;
    gaussian_sample_fwd_kernel<<<ew_blocks(total), EW_THREADS, 0, cuda_impl(be)->stream>>>(
        chw, total, moments, eps, z);
    CUDA_LAUNCHED();
}

static void cuda_gaussian_sample_bwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                     const float *eps, const float *dz, float *dmoments) {
    size_t chw = (size_t)c * hw, total = (size_t)n * chw;
    if (!total) return;
    gaussian_sample_bwd_kernel<<<ew_blocks(total), EW_THREADS, 0, cuda_impl(be)->stream>>>(
        chw, total, moments, eps, dz, dmoments);
    CUDA_LAUNCHED();
}

/* ------------------------------------------------------------------------------------------ */
/* losses: one fixed-order pass computes the value and writes (or adds) the gradient             */

struct MseTerm {
    const float *xhat, *x;
    float scale;
    float *dxhat; /* written, or NULL */
    __device__ double operator()(size_t i) const {
        if (dxhat) dxhat[i] = rmx_mse_grad(xhat[i], x[i], scale);
        return (double)rmx_mse_term(xhat[i], x[i]);
    }
};

static void cuda_mse_loss(rmx_backend *be, size_t count, const float *xhat, const float *x,
                          float scale, float *loss, float *dxhat) {
    MseTerm term = {xhat, x, scale, dxhat};
    AddScaledToLoss finish = {loss, scale};
    fixed_order_reduce(be, count, term, finish);
}

/* Element e of the latent [n, c, hw] (the mean half of the moments). */
struct KlTerm {
    const float *moments;
    size_t chw;
    float scale;
    float *dmoments; /* accumulated, or NULL */
    __device__ double operator()(size_t e) const {
        size_t b = e / chw, i = e % chw;
        const float *mean = moments + b * 2 * chw;
        if (dmoments) {
            float *dmean = dmoments + b * 2 * chw;
            dmean[i] += scale * rmx_kl_dmean(mean[i]);
            dmean[chw + i] += scale * rmx_kl_dlogvar(mean[chw + i]);
        }
        return (double)rmx_kl_term(mean[i], mean[chw + i]);
    }
};

static void cuda_kl_loss(rmx_backend *be, int n, int c, int hw, const float *moments, float scale,
                         float *loss, float *dmoments) {
    KlTerm term = {moments, (size_t)c * hw, scale, dmoments};
    AddScaledToLoss finish = {loss, scale};
    fixed_order_reduce(be, (size_t)n * c * hw, term, finish);
}

/* ------------------------------------------------------------------------------------------ */
/* optimiser and gradient norm                                                                  */

__global__ void adamw_kernel(size_t n, size_t n_decay, float *param, const float *grad, float *m,
                             float *v, rmx_adamw_consts c) {
    GRID_STRIDE(i, n) rmx_adamw_elem(&param[i], grad[i], &m[i], &v[i], &c, i < n_decay ? c.decay : 1.0f);
}

static void cuda_adamw(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                       float *m, float *v, const rmx_adamw_hparams *hp) {
    if (!n) return;
    /* the per-step constants are rounded once, on the host, exactly as the CPU backends do */
    rmx_adamw_consts c = rmx_adamw_consts_make(hp->lr, hp->beta1, hp->beta2, hp->eps,
                                               hp->weight_decay, hp->t);
    adamw_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(n, n_decay, param, grad,
                                                                          m, v, c);
    CUDA_LAUNCHED();
}

struct SquareTerm {
    const float *x;
    __device__ double operator()(size_t i) const { return (double)x[i] * x[i]; }
};

struct WriteTotal {
    float *out;
    __device__ void operator()(double total) const { *out = (float)total; }
};

static void cuda_sumsq(rmx_backend *be, size_t n, const float *x, float *out) {
    SquareTerm term = {x};
    WriteTotal finish = {out};
    fixed_order_reduce(be, n, term, finish);
}

/* ------------------------------------------------------------------------------------------ */
/* construction                                                                                 */

static void cuda_destroy(rmx_backend *be) {
    rmx_cuda_state *st = cuda_state(be);
    cudaStreamSynchronize(st->base.stream);
    for (int k = 0; k < STAGE_SLOTS; k++) {
        if (st->stage[k].host) cudaFreeHost(st->stage[k].host);
        if (st->stage[k].done) cudaEventDestroy(st->stage[k].done);
    }
    if (st->base.scratch) cudaFree(st->base.scratch);
    if (st->base.blas) cublasDestroy(st->base.blas);
    if (st->base.stream) cudaStreamDestroy(st->base.stream);
    free(st);
    free(be);
}

extern "C" int rmx_backend_is_cuda(const rmx_backend *be) { return be && be->destroy == cuda_destroy; }

extern "C" cudaStream_t rmx_cuda_stream(const rmx_backend *be) {
    if (!rmx_backend_is_cuda(be)) {
        fprintf(stderr, "remixer: internal error: rmx_cuda_stream on a %s backend\n",
                be ? be->name : "NULL");
        abort();
    }
    return cuda_impl(be)->stream;
}

extern "C" int rmx_cuda_device(const rmx_backend *be) {
    if (!rmx_backend_is_cuda(be)) {
        fprintf(stderr, "remixer: internal error: rmx_cuda_device on a %s backend\n",
                be ? be->name : "NULL");
        abort();
    }
    return cuda_impl(be)->device;
}

static rmx_backend *create_fail(rmx_backend *be, char *err, size_t errlen, const char *what,
                                const char *why) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, why);
    if (be) cuda_destroy(be);
    return NULL;
}

extern "C" rmx_backend *rmx_backend_cuda_create(int device_ordinal, char *err, size_t errlen) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        if (err && errlen)
            snprintf(err, errlen, "no CUDA device is visible (cudaGetDeviceCount: %s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return NULL;
    }
    if (device_ordinal < 0) {
        if (err && errlen) snprintf(err, errlen, "CUDA device %d: ordinals start at 0", device_ordinal);
        return NULL;
    }
    /* The ordinal is the rank's index on its node. A launcher that shows each rank only its own
     * GPU (CUDA_VISIBLE_DEVICES per rank) leaves fewer devices than ranks: wrap around, and let
     * NCCL's start-up refuse two ranks that end up on one GPU. */
    device_ordinal %= count;
    if ((e = cudaSetDevice(device_ordinal)) != cudaSuccess) {
        cudaGetLastError();
        return create_fail(NULL, err, errlen, "cudaSetDevice", cudaGetErrorString(e));
    }

    rmx_backend *be = (rmx_backend *)calloc(1, sizeof *be);
    rmx_cuda_state *st = (rmx_cuda_state *)calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        return create_fail(NULL, err, errlen, "CUDA backend", "out of host memory");
    }
    be->name = "cuda";
    be->impl = st;
    be->destroy = cuda_destroy;
    st->base.device = device_ordinal;
    /* non-blocking: never serialised behind work some library queues on the legacy stream */
    if ((e = cudaStreamCreateWithFlags(&st->base.stream, cudaStreamNonBlocking)) != cudaSuccess)
        return create_fail(be, err, errlen, "cudaStreamCreate", cudaGetErrorString(e));
    for (int k = 0; k < STAGE_SLOTS; k++)
        if ((e = cudaEventCreateWithFlags(&st->stage[k].done, cudaEventDisableTiming)) != cudaSuccess)
            return create_fail(be, err, errlen, "cudaEventCreate", cudaGetErrorString(e));
    cublasStatus_t bs = cublasCreate(&st->base.blas);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return create_fail(be, err, errlen, "cublasCreate", cublasGetStatusString(bs));
    if ((bs = cublasSetStream(st->base.blas, st->base.stream)) != CUBLAS_STATUS_SUCCESS)
        return create_fail(be, err, errlen, "cublasSetStream", cublasGetStatusString(bs));
    /* TF32 rounds the GEMM inputs to 10 mantissa bits: several times faster on Ampere and
     * Hopper, but no longer comparable to the CPU at float tolerance, so it is opt-in. */
    const char *tf32 = getenv("RMX_CUDA_TF32");
    st->base.tf32 = tf32 && strcmp(tf32, "1") == 0;
    bs = cublasSetMathMode(st->base.blas, st->base.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                        : CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return create_fail(be, err, errlen, "cublasSetMathMode", cublasGetStatusString(bs));

    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->to_backend = cuda_to_backend;
    be->to_host = cuda_to_host;
    be->copy = cuda_copy;
    be->fill = cuda_fill;
    be->sync = cuda_sync;
    be->add = cuda_add;
    be->axpy = cuda_axpy;
    be->scale = cuda_scale;
    be->randn = cuda_randn;
    be->gaussian_sample_fwd = cuda_gaussian_sample_fwd;
    be->gaussian_sample_bwd = cuda_gaussian_sample_bwd;
    be->mse_loss = cuda_mse_loss;
    be->kl_loss = cuda_kl_loss;
    be->adamw = cuda_adamw;
    be->sumsq = cuda_sumsq;
    rmx_cuda_install_conv(be);
    rmx_cuda_install_norm(be);
    rmx_cuda_install_vq(be);
    rmx_cuda_install_transformer(be);
    rmx_cuda_install_remix(be);
    char missing[160];
    if (rmx_backend_check(be, missing, sizeof missing))
        return create_fail(be, err, errlen, "CUDA backend", missing);
    return be;
}
