/* Micro-batch invariance, which world-size invariance rests on: one micro-batch of 2 samples and
 * two micro-batches of 1 (on a model whose arena holds only 1) accumulate the same gradients,
 * losses, vq statistics and restart candidates. Also: the frozen mode. */
#include "model_test.h"

typedef struct {
    float *grad, *dx, *stats, terms[RMX_AE_N_LOSS];
    uint32_t priority[8];
    size_t span, stats_count;
} step_result;

static const int64_t kSamples[2] = {40, 7};

/* One step over both samples, split into micro-batches of `micro` samples. */
static step_result run_step(rmx_backend *be, rmx_ae_bottleneck bottleneck, int micro,
                            const float *x_host, size_t per_sample) {
    rmx_ae_hparams hp = tiny_hparams(bottleneck, micro);
    rmx_ae *ae = create_or_die(be, &hp, 2024);
    step_result r;
    memset(&r, 0, sizeof r);
    float *x = backend_input(be, x_host, 2 * per_sample);
    float *dx = be->alloc(be, 2 * per_sample * sizeof(float));
    float *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof(float));
    rmx_ae_step_begin(ae);
    for (int first = 0; first < 2; first += micro)
        rmx_ae_forward_backward(ae, micro, x + first * per_sample, dx + first * per_sample,
                                kSamples + first, 11, 6, 0.5f, terms);
    rmx_params *p = rmx_ae_params(ae);
    r.span = p->span;
    r.grad = host_copy(be, p->grad, p->span);
    r.dx = host_copy(be, dx, 2 * per_sample);
    be->to_host(be, r.terms, terms, sizeof r.terms);
    if (bottleneck == RMX_AE_VQ) {
        float *stats = rmx_ae_vq_stats(ae, &r.stats_count);
        r.stats = host_copy(be, stats, r.stats_count);
        int k;
        memcpy(r.priority, rmx_ae_vq_restart_priority(ae, &k), sizeof r.priority);
    }
    be->free(be, x);
    be->free(be, dx);
    be->free(be, terms);
    rmx_ae_free(ae);
    return r;
}

static void free_result(step_result *r) {
    free(r->grad);
    free(r->dx);
    free(r->stats);
}

static void expect_close(const char *what, const float *a, const float *b, size_t n) {
    double scale = fmax(max_abs(a, n), 1e-12), worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    CHECK(worst <= 1e-5 * scale, "%s: largest difference %g (scale %g)", what, worst, scale);
}

static void test_split(rmx_backend *be, rmx_ae_bottleneck bottleneck) {
    rmx_ae_hparams hp = tiny_hparams(bottleneck, 2);
    size_t per_sample = (size_t)hp.mels * hp.frames;
    float x[2 * 64];
    fill_uniform(x, 2 * per_sample, 3);
    step_result whole = run_step(be, bottleneck, 2, x, per_sample);
    step_result split = run_step(be, bottleneck, 1, x, per_sample);
    const char *name = bottleneck == RMX_AE_KL ? "kl" : "vq";
    printf("%s: rec %.6g / %.6g\n", name, whole.terms[0], split.terms[0]);
    CHECK(max_abs(whole.grad, whole.span) > 0, "%s: no gradient at all", name);
    expect_close("gradients", whole.grad, split.grad, whole.span);
    expect_close("input gradients", whole.dx, split.dx, 2 * per_sample);
    expect_close("loss terms", whole.terms, split.terms, RMX_AE_N_LOSS);
    if (bottleneck == RMX_AE_VQ) {
        CHECK(whole.stats_count == split.stats_count, "stats sizes");
        expect_close("vq statistics", whole.stats, split.stats, whole.stats_count);
        CHECK(memcmp(whole.priority, split.priority, sizeof whole.priority) == 0,
              "restart priorities depend on the split");
    }
    free_result(&whole);
    free_result(&split);
}

static void test_frozen(rmx_backend *be) {
    rmx_ae_hparams hp = tiny_hparams(RMX_AE_KL, 2);
    size_t count = 2 * (size_t)hp.mels * hp.frames;
    float xh[2 * 64];
    fill_uniform(xh, count, 4);
    rmx_ae *ae = create_or_die(be, &hp, 5);
    rmx_params *p = rmx_ae_params(ae);
    float *x = backend_input(be, xh, count), *dx = be->alloc(be, count * sizeof(float));
    rmx_ae_step_begin(ae);
    rmx_ae_forward_backward(ae, 2, x, dx, kSamples, 1, 0, 0.5f, NULL);
    float *dx_trained = host_copy(be, dx, count);
    rmx_ae_set_frozen(ae, 1);
    rmx_ae_step_begin(ae);
    be->fill(be, dx, 0.0f, count);
    rmx_ae_forward_backward(ae, 2, x, dx, kSamples, 1, 0, 0.5f, NULL);
    float *grad = host_copy(be, p->grad, p->span), *dx_frozen = host_copy(be, dx, count);
    CHECK(max_abs(grad, p->span) == 0.0, "a frozen model must not touch its gradients");
    CHECK(max_abs(dx_frozen, count) > 0, "a frozen model still propagates input gradients");
    CHECK(memcmp(dx_trained, dx_frozen, count * sizeof(float)) == 0,
          "frozen input gradients differ from trained ones");
    free(grad);
    free(dx_trained);
    free(dx_frozen);
    be->free(be, x);
    be->free(be, dx);
    rmx_ae_free(ae);
}

/* The trainer starts a gradient bucket's all-reduce when the backward pass says its tensors are
 * final: every trained tensor must be announced exactly once per backward pass, after its
 * gradient is complete, and never when the model is frozen. */
typedef struct {
    int calls[256];
    const rmx_params *p;
    rmx_backend *be;
    int early; /* announced while its gradient was still zero (not yet accumulated) */
} announcements;

static void count_announcement(void *arg, int tensor) {
    announcements *a = arg;
    if (tensor < 0 || tensor >= 256) return;
    a->calls[tensor]++;
    const rmx_param_info *info = rmx_params_get(a->p, tensor);
    float *g = host_copy(a->be, rmx_params_grad(a->p, tensor), info->numel);
    if (max_abs(g, info->numel) == 0.0) a->early++;
    free(g);
}

static void test_grad_ready(rmx_backend *be, rmx_ae_bottleneck bottleneck) {
    rmx_ae_hparams hp = tiny_hparams(bottleneck, 2);
    size_t count = 2 * (size_t)hp.mels * hp.frames;
    float xh[2 * 64];
    fill_uniform(xh, count, 6);
    rmx_ae *ae = create_or_die(be, &hp, 7);
    announcements a = {.p = rmx_ae_params(ae), .be = be};
    rmx_ae_set_grad_ready(ae, count_announcement, &a);
    float *x = backend_input(be, xh, count);
    rmx_ae_step_begin(ae);
    rmx_ae_forward_backward(ae, 2, x, NULL, kSamples, 1, 0, 0.5f, NULL);
    for (int i = 0; i < a.p->count; i++)
        CHECK(a.calls[i] == 1, "%s announced %d times in one backward pass", rmx_params_get(a.p, i)->name,
              a.calls[i]);
    /* A tensor whose final gradient is exactly zero cannot show when it was announced; every other
     * one must have had its gradient in place already. */
    int zero_at_end = 0;
    for (int i = 0; i < a.p->count; i++) {
        const rmx_param_info *info = rmx_params_get(a.p, i);
        float *g = host_copy(be, rmx_params_grad(a.p, i), info->numel);
        zero_at_end += max_abs(g, info->numel) == 0.0;
        free(g);
    }
    CHECK(a.early == zero_at_end, "%d tensors announced before their gradient was accumulated",
          a.early - zero_at_end);
    memset(a.calls, 0, sizeof a.calls);
    rmx_ae_set_frozen(ae, 1);
    rmx_ae_forward_backward(ae, 2, x, NULL, kSamples, 1, 0, 0.5f, NULL);
    for (int i = 0; i < a.p->count; i++) CHECK(a.calls[i] == 0, "a frozen model announced a gradient");
    be->free(be, x);
    rmx_ae_free(ae);
}

int main(void) {
    rmx_backend *be = rmx_backend_ref_create();
    test_split(be, RMX_AE_KL);
    test_split(be, RMX_AE_VQ);
    test_frozen(be);
    test_grad_ready(be, RMX_AE_KL);
    test_grad_ready(be, RMX_AE_VQ);
    be->destroy(be);
    return test_finish("model_microbatch");
}
