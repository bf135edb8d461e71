/* Unit checks of the vocoder (data/vocoder.h) and the WAV writer (data/wav.h):
 *   stft         STFT -> ISTFT with the true phase gives the signal back (several lengths, a signal
 *                shorter than one frame included); the STFT is the prep's (its mel equals
 *                rmx_mel_compute's)
 *   nnls         the solution is non-negative and finite; its residual never exceeds the clipped
 *                pseudo-inverse's, frame by frame, and shrinks with the iterations; 0 iterations
 *                is the clipped pseudo-inverse, checked against a dense solve made here
 *   griffinlim   from a true magnitude, fast Griffin-Lim converges (SC falls with iterations)
 *   determinism  the vocoder, the STFT and the SC give the same bytes twice and for 1..4 threads
 *   wav          rate, length, format, metadata and peak level read back; same bytes twice; bad
 *                destinations fail with a message naming the path and leave nothing behind
 * Usage: test_vocoder CASE [SCRATCH_DIR]. */
#include <dirent.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mel.h"
#include "data/prep.h"
#include "data/vocoder.h"
#include "data/wav.h"
#include "util/rng.h"

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

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static rmx_mel_params prep_params(void) {
    rmx_prep_options o;
    rmx_prep_default_options(&o);
    rmx_mel_params p = o.audio;
    p.n_genres = 1;
    snprintf(p.genre_names[0], sizeof p.genre_names[0], "test");
    return p;
}

/* Something like music: plucked harmonic notes with decaying partials, a noise burst per beat. */
static float *music(int64_t n, int sr, uint64_t seed) {
    float *x = xmalloc((size_t)n * sizeof *x);
    const double notes[] = {110.0, 164.8, 220.0, 277.2, 329.6, 440.0, 196.0, 246.9};
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / sr, v = 0.0;
        int beat = (int)(t / 0.25);
        double tb = t - beat * 0.25;
        double f0 = notes[beat % 8];
        for (int h = 1; h <= 12; h++) v += exp(-tb * (3.0 + h)) * sin(2.0 * M_PI * f0 * h * tb) / h;
        v += 0.6 * sin(2.0 * M_PI * 55.0 * t) * exp(-fmod(t, 1.0) * 2.0);
        double u = rmx_u01(rmx_u32(seed, RMX_RNG_DEMO, 77, (uint64_t)i, 0)) - 0.5;
        v += u * 0.5 * exp(-tb * 40.0);
        x[i] = (float)(0.3 * v);
    }
    return x;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* ------------------------------------------------------------------------------------ stft */

static void test_stft(void) {
    const rmx_mel_params p = prep_params();
    char err[512];
    rmx_stft *s = rmx_stft_create(p.n_fft, p.hop_length, err, sizeof err);
    CHECK(s, "rmx_stft_create: %s", err);
    if (!s) return;
    const int K = rmx_stft_bins(s);
    const int64_t lengths[] = {22050, 22050 + 100, 256 * 40, 700, 3000};
    for (size_t c = 0; c < sizeof lengths / sizeof *lengths; c++) {
        int64_t n = lengths[c], T = rmx_stft_frame_count(s, n);
        float *x = music(n, p.sample_rate, 3), *y = xmalloc((size_t)n * sizeof *y);
        float *spec = xmalloc((size_t)T * K * 2 * sizeof *spec);
        rmx_stft_forward(s, x, n, T, spec, 0);
        rmx_stft_inverse(s, spec, T, n, y, 0);
        double peak = 0.0;
        for (int64_t i = 0; i < n; i++) peak = fmax(peak, fabs(x[i]));
        double e = max_abs_diff(x, y, n);
        printf("stft: n %lld, %lld frames: max |x - istft(stft(x))| = %.3g (peak %.3g)\n", (long long)n,
               (long long)T, e, peak);
        CHECK(e < 1e-5, "n %lld: perfect reconstruction error %.3g >= 1e-5", (long long)n, e);
        CHECK(rmx_spectral_convergence(s, x, y, n, 0) < 1e-5, "n %lld: SC of the round trip %.3g", (long long)n,
              rmx_spectral_convergence(s, x, y, n, 0));
        CHECK(rmx_spectral_convergence(s, x, x, n, 0) == 0.0, "SC of a signal against itself is not 0");
        free(x);
        free(y);
        free(spec);
    }
    /* Other sizes: n_fft 1024, hop 512 (the least overlap with exact reconstruction), and hop 100. */
    const int other[][2] = {{1024, 512}, {1024, 100}};
    for (int c = 0; c < 2; c++) {
        rmx_stft *o = rmx_stft_create(other[c][0], other[c][1], err, sizeof err);
        int64_t n = 12345, T = rmx_stft_frame_count(o, n);
        int Ko = rmx_stft_bins(o);
        float *x = music(n, p.sample_rate, 7), *y = xmalloc((size_t)n * sizeof *y);
        float *spec = xmalloc((size_t)T * Ko * 2 * sizeof *spec);
        rmx_stft_forward(o, x, n, T, spec, 2);
        rmx_stft_inverse(o, spec, T, n, y, 3);
        double e = max_abs_diff(x, y, n);
        printf("stft: n_fft %d, hop %d: max |x - istft(stft(x))| = %.3g\n", other[c][0], other[c][1], e);
        CHECK(e < 1e-5, "n_fft %d hop %d: perfect reconstruction error %.3g", other[c][0], other[c][1], e);
        free(x);
        free(y);
        free(spec);
        rmx_stft_free(o);
    }
    /* The prep's STFT: F |X|^2 equals rmx_mel_compute's mel (before the log). */
    int64_t n = 30000, T = rmx_stft_frame_count(s, n);
    float *x = music(n, p.sample_rate, 5);
    float *mag = xmalloc((size_t)T * K * sizeof *mag), *ours = xmalloc((size_t)T * p.n_mels * sizeof *ours);
    float *prep = xmalloc((size_t)T * p.n_mels * sizeof *prep);
    rmx_stft_magnitude(s, x, n, T, mag, 0);
    for (int64_t i = 0; i < T * K; i++) mag[i] *= mag[i];
    rmx_mel_inverse *inv = rmx_mel_inverse_create(&p, err, sizeof err);
    CHECK(inv, "rmx_mel_inverse_create: %s", err);
    rmx_mel *mel = rmx_mel_create(p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax, p.log_floor, err,
                                  sizeof err);
    if (inv && mel) {
        rmx_mel_inverse_apply(inv, mag, T, ours, 0);
        CHECK(rmx_mel_compute(mel, x, n, T, prep, err, sizeof err) == 0, "rmx_mel_compute: %s", err);
        double worst = 0.0;
        for (int64_t i = 0; i < T * p.n_mels; i++) {
            double a = log(fmax(ours[i], p.log_floor));
            worst = fmax(worst, fabs(a - prep[i]));
        }
        printf("stft: log-mel of our STFT vs the prep's: max |difference| = %.3g\n", worst);
        CHECK(worst < 1e-4, "our STFT's log-mel differs from the prep's by %.3g", worst);
    }
    rmx_mel_free(mel);
    rmx_mel_inverse_free(inv);
    free(x);
    free(mag);
    free(ours);
    free(prep);
    /* The prep's ranges: 1 <= hop <= n_fft; n_fft even. */
    CHECK(!rmx_stft_create(2048, 2049, err, sizeof err) && strstr(err, "hop"), "hop > n_fft accepted: %s", err);
    CHECK(!rmx_stft_create(2047, 256, err, sizeof err) && strstr(err, "n_fft"), "odd n_fft accepted: %s", err);
    rmx_stft_free(s);
}

/* ------------------------------------------------------------------------------------ nnls */

/* Mel power [M][T] of a test signal, and the dense filterbank. */
static float *mel_power_of(const rmx_mel_params *p, const float *x, int64_t n, int64_t T) {
    char err[256];
    rmx_stft *s = rmx_stft_create(p->n_fft, p->hop_length, err, sizeof err);
    rmx_mel_inverse *inv = rmx_mel_inverse_create(p, err, sizeof err);
    const int K = p->n_fft / 2 + 1;
    float *pw = xmalloc((size_t)T * K * sizeof *pw), *mel = xmalloc((size_t)T * p->n_mels * sizeof *mel);
    rmx_stft_magnitude(s, x, n, T, pw, 0);
    for (int64_t i = 0; i < T * K; i++) pw[i] *= pw[i];
    rmx_mel_inverse_apply(inv, pw, T, mel, 0);
    for (int64_t i = 0; i < T * p->n_mels; i++) mel[i] = fmaxf(mel[i], p->log_floor);
    free(pw);
    rmx_stft_free(s);
    rmx_mel_inverse_free(inv);
    return mel;
}

/* ||F p_t - m_t||^2 per frame, with the dense filterbank (independent of the solver's sparse F). */
static void frame_residuals(const rmx_mel_params *p, const float *fb, const float *power, const float *mel,
                            int64_t T, double *out) {
    const int K = p->n_fft / 2 + 1, M = p->n_mels;
    for (int64_t t = 0; t < T; t++) {
        double ss = 0.0;
        for (int b = 0; b < M; b++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) acc += (double)fb[(size_t)b * K + k] * power[(size_t)t * K + k];
            double r = acc - mel[(size_t)b * T + t];
            ss += r * r;
        }
        out[t] = ss;
    }
}

/* Solves A x = b in place by Gaussian elimination with partial pivoting (n small). */
static void dense_solve(double *A, double *b, int n) {
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[(size_t)r * n + c]) > fabs(A[(size_t)piv * n + c])) piv = r;
        for (int k = 0; k < n; k++) {
            double t = A[(size_t)c * n + k];
            A[(size_t)c * n + k] = A[(size_t)piv * n + k];
            A[(size_t)piv * n + k] = t;
        }
        double t = b[c];
        b[c] = b[piv];
        b[piv] = t;
        for (int r = c + 1; r < n; r++) {
            double f = A[(size_t)r * n + c] / A[(size_t)c * n + c];
            for (int k = c; k < n; k++) A[(size_t)r * n + k] -= f * A[(size_t)c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < n; k++) s -= A[(size_t)r * n + k] * b[k];
        b[r] = s / A[(size_t)r * n + r];
    }
}

static void test_nnls(void) {
    const rmx_mel_params p = prep_params();
    const int K = p.n_fft / 2 + 1, M = p.n_mels;
    char err[256];
    const int64_t n = 22050 * 2, T = 1 + n / p.hop_length;
    float *x = music(n, p.sample_rate, 11);
    float *mel = mel_power_of(&p, x, n, T);
    float *fb = xmalloc((size_t)M * K * sizeof *fb);
    rmx_mel_filterbank(p.sample_rate, p.n_fft, M, p.fmin, p.fmax, fb);
    rmx_mel_inverse *inv = rmx_mel_inverse_create(&p, err, sizeof err);
    CHECK(inv, "%s", err);
    if (!inv) return;
    const int iters[] = {0, 10, 50, 200, 500};
    const int n_iters = (int)(sizeof iters / sizeof *iters);
    float *power = xmalloc((size_t)T * K * sizeof *power);
    double *res = xmalloc((size_t)n_iters * T * sizeof *res);
    for (int c = 0; c < n_iters; c++) {
        rmx_vocoder_stats st = {0};
        rmx_mel_inverse_solve(inv, mel, T, iters[c], power, &st, 0, NULL, NULL);
        int64_t negative = 0, bad = 0;
        for (int64_t i = 0; i < T * K; i++) {
            negative += power[i] < 0.0f;
            bad += !isfinite(power[i]);
        }
        CHECK(negative == 0 && bad == 0, "%d iterations: %lld negative and %lld non-finite values", iters[c],
              (long long)negative, (long long)bad);
        frame_residuals(&p, fb, power, mel, T, res + (size_t)c * T);
        double tot = 0.0, mm = 0.0;
        for (int64_t t = 0; t < T; t++) tot += res[(size_t)c * T + t];
        for (int64_t i = 0; i < T * M; i++) mm += (double)mel[i] * mel[i];
        printf("nnls: %3d iterations: relative mel residual %.6f (solver says %.6f, pinv %.6f)\n", iters[c],
               sqrt(tot / mm), st.residual_nnls, st.residual_pinv);
        CHECK(fabs(sqrt(tot / mm) - st.residual_nnls) < 1e-3 * st.residual_pinv + 1e-9,
              "the solver's residual %.6g differs from the dense one %.6g", st.residual_nnls, sqrt(tot / mm));
        if (c == 0) {
            /* The clipped pseudo-inverse, against a dense solve of (F F^T) lam = m made here. */
            double *G = xmalloc((size_t)M * M * sizeof *G), *lam = xmalloc((size_t)M * sizeof *lam);
            double worst = 0.0, scale = 0.0;
            for (int64_t t = 0; t < T; t += 37) {
                for (int a = 0; a < M; a++)
                    for (int b = 0; b < M; b++) {
                        double s = 0.0;
                        for (int k = 0; k < K; k++) s += (double)fb[(size_t)a * K + k] * fb[(size_t)b * K + k];
                        G[(size_t)a * M + b] = s;
                    }
                for (int b = 0; b < M; b++) lam[b] = mel[(size_t)b * T + t];
                dense_solve(G, lam, M);
                for (int k = 0; k < K; k++) {
                    double v = 0.0;
                    for (int b = 0; b < M; b++) v += (double)fb[(size_t)b * K + k] * lam[b];
                    v = fmax(v, 0.0);
                    worst = fmax(worst, fabs(v - power[(size_t)t * K + k]));
                    scale = fmax(scale, v);
                }
            }
            printf("nnls: clipped pseudo-inverse vs a dense solve: max |difference| %.3g (max value %.3g)\n", worst,
                   scale);
            CHECK(worst <= 1e-4 * scale, "the clipped pseudo-inverse differs from a dense solve by %.3g", worst);
            free(G);
            free(lam);
        } else {
            /* The solver compares residuals of its float products; allow their rounding (a
             * relative 1e-5 of the frame's mel energy), nothing more. */
            int64_t worse = 0, above_pinv = 0;
            for (int64_t t = 0; t < T; t++) {
                double energy = 0.0;
                for (int b = 0; b < M; b++) energy += (double)mel[(size_t)b * T + t] * mel[(size_t)b * T + t];
                double now = res[(size_t)c * T + t], tol = 1e-10 * energy;
                worse += now > res[(size_t)(c - 1) * T + t] + tol;
                above_pinv += now > res[t] + tol;
            }
            CHECK(above_pinv == 0, "%d iterations: %lld frames have a larger residual than the clipped pseudo-inverse",
                  iters[c], (long long)above_pinv);
            CHECK(worse == 0, "%d iterations: %lld frames have a larger residual than with %d", iters[c],
                  (long long)worse, iters[c - 1]);
        }
    }
    CHECK(res[0] > 0.0, "test input too easy: the pseudo-inverse is exact");
    double first = 0.0, last = 0.0;
    for (int64_t t = 0; t < T; t++) {
        first += res[t];
        last += res[(size_t)(n_iters - 1) * T + t];
    }
    CHECK(last < 0.05 * first, "500 NNLS iterations only reduced the residual from %.4g to %.4g", first, last);
    free(x);
    free(mel);
    free(fb);
    free(power);
    free(res);
    rmx_mel_inverse_free(inv);
}

/* ------------------------------------------------------------------------------ griffin-lim */

static void test_griffinlim(void) {
    const rmx_mel_params p = prep_params();
    char err[256];
    rmx_stft *s = rmx_stft_create(p.n_fft, p.hop_length, err, sizeof err);
    const int K = rmx_stft_bins(s);
    const int64_t n = 22050 * 2, T = rmx_stft_frame_count(s, n);
    float *x = music(n, p.sample_rate, 13), *y = xmalloc((size_t)n * sizeof *y);
    float *mag = xmalloc((size_t)T * K * sizeof *mag);
    rmx_stft_magnitude(s, x, n, T, mag, 0);
    double prev = INFINITY;
    const int iters[] = {0, 8, 32, 100};
    for (int c = 0; c < 4; c++) {
        rmx_vocoder_options o;
        rmx_vocoder_default_options(&o);
        o.iterations = iters[c];
        CHECK(rmx_griffin_lim(s, mag, T, n, &o, y, err, sizeof err) == 0, "%s", err);
        double sc = rmx_spectral_convergence(s, x, y, n, 0);
        printf("griffinlim: %3d iterations (true magnitude): SC %.4f\n", iters[c], sc);
        CHECK(isfinite(sc) && sc < prev, "SC %.4f at %d iterations is not below %.4f", sc, iters[c], prev);
        prev = sc;
    }
    CHECK(prev < 0.1, "100 iterations from the true magnitude leave SC %.4f", prev);
    rmx_vocoder_options o;
    rmx_vocoder_default_options(&o);
    o.momentum = 1.0f;
    CHECK(rmx_griffin_lim(s, mag, T, n, &o, y, err, sizeof err) != 0 && strstr(err, "momentum"),
          "momentum 1 accepted: %s", err);
    free(x);
    free(y);
    free(mag);
    rmx_stft_free(s);
}

/* ------------------------------------------------------------------------------ determinism */

static void test_determinism(void) {
    rmx_mel_params p = prep_params();
    char err[256];
    const int64_t n = 22050 * 3;
    float *x = music(n, p.sample_rate, 17);
    rmx_mel *mel = rmx_mel_create(p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax, p.log_floor, err,
                                  sizeof err);
    const int64_t T = rmx_mel_frame_count(mel, n);
    float *logmel = xmalloc((size_t)T * p.n_mels * sizeof *logmel);
    rmx_mel_compute(mel, x, n, T, logmel, err, sizeof err);
    p.norm_mean = -3.5f;
    p.norm_std = 2.25f;
    for (int64_t i = 0; i < T * p.n_mels; i++) logmel[i] = (logmel[i] - p.norm_mean) / p.norm_std;
    rmx_vocoder *v = rmx_vocoder_create(&p, err, sizeof err);
    CHECK(v, "rmx_vocoder_create: %s", err);
    if (!v) return;
    float *first = NULL;
    double sc_first = 0.0;
    const int threads[] = {1, 2, 3, 4, 1};
    for (int c = 0; c < 5; c++) {
        rmx_vocoder_options o;
        rmx_vocoder_default_options(&o);
        o.iterations = 8;
        o.nnls_iterations = 30;
        o.seed = 42;
        o.threads = threads[c];
        float *y = NULL;
        int64_t ny = 0;
        CHECK(rmx_vocoder_run(v, logmel, T, n, &o, &y, &ny, NULL, err, sizeof err) == 0, "%s", err);
        if (!y) continue;
        CHECK(ny == n, "output length %lld, expected %lld", (long long)ny, (long long)n);
        double sc = rmx_spectral_convergence(rmx_vocoder_stft(v), x, y, n, threads[c]);
        if (!first) {
            first = y;
            sc_first = sc;
            printf("determinism: SC %.6f\n", sc);
            continue;
        }
        CHECK(memcmp(first, y, (size_t)n * sizeof *y) == 0, "%d threads: different output bytes", threads[c]);
        CHECK(sc == sc_first, "%d threads: SC %.17g differs from %.17g", threads[c], sc, sc_first);
        free(y);
    }
    /* Another seed gives another phase; zero phase is deterministic too. */
    rmx_vocoder_options o;
    rmx_vocoder_default_options(&o);
    o.iterations = 8;
    o.nnls_iterations = 30;
    o.seed = 43;
    float *y = NULL;
    int64_t ny = 0;
    rmx_vocoder_run(v, logmel, T, n, &o, &y, &ny, NULL, err, sizeof err);
    CHECK(y && first && memcmp(first, y, (size_t)n * sizeof *y) != 0, "seeds 42 and 43 give the same output");
    free(y);
    /* Default length: hop * (T - 1). */
    rmx_vocoder_run(v, logmel, T, 0, &o, &y, &ny, NULL, err, sizeof err);
    CHECK(ny == (int64_t)p.hop_length * (T - 1), "default length %lld", (long long)ny);
    free(y);
    /* A non-finite log-mel is refused with a message. */
    logmel[5 * T + 7] = NAN;
    CHECK(rmx_vocoder_run(v, logmel, T, n, &o, &y, &ny, NULL, err, sizeof err) != 0 && strstr(err, "band 5, frame 7"),
          "NaN input: %s", err);
    free(first);
    free(x);
    free(logmel);
    rmx_mel_free(mel);
    rmx_vocoder_free(v);
}

/* ------------------------------------------------------------------------------------- wav */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)n);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* Files in dir whose name contains `part`. */
static int count_files(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int c = 0;
    for (struct dirent *e; (e = readdir(d));) c += strstr(e->d_name, part) != NULL;
    closedir(d);
    return c;
}

static void test_wav(const char *dir) {
    char path[1024], err[1024];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/out.wav", dir);
    const int64_t n = 22050;
    float *x = music(n, 22050, 19);
    for (int64_t i = 0; i < n; i++) x[i] *= 3.0f; /* beyond full scale: normalisation brings it back */
    rmx_wav_options o;
    rmx_wav_default_options(&o);
    o.title = "Test title";
    o.comment = "iterations=32 seed=7";
    o.genre = "arpeggio";
    rmx_wav_report rep;
    CHECK(rmx_wav_write(path, x, n, 22050, &o, &rep, err, sizeof err) == 0, "%s", err);
    SF_INFO si = {0};
    SNDFILE *sf = sf_open(path, SFM_READ, &si);
    CHECK(sf, "cannot read back %s: %s", path, sf_strerror(NULL));
    if (sf) {
        CHECK(si.samplerate == 22050 && si.channels == 1 && si.frames == n, "read back %d Hz, %d ch, %lld frames",
              si.samplerate, si.channels, (long long)si.frames);
        CHECK(si.format == (SF_FORMAT_WAV | SF_FORMAT_PCM_16), "format 0x%x", si.format);
        const char *t = sf_get_string(sf, SF_STR_TITLE), *c = sf_get_string(sf, SF_STR_COMMENT);
        const char *sw = sf_get_string(sf, SF_STR_SOFTWARE), *g = sf_get_string(sf, SF_STR_GENRE);
        CHECK(t && strcmp(t, "Test title") == 0, "title '%s'", t ? t : "(none)");
        CHECK(c && strcmp(c, "iterations=32 seed=7") == 0, "comment '%s'", c ? c : "(none)");
        /* libsndfile appends its own name: "Remixer (libsndfile-1.2.0)". */
        CHECK(sw && strncmp(sw, "Remixer", 7) == 0, "software '%s'", sw ? sw : "(none)");
        CHECK(g && strcmp(g, "arpeggio") == 0, "genre '%s'", g ? g : "(none)");
        short *s = xmalloc((size_t)n * sizeof *s);
        CHECK(sf_read_short(sf, s, n) == n, "short read");
        int peak = 0;
        for (int64_t i = 0; i < n; i++) peak = abs(s[i]) > peak ? abs(s[i]) : peak;
        int want = (int)lrint(pow(10.0, -1.0 / 20.0) * 32767.0);
        CHECK(abs(peak - want) <= 1, "peak %d, expected %d (-1 dBFS)", peak, want);
        CHECK(fabs(rep.peak_dbfs + 1.0) < 1e-3, "reported peak %.4f dBFS", rep.peak_dbfs);
        free(s);
        sf_close(sf);
    }
    /* Same bytes twice. */
    size_t la = 0, lb = 0;
    char *a = read_all(path, &la);
    CHECK(rmx_wav_write(path, x, n, 22050, &o, NULL, err, sizeof err) == 0, "%s", err);
    char *b = read_all(path, &lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0, "two writes of the same samples differ");
    free(a);
    free(b);
    CHECK(count_files(dir, ".tmp.") == 0, "a temporary file was left in %s", dir);
    /* Bad destinations. */
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/no-such-folder/out.wav", dir);
    CHECK(rmx_wav_write(bad, x, n, 22050, &o, NULL, err, sizeof err) != 0 && strstr(err, bad) &&
              strstr(err, "No such file or directory"),
          "missing folder: %s", err);
    CHECK(rmx_wav_write(dir, x, n, 22050, &o, NULL, err, sizeof err) != 0 && strstr(err, "is a folder"),
          "folder as output: %s", err);
    x[100] = INFINITY;
    snprintf(bad, sizeof bad, "%s/inf.wav", dir);
    CHECK(rmx_wav_write(bad, x, n, 22050, &o, NULL, err, sizeof err) != 0 && strstr(err, "sample 100"),
          "non-finite sample: %s", err);
    CHECK(access(bad, F_OK) != 0, "%s was written", bad);
    if (geteuid() != 0) { /* root writes anywhere */
        char ro[900];
        snprintf(ro, sizeof ro, "%s/ro", dir);
        mkdir(ro, 0555);
        chmod(ro, 0555);
        snprintf(bad, sizeof bad, "%s/out.wav", ro);
        CHECK(rmx_wav_write(bad, x, n, 22050, &o, NULL, err, sizeof err) != 0 && strstr(err, "Permission denied"),
              "read-only folder: %s", err);
        CHECK(count_files(ro, "") == 2, "something was left in %s", ro); /* . and .. */
    }
    CHECK(count_files(dir, ".tmp.") == 0, "a temporary file was left in %s", dir);
    /* Silence stays silence. */
    memset(x, 0, (size_t)n * sizeof *x);
    CHECK(rmx_wav_write(path, x, n, 22050, &o, &rep, err, sizeof err) == 0 && rep.gain == 1.0, "silence: %s", err);
    free(x);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_vocoder stft|nnls|griffinlim|determinism|wav [SCRATCH_DIR]\n");
        return 2;
    }
    const char *c = argv[1];
    if (strcmp(c, "stft") == 0) test_stft();
    else if (strcmp(c, "nnls") == 0) test_nnls();
    else if (strcmp(c, "griffinlim") == 0) test_griffinlim();
    else if (strcmp(c, "determinism") == 0) test_determinism();
    else if (strcmp(c, "wav") == 0 && argc > 2) test_wav(argv[2]);
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
