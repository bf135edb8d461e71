/* Counter-based normal noise: a sample's numbers depend on (seed, purpose, step, sample index)
 * only, not on which other samples share the call; and they look standard normal. */
#include "ktest.h"
#include "util/rng.h"

static void randn_check(rmx_backend *be) {
    enum { PER = 1000 };
    int64_t batch_a[3] = {5, 9, 2}, batch_b[1] = {9}, batch_c[3] = {2, 7, 5};
    float *a = kt_alloc(3 * PER), *b = kt_alloc(PER), *c = kt_alloc(3 * PER);
    be->randn(be, a, 3, PER, 1234, RMX_RNG_LATENT, 17, batch_a);
    be->randn(be, b, 1, PER, 1234, RMX_RNG_LATENT, 17, batch_b);
    be->randn(be, c, 3, PER, 1234, RMX_RNG_LATENT, 17, batch_c);
    int same = !memcmp(a + PER, b, PER * sizeof(float)) && !memcmp(a, c + 2 * PER, PER * sizeof(float)) &&
               !memcmp(a + 2 * PER, c, PER * sizeof(float));
    for (int j = 0; j < PER; j++) same = same && a[j] == rmx_normal(1234, RMX_RNG_LATENT, 17, 5, (uint32_t)j);
    char line[160];
    snprintf(line, sizeof line, "%s randn: a sample's noise is the same whatever batch it is in", be->name);
    kt_expect(same, line);

    float *d = kt_alloc(PER);
    int differs = 1;
    be->randn(be, d, 1, PER, 1234, RMX_RNG_LATENT, 18, batch_b); /* next step */
    differs = differs && memcmp(d, b, PER * sizeof(float));
    be->randn(be, d, 1, PER, 1234, RMX_RNG_DIFFUSION_EPS, 17, batch_b); /* another purpose */
    differs = differs && memcmp(d, b, PER * sizeof(float));
    be->randn(be, d, 1, PER, 1235, RMX_RNG_LATENT, 17, batch_b); /* another seed */
    differs = differs && memcmp(d, b, PER * sizeof(float));
    snprintf(line, sizeof line, "%s randn: another step, purpose or seed gives other numbers", be->name);
    kt_expect(differs, line);

    /* 100,000 draws: 10 samples x 10,000 */
    enum { NS = 10, PS = 10000 };
    int64_t idx[NS];
    for (int i = 0; i < NS; i++) idx[i] = 1000 + 3 * i;
    float *big = kt_alloc((size_t)NS * PS);
    be->randn(be, big, NS, PS, 99, RMX_RNG_LATENT, 0, idx);
    double s = 0.0, s2 = 0.0;
    int finite = 1;
    for (size_t i = 0; i < (size_t)NS * PS; i++) {
        s += big[i];
        s2 += (double)big[i] * big[i];
        finite = finite && isfinite(big[i]);
    }
    double mean = s / (NS * PS), sd = sqrt(s2 / (NS * PS) - mean * mean);
    /* standard errors: mean 0.0032, sd 0.0022; allow about 6 of them */
    snprintf(line, sizeof line, "%s randn 1e5 draws: |mean| = %.4f (< 0.02), all finite", be->name, fabs(mean));
    kt_expect(fabs(mean) < 0.02 && finite, line);
    snprintf(line, sizeof line, "%s randn 1e5 draws: |sd - 1| = %.4f (< 0.015)", be->name, fabs(sd - 1.0));
    kt_expect(fabs(sd - 1.0) < 0.015, line);
    free(a), free(b), free(c), free(d), free(big);
}

int main(void) {
    rmx_backend *bes[2] = {rmx_backend_ref_create(), rmx_backend_cpu_create(2)};
    printf("randn: counter-based normals\n");
    for (int i = 0; i < 2; i++) {
        randn_check(bes[i]);
        bes[i]->destroy(bes[i]);
    }
    return kt_finish("kernels_randn");
}
