/* The transformer ops (the stage-2 DiT) and the diffusion arithmetic on the GPU.
 *
 *   linear      cuBLAS SGEMM (bias written into y first, GEMM beta 1, as the convolution); dw
 *               accumulates through beta 1; db is a fixed-order column sum (below)
 *   column sums (linear db, modulate dshift / dscale, gated_add dgate): per sample, slices of
 *               COLSUM_SLICE tokens summed in token order in double by one thread per column, the
 *               slices then summed in order: the order depends on the shape alone
 *   layernorm   one warp per row: two-pass statistics in double through a butterfly of shuffles
 *               (every lane ends with the same bits), the per-element formula of elementwise.h
 *   attention   per sample, a group of heads and a chunk of queries at a time (cuBLAS strided-
 *               batched GEMMs over the heads, whose q, k, v blocks sit head_dim apart):
 *               S = scale Q K^T for all keys, a softmax kernel (row max, sum of e^(s - max) in
 *               double, lse, P = e^(s - lse)), out = P V. The backward recomputes S, gets
 *               dP = dO V^T, one kernel per row makes P, D = rowsum(dO O) and dS = P (dP - D),
 *               then dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO (beta 0 for the first query
 *               chunk, 1 after: chunks in order). The chunking is a function of (tokens, heads)
 *               alone, so the workspace bounds memory and the summation order is fixed.
 *   embedding_bwd   one thread per (table row, column) walking i in increasing order, in double
 *   the rest    element-wise kernels over the shared arithmetic of elementwise.h.
 * No atomics anywhere. */
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/elementwise.h"

#define GRID_STRIDE(i, n)                                                                                    \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                                  \
         i += (size_t)gridDim.x * blockDim.x)

static cudaStream_t stream_of(rmx_backend *be) { return cuda_impl(be)->stream; }

/* ------------------------------------------------------------------------------------------ */
/* fixed-order column sums over tokens                                                          */

#define COLSUM_THREADS 128
#define COLSUM_SLICE 64 /* tokens a partial sums, at least */
#define COLSUM_MAX_SLICES 4096

/* partial[(b slices + s) d + j] = sum over the tokens of slice s, in order, of term(b, t, j). */
template <class Term>
__global__ void colsum_partial_kernel(int tokens, int d, int slice, Term term, double *partial) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    int s = blockIdx.y, b = blockIdx.z;
    int t0 = s * slice, t1 = t0 + slice < tokens ? t0 + slice : tokens;
    double acc = 0.0;
    for (int t = t0; t < t1; t++) acc += term(b, t, j);
    partial[((size_t)b * gridDim.y + s) * d + j] = acc;
}

/* finish(b, j, total) with total the slices of (b, j) summed in order. */
template <class Finish>
__global__ void colsum_final_kernel(int batch, int d, int slices, const double *partial, Finish finish) {
    size_t total = (size_t)batch * d;
    GRID_STRIDE(e, total) {
        int b = (int)(e / d), j = (int)(e % d);
        double acc = 0.0;
        for (int s = 0; s < slices; s++) acc += partial[((size_t)b * slices + s) * d + j];
        finish(b, j, acc);
    }
}

template <class Term, class Finish>
static void colsum(rmx_backend *be, int batch, int tokens, int d, Term term, Finish finish) {
    if (batch <= 0 || d <= 0) return;
    if (batch > 65535) {
        fprintf(stderr, "remixer: internal error: cuda column sum over %d samples exceeds the grid\n", batch);
        abort();
    }
    int slice = COLSUM_SLICE;
    if ((int)ceil_div((size_t)tokens, (size_t)slice) > COLSUM_MAX_SLICES)
        slice = (int)ceil_div((size_t)tokens, COLSUM_MAX_SLICES);
    int slices = tokens > 0 ? (int)ceil_div((size_t)tokens, (size_t)slice) : 1;
    double *partial = (double *)rmx_cuda_scratch(be, sizeof(double) * (size_t)batch * slices * d);
    dim3 grid((unsigned)ceil_div((size_t)d, COLSUM_THREADS), (unsigned)slices, (unsigned)batch);
    colsum_partial_kernel<<<grid, COLSUM_THREADS, 0, stream_of(be)>>>(tokens, d, slice, term, partial);
    CUDA_LAUNCHED();
    colsum_final_kernel<<<ew_blocks((size_t)batch * d), EW_THREADS, 0, stream_of(be)>>>(batch, d, slices,
                                                                                        partial, finish);
    CUDA_LAUNCHED();
}

/* Terms over a [batch, tokens, d] tensor. */
struct SumTerm {
    const float *a;
    int tokens, d;
    __device__ double operator()(int b, int t, int j) const {
        return (double)a[((size_t)b * tokens + t) * d + j];
    }
};

struct DotTerm {
    const float *a, *c;
    int tokens, d;
    __device__ double operator()(int b, int t, int j) const {
        size_t e = ((size_t)b * tokens + t) * d + j;
        return (double)a[e] * c[e];
    }
};

/* out[b ld + j] = total (written), or += (accumulated). */
struct WriteStrided {
    float *out;
    int ld;
    __device__ void operator()(int b, int j, double total) const { out[(size_t)b * ld + j] = (float)total; }
};

struct AddStrided {
    float *out;
    int ld;
    __device__ void operator()(int b, int j, double total) const { out[(size_t)b * ld + j] += (float)total; }
};

/* ------------------------------------------------------------------------------------------ */
/* linear                                                                                       */

/* y[r, o] = b[o], before the GEMM adds the products (beta 1). */
__global__ void bias_rows_kernel(const float *bias, size_t rows, int out, float *y) {
    size_t total = rows * (size_t)out;
    GRID_STRIDE(e, total) y[e] = bias[e % out];
}

/* Row-major [r, c] matrices are column-major [c, r] to cuBLAS:
 *   y^T [out, rows]  = W [out, in] x^T            (W is the column-major [in, out], transposed)
 *   dx^T [in, rows]  = W^T [in, out] dy^T
 *   dW^T [in, out]  += x^T [in, rows] dy [rows, out] */
static void cuda_linear_fwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                            const float *b, float *y) {
    if (rows <= 0 || out <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    const float one = 1.0f, zero = 0.0f;
    if (b) {
        bias_rows_kernel<<<ew_blocks((size_t)rows * out), EW_THREADS, 0, impl->stream>>>(b, (size_t)rows, out,
                                                                                         y);
        CUDA_LAUNCHED();
    }
    CUBLAS_CHECK(cublasSgemm(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, in, x, in,
                             b ? &one : &zero, y, out));
}

static void cuda_linear_bwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db) {
    if (rows <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    const float one = 1.0f, zero = 0.0f;
    if (dx)
        CUBLAS_CHECK(cublasSgemm(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, rows, out, &one, w, in, dy, out,
                                 &zero, dx, in));
    if (dw)
        CUBLAS_CHECK(cublasSgemm(impl->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, rows, &one, x, in, dy, out,
                                 &one, dw, in));
    if (db) {
        SumTerm term = {dy, rows, out};
        AddStrided finish = {db, out};
        colsum(be, 1, rows, out, term, finish);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm: one warp per row                                                                  */

#define LN_THREADS 256 /* 8 rows a block */

/* The sum over the warp by a butterfly: every lane ends with the same value (a + b == b + a). */
__device__ inline double warp_sum_all(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void layernorm_fwd_kernel(int rows, int d, float eps, const float *x, float *y, float *rstd) {
    int row = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return; /* whole warps leave together */
    const float *xr = x + (size_t)row * d;
    float *yr = y + (size_t)row * d;
    double s = 0.0;
    for (int j = lane; j < d; j += 32) s += xr[j];
    double mu = warp_sum_all(s) / d, v = 0.0;
    for (int j = lane; j < d; j += 32) {
        double t = (double)xr[j] - mu;
        v += t * t;
    }
    float mean = (float)mu, rs = rmx_layernorm_rstd(warp_sum_all(v) / d, eps);
    for (int j = lane; j < d; j += 32) yr[j] = rmx_layernorm(xr[j], mean, rs);
    if (lane == 0 && rstd) rstd[row] = rs;
}

__global__ void layernorm_bwd_kernel(int rows, int d, const float *y, const float *rstd, const float *dy,
                                     float *dx) {
    int row = (int)(((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *yr = y + (size_t)row * d, *dyr = dy + (size_t)row * d;
    float *dxr = dx + (size_t)row * d;
    double s1 = 0.0, s2 = 0.0;
    for (int j = lane; j < d; j += 32) {
        s1 += dyr[j];
        s2 += (double)dyr[j] * yr[j];
    }
    float mdy = (float)(warp_sum_all(s1) / d), mdyy = (float)(warp_sum_all(s2) / d), rs = rstd[row];
    for (int j = lane; j < d; j += 32) dxr[j] = rmx_layernorm_dx(dyr[j], yr[j], rs, mdy, mdyy);
}

static unsigned ln_blocks(int rows) { return (unsigned)ceil_div((size_t)rows * 32, LN_THREADS); }

static void cuda_layernorm_fwd(rmx_backend *be, int rows, int d, float eps, const float *x, float *y,
                               float *rstd) {
    if (rows <= 0) return;
    layernorm_fwd_kernel<<<ln_blocks(rows), LN_THREADS, 0, stream_of(be)>>>(rows, d, eps, x, y, rstd);
    CUDA_LAUNCHED();
}

static void cuda_layernorm_bwd(rmx_backend *be, int rows, int d, const float *y, const float *rstd,
                               const float *dy, float *dx) {
    if (rows <= 0) return;
    layernorm_bwd_kernel<<<ln_blocks(rows), LN_THREADS, 0, stream_of(be)>>>(rows, d, y, rstd, dy, dx);
    CUDA_LAUNCHED();
}

/* ------------------------------------------------------------------------------------------ */
/* GELU, modulation, gated residual                                                             */

__global__ void gelu_fwd_kernel(size_t n, const float *x, float *y) {
    GRID_STRIDE(i, n) y[i] = rmx_gelu(x[i]);
}

__global__ void gelu_bwd_kernel(size_t n, const float *x, const float *dy, float *dx) {
    GRID_STRIDE(i, n) dx[i] = dy[i] * rmx_gelu_grad(x[i]);
}

static void cuda_gelu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    if (!n) return;
    gelu_fwd_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, x, y);
    CUDA_LAUNCHED();
}

static void cuda_gelu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    if (!n) return;
    gelu_bwd_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, x, dy, dx);
    CUDA_LAUNCHED();
}

/* Element e of [batch, tokens, d]: its adaLN column b ld + j. */
__device__ inline size_t ada_index(size_t e, size_t per_sample, int d, int ld) {
    return (e / per_sample) * (size_t)ld + e % (size_t)d;
}

__global__ void modulate_fwd_kernel(size_t n, size_t per_sample, int d, int ld, const float *x,
                                    const float *shift, const float *scale, float *y) {
    GRID_STRIDE(e, n) {
        size_t a = ada_index(e, per_sample, d, ld);
        y[e] = rmx_modulate(x[e], shift[a], scale[a]);
    }
}

__global__ void modulate_dx_kernel(size_t n, size_t per_sample, int d, int ld, const float *scale,
                                   const float *dy, float *dx) {
    GRID_STRIDE(e, n) dx[e] = rmx_modulate_dx(dy[e], scale[ada_index(e, per_sample, d, ld)]);
}

__global__ void gated_add_fwd_kernel(size_t n, size_t per_sample, int d, int ld, const float *h,
                                     const float *gate, float *y) {
    GRID_STRIDE(e, n) y[e] = rmx_gated_add(y[e], gate[ada_index(e, per_sample, d, ld)], h[e]);
}

__global__ void gated_dh_kernel(size_t n, size_t per_sample, int d, int ld, const float *gate,
                                const float *dy, float *dh) {
    GRID_STRIDE(e, n) dh[e] = gate[ada_index(e, per_sample, d, ld)] * dy[e];
}

static void cuda_modulate_fwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                              const float *shift, const float *scale, int ld, float *y) {
    size_t per = (size_t)tokens * d, n = (size_t)batch * per;
    if (!n) return;
    modulate_fwd_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, per, d, ld, x, shift, scale, y);
    CUDA_LAUNCHED();
}

static void cuda_modulate_bwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                              const float *scale, int ld, const float *dy, float *dx, float *dshift,
                              float *dscale) {
    size_t per = (size_t)tokens * d, n = (size_t)batch * per;
    if (batch <= 0 || d <= 0) return;
    /* the sums first: dx may overwrite dy (in place) */
    if (dshift) {
        SumTerm term = {dy, tokens, d};
        WriteStrided finish = {dshift, ld};
        colsum(be, batch, tokens, d, term, finish);
    }
    if (dscale) {
        DotTerm term = {dy, x, tokens, d};
        WriteStrided finish = {dscale, ld};
        colsum(be, batch, tokens, d, term, finish);
    }
    if (dx && n) {
        modulate_dx_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, per, d, ld, scale, dy, dx);
        CUDA_LAUNCHED();
    }
}

static void cuda_gated_add_fwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                               const float *gate, int ld, float *y) {
    size_t per = (size_t)tokens * d, n = (size_t)batch * per;
    if (!n) return;
    gated_add_fwd_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, per, d, ld, h, gate, y);
    CUDA_LAUNCHED();
}

static void cuda_gated_add_bwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                               const float *gate, int ld, const float *dy, float *dh, float *dgate) {
    size_t per = (size_t)tokens * d, n = (size_t)batch * per;
    if (batch <= 0 || d <= 0) return;
    if (dgate) { /* first: dh may overwrite dy */
        DotTerm term = {dy, h, tokens, d};
        WriteStrided finish = {dgate, ld};
        colsum(be, batch, tokens, d, term, finish);
    }
    if (dh && n) {
        gated_dh_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, per, d, ld, gate, dy, dh);
        CUDA_LAUNCHED();
    }
}

/* ------------------------------------------------------------------------------------------ */
/* attention                                                                                    */

#define ATT_SCORE_FLOATS ((size_t)1 << 25) /* floats of one score buffer (128 MiB) */
#define ATT_THREADS 256

/* A chunk is `g` heads of one sample and `nq` queries against all keys; S and dP are
 * [g][nq][tokens] each. */
typedef struct {
    int g, nq;
    size_t scores; /* floats of one of the two buffers */
} att_plan;

static att_plan att_plan_make(int tokens, int heads) {
    att_plan p;
    size_t per_head = (size_t)tokens * tokens;
    if (per_head <= ATT_SCORE_FLOATS) {
        size_t g = ATT_SCORE_FLOATS / per_head;
        p.g = (int)(g < (size_t)heads ? g : (size_t)heads);
        p.nq = tokens;
    } else {
        p.g = 1;
        p.nq = (int)(ATT_SCORE_FLOATS / (size_t)tokens);
    }
    if (p.g < 1) p.g = 1;
    if (p.nq < 1) p.nq = 1;
    p.scores = (size_t)p.g * p.nq * tokens;
    p.scores = (p.scores + 63) / 64 * 64;
    return p;
}

static size_t cuda_attention_workspace(rmx_backend *be, int batch, int tokens, int d, int heads) {
    (void)be, (void)batch, (void)d;
    if (tokens <= 0 || heads <= 0) return 0;
    return 2 * att_plan_make(tokens, heads).scores;
}

__device__ inline float block_max_all(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (int)(blockDim.x >> 5);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = part[0];
    for (int w = 1; w < nwarps; w++) v = fmaxf(v, part[w]);
    __syncthreads();
    return v;
}

/* One block per score row (head gi of the chunk, query i): lse and P = e^(s - lse) in place.
 * lse points at the chunk's first query of its first head; heads are `tokens` apart there. */
__global__ void att_softmax_kernel(int nq, int n, int tokens, float *S, float *lse) {
    int row = blockIdx.x, gi = row / nq, i = row % nq;
    float *s = S + (size_t)row * n;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, s[j]);
    mx = block_max_all(mx);
    double acc = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) acc += rmx_softmax_exp(s[j], mx);
    float l = rmx_logsumexp(mx, block_sum_all(acc));
    if (threadIdx.x == 0) lse[(size_t)gi * tokens + i] = l;
    for (int j = threadIdx.x; j < n; j += blockDim.x) s[j] = rmx_softmax_exp(s[j], l);
}

/* The backward's row step: P = e^(s - lse) into S, D = sum_c dO O over the head's features, and
 * dS = P (dP - D) into dP. O and dO point at the chunk's first query of its first head. */
__global__ void att_bwd_rows_kernel(int nq, int n, int tokens, int hd, int d, float *S, float *dP,
                                    const float *lse, const float *O, const float *dO) {
    int row = blockIdx.x, gi = row / nq, i = row % nq;
    const float *o = O + (size_t)i * d + (size_t)gi * hd, *g = dO + (size_t)i * d + (size_t)gi * hd;
    double acc = 0.0;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) acc += (double)g[c] * o[c];
    float D = (float)block_sum_all(acc), l = lse[(size_t)gi * tokens + i];
    float *s = S + (size_t)row * n, *dp = dP + (size_t)row * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float p = rmx_softmax_exp(s[j], l);
        s[j] = p;
        dp[j] = rmx_softmax_dscore(p, dp[j], D);
    }
}

/* The chunks of one call, in order: sample b, heads [h0, h0 + g), queries [q0, q0 + nq). */
#define FOR_ATT_CHUNKS(p, batch, heads, tokens)                                                              \
    for (int b = 0; b < (batch); b++)                                                                        \
        for (int h0 = 0; h0 < (heads); h0 += (p).g)                                                          \
            for (int q0 = 0; q0 < (tokens); q0 += (p).nq)

static void cuda_attention_fwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                               float *out, float *lse, float *ws) {
    if (batch <= 0 || tokens <= 0 || heads <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    att_plan p = att_plan_make(tokens, heads);
    int hd = d / heads, ld = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    const float one = 1.0f, zero = 0.0f;
    float *S = ws;
    FOR_ATT_CHUNKS(p, batch, heads, tokens) {
        int g = heads - h0 < p.g ? heads - h0 : p.g, nq = tokens - q0 < p.nq ? tokens - q0 : p.nq;
        const float *base = qkv + (size_t)b * tokens * ld + (size_t)h0 * hd;
        const float *Q = base + (size_t)q0 * ld, *K = base + d, *V = base + 2 * d;
        long long sstride = (long long)nq * tokens;
        /* S^T [tokens, nq] = K Q^T, per head */
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, tokens, nq, hd, &scale,
                                               K, ld, hd, Q, ld, hd, &zero, S, tokens, sstride, g));
        att_softmax_kernel<<<(unsigned)((size_t)g * nq), ATT_THREADS, 0, impl->stream>>>(
            nq, tokens, tokens, S, lse + ((size_t)b * heads + h0) * tokens + q0);
        CUDA_LAUNCHED();
        /* out^T [hd, nq] = V^T P^T, per head */
        float *O = out + ((size_t)b * tokens + q0) * d + (size_t)h0 * hd;
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, nq, tokens, &one, V,
                                               ld, hd, S, tokens, sstride, &zero, O, d, hd, g));
    }
}

static void cuda_attention_bwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                               const float *out, const float *lse, const float *dout, float *dqkv,
                               float *ws) {
    if (batch <= 0 || tokens <= 0 || heads <= 0) return;
    rmx_cuda_impl *impl = cuda_impl(be);
    att_plan p = att_plan_make(tokens, heads);
    int hd = d / heads, ld = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    const float one = 1.0f, zero = 0.0f;
    float *S = ws, *dP = ws + p.scores;
    FOR_ATT_CHUNKS(p, batch, heads, tokens) {
        int g = heads - h0 < p.g ? heads - h0 : p.g, nq = tokens - q0 < p.nq ? tokens - q0 : p.nq;
        const float *base = qkv + (size_t)b * tokens * ld + (size_t)h0 * hd;
        const float *Q = base + (size_t)q0 * ld, *K = base + d, *V = base + 2 * d;
        const float *O = out + ((size_t)b * tokens + q0) * d + (size_t)h0 * hd;
        const float *dO = dout + ((size_t)b * tokens + q0) * d + (size_t)h0 * hd;
        float *dbase = dqkv + (size_t)b * tokens * ld + (size_t)h0 * hd;
        float *dQ = dbase + (size_t)q0 * ld, *dK = dbase + d, *dV = dbase + 2 * d;
        const float *beta = q0 ? &one : &zero; /* the first query chunk writes dK, dV; later ones add */
        long long sstride = (long long)nq * tokens;
        /* S^T = K Q^T (recomputed); dP^T [tokens, nq] = V dO^T */
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, tokens, nq, hd, &scale,
                                               K, ld, hd, Q, ld, hd, &zero, S, tokens, sstride, g));
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, tokens, nq, hd, &one, V,
                                               ld, hd, dO, d, hd, &zero, dP, tokens, sstride, g));
        att_bwd_rows_kernel<<<(unsigned)((size_t)g * nq), ATT_THREADS, 0, impl->stream>>>(
            nq, tokens, tokens, hd, d, S, dP, lse + ((size_t)b * heads + h0) * tokens + q0, O, dO);
        CUDA_LAUNCHED();
        /* dQ^T [hd, nq] = scale K^T dS^T */
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, nq, tokens, &scale,
                                               K, ld, hd, dP, tokens, sstride, &zero, dQ, ld, hd, g));
        /* dK^T [hd, tokens] (+)= scale Q^T dS; dV^T [hd, tokens] (+)= dO^T P */
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_T, hd, tokens, nq, &scale,
                                               Q, ld, hd, dP, tokens, sstride, beta, dK, ld, hd, g));
        CUBLAS_CHECK(cublasSgemmStridedBatched(impl->blas, CUBLAS_OP_N, CUBLAS_OP_T, hd, tokens, nq, &one, dO,
                                               d, hd, S, tokens, sstride, beta, dV, ld, hd, g));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* embedding, timestep, patches, broadcast                                                      */

__global__ void embedding_fwd_kernel(size_t total, int d, const int32_t *idx, const float *table, float *y) {
    GRID_STRIDE(e, total) y[e] = table[(size_t)idx[e / d] * d + e % d];
}

/* One thread per (table row, column), walking i in increasing order. */
__global__ void embedding_bwd_kernel(int n, int d, int rows, const int32_t *idx, const float *dy,
                                     float *dtable) {
    size_t total = (size_t)rows * d;
    GRID_STRIDE(e, total) {
        int r = (int)(e / d), j = (int)(e % d);
        double acc = 0.0;
        for (int i = 0; i < n; i++)
            if (idx[i] == r) acc += dy[(size_t)i * d + j];
        dtable[e] += (float)acc;
    }
}

static void cuda_embedding_fwd(rmx_backend *be, int n, int d, const int32_t *idx, const float *table,
                               float *y) {
    size_t total = (size_t)n * d;
    if (!total) return;
    embedding_fwd_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, d, idx, table, y);
    CUDA_LAUNCHED();
}

static void cuda_embedding_bwd(rmx_backend *be, int n, int d, int rows, const int32_t *idx, const float *dy,
                               float *dtable) {
    size_t total = (size_t)rows * d;
    if (!total) return;
    embedding_bwd_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(n, d, rows, idx, dy, dtable);
    CUDA_LAUNCHED();
}

__global__ void timestep_kernel(size_t total, int dim, int half, const float *t, float *y) {
    GRID_STRIDE(e, total) {
        size_t i = e / half;
        int j = (int)(e % half);
        float f = rmx_timestep_freq(j, half);
        y[i * dim + j] = rmx_timestep_cos(t[i], f);
        y[i * dim + half + j] = rmx_timestep_sin(t[i], f);
    }
}

static void cuda_timestep_embed(rmx_backend *be, int n, int dim, const float *t, float *y) {
    int half = dim / 2;
    size_t total = (size_t)n * half;
    if (!total) return;
    timestep_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, dim, half, t, y);
    CUDA_LAUNCHED();
}

/* One thread per image element (b, ch, iy, ix): its place in the tokens by the shared index map.
 * Patchify scatters (reads coalesced), unpatchify gathers (writes coalesced); both one to one. */
__device__ inline size_t patch_token_index(size_t e, int c, int h, int w, int p, int order) {
    int ix = (int)(e % w), iy = (int)((e / w) % h), ch = (int)((e / ((size_t)w * h)) % c);
    size_t b = e / ((size_t)w * h * c);
    int gh = h / p, gw = w / p;
    size_t tok = b * gh * gw + (size_t)(iy / p) * gw + ix / p;
    return tok * (size_t)(c * p * p) + (size_t)rmx_patch_feature(order, c, p, ch, iy % p, ix % p);
}

__global__ void patchify_kernel(size_t total, int c, int h, int w, int p, int order, const float *x,
                                float *tokens) {
    GRID_STRIDE(e, total) tokens[patch_token_index(e, c, h, w, p, order)] = x[e];
}

__global__ void unpatchify_kernel(size_t total, int c, int h, int w, int p, int order, const float *tokens,
                                  float *x) {
    GRID_STRIDE(e, total) x[e] = tokens[patch_token_index(e, c, h, w, p, order)];
}

static void cuda_patchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order, const float *x,
                          float *tokens) {
    size_t total = (size_t)batch * c * h * w;
    if (!total) return;
    patchify_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, c, h, w, p, order, x, tokens);
    CUDA_LAUNCHED();
}

static void cuda_unpatchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                            const float *tokens, float *x) {
    size_t total = (size_t)batch * c * h * w;
    if (!total) return;
    unpatchify_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, c, h, w, p, order, tokens,
                                                                          x);
    CUDA_LAUNCHED();
}

__global__ void add_broadcast_kernel(size_t total, size_t n, const float *a, float *y) {
    GRID_STRIDE(e, total) y[e] += a[e % n];
}

static void cuda_add_broadcast(rmx_backend *be, int batch, size_t n, const float *a, float *y) {
    size_t total = (size_t)batch * n;
    if (!total) return;
    add_broadcast_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, n, a, y);
    CUDA_LAUNCHED();
}

/* ------------------------------------------------------------------------------------------ */
/* diffusion arithmetic                                                                         */

/* coef = [a (n) | b (n)], a device copy of the caller's host arrays. */
__global__ void axpby_samples_kernel(size_t total, size_t per_sample, int n, const float *coef,
                                     const float *x, const float *e, float *y) {
    GRID_STRIDE(k, total) {
        size_t s = k / per_sample;
        y[k] = rmx_axpby(coef[s], x[k], coef[n + s], e[k]);
    }
}

static void cuda_axpby_samples(rmx_backend *be, int n, size_t per_sample, const float *a, const float *x,
                               const float *b, const float *e, float *y) {
    size_t total = (size_t)n * per_sample;
    if (!total) return;
    /* a and b are host memory: one upload of both, which leaves the caller's arrays free at once */
    float *host = (float *)malloc(2 * (size_t)n * sizeof(float));
    if (!host) abort();
    memcpy(host, a, (size_t)n * sizeof(float));
    memcpy(host + n, b, (size_t)n * sizeof(float));
    float *coef = (float *)rmx_cuda_scratch(be, 2 * (size_t)n * sizeof(float));
    rmx_cuda_upload(be, coef, host, 2 * (size_t)n * sizeof(float));
    free(host);
    axpby_samples_kernel<<<ew_blocks(total), EW_THREADS, 0, stream_of(be)>>>(total, per_sample, n, coef, x, e,
                                                                             y);
    CUDA_LAUNCHED();
}

__global__ void ema_update_kernel(size_t n, float decay, const float *param, float *ema) {
    GRID_STRIDE(i, n) ema[i] = rmx_ema(ema[i], param[i], decay);
}

static void cuda_ema_update(rmx_backend *be, size_t n, float decay, const float *param, float *ema) {
    if (!n) return;
    ema_update_kernel<<<ew_blocks(n), EW_THREADS, 0, stream_of(be)>>>(n, decay, param, ema);
    CUDA_LAUNCHED();
}

void rmx_cuda_install_transformer(rmx_backend *be) {
    be->linear_fwd = cuda_linear_fwd;
    be->linear_bwd = cuda_linear_bwd;
    be->layernorm_fwd = cuda_layernorm_fwd;
    be->layernorm_bwd = cuda_layernorm_bwd;
    be->gelu_fwd = cuda_gelu_fwd;
    be->gelu_bwd = cuda_gelu_bwd;
    be->modulate_fwd = cuda_modulate_fwd;
    be->modulate_bwd = cuda_modulate_bwd;
    be->gated_add_fwd = cuda_gated_add_fwd;
    be->gated_add_bwd = cuda_gated_add_bwd;
    be->attention_workspace = cuda_attention_workspace;
    be->attention_fwd = cuda_attention_fwd;
    be->attention_bwd = cuda_attention_bwd;
    be->embedding_fwd = cuda_embedding_fwd;
    be->embedding_bwd = cuda_embedding_bwd;
    be->timestep_embed = cuda_timestep_embed;
    be->patchify = cuda_patchify;
    be->unpatchify = cuda_unpatchify;
    be->add_broadcast = cuda_add_broadcast;
    be->axpby_samples = cuda_axpby_samples;
    be->ema_update = cuda_ema_update;
}
