/* Convolution on the GPU: im2col / col2im kernels around cuBLAS SGEMM.
 *
 * For a chunk of samples, the input is unfolded into col [sample][K][P] (K = cin k k rows,
 * P = hout wout columns), and each sample's product is one GEMM of a strided batch:
 *   forward  y[co, P]  = w[co, K] col[K, P] (+ bias, written into y first, GEMM beta 1)
 *   dw       part[co, K] = dy[co, piece] col[K, piece]^T for every piece of P columns of every
 *            sample (one batched GEMM), then dw += the partials summed in order (a fixed-order
 *            reduction instead of accumulating GEMMs). The product has only cout x K outputs but
 *            a reduction as long as P: cut into pieces, it fills the GPU instead of a handful of
 *            thread blocks.
 *   dx       dcol[K, P] = w^T dy[co, P], then col2im in gather form: each input element sums the
 *            entries that were read from it in (ky, kx) order, so no two threads write one
 *            element and no atomics are needed
 *   db       per channel, a fixed-order sum over samples and positions
 * A 1x1 stride-1 convolution without padding needs no unfolding: x is its own col matrix and
 * the dx GEMM writes dx directly.
 *
 * Row-major [r, c] matrices are column-major [c, r] to cuBLAS, so each row-major product
 * C = A B is issued as C^T = B^T A^T with the operands swapped.
 *
 * Chunks bound the workspace: col holds at most CONV_COL_FLOATS floats (or one sample), so the
 * workspace stays a few hundred MB even at micro-batch 64 of the bench size. The chunk size depends
 * on the shape alone, which keeps the dw summation order fixed. */
#include "kernels/cuda/cuda_common.cuh"

#define CONV_COL_FLOATS ((size_t)1 << 26) /* 256 MiB of unfolded columns per chunk */
#define DW_PIECE 2048                      /* columns of one dw partial product, at least */

typedef struct {
    int direct;       /* 1x1, stride 1, no padding */
    int K, P;         /* GEMM sizes: cin k k, hout wout */
    int chunk;        /* samples per chunk */
    int pieces;       /* dw: pieces of P per sample (a divisor of P) */
    size_t col;       /* floats of the col region (0 when direct) */
    size_t part;      /* floats of the dw partials region */
} conv_plan;

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static conv_plan conv_plan_make(const rmx_conv_shape *s) {
    conv_plan p;
    p.direct = s->k == 1 && s->stride == 1 && s->pad == 0;
    p.K = s->cin * s->k * s->k;
    p.P = s->hout * s->wout;
    size_t per_sample = (size_t)p.K * p.P;
    size_t fit = per_sample ? CONV_COL_FLOATS / per_sample : (size_t)s->n;
    if (fit < 1) fit = 1;
    p.chunk = (int)((size_t)s->n < fit ? (size_t)s->n : fit);
    if (p.chunk < 1) p.chunk = 1;
    /* dcol of the dx path reuses the col region, so even a direct conv has none */
    p.col = p.direct ? 0 : round64((size_t)p.chunk * per_sample);
    /* the largest divisor of P that leaves pieces of at least DW_PIECE columns */
    int target = p.P / DW_PIECE > 1 ? p.P / DW_PIECE : 1;
    p.pieces = 1;
    for (int d = target; d > 1; d--)
        if (p.P % d == 0) {
            p.pieces = d;
            break;
        }
    p.part = round64((size_t)p.chunk * p.pieces * s->cout * p.K);
    return p;
}

static size_t cuda_conv2d_workspace(rmx_backend *be, const rmx_conv_shape *s) {
    (void)be;
    conv_plan p = conv_plan_make(s);
    return p.col + p.part;
}

/* ---- unfolding ----
 * Grids of (blocks along a plane, row or channel, sample), so a thread finds its element with one
 * 32-bit division; 64-bit index arithmetic per element would cost more than the memory traffic. */

#define PLANE_THREADS 256

/* col[b][(ci k + ky) k + kx][oy wout + ox] = x[b, ci, oy s - pad + ky, ox s - pad + kx] (0 outside);
 * grid (P / 256, K, nb): consecutive threads along P (coalesced writes). */
__global__ void im2col_kernel(rmx_conv_shape s, const float *x, float *col) {
    int p = blockIdx.x * blockDim.x + threadIdx.x, P = s.hout * s.wout;
    if (p >= P) return;
    int row = blockIdx.y, b = blockIdx.z, K = gridDim.y;
    int kx = row % s.k, ky = (row / s.k) % s.k, ci = row / (s.k * s.k);
    int oy = p / s.wout, ox = p - oy * s.wout;
    int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
    float v = 0.0f;
    if (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w)
        v = x[(((size_t)b * s.cin + ci) * s.h + iy) * s.w + ix];
    col[((size_t)b * K + row) * P + p] = v;
}

/* The output index along one axis that tap kk maps input position i onto, or -1 (as the
 * reference's conv_out_index); STRIDE 0 takes the stride at run time, 1 and 2 (the architecture's)
 * let the compiler drop the division. */
template <int STRIDE>
__device__ inline int conv_out_index(int i, int kk, int stride, int pad, int nout) {
    int t = i + pad - kk;
    if (STRIDE) stride = STRIDE;
    if (t < 0 || t % stride) return -1;
    t /= stride;
    return t < nout ? t : -1;
}

/* dx[b, ci, iy, ix] = sum over (ky, kx), in that order, of the dcol entries read from it;
 * grid (h w / 256, cin, nb). */
template <int STRIDE>
__global__ void col2im_kernel(rmx_conv_shape s, const float *dcol, float *dx) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= s.h * s.w) return;
    int ci = blockIdx.y, b = blockIdx.z, iy = e / s.w, ix = e - iy * s.w;
    size_t P = (size_t)s.hout * s.wout, K = (size_t)s.cin * s.k * s.k;
    const float *dc = dcol + (size_t)b * K * P;
    float acc = 0.0f;
    for (int ky = 0; ky < s.k; ky++) {
        int oy = conv_out_index<STRIDE>(iy, ky, s.stride, s.pad, s.hout);
        if (oy < 0) continue;
        for (int kx = 0; kx < s.k; kx++) {
            int ox = conv_out_index<STRIDE>(ix, kx, s.stride, s.pad, s.wout);
            if (ox < 0) continue;
            acc += dc[((size_t)(ci * s.k + ky) * s.k + kx) * P + (size_t)oy * s.wout + ox];
        }
    }
    dx[(((size_t)b * s.cin + ci) * s.h) * s.w + e] = acc;
}

/* ---- bias ---- */

/* y[b][co][p] = bias[co] for the chunk, before the forward GEMM adds the products to it;
 * grid (P / 256, cout, nb). */
__global__ void bias_fill_kernel(const float *bias, int P, float *y) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p < P) y[((size_t)blockIdx.z * gridDim.y + blockIdx.y) * P + p] = bias[blockIdx.y];
}

/* db[co] += sum over samples and positions of dy[b][co][p]: grid (cout, slices); slice j of a
 * channel sums samples [j*per, (j+1)*per) in double into partial[co][j]. */
__global__ void db_partial_kernel(const float *dy, int n, int cout, size_t P, int per,
                                  double *partial) {
    int co = blockIdx.x, j = blockIdx.y;
    int b0 = j * per, b1 = b0 + per < n ? b0 + per : n;
    double acc = 0.0;
    for (int b = b0; b < b1; b++) {
        const float *row = dy + ((size_t)b * cout + co) * P;
        for (size_t p = threadIdx.x; p < P; p += blockDim.x) acc += row[p];
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[(size_t)co * gridDim.y + j] = acc;
}

__global__ void db_final_kernel(const double *partial, int cout, int slices, float *db) {
    for (int co = blockIdx.x * blockDim.x + threadIdx.x; co < cout; co += gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (int j = 0; j < slices; j++) acc += partial[(size_t)co * slices + j];
        db[co] += (float)acc;
    }
}

/* dw[e] += sum over the chunk's partial products, in order, of part[i][e]. */
__global__ void dw_reduce_kernel(const float *part, int nb, size_t nw, float *dw) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < nw;
         e += (size_t)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (int b = 0; b < nb; b++) acc += part[(size_t)b * nw + e];
        dw[e] += (float)acc;
    }
}

/* ---- host side ---- */

/* A grid of (blocks covering `plane` elements, rows, samples): the two outer counts are limited
 * to 65535 by CUDA, far above what the model's channels and micro-batches reach. */
static dim3 plane_grid(int plane, int rows, int nb) {
    if (rows > 65535 || nb > 65535) {
        fprintf(stderr, "remixer: internal error: cuda conv: %d rows x %d samples exceed the grid\n",
                rows, nb);
        abort();
    }
    return dim3((unsigned)ceil_div((size_t)plane, PLANE_THREADS), (unsigned)rows, (unsigned)nb);
}

static void launch_im2col(rmx_cuda_impl *impl, const rmx_conv_shape *s, const float *x, int nb,
                          float *col) {
    dim3 grid = plane_grid(s->hout * s->wout, s->cin * s->k * s->k, nb);
    im2col_kernel<<<grid, PLANE_THREADS, 0, impl->stream>>>(*s, x, col);
    CUDA_LAUNCHED();
}

static void launch_col2im(rmx_cuda_impl *impl, const rmx_conv_shape *s, const float *dcol, int nb,
                          float *dx) {
    dim3 grid = plane_grid(s->h * s->w, s->cin, nb);
    if (s->stride == 1)
        col2im_kernel<1><<<grid, PLANE_THREADS, 0, impl->stream>>>(*s, dcol, dx);
    else if (s->stride == 2)
        col2im_kernel<2><<<grid, PLANE_THREADS, 0, impl->stream>>>(*s, dcol, dx);
    else
        col2im_kernel<0><<<grid, PLANE_THREADS, 0, impl->stream>>>(*s, dcol, dx);
    CUDA_LAUNCHED();
}

static void cuda_conv2d_fwd(rmx_backend *be, const rmx_conv_shape *s, const float *x,
                            const float *w, const float *bias, float *y, float *ws) {
    rmx_cuda_impl *impl = cuda_impl(be);
    conv_plan p = conv_plan_make(s);
    size_t in_plane = (size_t)s->cin * s->h * s->w, out_plane = (size_t)s->cout * p.P;
    const float one = 1.0f, zero = 0.0f;
    for (int b0 = 0; b0 < s->n; b0 += p.chunk) {
        int nb = s->n - b0 < p.chunk ? s->n - b0 : p.chunk;
        const float *xb = x + (size_t)b0 * in_plane;
        float *yb = y + (size_t)b0 * out_plane;
        const float *col = xb;
        if (!p.direct) {
            launch_im2col(impl, s, xb, nb, ws);
            col = ws;
        }
        if (bias) {
            bias_fill_kernel<<<plane_grid(p.P, s->cout, nb), PLANE_THREADS, 0, impl->stream>>>(
                bias, p.P, yb);
            CUDA_LAUNCHED();
        }
        /* y^T [P, cout] = col^T [P, K] w^T [K, cout], per sample */
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, p.P, s->cout,
                                               p.K, &one, col, p.P, (long long)p.K * p.P, w, p.K,
                                               0, bias ? &one : &zero, yb, p.P,
                                               (long long)out_plane, nb));
    }
}

static void cuda_conv2d_bwd(rmx_backend *be, const rmx_conv_shape *s, const float *x,
                            const float *w, const float *dy, float *dx, float *dw, float *db,
                            float *ws) {
    rmx_cuda_impl *impl = cuda_impl(be);
    conv_plan p = conv_plan_make(s);
    size_t in_plane = (size_t)s->cin * s->h * s->w, out_plane = (size_t)s->cout * p.P;
    size_t nw = (size_t)s->cout * p.K;
    float *colbuf = ws, *part = ws + p.col;
    const float one = 1.0f, zero = 0.0f;

    if (db) {
        /* slices of samples: enough blocks to fill the GPU, a function of the shape alone */
        size_t per_s = ceil_div((size_t)1 << 18, (size_t)p.P); /* ~256 Ki elements a block */
        int per = per_s < (size_t)s->n ? (int)per_s : s->n;
        if (per < 1) per = 1;
        int slices = (int)ceil_div((size_t)s->n, (size_t)per);
        double *partial = (double *)rmx_cuda_scratch(be, sizeof(double) * (size_t)s->cout * slices);
        db_partial_kernel<<<dim3((unsigned)s->cout, (unsigned)slices), RED_THREADS, 0, impl->stream>>>(
            dy, s->n, s->cout, (size_t)p.P, per, partial);
        CUDA_LAUNCHED();
        db_final_kernel<<<(unsigned)ceil_div((size_t)s->cout, 128), 128, 0, impl->stream>>>(
            partial, s->cout, slices, db);
        CUDA_LAUNCHED();
    }
    if (!dw && !dx) return;

    for (int b0 = 0; b0 < s->n; b0 += p.chunk) {
        int nb = s->n - b0 < p.chunk ? s->n - b0 : p.chunk;
        const float *xb = x + (size_t)b0 * in_plane, *dyb = dy + (size_t)b0 * out_plane;
        if (dw) {
            const float *col = xb;
            if (!p.direct) {
                launch_im2col(impl, s, xb, nb, colbuf);
                col = colbuf;
            }
            /* part_i^T [K, cout] = col [K, piece] dy^T [piece, cout], for every (sample,
             * piece); the operand addresses go to the GPU as pointer arrays */
            int count = nb * p.pieces, len = p.P / p.pieces;
            const float **ptr = (const float **)malloc(3 * (size_t)count * sizeof *ptr);
            if (!ptr) abort();
            for (int b = 0; b < nb; b++)
                for (int j = 0; j < p.pieces; j++) {
                    int i = b * p.pieces + j;
                    ptr[i] = col + (size_t)b * p.K * p.P + (size_t)j * len;
                    ptr[count + i] = dyb + (size_t)b * out_plane + (size_t)j * len;
                    ptr[2 * count + i] = part + (size_t)i * nw;
                }
            const float **dptr = (const float **)rmx_cuda_scratch(be, 3 * (size_t)count * sizeof *dptr);
            rmx_cuda_upload(be, dptr, ptr, 3 * (size_t)count * sizeof *ptr);
            free(ptr);
            CUBLAS_CHECK(cublasSgemmBatched(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, p.K, s->cout, len,
                                            &one, dptr, p.P, dptr + count, p.P, &zero,
                                            (float *const *)(dptr + 2 * count), p.K, count));
            dw_reduce_kernel<<<ew_blocks(nw), EW_THREADS, 0, impl->stream>>>(part, count, nw, dw);
            CUDA_LAUNCHED();
        }
        if (dx) {
            /* dcol^T [P, K] = dy^T [P, cout] w [cout, K], per sample; a direct conv's dcol is dx */
            float *dxb = dx + (size_t)b0 * in_plane;
            float *dcol = p.direct ? dxb : colbuf;
            CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_T, p.P, p.K,
                                                   s->cout, &one, dyb, p.P, (long long)out_plane,
                                                   w, p.K, 0, &zero, dcol, p.P,
                                                   (long long)p.K * p.P, nb));
            if (!p.direct) launch_col2im(impl, s, dcol, nb, dxb);
        }
    }
}

void rmx_cuda_install_conv(rmx_backend *be) {
    be->conv2d_workspace = cuda_conv2d_workspace;
    be->conv2d_fwd = cuda_conv2d_fwd;
    be->conv2d_bwd = cuda_conv2d_bwd;
}
