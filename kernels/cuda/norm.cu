/* GroupNorm, SiLU and the nearest x2 upsample on the GPU.
 *
 * GroupNorm: one block per (sample, group), whose cg * hw elements are contiguous. Statistics in
 * double and two passes, as the CPU backends, each a fixed-order block sum; the normalisation is
 * y = x a + o with a = rstd gamma and o = beta - mean a rounded to float per channel, the cpu
 * backend's formula. The backward keeps the cpu backend's structure too: per (sample, channel)
 * sums of dy and dy xhat in double, dx from the group's totals in the same block (so dx may
 * alias dy), and dgamma / dbeta summed over samples in sample order by a second kernel. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/elementwise.h"

#define GN_THREADS 512

__global__ void groupnorm_fwd_kernel(int c, int hw, int groups, float eps, const float *x,
                                     const float *gamma, const float *beta, float *y, float *mean,
                                     float *rstd) {
    int i = blockIdx.x, b = i / groups, g = i % groups, cg = c / groups;
    size_t len = (size_t)cg * hw, off = ((size_t)b * c + (size_t)g * cg) * hw;
    const float *xs = x + off;
    double acc = 0.0;
    for (size_t e = threadIdx.x; e < len; e += blockDim.x) acc += xs[e];
    double mu = block_sum_all(acc) / (double)len;
    acc = 0.0;
    for (size_t e = threadIdx.x; e < len; e += blockDim.x) {
        double d = (double)xs[e] - mu;
        acc += d * d;
    }
    double rs = 1.0 / sqrt(block_sum_all(acc) / (double)len + (double)eps);
    if (threadIdx.x == 0) {
        if (mean) mean[i] = (float)mu;
        if (rstd) rstd[i] = (float)rs;
    }
    for (int j = 0; j < cg; j++) {
        int ch = g * cg + j;
        rmx_gn_affine t = rmx_groupnorm_affine(mu, rs, gamma, beta, ch);
        float af = t.scale, of = t.shift;
        const float *xc = xs + (size_t)j * hw;
        float *yc = y + off + (size_t)j * hw;
        for (int p = threadIdx.x; p < hw; p += blockDim.x) yc[p] = xc[p] * af + of;
    }
}

/* With xhat = (x - mean) rstd and g = dy gamma over a group of m elements:
 * dx = rstd (g - mean(g) - xhat mean(g xhat)) = dy (rstd gamma) + x cx + c0. */
__global__ void groupnorm_bwd_kernel(int c, int hw, int groups, const float *x, const float *gamma,
                                     const float *mean, const float *rstd, const float *dy,
                                     float *dx, double *sdy, double *sdyx) {
    int i = blockIdx.x, b = i / groups, g = i % groups, cg = c / groups;
    double mu = mean[i], rs = rstd[i], sg = 0.0, sgx = 0.0;
    for (int j = 0; j < cg; j++) {
        int ch = g * cg + j;
        size_t off = ((size_t)b * c + ch) * hw;
        double s1 = 0.0, sx = 0.0;
        for (int p = threadIdx.x; p < hw; p += blockDim.x) {
            s1 += dy[off + p];
            sx += (double)dy[off + p] * x[off + p];
        }
        s1 = block_sum_all(s1);
        sx = block_sum_all(sx);
        double s2 = rs * (sx - mu * s1); /* sum dy xhat */
        double ga = gamma ? gamma[ch] : 1.0;
        if (threadIdx.x == 0) {
            sdy[(size_t)b * c + ch] = s1;
            sdyx[(size_t)b * c + ch] = s2;
        }
        sg += ga * s1;
        sgx += ga * s2;
    }
    if (!dx) return;
    double m = (double)cg * hw, mg = sg / m, mgx = sgx / m;
    float cx = (float)(-rs * rs * mgx), c0 = (float)(rs * rs * mgx * mu - rs * mg);
    for (int j = 0; j < cg; j++) {
        int ch = g * cg + j;
        size_t off = ((size_t)b * c + ch) * hw;
        float cd = (float)(rs * (gamma ? gamma[ch] : 1.0));
        for (int p = threadIdx.x; p < hw; p += blockDim.x)
            dx[off + p] = dy[off + p] * cd + x[off + p] * cx + c0;
    }
}

/* dgamma[ch] += sum over samples of sdyx, dbeta[ch] += sum of sdy, in sample order. */
__global__ void groupnorm_param_grad_kernel(int n, int c, const double *sdy, const double *sdyx,
                                            float *dgamma, float *dbeta) {
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += gridDim.x * blockDim.x)
        rmx_groupnorm_param_grad(n, c, ch, sdy, sdyx, dgamma, dbeta);
}

static void cuda_groupnorm_fwd(rmx_backend *be, int n, int c, int hw, int groups, float eps,
                               const float *x, const float *gamma, const float *beta, float *y,
                               float *mean, float *rstd) {
    if (n * groups == 0) return;
    groupnorm_fwd_kernel<<<n * groups, GN_THREADS, 0, cuda_impl(be)->stream>>>(
        c, hw, groups, eps, x, gamma, beta, y, mean, rstd);
    CUDA_LAUNCHED();
}

static void cuda_groupnorm_bwd(rmx_backend *be, int n, int c, int hw, int groups, const float *x,
                               const float *gamma, const float *mean, const float *rstd,
                               const float *dy, float *dx, float *dgamma, float *dbeta) {
    if (n * groups == 0) return;
    cudaStream_t stream = cuda_impl(be)->stream;
    double *sdy = (double *)rmx_cuda_scratch(be, sizeof(double) * 2 * (size_t)n * c);
    double *sdyx = sdy + (size_t)n * c;
    groupnorm_bwd_kernel<<<n * groups, GN_THREADS, 0, stream>>>(c, hw, groups, x, gamma, mean,
                                                                 rstd, dy, dx, sdy, sdyx);
    CUDA_LAUNCHED();
    if (dgamma || dbeta) {
        groupnorm_param_grad_kernel<<<(unsigned)ceil_div((size_t)c, 128), 128, 0, stream>>>(
            n, c, sdy, sdyx, dgamma, dbeta);
        CUDA_LAUNCHED();
    }
}

/* ---- SiLU ---- */

__global__ void silu_fwd_kernel(size_t n, const float *x, float *y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = rmx_silu(x[i]);
}

__global__ void silu_bwd_kernel(size_t n, const float *x, const float *dy, float *dx) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i] * rmx_silu_grad(x[i]);
}

static void cuda_silu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    if (!n) return;
    silu_fwd_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(n, x, y);
    CUDA_LAUNCHED();
}

static void cuda_silu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    if (!n) return;
    silu_bwd_kernel<<<ew_blocks(n), EW_THREADS, 0, cuda_impl(be)->stream>>>(n, x, dy, dx);
    CUDA_LAUNCHED();
}

/* ---- nearest x2 upsample: x [planes, h, w] -> y [planes, 2h, 2w] ----
 * Grids of (blocks along a plane, planes in a grid-stride loop): one 32-bit division a thread. */

#define UP_THREADS 256
#define UP_MAX_PLANES 65535u

/* One thread per output element. */
__global__ void upsample2x_fwd_kernel(size_t planes, int h, int w, const float *x, float *y) {
    int q = blockIdx.x * blockDim.x + threadIdx.x, w2 = 2 * w;
    if (q >= 4 * h * w) return;
    int oy = q / w2, ox = q - oy * w2;
    for (size_t plane = blockIdx.y; plane < planes; plane += gridDim.y)
        y[plane * 4 * h * w + q] = x[plane * h * w + (size_t)(oy / 2) * w + ox / 2];
}

/* One thread per input element: the sum of its 2x2 block, grouped as the reference groups it. */
__global__ void upsample2x_bwd_kernel(size_t planes, int h, int w, const float *dy, float *dx) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= h * w) return;
    int iy = q / w, ix = q - iy * w;
    size_t w2 = 2 * (size_t)w;
    for (size_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const float *d = dy + (plane * 2 * h + 2 * (size_t)iy) * w2 + 2 * ix;
        dx[plane * h * w + q] = (d[0] + d[1]) + (d[w2] + d[w2 + 1]);
    }
}

static dim3 upsample_grid(size_t per_plane, size_t planes) {
    return dim3((unsigned)ceil_div(per_plane, UP_THREADS),
                (unsigned)(planes < UP_MAX_PLANES ? planes : UP_MAX_PLANES));
}

static void cuda_upsample2x_fwd(rmx_backend *be, int n, int c, int h, int w, const float *x,
                                float *y) {
    size_t planes = (size_t)n * c;
    if (!planes || !h || !w) return;
    upsample2x_fwd_kernel<<<upsample_grid(4 * (size_t)h * w, planes), UP_THREADS, 0,
                            cuda_impl(be)->stream>>>(planes, h, w, x, y);
    CUDA_LAUNCHED();
}

static void cuda_upsample2x_bwd(rmx_backend *be, int n, int c, int h, int w, const float *dy,
                                float *dx) {
    size_t planes = (size_t)n * c;
    if (!planes || !h || !w) return;
    upsample2x_bwd_kernel<<<upsample_grid((size_t)h * w, planes), UP_THREADS, 0,
                            cuda_impl(be)->stream>>>(planes, h, w, dy, dx);
    CUDA_LAUNCHED();
}

void rmx_cuda_install_norm(rmx_backend *be) {
    be->groupnorm_fwd = cuda_groupnorm_fwd;
    be->groupnorm_bwd = cuda_groupnorm_bwd;
    be->silu_fwd = cuda_silu_fwd;
    be->silu_bwd = cuda_silu_bwd;
    be->upsample2x_fwd = cuda_upsample2x_fwd;
    be->upsample2x_bwd = cuda_upsample2x_bwd;
}
