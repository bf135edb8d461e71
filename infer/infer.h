/* Shared pieces of the inference programs (remixer-reconstruct; remixer-generate and remixer-remix
 * build on the same): audio -> the prep's normalised log-mel, a long mel through the autoencoder
 * segment by segment with crossfaded overlaps, and a progress bar for the long steps. */
#ifndef RMX_INFER_H
#define RMX_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "data/audio.h"
#include "data/shard.h"
#include "kernels/backend.h"
#include "train/frozen_ae.h"
#include "util/progress.h"

/* ---- audio in ---- */

typedef struct {
    rmx_audio_info info;  /* the file's header */
    float *samples;       /* mono at p->sample_rate (malloc'd) */
    int64_t n;
    float *logmel;        /* log(max(mel power, floor)) [n_mels][frames] (malloc'd), not normalised */
    int64_t frames;       /* 1 + n / hop: every frame, the tail included */
    double decode_s, mel_s;
} rmx_infer_audio;

/* The prep's path (data/prep.c): decode, downmix, resample to p->sample_rate, rmx_mel_compute with
 * p's STFT and mel parameters, all frames. RMX_EXIT_OK, RMX_EXIT_DATA with "<path>: <reason>" for
 * a file that is not usable audio (missing, empty, not audio, truncated), RMX_EXIT_FAILURE else. */
int rmx_infer_load_audio(const char *path, const rmx_mel_params *p, rmx_infer_audio *out, char *err,
                         size_t errlen);
/* The same for a file held in memory (an upload); `name` prefixes the messages ("original: ..."). */
int rmx_infer_load_audio_memory(const void *data, size_t len, const char *name, const rmx_mel_params *p,
                                rmx_infer_audio *out, char *err, size_t errlen);
void rmx_infer_audio_free(rmx_infer_audio *a);

/* Mean and standard deviation of n values (two passes in double; std 1 when below 1e-6, as the
 * prep does for a silent dataset). */
void rmx_infer_mean_std(const float *x, int64_t n, float *mean, float *std);

/* ---- segments ---- */

/* Segments of `seg` frames covering `frames`, consecutive ones sharing `overlap` frames
 * (0 <= overlap <= seg / 2): segment k starts at k (seg - overlap), except the last, which ends at
 * the last frame (so it is never mostly padding) and may share more; a mel shorter than one
 * segment is one segment, padded and cut. */
int64_t rmx_infer_segment_count(int64_t frames, int seg, int overlap);
int64_t rmx_infer_segment_start(int64_t k, int64_t count, int64_t frames, int seg, int overlap);
/* Crossfade weight of segment k at frame t (inside the segment): where segments k and k + 1 both
 * cover a frame, k keeps weight 1 until the last `overlap` frames of its span, over which it ramps
 * down ((end - t - 0.5) / overlap) while k + 1 ramps up; the weights add up to 1 at every frame. */
float rmx_infer_crossfade(int64_t k, int64_t count, int64_t frames, int seg, int overlap, int64_t t);

typedef void (*rmx_infer_progress_fn)(void *ctx, const char *what, int64_t done, int64_t total);

/* x [n_mels][frames] (normalised) -> y [n_mels][frames]: each segment (padded with `pad`, e.g. the
 * normalised floor, where it runs past the end) encoded to latents and decoded (rmx_ae_latents,
 * rmx_ae_decode_latents), batch segments at a time, the overlaps crossfaded. 0, or -1 with a
 * message (the autoencoder's input size must be n_mels x seg). */
/* An optional step between the encoder and the decoder (remixer-remix): fn changes the latents
 * z [n, C, H, W] (backend memory, unscaled: what rmx_ae_latents gives) of segments first ..
 * first + n - 1 in place. `label` names the progress bar while it runs. */
typedef struct {
    void (*fn)(void *ctx, int n, int64_t first, float *z);
    void *ctx;
    const char *label;
} rmx_infer_latent_pass;

int rmx_infer_autoencode(rmx_frozen_ae *f, const float *x, int64_t frames, int overlap, int batch, float pad,
                         const rmx_infer_latent_pass *pass, float *y, rmx_infer_progress_fn progress,
                         void *progress_ctx, char *err, size_t errlen);

/* ---- command lines ---- */

/* The backend of --device auto|cpu|cuda (auto: CUDA when built with it and a GPU is visible),
 * threads 0 = all. NULL with the message in err when cuda was asked for and is absent. */
rmx_backend *rmx_infer_backend(const char *device, int threads, char *err, size_t errlen);

/* An integer option in [lo, hi]: 0, or -1 after printing "OPT: expected an integer in [lo, hi],
 * got 'v'". */
int rmx_infer_parse_int(const char *opt, const char *v, long lo, long hi, long *out);
/* The output WAV must be able to land: its folder exists and is writable, and it is not a folder.
 * -1 to go on, else RMX_EXIT_USAGE after printing why. */
int rmx_infer_check_output(const char *path);

/* ---- progress ---- */

/* A progress bar on stderr (when it is a terminal) that restarts with each new `what`; pass
 * rmx_infer_progress as the callback (it matches rmx_vocoder_progress_fn) and the bar as ctx. */
typedef struct {
    rmx_progress bar;
    char what[64];
    int started;
} rmx_infer_bar;

void rmx_infer_progress(void *bar, const char *what, int64_t done, int64_t total);
void rmx_infer_bar_finish(rmx_infer_bar *b);

#endif
