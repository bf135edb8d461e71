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
 * sampler, 3e-3 for SiLU (differenced with a smaller step, 1e-3, to keep curvature out). */
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
