/* The frozen autoencoder of the later stages: no gradient or Adam buffers, weight gradients never
 * written, input gradients the same as the trained model's, and any batch size once reserved.
 * Both bottlenecks, on the cpu backend. */
#include "model_test.h"

/* Copies the trained model's weights (and vq state) into the frozen one, tensor by tensor: a
 * registry without gradients has no weight-decay split, so its offsets differ. */
static void copy_weights(rmx_backend *be, rmx_ae *from, rmx_ae *to) {
    rmx_params *src[2] = {rmx_ae_params(from), rmx_ae_state(from)};
    rmx_params *dst[2] = {rmx_ae_params(to), rmx_ae_state(to)};
    for (int i = 0; i < 2; i++) {
        CHECK(src[i]->count == dst[i]->count, "registry %d: %d vs %d tensors", i, src[i]->count, dst[i]->count);
        for (int t = 0; t < src[i]->count && t < dst[i]->count; t++) {
            const rmx_param_info *a = rmx_params_get(src[i], t), *b = rmx_params_get(dst[i], t);
            CHECK(strcmp(a->name, b->name) == 0 && a->numel == b->numel, "tensor %d: %s vs %s", t, a->name, b->name);
            be->copy(be, rmx_params_data(dst[i], t), rmx_params_data(src[i], t), a->numel * sizeof(float));
        }
    }
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void check_bottleneck(rmx_backend *be, rmx_ae_bottleneck bottleneck) {
    const char *name = bottleneck == RMX_AE_KL ? "kl" : "vq";
    rmx_ae_hparams hp = tiny_hparams(bottleneck, 2);
    rmx_ae *trained = create_or_die(be, &hp, 7);
    char err[256];
    rmx_ae *frozen = rmx_ae_create_frozen(be, &hp, err, sizeof err);
    CHECK(frozen != NULL, "%s: rmx_ae_create_frozen: %s", name, err);
    if (!frozen) return;
    rmx_params *fp = rmx_ae_params(frozen);
    CHECK(!fp->trained && !fp->grad && !fp->m && !fp->v, "%s: a frozen model has no gradient or Adam buffers",
          name);
    copy_weights(be, trained, frozen);
    rmx_ae_set_frozen(frozen, 0); /* asking to unfreeze a model without gradients changes nothing */

    int lc, lh, lw;
    rmx_ae_latent_shape(frozen, &lc, &lh, &lw);
    const size_t zn = (size_t)lc * lh * lw, xn = (size_t)hp.mels * hp.frames;
    const int n = 5; /* more than the micro-batch of 2: reserve grows the arena */
    float *zh = malloc(sizeof(float) * zn * n), *dxh = malloc(sizeof(float) * xn * n);
    fill_uniform(zh, zn * n, 11);
    fill_uniform(dxh, xn * n, 12);
    float *z = backend_input(be, zh, zn * n), *dxhat = backend_input(be, dxh, xn * n);
    float *dz_frozen = be->alloc(be, sizeof(float) * zn * n), *dz_trained = be->alloc(be, sizeof(float) * zn);

    rmx_ae_reserve(frozen, n);
    const float *xhat = rmx_ae_decode(frozen, n, z);
    float *batch_out = host_copy(be, xhat, xn * n);
    rmx_ae_decode_backward(frozen, n, dxhat, dz_frozen);
    float *dz_batch = host_copy(be, dz_frozen, zn * n);

    /* the trained model, one sample at a time, gives the same output and input gradient */
    double worst_out = 0, worst_dz = 0;
    for (int i = 0; i < n; i++) {
        rmx_ae_step_begin(trained);
        const float *y = rmx_ae_decode(trained, 1, z + zn * i);
        float *yh = host_copy(be, y, xn);
        worst_out = fmax(worst_out, max_diff(yh, batch_out + xn * i, xn));
        rmx_ae_decode_backward(trained, 1, dxhat + xn * i, dz_trained);
        float *dzh = host_copy(be, dz_trained, zn);
        worst_dz = fmax(worst_dz, max_diff(dzh, dz_batch + zn * i, zn));
        free(yh);
        free(dzh);
    }
    CHECK(worst_out <= 1e-5 * fmax(1.0, max_abs(batch_out, xn * n)), "%s: decode of 5 vs 1 at a time: %g", name,
          worst_out);
    CHECK(worst_dz <= 1e-5 * fmax(1.0, max_abs(dz_batch, zn * n)), "%s: input gradient frozen vs trained: %g",
          name, worst_dz);
    CHECK(max_abs(dz_batch, zn * n) > 0, "%s: the frozen decoder propagates an input gradient", name);

    /* encoder: latents of a batch of 5 equal the latents one at a time */
    float *xin = malloc(sizeof(float) * xn * n);
    fill_uniform(xin, xn * n, 13);
    float *x = backend_input(be, xin, xn * n);
    float *lat = host_copy(be, rmx_ae_latents(frozen, n, x), zn * n);
    double worst_lat = 0;
    for (int i = 0; i < n; i++) {
        float *li = host_copy(be, rmx_ae_latents(frozen, 1, x + xn * i), zn);
        worst_lat = fmax(worst_lat, max_diff(li, lat + zn * i, zn));
        free(li);
    }
    CHECK(worst_lat <= 1e-5 * fmax(1.0, max_abs(lat, zn * n)), "%s: latents of 5 vs 1 at a time: %g", name,
          worst_lat);
    printf("%s: frozen: no grad/Adam buffers; decode, input gradient and latents match (worst %.2e %.2e %.2e)\n",
           name, worst_out, worst_dz, worst_lat);
    free(zh), free(dxh), free(batch_out), free(dz_batch), free(xin), free(lat);
    be->free(be, z), be->free(be, dxhat), be->free(be, dz_frozen), be->free(be, dz_trained), be->free(be, x);
    rmx_ae_free(trained);
    rmx_ae_free(frozen);
}

int main(void) {
    rmx_backend *be = rmx_backend_cpu_create(1);
    check_bottleneck(be, RMX_AE_KL);
    check_bottleneck(be, RMX_AE_VQ);
    be->destroy(be);
    return test_finish("model_frozen");
}
