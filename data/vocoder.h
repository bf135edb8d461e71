/* Vocoder: normalised log-mel -> audio, with no model (Griffin-Lim), matching the prep exactly.
 *
 *   1. denormalise and exponentiate: mel power = exp(x * norm_std + norm_mean) (values at the prep's
 *      floor come back as the floor, e.g. 1e-5);
 *   2. mel power -> linear power spectrum by NON-NEGATIVE least squares against the prep's Slaney
 *      filterbank (data/mel.h, the same weights), per frame: minimise ||F p - m||^2 subject to
 *      p >= 0, started from the clipped pseudo-inverse max(F^+ m, 0) (as librosa's mel_to_stft);
 *      then magnitude = sqrt(power) (the prep's mel is of the POWER spectrum |X|^2);
 *   3. fast Griffin-Lim (Perraudin et al. 2013, librosa's update, momentum 0.99) with the prep's
 *      STFT: FFTW, n_fft, hop, periodic Hann window of n_fft, frames centred on t * hop with
 *      reflect padding; the matching ISTFT overlap-adds the windowed inverse FFTs and divides by
 *      the summed squared window where it exceeds FLT_MIN (librosa's istft).
 *
 * The NNLS solver. Each FFT bin lies in at most two (neighbouring) Slaney bands, so F has about
 * 2 (n_fft / 2 + 1) non-zeros: the solver applies F and F^T sparsely (about 4k multiply-adds a
 * frame instead of the 2 * M * K of a dense GEMM) and runs every frame's iterations back to back
 * in L1-resident buffers, frames in parallel. Iteration: projected gradient with Barzilai-Borwein
 * steps in the metric D = diag(F^T F 1) (a Jacobi-type preconditioner under which step 1 is always
 * a descent step), p <- max(p - a D^-1 F^T (F p - m), 0), a = s'Ds / s'y; the best iterate of each
 * frame is returned, so the residual never exceeds the clipped pseudo-inverse's. The pseudo-inverse
 * is F^T (F F^T)^-1 m with a Cholesky factor of F F^T computed once in double precision.
 *
 * Initial phase (Griffin-Lim): RMX_PHASE_RANDOM (default, librosa's init='random'): the phase of
 * bin k of frame t is 2 pi u with u uniform in (0, 1) from util/rng.h's Philox, keyed by (seed,
 * RMX_RNG_SAMPLING, RMX_VOCODER_RNG_STEP, t, k), so it depends on nothing else (not on the length,
 * the thread count or the caller); RMX_PHASE_ZERO starts from phase 0 (librosa's init=None).
 *
 * Every function is a pure function of its arguments: the same input gives the same output bytes
 * for any thread count (frames are independent; sums run in a fixed order; FFTW plans are made with
 * FFTW_ESTIMATE, never timed). Memory: about 20 bytes per STFT bin for Griffin-Lim (the magnitude,
 * the current phase / time frame and the previous rebuilt spectrum), i.e. ~320 MB per 3 minutes of
 * 22,050 Hz audio at n_fft 2048, hop 256. */
#ifndef RMX_VOCODER_H
#define RMX_VOCODER_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"

/* Defaults, measured on 24 s of the tests' music recording (tests/vocoder/make_music.sh; spectral
 * convergence against the original STFT magnitude, CPU seconds on one core):
 *   Griffin-Lim (NNLS 200): 8 iterations 0.288, 16 0.270, 32 0.263, 64 0.262, 100 0.261,
 *     200 0.261; 32 more iterations cost 0.76 s and gain 0.6% of the SC;
 *   NNLS (Griffin-Lim 32): 0 (the clipped pseudo-inverse) 0.429, 25 0.284, 50 0.273, 100 0.267,
 *     200 0.263, 300 0.262, 500 0.260, 1000 0.259; 100 more iterations cost 0.4 s.
 * At 32 Griffin-Lim iterations (librosa's, Riffusion's and diffusers' default) and 200 NNLS
 * iterations a further CPU second buys about 1% of the SC or less, either way; the whole vocoder
 * then takes 1.7 CPU seconds for those 24 s. */
#define RMX_VOCODER_DEFAULT_ITERATIONS 32
#define RMX_VOCODER_DEFAULT_NNLS_ITERATIONS 200
#define RMX_VOCODER_DEFAULT_MOMENTUM 0.99f
/* The `step` word of the Philox stream of the initial phase ("GRIFFLIM"). */
#define RMX_VOCODER_RNG_STEP 0x475249464c494d00ull

typedef enum { RMX_PHASE_RANDOM = 0, RMX_PHASE_ZERO = 1 } rmx_phase_init;

/* Progress of a long call, made from the calling thread between parallel sections:
 * `what` is "NNLS" (done / total frames) or "Griffin-Lim" (done / total iterations). */
typedef void (*rmx_vocoder_progress_fn)(void *ctx, const char *what, int64_t done, int64_t total);

typedef struct {
    int iterations;        /* Griffin-Lim iterations, >= 0 (0: one ISTFT of the initial phase) */
    int nnls_iterations;   /* >= 0; 0 keeps the clipped pseudo-inverse */
    float momentum;        /* fast Griffin-Lim momentum, 0 <= m < 1 (0: classic Griffin-Lim) */
    rmx_phase_init phase_init;
    uint64_t seed;         /* keys the random initial phase */
    int threads;           /* OpenMP threads; <= 0: the OpenMP default */
    rmx_vocoder_progress_fn progress; /* NULL: none */
    void *progress_ctx;
} rmx_vocoder_options;

/* What a call measured (seconds are wall time; residuals are ||F p - m||_F / ||m||_F). */
typedef struct {
    double nnls_s, griffin_lim_s;
    double residual_pinv, residual_nnls;
} rmx_vocoder_stats;

void rmx_vocoder_default_options(rmx_vocoder_options *o);
/* 0, or -1 with a message naming the field ("iterations must be >= 0, got -1"). */
int rmx_vocoder_check_options(const rmx_vocoder_options *o, char *err, size_t errlen);

/* ---------------------------------------------------------------- STFT and ISTFT */

/* Spectra are frame-major complex [frames][bins] as interleaved (re, im) floats, bins = n_fft/2+1. */
typedef struct rmx_stft rmx_stft;

/* n_fft even >= 16, 1 <= hop <= n_fft (as the prep). The ISTFT reconstructs exactly where the
 * frames' squared windows add up to more than FLT_MIN, i.e. everywhere for hop <= n_fft / 2. */
rmx_stft *rmx_stft_create(int n_fft, int hop, char *err, size_t errlen);
void rmx_stft_free(rmx_stft *s);
int rmx_stft_bins(const rmx_stft *s);
/* Frames of n samples: 1 + n / hop, as the prep (data/mel.h). */
int64_t rmx_stft_frame_count(const rmx_stft *s, int64_t n);
/* The prep's STFT of x[0..n) (n >= 1), frames [0, frames): spec [frames][bins][2]. */
void rmx_stft_forward(const rmx_stft *s, const float *x, int64_t n, int64_t frames, float *spec, int threads);
/* Magnitudes |X| [frames][bins] of the same STFT. */
void rmx_stft_magnitude(const rmx_stft *s, const float *x, int64_t n, int64_t frames, float *mag, int threads);
/* Inverse of rmx_stft_forward: y[0..n_out) (n_out >= 1, e.g. hop * (frames - 1), librosa's
 * default length, or the original length). Exact (to float rounding) for a spectrum that is the
 * STFT of a signal of length n_out. */
void rmx_stft_inverse(const rmx_stft *s, const float *spec, int64_t frames, int64_t n_out, float *y,
                      int threads);

/* ||S_ref| - |S_y||_F / ||S_ref||_F over the STFT frames of n samples of both signals. */
double rmx_spectral_convergence(const rmx_stft *s, const float *ref, const float *y, int64_t n, int threads);

/* ---------------------------------------------------------------- mel -> linear power */

typedef struct rmx_mel_inverse rmx_mel_inverse;

/* The prep's filterbank for p (sample_rate, n_fft, n_mels, fmin, fmax) and its factorisation. */
rmx_mel_inverse *rmx_mel_inverse_create(const rmx_mel_params *p, char *err, size_t errlen);
void rmx_mel_inverse_free(rmx_mel_inverse *v);
/* mel power [n_mels][frames] (band-major, as the prep) -> power spectrum [frames][bins], >= 0:
 * the clipped pseudo-inverse refined by `iterations` NNLS iterations. Fills the residuals of
 * `stats` (NULL: not computed). */
void rmx_mel_inverse_solve(const rmx_mel_inverse *v, const float *mel_power, int64_t frames, int iterations,
                           float *power, rmx_vocoder_stats *stats, int threads,
                           rmx_vocoder_progress_fn progress, void *progress_ctx);
/* F p: power [frames][bins] -> mel power [n_mels][frames]. */
void rmx_mel_inverse_apply(const rmx_mel_inverse *v, const float *power, int64_t frames, float *mel_power,
                           int threads);

/* ---------------------------------------------------------------- Griffin-Lim */

/* Fast Griffin-Lim from magnitudes mag [frames][bins] (frames >= 1) to y[0..n_out). */
int rmx_griffin_lim(const rmx_stft *s, const float *mag, int64_t frames, int64_t n_out,
                    const rmx_vocoder_options *o, float *y, char *err, size_t errlen);

/* ---------------------------------------------------------------- the whole vocoder */

typedef struct rmx_vocoder rmx_vocoder;

/* Validates p's audio fields (rmx_mel_params_validate; the genre names are not needed) and plans the
 * STFT and the mel inverse. */
rmx_vocoder *rmx_vocoder_create(const rmx_mel_params *p, char *err, size_t errlen);
void rmx_vocoder_free(rmx_vocoder *v);
const rmx_stft *rmx_vocoder_stft(const rmx_vocoder *v);
const rmx_mel_inverse *rmx_vocoder_mel_inverse(const rmx_vocoder *v);

/* Normalised log-mel [n_mels][frames] (as a shard stores it, or a decoder emits it) -> audio
 * *out (malloc'd, caller frees) of *n_out samples at p->sample_rate: n_out > 0 asks for that
 * length (e.g. the original's), n_out <= 0 gives hop * (frames - 1) (librosa's default; needs
 * frames >= 2). `stats` may be NULL. */
int rmx_vocoder_run(const rmx_vocoder *v, const float *logmel, int64_t frames, int64_t n_out,
                    const rmx_vocoder_options *o, float **out, int64_t *n, rmx_vocoder_stats *stats,
                    char *err, size_t errlen);

#endif
