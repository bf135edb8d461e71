/* The whole DiT on the cuda backend against the cpu backend (itself tested against the reference
 * and the PyTorch twin, tests/dit): randomised weights (the adaLN-Zero layers non-zero), one
 * step of two micro-batches (gradient accumulation) with the mean-squared-error loss, the input
 * gradient, one AdamW step and one EMA update over the flat buffers, then a frozen backward (no
 * weight gradient touched, the same input gradient). Configurations: the tiny test size and the
 * bench architecture (D 384, depth 12, heads 6, patch 2, latent 8 x 32 x 64) at micro-batch 2,
 * and the tiny size with style tokens (hparams.style = 1: rmx_dit_forward_style with style
 * latents, the second sample of each micro-batch dropped, so style_embedder, style_type and
 * style_null all carry gradients).
 *
 * Tolerances (float GEMMs and softmax sums in different orders on the two sides, TF32 off):
 *   output and loss 1e-4 relative; input gradient 1e-3 (normwise);
 *   gradients per tensor 1e-3 of the tensor's largest magnitude plus 1e-5 of the largest
 *   gradient anywhere;
 *   parameters after AdamW 1e-6 + 1e-3 lr, except where the cpu gradient is within the gradient
 *   tolerance of zero (AdamW's first step is lr sign(g) there, the sign not determined);
 *   EMA after one update 1e-6 absolute. */
#include "cuda_test.h"
#include "dit_test.h"

#define LR 1e-3f

typedef struct {
    float loss;
    float *out, *grad, *dx, *param, *ema, *dx_frozen, *grad_frozen;
    size_t span, count;
} outcome;

static rmx_dit_hparams config(int which) {
    if (which == 0) return dit_tiny_hparams(2);
    if (which == 2) {
        rmx_dit_hparams hp = dit_tiny_hparams(2);
        hp.style = 1;
        return hp;
    }
    rmx_dit_hparams hp;
    rmx_dit_hparams_default(&hp); /* the bench architecture */
    hp.micro_batch = 2;
    return hp;
}

static const char *config_name(int which) {
    return which == 0 ? "tiny" : which == 1 ? "bench (micro-batch 2)" : "tiny with style tokens";
}

static outcome run(rmx_backend *be, int which) {
    rmx_dit_hparams hp = config(which);
    int m = hp.micro_batch;
    rmx_dit *dit = dit_create_or_die(be, &hp, 77);
    dit_randomise(dit, 5);
    rmx_params *p = rmx_dit_params(dit);
    rmx_params_alloc_ema(p);
    size_t per = dit_sample_count(&hp), count = 2 * (size_t)m * per;
    float *xh = malloc(count * sizeof *xh), *th = malloc(count * sizeof *th), t[4];
    int32_t y[4];
    dit_test_inputs(&hp, 2 * m, 3, xh, t, y);
    fill_uniform(th, count, 31);
    float *x = backend_input(be, xh, count), *target = backend_input(be, th, count);
    float *style = NULL;
    uint8_t keep[4];
    for (int i = 0; i < 4; i++) keep[i] = (uint8_t)(i % 2 == 0); /* kept, dropped, ... */
    if (hp.style) {
        float *sh = malloc(count * sizeof *sh);
        fill_uniform(sh, count, 47);
        style = backend_input(be, sh, count);
        free(sh);
    }
    float *dx = be->alloc(be, count * sizeof(float)), *deps = be->alloc(be, count * sizeof(float));
    float *loss = be->alloc(be, sizeof(float));
    outcome o;
    memset(&o, 0, sizeof o);
    o.count = count;
    o.span = p->span;
    o.out = malloc(count * sizeof(float));
    rmx_dit_step_begin(dit);
    for (int mb = 0; mb < 2; mb++) {
        size_t off = (size_t)mb * m * per;
        const float *out =
            hp.style ? rmx_dit_forward_style(dit, m, x + off, t + mb * m, y + mb * m, style + off,
                                             keep + mb * m)
                     : rmx_dit_forward(dit, m, x + off, t + mb * m, y + mb * m);
        be->to_host(be, o.out + off, out, (size_t)m * per * sizeof(float));
        be->mse_loss(be, (size_t)m * per, out, target + off, 1.0f / (float)count, loss, deps + off);
        rmx_dit_backward(dit, m, deps + off, dx + off);
    }
    o.loss = host_get(be, loss);
    o.grad = host_copy(be, p->grad, p->span);
    o.dx = host_copy(be, dx, count);
    rmx_adamw_hparams ah = {LR, 0.9f, 0.999f, 1e-8f, 0.0f, 1};
    be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
    be->ema_update(be, p->span, 0.9f, p->data, p->ema);
    o.param = host_copy(be, p->data, p->span);
    o.ema = host_copy(be, p->ema, p->span);

    /* frozen: the gradients stay as they are, the input gradient is computed */
    rmx_dit_set_frozen(dit, 1);
    if (hp.style)
        rmx_dit_forward_style(dit, m, x, t, y, style, keep);
    else
        rmx_dit_forward(dit, m, x, t, y);
    rmx_dit_backward(dit, m, deps, dx);
    o.dx_frozen = host_copy(be, dx, (size_t)m * per);
    o.grad_frozen = host_copy(be, p->grad, p->span);

    be->free(be, x);
    be->free(be, target);
    be->free(be, dx);
    be->free(be, deps);
    be->free(be, loss);
    if (style) be->free(be, style);
    free(xh);
    free(th);
    rmx_dit_free(dit);
    return o;
}

static void compare(int which, rmx_backend *cpu, const outcome *c, const outcome *g) {
    const char *name = config_name(which);
    double out_err = rel_diff(g->out, c->out, c->count), dx_err = rel_diff(g->dx, c->dx, c->count);
    double loss_err = fabs((double)c->loss - g->loss) / fabs((double)c->loss);
    CHECK(out_err <= 1e-4, "%s: output differs by %.3g", name, out_err);
    CHECK(loss_err <= 1e-4, "%s: loss cpu %.9g cuda %.9g", name, c->loss, g->loss);
    CHECK(dx_err <= 1e-3, "%s: input gradient differs by %.3g", name, dx_err);

    rmx_dit_hparams hp = config(which);
    hp.micro_batch = 1;
    rmx_dit *dit = dit_create_or_die(cpu, &hp, 77); /* names the tensors */
    rmx_params *p = rmx_dit_params(dit);
    double floor = 1e-5 * max_abs(c->grad, c->span), worst = 0, worst_p = 0, worst_e = 0;
    const char *worst_name = "";
    size_t exempt = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        const float *gc = c->grad + t->offset, *gg = g->grad + t->offset;
        double band = 1e-3 * max_abs(gc, t->numel) + floor, w = 0, wp = 0;
        for (size_t e = 0; e < t->numel; e++) {
            w = fmax(w, fabs((double)gc[e] - gg[e]));
            worst_e = fmax(worst_e, fabs((double)c->ema[t->offset + e] - g->ema[t->offset + e]));
            if (fabs(gc[e]) <= band) {
                exempt++;
                continue;
            }
            wp = fmax(wp, fabs((double)c->param[t->offset + e] - g->param[t->offset + e]));
        }
        CHECK(w <= band, "%s: gradient of %s differs by %g (tolerance %g)", name, t->name, w, band);
        CHECK(wp <= 1e-6 + 1e-3 * LR, "%s: %s after AdamW differs by %g", name, t->name, wp);
        if (w / band > worst) {
            worst = w / band;
            worst_name = t->name;
        }
        worst_p = fmax(worst_p, wp);
    }
    CHECK(worst_e <= 1e-6, "%s: EMA differs by %g", name, worst_e);
    size_t m = c->count / 2, touched = 0;
    for (size_t i = 0; i < c->span; i++) touched += g->grad_frozen[i] != g->grad[i];
    double frozen_err = rel_diff(g->dx_frozen, c->dx_frozen, m);
    CHECK(touched == 0, "%s: frozen cuda backward touched %zu gradients", name, touched);
    CHECK(frozen_err <= 1e-3, "%s: frozen input gradient differs by %.3g", name, frozen_err);
    printf("%s: output %.2e, loss %.2e, input gradient %.2e, worst gradient at %.2f of its "
           "tolerance (%s), AdamW %.2e (%zu exempt of %zu), EMA %.2e, frozen dx %.2e\n",
           name, out_err, loss_err, dx_err, worst, worst_name, worst_p, exempt, p->numel, worst_e,
           frozen_err);
    rmx_dit_free(dit);
}

static void free_outcome(outcome *o) {
    free(o->out);
    free(o->grad);
    free(o->dx);
    free(o->param);
    free(o->ema);
    free(o->dx_frozen);
    free(o->grad_frozen);
}

int main(void) {
    rmx_backend *gpu = cuda_or_skip("cuda_dit");
    rmx_backend *cpu = rmx_backend_cpu_create(0);
    for (int which = 0; which < 3; which++) {
        outcome c = run(cpu, which), g = run(gpu, which);
        compare(which, cpu, &c, &g);
        free_outcome(&c);
        free_outcome(&g);
    }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return test_finish("cuda_dit");
}
