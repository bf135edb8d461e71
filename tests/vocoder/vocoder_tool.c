/* The C side of the vocoder figure (figure.py) and of the benchmark (bench/vocoder):
 *
 *   vocoder_tool mel IN DIR
 *       IN (any audio libsndfile reads) -> the prep's path (decode, mono, resample to 22,050 Hz,
 *       rmx_mel_compute with the prep's defaults, every frame) -> normalised with the file's own
 *       mean and std. Writes DIR/audio.f32 (the decoded mono samples, float32), DIR/mel.f32 (the
 *       normalised log-mel [n_mels][frames], float32) and DIR/info.txt (key=value).
 *   vocoder_tool vocode DIR ITERATIONS NNLS_ITERATIONS SEED OUT.f32 [REPEATS [THREADS]]
 *       (an iteration count may be "default") our vocoder on DIR/mel.f32, output of DIR's length, written to OUT.f32; prints
 *       "sc=<SC against DIR/audio.f32> seconds=<median wall time of REPEATS runs> cpu_seconds=<median
 *       CPU time, all threads> nnls_s=... gl_s=..."
 *
 * Exit status 0, or 1 with a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/audio.h"
#include "data/mel.h"
#include "data/prep.h"
#include "data/vocoder.h"
#include "util/progress.h"

static int die(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "vocoder_tool: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

static int write_f32(const char *dir, const char *name, const float *x, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof *x, n, f) != n || fclose(f) != 0) return die("cannot write %s%s", path, "");
    return 0;
}

static float *read_f32(const char *dir, const char *name, size_t *n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *x = malloc((size_t)bytes + 4);
    *n = x ? fread(x, sizeof *x, (size_t)bytes / sizeof *x, f) : 0;
    fclose(f);
    return x;
}

static int cmd_mel(const char *in, const char *dir) {
    rmx_prep_options o;
    rmx_prep_default_options(&o);
    rmx_mel_params p = o.audio;
    char err[1024];
    float *x = NULL;
    int64_t n = 0;
    rmx_audio_info info;
    if (rmx_audio_load_mono(in, p.sample_rate, &x, &n, &info, err, sizeof err) != RMX_AUDIO_OK)
        return die("%s: %s", in, err);
    rmx_mel *mel = rmx_mel_create(p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax, p.log_floor, err,
                                  sizeof err);
    if (!mel) return die("%s%s", err, "");
    int64_t T = rmx_mel_frame_count(mel, n);
    float *lm = malloc((size_t)T * p.n_mels * sizeof *lm);
    if (!lm || rmx_mel_compute(mel, x, n, T, lm, err, sizeof err) != 0) return die("%s%s", err, "");
    double sum = 0.0, sq = 0.0;
    const int64_t N = T * p.n_mels;
    for (int64_t i = 0; i < N; i++) sum += lm[i];
    double mean = sum / N;
    for (int64_t i = 0; i < N; i++) sq += (lm[i] - mean) * (lm[i] - mean);
    float fmean = (float)mean, fstd = (float)sqrt(sq / N);
    for (int64_t i = 0; i < N; i++) lm[i] = (lm[i] - fmean) / fstd;
    if (write_f32(dir, "audio.f32", x, (size_t)n) || write_f32(dir, "mel.f32", lm, (size_t)N)) return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/info.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return die("cannot write %s%s", path, "");
    fprintf(f,
            "source=%s\nsource_rate=%d\nsource_channels=%d\nn=%lld\nframes=%lld\nn_mels=%d\nsample_rate=%d\n"
            "n_fft=%d\nhop=%d\nfmin=%.9g\nfmax=%.9g\nlog_floor=%.9g\nnorm_mean=%.9g\nnorm_std=%.9g\n",
            in, info.sample_rate, info.channels, (long long)n, (long long)T, p.n_mels, p.sample_rate, p.n_fft,
            p.hop_length, (double)p.fmin, (double)p.fmax, (double)p.log_floor, (double)fmean, (double)fstd);
    fclose(f);
    printf("%s: %.2f s, %d channel(s) at %d Hz -> %lld samples, %lld frames\n", in, (double)n / p.sample_rate,
           info.channels, info.sample_rate, (long long)n, (long long)T);
    free(x);
    free(lm);
    rmx_mel_free(mel);
    return 0;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_vocode(int argc, char **argv) {
    const char *dir = argv[0], *out = argv[4];
    rmx_vocoder_options o;
    rmx_vocoder_default_options(&o);
    if (strcmp(argv[1], "default") != 0) o.iterations = atoi(argv[1]);
    if (strcmp(argv[2], "default") != 0) o.nnls_iterations = atoi(argv[2]);
    o.seed = strtoull(argv[3], NULL, 10);
    int repeats = argc > 5 ? atoi(argv[5]) : 1;
    if (argc > 6) o.threads = atoi(argv[6]);
    if (repeats < 1) repeats = 1;
    rmx_prep_options po;
    rmx_prep_default_options(&po);
    rmx_mel_params p = po.audio;
    p.n_genres = 1;
    strcpy(p.genre_names[0], "x");
    char path[4096];
    snprintf(path, sizeof path, "%s/info.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return die("cannot read %s%s", path, "");
    long long n = 0, T = 0;
    char line[4200];
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "n=%lld", &n);
        sscanf(line, "frames=%lld", &T);
        sscanf(line, "norm_mean=%f", &p.norm_mean);
        sscanf(line, "norm_std=%f", &p.norm_std);
    }
    fclose(f);
    size_t nm = 0, nx = 0;
    float *mel = read_f32(dir, "mel.f32", &nm), *x = read_f32(dir, "audio.f32", &nx);
    if (!mel || !x || nm != (size_t)(T * p.n_mels) || nx != (size_t)n) return die("%s: bad mel.f32 or audio.f32%s", dir, "");
    char err[1024];
    rmx_vocoder *v = rmx_vocoder_create(&p, err, sizeof err);
    if (!v) return die("%s%s", err, "");
    double *secs = calloc((size_t)repeats, sizeof *secs), *cpus = calloc((size_t)repeats, sizeof *cpus);
    float *y = NULL;
    int64_t ny = 0;
    rmx_vocoder_stats st = {0};
    for (int r = 0; r < repeats; r++) {
        free(y);
        double t0 = rmx_now_s(), c0 = cpu_s();
        if (rmx_vocoder_run(v, mel, T, n, &o, &y, &ny, &st, err, sizeof err) != 0) return die("%s%s", err, "");
        secs[r] = rmx_now_s() - t0;
        cpus[r] = cpu_s() - c0;
    }
    double sc = rmx_spectral_convergence(rmx_vocoder_stft(v), x, y, n, o.threads);
    f = fopen(out, "wb");
    if (!f || fwrite(y, sizeof *y, (size_t)ny, f) != (size_t)ny || fclose(f) != 0) return die("cannot write %s%s", out, "");
    qsort(secs, (size_t)repeats, sizeof *secs, cmp_double);
    qsort(cpus, (size_t)repeats, sizeof *cpus, cmp_double);
    printf("sc=%.6f seconds=%.4f cpu_seconds=%.4f nnls_s=%.4f gl_s=%.4f residual_pinv=%.6f residual_nnls=%.6f\n", sc,
           secs[repeats / 2], cpus[repeats / 2], st.nnls_s, st.griffin_lim_s, st.residual_pinv, st.residual_nnls);
    free(secs);
    free(cpus);
    free(y);
    free(x);
    free(mel);
    rmx_vocoder_free(v);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "mel") == 0) return cmd_mel(argv[2], argv[3]);
    if (argc >= 7 && strcmp(argv[1], "vocode") == 0) return cmd_vocode(argc - 2, argv + 2);
    fprintf(stderr, "usage: vocoder_tool mel IN DIR\n"
                    "       vocoder_tool vocode DIR ITERATIONS NNLS_ITERATIONS SEED OUT.f32 [REPEATS [THREADS]]\n");
    return 1;
}
