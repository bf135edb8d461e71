/* The reference backend: plain loops over host memory, written for obviousness, not speed.
 *
 * Every fast path (cpu, cuda) is tested against these functions, so they compute each output
 * directly from its definition (direct convolution, gather-form gradients) and accumulate in
 * double wherever a long sum would otherwise carry float rounding into the comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"
#include "util/rng.h"

/* ---- memory (shared with the cpu backend, which starts from a ref backend) ---- */

static void *ref_alloc(rmx_backend *be, size_t bytes) {
    (void)be;
    /* 64-byte alignment suits AVX-512 loads and keeps rows of the flat buffers on cache lines. */
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        fprintf(stderr, "remixer: error: out of host memory allocating %zu bytes\n", bytes);
        abort();
    }
    memset(p, 0, rounded);
    return p;
}

static void ref_free(rmx_backend *be, void *p) {
    (void)be;
    free(p);
}

static void ref_memcpy(rmx_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void ref_fill(rmx_backend *be, float *x, float value, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] = value;
}

static void ref_sync(rmx_backend *be) { (void)be; }

static void ref_destroy(rmx_backend *be) { free(be); }

/* ---- convolution ---- */

static size_t ref_conv2d_workspace(rmx_backend *be, const rmx_conv_shape *s) {
    (void)be;
    (void)s;
    return 0;
}

/* y[b, co, oy, ox] = bias[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] x[b, ci, oy s - p + ky, ox s - p + kx] */
static void ref_conv2d_fwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                           const float *bias, float *y, float *ws) {
    (void)be;
    (void)ws;
    int k = s->k;
    for (int b = 0; b < s->n; b++)
        for (int co = 0; co < s->cout; co++)
            for (int oy = 0; oy < s->hout; oy++)
                for (int ox = 0; ox < s->wout; ox++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < k; ky++) {
                            int iy = oy * s->stride - s->pad + ky;
                            if (iy < 0 || iy >= s->h) continue;
                            for (int kx = 0; kx < k; kx++) {
                                int ix = ox * s->stride - s->pad + kx;
                                if (ix < 0 || ix >= s->w) continue;
                                acc += (double)w[((size_t)(co * s->cin + ci) * k + ky) * k + kx] *
                                       x[((size_t)(b * s->cin + ci) * s->h + iy) * s->w + ix];
                            }
                        }
                    y[((size_t)(b * s->cout + co) * s->hout + oy) * s->wout + ox] = (float)acc;
                }
}

/* Output index along one axis that tap `kk` maps onto input position `i`, or -1. */
static int conv_out_index(int i, int kk, int stride, int pad, int nout) {
    int t = i + pad - kk;
    if (t < 0 || t % stride) return -1;
    t /= stride;
    return t < nout ? t : -1;
}

/* dx in gather form: each input element sums the output gradients it contributed to. */
static void ref_conv2d_dx(const rmx_conv_shape *s, const float *w, const float *dy, float *dx) {
    int k = s->k;
    for (int b = 0; b < s->n; b++)
        for (int ci = 0; ci < s->cin; ci++)
            for (int iy = 0; iy < s->h; iy++)
                for (int ix = 0; ix < s->w; ix++) {
                    double acc = 0.0;
                    for (int ky = 0; ky < k; ky++) {
                        int oy = conv_out_index(iy, ky, s->stride, s->pad, s->hout);
                        if (oy < 0) continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ox = conv_out_index(ix, kx, s->stride, s->pad, s->wout);
                            if (ox < 0) continue;
                            for (int co = 0; co < s->cout; co++)
                                acc += (double)w[((size_t)(co * s->cin + ci) * k + ky) * k + kx] *
                                       dy[((size_t)(b * s->cout + co) * s->hout + oy) * s->wout + ox];
                        }
                    }
                    dx[((size_t)(b * s->cin + ci) * s->h + iy) * s->w + ix] = (float)acc;
                }
}

static void ref_conv2d_dw(const rmx_conv_shape *s, const float *x, const float *dy, float *dw) {
    int k = s->k;
    for (int co = 0; co < s->cout; co++)
        for (int ci = 0; ci < s->cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    double acc = 0.0;
                    for (int b = 0; b < s->n; b++)
                        for (int oy = 0; oy < s->hout; oy++) {
                            int iy = oy * s->stride - s->pad + ky;
                            if (iy < 0 || iy >= s->h) continue;
                            for (int ox = 0; ox < s->wout; ox++) {
                                int ix = ox * s->stride - s->pad + kx;
                                if (ix < 0 || ix >= s->w) continue;
                                size_t o = ((size_t)(b * s->cout + co) * s->hout + oy) * s->wout + ox;
                                acc += (double)dy[o] * x[((size_t)(b * s->cin + ci) * s->h + iy) * s->w + ix];
                            }
                        }
                    dw[((size_t)(co * s->cin + ci) * k + ky) * k + kx] += (float)acc;
                }
}

static void ref_conv2d_db(const rmx_conv_shape *s, const float *dy, float *db) {
    size_t hw = (size_t)s->hout * s->wout;
    for (int co = 0; co < s->cout; co++) {
        double acc = 0.0;
        for (int b = 0; b < s->n; b++)
            for (size_t p = 0; p < hw; p++) acc += dy[((size_t)b * s->cout + co) * hw + p];
        db[co] += (float)acc;
    }
}

static void ref_conv2d_bwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db, float *ws) {
    (void)be;
    (void)ws;
    if (dx) ref_conv2d_dx(s, w, dy, dx);
    if (dw) ref_conv2d_dw(s, x, dy, dw);
    if (db) ref_conv2d_db(s, dy, db);
}

/* ---- GroupNorm ---- */

/* Statistics of one (sample, group) slab of cg * hw contiguous floats: two passes in double. */
static void group_stats(const float *xg, size_t len, float eps, double *mean, double *rstd) {
    double sum = 0.0;
    for (size_t i = 0; i < len; i++) sum += xg[i];
    double mu = sum / (double)len, var = 0.0;
    for (size_t i = 0; i < len; i++) var += ((double)xg[i] - mu) * ((double)xg[i] - mu);
    *mean = mu;
    *rstd = 1.0 / sqrt(var / (double)len + (double)eps);
}

static void ref_groupnorm_fwd(rmx_backend *be, int n, int c, int hw, int groups, float eps,
                              const float *x, const float *gamma, const float *beta, float *y,
                              float *mean, float *rstd) {
    (void)be;
    int cg = c / groups;
    size_t len = (size_t)cg * hw;
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw;
            double mu, rs;
            group_stats(x + off, len, eps, &mu, &rs);
            if (mean) mean[b * groups + g] = (float)mu;
            if (rstd) rstd[b * groups + g] = (float)rs;
            for (int j = 0; j < cg; j++) {
                int ch = g * cg + j;
                double ga = gamma ? gamma[ch] : 1.0, bt = beta ? beta[ch] : 0.0;
                for (int p = 0; p < hw; p++) {
                    size_t i = off + (size_t)j * hw + p;
                    y[i] = (float)(((double)x[i] - mu) * rs * ga + bt);
                }
            }
        }
}

/* With xhat = (x - mean) rstd and g = dy gamma, over a group of m elements:
 * dx = rstd (g - mean(g) - xhat mean(g xhat)). */
static void ref_groupnorm_bwd(rmx_backend *be, int n, int c, int hw, int groups, const float *x,
                              const float *gamma, const float *mean, const float *rstd,
                              const float *dy, float *dx, float *dgamma, float *dbeta) {
    (void)be;
    int cg = c / groups;
    double m = (double)cg * hw;
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw;
            double mu = mean[b * groups + g], rs = rstd[b * groups + g];
            double sg = 0.0, sgx = 0.0;
            for (int j = 0; j < cg; j++) {
                int ch = g * cg + j;
                double ga = gamma ? gamma[ch] : 1.0, dga = 0.0, dbe = 0.0;
                for (int p = 0; p < hw; p++) {
                    size_t i = off + (size_t)j * hw + p;
                    double xh = ((double)x[i] - mu) * rs;
                    sg += dy[i] * ga;
                    sgx += dy[i] * ga * xh;
                    dga += dy[i] * xh;
                    dbe += dy[i];
                }
                if (dgamma) dgamma[ch] += (float)dga;
                if (dbeta) dbeta[ch] += (float)dbe;
            }
            if (!dx) continue;
            double mg = sg / m, mgx = sgx / m;
            for (int j = 0; j < cg; j++) {
                int ch = g * cg + j;
                double ga = gamma ? gamma[ch] : 1.0;
                for (int p = 0; p < hw; p++) {
                    size_t i = off + (size_t)j * hw + p;
                    double xh = ((double)x[i] - mu) * rs;
                    dx[i] = (float)(rs * (dy[i] * ga - mg - xh * mgx));
                }
            }
        }
}

/* ---- activations and resampling ---- */

static void ref_silu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] = rmx_silu(x[i]);
}

static void ref_silu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    (void)be;
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * rmx_silu_grad(x[i]);
}

static void ref_upsample2x_fwd(rmx_backend *be, int n, int c, int h, int w, const float *x, float *y) {
    (void)be;
    for (size_t plane = 0; plane < (size_t)n * c; plane++)
        for (int oy = 0; oy < 2 * h; oy++)
            for (int ox = 0; ox < 2 * w; ox++)
                y[(plane * 2 * h + oy) * 2 * w + ox] = x[(plane * h + oy / 2) * w + ox / 2];
}

static void ref_upsample2x_bwd(rmx_backend *be, int n, int c, int h, int w, const float *dy, float *dx) {
    (void)be;
    size_t w2 = 2 * (size_t)w;
    for (size_t plane = 0; plane < (size_t)n * c; plane++)
        for (int iy = 0; iy < h; iy++)
            for (int ix = 0; ix < w; ix++) {
                const float *d = dy + (plane * 2 * h + 2 * iy) * w2 + 2 * ix;
                dx[(plane * h + iy) * w + ix] = (d[0] + d[1]) + (d[w2] + d[w2 + 1]);
            }
}

/* ---- element-wise ---- */

static void ref_add(rmx_backend *be, size_t n, const float *a, const float *b, float *y) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void ref_axpy(rmx_backend *be, size_t n, float alpha, const float *x, float *y) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void ref_scale(rmx_backend *be, size_t n, float alpha, float *x) {
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

/* ---- randomness ---- */

static void ref_randn(rmx_backend *be, float *out, int n_samples, size_t per_sample, uint64_t seed,
                      uint32_t purpose, uint64_t step, const int64_t *sample_index) {
    (void)be;
    for (int i = 0; i < n_samples; i++)
        for (size_t j = 0; j < per_sample; j++)
            out[(size_t)i * per_sample + j] =
                rmx_normal(seed, purpose, step, (uint64_t)sample_index[i], (uint32_t)j);
}

/* ---- KL bottleneck ---- */

static void ref_gaussian_sample_fwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                    const float *eps, float *z) {
    (void)be;
    size_t chw = (size_t)c * hw;
    for (int b = 0; b < n; b++) {
        const float *mean = moments + (size_t)b * 2 * chw, *logvar = mean + chw;
        for (size_t i = 0; i < chw; i++)
            z[b * chw + i] = rmx_gaussian_sample(mean[i], logvar[i], eps[b * chw + i]);
    }
}

static void ref_gaussian_sample_bwd(rmx_backend *be, int n, int c, int hw, const float *moments,
                                    const float *eps, const float *dz, float *dmoments) {
    (void)be;
    size_t chw = (size_t)c * hw;
    for (int b = 0; b < n; b++) {
        const float *logvar = moments + (size_t)b * 2 * chw + chw;
        float *dmean = dmoments + (size_t)b * 2 * chw, *dlogvar = dmean + chw;
        for (size_t i = 0; i < chw; i++) {
            float g = dz[b * chw + i];
            dmean[i] = g;
            dlogvar[i] = g * rmx_gaussian_sample_dlogvar(logvar[i], eps[b * chw + i]);
        }
    }
}

/* ---- losses ---- */

static void ref_mse_loss(rmx_backend *be, size_t count, const float *xhat, const float *x, float scale,
                         float *loss, float *dxhat) {
    (void)be;
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += rmx_mse_term(xhat[i], x[i]);
    if (dxhat)
        for (size_t i = 0; i < count; i++) dxhat[i] = rmx_mse_grad(xhat[i], x[i], scale);
    *loss = (float)((double)*loss + (double)scale * sum);
}

static void ref_kl_loss(rmx_backend *be, int n, int c, int hw, const float *moments, float scale,
                        float *loss, float *dmoments) {
    (void)be;
    size_t chw = (size_t)c * hw;
    double sum = 0.0;
    for (int b = 0; b < n; b++) {
        const float *mean = moments + (size_t)b * 2 * chw, *logvar = mean + chw;
        for (size_t i = 0; i < chw; i++) sum += rmx_kl_term(mean[i], logvar[i]);
        if (!dmoments) continue;
        float *dmean = dmoments + (size_t)b * 2 * chw, *dlogvar = dmean + chw;
        for (size_t i = 0; i < chw; i++) {
            dmean[i] += scale * rmx_kl_dmean(mean[i]);
            dlogvar[i] += scale * rmx_kl_dlogvar(logvar[i]);
        }
    }
    *loss = (float)((double)*loss + (double)scale * sum);
}

/* ---- vector quantisation ---- */

static void ref_vq_quantize(rmx_backend *be, int n, int d, int hw, const float *z_e,
                            const float *codebook, int k, int32_t *idx, float *z_q) {
    (void)be;
    for (int b = 0; b < n; b++)
        for (int p = 0; p < hw; p++) {
            const float *z = z_e + (size_t)b * d * hw + p;
            int best = rmx_vq_nearest(z, hw, codebook, k, d);
            idx[(size_t)b * hw + p] = best;
            for (int j = 0; j < d; j++) z_q[((size_t)b * d + j) * hw + p] = codebook[(size_t)best * d + j];
        }
}

/* Positions are visited in (sample, position) order, the order every backend sums in. */
static void ref_vq_stats(rmx_backend *be, int n, int d, int hw, const float *z_e, const int32_t *idx,
                         int k, float *counts, float *sums) {
    (void)be;
    (void)k;
    for (int b = 0; b < n; b++)
        for (int p = 0; p < hw; p++) {
            int code = idx[(size_t)b * hw + p];
            counts[code] += 1.0f;
            for (int j = 0; j < d; j++) sums[(size_t)code * d + j] += z_e[((size_t)b * d + j) * hw + p];
        }
}

static void ref_vq_ema_update(rmx_backend *be, int k, int d, float decay, float eps,
                              const float *counts, const float *sums, float *ema_count,
                              float *ema_sum, float *codebook) {
    (void)be;
    double total = 0.0;
    for (int j = 0; j < k; j++) {
        ema_count[j] = rmx_ema(ema_count[j], counts[j], decay);
        total += ema_count[j];
    }
    for (int j = 0; j < k; j++) {
        float smoothed = rmx_laplace_count(ema_count[j], (float)total, k, eps);
        for (int i = 0; i < d; i++) {
            size_t e = (size_t)j * d + i;
            ema_sum[e] = rmx_ema(ema_sum[e], sums[e], decay);
            codebook[e] = rmx_codebook_entry(ema_sum[e], smoothed);
        }
    }
}

/* ---- optimiser and norm ---- */

static void ref_adamw(rmx_backend *be, size_t n, size_t n_decay, float *param, const float *grad,
                      float *m, float *v, const rmx_adamw_hparams *hp) {
    (void)be;
    rmx_adamw_consts c = rmx_adamw_consts_make(hp->lr, hp->beta1, hp->beta2, hp->eps,
                                               hp->weight_decay, hp->t);
    for (size_t i = 0; i < n; i++)
        rmx_adamw_elem(&param[i], grad[i], &m[i], &v[i], &c, i < n_decay ? c.decay : 1.0f);
}

static void ref_sumsq(rmx_backend *be, size_t n, const float *x, float *out) {
    (void)be;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
    *out = (float)sum;
}

/* ---- transformer ---- */

static void ref_linear_fwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                           const float *b, float *y) {
    (void)be;
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) acc += (double)x[(size_t)r * in + i] * w[(size_t)o * in + i];
            y[(size_t)r * out + o] = (float)acc;
        }
}

static void ref_linear_bwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db) {
    (void)be;
    if (dx)
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < in; i++) {
                double acc = 0.0;
                for (int o = 0; o < out; o++) acc += (double)dy[(size_t)r * out + o] * w[(size_t)o * in + i];
                dx[(size_t)r * in + i] = (float)acc;
            }
    if (dw)
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                double acc = 0.0;
                for (int r = 0; r < rows; r++) acc += (double)dy[(size_t)r * out + o] * x[(size_t)r * in + i];
                dw[(size_t)o * in + i] += (float)acc;
            }
    if (db)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int r = 0; r < rows; r++) acc += dy[(size_t)r * out + o];
            db[o] += (float)acc;
        }
}

static void ref_layernorm_fwd(rmx_backend *be, int rows, int d, float eps, const float *x, float *y,
                              float *rstd) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        double sum = 0.0, var = 0.0;
        for (int j = 0; j < d; j++) sum += xr[j];
        double mu = sum / d;
        for (int j = 0; j < d; j++) var += ((double)xr[j] - mu) * ((double)xr[j] - mu);
        float mean = (float)mu, rs = rmx_layernorm_rstd(var / d, eps);
        for (int j = 0; j < d; j++) y[(size_t)r * d + j] = rmx_layernorm(xr[j], mean, rs);
        if (rstd) rstd[r] = rs;
    }
}

static void ref_layernorm_bwd(rmx_backend *be, int rows, int d, const float *y, const float *rstd,
                              const float *dy, float *dx) {
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * d, *dyr = dy + (size_t)r * d;
        double s1 = 0.0, s2 = 0.0;
        for (int j = 0; j < d; j++) {
            s1 += dyr[j];
            s2 += (double)dyr[j] * yr[j];
        }
        float mdy = (float)(s1 / d), mdyy = (float)(s2 / d);
        for (int j = 0; j < d; j++)
            dx[(size_t)r * d + j] = rmx_layernorm_dx(dyr[j], yr[j], rstd[r], mdy, mdyy);
    }
}

static void ref_gelu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
    (void)be;
    for (size_t i = 0; i < n; i++) y[i] = rmx_gelu(x[i]);
}

static void ref_gelu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    (void)be;
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * rmx_gelu_grad(x[i]);
}

static void ref_modulate_fwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                             const float *shift, const float *scale, int ld, float *y) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < d; j++) {
                size_t e = ((size_t)b * tokens + t) * d + j;
                y[e] = rmx_modulate(x[e], shift[(size_t)b * ld + j], scale[(size_t)b * ld + j]);
            }
}

static void ref_modulate_bwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                             const float *scale, int ld, const float *dy, float *dx, float *dshift,
                             float *dscale) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < d; j++) {
            double s1 = 0.0, s2 = 0.0;
            for (int t = 0; t < tokens; t++) {
                size_t e = ((size_t)b * tokens + t) * d + j;
                s1 += dy[e];
                s2 += (double)dy[e] * x[e];
                if (dx) dx[e] = rmx_modulate_dx(dy[e], scale[(size_t)b * ld + j]); /* dx may be dy */
            }
            if (dshift) dshift[(size_t)b * ld + j] = (float)s1;
            if (dscale) dscale[(size_t)b * ld + j] = (float)s2;
        }
}

static void ref_gated_add_fwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                              const float *gate, int ld, float *y) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < d; j++) {
                size_t e = ((size_t)b * tokens + t) * d + j;
                y[e] = rmx_gated_add(y[e], gate[(size_t)b * ld + j], h[e]);
            }
}

static void ref_gated_add_bwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                              const float *gate, int ld, const float *dy, float *dh, float *dgate) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < d; j++) {
            float g = gate[(size_t)b * ld + j];
            double s = 0.0;
            for (int t = 0; t < tokens; t++) {
                size_t e = ((size_t)b * tokens + t) * d + j;
                s += (double)dy[e] * h[e];
                if (dh) dh[e] = g * dy[e]; /* dh may be dy */
            }
            if (dgate) dgate[(size_t)b * ld + j] = (float)s;
        }
}

/* Attention straight from the definition, one query row at a time: the full row of scores in
 * double, its softmax, the weighted sum of values. Memory is O(tokens), so no workspace. */
static size_t ref_attention_workspace(rmx_backend *be, int batch, int tokens, int d, int heads) {
    (void)be, (void)batch, (void)tokens, (void)d, (void)heads;
    return 0;
}

static double *ref_dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) {
        fprintf(stderr, "remixer: error: out of host memory (%zu doubles)\n", n);
        abort();
    }
    return p;
}

/* p[j] = softmax_j of scale q_i . k_j for query i of head h in sample b; returns the log-sum-exp. */
static double ref_attention_row(int tokens, int d, int hd, const float *qkvb, int h, int i, double scale,
                                double *p) {
    const float *q = qkvb + (size_t)i * 3 * d + (size_t)h * hd;
    double mx = -INFINITY;
    for (int j = 0; j < tokens; j++) {
        const float *k = qkvb + (size_t)j * 3 * d + d + (size_t)h * hd;
        double s = 0.0;
        for (int c = 0; c < hd; c++) s += (double)q[c] * k[c];
        p[j] = s * scale;
        if (p[j] > mx) mx = p[j];
    }
    double sum = 0.0;
    for (int j = 0; j < tokens; j++) sum += p[j] = exp(p[j] - mx);
    for (int j = 0; j < tokens; j++) p[j] /= sum;
    return mx + log(sum);
}

static void ref_attention_fwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                              float *out, float *lse, float *ws) {
    (void)be, (void)ws;
    int hd = d / heads;
    double scale = 1.0 / sqrt((double)hd), *p = ref_dalloc((size_t)tokens);
    for (int b = 0; b < batch; b++) {
        const float *qkvb = qkv + (size_t)b * tokens * 3 * d;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < tokens; i++) {
                double l = ref_attention_row(tokens, d, hd, qkvb, h, i, scale, p);
                lse[((size_t)b * heads + h) * tokens + i] = (float)l;
                for (int c = 0; c < hd; c++) {
                    double acc = 0.0;
                    for (int j = 0; j < tokens; j++)
                        acc += p[j] * qkvb[(size_t)j * 3 * d + 2 * d + (size_t)h * hd + c];
                    out[((size_t)b * tokens + i) * d + (size_t)h * hd + c] = (float)acc;
                }
            }
    }
    free(p);
}

/* The gradient of the function itself (probabilities recomputed from the inputs, in double):
 * dP = dO V^T, dS = P (dP - rowsum(dO O)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
static void ref_attention_bwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                              const float *out, const float *lse, const float *dout, float *dqkv,
                              float *ws) {
    (void)be, (void)ws, (void)lse, (void)out;
    int hd = d / heads;
    double scale = 1.0 / sqrt((double)hd);
    double *p = ref_dalloc((size_t)tokens), *o = ref_dalloc((size_t)hd), *dqi = ref_dalloc((size_t)hd);
    double *dk = ref_dalloc((size_t)tokens * hd), *dv = ref_dalloc((size_t)tokens * hd);
    for (int b = 0; b < batch; b++) {
        const float *qkvb = qkv + (size_t)b * tokens * 3 * d, *dob = dout + (size_t)b * tokens * d;
        float *dqkvb = dqkv + (size_t)b * tokens * 3 * d;
        for (int h = 0; h < heads; h++) {
            memset(dk, 0, sizeof(double) * (size_t)tokens * hd);
            memset(dv, 0, sizeof(double) * (size_t)tokens * hd);
            for (int i = 0; i < tokens; i++) {
                ref_attention_row(tokens, d, hd, qkvb, h, i, scale, p);
                const float *doi = dob + (size_t)i * d + (size_t)h * hd;
                /* D = sum_c dO_ic O_ic with O from the probabilities in double */
                double dsum = 0.0;
                for (int c = 0; c < hd; c++) {
                    o[c] = 0.0;
                    for (int j = 0; j < tokens; j++)
                        o[c] += p[j] * qkvb[(size_t)j * 3 * d + 2 * d + (size_t)h * hd + c];
                    dsum += (double)doi[c] * o[c];
                }
                for (int c = 0; c < hd; c++) dqi[c] = 0.0;
                for (int j = 0; j < tokens; j++) {
                    const float *kj = qkvb + (size_t)j * 3 * d + d + (size_t)h * hd, *vj = kj + d;
                    double dp = 0.0;
                    for (int c = 0; c < hd; c++) dp += (double)doi[c] * vj[c];
                    double ds = p[j] * (dp - dsum);
                    const float *qi = qkvb + (size_t)i * 3 * d + (size_t)h * hd;
                    for (int c = 0; c < hd; c++) {
                        dqi[c] += scale * ds * kj[c];
                        dk[(size_t)j * hd + c] += scale * ds * qi[c];
                        dv[(size_t)j * hd + c] += p[j] * doi[c];
                    }
                }
                for (int c = 0; c < hd; c++) dqkvb[(size_t)i * 3 * d + (size_t)h * hd + c] = (float)dqi[c];
            }
            for (int j = 0; j < tokens; j++)
                for (int c = 0; c < hd; c++) {
                    dqkvb[(size_t)j * 3 * d + d + (size_t)h * hd + c] = (float)dk[(size_t)j * hd + c];
                    dqkvb[(size_t)j * 3 * d + 2 * d + (size_t)h * hd + c] = (float)dv[(size_t)j * hd + c];
                }
        }
    }
    free(p), free(o), free(dqi), free(dk), free(dv);
}

static void ref_embedding_fwd(rmx_backend *be, int n, int d, const int32_t *idx, const float *table,
                              float *y) {
    (void)be;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) y[(size_t)i * d + j] = table[(size_t)idx[i] * d + j];
}

static void ref_embedding_bwd(rmx_backend *be, int n, int d, int rows, const int32_t *idx,
                              const float *dy, float *dtable) {
    (void)be;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < d; j++) {
            double acc = 0.0;
            for (int i = 0; i < n; i++)
                if (idx[i] == r) acc += dy[(size_t)i * d + j];
            dtable[(size_t)r * d + j] += (float)acc;
        }
}

static void ref_timestep_embed(rmx_backend *be, int n, int dim, const float *t, float *y) {
    (void)be;
    int half = dim / 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            float f = rmx_timestep_freq(j, half);
            y[(size_t)i * dim + j] = rmx_timestep_cos(t[i], f);
            y[(size_t)i * dim + half + j] = rmx_timestep_sin(t[i], f);
        }
}

/* Where image element (ch, iy, ix) of sample b sits in the patch tokens. The grid must tile the
 * image exactly (the model crops or pads first); anything else is a caller's bug, stopped here. */
static size_t ref_patch_index(int b, int c, int h, int w, int p, int order, int ch, int iy, int ix) {
    if (p <= 0 || h % p || w % p) {
        fprintf(stderr, "remixer: internal error: patch size %d does not divide the image %dx%d\n", p, h, w);
        abort();
    }
    int gh = h / p, gw = w / p;
    size_t tok = (size_t)b * gh * gw + (size_t)(iy / p) * gw + ix / p;
    return tok * (size_t)(c * p * p) + (size_t)rmx_patch_feature(order, c, p, ch, iy % p, ix % p);
}

static void ref_patchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                         const float *x, float *tokens) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++)
            for (int iy = 0; iy < h; iy++)
                for (int ix = 0; ix < w; ix++)
                    tokens[ref_patch_index(b, c, h, w, p, order, ch, iy, ix)] =
                        x[(((size_t)b * c + ch) * h + iy) * w + ix];
}

static void ref_unpatchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                           const float *tokens, float *x) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++)
            for (int iy = 0; iy < h; iy++)
                for (int ix = 0; ix < w; ix++)
                    x[(((size_t)b * c + ch) * h + iy) * w + ix] =
                        tokens[ref_patch_index(b, c, h, w, p, order, ch, iy, ix)];
}

static void ref_add_broadcast(rmx_backend *be, int batch, size_t n, const float *a, float *y) {
    (void)be;
    for (int b = 0; b < batch; b++)
        for (size_t i = 0; i < n; i++) y[(size_t)b * n + i] += a[i];
}

/* ---- diffusion arithmetic ---- */

static void ref_axpby_samples(rmx_backend *be, int n, size_t per_sample, const float *a, const float *x,
                              const float *b, const float *e, float *y) {
    (void)be;
    for (int s = 0; s < n; s++)
        for (size_t j = 0; j < per_sample; j++) {
            size_t k = (size_t)s * per_sample + j;
            y[k] = rmx_axpby(a[s], x[k], b[s], e[k]);
        }
}

static void ref_ema_update(rmx_backend *be, size_t n, float decay, const float *param, float *ema) {
    (void)be;
    for (size_t i = 0; i < n; i++) ema[i] = rmx_ema(ema[i], param[i], decay);
}

/* ---- remix (stage 3) losses ---- */

/* g[b, i, j] = scale sum_k f[b, i, k] f[b, j, k], the sum in double in increasing k. */
static void ref_gram_fwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f, float *g) {
    (void)be;
    for (int b = 0; b < n; b++) {
        const float *fb = f + (size_t)b * c * hw;
        for (int i = 0; i < c; i++)
            for (int j = 0; j < c; j++) {
                double acc = 0.0;
                for (int k = 0; k < hw; k++) acc += (double)fb[(size_t)i * hw + k] * fb[(size_t)j * hw + k];
                g[((size_t)b * c + i) * c + j] = (float)((double)scale * acc);
            }
    }
}

/* df[b, i, k] += scale sum_j (dg[b, i, j] + dg[b, j, i]) f[b, j, k], in double. */
static void ref_gram_bwd(rmx_backend *be, int n, int c, int hw, float scale, const float *f,
                         const float *dg, float *df) {
    (void)be;
    for (int b = 0; b < n; b++) {
        const float *fb = f + (size_t)b * c * hw, *dgb = dg + (size_t)b * c * c;
        for (int i = 0; i < c; i++)
            for (int k = 0; k < hw; k++) {
                double acc = 0.0;
                for (int j = 0; j < c; j++)
                    acc += ((double)dgb[(size_t)i * c + j] + (double)dgb[(size_t)j * c + i]) * fb[(size_t)j * hw + k];
                df[((size_t)b * c + i) * hw + k] += (float)((double)scale * acc);
            }
    }
}

/* The per-element terms and gradients of elementwise.h, planes and elements in index order. */
static void ref_tv_loss(rmx_backend *be, int n, int c, int h, int w, const float *x, float scale,
                        float *loss, float *dx) {
    (void)be;
    rmx_tv_consts k = rmx_tv_consts_make(c, h, w, scale);
    size_t plane = (size_t)h * w;
    double sum = 0.0;
    for (size_t pl = 0; pl < (size_t)n * c; pl++) {
        const float *p = x + pl * plane;
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                sum += rmx_tv_term(p, h, w, i, j, k);
                if (dx) dx[pl * plane + (size_t)i * w + j] += rmx_tv_grad(p, h, w, i, j, k);
            }
    }
    *loss = (float)((double)*loss + (double)scale * sum);
}

rmx_backend *rmx_backend_ref_create(void) {
    rmx_backend *be = calloc(1, sizeof *be);
    if (!be) return NULL;
    be->name = "ref";
    be->alloc = ref_alloc;
    be->free = ref_free;
    be->to_backend = ref_memcpy;
    be->to_host = ref_memcpy;
    be->copy = ref_memcpy;
    be->fill = ref_fill;
    be->sync = ref_sync;
    be->destroy = ref_destroy;
    be->conv2d_workspace = ref_conv2d_workspace;
    be->conv2d_fwd = ref_conv2d_fwd;
    be->conv2d_bwd = ref_conv2d_bwd;
    be->groupnorm_fwd = ref_groupnorm_fwd;
    be->groupnorm_bwd = ref_groupnorm_bwd;
    be->silu_fwd = ref_silu_fwd;
    be->silu_bwd = ref_silu_bwd;
    be->upsample2x_fwd = ref_upsample2x_fwd;
    be->upsample2x_bwd = ref_upsample2x_bwd;
    be->add = ref_add;
    be->axpy = ref_axpy;
    be->scale = ref_scale;
    be->randn = ref_randn;
    be->gaussian_sample_fwd = ref_gaussian_sample_fwd;
    be->gaussian_sample_bwd = ref_gaussian_sample_bwd;
    be->mse_loss = ref_mse_loss;
    be->kl_loss = ref_kl_loss;
    be->vq_quantize = ref_vq_quantize;
    be->vq_stats = ref_vq_stats;
    be->vq_ema_update = ref_vq_ema_update;
    be->adamw = ref_adamw;
    be->sumsq = ref_sumsq;
    be->linear_fwd = ref_linear_fwd;
    be->linear_bwd = ref_linear_bwd;
    be->layernorm_fwd = ref_layernorm_fwd;
    be->layernorm_bwd = ref_layernorm_bwd;
    be->gelu_fwd = ref_gelu_fwd;
    be->gelu_bwd = ref_gelu_bwd;
    be->modulate_fwd = ref_modulate_fwd;
    be->modulate_bwd = ref_modulate_bwd;
    be->gated_add_fwd = ref_gated_add_fwd;
    be->gated_add_bwd = ref_gated_add_bwd;
    be->attention_workspace = ref_attention_workspace;
    be->attention_fwd = ref_attention_fwd;
    be->attention_bwd = ref_attention_bwd;
    be->embedding_fwd = ref_embedding_fwd;
    be->embedding_bwd = ref_embedding_bwd;
    be->timestep_embed = ref_timestep_embed;
    be->patchify = ref_patchify;
    be->unpatchify = ref_unpatchify;
    be->add_broadcast = ref_add_broadcast;
    be->axpby_samples = ref_axpby_samples;
    be->ema_update = ref_ema_update;
    be->gram_fwd = ref_gram_fwd;
    be->gram_bwd = ref_gram_bwd;
    be->tv_loss = ref_tv_loss;
    char err[160];
    if (rmx_backend_check(be, err, sizeof err)) {
        fprintf(stderr, "remixer: internal error: %s\n", err);
        free(be);
        return NULL;
    }
    return be;
}
