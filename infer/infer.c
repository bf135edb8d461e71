/* Shared pieces of the inference programs (infer/infer.h). */
#include "infer/infer.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mel.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"

/* The status of a decode that failed, as an exit code. */
static int audio_failure(rmx_audio_status s) {
    return s == RMX_AUDIO_UNREADABLE || s == RMX_AUDIO_EMPTY || s == RMX_AUDIO_NOT_AUDIO || s == RMX_AUDIO_TRUNCATED
               ? RMX_EXIT_DATA
               : RMX_EXIT_FAILURE;
}

/* out->samples decoded: its log-mel, every frame. `name` prefixes the messages. */
static int compute_logmel(const char *name, const rmx_mel_params *p, rmx_infer_audio *out, char *err,
                          size_t errlen) {
    char why[1024];
    if (out->n < 1) {
        rmx_infer_audio_free(out);
        rmx_seterr(err, errlen, "%s: no audio samples after decoding", name);
        return RMX_EXIT_DATA;
    }
    double t0 = rmx_now_s();
    rmx_mel *mel = rmx_mel_create(p->sample_rate, p->n_fft, p->hop_length, p->n_mels, p->fmin, p->fmax, p->log_floor,
                                  why, sizeof why);
    if (!mel) {
        rmx_infer_audio_free(out);
        rmx_seterr(err, errlen, "mel parameters: %s", why);
        return RMX_EXIT_FAILURE;
    }
    out->frames = rmx_mel_frame_count(mel, out->n);
    out->logmel = malloc((size_t)out->frames * p->n_mels * sizeof *out->logmel);
    int rc = out->logmel ? rmx_mel_compute(mel, out->samples, out->n, out->frames, out->logmel, why, sizeof why)
                         : rmx_seterr(why, sizeof why, "out of memory for %lld frames", (long long)out->frames);
    rmx_mel_free(mel);
    if (rc != 0) {
        rmx_infer_audio_free(out);
        rmx_seterr(err, errlen, "%s: %s", name, why);
        return RMX_EXIT_FAILURE;
    }
    out->mel_s = rmx_now_s() - t0;
    return RMX_EXIT_OK;
}

int rmx_infer_load_audio(const char *path, const rmx_mel_params *p, rmx_infer_audio *out, char *err,
                         size_t errlen) {
    memset(out, 0, sizeof *out);
    char why[1024];
    double t0 = rmx_now_s();
    rmx_audio_status s = rmx_audio_load_mono(path, p->sample_rate, &out->samples, &out->n, &out->info, why, sizeof why);
    if (s != RMX_AUDIO_OK) {
        rmx_seterr(err, errlen, "%s: %s", path, why);
        return audio_failure(s);
    }
    out->decode_s = rmx_now_s() - t0;
    return compute_logmel(path, p, out, err, errlen);
}

int rmx_infer_load_audio_memory(const void *data, size_t len, const char *name, const rmx_mel_params *p,
                                rmx_infer_audio *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char why[1024];
    double t0 = rmx_now_s();
    rmx_audio_status s =
        rmx_audio_load_mono_memory(data, len, p->sample_rate, &out->samples, &out->n, &out->info, why, sizeof why);
    if (s != RMX_AUDIO_OK) {
        rmx_seterr(err, errlen, "%s: %s", name, why);
        return audio_failure(s);
    }
    out->decode_s = rmx_now_s() - t0;
    return compute_logmel(name, p, out, err, errlen);
}

void rmx_infer_audio_free(rmx_infer_audio *a) {
    free(a->samples);
    free(a->logmel);
    memset(a, 0, sizeof *a);
}

void rmx_infer_mean_std(const float *x, int64_t n, float *mean, float *std) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mu = n > 0 ? sum / (double)n : 0.0, dev = 0.0;
    for (int64_t i = 0; i < n; i++) dev += ((double)x[i] - mu) * ((double)x[i] - mu);
    double sd = n > 0 ? sqrt(dev / (double)n) : 0.0;
    *mean = (float)mu;
    *std = sd > 1e-6 ? (float)sd : 1.0f;
}

int64_t rmx_infer_segment_count(int64_t frames, int seg, int overlap) {
    if (frames <= seg) return 1;
    const int64_t stride = seg - overlap;
    return 1 + (frames - seg + stride - 1) / stride;
}

int64_t rmx_infer_segment_start(int64_t k, int64_t count, int64_t frames, int seg, int overlap) {
    if (k == count - 1) return frames > seg ? frames - seg : 0;
    return k * (int64_t)(seg - overlap);
}

float rmx_infer_crossfade(int64_t k, int64_t count, int64_t frames, int seg, int overlap, int64_t t) {
    if (k > 0) { /* the hand-over from segment k - 1, over the last `overlap` frames of its span */
        const int64_t end = rmx_infer_segment_start(k - 1, count, frames, seg, overlap) + seg;
        if (t < end - overlap) return 0.0f;
        if (t < end) return ((float)(t - (end - overlap)) + 0.5f) / (float)overlap;
    }
    if (k < count - 1) { /* the hand-over to segment k + 1 */
        const int64_t end = rmx_infer_segment_start(k, count, frames, seg, overlap) + seg;
        if (t >= end) return 0.0f;
        if (t >= end - overlap) return ((float)(end - t) - 0.5f) / (float)overlap;
    }
    return 1.0f;
}

int rmx_infer_autoencode(rmx_frozen_ae *f, const float *x, int64_t frames, int overlap, int batch, float pad,
                         const rmx_infer_latent_pass *pass, float *y, rmx_infer_progress_fn progress,
                         void *progress_ctx, char *err, size_t errlen) {
    const int M = f->hp.mels, seg = f->hp.frames;
    if (overlap < 0 || overlap > seg / 2)
        return rmx_seterr(err, errlen, "the overlap must be between 0 and half a segment (%d frames), got %d", seg / 2,
                          overlap);
    if (batch < 1) batch = 1;
    rmx_ae *ae = f->ae;
    rmx_backend *be = rmx_ae_params(ae)->be;
    int lc, lh, lw;
    rmx_ae_latent_shape(ae, &lc, &lh, &lw);
    const int64_t count = rmx_infer_segment_count(frames, seg, overlap);
    const size_t per = (size_t)M * seg, zper = (size_t)lc * lh * lw;
    rmx_ae_reserve(ae, batch);
    float *host = malloc((size_t)batch * per * sizeof *host);
    float *dev_x = be->alloc(be, (size_t)batch * per * sizeof(float));
    float *dev_z = be->alloc(be, (size_t)batch * zper * sizeof(float));
    if (!host) return rmx_seterr(err, errlen, "out of memory for %d segments", batch);
    memset(y, 0, (size_t)M * frames * sizeof *y);
    for (int64_t k0 = 0; k0 < count; k0 += batch) {
        const int n = (int)(count - k0 < batch ? count - k0 : batch);
        for (int s = 0; s < n; s++) {
            const int64_t start = rmx_infer_segment_start(k0 + s, count, frames, seg, overlap);
            for (int b = 0; b < M; b++)
                for (int i = 0; i < seg; i++) {
                    int64_t t = start + i;
                    host[s * per + (size_t)b * seg + i] = t < frames ? x[(size_t)b * frames + t] : pad;
                }
        }
        be->to_backend(be, dev_x, host, (size_t)n * per * sizeof(float));
        const float *z = rmx_ae_latents(ae, n, dev_x);
        be->copy(be, dev_z, z, (size_t)n * zper * sizeof(float));
        if (pass) pass->fn(pass->ctx, n, k0, dev_z);
        const float *xhat = rmx_ae_decode_latents(ae, n, dev_z);
        be->to_host(be, host, xhat, (size_t)n * per * sizeof(float));
        for (int s = 0; s < n; s++) {
            const int64_t k = k0 + s, start = rmx_infer_segment_start(k, count, frames, seg, overlap);
            for (int i = 0; i < seg && start + i < frames; i++) {
                const float w = rmx_infer_crossfade(k, count, frames, seg, overlap, start + i);
                if (w == 0.0f) continue;
                for (int b = 0; b < M; b++) y[(size_t)b * frames + start + i] += w * host[s * per + (size_t)b * seg + i];
            }
        }
        if (progress) progress(progress_ctx, pass ? pass->label : "autoencoder", k0 + n, count);
    }
    be->free(be, dev_x);
    be->free(be, dev_z);
    free(host);
    for (int64_t i = 0; i < (int64_t)M * frames; i++)
        if (!isfinite(y[i]))
            return rmx_seterr(err, errlen, "the autoencoder's output is not finite (band %lld, frame %lld)",
                              (long long)(i / frames), (long long)(i % frames));
    return 0;
}

void rmx_infer_progress(void *ctx, const char *what, int64_t done, int64_t total) {
    rmx_infer_bar *b = ctx;
    if (!b->started || strcmp(b->what, what) != 0) {
        if (b->started) rmx_progress_finish(&b->bar);
        snprintf(b->what, sizeof b->what, "%s", what);
        rmx_progress_start(&b->bar, b->what, total);
        b->started = 1;
    }
    rmx_progress_update(&b->bar, done, NULL);
}

void rmx_infer_bar_finish(rmx_infer_bar *b) {
    if (b->started) rmx_progress_finish(&b->bar);
    b->started = 0;
}

int rmx_infer_parse_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || !end || *end || end == v || x < lo || x > hi) {
        rmx_error("%s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int rmx_infer_check_output(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    const char *dir = dirname(buf);
    size_t len = strlen(path);
    if (len == 0 || path[len - 1] == '/' || rmx_is_dir(path)) {
        rmx_error("%s: is a folder; give the name of the WAV file to write", path);
        return RMX_EXIT_USAGE;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        rmx_error("%s: cannot write into folder %s: %s", path, dir, strerror(errno));
        return RMX_EXIT_USAGE;
    }
    if (!S_ISDIR(st.st_mode)) {
        rmx_error("%s: %s is not a folder", path, dir);
        return RMX_EXIT_USAGE;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        rmx_error("%s: cannot write into folder %s: %s", path, dir, strerror(errno));
        return RMX_EXIT_USAGE;
    }
    return -1;
}

rmx_backend *rmx_infer_backend(const char *device, int threads, char *err, size_t errlen) {
    if (strcmp(device, "cpu") != 0) {
        char why[1024];
        rmx_backend *be = rmx_backend_cuda_create(0, why, sizeof why);
        if (be) return be;
        if (strcmp(device, "cuda") == 0) {
            rmx_seterr(err, errlen, "--device cuda was asked for, but %s", why);
            return NULL;
        }
    }
    rmx_backend *be = rmx_backend_cpu_create(threads);
    if (!be) rmx_seterr(err, errlen, "cannot create the cpu backend");
    return be;
}
