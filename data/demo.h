/* The demo dataset: procedurally synthesised "genres" with clearly different spectral and rhythmic
 * structure, so a model has something to tell apart without downloading anything.
 *   arpeggio  fast plucked notes (16ths at 100-140 BPM) running up and down a triad, high register
 *   chords    sustained triads with slow attacks and releases, 2-3 s each, rich low-mid harmonics
 *   drums     kick (pitch-dropping sine), snare (noise burst + tone), hats (high noise) patterns
 *   noise     slowly swept band-pass noise pads and rumble, no pitch and no beat
 * Every random choice is Philox (purpose RMX_RNG_DEMO) keyed by (seed, genre, file), so the same
 * seed gives the same samples on any machine layout. */
#ifndef RMX_DEMO_H
#define RMX_DEMO_H

#include <stddef.h>
#include <stdint.h>

#define RMX_DEMO_GENRES 4
#define RMX_DEMO_FILES_PER_GENRE 10
#define RMX_DEMO_SECONDS 12
#define RMX_DEMO_SAMPLE_RATE 22050

extern const char *const rmx_demo_genre_names[RMX_DEMO_GENRES];

/* Synthesises file `index` of `genre` into out[0..n), peak-normalised to 0.7. */
void rmx_demo_synth(int genre, int index, uint64_t seed, int sample_rate, float *out, int64_t n);

/* Writes <dir>/<genre>/<genre>-NN.wav for every file f with f % world == rank, on `threads`
 * threads (each rank writes its share; call a barrier before reading them all). */
int rmx_demo_write_audio(const char *dir, uint64_t seed, int rank, int world, int threads, char *err,
                         size_t errlen);

#endif
