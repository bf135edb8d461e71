/* The noise schedule and the DDIM sampler (model/diffusion.h). */
#include "model/diffusion.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/rng.h"

int rmx_noise_schedule_linear(rmx_noise_schedule *s, int timesteps, double beta_start, double beta_end) {
    memset(s, 0, sizeof *s);
    if (timesteps < 2 || !(beta_start > 0 && beta_start < beta_end && beta_end < 1)) return -1;
    s->timesteps = timesteps;
    s->alphas_cumprod = malloc(sizeof(double) * (size_t)timesteps);
    if (!s->alphas_cumprod) return -1;
    double prod = 1.0;
    for (int t = 0; t < timesteps; t++) {
        /* np.linspace(beta_start, beta_end, T): the end points exactly */
        double beta = beta_start + (beta_end - beta_start) * (double)t / (double)(timesteps - 1);
        prod *= 1.0 - beta;
        s->alphas_cumprod[t] = prod;
    }
    return 0;
}

void rmx_noise_schedule_free(rmx_noise_schedule *s) {
    free(s->alphas_cumprod);
    memset(s, 0, sizeof *s);
}

void rmx_noise_coefs(const rmx_noise_schedule *s, int n, const int32_t *t, float *a, float *b) {
    for (int i = 0; i < n; i++) {
        double ab = s->alphas_cumprod[t[i]];
        a[i] = (float)sqrt(ab);
        b[i] = (float)sqrt(1.0 - ab);
    }
}

void rmx_ddim_timesteps(int T, int K, int *out) {
    if (K > T) K = T;
    for (int k = 0; k < K; k++) out[K - 1 - k] = (int)lround((double)(k + 1) * T / K) - 1;
}

static const float *dit_eps(void *ctx, int n, const float *x, const float *t, const int32_t *y) {
    return rmx_dit_forward(ctx, n, x, t, y);
}

rmx_eps_model rmx_dit_eps_model(rmx_dit *dit, int max_batch) {
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(dit);
    rmx_dit_reserve(dit, max_batch);
    rmx_eps_model m = {dit_eps, dit, (size_t)hp->in_channels * hp->height * hp->width, rmx_dit_params(dit)->be};
    return m;
}

/* The model's noise prediction for x [n, ...] with guidance: eps [n, ...] written. */
static void guided_eps(const rmx_eps_model *model, const rmx_ddim_config *c, int n, size_t per, const float *x,
                       float t, const int32_t *y, float *xx, float *tt, int32_t *yy, float *eps) {
    rmx_backend *be = model->be;
    const float w = c->cfg;
    for (int i = 0; i < 2 * n; i++) tt[i] = t;
    if (w == 1.0f || w == 0.0f) {
        /* one branch only: conditional (w = 1) or unconditional (w = 0) */
        for (int i = 0; i < n; i++) yy[i] = w == 1.0f ? y[i] : c->null_class;
        const float *out = model->eps(model->ctx, n, x, tt, yy);
        be->copy(be, eps, out, sizeof(float) * per * (size_t)n);
        return;
    }
    for (int i = 0; i < n; i++) {
        yy[i] = y[i];
        yy[n + i] = c->null_class;
    }
    be->copy(be, xx, x, sizeof(float) * per * (size_t)n);
    be->copy(be, xx + per * (size_t)n, x, sizeof(float) * per * (size_t)n);
    const float *out = model->eps(model->ctx, 2 * n, xx, tt, yy);
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) {
        a[i] = 1.0f - w; /* unconditional half */
        b[i] = w;        /* conditional half */
    }
    be->axpby_samples(be, n, per, a, out + per * (size_t)n, b, out, eps);
    free(a);
    free(b);
}

void rmx_ddim_sample(const rmx_eps_model *model, const rmx_noise_schedule *s, const rmx_ddim_config *c, int n,
                     const int32_t *y, float *x) {
    rmx_backend *be = model->be;
    const size_t per = model->per;
    const int T = s->timesteps;
    int K = c->steps < T ? c->steps : T;
    int *ts = malloc(sizeof(int) * (size_t)K);
    rmx_ddim_timesteps(T, K, ts);
    int first = 0;
    if (c->t_start < 0) be->randn(be, x, n, per, c->seed, RMX_RNG_SAMPLING, 0, c->keys);
    else
        while (first < K && ts[first] > c->t_start) first++;
    float *xx = be->alloc(be, sizeof(float) * per * 2 * (size_t)n);
    float *eps = be->alloc(be, sizeof(float) * per * (size_t)n);
    float *z = c->eta > 0 ? be->alloc(be, sizeof(float) * per * (size_t)n) : NULL;
    float *tt = malloc(sizeof(float) * 2 * (size_t)n), *A = malloc(sizeof(float) * (size_t)n);
    float *B = malloc(sizeof(float) * (size_t)n), *ones = malloc(sizeof(float) * (size_t)n);
    int32_t *yy = malloc(sizeof(int32_t) * 2 * (size_t)n);
    for (int k = first; k < K; k++) {
        int t = ts[k], t_next = k + 1 < K ? ts[k + 1] : -1;
        double a = s->alphas_cumprod[t], a_next = t_next >= 0 ? s->alphas_cumprod[t_next] : 1.0;
        double sig = c->eta * sqrt((1.0 - a_next) / (1.0 - a)) * sqrt(1.0 - a / a_next);
        double dir = 1.0 - a_next - sig * sig;
        double coef_x = sqrt(a_next) / sqrt(a);
        double coef_eps = sqrt(dir > 0 ? dir : 0) - sqrt(a_next) * sqrt(1.0 - a) / sqrt(a);
        guided_eps(model, c, n, per, x, (float)t, y, xx, tt, yy, eps);
        for (int i = 0; i < n; i++) {
            A[i] = (float)coef_x;
            B[i] = (float)coef_eps;
            ones[i] = 1.0f;
        }
        be->axpby_samples(be, n, per, A, x, B, eps, x);
        if (z && sig > 0) {
            be->randn(be, z, n, per, c->seed, RMX_RNG_SAMPLING, (uint64_t)k + 1, c->keys);
            for (int i = 0; i < n; i++) B[i] = (float)sig;
            be->axpby_samples(be, n, per, ones, x, B, z, x);
        }
        if (c->on_step) c->on_step(c->arg, k, K, x, t_next);
    }
    be->free(be, xx);
    be->free(be, eps);
    if (z) be->free(be, z);
    free(ts);
    free(tt);
    free(A);
    free(B);
    free(ones);
    free(yy);
}

/* ---- remix ---- */

static const float *style_eps(void *arg, int n, const float *x, const float *t, const int32_t *y) {
    rmx_style_eps *c = arg;
    for (int i = 0; i < n; i++) {
        c->keep[i] = y[i] != 0;
        c->labels[i] = rmx_dit_hparams_of(c->dit)->num_classes; /* the null class */
    }
    /* samples i and n + i of a guidance batch are the same clip */
    const float *style = n <= c->n ? c->style : c->style2;
    return rmx_dit_forward_style(c->dit, n, x, t, c->labels, style, c->keep);
}

rmx_eps_model rmx_dit_style_eps_model(rmx_dit *dit, int n, const float *style, rmx_style_eps *ctx) {
    const rmx_dit_hparams *hp = rmx_dit_hparams_of(dit);
    rmx_backend *be = rmx_dit_params(dit)->be;
    const size_t per = (size_t)hp->in_channels * hp->height * hp->width;
    rmx_dit_reserve(dit, 2 * n);
    ctx->dit = dit;
    ctx->style = style;
    ctx->n = n;
    ctx->style2 = be->alloc(be, sizeof(float) * per * 2 * (size_t)n);
    be->copy(be, ctx->style2, style, sizeof(float) * per * (size_t)n);
    be->copy(be, ctx->style2 + per * (size_t)n, style, sizeof(float) * per * (size_t)n);
    ctx->labels = calloc(2 * (size_t)n, sizeof *ctx->labels);
    ctx->keep = calloc(2 * (size_t)n, sizeof *ctx->keep);
    if (!ctx->labels || !ctx->keep) {
        fprintf(stderr, "remixer: out of host memory (style sampler)\n");
        abort();
    }
    rmx_eps_model m = {style_eps, ctx, per, be};
    return m;
}

void rmx_style_eps_free(rmx_style_eps *ctx) {
    if (ctx->style2) rmx_dit_params(ctx->dit)->be->free(rmx_dit_params(ctx->dit)->be, ctx->style2);
    free(ctx->labels);
    free(ctx->keep);
    memset(ctx, 0, sizeof *ctx);
}

int rmx_remix_sample(const rmx_eps_model *model, const rmx_noise_schedule *s, rmx_ddim_config *c, int n,
                     float strength, float *z) {
    const int T = s->timesteps, K = c->steps < T ? c->steps : T;
    const int limit = (int)lround((double)strength * (T - 1));
    if (strength <= 0 || K < 1) return 0;
    int *ts = malloc(sizeof(int) * (size_t)K);
    rmx_ddim_timesteps(T, K, ts);
    int first = 0;
    while (first < K && ts[first] > limit) first++;
    if (first == K) {
        free(ts);
        return 0;
    }
    const int t0 = ts[first];
    free(ts);
    rmx_backend *be = model->be;
    const size_t per = model->per;
    float *noise = be->alloc(be, sizeof(float) * per * (size_t)n);
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    int32_t *tt = malloc(sizeof(int32_t) * (size_t)n), *y = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        tt[i] = t0;
        y[i] = 1;
    }
    rmx_noise_coefs(s, n, tt, a, b);
    be->randn(be, noise, n, per, c->seed, RMX_RNG_SAMPLING, 0, c->keys);
    be->axpby_samples(be, n, per, a, z, b, noise, z);
    c->t_start = t0;
    c->null_class = 0;
    rmx_ddim_sample(model, s, c, n, y, z);
    be->free(be, noise);
    free(a);
    free(b);
    free(tt);
    free(y);
    return K - first;
}
