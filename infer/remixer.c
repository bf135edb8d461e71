/* A remix as a library (infer/remixer.h): the code remixer-remix had, shared with the service. */
#include "infer/remixer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/vocoder.h"
#include "model/diffusion.h"
#include "util/log.h"

enum { REMIX_BATCH = 4 }; /* segments through the autoencoder and the sampler together */

void rmx_remix_default_options(rmx_remix_options *o) {
    *o = (rmx_remix_options){.strength = 0.5, .style_scale = 2.0, .steps = 50,
                             .iterations = RMX_VOCODER_DEFAULT_ITERATIONS};
}

int rmx_remix_check_length(const rmx_mel_params *p, const rmx_infer_audio *x, char *err, size_t errlen) {
    if (x->n >= p->n_fft) return 0;
    return rmx_seterr(err, errlen,
                      "too short: %" PRId64 " samples (%.3f s); a remix needs at least one STFT window, n_fft = %d "
                      "samples (%.3f s at %d Hz)",
                      x->n, (double)x->n / p->sample_rate, p->n_fft, (double)p->n_fft / p->sample_rate, p->sample_rate);
}

int rmx_remix_style_is_padded(const rmx_diffusion_ckpt *m, const rmx_infer_audio *b) {
    return b->frames < m->fae.hp.frames;
}

/* The remix of a batch of segments, between the encoder and the decoder. */
typedef struct {
    rmx_diffusion_ckpt *m;
    const rmx_remix_options *o;
    const float *style; /* backend [1, C, H, W], scaled */
    float *styles;      /* backend [batch, C, H, W]: the style for each segment of a batch */
    size_t per;
    int steps_run;
} remix_pass;

static void remix_segments(void *arg, int n, int64_t first, float *z) {
    remix_pass *r = arg;
    if (r->o->strength <= 0) return; /* the original through the autoencoder, bit for bit */
    rmx_backend *be = rmx_ae_backend(r->m->fae.ae);
    for (int i = 0; i < n; i++) be->copy(be, r->styles + (size_t)i * r->per, r->style, sizeof(float) * r->per);
    be->scale(be, r->per * (size_t)n, r->m->latent_scale, z);
    int64_t keys[64];
    for (int i = 0; i < n; i++) keys[i] = first + i;
    rmx_style_eps ctx;
    rmx_eps_model model = rmx_dit_style_eps_model(r->m->dit, n, r->styles, &ctx);
    rmx_ddim_config dc = {.steps = r->o->steps, .cfg = (float)r->o->style_scale, .seed = r->o->seed, .keys = keys};
    r->steps_run = rmx_remix_sample(&model, &r->m->sched, &dc, n, (float)r->o->strength, z);
    rmx_style_eps_free(&ctx);
    be->scale(be, r->per * (size_t)n, 1.0f / r->m->latent_scale, z);
}

/* One segment of B's normalised mel from `offset` frames on (the last one when B ends sooner),
 * padded with `pad` when B is shorter than a segment: seg [M][T]. */
static void style_segment(const rmx_infer_audio *b, const rmx_mel_params *p, int T, int64_t offset, float pad,
                          float *seg) {
    const int M = p->n_mels;
    if (offset > b->frames - T) offset = b->frames > T ? b->frames - T : 0;
    for (int m = 0; m < M; m++)
        for (int t = 0; t < T; t++) {
            int64_t f = offset + t;
            seg[(size_t)m * T + t] =
                f < b->frames ? (b->logmel[(size_t)m * b->frames + f] - p->norm_mean) / p->norm_std : pad;
        }
}

int rmx_remix_mel(rmx_diffusion_ckpt *m, const rmx_infer_audio *a, const rmx_infer_audio *b,
                  const rmx_remix_options *o, rmx_infer_progress_fn progress, void *ctx, float *y,
                  rmx_remix_facts *facts, char *err, size_t errlen) {
    const rmx_mel_params *p = &m->fae.audio;
    const int M = p->n_mels, T = m->fae.hp.frames;
    rmx_backend *be = rmx_ae_backend(m->fae.ae);
    const float pad = (logf(p->log_floor) - p->norm_mean) / p->norm_std;
    facts->style_frame = (int64_t)llround(o->style_offset * p->sample_rate / p->hop_length);
    facts->steps_run = 0;
    float *seg = malloc(sizeof(float) * (size_t)M * T), *x = malloc(sizeof(float) * (size_t)M * a->frames);
    if (!seg || !x) {
        free(seg), free(x);
        return rmx_seterr(err, errlen, "out of memory for %" PRId64 " frames", a->frames);
    }
    style_segment(b, p, T, facts->style_frame, pad, seg);
    for (int64_t i = 0; i < (int64_t)M * a->frames; i++) x[i] = (a->logmel[i] - p->norm_mean) / p->norm_std;

    int lc, lh, lw;
    rmx_ae_latent_shape(m->fae.ae, &lc, &lh, &lw);
    remix_pass rp = {.m = m, .o = o, .per = (size_t)lc * lh * lw};
    float *dev_seg = be->alloc(be, sizeof(float) * (size_t)M * T);
    float *style = be->alloc(be, sizeof(float) * rp.per);
    rp.styles = be->alloc(be, sizeof(float) * rp.per * REMIX_BATCH);
    be->to_backend(be, dev_seg, seg, sizeof(float) * (size_t)M * T);
    rmx_frozen_ae_scaled_latents(&m->fae, 1, dev_seg, m->latent_scale, style);
    rp.style = style;
    rmx_infer_latent_pass pass = {remix_segments, &rp, "remix"};
    int rc = rmx_infer_autoencode(&m->fae, x, a->frames, T / 8, REMIX_BATCH, pad, &pass, y, progress, ctx, err,
                                  errlen);
    facts->steps_run = rp.steps_run;
    be->free(be, dev_seg);
    be->free(be, style);
    be->free(be, rp.styles);
    free(seg), free(x);
    return rc;
}

int rmx_remix_vocode(const rmx_mel_params *p, const float *y, int64_t frames, int64_t samples,
                     const rmx_remix_options *o, rmx_infer_progress_fn progress, void *ctx, float **audio,
                     int64_t *n, char *err, size_t errlen) {
    char why[2048];
    rmx_vocoder *voc = rmx_vocoder_create(p, why, sizeof why);
    if (!voc) return rmx_seterr(err, errlen, "vocoder: %s", why);
    rmx_vocoder_options vo;
    rmx_vocoder_default_options(&vo);
    vo.iterations = o->iterations;
    vo.seed = o->seed;
    vo.threads = o->threads;
    vo.progress = progress;
    vo.progress_ctx = ctx;
    int rc = rmx_vocoder_run(voc, y, frames, samples, &vo, audio, n, NULL, why, sizeof why);
    rmx_vocoder_free(voc);
    return rc == 0 ? 0 : rmx_seterr(err, errlen, "vocoder: %s", why);
}

void rmx_remix_wav_text(const rmx_diffusion_ckpt *m, const rmx_remix_options *o, const char *original,
                        const char *style, const rmx_remix_facts *f, char *title, size_t title_len, char *comment,
                        size_t comment_len) {
    const rmx_mel_params *p = &m->fae.audio;
    snprintf(title, title_len, "remix of %s in the style of %s", original, style);
    snprintf(comment, comment_len,
             "remixer-remix %s step %" PRId64 ": original=%s; style=%s; style_offset_frames=%" PRId64
             "; strength=%g; style_scale=%g; steps=%d (run per segment: %d); seed=%" PRIu64
             "; griffin_lim_iterations=%d; sample_rate=%d; n_fft=%d; hop_length=%d; n_mels=%d",
             m->path, m->step, original, style, f->style_frame, o->strength, o->style_scale, o->steps, f->steps_run,
             o->seed, o->iterations, p->sample_rate, p->n_fft, p->hop_length, p->n_mels);
}
