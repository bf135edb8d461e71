#include "data/demo.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/audio.h"
#include "data/prep.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/rng.h"

const char *const rmx_demo_genre_names[RMX_DEMO_GENRES] = {"arpeggio", "chords", "drums", "noise"};

enum { GENRE_ARPEGGIO, GENRE_CHORDS, GENRE_DRUMS, GENRE_NOISE };
enum { MAX_PARTIALS = 16 };

/* ---------------------------------------------------------------- randomness */

/* One Philox stream per (seed, genre, file, use): decisions and noise samples never share one,
 * so the number of notes drawn does not shift the noise. */
typedef struct {
    uint64_t seed, genre, index;
    uint32_t n;
} demo_rng;

static demo_rng rng_stream(uint64_t seed, int genre, int file, int use) {
    return (demo_rng){seed, (uint64_t)genre, (uint64_t)file * 16u + (uint64_t)use, 0};
}

static double rng_uniform(demo_rng *r) {
    return rmx_u01(rmx_u32(r->seed, RMX_RNG_DEMO, r->genre, r->index, r->n++));
}

static int rng_int(demo_rng *r, int lo, int hi) { /* inclusive */
    int v = lo + (int)(rng_uniform(r) * (hi - lo + 1));
    return v > hi ? hi : v;
}

static double rng_range(demo_rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

static double rng_noise(demo_rng *r) { return 2.0 * rng_uniform(r) - 1.0; }

static double midi_hz(double note) { return 440.0 * pow(2.0, (note - 69.0) / 12.0); }

/* ---------------------------------------------------------------- tones */

/* Raised-cosine attack, flat sustain, raised-cosine release; seconds. */
typedef struct {
    double attack, sustain, release;
} envelope;

static double envelope_at(const envelope *e, double t) {
    double end = e->attack + e->sustain;
    if (t < e->attack) return 0.5 - 0.5 * cos(M_PI * t / e->attack);
    if (t <= end) return 1.0;
    if (t >= end + e->release) return 0.0;
    return 0.5 + 0.5 * cos(M_PI * (t - end) / e->release);
}

/* A harmonic tone: partial k at k * f0 with amplitude amp / k^tilt, each decaying with time
 * constant tau / k (tau 0: no decay), all under the envelope. Sines advance by rotating a phasor,
 * which costs a few multiplications per partial and sample instead of a sin() call. */
typedef struct {
    double f0, amp, tilt, tau;
    int partials;
    envelope env;
} tone;

static void add_tone(float *out, int64_t n, int sr, int64_t start, const tone *t) {
    double re[MAX_PARTIALS], im[MAX_PARTIALS], c[MAX_PARTIALS], s[MAX_PARTIALS], gain[MAX_PARTIALS],
        fade[MAX_PARTIALS];
    int parts = 0;
    for (int k = 1; k <= t->partials && k <= MAX_PARTIALS && k * t->f0 < 0.45 * sr; k++, parts++) {
        double w = 2.0 * M_PI * k * t->f0 / sr;
        re[parts] = 1.0;
        im[parts] = 0.0;
        c[parts] = cos(w);
        s[parts] = sin(w);
        gain[parts] = t->amp / pow(k, t->tilt);
        fade[parts] = t->tau > 0 ? exp(-k / (t->tau * sr)) : 1.0;
    }
    int64_t len = (int64_t)((t->env.attack + t->env.sustain + t->env.release) * sr);
    for (int64_t i = 0; i < len && start + i < n; i++) {
        if (start + i < 0) continue;
        double acc = 0.0;
        for (int p = 0; p < parts; p++) {
            acc += gain[p] * im[p];
            double r = re[p] * c[p] - im[p] * s[p];
            im[p] = re[p] * s[p] + im[p] * c[p];
            re[p] = r;
            gain[p] *= fade[p];
        }
        out[start + i] += (float)(acc * envelope_at(&t->env, (double)i / sr));
    }
}

/* ---------------------------------------------------------------- genres */

static const int MAJOR[3] = {0, 4, 7}, MINOR[3] = {0, 3, 7};
static const int SCALE_DEGREES[6] = {0, 2, 5, 7, 9, 4}; /* roots of a simple diatonic progression */

static void synth_arpeggio(demo_rng *r, int sr, float *out, int64_t n) {
    double step = 60.0 / rng_range(r, 100.0, 140.0) / 4.0; /* sixteenth notes */
    int key = rng_int(r, 60, 67), direction_flip = rng_int(r, 0, 1);
    const int *chord = MAJOR;
    int root = key;
    for (int64_t k = 0; (double)k * step * sr < n; k++) {
        if (k % 8 == 0) {
            root = key + SCALE_DEGREES[rng_int(r, 0, 5)] - 12 * rng_int(r, 0, 1);
            chord = rng_int(r, 0, 1) ? MAJOR : MINOR;
        }
        int pos = (int)(k % 12), climb = pos < 6 ? pos : 12 - pos; /* up two octaves of the triad, down */
        if (direction_flip) climb = 6 - climb;
        double note = root + chord[climb % 3] + 12 * (climb / 3);
        tone t = {.f0 = midi_hz(note),
                  .amp = (k % 4 == 0 ? 1.0 : 0.6) * rng_range(r, 0.8, 1.0),
                  .tilt = 1.0,
                  .tau = 0.25,
                  .partials = 6,
                  .env = {0.002, 0.25, 0.08}};
        add_tone(out, n, sr, (int64_t)((double)k * step * sr), &t);
    }
}

static void synth_chords(demo_rng *r, int sr, float *out, int64_t n) {
    int key = rng_int(r, 43, 52);
    double at = 0.0;
    while (at * sr < n) {
        double length = rng_range(r, 2.0, 3.0), attack = rng_range(r, 0.5, 0.9);
        int root = key + SCALE_DEGREES[rng_int(r, 0, 5)];
        const int *chord = rng_int(r, 0, 1) ? MAJOR : MINOR;
        for (int v = 0; v < 4; v++) {                         /* root, third, fifth, octave */
            for (int detune = -1; detune <= 1; detune += 2) { /* two voices, +-4 cents: a slow beat */
                double note = root + (v < 3 ? chord[v] : 12) + 0.04 * detune;
                tone t = {.f0 = midi_hz(note),
                          .amp = 0.25,
                          .tilt = 1.3,
                          .tau = 0.0,
                          .partials = 10,
                          .env = {attack, length - attack, 0.8}};
                add_tone(out, n, sr, (int64_t)(at * sr), &t);
            }
        }
        at += length;
    }
}

/* One-pole low-pass coefficient for cutoff fc. */
static double one_pole(double fc, int sr) { return 1.0 - exp(-2.0 * M_PI * fc / sr); }

static void add_kick(float *out, int64_t n, int sr, int64_t start, double velocity) {
    double phase = 0.0;
    for (int64_t i = 0; i < sr / 2 && start + i < n; i++) {
        double t = (double)i / sr;
        phase += 2.0 * M_PI * (45.0 + 110.0 * exp(-t / 0.035)) / sr; /* the pitch drops fast */
        out[start + i] += (float)(velocity * sin(phase) * exp(-t / 0.28));
    }
}

static void add_snare(float *out, int64_t n, int sr, int64_t start, double velocity, demo_rng *noise) {
    double lp = 0.0, hp_in = 0.0, hp = 0.0, a_lp = one_pole(6000.0, sr), a_hp = 1.0 - one_pole(900.0, sr);
    for (int64_t i = 0; i < (int64_t)(0.3 * sr) && start + i < n; i++) {
        double t = (double)i / sr, w = rng_noise(noise);
        lp += a_lp * (w - lp);
        hp = a_hp * (hp + lp - hp_in); /* one-pole high-pass of the low-passed noise: a band */
        hp_in = lp;
        double body = sin(2.0 * M_PI * 185.0 * t) * exp(-t / 0.06);
        out[start + i] += (float)(velocity * (0.8 * hp * exp(-t / 0.09) + 0.5 * body));
    }
}

static void add_hat(float *out, int64_t n, int sr, int64_t start, double velocity, double tau,
                    demo_rng *noise) {
    double prev = 0.0, prev_diff = 0.0;
    for (int64_t i = 0; i < (int64_t)(4.0 * tau * sr) && start + i < n; i++) {
        double w = rng_noise(noise), diff = w - prev, hi = diff - prev_diff; /* second difference: bright */
        prev = w;
        prev_diff = diff;
        out[start + i] += (float)(velocity * 0.25 * hi * exp(-(double)i / sr / tau));
    }
}

static void synth_drums(demo_rng *r, demo_rng *noise, int sr, float *out, int64_t n) {
    double step = 60.0 / rng_range(r, 90.0, 130.0) / 4.0;
    int kick[16] = {0}, snare[16] = {0}, busy_hats = rng_int(r, 0, 1);
    kick[0] = kick[8] = 1;
    snare[4] = snare[12] = 1;
    const int extra_kicks[5] = {3, 6, 10, 11, 14};
    for (int e = 0; e < 5; e++) kick[extra_kicks[e]] = rng_uniform(r) < 0.35;
    for (int64_t k = 0; (double)k * step * sr < n; k++) {
        int64_t at = (int64_t)((double)k * step * sr);
        int pos = (int)(k % 16);
        if (kick[pos]) add_kick(out, n, sr, at, rng_range(r, 0.85, 1.0));
        if (snare[pos])
            add_snare(out, n, sr, at, rng_range(r, 0.7, 0.9), noise);
        else if (rng_uniform(r) < 0.1)
            add_snare(out, n, sr, at, 0.2, noise); /* ghost note */
        if (pos == 14 && rng_uniform(r) < 0.5)
            add_hat(out, n, sr, at, 0.6, 0.12, noise);
        else if (busy_hats || pos % 2 == 0)
            add_hat(out, n, sr, at, rng_range(r, 0.4, 0.7), 0.025, noise);
    }
}

/* A band-pass biquad (RBJ cookbook, 0 dB peak) over noise, its centre swept on a log scale. */
typedef struct {
    double lo_hz, hi_hz, rate_hz, phase, q, level;
    double x1, x2, y1, y2, b0, b2, a1, a2;
} swept_band;

static void band_retune(swept_band *b, double t, int sr) {
    double sweep = 0.5 + 0.5 * sin(2.0 * M_PI * b->rate_hz * t + b->phase);
    double fc = exp(log(b->lo_hz) + (log(b->hi_hz) - log(b->lo_hz)) * sweep);
    double w = 2.0 * M_PI * fc / sr, alpha = sin(w) / (2.0 * b->q), a0 = 1.0 + alpha;
    b->b0 = alpha / a0;
    b->b2 = -alpha / a0;
    b->a1 = -2.0 * cos(w) / a0;
    b->a2 = (1.0 - alpha) / a0;
}

static double band_step(swept_band *b, double x) {
    double y = b->b0 * x + b->b2 * b->x2 - b->a1 * b->y1 - b->a2 * b->y2;
    b->x2 = b->x1;
    b->x1 = x;
    b->y2 = b->y1;
    b->y1 = y;
    return y;
}

static void synth_noise(demo_rng *r, demo_rng *noise, int sr, float *out, int64_t n) {
    swept_band bands[2];
    for (int i = 0; i < 2; i++)
        bands[i] = (swept_band){.lo_hz = rng_range(r, 200.0, 500.0) * (1 + 2 * i),
                                .hi_hz = rng_range(r, 1500.0, 4000.0) * (1 + i),
                                .rate_hz = rng_range(r, 0.05, 0.2),
                                .phase = rng_range(r, 0.0, 2.0 * M_PI),
                                .q = rng_range(r, 2.0, 6.0),
                                .level = rng_range(r, 0.5, 1.0)};
    double swell_phase = rng_range(r, 0.0, 2.0 * M_PI), rumble = 0.0, rumble2 = 0.0,
           a_rumble = one_pole(150.0, sr);
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / sr;
        if (i % 32 == 0) /* the sweep is slow: retuning every 32 samples is inaudible and cheap */
            for (int b = 0; b < 2; b++) band_retune(&bands[b], t, sr);
        double w = rng_noise(noise), x = 0.0;
        for (int b = 0; b < 2; b++) x += bands[b].level * band_step(&bands[b], w);
        rumble += a_rumble * (w - rumble);
        rumble2 += a_rumble * (rumble - rumble2);
        double swell = 0.6 + 0.4 * sin(2.0 * M_PI * t / 7.0 + swell_phase);
        out[i] = (float)(swell * (x + 3.0 * rumble2));
    }
}

static void normalise_peak(float *x, int64_t n, float peak) {
    float most = 0.0f;
    for (int64_t i = 0; i < n; i++) most = fmaxf(most, fabsf(x[i]));
    if (most > 0.0f)
        for (int64_t i = 0; i < n; i++) x[i] *= peak / most;
}

void rmx_demo_synth(int genre, int index, uint64_t seed, int sample_rate, float *out, int64_t n) {
    memset(out, 0, (size_t)n * sizeof *out);
    demo_rng choices = rng_stream(seed, genre, index, 0), noise = rng_stream(seed, genre, index, 1);
    switch (genre) {
    case GENRE_ARPEGGIO: synth_arpeggio(&choices, sample_rate, out, n); break;
    case GENRE_CHORDS: synth_chords(&choices, sample_rate, out, n); break;
    case GENRE_DRUMS: synth_drums(&choices, &noise, sample_rate, out, n); break;
    default: synth_noise(&choices, &noise, sample_rate, out, n); break;
    }
    normalise_peak(out, n, 0.7f);
}

/* ---------------------------------------------------------------- files */

typedef struct {
    const char *dir;
    uint64_t seed;
    int rank, world;
    atomic_int failed;
    char message[512];
} demo_job;

static int demo_file_path(const demo_job *j, int genre, int index, char *path, size_t cap, char *err,
                          size_t errlen) {
    char folder[4096];
    snprintf(folder, sizeof folder, "%s/%s", j->dir, rmx_demo_genre_names[genre]);
    if (rmx_mkdirs(folder, err, errlen) != 0) return -1;
    snprintf(path, cap, "%s/%s-%02d.wav", folder, rmx_demo_genre_names[genre], index);
    return 0;
}

static void write_one(void *ctx, long k) {
    demo_job *j = ctx;
    long file = k * j->world + j->rank;
    int genre = (int)(file / RMX_DEMO_FILES_PER_GENRE), index = (int)(file % RMX_DEMO_FILES_PER_GENRE);
    int64_t n = (int64_t)RMX_DEMO_SECONDS * RMX_DEMO_SAMPLE_RATE;
    char path[4200], err[512] = "";
    float *x = malloc((size_t)n * sizeof *x);
    int rc = x ? 0 : rmx_seterr(err, sizeof err, "out of memory synthesising demo audio");
    if (rc == 0) rc = demo_file_path(j, genre, index, path, sizeof path, err, sizeof err);
    if (rc == 0) {
        rmx_demo_synth(genre, index, j->seed, RMX_DEMO_SAMPLE_RATE, x, n);
        rc = rmx_audio_write_wav(path, x, n, RMX_DEMO_SAMPLE_RATE, err, sizeof err);
    }
    free(x);
    if (rc != 0 && atomic_exchange(&j->failed, 1) == 0) snprintf(j->message, sizeof j->message, "%s", err);
}

int rmx_demo_write_audio(const char *dir, uint64_t seed, int rank, int world, int threads, char *err,
                         size_t errlen) {
    demo_job job = {.dir = dir, .seed = seed, .rank = rank, .world = world};
    atomic_init(&job.failed, 0);
    long total = (long)RMX_DEMO_GENRES * RMX_DEMO_FILES_PER_GENRE;
    long mine = total > rank ? (total - rank + world - 1) / world : 0;
    rmx_prep_parallel_for(threads, mine, write_one, &job);
    if (atomic_load(&job.failed)) return rmx_seterr(err, errlen, "%s", job.message);
    return 0;
}
