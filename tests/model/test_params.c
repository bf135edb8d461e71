/* The parameter registry: the bench size's count, PyTorch names and shapes, the decayed-first
 * layout, lookup, and a deterministic, seed-keyed initialisation. */
#include "model_test.h"

static void check_shape(const rmx_params *p, const char *name, int ndim, int64_t a, int64_t b,
                        int64_t c, int64_t d) {
    int id = rmx_params_find(p, name);
    CHECK(id >= 0, "%s not registered", name);
    if (id < 0) return;
    const rmx_param_info *t = rmx_params_get(p, id);
    int64_t want[4] = {a, b, c, d};
    CHECK(t->ndim == ndim, "%s: ndim %d, want %d", name, t->ndim, ndim);
    for (int i = 0; i < ndim && i < t->ndim; i++)
        CHECK(t->shape[i] == want[i], "%s: dim %d is %lld, want %lld", name, i,
              (long long)t->shape[i], (long long)want[i]);
    CHECK(t->decay == (p->trained && ndim >= 2), "%s: decay flag %d", name, t->decay);
}

static void check_layout(const rmx_params *p) {
    size_t total = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        total += t->numel;
        CHECK(t->offset % RMX_PARAM_ALIGN == 0, "%s: offset %zu not aligned", t->name, t->offset);
        CHECK(t->offset + t->numel <= p->span, "%s runs past the buffer", t->name);
        if (t->decay)
            CHECK(t->offset + t->numel <= p->n_decay, "%s: decayed tensor after n_decay", t->name);
        else
            CHECK(t->offset >= p->n_decay, "%s: undecayed tensor before n_decay", t->name);
        for (int j = 0; j < i; j++) {
            const rmx_param_info *u = rmx_params_get(p, j);
            int disjoint = t->offset + t->numel <= u->offset || u->offset + u->numel <= t->offset;
            CHECK(disjoint, "%s overlaps %s", t->name, u->name);
        }
    }
    CHECK(total == p->numel, "numel %zu but tensors sum to %zu", p->numel, total);
}

static void test_bench_size(rmx_backend *be) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    hp.micro_batch = 1; /* the count does not depend on it; keeps the arena small */
    rmx_ae *ae = create_or_die(be, &hp, 1);
    rmx_params *p = rmx_ae_params(ae);
    CHECK(p->numel == 1602289, "bench size has %zu parameters, the brief says 1,602,289", p->numel);
    CHECK(rmx_ae_state(ae)->count == 0, "kl has no state tensors");

    check_shape(p, "enc.conv_in.weight", 4, 32, 1, 3, 3);
    check_shape(p, "enc.conv_in.bias", 1, 32, 0, 0, 0);
    check_shape(p, "enc.down.0.res.0.norm1.weight", 1, 32, 0, 0, 0);
    check_shape(p, "enc.down.0.res.0.conv1.weight", 4, 32, 32, 3, 3);
    check_shape(p, "enc.down.1.res.0.conv1.weight", 4, 64, 32, 3, 3);
    check_shape(p, "enc.down.1.res.0.skip.weight", 4, 64, 32, 1, 1);
    check_shape(p, "enc.down.0.downsample.weight", 4, 32, 32, 3, 3);
    check_shape(p, "enc.down.1.downsample.weight", 4, 64, 64, 3, 3);
    check_shape(p, "enc.mid.res.norm1.weight", 1, 128, 0, 0, 0);
    check_shape(p, "enc.norm_out.bias", 1, 128, 0, 0, 0);
    check_shape(p, "enc.conv_out.weight", 4, 16, 128, 3, 3);
    check_shape(p, "dec.conv_in.weight", 4, 128, 8, 3, 3);
    check_shape(p, "dec.mid.res.conv2.weight", 4, 128, 128, 3, 3);
    check_shape(p, "dec.up.2.res.0.conv1.weight", 4, 128, 128, 3, 3);
    check_shape(p, "dec.up.2.upsample.weight", 4, 128, 128, 3, 3);
    check_shape(p, "dec.up.1.res.0.skip.weight", 4, 64, 128, 1, 1);
    check_shape(p, "dec.up.0.res.0.norm1.weight", 1, 64, 0, 0, 0);
    check_shape(p, "dec.norm_out.weight", 1, 32, 0, 0, 0);
    check_shape(p, "dec.conv_out.weight", 4, 1, 32, 3, 3);
    check_shape(p, "dec.conv_out.bias", 1, 1, 0, 0, 0);
    const char *absent[] = {"enc.down.0.res.0.skip.weight", "enc.down.2.downsample.weight",
                            "dec.up.0.upsample.weight", "dec.up.2.res.0.skip.weight",
                            "vq.codebook", "enc.quant_conv.weight"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
        CHECK(rmx_params_find(p, absent[i]) < 0, "%s should not exist", absent[i]);
    CHECK(strcmp(rmx_params_get(p, 0)->name, "enc.conv_in.weight") == 0,
          "iteration starts with the encoder's first conv, got %s", rmx_params_get(p, 0)->name);
    CHECK(strcmp(rmx_params_get(p, p->count - 1)->name, "dec.conv_out.bias") == 0,
          "iteration ends with the decoder's last bias, got %s",
          rmx_params_get(p, p->count - 1)->name);
    char desc[128];
    rmx_params_describe(p, rmx_params_find(p, "enc.down.1.res.0.skip.weight"), desc, sizeof desc);
    CHECK(strcmp(desc, "enc.down.1.res.0.skip.weight [64, 32, 1, 1]") == 0, "describe: %s", desc);
    check_layout(p);
    rmx_ae_free(ae);

    /* vq: conv_out emits latent (not 2 latent) channels, and the codebook is state, not trained. */
    hp.bottleneck = RMX_AE_VQ;
    ae = create_or_die(be, &hp, 1);
    p = rmx_ae_params(ae);
    CHECK(p->numel == 1602289 - (9216 + 8), "vq bench size has %zu parameters", p->numel);
    CHECK(rmx_params_find(p, "vq.codebook") < 0, "the codebook must not be in AdamW's buffer");
    rmx_params *s = rmx_ae_state(ae);
    check_shape(s, "vq.codebook", 2, 512, 8, 0, 0);
    check_shape(s, "vq.ema_sum", 2, 512, 8, 0, 0);
    CHECK(s->grad == NULL && s->m == NULL && s->v == NULL, "state has no optimizer buffers");
    for (int i = 0; i < s->count; i++) CHECK(!rmx_params_get(s, i)->decay, "state never decays");
    rmx_ae_free(ae);
}

static void test_init(rmx_backend *be) {
    rmx_ae_hparams hp = tiny_hparams(RMX_AE_VQ, 2);
    rmx_ae *a = create_or_die(be, &hp, 42), *b = create_or_die(be, &hp, 42),
           *c = create_or_die(be, &hp, 43);
    rmx_params *pa = rmx_ae_params(a);
    size_t span = pa->span;
    float *ha = host_copy(be, pa->data, span), *hb = host_copy(be, rmx_ae_params(b)->data, span),
          *hc = host_copy(be, rmx_ae_params(c)->data, span);
    CHECK(memcmp(ha, hb, span * sizeof *ha) == 0, "same seed, different parameters");
    CHECK(memcmp(ha, hc, span * sizeof *ha) != 0, "different seeds, same parameters");

    /* Each tensor follows PyTorch's default: conv U(-1/sqrt(fan_in), ..), GroupNorm 1 and 0;
     * and element e of tensor i is the stream (seed, INIT, 0, i, e). */
    for (int i = 0; i < pa->count; i++) {
        const rmx_param_info *t = rmx_params_get(pa, i);
        const float *v = ha + t->offset;
        int is_norm = strstr(t->name, "norm") != NULL;
        if (is_norm) {
            float want = strstr(t->name, ".weight") ? 1.0f : 0.0f;
            for (size_t e = 0; e < t->numel; e++)
                CHECK(v[e] == want, "%s[%zu] = %g, want %g", t->name, e, v[e], want);
            continue;
        }
        /* conv: fan_in from the weight's shape (the bias shares its conv's bound) */
        const rmx_param_info *w = t->ndim == 4 ? t : rmx_params_get(pa, i - 1);
        double bound = 1.0 / sqrt((double)(w->shape[1] * w->shape[2] * w->shape[3]));
        double lo = 0, hi = 0;
        for (size_t e = 0; e < t->numel; e++) {
            CHECK(fabs(v[e]) <= bound * (1 + 1e-6), "%s[%zu] = %g outside +-%g", t->name, e, v[e],
                  bound);
            if (v[e] < lo) lo = v[e];
            if (v[e] > hi) hi = v[e];
        }
        if (t->numel >= 16) CHECK(lo < -bound / 4 && hi > bound / 4, "%s barely spread", t->name);
        float first = (float)bound * (2.0f * rmx_u01(rmx_u32(42, RMX_RNG_INIT, 0, (uint64_t)i, 0)) - 1.0f);
        CHECK(fabsf(v[0] - first) <= 1e-6f * fabsf(first) + 1e-9f, "%s[0] is not the init stream",
              t->name);
    }

    /* The vq state: ema_sum starts equal to the codebook, ema_count at 1. */
    rmx_params *s = rmx_ae_state(a);
    size_t table = 8 * 2;
    float *cb = host_copy(be, rmx_params_data(s, rmx_params_find(s, "vq.codebook")), table);
    float *sum = host_copy(be, rmx_params_data(s, rmx_params_find(s, "vq.ema_sum")), table);
    float *cnt = host_copy(be, rmx_params_data(s, rmx_params_find(s, "vq.ema_count")), 8);
    CHECK(memcmp(cb, sum, table * sizeof *cb) == 0, "ema_sum must start as the codebook");
    for (int k = 0; k < 8; k++) CHECK(cnt[k] == 1.0f, "ema_count[%d] = %g", k, cnt[k]);
    CHECK(max_abs(cb, table) <= 1.0 / 8 && max_abs(cb, table) > 0, "codebook init U(-1/K, 1/K)");
    free(cb);
    free(sum);
    free(cnt);

    /* Re-initialising restores the same values. */
    be->fill(be, pa->data, 0.5f, span);
    rmx_ae_init_params(a, 42);
    float *again = host_copy(be, pa->data, span);
    CHECK(memcmp(ha, again, span * sizeof *ha) == 0, "rmx_ae_init_params is not repeatable");
    free(again);
    free(ha);
    free(hb);
    free(hc);
    rmx_ae_free(a);
    rmx_ae_free(b);
    rmx_ae_free(c);
}

static void test_registry_alone(rmx_backend *be) {
    rmx_params p;
    rmx_params_init(&p, be, 1, 0);
    int64_t bias[1] = {3}, mat[2] = {5, 7};
    int b = rmx_params_add(&p, "a.bias", 1, bias, RMX_INIT_CONST, 0.25f);
    int w = rmx_params_add(&p, "a.weight", 2, mat, RMX_INIT_UNIFORM, 0.1f);
    rmx_params_finalize(&p);
    CHECK(rmx_params_get(&p, w)->offset == 0, "decayed tensor first, got offset %zu",
          rmx_params_get(&p, w)->offset);
    CHECK(rmx_params_get(&p, b)->offset == p.n_decay, "bias right after the decayed block");
    CHECK(p.n_decay >= 35 && p.numel == 38, "n_decay %zu numel %zu", p.n_decay, p.numel);
    CHECK(rmx_params_find(&p, "a.weight") == w && rmx_params_find(&p, "nope") == -1, "lookup");
    rmx_params_initialize(&p, 9);
    CHECK(host_get(be, rmx_params_data(&p, b) + 2) == 0.25f, "const init");
    CHECK(rmx_params_grad(&p, b) == p.grad + p.n_decay, "grad pointer mirrors the data offset");
    rmx_params_free(&p);
}

int main(void) {
    rmx_backend *be = rmx_backend_ref_create();
    test_registry_alone(be);
    test_bench_size(be);
    test_init(be);
    be->destroy(be);
    return test_finish("model_params");
}
