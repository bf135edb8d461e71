/* bench_generate: Remixer's side of bench/generate (not a test).
 *
 *   bench_generate CKPT [--genre NAME] [--count N] [--steps K] [--cfg W] [--eta E] [--seed S]
 *                       [--threads T] [--device cpu|cuda] [--iterations N] [--nnls N]
 *                       [--repeats R] [--dump DIR]
 *
 * Makes what `remixer-generate CKPT --genre NAME --count N` makes (N <= 8: one batch; one segment,
 * the default length), through the same calls: rmx_generator_open, rmx_generate_mel (DDIM with
 * guidance, the decoder), then rmx_vocoder_run per clip with remixer-generate's options. Clip i has
 * label NAME and key genre * 1000003 + i, as remixer-generate keys it.
 *
 * --dump DIR (the parity check's input): replays the sampler step by step as infer/generator.c
 * does for one segment (the starting noise keyed by (seed, RMX_RNG_SAMPLING, 0, key * 4096 + 0),
 * rmx_ddim_sample from t = T - 1, the latent divided by latent_scale, the decoder), checks that
 * its mel equals rmx_generate_mel's byte for byte (so the dump is what remixer-generate computes),
 * and writes DIR/info.txt, noise.f32 [n][C][H][W], latent.f32 (the sampled latent, scaled, i.e.
 * before the division), mel.f32 [n][M][T] (normalised log-mel) and audio.f32 [n][samples].
 *
 * Otherwise: a short warm-up (2 DDIM steps, 2 Griffin-Lim iterations), then R timed repeats, each printing
 *   RESULT model_s=.. model_cpu_s=.. vocoder_s=.. vocoder_cpu_s=.. vocoder_pinv_s=.. ...
 * (wall and process CPU seconds of rmx_generate_mel, of the vocoder over the n clips, and of the
 * vocoder with nnls_iterations 0, i.e. the pseudo-inverse librosa starts from: like for like with
 * the twin's vocoder; foreign_cpu_pct: other processes' share of the machine during the repeat). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/vocoder.h"
#include "infer/generator.h"
#include "util/exitcodes.h"
#include "util/log.h"
#include "util/rng.h"

enum { MAX_BATCH = 8 };

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Busy and total jiffies of the whole machine (/proc/stat's cpu line). */
static void machine_jiffies(double *busy, double *total) {
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) == 8) {
        *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        *total = *busy + (double)(v[3] + v[4]);
    }
    fclose(f);
}

typedef struct {
    double wall, cpu, busy, total;
} stamp;

static stamp take(void) {
    stamp s = {now(CLOCK_MONOTONIC), now(CLOCK_PROCESS_CPUTIME_ID), 0, 0};
    machine_jiffies(&s.busy, &s.total);
    return s;
}

/* Other processes' share (%) of the machine between a and b. */
static double foreign_pct(stamp a, stamp b) {
    double tick = (double)sysconf(_SC_CLK_TCK), total = b.total - a.total;
    if (total <= 0) return 0;
    double foreign = (b.busy - a.busy) - (b.cpu - a.cpu) * tick;
    return foreign > 0 ? 100.0 * foreign / total : 0;
}

static int write_f32(const char *dir, const char *name, const float *x, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), n, f) != n || fclose(f) != 0) {
        rmx_error("%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

typedef struct {
    const char *ckpt, *genre, *device, *dump;
    int count, steps, threads, iterations, nnls, repeats;
    float cfg, eta;
    uint64_t seed;
} args;

/* The vocoder over n clips mel [n][M][frames] -> audio [n][samples] (may be NULL). */
static int vocode_all(const rmx_vocoder *voc, const args *a, int nnls, int n, int M, int64_t frames,
                      int64_t samples, const float *mel, float *audio) {
    rmx_vocoder_options vo;
    rmx_vocoder_default_options(&vo);
    vo.iterations = a->iterations;
    vo.nnls_iterations = nnls;
    vo.seed = a->seed;
    vo.threads = a->threads;
    char err[1024];
    for (int i = 0; i < n; i++) {
        float *y = NULL;
        int64_t got = 0;
        if (rmx_vocoder_run(voc, mel + (size_t)i * M * (size_t)frames, frames, samples, &vo, &y, &got, NULL, err,
                            sizeof err) != 0) {
            rmx_error("vocoder: %s", err);
            return -1;
        }
        if (audio) memcpy(audio + (size_t)i * (size_t)samples, y, sizeof(float) * (size_t)got);
        free(y);
    }
    return 0;
}

/* The replay of one segment (infer/generator.c's sample_segment and rmx_generate_mel) with the
 * intermediate tensors kept, then the files. */
static int dump(rmx_generator *g, const rmx_vocoder *voc, const args *a, int n, const int32_t *y,
                const int64_t *keys, int64_t frames, int64_t samples, const float *mel_gen) {
    rmx_backend *be = g->be;
    const int M = g->m.fae.audio.n_mels, T = g->m.fae.hp.frames;
    const size_t per = (size_t)g->lat_c * g->lat_h * g->lat_w;
    float *z = be->alloc(be, sizeof(float) * per * (size_t)n);
    float *noise = malloc(sizeof(float) * per * (size_t)n), *latent = malloc(sizeof(float) * per * (size_t)n);
    float *mel = malloc(sizeof(float) * (size_t)n * M * T);
    float *audio = malloc(sizeof(float) * (size_t)n * (size_t)samples);
    int64_t seg_keys[MAX_BATCH];
    for (int i = 0; i < n; i++) seg_keys[i] = keys[i] * 4096 + 0;
    be->randn(be, z, n, per, a->seed, RMX_RNG_SAMPLING, 0, seg_keys);
    be->to_host(be, noise, z, sizeof(float) * per * (size_t)n);
    rmx_ddim_config dc = {.steps = a->steps, .eta = a->eta, .cfg = a->cfg, .null_class = g->m.fae.audio.n_genres,
                          .seed = a->seed, .keys = seg_keys, .t_start = g->m.sched.timesteps - 1};
    rmx_eps_model model = rmx_dit_eps_model(g->m.dit, 2 * n);
    rmx_ddim_sample(&model, &g->m.sched, &dc, n, y, z);
    be->to_host(be, latent, z, sizeof(float) * per * (size_t)n);
    be->scale(be, per * (size_t)n, 1.0f / g->m.latent_scale, z);
    rmx_ae_reserve(g->m.fae.ae, n);
    const float *xhat = rmx_ae_decode_latents(g->m.fae.ae, n, z);
    be->to_host(be, mel, xhat, sizeof(float) * (size_t)n * M * T);
    be->free(be, z);
    int rc = 0;
    if (frames != T || memcmp(mel, mel_gen, sizeof(float) * (size_t)n * M * T) != 0) {
        rmx_error("the replayed sampler's mel differs from rmx_generate_mel's: the dump would not be "
                  "what remixer-generate computes");
        rc = -1;
    }
    if (rc == 0) rc = vocode_all(voc, a, RMX_VOCODER_DEFAULT_NNLS_ITERATIONS, n, M, frames, samples, mel, audio);
    if (rc == 0 && (write_f32(a->dump, "noise.f32", noise, per * (size_t)n) ||
                    write_f32(a->dump, "latent.f32", latent, per * (size_t)n) ||
                    write_f32(a->dump, "mel.f32", mel, (size_t)n * M * T) ||
                    write_f32(a->dump, "audio.f32", audio, (size_t)n * (size_t)samples)))
        rc = -1;
    if (rc == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/info.txt", a->dump);
        FILE *f = fopen(path, "w");
        if (!f) {
            rmx_error("%s: %s", path, strerror(errno));
            rc = -1;
        } else {
            fprintf(f, "n=%d\nlat_c=%d\nlat_h=%d\nlat_w=%d\nn_mels=%d\nframes=%d\nsamples=%" PRId64
                       "\nsteps=%d\ncfg=%.9g\neta=%.9g\nseed=%" PRIu64 "\nlatent_scale=%.9g\nnull_class=%d\n",
                    n, g->lat_c, g->lat_h, g->lat_w, M, T, samples, a->steps, (double)a->cfg, (double)a->eta, a->seed,
                    (double)g->m.latent_scale, g->m.fae.audio.n_genres);
            fprintf(f, "labels=");
            for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", y[i]);
            fprintf(f, "\n");
            fclose(f);
        }
    }
    free(noise), free(latent), free(mel), free(audio);
    return rc;
}

static int parse(int argc, char **argv, args *a) {
    *a = (args){.genre = NULL, .device = "cpu", .count = 4, .steps = 50, .threads = 0,
                .iterations = RMX_VOCODER_DEFAULT_ITERATIONS, .nnls = RMX_VOCODER_DEFAULT_NNLS_ITERATIONS,
                .repeats = 3, .cfg = 3.0f, .eta = 0.0f};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-') {
            a->ckpt = o;
            continue;
        }
        if (!v) {
            rmx_error("%s needs a value", o);
            return -1;
        }
        i++;
        if (!strcmp(o, "--genre")) a->genre = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--dump")) a->dump = v;
        else if (!strcmp(o, "--count")) a->count = atoi(v);
        else if (!strcmp(o, "--steps")) a->steps = atoi(v);
        else if (!strcmp(o, "--threads")) a->threads = atoi(v);
        else if (!strcmp(o, "--iterations")) a->iterations = atoi(v);
        else if (!strcmp(o, "--nnls")) a->nnls = atoi(v);
        else if (!strcmp(o, "--repeats")) a->repeats = atoi(v);
        else if (!strcmp(o, "--cfg")) a->cfg = strtof(v, NULL);
        else if (!strcmp(o, "--eta")) a->eta = strtof(v, NULL);
        else if (!strcmp(o, "--seed")) a->seed = strtoull(v, NULL, 10);
        else {
            rmx_error("unknown option %s", o);
            return -1;
        }
    }
    if (!a->ckpt || a->count < 1 || a->count > MAX_BATCH || a->steps < 1 || a->repeats < 1) {
        rmx_error("usage: bench_generate CKPT [--genre NAME] [--count 1..8] [--steps K] [--cfg W] [--eta E] "
                  "[--seed S] [--threads T] [--device cpu|cuda] [--iterations N] [--nnls N] [--repeats R] "
                  "[--dump DIR]");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    rmx_log_set_program("bench_generate");
    args a;
    if (parse(argc, argv, &a) != 0) return RMX_EXIT_USAGE;
    rmx_generator g;
    char err[2048];
    int code = rmx_generator_open(&g, a.ckpt, a.device, a.threads, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s", err);
        return code;
    }
    const rmx_mel_params *au = rmx_generator_audio(&g);
    int genre = a.genre ? rmx_generator_genre(&g, a.genre) : 0;
    if (genre < 0) {
        rmx_error("--genre %s: not a genre of %s", a.genre, a.ckpt);
        rmx_generator_close(&g);
        return RMX_EXIT_USAGE;
    }
    /* remixer-generate's default length: one segment */
    double seconds = (double)(au->segment_frames - 1) * au->hop_length / au->sample_rate;
    int64_t frames = rmx_generator_frames(&g, seconds), samples = (int64_t)llround(seconds * au->sample_rate);
    const int n = a.count, M = au->n_mels;
    int32_t y[MAX_BATCH];
    int64_t keys[MAX_BATCH];
    for (int i = 0; i < n; i++) {
        y[i] = genre;
        keys[i] = (int64_t)genre * 1000003 + i;
    }
    rmx_generate_opts o = {.steps = a.steps, .cfg = a.cfg, .eta = a.eta, .seed = a.seed};
    rmx_vocoder *voc = rmx_vocoder_create(au, err, sizeof err);
    float *mel = malloc(sizeof(float) * (size_t)n * M * (size_t)frames);
    if (!voc || !mel) {
        rmx_error("%s", voc ? "out of memory" : err);
        return RMX_EXIT_FAILURE;
    }
    printf("checkpoint %s (step %" PRId64 "): DiT on %dx%dx%d latents, genre %s, %d clip%s of %.3f s, DDIM %d "
           "steps, cfg %g, eta %g, seed %" PRIu64 ", device %s, threads %d\n",
           a.ckpt, g.m.step, g.lat_c, g.lat_h, g.lat_w, au->genre_names[genre], n, n == 1 ? "" : "s",
           (double)samples / au->sample_rate, a.steps, (double)a.cfg, (double)a.eta, a.seed, a.device, a.threads);
    int rc = 0;
    if (a.dump) {
        rc = rmx_generate_mel(&g, &o, n, y, keys, frames, mel, err, sizeof err);
        if (rc != 0) rmx_error("%s", err);
        else rc = dump(&g, voc, &a, n, y, keys, frames, samples, mel);
        if (rc == 0) printf("dumped noise, latent, mel, audio into %s (replayed sampler == rmx_generate_mel)\n", a.dump);
    } else {
        for (int r = -1; rc == 0 && r < a.repeats; r++) { /* r = -1: a short warm-up */
            args wa = a;
            wa.iterations = 2;
            rmx_generate_opts wo = o;
            wo.steps = 2;
            const args *aa = r < 0 ? &wa : &a;
            stamp s0 = take();
            rc = rmx_generate_mel(&g, r < 0 ? &wo : &o, n, y, keys, frames, mel, err, sizeof err);
            if (rc != 0) {
                rmx_error("%s", err);
                break;
            }
            stamp s1 = take();
            rc = vocode_all(voc, aa, a.nnls, n, M, frames, samples, mel, NULL);
            stamp s2 = take();
            if (rc == 0) rc = vocode_all(voc, aa, 0, n, M, frames, samples, mel, NULL);
            stamp s3 = take();
            if (r < 0) continue;
            printf("RESULT model_s=%.4f model_cpu_s=%.4f vocoder_s=%.4f vocoder_cpu_s=%.4f vocoder_pinv_s=%.4f "
                   "vocoder_pinv_cpu_s=%.4f audio_s=%.4f foreign_cpu_pct=%.1f\n",
                   s1.wall - s0.wall, s1.cpu - s0.cpu, s2.wall - s1.wall, s2.cpu - s1.cpu, s3.wall - s2.wall,
                   s3.cpu - s2.cpu, (double)n * (double)samples / au->sample_rate, foreign_pct(s0, s2));
            fflush(stdout);
        }
    }
    free(mel);
    rmx_vocoder_free(voc);
    rmx_generator_close(&g);
    return rc == 0 ? RMX_EXIT_OK : RMX_EXIT_FAILURE;
}
