/* Determinism of the cuda backend: the training step's reductions have a fixed order (no atomics
 * in a loss, a norm or a gradient sum), so
 *   - two runs of the same steps give bit-identical parameters, Adam moments, gradients, loss
 *     terms and (vq) codebooks;
 *   - a run interrupted after step 2 and resumed from a host copy of its state (parameters, Adam
 *     m and v, the vq state: what a checkpoint holds) repeats the uninterrupted run bit for bit.
 * Configurations: a kl model with several levels and a vq model, two micro-batches a step. */
#include "cuda_test.h"
#include "model_test.h"

#define STEPS 4

typedef struct {
    float *param, *m, *v, *grad, *state;
    float terms[STEPS][RMX_AE_N_LOSS];
    size_t span, state_span;
} trace;

static rmx_ae_hparams config(rmx_ae_bottleneck bottleneck) {
    rmx_ae_hparams hp;
    rmx_ae_hparams_default(&hp);
    hp.channels = 16;
    hp.latent_channels = 4;
    hp.codebook_size = 32;
    hp.mels = 32;
    hp.frames = 64;
    hp.micro_batch = 2;
    hp.bottleneck = bottleneck;
    return hp;
}

/* Steps [first, last) of a run; `from` (may be NULL) is the state to resume from. */
static trace run(rmx_backend *be, rmx_ae_bottleneck bottleneck, int first, int last, const trace *from) {
    rmx_ae_hparams hp = config(bottleneck);
    rmx_ae *ae = create_or_die(be, &hp, 5);
    rmx_params *p = rmx_ae_params(ae), *s = rmx_ae_state(ae);
    if (from) {
        be->to_backend(be, p->data, from->param, p->span * sizeof(float));
        be->to_backend(be, p->m, from->m, p->span * sizeof(float));
        be->to_backend(be, p->v, from->v, p->span * sizeof(float));
        if (s->count) be->to_backend(be, s->data, from->state, s->span * sizeof(float));
    }
    int m = hp.micro_batch;
    size_t per = (size_t)hp.mels * hp.frames, count = 2 * (size_t)m * per;
    float *xh = malloc(count * sizeof *xh);
    float *x = be->alloc(be, count * sizeof(float)), *terms = be->alloc(be, RMX_AE_N_LOSS * sizeof(float));
    trace tr;
    memset(&tr, 0, sizeof tr);
    for (int step = first; step < last; step++) {
        fill_uniform(xh, count, 100 + (uint64_t)step); /* the step's data: a function of the step */
        be->to_backend(be, x, xh, count * sizeof(float));
        int64_t samples[4] = {4 * step, 4 * step + 1, 4 * step + 2, 4 * step + 3};
        be->fill(be, terms, 0.0f, RMX_AE_N_LOSS);
        rmx_ae_step_begin(ae);
        for (int mb = 0; mb < 2; mb++)
            rmx_ae_forward_backward(ae, m, x + (size_t)mb * m * per, NULL, samples + 2 * mb, 9, step,
                                    1.0f / (2 * m), terms);
        rmx_ae_vq_restart_settle(ae);
        rmx_ae_vq_apply_ema(ae, NULL);
        be->to_host(be, tr.terms[step], terms, sizeof tr.terms[step]);
        rmx_adamw_hparams ah = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step + 1};
        be->adamw(be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &ah);
    }
    tr.span = p->span;
    tr.param = host_copy(be, p->data, p->span);
    tr.m = host_copy(be, p->m, p->span);
    tr.v = host_copy(be, p->v, p->span);
    tr.grad = host_copy(be, p->grad, p->span);
    tr.state_span = s->count ? s->span : 0;
    tr.state = s->count ? host_copy(be, s->data, s->span) : NULL;
    be->free(be, x);
    be->free(be, terms);
    free(xh);
    rmx_ae_free(ae);
    return tr;
}

static void free_trace(trace *t) {
    free(t->param);
    free(t->m);
    free(t->v);
    free(t->grad);
    free(t->state);
}

static int same(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

static void test(rmx_backend *be, rmx_ae_bottleneck bottleneck) {
    const char *name = bottleneck == RMX_AE_KL ? "kl" : "vq";
    trace a = run(be, bottleneck, 0, STEPS, NULL), b = run(be, bottleneck, 0, STEPS, NULL);
    CHECK(same(a.param, b.param, a.span) && same(a.m, b.m, a.span) && same(a.v, b.v, a.span),
          "%s: two runs: parameters or Adam moments differ", name);
    CHECK(same(a.grad, b.grad, a.span), "%s: two runs: last gradients differ", name);
    CHECK(!memcmp(a.terms, b.terms, sizeof a.terms), "%s: two runs: loss terms differ", name);
    CHECK(a.state_span == b.state_span && (!a.state || same(a.state, b.state, a.state_span)),
          "%s: two runs: vq state differs", name);

    trace half = run(be, bottleneck, 0, STEPS / 2, NULL);
    trace rest = run(be, bottleneck, STEPS / 2, STEPS, &half);
    CHECK(same(a.param, rest.param, a.span) && same(a.m, rest.m, a.span) && same(a.v, rest.v, a.span),
          "%s: resumed run: parameters or Adam moments differ from the uninterrupted run", name);
    CHECK(!memcmp(a.terms[STEPS - 1], rest.terms[STEPS - 1], sizeof a.terms[0]),
          "%s: resumed run: last loss terms differ", name);
    CHECK(!a.state || same(a.state, rest.state, a.state_span), "%s: resumed run: vq state differs", name);
    printf("%s: %d steps, rec loss of the last step %.9g (run 2: %.9g, resumed: %.9g)\n", name, STEPS,
           a.terms[STEPS - 1][RMX_AE_LOSS_REC], b.terms[STEPS - 1][RMX_AE_LOSS_REC],
           rest.terms[STEPS - 1][RMX_AE_LOSS_REC]);
    free_trace(&a);
    free_trace(&b);
    free_trace(&half);
    free_trace(&rest);
}

int main(void) {
    rmx_backend *gpu = cuda_or_skip("cuda_determinism");
    test(gpu, RMX_AE_KL);
    test(gpu, RMX_AE_VQ);
    gpu->destroy(gpu);
    return test_finish("cuda_determinism");
}
