#include "data/audio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsutil.h"
#include "util/log.h"

/* libsndfile reports a failed open through a process-wide error slot (sf_error(NULL)), so opening
 * is serialised to keep one thread's reason from being read by another. Reading is not. */
static pthread_mutex_t g_open_lock = PTHREAD_MUTEX_INITIALIZER;

enum { DECODE_CHUNK_FRAMES = 65536 };

const char *rmx_audio_status_name(rmx_audio_status s) {
    switch (s) {
    case RMX_AUDIO_OK: return "ok";
    case RMX_AUDIO_UNREADABLE: return "unreadable";
    case RMX_AUDIO_EMPTY: return "empty";
    case RMX_AUDIO_NOT_AUDIO: return "not audio";
    case RMX_AUDIO_TRUNCATED: return "truncated or corrupt";
    default: return "unknown";
    }
}

static rmx_audio_status fail(rmx_audio_status s, char *err, size_t errlen, const char *fmt,
                             const char *detail) {
    rmx_seterr(err, errlen, fmt, detail);
    return s;
}

/* The checks libsndfile cannot make for us, with reasons a user understands. */
static rmx_audio_status check_file(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0)
        return fail(RMX_AUDIO_UNREADABLE, err, errlen, "cannot open: %s", strerror(errno));
    if (S_ISDIR(st.st_mode)) return fail(RMX_AUDIO_UNREADABLE, err, errlen, "%s", "is a directory");
    if (!S_ISREG(st.st_mode)) return fail(RMX_AUDIO_UNREADABLE, err, errlen, "%s", "not a regular file");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(RMX_AUDIO_UNREADABLE, err, errlen, "cannot open: %s", strerror(errno));
    close(fd);
    if (st.st_size == 0) return fail(RMX_AUDIO_EMPTY, err, errlen, "%s", "empty file (0 bytes)");
    return RMX_AUDIO_OK;
}

/* libsndfile shortens the data chunk of a truncated WAV/AIFF to what the file holds and only says
 * so in its log ("data : 220500 (should be 99956)"); a cut-off file must not pass silently as a
 * shorter one. */
static int header_claims_more_audio(SNDFILE *sf, long long *declared, long long *present) {
    char log[8192];
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    for (char *line = log; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        while (*line == ' ') line++;
        int is_data_chunk = strncmp(line, "data", 4) == 0 || strncmp(line, "SSND", 4) == 0;
        char *colon = strchr(line, ':'), *eol = strchr(line, '\n');
        if (!is_data_chunk || !colon || (eol && colon > eol)) continue;
        if (sscanf(colon + 1, " %lld (should be %lld)", declared, present) == 2 && *present < *declared)
            return 1;
    }
    return 0;
}

int64_t rmx_audio_max_missing(int sample_rate) {
    return (int64_t)RMX_AUDIO_MAX_MISSING_SECONDS * (sample_rate > 0 ? sample_rate : 0);
}

/* Bytes per frame of an uncompressed format, 0 for the others. */
static int64_t pcm_frame_bytes(const SF_INFO *info) {
    int bytes = 0;
    switch (info->format & SF_FORMAT_SUBMASK) {
    case SF_FORMAT_PCM_S8:
    case SF_FORMAT_PCM_U8:
    case SF_FORMAT_ULAW:
    case SF_FORMAT_ALAW: bytes = 1; break;
    case SF_FORMAT_PCM_16: bytes = 2; break;
    case SF_FORMAT_PCM_24: bytes = 3; break;
    case SF_FORMAT_PCM_32:
    case SF_FORMAT_FLOAT: bytes = 4; break;
    case SF_FORMAT_DOUBLE: bytes = 8; break;
    default: break;
    }
    return (int64_t)bytes * info->channels;
}

/* The frames of `missing_bytes` of a data chunk, rounded up (a partial frame is a lost frame); for
 * a compressed format in a WAV/AIFF container, in proportion to the frames the present bytes give. */
static int64_t missing_frames(const SF_INFO *info, long long missing_bytes, long long present_bytes) {
    int64_t per = pcm_frame_bytes(info);
    if (per > 0) return (int64_t)((missing_bytes + per - 1) / per);
    if (info->frames > 0 && present_bytes > 0)
        return (int64_t)ceil((double)missing_bytes * (double)info->frames / (double)present_bytes);
    return INT64_MAX;
}

/* "60272 frames, 2.73 s, missing: more than the 1 s tolerated": why a shortfall refuses a file. */
static void describe_missing(char *buf, size_t len, int64_t missing, int sample_rate) {
    snprintf(buf, len, "%lld frames, %.2f s, missing: more than the %d s tolerated", (long long)missing,
             sample_rate > 0 ? (double)missing / sample_rate : 0.0, RMX_AUDIO_MAX_MISSING_SECONDS);
}

/* The header checks once libsndfile has opened (sf) or refused (sf NULL, libsndfile's `code`) a
 * file; *missing is what a WAV/AIFF data chunk declares beyond the file's end, in frames (within
 * the bound, else the file is refused). sf is closed on refusal. */
static rmx_audio_status check_opened(SNDFILE *sf, int code, SNDFILE **out, SF_INFO *info, int64_t *missing,
                                     char *err, size_t errlen) {
    if (!sf) {
        if (code == SF_ERR_UNRECOGNISED_FORMAT)
            return fail(RMX_AUDIO_NOT_AUDIO, err, errlen, "not an audio file libsndfile can read (%s)",
                        sf_error_number(code));
        if (code == SF_ERR_SYSTEM)
            return fail(RMX_AUDIO_UNREADABLE, err, errlen, "cannot open: %s", sf_error_number(code));
        return fail(RMX_AUDIO_TRUNCATED, err, errlen, "malformed or truncated header (%s)",
                    sf_error_number(code));
    }
    if (info->channels < 1 || info->samplerate < 1) {
        sf_close(sf);
        return fail(RMX_AUDIO_NOT_AUDIO, err, errlen, "%s", "header has no channels or no sample rate");
    }
    if (info->samplerate < RMX_AUDIO_MIN_SAMPLE_RATE) {
        int rate = info->samplerate;
        sf_close(sf);
        rmx_seterr(err, errlen, "sample rate %d Hz in the header, expected at least %d Hz", rate,
                   RMX_AUDIO_MIN_SAMPLE_RATE);
        return RMX_AUDIO_NOT_AUDIO;
    }
    long long declared = 0, present = 0;
    if (header_claims_more_audio(sf, &declared, &present)) {
        int64_t lost = missing_frames(info, declared - present, present);
        if (lost > rmx_audio_max_missing(info->samplerate)) {
            char why[128] = "";
            if (lost != INT64_MAX) describe_missing(why, sizeof why, lost, info->samplerate);
            sf_close(sf);
            rmx_seterr(err, errlen, "truncated: the header declares %lld bytes of audio, the file holds %lld%s%s%s",
                       declared, present, why[0] ? " (" : "", why, why[0] ? ")" : "");
            return RMX_AUDIO_TRUNCATED;
        }
        *missing = lost;
    }
    /* libsndfile's answer when the header gives no length: an Ogg stream cut before its last page */
    if (info->frames == SF_COUNT_MAX) {
        sf_close(sf);
        return fail(RMX_AUDIO_TRUNCATED, err, errlen, "%s",
                    "truncated: the header states no length (a stream cut before its last page)");
    }
    if (info->frames <= 0) {
        sf_close(sf);
        return fail(RMX_AUDIO_EMPTY, err, errlen, "%s", "no audio frames");
    }
    *out = sf;
    return RMX_AUDIO_OK;
}

/* Opens the file and checks its header (check_opened). */
static rmx_audio_status open_audio(const char *path, SNDFILE **out, SF_INFO *info, int64_t *missing,
                                   char *err, size_t errlen) {
    *missing = 0;
    rmx_audio_status s = check_file(path, err, errlen);
    if (s != RMX_AUDIO_OK) return s;
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&g_open_lock);
    SNDFILE *sf = sf_open(path, SFM_READ, info);
    int code = sf ? SF_ERR_NO_ERROR : sf_error(NULL);
    pthread_mutex_unlock(&g_open_lock);
    return check_opened(sf, code, out, info, missing, err, errlen);
}

/* ---- audio in memory: libsndfile's virtual I/O over a read-only buffer ---- */

typedef struct {
    const unsigned char *data;
    size_t len, pos;
} mem_reader;

static sf_count_t mem_length(void *user) { return (sf_count_t)((mem_reader *)user)->len; }

static sf_count_t mem_seek(sf_count_t offset, int whence, void *user) {
    mem_reader *m = user;
    sf_count_t base = whence == SEEK_CUR ? (sf_count_t)m->pos : whence == SEEK_END ? (sf_count_t)m->len : 0;
    if (base + offset < 0) return -1;
    m->pos = (size_t)(base + offset);
    return (sf_count_t)m->pos;
}

static sf_count_t mem_read(void *ptr, sf_count_t count, void *user) {
    mem_reader *m = user;
    size_t have = m->pos < m->len ? m->len - m->pos : 0, want = (size_t)count < have ? (size_t)count : have;
    memcpy(ptr, m->data + m->pos, want);
    m->pos += want;
    return (sf_count_t)want;
}

static sf_count_t mem_write(const void *ptr, sf_count_t count, void *user) {
    (void)ptr, (void)count, (void)user;
    return 0;
}

static sf_count_t mem_tell(void *user) { return (sf_count_t)((mem_reader *)user)->pos; }

static rmx_audio_status open_memory(mem_reader *m, SNDFILE **out, SF_INFO *info, int64_t *missing, char *err,
                                    size_t errlen) {
    *missing = 0;
    if (m->len == 0) return fail(RMX_AUDIO_EMPTY, err, errlen, "%s", "empty (0 bytes)");
    memset(info, 0, sizeof *info);
    SF_VIRTUAL_IO io = {mem_length, mem_seek, mem_read, mem_write, mem_tell};
    pthread_mutex_lock(&g_open_lock);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, info, m);
    int code = sf ? SF_ERR_NO_ERROR : sf_error(NULL);
    pthread_mutex_unlock(&g_open_lock);
    return check_opened(sf, code, out, info, missing, err, errlen);
}

static void info_from_sndfile(const SF_INFO *si, int64_t missing, rmx_audio_info *info) {
    info->sample_rate = si->samplerate;
    info->channels = si->channels;
    info->frames = si->frames;
    info->frames_missing = missing;
}

rmx_audio_status rmx_audio_probe(const char *path, rmx_audio_info *info, char *err, size_t errlen) {
    SNDFILE *sf = NULL;
    SF_INFO si;
    int64_t missing = 0;
    rmx_audio_status s = open_audio(path, &sf, &si, &missing, err, errlen);
    if (s != RMX_AUDIO_OK) return s;
    info_from_sndfile(&si, missing, info);
    sf_close(sf);
    return RMX_AUDIO_OK;
}

/* Mean of the channels, frame by frame (the same sum order for every file). */
static void downmix(const float *interleaved, int64_t frames, int channels, float *mono) {
    float scale = 1.0f / (float)channels;
    for (int64_t f = 0; f < frames; f++) {
        float acc = 0.0f;
        for (int c = 0; c < channels; c++) acc += interleaved[f * channels + c];
        mono[f] = acc * scale;
    }
}

/* Decodes up to si->frames frames; *n is what decoded. A decoder error refuses the file; fewer
 * frames than the header states is the caller's to judge. The buffer grows with what actually
 * decodes: a damaged header that claims billions of frames costs nothing (found by fuzz_audio). */
static rmx_audio_status decode_mono(SNDFILE *sf, const SF_INFO *si, float **out, int64_t *n, char *err,
                                    size_t errlen) {
    int64_t cap = si->frames < DECODE_CHUNK_FRAMES ? si->frames : DECODE_CHUNK_FRAMES;
    float *mono = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *mono);
    float *chunk = malloc((size_t)DECODE_CHUNK_FRAMES * (size_t)si->channels * sizeof *chunk);
    int64_t got = 0;
    while (mono && chunk && got < si->frames) {
        sf_count_t want = si->frames - got < DECODE_CHUNK_FRAMES ? si->frames - got : DECODE_CHUNK_FRAMES;
        sf_count_t r = sf_readf_float(sf, chunk, want);
        if (r <= 0) break;
        if (got + r > cap) {
            int64_t grown = 2 * cap > got + r ? 2 * cap : got + r;
            cap = grown < si->frames ? grown : si->frames;
            float *bigger = realloc(mono, (size_t)cap * sizeof *mono);
            if (!bigger) free(mono);
            mono = bigger;
            if (!mono) break;
        }
        downmix(chunk, r, si->channels, mono + got);
        got += r;
    }
    if (!mono || !chunk) {
        free(mono);
        free(chunk);
        return fail(RMX_AUDIO_TRUNCATED, err, errlen, "%s", "out of memory decoding");
    }
    free(chunk);
    int code = sf_error(sf);
    if (code != SF_ERR_NO_ERROR) {
        free(mono);
        rmx_seterr(err, errlen, "truncated or corrupt: decoded %lld of %lld frames: %s", (long long)got,
                   (long long)si->frames, sf_strerror(sf));
        return RMX_AUDIO_TRUNCATED;
    }
    for (int64_t i = 0; i < got; i++) {
        if (!isfinite(mono[i])) {
            free(mono);
            return fail(RMX_AUDIO_TRUNCATED, err, errlen, "%s", "corrupt: non-finite samples");
        }
    }
    *out = mono;
    *n = got;
    return RMX_AUDIO_OK;
}

/* Decodes an opened file (closing it), checks the shortfall and resamples. */
static rmx_audio_status load_opened(SNDFILE *sf, const SF_INFO *si, int64_t missing, int target_rate, float **out,
                                    int64_t *n, rmx_audio_info *info, char *err, size_t errlen) {
    float *mono = NULL;
    int64_t frames = 0;
    rmx_audio_status s = decode_mono(sf, si, &mono, &frames, err, errlen);
    sf_close(sf);
    if (s != RMX_AUDIO_OK) return s;
    /* what the data chunk lacks and what the decoder did not deliver: one shortfall, one bound */
    missing += si->frames - frames;
    if (missing > rmx_audio_max_missing(si->samplerate)) {
        char why[128];
        describe_missing(why, sizeof why, missing, si->samplerate);
        free(mono);
        rmx_seterr(err, errlen, "truncated or corrupt: decoded %lld of %lld frames (%s)",
                   (long long)frames, (long long)(frames + missing), why);
        return RMX_AUDIO_TRUNCATED;
    }
    info_from_sndfile(si, missing, info);
    info->frames = frames;
    int rc = rmx_audio_resample(mono, frames, si->samplerate, target_rate, out, n, err, errlen);
    free(mono);
    return rc == 0 ? RMX_AUDIO_OK : RMX_AUDIO_TRUNCATED;
}

rmx_audio_status rmx_audio_load_mono(const char *path, int target_rate, float **out, int64_t *n,
                                     rmx_audio_info *info, char *err, size_t errlen) {
    SNDFILE *sf = NULL;
    SF_INFO si;
    int64_t missing = 0;
    rmx_audio_status s = open_audio(path, &sf, &si, &missing, err, errlen);
    if (s != RMX_AUDIO_OK) return s;
    return load_opened(sf, &si, missing, target_rate, out, n, info, err, errlen);
}

rmx_audio_status rmx_audio_probe_memory(const void *data, size_t len, rmx_audio_info *info, char *err,
                                        size_t errlen) {
    mem_reader m = {data, len, 0};
    SNDFILE *sf = NULL;
    SF_INFO si;
    int64_t missing = 0;
    rmx_audio_status s = open_memory(&m, &sf, &si, &missing, err, errlen);
    if (s != RMX_AUDIO_OK) return s;
    info_from_sndfile(&si, missing, info);
    sf_close(sf);
    return RMX_AUDIO_OK;
}

rmx_audio_status rmx_audio_load_mono_memory(const void *data, size_t len, int target_rate, float **out, int64_t *n,
                                            rmx_audio_info *info, char *err, size_t errlen) {
    mem_reader m = {data, len, 0};
    SNDFILE *sf = NULL;
    SF_INFO si;
    int64_t missing = 0;
    rmx_audio_status s = open_memory(&m, &sf, &si, &missing, err, errlen);
    if (s != RMX_AUDIO_OK) return s;
    return load_opened(sf, &si, missing, target_rate, out, n, info, err, errlen);
}

int64_t rmx_audio_resampled_length(int64_t n, int in_rate, int out_rate) {
    if (in_rate == out_rate) return n;
    /* libsoxr's one-shot conversion rounds the exact output length to the nearest sample. */
    return (int64_t)floor((double)n * (double)out_rate / (double)in_rate + 0.5);
}

int rmx_audio_resample(const float *in, int64_t n, int in_rate, int out_rate, float **out, int64_t *n_out,
                       char *err, size_t errlen) {
    int64_t cap = rmx_audio_resampled_length(n, in_rate, out_rate) + 1;
    float *buf = malloc((size_t)cap * sizeof *buf);
    if (!buf) return rmx_seterr(err, errlen, "out of memory resampling %lld samples", (long long)n);
    if (in_rate == out_rate) {
        memcpy(buf, in, (size_t)n * sizeof *buf);
        *out = buf;
        *n_out = n;
        return 0;
    }
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
    /* One soxr thread: files are already processed in parallel, and one thread keeps the
     * arithmetic order, hence the output, the same on every run. */
    soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
    size_t done = 0;
    soxr_error_t e = soxr_oneshot((double)in_rate, (double)out_rate, 1, in, (size_t)n, NULL, buf, (size_t)cap,
                                  &done, &io, &quality, &runtime);
    if (e) {
        free(buf);
        return rmx_seterr(err, errlen, "resampling %d Hz -> %d Hz failed: %s", in_rate, out_rate, e);
    }
    *out = buf;
    *n_out = (int64_t)done;
    return 0;
}

int rmx_audio_write_wav(const char *path, const float *x, int64_t n, int sample_rate, char *err,
                        size_t errlen) {
    char tmp[4096];
    rmx_tmp_name(path, tmp, sizeof tmp);
    SF_INFO si = {.samplerate = sample_rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    pthread_mutex_lock(&g_open_lock);
    SNDFILE *sf = sf_open(tmp, SFM_WRITE, &si);
    int code = sf ? SF_ERR_NO_ERROR : sf_error(NULL);
    pthread_mutex_unlock(&g_open_lock);
    if (!sf) return rmx_seterr(err, errlen, "%s: cannot create: %s", tmp, sf_error_number(code));
    /* Clip rather than wrap samples outside [-1, 1] when converting to 16 bits. */
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
    sf_count_t w = sf_writef_float(sf, x, n);
    int close_rc = sf_close(sf);
    if (w != n || close_rc != 0) {
        unlink(tmp);
        return rmx_seterr(err, errlen, "%s: write failed (%lld of %lld frames)", path, (long long)w,
                          (long long)n);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return rmx_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}
