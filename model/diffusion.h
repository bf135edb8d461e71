/* The diffusion process of stage 2: the noise schedule, the forward (noising) coefficients of
 * training, and the DDIM sampler with classifier-free guidance.
 *
 * Schedule: T steps, beta linear from beta_start to beta_end (DiT's, computed in double),
 * alpha_bar_t = prod_{s <= t} (1 - beta_s). Training noises z0 to
 * z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps, and the model predicts eps.
 *
 * DDIM (Song et al.) over K of the T steps, "trailing" spacing t_k = round((k + 1) T / K) - 1,
 * k = K-1 .. 0, so the first step starts from t = T - 1 (pure noise) and the last lands on
 * alpha_bar = 1. One step from t to t' (alpha_bar a, a'):
 *   x0  = (x - sqrt(1 - a) eps) / sqrt(a)
 *   sig = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')
 *   x'  = sqrt(a') x0 + sqrt(1 - a' - sig^2) eps + sig z
 * which is x' = A x + B eps + sig z with A, B computed once per step on the host in double and
 * applied by the backend's axpby_samples (the arithmetic every backend shares). Guidance:
 * eps = eps_u + w (eps_c - eps_u) = (1 - w) eps_u + w eps_c on all channels, the conditional and
 * unconditional halves in one batch of 2n (w = 1: conditional only, one batch of n; w = 0:
 * unconditional only).
 *
 * Every random number is keyed by (seed, RMX_RNG_SAMPLING, step, key[i]): the starting noise is
 * step 0, the eta > 0 noise of DDIM step k is step k + 1, so a clip does not depend on the other
 * clips of its batch. */
#ifndef RMX_DIFFUSION_H
#define RMX_DIFFUSION_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/dit.h"

typedef struct {
    int timesteps;           /* T */
    double *alphas_cumprod;  /* [T] */
} rmx_noise_schedule;

/* 0, or -1 when the betas are not in (0, 1) and increasing. */
int rmx_noise_schedule_linear(rmx_noise_schedule *s, int timesteps, double beta_start, double beta_end);
void rmx_noise_schedule_free(rmx_noise_schedule *s);

/* Host coefficients of z_t = a z0 + b eps for the n timesteps t[i]: a = sqrt(alpha_bar),
 * b = sqrt(1 - alpha_bar). */
void rmx_noise_coefs(const rmx_noise_schedule *s, int n, const int32_t *t, float *a, float *b);

/* The K DDIM timesteps, descending (t[0] = T - 1 when K <= T). */
void rmx_ddim_timesteps(int T, int K, int *out);

/* The noise predictor the sampler calls: eps_hat [n, per] for x [n, per] (backend memory), t and y
 * HOST [n]; the result may point into the model's memory (valid until the next call). A DiT is one
 * (rmx_dit_eps_model); tests use analytic ones. */
typedef struct {
    const float *(*eps)(void *ctx, int n, const float *x, const float *t, const int32_t *y);
    void *ctx;
    size_t per;            /* floats of one latent */
    rmx_backend *be;
} rmx_eps_model;

/* The DiT as a noise predictor (its arena grown for the 2n batches of guidance). */
rmx_eps_model rmx_dit_eps_model(rmx_dit *dit, int max_batch);

typedef struct {
    int steps;             /* K */
    float eta;             /* 0: deterministic DDIM */
    float cfg;             /* guidance w */
    int null_class;        /* the label of the unconditional branch */
    uint64_t seed;
    const int64_t *keys;   /* HOST [n]: each clip's key in the noise streams */
    /* -1: x is overwritten with N(0, 1) noise (step 0 of the streams) and sampling starts at
     * t = T - 1; otherwise x already holds a latent at noise level t_start, and only the DDIM
     * steps at or below t_start run (remix: a noised original). */
    int t_start;
    /* After each DDIM step (may be NULL): progress, or a known region imposed on the new x
     * (continuation); t_next is the step's target timestep, -1 after the last. */
    void (*on_step)(void *arg, int k, int steps, float *x, int t_next);
    void *arg;
} rmx_ddim_config;

/* Samples n latents [n, per] into x (backend memory) with labels y (HOST int32 [n]). The model
 * is called on batches of up to 2n (guidance). */
void rmx_ddim_sample(const rmx_eps_model *model, const rmx_noise_schedule *s, const rmx_ddim_config *c, int n,
                     const int32_t *y, float *x);

/* ---- remix (stage 3) ----
 * The style transformer as a noise predictor for n clips whose style latents are `style` [n, per]
 * (backend memory, kept by the caller): a call's label y[i] != 0 keeps sample i's style tokens,
 * 0 drops them (the null style); the genre label is always the null class. So rmx_ddim_sample with
 * y[i] = 1 and null_class 0 guides on the style: eps = eps_nostyle + w (eps_style - eps_nostyle). */
typedef struct {
    rmx_dit *dit;
    const float *style;
    int n;
    float *style2;   /* [2n, per]: the style of the guidance batch's two halves */
    int32_t *labels; /* HOST [2n] */
    uint8_t *keep;   /* HOST [2n] */
} rmx_style_eps;

rmx_eps_model rmx_dit_style_eps_model(rmx_dit *dit, int n, const float *style, rmx_style_eps *ctx);
void rmx_style_eps_free(rmx_style_eps *ctx);

/* Remixes n latents in place: z [n, per] (scaled latents of the originals) is noised to the DDIM
 * grid's first timestep at or below strength (T - 1), with the noise (c->seed, RMX_RNG_SAMPLING,
 * 0, c->keys), then DDIM runs down from there with guidance c->cfg on the style (c->t_start and
 * c->null_class are set here). strength 0 leaves z as it is. Returns the DDIM steps run. */
int rmx_remix_sample(const rmx_eps_model *model, const rmx_noise_schedule *s, rmx_ddim_config *c, int n,
                     float strength, float *z);

#endif
