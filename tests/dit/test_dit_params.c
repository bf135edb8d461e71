/* The DiT's registries: names, shapes and order (DiT's state_dict), the bench size's parameter
 * count from the formula, DiT's initialisation (zeros, xavier bounds, N(0, 0.02)), the fixed 2-D
 * positions of a non-square grid against an independent formula, adaLN-Zero's exact zero output,
 * configuration errors, the FLOP count; and the registry's normal init and EMA buffer. With style
 * tokens (hparams.style = 1): the four style tensors after the stage-2 ones (names, shapes,
 * decay side), the stage-2 tensors' initial values unchanged, the style init, copying
 * x_embedder into style_embedder (values and EMA), the 2N-token arena, the FLOP count, a fresh
 * model's exact zero output, and the style error message. */
#include "dit_test.h"

/* ---- the registry alone: RMX_INIT_NORMAL and the EMA buffer ---- */

static void test_registry_normal_and_ema(rmx_backend *be) {
    rmx_params p;
    rmx_params_init(&p, be, 1, 5);
    int64_t mat[2] = {100, 100}, vec[1] = {7};
    int w = rmx_params_add(&p, "w", 2, mat, RMX_INIT_NORMAL, 0.02f);
    int b = rmx_params_add(&p, "b", 1, vec, RMX_INIT_CONST, 0.5f);
    rmx_params_finalize(&p);
    CHECK(p.ema == NULL && rmx_params_ema(&p, w) == NULL, "no EMA buffer before it is asked for");
    rmx_params_initialize(&p, 11);
    float *v = host_copy(be, rmx_params_data(&p, w), 10000);
    double sum = 0, sq = 0;
    for (int e = 0; e < 10000; e++) {
        sum += v[e];
        sq += (double)v[e] * v[e];
        float want = 0.02f * rmx_normal(11, RMX_RNG_INIT, 5, (uint64_t)w, (uint32_t)e);
        if (v[e] != want) {
            CHECK(v[e] == want, "normal init element %d: %g, the stream says %g", e, v[e], want);
            break;
        }
    }
    double mean = sum / 10000, std = sqrt(sq / 10000 - mean * mean);
    printf("registry: N(0, 0.02) over 10000 elements: mean %.2e, std %.5f\n", mean, std);
    CHECK(fabs(mean) < 0.02 * 4 / 100 && fabs(std - 0.02) < 0.02 * 0.03, "mean %g std %g", mean, std);

    rmx_params_alloc_ema(&p);
    CHECK(p.ema != NULL, "EMA allocated");
    float *ema = host_copy(be, p.ema, p.span), *data = host_copy(be, p.data, p.span);
    CHECK(memcmp(ema, data, p.span * sizeof *ema) == 0, "the EMA starts as a copy of the values");
    CHECK(rmx_params_ema(&p, b) == p.ema + rmx_params_get(&p, b)->offset, "EMA layout = values");
    /* re-initialising restarts the EMA from the new values */
    be->fill(be, p.ema, 3.0f, p.span);
    rmx_params_initialize(&p, 12);
    free(ema);
    free(data);
    ema = host_copy(be, p.ema, p.span);
    data = host_copy(be, p.data, p.span);
    CHECK(memcmp(ema, data, p.span * sizeof *ema) == 0, "initialize resets the EMA to the values");
    CHECK(memcmp(data, v, 10000 * sizeof *v) != 0, "another seed draws other values");
    /* asking again copies again */
    be->fill(be, p.ema, 3.0f, p.span);
    rmx_params_alloc_ema(&p);
    free(ema);
    ema = host_copy(be, p.ema, p.span);
    CHECK(memcmp(ema, data, p.span * sizeof *ema) == 0, "alloc_ema again copies the values again");
    free(ema);
    free(data);
    free(v);
    rmx_params_free(&p); /* frees the EMA too (the sanitizer build would report a leak) */
    CHECK(p.ema == NULL, "freed");
}

/* ---- names, shapes, order, count ---- */

typedef struct {
    char name[RMX_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[4];
} expected_tensor;

static int expect(expected_tensor *list, int n, const char *name, int ndim, int64_t a, int64_t b,
                  int64_t c, int64_t d) {
    snprintf(list[n].name, sizeof list[n].name, "%s", name);
    list[n].ndim = ndim;
    int64_t s[4] = {a, b, c, d};
    memcpy(list[n].shape, s, sizeof s);
    return n + 1;
}

/* DiT's state_dict order, written out from models.py's module structure (pos_embed, DiT's own
 * parameter, comes first there and lives in the state registry here). */
static int expected_trained(const rmx_dit_hparams *hp, expected_tensor *list) {
    int64_t D = hp->hidden, C = hp->in_channels, p = hp->patch;
    int64_t Dm = (int64_t)(hp->hidden * (double)hp->mlp_ratio);
    int n = 0;
    char name[RMX_PARAM_NAME_MAX];
    n = expect(list, n, "x_embedder.proj.weight", 4, D, C, p, p);
    n = expect(list, n, "x_embedder.proj.bias", 1, D, 0, 0, 0);
    n = expect(list, n, "t_embedder.mlp.0.weight", 2, D, hp->freq_dim, 0, 0);
    n = expect(list, n, "t_embedder.mlp.0.bias", 1, D, 0, 0, 0);
    n = expect(list, n, "t_embedder.mlp.2.weight", 2, D, D, 0, 0);
    n = expect(list, n, "t_embedder.mlp.2.bias", 1, D, 0, 0, 0);
    n = expect(list, n, "y_embedder.embedding_table.weight", 2, hp->num_classes + 1, D, 0, 0);
    for (int i = 0; i < hp->depth; i++) {
        const char *sub[5] = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"};
        int64_t out[5] = {3 * D, D, Dm, D, 6 * D}, in[5] = {D, D, D, Dm, D};
        for (int j = 0; j < 5; j++) {
            snprintf(name, sizeof name, "blocks.%d.%s.weight", i, sub[j]);
            n = expect(list, n, name, 2, out[j], in[j], 0, 0);
            snprintf(name, sizeof name, "blocks.%d.%s.bias", i, sub[j]);
            n = expect(list, n, name, 1, out[j], 0, 0, 0);
        }
    }
    n = expect(list, n, "final_layer.linear.weight", 2, p * p * C, D, 0, 0);
    n = expect(list, n, "final_layer.linear.bias", 1, p * p * C, 0, 0, 0);
    n = expect(list, n, "final_layer.adaLN_modulation.1.weight", 2, 2 * D, D, 0, 0);
    n = expect(list, n, "final_layer.adaLN_modulation.1.bias", 1, 2 * D, 0, 0, 0);
    return n;
}

static void check_registry(const rmx_params *p, const expected_tensor *want, int count) {
    CHECK(p->count == count, "%d tensors, expected %d", p->count, count);
    for (int i = 0; i < count && i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        CHECK(strcmp(t->name, want[i].name) == 0, "tensor %d is %s, DiT's state_dict has %s", i,
              t->name, want[i].name);
        CHECK(t->ndim == want[i].ndim, "%s: ndim %d, want %d", t->name, t->ndim, want[i].ndim);
        for (int d = 0; d < t->ndim && d < want[i].ndim; d++)
            CHECK(t->shape[d] == want[i].shape[d], "%s: dim %d is %lld, want %lld", t->name, d,
                  (long long)t->shape[d], (long long)want[i].shape[d]);
        CHECK(t->decay == (t->ndim >= 2), "%s: decay %d", t->name, t->decay);
        CHECK(t->offset % RMX_PARAM_ALIGN == 0, "%s misaligned", t->name);
        CHECK(t->decay ? t->offset + t->numel <= p->n_decay : t->offset >= p->n_decay,
              "%s on the wrong side of n_decay", t->name);
    }
}

static void test_bench_size(rmx_backend *be) {
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    CHECK(hp.hidden == 384 && hp.depth == 12 && hp.heads == 6 && hp.patch == 2 &&
              hp.mlp_ratio == 4.0f && hp.freq_dim == 256 && hp.in_channels == 8 &&
              hp.height == 32 && hp.width == 64 && hp.num_classes == 4,
          "defaults are not the DiT-S bench size");
    hp.micro_batch = 1;
    rmx_dit *dit = dit_create_or_die(be, &hp, 1);
    rmx_params *p = rmx_dit_params(dit), *s = rmx_dit_state(dit);

    /* The count from the formula: x_embedder D (C p^2 + 1); t_embedder D (F + 1) + D (D + 1);
     * the label table (K + 1) D; per block 3D(D+1) + D(D+1) + Dm(D+1) + D(Dm+1) + 6D(D+1);
     * final layer p^2 C (D + 1) + 2D (D + 1). */
    int64_t D = 384, C = 8, P = 2, F = 256, K = 4, L = 12, Dm = 4 * D;
    int64_t block = 3 * D * (D + 1) + D * (D + 1) + Dm * (D + 1) + D * (Dm + 1) + 6 * D * (D + 1);
    int64_t formula = D * (C * P * P + 1) + D * (F + 1) + D * (D + 1) + (K + 1) * D + L * block +
                      P * P * C * (D + 1) + 2 * D * (D + 1);
    printf("bench size (D 384, depth 12, heads 6, patch 2, latent 8 x 32 x 64, 4 genres): %zu "
           "trained parameters (formula %lld), pos_embed %zu, %d tensors\n",
           p->numel, (long long)formula, s->numel, p->count);
    CHECK((int64_t)p->numel == formula, "%zu parameters, the formula gives %lld", p->numel,
          (long long)formula);
    CHECK(p->numel == 32488736, "the twin's state_dict has 32,488,736 trained parameters");

    expected_tensor *want = calloc(256, sizeof *want);
    int n = expected_trained(&hp, want);
    check_registry(p, want, n);
    CHECK(s->count == 1 && strcmp(rmx_params_get(s, 0)->name, "pos_embed") == 0, "state: pos_embed");
    const rmx_param_info *pos = rmx_params_get(s, 0);
    CHECK(pos->ndim == 3 && pos->shape[0] == 1 && pos->shape[1] == 16 * 32 && pos->shape[2] == 384,
          "pos_embed [1, 512, 384]");
    CHECK(!s->trained && s->grad == NULL && s->m == NULL && s->v == NULL && !pos->decay,
          "pos_embed is not trained");
    CHECK(rmx_dit_tokens(dit) == 512, "tokens %d", rmx_dit_tokens(dit));
    char desc[128];
    rmx_params_describe(p, rmx_params_find(p, "blocks.11.adaLN_modulation.1.weight"), desc, sizeof desc);
    CHECK(strcmp(desc, "blocks.11.adaLN_modulation.1.weight [2304, 384]") == 0, "describe: %s", desc);

    /* Initialisation statistics at this size (large tensors: tight statistics). */
    float *v = host_copy(be, p->data, p->span);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        const float *x = v + t->offset;
        int zero = t->ndim == 1 || strstr(t->name, "adaLN_modulation") || strstr(t->name, "final_layer");
        int normal = strstr(t->name, "t_embedder") || strstr(t->name, "embedding_table");
        if (zero) {
            CHECK(max_abs(x, t->numel) == 0.0, "%s must start at zero", t->name);
            continue;
        }
        double sum = 0, sq = 0;
        for (size_t e = 0; e < t->numel; e++) {
            sum += x[e];
            sq += (double)x[e] * x[e];
        }
        double mean = sum / t->numel, std = sqrt(sq / t->numel - mean * mean);
        double want_std, slack = 4.0 / sqrt((double)t->numel); /* ~4 standard errors */
        if (normal) {
            want_std = 0.02;
        } else {
            double fan_in = (double)(t->numel / (size_t)t->shape[0]), fan_out = (double)t->shape[0];
            double bound = sqrt(6.0 / (fan_in + fan_out));
            want_std = bound / sqrt(3.0);
            CHECK(max_abs(x, t->numel) <= bound * (1 + 1e-6), "%s exceeds the xavier bound %g", t->name,
                  bound);
            CHECK(max_abs(x, t->numel) > 0.95 * bound, "%s does not reach the xavier bound %g",
                  t->name, bound);
        }
        CHECK(fabs(mean) < want_std * slack && fabs(std / want_std - 1) < 2 * slack,
              "%s: mean %g std %g, want 0 and %g", t->name, mean, std, want_std);
        if (i < 8 || i == p->count - 5)
            printf("  %-40s %-7s std %.5f (want %.5f)\n", t->name, normal ? "normal" : "xavier",
                   std, want_std);
    }
    free(v);
    free(want);
    rmx_dit_free(dit);

    /* The same structure at the tiny size (mlp_ratio 4, K 3) */
    rmx_dit_hparams tiny = dit_tiny_hparams(1);
    dit = dit_create_or_die(be, &tiny, 1);
    want = calloc(256, sizeof *want);
    n = expected_trained(&tiny, want);
    check_registry(rmx_dit_params(dit), want, n);
    free(want);
    rmx_dit_free(dit);
}

/* ---- initialisation: deterministic, seed-keyed, re-initialisable ---- */

static void test_init_repeatable(rmx_backend *be) {
    rmx_dit_hparams hp = dit_tiny_hparams(1);
    rmx_dit *a = dit_create_or_die(be, &hp, 42), *b = dit_create_or_die(be, &hp, 42),
            *c = dit_create_or_die(be, &hp, 43);
    rmx_params *pa = rmx_dit_params(a);
    size_t span = pa->span;
    float *ha = host_copy(be, pa->data, span), *hb = host_copy(be, rmx_dit_params(b)->data, span),
          *hc = host_copy(be, rmx_dit_params(c)->data, span);
    CHECK(memcmp(ha, hb, span * sizeof *ha) == 0, "same seed, different parameters");
    CHECK(memcmp(ha, hc, span * sizeof *ha) != 0, "different seeds, same parameters");
    /* element e of tensor i is the stream (seed, INIT, the registry's stream, i, e) */
    int q = rmx_params_find(pa, "blocks.1.attn.qkv.weight");
    float bound = sqrtf(6.0f / (32 + 96));
    float first = bound * (2.0f * rmx_u01(rmx_u32(42, RMX_RNG_INIT, pa->init_stream, (uint64_t)q, 0)) - 1.0f);
    CHECK(ha[rmx_params_get(pa, q)->offset] == first, "qkv[0] is not the init stream");
    int t0 = rmx_params_find(pa, "t_embedder.mlp.0.weight");
    float normal = 0.02f * rmx_normal(42, RMX_RNG_INIT, pa->init_stream, (uint64_t)t0, 3);
    CHECK(ha[rmx_params_get(pa, t0)->offset + 3] == normal, "mlp.0[3] is not the init stream");

    rmx_params_alloc_ema(pa);
    be->fill(be, pa->data, 0.5f, span);
    rmx_params *sa = rmx_dit_state(a);
    be->fill(be, sa->data, 0.5f, sa->span);
    rmx_dit_init_params(a, 42);
    float *again = host_copy(be, pa->data, span), *ema = host_copy(be, pa->ema, span);
    CHECK(memcmp(ha, again, span * sizeof *ha) == 0, "rmx_dit_init_params is not repeatable");
    CHECK(memcmp(ha, ema, span * sizeof *ha) == 0, "re-initialising restarts the EMA");
    float *pos = host_copy(be, sa->data, sa->numel);
    CHECK(fabsf(pos[32] - sinf(1.0f)) < 1e-6f, "pos_embed rewritten: token 1 feature 0 is %g", pos[32]);
    CHECK(max_abs(pos, sa->numel) <= 1.0 && max_abs(pos, sa->numel) > 0.9, "pos_embed restored");
    free(pos);
    free(ema);
    free(again);
    free(ha);
    free(hb);
    free(hc);
    rmx_dit_free(a);
    rmx_dit_free(b);
    rmx_dit_free(c);
}

/* ---- the fixed positions ---- */

/* Independent of model/dit.c: feature j of token (r, c), computed per feature. */
static double pos_formula(int r, int c, int j, int d) {
    int half = d / 2, q = d / 4;
    double pos = j < half ? c : r; /* first half: the column (width index) */
    int k = j % half;
    int i = k < q ? k : k - q;     /* frequency index */
    double omega = exp(-log(10000.0) * (double)i / (double)q);
    return k < q ? sin(pos * omega) : cos(pos * omega);
}

static void check_positions(rmx_backend *be, const rmx_dit_hparams *hp) {
    rmx_dit *dit = dit_create_or_die(be, hp, 3);
    rmx_params *s = rmx_dit_state(dit);
    int gh = hp->height / hp->patch, gw = hp->width / hp->patch, d = hp->hidden, q = d / 4;
    float *pos = host_copy(be, rmx_params_data(s, 0), s->numel);
    double worst = 0;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++)
            for (int j = 0; j < d; j++)
                worst = fmax(worst, fabs(pos[((size_t)r * gw + c) * d + j] - pos_formula(r, c, j, d)));
    printf("pos_embed %d x %d grid, D %d: worst difference from the formula %.2e\n", gh, gw, d, worst);
    CHECK(worst < 1e-6, "pos_embed differs from the formula by %g", worst);
    /* The layout traps, spelled out: token (0, 1) is column 1, token (1, 0) row 1 (= token gw). */
    const float *t01 = pos + d, *t10 = pos + (size_t)gw * d;
    CHECK(fabsf(t01[0] - sinf(1)) < 1e-6f && fabsf(t01[q] - cosf(1)) < 1e-6f && t01[2 * q] == 0.0f &&
              t01[3 * q] == 1.0f,
          "token (row 0, column 1): [sin 1, .., cos 1, .., 0, .., 1, ..] expected, got %g %g %g %g",
          t01[0], t01[q], t01[2 * q], t01[3 * q]);
    CHECK(t10[0] == 0.0f && t10[q] == 1.0f && fabsf(t10[2 * q] - sinf(1)) < 1e-6f &&
              fabsf(t10[3 * q] - cosf(1)) < 1e-6f,
          "token (row 1, column 0): [0, .., 1, .., sin 1, .., cos 1, ..] expected, got %g %g %g %g",
          t10[0], t10[q], t10[2 * q], t10[3 * q]);
    free(pos);
    rmx_dit_free(dit);
}

static void test_positions(rmx_backend *be) {
    rmx_dit_hparams tiny = dit_tiny_hparams(1); /* 4 x 6 */
    check_positions(be, &tiny);
    rmx_dit_hparams bench;
    rmx_dit_hparams_default(&bench); /* 16 x 32 */
    bench.micro_batch = 1;
    bench.depth = 1;
    check_positions(be, &bench);
    rmx_dit_hparams tall = tiny; /* more rows than columns: 6 x 2 */
    tall.height = 12;
    tall.width = 4;
    check_positions(be, &tall);
}

/* ---- adaLN-Zero: a fresh model is the zero function, and only its last linear learns first ---- */

static void test_adaln_zero(rmx_backend *be) {
    rmx_dit_hparams hp = dit_tiny_hparams(3);
    rmx_dit *dit = dit_create_or_die(be, &hp, 8);
    size_t count = 3 * dit_sample_count(&hp);
    float *xh = malloc(count * sizeof *xh), *gh = malloc(count * sizeof *gh), t[3];
    int32_t y[3];
    dit_test_inputs(&hp, 3, 4, xh, t, y);
    fill_uniform(gh, count, 9);
    float *x = backend_input(be, xh, count), *g = backend_input(be, gh, count);
    float *dx = be->alloc(be, count * sizeof(float));
    float *out = host_copy(be, rmx_dit_forward(dit, 3, x, t, y), count);
    CHECK(max_abs(out, count) == 0.0, "a fresh DiT must output exactly 0, got %g", max_abs(out, count));
    rmx_dit_step_begin(dit);
    rmx_dit_backward(dit, 3, g, dx);
    rmx_params *p = rmx_dit_params(dit);
    float *grad = host_copy(be, p->grad, p->span), *hdx = host_copy(be, dx, count);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *info = rmx_params_get(p, i);
        double m = max_abs(grad + info->offset, info->numel);
        if (strncmp(info->name, "final_layer.linear", 18) == 0)
            CHECK(m > 0.0, "%s must get a gradient", info->name);
        else
            CHECK(m == 0.0, "%s must get no gradient at init, got %g", info->name, m);
    }
    CHECK(max_abs(hdx, count) == 0.0, "no input gradient at init");
    free(grad);
    free(hdx);
    free(out);
    free(xh);
    free(gh);
    be->free(be, x);
    be->free(be, g);
    be->free(be, dx);
    rmx_dit_free(dit);
}

/* ---- configuration errors name the keys ---- */

static void expect_error(rmx_backend *be, rmx_dit_hparams hp, const char *want) {
    char err[256] = "";
    CHECK(rmx_dit_validate(&hp, err, sizeof err) != 0, "accepted; wanted \"%s\"", want);
    CHECK(strstr(err, want) != NULL, "message \"%s\" lacks \"%s\"", err, want);
    err[0] = 0;
    CHECK(rmx_dit_create(be, &hp, 1, err, sizeof err) == NULL && strstr(err, want),
          "create must refuse with the same message");
}

static void test_errors(rmx_backend *be) {
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    char err[256];
    CHECK(rmx_dit_validate(&hp, err, sizeof err) == 0, "defaults rejected: %s", err);
    rmx_dit_hparams bad = hp;
    bad.heads = 5;
    expect_error(be, bad, "dit.heads (5) must divide dit.hidden (384)");
    bad = hp;
    bad.patch = 3;
    expect_error(be, bad, "dit.patch (3) must divide the latent grid 32 x 64");
    bad = hp;
    bad.hidden = 30;
    bad.heads = 6;
    expect_error(be, bad, "dit.hidden (30) must be a positive multiple of 4");
    bad = hp;
    bad.depth = 0;
    expect_error(be, bad, "dit.depth must be at least 1");
    bad = hp;
    bad.mlp_ratio = 0.0f;
    expect_error(be, bad, "dit.mlp_ratio (0)");
    bad = hp;
    bad.num_classes = 0;
    expect_error(be, bad, "at least one genre");
    bad = hp;
    bad.freq_dim = 255;
    expect_error(be, bad, "timestep embedding width (255)");
    bad = hp;
    bad.micro_batch = 0;
    expect_error(be, bad, "micro-batch");
    bad = hp;
    bad.width = 0;
    expect_error(be, bad, "latent shape");
    bad = hp;
    bad.style = 2;
    expect_error(be, bad, "dit.style must be 0 (no style tokens) or 1, got 2");
}

static void test_flops(void) {
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp);
    double f = rmx_dit_flops_per_sample(&hp);
    /* by hand: x_embedder 12,582,912; t_embedder 491,520; per block qkv 452,984,832 + attention
     * 402,653,184 + proj 150,994,944 + MLP 1,207,959,552 + adaLN 1,769,472; final 13,172,736 */
    double want = 12582912.0 + 491520.0 + 12.0 * 2216361984.0 + 13172736.0;
    printf("bench size: %.4g GFLOP per sample forward (training about %.3g)\n", f / 1e9, 3 * f / 1e9);
    CHECK(f == want, "flops %.17g, by hand %.17g", f, want);
    /* with style: 1024 tokens in the blocks; x_embedder and style_embedder 12,582,912 each;
     * per block qkv 905,969,664 + attention 1,610,612,736 + proj 301,989,888 + MLP
     * 2,415,919,104 + adaLN 1,769,472; the final layer on the 512 content tokens */
    hp.style = 1;
    double fs = rmx_dit_flops_per_sample(&hp);
    double want_s = 2 * 12582912.0 + 491520.0 + 12.0 * 5236260864.0 + 13172736.0;
    printf("bench size with style tokens: %.4g GFLOP per sample forward\n", fs / 1e9);
    CHECK(fs == want_s, "style flops %.17g, by hand %.17g", fs, want_s);
}

/* ---- style tokens ---- */

static void test_style(rmx_backend *be) {
    rmx_dit_hparams hp = dit_tiny_hparams(2), hs = hp;
    hs.style = 1;
    rmx_dit *plain = dit_create_or_die(be, &hp, 42), *dit = dit_create_or_die(be, &hs, 42);
    rmx_params *p0 = rmx_dit_params(plain), *p = rmx_dit_params(dit);

    /* registry: the stage-2 tensors, then the four style tensors */
    expected_tensor *want = calloc(256, sizeof *want);
    int n = expected_trained(&hs, want);
    CHECK(n == p0->count, "stage-2 count");
    int64_t D = hs.hidden, C = hs.in_channels, P = hs.patch;
    n = expect(want, n, "style_embedder.proj.weight", 4, D, C, P, P);
    n = expect(want, n, "style_embedder.proj.bias", 1, D, 0, 0, 0);
    n = expect(want, n, "style_type", 3, 1, 1, D, 0);
    n = expect(want, n, "style_null", 3, 1, 1, D, 0);
    check_registry(p, want, n);
    CHECK(p->numel == p0->numel + (size_t)(D * C * P * P + D + 2 * D), "style parameter count %zu",
          p->numel);
    CHECK(rmx_dit_tokens(dit) == 24 && rmx_dit_sequence(dit) == 48 &&
              rmx_dit_sequence(plain) == 24,
          "tokens %d, sequence %d", rmx_dit_tokens(dit), rmx_dit_sequence(dit));
    CHECK(rmx_dit_arena_bytes(dit) > rmx_dit_arena_bytes(plain) * 3 / 2,
          "the style arena (%zu bytes) must plan 2N tokens (stage 2: %zu)",
          rmx_dit_arena_bytes(dit), rmx_dit_arena_bytes(plain));
    printf("style (tiny): %d tensors, %zu trained parameters (stage 2: %zu), arena %zu bytes "
           "(stage 2: %zu)\n", p->count, p->numel, p0->numel, rmx_dit_arena_bytes(dit),
           rmx_dit_arena_bytes(plain));

    /* init: every stage-2 tensor as in the stage-2 model of the same seed */
    float *v0 = host_copy(be, p0->data, p0->span), *v = host_copy(be, p->data, p->span);
    for (int i = 0; i < p0->count; i++) {
        const rmx_param_info *a = rmx_params_get(p0, i), *b = rmx_params_get(p, i);
        CHECK(memcmp(v0 + a->offset, v + b->offset, a->numel * sizeof(float)) == 0,
              "%s: the style model initialises it differently", a->name);
    }
    int xw = rmx_params_find(p, "x_embedder.proj.weight");
    int sw = rmx_params_find(p, "style_embedder.proj.weight");
    int sb = rmx_params_find(p, "style_embedder.proj.bias");
    int ty = rmx_params_find(p, "style_type"), nu = rmx_params_find(p, "style_null");
    const rmx_param_info *wi = rmx_params_get(p, sw);
    double bound = sqrt(6.0 / (double)(C * P * P + D));
    const float *w = v + wi->offset;
    CHECK(max_abs(w, wi->numel) <= bound * (1 + 1e-6) && max_abs(w, wi->numel) > 0.9 * bound,
          "style_embedder.proj.weight: max %g, xavier bound %g", max_abs(w, wi->numel), bound);
    float first = (float)bound * (2.0f * rmx_u01(rmx_u32(42, RMX_RNG_INIT, p->init_stream, (uint64_t)sw, 0)) - 1.0f);
    CHECK(fabsf(w[0] - first) <= 1e-7f, "style_embedder.proj.weight[0] is not its init stream");
    CHECK(memcmp(w, v + rmx_params_get(p, xw)->offset, wi->numel * sizeof(float)) != 0,
          "style_embedder starts as its own draw (the trainer copies x_embedder)");
    CHECK(max_abs(v + rmx_params_get(p, sb)->offset, (size_t)D) == 0.0 &&
              max_abs(v + rmx_params_get(p, nu)->offset, (size_t)D) == 0.0,
          "style_embedder.proj.bias and style_null start at zero");
    int normal_ok = 1;
    for (int e = 0; e < D; e++)
        normal_ok &= v[rmx_params_get(p, ty)->offset + e] ==
                     0.02f * rmx_normal(42, RMX_RNG_INIT, p->init_stream, (uint64_t)ty, (uint32_t)e);
    CHECK(normal_ok, "style_type is not N(0, 0.02) from its init stream");

    /* a fresh style model outputs exactly 0 (adaLN-Zero), styles kept or not */
    size_t count = 2 * dit_sample_count(&hs);
    float *xh = malloc(count * sizeof *xh), t[2];
    int32_t y[2];
    dit_test_inputs(&hs, 2, 4, xh, t, y);
    float *x = backend_input(be, xh, count);
    const uint8_t keep[2] = {1, 0};
    float *out = host_copy(be, rmx_dit_forward_style(dit, 2, x, t, y, x, keep), count);
    CHECK(max_abs(out, count) == 0.0, "a fresh style DiT must output exactly 0");
    free(out);

    /* stage 3 from a stage-2 checkpoint: x_embedder's values (and EMA) into style_embedder */
    CHECK(rmx_dit_copy_style_embedder_from_x(plain) == -1, "copy on a model without style tokens");
    rmx_params_alloc_ema(p);
    be->fill(be, rmx_params_ema(p, xw), 0.125f, wi->numel);
    CHECK(rmx_dit_copy_style_embedder_from_x(dit) == 0, "copy failed");
    float *after = host_copy(be, p->data, p->span), *ema = host_copy(be, p->ema, p->span);
    int xb = rmx_params_find(p, "x_embedder.proj.bias");
    CHECK(memcmp(after + wi->offset, after + rmx_params_get(p, xw)->offset,
                 wi->numel * sizeof(float)) == 0 &&
              memcmp(after + rmx_params_get(p, sb)->offset, after + rmx_params_get(p, xb)->offset,
                     (size_t)D * sizeof(float)) == 0,
          "style_embedder does not equal x_embedder after the copy");
    CHECK(ema[wi->offset] == 0.125f && ema[wi->offset + wi->numel - 1] == 0.125f,
          "the EMA copy took x_embedder's EMA");
    size_t changed = 0;
    for (size_t e = 0; e < p->span; e++) {
        int in_style = (e >= wi->offset && e < wi->offset + wi->numel) ||
                       (e >= rmx_params_get(p, sb)->offset &&
                        e < rmx_params_get(p, sb)->offset + (size_t)D);
        changed += !in_style && after[e] != v[e];
    }
    CHECK(changed == 0, "the copy touched %zu other values", changed);
    free(after);
    free(ema);
    free(xh);
    be->free(be, x);
    free(v0);
    free(v);
    free(want);
    rmx_dit_free(plain);
    rmx_dit_free(dit);
}

int main(void) {
    rmx_backend *be = rmx_backend_ref_create();
    test_registry_normal_and_ema(be);
    test_bench_size(be);
    test_init_repeatable(be);
    test_positions(be);
    test_adaln_zero(be);
    test_errors(be);
    test_flops();
    test_style(be);
    be->destroy(be);
    return test_finish("dit_params");
}
