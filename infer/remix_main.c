/* remixer-remix: an original song in the style of another, with a stage-3 (remix) checkpoint.
 *
 * ORIGINAL -> the prep's mel -> segments (overlapping, crossfaded) -> each segment's latent noised
 * to --strength and denoised by DDIM with the style song's latent as style tokens (style guidance
 * --style-scale) -> decoder -> vocoder -> OUT.wav. The style is one segment of STYLE from
 * --style-offset on. Everything is a pure function of the files and the options. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/vocoder.h"
#include "data/wav.h"
#include "infer/infer.h"
#include "kernels/backend.h"
#include "model/diffusion.h"
#include "train/diffusion_ckpt.h"
#include "util/exitcodes.h"
#include "util/log.h"

static const char *const USAGE =
    "usage: remixer-remix CHECKPOINT --original A --style B -o OUT.wav [options]\n"
    "  Remixes A in the style of B with a stage-3 (remix) checkpoint and writes OUT.wav:\n"
    "    A and B (any audio libsndfile reads) -> the prep's log-mel -> A segment by segment\n"
    "    (overlaps crossfaded): its latent noised to --strength, then DDIM down with B's latent\n"
    "    as style tokens and style guidance -> decoder -> vocoder (NNLS + fast Griffin-Lim) ->\n"
    "    OUT.wav, 16-bit PCM mono, peak -1 dBFS, the settings in its metadata. The same call\n"
    "    writes the same bytes. --strength 0 gives A through the autoencoder.\n\n"
    "options:\n"
    "  --original A          the song whose content is kept (any length)\n"
    "  --style B             the song whose character is taken\n"
    "  -o, --out OUT.wav     where to write\n"
    "  --strength S          how far A is noised before it is redrawn, 0 (unchanged) .. 1 [0.6]\n"
    "  --style-scale W       style guidance: 0 no style, 1 style tokens without guidance [2]\n"
    "  --steps K             DDIM steps over the whole schedule (about K x S run) [50]\n"
    "  --seed N              seed of the noise and of Griffin-Lim's phase [0]\n"
    "  --style-offset SEC    where in B the style segment starts [0]; past the end: the last segment\n"
    "  --iterations N        Griffin-Lim iterations [32]\n"
    "  --device auto|cpu|cuda  where the model runs [auto]\n"
    "  --threads N           CPU threads [all]\n"
    "  -h, --help            this text\n\n"
    "exit codes: 0 written, 1 runtime failure, 2 bad command line or an output folder that is\n"
    "            missing or not writable, 3 A or B is not usable audio (missing, empty, not audio,\n"
    "            truncated), 4 checkpoint refused (missing, damaged, not of stage remix)\n";

typedef struct {
    const char *checkpoint, *original, *style, *out, *device;
    double strength, style_scale, style_offset;
    int steps, iterations, threads;
    uint64_t seed;
} cli;

static int parse_real(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || !end || *end || end == v || !(x >= lo && x <= hi)) {
        rmx_error("%s: expected a number in [%g, %g], got '%s'", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, cli *c) {
    enum { O_ORIG = 1000, O_STYLE, O_STRENGTH, O_SCALE, O_STEPS, O_SEED, O_OFFSET, O_ITER, O_DEVICE, O_THREADS };
    static const struct option opts[] = {
        {"original", required_argument, NULL, O_ORIG}, {"style", required_argument, NULL, O_STYLE},
        {"out", required_argument, NULL, 'o'}, {"strength", required_argument, NULL, O_STRENGTH},
        {"style-scale", required_argument, NULL, O_SCALE}, {"steps", required_argument, NULL, O_STEPS},
        {"seed", required_argument, NULL, O_SEED}, {"style-offset", required_argument, NULL, O_OFFSET},
        {"iterations", required_argument, NULL, O_ITER}, {"device", required_argument, NULL, O_DEVICE},
        {"threads", required_argument, NULL, O_THREADS}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    *c = (cli){.device = "auto", .strength = 0.6, .style_scale = 2.0, .steps = 50,
               .iterations = RMX_VOCODER_DEFAULT_ITERATIONS};
    opterr = 0;
    int ch;
    long v;
    double d;
    while ((ch = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(USAGE, stdout); return RMX_EXIT_OK;
        case O_ORIG: c->original = optarg; break;
        case O_STYLE: c->style = optarg; break;
        case 'o': c->out = optarg; break;
        case O_STRENGTH:
            if (parse_real("--strength", optarg, 0, 1, &c->strength)) return RMX_EXIT_USAGE;
            break;
        case O_SCALE:
            if (parse_real("--style-scale", optarg, 0, 100, &c->style_scale)) return RMX_EXIT_USAGE;
            break;
        case O_OFFSET:
            if (parse_real("--style-offset", optarg, 0, 1e7, &c->style_offset)) return RMX_EXIT_USAGE;
            break;
        case O_STEPS:
            if (rmx_infer_parse_int("--steps", optarg, 1, 100000, &v)) return RMX_EXIT_USAGE;
            c->steps = (int)v;
            break;
        case O_ITER:
            if (rmx_infer_parse_int("--iterations", optarg, 0, 100000, &v)) return RMX_EXIT_USAGE;
            c->iterations = (int)v;
            break;
        case O_THREADS:
            if (rmx_infer_parse_int("--threads", optarg, 1, 4096, &v)) return RMX_EXIT_USAGE;
            c->threads = (int)v;
            break;
        case O_SEED:
            if (parse_real("--seed", optarg, 0, 9007199254740992.0, &d) || d != floor(d)) {
                if (d != floor(d)) rmx_error("--seed: expected a non-negative integer, got '%s'", optarg);
                return RMX_EXIT_USAGE;
            }
            c->seed = (uint64_t)d;
            break;
        case O_DEVICE:
            if (strcmp(optarg, "auto") && strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                rmx_error("--device: expected auto, cpu or cuda, got '%s'", optarg);
                return RMX_EXIT_USAGE;
            }
            c->device = optarg;
            break;
        case ':': rmx_error("%s needs a value (see --help)", argv[optind - 1]); return RMX_EXIT_USAGE;
        default: rmx_error("unknown option '%s' (see --help)", argv[optind - 1]); return RMX_EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        rmx_error("expected one CHECKPOINT, got %d arguments (see --help)", argc - optind);
        return RMX_EXIT_USAGE;
    }
    c->checkpoint = argv[optind];
    const char *missing = !c->original ? "--original A" : !c->style ? "--style B" : !c->out ? "-o OUT.wav" : NULL;
    if (missing) {
        rmx_error("%s is required (see --help)", missing);
        return RMX_EXIT_USAGE;
    }
    return -1;
}

/* The remix of a batch of segments, between the encoder and the decoder. */
typedef struct {
    rmx_diffusion_ckpt *m;
    const cli *c;
    const float *style; /* backend [1, C, H, W], scaled */
    float *styles;      /* backend [batch, C, H, W]: the style for each segment of a batch */
    size_t per;
    int steps_run;
} remix_pass;

static void remix_segments(void *arg, int n, int64_t first, float *z) {
    remix_pass *r = arg;
    if (r->c->strength <= 0) return; /* the original through the autoencoder, bit for bit */
    rmx_backend *be = rmx_ae_backend(r->m->fae.ae);
    for (int i = 0; i < n; i++) be->copy(be, r->styles + (size_t)i * r->per, r->style, sizeof(float) * r->per);
    be->scale(be, r->per * (size_t)n, r->m->latent_scale, z);
    int64_t keys[64];
    for (int i = 0; i < n; i++) keys[i] = first + i;
    rmx_style_eps ctx;
    rmx_eps_model model = rmx_dit_style_eps_model(r->m->dit, n, r->styles, &ctx);
    rmx_ddim_config dc = {.steps = r->c->steps, .cfg = (float)r->c->style_scale, .seed = r->c->seed, .keys = keys};
    r->steps_run = rmx_remix_sample(&model, &r->m->sched, &dc, n, (float)r->c->strength, z);
    rmx_style_eps_free(&ctx);
    be->scale(be, r->per * (size_t)n, 1.0f / r->m->latent_scale, z);
}

/* One segment of B's normalised mel from `offset` frames on (the last one when B ends sooner),
 * padded with `pad` when B is shorter than a segment: seg [M][T]. */
static void style_segment(const rmx_infer_audio *b, const rmx_mel_params *p, int T, int64_t offset, float pad,
                          float *seg) {
    const int M = p->n_mels;
    if (offset > b->frames - T) offset = b->frames > T ? b->frames - T : 0;
    for (int m = 0; m < M; m++)
        for (int t = 0; t < T; t++) {
            int64_t f = offset + t;
            seg[(size_t)m * T + t] =
                f < b->frames ? (b->logmel[(size_t)m * b->frames + f] - p->norm_mean) / p->norm_std : pad;
        }
}

static int load_inputs(const cli *c, const rmx_mel_params *p, rmx_infer_audio *a, rmx_infer_audio *b) {
    char err[4096];
    int code = rmx_infer_load_audio(c->original, p, a, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("--original: %s", err);
        return code;
    }
    code = rmx_infer_load_audio(c->style, p, b, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("--style: %s", err);
        rmx_infer_audio_free(a);
    }
    return code;
}

static int write_wav(const cli *c, const rmx_diffusion_ckpt *m, const float *audio, int64_t n, int64_t style_frame,
                     int steps_run) {
    const rmx_mel_params *p = &m->fae.audio;
    char title[256], comment[8192], err[2048];
    snprintf(title, sizeof title, "remix of %s in the style of %s", c->original, c->style);
    snprintf(comment, sizeof comment,
             "remixer-remix %s step %" PRId64 ": original=%s; style=%s; style_offset_frames=%" PRId64
             "; strength=%g; style_scale=%g; steps=%d (run per segment: %d); seed=%" PRIu64
             "; griffin_lim_iterations=%d; sample_rate=%d; n_fft=%d; hop_length=%d; n_mels=%d",
             m->path, m->step, c->original, c->style, style_frame, c->strength, c->style_scale, c->steps, steps_run,
             c->seed, c->iterations, p->sample_rate, p->n_fft, p->hop_length, p->n_mels);
    rmx_wav_options wo;
    rmx_wav_default_options(&wo);
    wo.title = title;
    wo.comment = comment;
    rmx_wav_report rep;
    if (rmx_wav_write(c->out, audio, n, p->sample_rate, &wo, &rep, err, sizeof err) != 0) {
        rmx_error("%s", err);
        return RMX_EXIT_FAILURE;
    }
    printf("wrote %s: %.2f s at %d Hz, 16-bit PCM mono, peak %.1f dBFS\n", c->out, (double)n / p->sample_rate,
           p->sample_rate, rep.peak_dbfs);
    return RMX_EXIT_OK;
}

static int run(const cli *c, rmx_backend *be) {
    char err[4096];
    rmx_diffusion_ckpt m;
    int code = rmx_diffusion_ckpt_load(be, c->checkpoint, 4, RMX_DIT_REMIX, 0, &m, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s", err);
        return code;
    }
    const rmx_mel_params *p = &m.fae.audio;
    const int M = p->n_mels, T = m.fae.hp.frames;
    rmx_infer_audio a, b;
    if ((code = load_inputs(c, p, &a, &b)) != RMX_EXIT_OK) {
        rmx_diffusion_ckpt_free(&m);
        return code;
    }
    const float pad = (logf(p->log_floor) - p->norm_mean) / p->norm_std;
    const int64_t style_frame = (int64_t)llround(c->style_offset * p->sample_rate / p->hop_length);
    float *seg = malloc(sizeof(float) * (size_t)M * T);
    float *x = malloc(sizeof(float) * (size_t)M * a.frames), *y = malloc(sizeof(float) * (size_t)M * a.frames);
    if (!seg || !x || !y) {
        rmx_error("out of memory for %" PRId64 " frames", a.frames);
        return RMX_EXIT_FAILURE;
    }
    style_segment(&b, p, T, style_frame, pad, seg);
    for (int64_t i = 0; i < (int64_t)M * a.frames; i++) x[i] = (a.logmel[i] - p->norm_mean) / p->norm_std;

    int lc, lh, lw;
    rmx_ae_latent_shape(m.fae.ae, &lc, &lh, &lw);
    const int batch = 4;
    remix_pass rp = {.m = &m, .c = c, .per = (size_t)lc * lh * lw};
    float *dev_seg = be->alloc(be, sizeof(float) * (size_t)M * T);
    float *style = be->alloc(be, sizeof(float) * rp.per);
    rp.styles = be->alloc(be, sizeof(float) * rp.per * batch);
    be->to_backend(be, dev_seg, seg, sizeof(float) * (size_t)M * T);
    rmx_frozen_ae_scaled_latents(&m.fae, 1, dev_seg, m.latent_scale, style);
    rp.style = style;
    printf("%s: %.2f s; style %s from %.2f s; strength %g, style guidance %g, %d DDIM steps, seed %" PRIu64 "\n",
           c->original, (double)a.n / p->sample_rate, c->style, (double)style_frame * p->hop_length / p->sample_rate,
           c->strength, c->style_scale, c->steps, c->seed);
    rmx_infer_bar bar = {0};
    rmx_infer_latent_pass pass = {remix_segments, &rp, "remix"};
    code = rmx_infer_autoencode(&m.fae, x, a.frames, T / 8, batch, pad, &pass, y, rmx_infer_progress, &bar, err,
                                sizeof err) == 0
               ? RMX_EXIT_OK
               : RMX_EXIT_FAILURE;
    if (code != RMX_EXIT_OK) rmx_error("%s: %s", c->checkpoint, err);

    rmx_vocoder *voc = code == RMX_EXIT_OK ? rmx_vocoder_create(p, err, sizeof err) : NULL;
    float *audio = NULL;
    int64_t n = 0;
    if (code == RMX_EXIT_OK) {
        rmx_vocoder_options vo;
        rmx_vocoder_default_options(&vo);
        vo.iterations = c->iterations;
        vo.seed = c->seed;
        vo.threads = c->threads;
        vo.progress = rmx_infer_progress;
        vo.progress_ctx = &bar;
        if (!voc || rmx_vocoder_run(voc, y, a.frames, a.n, &vo, &audio, &n, NULL, err, sizeof err) != 0) {
            rmx_error("vocoder: %s", err);
            code = RMX_EXIT_FAILURE;
        }
        rmx_infer_bar_finish(&bar);
    }
    if (code == RMX_EXIT_OK) code = write_wav(c, &m, audio, n, style_frame, rp.steps_run);
    free(audio);
    rmx_vocoder_free(voc);
    be->free(be, dev_seg);
    be->free(be, style);
    be->free(be, rp.styles);
    free(seg), free(x), free(y);
    rmx_infer_audio_free(&a);
    rmx_infer_audio_free(&b);
    rmx_diffusion_ckpt_free(&m);
    return code;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-remix");
    cli c;
    int code = parse_args(argc, argv, &c);
    if (code >= 0) return code;
    if ((code = rmx_infer_check_output(c.out)) >= 0) return code;
    char err[1024];
    rmx_backend *be = rmx_infer_backend(c.device, c.threads, err, sizeof err);
    if (!be) {
        rmx_error("%s", err);
        return RMX_EXIT_USAGE;
    }
    code = run(&c, be);
    be->destroy(be);
    return code;
}
