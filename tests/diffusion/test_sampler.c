/* The DDIM sampler (model/diffusion.h) against analytic noise predictors, where the right answer
 * is known in closed form:
 *   - a point mass at mu: the exact predictor is eps = (z_t - sqrt(ab) mu) / sqrt(1 - ab), and DDIM
 *     must land on mu (for any eta, any step count);
 *   - guidance: conditional point masses mu_y, the null class a point mass at 0, so the guided
 *     predictor is the point mass at w mu_y: the sample must be w mu_y;
 *   - a Gaussian N(m, s^2) per element: eps = b (z_t - a m) / (a^2 s^2 + b^2); 50 DDIM steps must
 *     give samples with mean m and std s (to the ODE's discretisation);
 *   - a start from a given latent (t_start): DDIM from a noised point mass lands on it.
 * Also the schedule (alpha_bar against a direct product) and the trailing timesteps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/diffusion.h"

static int failures;
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            failures++;                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

enum { PER = 4096, NULL_CLASS = 3 };

/* The analytic predictors. */
typedef struct {
    rmx_backend *be;
    const rmx_noise_schedule *s;
    const float *mu;   /* per label [NULL_CLASS + 1][PER] (point masses) */
    float gauss_m, gauss_s; /* kind 1 */
    int kind;          /* 0 point mass, 1 Gaussian */
    float *out, *host;
} oracle;

static const float *oracle_eps(void *ctx, int n, const float *x, const float *t, const int32_t *y) {
    oracle *o = ctx;
    o->be->to_host(o->be, o->host, x, sizeof(float) * PER * (size_t)n);
    for (int i = 0; i < n; i++) {
        double ab = o->s->alphas_cumprod[(int)t[i]], a = sqrt(ab), b = sqrt(1.0 - ab);
        for (int j = 0; j < PER; j++) {
            float *v = &o->host[(size_t)i * PER + j];
            if (o->kind == 0) *v = (float)((*v - a * o->mu[(size_t)y[i] * PER + j]) / b);
            else {
                double s2 = (double)o->gauss_s * o->gauss_s;
                *v = (float)(b * (*v - a * o->gauss_m) / (a * a * s2 + b * b));
            }
        }
    }
    o->be->to_backend(o->be, o->out, o->host, sizeof(float) * PER * (size_t)n);
    return o->out;
}

static double max_err(const float *x, const float *want, size_t n, float scale) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i] - (double)scale * want[i]));
    return m;
}

int main(void) {
    rmx_backend *be = rmx_backend_cpu_create(1);
    rmx_noise_schedule s;
    CHECK(rmx_noise_schedule_linear(&s, 1000, 1e-4, 0.02) == 0, "schedule");
    double prod = 1;
    for (int t = 0; t < 1000; t++) prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * t / 999.0);
    CHECK(fabs(s.alphas_cumprod[999] - prod) < 1e-15, "alpha_bar[999] %g vs %g", s.alphas_cumprod[999], prod);
    int ts[50];
    rmx_ddim_timesteps(1000, 50, ts);
    CHECK(ts[0] == 999 && ts[49] == 19 && ts[1] == 979, "trailing timesteps %d %d %d", ts[0], ts[1], ts[49]);

    float *mu = malloc(sizeof(float) * PER * (NULL_CLASS + 1));
    for (int y = 0; y <= NULL_CLASS; y++)
        for (int j = 0; j < PER; j++) mu[(size_t)y * PER + j] = y == NULL_CLASS ? 0.0f : (float)sin(0.01 * j + y) * (1 + y);
    oracle o = {.be = be, .s = &s, .mu = mu, .kind = 0};
    o.out = be->alloc(be, sizeof(float) * PER * 4);
    o.host = malloc(sizeof(float) * PER * 4);
    rmx_eps_model model = {oracle_eps, &o, PER, be};
    float *x = be->alloc(be, sizeof(float) * PER * 2), *xh = malloc(sizeof(float) * PER * 2);
    int64_t keys[2] = {5, 9};
    int32_t y[2] = {0, 2};

    /* point masses, conditional only, eta 0 and 1, few and many steps */
    float etas[2] = {0.0f, 1.0f};
    int steps[3] = {1, 10, 50};
    for (int e = 0; e < 2; e++)
        for (int k = 0; k < 3; k++) {
            rmx_ddim_config c = {.steps = steps[k], .eta = etas[e], .cfg = 1.0f, .null_class = NULL_CLASS, .seed = 3,
                                 .keys = keys, .t_start = -1};
            rmx_ddim_sample(&model, &s, &c, 2, y, x);
            be->to_host(be, xh, x, sizeof(float) * PER * 2);
            double err = fmax(max_err(xh, mu, PER, 1), max_err(xh + PER, mu + 2 * PER, PER, 1));
            printf("point mass, %2d steps, eta %g: max |x - mu| = %.2e\n", steps[k], etas[e], err);
            CHECK(err < 2e-3, "DDIM %d steps eta %g lands %.3g away from the point mass", steps[k], etas[e], err);
        }

    /* guidance: eps_u (null: the point mass at 0) + w (eps_c - eps_u) is the point mass at w mu_y */
    float ws[3] = {0.0f, 2.5f, 4.0f};
    for (int i = 0; i < 3; i++) {
        rmx_ddim_config c = {.steps = 25, .eta = 0, .cfg = ws[i], .null_class = NULL_CLASS, .seed = 3, .keys = keys,
                             .t_start = -1};
        rmx_ddim_sample(&model, &s, &c, 2, y, x);
        be->to_host(be, xh, x, sizeof(float) * PER * 2);
        double err = fmax(max_err(xh, mu, PER, ws[i]), max_err(xh + PER, mu + 2 * PER, PER, ws[i]));
        printf("guidance w %g: max |x - w mu| = %.2e\n", ws[i], err);
        CHECK(err < 2e-3 * (1 + ws[i]), "guidance %g: %.3g away from w mu", ws[i], err);
    }

    /* a start from t_start: x = sqrt(ab) mu + sqrt(1 - ab) noise lands on mu */
    {
        int t0 = 600;
        double ab = s.alphas_cumprod[t0];
        for (int j = 0; j < 2 * PER; j++) xh[j] = (float)(sqrt(ab) * mu[(j / PER) * 2 * PER + j % PER] + sqrt(1 - ab) * sin(j * 1.7));
        be->to_backend(be, x, xh, sizeof(float) * PER * 2);
        rmx_ddim_config c = {.steps = 50, .eta = 0, .cfg = 1.0f, .null_class = NULL_CLASS, .seed = 3, .keys = keys,
                             .t_start = t0};
        rmx_ddim_sample(&model, &s, &c, 2, y, x);
        be->to_host(be, xh, x, sizeof(float) * PER * 2);
        double err = fmax(max_err(xh, mu, PER, 1), max_err(xh + PER, mu + 2 * PER, PER, 1));
        printf("start at t %d: max |x - mu| = %.2e\n", t0, err);
        CHECK(err < 2e-3, "from t_start: %.3g away", err);
    }

    /* a Gaussian: mean and std of the samples */
    o.kind = 1;
    o.gauss_m = 0.7f;
    o.gauss_s = 1.8f;
    {
        rmx_ddim_config c = {.steps = 50, .eta = 0, .cfg = 1.0f, .null_class = NULL_CLASS, .seed = 11, .keys = keys,
                             .t_start = -1};
        rmx_ddim_sample(&model, &s, &c, 2, y, x);
        be->to_host(be, xh, x, sizeof(float) * PER * 2);
        double sum = 0, sq = 0;
        for (int j = 0; j < 2 * PER; j++) sum += xh[j], sq += (double)xh[j] * xh[j];
        double mean = sum / (2 * PER), sd = sqrt(sq / (2 * PER) - mean * mean);
        printf("Gaussian N(0.7, 1.8^2), 50 DDIM steps: mean %.4f std %.4f\n", mean, sd);
        CHECK(fabs(mean - 0.7) < 0.06 && fabs(sd - 1.8) < 0.06, "mean %g std %g", mean, sd);
    }

    rmx_noise_schedule_free(&s);
    free(mu), free(o.host), free(xh);
    be->free(be, o.out), be->free(be, x);
    be->destroy(be);
    if (failures) fprintf(stderr, "diffusion_sampler: %d check(s) failed\n", failures);
    else printf("diffusion_sampler: all checks passed\n");
    return failures ? 1 : 0;
}
