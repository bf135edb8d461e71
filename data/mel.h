/* Log-mel spectrogram, matching librosa's conventions so that numbers are comparable:
 *   - frames centred on t * hop, the signal padded by n_fft / 2 on both sides by reflection
 *     (numpy's "reflect": the edge sample is not repeated), periodic Hann window of n_fft;
 *   - power spectrum |X|^2 of the unnormalised real FFT (FFTW, single precision);
 *   - Slaney mel filterbank: the Slaney mel scale (linear below 1 kHz, logarithmic above) and
 *     area normalisation 2 / (f[i+2] - f[i]), as librosa.filters.mel(htk=False, norm='slaney');
 *   - log(max(mel_power, log_floor)) with the natural logarithm.
 * A plan is built once (not thread-safe) and then used by any number of threads at once. */
#ifndef RMX_MEL_H
#define RMX_MEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct rmx_mel rmx_mel;

/* Slaney mel scale (librosa.hz_to_mel / mel_to_hz with htk=False). */
double rmx_mel_from_hz(double hz);
double rmx_hz_from_mel(double mel);

/* The n_mels + 2 band edges in Hz: equally spaced on the mel scale from fmin to fmax.
 * Band i rises from edges[i] to its peak at edges[i + 1] and falls to zero at edges[i + 2]. */
void rmx_mel_band_edges(int n_mels, double fmin, double fmax, double *edges);

/* The dense filterbank, weights[n_mels][n_fft / 2 + 1]; returns the number of bands that no FFT
 * bin falls into (all-zero rows: too many mels for this n_fft). */
int rmx_mel_filterbank(int sample_rate, int n_fft, int n_mels, double fmin, double fmax, float *weights);

/* Validates the parameters (with messages naming the option) and builds the plan. */
rmx_mel *rmx_mel_create(int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax,
                        float log_floor, char *err, size_t errlen);
void rmx_mel_free(rmx_mel *m);

/* Frames of a centred STFT of n samples: 1 + n / hop (for even n_fft). */
int64_t rmx_mel_frame_count(const rmx_mel *m, int64_t n_samples);

/* Log-mel of frames [0, n_frames) of the mono signal x[0..n): out[n_mels][n_frames], mel band
 * major. n_frames may be smaller than rmx_mel_frame_count (the caller drops a tail). */
int rmx_mel_compute(const rmx_mel *m, const float *x, int64_t n, int64_t n_frames, float *out, char *err,
                    size_t errlen);

#endif
