/* remixer-reconstruct: audio -> the prep's mel -> [autoencoder] -> vocoder -> WAV, and how close
 * the result is to the input. The ear's check of the mel representation, the vocoder and a
 * stage-1 model, on any recording. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mel.h"
#include "data/prep.h"
#include "data/vocoder.h"
#include "data/wav.h"
#include "infer/infer.h"
#include "kernels/backend.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"

static const char *const USAGE =
    "usage: remixer-reconstruct [options] IN OUT.wav\n"
    "  Rebuilds IN from its own mel spectrogram and writes the result to OUT.wav:\n"
    "    IN (any audio libsndfile reads: WAV, FLAC, OGG, MP3) -> the prep's log-mel (decode, mix to\n"
    "    mono, resample, STFT, Slaney mel, log, normalise; exactly remixer-prep's code) -> with\n"
    "    --checkpoint, through its autoencoder segment by segment (overlaps crossfaded) -> vocoder\n"
    "    (NNLS mel inversion + fast Griffin-Lim) -> OUT.wav, 16-bit PCM mono, peak -1 dBFS, the\n"
    "    settings in its metadata.\n"
    "  Prints the spectral convergence ||S - S^||_F / ||S||_F of the result against IN (STFT\n"
    "  magnitudes; and mel magnitudes), what it wrote and the time each step took. The same call\n"
    "  writes the same bytes.\n\n"
    "options:\n"
    "  --checkpoint CKPT    a stage-1 (vae) or later checkpoint: its audio parameters and\n"
    "                       normalisation, and its autoencoder; without one, remixer-prep's\n"
    "                       defaults (22,050 Hz, n_fft 2048, hop 256, 128 mels) and IN's own mean\n"
    "                       and std, and no model\n"
    "  --iterations N       Griffin-Lim iterations [32]\n"
    "  --nnls-iterations N  iterations of the non-negative least-squares mel inversion [200]\n"
    "  --seed S             seed of Griffin-Lim's random initial phase [0]\n"
    "  --overlap F          frames shared by consecutive autoencoder segments, crossfaded\n"
    "                       [segment / 8]; 0 to half a segment\n"
    "  --threads N          CPU threads [all]\n"
    "  -h, --help           this text\n\n"
    "exit codes: 0 written, 1 runtime failure (e.g. the write failed), 2 bad command line or an\n"
    "            output folder that is missing or not writable, 3 IN is not usable audio (missing,\n"
    "            empty, not audio, truncated), 4 checkpoint refused (missing, damaged, no\n"
    "            autoencoder in it)\n";

typedef struct {
    const char *in, *out, *checkpoint;
    int iterations, nnls_iterations, overlap, threads;
    uint64_t seed;
} cli;

/* -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, cli *c) {
    enum { O_CKPT = 1000, O_ITER, O_NNLS, O_SEED, O_OVERLAP, O_THREADS };
    static const struct option opts[] = {
        {"checkpoint", required_argument, NULL, O_CKPT}, {"iterations", required_argument, NULL, O_ITER},
        {"nnls-iterations", required_argument, NULL, O_NNLS}, {"seed", required_argument, NULL, O_SEED},
        {"overlap", required_argument, NULL, O_OVERLAP}, {"threads", required_argument, NULL, O_THREADS},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    c->iterations = RMX_VOCODER_DEFAULT_ITERATIONS;
    c->nnls_iterations = RMX_VOCODER_DEFAULT_NNLS_ITERATIONS;
    c->overlap = -1;
    opterr = 0;
    int ch;
    long v;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(USAGE, stdout); return RMX_EXIT_OK;
        case O_CKPT: c->checkpoint = optarg; break;
        case O_ITER:
            if (rmx_infer_parse_int("--iterations", optarg, 0, 100000, &v)) return RMX_EXIT_USAGE;
            c->iterations = (int)v;
            break;
        case O_NNLS:
            if (rmx_infer_parse_int("--nnls-iterations", optarg, 0, 1000000, &v)) return RMX_EXIT_USAGE;
            c->nnls_iterations = (int)v;
            break;
        case O_SEED: {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || !end || *end || optarg[0] == '-' || end == optarg) {
                rmx_error("--seed: expected a non-negative integer, got '%s'", optarg);
                return RMX_EXIT_USAGE;
            }
            c->seed = s;
            break;
        }
        case O_OVERLAP:
            if (rmx_infer_parse_int("--overlap", optarg, 0, 1 << 20, &v)) return RMX_EXIT_USAGE;
            c->overlap = (int)v;
            break;
        case O_THREADS:
            if (rmx_infer_parse_int("--threads", optarg, 1, 4096, &v)) return RMX_EXIT_USAGE;
            c->threads = (int)v;
            break;
        case ':': rmx_error("%s needs a value (see --help)", argv[optind - 1]); return RMX_EXIT_USAGE;
        default: rmx_error("unknown option '%s' (see --help)", argv[optind - 1]); return RMX_EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        if (argc - optind < 2) rmx_error("expected IN and OUT.wav (see --help)");
        else rmx_error("expected IN and OUT.wav, got %d arguments (see --help)", argc - optind);
        return RMX_EXIT_USAGE;
    }
    c->in = argv[optind];
    c->out = argv[optind + 1];
    return -1;
}

/* Linear magnitude of a log-mel value: exp(l / 2) (the mel is of the power spectrum). */
static double mel_sc(const float *ref_log, const float *y_log, int64_t count) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double a = exp(0.5 * ref_log[i]), b = exp(0.5 * y_log[i]);
        num += (a - b) * (a - b);
        den += a * a;
    }
    return den > 0.0 ? sqrt(num / den) : 0.0;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-reconstruct");
    cli c = {0};
    int code = parse_args(argc, argv, &c);
    if (code >= 0) return code;
    if ((code = rmx_infer_check_output(c.out)) >= 0) return code;
    const double t_start = rmx_now_s();
    char err[4096];

    /* Audio parameters: the checkpoint's, else the prep's defaults. */
    rmx_prep_options po;
    rmx_prep_default_options(&po);
    rmx_mel_params p = po.audio;
    rmx_backend *be = NULL;
    rmx_frozen_ae fae = {0};
    double ae_load_s = 0.0;
    if (c.checkpoint) {
        double t0 = rmx_now_s();
        be = rmx_backend_cpu_create(c.threads);
        if (!be) {
            rmx_error("cannot create the CPU backend");
            return RMX_EXIT_FAILURE;
        }
        if ((code = rmx_frozen_ae_load(be, c.checkpoint, 4, &fae, err, sizeof err)) != RMX_EXIT_OK) {
            rmx_error("%s", err);
            be->destroy(be);
            return code;
        }
        p = fae.audio;
        if (fae.hp.mels != p.n_mels) {
            rmx_error("%s: the autoencoder takes %d mels but its /audio says %d", c.checkpoint, fae.hp.mels, p.n_mels);
            rmx_frozen_ae_free(&fae);
            be->destroy(be);
            return RMX_EXIT_CHECKPOINT;
        }
        ae_load_s = rmx_now_s() - t0;
    } else {
        p.n_genres = 1;
        snprintf(p.genre_names[0], sizeof p.genre_names[0], "none");
    }
    const int overlap = c.overlap >= 0 ? c.overlap : (c.checkpoint ? fae.hp.frames / 8 : 0);
    if (c.checkpoint && overlap > fae.hp.frames / 2) {
        rmx_error("--overlap: at most half a segment (%d frames), got %d", fae.hp.frames / 2, overlap);
        rmx_frozen_ae_free(&fae);
        be->destroy(be);
        return RMX_EXIT_USAGE;
    }

    /* IN -> the prep's log-mel. */
    rmx_infer_audio a;
    if ((code = rmx_infer_load_audio(c.in, &p, &a, err, sizeof err)) != RMX_EXIT_OK) {
        rmx_error("%s", err);
        if (c.checkpoint) {
            rmx_frozen_ae_free(&fae);
            be->destroy(be);
        }
        return code;
    }
    const int M = p.n_mels;
    const int64_t T = a.frames, values = T * M;
    printf("%s: %.2f s, %d channel%s at %d Hz -> mono %d Hz, %lld samples, %lld frames x %d mels\n", c.in,
           (double)a.info.frames / a.info.sample_rate, a.info.channels, a.info.channels == 1 ? "" : "s",
           a.info.sample_rate, p.sample_rate, (long long)a.n, (long long)T, M);
    if (c.checkpoint) {
        printf("normalisation: mean %.6g, std %.6g of the checkpoint's training data\n", (double)p.norm_mean,
               (double)p.norm_std);
    } else {
        rmx_infer_mean_std(a.logmel, values, &p.norm_mean, &p.norm_std);
        printf("normalisation: no --checkpoint, so the file's own mean %.6g and std %.6g\n", (double)p.norm_mean,
               (double)p.norm_std);
    }
    float *x = malloc((size_t)values * sizeof *x), *y = c.checkpoint ? malloc((size_t)values * sizeof *y) : NULL;
    if (!x || (c.checkpoint && !y)) {
        rmx_error("out of memory for %lld mel values", (long long)values);
        return RMX_EXIT_FAILURE;
    }
    for (int64_t i = 0; i < values; i++) x[i] = (a.logmel[i] - p.norm_mean) / p.norm_std;

    rmx_infer_bar bar = {0};
    double ae_s = 0.0, ae_sc = NAN;
    const float *mel_for_vocoder = x;
    if (c.checkpoint) {
        double t0 = rmx_now_s();
        const int64_t segs = rmx_infer_segment_count(T, fae.hp.frames, overlap);
        const float pad = (logf(p.log_floor) - p.norm_mean) / p.norm_std;
        if (rmx_infer_autoencode(&fae, x, T, overlap, 4, pad, NULL, y, rmx_infer_progress, &bar, err, sizeof err) != 0) {
            rmx_infer_bar_finish(&bar);
            rmx_error("%s: %s", c.checkpoint, err);
            return RMX_EXIT_FAILURE;
        }
        rmx_infer_bar_finish(&bar);
        ae_s = rmx_now_s() - t0;
        /* The trainer's metric: SC of the linear mel magnitude exp((x std + mean) / 2). */
        float *ly = malloc((size_t)values * sizeof *ly);
        for (int64_t i = 0; i < values; i++) ly[i] = y[i] * p.norm_std + p.norm_mean;
        ae_sc = mel_sc(a.logmel, ly, values);
        free(ly);
        int lc, lh, lw;
        rmx_ae_latent_shape(fae.ae, &lc, &lh, &lw);
        printf("autoencoder: %s (stage-1 step %lld, %s bottleneck, latent %d x %d x %d per segment): %lld segment%s "
               "of %d frames, overlap %d crossfaded\n",
               c.checkpoint, (long long)fae.step, fae.hp.bottleneck == RMX_AE_VQ ? "vq" : "kl", lc, lh, lw,
               (long long)segs, segs == 1 ? "" : "s", fae.hp.frames, overlap);
        printf("spectral convergence, mel magnitude, input vs autoencoder: %.6f\n", ae_sc);
        mel_for_vocoder = y;
    }

    /* Vocoder. */
    rmx_vocoder *voc = rmx_vocoder_create(&p, err, sizeof err);
    if (!voc) {
        rmx_error("%s", err);
        return RMX_EXIT_FAILURE;
    }
    rmx_vocoder_options vo;
    rmx_vocoder_default_options(&vo);
    vo.iterations = c.iterations;
    vo.nnls_iterations = c.nnls_iterations;
    vo.seed = c.seed;
    vo.threads = c.threads;
    vo.progress = rmx_infer_progress;
    vo.progress_ctx = &bar;
    float *out = NULL;
    int64_t n_out = 0;
    rmx_vocoder_stats st = {0};
    if (rmx_vocoder_run(voc, mel_for_vocoder, T, a.n, &vo, &out, &n_out, &st, err, sizeof err) != 0) {
        rmx_infer_bar_finish(&bar);
        rmx_error("%s", err);
        return RMX_EXIT_FAILURE;
    }
    rmx_infer_bar_finish(&bar);
    printf("vocoder: NNLS %d iterations (relative mel residual %.3g -> %.3g), fast Griffin-Lim %d iterations, "
           "momentum %.2f, seed %llu\n",
           vo.nnls_iterations, st.residual_pinv, st.residual_nnls, vo.iterations, (double)vo.momentum,
           (unsigned long long)vo.seed);

    /* How close: STFT magnitudes and mel magnitudes of IN and of the result. */
    double t0 = rmx_now_s();
    const double sc = rmx_spectral_convergence(rmx_vocoder_stft(voc), a.samples, out, a.n, c.threads);
    double msc = NAN;
    {
        rmx_mel *mel = rmx_mel_create(p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax, p.log_floor, err,
                                      sizeof err);
        float *lm = malloc((size_t)values * sizeof *lm);
        if (mel && lm && rmx_mel_compute(mel, out, n_out, T, lm, err, sizeof err) == 0) msc = mel_sc(a.logmel, lm, values);
        free(lm);
        rmx_mel_free(mel);
    }
    const double sc_s = rmx_now_s() - t0;
    printf("spectral convergence, STFT magnitude, input vs output: %.6f\n", sc);
    printf("spectral convergence, mel magnitude, input vs output: %.6f\n", msc);

    /* WAV out. */
    char title[1024], comment[4096];
    snprintf(title, sizeof title, "%s, reconstructed", base_name(c.in));
    snprintf(comment, sizeof comment,
             "remixer-reconstruct: input=%s; checkpoint=%s; overlap=%d; nnls_iterations=%d; iterations=%d; "
             "momentum=%.2f; phase=random; seed=%llu; sample_rate=%d; n_fft=%d; hop_length=%d; n_mels=%d; "
             "fmin=%g; fmax=%g; log_floor=%g; norm_mean=%.9g; norm_std=%.9g; peak_dbfs=%g; "
             "spectral_convergence=%.6f",
             base_name(c.in), c.checkpoint ? c.checkpoint : "none", c.checkpoint ? overlap : 0, vo.nnls_iterations,
             vo.iterations, (double)vo.momentum, (unsigned long long)vo.seed, p.sample_rate, p.n_fft, p.hop_length,
             p.n_mels, (double)p.fmin, (double)p.fmax, (double)p.log_floor, (double)p.norm_mean, (double)p.norm_std,
             RMX_WAV_DEFAULT_PEAK_DBFS, sc);
    rmx_wav_options wo;
    rmx_wav_default_options(&wo);
    wo.title = title;
    wo.comment = comment;
    rmx_wav_report rep;
    t0 = rmx_now_s();
    if (rmx_wav_write(c.out, out, n_out, p.sample_rate, &wo, &rep, err, sizeof err) != 0) {
        rmx_error("%s", err);
        return RMX_EXIT_FAILURE;
    }
    const double write_s = rmx_now_s() - t0;
    printf("wrote %s: %lld samples (%.2f s) at %d Hz, 16-bit PCM mono, peak %.1f dBFS (gain %.4g)\n", c.out,
           (long long)n_out, (double)n_out / p.sample_rate, p.sample_rate, rep.peak_dbfs, rep.gain);
    printf("time: decode %.2f s, mel %.2f s", a.decode_s, a.mel_s);
    if (c.checkpoint) printf(", checkpoint %.2f s, autoencoder %.2f s", ae_load_s, ae_s);
    printf(", NNLS %.2f s, Griffin-Lim %.2f s, scoring %.2f s, write %.2f s, total %.2f s\n", st.nnls_s,
           st.griffin_lim_s, sc_s, write_s, rmx_now_s() - t_start);

    free(out);
    free(x);
    free(y);
    rmx_vocoder_free(voc);
    rmx_infer_audio_free(&a);
    if (c.checkpoint) {
        rmx_frozen_ae_free(&fae);
        be->destroy(be);
    }
    return RMX_EXIT_OK;
}
