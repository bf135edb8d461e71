/* Reductions run in a fixed order: the cpu backend gives bit-identical results with 1, 2 and 3
 * OpenMP threads (sumsq, the losses, GroupNorm's statistics and batch-summed gradients), and
 * repeats the convolution bit for bit at a fixed thread count. */
#include "ktest.h"

static int bits_equal(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

int main(void) {
    rmx_backend *one = rmx_backend_cpu_create(1), *two = rmx_backend_cpu_create(2), *three = rmx_backend_cpu_create(3);
    rmx_backend *bes[3] = {one, two, three};
    kt_seed(2024);
    printf("thread-count independence of the cpu backend's reductions\n");

    size_t n = 1000003;
    float *x = kt_rand(n, -1, 1), *t = kt_rand(n, -1, 1);
    float ss[3], loss[3];
    float *dx[3];
    for (int i = 0; i < 3; i++) {
        bes[i]->sumsq(bes[i], n, x, &ss[i]);
        loss[i] = 0.5f;
        dx[i] = kt_alloc(n);
        bes[i]->mse_loss(bes[i], n, x, t, 1.0f / 8, &loss[i], dx[i]);
    }
    printf("     sumsq: %.9g %.9g %.9g\n", ss[0], ss[1], ss[2]);
    kt_expect(!memcmp(&ss[0], &ss[1], sizeof(float)) && !memcmp(&ss[0], &ss[2], sizeof(float)),
              "sumsq of 1e6 floats bit-identical for 1, 2, 3 threads");
    printf("     mse:   %.9g %.9g %.9g\n", loss[0], loss[1], loss[2]);
    kt_expect(!memcmp(&loss[0], &loss[1], sizeof(float)) && !memcmp(&loss[0], &loss[2], sizeof(float)) &&
                  bits_equal(dx[0], dx[1], n) && bits_equal(dx[0], dx[2], n),
              "mse_loss value and dxhat bit-identical for 1, 2, 3 threads");

    int nb = 8, c = 8, hw = 32 * 64;
    size_t nm = (size_t)nb * 2 * c * hw;
    float *mom = kt_rand(nm, -2, 2), kl[3], *dm[3];
    for (int i = 0; i < 3; i++) {
        kl[i] = 0.0f;
        dm[i] = kt_alloc(nm);
        bes[i]->kl_loss(bes[i], nb, c, hw, mom, 0.001f, &kl[i], dm[i]);
    }
    kt_expect(!memcmp(&kl[0], &kl[1], sizeof(float)) && !memcmp(&kl[0], &kl[2], sizeof(float)) &&
                  bits_equal(dm[0], dm[1], nm) && bits_equal(dm[0], dm[2], nm),
              "kl_loss value and dmoments bit-identical for 1, 2, 3 threads");

    int gc = 32, ghw = 40 * 24, gg = 8;
    size_t ng = (size_t)nb * gc * ghw;
    float *gx = kt_rand(ng, -1, 3), *gam = kt_rand(gc, 0.5f, 1.5f), *bet = kt_rand(gc, -1, 1);
    float *gdy = kt_rand(ng, -1, 1), *gy[3], *mean[3], *rstd[3], *gdx[3], *dgam[3], *dbet[3];
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        gy[i] = kt_alloc(ng), gdx[i] = kt_alloc(ng), mean[i] = kt_alloc(nb * gg), rstd[i] = kt_alloc(nb * gg);
        dgam[i] = kt_alloc(gc), dbet[i] = kt_alloc(gc);
        bes[i]->groupnorm_fwd(bes[i], nb, gc, ghw, gg, 1e-5f, gx, gam, bet, gy[i], mean[i], rstd[i]);
        bes[i]->groupnorm_bwd(bes[i], nb, gc, ghw, gg, gx, gam, mean[i], rstd[i], gdy, gdx[i], dgam[i], dbet[i]);
        if (i)
            ok = ok && bits_equal(gy[0], gy[i], ng) && bits_equal(mean[0], mean[i], nb * gg) &&
                 bits_equal(rstd[0], rstd[i], nb * gg) && bits_equal(gdx[0], gdx[i], ng) &&
                 bits_equal(dgam[0], dgam[i], gc) && bits_equal(dbet[0], dbet[i], gc);
    }
    kt_expect(ok, "groupnorm fwd and bwd (dgamma, dbeta summed over the batch) bit-identical for 1, 2, 3 threads");

    rmx_conv_shape s = rmx_conv_shape_make(4, 16, 24, 40, 32, 3, 1, 1);
    size_t cx = (size_t)4 * 16 * 24 * 40, cw = (size_t)32 * 16 * 9, cy = (size_t)4 * 32 * 24 * 40;
    float *xin = kt_rand(cx, -1, 1), *w = kt_rand(cw, -1, 1), *cdy = kt_rand(cy, -1, 1);
    float *ws = kt_alloc(two->conv2d_workspace(two, &s));
    float *y1 = kt_alloc(cy), *y2 = kt_alloc(cy), *dx1 = kt_alloc(cx), *dx2 = kt_alloc(cx);
    float *dw1 = kt_alloc(cw), *dw2 = kt_alloc(cw), *db1 = kt_alloc(32), *db2 = kt_alloc(32);
    two->conv2d_fwd(two, &s, xin, w, NULL, y1, ws);
    two->conv2d_fwd(two, &s, xin, w, NULL, y2, ws);
    two->conv2d_bwd(two, &s, xin, w, cdy, dx1, dw1, db1, ws);
    two->conv2d_bwd(two, &s, xin, w, cdy, dx2, dw2, db2, ws);
    kt_expect(bits_equal(y1, y2, cy) && bits_equal(dx1, dx2, cx) && bits_equal(dw1, dw2, cw) && bits_equal(db1, db2, 32),
              "conv2d fwd and bwd repeat bit for bit (2 threads)");

    for (int i = 0; i < 3; i++) {
        free(dx[i]), free(dm[i]), free(gy[i]), free(gdx[i]), free(mean[i]), free(rstd[i]), free(dgam[i]), free(dbet[i]);
        bes[i]->destroy(bes[i]);
    }
    free(x), free(t), free(mom), free(gx), free(gam), free(bet), free(gdy), free(xin), free(w), free(cdy), free(ws);
    free(y1), free(y2), free(dx1), free(dx2), free(dw1), free(dw2), free(db1), free(db2);
    return kt_finish("kernels_determinism");
}
