/* Per-element arithmetic shared by every backend.
 *
 * The ref and cpu backends and the CUDA kernels all call these functions, so the arithmetic the
 * GPU runs is the arithmetic the CPU tests check. Everything here is a pure function of its
 * arguments (no memory access beyond what it is given), float in and float out. */
#ifndef RMX_ELEMENTWISE_H
#define RMX_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef RMX_HD
#ifdef __CUDACC__
#define RMX_HD __host__ __device__
#else
#define RMX_HD
#endif
#endif

/* ---- exponential ---- */

/* e^x in plain float arithmetic, without libm: a loop calling it vectorises (a libm expf call
 * does not), which makes SiLU several times faster on the CPU. Cody-Waite reduction
 * x = n ln2 + r, |r| <= ln2 / 2, a degree-7 Taylor polynomial for e^r (truncation < 1e-8
 * relative), and 2^n built in the exponent bits; about 2 ulp.
 * Outside [-87.3, 88.7] the answer is 0 or inf, and NaN stays NaN, chosen by the final selects;
 * the clamp only keeps the arithmetic (and the float-to-int conversion) in range. The selects
 * matter for speed: when the compiler if-converts a vector loop it evaluates every branch in
 * every lane, and branches folding to 0, 1 or inf cost nothing, whereas one folding to a tiny
 * constant (say e^-87.3 ~ 1e-38) would multiply every lane into subnormal numbers, which runs
 * several times slower. */
static inline RMX_HD float rmx_expf(float x) {
    float xc = x > -87.5f ? x : -87.5f; /* written so NaN lands in range too (restored below) */
    xc = xc < 88.5f ? xc : 88.5f;
    /* round(x / ln2) by the 1.5 * 2^23 trick: exact round-to-nearest without rintf */
    float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f; /* ln2 = hi + lo, n hi exact */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    return x < -87.3f ? 0.0f : (x > 88.7f ? INFINITY : (x == x ? e : x));
}

/* ---- SiLU: x * sigmoid(x) ---- */

static inline RMX_HD float rmx_sigmoid(float x) { return 1.0f / (1.0f + rmx_expf(-x)); }

static inline RMX_HD float rmx_silu(float x) { return x * rmx_sigmoid(x); }

/* d silu / dx = s + x s (1 - s) with s = sigmoid(x). */
static inline RMX_HD float rmx_silu_grad(float x) {
    float s = rmx_sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

/* ---- GroupNorm ---- */

/* A channel's GroupNorm as one multiply-add per element, y = x * scale + shift, with
 * scale = rstd * gamma and shift = beta - mean * scale, both from double statistics: the fast
 * backends use the same two rounded constants, so they agree bit for bit. */
typedef struct {
    float scale, shift;
} rmx_gn_affine;

static inline RMX_HD rmx_gn_affine rmx_groupnorm_affine(double mean, double rstd, const float *gamma,
                                                        const float *beta, int channel) {
    double a = rstd * (gamma ? gamma[channel] : 1.0);
    rmx_gn_affine t = {(float)a, (float)((beta ? beta[channel] : 0.0) - mean * a)};
    return t;
}

/* dgamma[ch] += sum over samples of sdyx, dbeta[ch] += sum of sdy, in sample order: sdy and sdyx
 * [n, c] hold one sample's per-channel sums of dy and dy * xhat, in double. NULL skips. */
static inline RMX_HD void rmx_groupnorm_param_grad(int n, int c, int ch, const double *sdy,
                                                   const double *sdyx, float *dgamma, float *dbeta) {
    double s1 = 0.0, s2 = 0.0;
    for (int b = 0; b < n; b++) {
        s1 += sdy[(long)b * c + ch];
        s2 += sdyx[(long)b * c + ch];
    }
    if (dgamma) dgamma[ch] += (float)s2;
    if (dbeta) dbeta[ch] += (float)s1;
}

/* ---- diagonal Gaussian bottleneck ---- */

/* Latent diffusion clamps the log-variance so exp() stays finite early in training. The clamp is
 * part of the function: its gradient is zero outside [lo, hi] (inclusive inside, as torch.clamp). */
#define RMX_LOGVAR_MIN (-30.0f)
#define RMX_LOGVAR_MAX 20.0f

static inline RMX_HD float rmx_logvar_clamp(float lv) {
    return lv < RMX_LOGVAR_MIN ? RMX_LOGVAR_MIN : (lv > RMX_LOGVAR_MAX ? RMX_LOGVAR_MAX : lv);
}

static inline RMX_HD float rmx_logvar_clamp_grad(float lv) {
    return (lv >= RMX_LOGVAR_MIN && lv <= RMX_LOGVAR_MAX) ? 1.0f : 0.0f;
}

/* z = mean + exp(logvar / 2) * eps */
static inline RMX_HD float rmx_gaussian_sample(float mean, float logvar, float eps) {
    return mean + expf(0.5f * rmx_logvar_clamp(logvar)) * eps;
}

/* d z / d logvar (raw, before the clamp); d z / d mean is 1. */
static inline RMX_HD float rmx_gaussian_sample_dlogvar(float logvar, float eps) {
    return 0.5f * expf(0.5f * rmx_logvar_clamp(logvar)) * eps * rmx_logvar_clamp_grad(logvar);
}

/* One latent element's KL to N(0, 1): -1/2 (1 + lv - mean^2 - exp(lv)), lv clamped as above so the
 * loss sees the same variance the sample used. */
static inline RMX_HD float rmx_kl_term(float mean, float logvar) {
    float lv = rmx_logvar_clamp(logvar);
    return -0.5f * (1.0f + lv - mean * mean - expf(lv));
}

static inline RMX_HD float rmx_kl_dmean(float mean) { return mean; }

static inline RMX_HD float rmx_kl_dlogvar(float logvar) {
    return 0.5f * (expf(rmx_logvar_clamp(logvar)) - 1.0f) * rmx_logvar_clamp_grad(logvar);
}

/* ---- reconstruction loss ---- */

static inline RMX_HD float rmx_mse_term(float xhat, float x) {
    float d = xhat - x;
    return d * d;
}

/* d (scale * (xhat - x)^2) / d xhat */
static inline RMX_HD float rmx_mse_grad(float xhat, float x, float scale) {
    return 2.0f * scale * (xhat - x);
}

/* ---- vector quantisation ---- */

/* Squared distance between z (d values, `zstride` floats apart: a channel column of NCHW) and a
 * codebook row e. Float, summed in channel order, so every backend picks the same nearest code. */
static inline RMX_HD float rmx_vq_dist(const float *z, long zstride, const float *e, int d) {
    float acc = 0.0f;
    for (int j = 0; j < d; j++) {
        float t = z[(long)j * zstride] - e[j];
        acc += t * t;
    }
    return acc;
}

/* The nearest of k codebook rows to z; ties keep the lowest index (a strict comparison), so every
 * backend assigns the same code. */
static inline RMX_HD int rmx_vq_nearest(const float *z, long zstride, const float *codebook, int k, int d) {
    int best = 0;
    float best_d = rmx_vq_dist(z, zstride, codebook, d);
    for (int j = 1; j < k; j++) {
        float dj = rmx_vq_dist(z, zstride, codebook + (long)j * d, d);
        if (dj < best_d) {
            best_d = dj;
            best = j;
        }
    }
    return best;
}

/* ---- AdamW, one element ---- */

/* Per-step constants, computed once on the host in double so every element (and every backend)
 * uses the same rounded values: step_size = lr / (1 - beta1^t), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t),
 * decay = 1 - lr * weight_decay. */
typedef struct {
    float beta1, beta2, eps, step_size, inv_sqrt_bc2, decay;
} rmx_adamw_consts;

static inline rmx_adamw_consts rmx_adamw_consts_make(float lr, float beta1, float beta2, float eps,
                                                     float weight_decay, int64_t t) {
    rmx_adamw_consts c;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)t)));
    c.inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow((double)beta2, (double)t)));
    c.decay = (float)(1.0 - (double)lr * (double)weight_decay);
    return c;
}

/* PyTorch's AdamW order: decoupled decay first, then the bias-corrected Adam step
 * p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps). `decay` is 1 for elements without decay. */
static inline RMX_HD void rmx_adamw_elem(float *p, float g, float *m, float *v,
                                         const rmx_adamw_consts *c, float decay) {
    float mi = c->beta1 * *m + (1.0f - c->beta1) * g;
    float vi = c->beta2 * *v + (1.0f - c->beta2) * g * g;
    *m = mi;
    *v = vi;
    float denom = sqrtf(vi) * c->inv_sqrt_bc2 + c->eps;
    *p = *p * decay - c->step_size * mi / denom;
}

/* ---- vector-quantiser EMA codebook ---- */

/* new = decay * old + (1 - decay) * batch, for ema_count and ema_sum alike. */
static inline RMX_HD float rmx_ema(float old, float batch, float decay) {
    return decay * old + (1.0f - decay) * batch;
}

/* Laplace smoothing keeps a code that got no assignments from dividing by zero while preserving
 * the total count: (n_k + eps) / (total + k eps) * total. */
static inline RMX_HD float rmx_laplace_count(float ema_count, float total, int k, float eps) {
    return (ema_count + eps) / (total + (float)k * eps) * total;
}

/* One codebook entry: the EMA mean of the vectors assigned to the code. */
static inline RMX_HD float rmx_codebook_entry(float ema_sum, float smoothed_count) {
    return ema_sum / smoothed_count;
}

/* ---- transformer (the stage-2 DiT) ---- */

/* GELU with the tanh approximation (PyTorch approximate="tanh"):
 * 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since 0.5 (1 + tanh(u)) = sigmoid(2u),
 * it is computed as x sigmoid(2u) with the libm-free rmx_expf: the loop vectorises, and both
 * tails saturate cleanly (sigmoid -> 0 or 1, never 0 * inf). */
#define RMX_GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define RMX_GELU_K1 0.044715f

static inline RMX_HD float rmx_gelu(float x) {
    float u = RMX_GELU_K0 * (x + RMX_GELU_K1 * (x * x * x));
    return x * rmx_sigmoid(2.0f * u);
}

/* d gelu / dx = s + x s (1 - s) 2 u' with s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 0.044715 x^2). */
static inline RMX_HD float rmx_gelu_grad(float x) {
    float x2 = x * x;
    float u = RMX_GELU_K0 * (x + RMX_GELU_K1 * (x2 * x));
    float du = RMX_GELU_K0 * (1.0f + 3.0f * RMX_GELU_K1 * x2);
    float s = rmx_sigmoid(2.0f * u);
    return s + x * (s * (1.0f - s)) * (2.0f * du);
}

/* LayerNorm without affine, one element: y = (x - mean) rstd, with the row's mean and
 * rstd = 1 / sqrt(var + eps) computed in double (two passes) and rounded to float once; every
 * backend uses these two rounded values, so the outputs agree to the bit when the statistics do. */
static inline RMX_HD float rmx_layernorm(float x, float mean, float rstd) { return (x - mean) * rstd; }

/* rstd from a row's biased variance (double), rounded once. */
static inline RMX_HD float rmx_layernorm_rstd(double var, float eps) {
    return (float)(1.0 / sqrt(var + (double)eps));
}

/* LayerNorm backward from the output: dx = rstd (dy - mean(dy) - y mean(dy y)), with the row means
 * mdy and mdyy computed in double and rounded to float once. */
static inline RMX_HD float rmx_layernorm_dx(float dy, float y, float rstd, float mdy, float mdyy) {
    return rstd * ((dy - mdy) - y * mdyy);
}

/* adaLN modulation: y = x (1 + scale) + shift; dy/dx = 1 + scale. */
static inline RMX_HD float rmx_modulate(float x, float shift, float scale) {
    return x * (1.0f + scale) + shift;
}

static inline RMX_HD float rmx_modulate_dx(float dy, float scale) { return dy * (1.0f + scale); }

/* adaLN-Zero's gated residual: y + gate h. */
static inline RMX_HD float rmx_gated_add(float y, float gate, float h) { return y + gate * h; }

/* Attention, softmax of scaled scores s (already multiplied by head_dim^-0.5): the probability
 * p = e^(s - lse) from the row's log-sum-exp (or e^(s - max) before normalising), and the score
 * gradient dS = p (dP - D) with D = sum over the row's head features of dO O. */
static inline RMX_HD float rmx_softmax_exp(float s, float ref) { return rmx_expf(s - ref); }

static inline RMX_HD float rmx_softmax_dscore(float p, float dp, float dsum) { return p * (dp - dsum); }

/* log-sum-exp of a row from its max and the sum of e^(s - max) (double), rounded once. */
static inline RMX_HD float rmx_logsumexp(float max, double sum) { return (float)((double)max + log(sum)); }

/* DiT's sinusoidal timestep embedding: frequency j of `half`, f_j = exp(-ln(10000) j / half),
 * computed in double and rounded once (PyTorch computes it in float32; the two agree to an ulp),
 * and the [cos, sin] of the float argument t f_j, evaluated in double and rounded once, so every
 * backend gives the correctly rounded value whatever its libm. */
static inline RMX_HD float rmx_timestep_freq(int j, int half) {
    return (float)exp(-9.210340371976184 * (double)j / (double)half); /* ln(10000) */
}

static inline RMX_HD float rmx_timestep_cos(float t, float freq) { return (float)cos((double)(t * freq)); }

static inline RMX_HD float rmx_timestep_sin(float t, float freq) { return (float)sin((double)(t * freq)); }

/* Patch tokens: the feature index within a token of channel c, patch row py and column px, for
 * RMX_PATCH_CPQ (0: (c, p, q), a Conv2d weight's flattening) or RMX_PATCH_PQC (1: (p, q, c), DiT's
 * final layer). The same index map in every backend keeps the layout trap in one place. */
static inline RMX_HD int rmx_patch_feature(int order, int channels, int p, int c, int py, int px) {
    return order == 0 ? (c * p + py) * p + px : (py * p + px) * channels + c;
}

/* ---- diffusion arithmetic ---- */

/* One element of a per-sample linear combination a x + b e (noising, x0 from eps). */
static inline RMX_HD float rmx_axpby(float a, float x, float b, float e) { return a * x + b * e; }


/* ---- remix (stage 3) losses ---- */

/* Gram backward: g = scale F F^T gives dF = scale (dG + dG^T) F; one element of dG + dG^T. */
static inline RMX_HD float rmx_gram_sym(float dg_ij, float dg_ji) { return dg_ij + dg_ji; }

/* Total variation of x [n, c, h, w]. Its weights depend on the shape alone and are rounded once,
 * on the host: wh = 1 / (c (h-1) w) and ww = 1 / (c h (w-1)) (0 for an axis of one element: that
 * term has no differences and contributes 0), in double for the value; kh = 2 scale wh and
 * kw = 2 scale ww, in float, for the gradient. */
typedef struct {
    double wh, ww;
    float kh, kw;
} rmx_tv_consts;

static inline rmx_tv_consts rmx_tv_consts_make(int c, int h, int w, float scale) {
    rmx_tv_consts k;
    k.wh = h > 1 && c > 0 && w > 0 ? 1.0 / ((double)c * (double)(h - 1) * (double)w) : 0.0;
    k.ww = w > 1 && c > 0 && h > 0 ? 1.0 / ((double)c * (double)h * (double)(w - 1)) : 0.0;
    k.kh = (float)(2.0 * (double)scale * k.wh);
    k.kw = (float)(2.0 * (double)scale * k.ww);
    return k;
}

/* Element (i, j) of one h x w plane p (row-major)'s share of the value: the squared difference to
 * the next element along frequency (row i + 1) times wh plus that to the next along time (column
 * j + 1) times ww, each square (b - a)^2 in float, the weighted sum in double. The sum of this over
 * every element of every plane is the value (the per-sample sum of the spec: the weights are the
 * same for every sample). */
static inline RMX_HD double rmx_tv_term(const float *p, int h, int w, int i, int j, rmx_tv_consts k) {
    float x = p[(long)i * w + j];
    double t = 0.0;
    if (i + 1 < h) {
        float d = p[(long)(i + 1) * w + j] - x;
        t += (double)(d * d) * k.wh;
    }
    if (j + 1 < w) {
        float d = p[(long)i * w + j + 1] - x;
        t += (double)(d * d) * k.ww;
    }
    return t;
}

/* d (scale value) / d p[i, j] in gather form (each element reads its four neighbours, so no two
 * elements write the same gradient): kh ((x - up) - (down - x)) + kw ((x - left) - (right - x)),
 * a missing neighbour taken as x itself, whose difference is exactly 0. */
static inline RMX_HD float rmx_tv_grad(const float *p, int h, int w, int i, int j, rmx_tv_consts k) {
    const float *q = p + (long)i * w + j;
    float x = q[0];
    float up = i > 0 ? q[-w] : x, down = i + 1 < h ? q[w] : x;
    float left = j > 0 ? q[-1] : x, right = j + 1 < w ? q[1] : x;
    return k.kh * ((x - up) - (down - x)) + k.kw * ((x - left) - (right - x));
}

#endif
