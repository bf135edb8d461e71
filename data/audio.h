/* Audio in and out: decode any format libsndfile reads, downmix to mono, resample with libsoxr.
 *
 * A file that cannot be used is reported with one of the rmx_audio_status categories and a
 * one-line reason in the error buffer, so the caller can skip it, count it and say why.
 * Every function here is safe to call from several threads at once. */
#ifndef RMX_AUDIO_H
#define RMX_AUDIO_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RMX_AUDIO_OK = 0,
    RMX_AUDIO_UNREADABLE, /* missing, dangling link, a directory, no permission */
    RMX_AUDIO_EMPTY,      /* 0 bytes, or a valid header with no audio frames */
    RMX_AUDIO_NOT_AUDIO,  /* libsndfile does not recognise the format */
    RMX_AUDIO_TRUNCATED,  /* header promises more than the file holds, bad header, decode error */
    RMX_AUDIO_STATUS_COUNT
} rmx_audio_status;

/* What the header says. */
typedef struct {
    int sample_rate;
    int channels;
    int64_t frames;
} rmx_audio_info;

/* Short name of a category for summaries ("unreadable", "empty", ...). */
const char *rmx_audio_status_name(rmx_audio_status s);

/* Opens the file, reads its header and closes it again. */
rmx_audio_status rmx_audio_probe(const char *path, rmx_audio_info *info, char *err, size_t errlen);

/* Decodes the whole file, downmixes to mono (mean of the channels) and resamples to
 * `target_rate`. *out (malloc'd, caller frees) holds *n samples; *info the file's header. */
rmx_audio_status rmx_audio_load_mono(const char *path, int target_rate, float **out, int64_t *n,
                                     rmx_audio_info *info, char *err, size_t errlen);

/* The number of samples rmx_audio_resample produces for `n` input samples. */
int64_t rmx_audio_resampled_length(int64_t n, int in_rate, int out_rate);

/* Resamples mono float audio with libsoxr (high quality, linear phase); *out is malloc'd.
 * Equal rates copy the input unchanged. */
int rmx_audio_resample(const float *in, int64_t n, int in_rate, int out_rate, float **out, int64_t *n_out,
                       char *err, size_t errlen);

/* Writes mono audio as 16-bit PCM WAV, under a temporary name renamed into place. */
int rmx_audio_write_wav(const char *path, const float *x, int64_t n, int sample_rate, char *err,
                        size_t errlen);

#endif
