/* Vocoder: NNLS mel inversion + fast Griffin-Lim (data/vocoder.h). */
#include "data/vocoder.h"

#include <fftw3.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/mel.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/rng.h"

/* FFTW's planner is not thread-safe (only fftwf_execute* is). The first STFT plan made here turns
 * on FFTW's own planner lock (fftwf_make_planner_thread_safe, libfftw3f_threads), which serialises
 * every planner call of the process, data/mel.c's included, so a server may plan from any thread. */
static pthread_once_t g_planner_once = PTHREAD_ONCE_INIT;

static void planner_thread_safe(void) { fftwf_make_planner_thread_safe(); }

/* Frames per parallel chunk of the NNLS (progress is reported between chunks). */
enum { NNLS_CHUNK = 256 };

#define OMP_THREADS(t) num_threads((t) > 0 ? (t) : omp_get_max_threads())

void rmx_vocoder_default_options(rmx_vocoder_options *o) {
    memset(o, 0, sizeof *o);
    o->iterations = RMX_VOCODER_DEFAULT_ITERATIONS;
    o->nnls_iterations = RMX_VOCODER_DEFAULT_NNLS_ITERATIONS;
    o->momentum = RMX_VOCODER_DEFAULT_MOMENTUM;
    o->phase_init = RMX_PHASE_RANDOM;
    o->seed = 0;
    o->threads = 0;
}

int rmx_vocoder_check_options(const rmx_vocoder_options *o, char *err, size_t errlen) {
    if (o->iterations < 0) return rmx_seterr(err, errlen, "iterations must be >= 0, got %d", o->iterations);
    if (o->nnls_iterations < 0)
        return rmx_seterr(err, errlen, "NNLS iterations must be >= 0, got %d", o->nnls_iterations);
    if (!(o->momentum >= 0.0f && o->momentum < 1.0f))
        return rmx_seterr(err, errlen, "momentum must be in [0, 1), got %g", (double)o->momentum);
    if (o->phase_init != RMX_PHASE_RANDOM && o->phase_init != RMX_PHASE_ZERO)
        return rmx_seterr(err, errlen, "unknown initial phase %d", (int)o->phase_init);
    return 0;
}

/* ================================================================ STFT */

struct rmx_stft {
    int n_fft, hop, bins;
    int row;          /* floats per complex row of the Griffin-Lim buffers: 2 * bins rounded up to 8 */
    float *window;    /* periodic Hann, as data/mel.c */
    fftwf_plan r2c, c2r;
};

/* numpy's "reflect" padding (data/mel.c): index -1 reads x[1], index n reads x[n-2]. */
static int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

rmx_stft *rmx_stft_create(int n_fft, int hop, char *err, size_t errlen) {
    if (n_fft < 16 || n_fft % 2 != 0) {
        rmx_seterr(err, errlen, "n_fft must be even and at least 16, got %d", n_fft);
        return NULL;
    }
    if (hop < 1 || hop > n_fft) {
        rmx_seterr(err, errlen, "hop must be between 1 and n_fft (%d), got %d", n_fft, hop);
        return NULL;
    }
    rmx_stft *s = calloc(1, sizeof *s);
    float *in = fftwf_malloc((size_t)n_fft * sizeof *in);
    fftwf_complex *spec = fftwf_malloc((size_t)(n_fft / 2 + 1) * sizeof *spec);
    if (!s || !in || !spec || !(s->window = malloc((size_t)n_fft * sizeof *s->window))) goto fail;
    s->n_fft = n_fft;
    s->hop = hop;
    s->bins = n_fft / 2 + 1;
    s->row = (2 * s->bins + 7) / 8 * 8;
    /* The same expression as data/mel.c, so the window is the prep's to the bit. */
    for (int i = 0; i < n_fft; i++) s->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n_fft));
    pthread_once(&g_planner_once, planner_thread_safe);
    s->r2c = fftwf_plan_dft_r2c_1d(n_fft, in, spec, FFTW_ESTIMATE);
    s->c2r = fftwf_plan_dft_c2r_1d(n_fft, spec, in, FFTW_ESTIMATE);
    if (!s->r2c || !s->c2r) goto fail;
    fftwf_free(in);
    fftwf_free(spec);
    return s;
fail:
    fftwf_free(in);
    fftwf_free(spec);
    rmx_stft_free(s);
    rmx_seterr(err, errlen, "out of memory planning an STFT of n_fft %d", n_fft);
    return NULL;
}

void rmx_stft_free(rmx_stft *s) {
    if (!s) return;
    if (s->r2c) fftwf_destroy_plan(s->r2c);
    if (s->c2r) fftwf_destroy_plan(s->c2r);
    free(s->window);
    free(s);
}

int rmx_stft_bins(const rmx_stft *s) { return s->bins; }

int64_t rmx_stft_frame_count(const rmx_stft *s, int64_t n) { return n < 1 ? 0 : 1 + n / s->hop; }

/* Per-thread FFT buffers, aligned as the plans' (fftwf_malloc). */
typedef struct {
    float *time;          /* n_fft */
    fftwf_complex *freq;  /* bins */
} fft_scratch;

static int scratch_alloc(const rmx_stft *s, fft_scratch *b) {
    b->time = fftwf_malloc((size_t)s->n_fft * sizeof *b->time);
    b->freq = fftwf_malloc((size_t)s->bins * sizeof *b->freq);
    return b->time && b->freq ? 0 : -1;
}

static void scratch_free(fft_scratch *b) {
    fftwf_free(b->time);
    fftwf_free(b->freq);
}

/* Windowed frame t of x (centred on t * hop, reflect-padded) -> b->freq. */
static void frame_spectrum(const rmx_stft *s, const float *x, int64_t n, int64_t t, fft_scratch *b) {
    int64_t start = t * s->hop - s->n_fft / 2;
    if (start >= 0 && start + s->n_fft <= n) {
        for (int i = 0; i < s->n_fft; i++) b->time[i] = s->window[i] * x[start + i];
    } else {
        for (int i = 0; i < s->n_fft; i++) b->time[i] = s->window[i] * x[reflect_index(start + i, n)];
    }
    fftwf_execute_dft_r2c(s->r2c, b->time, b->freq);
}

static void oom_abort(const char *what) {
    rmx_error("out of memory (%s)", what);
    abort();
}

void rmx_stft_forward(const rmx_stft *s, const float *x, int64_t n, int64_t frames, float *spec, int threads) {
#pragma omp parallel OMP_THREADS(threads)
    {
        fft_scratch b;
        if (scratch_alloc(s, &b) != 0) oom_abort("STFT buffers");
#pragma omp for schedule(static)
        for (int64_t t = 0; t < frames; t++) {
            frame_spectrum(s, x, n, t, &b);
            memcpy(spec + (size_t)t * 2 * s->bins, b.freq, (size_t)s->bins * sizeof *b.freq);
        }
        scratch_free(&b);
    }
}

void rmx_stft_magnitude(const rmx_stft *s, const float *x, int64_t n, int64_t frames, float *mag, int threads) {
#pragma omp parallel OMP_THREADS(threads)
    {
        fft_scratch b;
        if (scratch_alloc(s, &b) != 0) oom_abort("STFT buffers");
#pragma omp for schedule(static)
        for (int64_t t = 0; t < frames; t++) {
            frame_spectrum(s, x, n, t, &b);
            float *m = mag + (size_t)t * s->bins;
            for (int k = 0; k < s->bins; k++) m[k] = sqrtf(b.freq[k][0] * b.freq[k][0] + b.freq[k][1] * b.freq[k][1]);
        }
        scratch_free(&b);
    }
}

/* 1 / (summed squared window) at each output sample, 0 where the sum is below FLT_MIN (librosa
 * leaves those samples undivided; they only occur when no frame covers a sample), times 1/n_fft,
 * the scale FFTW's unnormalised c2r leaves out. Summed in frame order, in double. */
static float *inverse_norm(const rmx_stft *s, int64_t frames, int64_t n_out, int threads) {
    float *norm = malloc((size_t)n_out * sizeof *norm);
    if (!norm) return NULL;
    const int half = s->n_fft / 2;
#pragma omp parallel for OMP_THREADS(threads) schedule(static)
    for (int64_t i = 0; i < n_out; i++) {
        int64_t pos = i + half; /* in the padded signal; frame t covers [t hop, t hop + n_fft) */
        int64_t t_hi = pos / s->hop, t_lo = pos - s->n_fft + 1;
        t_lo = t_lo <= 0 ? 0 : (t_lo + s->hop - 1) / s->hop;
        if (t_hi > frames - 1) t_hi = frames - 1;
        double sum = 0.0;
        for (int64_t t = t_lo; t <= t_hi; t++) {
            double w = s->window[pos - t * s->hop];
            sum += w * w;
        }
        norm[i] = sum > FLT_MIN ? (float)(1.0 / (sum * s->n_fft)) : (float)(1.0 / s->n_fft);
    }
    return norm;
}

/* Overlap-add of the windowed time frames (frame t at frames_buf + t * frame_stride, n_fft floats)
 * into y[0..n_out), scaled by norm. Output samples go in blocks of hop (in the padded signal's
 * coordinates, block B = [B hop, (B + 1) hop)), a block at a time per thread; every sample sums its
 * frames in increasing t, so the result does not depend on the thread count. A worksharing loop:
 * called inside a parallel region, the region's threads share it (and meet at its end). */
static void overlap_add(const rmx_stft *s, const float *frames_buf, size_t frame_stride, int64_t frames,
                        const float *norm, int64_t n_out, float *y) {
    const int half = s->n_fft / 2, hop = s->hop, N = s->n_fft;
    const int64_t first_block = half / hop, last_block = (n_out - 1 + half) / hop;
#pragma omp for schedule(static)
    for (int64_t B = first_block; B <= last_block; B++) {
        float acc[hop];
        const int64_t b0 = B * hop;                 /* padded position of the block's first sample */
        int lo = (int)(b0 < half ? half - b0 : 0);  /* skip samples before output sample 0 */
        int hi = (int)(b0 + hop - half > n_out ? n_out + half - b0 : hop);
        for (int j = 0; j < hop; j++) acc[j] = 0.0f;
        int64_t t_lo = (b0 - N + 1 + hop - 1) / hop; /* first frame reaching into the block */
        if (b0 - N + 1 <= 0) t_lo = 0;
        int64_t t_hi = B < frames - 1 ? B : frames - 1;
        for (int64_t t = t_lo; t <= t_hi; t++) {
            const int64_t off = b0 - t * hop;       /* the block's offset inside frame t */
            const float *f = frames_buf + (size_t)t * frame_stride + off;
            int j_end = off + hop <= N ? hop : (int)(N - off);
            for (int j = 0; j < j_end; j++) acc[j] += f[j];
        }
        for (int j = lo; j < hi; j++) y[b0 - half + j] = acc[j] * norm[b0 - half + j];
    }
}

/* freq (destroyed) -> windowed time frame in out[0..n_fft). */
static void inverse_frame(const rmx_stft *s, fft_scratch *b, float *out) {
    fftwf_execute_dft_c2r(s->c2r, b->freq, b->time);
    for (int i = 0; i < s->n_fft; i++) out[i] = b->time[i] * s->window[i];
}

void rmx_stft_inverse(const rmx_stft *s, const float *spec, int64_t frames, int64_t n_out, float *y,
                      int threads) {
    float *buf = malloc((size_t)frames * s->n_fft * sizeof *buf);
    float *norm = inverse_norm(s, frames, n_out, threads);
    if (!buf || !norm) oom_abort("inverse STFT");
#pragma omp parallel OMP_THREADS(threads)
    {
        fft_scratch b;
        if (scratch_alloc(s, &b) != 0) oom_abort("STFT buffers");
#pragma omp for schedule(static)
        for (int64_t t = 0; t < frames; t++) {
            memcpy(b.freq, spec + (size_t)t * 2 * s->bins, (size_t)s->bins * sizeof *b.freq);
            inverse_frame(s, &b, buf + (size_t)t * s->n_fft);
        }
        scratch_free(&b);
        overlap_add(s, buf, (size_t)s->n_fft, frames, norm, n_out, y);
    }
    free(buf);
    free(norm);
}

double rmx_spectral_convergence(const rmx_stft *s, const float *ref, const float *y, int64_t n, int threads) {
    int64_t frames = rmx_stft_frame_count(s, n);
    if (frames < 1) return NAN;
    double *num = calloc((size_t)frames, sizeof *num), *den = calloc((size_t)frames, sizeof *den);
    if (!num || !den) oom_abort("spectral convergence");
#pragma omp parallel OMP_THREADS(threads)
    {
        fft_scratch a, b;
        if (scratch_alloc(s, &a) != 0 || scratch_alloc(s, &b) != 0) oom_abort("STFT buffers");
#pragma omp for schedule(static)
        for (int64_t t = 0; t < frames; t++) {
            frame_spectrum(s, ref, n, t, &a);
            frame_spectrum(s, y, n, t, &b);
            double nu = 0.0, de = 0.0;
            for (int k = 0; k < s->bins; k++) {
                double ar = a.freq[k][0], ai = a.freq[k][1], br = b.freq[k][0], bi = b.freq[k][1];
                double ma = sqrt(ar * ar + ai * ai), mb = sqrt(br * br + bi * bi);
                nu += (ma - mb) * (ma - mb);
                de += ma * ma;
            }
            num[t] = nu;
            den[t] = de;
        }
        scratch_free(&a);
        scratch_free(&b);
    }
    double nu = 0.0, de = 0.0;
    for (int64_t t = 0; t < frames; t++) {
        nu += num[t];
        de += den[t];
    }
    free(num);
    free(den);
    return de > 0.0 ? sqrt(nu / de) : (nu > 0.0 ? INFINITY : 0.0);
}

/* ================================================================ mel -> linear power (NNLS) */

struct rmx_mel_inverse {
    int n_mels, bins;
    int *first, *len, *offset; /* the non-zero stretch of each band, as data/mel.c */
    float *w;                  /* those weights, back to back */
    int *bin_lo;               /* per bin: the lower of its (at most two) bands; n_mels - 1 or
                                * n_mels when it has one or none (r[n_mels], r[n_mels + 1] are 0) */
    float *bin_wl, *bin_wh;    /* the weights of bands bin_lo and bin_lo + 1 at the bin (or 0) */
    float *d, *inv_d;          /* (F^T F 1)_k and its inverse (0 for bins in no band) */
    double *chol;              /* lower Cholesky factor of F F^T, [n_mels][n_mels] */
};

void rmx_mel_inverse_free(rmx_mel_inverse *v) {
    if (!v) return;
    free(v->first);
    free(v->len);
    free(v->offset);
    free(v->w);
    free(v->bin_lo);
    free(v->bin_wl);
    free(v->bin_wh);
    free(v->d);
    free(v->inv_d);
    free(v->chol);
    free(v);
}

rmx_mel_inverse *rmx_mel_inverse_create(const rmx_mel_params *p, char *err, size_t errlen) {
    const int M = p->n_mels, K = p->n_fft / 2 + 1;
    if (M < 1 || p->n_fft < 16 || p->n_fft % 2 || p->sample_rate < 1 || !(p->fmin >= 0.0f) ||
        !(p->fmin < p->fmax) || p->fmax > p->sample_rate / 2.0f) {
        rmx_seterr(err, errlen, "invalid mel parameters (sample rate %d, n_fft %d, %d mels, %g..%g Hz)",
                   p->sample_rate, p->n_fft, M, (double)p->fmin, (double)p->fmax);
        return NULL;
    }
    rmx_mel_inverse *v = calloc(1, sizeof *v);
    float *dense = malloc((size_t)M * K * sizeof *dense);
    double *band_sum = calloc((size_t)M, sizeof *band_sum);
    if (!v || !dense || !band_sum) goto oom;
    v->n_mels = M;
    v->bins = K;
    int empty = rmx_mel_filterbank(p->sample_rate, p->n_fft, M, p->fmin, p->fmax, dense);
    if (empty > 0) {
        rmx_seterr(err, errlen, "%d of the %d mel bands are empty at n_fft %d: the filterbank cannot be inverted",
                   empty, M, p->n_fft);
        free(dense);
        free(band_sum);
        rmx_mel_inverse_free(v);
        return NULL;
    }
    v->first = malloc((size_t)M * sizeof *v->first);
    v->len = malloc((size_t)M * sizeof *v->len);
    v->offset = malloc((size_t)M * sizeof *v->offset);
    v->w = malloc((size_t)M * K * sizeof *v->w);
    v->bin_lo = malloc((size_t)K * sizeof *v->bin_lo);
    v->bin_wl = calloc((size_t)K, sizeof *v->bin_wl);
    v->bin_wh = calloc((size_t)K, sizeof *v->bin_wh);
    v->d = calloc((size_t)K, sizeof *v->d);
    v->inv_d = calloc((size_t)K, sizeof *v->inv_d);
    v->chol = calloc((size_t)M * M, sizeof *v->chol);
    if (!v->first || !v->len || !v->offset || !v->w || !v->d || !v->inv_d || !v->chol || !v->bin_lo ||
        !v->bin_wl || !v->bin_wh)
        goto oom;
    int off = 0;
    for (int b = 0; b < M; b++) {
        const float *row = dense + (size_t)b * K;
        int first = 0, last = K - 1;
        while (first < K && row[first] == 0.0f) first++;
        while (last > first && row[last] == 0.0f) last--;
        v->first[b] = first;
        v->len[b] = last - first + 1;
        v->offset[b] = off;
        memcpy(v->w + off, row + first, (size_t)v->len[b] * sizeof *row);
        off += v->len[b];
        for (int k = first; k <= last; k++) band_sum[b] += row[k];
    }
    /* The (at most two, neighbouring) bands of each bin: Slaney triangles i and i + 2 meet at
     * edges[i + 2] with weight 0, so a bin never lies in more. */
    for (int k = 0; k < K; k++) {
        int lo = -1, count = 0;
        for (int b = 0; b < M; b++)
            if (dense[(size_t)b * K + k] != 0.0f) {
                if (lo < 0) lo = b;
                count++;
            }
        if (count > 2 || (count == 2 && dense[(size_t)(lo + 1) * K + k] == 0.0f)) {
            rmx_seterr(err, errlen, "FFT bin %d lies in %d mel bands that are not neighbours", k, count);
            free(dense);
            free(band_sum);
            rmx_mel_inverse_free(v);
            return NULL;
        }
        v->bin_lo[k] = lo < 0 ? M : lo;
        v->bin_wl[k] = lo < 0 ? 0.0f : dense[(size_t)lo * K + k];
        v->bin_wh[k] = lo >= 0 && lo + 1 < M ? dense[(size_t)(lo + 1) * K + k] : 0.0f;
    }
    /* D = diag(F^T F 1): bin k's row sum of F^T F (all entries are >= 0), which bounds F^T F. */
    for (int k = 0; k < K; k++) {
        double d = 0.0;
        for (int b = 0; b < M; b++) d += (double)dense[(size_t)b * K + k] * band_sum[b];
        v->d[k] = (float)d;
        v->inv_d[k] = d > 0.0 ? (float)(1.0 / d) : 0.0f;
    }
    /* F F^T in double, then its Cholesky factor (F has full row rank: no band is empty). */
    double *G = v->chol;
    for (int a = 0; a < M; a++)
        for (int b = 0; b <= a; b++) {
            double sum = 0.0;
            const float *ra = dense + (size_t)a * K, *rb = dense + (size_t)b * K;
            for (int k = 0; k < K; k++) sum += (double)ra[k] * rb[k];
            G[(size_t)a * M + b] = sum;
        }
    for (int j = 0; j < M; j++) {
        double d = G[(size_t)j * M + j];
        for (int k = 0; k < j; k++) d -= G[(size_t)j * M + k] * G[(size_t)j * M + k];
        if (!(d > 0.0)) {
            rmx_seterr(err, errlen, "the mel filterbank (%d bands, n_fft %d) is rank deficient", M, p->n_fft);
            free(dense);
            free(band_sum);
            rmx_mel_inverse_free(v);
            return NULL;
        }
        double l = sqrt(d);
        G[(size_t)j * M + j] = l;
        for (int i = j + 1; i < M; i++) {
            double s = G[(size_t)i * M + j];
            for (int k = 0; k < j; k++) s -= G[(size_t)i * M + k] * G[(size_t)j * M + k];
            G[(size_t)i * M + j] = s / l;
        }
    }
    free(dense);
    free(band_sum);
    return v;
oom:
    free(dense);
    free(band_sum);
    rmx_mel_inverse_free(v);
    rmx_seterr(err, errlen, "out of memory building the mel inverse (%d mels, n_fft %d)", M, p->n_fft);
    return NULL;
}

/* sum_k w[k] q[k] with four interleaved partial sums combined as (a0 + a1) + (a2 + a3): a fixed
 * order (so a fixed result) that does not wait on one addition per term. */
static inline float dot4(const float *w, const float *q, int n) {
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += w[k] * q[k];
        a1 += w[k + 1] * q[k + 1];
        a2 += w[k + 2] * q[k + 2];
        a3 += w[k + 3] * q[k + 3];
    }
    for (; k < n; k++) a0 += w[k] * q[k];
    return (a0 + a1) + (a2 + a3);
}

/* r = F p - m, returns ||r||^2 (double). */
static double residual(const rmx_mel_inverse *v, const float *p, const float *m, float *r) {
    double ss = 0.0;
    for (int b = 0; b < v->n_mels; b++) {
        r[b] = dot4(v->w + v->offset[b], p + v->first[b], v->len[b]) - m[b];
        ss += (double)r[b] * r[b];
    }
    return ss;
}

/* g = F^T r. A bin lies in at most two neighbouring bands: g[k] = wl[k] r[lo[k]] + wh[k]
 * r[lo[k] + 1], where r is padded with a zero at index n_mels (bins in no band or only one). */
static void gradient(const rmx_mel_inverse *v, const float *r, float *g) {
    const int *restrict lo = v->bin_lo;
    const float *restrict wl = v->bin_wl, *restrict wh = v->bin_wh;
    for (int k = 0; k < v->bins; k++) g[k] = wl[k] * r[lo[k]] + wh[k] * r[lo[k] + 1];
}

/* Clipped pseudo-inverse of one frame: p = max(F^T (F F^T)^-1 m, 0); lam is n_mels + bins doubles. */
static void pinv_frame(const rmx_mel_inverse *v, const float *m, double *lam, float *p) {
    const int M = v->n_mels;
    const double *L = v->chol;
    for (int i = 0; i < M; i++) { /* L y = m */
        double s = m[i];
        for (int k = 0; k < i; k++) s -= L[(size_t)i * M + k] * lam[k];
        lam[i] = s / L[(size_t)i * M + i];
    }
    for (int i = M - 1; i >= 0; i--) { /* L^T lam = y */
        double s = lam[i];
        for (int k = i + 1; k < M; k++) s -= L[(size_t)k * M + i] * lam[k];
        lam[i] = s / L[(size_t)i * M + i];
    }
    double *acc = lam + M;
    memset(acc, 0, (size_t)v->bins * sizeof *acc);
    for (int b = 0; b < M; b++) {
        const float *w = v->w + v->offset[b];
        double *q = acc + v->first[b];
        for (int k = 0; k < v->len[b]; k++) q[k] += (double)w[k] * lam[b];
    }
    for (int k = 0; k < v->bins; k++) p[k] = acc[k] > 0.0 ? (float)acc[k] : 0.0f;
}

typedef struct {
    float *m, *r, *r_new, *g, *g_new, *q, *best;
    double *lam; /* n_mels + bins */
} nnls_scratch;

/* Projected Barzilai-Borwein iterations in the metric D from p (the clipped pseudo-inverse); p ends
 * as the best iterate. s'y = ||F s||^2 = ||r_new - r||^2 is summed over the bands, s'Ds over the
 * bins while the step is taken. Returns ||F p - m||^2 of the start and of the result. */
static void nnls_frame(const rmx_mel_inverse *v, int iterations, float *p, nnls_scratch *w, double *ss_start,
                       double *ss_end) {
    const int K = v->bins, M = v->n_mels;
    double f = residual(v, p, w->m, w->r);
    *ss_start = *ss_end = f;
    if (iterations == 0 || f == 0.0) return;
    gradient(v, w->r, w->g);
    float *x = p, *x_new = w->q; /* the iterate and the next one (swapped each iteration) */
    double best = f, step = 1.0;
    memcpy(w->best, p, (size_t)K * sizeof *p);
    for (int it = 0; it < iterations; it++) {
        const float a = (float)step;
        const float *restrict xk = x, *restrict gk = w->g, *restrict id = v->inv_d, *restrict dk = v->d;
        float *restrict xn = x_new;
        float l0 = 0.0f, l1 = 0.0f, l2 = 0.0f, l3 = 0.0f; /* s'Ds in four lanes */
        int k = 0;
        for (; k + 4 <= K; k += 4)
            for (int j = 0; j < 4; j++) {
                float q = xk[k + j] - a * gk[k + j] * id[k + j];
                q = q > 0.0f ? q : 0.0f;
                float sj = q - xk[k + j];
                xn[k + j] = q;
                float t = dk[k + j] * sj * sj;
                if (j == 0) l0 += t;
                else if (j == 1) l1 += t;
                else if (j == 2) l2 += t;
                else l3 += t;
            }
        for (; k < K; k++) {
            float q = xk[k] - a * gk[k] * id[k];
            q = q > 0.0f ? q : 0.0f;
            float sj = q - xk[k];
            xn[k] = q;
            l0 += dk[k] * sj * sj;
        }
        const double sds = (double)((l0 + l1) + (l2 + l3));
        const double f_new = residual(v, x_new, w->m, w->r_new);
        double sy = 0.0;
        for (int b = 0; b < M; b++) {
            double dr = (double)w->r_new[b] - w->r[b];
            sy += dr * dr;
        }
        gradient(v, w->r_new, w->g_new);
        float *t = w->g;
        w->g = w->g_new;
        w->g_new = t;
        t = w->r;
        w->r = w->r_new;
        w->r_new = t;
        t = x;
        x = x_new;
        x_new = t;
        if (f_new < best) {
            best = f_new;
            memcpy(w->best, x, (size_t)K * sizeof *x);
        }
        if (sds == 0.0 || f_new == 0.0) break; /* a fixed point, or an exact fit */
        /* s'y = ||F s||^2 <= s'Ds, so the BB step is >= 1; the cap keeps a flat direction from
         * throwing the iterate far away. */
        step = sy > 0.0 ? sds / sy : 1e6;
        if (step > 1e6) step = 1e6;
        if (step < 1.0) step = 1.0;
    }
    memcpy(p, w->best, (size_t)K * sizeof *p);
    *ss_end = best;
}

void rmx_mel_inverse_solve(const rmx_mel_inverse *v, const float *mel_power, int64_t frames, int iterations,
                           float *power, rmx_vocoder_stats *stats, int threads,
                           rmx_vocoder_progress_fn progress, void *progress_ctx) {
    const int M = v->n_mels, K = v->bins;
    double *ss0 = calloc((size_t)frames + 1, sizeof *ss0), *ss1 = calloc((size_t)frames + 1, sizeof *ss1);
    double *mm = calloc((size_t)frames + 1, sizeof *mm);
    if (!ss0 || !ss1 || !mm) oom_abort("NNLS");
    double t0 = rmx_now_s();
    for (int64_t c0 = 0; c0 < frames; c0 += NNLS_CHUNK) {
        int64_t c1 = c0 + NNLS_CHUNK < frames ? c0 + NNLS_CHUNK : frames;
#pragma omp parallel OMP_THREADS(threads)
        {
            nnls_scratch w;
            /* r and r_new carry two zero slots past the bands (see gradient). */
            float *block = calloc((size_t)(3 * M + 4 + 4 * K), sizeof *block);
            w.lam = malloc((size_t)(M + K) * sizeof *w.lam);
            if (!block || !w.lam) oom_abort("NNLS buffers");
            w.m = block;
            w.r = w.m + M;
            w.r_new = w.r + M + 2;
            w.g = w.r_new + M + 2;
            w.g_new = w.g + K;
            w.q = w.g_new + K;
            w.best = w.q + K;
#pragma omp for schedule(dynamic, 8)
            for (int64_t t = c0; t < c1; t++) {
                double msq = 0.0;
                for (int b = 0; b < M; b++) {
                    w.m[b] = mel_power[(size_t)b * frames + t];
                    msq += (double)w.m[b] * w.m[b];
                }
                float *p = power + (size_t)t * K;
                pinv_frame(v, w.m, w.lam, p);
                nnls_frame(v, iterations, p, &w, &ss0[t], &ss1[t]);
                mm[t] = msq;
            }
            free(block);
            free(w.lam);
        }
        if (progress) progress(progress_ctx, "NNLS", c1, frames);
    }
    if (stats) {
        double a = 0.0, b = 0.0, m = 0.0;
        for (int64_t t = 0; t < frames; t++) {
            a += ss0[t];
            b += ss1[t];
            m += mm[t];
        }
        stats->residual_pinv = m > 0.0 ? sqrt(a / m) : 0.0;
        stats->residual_nnls = m > 0.0 ? sqrt(b / m) : 0.0;
        stats->nnls_s = rmx_now_s() - t0;
    }
    free(ss0);
    free(ss1);
    free(mm);
}

void rmx_mel_inverse_apply(const rmx_mel_inverse *v, const float *power, int64_t frames, float *mel_power,
                           int threads) {
#pragma omp parallel for OMP_THREADS(threads) schedule(static)
    for (int64_t t = 0; t < frames; t++) {
        const float *p = power + (size_t)t * v->bins;
        for (int b = 0; b < v->n_mels; b++)
            mel_power[(size_t)b * frames + t] = dot4(v->w + v->offset[b], p + v->first[b], v->len[b]);
    }
}

/* ================================================================ Griffin-Lim */

int rmx_griffin_lim(const rmx_stft *s, const float *mag, int64_t frames, int64_t n_out,
                    const rmx_vocoder_options *o, float *y, char *err, size_t errlen) {
    if (rmx_vocoder_check_options(o, err, errlen) != 0) return -1;
    if (frames < 1 || n_out < 1)
        return rmx_seterr(err, errlen, "Griffin-Lim needs at least one frame and one output sample (%lld, %lld)",
                          (long long)frames, (long long)n_out);
    const int K = s->bins, threads = o->threads;
    const size_t row = (size_t)s->row;
    /* buf row t: the current phase estimate (unit complex, K pairs), replaced by the windowed
     * inverse FFT of frame t (N floats <= row) during the ISTFT; prev row t: the last rebuilt
     * spectrum (librosa's tprev). */
    float *buf = malloc((size_t)frames * row * sizeof *buf);
    float *prev = o->momentum > 0.0f ? calloc((size_t)frames * row, sizeof *prev) : NULL;
    float *norm = inverse_norm(s, frames, n_out, threads);
    if (!buf || !norm || (o->momentum > 0.0f && !prev)) {
        free(buf);
        free(prev);
        free(norm);
        return rmx_seterr(err, errlen, "out of memory for Griffin-Lim on %lld frames (%.0f MB)", (long long)frames,
                          (double)frames * row * 2 * sizeof(float) / 1e6);
    }
    const float beta = o->momentum / (1.0f + o->momentum);
    /* Initial phase. */
#pragma omp parallel for OMP_THREADS(threads) schedule(static)
    for (int64_t t = 0; t < frames; t++) {
        float *a = buf + (size_t)t * row;
        for (int k = 0; k < K; k++) {
            if (o->phase_init == RMX_PHASE_ZERO) {
                a[2 * k] = 1.0f;
                a[2 * k + 1] = 0.0f;
            } else {
                float u = rmx_u01(rmx_u32(o->seed, RMX_RNG_SAMPLING, RMX_VOCODER_RNG_STEP, (uint64_t)t, (uint32_t)k));
                double phi = 2.0 * M_PI * (double)u;
                a[2 * k] = (float)cos(phi);
                a[2 * k + 1] = (float)sin(phi);
            }
        }
    }
    /* One parallel region for all iterations: each thread keeps its FFT buffers; the worksharing
     * loops end in barriers, so every step sees the previous one complete. */
#pragma omp parallel OMP_THREADS(threads)
    {
        fft_scratch b;
        if (scratch_alloc(s, &b) != 0) oom_abort("STFT buffers");
        for (int it = 0; it <= o->iterations; it++) {
            /* ISTFT of mag * phase: each row becomes its windowed time frame, then overlap-add. */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < frames; t++) {
                float *a = buf + (size_t)t * row;
                const float *m = mag + (size_t)t * K;
                for (int k = 0; k < K; k++) {
                    b.freq[k][0] = m[k] * a[2 * k];
                    b.freq[k][1] = m[k] * a[2 * k + 1];
                }
                inverse_frame(s, &b, a);
            }
            overlap_add(s, buf, row, frames, norm, n_out, y);
            if (it == o->iterations) break;
            /* STFT of the estimate; the momentum step; the new phase. */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < frames; t++) {
                frame_spectrum(s, y, n_out, t, &b);
                float *a = buf + (size_t)t * row, *pr = prev ? prev + (size_t)t * row : NULL;
                for (int k = 0; k < K; k++) {
                    float re = b.freq[k][0], im = b.freq[k][1];
                    float are = re, aim = im;
                    if (pr) {
                        are -= beta * pr[2 * k];
                        aim -= beta * pr[2 * k + 1];
                        pr[2 * k] = re;
                        pr[2 * k + 1] = im;
                    }
                    float inv = 1.0f / (sqrtf(are * are + aim * aim) + FLT_MIN);
                    a[2 * k] = are * inv;
                    a[2 * k + 1] = aim * inv;
                }
            }
#pragma omp master
            if (o->progress) o->progress(o->progress_ctx, "Griffin-Lim", it + 1, o->iterations);
        }
        scratch_free(&b);
    }
    free(buf);
    free(prev);
    free(norm);
    return 0;
}

/* ================================================================ the whole vocoder */

struct rmx_vocoder {
    rmx_mel_params p;
    rmx_stft *stft;
    rmx_mel_inverse *inv;
};

rmx_vocoder *rmx_vocoder_create(const rmx_mel_params *p, char *err, size_t errlen) {
    char why[512];
    rmx_mel_params q = *p; /* the genre names are no business of the vocoder's */
    if (q.n_genres < 1 || q.n_genres > RMX_MAX_GENRES) {
        q.n_genres = 1;
        snprintf(q.genre_names[0], sizeof q.genre_names[0], "-");
    }
    if (rmx_mel_params_validate(&q, "vocoder", why, sizeof why) != 0) {
        rmx_seterr(err, errlen, "%s", why);
        return NULL;
    }
    if (p->win_length != p->n_fft) {
        rmx_seterr(err, errlen, "vocoder: win_length %d differs from n_fft %d, which the prep never makes",
                   p->win_length, p->n_fft);
        return NULL;
    }
    rmx_vocoder *v = calloc(1, sizeof *v);
    if (!v) {
        rmx_seterr(err, errlen, "out of memory");
        return NULL;
    }
    v->p = *p;
    if (!(v->stft = rmx_stft_create(p->n_fft, p->hop_length, err, errlen)) ||
        !(v->inv = rmx_mel_inverse_create(p, err, errlen))) {
        rmx_vocoder_free(v);
        return NULL;
    }
    return v;
}

void rmx_vocoder_free(rmx_vocoder *v) {
    if (!v) return;
    rmx_stft_free(v->stft);
    rmx_mel_inverse_free(v->inv);
    free(v);
}

const rmx_stft *rmx_vocoder_stft(const rmx_vocoder *v) { return v->stft; }
const rmx_mel_inverse *rmx_vocoder_mel_inverse(const rmx_vocoder *v) { return v->inv; }

int rmx_vocoder_run(const rmx_vocoder *v, const float *logmel, int64_t frames, int64_t n_out,
                    const rmx_vocoder_options *o, float **out, int64_t *n, rmx_vocoder_stats *stats,
                    char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    if (rmx_vocoder_check_options(o, err, errlen) != 0) return -1;
    const rmx_mel_params *p = &v->p;
    if (frames < 1) return rmx_seterr(err, errlen, "vocoder: no frames to invert");
    if (n_out <= 0) n_out = (int64_t)p->hop_length * (frames - 1);
    if (n_out <= 0) return rmx_seterr(err, errlen, "vocoder: one frame needs an explicit output length");
    const int M = p->n_mels, K = p->n_fft / 2 + 1;
    rmx_vocoder_stats st = {0};
    float *mel = malloc((size_t)M * frames * sizeof *mel);
    float *mag = malloc((size_t)frames * K * sizeof *mag);
    float *y = malloc((size_t)n_out * sizeof *y);
    if (!mel || !mag || !y) {
        free(mel);
        free(mag);
        free(y);
        return rmx_seterr(err, errlen, "vocoder: out of memory for %lld frames", (long long)frames);
    }
    const double sd = p->norm_std, mu = p->norm_mean;
    for (int64_t i = 0; i < (int64_t)M * frames; i++)
        if (!isfinite(logmel[i])) {
            free(mel);
            free(mag);
            free(y);
            return rmx_seterr(err, errlen, "vocoder: the log-mel is not finite (%g) at band %lld, frame %lld",
                              (double)logmel[i], (long long)(i / frames), (long long)(i % frames));
        }
    /* Powers beyond float's range (a diverged decoder) are clamped to exp(-87) .. exp(80). */
#pragma omp parallel for OMP_THREADS(o->threads) schedule(static)
    for (int64_t i = 0; i < (int64_t)M * frames; i++) {
        double l = (double)logmel[i] * sd + mu;
        mel[i] = (float)exp(l < -87.0 ? -87.0 : l > 80.0 ? 80.0 : l);
    }
    rmx_mel_inverse_solve(v->inv, mel, frames, o->nnls_iterations, mag, &st, o->threads, o->progress,
                          o->progress_ctx);
    free(mel);
#pragma omp parallel for OMP_THREADS(o->threads) schedule(static)
    for (int64_t i = 0; i < frames * K; i++) mag[i] = sqrtf(mag[i]);
    double t0 = rmx_now_s();
    int rc = rmx_griffin_lim(v->stft, mag, frames, n_out, o, y, err, errlen);
    st.griffin_lim_s = rmx_now_s() - t0;
    free(mag);
    if (rc != 0) {
        free(y);
        return -1;
    }
    for (int64_t i = 0; i < n_out; i++)
        if (!isfinite(y[i])) {
            free(y);
            return rmx_seterr(err, errlen, "vocoder: the output is not finite at sample %lld (is the input finite?)",
                              (long long)i);
        }
    if (stats) *stats = st;
    *out = y;
    *n = n_out;
    return 0;
}
