/* The cpu backend against the reference backend, op by op, on random inputs of several shapes
 * (the architecture's 3x3 stride 1 and 2, 1x1, odd sizes, batch > 1, cin != cout).
 *
 * Tolerances are relative to the largest magnitude of the reference output:
 *   convolutions 2e-5 (float GEMM over K <= 1152 terms vs the reference's double sums),
 *   GroupNorm 2e-5, reductions 1e-6, everything element-wise 1e-6 (same arithmetic: exact in
 *   practice), quantisation exact. */
#include "ktest.h"
#include "kernels/elementwise.h"

static rmx_backend *ref, *cpu;

#define TOL_CONV 2e-5
#define TOL_NORM 2e-5
#define TOL_EW 1e-6
#define TOL_RED 1e-6

static void conv_case(int n, int cin, int h, int w, int cout, int k, int stride, int pad) {
    rmx_conv_shape s = rmx_conv_shape_make(n, cin, h, w, cout, k, stride, pad);
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k;
    size_t ny = (size_t)n * cout * s.hout * s.wout;
    float *x = kt_rand(nx, -1, 1), *wt = kt_rand(nw, -0.5f, 0.5f), *b = kt_rand(cout, -1, 1);
    float *dy = kt_rand(ny, -1, 1);
    float *y_ref = kt_alloc(ny), *y_cpu = kt_alloc(ny);
    float *dx_ref = kt_alloc(nx), *dx_cpu = kt_rand(nx, 5, 6); /* dx is written: garbage first */
    float *dw_ref = kt_rand(nw, -1, 1), *dw_cpu = kt_copy(dw_ref, nw); /* dw accumulates */
    float *db_ref = kt_rand(cout, -1, 1), *db_cpu = kt_copy(db_ref, cout);
    float *ws = kt_alloc(cpu->conv2d_workspace(cpu, &s));

    ref->conv2d_fwd(ref, &s, x, wt, b, y_ref, NULL);
    cpu->conv2d_fwd(cpu, &s, x, wt, b, y_cpu, ws);
    ref->conv2d_bwd(ref, &s, x, wt, dy, dx_ref, dw_ref, db_ref, NULL);
    cpu->conv2d_bwd(cpu, &s, x, wt, dy, dx_cpu, dw_cpu, db_cpu, ws);

    char what[160];
    snprintf(what, sizeof what, "conv n%d %dx%dx%d -> %d k%d s%d p%d", n, cin, h, w, cout, k, stride, pad);
    char line[260];
    snprintf(line, sizeof line, "%s fwd", what);
    kt_report(line, kt_rel_err(y_cpu, y_ref, ny), TOL_CONV);
    snprintf(line, sizeof line, "%s dx", what);
    kt_report(line, kt_rel_err(dx_cpu, dx_ref, nx), TOL_CONV);
    snprintf(line, sizeof line, "%s dw (+=)", what);
    kt_report(line, kt_rel_err(dw_cpu, dw_ref, nw), TOL_CONV);
    snprintf(line, sizeof line, "%s db (+=)", what);
    kt_report(line, kt_rel_err(db_cpu, db_ref, cout), TOL_CONV);

    /* no bias in the forward */
    ref->conv2d_fwd(ref, &s, x, wt, NULL, y_ref, NULL);
    cpu->conv2d_fwd(cpu, &s, x, wt, NULL, y_cpu, ws);
    snprintf(line, sizeof line, "%s fwd, no bias", what);
    kt_report(line, kt_rel_err(y_cpu, y_ref, ny), TOL_CONV);

    free(x), free(wt), free(b), free(dy), free(y_ref), free(y_cpu), free(dx_ref), free(dx_cpu);
    free(dw_ref), free(dw_cpu), free(db_ref), free(db_cpu), free(ws);
}

static void test_conv(void) {
    conv_case(2, 3, 9, 11, 5, 3, 1, 1);    /* odd sizes, cin != cout */
    conv_case(3, 4, 16, 16, 4, 3, 2, 1);   /* the encoder's downsample: 3x3 stride 2 pad 1, even */
    conv_case(2, 5, 15, 13, 7, 3, 2, 1);   /* stride 2 on odd sizes */
    conv_case(2, 6, 7, 9, 8, 1, 1, 0);     /* 1x1 skip connection */
    conv_case(1, 1, 32, 64, 8, 3, 1, 1);   /* the first layer: one input channel */
    conv_case(2, 8, 17, 33, 1, 3, 1, 1);   /* the last layer: one output channel */
    conv_case(3, 32, 24, 40, 1, 3, 1, 1);  /* ... with the decoder's 32 input channels */
    conv_case(2, 4, 9, 8, 1, 3, 2, 1);     /* one output channel, stride 2 (GEMM path) */
    conv_case(2, 16, 40, 72, 32, 3, 1, 1); /* several row blocks per sample */
    conv_case(2, 64, 48, 40, 8, 3, 2, 1);  /* several blocks through col2im (even/odd phases) */
    conv_case(2, 64, 20, 24, 48, 1, 1, 0); /* 1x1 with many channels */
    conv_case(2, 3, 10, 12, 4, 3, 1, 0);   /* valid convolution, no padding */
    conv_case(1, 2, 6, 6, 3, 1, 2, 0);     /* 1x1 stride 2 (unfolded path) */
}

static void test_groupnorm(int n, int c, int hw, int groups, float offset) {
    size_t nx = (size_t)n * c * hw;
    float *x = kt_rand(nx, offset - 2, offset + 2), *gamma = kt_rand(c, 0.5f, 1.5f), *beta = kt_rand(c, -1, 1);
    float *y_ref = kt_alloc(nx), *y_cpu = kt_alloc(nx);
    float *mean_ref = kt_alloc(n * groups), *rstd_ref = kt_alloc(n * groups);
    float *mean_cpu = kt_alloc(n * groups), *rstd_cpu = kt_alloc(n * groups);
    float *dy = kt_rand(nx, -1, 1), *dx_ref = kt_alloc(nx), *dx_cpu = kt_alloc(nx);
    float *dg_ref = kt_rand(c, -1, 1), *dg_cpu = kt_copy(dg_ref, c);
    float *db_ref = kt_rand(c, -1, 1), *db_cpu = kt_copy(db_ref, c);
    ref->groupnorm_fwd(ref, n, c, hw, groups, 1e-5f, x, gamma, beta, y_ref, mean_ref, rstd_ref);
    cpu->groupnorm_fwd(cpu, n, c, hw, groups, 1e-5f, x, gamma, beta, y_cpu, mean_cpu, rstd_cpu);
    ref->groupnorm_bwd(ref, n, c, hw, groups, x, gamma, mean_ref, rstd_ref, dy, dx_ref, dg_ref, db_ref);
    cpu->groupnorm_bwd(cpu, n, c, hw, groups, x, gamma, mean_ref, rstd_ref, dy, dx_cpu, dg_cpu, db_cpu);
    char what[160];
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d mean%+.0f fwd y", n, c, hw, groups, offset);
    kt_report(what, kt_rel_err(y_cpu, y_ref, nx), TOL_NORM);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d mean, rstd", n, c, hw, groups);
    kt_report(what, fmax(kt_rel_err(mean_cpu, mean_ref, n * groups), kt_rel_err(rstd_cpu, rstd_ref, n * groups)),
              TOL_NORM);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d bwd dx", n, c, hw, groups);
    kt_report(what, kt_rel_err(dx_cpu, dx_ref, nx), TOL_NORM);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d bwd dgamma, dbeta (+=)", n, c, hw, groups);
    kt_report(what, fmax(kt_rel_err(dg_cpu, dg_ref, c), kt_rel_err(db_cpu, db_ref, c)), TOL_NORM);
    free(x), free(gamma), free(beta), free(y_ref), free(y_cpu), free(mean_ref), free(rstd_ref);
    free(mean_cpu), free(rstd_cpu), free(dy), free(dx_ref), free(dx_cpu), free(dg_ref), free(dg_cpu);
    free(db_ref), free(db_cpu);
}

static void test_elementwise(size_t n) {
    float *x = kt_rand(n, -8, 8), *b = kt_rand(n, -1, 1), *dy = kt_rand(n, -1, 1);
    float *r1 = kt_alloc(n), *r2 = kt_alloc(n);
    char what[128];
    ref->silu_fwd(ref, n, x, r1);
    cpu->silu_fwd(cpu, n, x, r2);
    snprintf(what, sizeof what, "silu fwd n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), TOL_EW);
    ref->silu_bwd(ref, n, x, dy, r1);
    cpu->silu_bwd(cpu, n, x, dy, r2);
    snprintf(what, sizeof what, "silu bwd n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), TOL_EW);
    ref->add(ref, n, x, b, r1);
    cpu->add(cpu, n, x, b, r2);
    snprintf(what, sizeof what, "add n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), 0.0);
    memcpy(r1, b, n * sizeof(float));
    memcpy(r2, b, n * sizeof(float));
    ref->axpy(ref, n, -0.37f, x, r1);
    cpu->axpy(cpu, n, -0.37f, x, r2);
    snprintf(what, sizeof what, "axpy n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), 0.0);
    ref->scale(ref, n, 1.7f, r1);
    cpu->scale(cpu, n, 1.7f, r2);
    snprintf(what, sizeof what, "scale n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), 0.0);
    float s1 = 0, s2 = 0;
    ref->sumsq(ref, n, x, &s1);
    cpu->sumsq(cpu, n, x, &s2);
    snprintf(what, sizeof what, "sumsq n=%zu", n);
    kt_report(what, fabs((double)s1 - s2) / fabs((double)s1), TOL_RED);
    float l1 = 0.5f, l2 = 0.5f;
    ref->mse_loss(ref, n, x, b, 0.125f, &l1, r1);
    cpu->mse_loss(cpu, n, x, b, 0.125f, &l2, r2);
    snprintf(what, sizeof what, "mse_loss n=%zu value (+=)", n);
    kt_report(what, fabs((double)l1 - l2) / fabs((double)l1), TOL_RED);
    snprintf(what, sizeof what, "mse_loss n=%zu dxhat", n);
    kt_report(what, kt_rel_err(r2, r1, n), TOL_EW);
    free(x), free(b), free(dy), free(r1), free(r2);
}

static void test_upsample(int n, int c, int h, int w) {
    size_t nx = (size_t)n * c * h * w, ny = nx * 4;
    float *x = kt_rand(nx, -1, 1), *dy = kt_rand(ny, -1, 1);
    float *y1 = kt_alloc(ny), *y2 = kt_alloc(ny), *dx1 = kt_alloc(nx), *dx2 = kt_alloc(nx);
    ref->upsample2x_fwd(ref, n, c, h, w, x, y1);
    cpu->upsample2x_fwd(cpu, n, c, h, w, x, y2);
    ref->upsample2x_bwd(ref, n, c, h, w, dy, dx1);
    cpu->upsample2x_bwd(cpu, n, c, h, w, dy, dx2);
    char what[128];
    snprintf(what, sizeof what, "upsample2x n%d c%d %dx%d fwd", n, c, h, w);
    kt_report(what, kt_rel_err(y2, y1, ny), 0.0);
    snprintf(what, sizeof what, "upsample2x n%d c%d %dx%d bwd", n, c, h, w);
    kt_report(what, kt_rel_err(dx2, dx1, nx), TOL_EW);
    free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2);
}

static void test_kl(int n, int c, int hw) {
    size_t nm = (size_t)n * 2 * c * hw, nz = (size_t)n * c * hw;
    float *mom = kt_rand(nm, -3, 3), *eps = kt_rand(nz, -2, 2), *dz = kt_rand(nz, -1, 1);
    mom[(size_t)c * hw + 1] = -40.0f; /* log-variances outside the clamp: zero gradient there */
    mom[(size_t)c * hw + 2] = 25.0f;
    float *z1 = kt_alloc(nz), *z2 = kt_alloc(nz), *dm1 = kt_rand(nm, 3, 4), *dm2 = kt_rand(nm, 5, 6);
    ref->gaussian_sample_fwd(ref, n, c, hw, mom, eps, z1);
    cpu->gaussian_sample_fwd(cpu, n, c, hw, mom, eps, z2);
    ref->gaussian_sample_bwd(ref, n, c, hw, mom, eps, dz, dm1);
    cpu->gaussian_sample_bwd(cpu, n, c, hw, mom, eps, dz, dm2);
    char what[128];
    snprintf(what, sizeof what, "gaussian_sample n%d c%d hw%d fwd", n, c, hw);
    kt_report(what, kt_rel_err(z2, z1, nz), TOL_EW);
    snprintf(what, sizeof what, "gaussian_sample n%d c%d hw%d bwd (written)", n, c, hw);
    kt_report(what, kt_rel_err(dm2, dm1, nm), TOL_EW);
    float l1 = 1.0f, l2 = 1.0f;
    ref->kl_loss(ref, n, c, hw, mom, 0.25f, &l1, dm1);
    cpu->kl_loss(cpu, n, c, hw, mom, 0.25f, &l2, dm2);
    snprintf(what, sizeof what, "kl_loss n%d c%d hw%d value (+=)", n, c, hw);
    kt_report(what, fabs((double)l1 - l2) / fabs((double)l1), TOL_RED);
    snprintf(what, sizeof what, "kl_loss n%d c%d hw%d dmoments (+=)", n, c, hw);
    kt_report(what, kt_rel_err(dm2, dm1, nm), TOL_EW);
    free(mom), free(eps), free(dz), free(z1), free(z2), free(dm1), free(dm2);
}

static void test_vq(int n, int d, int hw, int k) {
    size_t nz = (size_t)n * d * hw, nq = (size_t)n * hw;
    float *ze = kt_rand(nz, -1, 1), *cb = kt_rand((size_t)k * d, -1, 1);
    int32_t *i1 = calloc(nq, sizeof *i1), *i2 = calloc(nq, sizeof *i2);
    float *q1 = kt_alloc(nz), *q2 = kt_alloc(nz);
    ref->vq_quantize(ref, n, d, hw, ze, cb, k, i1, q1);
    cpu->vq_quantize(cpu, n, d, hw, ze, cb, k, i2, q2);
    char what[128];
    snprintf(what, sizeof what, "vq_quantize n%d d%d hw%d k%d idx and z_q identical", n, d, hw, k);
    kt_expect(!memcmp(i1, i2, nq * sizeof *i1) && !memcmp(q1, q2, nz * sizeof *q1), what);
    float *c1 = kt_rand(k, 0, 3), *c2 = kt_copy(c1, k), *s1 = kt_rand((size_t)k * d, -1, 1);
    float *s2 = kt_copy(s1, (size_t)k * d);
    ref->vq_stats(ref, n, d, hw, ze, i1, k, c1, s1);
    cpu->vq_stats(cpu, n, d, hw, ze, i1, k, c2, s2);
    snprintf(what, sizeof what, "vq_stats n%d d%d hw%d k%d counts and sums identical", n, d, hw, k);
    kt_expect(!memcmp(c1, c2, k * sizeof *c1) && !memcmp(s1, s2, (size_t)k * d * sizeof *s1), what);
    free(ze), free(cb), free(i1), free(i2), free(q1), free(q2), free(c1), free(c2), free(s1), free(s2);
}

static void test_adamw(size_t n) {
    float *p1 = kt_rand(n, -1, 1), *g = kt_rand(n, -1, 1), *m1 = kt_rand(n, -0.1f, 0.1f);
    float *v1 = kt_rand(n, 0, 0.01f), *p2 = kt_copy(p1, n), *m2 = kt_copy(m1, n), *v2 = kt_copy(v1, n);
    rmx_adamw_hparams hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7};
    ref->adamw(ref, n, n / 2, p1, g, m1, v1, &hp);
    cpu->adamw(cpu, n, n / 2, p2, g, m2, v2, &hp);
    char what[128];
    snprintf(what, sizeof what, "adamw n=%zu param, m, v", n);
    kt_report(what, fmax(kt_rel_err(p2, p1, n), fmax(kt_rel_err(m2, m1, n), kt_rel_err(v2, v1, n))), TOL_EW);
    free(p1), free(g), free(m1), free(v1), free(p2), free(m2), free(v2);
}

static void test_randn(void) {
    int64_t idx[5] = {3, 17, 0, 1000000007LL, 4};
    size_t per = 20011, nn = 5 * per;
    float *a = kt_alloc(nn), *b = kt_alloc(nn);
    ref->randn(ref, a, 5, per, 42, 2, 9, idx);
    cpu->randn(cpu, b, 5, per, 42, 2, 9, idx);
    kt_expect(!memcmp(a, b, nn * sizeof *a), "randn 5 x 20011 identical to the reference");
    free(a), free(b);
}

/* The shared arithmetic itself: rmx_expf (no libm, so it vectorises) against exp() in double. */
static void test_expf(void) {
    double err = 0.0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double want = exp((double)x);
        err = fmax(err, fabs((double)rmx_expf(x) - want) / want);
    }
    kt_report("rmx_expf on [-87, 88] vs exp() in double (relative)", err, 3.0e-7);
    double serr = 0.0;
    for (int i = 0; i <= 200000; i++) {
        float x = -30.0f + 60.0f * (float)i / 200000.0f;
        double s = 1.0 / (1.0 + exp(-(double)x)), want = x * s, dwant = s * (1.0 + x * (1.0 - s));
        serr = fmax(serr, fabs((double)rmx_silu(x) - want) / fmax(1.0, fabs(want)));
        serr = fmax(serr, fabs((double)rmx_silu_grad(x) - dwant) / fmax(1.0, fabs(dwant)));
    }
    /* the gradient's x (1 - s) carries x ulp(1) from rounding s near 1: up to 30 * 6e-8 here */
    kt_report("rmx_silu, rmx_silu_grad on [-30, 30] vs double formula", serr, 4.0e-6);
    float nan = NAN;
    kt_expect(rmx_expf(-100.0f) == 0.0f && isinf(rmx_expf(100.0f)) && isnan(rmx_expf(nan)) && isnan(rmx_silu(nan)) &&
                  rmx_silu(-200.0f) == 0.0f && rmx_silu(200.0f) == 200.0f,
              "rmx_expf saturates to 0 and inf, propagates NaN; silu of +-200 and NaN");
}

int main(void) {
    ref = rmx_backend_ref_create();
    cpu = rmx_backend_cpu_create(2);
    kt_seed(12345);
    printf("cpu backend vs reference backend (errors relative to the reference's max |value|)\n");
    test_expf();
    test_conv();
    test_groupnorm(2, 32, 37, 8, 0);
    test_groupnorm(3, 6, 50, 3, 3);
    test_groupnorm(1, 4, 20000, 4, -1);
    test_groupnorm(4, 8, 9, 8, 0);
    test_elementwise(1000);
    test_elementwise(300007);
    test_upsample(2, 3, 5, 7);
    test_upsample(3, 8, 16, 32);
    test_kl(2, 4, 35);
    test_kl(3, 8, 2048);
    test_vq(2, 5, 33, 37);
    test_vq(4, 8, 512, 256);
    test_adamw(1001);
    test_adamw(200003);
    test_randn();
    ref->destroy(ref);
    cpu->destroy(cpu);
    return kt_finish("kernels_cpu_vs_ref");
}
