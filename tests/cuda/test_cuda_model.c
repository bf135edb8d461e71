/* The whole autoencoder training step on the cuda backend against the cpu backend (itself tested
 * against the reference): one step of two micro-batches (gradient accumulation), then the gradient
 * norm and one AdamW step, and for vq the codebook EMA update. Configurations: a small kl and vq
 * model (every code path), and the brief's bench architecture (1x128x256, C 32, mult 1 2 4) at
 * micro-batch 2.
 *
 * Tolerances (float GEMMs summed in different orders on the two sides, TF32 off):
 *   loss terms and gradient norm 1e-4 relative;
 *   gradients per tensor 1e-3 of the tensor's largest magnitude, plus a floor of 1e-5 of the
 *   largest gradient anywhere (a conv bias right before a GroupNorm has an exactly-zero true
 *   gradient, so both sides return rounding noise there);
 *   input gradient and reconstruction 1e-3 relative;
 *   parameters after AdamW: 1e-6 absolute plus 1e-3 of the learning rate, except where the cpu
 *   gradient is within the gradient tolerance of zero: AdamW's first step moves each parameter by
 *   about lr * sign(g), and that sign is not determined there;
 *   vq: the codes of the two sides may differ only at near-ties (at most 1% of positions); where
 *   they agree everywhere, counts are identical and sums, codebook within 1e-4. */
#include "cuda_test.h"
#include "model_test.h"

#define LR 1e-3f

typedef struct {
    float terms[RMX_AE_N_LOSS];
    float sumsq;
    float *grad, *param, *dx, *xhat, *stats, *codebook;
    int32_t *codes;
    size_t span, stats_count, codebook_count, count, positions;
} outcome;

static rmx_ae_hparams config(int which) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp); /* which == 2: the bench architecture */
    hp.micro_batch = 2;
    if (which < 2) {
        hp.channels = 8;
        hp.latent_channels = 4;
        hp.codebook_size = 16;
        hp.mels = 16;
        hp.frames = 32;
        hp.bottleneck = which == 1 ? RMX_AE_VQ : RMX_AE_KL;
    }
    return hp;
}

static const char *config_name(int which) {
    return which == 0 ? "small kl" : which == 1 ? "small vq" : "bench kl (micro-batch 2)";
}

static outcome run(rmx_backend *be, int which) {
    static const int64_t samples[4] = {3, 8, 100, 5};
    rmx_ae_hparams hp = config(which);
    int m = hp.micro_batch;
    rmx_ae *ae = create_or_die(be, &hp, 77);
    size_t per = (size_t)hp.mels * hp.frames, count = 2 * (size_t)m * per;
    float *xh = malloc(count * sizeof *xh);
    fill_uniform(xh, count, 21);
    float *x = backend_input(be, xh, count), *dx = be->alloc(be, count * sizeof(float));
    float *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof(float));
    float *sumsq = be->alloc(be, sizeof(float));
    if (hp.bottleneck == RMX_AE_VQ) {
        rmx_params *s = rmx_ae_state(ae);
        size_t kd = (size_t)hp.codebook_size * hp.latent_channels;
        float *cb = malloc(kd * sizeof *cb);
        fill_uniform(cb, kd, 6);
        for (size_t i = 0; i < kd; i++) cb[i] *= 0.3f;
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.codebook")), cb, kd * sizeof *cb);
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.ema_sum")), cb, kd * sizeof *cb);
        free(cb);
    }
    outcome o;
    memset(&o, 0, sizeof o);
    o.count = count;
    rmx_ae_step_begin(ae);
    for (int mb = 0; mb < 2; mb++)
        rmx_ae_forward_backward(ae, m, x + (size_t)mb * m * per, dx + (size_t)mb * m * per,
                                samples + 2 * mb, 4, 2, 1.0f / (2 * m), terms);
    rmx_params *p = rmx_ae_params(ae);
    o.span = p->span;
    o.grad = host_copy(be, p->grad, p->span);
    o.dx = host_copy(be, dx, count);
    be->to_host(be, o.terms, terms, sizeof o.terms);
    if (hp.bottleneck == RMX_AE_VQ) {
        float *stats = rmx_ae_vq_stats(ae, &o.stats_count);
        o.stats = host_copy(be, stats, o.stats_count);
        int lc, lh, lw;
        rmx_ae_latent_shape(ae, &lc, &lh, &lw);
        o.positions = (size_t)m * lh * lw;
        o.codes = host_copy_ints(be, rmx_ae_vq_codes(ae), o.positions); /* the last micro-batch */
        rmx_ae_vq_restart_settle(ae);
        rmx_ae_vq_apply_ema(ae, NULL);
        rmx_params *s = rmx_ae_state(ae);
        int id = rmx_params_find(s, "vq.codebook");
        o.codebook_count = rmx_params_get(s, id)->numel;
        o.codebook = host_copy(be, rmx_params_data(s, id), o.codebook_count);
    }
    be->sumsq(be, p->span, p->grad, sumsq);
    be->to_host(be, &o.sumsq, sumsq, sizeof o.sumsq);
    rmx_adamw_hparams ah = {LR, 0.9f, 0.999f, 1e-8f, 0.01f, 1};
    be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
    o.param = host_copy(be, p->data, p->span);
    o.xhat = host_copy(be, rmx_ae_forward(ae, m, x, 0.5f, NULL), (size_t)m * per);
    be->free(be, x);
    be->free(be, dx);
    be->free(be, terms);
    be->free(be, sumsq);
    free(xh);
    rmx_ae_free(ae);
    return o;
}

static void compare(int which, rmx_backend *cpu, const outcome *c, const outcome *g) {
    const char *name = config_name(which);
    for (int t = 0; t < RMX_AE_N_LOSS; t++)
        CHECK(fabs(c->terms[t] - g->terms[t]) <= 1e-4 * fabs(c->terms[t]) + 1e-7,
              "%s: loss term %d: cpu %.9g cuda %.9g", name, t, c->terms[t], g->terms[t]);
    CHECK(fabs(c->sumsq - g->sumsq) <= 1e-4 * fabs(c->sumsq), "%s: gradient sumsq cpu %.9g cuda %.9g",
          name, c->sumsq, g->sumsq);

    /* gradients and the AdamW step, per tensor (the registry of a throwaway model names them) */
    rmx_ae_hparams hp = config(which);
    rmx_ae *ae = create_or_die(cpu, &hp, 77);
    rmx_params *p = rmx_ae_params(ae);
    double floor = 1e-5 * max_abs(c->grad, c->span);
    size_t exempt = 0;
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        const float *gc = c->grad + t->offset, *gg = g->grad + t->offset;
        const float *pc = c->param + t->offset, *pg = g->param + t->offset;
        double scale = fmax(max_abs(gc, t->numel), 1e-8), worst = 0, worst_p = 0;
        double band = 1e-3 * scale + floor; /* the gradient comparison's tolerance */
        for (size_t e = 0; e < t->numel; e++) {
            worst = fmax(worst, fabs((double)gc[e] - gg[e]));
            if (fabs(gc[e]) <= band) { /* the sign is not determined within tolerance */
                exempt++;
                continue;
            }
            worst_p = fmax(worst_p, fabs((double)pc[e] - pg[e]));
        }
        CHECK(worst <= band, "%s: gradient of %s differs by %g (scale %g)", name,
              t->name, worst, scale);
        CHECK(worst_p <= 1e-6 + 1e-3 * LR, "%s: %s after AdamW differs by %g", name, t->name, worst_p);
    }
    printf("%s: %d tensors compared, %zu of %zu parameters with a gradient within tolerance of 0 exempt "
           "from the AdamW comparison\n", name, p->count, exempt, p->numel);
    rmx_ae_free(ae);

    double sdx = fmax(max_abs(c->dx, c->count), 1e-12), wdx = 0;
    for (size_t i = 0; i < c->count; i++) wdx = fmax(wdx, fabs((double)c->dx[i] - g->dx[i]));
    CHECK(wdx <= 1e-3 * sdx, "%s: input gradient differs by %g (scale %g)", name, wdx, sdx);
    size_t nx = c->count / 2;
    double sx = fmax(max_abs(c->xhat, nx), 1e-12), wx = 0;
    for (size_t i = 0; i < nx; i++) wx = fmax(wx, fabs((double)c->xhat[i] - g->xhat[i]));
    CHECK(wx <= 1e-3 * sx, "%s: reconstruction differs by %g (scale %g)", name, wx, sx);

    if (c->stats) {
        size_t differ = 0;
        for (size_t q = 0; q < c->positions; q++) differ += c->codes[q] != g->codes[q];
        CHECK(differ * 100 <= c->positions, "%s: %zu of %zu codes differ", name, differ, c->positions);
        if (differ == 0) {
            int k = hp.codebook_size;
            CHECK(!memcmp(c->stats, g->stats, (size_t)k * sizeof(float)), "%s: code counts differ", name);
            double ss = max_abs(c->stats + k, (size_t)k * hp.latent_channels), ws = 0, wb = 0;
            for (size_t i = 0; i < (size_t)k * hp.latent_channels; i++)
                ws = fmax(ws, fabs((double)c->stats[k + i] - g->stats[k + i]));
            for (size_t i = 0; i < c->codebook_count; i++)
                wb = fmax(wb, fabs((double)c->codebook[i] - g->codebook[i]));
            CHECK(ws <= 1e-4 * ss, "%s: code sums differ by %g (scale %g)", name, ws, ss);
            CHECK(wb <= 1e-4 * fmax(max_abs(c->codebook, c->codebook_count), 1e-12),
                  "%s: codebook after the EMA update differs by %g", name, wb);
        }
    }
    printf("%s: rec cpu %.7g cuda %.7g, gradient sumsq cpu %.7g cuda %.7g\n", name, c->terms[0],
           g->terms[0], c->sumsq, g->sumsq);
}

static void free_outcome(outcome *o) {
    free(o->grad);
    free(o->param);
    free(o->dx);
    free(o->xhat);
    free(o->stats);
    free(o->codebook);
    free(o->codes);
}

int main(void) {
    rmx_backend *gpu = cuda_or_skip("cuda_model");
    rmx_backend *cpu = rmx_backend_cpu_create(0);
    for (int which = 0; which < 3; which++) {
        outcome c = run(cpu, which), g = run(gpu, which);
        compare(which, cpu, &c, &g);
        free_outcome(&c);
        free_outcome(&g);
    }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return test_finish("cuda_model");
}
