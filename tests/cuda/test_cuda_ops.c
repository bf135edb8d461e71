/* The cuda backend against the reference backend, op by op, forward and backward, on random inputs
 * of the architecture's shapes and some awkward ones. Inputs are made on the host, copied to the
 * GPU, and the results copied back. TF32 is off (RMX_CUDA_TF32 unset): float GEMMs.
 *
 * Tolerances, relative to the largest magnitude of the reference output:
 *   convolutions 5e-5 (float GEMM, summed in cuBLAS's order, against the reference's double sums;
 *   the weight gradient sums up to a few thousand products), GroupNorm 2e-5, reductions 1e-6,
 *   element-wise ops built on libm (randn, gaussian sample, KL) 1e-6: the device's logf, expf,
 *   sinf, cosf may differ from glibc's in the last bits; everything else exact (0): the same
 *   elementwise.h arithmetic without contraction, or the same float sums in the same order
 *   (quantisation, codebook statistics, upsample, AdamW).
 * Also checked: outputs documented as written are written (device buffers start as garbage),
 * accumulated ones accumulate, NULL pointers skip their work, and the convolution's chunking over
 * samples (shapes whose unfolded input exceeds one chunk) against the cpu backend, and the weight
 * gradient's split into pieces of columns.
 * The transformer ops: linear 5e-5 (float GEMM), layernorm 2e-5, attention 1e-4 (float GEMMs over up
 * to 6000 keys; against the cpu backend at the sizes the reference is too slow for), the column
 * sums (db, dshift, dscale, dgate) 1e-6, the timestep embedding 1e-6 (device cos / sin / exp in
 * double), everything else exact: GELU, modulation, gates, embedding (same double sums in the same
 * order), patches, broadcast, axpby and EMA. Attention runs twice and must repeat bit for bit, and
 * each output of a backward alone must equal it computed together with the others.
 * The remix losses: Gram matrices 5e-5 (float GEMM; against the cpu backend at the larger size),
 * the total variation's value 1e-6 (a fixed-order reduction) and its gradient exact (elementwise.h);
 * both repeat bit for bit. */
#include "cuda_test.h"
#include "ktest.h"

static rmx_backend *ref, *cpu, *gpu;

#define TOL_CONV 5e-5
#define TOL_NORM 2e-5
#define TOL_LIBM 1e-6
#define TOL_RED 1e-6

static void report_arrays(const char *what, const float *got, const float *want, size_t n, double tol) {
    kt_report(what, kt_rel_err(got, want, n), tol);
}

/* ---- memory ---- */

/* alloc zero-fills (also memory a free just gave back); to_backend leaves the host buffer free for
 * reuse as soon as it returns (the trainer hands the loader's buffer back right after), through
 * the staging slots in turn, their growth, and the direct path above the staging limit. */
static void test_memory(void) {
    size_t n = (size_t)1 << 20;
    float *a = gpu->alloc(gpu, n * sizeof(float));
    gpu->fill(gpu, a, 7.0f, n);
    gpu->free(gpu, a);
    float *b = gpu->alloc(gpu, n * sizeof(float));
    float *h = dev_download(gpu, b, n);
    int zero = 1;
    for (size_t i = 0; i < n; i++) zero &= h[i] == 0.0f;
    kt_expect(zero, "alloc zero-fills (after a free of the same size)");
    free(h);
    gpu->free(gpu, b);

    /* 20 M floats (80 MB) exceed the 64 MiB staging limit: the direct path */
    static const size_t sizes[] = {1, 1000, 70000, 3000, 200000, 17, 5000000, 20000000, 64, 300000};
    enum { COUNT = sizeof sizes / sizeof sizes[0] };
    float *host = kt_alloc(20000000), *dst[COUNT];
    for (int i = 0; i < COUNT; i++) {
        for (size_t j = 0; j < sizes[i]; j++) host[j] = (float)(i * 1000 + (int)(j % 997));
        dst[i] = gpu->alloc(gpu, sizes[i] * sizeof(float));
        gpu->to_backend(gpu, dst[i], host, sizes[i] * sizeof(float));
    }
    memset(host, 0xff, 20000000 * sizeof(float)); /* the caller's reuse: NaNs everywhere */
    int same = 1;
    for (int i = 0; i < COUNT; i++) {
        h = dev_download(gpu, dst[i], sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++) same &= h[j] == (float)(i * 1000 + (int)(j % 997));
        free(h);
        gpu->free(gpu, dst[i]);
    }
    kt_expect(same, "to_backend: 10 uploads from one host buffer, rewritten after each, all arrive intact");
    free(host);
}

/* ---- convolution ---- */

static void conv_case_vs(rmx_backend *oracle, int n, int cin, int h, int w, int cout, int k,
                         int stride, int pad) {
    dev_pool pool = {gpu, {0}, 0};
    rmx_conv_shape s = rmx_conv_shape_make(n, cin, h, w, cout, k, stride, pad);
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k;
    size_t ny = (size_t)n * cout * s.hout * s.wout;
    float *x = kt_rand(nx, -1, 1), *wt = kt_rand(nw, -0.5f, 0.5f), *b = kt_rand(cout, -1, 1);
    float *dy = kt_rand(ny, -1, 1);
    float *y_ref = kt_alloc(ny), *dx_ref = kt_alloc(nx);
    float *dw_ref = kt_rand(nw, -1, 1), *db_ref = kt_rand(cout, -1, 1);
    float *dw0 = kt_copy(dw_ref, nw), *db0 = kt_copy(db_ref, cout);
    float *ows = kt_alloc(oracle->conv2d_workspace(oracle, &s));
    oracle->conv2d_fwd(oracle, &s, x, wt, b, y_ref, ows);
    oracle->conv2d_bwd(oracle, &s, x, wt, dy, dx_ref, dw_ref, db_ref, ows);

    float *dx_garbage = kt_rand(nx, 5, 6);
    float *gx = dev_upload(&pool, x, nx), *gw = dev_upload(&pool, wt, nw), *gb = dev_upload(&pool, b, cout);
    float *y_garbage = kt_rand(ny, 7, 8);
    float *gdy = dev_upload(&pool, dy, ny), *gy = dev_upload(&pool, y_garbage, ny); /* written */
    float *gdx = dev_upload(&pool, dx_garbage, nx); /* written: garbage first */
    float *gdw = dev_upload(&pool, dw0, nw), *gdb = dev_upload(&pool, db0, cout); /* accumulate */
    float *gws = dev_garbage(&pool, gpu->conv2d_workspace(gpu, &s)); /* scratch: contents irrelevant */
    gpu->conv2d_fwd(gpu, &s, gx, gw, gb, gy, gws);
    gpu->conv2d_bwd(gpu, &s, gx, gw, gdy, gdx, gdw, gdb, gws);

    char what[200], line[260];
    snprintf(what, sizeof what, "conv n%d %dx%dx%d -> %d k%d s%d p%d%s", n, cin, h, w, cout, k, stride,
             pad, oracle == cpu ? " (vs cpu)" : "");
    float *hy = dev_download(gpu, gy, ny), *hdx = dev_download(gpu, gdx, nx);
    float *hdw = dev_download(gpu, gdw, nw), *hdb = dev_download(gpu, gdb, cout);
    snprintf(line, sizeof line, "%s fwd", what);
    report_arrays(line, hy, y_ref, ny, TOL_CONV);
    snprintf(line, sizeof line, "%s dx", what);
    report_arrays(line, hdx, dx_ref, nx, TOL_CONV);
    snprintf(line, sizeof line, "%s dw (+=)", what);
    report_arrays(line, hdw, dw_ref, nw, TOL_CONV);
    snprintf(line, sizeof line, "%s db (+=)", what);
    report_arrays(line, hdb, db_ref, cout, TOL_CONV);
    free(hy), free(hdx), free(hdw), free(hdb);

    /* no bias; and each gradient alone (the others NULL) gives the same values */
    oracle->conv2d_fwd(oracle, &s, x, wt, NULL, y_ref, ows);
    gpu->conv2d_fwd(gpu, &s, gx, gw, NULL, gy, gws);
    hy = dev_download(gpu, gy, ny);
    snprintf(line, sizeof line, "%s fwd, no bias", what);
    report_arrays(line, hy, y_ref, ny, TOL_CONV);
    float *gdx2 = dev_upload(&pool, dx_garbage, nx), *gdw2 = dev_upload(&pool, dw0, nw);
    float *gdb2 = dev_upload(&pool, db0, cout);
    gpu->conv2d_bwd(gpu, &s, gx, gw, gdy, gdx2, NULL, NULL, gws);
    gpu->conv2d_bwd(gpu, &s, gx, gw, gdy, NULL, gdw2, NULL, gws);
    gpu->conv2d_bwd(gpu, &s, gx, gw, gdy, NULL, NULL, gdb2, gws);
    float *a = dev_download(gpu, gdx, nx), *a2 = dev_download(gpu, gdx2, nx);
    float *c = dev_download(gpu, gdw, nw), *c2 = dev_download(gpu, gdw2, nw);
    float *d = dev_download(gpu, gdb, cout), *d2 = dev_download(gpu, gdb2, cout);
    snprintf(line, sizeof line, "%s bwd: dx, dw, db alone == together", what);
    kt_expect(!memcmp(a, a2, nx * sizeof *a) && !memcmp(c, c2, nw * sizeof *c) &&
                  !memcmp(d, d2, cout * sizeof *d),
              line);
    free(a), free(a2), free(c), free(c2), free(d), free(d2), free(hy);
    free(x), free(wt), free(b), free(dy), free(y_ref), free(dx_ref), free(dw_ref), free(db_ref);
    free(dw0), free(db0), free(ows), free(dx_garbage), free(y_garbage);
    dev_pool_free(&pool);
}

static void test_conv(void) {
    conv_case_vs(ref, 2, 3, 9, 11, 5, 3, 1, 1);    /* odd sizes, cin != cout */
    conv_case_vs(ref, 3, 4, 16, 16, 4, 3, 2, 1);   /* the encoder's downsample */
    conv_case_vs(ref, 2, 5, 15, 13, 7, 3, 2, 1);   /* stride 2 on odd sizes */
    conv_case_vs(ref, 2, 6, 7, 9, 8, 1, 1, 0);     /* 1x1 skip: no unfolding */
    conv_case_vs(ref, 1, 1, 32, 64, 8, 3, 1, 1);   /* the first layer: one input channel */
    conv_case_vs(ref, 2, 8, 17, 33, 1, 3, 1, 1);   /* the last layer: one output channel */
    conv_case_vs(ref, 2, 16, 40, 72, 32, 3, 1, 1);
    conv_case_vs(ref, 2, 64, 48, 40, 8, 3, 2, 1);
    conv_case_vs(ref, 2, 64, 20, 24, 48, 1, 1, 0); /* 1x1 with many channels */
    conv_case_vs(ref, 2, 3, 10, 12, 4, 3, 1, 0);   /* valid convolution */
    conv_case_vs(ref, 1, 2, 6, 6, 3, 1, 2, 0);     /* 1x1 stride 2: unfolded */
    conv_case_vs(ref, 2, 3, 9, 9, 4, 5, 1, 2);     /* 5x5 */
    conv_case_vs(ref, 3, 4, 64, 96, 6, 3, 1, 1);   /* dw in 3 pieces of 2048 columns a sample */
    conv_case_vs(ref, 2, 3, 128, 64, 4, 1, 1, 0);  /* direct, dw in 4 pieces */
    /* The bench's full-resolution convs at batch 9: the unfolded input (288 x 32768 floats a
     * sample) spans two chunks; the cpu backend (itself tested against the reference) is the
     * oracle at this size. */
    conv_case_vs(cpu, 9, 32, 128, 256, 32, 3, 1, 1);
    conv_case_vs(cpu, 9, 32, 128, 256, 1, 3, 1, 1);
}

/* ---- GroupNorm ---- */

static void test_groupnorm(int n, int c, int hw, int groups, float offset) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nx = (size_t)n * c * hw, ng = (size_t)n * groups;
    float *x = kt_rand(nx, offset - 2, offset + 2), *gamma = kt_rand(c, 0.5f, 1.5f);
    float *beta = kt_rand(c, -1, 1), *dy = kt_rand(nx, -1, 1);
    float *y = kt_alloc(nx), *mean = kt_alloc(ng), *rstd = kt_alloc(ng), *dx = kt_alloc(nx);
    float *dg = kt_rand(c, -1, 1), *dbt = kt_rand(c, -1, 1), *dg0 = kt_copy(dg, c), *db0 = kt_copy(dbt, c);
    ref->groupnorm_fwd(ref, n, c, hw, groups, 1e-5f, x, gamma, beta, y, mean, rstd);
    ref->groupnorm_bwd(ref, n, c, hw, groups, x, gamma, mean, rstd, dy, dx, dg, dbt);

    float *gx = dev_upload(&pool, x, nx), *gg = dev_upload(&pool, gamma, c), *gb = dev_upload(&pool, beta, c);
    float *gdy = dev_upload(&pool, dy, nx), *gy = dev_garbage(&pool, nx);
    float *gmean = dev_garbage(&pool, ng), *grstd = dev_garbage(&pool, ng);
    float *gdx = dev_upload(&pool, dy, nx), *gdg = dev_upload(&pool, dg0, c), *gdb = dev_upload(&pool, db0, c);
    gpu->groupnorm_fwd(gpu, n, c, hw, groups, 1e-5f, gx, gg, gb, gy, gmean, grstd);
    /* the backward from the reference's statistics, so it is compared on its own */
    float *rmean = dev_upload(&pool, mean, ng), *rrstd = dev_upload(&pool, rstd, ng);
    gpu->groupnorm_bwd(gpu, n, c, hw, groups, gx, gg, rmean, rrstd, gdy, gdx, gdg, gdb);

    char what[160];
    float *h;
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d mean%+.0f fwd y", n, c, hw, groups, offset);
    report_arrays(what, h = dev_download(gpu, gy, nx), y, nx, TOL_NORM);
    free(h);
    float *hm = dev_download(gpu, gmean, ng), *hr = dev_download(gpu, grstd, ng);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d mean, rstd", n, c, hw, groups);
    kt_report(what, fmax(kt_rel_err(hm, mean, ng), kt_rel_err(hr, rstd, ng)), TOL_NORM);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d bwd dx", n, c, hw, groups);
    report_arrays(what, h = dev_download(gpu, gdx, nx), dx, nx, TOL_NORM);
    free(h);
    float *hg = dev_download(gpu, gdg, c), *hb = dev_download(gpu, gdb, c);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d bwd dgamma, dbeta (+=)", n, c, hw, groups);
    kt_report(what, fmax(kt_rel_err(hg, dg, c), kt_rel_err(hb, dbt, c)), TOL_NORM);
    free(hm), free(hr), free(hg), free(hb);

    /* in place (dx == dy), without gamma / beta gradients: dx unchanged */
    float *gio = dev_upload(&pool, dy, nx);
    gpu->groupnorm_bwd(gpu, n, c, hw, groups, gx, gg, rmean, rrstd, gio, gio, NULL, NULL);
    float *hio = dev_download(gpu, gio, nx), *hdx = dev_download(gpu, gdx, nx);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d bwd in place == out of place", n, c, hw, groups);
    kt_expect(!memcmp(hio, hdx, nx * sizeof *hio), what);
    free(hio), free(hdx);

    /* NULL outputs skip their work, the others come out the same: the forward without mean and
     * rstd, the backward without dx */
    float *gy2 = dev_garbage(&pool, nx), *gdg2 = dev_upload(&pool, dg0, c), *gdb2 = dev_upload(&pool, db0, c);
    gpu->groupnorm_fwd(gpu, n, c, hw, groups, 1e-5f, gx, gg, gb, gy2, NULL, NULL);
    gpu->groupnorm_bwd(gpu, n, c, hw, groups, gx, gg, rmean, rrstd, gdy, NULL, gdg2, gdb2);
    float *y1 = dev_download(gpu, gy, nx), *y2 = dev_download(gpu, gy2, nx);
    float *g1 = dev_download(gpu, gdg, c), *g2 = dev_download(gpu, gdg2, c);
    float *b1 = dev_download(gpu, gdb, c), *b2 = dev_download(gpu, gdb2, c);
    snprintf(what, sizeof what, "groupnorm n%d c%d hw%d g%d NULL mean/rstd, NULL dx", n, c, hw, groups);
    kt_expect(!memcmp(y1, y2, nx * sizeof *y1) && !memcmp(g1, g2, c * sizeof *g1) &&
                  !memcmp(b1, b2, c * sizeof *b1),
              what);
    free(y1), free(y2), free(g1), free(g2), free(b1), free(b2);

    free(x), free(gamma), free(beta), free(dy), free(y), free(mean), free(rstd), free(dx);
    free(dg), free(dbt), free(dg0), free(db0);
    dev_pool_free(&pool);
}

/* ---- element-wise, losses, norm ---- */

static void test_elementwise(size_t n) {
    dev_pool pool = {gpu, {0}, 0};
    float *x = kt_rand(n, -8, 8), *b = kt_rand(n, -1, 1), *dy = kt_rand(n, -1, 1);
    float *r = kt_alloc(n), *h;
    float *gx = dev_upload(&pool, x, n), *gb = dev_upload(&pool, b, n), *gdy = dev_upload(&pool, dy, n);
    float *gr = dev_garbage(&pool, n);
    char what[128];

    ref->silu_fwd(ref, n, x, r);
    gpu->silu_fwd(gpu, n, gx, gr);
    snprintf(what, sizeof what, "silu fwd n=%zu", n);
    report_arrays(what, h = dev_download(gpu, gr, n), r, n, 0.0);
    free(h);
    ref->silu_bwd(ref, n, x, dy, r);
    gpu->silu_bwd(gpu, n, gx, gdy, gr);
    snprintf(what, sizeof what, "silu bwd n=%zu", n);
    report_arrays(what, h = dev_download(gpu, gr, n), r, n, 0.0);
    free(h);
    ref->add(ref, n, x, b, r);
    gpu->add(gpu, n, gx, gb, gr);
    snprintf(what, sizeof what, "add n=%zu", n);
    report_arrays(what, h = dev_download(gpu, gr, n), r, n, 0.0);
    free(h);
    memcpy(r, b, n * sizeof *r);
    gpu->copy(gpu, gr, gb, n * sizeof(float));
    ref->axpy(ref, n, -0.37f, x, r);
    gpu->axpy(gpu, n, -0.37f, gx, gr);
    ref->scale(ref, n, 1.7f, r);
    gpu->scale(gpu, n, 1.7f, gr);
    snprintf(what, sizeof what, "copy, axpy, scale n=%zu", n);
    report_arrays(what, h = dev_download(gpu, gr, n), r, n, 0.0);
    free(h);
    gpu->fill(gpu, gr, -2.5f, n);
    h = dev_download(gpu, gr, n);
    int filled = 1;
    for (size_t i = 0; i < n; i++) filled &= h[i] == -2.5f;
    snprintf(what, sizeof what, "fill n=%zu", n);
    kt_expect(filled, what);
    free(h);

    float s_ref = 0, s_gpu = 0, stale = 123.0f, *gs = dev_upload(&pool, &stale, 1);
    ref->sumsq(ref, n, x, &s_ref);
    gpu->sumsq(gpu, n, gx, gs);
    gpu->to_host(gpu, &s_gpu, gs, sizeof s_gpu);
    snprintf(what, sizeof what, "sumsq n=%zu (written)", n);
    kt_report(what, fabs((double)s_ref - s_gpu) / fabs((double)s_ref), TOL_RED);

    float l_ref = 0.5f, l_gpu = 0.5f, *gl = dev_upload(&pool, &l_gpu, 1);
    float *gdxh = dev_upload(&pool, dy, n); /* written: garbage first */
    ref->mse_loss(ref, n, x, b, 0.125f, &l_ref, r);
    gpu->mse_loss(gpu, n, gx, gb, 0.125f, gl, gdxh);
    gpu->to_host(gpu, &l_gpu, gl, sizeof l_gpu);
    snprintf(what, sizeof what, "mse_loss n=%zu value (+=)", n);
    kt_report(what, fabs((double)l_ref - l_gpu) / fabs((double)l_ref), TOL_RED);
    snprintf(what, sizeof what, "mse_loss n=%zu dxhat", n);
    report_arrays(what, h = dev_download(gpu, gdxh, n), r, n, 0.0);
    free(h);
    ref->mse_loss(ref, n, x, b, 0.25f, &l_ref, NULL);
    gpu->mse_loss(gpu, n, gx, gb, 0.25f, gl, NULL);
    gpu->to_host(gpu, &l_gpu, gl, sizeof l_gpu);
    snprintf(what, sizeof what, "mse_loss n=%zu value, no gradient (+= twice)", n);
    kt_report(what, fabs((double)l_ref - l_gpu) / fabs((double)l_ref), TOL_RED);
    free(x), free(b), free(dy), free(r);
    dev_pool_free(&pool);
}

static void test_upsample(int n, int c, int h, int w) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nx = (size_t)n * c * h * w, ny = nx * 4;
    float *x = kt_rand(nx, -1, 1), *dy = kt_rand(ny, -1, 1), *y = kt_alloc(ny), *dx = kt_alloc(nx);
    ref->upsample2x_fwd(ref, n, c, h, w, x, y);
    ref->upsample2x_bwd(ref, n, c, h, w, dy, dx);
    float *gx = dev_upload(&pool, x, nx), *gdy = dev_upload(&pool, dy, ny);
    float *gy = dev_garbage(&pool, ny), *gdx = dev_garbage(&pool, nx), *hh;
    gpu->upsample2x_fwd(gpu, n, c, h, w, gx, gy);
    gpu->upsample2x_bwd(gpu, n, c, h, w, gdy, gdx);
    char what[128];
    snprintf(what, sizeof what, "upsample2x n%d c%d %dx%d fwd", n, c, h, w);
    report_arrays(what, hh = dev_download(gpu, gy, ny), y, ny, 0.0);
    free(hh);
    snprintf(what, sizeof what, "upsample2x n%d c%d %dx%d bwd", n, c, h, w);
    report_arrays(what, hh = dev_download(gpu, gdx, nx), dx, nx, 0.0);
    free(hh);
    free(x), free(dy), free(y), free(dx);
    dev_pool_free(&pool);
}

static void test_kl(int n, int c, int hw) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nm = (size_t)n * 2 * c * hw, nz = (size_t)n * c * hw;
    float *mom = kt_rand(nm, -3, 3), *eps = kt_rand(nz, -2, 2), *dz = kt_rand(nz, -1, 1);
    mom[(size_t)c * hw + 1] = -40.0f; /* log-variances outside the clamp: zero gradient there */
    mom[(size_t)c * hw + 2] = 25.0f;
    float *z = kt_alloc(nz), *dm = kt_alloc(nm), *garbage = kt_rand(nm, 5, 6), *h;
    ref->gaussian_sample_fwd(ref, n, c, hw, mom, eps, z);
    ref->gaussian_sample_bwd(ref, n, c, hw, mom, eps, dz, dm);
    float *gm = dev_upload(&pool, mom, nm), *ge = dev_upload(&pool, eps, nz), *gdz = dev_upload(&pool, dz, nz);
    float *gz = dev_garbage(&pool, nz), *gdm = dev_upload(&pool, garbage, nm);
    gpu->gaussian_sample_fwd(gpu, n, c, hw, gm, ge, gz);
    gpu->gaussian_sample_bwd(gpu, n, c, hw, gm, ge, gdz, gdm);
    char what[128];
    snprintf(what, sizeof what, "gaussian_sample n%d c%d hw%d fwd", n, c, hw);
    report_arrays(what, h = dev_download(gpu, gz, nz), z, nz, TOL_LIBM);
    free(h);
    snprintf(what, sizeof what, "gaussian_sample n%d c%d hw%d bwd (written)", n, c, hw);
    report_arrays(what, h = dev_download(gpu, gdm, nm), dm, nm, TOL_LIBM);
    free(h);
    float l_ref = 1.0f, l_gpu = 1.0f, *gl = dev_upload(&pool, &l_gpu, 1);
    ref->kl_loss(ref, n, c, hw, mom, 0.25f, &l_ref, dm);
    gpu->kl_loss(gpu, n, c, hw, gm, 0.25f, gl, gdm);
    gpu->to_host(gpu, &l_gpu, gl, sizeof l_gpu);
    snprintf(what, sizeof what, "kl_loss n%d c%d hw%d value (+=)", n, c, hw);
    kt_report(what, fabs((double)l_ref - l_gpu) / fabs((double)l_ref), TOL_RED);
    snprintf(what, sizeof what, "kl_loss n%d c%d hw%d dmoments (+=)", n, c, hw);
    report_arrays(what, h = dev_download(gpu, gdm, nm), dm, nm, TOL_LIBM);
    free(h);
    float l_null = 1.0f, *gl_null = dev_upload(&pool, &l_null, 1);
    gpu->kl_loss(gpu, n, c, hw, gm, 0.25f, gl_null, NULL);
    gpu->to_host(gpu, &l_null, gl_null, sizeof l_null);
    snprintf(what, sizeof what, "kl_loss n%d c%d hw%d value without dmoments (NULL) is the same", n, c, hw);
    kt_expect(l_null == l_gpu, what);
    free(mom), free(eps), free(dz), free(z), free(dm), free(garbage);
    dev_pool_free(&pool);
}

/* ---- vector quantisation ---- */

static void test_vq(int n, int d, int hw, int k) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nz = (size_t)n * d * hw, nq = (size_t)n * hw, kd = (size_t)k * d;
    float *ze = kt_rand(nz, -1, 1), *cb = kt_rand(kd, -1, 1);
    /* a duplicated code: ties must keep the lower index */
    memcpy(cb + (size_t)(k - 1) * d, cb + (size_t)(k / 2) * d, (size_t)d * sizeof *cb);
    int32_t *idx = calloc(nq, sizeof *idx), *gidx_h = calloc(nq, sizeof *gidx_h);
    float *zq = kt_alloc(nz);
    ref->vq_quantize(ref, n, d, hw, ze, cb, k, idx, zq);
    float *gze = dev_upload(&pool, ze, nz), *gcb = dev_upload(&pool, cb, kd), *gzq = dev_garbage(&pool, nz);
    int32_t *gidx = dev_garbage_ints(&pool, nq);
    gpu->vq_quantize(gpu, n, d, hw, gze, gcb, k, gidx, gzq);
    gpu->to_host(gpu, gidx_h, gidx, nq * sizeof *gidx_h);
    float *hzq = dev_download(gpu, gzq, nz);
    char what[128];
    snprintf(what, sizeof what, "vq_quantize n%d d%d hw%d k%d idx and z_q identical", n, d, hw, k);
    kt_expect(!memcmp(idx, gidx_h, nq * sizeof *idx) && !memcmp(zq, hzq, nz * sizeof *zq), what);

    /* statistics accumulate onto existing values; also with one extra row (the model's gather) */
    float *counts = kt_rand((size_t)k + 1, 0, 3), *sums = kt_rand(kd + d, -1, 1);
    float *gcounts = dev_upload(&pool, counts, (size_t)k + 1), *gsums = dev_upload(&pool, sums, kd + d);
    for (size_t q = 0; q < nq; q += 7) idx[q] = k; /* some positions to the extra row */
    int32_t *gidx2 = dev_upload_ints(&pool, idx, nq);
    ref->vq_stats(ref, n, d, hw, ze, idx, k + 1, counts, sums);
    gpu->vq_stats(gpu, n, d, hw, gze, gidx2, k + 1, gcounts, gsums);
    float *hc = dev_download(gpu, gcounts, (size_t)k + 1), *hs = dev_download(gpu, gsums, kd + d);
    snprintf(what, sizeof what, "vq_stats n%d d%d hw%d k%d counts and sums identical", n, d, hw, k + 1);
    kt_expect(!memcmp(counts, hc, ((size_t)k + 1) * sizeof *hc) && !memcmp(sums, hs, (kd + d) * sizeof *hs),
              what);

    /* the EMA update from these statistics */
    float *ec = kt_rand(k, 0.5f, 4), *es = kt_rand(kd, -1, 1), *book = kt_alloc(kd);
    float *gec = dev_upload(&pool, ec, k), *ges = dev_upload(&pool, es, kd), *gbook = dev_garbage(&pool, kd);
    ref->vq_ema_update(ref, k, d, 0.99f, 1e-5f, counts, sums, ec, es, book);
    gpu->vq_ema_update(gpu, k, d, 0.99f, 1e-5f, gcounts, gsums, gec, ges, gbook);
    float *hec = dev_download(gpu, gec, k), *hes = dev_download(gpu, ges, kd), *hbook = dev_download(gpu, gbook, kd);
    snprintf(what, sizeof what, "vq_ema_update k%d d%d ema_count, ema_sum, codebook", k, d);
    kt_report(what, fmax(kt_rel_err(hec, ec, k), fmax(kt_rel_err(hes, es, kd), kt_rel_err(hbook, book, kd))),
              TOL_RED);
    free(ze), free(cb), free(idx), free(gidx_h), free(zq), free(hzq), free(counts), free(sums);
    free(hc), free(hs), free(ec), free(es), free(book), free(hec), free(hes), free(hbook);
    dev_pool_free(&pool);
}

/* ---- optimiser, randomness ---- */

static void test_adamw(size_t n) {
    dev_pool pool = {gpu, {0}, 0};
    float *p = kt_rand(n, -1, 1), *g = kt_rand(n, -1, 1), *m = kt_rand(n, -0.1f, 0.1f);
    float *v = kt_rand(n, 0, 0.01f);
    float *gp = dev_upload(&pool, p, n), *gg = dev_upload(&pool, g, n), *gm = dev_upload(&pool, m, n);
    float *gv = dev_upload(&pool, v, n);
    rmx_adamw_hparams hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7};
    ref->adamw(ref, n, n / 2, p, g, m, v, &hp);
    gpu->adamw(gpu, n, n / 2, gp, gg, gm, gv, &hp);
    float *hp_ = dev_download(gpu, gp, n), *hm = dev_download(gpu, gm, n), *hv = dev_download(gpu, gv, n);
    char what[128];
    snprintf(what, sizeof what, "adamw n=%zu param, m, v", n);
    kt_report(what, fmax(kt_rel_err(hp_, p, n), fmax(kt_rel_err(hm, m, n), kt_rel_err(hv, v, n))), 0.0);
    free(p), free(g), free(m), free(v), free(hp_), free(hm), free(hv);
    dev_pool_free(&pool);
}

static void test_randn(void) {
    dev_pool pool = {gpu, {0}, 0};
    int64_t idx[5] = {3, 17, 0, 1000000007LL, 4};
    size_t per = 20011, nn = 5 * per;
    float *a = kt_alloc(nn), *ga = dev_garbage(&pool, nn), *h;
    ref->randn(ref, a, 5, per, 42, 2, 9, idx);
    gpu->randn(gpu, ga, 5, per, 42, 2, 9, idx);
    idx[0] = -1; /* the caller may reuse its host index array at once */
    report_arrays("randn 5 x 20011 vs the reference (device logf/sinf/cosf)", h = dev_download(gpu, ga, nn),
                  a, nn, TOL_LIBM);
    free(h);
    free(a);
    dev_pool_free(&pool);
}

/* ---- transformer ops ---- */

#define TOL_GEMM 5e-5
#define TOL_ATT 1e-4

static float *dl(const float *d, size_t n) { return dev_download(gpu, d, n); }

/* got (device) against want (host), freed after. */
static void report_dev(const char *what, const float *got_dev, const float *want, size_t n, double tol) {
    float *h = dl(got_dev, n);
    kt_report(what, kt_rel_err(h, want, n), tol);
    free(h);
}

static int dev_equal(const float *a_dev, const float *b_dev, size_t n) {
    float *a = dl(a_dev, n), *b = dl(b_dev, n);
    int same = !memcmp(a, b, n * sizeof *a);
    free(a), free(b);
    return same;
}

static void linear_case(int rows, int in, int out) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = kt_rand(nx, -1, 1), *w = kt_rand(nw, -0.5f, 0.5f), *b = kt_rand(out, -1, 1), *dy = kt_rand(ny, -1, 1);
    float *y = kt_alloc(ny), *y0 = kt_alloc(ny), *dx = kt_alloc(nx), *dw = kt_rand(nw, -1, 1), *db = kt_rand(out, -1, 1);
    float *dw0 = kt_copy(dw, nw), *db0 = kt_copy(db, out);
    ref->linear_fwd(ref, rows, in, out, x, w, b, y);
    ref->linear_fwd(ref, rows, in, out, x, w, NULL, y0);
    ref->linear_bwd(ref, rows, in, out, x, w, dy, dx, dw, db);
    float *gx = dev_upload(&pool, x, nx), *gw = dev_upload(&pool, w, nw), *gb = dev_upload(&pool, b, out);
    float *gdy = dev_upload(&pool, dy, ny), *gy = dev_garbage(&pool, ny), *gy0 = dev_garbage(&pool, ny);
    float *gdx = dev_garbage(&pool, nx), *gdw = dev_upload(&pool, dw0, nw), *gdb = dev_upload(&pool, db0, out);
    gpu->linear_fwd(gpu, rows, in, out, gx, gw, gb, gy);
    gpu->linear_fwd(gpu, rows, in, out, gx, gw, NULL, gy0);
    gpu->linear_bwd(gpu, rows, in, out, gx, gw, gdy, gdx, gdw, gdb);
    char what[200];
    snprintf(what, sizeof what, "linear rows%d %d -> %d fwd (written)", rows, in, out);
    report_dev(what, gy, y, ny, TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d fwd, no bias", rows, in, out);
    report_dev(what, gy0, y0, ny, TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d dx (written)", rows, in, out);
    report_dev(what, gdx, dx, nx, TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d dw (+=)", rows, in, out);
    report_dev(what, gdw, dw, nw, TOL_GEMM);
    snprintf(what, sizeof what, "linear rows%d %d -> %d db (+=)", rows, in, out);
    report_dev(what, gdb, db, out, TOL_RED);
    /* each gradient alone gives the same bits; and the same call twice (determinism) */
    float *gdx2 = dev_garbage(&pool, nx), *gdw2 = dev_upload(&pool, dw0, nw), *gdb2 = dev_upload(&pool, db0, out);
    gpu->linear_bwd(gpu, rows, in, out, gx, gw, gdy, gdx2, NULL, NULL);
    gpu->linear_bwd(gpu, rows, in, out, gx, gw, gdy, NULL, gdw2, NULL);
    gpu->linear_bwd(gpu, rows, in, out, gx, gw, gdy, NULL, NULL, gdb2);
    snprintf(what, sizeof what, "linear rows%d %d -> %d bwd: dx, dw, db alone == together (bits)", rows, in, out);
    kt_expect(dev_equal(gdx, gdx2, nx) && dev_equal(gdw, gdw2, nw) && dev_equal(gdb, gdb2, out), what);
    free(x), free(w), free(b), free(dy), free(y), free(y0), free(dx), free(dw), free(db), free(dw0), free(db0);
    dev_pool_free(&pool);
}

static void layernorm_case(int rows, int d, float offset) {
    dev_pool pool = {gpu, {0}, 0};
    size_t n = (size_t)rows * d;
    float *x = kt_rand(n, offset - 2, offset + 2), *dy = kt_rand(n, -1, 1);
    float *y = kt_alloc(n), *rs = kt_alloc(rows), *dx = kt_alloc(n);
    ref->layernorm_fwd(ref, rows, d, 1e-6f, x, y, rs);
    ref->layernorm_bwd(ref, rows, d, y, rs, dy, dx);
    float *gx = dev_upload(&pool, x, n), *gdy = dev_upload(&pool, dy, n), *gy = dev_garbage(&pool, n);
    float *grs = dev_garbage(&pool, rows), *gdx = dev_garbage(&pool, n);
    float *ry = dev_upload(&pool, y, n), *rrs = dev_upload(&pool, rs, rows);
    gpu->layernorm_fwd(gpu, rows, d, 1e-6f, gx, gy, grs);
    gpu->layernorm_bwd(gpu, rows, d, ry, rrs, gdy, gdx); /* from the reference's y, rstd */
    char what[200];
    snprintf(what, sizeof what, "layernorm rows%d d%d mean%+.0f y (written)", rows, d, offset);
    report_dev(what, gy, y, n, TOL_NORM);
    snprintf(what, sizeof what, "layernorm rows%d d%d rstd (written)", rows, d);
    report_dev(what, grs, rs, rows, TOL_NORM);
    snprintf(what, sizeof what, "layernorm rows%d d%d dx (written)", rows, d);
    report_dev(what, gdx, dx, n, TOL_NORM);
    free(x), free(dy), free(y), free(rs), free(dx);
    dev_pool_free(&pool);
}

static void gelu_case(size_t n) {
    dev_pool pool = {gpu, {0}, 0};
    float *x = kt_rand(n, -10, 10), *dy = kt_rand(n, -1, 1), *r = kt_alloc(n);
    float *gx = dev_upload(&pool, x, n), *gdy = dev_upload(&pool, dy, n), *gr = dev_garbage(&pool, n);
    char what[128];
    ref->gelu_fwd(ref, n, x, r);
    gpu->gelu_fwd(gpu, n, gx, gr);
    snprintf(what, sizeof what, "gelu fwd n=%zu (same arithmetic: exact)", n);
    report_dev(what, gr, r, n, 0.0);
    ref->gelu_bwd(ref, n, x, dy, r);
    gpu->gelu_bwd(gpu, n, gx, gdy, gr);
    snprintf(what, sizeof what, "gelu bwd n=%zu (exact)", n);
    report_dev(what, gr, r, n, 0.0);
    free(x), free(dy), free(r);
    dev_pool_free(&pool);
}

static void modulate_case(int batch, int tokens, int d, int ld) {
    dev_pool pool = {gpu, {0}, 0};
    size_t n = (size_t)batch * tokens * d, nm = (size_t)batch * ld;
    float *x = kt_rand(n, -2, 2), *mod = kt_rand(nm, -1, 1), *dy = kt_rand(n, -1, 1), *h = kt_rand(n, -1, 1);
    float *y = kt_alloc(n), *dx = kt_alloc(n), *dm = kt_rand(nm, 5, 6), *dm0 = kt_copy(dm, nm), *s = kt_copy(dy, n);
    float *dh = kt_alloc(n);
    ref->modulate_fwd(ref, batch, tokens, d, x, mod, mod + d, ld, y);
    ref->modulate_bwd(ref, batch, tokens, d, x, mod + d, ld, dy, dx, dm, dm + d);
    ref->gated_add_fwd(ref, batch, tokens, d, h, mod + 2 * d, ld, s);
    ref->gated_add_bwd(ref, batch, tokens, d, h, mod + 2 * d, ld, dy, dh, dm + 2 * d);
    float *gx = dev_upload(&pool, x, n), *gm = dev_upload(&pool, mod, nm), *gdy = dev_upload(&pool, dy, n);
    float *gh = dev_upload(&pool, h, n), *gy = dev_garbage(&pool, n), *gdx = dev_garbage(&pool, n);
    float *gdm = dev_upload(&pool, dm0, nm), *gs = dev_upload(&pool, dy, n), *gdh = dev_garbage(&pool, n);
    gpu->modulate_fwd(gpu, batch, tokens, d, gx, gm, gm + d, ld, gy);
    gpu->modulate_bwd(gpu, batch, tokens, d, gx, gm + d, ld, gdy, gdx, gdm, gdm + d);
    gpu->gated_add_fwd(gpu, batch, tokens, d, gh, gm + 2 * d, ld, gs);
    gpu->gated_add_bwd(gpu, batch, tokens, d, gh, gm + 2 * d, ld, gdy, gdh, gdm + 2 * d);
    char what[200];
    snprintf(what, sizeof what, "modulate b%d t%d d%d ld%d fwd (exact)", batch, tokens, d, ld);
    report_dev(what, gy, y, n, 0.0);
    snprintf(what, sizeof what, "modulate b%d t%d d%d ld%d dx (exact)", batch, tokens, d, ld);
    report_dev(what, gdx, dx, n, 0.0);
    snprintf(what, sizeof what, "gated_add b%d t%d d%d ld%d fwd, dh (exact)", batch, tokens, d, ld);
    float *hs = dl(gs, n), *hdh = dl(gdh, n);
    kt_report(what, fmax(kt_rel_err(hs, s, n), kt_rel_err(hdh, dh, n)), 0.0);
    free(hs), free(hdh);
    /* dshift, dscale, dgate written into their strided columns, the other columns untouched */
    snprintf(what, sizeof what, "modulate/gated b%d t%d d%d ld%d dshift, dscale, dgate (strided)", batch, tokens, d, ld);
    report_dev(what, gdm, dm, nm, TOL_RED);
    float *gdm2 = dev_upload(&pool, dm0, nm);
    gpu->modulate_bwd(gpu, batch, tokens, d, gx, gm + d, ld, gdy, NULL, gdm2, NULL);
    gpu->modulate_bwd(gpu, batch, tokens, d, gx, gm + d, ld, gdy, NULL, NULL, gdm2 + d);
    gpu->gated_add_bwd(gpu, batch, tokens, d, gh, gm + 2 * d, ld, gdy, NULL, gdm2 + 2 * d);
    snprintf(what, sizeof what, "modulate/gated b%d t%d d%d: NULL outputs skipped, same bits", batch, tokens, d);
    kt_expect(dev_equal(gdm, gdm2, nm), what);
    /* in place: dx written over dy (and dh over dy) gives the same bits */
    float *gio = dev_upload(&pool, dy, n), *gio2 = dev_upload(&pool, dy, n), *gdm3 = dev_upload(&pool, dm0, nm);
    gpu->modulate_bwd(gpu, batch, tokens, d, gx, gm + d, ld, gio, gio, gdm3, gdm3 + d);
    gpu->gated_add_bwd(gpu, batch, tokens, d, gh, gm + 2 * d, ld, gio2, gio2, gdm3 + 2 * d);
    snprintf(what, sizeof what, "modulate/gated b%d t%d d%d: bwd in place (dx = dy) == out of place", batch, tokens,
             d);
    kt_expect(dev_equal(gio, gdx, n) && dev_equal(gio2, gdh, n) && dev_equal(gdm3, gdm, nm), what);
    free(x), free(mod), free(dy), free(h), free(y), free(dx), free(dm), free(dm0), free(s), free(dh);
    dev_pool_free(&pool);
}

/* Attention against an oracle (ref, or cpu at sizes the reference is too slow for); twice on the
 * GPU with the same bits. Large shapes split into head groups and query chunks. */
static void attention_case(rmx_backend *oracle, int batch, int tokens, int d, int heads, float range) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nq = (size_t)batch * tokens * 3 * d, no = (size_t)batch * tokens * d, nl = (size_t)batch * heads * tokens;
    float *qkv = kt_rand(nq, -range, range), *dout = kt_rand(no, -1, 1);
    float *o = kt_alloc(no), *l = kt_alloc(nl), *dq = kt_alloc(nq);
    float *ows = kt_alloc(oracle->attention_workspace(oracle, batch, tokens, d, heads));
    oracle->attention_fwd(oracle, batch, tokens, d, heads, qkv, o, l, ows);
    oracle->attention_bwd(oracle, batch, tokens, d, heads, qkv, o, l, dout, dq, ows);
    float *gq = dev_upload(&pool, qkv, nq), *gdo = dev_upload(&pool, dout, no);
    float *go = dev_garbage(&pool, no), *gl = dev_garbage(&pool, nl), *gdq = dev_garbage(&pool, nq);
    float *gdq2 = dev_garbage(&pool, nq), *go2 = dev_garbage(&pool, no), *gl2 = dev_garbage(&pool, nl);
    float *gws = dev_garbage(&pool, gpu->attention_workspace(gpu, batch, tokens, d, heads));
    gpu->attention_fwd(gpu, batch, tokens, d, heads, gq, go, gl, gws);
    gpu->attention_bwd(gpu, batch, tokens, d, heads, gq, go, gl, gdo, gdq, gws);
    gpu->attention_fwd(gpu, batch, tokens, d, heads, gq, go2, gl2, gws);
    gpu->attention_bwd(gpu, batch, tokens, d, heads, gq, go2, gl2, gdo, gdq2, gws);
    char what[200];
    const char *vs = oracle == cpu ? " (vs cpu)" : "";
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d out (written)%s", batch, tokens, d, heads, vs);
    report_dev(what, go, o, no, TOL_ATT);
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d lse (written)%s", batch, tokens, d, heads, vs);
    report_dev(what, gl, l, nl, TOL_ATT);
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d dqkv (written)%s", batch, tokens, d, heads, vs);
    report_dev(what, gdq, dq, nq, TOL_ATT);
    snprintf(what, sizeof what, "attention b%d t%d d%d h%d: two runs, same bits", batch, tokens, d, heads);
    kt_expect(dev_equal(go, go2, no) && dev_equal(gl, gl2, nl) && dev_equal(gdq, gdq2, nq), what);
    free(qkv), free(dout), free(o), free(l), free(dq), free(ows);
    dev_pool_free(&pool);
}

static void embedding_case(int n, int d, int rows) {
    dev_pool pool = {gpu, {0}, 0};
    int32_t *idx = calloc(n, sizeof *idx);
    if (!idx) abort();
    for (int i = 0; i < n; i++) idx[i] = (int32_t)(kt_uniform() * (rows - 1)); /* last row unused */
    size_t nt = (size_t)rows * d, ny = (size_t)n * d;
    float *table = kt_rand(nt, -1, 1), *dy = kt_rand(ny, -1, 1), *y = kt_alloc(ny), *dt = kt_rand(nt, -1, 1);
    float *dt0 = kt_copy(dt, nt);
    ref->embedding_fwd(ref, n, d, idx, table, y);
    ref->embedding_bwd(ref, n, d, rows, idx, dy, dt);
    int32_t *gidx = dev_upload_ints(&pool, idx, n);
    float *gt = dev_upload(&pool, table, nt), *gdy = dev_upload(&pool, dy, ny), *gy = dev_garbage(&pool, ny);
    float *gdt = dev_upload(&pool, dt0, nt);
    gpu->embedding_fwd(gpu, n, d, gidx, gt, gy);
    gpu->embedding_bwd(gpu, n, d, rows, gidx, gdy, gdt);
    char what[200];
    snprintf(what, sizeof what, "embedding n%d d%d rows%d fwd (exact)", n, d, rows);
    report_dev(what, gy, y, ny, 0.0);
    snprintf(what, sizeof what, "embedding n%d d%d rows%d dtable (+=, same order: exact)", n, d, rows);
    report_dev(what, gdt, dt, nt, 0.0);
    free(idx), free(table), free(dy), free(y), free(dt), free(dt0);
    dev_pool_free(&pool);
}

static void misc_transformer_case(void) {
    dev_pool pool = {gpu, {0}, 0};
    char what[200];
    /* timestep embedding: cos / sin in double on both sides (device libm: last-bit differences) */
    int n = 9, dim = 256;
    float *t = kt_rand(n, 0, 999), *te = kt_alloc((size_t)n * dim);
    t[0] = 0.0f;
    ref->timestep_embed(ref, n, dim, t, te);
    float *gt = dev_upload(&pool, t, n), *gte = dev_garbage(&pool, (size_t)n * dim);
    gpu->timestep_embed(gpu, n, dim, gt, gte);
    snprintf(what, sizeof what, "timestep_embed n%d dim%d", n, dim);
    report_dev(what, gte, te, (size_t)n * dim, TOL_LIBM);

    /* patchify / unpatchify, both orders, non-square grid and p = 3 */
    int shapes[2][5] = {{2, 4, 16, 32, 2}, {1, 3, 9, 6, 3}};
    for (int k = 0; k < 2; k++)
        for (int order = 0; order < 2; order++) {
            int b = shapes[k][0], c = shapes[k][1], h = shapes[k][2], w = shapes[k][3], p = shapes[k][4];
            size_t m = (size_t)b * c * h * w;
            float *x = kt_rand(m, -1, 1), *tok = kt_alloc(m);
            ref->patchify(ref, b, c, h, w, p, order, x, tok);
            float *gx = dev_upload(&pool, x, m), *gtok = dev_garbage(&pool, m), *gback = dev_garbage(&pool, m);
            gpu->patchify(gpu, b, c, h, w, p, order, gx, gtok);
            gpu->unpatchify(gpu, b, c, h, w, p, order, gtok, gback);
            float *htok = dl(gtok, m), *hback = dl(gback, m);
            snprintf(what, sizeof what, "patchify %s b%d c%d %dx%d p%d identical; unpatchify inverts it",
                     order ? "pqc" : "cpq", b, c, h, w, p);
            kt_expect(!memcmp(htok, tok, m * sizeof *tok) && !memcmp(hback, x, m * sizeof *x), what);
            free(x), free(tok), free(htok), free(hback);
            dev_pool_free(&pool);
        }

    /* add_broadcast, axpby_samples (in place too), ema_update: the same arithmetic, exact */
    int batch = 5;
    size_t per = 70001, m = (size_t)batch * per;
    float *a = kt_rand(per, -1, 1), *y = kt_rand(m, -1, 1), *ga = dev_upload(&pool, a, per), *gyb = dev_upload(&pool, y, m);
    ref->add_broadcast(ref, batch, per, a, y);
    gpu->add_broadcast(gpu, batch, per, ga, gyb);
    snprintf(what, sizeof what, "add_broadcast b%d n%zu (+=, exact)", batch, per);
    report_dev(what, gyb, y, m, 0.0);
    float ca[5] = {0.9f, 0.5f, 0.1f, 1.0f, 0.0f}, cb[5] = {0.3f, -0.8f, 0.99f, 0.0f, 1.0f};
    float *x = kt_rand(m, -1, 1), *e = kt_rand(m, -1, 1), *z = kt_alloc(m);
    ref->axpby_samples(ref, batch, per, ca, x, cb, e, z);
    float *gx = dev_upload(&pool, x, m), *ge = dev_upload(&pool, e, m), *gz = dev_garbage(&pool, m);
    float ca2[5], cb2[5];
    memcpy(ca2, ca, sizeof ca), memcpy(cb2, cb, sizeof cb);
    gpu->axpby_samples(gpu, batch, per, ca2, gx, cb2, ge, gz);
    memset(ca2, 0xff, sizeof ca2), memset(cb2, 0xff, sizeof cb2); /* the caller may reuse them at once */
    float *hz = dl(gz, m);
    gpu->axpby_samples(gpu, batch, per, ca, gx, cb, ge, gx); /* in place on x */
    snprintf(what, sizeof what, "axpby_samples %d x %zu (written, host coefficients reused, in place; exact)", batch,
             per);
    float *hx = dl(gx, m);
    kt_report(what, fmax(kt_rel_err(hz, z, m), kt_rel_err(hx, z, m)), 0.0);
    free(hz), free(hx);
    float *pp = kt_rand(m, -1, 1), *em = kt_rand(m, -1, 1), *gp = dev_upload(&pool, pp, m), *gem = dev_upload(&pool, em, m);
    ref->ema_update(ref, m, 0.9999f, pp, em);
    gpu->ema_update(gpu, m, 0.9999f, gp, gem);
    snprintf(what, sizeof what, "ema_update n%zu (exact)", m);
    report_dev(what, gem, em, m, 0.0);
    free(t), free(te), free(a), free(y), free(x), free(e), free(z), free(pp), free(em);
    dev_pool_free(&pool);
}

static void test_transformer(void) {
    linear_case(1, 384, 2304);
    linear_case(37, 19, 23);
    linear_case(700, 96, 600);
    linear_case(3, 256, 1);
    linear_case(5000, 64, 48); /* db over many slices of rows */
    layernorm_case(1, 384, 0);
    layernorm_case(37, 19, 3);
    layernorm_case(1000, 384, -20);
    layernorm_case(3, 1000, 1); /* rows longer than the warp's stride many times */
    gelu_case(1001);
    gelu_case(5000011);
    modulate_case(2, 37, 24, 6 * 24);
    modulate_case(3, 513, 48, 3 * 48);
    modulate_case(1, 1, 5, 5 * 6);
    modulate_case(2, 9000, 8, 3 * 8); /* many token slices */
    attention_case(ref, 2, 37, 24, 3, 2);
    attention_case(ref, 1, 1, 8, 2, 1);
    attention_case(ref, 2, 130, 64, 2, 2);
    attention_case(ref, 1, 200, 48, 1, 6);
    attention_case(cpu, 2, 512, 384, 6, 2);  /* DiT-S */
    attention_case(cpu, 1, 2048, 256, 16, 2); /* 16 heads x 2048^2 scores: two head groups */
    attention_case(cpu, 1, 6000, 16, 1, 2);  /* 6000^2 scores: two query chunks, dK, dV added */
    embedding_case(9, 5, 4);
    embedding_case(1000, 384, 11);
    misc_transformer_case();
}

/* ---- remix (stage 3) losses ---- */

/* Gram matrices against `oracle` (the reference, or the cpu backend at sizes the reference is slow
 * for): g written over garbage, df accumulated onto known values; the same calls twice repeat bit
 * for bit. */
static void gram_case(rmx_backend *oracle, int n, int c, int hw) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nf = (size_t)n * c * hw, ng = (size_t)n * c * c;
    float scale = 1.0f / ((float)c * (float)hw);
    float *f = kt_rand(nf, -1, 1), *dg = kt_rand(ng, -1, 1), *g = kt_alloc(ng), *df = kt_rand(nf, -1, 1);
    float *df0 = kt_copy(df, nf);
    oracle->gram_fwd(oracle, n, c, hw, scale, f, g);
    oracle->gram_bwd(oracle, n, c, hw, scale, f, dg, df);
    float *gf = dev_upload(&pool, f, nf), *gdg = dev_upload(&pool, dg, ng), *gg = dev_garbage(&pool, ng);
    float *gdf = dev_upload(&pool, df0, nf), *gg2 = dev_garbage(&pool, ng), *gdf2 = dev_upload(&pool, df0, nf);
    gpu->gram_fwd(gpu, n, c, hw, scale, gf, gg);
    gpu->gram_bwd(gpu, n, c, hw, scale, gf, gdg, gdf);
    gpu->gram_fwd(gpu, n, c, hw, scale, gf, gg2);
    gpu->gram_bwd(gpu, n, c, hw, scale, gf, gdg, gdf2);
    char what[200];
    snprintf(what, sizeof what, "gram n%d c%d hw%d fwd (written)%s", n, c, hw, oracle == cpu ? " (vs cpu)" : "");
    report_dev(what, gg, g, ng, TOL_GEMM);
    snprintf(what, sizeof what, "gram n%d c%d hw%d bwd df (+=)%s", n, c, hw, oracle == cpu ? " (vs cpu)" : "");
    report_dev(what, gdf, df, nf, TOL_GEMM);
    snprintf(what, sizeof what, "gram n%d c%d hw%d fwd, bwd repeat bit for bit", n, c, hw);
    kt_expect(dev_equal(gg, gg2, ng) && dev_equal(gdf, gdf2, nf), what);
    free(f), free(dg), free(g), free(df), free(df0);
    dev_pool_free(&pool);
}

/* Total variation: the value added to the scalar (a fixed-order reduction: 1e-6), dx accumulated
 * onto known values (elementwise.h on both sides: exact); dx NULL gives the same value, and the
 * call repeats bit for bit. */
static void tv_case(rmx_backend *oracle, int n, int c, int h, int w) {
    dev_pool pool = {gpu, {0}, 0};
    size_t nx = (size_t)n * c * h * w;
    float *x = kt_rand(nx, -2, 2), *dx = kt_rand(nx, -1, 1), *dx0 = kt_copy(dx, nx);
    float l_ref = 0.5f, l_gpu = 0.5f, l_null = 0.5f, l_again = 0.5f;
    oracle->tv_loss(oracle, n, c, h, w, x, 0.3f, &l_ref, dx);
    float *gx = dev_upload(&pool, x, nx), *gdx = dev_upload(&pool, dx0, nx), *gdx2 = dev_upload(&pool, dx0, nx);
    float *gl = dev_upload(&pool, &l_gpu, 1), *gl_null = dev_upload(&pool, &l_null, 1);
    float *gl_again = dev_upload(&pool, &l_again, 1);
    gpu->tv_loss(gpu, n, c, h, w, gx, 0.3f, gl, gdx);
    gpu->tv_loss(gpu, n, c, h, w, gx, 0.3f, gl_null, NULL);
    gpu->tv_loss(gpu, n, c, h, w, gx, 0.3f, gl_again, gdx2);
    gpu->to_host(gpu, &l_gpu, gl, sizeof l_gpu);
    gpu->to_host(gpu, &l_null, gl_null, sizeof l_null);
    gpu->to_host(gpu, &l_again, gl_again, sizeof l_again);
    char what[200];
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d value (+=)%s", n, c, h, w, oracle == cpu ? " (vs cpu)" : "");
    kt_report(what, fabs((double)l_ref - l_gpu) / fabs((double)l_ref), TOL_RED);
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d dx (+=, exact)", n, c, h, w);
    report_dev(what, gdx, dx, nx, 0.0);
    snprintf(what, sizeof what, "tv_loss n%d c%d %dx%d: dx NULL same value; repeats bit for bit", n, c, h, w);
    kt_expect(l_null == l_gpu && l_again == l_gpu && dev_equal(gdx, gdx2, nx), what);
    free(x), free(dx), free(dx0);
    dev_pool_free(&pool);
}

static void test_remix(void) {
    gram_case(ref, 2, 3, 7);  /* odd sizes */
    gram_case(ref, 1, 1, 5);  /* one channel */
    gram_case(ref, 3, 64, 300);
    gram_case(ref, 2, 130, 50);
    gram_case(ref, 1, 32, 32768); /* the bench's first level: 32 channels x 128 x 256 */
    gram_case(cpu, 4, 128, 8192); /* deeper features, batch 4 */
    tv_case(ref, 2, 3, 7, 5);
    tv_case(ref, 1, 1, 1, 9); /* h == 1 */
    tv_case(ref, 2, 2, 6, 1); /* w == 1 */
    tv_case(ref, 1, 1, 1, 1); /* neither: value and dx unchanged */
    tv_case(ref, 3, 8, 33, 17);
    tv_case(ref, 4, 1, 128, 256); /* a mel batch: several reduction blocks */
    tv_case(cpu, 16, 8, 128, 256); /* 4 M elements: more blocks than one pass takes */
}

int main(void) {
    gpu = cuda_or_skip("cuda_ops");
    ref = rmx_backend_ref_create();
    cpu = rmx_backend_cpu_create(0);
    kt_seed(12345);
    printf("cuda backend vs reference backend (errors relative to the reference's max |value|)\n");
    test_memory();
    test_conv();
    test_groupnorm(2, 32, 37, 8, 0);
    test_groupnorm(3, 6, 50, 3, 3);
    test_groupnorm(1, 4, 20000, 4, -1);
    test_groupnorm(4, 8, 9, 8, 0);
    test_groupnorm(2, 128, 2048, 8, 100); /* a large mean: the two-pass variance matters */
    test_elementwise(1000);
    test_elementwise(300007);
    test_elementwise(5000011); /* more blocks than one reduction pass takes */
    test_upsample(2, 3, 5, 7);
    test_upsample(3, 8, 16, 32);
    test_kl(2, 4, 35);
    test_kl(3, 8, 2048);
    test_vq(2, 5, 33, 37);
    test_vq(4, 8, 512, 256);
    test_vq(2, 40, 64, 9); /* more than 32 channels: the statistics take two passes */
    test_adamw(1001);
    test_adamw(200003);
    test_randn();
    test_transformer();
    test_remix();
    ref->destroy(ref);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return kt_finish("cuda_ops");
}
