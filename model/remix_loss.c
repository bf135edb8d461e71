#include "model/remix_loss.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct rmx_remix_loss {
    rmx_backend *be;
    rmx_ae *ae;
    rmx_remix_loss_config c;
    int max_batch;
    int last;                /* the deepest feature step any term reads */
    int steps;               /* the encoder's feature steps; the arrays below have one entry each */
    int *used;               /* 1: some term reads step k */
    size_t *numel;           /* floats of one sample's step-k output */
    int *channels;
    const float **feat;      /* scratch: step outputs of one encoder pass */
    float *content_target[RMX_REMIX_MAX_LAYERS]; /* [max, c, h, w] */
    float *style_gram[RMX_REMIX_MAX_LAYERS];     /* [max, c, c] */
    float **dfeat;           /* gradients per used step, [max, c, h, w] */
    float *tmp;              /* [max, largest feature] */
    float *gram, *dgram;     /* [max, largest c, c] */
    float *dtv, *dxhat;      /* [max, 1, M, T] */
    float *x0;               /* [max, C, H, W] */
    float *dz;
    size_t mel_per, latent_per;
};

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "remixer: out of host memory (remix loss)\n");
        abort();
    }
    return p;
}

int rmx_remix_parse_layers(const rmx_ae *ae, const char *list, int *out, int *count, char *err, size_t errlen) {
    *count = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (!*p) break;
        size_t len = strcspn(p, ", \t");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        int k = rmx_ae_feature_index(ae, name);
        if (k < 0) {
            char names[1024] = "";
            size_t used = 0;
            for (int i = 0; i < rmx_ae_feature_count(ae) && used < sizeof names; i++) {
                char step[64];
                rmx_ae_feature_name(ae, i, step, sizeof step);
                used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", step);
            }
            return rmx_seterr(err, errlen, "unknown encoder layer '%s' (this autoencoder has: %s)", name, names);
        }
        if (*count == RMX_REMIX_MAX_LAYERS)
            return rmx_seterr(err, errlen, "at most %d layers, got more", RMX_REMIX_MAX_LAYERS);
        out[(*count)++] = k;
        p += len;
    }
    if (*count == 0) return rmx_seterr(err, errlen, "expected at least one encoder layer name, got '%s'", list);
    return 0;
}

rmx_remix_loss *rmx_remix_loss_create(rmx_ae *ae, const rmx_remix_loss_config *c, int max_batch) {
    rmx_remix_loss *l = xcalloc(1, sizeof *l);
    rmx_backend *be = l->be = rmx_ae_backend(ae);
    const rmx_ae_hparams *hp = rmx_ae_hparams_of(ae);
    l->ae = ae;
    l->c = *c;
    l->max_batch = max_batch;
    l->steps = rmx_ae_feature_count(ae);
    l->used = xcalloc((size_t)l->steps, sizeof *l->used);
    l->numel = xcalloc((size_t)l->steps, sizeof *l->numel);
    l->channels = xcalloc((size_t)l->steps, sizeof *l->channels);
    l->feat = xcalloc((size_t)l->steps, sizeof *l->feat);
    l->dfeat = xcalloc((size_t)l->steps, sizeof *l->dfeat);
    rmx_ae_reserve(ae, max_batch);
    l->last = -1;
    for (int i = 0; i < c->n_content + c->n_style; i++) {
        int k = i < c->n_content ? c->content[i] : c->style[i - c->n_content];
        l->used[k] = 1;
        if (k > l->last) l->last = k;
    }
    size_t largest = 0, largest_gram = 0, m = (size_t)max_batch;
    for (int k = 0; k <= l->last; k++) {
        int fc, fh, fw;
        rmx_ae_feature_shape(ae, k, &fc, &fh, &fw);
        l->channels[k] = fc;
        l->numel[k] = (size_t)fc * fh * fw;
        if (!l->used[k]) continue;
        l->dfeat[k] = be->alloc(be, sizeof(float) * m * l->numel[k]);
        if (l->numel[k] > largest) largest = l->numel[k];
        if ((size_t)fc * fc > largest_gram) largest_gram = (size_t)fc * fc;
    }
    for (int i = 0; i < c->n_content; i++)
        l->content_target[i] = be->alloc(be, sizeof(float) * m * l->numel[c->content[i]]);
    for (int i = 0; i < c->n_style; i++) {
        int fc = l->channels[c->style[i]];
        l->style_gram[i] = be->alloc(be, sizeof(float) * m * (size_t)fc * fc);
    }
    int lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    l->mel_per = (size_t)hp->mels * hp->frames;
    l->latent_per = (size_t)lc * lh * lw;
    l->tmp = be->alloc(be, sizeof(float) * m * (largest ? largest : 1));
    l->gram = be->alloc(be, sizeof(float) * m * (largest_gram ? largest_gram : 1));
    l->dgram = be->alloc(be, sizeof(float) * m * (largest_gram ? largest_gram : 1));
    l->dtv = be->alloc(be, sizeof(float) * m * l->mel_per);
    l->dxhat = be->alloc(be, sizeof(float) * m * l->mel_per);
    l->x0 = be->alloc(be, sizeof(float) * m * l->latent_per);
    l->dz = be->alloc(be, sizeof(float) * m * l->latent_per);
    return l;
}

void rmx_remix_loss_free(rmx_remix_loss *l) {
    if (!l) return;
    rmx_backend *be = l->be;
    for (int k = 0; k < l->steps; k++)
        if (l->dfeat[k]) be->free(be, l->dfeat[k]);
    free(l->used), free(l->numel), free(l->channels), free(l->feat), free(l->dfeat);
    for (int i = 0; i < RMX_REMIX_MAX_LAYERS; i++) {
        if (l->content_target[i]) be->free(be, l->content_target[i]);
        if (l->style_gram[i]) be->free(be, l->style_gram[i]);
    }
    float *bufs[] = {l->tmp, l->gram, l->dgram, l->dtv, l->dxhat, l->x0, l->dz};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be, bufs[i]);
    free(l);
}

static void check_batch(const rmx_remix_loss *l, int n) {
    if (n < 1 || n > l->max_batch) {
        fprintf(stderr, "remixer: internal error: remix loss batch %d outside 1..%d\n", n, l->max_batch);
        abort();
    }
}

static float gram_scale(const rmx_remix_loss *l, int k) { return 1.0f / (float)l->numel[k]; }

/* Features of x (every step) and, when z is given, its scaled latents. */
static void encode(rmx_remix_loss *l, int n, const float *x, float latent_scale, float *z, const float **feat) {
    const float *lat = rmx_ae_latents_features(l->ae, n, x, feat);
    if (!z) return;
    l->be->copy(l->be, z, lat, sizeof(float) * (size_t)n * l->latent_per);
    l->be->scale(l->be, (size_t)n * l->latent_per, latent_scale, z);
}

void rmx_remix_loss_targets(rmx_remix_loss *l, int n, const float *x_orig, const float *x_style, float latent_scale,
                            float *z_orig, float *z_style) {
    check_batch(l, n);
    rmx_backend *be = l->be;
    const float **feat = l->feat;
    encode(l, n, x_orig, latent_scale, z_orig, feat);
    for (int i = 0; i < l->c.n_content; i++) {
        int k = l->c.content[i];
        be->copy(be, l->content_target[i], feat[k], sizeof(float) * (size_t)n * l->numel[k]);
    }
    encode(l, n, x_style, latent_scale, z_style, feat);
    for (int i = 0; i < l->c.n_style; i++) {
        int k = l->c.style[i], fc = l->channels[k];
        be->gram_fwd(be, n, fc, (int)(l->numel[k] / (size_t)fc), gram_scale(l, k), feat[k], l->style_gram[i]);
    }
}

void rmx_remix_loss_mel(rmx_remix_loss *l, int n, const float *x_hat, float scale, float *terms, float *dxhat) {
    check_batch(l, n);
    rmx_backend *be = l->be;
    const rmx_remix_loss_config *c = &l->c;
    const float **feat = l->feat;
    rmx_ae_features(l->ae, n, x_hat, l->last, feat);
    for (int k = 0; k <= l->last; k++)
        if (l->used[k]) be->fill(be, l->dfeat[k], 0.0f, (size_t)n * l->numel[k]);
    for (int i = 0; i < c->n_content; i++) {
        int k = c->content[i];
        size_t count = (size_t)n * l->numel[k];
        be->mse_loss(be, count, feat[k], l->content_target[i], scale / (float)l->numel[k],
                     terms + RMX_REMIX_CONTENT, l->tmp);
        be->axpy(be, count, c->content_weight, l->tmp, l->dfeat[k]);
    }
    for (int i = 0; i < c->n_style; i++) {
        int k = c->style[i], fc = l->channels[k], hw = (int)(l->numel[k] / (size_t)fc);
        size_t count = (size_t)n * fc * fc;
        be->gram_fwd(be, n, fc, hw, gram_scale(l, k), feat[k], l->gram);
        be->mse_loss(be, count, l->gram, l->style_gram[i], scale, terms + RMX_REMIX_STYLE, l->dgram);
        be->scale(be, count, c->style_weight, l->dgram);
        be->gram_bwd(be, n, fc, hw, gram_scale(l, k), feat[k], l->dgram, l->dfeat[k]);
    }
    rmx_ae_features_backward(l->ae, n, l->last, (const float *const *)l->dfeat, dxhat);
    const rmx_ae_hparams *hp = rmx_ae_hparams_of(l->ae);
    be->fill(be, l->dtv, 0.0f, (size_t)n * l->mel_per);
    be->tv_loss(be, n, 1, hp->mels, hp->frames, x_hat, scale, terms + RMX_REMIX_TV, l->dtv);
    be->axpy(be, (size_t)n * l->mel_per, c->tv_weight, l->dtv, dxhat);
}

void rmx_remix_x0(rmx_backend *be, int n, size_t per, const float *z_t, const float *eps_hat, const float *a,
                  const float *b, float *x0) {
    float ca[256], cb[256];
    for (int i0 = 0; i0 < n; i0 += 256) {
        int k = n - i0 < 256 ? n - i0 : 256;
        for (int i = 0; i < k; i++) {
            ca[i] = 1.0f / a[i0 + i];
            cb[i] = -b[i0 + i] / a[i0 + i];
        }
        be->axpby_samples(be, k, per, ca, z_t + (size_t)i0 * per, cb, eps_hat + (size_t)i0 * per,
                          x0 + (size_t)i0 * per);
    }
}

const float *rmx_remix_loss_eps(rmx_remix_loss *l, int n, const float *z_t, const float *eps_hat, const float *a,
                                const float *b, float latent_scale, float scale, float *terms, float *deps) {
    check_batch(l, n);
    rmx_backend *be = l->be;
    const size_t per = l->latent_per;
    rmx_remix_x0(be, n, per, z_t, eps_hat, a, b, l->x0);
    be->scale(be, per * (size_t)n, 1.0f / latent_scale, l->x0);
    const float *x_hat = rmx_ae_decode_latents(l->ae, n, l->x0);
    rmx_remix_loss_mel(l, n, x_hat, scale, terms, l->dxhat);
    rmx_ae_decode_backward(l->ae, n, l->dxhat, l->dz);
    float ca[256], zero[256];
    for (int i0 = 0; i0 < n; i0 += 256) {
        int k = n - i0 < 256 ? n - i0 : 256;
        for (int i = 0; i < k; i++) {
            ca[i] = -b[i0 + i] / a[i0 + i] / latent_scale;
            zero[i] = 0.0f;
        }
        be->axpby_samples(be, k, per, ca, l->dz + (size_t)i0 * per, zero, l->dz + (size_t)i0 * per,
                          deps + (size_t)i0 * per);
    }
    return x_hat;
}
