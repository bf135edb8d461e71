/* The cpu backend (OpenBLAS + OpenMP) runs the whole autoencoder like the reference backend:
 * same losses, gradients, input gradients, reconstructions and vq statistics within float
 * tolerance (the summation orders differ). */
#include "model_test.h"

#define M 2

typedef struct {
    float terms[RMX_AE_N_LOSS];
    float *grad, *dx, *xhat, *stats;
    size_t span, stats_count;
} outcome;

static rmx_ae_hparams small_hparams(rmx_ae_bottleneck bottleneck) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    hp.channels = 8;
    hp.latent_channels = 4;
    hp.bottleneck = bottleneck;
    hp.codebook_size = 16;
    hp.mels = 16;
    hp.frames = 32;
    hp.micro_batch = M;
    return hp;
}

static outcome run(rmx_backend *be, rmx_ae_bottleneck bottleneck) {
    static const int64_t samples[M] = {3, 8};
    rmx_ae_hparams hp = small_hparams(bottleneck);
    rmx_ae *ae = create_or_die(be, &hp, 77);
    size_t count = (size_t)M * hp.mels * hp.frames;
    float *xh = malloc(count * sizeof *xh);
    fill_uniform(xh, count, 21);
    float *x = backend_input(be, xh, count), *dx = be->alloc(be, count * sizeof(float));
    float *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof(float));
    if (bottleneck == RMX_AE_VQ) {
        rmx_params *s = rmx_ae_state(ae);
        float cb[16 * 4];
        fill_uniform(cb, 64, 6);
        for (int i = 0; i < 64; i++) cb[i] *= 0.3f;
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.codebook")), cb, sizeof cb);
    }
    outcome o;
    memset(&o, 0, sizeof o);
    rmx_ae_step_begin(ae);
    rmx_ae_forward_backward(ae, M, x, dx, samples, 4, 2, 0.5f, terms);
    rmx_params *p = rmx_ae_params(ae);
    o.span = p->span;
    o.grad = host_copy(be, p->grad, p->span);
    o.dx = host_copy(be, dx, count);
    be->to_host(be, o.terms, terms, sizeof o.terms);
    if (bottleneck == RMX_AE_VQ) o.stats = host_copy(be, rmx_ae_vq_stats(ae, &o.stats_count), 16);
    o.xhat = host_copy(be, rmx_ae_forward(ae, M, x, 0.5f, NULL), count);
    be->free(be, x);
    be->free(be, dx);
    be->free(be, terms);
    free(xh);
    rmx_ae_free(ae);
    return o;
}

/* Per tensor, relative to the tensor's largest magnitude (sgemm sums in another order), plus a
 * floor relative to the largest gradient anywhere: a conv bias right before a GroupNorm whose
 * groups hold one channel has an exactly-zero true gradient, so both backends return rounding
 * noise there. */
static void compare_grads(const char *what, rmx_backend *ref, const outcome *a, const outcome *b,
                          rmx_ae_bottleneck bottleneck) {
    rmx_ae_hparams hp = small_hparams(bottleneck);
    rmx_ae *ae = create_or_die(ref, &hp, 77);
    rmx_params *p = rmx_ae_params(ae);
    double floor = 1e-5 * max_abs(a->grad, a->span);
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        const float *ga = a->grad + t->offset, *gb = b->grad + t->offset;
        double scale = fmax(max_abs(ga, t->numel), 1e-8), worst = 0;
        for (size_t e = 0; e < t->numel; e++) worst = fmax(worst, fabs((double)ga[e] - gb[e]));
        CHECK(worst <= 1e-3 * scale + floor, "%s: %s differs by %g (scale %g)", what, t->name,
              worst, scale);
    }
    rmx_ae_free(ae);
}

static void compare_arrays(const char *what, const float *a, const float *b, size_t n) {
    double scale = fmax(max_abs(a, n), 1e-8), worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    CHECK(worst <= 1e-3 * scale, "%s differs by %g (scale %g)", what, worst, scale);
}

static void free_outcome(outcome *o) {
    free(o->grad);
    free(o->dx);
    free(o->xhat);
    free(o->stats);
}

int main(void) {
    rmx_backend *ref = rmx_backend_ref_create(), *cpu = rmx_backend_cpu_create(2);
    for (int b = 0; b < 2; b++) {
        rmx_ae_bottleneck bottleneck = b ? RMX_AE_VQ : RMX_AE_KL;
        const char *name = b ? "vq" : "kl";
        outcome r = run(ref, bottleneck), c = run(cpu, bottleneck);
        printf("%s: rec ref %.7g cpu %.7g\n", name, r.terms[0], c.terms[0]);
        for (int t = 0; t < RMX_AE_N_LOSS; t++)
            CHECK(fabs(r.terms[t] - c.terms[t]) <= 1e-4 * fabs(r.terms[t]) + 1e-7,
                  "%s: loss term %d: ref %g cpu %g", name, t, r.terms[t], c.terms[t]);
        compare_grads(name, ref, &r, &c, bottleneck);
        size_t count = (size_t)M * 16 * 32;
        compare_arrays("input gradient", r.dx, c.dx, count);
        compare_arrays("reconstruction", r.xhat, c.xhat, count);
        if (r.stats) CHECK(memcmp(r.stats, c.stats, 16 * sizeof(float)) == 0, "%s: code counts", name);
        free_outcome(&r);
        free_outcome(&c);
    }
    ref->destroy(ref);
    cpu->destroy(cpu);
    return test_finish("model_cpu_vs_ref");
}
