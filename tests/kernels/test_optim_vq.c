/* AdamW and the vector quantiser against values computed by hand (in double, in this file),
 * for both backends. */
#include "ktest.h"

/* Three AdamW steps on six elements, the first three with weight decay, against the textbook
 * formula: p <- p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps). */
static void adamw_check(rmx_backend *be) {
    enum { N = 6, NDECAY = 3 };
    float p[N] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f}, m[N] = {0}, v[N] = {0};
    double pd[N], md[N] = {0}, vd[N] = {0};
    for (int i = 0; i < N; i++) pd[i] = p[i];
    const float grads[3][N] = {{0.1f, -0.2f, 0.3f, 0.0f, 1.0f, -0.5f},
                               {0.2f, 0.1f, -0.3f, 0.4f, -1.0f, 0.5f},
                               {-0.1f, 0.0f, 0.05f, 0.4f, 2.0f, 0.25f}};
    double err = 0.0;
    for (int t = 1; t <= 3; t++) {
        rmx_adamw_hparams hp = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, t};
        be->adamw(be, N, NDECAY, p, grads[t - 1], m, v, &hp);
        /* the hyper-parameters as the kernel receives them: floats, widened */
        double lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
        for (int i = 0; i < N; i++) {
            double g = grads[t - 1][i];
            md[i] = b1 * md[i] + (1.0 - b1) * g;
            vd[i] = b2 * vd[i] + (1.0 - b2) * g * g;
            double mhat = md[i] / (1.0 - pow(b1, t)), vhat = vd[i] / (1.0 - pow(b2, t));
            if (i < NDECAY) pd[i] *= 1.0 - lr * wd;
            pd[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
    }
    for (int i = 0; i < N; i++) {
        err = fmax(err, fabs(p[i] - pd[i]) / fmax(1.0, fabs(pd[i])));
        err = fmax(err, fabs(m[i] - md[i]) / fmax(1e-3, fabs(md[i])));
        err = fmax(err, fabs(v[i] - vd[i]) / fmax(1e-6, fabs(vd[i])));
    }
    char line[128];
    snprintf(line, sizeof line, "%s adamw 3 steps, n_decay 3 of 6: param, m, v vs formula", be->name);
    kt_report(line, err, 2e-6);
    /* the split: elements past n_decay are the same as with weight decay 0 */
    float p2[N] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f}, m2[N] = {0}, v2[N] = {0};
    float p3[N], m3[N] = {0}, v3[N] = {0};
    memcpy(p3, p2, sizeof p2);
    rmx_adamw_hparams hp = {0.01f, 0.9f, 0.999f, 1e-8f, 0.5f, 1}, hp0 = hp;
    hp0.weight_decay = 0.0f;
    be->adamw(be, N, NDECAY, p2, grads[0], m2, v2, &hp);
    be->adamw(be, N, 0, p3, grads[0], m3, v3, &hp0);
    int ok = !memcmp(p2 + NDECAY, p3 + NDECAY, sizeof(float) * (N - NDECAY));
    for (int i = 0; i < NDECAY; i++) ok = ok && p2[i] != p3[i];
    snprintf(line, sizeof line, "%s adamw: decay only on [0, n_decay)", be->name);
    kt_expect(ok, line);
}

/* Codebook (d = 2): e0 = (0, 0), e1 = (1, 0), e2 = (0, 2). Points chosen with exact binary
 * distances, including ties. */
static void vq_check(rmx_backend *be) {
    enum { D = 2, K = 3, HW = 5, NB = 2 };
    const float cb[K * D] = {0, 0, 1, 0, 0, 2};
    const float px[HW] = {0.4f, 0.5f, 0.5f, 0.9f, 2.0f}, py[HW] = {0.0f, 0.0f, 1.0f, 1.9f, 1.75f};
    /* nearest: 0; tie 0/1 -> 0; tie of all three -> 0; 2; tie 1/2 (both 4.0625, e0 7.0625) -> 1 */
    const int32_t want[HW] = {0, 0, 0, 2, 1};
    float ze[NB * D * HW], zq[NB * D * HW];
    int32_t idx[NB * HW];
    for (int b = 0; b < NB; b++) /* the second sample holds the points in reverse order */
        for (int p = 0; p < HW; p++) {
            int s = b ? HW - 1 - p : p;
            ze[(b * D + 0) * HW + p] = px[s];
            ze[(b * D + 1) * HW + p] = py[s];
        }
    be->vq_quantize(be, NB, D, HW, ze, cb, K, idx, zq);
    int ok = 1;
    for (int b = 0; b < NB; b++)
        for (int p = 0; p < HW; p++) {
            int s = b ? HW - 1 - p : p, code = want[s];
            ok = ok && idx[b * HW + p] == code;
            ok = ok && zq[(b * D + 0) * HW + p] == cb[code * D] && zq[(b * D + 1) * HW + p] == cb[code * D + 1];
        }
    char line[128];
    snprintf(line, sizeof line, "%s vq_quantize: nearest code, ties to the lowest index, z_q", be->name);
    kt_expect(ok, line);

    /* counts accumulate onto 1, 2, 3; each code's sums onto (10, 20) */
    float counts[K] = {1, 2, 3}, sums[K * D] = {10, 20, 10, 20, 10, 20};
    be->vq_stats(be, NB, D, HW, ze, idx, K, counts, sums);
    /* code 0 takes points 0, 1, 2 twice; code 1 point 4 twice; code 2 point 3 twice */
    const float wc[K] = {1 + 6, 2 + 2, 3 + 2};
    const float ws[K * D] = {10 + 2 * (0.4f + 0.5f + 0.5f), 20 + 2 * (0.0f + 0.0f + 1.0f),
                             10 + 2 * 2.0f, 20 + 2 * 1.75f, 10 + 2 * 0.9f, 20 + 2 * 1.9f};
    double err = 0.0;
    for (int j = 0; j < K; j++) err = fmax(err, fabs(counts[j] - wc[j]));
    for (int j = 0; j < K * D; j++) err = fmax(err, fabs(sums[j] - ws[j]) / fabs(ws[j]));
    snprintf(line, sizeof line, "%s vq_stats: counts and sums (+=) vs hand values", be->name);
    kt_report(line, err, 1e-6);

    /* EMA, decay 0.5, eps 0.1: ema_count {2, 0} + counts {4, 0} -> {3, 0}, total 3;
     * smoothed {3.1 / 3.2 * 3, 0.1 / 3.2 * 3} = {2.90625, 0.09375};
     * ema_sum {1, 0.5} + sums {5, 0} -> {3, 0.25}; codebook {3 / 2.90625, 0.25 / 0.09375}. */
    float ec[2] = {2, 0}, es[2] = {1, 0.5f}, bc[2] = {4, 0}, bs[2] = {5, 0}, book[2] = {-1, -1};
    be->vq_ema_update(be, 2, 1, 0.5f, 0.1f, bc, bs, ec, es, book);
    err = fmax(fabs(ec[0] - 3.0), fabs(ec[1]));
    err = fmax(err, fmax(fabs(es[0] - 3.0), fabs(es[1] - 0.25)));
    err = fmax(err, fabs(book[0] - 3.0 / 2.90625) / (3.0 / 2.90625));
    err = fmax(err, fabs(book[1] - 0.25 / 0.09375) / (0.25 / 0.09375));
    snprintf(line, sizeof line, "%s vq_ema_update: EMA, Laplace smoothing, codebook", be->name);
    kt_report(line, err, 1e-6);
}

int main(void) {
    rmx_backend *bes[2] = {rmx_backend_ref_create(), rmx_backend_cpu_create(2)};
    printf("AdamW and vector quantisation vs hand-computed values\n");
    for (int i = 0; i < 2; i++) {
        adamw_check(bes[i]);
        vq_check(bes[i]);
        bes[i]->destroy(bes[i]);
    }
    return kt_finish("kernels_optim_vq");
}
