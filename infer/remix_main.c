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
#include "infer/remixer.h"
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
    "  --strength S          how far A is noised before it is redrawn, 0 (unchanged) .. 1 [0.5]\n"
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
    "            truncated, shorter than one STFT window), 4 checkpoint refused (missing, damaged,\n"
    "            not of stage remix)\n";

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
    rmx_remix_options defaults;
    rmx_remix_default_options(&defaults);
    *c = (cli){.device = "auto", .strength = defaults.strength, .style_scale = defaults.style_scale,
               .steps = defaults.steps, .iterations = defaults.iterations};
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

/* One input decoded and long enough: RMX_EXIT_OK, or the exit code after saying why. */
static int load_input(const char *opt, const char *path, const rmx_mel_params *p, rmx_infer_audio *x) {
    char err[4096];
    int code = rmx_infer_load_audio(path, p, x, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s: %s", opt, err);
        return code;
    }
    if (rmx_remix_check_length(p, x, err, sizeof err) != 0) {
        rmx_error("%s: %s: %s", opt, path, err);
        rmx_infer_audio_free(x);
        return RMX_EXIT_DATA;
    }
    return RMX_EXIT_OK;
}

static int load_inputs(const cli *c, const rmx_diffusion_ckpt *m, rmx_infer_audio *a, rmx_infer_audio *b) {
    int code = load_input("--original", c->original, &m->fae.audio, a);
    if (code != RMX_EXIT_OK) return code;
    if ((code = load_input("--style", c->style, &m->fae.audio, b)) != RMX_EXIT_OK) {
        rmx_infer_audio_free(a);
        return code;
    }
    if (rmx_remix_style_is_padded(m, b))
        rmx_warn("--style: %s is shorter than one segment (%.2f s of %.2f s): the rest of its segment is silence",
                 c->style, (double)b->n / m->fae.audio.sample_rate,
                 (double)m->fae.hp.frames * m->fae.audio.hop_length / m->fae.audio.sample_rate);
    return RMX_EXIT_OK;
}

static int write_wav(const cli *c, const rmx_diffusion_ckpt *m, const rmx_remix_options *o, const float *audio,
                     int64_t n, const rmx_remix_facts *f) {
    const rmx_mel_params *p = &m->fae.audio;
    char title[256], comment[8192], err[2048];
    rmx_remix_wav_text(m, o, c->original, c->style, f, title, sizeof title, comment, sizeof comment);
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

/* The original through the model and the vocoder, then the file. */
static int remix(const cli *c, rmx_diffusion_ckpt *m, const rmx_infer_audio *a, const rmx_infer_audio *b) {
    const rmx_mel_params *p = &m->fae.audio;
    rmx_remix_options o = {.strength = c->strength, .style_scale = c->style_scale, .style_offset = c->style_offset,
                           .steps = c->steps, .iterations = c->iterations, .threads = c->threads, .seed = c->seed};
    rmx_remix_facts f;
    char err[4096];
    float *y = malloc(sizeof(float) * (size_t)p->n_mels * a->frames), *audio = NULL;
    if (!y) {
        rmx_error("out of memory for %" PRId64 " frames", a->frames);
        return RMX_EXIT_FAILURE;
    }
    printf("%s: %.2f s; style %s from %.2f s; strength %g, style guidance %g, %d DDIM steps, seed %" PRIu64 "\n",
           c->original, (double)a->n / p->sample_rate, c->style,
           (double)llround(c->style_offset * p->sample_rate / p->hop_length) * p->hop_length / p->sample_rate,
           c->strength, c->style_scale, c->steps, c->seed);
    rmx_infer_bar bar = {0};
    int64_t n = 0;
    int code = RMX_EXIT_OK;
    if (rmx_remix_mel(m, a, b, &o, rmx_infer_progress, &bar, y, &f, err, sizeof err) != 0) {
        rmx_error("%s: %s", c->checkpoint, err);
        code = RMX_EXIT_FAILURE;
    } else {
        if (rmx_remix_vocode(p, y, a->frames, a->n, &o, rmx_infer_progress, &bar, &audio, &n, err, sizeof err) != 0) {
            rmx_error("%s", err);
            code = RMX_EXIT_FAILURE;
        }
        rmx_infer_bar_finish(&bar);
    }
    if (code == RMX_EXIT_OK) code = write_wav(c, m, &o, audio, n, &f);
    free(audio);
    free(y);
    return code;
}

static int run(const cli *c, rmx_backend *be) {
    char err[4096];
    rmx_diffusion_ckpt m;
    int code = rmx_diffusion_ckpt_load(be, c->checkpoint, 4, RMX_DIT_REMIX, 0, &m, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s", err);
        return code;
    }
    rmx_infer_audio a, b;
    if ((code = load_inputs(c, &m, &a, &b)) == RMX_EXIT_OK) {
        code = remix(c, &m, &a, &b);
        rmx_infer_audio_free(&a);
        rmx_infer_audio_free(&b);
    }
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
