/* A remix (stage 3) as a library: remixer-remix and the inference service (infer/service.h) both
 * call these, so the same inputs and options give the same audio and the same WAV metadata.
 *
 * Usage:
 *   rmx_diffusion_ckpt m;   rmx_diffusion_ckpt_load(be, path, 4, RMX_DIT_REMIX, 0, &m, ...);
 *   rmx_infer_audio a, b;   rmx_infer_load_audio(...) or rmx_infer_load_audio_memory(...)
 *   rmx_remix_options o;    rmx_remix_default_options(&o);
 *   float *y = malloc(sizeof(float) * m.fae.audio.n_mels * a.frames);
 *   rmx_remix_facts f;
 *   rmx_remix_mel(&m, &a, &b, &o, progress, ctx, y, &f, err, errlen);        // the model part
 *   rmx_remix_vocode(&m.fae.audio, y, a.frames, a.n, &o, progress, ctx, &audio, &n, err, errlen);
 *   rmx_remix_wav_text(&m, &o, "a.wav", "b.wav", &f, title, ..., comment, ...);
 *
 * rmx_remix_mel uses the model's activation arenas (not re-entrant on one model);
 * rmx_remix_vocode touches no model and may run in parallel with anything. */
#ifndef RMX_REMIXER_H
#define RMX_REMIXER_H

#include <stddef.h>
#include <stdint.h>

#include "infer/infer.h"
#include "train/diffusion_ckpt.h"

typedef struct {
    double strength;     /* how far the original is noised before it is redrawn, 0 .. 1 [0.5] */
    double style_scale;  /* style guidance [2] */
    double style_offset; /* seconds into the style song where its segment starts [0] */
    int steps;           /* DDIM steps over the whole schedule [50] */
    int iterations;      /* Griffin-Lim iterations [32] */
    int threads;         /* vocoder threads, 0: the OpenMP default */
    uint64_t seed;       /* the noise's and Griffin-Lim's phase [0] */
} rmx_remix_options;

/* What a remix did, for the metadata. */
typedef struct {
    int64_t style_frame; /* the style segment's first mel frame */
    int steps_run;       /* DDIM steps run per segment (about steps x strength) */
} rmx_remix_facts;

void rmx_remix_default_options(rmx_remix_options *o);

/* An original or a style song must hold at least one full STFT window (n_fft samples): below
 * that the mel has no frame made of the song itself. 0, or -1 with "too short: ..." in err (the
 * caller names the file or field in front). */
int rmx_remix_check_length(const rmx_mel_params *p, const rmx_infer_audio *x, char *err, size_t errlen);
/* Whether the style song is shorter than one segment (its segment is then padded with silence,
 * which callers report as a warning). */
int rmx_remix_style_is_padded(const rmx_diffusion_ckpt *m, const rmx_infer_audio *b);

/* a (the original) in the style of b: y [n_mels][a->frames], the normalised log-mel of the remix.
 * Progress as rmx_infer_autoencode reports it ("remix"). 0, or -1 with a message. */
int rmx_remix_mel(rmx_diffusion_ckpt *m, const rmx_infer_audio *a, const rmx_infer_audio *b,
                  const rmx_remix_options *o, rmx_infer_progress_fn progress, void *ctx, float *y,
                  rmx_remix_facts *facts, char *err, size_t errlen);

/* y [n_mels][frames] -> *audio (malloc'd) of `samples` samples (the original's length), with the
 * vocoder's progress ("NNLS", "Griffin-Lim"). 0, or -1 with a message. */
int rmx_remix_vocode(const rmx_mel_params *p, const float *y, int64_t frames, int64_t samples,
                     const rmx_remix_options *o, rmx_infer_progress_fn progress, void *ctx, float **audio,
                     int64_t *n, char *err, size_t errlen);

/* The WAV's title and comment (the settings that made it), naming the inputs as given. */
void rmx_remix_wav_text(const rmx_diffusion_ckpt *m, const rmx_remix_options *o, const char *original,
                        const char *style, const rmx_remix_facts *f, char *title, size_t title_len, char *comment,
                        size_t comment_len);

#endif
