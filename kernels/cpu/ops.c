/* Everything but the convolutions and the transformer ops, on the CPU: OpenMP over samples, groups
 * or elements, with the per-element arithmetic of kernels/elementwise.h; the remix stage's Gram
 * matrices through rmx_cpu_sgemm (gemm.c).
 *
 * Reductions (losses, sumsq, statistics summed over the batch) never depend on the thread count:
 * a sum is cut into blocks whose size depends on the length alone, each block is summed in double
 * in index order, and the block sums are added in block order. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/elementwise.h"
#include "util/rng.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384

/* ---- fixed-order reductions ---- */

#define RED_BLOCK 8192
#define RED_MAX_BLOCKS 1024

/* Sum of block(ctx, begin, end) over [0, n) in blocks of a size fixed by n. */
typedef double (*block_sum_fn)(void *ctx, size_t begin, size_t end);

static double fixed_order_sum(int nt, size_t n, block_sum_fn fn, void *ctx) {
    size_t bs = (n + RED_MAX_BLOCKS - 1) / RED_MAX_BLOCKS;
    if (bs < RED_BLOCK) bs = RED_BLOCK;
    long nblk = (long)((n + bs - 1) / bs);
    double part[RED_MAX_BLOCKS];
#pragma omp parallel for num_threads(nt) schedule(static) if (nblk > 1)
    for (long i = 0; i < nblk; i++) {
        size_t b = (size_t)i * bs, e = b + bs < n ? b + bs : n;
        part[i] = fn(ctx, b, e);
    }
    double total = 0.0;
    for (long i = 0; i < nblk; i++) total += part[i];
    return total;
}

/* ---- GroupNorm ---- */

/* Sum of (x - mu)^2 in double; the second pass of the two-pass variance. */
static double sumsq_dev_f64(const float *x, size_t n, double mu) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += ((double)x[i + l] - mu) * ((double)x[i + l] - mu);
    for (; i < n; i++) acc[i & 7] += ((double)x[i] - mu) * ((double)x[i] - mu);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void cpu_groupnorm_fwd(rmx_backend *be, int n, int c, int hw, int groups, float eps,
                              const float *x, const float *gamma, const float *beta, float *y,
                              float *mean, float *rstd) {
    int cg = c / groups;
    size_t len = (size_t)cg * hw;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static)
    for (int i = 0; i < n * groups; i++) {
        int b = i / groups, g = i % groups;
        size_t off = ((size_t)b * c + (size_t)g * cg) * hw;
        double mu = rmx_sum_f64(x + off, len) / (double)len;
        double rs = 1.0 / sqrt(sumsq_dev_f64(x + off, len, mu) / (double)len + (double)eps);
        if (mean) mean[i] = (float)mu;
        if (rstd) rstd[i] = (float)rs;
        for (int j = 0; j < cg; j++) {
            int ch = g * cg + j;
            rmx_gn_affine t = rmx_groupnorm_affine(mu, rs, gamma, beta, ch);
            float af = t.scale, of = t.shift;
            const float *xs = x + off + (size_t)j * hw;
            float *ys = y + off + (size_t)j * hw;
            for (int p = 0; p < hw; p++) ys[p] = xs[p] * af + of;
        }
    }
}

/* Per (sample, channel): sdy = sum dy, sdyx = sum dy xhat, the ingredients of every gradient. With
 * g = dy gamma over a group of m elements: dx = rstd (g - mean(g) - xhat mean(g xhat)). dgamma and
 * dbeta are summed over samples afterwards, in sample order. */
static void cpu_groupnorm_bwd(rmx_backend *be, int n, int c, int hw, int groups, const float *x,
                              const float *gamma, const float *mean, const float *rstd,
                              const float *dy, float *dx, float *dgamma, float *dbeta) {
    int nt = rmx_cpu_threads(be), cg = c / groups;
    double m = (double)cg * hw;
    double *sdy = malloc(sizeof(double) * 2 * (size_t)n * c), *sdyx = sdy + (size_t)n * c;
    if (!sdy) abort();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < n * groups; i++) {
        int b = i / groups, g = i % groups;
        double mu = mean[i], rs = rstd[i], sg = 0.0, sgx = 0.0;
        for (int j = 0; j < cg; j++) {
            int ch = g * cg + j;
            size_t off = ((size_t)b * c + ch) * hw;
            double s1 = rmx_sum_f64(dy + off, hw), sx = rmx_dot_f64(dy + off, x + off, hw);
            double s2 = rs * (sx - mu * s1); /* sum dy xhat */
            double ga = gamma ? gamma[ch] : 1.0;
            sdy[(size_t)b * c + ch] = s1;
            sdyx[(size_t)b * c + ch] = s2;
            sg += ga * s1;
            sgx += ga * s2;
        }
        if (!dx) continue;
        double mg = sg / m, mgx = sgx / m;
        /* dx = dy (rstd gamma) + x (-rstd^2 mgx) + (rstd^2 mgx mean - rstd mg) */
        float cx = (float)(-rs * rs * mgx), c0 = (float)(rs * rs * mgx * mu - rs * mg);
        for (int j = 0; j < cg; j++) {
            int ch = g * cg + j;
            size_t off = ((size_t)b * c + ch) * hw;
            float cd = (float)(rs * (gamma ? gamma[ch] : 1.0));
            for (int p = 0; p < hw; p++) dx[off + p] = dy[off + p] * cd + x[off + p] * cx + c0;
        }
    }
    for (int ch = 0; ch < c; ch++) rmx_groupnorm_param_grad(n, c, ch, sdy, sdyx, dgamma, dbeta);
    free(sdy);
}

/* ---- activations and resampling ---- */

/* SiLU is the one element-wise op with real arithmetic (an exponential and a division per
 * element), so its loops get the vector-width clones. */
RMX_CLONES static void silu_fwd_range(const float *x, float *y, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) y[i] = rmx_silu(x[i]);
}

RMX_CLONES static void silu_bwd_range(const float *x, const float *dy, float *dx, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) dx[i] = dy[i] * rmx_silu_grad(x[i]);
}

static void cpu_silu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
#pragma omp parallel num_threads(rmx_cpu_threads(be)) if (n > PAR_MIN)
    {
        size_t b, e;
        rmx_thread_range(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        silu_fwd_range(x, y, b, e);
    }
}

static void cpu_silu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
#pragma omp parallel num_threads(rmx_cpu_threads(be)) if (n > PAR_MIN)
    {
        size_t b, e;
        rmx_thread_range(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        silu_bwd_range(x, dy, dx, b, e);
    }
}

static void cpu_upsample2x_fwd(rmx_backend *be, int n, int c, int h, int w, const float *x, float *y) {
    size_t w2 = 2 * (size_t)w;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static)
    for (long plane = 0; plane < (long)n * c; plane++)
        for (int iy = 0; iy < h; iy++) {
            const float *src = x + ((size_t)plane * h + iy) * w;
            float *dst = y + ((size_t)plane * 2 * h + 2 * iy) * w2;
            for (int ix = 0; ix < w; ix++) dst[2 * ix] = dst[2 * ix + 1] = src[ix];
            memcpy(dst + w2, dst, sizeof(float) * w2);
        }
}

static void cpu_upsample2x_bwd(rmx_backend *be, int n, int c, int h, int w, const float *dy, float *dx) {
    size_t w2 = 2 * (size_t)w;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static)
    for (long plane = 0; plane < (long)n * c; plane++)
        for (int iy = 0; iy < h; iy++) {
            const float *d = dy + ((size_t)plane * 2 * h + 2 * iy) * w2;
            float *dst = dx + ((size_t)plane * h + iy) * w;
            for (int ix = 0; ix < w; ix++)
                dst[ix] = (d[2 * ix] + d[2 * ix + 1]) + (d[w2 + 2 * ix] + d[w2 + 2 * ix + 1]);
        }
}

/* ---- element-wise ---- */

static void cpu_add(rmx_backend *be, size_t n, const float *a, const float *b, float *y) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void cpu_axpy(rmx_backend *be, size_t n, float alpha, const float *x, float *y) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void cpu_scale(rmx_backend *be, size_t n, float alpha, float *x) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

/* ---- randomness ---- */

static void cpu_randn(rmx_backend *be, float *out, int n_samples, size_t per_sample, uint64_t seed,
                      uint32_t purpose, uint64_t step, const int64_t *sample_index) {
    size_t total = (size_t)n_samples * per_sample;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (total > PAR_MIN)
    for (size_t e = 0; e < total; e++) {
        size_t i = e / per_sample, j = e % per_sample;
        out[e] = rmx_normal(seed, purpose, step, (uint64_t)sample_index[i], (uint32_t)j);
    }
}

/* ---- KL bottleneck ---- */

static void cpu_gaussian_sample_fwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                    const float *eps, float *z) {
    size_t chw = (size_t)c * hw, total = (size_t)n * chw;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (total > PAR_MIN)
    for (size_t e = 0; e < total; e++) {
        size_t b = e / chw, i = e % chw;
        const float *mean = moments + b * 2 * chw;
        z[e] = rmx_gaussian_sample(mean[i], mean[chw + i], eps[e]);
    }
}

static void cpu_gaussian_sample_bwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                    const float *eps, const float *dz, float *dmoments) {
    size_t chw = (size_t)c * hw, total = (size_t)n * chw;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (total > PAR_MIN)
    for (size_t e = 0; e < total; e++) {
        size_t b = e / chw, i = e % chw;
        float *dmean = dmoments + b * 2 * chw;
        dmean[i] = dz[e];
        dmean[chw + i] = dz[e] * rmx_gaussian_sample_dlogvar(moments[b * 2 * chw + chw + i], eps[e]);
    }
}

/* ---- losses ---- */

typedef struct {
    const float *xhat, *x;
    float scale;
    float *dxhat;
} mse_ctx;

static double mse_block(void *vctx, size_t begin, size_t end) {
    const mse_ctx *c = vctx;
    double acc[8] = {0};
    for (size_t i = begin; i < end; i++) acc[(i - begin) & 7] += rmx_mse_term(c->xhat[i], c->x[i]);
    if (c->dxhat)
        for (size_t i = begin; i < end; i++) c->dxhat[i] = rmx_mse_grad(c->xhat[i], c->x[i], c->scale);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void cpu_mse_loss(rmx_backend *be, size_t count, const float *xhat, const float *x, float scale,
                         float *loss, float *dxhat) {
    mse_ctx c = {xhat, x, scale, dxhat};
    double sum = fixed_order_sum(rmx_cpu_threads(be), count, mse_block, &c);
    *loss = (float)((double)*loss + (double)scale * sum);
}

typedef struct {
    const float *moments;
    size_t chw;
    float scale;
    float *dmoments;
} kl_ctx;

/* Elements [begin, end) of the latent [n, c, hw] (mean half), crossing samples as needed. */
static double kl_block(void *vctx, size_t begin, size_t end) {
    const kl_ctx *c = vctx;
    double sum = 0.0;
    for (size_t e = begin; e < end; e++) {
        size_t b = e / c->chw, i = e % c->chw;
        const float *mean = c->moments + b * 2 * c->chw;
        sum += rmx_kl_term(mean[i], mean[c->chw + i]);
        if (c->dmoments) {
            float *dmean = c->dmoments + b * 2 * c->chw;
            dmean[i] += c->scale * rmx_kl_dmean(mean[i]);
            dmean[c->chw + i] += c->scale * rmx_kl_dlogvar(mean[c->chw + i]);
        }
    }
    return sum;
}

static void cpu_kl_loss(rmx_backend *be, int n, int c, int hw, const float *moments, float scale,
                        float *loss, float *dmoments) {
    kl_ctx k = {moments, (size_t)c * hw, scale, dmoments};
    double sum = fixed_order_sum(rmx_cpu_threads(be), (size_t)n * c * hw, kl_block, &k);
    *loss = (float)((double)*loss + (double)scale * sum);
}

/* ---- vector quantisation ---- */

static void cpu_vq_quantize(rmx_backend *be, int n, int d, int hw, const float *z_e,
                            const float *codebook, int k, int32_t *idx, float *z_q) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static)
    for (long q = 0; q < (long)n * hw; q++) {
        size_t b = (size_t)q / hw, p = (size_t)q % hw;
        const float *z = z_e + b * d * hw + p;
        int best = rmx_vq_nearest(z, hw, codebook, k, d);
        idx[q] = best;
        for (int j = 0; j < d; j++) z_q[(b * d + j) * hw + p] = codebook[(size_t)best * d + j];
    }
}

/* One thread per latent channel, each visiting positions in (sample, position) order: the same
 * float additions, in the same order, as the reference. */
static void cpu_vq_stats(rmx_backend *be, int n, int d, int hw, const float *z_e, const int32_t *idx,
                         int k, float *counts, float *sums) {
    (void)k;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static)
    for (int j = -1; j < d; j++)
        for (int b = 0; b < n; b++)
            for (int p = 0; p < hw; p++) {
                int code = idx[(size_t)b * hw + p];
                if (j < 0)
                    counts[code] += 1.0f;
                else
                    sums[(size_t)code * d + j] += z_e[((size_t)b * d + j) * hw + p];
            }
}

/* ---- optimiser and norm ---- */

static void cpu_adamw(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                      float *m, float *v, const rmx_adamw_hparams *hp) {
    rmx_adamw_consts c = rmx_adamw_consts_make(hp->lr, hp->beta1, hp->beta2, hp->eps,
                                               hp->weight_decay, hp->t);
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        rmx_adamw_elem(&param[i], grad[i], &m[i], &v[i], &c, i < n_decay ? c.decay : 1.0f);
}

static double sumsq_block(void *vctx, size_t begin, size_t end) {
    const float *x = vctx;
    return rmx_dot_f64(x + begin, x + begin, end - begin);
}

static void cpu_sumsq(rmx_backend *be, size_t n, const float *x, float *out) {
    *out = (float)fixed_order_sum(rmx_cpu_threads(be), n, sumsq_block, (void *)x);
}

/* ---- remix (stage 3) losses ---- */

/* Gram matrices through rmx_cpu_sgemm, one single-threaded call per task, tasks over (sample, block
 * of rows of g) forward and (sample, block of columns of df) backward: the blocks are a function of
 * the shape alone, so the bits do not depend on the thread count. */
#define GRAM_TM 48    /* rows of g a forward task computes, a multiple of the micro-kernel's 12 ... */
#define GRAM_TM_MIN 12 /* ... halved down to this while there are fewer than GRAM_MIN_TASKS tasks */
#define GRAM_TN 384   /* columns of df a backward task computes, a multiple of the micro-kernel's 32 */
#define GRAM_MIN_TASKS 16

static void cpu_gram_fwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f, float *g) {
    int tm = GRAM_TM;
    while (tm > GRAM_TM_MIN && (long)n * ((c + tm - 1) / tm) < GRAM_MIN_TASKS) tm /= 2;
    int tr = (c + tm - 1) / tm;
    long tasks = (long)n * tr;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(dynamic, 1) if (tasks > 1)
    for (long t = 0; t < tasks; t++) {
        int b = (int)(t / tr), r0 = (int)(t % tr) * tm, nr = c - r0 < tm ? c - r0 : tm;
        const float *fb = f + (size_t)b * c * hw;
        /* g[b, r0 .. r0 + nr, :] = scale f[b, r0 .., :] f[b]^T */
        rmx_cpu_sgemm(0, 1, nr, c, hw, scale, fb + (size_t)r0 * hw, hw, fb, hw, 0.0f,
                      g + ((size_t)b * c + r0) * c, c);
    }
}

/* df[b] += scale S f[b] with S = dg[b] + dg[b]^T (elementwise.h rmx_gram_sym), formed first. */
static void cpu_gram_bwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f,
                         const float *dg, float *df) {
    int nt = rmx_cpu_threads(be);
    size_t cc = (size_t)c * c;
    if (n <= 0 || c <= 0 || hw <= 0) return;
    float *sym = malloc(sizeof(float) * (size_t)n * cc);
    if (!sym) abort();
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)n * cc > PAR_MIN)
    for (long r = 0; r < (long)n * c; r++) {
        size_t b = (size_t)r / c, i = (size_t)r % c;
        const float *dgb = dg + b * cc;
        for (size_t j = 0; j < (size_t)c; j++) sym[b * cc + i * c + j] = rmx_gram_sym(dgb[i * c + j], dgb[j * c + i]);
    }
    int tc = (hw + GRAM_TN - 1) / GRAM_TN;
    long tasks = (long)n * tc;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (tasks > 1)
    for (long t = 0; t < tasks; t++) {
        int b = (int)(t / tc), k0 = (int)(t % tc) * GRAM_TN, nk = hw - k0 < GRAM_TN ? hw - k0 : GRAM_TN;
        size_t off = (size_t)b * c * hw + (size_t)k0;
        rmx_cpu_sgemm(0, 0, c, nk, c, scale, sym + (size_t)b * cc, c, f + off, hw, 1.0f, df + off, hw);
    }
    free(sym);
}

typedef struct {
    const float *x;
    float *dx;
    int h, w;
    rmx_tv_consts k;
} tv_ctx;

/* Elements [begin, end) of x [n, c, h, w], crossing rows and planes as needed; the sum in eight
 * lanes by position within the block, as mse_block. */
static double tv_block(void *vctx, size_t begin, size_t end) {
    const tv_ctx *c = vctx;
    size_t plane = (size_t)c->h * c->w;
    double acc[8] = {0};
    size_t e = begin;
    while (e < end) {
        size_t pl = e / plane, r = e % plane;
        int i = (int)(r / (size_t)c->w), j = (int)(r % (size_t)c->w);
        int jend = end - e < (size_t)(c->w - j) ? j + (int)(end - e) : c->w;
        const float *p = c->x + pl * plane;
        float *d = c->dx ? c->dx + pl * plane : NULL;
        for (; j < jend; j++, e++) {
            acc[(e - begin) & 7] += rmx_tv_term(p, c->h, c->w, i, j, c->k);
            if (d) d[(size_t)i * c->w + j] += rmx_tv_grad(p, c->h, c->w, i, j, c->k);
        }
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void cpu_tv_loss(rmx_backend *be, int n, int c, int h, int w, const float *x, float scale,
                        float *loss, float *dx) {
    tv_ctx t = {x, dx, h, w, rmx_tv_consts_make(c, h, w, scale)};
    size_t total = (size_t)n * c * h * w;
    double sum = total ? fixed_order_sum(rmx_cpu_threads(be), total, tv_block, &t) : 0.0;
    *loss = (float)((double)*loss + (double)scale * sum);
}

/* vq_ema_update stays the reference's: k codes of d floats are too few to be worth threads. */
void rmx_cpu_install_ops(rmx_backend *be) {
    be->groupnorm_fwd = cpu_groupnorm_fwd;
    be->groupnorm_bwd = cpu_groupnorm_bwd;
    be->silu_fwd = cpu_silu_fwd;
    be->silu_bwd = cpu_silu_bwd;
    be->upsample2x_fwd = cpu_upsample2x_fwd;
    be->upsample2x_bwd = cpu_upsample2x_bwd;
    be->add = cpu_add;
    be->axpy = cpu_axpy;
    be->scale = cpu_scale;
    be->randn = cpu_randn;
    be->gaussian_sample_fwd = cpu_gaussian_sample_fwd;
    be->gaussian_sample_bwd = cpu_gaussian_sample_bwd;
    be->mse_loss = cpu_mse_loss;
    be->kl_loss = cpu_kl_loss;
    be->vq_quantize = cpu_vq_quantize;
    be->vq_stats = cpu_vq_stats;
    be->adamw = cpu_adamw;
    be->sumsq = cpu_sumsq;
    be->gram_fwd = cpu_gram_fwd;
    be->gram_bwd = cpu_gram_bwd;
    be->tv_loss = cpu_tv_loss;
}
