/* Reductions run in a fixed order: the cpu backend gives bit-identical results with 1, 2 and 3
 * OpenMP threads (sumsq, the losses, GroupNorm's statistics and batch-summed gradients), and
 * repeats the convolution bit for bit at a fixed thread count. */
#include "ktest.h"

static int bits_equal(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

/* The transformer ops at 1, 2 and 3 threads: every output bit-identical. */
static void transformer_determinism(rmx_backend **bes) {
    /* linear: 3 x 2 output tiles forward, dw in tiles, db over 600 rows */
    int rows = 600, in = 200, out = 300;
    size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = kt_rand(nx, -1, 1), *w = kt_rand(nw, -1, 1), *b = kt_rand(out, -1, 1), *dy = kt_rand(ny, -1, 1);
    float *y[3], *dx[3], *dw[3], *db[3];
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        y[i] = kt_alloc(ny), dx[i] = kt_alloc(nx), dw[i] = kt_copy(w, nw), db[i] = kt_copy(b, out);
        bes[i]->linear_fwd(bes[i], rows, in, out, x, w, b, y[i]);
        bes[i]->linear_bwd(bes[i], rows, in, out, x, w, dy, dx[i], dw[i], db[i]);
        if (i)
            ok = ok && bits_equal(y[0], y[i], ny) && bits_equal(dx[0], dx[i], nx) && bits_equal(dw[0], dw[i], nw) &&
                 bits_equal(db[0], db[i], out);
    }
    kt_expect(ok, "linear fwd, dx, dw, db (600 x 200 -> 300) bit-identical for 1, 2, 3 threads");
    for (int i = 0; i < 3; i++) free(y[i]), free(dx[i]), free(dw[i]), free(db[i]);
    free(x), free(w), free(b), free(dy);

    /* layernorm, modulate, gated_add over [4, 300, 96] with an adaLN output of ld 6d */
    int B = 4, T = 300, d = 96, ld = 6 * d;
    size_t n = (size_t)B * T * d, nm = (size_t)B * ld;
    float *xs = kt_rand(n, -2, 3), *g = kt_rand(n, -1, 1), *mod = kt_rand(nm, -1, 1);
    float *ly[3], *lr[3], *ldx[3], *my[3], *mdx[3], *dmod[3], *gy[3];
    ok = 1;
    for (int i = 0; i < 3; i++) {
        ly[i] = kt_alloc(n), lr[i] = kt_alloc((size_t)B * T), ldx[i] = kt_alloc(n), my[i] = kt_alloc(n);
        mdx[i] = kt_alloc(n), dmod[i] = kt_alloc(nm), gy[i] = kt_copy(g, n);
        bes[i]->layernorm_fwd(bes[i], B * T, d, 1e-6f, xs, ly[i], lr[i]);
        bes[i]->layernorm_bwd(bes[i], B * T, d, ly[i], lr[i], g, ldx[i]);
        bes[i]->modulate_fwd(bes[i], B, T, d, ly[i], mod, mod + d, ld, my[i]);
        bes[i]->modulate_bwd(bes[i], B, T, d, ly[i], mod + d, ld, g, mdx[i], dmod[i], dmod[i] + d);
        bes[i]->gated_add_fwd(bes[i], B, T, d, xs, mod + 2 * d, ld, gy[i]);
        bes[i]->gated_add_bwd(bes[i], B, T, d, xs, mod + 2 * d, ld, g, NULL, dmod[i] + 2 * d);
        if (i)
            ok = ok && bits_equal(ly[0], ly[i], n) && bits_equal(lr[0], lr[i], (size_t)B * T) &&
                 bits_equal(ldx[0], ldx[i], n) && bits_equal(my[0], my[i], n) && bits_equal(mdx[0], mdx[i], n) &&
                 bits_equal(dmod[0], dmod[i], nm) && bits_equal(gy[0], gy[i], n);
    }
    kt_expect(ok, "layernorm, modulate (dshift, dscale), gated_add (dgate) bit-identical for 1, 2, 3 threads");
    for (int i = 0; i < 3; i++) free(ly[i]), free(lr[i]), free(ldx[i]), free(my[i]), free(mdx[i]), free(dmod[i]), free(gy[i]);
    free(xs), free(g), free(mod);

    /* attention: 2 x 3 (sample, head) pairs, 150 tokens (2 query blocks, the last partial); and
     * 1 x 2 pairs, which 3 threads split by query block instead of by (sample, head) */
    for (int cfg = 0; cfg < 2; cfg++) {
        int ab = cfg ? 1 : 2, at = 150, ad = 48, ah = cfg ? 2 : 3;
        size_t nq = (size_t)ab * at * 3 * ad, no = (size_t)ab * at * ad, nl = (size_t)ab * ah * at;
        float *qkv = kt_rand(nq, -2, 2), *dout = kt_rand(no, -1, 1), *ao[3], *al[3], *adq[3];
        ok = 1;
        for (int i = 0; i < 3; i++) {
            float *ws = kt_alloc(bes[i]->attention_workspace(bes[i], ab, at, ad, ah));
            ao[i] = kt_alloc(no), al[i] = kt_alloc(nl), adq[i] = kt_alloc(nq);
            bes[i]->attention_fwd(bes[i], ab, at, ad, ah, qkv, ao[i], al[i], ws);
            bes[i]->attention_bwd(bes[i], ab, at, ad, ah, qkv, ao[i], al[i], dout, adq[i], ws);
            free(ws);
            if (i)
                ok = ok && bits_equal(ao[0], ao[i], no) && bits_equal(al[0], al[i], nl) &&
                     bits_equal(adq[0], adq[i], nq);
        }
        char line[160];
        snprintf(line, sizeof line, "attention %dx%d pairs, fwd (out, lse) and bwd (dqkv) bit-identical for 1, 2, 3 threads",
                 ab, ah);
        kt_expect(ok, line);
        for (int i = 0; i < 3; i++) free(ao[i]), free(al[i]), free(adq[i]);
        free(qkv), free(dout);
    }

    /* embedding gradient: 3000 lookups into 11 rows of 384 */
    int en = 3000, ed = 384, er = 11;
    int32_t *idx = calloc(en, sizeof *idx);
    if (!idx) exit(2);
    for (int i = 0; i < en; i++) idx[i] = (int32_t)(kt_uniform() * er);
    float *edy = kt_rand((size_t)en * ed, -1, 1), *et[3];
    ok = 1;
    for (int i = 0; i < 3; i++) {
        et[i] = kt_alloc((size_t)er * ed);
        bes[i]->embedding_bwd(bes[i], en, ed, er, idx, edy, et[i]);
        if (i) ok = ok && bits_equal(et[0], et[i], (size_t)er * ed);
    }
    kt_expect(ok, "embedding_bwd (3000 lookups, 11 rows) bit-identical for 1, 2, 3 threads");
    for (int i = 0; i < 3; i++) free(et[i]);
    free(idx), free(edy);
}

/* The remix losses at 1, 2 and 3 threads: Gram forward (row blocks of several samples), backward
 * (column blocks of df, accumulated onto known values), and the total variation's value and
 * gradient (a fixed-order sum over several blocks, crossing planes). */
static void remix_determinism(rmx_backend **bes) {
    int n = 2, c = 64, hw = 5000;
    size_t nf = (size_t)n * c * hw, ng = (size_t)n * c * c;
    float *f = kt_rand(nf, -1, 1), *dg = kt_rand(ng, -1, 1), *df0 = kt_rand(nf, -1, 1), *g[3], *df[3];
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        g[i] = kt_alloc(ng), df[i] = kt_copy(df0, nf);
        bes[i]->gram_fwd(bes[i], n, c, hw, 1.0f / (c * hw), f, g[i]);
        bes[i]->gram_bwd(bes[i], n, c, hw, 1.0f / (c * hw), f, dg, df[i]);
        if (i) ok = ok && bits_equal(g[0], g[i], ng) && bits_equal(df[0], df[i], nf);
    }
    kt_expect(ok, "gram fwd and bwd (2 x 64 x 5000) bit-identical for 1, 2, 3 threads");
    for (int i = 0; i < 3; i++) free(g[i]), free(df[i]);
    free(f), free(dg), free(df0);

    int tn = 4, tc = 2, th = 128, tw = 257;
    size_t nx = (size_t)tn * tc * th * tw;
    float *x = kt_rand(nx, -2, 2), *dx0 = kt_rand(nx, -1, 1), *dx[3], loss[3];
    ok = 1;
    for (int i = 0; i < 3; i++) {
        dx[i] = kt_copy(dx0, nx), loss[i] = 0.5f;
        bes[i]->tv_loss(bes[i], tn, tc, th, tw, x, 0.01f, &loss[i], dx[i]);
        if (i) ok = ok && !memcmp(&loss[0], &loss[i], sizeof(float)) && bits_equal(dx[0], dx[i], nx);
    }
    kt_expect(ok, "tv_loss value and dx (4 x 2 x 128 x 257) bit-identical for 1, 2, 3 threads");
    for (int i = 0; i < 3; i++) free(dx[i]);
    free(x), free(dx0);
}

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

    transformer_determinism(bes);
    remix_determinism(bes);

    for (int i = 0; i < 3; i++) {
        free(dx[i]), free(dm[i]), free(gy[i]), free(gdx[i]), free(mean[i]), free(rstd[i]), free(dgam[i]), free(dbet[i]);
        bes[i]->destroy(bes[i]);
    }
    free(x), free(t), free(mom), free(gx), free(gam), free(bet), free(gdy), free(xin), free(w), free(cdy), free(ws);
    free(y1), free(y2), free(dx1), free(dx2), free(dw1), free(dw2), free(db1), free(db2);
    return kt_finish("kernels_determinism");
}
