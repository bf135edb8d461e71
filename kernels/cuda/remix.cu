/* The remix stage's (stage 3) losses on the GPU.
 *
 *   gram_fwd  one cuBLAS strided-batched SGEMM over the samples: G = scale F F^T. cuBLAS runs with
 *             its default atomics mode (not allowed), so a GEMM gives the same bits on every run
 *             on the same device type; TF32 only under RMX_CUDA_TF32=1, as every GEMM here
 *   gram_bwd  S = dg + dg^T (elementwise.h rmx_gram_sym) into the scratch buffer, then
 *             df += scale S F, one strided-batched SGEMM with beta 1 (no atomics, no split sums)
 *   tv_loss   fixed_order_reduce over the elements of x: the value is the sum of rmx_tv_term in a
 *             fixed order, and the same pass adds rmx_tv_grad to dx (gather form: each element
 *             reads its neighbours and writes only its own gradient). */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/elementwise.h"

#define GRID_STRIDE(i, n)                                                                        \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (size_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------------------------------ */
/* Gram matrices                                                                                */

/* Row-major [r, c] matrices are column-major [c, r] to cuBLAS. f[b] [c, hw] is the column-major
 * [hw, c] matrix A = F^T, so G = F F^T = A^T A; G is symmetric, so its column-major result is also
 * the row-major g[b]. */
static void cuda_gram_fwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f, float *g) {
    if (n <= 0 || c <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    size_t cc = (size_t)c * c;
    if (hw <= 0) { /* empty sums: g is written with zeros */
        CUDA_CHECK(cudaMemsetAsync(g, 0, sizeof(float) * (size_t)n * cc, impl->stream));
        return;
    }
    const float zero = 0.0f;
    CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, c, c, hw, &scale, f, hw,
                                           (long long)c * hw, f, hw, (long long)c * hw, &zero, g, c,
                                           (long long)cc, n));
}

/* sym[b, i, j] = dg[b, i, j] + dg[b, j, i] */
__global__ void gram_sym_kernel(size_t total, int c, const float *dg, float *sym) {
    size_t cc = (size_t)c * c;
    GRID_STRIDE(e, total) {
        size_t b = e / cc, r = e % cc, i = r / c, j = r % c;
        sym[e] = rmx_gram_sym(dg[b * cc + i * c + j], dg[b * cc + j * c + i]);
    }
}

/* dF^T [hw, c] (column-major view of df[b]) += scale F^T [hw, c] S^T, S^T being the column-major
 * view of the row-major S. */
static void cuda_gram_bwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f,
                          const float *dg, float *df) {
    if (n <= 0 || c <= 0 || hw <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    size_t cc = (size_t)c * c, total = (size_t)n * cc;
    float *sym = (float *)rmx_cuda_scratch(be, sizeof(float) * total);
    gram_sym_kernel<<<ew_blocks(total), EW_THREADS, 0, impl->stream>>>(total, c, dg, sym);
    CUDA_LAUNCHED();
    const float one = 1.0f;
    CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, hw, c, c, &scale, f, hw,
                                           (long long)c * hw, sym, c, (long long)cc, &one, df, hw,
                                           (long long)c * hw, n));
}

/* ------------------------------------------------------------------------------------------ */
/* total variation                                                                              */

/* Element e of x [n, c, h, w]: its share of the value; adds its gradient to dx (or NULL). */
struct TvTerm {
    const float *x;
    float *dx;
    int h, w;
    size_t plane;
    rmx_tv_consts k;
    __device__ double operator()(size_t e) const {
        size_t pl = e / plane, r = e % plane;
        int i = (int)(r / (size_t)w), j = (int)(r % (size_t)w);
        const float *p = x + pl * plane;
        if (dx) dx[e] += rmx_tv_grad(p, h, w, i, j, k);
        return rmx_tv_term(p, h, w, i, j, k);
    }
};

static void cuda_tv_loss(rmx_backend *be, int n, int c, int h, int w, const float *x, float scale,
                         float *loss, float *dx) {
    size_t plane = (size_t)(h > 0 ? h : 0) * (size_t)(w > 0 ? w : 0);
    size_t total = (size_t)(n > 0 ? n : 0) * (size_t)(c > 0 ? c : 0) * plane;
    TvTerm term = {x, dx, h, w, plane ? plane : 1, rmx_tv_consts_make(c, h, w, scale)};
    AddScaledToLoss finish = {loss, scale};
    fixed_order_reduce(be, total, term, finish);
}

void rmx_cuda_install_remix(rmx_backend *be) {
    be->gram_fwd = cuda_gram_fwd;
    be->gram_bwd = cuda_gram_bwd;
    be->tv_loss = cuda_tv_loss;
}
