/* The cpu backend against the reference backend, op by op, on random inputs of several shapes
 * (the architecture's 3x3 stride 1 and 2, 1x1, odd sizes, batch > 1, cin != cout).
 *
 * Tolerances are relative to the largest magnitude of the reference output:
 *   convolutions 2e-5 (float GEMM over K <= 1152 terms vs the reference's double sums),
 *   GroupNorm 2e-5, reductions 1e-6, everything element-wise 1e-6 (same arithmetic: exact in
 *   practice), quantisation exact; the remix losses: Gram matrices 2e-5 (float GEMM), the total
 *   variation's value 1e-6 and its gradient exact (elementwise.h on both sides). */
#include "ktest.h"
#include "kernels/cpu/cpu.h"
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

/* ---- transformer ops ---- */

#define TOL_GEMM 2e-5
#define TOL_ATT 3e-5

static int32_t *ialloc(size_t n) {
    int32_t *p = calloc(n ? n : 1, sizeof(int32_t));
    if (!p) exit(2);
    return p;
}

static void linear_case(int rows, int in, int out) {
    size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = kt_rand(nx, -1, 1), *w = kt_rand(nw, -0.5f, 0.5f), *b = kt_rand(out, -1, 1), *dy = kt_rand(ny, -1, 1);
    float *y1 = kt_alloc(ny), *y2 = kt_rand(ny, 5, 6), *dx1 = kt_alloc(nx), *dx2 = kt_rand(nx, 5, 6);
    float *dw1 = kt_rand(nw, -1, 1), *dw2 = kt_copy(dw1, nw), *db1 = kt_rand(out, -1, 1), *db2 = kt_copy(db1, out);
    ref->linear_fwd(ref, rows, in, out, x, w, b, y1);
    cpu->linear_fwd(cpu, rows, in, out, x, w, b, y2);
    ref->linear_bwd(ref, rows, in, out, x, w, dy, dx1, dw1, db1);
    cpu->linear_bwd(cpu, rows, in, out, x, w, dy, dx2, dw2, db2);
    char what[200];
    snprintf(what, sizeof what, "linear rows%d %d -> %d fwd (written)", rows, in, out);
    kt_report(what, kt_rel_err(y2, y1, ny), TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d dx (written)", rows, in, out);
    kt_report(what, kt_rel_err(dx2, dx1, nx), TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d dw, db (+=)", rows, in, out);
    kt_report(what, fmax(kt_rel_err(dw2, dw1, nw), kt_rel_err(db2, db1, out)), TOL_GEMM);
    ref->linear_fwd(ref, rows, in, out, x, w, NULL, y1);
    cpu->linear_fwd(cpu, rows, in, out, x, w, NULL, y2);
    snprintf(what, sizeof what, "linear rows%d %d -> %d fwd, no bias", rows, in, out);
    kt_report(what, kt_rel_err(y2, y1, ny), TOL_GEMM);
    free(x), free(w), free(b), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(dw1), free(dw2), free(db1);
    free(db2);
}

static void layernorm_case(int rows, int d, float offset) {
    size_t n = (size_t)rows * d;
    float *x = kt_rand(n, offset - 2, offset + 2), *dy = kt_rand(n, -1, 1);
    float *y1 = kt_alloc(n), *y2 = kt_rand(n, 5, 6), *r1 = kt_alloc(rows), *r2 = kt_rand(rows, 5, 6);
    float *dx1 = kt_alloc(n), *dx2 = kt_rand(n, 5, 6);
    ref->layernorm_fwd(ref, rows, d, 1e-6f, x, y1, r1);
    cpu->layernorm_fwd(cpu, rows, d, 1e-6f, x, y2, r2);
    ref->layernorm_bwd(ref, rows, d, y1, r1, dy, dx1);
    cpu->layernorm_bwd(cpu, rows, d, y1, r1, dy, dx2);
    char what[200];
    snprintf(what, sizeof what, "layernorm rows%d d%d mean%+.0f y, rstd (written)", rows, d, offset);
    kt_report(what, fmax(kt_rel_err(y2, y1, n), kt_rel_err(r2, r1, rows)), TOL_NORM);
    snprintf(what, sizeof what, "layernorm rows%d d%d mean%+.0f dx (written)", rows, d, offset);
    kt_report(what, kt_rel_err(dx2, dx1, n), TOL_NORM);
    free(x), free(dy), free(y1), free(y2), free(r1), free(r2), free(dx1), free(dx2);
}

static void gelu_case(size_t n) {
    float *x = kt_rand(n, -10, 10), *dy = kt_rand(n, -1, 1), *r1 = kt_alloc(n), *r2 = kt_rand(n, 5, 6);
    char what[128];
    ref->gelu_fwd(ref, n, x, r1);
    cpu->gelu_fwd(cpu, n, x, r2);
    snprintf(what, sizeof what, "gelu fwd n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), 0.0);
    ref->gelu_bwd(ref, n, x, dy, r1);
    cpu->gelu_bwd(cpu, n, x, dy, r2);
    snprintf(what, sizeof what, "gelu bwd n=%zu", n);
    kt_report(what, kt_rel_err(r2, r1, n), 0.0);
    free(x), free(dy), free(r1), free(r2);
}

/* The tanh-GELU itself against PyTorch's formula 0.5 x (1 + tanh(u)) in double, and its derivative. */
static void test_gelu_formula(void) {
    double err = 0.0, derr = 0.0;
    for (int i = 0; i <= 200000; i++) {
        float x = -12.0f + 24.0f * (float)i / 200000.0f;
        double xd = x, u = 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd);
        double want = 0.5 * xd * (1.0 + tanh(u));
        double du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * xd * xd), th = tanh(u);
        double dwant = 0.5 * (1.0 + th) + 0.5 * xd * (1.0 - th * th) * du;
        err = fmax(err, fabs((double)rmx_gelu(x) - want) / fmax(1.0, fabs(want)));
        derr = fmax(derr, fabs((double)rmx_gelu_grad(x) - dwant) / fmax(1.0, fabs(dwant)));
    }
    kt_report("rmx_gelu on [-12, 12] vs 0.5 x (1 + tanh u) in double", err, 1e-6);
    kt_report("rmx_gelu_grad on [-12, 12] vs the derivative in double", derr, 4e-6);
    kt_expect(rmx_gelu(-200.0f) == 0.0f && rmx_gelu(200.0f) == 200.0f && rmx_gelu_grad(-200.0f) == 0.0f &&
                  rmx_gelu_grad(200.0f) == 1.0f && isnan(rmx_gelu(NAN)),
              "rmx_gelu saturates to 0 and x (gradient 0 and 1), propagates NaN");
}

static void modulate_case(int batch, int tokens, int d, int ld) {
    size_t n = (size_t)batch * tokens * d, nm = (size_t)batch * ld;
    float *x = kt_rand(n, -2, 2), *mod = kt_rand(nm, -1, 1), *dy = kt_rand(n, -1, 1);
    float *y1 = kt_alloc(n), *y2 = kt_rand(n, 5, 6), *dx1 = kt_alloc(n), *dx2 = kt_rand(n, 5, 6);
    float *dm1 = kt_rand(nm, 5, 6), *dm2 = kt_copy(dm1, nm);
    ref->modulate_fwd(ref, batch, tokens, d, x, mod, mod + d, ld, y1);
    cpu->modulate_fwd(cpu, batch, tokens, d, x, mod, mod + d, ld, y2);
    ref->modulate_bwd(ref, batch, tokens, d, x, mod + d, ld, dy, dx1, dm1, dm1 + d);
    cpu->modulate_bwd(cpu, batch, tokens, d, x, mod + d, ld, dy, dx2, dm2, dm2 + d);
    char what[200];
    snprintf(what, sizeof what, "modulate b%d t%d d%d ld%d fwd", batch, tokens, d, ld);
    kt_report(what, kt_rel_err(y2, y1, n), 0.0);
    snprintf(what, sizeof what, "modulate b%d t%d d%d ld%d dx, dshift, dscale", batch, tokens, d, ld);
    kt_report(what, fmax(kt_rel_err(dx2, dx1, n), kt_rel_err(dm2, dm1, nm)), TOL_RED);
    /* gated residual on the stream y1 (as h: x) with the gate at column 2d */
    float *s1 = kt_copy(dy, n), *s2 = kt_copy(dy, n);
    ref->gated_add_fwd(ref, batch, tokens, d, x, mod + 2 * d, ld, s1);
    cpu->gated_add_fwd(cpu, batch, tokens, d, x, mod + 2 * d, ld, s2);
    snprintf(what, sizeof what, "gated_add b%d t%d d%d ld%d fwd (in place +=)", batch, tokens, d, ld);
    kt_report(what, kt_rel_err(s2, s1, n), 0.0);
    ref->gated_add_bwd(ref, batch, tokens, d, x, mod + 2 * d, ld, dy, dx1, dm1 + 2 * d);
    cpu->gated_add_bwd(cpu, batch, tokens, d, x, mod + 2 * d, ld, dy, dx2, dm2 + 2 * d);
    snprintf(what, sizeof what, "gated_add b%d t%d d%d ld%d dh, dgate", batch, tokens, d, ld);
    kt_report(what, fmax(kt_rel_err(dx2, dx1, n), kt_rel_err(dm2, dm1, nm)), TOL_RED);
    /* in place (the input gradient written over dy): the same bits as out of place */
    int same = 1;
    for (int k = 0; k < 2; k++) {
        rmx_backend *be = k ? cpu : ref;
        float *io = kt_copy(dy, n), *o1 = kt_alloc(n), *m1 = kt_alloc(nm), *m2 = kt_alloc(nm);
        be->modulate_bwd(be, batch, tokens, d, x, mod + d, ld, dy, o1, m1, m1 + d);
        be->modulate_bwd(be, batch, tokens, d, x, mod + d, ld, io, io, m2, m2 + d);
        same &= !memcmp(io, o1, n * sizeof *io) && !memcmp(m1, m2, nm * sizeof *m1);
        memcpy(io, dy, n * sizeof *io);
        be->gated_add_bwd(be, batch, tokens, d, x, mod + 2 * d, ld, dy, o1, m1 + 2 * d);
        be->gated_add_bwd(be, batch, tokens, d, x, mod + 2 * d, ld, io, io, m2 + 2 * d);
        same &= !memcmp(io, o1, n * sizeof *io) && !memcmp(m1, m2, nm * sizeof *m1);
        free(io), free(o1), free(m1), free(m2);
    }
    snprintf(what, sizeof what, "modulate, gated_add b%d t%d d%d bwd in place (dx = dy) == out of place", batch,
             tokens, d);
    kt_expect(same, what);
    free(x), free(mod), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(dm1), free(dm2), free(s1), free(s2);
}

/* Attention written the way PyTorch states it, independently of the backends: q, k, v split from
 * qkv by reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4), S = q k^T hd^-0.5, P = softmax(S) over full
 * rows, O = P v, out = O.transpose(1, 2).reshape(B, N, d); everything in double. */
static void naive_attention(int B, int N, int d, int H, const float *qkv, double *out, double *lse) {
    int hd = d / H;
    double *q = calloc((size_t)N * hd, sizeof(double)), *k = calloc((size_t)N * hd, sizeof(double));
    double *v = calloc((size_t)N * hd, sizeof(double)), *S = calloc((size_t)N * N, sizeof(double));
    if (!q || !k || !v || !S) exit(2);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            for (int n = 0; n < N; n++)
                for (int c = 0; c < hd; c++) {
                    /* reshape (B, N, 3, H, hd): element (b, n, s, h, c) */
                    q[(size_t)n * hd + c] = qkv[((((size_t)b * N + n) * 3 + 0) * H + h) * hd + c];
                    k[(size_t)n * hd + c] = qkv[((((size_t)b * N + n) * 3 + 1) * H + h) * hd + c];
                    v[(size_t)n * hd + c] = qkv[((((size_t)b * N + n) * 3 + 2) * H + h) * hd + c];
                }
            for (int i = 0; i < N; i++) {
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < N; j++) {
                    double s = 0.0;
                    for (int c = 0; c < hd; c++) s += q[(size_t)i * hd + c] * k[(size_t)j * hd + c];
                    S[(size_t)i * N + j] = s / sqrt((double)hd);
                    mx = fmax(mx, S[(size_t)i * N + j]);
                }
                for (int j = 0; j < N; j++) sum += exp(S[(size_t)i * N + j] - mx);
                lse[((size_t)b * H + h) * N + i] = mx + log(sum);
                for (int c = 0; c < hd; c++) {
                    double o = 0.0;
                    for (int j = 0; j < N; j++) o += exp(S[(size_t)i * N + j] - mx) / sum * v[(size_t)j * hd + c];
                    out[((size_t)b * N + i) * d + h * hd + c] = o;
                }
            }
        }
    free(q), free(k), free(v), free(S);
}

static void attention_case(int batch, int tokens, int d, int heads, float range, int naive) {
    size_t nq = (size_t)batch * tokens * 3 * d, no = (size_t)batch * tokens * d, nl = (size_t)batch * heads * tokens;
    float *qkv = kt_rand(nq, -range, range), *dout = kt_rand(no, -1, 1);
    float *o1 = kt_alloc(no), *o2 = kt_rand(no, 5, 6), *l1 = kt_alloc(nl), *l2 = kt_rand(nl, 5, 6);
    float *dq1 = kt_alloc(nq), *dq2 = kt_rand(nq, 5, 6);
    float *ws = kt_rand(cpu->attention_workspace(cpu, batch, tokens, d, heads), 5, 6);
    ref->attention_fwd(ref, batch, tokens, d, heads, qkv, o1, l1, NULL);
    cpu->attention_fwd(cpu, batch, tokens, d, heads, qkv, o2, l2, ws);
    ref->attention_bwd(ref, batch, tokens, d, heads, qkv, o1, l1, dout, dq1, NULL);
    cpu->attention_bwd(cpu, batch, tokens, d, heads, qkv, o2, l2, dout, dq2, ws);
    char what[200];
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d |qkv|<%.0f out (written)", batch, tokens, d, heads, range);
    kt_report(what, kt_rel_err(o2, o1, no), TOL_ATT);
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d lse (written)", batch, tokens, d, heads);
    kt_report(what, kt_rel_err(l2, l1, nl), TOL_ATT);
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d dqkv (written)", batch, tokens, d, heads);
    kt_report(what, kt_rel_err(dq2, dq1, nq), 5e-5);
    if (naive) {
        double *no_ = calloc(no, sizeof(double)), *nl_ = calloc(nl, sizeof(double));
        if (!no_ || !nl_) exit(2);
        naive_attention(batch, tokens, d, heads, qkv, no_, nl_);
        snprintf(what, sizeof what, "attention b%d t%d d%d h%d: ref out, lse vs PyTorch's formula", batch, tokens,
                 d, heads);
        kt_report(what, fmax(kt_rel_err_d(o1, no_, no), kt_rel_err_d(l1, nl_, nl)), 1e-6);
        free(no_), free(nl_);
    }
    free(qkv), free(dout), free(o1), free(o2), free(l1), free(l2), free(dq1), free(dq2), free(ws);
}

static void embedding_case(int n, int d, int rows) {
    int32_t *idx = ialloc(n);
    for (int i = 0; i < n; i++) idx[i] = (int32_t)(kt_uniform() * (rows - 1)); /* the last row unused */
    float *table = kt_rand((size_t)rows * d, -1, 1), *dy = kt_rand((size_t)n * d, -1, 1);
    float *y1 = kt_alloc((size_t)n * d), *y2 = kt_rand((size_t)n * d, 5, 6);
    float *dt1 = kt_rand((size_t)rows * d, -1, 1), *dt2 = kt_copy(dt1, (size_t)rows * d);
    ref->embedding_fwd(ref, n, d, idx, table, y1);
    cpu->embedding_fwd(cpu, n, d, idx, table, y2);
    ref->embedding_bwd(ref, n, d, rows, idx, dy, dt1);
    cpu->embedding_bwd(cpu, n, d, rows, idx, dy, dt2);
    char what[200];
    snprintf(what, sizeof what, "embedding n%d d%d rows%d fwd identical, dtable (+=)", n, d, rows);
    kt_report(what, kt_rel_err(y2, y1, (size_t)n * d) + kt_rel_err(dt2, dt1, (size_t)rows * d), 0.0);
    free(idx), free(table), free(dy), free(y1), free(y2), free(dt1), free(dt2);
}

static void timestep_case(int n, int dim) {
    float *t = kt_rand(n, 0, 999), *y1 = kt_alloc((size_t)n * dim), *y2 = kt_rand((size_t)n * dim, 5, 6);
    t[0] = 0.0f, t[n - 1] = 999.0f;
    ref->timestep_embed(ref, n, dim, t, y1);
    cpu->timestep_embed(cpu, n, dim, t, y2);
    char what[200];
    snprintf(what, sizeof what, "timestep_embed n%d dim%d identical", n, dim);
    kt_report(what, kt_rel_err(y2, y1, (size_t)n * dim), 0.0);
    /* DiT's formula: freqs = exp(-ln(10000) arange(half) / half) in float32, args = t freqs,
     * [cos(args), sin(args)]; here in double from the same float arguments */
    int half = dim / 2;
    double err = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            float f = (float)exp(-log(10000.0) * j / half), arg = t[i] * f;
            err = fmax(err, fabs(y1[(size_t)i * dim + j] - cos((double)arg)));
            err = fmax(err, fabs(y1[(size_t)i * dim + half + j] - sin((double)arg)));
        }
    snprintf(what, sizeof what, "timestep_embed n%d dim%d: [cos, sin] of t exp(-ln(1e4) j / half)", n, dim);
    kt_report(what, err, 1.2e-7);
    free(t), free(y1), free(y2);
}

static void patch_case(int batch, int c, int h, int w, int p) {
    size_t n = (size_t)batch * c * h * w;
    for (int order = 0; order < 2; order++) {
        float *x = kt_rand(n, -1, 1), *t1 = kt_alloc(n), *t2 = kt_rand(n, 5, 6), *x1 = kt_alloc(n), *x2 = kt_rand(n, 5, 6);
        ref->patchify(ref, batch, c, h, w, p, order, x, t1);
        cpu->patchify(cpu, batch, c, h, w, p, order, x, t2);
        ref->unpatchify(ref, batch, c, h, w, p, order, t1, x1);
        cpu->unpatchify(cpu, batch, c, h, w, p, order, t1, x2);
        /* the layout, element by element from the definition: token (gy, gx) row-major over the
         * grid; feature (c, py, px) for cpq, (py, px, c) for pqc */
        int ok = 1, gw = w / p, gh = h / p;
        for (int b = 0; b < batch; b++)
            for (int ch = 0; ch < c; ch++)
                for (int yy = 0; yy < h; yy++)
                    for (int xx = 0; xx < w; xx++) {
                        size_t tok = ((size_t)b * gh + yy / p) * gw + xx / p;
                        int py = yy % p, px = xx % p;
                        size_t f = order == RMX_PATCH_CPQ ? ((size_t)ch * p + py) * p + px : ((size_t)py * p + px) * c + ch;
                        ok &= t1[tok * c * p * p + f] == x[(((size_t)b * c + ch) * h + yy) * w + xx];
                    }
        char what[200];
        snprintf(what, sizeof what, "patchify %s b%d c%d %dx%d p%d: layout, cpu identical, unpatchify inverts",
                 order ? "pqc" : "cpq", batch, c, h, w, p);
        kt_expect(ok && !memcmp(t1, t2, n * sizeof *t1) && !memcmp(x1, x, n * sizeof *x1) &&
                      !memcmp(x2, x, n * sizeof *x2),
                  what);
        free(x), free(t1), free(t2), free(x1), free(x2);
    }
}

static void misc_case(int batch, size_t n) {
    float *a = kt_rand(n, -1, 1), *y1 = kt_rand((size_t)batch * n, -1, 1), *y2 = kt_copy(y1, (size_t)batch * n);
    ref->add_broadcast(ref, batch, n, a, y1);
    cpu->add_broadcast(cpu, batch, n, a, y2);
    char what[200];
    snprintf(what, sizeof what, "add_broadcast b%d n%zu (+=)", batch, n);
    kt_report(what, kt_rel_err(y2, y1, (size_t)batch * n), 0.0);
    float ca[5] = {0.9f, 0.5f, 0.1f, 1.0f, 0.0f}, cb[5] = {0.3f, -0.8f, 0.99f, 0.0f, 1.0f};
    int ns = batch < 5 ? batch : 5;
    size_t m = (size_t)ns * n;
    float *x = kt_rand(m, -1, 1), *e = kt_rand(m, -1, 1), *z1 = kt_alloc(m), *z2 = kt_rand(m, 5, 6);
    ref->axpby_samples(ref, ns, n, ca, x, cb, e, z1);
    cpu->axpby_samples(cpu, ns, n, ca, x, cb, e, z2);
    float *xi = kt_copy(x, m), *ei = kt_copy(e, m);
    cpu->axpby_samples(cpu, ns, n, ca, xi, cb, e, xi); /* y = x */
    cpu->axpby_samples(cpu, ns, n, ca, x, cb, ei, ei); /* y = e */
    snprintf(what, sizeof what, "axpby_samples n%d x %zu (written; in place on x and on e)", ns, n);
    kt_report(what, fmax(kt_rel_err(z2, z1, m), fmax(kt_rel_err(xi, z1, m), kt_rel_err(ei, z1, m))), 0.0);
    float *p = kt_rand(m, -1, 1), *e1 = kt_rand(m, -1, 1), *e2 = kt_copy(e1, m);
    ref->ema_update(ref, m, 0.9999f, p, e1);
    cpu->ema_update(cpu, m, 0.9999f, p, e2);
    snprintf(what, sizeof what, "ema_update n%zu", m);
    kt_report(what, kt_rel_err(e2, e1, m), 0.0);
    free(a), free(y1), free(y2), free(x), free(e), free(z1), free(z2), free(xi), free(ei), free(p), free(e1), free(e2);
}

/* rmx_cpu_sgemm (the transformer ops' GEMM: AVX-512 micro-kernels, or OpenBLAS under
 * RMX_CPU_GENERIC) against a double-precision triple loop: every transpose combination, alpha and
 * beta (beta 0 must not read C: it starts as NaN), leading dimensions wider than the matrices, and
 * sizes that cross the blocking (edges of the 12 x 32 tiles, several K, M and N blocks). */
static void gemm_case(int ta, int tb, int m, int n, int k, float alpha, float beta) {
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 7;
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
    float *a = kt_rand(na, -1, 1), *b = kt_rand(nb, -1, 1), *c = kt_rand(nc, -1, 1);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++) c[i] = NAN;
    float *c0 = kt_copy(c, nc);
    double *want = calloc((size_t)m * n, sizeof(double));
    float *got = kt_alloc((size_t)m * n), *wantf = kt_alloc((size_t)m * n);
    if (!want) exit(2);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int q = 0; q < k; q++)
                acc += (double)(ta ? a[(size_t)q * lda + i] : a[(size_t)i * lda + q]) *
                       (tb ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j]);
            want[(size_t)i * n + j] = alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * c[(size_t)i * ldc + j]);
        }
    rmx_cpu_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    int pad_ok = 1;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) got[(size_t)i * n + j] = c[(size_t)i * ldc + j], wantf[(size_t)i * n + j] = (float)want[(size_t)i * n + j];
        for (int j = n; j < ldc; j++) pad_ok &= !memcmp(&c[(size_t)i * ldc + j], &c0[(size_t)i * ldc + j], sizeof(float));
    }
    char what[200];
    snprintf(what, sizeof what, "rmx_cpu_sgemm %c%c m%d n%d k%d alpha %.2g beta %.2g", ta ? 'T' : 'N', tb ? 'T' : 'N',
             m, n, k, alpha, beta);
    kt_report(what, pad_ok ? kt_rel_err_d(got, want, (size_t)m * n) : INFINITY, TOL_GEMM);
    free(a), free(b), free(c), free(c0), free(want), free(got), free(wantf);
}

static void test_gemm(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(ta, tb, 13, 35, 17, 1.0f, 0.0f);
            gemm_case(ta, tb, 1, 1, 1, 0.5f, 1.0f);
            gemm_case(ta, tb, 150, 1030, 300, 0.125f, 1.0f); /* 2 M blocks, 2 N blocks, 2 K blocks */
            gemm_case(ta, tb, 37, 64, 513, -1.5f, 0.5f);     /* 3 K blocks, general beta */
        }
    gemm_case(0, 0, 7, 5, 0, 1.0f, 0.0f); /* k = 0: C = beta C, zeros for beta 0 */
    gemm_case(0, 1, 24, 32, 64, 1.0f, 0.0f); /* exact tiles */
}

static void test_transformer(void) {
    test_gemm();
    linear_case(1, 384, 2304); /* the adaLN linear at batch 1 */
    linear_case(37, 19, 23);
    linear_case(700, 96, 600);  /* several row chunks and column tiles */
    linear_case(3, 256, 1);     /* one output */
    linear_case(300, 1, 40);    /* one input */
    layernorm_case(1, 384, 0);
    layernorm_case(37, 19, 3);
    layernorm_case(500, 384, -20);
    gelu_case(1001);
    gelu_case(300007);
    test_gelu_formula();
    modulate_case(2, 37, 24, 6 * 24);
    modulate_case(3, 513, 48, 3 * 48);
    modulate_case(1, 1, 5, 5 * 6);
    attention_case(2, 37, 24, 3, 2, 1);   /* odd token count */
    attention_case(1, 1, 8, 2, 1, 1);     /* one token */
    attention_case(2, 130, 64, 2, 2, 1);  /* tokens past a block boundary */
    attention_case(1, 200, 48, 1, 6, 0);  /* sharp softmax (large scores) */
    attention_case(3, 64, 32, 4, 2, 0);   /* exactly one block */
    attention_case(1, 513, 64, 2, 2, 0);
    embedding_case(9, 5, 4);
    embedding_case(1000, 384, 11);
    timestep_case(7, 256);
    timestep_case(1, 8);
    patch_case(2, 3, 4, 6, 2);
    patch_case(2, 4, 16, 32, 2); /* the latent grid: non-square */
    patch_case(1, 2, 9, 6, 3);
    misc_case(3, 1001);
    misc_case(8, 70000);
}

/* ---- remix (stage 3) losses ---- */

/* Gram matrices: g written (garbage first), df accumulated onto known values. */
static void gram_case(int n, int c, int hw) {
    size_t nf = (size_t)n * c * hw, ng = (size_t)n * c * c;
    float scale = 1.0f / ((float)c * (float)hw);
    float *f = kt_rand(nf, -1, 1), *dg = kt_rand(ng, -1, 1);
    float *g1 = kt_alloc(ng), *g2 = kt_rand(ng, 5, 6), *df1 = kt_rand(nf, -1, 1), *df2 = kt_copy(df1, nf);
    ref->gram_fwd(ref, n, c, hw, scale, f, g1);
    cpu->gram_fwd(cpu, n, c, hw, scale, f, g2);
    ref->gram_bwd(ref, n, c, hw, scale, f, dg, df1);
    cpu->gram_bwd(cpu, n, c, hw, scale, f, dg, df2);
    char what[200];
    snprintf(what, sizeof what, "gram n%d c%d hw%d fwd (written)", n, c, hw);
    kt_report(what, kt_rel_err(g2, g1, ng), TOL_GEMM);
    snprintf(what, sizeof what, "gram n%d c%d hw%d bwd df (+=)", n, c, hw);
    kt_report(what, kt_rel_err(df2, df1, nf), TOL_GEMM);
    free(f), free(dg), free(g1), free(g2), free(df1), free(df2);
}

/* Total variation: the value added to the scalar, dx accumulated onto known values (the same
 * per-element arithmetic of elementwise.h: exact), and the value alone with dx NULL. */
static void tv_case(int n, int c, int h, int w) {
    size_t nx = (size_t)n * c * h * w;
    float *x = kt_rand(nx, -2, 2), *dx1 = kt_rand(nx, -1, 1), *dx2 = kt_copy(dx1, nx);
    float l1 = 0.5f, l2 = 0.5f, l3 = 0.5f;
    ref->tv_loss(ref, n, c, h, w, x, 0.3f, &l1, dx1);
    cpu->tv_loss(cpu, n, c, h, w, x, 0.3f, &l2, dx2);
    cpu->tv_loss(cpu, n, c, h, w, x, 0.3f, &l3, NULL);
    char what[200];
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d value (+=)", n, c, h, w);
    kt_report(what, fabs((double)l1 - l2) / fabs((double)l1), TOL_RED);
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d dx (+=, exact)", n, c, h, w);
    kt_report(what, kt_rel_err(dx2, dx1, nx), 0.0);
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d dx NULL: the same value", n, c, h, w);
    kt_expect(l3 == l2, what);
    free(x), free(dx1), free(dx2);
}

static void test_remix(void) {
    gram_case(2, 3, 7);        /* odd sizes */
    gram_case(1, 1, 5);        /* one channel */
    gram_case(3, 64, 300);     /* several row blocks a sample */
    gram_case(2, 130, 50);     /* rows past the micro-kernel's tiles */
    gram_case(1, 32, 32768);   /* the bench's first level: 32 channels x 128 x 256 */
    gram_case(2, 16, 1000);    /* several column blocks of df */
    tv_case(2, 3, 7, 5);
    tv_case(1, 1, 1, 9);       /* h == 1: no frequency term */
    tv_case(2, 2, 6, 1);       /* w == 1: no time term */
    tv_case(1, 1, 1, 1);       /* neither: value 0, dx unchanged */
    tv_case(3, 8, 33, 17);
    tv_case(4, 1, 128, 256);   /* a mel batch: several reduction blocks, crossing planes */
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
    test_transformer();
    test_remix();
    ref->destroy(ref);
    cpu->destroy(cpu);
    return kt_finish("kernels_cpu_vs_ref");
}
