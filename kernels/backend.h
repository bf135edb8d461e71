/* The compute backend: one interface, several implementations.
 *
 *   ref  (kernels/ref/)  plain loops, the reference every fast path is tested against
 *   cpu  (kernels/cpu/)  OpenBLAS sgemm + OpenMP
 *   cuda (kernels/cuda/) CUDA kernels + cuBLAS (built when nvcc is present)
 *
 * All float* / int32_t* arguments are backend memory (host memory for ref and cpu, device memory
 * for cuda) obtained from `alloc`, except where a comment says "host". Tensors are dense NCHW,
 * row-major. Conventions shared by every op:
 *   - forward outputs are written (overwritten);
 *   - input gradients (dx) are written, and a NULL dx skips that work;
 *   - weight gradients (dw, db, dgamma, ...) are ACCUMULATED (+=), so micro-batches accumulate
 *     without extra passes, and a NULL pointer skips them (a frozen module);
 *   - loss ops add their (already scaled) value to a scalar in backend memory, so a step needs
 *     no host round trip until the logged scalars are read once at its end;
 *   - every reduction runs in a fixed order (no atomics), so a run is repeatable bit for bit.
 * The backend knows nothing of YAML, HDF5 or MPI. */
#ifndef RMX_BACKEND_H
#define RMX_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct rmx_backend rmx_backend;

/* A 2-D convolution with square kernel, symmetric zero padding and equal strides. */
typedef struct {
    int n, cin, h, w;  /* input  [n, cin, h, w] */
    int cout, k;       /* weight [cout, cin, k, k], bias [cout] */
    int stride, pad;
    int hout, wout;    /* output [n, cout, hout, wout] */
} rmx_conv_shape;

static inline rmx_conv_shape rmx_conv_shape_make(int n, int cin, int h, int w, int cout, int k,
                                                 int stride, int pad) {
    rmx_conv_shape s = {n, cin, h, w, cout, k, stride, pad,
                        (h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1};
    return s;
}

/* Hyper-parameters of one AdamW step (bias-corrected; decoupled weight decay). */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t t; /* 1-based step count after this update */
} rmx_adamw_hparams;

struct rmx_backend {
    const char *name;
    void *impl;

    /* ---- memory ---- */
    void *(*alloc)(rmx_backend *be, size_t bytes); /* zero-filled; never returns NULL (aborts) */
    void (*free)(rmx_backend *be, void *p);
    void (*to_backend)(rmx_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*to_host)(rmx_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(rmx_backend *be, void *dst, const void *src, size_t bytes);
    void (*fill)(rmx_backend *be, float *x, float value, size_t n);
    void (*sync)(rmx_backend *be); /* wait for queued work (no-op on CPU) */
    void (*destroy)(rmx_backend *be);

    /* ---- convolution ---- */
    /* Scratch floats conv2d_fwd/bwd need for shape s (e.g. an im2col buffer); the caller owns it. */
    size_t (*conv2d_workspace)(rmx_backend *be, const rmx_conv_shape *s);
    void (*conv2d_fwd)(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                       const float *b, float *y, float *ws);
    void (*conv2d_bwd)(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db, float *ws);

    /* ---- normalisation and activations ---- */
    /* GroupNorm over [n, c, hw] with `groups` groups; saves mean and rstd [n * groups] for bwd. */
    void (*groupnorm_fwd)(rmx_backend *be, int n, int c, int hw, int groups, float eps,
                          const float *x, const float *gamma, const float *beta, float *y,
                          float *mean, float *rstd);
    void (*groupnorm_bwd)(rmx_backend *be, int n, int c, int hw, int groups, const float *x,
                          const float *gamma, const float *mean, const float *rstd,
                          const float *dy, float *dx, float *dgamma, float *dbeta);
    void (*silu_fwd)(rmx_backend *be, size_t n, const float *x, float *y);
    void (*silu_bwd)(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx);
    /* Nearest-neighbour x2: x [n, c, h, w] -> y [n, c, 2h, 2w]; bwd sums each 2x2 block. */
    void (*upsample2x_fwd)(rmx_backend *be, int n, int c, int h, int w, const float *x, float *y);
    void (*upsample2x_bwd)(rmx_backend *be, int n, int c, int h, int w, const float *dy, float *dx);

    /* ---- element-wise ---- */
    void (*add)(rmx_backend *be, size_t n, const float *a, const float *b, float *y); /* y = a + b */
    void (*axpy)(rmx_backend *be, size_t n, float alpha, const float *x, float *y);  /* y += a x */
    void (*scale)(rmx_backend *be, size_t n, float alpha, float *x);                  /* x *= a */

    /* ---- randomness (counter-based, util/rng.h) ---- */
    /* out[i * per_sample + j] = standard normal number j of the stream
     * (seed, purpose, step, sample_index[i]); sample_index is a HOST array of n_samples global
     * sample indices, so the noise of a sample does not depend on ranks or micro-batching. */
    void (*randn)(rmx_backend *be, float *out, int n_samples, size_t per_sample, uint64_t seed,
                  uint32_t purpose, uint64_t step, const int64_t *sample_index);

    /* ---- KL bottleneck ---- */
    /* moments [n, 2c, hw]: channels [0, c) the mean, [c, 2c) the log-variance (clamped to
     * [-30, 20] as in latent diffusion); z = mean + exp(logvar / 2) * eps, eps [n, c, hw]. */
    void (*gaussian_sample_fwd)(rmx_backend *be, int n, int c, int hw, const float *moments,
                                const float *eps, float *z);
    /* dmoments is WRITTEN from dz (the KL gradient is added afterwards by kl_loss). */
    void (*gaussian_sample_bwd)(rmx_backend *be, int n, int c, int hw, const float *moments,
                                const float *eps, const float *dz, float *dmoments);

    /* ---- losses: *loss += scale * value; gradients are d(scale * value) ---- */
    /* value = sum over all n*d elements of (xhat - x)^2; dxhat WRITTEN (NULL: skip). With
     * scale = 1 / global_batch this is the brief's L_rec summed over this micro-batch. */
    void (*mse_loss)(rmx_backend *be, size_t count, const float *xhat, const float *x, float scale,
                     float *loss, float *dxhat);
    /* value = -1/2 sum (1 + logvar - mean^2 - exp(logvar)) over moments [n, 2c, hw];
     * dmoments ACCUMULATED (+=) (NULL: skip). */
    void (*kl_loss)(rmx_backend *be, int n, int c, int hw, const float *moments, float scale,
                    float *loss, float *dmoments);

    /* ---- vector quantisation (bottleneck vq) ---- */
    /* z_e [n, d, hw], codebook [k, d]: idx[n * hw] = nearest code (ties: lowest index),
     * z_q [n, d, hw] = its code vector. */
    void (*vq_quantize)(rmx_backend *be, int n, int d, int hw, const float *z_e,
                        const float *codebook, int k, int32_t *idx, float *z_q);
    /* counts[k] += assignments, sums[k * d] += assigned z_e vectors (EMA statistics, summed over
     * ranks by the caller before vq_ema_update). */
    void (*vq_stats)(rmx_backend *be, int n, int d, int hw, const float *z_e, const int32_t *idx,
                     int k, float *counts, float *sums);
    /* ema_count = decay ema_count + (1 - decay) counts; ema_sum likewise; Laplace-smoothed
     * counts (ema_count + eps) / (total + k eps) * total; codebook = ema_sum / smoothed count. */
    void (*vq_ema_update)(rmx_backend *be, int k, int d, float decay, float eps,
                          const float *counts, const float *sums, float *ema_count,
                          float *ema_sum, float *codebook);

    /* ---- optimiser and gradient norm over the flat buffers ---- */
    /* AdamW over n elements; weight decay applies to elements [0, n_decay) only (the parameter
     * registry puts matrices and conv kernels first, biases and norm gains after). */
    void (*adamw)(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                  float *m, float *v, const rmx_adamw_hparams *hp);
    /* *out = sum of x[i]^2 (written, not accumulated), in a fixed order. */
    void (*sumsq)(rmx_backend *be, size_t n, const float *x, float *out);

    /* ---- transformer (the stage-2 DiT); token tensors are [rows, features], row-major ---- */
    /* y[r, o] = sum_i x[r, i] w[o, i] + b[o]: x [rows, in], w [out, in] (a PyTorch Linear's
     * weight), b [out] (NULL: no bias), y [rows, out] written. */
    void (*linear_fwd)(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                       const float *b, float *y);
    /* dx [rows, in] written (NULL: skip); dw [out, in] and db [out] accumulated (NULL: skip). */
    void (*linear_bwd)(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db);
    /* LayerNorm over the last dimension, no affine: y = (x - mean) * rstd, rstd = 1/sqrt(var + eps)
     * with the biased variance; rstd [rows] is saved for the backward. */
    void (*layernorm_fwd)(rmx_backend *be, int rows, int d, float eps, const float *x, float *y,
                          float *rstd);
    /* From the forward's output y and rstd: dx = rstd (dy - mean(dy) - y mean(dy y)), written. */
    void (*layernorm_bwd)(rmx_backend *be, int rows, int d, const float *y, const float *rstd,
                          const float *dy, float *dx);
    /* GELU with the tanh approximation (PyTorch approximate="tanh"); dx written. */
    void (*gelu_fwd)(rmx_backend *be, size_t n, const float *x, float *y);
    void (*gelu_bwd)(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx);
    /* adaLN modulation, x and y [batch, tokens, d]: y[b, t, j] = x[b, t, j] (1 + scale[b ld + j])
     * + shift[b ld + j]. shift and scale are column blocks of the adaLN output [batch, ld]
     * (ld = 6d in a block, 2d in the final layer), so they are passed as pointers plus ld. */
    void (*modulate_fwd)(rmx_backend *be, int batch, int tokens, int d, const float *x,
                         const float *shift, const float *scale, int ld, float *y);
    /* dx written (NULL: skip); dshift[b ld + j] = sum_t dy and dscale[b ld + j] = sum_t dy x,
     * WRITTEN (NULL: skip), summed over tokens in token order. */
    void (*modulate_bwd)(rmx_backend *be, int batch, int tokens, int d, const float *x,
                         const float *scale, int ld, const float *dy, float *dx, float *dshift,
                         float *dscale);
    /* The gated residual of adaLN-Zero, in place on the stream y [batch, tokens, d]:
     * y[b, t, j] += gate[b ld + j] h[b, t, j]. */
    void (*gated_add_fwd)(rmx_backend *be, int batch, int tokens, int d, const float *h,
                          const float *gate, int ld, float *y);
    /* dh = gate dy, written (NULL: skip); dgate[b ld + j] = sum_t dy h, WRITTEN (NULL: skip). The
     * stream's own gradient passes through unchanged (the caller keeps dy). */
    void (*gated_add_bwd)(rmx_backend *be, int batch, int tokens, int d, const float *h,
                          const float *gate, int ld, const float *dy, float *dh, float *dgate);
    /* Multi-head self-attention core. qkv [batch, tokens, 3d] as the qkv Linear writes it: per
     * token q | k | v, each `heads` blocks of head_dim = d / heads (PyTorch's reshape(B, N, 3, H,
     * hd)); out [batch, tokens, d] written, heads concatenated per token (PyTorch's
     * (attn @ v).transpose(1, 2).reshape(B, N, d)); lse [batch, heads, tokens] written: each query
     * row's log-sum-exp of its scaled scores (scale head_dim^-0.5), kept for the backward. Softmax
     * in the stable form; the full [tokens, tokens] score matrix of all heads is never held at
     * once: memory is the workspace, whose size attention_workspace gives (floats). */
    size_t (*attention_workspace)(rmx_backend *be, int batch, int tokens, int d, int heads);
    void (*attention_fwd)(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                          float *out, float *lse, float *ws);
    /* dqkv [batch, tokens, 3d] WRITTEN from the forward's qkv, out, lse and dout. */
    void (*attention_bwd)(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                          const float *out, const float *lse, const float *dout, float *dqkv,
                          float *ws);
    /* Embedding lookup: y[i, :] = table[idx[i], :], idx int32 [n] backend memory, y [n, d]. */
    void (*embedding_fwd)(rmx_backend *be, int n, int d, const int32_t *idx, const float *table,
                          float *y);
    /* dtable[r, :] += sum of dy[i, :] over i with idx[i] == r, in increasing i (deterministic);
     * rows = the table's row count. */
    void (*embedding_bwd)(rmx_backend *be, int n, int d, int rows, const int32_t *idx,
                          const float *dy, float *dtable);
    /* DiT's sinusoidal timestep embedding: t float [n] (backend memory), y [n, dim] written,
     * dim even: half = dim / 2, f_j = exp(-ln(10000) j / half), y[i, j] = cos(t_i f_j) and
     * y[i, half + j] = sin(t_i f_j) for j < half ([cos, sin] order, as DiT). */
    void (*timestep_embed)(rmx_backend *be, int n, int dim, const float *t, float *y);
    /* Image [batch, c, h, w] <-> patch tokens [batch, (h/p) (w/p), c p p], tokens row-major over
     * the (h/p) x (w/p) grid. Within a token the features are ordered by `order`:
     *   RMX_PATCH_CPQ (c, p, q): a Conv2d(kernel = stride = p) weight's flattening, the patch
     *                            embedding's input;
     *   RMX_PATCH_PQC (p, q, c): DiT's final-layer output (unpatchify 'nhwpqc -> nchpwq').
     * The two functions are inverse permutations, so each is the other's backward. Written. */
    void (*patchify)(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                     const float *x, float *tokens);
    void (*unpatchify)(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                       const float *tokens, float *x);
    /* y[b * n + i] += a[i] for b < batch: a row block (positions) added to every sample. */
    void (*add_broadcast)(rmx_backend *be, int batch, size_t n, const float *a, float *y);

    /* ---- diffusion arithmetic ---- */
    /* Per-sample linear combination, y[s, j] = a[s] x[s, j] + b[s] e[s, j] for n samples of
     * per_sample floats; a and b are HOST arrays [n]. y may be x or e (noising z_t, x0 from eps). */
    void (*axpby_samples)(rmx_backend *be, int n, size_t per_sample, const float *a, const float *x,
                          const float *b, const float *e, float *y);
    /* EMA of the weights: ema[i] = decay ema[i] + (1 - decay) param[i] (elementwise.h rmx_ema). */
    void (*ema_update)(rmx_backend *be, size_t n, float decay, const float *param, float *ema);

    /* ---- remix (stage 3) losses ---- */
    /* Gram matrices of feature maps: f [n, c, hw], g [n, c, c] WRITTEN,
     * g[b, i, j] = scale * sum_k f[b, i, k] f[b, j, k] (scale = 1 / (c hw) gives the brief's
     * G = F F^T / (C H W)). Sum over k in increasing k order (or a fixed blocked order) so the
     * result does not depend on the thread count. */
    void (*gram_fwd)(rmx_backend *be, int n, int c, int hw, float scale, const float *f, float *g);
    /* df[b] += scale (dg[b] + dg[b]^T) f[b]: df [n, c, hw] ACCUMULATED. */
    void (*gram_bwd)(rmx_backend *be, int n, int c, int hw, float scale, const float *f,
                     const float *dg, float *df);
    /* Total variation of x [n, c, h, w] (h = mel bins / frequency, w = frames / time):
     * value = sum over samples b of ( sum of (x[b,ch,i+1,j] - x[b,ch,i,j])^2 / (c (h-1) w)
     *                               + sum of (x[b,ch,i,j+1] - x[b,ch,i,j])^2 / (c h (w-1)) ),
     * i.e. per sample the mean squared neighbour difference along frequency plus that along time
     * (a term whose count is 0, h == 1 or w == 1, contributes 0). *loss += scale * value;
     * dx ACCUMULATED (+=) with d(scale * value)/dx (NULL: skip). Reductions in a fixed order
     * (elementwise.h rmx_tv_*: the per-element terms and gradients every backend uses). */
    void (*tv_loss)(rmx_backend *be, int n, int c, int h, int w, const float *x, float scale,
                    float *loss, float *dx);
};

/* Token orders of patchify / unpatchify. */
enum { RMX_PATCH_CPQ = 0, RMX_PATCH_PQC = 1 };

/* 0 when every op of `be` is filled in; else -1 and a message naming the first missing op
 * ("backend cuda lacks attention_bwd"). Every constructor calls it, so a missing op is an error at
 * creation, never a NULL call. */
int rmx_backend_check(const rmx_backend *be, char *err, size_t errlen);

/* Constructors. threads <= 0 leaves the OpenMP default. */
rmx_backend *rmx_backend_ref_create(void);
rmx_backend *rmx_backend_cpu_create(int threads);
/* device_ordinal: the rank's index on its node, taken modulo the number of visible devices.
 * Returns NULL (and a message in err) when built without CUDA or when no GPU is visible. */
rmx_backend *rmx_backend_cuda_create(int device_ordinal, char *err, size_t errlen);

#endif
