/* Stage 3's loss (model/remix_loss.h): its gradient with respect to the transformer's output
 * eps_hat, through x0_hat, the frozen decoder, the encoder's feature layers, the Gram matrices and
 * the total variation, against central finite differences of the weighted total, on the tiny
 * autoencoder; each term alone and all together. Also: the frozen autoencoder's weight gradients
 * stay untouched, the terms are reported unweighted, and layer names are checked. */
#include "model/remix_loss.h"

#include "model_test.h"

enum { N = 2 };

typedef struct {
    rmx_backend *be;
    rmx_ae *ae;
    rmx_remix_loss *loss;
    float *z_t, *eps_hat, *deps, *terms;
    float a[N], b[N], latent_scale, weight[RMX_REMIX_N_TERMS];
    size_t per;
} fixture;

static void fill_random(rmx_backend *be, float *dst, size_t n, uint64_t stream, float lo, float hi) {
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * rmx_u01(rmx_u32(99, RMX_RNG_DEMO, stream, i, 0));
    be->to_backend(be, dst, h, n * sizeof *h);
    free(h);
}

static double total(fixture *f) {
    float t[RMX_REMIX_N_TERMS];
    f->be->fill(f->be, f->terms, 0.0f, RMX_REMIX_N_TERMS);
    rmx_remix_loss_eps(f->loss, N, f->z_t, f->eps_hat, f->a, f->b, f->latent_scale, 0.5f, f->terms, f->deps);
    f->be->to_host(f->be, t, f->terms, sizeof t);
    double sum = 0;
    for (int k = 0; k < RMX_REMIX_N_TERMS; k++) sum += (double)f->weight[k] * t[k];
    return sum;
}

static void check_case(rmx_backend *be, rmx_ae *ae, const char *name, float wc, float ws, float wtv) {
    char err[512];
    rmx_remix_loss_config c = {.content_weight = wc, .style_weight = ws, .tv_weight = wtv};
    CHECK(rmx_remix_parse_layers(ae, "enc.down.1.res.0", c.content, &c.n_content, err, sizeof err) == 0, "%s", err);
    CHECK(rmx_remix_parse_layers(ae, " enc.conv_in,enc.down.0.res.0 , enc.down.0.downsample", c.style, &c.n_style,
                                 err, sizeof err) == 0,
          "%s", err);
    CHECK(c.n_style == 3, "three style layers parsed, got %d", c.n_style);
    fixture f = {.be = be, .ae = ae, .latent_scale = 1.7f, .a = {0.8f, 0.5f}, .b = {0.6f, 0.866f}};
    f.weight[RMX_REMIX_CONTENT] = wc;
    f.weight[RMX_REMIX_STYLE] = ws;
    f.weight[RMX_REMIX_TV] = wtv;
    f.loss = rmx_remix_loss_create(ae, &c, N);
    int lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    f.per = (size_t)lc * lh * lw;
    const rmx_ae_hparams *hp = rmx_ae_hparams_of(ae);
    size_t mel = (size_t)N * hp->mels * hp->frames;
    float *x = be->alloc(be, mel * sizeof(float)), *xs = be->alloc(be, mel * sizeof(float));
    fill_random(be, x, mel, 1, -1, 1);
    fill_random(be, xs, mel, 2, -2, 2);
    rmx_remix_loss_targets(f.loss, N, x, xs, 1.0f, NULL, NULL);
    f.z_t = be->alloc(be, N * f.per * sizeof(float));
    f.eps_hat = be->alloc(be, N * f.per * sizeof(float));
    f.deps = be->alloc(be, N * f.per * sizeof(float));
    f.terms = be->alloc(be, RMX_REMIX_N_TERMS * sizeof(float));
    fill_random(be, f.z_t, N * f.per, 3, -1, 1);
    fill_random(be, f.eps_hat, N * f.per, 4, -1, 1);

    double base = total(&f);
    float *analytic = host_copy(be, f.deps, N * f.per);
    int checked = 0, failed = 0;
    const double h = 1e-2;
    for (size_t e = 0; e < N * f.per; e++) {
        float orig = host_get(be, f.eps_hat + e);
        backend_set(be, f.eps_hat + e, orig + (float)h);
        double up = total(&f);
        backend_set(be, f.eps_hat + e, orig - (float)h);
        double down = total(&f);
        backend_set(be, f.eps_hat + e, orig);
        double num = (up - down) / (2 * h), an = analytic[e];
        double tol = 3e-2 * fmax(fabs(an), fabs(num)) + 1e-4 * fabs(base) + 1e-6;
        checked++;
        if (fabs(an - num) > tol) {
            failed++;
            if (failed <= 5) fprintf(stderr, "  %s: d/d eps_hat[%zu] analytic %.6g numeric %.6g\n", name, e, an, num);
        }
    }
    printf("%s: total %.6g, %d gradients checked, %d outside tolerance\n", name, base, checked, failed);
    CHECK(base > 0, "%s: the loss is positive", name);
    CHECK(failed == 0, "%s: %d of %d gradients disagree with finite differences", name, failed, checked);
    free(analytic);
    be->free(be, x);
    be->free(be, xs);
    be->free(be, f.z_t);
    be->free(be, f.eps_hat);
    be->free(be, f.deps);
    be->free(be, f.terms);
    rmx_remix_loss_free(f.loss);
}

/* The terms are reported unweighted: the weights only scale the gradient. */
static void check_unweighted(rmx_backend *be, rmx_ae *ae) {
    char err[512];
    float got[2][RMX_REMIX_N_TERMS];
    const rmx_ae_hparams *hp = rmx_ae_hparams_of(ae);
    size_t mel = (size_t)N * hp->mels * hp->frames;
    float *x = be->alloc(be, mel * sizeof(float)), *xs = be->alloc(be, mel * sizeof(float));
    float *xhat = be->alloc(be, mel * sizeof(float)), *dx = be->alloc(be, mel * sizeof(float));
    float *terms = be->alloc(be, RMX_REMIX_N_TERMS * sizeof(float));
    fill_random(be, x, mel, 5, -1, 1);
    fill_random(be, xs, mel, 6, -1, 1);
    fill_random(be, xhat, mel, 7, -1, 1);
    for (int v = 0; v < 2; v++) {
        rmx_remix_loss_config c = {.content_weight = v ? 10.0f : 1.0f, .style_weight = v ? 0.1f : 1.0f,
                                   .tv_weight = v ? 7.0f : 1.0f};
        rmx_remix_parse_layers(ae, "enc.mid.res", c.content, &c.n_content, err, sizeof err);
        rmx_remix_parse_layers(ae, "enc.conv_in", c.style, &c.n_style, err, sizeof err);
        rmx_remix_loss *l = rmx_remix_loss_create(ae, &c, N);
        rmx_remix_loss_targets(l, N, x, xs, 1.0f, NULL, NULL);
        be->fill(be, terms, 0.0f, RMX_REMIX_N_TERMS);
        rmx_remix_loss_mel(l, N, xhat, 1.0f, terms, dx);
        be->to_host(be, got[v], terms, sizeof got[v]);
        rmx_remix_loss_free(l);
    }
    for (int k = 0; k < RMX_REMIX_N_TERMS; k++)
        CHECK(got[0][k] == got[1][k] && got[0][k] > 0, "term %d: %g with weights 1, %g with others", k, got[0][k],
              got[1][k]);
    float *bufs[] = {x, xs, xhat, dx, terms};
    for (int i = 0; i < 5; i++) be->free(be, bufs[i]);
}

static void check_layer_names(rmx_ae *ae) {
    char err[512];
    int ids[RMX_REMIX_MAX_LAYERS], n;
    CHECK(rmx_remix_parse_layers(ae, "enc.down.7.res.0", ids, &n, err, sizeof err) != 0, "an unknown layer");
    CHECK(strstr(err, "unknown encoder layer 'enc.down.7.res.0'") && strstr(err, "enc.mid.res"),
          "the message names the layer and the valid ones: %s", err);
    CHECK(rmx_remix_parse_layers(ae, " , ", ids, &n, err, sizeof err) != 0, "an empty list");
    CHECK(rmx_ae_feature_count(ae) == 5, "tiny encoder steps: conv_in, 2 ResBlocks, downsample, mid; got %d",
          rmx_ae_feature_count(ae));
    int c, h, w;
    rmx_ae_feature_shape(ae, rmx_ae_feature_index(ae, "enc.down.0.downsample"), &c, &h, &w);
    CHECK(c == 4 && h == 4 && w == 4, "downsample output 4 x 4 x 4, got %d x %d x %d", c, h, w);
}

int main(void) {
    rmx_backend *be = rmx_backend_ref_create();
    rmx_ae_hparams hp = tiny_hparams(RMX_AE_KL, N);
    rmx_ae *ae = create_or_die(be, &hp, 7);
    rmx_ae_set_frozen(ae, 1);
    rmx_params *p = rmx_ae_params(ae);
    be->fill(be, p->grad, 0.0f, p->span);
    check_layer_names(ae);
    check_case(be, ae, "content", 1, 0, 0);
    check_case(be, ae, "style", 0, 1, 0);
    check_case(be, ae, "tv", 0, 0, 1);
    check_case(be, ae, "all", 1, 30, 0.5f);
    check_unweighted(be, ae);
    float *g = host_copy(be, p->grad, p->span);
    size_t nonzero = 0;
    for (size_t i = 0; i < p->span; i++) nonzero += g[i] != 0.0f;
    CHECK(nonzero == 0, "the frozen autoencoder's weight gradients stay 0, %zu are not", nonzero);
    free(g);
    rmx_ae_free(ae);
    be->destroy(be);
    return test_finish("model_remix_loss");
}
