#include "data/mel.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* FFTW's planner is not thread-safe (only fftwf_execute* is), so planning is serialised. */
static pthread_mutex_t g_plan_lock = PTHREAD_MUTEX_INITIALIZER;

/* Slaney's scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4 in frequency. */
#define SLANEY_HZ_PER_MEL (200.0 / 3.0)
#define SLANEY_LOG_START_HZ 1000.0
#define SLANEY_LOG_START_MEL (SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL)
#define SLANEY_LOG_STEP (log(6.4) / 27.0)

struct rmx_mel {
    int n_fft, hop, n_mels, n_bins;
    float log_floor;
    float *window;    /* periodic Hann, n_fft */
    int *band_first;  /* first FFT bin with a non-zero weight, per band */
    int *band_len;    /* number of such bins */
    int *band_offset; /* where the band's weights start in `weights` */
    float *weights;   /* the non-zero stretch of each band, back to back */
    fftwf_plan plan;  /* out-of-place r2c of n_fft; executed with per-call arrays */
};

double rmx_mel_from_hz(double hz) {
    if (hz < SLANEY_LOG_START_HZ) return hz / SLANEY_HZ_PER_MEL;
    return SLANEY_LOG_START_MEL + log(hz / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP;
}

double rmx_hz_from_mel(double mel) {
    if (mel < SLANEY_LOG_START_MEL) return mel * SLANEY_HZ_PER_MEL;
    return SLANEY_LOG_START_HZ * exp(SLANEY_LOG_STEP * (mel - SLANEY_LOG_START_MEL));
}

void rmx_mel_band_edges(int n_mels, double fmin, double fmax, double *edges) {
    double lo = rmx_mel_from_hz(fmin), hi = rmx_mel_from_hz(fmax);
    int last = n_mels + 1;
    for (int i = 0; i <= last; i++) edges[i] = rmx_hz_from_mel(lo + (hi - lo) * (double)i / (double)last);
}

/* Weight of FFT bin frequency f in band i: a triangle over edges[i]..edges[i+2] scaled so that
 * every band has the same area (Slaney normalisation), computed in double, stored as float. */
static float band_weight(const double *edges, int i, double f) {
    double rise = (f - edges[i]) / (edges[i + 1] - edges[i]);
    double fall = (edges[i + 2] - f) / (edges[i + 2] - edges[i + 1]);
    double tri = fmax(0.0, fmin(rise, fall));
    return (float)(tri * 2.0 / (edges[i + 2] - edges[i]));
}

int rmx_mel_filterbank(int sample_rate, int n_fft, int n_mels, double fmin, double fmax, float *weights) {
    int n_bins = n_fft / 2 + 1, empty = 0;
    double *edges = malloc((size_t)(n_mels + 2) * sizeof *edges);
    if (!edges) return n_mels;
    rmx_mel_band_edges(n_mels, fmin, fmax, edges);
    for (int i = 0; i < n_mels; i++) {
        float peak = 0.0f;
        for (int k = 0; k < n_bins; k++) {
            float w = band_weight(edges, i, (double)k * sample_rate / n_fft);
            weights[(size_t)i * n_bins + k] = w;
            peak = fmaxf(peak, w);
        }
        if (peak == 0.0f) empty++;
    }
    free(edges);
    return empty;
}

static int validate(int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax,
                    float log_floor, char *err, size_t errlen) {
    if (sample_rate < 1) return rmx_seterr(err, errlen, "sample rate must be positive, got %d", sample_rate);
    if (n_fft < 16 || n_fft % 2 != 0)
        return rmx_seterr(err, errlen, "n_fft must be even and at least 16, got %d", n_fft);
    if (hop < 1 || hop > n_fft)
        return rmx_seterr(err, errlen, "hop must be between 1 and n_fft (%d), got %d", n_fft, hop);
    if (n_mels < 1) return rmx_seterr(err, errlen, "n_mels must be at least 1, got %d", n_mels);
    if (!(fmin >= 0.0) || !(fmin < fmax) || fmax > sample_rate / 2.0)
        return rmx_seterr(
            err, errlen,
            "mel range must satisfy 0 <= fmin < fmax <= sample_rate / 2 (%g), got fmin %g, fmax %g",
            sample_rate / 2.0, fmin, fmax);
    if (!(log_floor > 0.0f) || !isfinite(log_floor))
        return rmx_seterr(err, errlen, "log floor must be positive and finite, got %g", (double)log_floor);
    return 0;
}

/* Keeps only the non-zero stretch of each band: the mel product then costs ~n_bins per frame. */
static int build_sparse_bands(rmx_mel *m, const float *dense) {
    m->band_first = malloc((size_t)m->n_mels * sizeof *m->band_first);
    m->band_len = malloc((size_t)m->n_mels * sizeof *m->band_len);
    m->band_offset = malloc((size_t)m->n_mels * sizeof *m->band_offset);
    m->weights = malloc((size_t)m->n_mels * m->n_bins * sizeof *m->weights);
    if (!m->band_first || !m->band_len || !m->band_offset || !m->weights) return -1;
    int offset = 0;
    for (int i = 0; i < m->n_mels; i++) {
        const float *row = dense + (size_t)i * m->n_bins;
        int first = 0, last = m->n_bins - 1;
        while (first < m->n_bins && row[first] == 0.0f) first++;
        while (last > first && row[last] == 0.0f) last--;
        int len = first < m->n_bins ? last - first + 1 : 0;
        m->band_first[i] = first;
        m->band_len[i] = len;
        m->band_offset[i] = offset;
        memcpy(m->weights + offset, row + first, (size_t)len * sizeof *row);
        offset += len;
    }
    return 0;
}

static int build_plan(rmx_mel *m) {
    float *in = fftwf_malloc((size_t)m->n_fft * sizeof *in);
    fftwf_complex *out = fftwf_malloc((size_t)m->n_bins * sizeof *out);
    if (in && out) {
        /* FFTW_ESTIMATE picks the algorithm by rule, not by timing, so every run, thread and rank
         * uses the same arithmetic and produces bit-identical spectra. */
        pthread_mutex_lock(&g_plan_lock);
        m->plan = fftwf_plan_dft_r2c_1d(m->n_fft, in, out, FFTW_ESTIMATE);
        pthread_mutex_unlock(&g_plan_lock);
    }
    fftwf_free(in);
    fftwf_free(out);
    return m->plan ? 0 : -1;
}

rmx_mel *rmx_mel_create(int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax,
                        float log_floor, char *err, size_t errlen) {
    if (validate(sample_rate, n_fft, hop, n_mels, fmin, fmax, log_floor, err, errlen) != 0) return NULL;
    rmx_mel *m = calloc(1, sizeof *m);
    float *dense = NULL;
    if (!m) goto oom;
    m->n_fft = n_fft;
    m->hop = hop;
    m->n_mels = n_mels;
    m->n_bins = n_fft / 2 + 1;
    m->log_floor = log_floor;
    dense = malloc((size_t)n_mels * m->n_bins * sizeof *dense);
    m->window = malloc((size_t)n_fft * sizeof *m->window);
    if (!dense || !m->window) goto oom;
    int empty = rmx_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, dense);
    if (empty > 0) {
        rmx_seterr(err, errlen,
                   "%d of the %d mel bands fall between FFT bins and would be empty: use fewer mels, "
                   "a larger n_fft or a wider fmin..fmax",
                   empty, n_mels);
        free(dense);
        rmx_mel_free(m);
        return NULL;
    }
    for (int i = 0; i < n_fft; i++) m->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n_fft));
    if (build_sparse_bands(m, dense) != 0 || build_plan(m) != 0) goto oom;
    free(dense);
    return m;
oom:
    free(dense);
    rmx_mel_free(m);
    rmx_seterr(err, errlen, "out of memory building the mel plan (n_fft %d, %d mels)", n_fft, n_mels);
    return NULL;
}

void rmx_mel_free(rmx_mel *m) {
    if (!m) return;
    if (m->plan) {
        pthread_mutex_lock(&g_plan_lock);
        fftwf_destroy_plan(m->plan);
        pthread_mutex_unlock(&g_plan_lock);
    }
    free(m->window);
    free(m->band_first);
    free(m->band_len);
    free(m->band_offset);
    free(m->weights);
    free(m);
}

int64_t rmx_mel_frame_count(const rmx_mel *m, int64_t n_samples) {
    if (n_samples < 1) return 0;
    return 1 + n_samples / m->hop;
}

/* numpy's "reflect" padding: index -1 reads x[1], index n reads x[n-2]; folded again for signals
 * shorter than the padding. */
static int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

static void fill_frame(const rmx_mel *m, const float *x, int64_t n, int64_t start, float *frame) {
    if (start >= 0 && start + m->n_fft <= n) {
        for (int i = 0; i < m->n_fft; i++) frame[i] = m->window[i] * x[start + i];
        return;
    }
    for (int i = 0; i < m->n_fft; i++) frame[i] = m->window[i] * x[reflect_index(start + i, n)];
}

static void mel_of_spectrum(const rmx_mel *m, const fftwf_complex *spec, float *power, float *out,
                            int64_t stride) {
    for (int k = 0; k < m->n_bins; k++) power[k] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];
    for (int b = 0; b < m->n_mels; b++) {
        const float *w = m->weights + m->band_offset[b];
        const float *p = power + m->band_first[b];
        float acc = 0.0f;
        for (int k = 0; k < m->band_len[b]; k++) acc += w[k] * p[k];
        out[b * stride] = logf(fmaxf(acc, m->log_floor));
    }
}

int rmx_mel_compute(const rmx_mel *m, const float *x, int64_t n, int64_t n_frames, float *out, char *err,
                    size_t errlen) {
    if (n_frames < 0 || n_frames > rmx_mel_frame_count(m, n))
        return rmx_seterr(err, errlen, "asked for %lld frames of a %lld-sample signal (at most %lld)",
                          (long long)n_frames, (long long)n, (long long)rmx_mel_frame_count(m, n));
    float *frame = fftwf_malloc((size_t)m->n_fft * sizeof *frame);
    fftwf_complex *spec = fftwf_malloc((size_t)m->n_bins * sizeof *spec);
    float *power = malloc((size_t)m->n_bins * sizeof *power);
    if (!frame || !spec || !power) {
        fftwf_free(frame);
        fftwf_free(spec);
        free(power);
        return rmx_seterr(err, errlen, "out of memory computing the mel spectrogram");
    }
    for (int64_t t = 0; t < n_frames; t++) {
        fill_frame(m, x, n, t * m->hop - m->n_fft / 2, frame);
        fftwf_execute_dft_r2c(m->plan, frame, spec);
        mel_of_spectrum(m, spec, power, out + t, n_frames);
    }
    fftwf_free(frame);
    fftwf_free(spec);
    free(power);
    return 0;
}
