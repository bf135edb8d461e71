/* remixer-generate: a stage-2 checkpoint and a genre -> WAV files.
 *   remixer-generate runs/demo-diffusion/ckpt-00000400.h5 --genre all --count 2 --out clips/ */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/vocoder.h"
#include "data/wav.h"
#include "infer/generator.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/progress.h"

enum { MAX_BATCH = 8 }; /* clips sampled together (the model runs 2x that with guidance) */

typedef struct {
    const char *checkpoint, *genre, *out, *device;
    int count, steps, iterations, threads, list_genres;
    double seconds;
    float cfg, eta;
    uint64_t seed;
} cli;

static void usage(FILE *f) {
    fputs("usage: remixer-generate CHECKPOINT --genre NAME|all [options]\n"
          "  Generates clips of a genre with a stage-2 (diffusion) checkpoint: DDIM sampling with\n"
          "  classifier-free guidance (EMA weights), the frozen autoencoder's decoder, Griffin-Lim.\n"
          "  Writes OUT/<genre>-<k>.wav (k from 0) and prints each file it wrote.\n\n"
          "options (default in brackets):\n"
          "  --genre NAME|all   the genre to generate, or every genre of the checkpoint\n"
          "  --count N          clips per genre [1]\n"
          "  --seconds S        length of each clip; beyond one segment (about 3 s) the clip is\n"
          "                     continued segment by segment with an imposed overlap [one segment]\n"
          "  --steps K          DDIM steps [50]\n"
          "  --cfg W            classifier-free guidance: eps_u + W (eps_c - eps_u); 1 = conditional\n"
          "                     only, 0 = unconditional [3]\n"
          "  --eta E            DDIM eta: 0 deterministic, 1 DDPM-like [0]\n"
          "  --seed N           seed of every random number [0]\n"
          "  --iterations N     Griffin-Lim iterations [32]\n"
          "  --out DIR          output folder, created if needed [.]\n"
          "  --device D         auto | cpu | cuda [auto]\n"
          "  --threads N        CPU threads (0: all) [0]\n"
          "  --list-genres      print the checkpoint's genres and exit\n"
          "  -h, --help         this text\n\n"
          "The same arguments give byte-identical files.\n"
          "exit codes: 0 done, 1 runtime failure, 2 bad arguments (unknown genre, bad numbers, an output\n"
          "            folder that cannot be created or written), 4 checkpoint refused (missing, damaged,\n"
          "            not stage 2)\n",
          f);
}

static int parse_number(const char *opt, const char *text, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text ? text : "", &end);
    if (!text || !*text || *end || errno || !isfinite(v) || v < lo || v > hi) {
        rmx_error("%s: expected a number from %g to %g, got '%s'", opt, lo, hi, text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, cli *c) {
    *c = (cli){.out = ".", .device = "auto", .count = 1, .steps = 50, .iterations = RMX_VOCODER_DEFAULT_ITERATIONS,
               .seconds = 0, .cfg = 3.0f, .eta = 0.0f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return RMX_EXIT_OK;
        } else if (!strcmp(a, "--list-genres")) {
            c->list_genres = 1;
        } else if (a[0] == '-' && a[1] == '-' && !v) {
            rmx_error("%s needs a value (see --help)", a);
            return RMX_EXIT_USAGE;
        } else if (!strcmp(a, "--genre")) {
            c->genre = argv[++i];
        } else if (!strcmp(a, "--out")) {
            c->out = argv[++i];
        } else if (!strcmp(a, "--device")) {
            c->device = argv[++i];
            if (strcmp(c->device, "auto") && strcmp(c->device, "cpu") && strcmp(c->device, "cuda")) {
                rmx_error("--device: expected auto, cpu or cuda, got '%s'", c->device);
                return RMX_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--count")) {
            if (parse_number(a, argv[++i], 1, 100000, &x)) return RMX_EXIT_USAGE;
            c->count = (int)x;
        } else if (!strcmp(a, "--seconds")) {
            if (parse_number(a, argv[++i], 0.05, 3600, &x)) return RMX_EXIT_USAGE;
            c->seconds = x;
        } else if (!strcmp(a, "--steps")) {
            if (parse_number(a, argv[++i], 1, 10000, &x)) return RMX_EXIT_USAGE;
            c->steps = (int)x;
        } else if (!strcmp(a, "--cfg")) {
            if (parse_number(a, argv[++i], 0, 100, &x)) return RMX_EXIT_USAGE;
            c->cfg = (float)x;
        } else if (!strcmp(a, "--eta")) {
            if (parse_number(a, argv[++i], 0, 1, &x)) return RMX_EXIT_USAGE;
            c->eta = (float)x;
        } else if (!strcmp(a, "--seed")) {
            if (parse_number(a, argv[++i], 0, 9007199254740992.0, &x)) return RMX_EXIT_USAGE;
            c->seed = (uint64_t)x;
        } else if (!strcmp(a, "--iterations")) {
            if (parse_number(a, argv[++i], 0, 10000, &x)) return RMX_EXIT_USAGE;
            c->iterations = (int)x;
        } else if (!strcmp(a, "--threads")) {
            if (parse_number(a, argv[++i], 0, 4096, &x)) return RMX_EXIT_USAGE;
            c->threads = (int)x;
        } else if (a[0] == '-') {
            rmx_error("unknown option '%s' (see --help)", a);
            return RMX_EXIT_USAGE;
        } else if (c->checkpoint) {
            rmx_error("one checkpoint expected, got '%s' and '%s'", c->checkpoint, a);
            return RMX_EXIT_USAGE;
        } else {
            c->checkpoint = a;
        }
    }
    if (!c->checkpoint) {
        usage(stderr);
        return RMX_EXIT_USAGE;
    }
    if (!c->genre && !c->list_genres) {
        rmx_error("--genre NAME|all is required (--list-genres shows the checkpoint's genres)");
        return RMX_EXIT_USAGE;
    }
    return -1;
}

static void list_genres(const rmx_generator *g, char *out, size_t n) {
    const rmx_mel_params *a = rmx_generator_audio(g);
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < a->n_genres && used < n; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%s", i ? ", " : "", a->genre_names[i]);
}

typedef struct {
    rmx_progress bar;
    int64_t base, total; /* steps done before this batch, over the whole run */
} progress_state;

static void on_progress(void *arg, int64_t done, int64_t total) {
    (void)total;
    progress_state *p = arg;
    rmx_progress_update(&p->bar, p->base + done, NULL);
}

/* The output folder, created if needed and writable, before any work. */
static int make_folder(const char *dir) {
    char err[1024];
    if (rmx_mkdirs(dir, err, sizeof err) != 0) {
        rmx_error("--out: %s", err);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        rmx_error("--out: %s: cannot write into it: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Vocodes one clip and writes it. */
static int write_clip(const rmx_generator *g, const rmx_vocoder *voc, const cli *c, const float *mel,
                      int64_t frames, int64_t samples, const char *genre, int k) {
    const rmx_mel_params *a = rmx_generator_audio(g);
    rmx_vocoder_options vo;
    rmx_vocoder_default_options(&vo);
    vo.iterations = c->iterations;
    vo.seed = c->seed;
    vo.threads = c->threads;
    float *audio = NULL;
    int64_t n = 0;
    char err[2048], path[RMX_PATH_MAX + 128], comment[RMX_PATH_MAX + 512], title[160];
    if (rmx_vocoder_run(voc, mel, frames, samples, &vo, &audio, &n, NULL, err, sizeof err) != 0) {
        rmx_error("vocoder: %s", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s-%d.wav", c->out, genre, k);
    snprintf(title, sizeof title, "%s #%d", genre, k);
    snprintf(comment, sizeof comment,
             "remixer-generate %s step %" PRId64 ": genre %s, clip %d, seed %" PRIu64
             ", steps %d, cfg %g, eta %g, seconds %.3f, griffin-lim %d",
             g->path, g->m.step, genre, k, c->seed, c->steps, c->cfg, c->eta, (double)n / a->sample_rate,
             c->iterations);
    rmx_wav_options wo;
    rmx_wav_default_options(&wo);
    wo.title = title;
    wo.comment = comment;
    wo.genre = genre;
    int rc = rmx_wav_write(path, audio, n, a->sample_rate, &wo, NULL, err, sizeof err);
    free(audio);
    if (rc != 0) {
        rmx_error("%s", err);
        return -1;
    }
    rmx_progress_clear_active();
    printf("wrote %s (%.2f s, %s)\n", path, (double)n / a->sample_rate, genre);
    fflush(stdout);
    return 0;
}

/* count clips of one genre, in batches: clip k's noise is keyed by (genre, k). */
static int generate_genre(rmx_generator *g, const rmx_vocoder *voc, const cli *c, int genre, progress_state *ps,
                          int64_t frames, int64_t samples, int64_t steps_per_batch) {
    const rmx_mel_params *a = rmx_generator_audio(g);
    const char *name = a->genre_names[genre];
    rmx_generate_opts o = {.steps = c->steps, .cfg = c->cfg, .eta = c->eta, .seed = c->seed,
                           .progress = on_progress, .arg = ps};
    float *mel = malloc(sizeof(float) * (size_t)MAX_BATCH * a->n_mels * (size_t)frames);
    if (!mel) {
        rmx_error("out of memory for %" PRId64 " frames", frames);
        return RMX_EXIT_FAILURE;
    }
    int32_t y[MAX_BATCH];
    int64_t keys[MAX_BATCH];
    char err[1024];
    for (int first = 0; first < c->count; first += MAX_BATCH) {
        int n = c->count - first < MAX_BATCH ? c->count - first : MAX_BATCH;
        for (int i = 0; i < n; i++) {
            y[i] = genre;
            keys[i] = (int64_t)genre * 1000003 + first + i;
        }
        if (rmx_generate_mel(g, &o, n, y, keys, frames, mel, err, sizeof err) != 0) {
            rmx_error("%s", err);
            free(mel);
            return RMX_EXIT_FAILURE;
        }
        ps->base += steps_per_batch; /* the sampler counts from 0 in every batch */
        for (int i = 0; i < n; i++)
            if (write_clip(g, voc, c, mel + (size_t)i * a->n_mels * (size_t)frames, frames, samples, name,
                           first + i) != 0) {
                free(mel);
                return RMX_EXIT_FAILURE;
            }
    }
    free(mel);
    return RMX_EXIT_OK;
}

static int run(const cli *c) {
    if (!c->list_genres && make_folder(c->out) != 0) return RMX_EXIT_USAGE;
    rmx_generator g;
    char err[2048];
    int code = rmx_generator_open(&g, c->checkpoint, c->device, c->threads, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s", err);
        return code;
    }
    char genres[RMX_MAX_GENRES * (RMX_GENRE_NAME_MAX + 2)];
    list_genres(&g, genres, sizeof genres);
    if (c->list_genres) {
        printf("%s\n", genres);
        rmx_generator_close(&g);
        return RMX_EXIT_OK;
    }
    const rmx_mel_params *a = rmx_generator_audio(&g);
    int first = 0, last = a->n_genres - 1;
    if (strcmp(c->genre, "all") != 0) {
        first = last = rmx_generator_genre(&g, c->genre);
        if (first < 0) {
            rmx_error("--genre: '%s' is not a genre of %s; its genres are %s (or all)", c->genre, c->checkpoint,
                      genres);
            rmx_generator_close(&g);
            return RMX_EXIT_USAGE;
        }
    }
    double seconds = c->seconds > 0 ? c->seconds : (double)(a->segment_frames - 1) * a->hop_length / a->sample_rate;
    int64_t frames = rmx_generator_frames(&g, seconds), samples = (int64_t)llround(seconds * a->sample_rate);
    rmx_generate_opts probe = {.steps = c->steps};
    int segments = rmx_generator_segments(&g, &probe, frames);
    rmx_vocoder *voc = rmx_vocoder_create(a, err, sizeof err);
    if (!voc) {
        rmx_error("%s", err);
        rmx_generator_close(&g);
        return RMX_EXIT_FAILURE;
    }
    int K = c->steps < g.m.sched.timesteps ? c->steps : g.m.sched.timesteps;
    int batches_per_genre = (c->count + MAX_BATCH - 1) / MAX_BATCH;
    progress_state ps = {.base = 0};
    rmx_progress_start(&ps.bar, "generate", (int64_t)(last - first + 1) * batches_per_genre * segments * K);
    printf("%s (step %" PRId64 "): %d clip%s of %.2f s per genre (%d segment%s), DDIM %d steps, cfg %g, seed %" PRIu64
           "\n",
           c->checkpoint, g.m.step, c->count, c->count == 1 ? "" : "s", seconds, segments, segments == 1 ? "" : "s", K,
           c->cfg, c->seed);
    fflush(stdout);
    for (int genre = first; code == RMX_EXIT_OK && genre <= last; genre++)
        code = generate_genre(&g, voc, c, genre, &ps, frames, samples, (int64_t)segments * K);
    rmx_progress_finish(&ps.bar);
    rmx_vocoder_free(voc);
    rmx_generator_close(&g);
    return code;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-generate");
    cli c;
    int code = parse_args(argc, argv, &c);
    if (code >= 0) return code;
    return run(&c);
}
