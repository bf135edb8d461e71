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
    RMX_AUDIO_TRUNCATED,  /* header promises more than the file holds (beyond the bound below),
                             bad header, decode error */
    RMX_AUDIO_STATUS_COUNT
} rmx_audio_status;

/* A header may state a little more audio than the file holds or decodes: a Vorbis stream whose
 * last granule position runs past its last packet, an encoder's padding bookkeeping, a copy
 * that lost the last fraction of a second. Such bookkeeping errors are a few codec blocks (a
 * Vorbis block is at most 8192 frames, an MP3 frame 1152), whatever the file's length, so the
 * bound is absolute: a shortfall of at most RMX_AUDIO_MAX_MISSING_SECONDS of audio (at the file's
 * own rate) keeps the frames that decode and says how many are missing; a larger one is a
 * truncated or corrupt file. One second is a third of a default segment (256 frames of hop 256
 * at 22,050 Hz, 2.97 s), so a kept file loses at most its last segment; a cut-off copy or
 * download nearly always loses far more. */
#define RMX_AUDIO_MAX_MISSING_SECONDS 1
/* The lowest sample rate accepted: no music recording is sampled below it, and a header that says
 * so is damaged (resampling 1 Hz to 22,050 Hz would turn a few kilobytes into gigabytes; a fuzz
 * finding). */
#define RMX_AUDIO_MIN_SAMPLE_RATE 4000

/* What the header says, and what decodes. */
typedef struct {
    int sample_rate;
    int channels;
    int64_t frames;         /* frames the file holds (after rmx_audio_load_mono: that decoded) */
    int64_t frames_missing; /* frames the header states beyond `frames`; 0 for a sound file, at
                             * most rmx_audio_max_missing(sample_rate) for a file that is kept */
} rmx_audio_info;

/* The largest shortfall (in frames) tolerated at `sample_rate`: RMX_AUDIO_MAX_MISSING_SECONDS. */
int64_t rmx_audio_max_missing(int sample_rate);

/* Short name of a category for summaries ("unreadable", "empty", ...). */
const char *rmx_audio_status_name(rmx_audio_status s);

/* Opens the file, reads its header and closes it again. A WAV/AIFF data chunk that declares more
 * than the file holds is known here (info->frames_missing); a shortfall that shows only when the
 * file is decoded (Vorbis, FLAC, MP3) is known after rmx_audio_load_mono. */
rmx_audio_status rmx_audio_probe(const char *path, rmx_audio_info *info, char *err, size_t errlen);

/* Decodes the whole file, downmixes to mono (mean of the channels) and resamples to
 * `target_rate`. *out (malloc'd, caller frees) holds *n samples; *info the file's header, with
 * info->frames the frames decoded and info->frames_missing those the header states beyond them
 * (a file missing more than rmx_audio_max_missing is refused as RMX_AUDIO_TRUNCATED). */
rmx_audio_status rmx_audio_load_mono(const char *path, int target_rate, float **out, int64_t *n,
                                     rmx_audio_info *info, char *err, size_t errlen);

/* rmx_audio_probe for a file held in memory: what its header says, nothing decoded (a caller can
 * refuse audio that is too long before decoding it; decoding never goes past the header's frames). */
rmx_audio_status rmx_audio_probe_memory(const void *data, size_t len, rmx_audio_info *info, char *err,
                                        size_t errlen);

/* rmx_audio_load_mono for a file held in memory (an upload): data[0 .. len) is read through
 * libsndfile's virtual I/O with the same checks (0 bytes: RMX_AUDIO_EMPTY). */
rmx_audio_status rmx_audio_load_mono_memory(const void *data, size_t len, int target_rate, float **out, int64_t *n,
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
