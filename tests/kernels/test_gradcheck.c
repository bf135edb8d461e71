/* Every backward op, of both backends, against central finite differences of the reference
 * forward. For an op y = f(x) the checked scalar is L = sum_i y_i r_i for a fixed random r (the
 * backward gets dy = r); L is summed in double, and each step divides by the exact difference of
 * the perturbed floats. Separable ops (the KL term) are differenced one element at a time so the
 * rounding of a large sum does not swamp the difference.
 *
 * Also checked: written outputs ignore what was in the buffer, accumulated ones add (two calls
 * give twice one), and a NULL output is skipped without changing the others.
 *
 * Tolerances are relative to the largest finite-difference gradient and sit about ten times above
 * the errors seen (the float rounding of y divided by the step): 2e-4 for the linear ops
 * (convolution, upsampling, dgamma, dbeta), 5e-4 for GroupNorm's dx and the losses, 1e-3 for the
 * sampler, 3e-3 for SiLU and GELU (differenced with a smaller step, 1e-3, to keep curvature out).
 *
 * The transformer ops (linear, layernorm, gelu, modulate, gated_add, attention, embedding) are
 * checked the same way, with the adaLN column blocks at an offset and a leading dimension wider
 * than d; patchify and unpatchify, permutations, are checked as each other's inverse and adjoint.
 *
 * The remix losses: gram_bwd through a random linear functional of g (L = sum g r) and tv_loss
 * through its value, both quadratic, so differenced with a large step (exact for a quadratic);
 * the Gram forward and the TV value also against their definitions in double (the TV value per
 * sample, as the spec states it), including h == 1 and w == 1. */
#include "ktest.h"

static rmx_backend *ref;

typedef double (*eval_fn)(void *ctx);

/* g[i] = dL/dp[i] by central differences of f, step h. */
static void fd_grad(eval_fn f, void *ctx, float *p, size_t n, float h, double *g) {
    for (size_t i = 0; i < n; i++) {
        float save = p[i], up = save + h, dn = save - h;
        p[i] = up;
        double lp = f(ctx);
        p[i] = dn;
        double lm = f(ctx);
        p[i] = save;
        g[i] = (lp - lm) / ((double)up - (double)dn);
    }
}

static double proj(const float *y, const float *r, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) exit(2);
    return p;
}

static int all_equal(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

/* ---- convolution ---- */

typedef struct {
    rmx_conv_shape s;
    float *x, *w, *b, *y, *r;
} conv_ctx;

static double conv_eval(void *vc) {
    conv_ctx *c = vc;
    ref->conv2d_fwd(ref, &c->s, c->x, c->w, c->b, c->y, NULL);
    return proj(c->y, c->r, (size_t)c->s.n * c->s.cout * c->s.hout * c->s.wout);
}

static void conv_check(rmx_backend *be, int n, int cin, int h, int w, int cout, int k, int stride, int pad) {
    conv_ctx c;
    c.s = rmx_conv_shape_make(n, cin, h, w, cout, k, stride, pad);
    size_t nx = (size_t)n * cin * h * w, nw = (size_t)cout * cin * k * k;
    size_t ny = (size_t)n * cout * c.s.hout * c.s.wout;
    c.x = kt_rand(nx, -1, 1), c.w = kt_rand(nw, -1, 1), c.b = kt_rand(cout, -1, 1);
    c.y = kt_alloc(ny), c.r = kt_rand(ny, -1, 1);
    double *gx = dalloc(nx), *gw = dalloc(nw), *gb = dalloc(cout);
    fd_grad(conv_eval, &c, c.x, nx, 1e-2f, gx);
    fd_grad(conv_eval, &c, c.w, nw, 1e-2f, gw);
    fd_grad(conv_eval, &c, c.b, cout, 1e-2f, gb);

    float *ws = kt_alloc(be->conv2d_workspace(be, &c.s));
    float *dx = kt_rand(nx, 7, 8), *dw = kt_alloc(nw), *db = kt_alloc(cout);
    be->conv2d_bwd(be, &c.s, c.x, c.w, c.r, dx, dw, db, ws);
    char what[160], line[260];
    snprintf(what, sizeof what, "%s conv n%d %dx%dx%d -> %d k%d s%d p%d", be->name, n, cin, h, w, cout, k, stride, pad);
    snprintf(line, sizeof line, "%s dx", what);
    kt_report(line, kt_rel_err_d(dx, gx, nx), 2e-4);
    snprintf(line, sizeof line, "%s dw", what);
    kt_report(line, kt_rel_err_d(dw, gw, nw), 2e-4);
    snprintf(line, sizeof line, "%s db", what);
    kt_report(line, kt_rel_err_d(db, gb, cout), 2e-4);

    /* a second call adds the same weight gradients again; dx is rewritten, not added */
    float *dw1 = kt_copy(dw, nw), *db1 = kt_copy(db, cout), *dx1 = kt_copy(dx, nx);
    be->conv2d_bwd(be, &c.s, c.x, c.w, c.r, dx, dw, db, ws);
    for (size_t i = 0; i < nw; i++) dw1[i] *= 2.0f;
    for (int i = 0; i < cout; i++) db1[i] *= 2.0f;
    snprintf(line, sizeof line, "%s: 2 calls = 2x dw, db; dx written", what);
    kt_report(line, fmax(fmax(kt_rel_err(dw, dw1, nw), kt_rel_err(db, db1, cout)), kt_rel_err(dx, dx1, nx)), 1e-6);

    /* NULL skips: a frozen layer (dx only) and a first layer (dw, db only) */
    float *dw2 = kt_copy(dw, nw), *db2 = kt_copy(db, cout), *dx2 = kt_rand(nx, 7, 8);
    be->conv2d_bwd(be, &c.s, c.x, c.w, c.r, dx2, NULL, NULL, ws);
    int ok = all_equal(dw2, dw, nw) && all_equal(db2, db, cout) && kt_rel_err(dx2, dx1, nx) <= 1e-6;
    be->conv2d_bwd(be, &c.s, c.x, c.w, c.r, NULL, dw2, NULL, ws);
    for (size_t i = 0; i < nw; i++) dw1[i] *= 1.5f; /* three calls' worth */
    ok = ok && kt_rel_err(dw2, dw1, nw) <= 1e-6 && all_equal(db2, db, cout);
    snprintf(line, sizeof line, "%s: NULL dx / dw / db skipped", what);
    kt_expect(ok, line);

    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(gx), free(gw), free(gb), free(ws);
    free(dx), free(dw), free(db), free(dw1), free(db1), free(dx1), free(dw2), free(db2), free(dx2);
}

/* ---- GroupNorm ---- */

typedef struct {
    int n, c, hw, g;
    float *x, *gamma, *beta, *y, *mean, *rstd, *r;
} gn_ctx;

static double gn_eval(void *vc) {
    gn_ctx *c = vc;
    ref->groupnorm_fwd(ref, c->n, c->c, c->hw, c->g, 1e-5f, c->x, c->gamma, c->beta, c->y, c->mean, c->rstd);
    return proj(c->y, c->r, (size_t)c->n * c->c * c->hw);
}

static void gn_check(rmx_backend *be, int n, int ch, int hw, int groups) {
    gn_ctx c = {n, ch, hw, groups, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nx = (size_t)n * ch * hw;
    c.x = kt_rand(nx, -2, 2), c.gamma = kt_rand(ch, 0.5f, 1.5f), c.beta = kt_rand(ch, -1, 1);
    c.y = kt_alloc(nx), c.mean = kt_alloc(n * groups), c.rstd = kt_alloc(n * groups), c.r = kt_rand(nx, -1, 1);
    double *gx = dalloc(nx), *gg = dalloc(ch), *gb = dalloc(ch);
    fd_grad(gn_eval, &c, c.x, nx, 1e-2f, gx);
    fd_grad(gn_eval, &c, c.gamma, ch, 1e-2f, gg);
    fd_grad(gn_eval, &c, c.beta, ch, 1e-2f, gb);
    gn_eval(&c); /* mean and rstd of the unperturbed input */
    float *dx = kt_rand(nx, 7, 8), *dg = kt_alloc(ch), *dbt = kt_alloc(ch);
    be->groupnorm_bwd(be, n, ch, hw, groups, c.x, c.gamma, c.mean, c.rstd, c.r, dx, dg, dbt);
    char what[160], line[260];
    snprintf(what, sizeof what, "%s groupnorm n%d c%d hw%d g%d", be->name, n, ch, hw, groups);
    snprintf(line, sizeof line, "%s dx", what);
    kt_report(line, kt_rel_err_d(dx, gx, nx), 5e-4);
    snprintf(line, sizeof line, "%s dgamma", what);
    kt_report(line, kt_rel_err_d(dg, gg, ch), 2e-4);
    snprintf(line, sizeof line, "%s dbeta", what);
    kt_report(line, kt_rel_err_d(dbt, gb, ch), 2e-4);

    float *dg1 = kt_copy(dg, ch), *db1 = kt_copy(dbt, ch), *dx1 = kt_copy(dx, nx);
    be->groupnorm_bwd(be, n, ch, hw, groups, c.x, c.gamma, c.mean, c.rstd, c.r, NULL, dg, dbt);
    for (int i = 0; i < ch; i++) dg1[i] *= 2.0f, db1[i] *= 2.0f;
    snprintf(line, sizeof line, "%s: 2 calls = 2x dgamma, dbeta (dx NULL skipped)", what);
    kt_report(line, fmax(kt_rel_err(dg, dg1, ch), kt_rel_err(dbt, db1, ch)), 1e-6);
    float *dx2 = kt_rand(nx, -9, -8), *dg2 = kt_copy(dg, ch);
    be->groupnorm_bwd(be, n, ch, hw, groups, c.x, c.gamma, c.mean, c.rstd, c.r, dx2, NULL, NULL);
    snprintf(line, sizeof line, "%s: dgamma/dbeta NULL skipped, dx written", what);
    kt_expect(all_equal(dg2, dg, ch) && kt_rel_err(dx2, dx1, nx) <= 1e-6, line);

    free(c.x), free(c.gamma), free(c.beta), free(c.y), free(c.mean), free(c.rstd), free(c.r);
    free(gx), free(gg), free(gb), free(dx), free(dg), free(dbt), free(dg1), free(db1), free(dx1);
    free(dx2), free(dg2);
}

/* ---- SiLU and upsampling ---- */

typedef struct {
    size_t n;
    int un, uc, uh, uw;
    float *x, *y, *r;
} ew_ctx;

static double silu_eval(void *vc) {
    ew_ctx *c = vc;
    ref->silu_fwd(ref, c->n, c->x, c->y);
    return proj(c->y, c->r, c->n);
}

static void silu_check(rmx_backend *be) {
    ew_ctx c = {500, 0, 0, 0, 0, kt_rand(500, -6, 6), kt_alloc(500), kt_rand(500, -1, 1)};
    double *g = dalloc(c.n);
    fd_grad(silu_eval, &c, c.x, c.n, 1e-3f, g);
    float *dx = kt_rand(c.n, 7, 8);
    be->silu_bwd(be, c.n, c.x, c.r, dx);
    char line[160];
    snprintf(line, sizeof line, "%s silu n=500 dx", be->name);
    kt_report(line, kt_rel_err_d(dx, g, c.n), 3e-3);
    free(c.x), free(c.y), free(c.r), free(g), free(dx);
}

static double up_eval(void *vc) {
    ew_ctx *c = vc;
    ref->upsample2x_fwd(ref, c->un, c->uc, c->uh, c->uw, c->x, c->y);
    return proj(c->y, c->r, (size_t)c->un * c->uc * c->uh * c->uw * 4);
}

static void upsample_check(rmx_backend *be, int n, int ch, int h, int w) {
    size_t nx = (size_t)n * ch * h * w;
    ew_ctx c = {nx, n, ch, h, w, kt_rand(nx, -1, 1), kt_alloc(4 * nx), kt_rand(4 * nx, -1, 1)};
    double *g = dalloc(nx);
    fd_grad(up_eval, &c, c.x, nx, 1e-2f, g);
    float *dx = kt_rand(nx, 7, 8);
    be->upsample2x_bwd(be, n, ch, h, w, c.r, dx);
    char line[160];
    snprintf(line, sizeof line, "%s upsample2x n%d c%d %dx%d dx", be->name, n, ch, h, w);
    kt_report(line, kt_rel_err_d(dx, g, nx), 2e-4);
    free(c.x), free(c.y), free(c.r), free(g), free(dx);
}

/* ---- KL bottleneck ---- */

typedef struct {
    int n, c, hw;
    float *mom, *eps, *z, *r;
} gs_ctx;

static double gs_eval(void *vc) {
    gs_ctx *c = vc;
    ref->gaussian_sample_fwd(ref, c->n, c->c, c->hw, c->mom, c->eps, c->z);
    return proj(c->z, c->r, (size_t)c->n * c->c * c->hw);
}

static void gaussian_check(rmx_backend *be) {
    int n = 2, ch = 3, hw = 7;
    size_t nz = (size_t)n * ch * hw, nm = 2 * nz;
    gs_ctx c = {n, ch, hw, kt_rand(nm, -2, 2), kt_rand(nz, -2, 2), kt_alloc(nz), kt_rand(nz, -1, 1)};
    c.mom[(size_t)ch * hw + 3] = -35.0f; /* a log-variance below the clamp gets no gradient */
    double *g = dalloc(nm);
    fd_grad(gs_eval, &c, c.mom, nm, 1e-3f, g);
    float *dm = kt_rand(nm, 7, 8);
    be->gaussian_sample_bwd(be, n, ch, hw, c.mom, c.eps, c.r, dm);
    char line[160];
    snprintf(line, sizeof line, "%s gaussian_sample n%d c%d hw%d dmoments (written)", be->name, n, ch, hw);
    kt_report(line, kt_rel_err_d(dm, g, nm), 1e-3);
    snprintf(line, sizeof line, "%s gaussian_sample: zero gradient where logvar is clamped", be->name);
    kt_expect(dm[(size_t)ch * hw + 3] == 0.0f, line);
    /* Above the clamp sigma = e^10 makes z too coarse to difference; check the values directly. */
    float mom1[2] = {0.3f, 22.0f}, eps1 = 0.5f, dz1 = 1.25f, dm1[2] = {9.0f, 9.0f};
    be->gaussian_sample_bwd(be, 1, 1, 1, mom1, &eps1, &dz1, dm1);
    snprintf(line, sizeof line, "%s gaussian_sample: logvar 22 (clamped to 20): dmean = dz, dlogvar = 0", be->name);
    kt_expect(dm1[0] == dz1 && dm1[1] == 0.0f, line);
    free(c.mom), free(c.eps), free(c.z), free(c.r), free(g), free(dm);
}

typedef struct {
    float mom[2];
    float scale;
} kl1_ctx;

static double kl1_eval(void *vc) {
    kl1_ctx *c = vc;
    float loss = 0.0f;
    ref->kl_loss(ref, 1, 1, 1, c->mom, c->scale, &loss, NULL);
    return loss;
}

static void kl_check(rmx_backend *be) {
    int n = 2, ch = 3, hw = 5;
    size_t nz = (size_t)n * ch * hw, nm = 2 * nz, chw = (size_t)ch * hw;
    float scale = 0.7f, *mom = kt_rand(nm, -2.5f, 2.5f);
    mom[chw + 4] = -31.0f; /* below the clamp: zero logvar gradient, and differences agree */
    mom[3 * chw] = 20.5f;  /* above: the loss (~1e8) is too coarse to difference the mean, so 0 */
    mom[2 * chw] = 0.0f;
    double *g = dalloc(nm);
    for (int b = 0; b < n; b++)
        for (size_t i = 0; i < chw; i++) {
            size_t im = b * 2 * chw + i, il = im + chw;
            kl1_ctx c = {{mom[im], mom[il]}, scale};
            double gg[2];
            fd_grad(kl1_eval, &c, c.mom, 2, 1e-3f, gg);
            g[im] = gg[0];
            g[il] = gg[1];
        }
    float *dm = kt_alloc(nm), loss = 0.25f;
    be->kl_loss(be, n, ch, hw, mom, scale, &loss, dm);
    char line[160];
    snprintf(line, sizeof line, "%s kl_loss n%d c%d hw%d dmoments", be->name, n, ch, hw);
    kt_report(line, kt_rel_err_d(dm, g, nm), 5e-4);

    double want = 0.0;
    for (int b = 0; b < n; b++)
        for (size_t i = 0; i < chw; i++) {
            double mu = mom[b * 2 * chw + i], lv = fmin(20.0, fmax(-30.0, mom[b * 2 * chw + chw + i]));
            want += -0.5 * (1.0 + lv - mu * mu - exp(lv));
        }
    want = 0.25 + scale * want;
    snprintf(line, sizeof line, "%s kl_loss: zero logvar gradient outside [-30, 20]", be->name);
    kt_expect(dm[chw + 4] == 0.0f && dm[3 * chw] == 0.0f, line);
    snprintf(line, sizeof line, "%s kl_loss value (added to the scalar)", be->name);
    kt_report(line, fabs(loss - want) / fabs(want), 1e-6);

    float *dm1 = kt_copy(dm, nm), l2 = 0.0f;
    be->kl_loss(be, n, ch, hw, mom, scale, &l2, dm);
    for (size_t i = 0; i < nm; i++) dm1[i] *= 2.0f;
    snprintf(line, sizeof line, "%s kl_loss: 2 calls = 2x dmoments", be->name);
    kt_report(line, kt_rel_err(dm, dm1, nm), 1e-6);
    float *dm2 = kt_copy(dm, nm), l3 = 0.0f;
    be->kl_loss(be, n, ch, hw, mom, scale, &l3, NULL);
    snprintf(line, sizeof line, "%s kl_loss: NULL dmoments skipped, value still added", be->name);
    kt_expect(all_equal(dm2, dm, nm) && l3 == l2, line);
    free(mom), free(g), free(dm), free(dm1), free(dm2);
}

/* ---- reconstruction loss ---- */

typedef struct {
    size_t n;
    float *xhat, *x, scale;
} mse_ctx;

static double mse_eval(void *vc) {
    mse_ctx *c = vc;
    float loss = 0.0f;
    ref->mse_loss(ref, c->n, c->xhat, c->x, c->scale, &loss, NULL);
    return loss;
}

static void mse_check(rmx_backend *be) {
    mse_ctx c = {60, kt_rand(60, -1, 1), kt_rand(60, -1, 1), 0.3f};
    double *g = dalloc(c.n), want = 0.0;
    fd_grad(mse_eval, &c, c.xhat, c.n, 1e-2f, g);
    for (size_t i = 0; i < c.n; i++) want += ((double)c.xhat[i] - c.x[i]) * ((double)c.xhat[i] - c.x[i]);
    want = 1.5 + c.scale * want;
    float *d = kt_rand(c.n, 7, 8), loss = 1.5f;
    be->mse_loss(be, c.n, c.xhat, c.x, c.scale, &loss, d);
    char line[160];
    snprintf(line, sizeof line, "%s mse_loss n=60 dxhat (written)", be->name);
    kt_report(line, kt_rel_err_d(d, g, c.n), 5e-4);
    snprintf(line, sizeof line, "%s mse_loss value (added to the scalar)", be->name);
    kt_report(line, fabs(loss - want) / want, 1e-6);
    float l2 = 1.5f, *d2 = kt_copy(d, c.n);
    be->mse_loss(be, c.n, c.xhat, c.x, c.scale, &l2, NULL);
    snprintf(line, sizeof line, "%s mse_loss: NULL dxhat skipped", be->name);
    kt_expect(l2 == loss && all_equal(d2, d, c.n), line);
    free(c.xhat), free(c.x), free(g), free(d), free(d2);
}

/* ---- transformer ops ---- */

/* A host int32 array (the ref and cpu backends read host memory). */
static int32_t *ialloc(size_t n) {
    int32_t *p = calloc(n ? n : 1, sizeof(int32_t));
    if (!p) exit(2);
    return p;
}

typedef struct {
    int rows, in, out;
    float *x, *w, *b, *y, *r;
} lin_ctx;

static double lin_eval(void *vc) {
    lin_ctx *c = vc;
    ref->linear_fwd(ref, c->rows, c->in, c->out, c->x, c->w, c->b, c->y);
    return proj(c->y, c->r, (size_t)c->rows * c->out);
}

static void linear_check(rmx_backend *be, int rows, int in, int out) {
    lin_ctx c = {rows, in, out, NULL, NULL, NULL, NULL, NULL};
    size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    c.x = kt_rand(nx, -1, 1), c.w = kt_rand(nw, -1, 1), c.b = kt_rand(out, -1, 1);
    c.y = kt_alloc(ny), c.r = kt_rand(ny, -1, 1);
    double *gx = dalloc(nx), *gw = dalloc(nw), *gb = dalloc(out);
    fd_grad(lin_eval, &c, c.x, nx, 1e-2f, gx);
    fd_grad(lin_eval, &c, c.w, nw, 1e-2f, gw);
    fd_grad(lin_eval, &c, c.b, out, 1e-2f, gb);
    /* dw, db accumulate onto what is there: start from random values, compare the increment */
    float *dx = kt_rand(nx, 7, 8), *dw0 = kt_rand(nw, -1, 1), *db0 = kt_rand(out, -1, 1);
    float *dw = kt_copy(dw0, nw), *db = kt_copy(db0, out);
    be->linear_bwd(be, rows, in, out, c.x, c.w, c.r, dx, dw, db);
    float *ddw = kt_alloc(nw), *ddb = kt_alloc(out);
    for (size_t i = 0; i < nw; i++) ddw[i] = dw[i] - dw0[i];
    for (int i = 0; i < out; i++) ddb[i] = db[i] - db0[i];
    char what[160], line[260];
    snprintf(what, sizeof what, "%s linear rows%d %d -> %d", be->name, rows, in, out);
    snprintf(line, sizeof line, "%s dx (written)", what);
    kt_report(line, kt_rel_err_d(dx, gx, nx), 2e-4);
    snprintf(line, sizeof line, "%s dw (+=)", what);
    kt_report(line, kt_rel_err_d(ddw, gw, nw), 2e-4);
    snprintf(line, sizeof line, "%s db (+=)", what);
    kt_report(line, kt_rel_err_d(ddb, gb, out), 2e-4);
    /* NULL skips: dx alone leaves dw, db; dw alone leaves db and writes no dx */
    float *dw1 = kt_copy(dw, nw), *db1 = kt_copy(db, out), *dx2 = kt_rand(nx, 7, 8);
    be->linear_bwd(be, rows, in, out, c.x, c.w, c.r, dx2, NULL, NULL);
    int ok = all_equal(dw1, dw, nw) && all_equal(db1, db, out) && kt_rel_err(dx2, dx, nx) <= 1e-6;
    be->linear_bwd(be, rows, in, out, c.x, c.w, c.r, NULL, dw1, NULL);
    be->linear_bwd(be, rows, in, out, c.x, c.w, c.r, NULL, NULL, db1);
    for (size_t i = 0; i < nw; i++) ddw[i] = dw0[i] + 2.0f * ddw[i];
    for (int i = 0; i < out; i++) ddb[i] = db0[i] + 2.0f * ddb[i];
    ok = ok && kt_rel_err(dw1, ddw, nw) <= 1e-5 && kt_rel_err(db1, ddb, out) <= 1e-5;
    snprintf(line, sizeof line, "%s: NULL dx / dw / db skipped, 2 calls = 2x dw, db", what);
    kt_expect(ok, line);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(gx), free(gw), free(gb);
    free(dx), free(dw0), free(db0), free(dw), free(db), free(ddw), free(ddb), free(dw1), free(db1), free(dx2);
}

typedef struct {
    int rows, d;
    float *x, *y, *rstd, *r;
} ln_ctx;

static double ln_eval(void *vc) {
    ln_ctx *c = vc;
    ref->layernorm_fwd(ref, c->rows, c->d, 1e-6f, c->x, c->y, c->rstd);
    return proj(c->y, c->r, (size_t)c->rows * c->d);
}

static void layernorm_check(rmx_backend *be, int rows, int d, float offset) {
    size_t n = (size_t)rows * d;
    ln_ctx c = {rows, d, kt_rand(n, offset - 2, offset + 2), kt_alloc(n), kt_alloc(rows), kt_rand(n, -1, 1)};
    double *g = dalloc(n);
    fd_grad(ln_eval, &c, c.x, n, 1e-2f, g);
    ln_eval(&c); /* y and rstd of the unperturbed input */
    float *dx = kt_rand(n, 7, 8);
    be->layernorm_bwd(be, rows, d, c.y, c.rstd, c.r, dx);
    char line[200];
    snprintf(line, sizeof line, "%s layernorm rows%d d%d mean%+.0f dx (written)", be->name, rows, d, offset);
    kt_report(line, kt_rel_err_d(dx, g, n), 5e-4);
    free(c.x), free(c.y), free(c.rstd), free(c.r), free(g), free(dx);
}

static double gelu_eval(void *vc) {
    ew_ctx *c = vc;
    ref->gelu_fwd(ref, c->n, c->x, c->y);
    return proj(c->y, c->r, c->n);
}

static void gelu_check(rmx_backend *be) {
    ew_ctx c = {500, 0, 0, 0, 0, kt_rand(500, -6, 6), kt_alloc(500), kt_rand(500, -1, 1)};
    double *g = dalloc(c.n);
    fd_grad(gelu_eval, &c, c.x, c.n, 1e-3f, g);
    float *dx = kt_rand(c.n, 7, 8);
    be->gelu_bwd(be, c.n, c.x, c.r, dx);
    char line[160];
    snprintf(line, sizeof line, "%s gelu n=500 dx (written)", be->name);
    kt_report(line, kt_rel_err_d(dx, g, c.n), 3e-3);
    free(c.x), free(c.y), free(c.r), free(g), free(dx);
}

/* modulate and gated_add read shift / scale / gate as column blocks of an adaLN output
 * mod [batch, ld]; the checks use ld = 6d with the blocks at columns d, 3d and 5d. */
typedef struct {
    int batch, tokens, d, ld;
    float *x, *mod, *y, *y0, *r;
} mod_ctx;

static double mod_eval(void *vc) {
    mod_ctx *c = vc;
    ref->modulate_fwd(ref, c->batch, c->tokens, c->d, c->x, c->mod + c->d, c->mod + 3 * c->d, c->ld, c->y);
    return proj(c->y, c->r, (size_t)c->batch * c->tokens * c->d);
}

static double gate_eval(void *vc) {
    mod_ctx *c = vc;
    size_t n = (size_t)c->batch * c->tokens * c->d;
    memcpy(c->y, c->y0, n * sizeof(float));
    ref->gated_add_fwd(ref, c->batch, c->tokens, c->d, c->x, c->mod + 5 * c->d, c->ld, c->y);
    return proj(c->y, c->r, n);
}

static void modulate_check(rmx_backend *be, int batch, int tokens, int d) {
    int ld = 6 * d;
    size_t n = (size_t)batch * tokens * d, nm = (size_t)batch * ld;
    mod_ctx c = {batch, tokens, d, ld, kt_rand(n, -2, 2), kt_rand(nm, -1, 1), kt_alloc(n), kt_rand(n, -1, 1),
                 kt_rand(n, -1, 1)};
    double *gx = dalloc(n), *gm = dalloc(nm);
    fd_grad(mod_eval, &c, c.x, n, 1e-2f, gx);
    fd_grad(mod_eval, &c, c.mod, nm, 1e-2f, gm);
    float *dx = kt_rand(n, 7, 8), *dmod = kt_rand(nm, 7, 8), *dmod0 = kt_copy(dmod, nm);
    be->modulate_bwd(be, batch, tokens, d, c.x, c.mod + 3 * d, ld, c.r, dx, dmod + d, dmod + 3 * d);
    char what[160], line[260];
    snprintf(what, sizeof what, "%s modulate b%d t%d d%d ld%d", be->name, batch, tokens, d, ld);
    snprintf(line, sizeof line, "%s dx (written)", what);
    kt_report(line, kt_rel_err_d(dx, gx, n), 2e-4);
    /* the shift and scale columns (written) against differences; every other column untouched */
    float *got = kt_alloc(nm);
    double *want = dalloc(nm);
    int untouched = 1;
    size_t k = 0;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < ld; j++) {
            size_t e = (size_t)b * ld + j;
            if ((j >= d && j < 2 * d) || (j >= 3 * d && j < 4 * d)) got[k] = dmod[e], want[k++] = gm[e];
            else untouched &= dmod[e] == dmod0[e];
        }
    snprintf(line, sizeof line, "%s dshift, dscale (written, strided)", what);
    kt_report(line, kt_rel_err_d(got, want, k), 2e-4);
    snprintf(line, sizeof line, "%s: other adaLN columns untouched", what);
    kt_expect(untouched, line);
    float *dx2 = kt_rand(n, 7, 8), *dmod2 = kt_copy(dmod0, nm);
    be->modulate_bwd(be, batch, tokens, d, c.x, c.mod + 3 * d, ld, c.r, dx2, NULL, dmod2 + 3 * d);
    be->modulate_bwd(be, batch, tokens, d, c.x, c.mod + 3 * d, ld, c.r, NULL, dmod2 + d, NULL);
    snprintf(line, sizeof line, "%s: NULL dx / dshift / dscale skipped, same values", what);
    kt_expect(all_equal(dx2, dx, n) && all_equal(dmod2, dmod, nm), line);

    /* gated_add: y += gate h, with x as h */
    double *gh = dalloc(n), *gg = dalloc(nm);
    fd_grad(gate_eval, &c, c.x, n, 1e-2f, gh);
    fd_grad(gate_eval, &c, c.mod, nm, 1e-2f, gg);
    float *dh = kt_rand(n, 7, 8), *dgm = kt_rand(nm, 7, 8), *dgm0 = kt_copy(dgm, nm);
    be->gated_add_bwd(be, batch, tokens, d, c.x, c.mod + 5 * d, ld, c.r, dh, dgm + 5 * d);
    snprintf(what, sizeof what, "%s gated_add b%d t%d d%d ld%d", be->name, batch, tokens, d, ld);
    snprintf(line, sizeof line, "%s dh (written)", what);
    kt_report(line, kt_rel_err_d(dh, gh, n), 2e-4);
    k = 0;
    untouched = 1;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < ld; j++) {
            size_t e = (size_t)b * ld + j;
            if (j >= 5 * d) got[k] = dgm[e], want[k++] = gg[e];
            else untouched &= dgm[e] == dgm0[e];
        }
    snprintf(line, sizeof line, "%s dgate (written, strided); other columns untouched", what);
    kt_report(line, untouched ? kt_rel_err_d(got, want, k) : INFINITY, 2e-4);
    float *dh2 = kt_rand(n, 7, 8), *dgm2 = kt_copy(dgm0, nm);
    be->gated_add_bwd(be, batch, tokens, d, c.x, c.mod + 5 * d, ld, c.r, dh2, NULL);
    be->gated_add_bwd(be, batch, tokens, d, c.x, c.mod + 5 * d, ld, c.r, NULL, dgm2 + 5 * d);
    snprintf(line, sizeof line, "%s: NULL dh / dgate skipped, same values", what);
    kt_expect(all_equal(dh2, dh, n) && all_equal(dgm2, dgm, nm), line);
    free(c.x), free(c.mod), free(c.y), free(c.y0), free(c.r), free(gx), free(gm), free(dx), free(dmod), free(dmod0);
    free(got), free(want), free(dx2), free(dmod2), free(gh), free(gg), free(dh), free(dgm), free(dgm0), free(dh2);
    free(dgm2);
}

typedef struct {
    int batch, tokens, d, heads;
    float *qkv, *out, *lse, *r;
} att_ctx;

static double att_eval(void *vc) {
    att_ctx *c = vc;
    ref->attention_fwd(ref, c->batch, c->tokens, c->d, c->heads, c->qkv, c->out, c->lse, NULL);
    return proj(c->out, c->r, (size_t)c->batch * c->tokens * c->d);
}

static void attention_check(rmx_backend *be, int batch, int tokens, int d, int heads) {
    size_t nq = (size_t)batch * tokens * 3 * d, no = (size_t)batch * tokens * d;
    att_ctx c = {batch, tokens, d, heads, kt_rand(nq, -1.5f, 1.5f), kt_alloc(no),
                 kt_alloc((size_t)batch * heads * tokens), kt_rand(no, -1, 1)};
    double *g = dalloc(nq);
    fd_grad(att_eval, &c, c.qkv, nq, 1e-2f, g);
    att_eval(&c);
    float *ws = kt_alloc(be->attention_workspace(be, batch, tokens, d, heads));
    float *dqkv = kt_rand(nq, 7, 8);
    be->attention_bwd(be, batch, tokens, d, heads, c.qkv, c.out, c.lse, c.r, dqkv, ws);
    char line[200];
    snprintf(line, sizeof line, "%s attention b%d t%d d%d h%d dqkv (written)", be->name, batch, tokens, d, heads);
    kt_report(line, kt_rel_err_d(dqkv, g, nq), 5e-4);
    free(c.qkv), free(c.out), free(c.lse), free(c.r), free(g), free(ws), free(dqkv);
}

typedef struct {
    int n, d;
    int32_t *idx;
    float *table, *y, *r;
} emb_ctx;

static double emb_eval(void *vc) {
    emb_ctx *c = vc;
    ref->embedding_fwd(ref, c->n, c->d, c->idx, c->table, c->y);
    return proj(c->y, c->r, (size_t)c->n * c->d);
}

static void embedding_check(rmx_backend *be, int n, int d, int rows) {
    emb_ctx c = {n, d, ialloc(n), kt_rand((size_t)rows * d, -1, 1), kt_alloc((size_t)n * d),
                 kt_rand((size_t)n * d, -1, 1)};
    for (int i = 0; i < n; i++) c.idx[i] = (int32_t)((i * 7 + 3) % (rows - 1)); /* repeats; last row unused */
    size_t nt = (size_t)rows * d;
    double *g = dalloc(nt);
    fd_grad(emb_eval, &c, c.table, nt, 1e-2f, g);
    float *dt0 = kt_rand(nt, -1, 1), *dt = kt_copy(dt0, nt), *inc = kt_alloc(nt);
    be->embedding_bwd(be, n, d, rows, c.idx, c.r, dt);
    for (size_t i = 0; i < nt; i++) inc[i] = dt[i] - dt0[i];
    char line[200];
    snprintf(line, sizeof line, "%s embedding n%d d%d rows%d dtable (+=)", be->name, n, d, rows);
    kt_report(line, kt_rel_err_d(inc, g, nt), 2e-4);
    free(c.idx), free(c.table), free(c.y), free(c.r), free(g), free(dt0), free(dt), free(inc);
}

/* patchify and unpatchify are inverse permutations, so each is the other's backward: the round
 * trip is exact, and <patchify(x), t> = <x, unpatchify(t)> (the adjoint). */
static void patch_check(rmx_backend *be, int batch, int c, int h, int w, int p) {
    size_t n = (size_t)batch * c * h * w;
    for (int order = 0; order < 2; order++) {
        float *x = kt_rand(n, -1, 1), *tok = kt_rand(n, 7, 8), *back = kt_rand(n, 7, 8), *t = kt_rand(n, -1, 1);
        float *ut = kt_rand(n, 7, 8);
        be->patchify(be, batch, c, h, w, p, order, x, tok);
        be->unpatchify(be, batch, c, h, w, p, order, tok, back);
        be->unpatchify(be, batch, c, h, w, p, order, t, ut);
        double a = proj(tok, t, n), b = proj(x, ut, n);
        char line[200];
        snprintf(line, sizeof line, "%s patchify %s b%d c%d %dx%d p%d: unpatchify inverts it exactly", be->name,
                 order ? "pqc" : "cpq", batch, c, h, w, p);
        kt_expect(all_equal(back, x, n), line);
        snprintf(line, sizeof line, "%s patchify %s b%d c%d %dx%d p%d: adjoint <P x, t> = <x, U t>", be->name,
                 order ? "pqc" : "cpq", batch, c, h, w, p);
        kt_report(line, fabs(a - b) / fmax(fabs(a), 1.0), 1e-12);
        free(x), free(tok), free(back), free(t), free(ut);
    }
}

static void check_transformer(rmx_backend *be) {
    linear_check(be, 5, 7, 3);
    linear_check(be, 1, 6, 9); /* one row */
    linear_check(be, 13, 4, 17);
    layernorm_check(be, 4, 9, 0);
    layernorm_check(be, 3, 16, 5); /* an offset mean */
    gelu_check(be);
    modulate_check(be, 2, 5, 4);
    modulate_check(be, 1, 3, 7);
    attention_check(be, 2, 5, 8, 2);
    attention_check(be, 1, 7, 6, 3);
    attention_check(be, 1, 1, 4, 1); /* one token: out = v */
    attention_check(be, 1, 70, 4, 2); /* two query blocks of the cpu backend */
    embedding_check(be, 9, 5, 4);
    patch_check(be, 2, 3, 4, 6, 2);
    patch_check(be, 1, 2, 6, 3, 3);
}

/* ---- remix (stage 3) losses ---- */

/* Both are quadratic in their input, so central differences are exact for any step: a large one
 * (0.25) keeps the float rounding of the value small next to the difference. */
#define REMIX_FD_STEP 0.25f

typedef struct {
    int n, c, hw, h, w;
    float scale;
    float *f, *g, *r;
} remix_ctx;

/* L = sum g r: a random linear functional of the Gram matrices. */
static double gram_eval(void *vc) {
    remix_ctx *c = vc;
    ref->gram_fwd(ref, c->n, c->c, c->hw, c->scale, c->f, c->g);
    return proj(c->g, c->r, (size_t)c->n * c->c * c->c);
}

static void gram_check(rmx_backend *be, int n, int ch, int hw) {
    size_t nf = (size_t)n * ch * hw, ng = (size_t)n * ch * ch;
    remix_ctx c = {n, ch, hw, 0, 0, 1.0f / ((float)ch * (float)hw), kt_rand(nf, -1, 1), kt_alloc(ng),
                   kt_rand(ng, -1, 1)};
    double *g = dalloc(nf);
    fd_grad(gram_eval, &c, c.f, nf, REMIX_FD_STEP, g);
    float *df0 = kt_rand(nf, -1, 1), *df = kt_copy(df0, nf), *inc = kt_alloc(nf);
    be->gram_bwd(be, n, ch, hw, c.scale, c.f, c.r, df);
    for (size_t i = 0; i < nf; i++) inc[i] = df[i] - df0[i];
    char what[160], line[260];
    snprintf(what, sizeof what, "%s gram n%d c%d hw%d", be->name, n, ch, hw);
    snprintf(line, sizeof line, "%s df (+=) through sum g r", what);
    kt_report(line, kt_rel_err_d(inc, g, nf), 5e-4);

    /* the forward from its definition, in double: g written over garbage */
    float *gg = kt_rand(ng, 7, 8);
    be->gram_fwd(be, n, ch, hw, c.scale, c.f, gg);
    double *want = dalloc(ng);
    for (int b = 0; b < n; b++)
        for (int i = 0; i < ch; i++)
            for (int j = 0; j < ch; j++) {
                double acc = 0.0;
                for (int k = 0; k < hw; k++)
                    acc += (double)c.f[((size_t)b * ch + i) * hw + k] * c.f[((size_t)b * ch + j) * hw + k];
                want[((size_t)b * ch + i) * ch + j] = acc / ((double)ch * hw);
            }
    snprintf(line, sizeof line, "%s g = F F^T / (c hw) (written)", what);
    kt_report(line, kt_rel_err_d(gg, want, ng), 2e-5);

    /* a second call adds the same gradient again */
    float *df1 = kt_copy(df, nf);
    be->gram_bwd(be, n, ch, hw, c.scale, c.f, c.r, df);
    for (size_t i = 0; i < nf; i++) inc[i] = df[i] - df1[i], df1[i] -= df0[i];
    snprintf(line, sizeof line, "%s: 2 calls = 2x the increment of df", what);
    kt_report(line, kt_rel_err(inc, df1, nf), 1e-5);
    free(c.f), free(c.g), free(c.r), free(g), free(df0), free(df), free(inc), free(gg), free(want), free(df1);
}

/* The value straight from the spec, per sample, in double. */
static double tv_want(int n, int ch, int h, int w, const float *x) {
    double v = 0.0;
    for (int b = 0; b < n; b++) {
        double sh = 0.0, sw = 0.0;
        for (int k = 0; k < ch; k++)
            for (int i = 0; i < h; i++)
                for (int j = 0; j < w; j++) {
                    const float *p = x + (((size_t)b * ch + k) * h + i) * w + j;
                    if (i + 1 < h) sh += ((double)p[w] - p[0]) * ((double)p[w] - p[0]);
                    if (j + 1 < w) sw += ((double)p[1] - p[0]) * ((double)p[1] - p[0]);
                }
        if (h > 1) v += sh / ((double)ch * (h - 1) * w);
        if (w > 1) v += sw / ((double)ch * h * (w - 1));
    }
    return v;
}

static double tv_eval(void *vc) {
    remix_ctx *c = vc;
    float loss = 0.0f;
    ref->tv_loss(ref, c->n, c->c, c->h, c->w, c->f, c->scale, &loss, NULL);
    return loss;
}

static void tv_check(rmx_backend *be, int n, int ch, int h, int w) {
    size_t nx = (size_t)n * ch * h * w;
    remix_ctx c = {n, ch, 0, h, w, 0.7f, kt_rand(nx, -1, 1), NULL, NULL};
    double *g = dalloc(nx);
    fd_grad(tv_eval, &c, c.f, nx, REMIX_FD_STEP, g);
    float *dx0 = kt_rand(nx, -1, 1), *dx = kt_copy(dx0, nx), *inc = kt_alloc(nx), loss = 0.25f;
    be->tv_loss(be, n, ch, h, w, c.f, c.scale, &loss, dx);
    for (size_t i = 0; i < nx; i++) inc[i] = dx[i] - dx0[i];
    char what[160], line[260];
    snprintf(what, sizeof what, "%s tv_loss n%d c%d %dx%d", be->name, n, ch, h, w);
    snprintf(line, sizeof line, "%s dx (+=)", what);
    if (h > 1 || w > 1)
        kt_report(line, kt_rel_err_d(inc, g, nx), 5e-4);
    else
        kt_expect(all_equal(dx, dx0, nx), line); /* no differences at all: dx unchanged */
    double want = 0.25 + c.scale * tv_want(n, ch, h, w, c.f);
    snprintf(line, sizeof line, "%s value (added to the scalar) vs the spec's per-sample means", what);
    kt_report(line, fabs(loss - want) / fabs(want), 1e-6);

    float *dx1 = kt_copy(dx, nx), l2 = 0.25f;
    be->tv_loss(be, n, ch, h, w, c.f, c.scale, &l2, dx);
    for (size_t i = 0; i < nx; i++) inc[i] = dx[i] - dx1[i], dx1[i] -= dx0[i];
    snprintf(line, sizeof line, "%s: 2 calls = 2x the increment of dx", what);
    kt_report(line, kt_rel_err(inc, dx1, nx), 1e-5);
    float *dx2 = kt_copy(dx, nx), l3 = 0.25f;
    be->tv_loss(be, n, ch, h, w, c.f, c.scale, &l3, NULL);
    snprintf(line, sizeof line, "%s: NULL dx skipped, value still added", what);
    kt_expect(all_equal(dx2, dx, nx) && l3 == l2 && l2 == loss, line);
    free(c.f), free(g), free(dx0), free(dx), free(inc), free(dx1), free(dx2);
}

static void check_remix(rmx_backend *be) {
    gram_check(be, 2, 3, 7);
    gram_check(be, 1, 5, 40);
    gram_check(be, 2, 1, 9); /* one channel */
    tv_check(be, 2, 3, 7, 5);
    tv_check(be, 1, 2, 1, 9); /* h == 1: the time term alone */
    tv_check(be, 2, 1, 6, 1); /* w == 1: the frequency term alone */
    tv_check(be, 1, 1, 1, 1); /* neither: value 0 */
    tv_check(be, 1, 1, 2, 2);
}

static void check_backend(rmx_backend *be) {
    conv_check(be, 2, 3, 6, 5, 4, 3, 1, 1);  /* 3x3 stride 1 pad 1, odd width, cin != cout */
    conv_check(be, 2, 2, 8, 6, 3, 3, 2, 1);  /* 3x3 stride 2 pad 1, even sizes */
    conv_check(be, 1, 3, 7, 5, 2, 3, 2, 1);  /* stride 2 on odd sizes */
    conv_check(be, 2, 4, 5, 3, 6, 1, 1, 0);  /* 1x1 */
    conv_check(be, 1, 1, 6, 7, 3, 3, 1, 1);  /* one input channel */
    conv_check(be, 2, 3, 5, 6, 1, 3, 1, 1);  /* one output channel (direct path) */
    conv_check(be, 1, 2, 6, 6, 2, 3, 1, 0);  /* no padding */
    gn_check(be, 2, 8, 12, 4);
    gn_check(be, 1, 6, 10, 6);
    gn_check(be, 3, 4, 9, 1);
    silu_check(be);
    upsample_check(be, 2, 3, 3, 4);
    gaussian_check(be);
    kl_check(be);
    mse_check(be);
    check_transformer(be);
    check_remix(be);
}

int main(void) {
    ref = rmx_backend_ref_create();
    rmx_backend *cpu = rmx_backend_cpu_create(2);
    kt_seed(777);
    printf("backward ops vs central differences of the reference forward (errors relative to max |FD|)\n");
    check_backend(ref);
    check_backend(cpu);
    cpu->destroy(cpu);
    ref->destroy(ref);
    return kt_finish("kernels_gradcheck");
}
