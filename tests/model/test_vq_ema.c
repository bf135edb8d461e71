/* The vq codebook: perplexity, the EMA update moving codes toward their encoder outputs, and
 * dead-code restarts that are deterministic and independent of how the step's samples are spread
 * over ranks (two emulated ranks agree with one). */
#include "model_test.h"

#define K 8
#define D 2

static const int64_t kSamples[2] = {123, 45};
static const uint64_t kSeed = 31;
static const int64_t kStep = 9;

static void test_perplexity(void) {
    float counts[16];
    for (int i = 0; i < 16; i++) counts[i] = 3.0f;
    CHECK(fabs(rmx_vq_perplexity(counts, 16) - 16.0) < 1e-9, "uniform usage: %g",
          rmx_vq_perplexity(counts, 16));
    memset(counts, 0, sizeof counts);
    CHECK(rmx_vq_perplexity(counts, 16) == 0.0, "no usage");
    counts[5] = 10.0f;
    CHECK(fabs(rmx_vq_perplexity(counts, 16) - 1.0) < 1e-12, "one code");
    counts[9] = 10.0f;
    CHECK(fabs(rmx_vq_perplexity(counts, 16) - 2.0) < 1e-12, "two codes");
}

typedef struct {
    rmx_backend *be;
    rmx_ae *ae;
    rmx_ae_hparams hp;
    float *x;
    size_t per_sample;
} vq_run;

static void run_init(vq_run *r, rmx_backend *be, int micro, float threshold, int spread_codes) {
    r->be = be;
    r->hp = tiny_hparams(RMX_AE_VQ, micro);
    r->hp.dead_code_threshold = threshold;
    r->ae = create_or_die(be, &r->hp, 8);
    r->per_sample = (size_t)r->hp.mels * r->hp.frames;
    float xh[2 * 64];
    fill_uniform(xh, 2 * r->per_sample, 12);
    r->x = backend_input(be, xh, 2 * r->per_sample);
    if (spread_codes) {
        rmx_params *s = rmx_ae_state(r->ae);
        float cb[K * D];
        fill_uniform(cb, K * D, 5);
        for (int i = 0; i < K * D; i++) cb[i] *= 0.4f;
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.codebook")), cb, sizeof cb);
        be->to_backend(be, rmx_params_data(s, rmx_params_find(s, "vq.ema_sum")), cb, sizeof cb);
    }
}

static void run_free(vq_run *r) {
    r->be->free(r->be, r->x);
    rmx_ae_free(r->ae);
}

/* Micro-batches over samples [first, first + count). */
static void run_samples(vq_run *r, int first, int count) {
    int m = r->hp.micro_batch;
    for (int i = first; i < first + count; i += m)
        rmx_ae_forward_backward(r->ae, m, r->x + i * r->per_sample, NULL, kSamples + i, kSeed,
                                kStep, 0.5f, NULL);
}

static float *state_tensor(vq_run *r, const char *name, size_t n) {
    rmx_params *s = rmx_ae_state(r->ae);
    return host_copy(r->be, rmx_params_data(s, rmx_params_find(s, name)), n);
}

static float *whole_state(vq_run *r) {
    rmx_params *s = rmx_ae_state(r->ae);
    return host_copy(r->be, s->data, s->span);
}

static void test_ema_moves_codes(rmx_backend *be) {
    vq_run r;
    run_init(&r, be, 2, 0.0f, 1);
    float *cb0 = state_tensor(&r, "vq.codebook", K * D);
    rmx_ae_step_begin(r.ae);
    run_samples(&r, 0, 2);
    size_t count;
    float *stats = host_copy(be, rmx_ae_vq_stats(r.ae, &count), K + K * D);
    const float *counts = stats, *sums = stats + K;
    int lc, lh, lw;
    rmx_ae_latent_shape(r.ae, &lc, &lh, &lw);
    double assigned = 0;
    for (int k = 0; k < K; k++) assigned += counts[k];
    CHECK(assigned == 2.0 * lh * lw, "every latent position is assigned once, got %g", assigned);

    rmx_ae_vq_restart_settle(r.ae);
    rmx_vq_report rep;
    rmx_ae_vq_apply_ema(r.ae, &rep);
    float *cb1 = state_tensor(&r, "vq.codebook", K * D);
    float *ema_count = state_tensor(&r, "vq.ema_count", K);

    /* The brief's EMA with Laplace smoothing, computed here from the statistics. */
    float decay = r.hp.ema_decay, eps = r.hp.ema_epsilon;
    double c1[K], total = 0;
    int used = 0;
    for (int k = 0; k < K; k++) {
        c1[k] = decay * 1.0 + (1 - decay) * counts[k];
        total += c1[k];
        used += counts[k] > 0;
    }
    int moved_closer = 0;
    for (int k = 0; k < K; k++) {
        CHECK(fabs(ema_count[k] - c1[k]) < 1e-5, "ema_count[%d] %g, want %g", k, ema_count[k], c1[k]);
        double smoothed = (c1[k] + eps) / (total + K * eps) * total;
        double d0 = 0, d1 = 0;
        for (int j = 0; j < D; j++) {
            double s1 = decay * cb0[k * D + j] + (1 - decay) * sums[k * D + j];
            double want = s1 / smoothed;
            CHECK(fabs(cb1[k * D + j] - want) < 1e-5, "codebook[%d][%d] %g, want %g", k, j,
                  cb1[k * D + j], want);
            if (counts[k] > 0) {
                double mean = sums[k * D + j] / counts[k];
                d0 += (cb0[k * D + j] - mean) * (cb0[k * D + j] - mean);
                d1 += (cb1[k * D + j] - mean) * (cb1[k * D + j] - mean);
            }
        }
        if (counts[k] > 0) {
            CHECK(d1 < d0, "code %d moved away from its encoder outputs (%g -> %g)", k, d0, d1);
            moved_closer++;
        }
    }
    CHECK(moved_closer >= 2, "only %d codes in use", moved_closer);
    CHECK(rep.codes_used == used, "report says %d used, stats %d", rep.codes_used, used);
    CHECK(rep.codes_restarted == 0, "threshold 0 restarts nothing");
    CHECK(fabs(rep.perplexity - rmx_vq_perplexity(counts, K)) < 1e-9, "perplexity %g",
          rep.perplexity);
    free(stats);
    free(cb0);
    free(cb1);
    free(ema_count);
    run_free(&r);
}

/* One step (both samples, micro-batch `micro`) with restarts; returns the whole state. */
static float *restart_step(rmx_backend *be, int micro, rmx_vq_report *rep, float **ze_out,
                           float *counts_out) {
    vq_run r;
    run_init(&r, be, micro, 1.0f, 0);
    rmx_ae_step_begin(r.ae);
    run_samples(&r, 0, 2);
    rmx_ae_vq_restart_settle(r.ae);
    size_t count;
    float *counts = host_copy(be, rmx_ae_vq_stats(r.ae, &count), K);
    rmx_ae_vq_apply_ema(r.ae, rep);
    if (ze_out) {
        /* The encoder outputs of the step (the parameters have not changed). */
        int lc, lh, lw;
        rmx_ae_latent_shape(r.ae, &lc, &lh, &lw);
        size_t per = (size_t)lc * lh * lw;
        *ze_out = malloc(2 * per * sizeof(float));
        for (int i = 0; i < 2; i++) {
            const float *ze = rmx_ae_encoder_forward(r.ae, 1, r.x + i * r.per_sample);
            be->to_host(be, *ze_out + i * per, ze, per * sizeof(float));
        }
        int unused = 0;
        for (int k = 0; k < K; k++) unused += counts[k] == 0;
        CHECK(rep->codes_restarted == unused, "restarted %d, unused %d", rep->codes_restarted,
              unused);
    }
    if (counts_out) memcpy(counts_out, counts, K * sizeof(float));
    free(counts);
    float *state = whole_state(&r);
    run_free(&r);
    return state;
}

static void test_restarts(rmx_backend *be) {
    rmx_vq_report rep1, rep2;
    float *ze;
    float counts[K];
    float *a = restart_step(be, 2, &rep1, &ze, counts);
    float *b = restart_step(be, 2, &rep2, NULL, NULL);
    vq_run probe;
    run_init(&probe, be, 2, 1.0f, 0);
    rmx_params *s = rmx_ae_state(probe.ae);
    size_t span = s->span;
    size_t cb_offset = rmx_params_get(s, rmx_params_find(s, "vq.codebook"))->offset;
    size_t cnt_offset = rmx_params_get(s, rmx_params_find(s, "vq.ema_count"))->offset;
    int lc, lh, lw;
    rmx_ae_latent_shape(probe.ae, &lc, &lh, &lw);
    int hw = lh * lw;
    run_free(&probe);

    printf("restart step: %d codes used, %d restarted, perplexity %.3f\n", rep1.codes_used,
           rep1.codes_restarted, rep1.perplexity);
    CHECK(rep1.codes_restarted > 0, "the default init leaves dead codes to restart");
    CHECK(memcmp(a, b, span * sizeof(float)) == 0, "restarts are not deterministic");

    /* Each restarted code holds the z_e vector the rule picks: highest priority over the step's
     * samples, at the position drawn for that (sample, code). */
    const float *cb = a + cb_offset, *cnt = a + cnt_offset;
    int verified = 0;
    for (int k = 0; k < K; k++) {
        if (counts[k] > 0) continue; /* used this step: EMA-updated, not dead */
        CHECK(cnt[k] == 1.0f, "restarted code %d has ema_count %g, want 1", k, cnt[k]);
        uint32_t best = 0;
        int pick_sample = -1, pick_pos = -1;
        for (int i = 0; i < 2; i++) {
            philox4x32_ctr_t r = rmx_philox(kSeed, RMX_RNG_CODE_RESTART, (uint64_t)kStep,
                                            (uint64_t)kSamples[i], (uint32_t)k);
            if ((r.v[0] | 1u) > best) {
                best = r.v[0] | 1u;
                pick_sample = i;
                pick_pos = (int)(r.v[1] % (uint32_t)hw);
            }
        }
        for (int j = 0; j < D; j++) {
            float want = ze[(size_t)pick_sample * D * hw + (size_t)j * hw + pick_pos];
            CHECK(cb[k * D + j] == want, "code %d dim %d: %g, picked z_e %g", k, j, cb[k * D + j],
                  want);
        }
        verified++;
    }
    CHECK(verified == rep1.codes_restarted, "%d restarted codes verified of %d", verified,
          rep1.codes_restarted);

    /* The same step on two emulated ranks of one sample each: MAX over priorities, settle, SUM
     * over statistics, apply. Both ranks must end with the same state as the single run. */
    vq_run rank[2];
    size_t count = 0;
    for (int i = 0; i < 2; i++) {
        run_init(&rank[i], be, 1, 1.0f, 0);
        rmx_ae_step_begin(rank[i].ae);
        run_samples(&rank[i], i, 1);
    }
    int codes;
    uint32_t *p0 = rmx_ae_vq_restart_priority(rank[0].ae, &codes);
    uint32_t *p1 = rmx_ae_vq_restart_priority(rank[1].ae, &codes);
    CHECK(codes == K, "priority length %d", codes);
    for (int k = 0; k < K; k++) p0[k] = p1[k] = p0[k] > p1[k] ? p0[k] : p1[k];
    for (int i = 0; i < 2; i++) rmx_ae_vq_restart_settle(rank[i].ae);
    float *st0 = rmx_ae_vq_stats(rank[0].ae, &count), *st1 = rmx_ae_vq_stats(rank[1].ae, &count);
    float *h0 = host_copy(be, st0, count), *h1 = host_copy(be, st1, count);
    for (size_t j = 0; j < count; j++) h0[j] += h1[j];
    be->to_backend(be, st0, h0, count * sizeof(float));
    be->to_backend(be, st1, h0, count * sizeof(float));
    float *final[2];
    for (int i = 0; i < 2; i++) {
        rmx_vq_report rep;
        rmx_ae_vq_apply_ema(rank[i].ae, &rep);
        CHECK(rep.codes_restarted == rep1.codes_restarted, "rank %d restarted %d, single run %d", i,
              rep.codes_restarted, rep1.codes_restarted);
        final[i] = whole_state(&rank[i]);
    }
    CHECK(memcmp(final[0], final[1], span * sizeof(float)) == 0, "the two ranks disagree");
    double worst = 0;
    for (size_t j = 0; j < span; j++) worst = fmax(worst, fabs((double)final[0][j] - a[j]));
    CHECK(worst < 1e-6, "two ranks differ from one by %g", worst);
    for (int i = 0; i < 2; i++) {
        free(final[i]);
        run_free(&rank[i]);
    }
    free(h0);
    free(h1);
    free(a);
    free(b);
    free(ze);
}

int main(void) {
    rmx_backend *be = rmx_backend_ref_create();
    test_perplexity();
    test_ema_moves_codes(be);
    test_restarts(be);
    be->destroy(be);
    return test_finish("model_vq_ema");
}
