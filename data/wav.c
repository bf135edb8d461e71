/* WAV out (data/wav.h). */
#include "data/wav.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsutil.h"
#include "util/log.h"

enum { WRITE_CHUNK = 65536 };

void rmx_wav_default_options(rmx_wav_options *o) {
    memset(o, 0, sizeof *o);
    o->software = "Remixer";
    o->normalize = 1;
    o->peak_dbfs = RMX_WAV_DEFAULT_PEAK_DBFS;
}

/* The folder a file at `path` goes into must exist, be a folder and be writable. */
static int check_destination(const char *path, char *err, size_t errlen) {
    char buf[4096];
    if (!path[0]) return rmx_seterr(err, errlen, "the output path is empty");
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return rmx_seterr(err, errlen, "%s: path too long", path);
    const size_t len = strlen(path);
    if (path[len - 1] == '/' || rmx_is_dir(path))
        return rmx_seterr(err, errlen, "%s: is a folder, not a file name", path);
    const char *dir = dirname(buf);
    struct stat st;
    if (stat(dir, &st) != 0)
        return rmx_seterr(err, errlen, "%s: cannot write into folder %s: %s", path, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return rmx_seterr(err, errlen, "%s: %s is not a folder", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return rmx_seterr(err, errlen, "%s: cannot write into folder %s: %s", path, dir, strerror(errno));
    return 0;
}

static int set_string(SNDFILE *sf, int type, const char *value, const char *name, const char *path, char *err,
                      size_t errlen) {
    if (!value || !value[0]) return 0;
    if (sf_set_string(sf, type, value) != 0)
        return rmx_seterr(err, errlen, "%s: cannot store the %s string: %s", path, name, sf_strerror(sf));
    return 0;
}

/* The checks before any output: a sample count, a rate, a peak level, finite samples; *peak the
 * largest |x|. `what` names the destination in messages. */
static int check_input(const char *what, const float *x, int64_t n, int sample_rate, const rmx_wav_options *o,
                       double *peak_out, char *err, size_t errlen) {
    if (n < 1) return rmx_seterr(err, errlen, "%s: no samples to write", what);
    if (sample_rate < 1) return rmx_seterr(err, errlen, "%s: bad sample rate %d", what, sample_rate);
    if (o->normalize && !(o->peak_dbfs <= 0.0))
        return rmx_seterr(err, errlen, "%s: the peak level must be <= 0 dBFS, got %g", what, o->peak_dbfs);
    double peak = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return rmx_seterr(err, errlen, "%s: sample %lld is not finite", what, (long long)i);
        double a = fabs((double)x[i]);
        if (a > peak) peak = a;
    }
    *peak_out = peak;
    return 0;
}

/* The strings, then the samples scaled by gain and quantised; closes sf. The file and the memory
 * writer share it, so both give the same bytes. */
static int write_samples(SNDFILE *sf, const char *what, const float *x, int64_t n, double gain, double peak,
                         const rmx_wav_options *o, rmx_wav_report *report, char *err, size_t errlen) {
    int rc = 0;
    sf_command(sf, SFC_SET_ADD_PEAK_CHUNK, NULL, SF_FALSE);
    rc |= set_string(sf, SF_STR_TITLE, o->title, "title", what, err, errlen);
    if (rc == 0) rc |= set_string(sf, SF_STR_SOFTWARE, o->software ? o->software : "Remixer", "software", what, err, errlen);
    if (rc == 0) rc |= set_string(sf, SF_STR_ARTIST, o->artist, "artist", what, err, errlen);
    if (rc == 0) rc |= set_string(sf, SF_STR_COMMENT, o->comment, "comment", what, err, errlen);
    if (rc == 0) rc |= set_string(sf, SF_STR_GENRE, o->genre, "genre", what, err, errlen);

    short *buf = rc == 0 ? malloc(WRITE_CHUNK * sizeof *buf) : NULL;
    if (rc == 0 && !buf) rc = rmx_seterr(err, errlen, "%s: out of memory", what);
    int64_t clipped = 0;
    int peak_out = 0;
    for (int64_t at = 0; rc == 0 && at < n; at += WRITE_CHUNK) {
        int64_t m = n - at < WRITE_CHUNK ? n - at : WRITE_CHUNK;
        for (int64_t i = 0; i < m; i++) {
            double v = (double)x[at + i] * gain;
            if (v > 1.0 || v < -1.0) {
                clipped++;
                v = v > 1.0 ? 1.0 : -1.0;
            }
            long q = lrint(v * 32767.0);
            buf[i] = (short)q;
            if (labs(q) > peak_out) peak_out = (int)labs(q);
        }
        sf_count_t w = sf_write_short(sf, buf, (sf_count_t)m);
        if (w != (sf_count_t)m)
            rc = rmx_seterr(err, errlen, "%s: write failed after %lld of %lld samples: %s", what,
                            (long long)(at + (w > 0 ? w : 0)), (long long)n, sf_strerror(sf));
    }
    free(buf);
    /* sf_close writes the header sizes (and closes the file descriptor it owns). */
    if (sf_close(sf) != 0 && rc == 0) rc = rmx_seterr(err, errlen, "%s: closing the WAV file failed", what);
    if (rc == 0 && report) {
        report->gain = gain;
        report->peak_in = peak;
        report->peak_dbfs = peak_out > 0 ? 20.0 * log10(peak_out / 32767.0) : -INFINITY;
        report->clipped = clipped;
    }
    return rc;
}

static double gain_for(const rmx_wav_options *o, double peak) {
    return o->normalize && peak > 0.0 ? pow(10.0, o->peak_dbfs / 20.0) / peak : 1.0;
}

int rmx_wav_write(const char *path, const float *x, int64_t n, int sample_rate, const rmx_wav_options *o,
                  rmx_wav_report *report, char *err, size_t errlen) {
    rmx_wav_options defaults;
    if (!o) {
        rmx_wav_default_options(&defaults);
        o = &defaults;
    }
    double peak = 0.0;
    if (check_input(path, x, n, sample_rate, o, &peak, err, errlen) != 0) return -1;
    if (check_destination(path, err, errlen) != 0) return -1;

    const double gain = gain_for(o, peak);
    char tmp[4096];
    rmx_tmp_name(path, tmp, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return rmx_seterr(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    SF_INFO si = {.samplerate = sample_rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *sf = sf_open_fd(fd, SFM_WRITE, &si, SF_TRUE);
    if (!sf) {
        close(fd);
        unlink(tmp);
        return rmx_seterr(err, errlen, "%s: cannot start a WAV file: %s", path, sf_strerror(NULL));
    }
    int rc = write_samples(sf, path, x, n, gain, peak, o, report, err, errlen);
    if (rc == 0) {
        char why[1024];
        if (rmx_commit_file(tmp, path, why, sizeof why) != 0) rc = rmx_seterr(err, errlen, "%s: %s", path, why);
    }
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- a WAV in memory: libsndfile's virtual I/O over a growing buffer ---- */

typedef struct {
    unsigned char *data;
    size_t len, cap, pos;
    int failed;
} mem_file;

static sf_count_t mem_length(void *user) { return (sf_count_t)((mem_file *)user)->len; }

static sf_count_t mem_seek(sf_count_t offset, int whence, void *user) {
    mem_file *m = user;
    sf_count_t base = whence == SEEK_CUR ? (sf_count_t)m->pos : whence == SEEK_END ? (sf_count_t)m->len : 0;
    if (base + offset < 0) return -1;
    m->pos = (size_t)(base + offset);
    return (sf_count_t)m->pos;
}

static sf_count_t mem_read(void *ptr, sf_count_t count, void *user) {
    mem_file *m = user;
    size_t have = m->pos < m->len ? m->len - m->pos : 0, want = (size_t)count < have ? (size_t)count : have;
    memcpy(ptr, m->data + m->pos, want);
    m->pos += want;
    return (sf_count_t)want;
}

static sf_count_t mem_write(const void *ptr, sf_count_t count, void *user) {
    mem_file *m = user;
    size_t end = m->pos + (size_t)count;
    if (end > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < end) cap *= 2;
        unsigned char *bigger = realloc(m->data, cap);
        if (!bigger) {
            m->failed = 1;
            return 0;
        }
        m->data = bigger;
        m->cap = cap;
    }
    if (m->pos > m->len) memset(m->data + m->len, 0, m->pos - m->len); /* a seek past the end */
    memcpy(m->data + m->pos, ptr, (size_t)count);
    m->pos = end;
    if (end > m->len) m->len = end;
    return count;
}

static sf_count_t mem_tell(void *user) { return (sf_count_t)((mem_file *)user)->pos; }

int rmx_wav_encode(const float *x, int64_t n, int sample_rate, const rmx_wav_options *o, rmx_wav_report *report,
                   unsigned char **out, size_t *out_len, char *err, size_t errlen) {
    rmx_wav_options defaults;
    if (!o) {
        rmx_wav_default_options(&defaults);
        o = &defaults;
    }
    *out = NULL;
    *out_len = 0;
    double peak = 0.0;
    if (check_input("WAV", x, n, sample_rate, o, &peak, err, errlen) != 0) return -1;
    mem_file m = {0};
    SF_VIRTUAL_IO io = {mem_length, mem_seek, mem_read, mem_write, mem_tell};
    SF_INFO si = {.samplerate = sample_rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *sf = sf_open_virtual(&io, SFM_WRITE, &si, &m);
    if (!sf) {
        free(m.data);
        return rmx_seterr(err, errlen, "WAV: cannot start a WAV in memory: %s", sf_strerror(NULL));
    }
    int rc = write_samples(sf, "WAV", x, n, gain_for(o, peak), peak, o, report, err, errlen);
    if (rc == 0 && m.failed) rc = rmx_seterr(err, errlen, "WAV: out of memory for %lld samples", (long long)n);
    if (rc != 0) {
        free(m.data);
        return -1;
    }
    *out = m.data;
    *out_len = m.len;
    return 0;
}
