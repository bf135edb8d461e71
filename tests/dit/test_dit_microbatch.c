/* Gradient accumulation and the frozen mode of the DiT:
 *   - one micro-batch of 2 and two micro-batches of 1 accumulate the same gradients and give the
 *     same input gradients and outputs (per-sample work does not depend on the batch);
 *   - every trained tensor is announced to grad_ready exactly once per backward, after its
 *     gradient is final (the announced tensor's gradient no longer changes);
 *   - frozen: no weight gradient is touched and nothing is announced, the input gradient is the
 *     unfrozen one; frozen without dx does nothing;
 *   - rmx_dit_reserve grows the arena (sampling's cond + uncond batch) without changing results.
 * On the ref and the cpu backend, for the stage-2 model and the model with style tokens (styles
 * kept, dropped: the four style tensors announced too, the split keeps each sample's keep flag);
 * with style tokens also: rmx_dit_forward is rmx_dit_forward_style with every style dropped and
 * no style latents, bit for bit, and a sample's result does not depend on its batch mates'. */
#include "dit_test.h"

typedef struct {
    rmx_backend *be;
    rmx_params *p;
    int *calls;
    float *final_grad; /* host copy of each tensor's gradient when announced */
    int announced_total;
} listener;

static void on_grad_ready(void *arg, int tensor) {
    listener *l = arg;
    const rmx_param_info *t = rmx_params_get(l->p, tensor);
    l->calls[tensor]++;
    l->announced_total++;
    l->be->to_host(l->be, l->final_grad + t->offset, rmx_params_grad(l->p, tensor),
                   t->numel * sizeof(float));
}

/* The forward of the model's kind: with style tokens, sample i of x goes with sample i of style
 * and keep[i]. */
static const float *fwd(rmx_dit *dit, int n, const float *x, const float *t, const int32_t *y,
                        const float *style, const uint8_t *keep) {
    return rmx_dit_hparams_of(dit)->style ? rmx_dit_forward_style(dit, n, x, t, y, style, keep)
                                          : rmx_dit_forward(dit, n, x, t, y);
}

static void run_backend(rmx_backend *be, int style) {
    char bn[64];
    snprintf(bn, sizeof bn, "%s%s", be->name, style ? " (style)" : "");
    rmx_dit_hparams hp = dit_tiny_hparams(2);
    hp.style = style;
    rmx_dit *dit = dit_create_or_die(be, &hp, 21);
    dit_randomise(dit, 3);
    rmx_params *p = rmx_dit_params(dit);
    size_t per = dit_sample_count(&hp), count = 2 * per;
    float *xh = malloc(count * sizeof *xh), *gh = malloc(count * sizeof *gh), t[2];
    int32_t y[2];
    dit_test_inputs(&hp, 2, 6, xh, t, y); /* labels 2 and 3 (null) */
    fill_uniform(gh, count, 8);
    float *x = backend_input(be, xh, count), *g = backend_input(be, gh, count);
    float *dx = be->alloc(be, count * sizeof(float));
    float *sh = malloc(count * sizeof *sh);
    fill_uniform(sh, count, 17);
    float *st = backend_input(be, sh, count);
    free(sh);
    const uint8_t keep[2] = {1, 0};

    /* one micro-batch of 2, with a listener */
    listener l = {be, p, calloc((size_t)p->count, sizeof(int)), calloc(p->span, sizeof(float)), 0};
    rmx_dit_set_grad_ready(dit, on_grad_ready, &l);
    rmx_dit_step_begin(dit);
    float *out_a = host_copy(be, fwd(dit, 2, x, t, y, st, keep), count);
    rmx_dit_backward(dit, 2, g, dx);
    float *grad_a = host_copy(be, p->grad, p->span), *dx_a = host_copy(be, dx, count);
    int bad_calls = 0;
    for (int i = 0; i < p->count; i++) bad_calls += l.calls[i] != 1;
    CHECK(bad_calls == 0 && l.announced_total == p->count,
          "%s: %d tensors not announced exactly once (%d calls for %d tensors)", bn, bad_calls,
          l.announced_total, p->count);
    CHECK(memcmp(l.final_grad, grad_a, p->span * sizeof(float)) == 0,
          "%s: a gradient changed after it was announced", bn);
    rmx_dit_set_grad_ready(dit, NULL, NULL);

    /* two micro-batches of 1 */
    rmx_dit_step_begin(dit);
    float *out_b = malloc(count * sizeof *out_b);
    for (int s = 0; s < 2; s++) {
        const float *o = fwd(dit, 1, x + s * per, t + s, y + s, st + s * per, keep + s);
        be->to_host(be, out_b + s * per, o, per * sizeof(float));
        rmx_dit_backward(dit, 1, g + s * per, dx + s * per);
    }
    float *grad_b = host_copy(be, p->grad, p->span), *dx_b = host_copy(be, dx, count);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *ti = rmx_params_get(p, i);
        double e = rel_diff(grad_b + ti->offset, grad_a + ti->offset, ti->numel);
        if (e > worst) {
            worst = e;
            worst_name = ti->name;
        }
    }
    double out_err = rel_diff(out_b, out_a, count), dx_err = rel_diff(dx_b, dx_a, count);
    printf("%s: 1 x 2 vs 2 x 1: output %.2e, input gradient %.2e, worst gradient %.2e (%s)\n", bn,
           out_err, dx_err, worst, worst_name);
    CHECK(worst <= 1e-5, "%s: accumulated gradients differ by %.3g (%s)", bn, worst, worst_name);
    CHECK(out_err <= 1e-5 && dx_err <= 1e-5, "%s: outputs %.3g / input gradients %.3g differ", bn,
          out_err, dx_err);

    /* frozen: no weight gradient, no announcement, the same input gradient */
    memset(l.calls, 0, (size_t)p->count * sizeof(int));
    l.announced_total = 0;
    rmx_dit_set_grad_ready(dit, on_grad_ready, &l);
    rmx_dit_set_frozen(dit, 1);
    be->fill(be, p->grad, 0.25f, p->span);
    fwd(dit, 2, x, t, y, st, keep);
    be->fill(be, dx, 7.0f, count);
    rmx_dit_backward(dit, 2, g, dx);
    float *grad_f = host_copy(be, p->grad, p->span), *dx_f = host_copy(be, dx, count);
    size_t touched = 0;
    for (size_t i = 0; i < p->span; i++) touched += grad_f[i] != 0.25f;
    double dx_frozen = rel_diff(dx_f, dx_a, count);
    printf("%s: frozen: %zu gradient floats touched, input gradient vs unfrozen %.2e\n", bn, touched,
           dx_frozen);
    CHECK(touched == 0 && l.announced_total == 0, "%s: frozen touched %zu gradients, %d announcements",
          bn, touched, l.announced_total);
    CHECK(dx_frozen <= 1e-6, "%s: frozen input gradient differs by %.3g", bn, dx_frozen);
    rmx_dit_backward(dit, 2, g, NULL); /* nothing to do */
    free(grad_f);
    grad_f = host_copy(be, p->grad, p->span);
    touched = 0;
    for (size_t i = 0; i < p->span; i++) touched += grad_f[i] != 0.25f;
    CHECK(touched == 0, "%s: frozen without dx touched gradients", bn);
    rmx_dit_set_frozen(dit, 0);
    rmx_dit_set_grad_ready(dit, NULL, NULL);

    /* unfrozen without dx: the same weight gradients */
    rmx_dit_step_begin(dit);
    fwd(dit, 2, x, t, y, st, keep);
    rmx_dit_backward(dit, 2, g, NULL);
    float *grad_n = host_copy(be, p->grad, p->span);
    CHECK(memcmp(grad_n, grad_a, p->span * sizeof(float)) == 0, "%s: dx = NULL changed the weight "
          "gradients", bn);

    /* a larger arena: the same numbers */
    size_t before = rmx_dit_arena_bytes(dit);
    rmx_dit_reserve(dit, 1);
    CHECK(rmx_dit_arena_bytes(dit) == before && rmx_dit_capacity(dit) == 2, "%s: reserve(1) shrank", bn);
    rmx_dit_reserve(dit, 5);
    CHECK(rmx_dit_capacity(dit) == 5 && rmx_dit_arena_bytes(dit) > 2 * before,
          "%s: reserve(5): capacity %d, %zu bytes (was %zu)", bn, rmx_dit_capacity(dit),
          rmx_dit_arena_bytes(dit), before);
    rmx_dit_step_begin(dit);
    float *out_r = host_copy(be, fwd(dit, 2, x, t, y, st, keep), count);
    rmx_dit_backward(dit, 2, g, dx);
    float *grad_r = host_copy(be, p->grad, p->span);
    CHECK(memcmp(out_r, out_a, count * sizeof(float)) == 0 &&
              memcmp(grad_r, grad_a, p->span * sizeof(float)) == 0,
          "%s: results changed after reserve", bn);

    if (style) {
        /* rmx_dit_forward on a style model: every style dropped, no latents needed */
        const uint8_t none[2] = {0, 0};
        float *o_plain = host_copy(be, rmx_dit_forward(dit, 2, x, t, y), count);
        rmx_dit_step_begin(dit);
        rmx_dit_backward(dit, 2, g, dx);
        float *g_plain = host_copy(be, p->grad, p->span);
        float *o_null = host_copy(be, rmx_dit_forward_style(dit, 2, x, t, y, NULL, none), count);
        rmx_dit_step_begin(dit);
        rmx_dit_backward(dit, 2, g, dx);
        float *g_null = host_copy(be, p->grad, p->span);
        float *o_lat = host_copy(be, rmx_dit_forward_style(dit, 2, x, t, y, st, none), count);
        rmx_dit_step_begin(dit);
        rmx_dit_backward(dit, 2, g, dx);
        float *g_lat = host_copy(be, p->grad, p->span);
        CHECK(memcmp(o_plain, o_null, count * sizeof(float)) == 0 &&
                  memcmp(g_plain, g_null, p->span * sizeof(float)) == 0 &&
                  memcmp(o_lat, o_null, count * sizeof(float)) == 0 &&
                  memcmp(g_lat, g_null, p->span * sizeof(float)) == 0,
              "%s: rmx_dit_forward, all dropped without latents and all dropped with latents "
              "differ", bn);
        /* sample 1 dropped both times: its output is the all-dropped one */
        CHECK(memcmp(out_a + per, o_null + per, per * sizeof(float)) == 0,
              "%s: a dropped sample's output depends on its batch mate's style", bn);
        CHECK(rel_diff(out_a, o_null, per) > 1e-3, "%s: a kept style changes nothing", bn);
        int ty = rmx_params_find(p, "style_type"), nu = rmx_params_find(p, "style_null");
        int sw = rmx_params_find(p, "style_embedder.proj.weight");
        CHECK(max_abs(g_null + rmx_params_get(p, sw)->offset, rmx_params_get(p, sw)->numel) == 0.0 &&
                  max_abs(g_null + rmx_params_get(p, ty)->offset, 16) > 0.0 &&
                  max_abs(g_null + rmx_params_get(p, nu)->offset, 16) > 0.0,
              "%s: all dropped: style_embedder must get no gradient, style_type and style_null one",
              bn);
        printf("%s: rmx_dit_forward = forward_style all dropped (with or without latents), bit "
               "for bit\n", bn);
        free(o_plain);
        free(o_null);
        free(o_lat);
        free(g_plain);
        free(g_null);
        free(g_lat);
    }

    free(out_r);
    free(grad_r);
    free(grad_n);
    free(grad_f);
    free(dx_f);
    free(out_a);
    free(out_b);
    free(grad_a);
    free(grad_b);
    free(dx_a);
    free(dx_b);
    free(l.calls);
    free(l.final_grad);
    free(xh);
    free(gh);
    be->free(be, x);
    be->free(be, g);
    be->free(be, dx);
    be->free(be, st);
    rmx_dit_free(dit);
}

int main(void) {
    for (int style = 0; style < 2; style++) {
        rmx_backend *ref = rmx_backend_ref_create();
        run_backend(ref, style);
        ref->destroy(ref);
        rmx_backend *cpu = rmx_backend_cpu_create(0);
        run_backend(cpu, style);
        cpu->destroy(cpu);
    }
    return test_finish("dit_microbatch");
}
