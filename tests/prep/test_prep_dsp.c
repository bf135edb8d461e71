/* DSP checks of remixer-prep, each against an independent computation made here:
 *   slaney      the Slaney mel scale at known points and the band edges
 *   filterbank  triangular, area-normalised filters (librosa norm='slaney')
 *   stft        centred frames, reflect padding, periodic Hann, power spectrum: against a naive DFT
 *   sine        a sine lands in the band whose centre is nearest its frequency
 *   resample    a 44.1 kHz stereo file and a 22.05 kHz mono file of the same content give the
 *               same log-mel within a stated tolerance
 * Usage: test_prep_dsp CASE [SCRATCH_DIR]. */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/audio.h"
#include "data/mel.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fputc('\n', stderr);                                 \
            g_failures++;                                        \
        }                                                        \
    } while (0)

enum { SR = 22050, N_FFT = 2048, HOP = 256, N_MELS = 128 };
static const float FLOOR = 1e-5f;

/* Slaney's scale written out from its definition (Auditory Toolbox): 200/3 Hz per mel below
 * 1 kHz, then 27 mels per factor 6.4. */
static double reference_mel(double hz) {
    return hz < 1000.0 ? 3.0 * hz / 200.0 : 15.0 + 27.0 * log(hz / 1000.0) / log(6.4);
}

static double reference_hz(double mel) {
    return mel < 15.0 ? 200.0 * mel / 3.0 : 1000.0 * pow(6.4, (mel - 15.0) / 27.0);
}

static void reference_edges(int n_mels, double fmin, double fmax, double *edges) {
    double lo = reference_mel(fmin), hi = reference_mel(fmax);
    for (int i = 0; i < n_mels + 2; i++) edges[i] = reference_hz(lo + (hi - lo) * i / (n_mels + 1));
}

static void test_slaney(void) {
    const double hz[] = {0.0, 440.0, 500.0, 999.0, 1000.0, 2000.0, 6400.0, 11025.0};
    const double mel[] = {0.0,  6.6,
                          7.5,  14.985,
                          15.0, 15.0 + 27.0 * log(2.0) / log(6.4),
                          42.0, 15.0 + 27.0 * log(11.025) / log(6.4)};
    for (size_t i = 0; i < sizeof hz / sizeof *hz; i++) {
        CHECK(fabs(rmx_mel_from_hz(hz[i]) - mel[i]) < 1e-9, "mel(%g Hz) = %.12g, expected %.12g", hz[i],
              rmx_mel_from_hz(hz[i]), mel[i]);
        CHECK(fabs(rmx_hz_from_mel(mel[i]) - hz[i]) < 1e-6, "hz(%g mel) = %.12g, expected %g", mel[i],
              rmx_hz_from_mel(mel[i]), hz[i]);
    }
    double got[N_MELS + 2], want[N_MELS + 2];
    rmx_mel_band_edges(N_MELS, 0.0, SR / 2.0, got);
    reference_edges(N_MELS, 0.0, SR / 2.0, want);
    for (int i = 0; i < N_MELS + 2; i++)
        CHECK(fabs(got[i] - want[i]) < 1e-6 * (1.0 + want[i]), "edge %d: %.9g Hz, expected %.9g", i, got[i],
              want[i]);
    CHECK(got[0] == 0.0 && fabs(got[N_MELS + 1] - 11025.0) < 1e-6, "edges must span 0..11025 Hz");
    /* below 1 kHz the scale is linear: equal spacing in Hz of 11025 Hz's mel / 129 * 200/3 */
    double step = reference_mel(11025.0) / (N_MELS + 1) * 200.0 / 3.0;
    CHECK(fabs((got[2] - got[1]) - step) < 1e-9, "linear spacing %.9g, expected %.9g", got[2] - got[1], step);
}

/* Each filter: zero outside (f_i, f_{i+2}), rising then falling, peak 2 / (f_{i+2} - f_i) at
 * f_{i+1}, values equal to the triangle at every bin, unit area in Hz. */
static void check_filter(const float *w, int n_bins, const double *e, int i) {
    double norm = 2.0 / (e[i + 2] - e[i]), bin_hz = (double)SR / N_FFT, area = 0.0;
    int peak = 0;
    for (int k = 0; k < n_bins; k++) {
        double f = k * bin_hz,
               tri = fmax(0.0, fmin((f - e[i]) / (e[i + 1] - e[i]), (e[i + 2] - f) / (e[i + 2] - e[i + 1])));
        CHECK(fabs(w[k] - norm * tri) <= 1e-6 * norm, "band %d bin %d: weight %.9g, expected %.9g", i, k,
              w[k], norm * tri);
        CHECK(w[k] >= 0.0f, "band %d bin %d: negative weight", i, k);
        if ((f <= e[i] || f >= e[i + 2]) && w[k] != 0.0f)
            CHECK(0, "band %d: weight at %g Hz outside its support", i, f);
        if (w[k] > w[peak]) peak = k;
        area += w[k] * bin_hz;
    }
    for (int k = 1; k < n_bins; k++)
        CHECK(k <= peak ? w[k] >= w[k - 1] : w[k] <= w[k - 1], "band %d is not triangular at bin %d", i, k);
    CHECK(w[peak] <= norm * (1 + 1e-6), "band %d peak %.9g above 2/(f2-f0) = %.9g", i, w[peak], norm);
    CHECK(fabs(peak * bin_hz - e[i + 1]) <= bin_hz, "band %d peaks at %g Hz, centre %g Hz", i, peak * bin_hz,
          e[i + 1]);
    if ((e[i + 2] - e[i]) / bin_hz > 20) /* wide bands: the sampled triangle integrates to ~1 */
        CHECK(fabs(area - 1.0) < 0.02, "band %d area %.4f, expected 1 (Slaney normalisation)", i, area);
}

static void test_filterbank(void) {
    const double ranges[2][2] = {{0.0, 11025.0}, {30.0, 8000.0}};
    for (int r = 0; r < 2; r++) {
        int n_bins = N_FFT / 2 + 1;
        float *w = malloc(sizeof(float) * N_MELS * n_bins);
        double e[N_MELS + 2];
        reference_edges(N_MELS, ranges[r][0], ranges[r][1], e);
        int empty = rmx_mel_filterbank(SR, N_FFT, N_MELS, ranges[r][0], ranges[r][1], w);
        CHECK(empty == 0, "%d empty bands for n_fft 2048, 128 mels", empty);
        for (int i = 0; i < N_MELS; i++) check_filter(w + (size_t)i * n_bins, n_bins, e, i);
        free(w);
    }
    float *w = malloc(sizeof(float) * 128 * 129);
    CHECK(rmx_mel_filterbank(SR, 256, 128, 0.0, 11025.0, w) > 0,
          "128 mels on a 256-point FFT must leave bands empty");
    char err[256] = "";
    CHECK(rmx_mel_create(SR, 256, 64, 128, 0.0, 11025.0, FLOOR, err, sizeof err) == NULL,
          "too many mels accepted");
    CHECK(strstr(err, "mel bands fall between FFT bins and would be empty") != NULL, "message: %s", err);
    free(w);
}

/* The log-mel of frame t as librosa defines it, in double: reflect-pad by n_fft/2, periodic Hann,
 * naive DFT, |X|^2, filterbank, log(max(., floor)). */
static void reference_frame(const float *x, int64_t n, int64_t t, const float *fb, double *out) {
    int n_bins = N_FFT / 2 + 1;
    double frame[N_FFT], power[N_FFT / 2 + 1];
    for (int i = 0; i < N_FFT; i++) {
        int64_t j = t * HOP - N_FFT / 2 + i;
        if (j < 0) j = -j;
        if (j >= n) j = 2 * (n - 1) - j;
        frame[i] = x[j] * (0.5 - 0.5 * cos(2.0 * M_PI * i / N_FFT));
    }
    for (int k = 0; k < n_bins; k++) {
        double re = 0.0, im = 0.0;
        for (int i = 0; i < N_FFT; i++) {
            re += frame[i] * cos(2.0 * M_PI * k * i / N_FFT);
            im -= frame[i] * sin(2.0 * M_PI * k * i / N_FFT);
        }
        power[k] = re * re + im * im;
    }
    for (int b = 0; b < N_MELS; b++) {
        double acc = 0.0;
        for (int k = 0; k < n_bins; k++) acc += fb[(size_t)b * n_bins + k] * power[k];
        out[b] = log(fmax(acc, FLOOR));
    }
}

static rmx_mel *default_mel(void) {
    char err[256];
    rmx_mel *m = rmx_mel_create(SR, N_FFT, HOP, N_MELS, 0.0, SR / 2.0, FLOOR, err, sizeof err);
    if (!m) {
        fprintf(stderr, "rmx_mel_create: %s\n", err);
        exit(1);
    }
    return m;
}

static void test_stft(void) {
    const int64_t n = 20000; /* not a multiple of the hop: the last frame reads the reflection */
    float *x = malloc(sizeof(float) * n);
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(0.3 * sin(0.05 * i) + 0.2 * ((double)(s >> 8) / 16777216.0 - 0.5));
    }
    rmx_mel *m = default_mel();
    int64_t frames = rmx_mel_frame_count(m, n);
    CHECK(frames == 1 + n / HOP, "frame count %lld, expected %lld", (long long)frames,
          (long long)(1 + n / HOP));
    float *out = malloc(sizeof(float) * N_MELS * frames);
    char err[256];
    CHECK(rmx_mel_compute(m, x, n, frames, out, err, sizeof err) == 0, "compute: %s", err);
    float *fb = malloc(sizeof(float) * N_MELS * (N_FFT / 2 + 1));
    rmx_mel_filterbank(SR, N_FFT, N_MELS, 0.0, SR / 2.0, fb);
    const int64_t probe[] = {0, 1, 3, 40, frames - 2, frames - 1};
    double overall = 0.0;
    for (size_t p = 0; p < sizeof probe / sizeof *probe; p++) {
        double want[N_MELS];
        reference_frame(x, n, probe[p], fb, want);
        double worst = 0.0;
        for (int b = 0; b < N_MELS; b++) worst = fmax(worst, fabs(out[b * frames + probe[p]] - want[b]));
        /* float FFT against a double DFT: 1e-4 in log power is 0.0004 dB (a symmetric instead of a
         * periodic window already moves it by 1e-3) */
        CHECK(worst < 1e-4, "frame %lld differs from the reference by %.3g in log-mel", (long long)probe[p],
              worst);
        overall = fmax(overall, worst);
    }
    printf("stft: worst log-mel difference to the double-precision reference %.2g\n", overall);
    CHECK(rmx_mel_compute(m, x, n, frames + 1, out, err, sizeof err) != 0,
          "asked for too many frames and got them");
    rmx_mel_free(m);
    free(x);
    free(out);
    free(fb);
}

static void test_sine(void) {
    const double freqs[] = {110.0, 440.0, 1000.0, 2500.0, 5000.0, 9000.0};
    double e[N_MELS + 2];
    reference_edges(N_MELS, 0.0, SR / 2.0, e);
    rmx_mel *m = default_mel();
    const int64_t n = 2 * SR;
    float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * N_MELS * rmx_mel_frame_count(m, n));
    for (size_t f = 0; f < sizeof freqs / sizeof *freqs; f++) {
        for (int64_t i = 0; i < n; i++) x[i] = (float)(0.5 * sin(2.0 * M_PI * freqs[f] * i / SR));
        int64_t frames = rmx_mel_frame_count(m, n), mid = frames / 2;
        char err[256];
        CHECK(rmx_mel_compute(m, x, n, frames, out, err, sizeof err) == 0, "compute: %s", err);
        int nearest = 0, peak = 0;
        for (int b = 0; b < N_MELS; b++) {
            if (fabs(e[b + 1] - freqs[f]) < fabs(e[nearest + 1] - freqs[f])) nearest = b;
            if (out[b * frames + mid] > out[peak * frames + mid]) peak = b;
        }
        CHECK(peak == nearest, "%g Hz peaks in band %d (centre %.1f Hz), nearest centre is band %d (%.1f Hz)",
              freqs[f], peak, e[peak + 1], nearest, e[nearest + 1]);
        /* far from the tone only leakage and the floor remain: at least 60 dB (13.8 nats) down */
        int far = nearest > N_MELS / 2 ? 5 : N_MELS - 5;
        CHECK(out[peak * frames + mid] - out[far * frames + mid] > 13.8, "%g Hz: band %d is not quiet",
              freqs[f], far);
    }
    rmx_mel_free(m);
    free(x);
    free(out);
}

/* ---------------------------------------------------------------- resampling */

/* 0.1 s raised-cosine fades: an abrupt start would be a click with energy up to each file's own
 * Nyquist frequency, which the 44.1 kHz file has and the resampled version rightly loses. */
static double fade(double t, double length) {
    double edge = fmin(t, length - t);
    return edge >= 0.1 ? 1.0 : edge <= 0.0 ? 0.0 : 0.5 - 0.5 * cos(M_PI * edge / 0.1);
}

/* The test content as a function of time, so each rate samples the same signal: three tones, a
 * chirp and a slow tremolo, all below 8 kHz (inside the resampler's pass band at 22.05 kHz). */
static double content(double t) {
    double chirp_phase = 2.0 * M_PI * (100.0 * t + 0.5 * (7900.0 / 4.0) * t * t); /* 100 Hz -> 8 kHz in 4 s */
    return 0.25 * sin(2.0 * M_PI * 220.0 * t) * (0.7 + 0.3 * sin(2.0 * M_PI * 1.3 * t)) +
           0.15 * sin(2.0 * M_PI * 1375.3 * t) + 0.1 * sin(2.0 * M_PI * 4000.0 * t) + 0.2 * sin(chirp_phase);
}

/* The difference between the channels, which the downmix (mean) must cancel. */
static double side(double t) { return 0.2 * sin(2.0 * M_PI * 3000.0 * t + 1.0); }

static int write_fixture(const char *path, int rate, int channels, double seconds) {
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &si);
    if (!f) return fprintf(stderr, "%s: %s\n", path, sf_strerror(NULL)), -1;
    int64_t n = (int64_t)(seconds * rate);
    float *buf = malloc(sizeof(float) * n * channels);
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / rate, c = content(t) * fade(t, seconds), d = side(t) * fade(t, seconds);
        if (channels == 1)
            buf[i] = (float)c;
        else {
            buf[2 * i] = (float)(c + d);
            buf[2 * i + 1] = (float)(c - d);
        }
    }
    sf_count_t w = sf_writef_float(f, buf, n);
    sf_close(f);
    free(buf);
    return w == n ? 0 : -1;
}

static float *load_logmel(const rmx_mel *m, const char *path, int64_t *frames) {
    float *x = NULL;
    int64_t n = 0;
    rmx_audio_info info;
    char err[512];
    if (rmx_audio_load_mono(path, SR, &x, &n, &info, err, sizeof err) != RMX_AUDIO_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        exit(1);
    }
    *frames = rmx_mel_frame_count(m, n);
    float *out = malloc(sizeof(float) * N_MELS * *frames);
    if (rmx_mel_compute(m, x, n, *frames, out, err, sizeof err) != 0) exit(1);
    free(x);
    return out;
}

/* Tolerance: at every (band, frame) within 60 dB of the loudest value, the log-mel powers agree
 * within 0.01 nats (0.04 dB), and within 0.001 nats on average. Measured: 0.002 worst, 0.0001
 * mean; what remains is the 16-bit quantisation of both files and the resampler's pass-band
 * ripple. */
static void test_resample(const char *dir) {
    char hi[4096], lo[4096];
    snprintf(hi, sizeof hi, "%s/content-44100-stereo.wav", dir);
    snprintf(lo, sizeof lo, "%s/content-22050-mono.wav", dir);
    if (write_fixture(hi, 44100, 2, 4.0) != 0 || write_fixture(lo, SR, 1, 4.0) != 0) exit(1);
    rmx_mel *m = default_mel();
    int64_t fa, fb;
    float *a = load_logmel(m, hi, &fa), *b = load_logmel(m, lo, &fb);
    CHECK(fa == fb, "frame counts differ: %lld from 44.1 kHz, %lld from 22.05 kHz", (long long)fa,
          (long long)fb);
    float loudest = -INFINITY;
    for (int64_t i = 0; i < N_MELS * fb; i++) loudest = fmaxf(loudest, b[i]);
    double worst = 0.0, sum = 0.0;
    long count = 0;
    for (int64_t i = 0; fa == fb && i < N_MELS * fb; i++) {
        if (b[i] < loudest - 13.8f) continue; /* 60 dB below the peak: leakage, floor and 16-bit noise */
        double d = fabs(a[i] - b[i]);
        worst = fmax(worst, d);
        sum += d;
        count++;
    }
    CHECK(count > N_MELS * fb / 10, "too few loud bins compared (%ld)", count);
    CHECK(worst < 0.01, "44.1 kHz stereo vs 22.05 kHz mono: worst log-mel difference %.4f > 0.01", worst);
    CHECK(sum / count < 0.001, "mean log-mel difference %.5f > 0.001", sum / count);
    printf("resample: %ld bins compared, worst %.4f, mean %.5f nats\n", count, worst, sum / count);
    rmx_mel_free(m);
    free(a);
    free(b);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_prep_dsp slaney|filterbank|stft|sine|resample [SCRATCH_DIR]\n");
        return 2;
    }
    const char *c = argv[1];
    if (strcmp(c, "slaney") == 0)
        test_slaney();
    else if (strcmp(c, "filterbank") == 0)
        test_filterbank();
    else if (strcmp(c, "stft") == 0)
        test_stft();
    else if (strcmp(c, "sine") == 0)
        test_sine();
    else if (strcmp(c, "resample") == 0 && argc > 2)
        test_resample(argv[2]);
    else {
        fprintf(stderr, "unknown case '%s'\n", c);
        return 2;
    }
    if (g_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", c, g_failures);
    else
        printf("%s: ok\n", c);
    return g_failures ? 1 : 0;
}
