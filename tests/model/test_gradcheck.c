/* The whole autoencoder's backward against central finite differences, on the tiny size with the
 * reference backend and fixed noise (same seed, step and sample indices in every evaluation).
 *
 *   kl: d total / d parameter for a sample of every tensor's elements, and d total / d input.
 *   vq: the loss is piecewise constant in the assignments and the encoder gradient is the
 *       straight-through estimate, so each part is checked against what it should equal:
 *       decoder parameters against finite differences of the total (they cannot change an
 *       assignment); the decoder's input gradient (d rec / d z_q) against finite differences;
 *       encoder parameters and the input against <G, d z_e / d theta> with G = d rec / d z_q +
 *       commitment * 2 scale (z_e - z_q), the straight-through gradient at z_e, d z_e / d theta
 *       by finite differences of the encoder alone. */
#include "model_test.h"

#define N 2

typedef struct {
    rmx_backend *be;
    rmx_ae *ae;
    rmx_ae_hparams hp;
    size_t in_count;
    float *x_host, *x, *dx, *terms;
    int64_t sample_index[N];
    uint64_t seed;
    int64_t step;
    float scale;
    int checked, failed;
} fixture;

static void fixture_init(fixture *f, rmx_ae_bottleneck bottleneck) {
    memset(f, 0, sizeof *f);
    f->be = rmx_backend_ref_create();
    f->hp = tiny_hparams(bottleneck, N);
    f->ae = create_or_die(f->be, &f->hp, 1234);
    f->in_count = (size_t)N * f->hp.mels * f->hp.frames;
    f->x_host = malloc(f->in_count * sizeof *f->x_host);
    fill_uniform(f->x_host, f->in_count, 77);
    f->x = backend_input(f->be, f->x_host, f->in_count);
    f->dx = f->be->alloc(f->be, f->in_count * sizeof(float));
    f->terms = f->be->alloc(f->be, RMX_AE_N_LOSS * sizeof(float));
    f->sample_index[0] = 17;
    f->sample_index[1] = 5;
    f->seed = 99;
    f->step = 3;
    f->scale = 1.0f / N;
}

static void fixture_free(fixture *f) {
    rmx_backend *be = f->be;
    be->free(be, f->x);
    be->free(be, f->dx);
    be->free(be, f->terms);
    free(f->x_host);
    rmx_ae_free(f->ae);
    be->destroy(be);
}

/* The total loss of one training micro-step (gradients accumulate and are ignored). */
static double total_loss(fixture *f) {
    float t[RMX_AE_N_LOSS];
    f->be->fill(f->be, f->terms, 0.0f, RMX_AE_N_LOSS);
    rmx_ae_forward_backward(f->ae, N, f->x, NULL, f->sample_index, f->seed, f->step, f->scale,
                            f->terms);
    f->be->to_host(f->be, t, f->terms, sizeof t);
    return rmx_ae_total_loss(&f->hp, t);
}

static void compare(fixture *f, const char *what, size_t e, double analytic, double numeric,
                    double atol) {
    double err = fabs(analytic - numeric);
    double tol = 2e-2 * fmax(fabs(analytic), fabs(numeric)) + atol;
    f->checked++;
    if (err > tol) {
        f->failed++;
        fprintf(stderr, "  %s[%zu]: analytic %.6g, numeric %.6g\n", what, e, analytic, numeric);
    }
}

/* Central difference of g at *p (backend memory), restoring the value exactly. */
static double central_difference(fixture *f, float *p, double h, double (*g)(fixture *, void *),
                                 void *arg) {
    float orig = host_get(f->be, p);
    backend_set(f->be, p, orig + (float)h);
    double up = g(f, arg);
    backend_set(f->be, p, orig - (float)h);
    double down = g(f, arg);
    backend_set(f->be, p, orig);
    return (up - down) / (2.0 * h);
}

static double total_loss_cb(fixture *f, void *arg) {
    (void)arg;
    return total_loss(f);
}

/* A few elements of tensor t: the first, the middle, the last. */
static int sample_elements(const rmx_param_info *t, size_t out[3]) {
    size_t cand[3] = {0, t->numel / 2, t->numel - 1};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j] == cand[i];
        if (!dup) out[n++] = cand[i];
    }
    return n;
}

static void report(fixture *f, const char *part) {
    printf("%s: %d checked, %d outside tolerance\n", part, f->checked, f->failed);
    CHECK(f->checked > 0, "%s: nothing checked", part);
    CHECK(f->failed == 0, "%s: %d gradients disagree with finite differences", part, f->failed);
    f->checked = f->failed = 0;
}

/* ---- kl ---- */

static void test_kl(void) {
    fixture f;
    fixture_init(&f, RMX_AE_KL);
    rmx_backend *be = f.be;
    rmx_params *p = rmx_ae_params(f.ae);
    rmx_ae_step_begin(f.ae);
    be->fill(be, f.terms, 0.0f, RMX_AE_N_LOSS);
    rmx_ae_forward_backward(f.ae, N, f.x, f.dx, f.sample_index, f.seed, f.step, f.scale, f.terms);
    float *grad = host_copy(be, p->grad, p->span), *dx = host_copy(be, f.dx, f.in_count);
    float t[RMX_AE_N_LOSS];
    be->to_host(be, t, f.terms, sizeof t);
    CHECK(t[RMX_AE_LOSS_REC] > 0 && t[RMX_AE_LOSS_KL] > 0 && t[RMX_AE_LOSS_COMMIT] == 0,
          "loss terms %g %g %g", t[0], t[1], t[2]);
    double atol = 1e-3 * fmax(max_abs(grad, p->span), 1e-3);

    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *info = rmx_params_get(p, i);
        size_t el[3];
        int ne = sample_elements(info, el);
        for (int k = 0; k < ne; k++) {
            float *ptr = rmx_params_data(p, i) + el[k];
            double num = central_difference(&f, ptr, 1e-2, total_loss_cb, NULL);
            compare(&f, info->name, el[k], grad[info->offset + el[k]], num, atol);
        }
    }
    report(&f, "kl parameters");
    for (size_t j = 0; j < f.in_count; j += 7) {
        double num = central_difference(&f, f.x + j, 1e-2, total_loss_cb, NULL);
        compare(&f, "input", j, dx[j], num, 1e-3 * fmax(max_abs(dx, f.in_count), 1e-3));
    }
    report(&f, "kl input");

    /* The same noise every time: the loss is a pure function of (seed, step, sample). */
    double a = total_loss(&f), b = total_loss(&f);
    CHECK(a == b, "repeated loss differs: %.9g %.9g", a, b);
    f.seed++;
    CHECK(total_loss(&f) != a, "another seed should draw other noise");
    free(grad);
    free(dx);
    fixture_free(&f);
}

/* ---- vq ---- */

typedef struct {
    size_t latent; /* floats in z */
    float *ze;     /* host z_e at the unperturbed point */
    float *G;      /* host straight-through gradient at z_e */
    float *ze_up;  /* scratch */
} vq_ref;

static void encoder_output(fixture *f, float *host_out, size_t count) {
    const float *ze = rmx_ae_encoder_forward(f->ae, N, f->x);
    f->be->to_host(f->be, host_out, ze, count * sizeof(float));
}

/* <G, z_e> at the current point: its central difference is <G, d z_e / d theta>. */
static double projected_encoder_output(fixture *f, void *arg) {
    vq_ref *r = arg;
    encoder_output(f, r->ze_up, r->latent);
    double s = 0.0;
    for (size_t j = 0; j < r->latent; j++) s += (double)r->G[j] * r->ze_up[j];
    return s;
}

typedef struct {
    float *zq;      /* backend copy of z_q, perturbed in place */
    float *xhat;    /* host scratch */
} decode_arg;

static double reconstruction_loss(fixture *f, void *arg) {
    decode_arg *d = arg;
    const float *xhat = rmx_ae_decode(f->ae, N, d->zq);
    f->be->to_host(f->be, d->xhat, xhat, f->in_count * sizeof(float));
    double s = 0.0;
    for (size_t j = 0; j < f->in_count; j++) {
        double r = (double)d->xhat[j] - f->x_host[j];
        s += r * r;
    }
    return f->scale * s;
}

static void test_vq(void) {
    fixture f;
    fixture_init(&f, RMX_AE_VQ);
    rmx_backend *be = f.be;
    rmx_ae *ae = f.ae;
    rmx_params *p = rmx_ae_params(ae);
    int lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    vq_ref r = {(size_t)N * lc * lh * lw, NULL, NULL, NULL};
    /* Spread the codes over the encoder's range so several are in use. */
    {
        rmx_params *s = rmx_ae_state(ae);
        float cb[8 * 2];
        fill_uniform(cb, 16, 5);
        for (int i = 0; i < 16; i++) cb[i] *= 0.4f;
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.codebook")), cb, sizeof cb);
    }

    rmx_ae_step_begin(ae);
    be->fill(be, f.terms, 0.0f, RMX_AE_N_LOSS);
    rmx_ae_forward_backward(ae, N, f.x, f.dx, f.sample_index, f.seed, f.step, f.scale, f.terms);
    float *grad = host_copy(be, p->grad, p->span), *dx = host_copy(be, f.dx, f.in_count);
    float t[RMX_AE_N_LOSS];
    be->to_host(be, t, f.terms, sizeof t);
    int32_t *codes = host_copy_ints(be, rmx_ae_vq_codes(ae), r.latent / lc);
    int distinct = 0, seen[8] = {0};
    for (size_t j = 0; j < r.latent / lc; j++) {
        int c = codes[j];
        distinct += !seen[c];
        seen[c] = 1;
    }
    printf("vq: %d distinct codes in use\n", distinct);

    /* The straight-through gradient at z_e, built from the public pieces. */
    r.ze = malloc(r.latent * sizeof(float));
    r.ze_up = malloc(r.latent * sizeof(float));
    r.G = malloc(r.latent * sizeof(float));
    encoder_output(&f, r.ze, r.latent);
    float *zq_dev = be->alloc(be, r.latent * sizeof(float));
    be->copy(be, zq_dev, rmx_ae_encode(ae, N, f.x), r.latent * sizeof(float));
    float *zq = host_copy(be, zq_dev, r.latent);
    double commit = 0.0;
    for (size_t j = 0; j < r.latent; j++) commit += (double)(r.ze[j] - zq[j]) * (r.ze[j] - zq[j]);
    commit *= f.scale;
    CHECK(fabs(commit - t[RMX_AE_LOSS_COMMIT]) <= 1e-4 * commit + 1e-7,
          "commitment loss %g, host says %g", t[RMX_AE_LOSS_COMMIT], commit);
    CHECK(t[RMX_AE_LOSS_KL] == 0.0f, "vq reports no KL");

    float *xhat = host_copy(be, rmx_ae_decode(ae, N, zq_dev), f.in_count);
    float *dxhat_host = malloc(f.in_count * sizeof(float));
    double rec = 0.0;
    for (size_t j = 0; j < f.in_count; j++) {
        dxhat_host[j] = 2.0f * f.scale * (xhat[j] - f.x_host[j]);
        rec += (double)(xhat[j] - f.x_host[j]) * (xhat[j] - f.x_host[j]);
    }
    rec *= f.scale;
    CHECK(fabs(rec - t[RMX_AE_LOSS_REC]) <= 1e-4 * rec, "rec loss %g, host says %g",
          t[RMX_AE_LOSS_REC], rec);
    float *dxhat = backend_input(be, dxhat_host, f.in_count);
    float *dzq_dev = be->alloc(be, r.latent * sizeof(float));
    rmx_ae_set_frozen(ae, 1); /* the input gradient only; the flat gradients are already read */
    rmx_ae_decode_backward(ae, N, dxhat, dzq_dev);
    rmx_ae_set_frozen(ae, 0);
    float *dzq = host_copy(be, dzq_dev, r.latent);
    for (size_t j = 0; j < r.latent; j++)
        r.G[j] = dzq[j] + f.hp.commitment * 2.0f * f.scale * (r.ze[j] - zq[j]);

    /* The decoder's input gradient against finite differences of the reconstruction loss. */
    decode_arg d = {zq_dev, malloc(f.in_count * sizeof(float))};
    for (size_t j = 0; j < r.latent; j++) {
        double num = central_difference(&f, zq_dev + j, 1e-2, reconstruction_loss, &d);
        compare(&f, "d rec / d z_q", j, dzq[j], num, 1e-3 * fmax(max_abs(dzq, r.latent), 1e-3));
    }
    report(&f, "vq decoder input");

    double atol = 1e-3 * fmax(max_abs(grad, p->span), 1e-3);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *info = rmx_params_get(p, i);
        int encoder = strncmp(info->name, "enc.", 4) == 0;
        size_t el[3];
        int ne = sample_elements(info, el);
        for (int k = 0; k < ne; k++) {
            float *ptr = rmx_params_data(p, i) + el[k];
            double num = encoder ? central_difference(&f, ptr, 1e-2, projected_encoder_output, &r)
                                 : central_difference(&f, ptr, 1e-2, total_loss_cb, NULL);
            compare(&f, info->name, el[k], grad[info->offset + el[k]], num, atol);
        }
    }
    report(&f, "vq parameters (encoder straight-through, decoder exact)");

    for (size_t j = 0; j < f.in_count; j += 7) {
        double num = central_difference(&f, f.x + j, 1e-2, projected_encoder_output, &r);
        compare(&f, "input", j, dx[j], num - dxhat_host[j],
                1e-3 * fmax(max_abs(dx, f.in_count), 1e-3));
    }
    report(&f, "vq input (straight-through)");

    /* The unperturbed point still gives the same assignments (perturbations were restored). */
    rmx_ae_encode(ae, N, f.x);
    int32_t *codes_after = host_copy_ints(be, rmx_ae_vq_codes(ae), r.latent / lc);
    CHECK(memcmp(codes, codes_after, r.latent / lc * sizeof(int32_t)) == 0, "assignments moved");

    free(codes_after);
    free(codes);
    free(d.xhat);
    free(dzq);
    be->free(be, dzq_dev);
    be->free(be, dxhat);
    free(dxhat_host);
    free(xhat);
    free(zq);
    be->free(be, zq_dev);
    free(r.ze);
    free(r.ze_up);
    free(r.G);
    free(grad);
    free(dx);
    fixture_free(&f);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "kl";
    if (strcmp(which, "kl") == 0) {
        test_kl();
        return test_finish("model_gradcheck_kl");
    }
    test_vq();
    return test_finish("model_gradcheck_vq");
}
