/* remixer-prep: audio folder or CSV -> sharded HDF5 log-mel dataset; --demo makes its own audio. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/demo.h"
#include "data/mel.h"
#include "data/prep.h"
#include "util/exitcodes.h"
#include "util/log.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define MAX_MISSING STRINGIFY(RMX_AUDIO_MAX_MISSING_SECONDS)

static const char USAGE[] =
    "usage: remixer-prep [options] INPUT OUTDIR\n"
    "       remixer-prep [options] --demo OUTDIR\n"
    "\n"
    "Turns audio into a sharded HDF5 log-mel dataset: OUTDIR/train/shard-NNNNN.h5 and\n"
    "OUTDIR/val/shard-NNNNN.h5. INPUT is a folder in the GTZAN layout, INPUT/<genre>/*.wav|flac|ogg|mp3\n"
    "(genres are the sub-folder names), or a CSV file of 'path,genre' lines (header optional; relative\n"
    "paths are relative to the CSV's folder). Each file is decoded (libsndfile), mixed down to mono,\n"
    "resampled (libsoxr), turned into a log-mel spectrogram (Hann window, centred frames, Slaney mel\n"
    "filterbank, log(max(mel, floor))), cut into segments of --segment frames (the tail is dropped) and\n"
    "normalised with the mean and std of the train split. Unusable files are skipped with a warning;\n"
    "a file whose header states at most " MAX_MISSING " s more audio than decodes is kept, with a warning\n"
    "naming the frames missing (more than " MAX_MISSING " s missing: skipped as truncated or corrupt).\n"
    "The same input and options give byte-identical shards for any --threads and any number of MPI\n"
    "ranks (mpirun -np N remixer-prep ...: each rank prepares and writes its share of the shards).\n"
    "\n"
    "options (default in brackets):\n"
    "  --sample-rate HZ     resample to HZ [22050]\n"
    "  --n-fft N            FFT size = Hann window length, even [2048]\n"
    "  --hop N              hop between frames, in samples [256]\n"
    "  --mels M             mel bands [128]\n"
    "  --fmin HZ            lowest mel band edge [0]\n"
    "  --fmax HZ            highest mel band edge [sample rate / 2]\n"
    "  --log-floor X        mel power floor before the natural log [1e-5]\n"
    "  --segment T          frames per segment [256, about 3 s]\n"
    "  --val-fraction F     share of each genre's files held out for validation, by file [0.1];\n"
    "                       a genre with 2 or more files gets at least one val and one train file\n"
    "  --shards N           train shards (fewer when there are fewer train files) [4]\n"
    "  --val-shards N       val shards [max(1, shards / 4)]\n"
    "  --threads N          threads per rank [CPUs available / ranks on the node]\n"
    "  --seed N             picks the val files, and the demo audio [0]\n"
    "  --force              replace a dataset already in OUTDIR (otherwise refused); the old\n"
    "                       folders are swapped out by rename once the new ones are complete\n"
    "  --demo               synthesise the demo audio into OUTDIR/audio/<genre>/ (4 genres x 10\n"
    "                       files x 12 s) and prepare it into OUTDIR; implies --force\n"
    "  -h, --help           show this help\n"
    "\n"
    "exit status: 0 done, 1 I/O failure, 2 bad options, INPUT or OUTDIR (also: an earlier dataset\n"
    "without --force), 3 no usable audio (every file skipped).\n";

typedef struct {
    rmx_prep_options prep;
    int demo;
    int fmax_given, val_shards_given, threads_given;
    const char *input, *outdir;
} cli;

static int parse_int(const char *opt, const char *arg, int *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < -2147483647L || v > 2147483647L)
        return rmx_seterr(err, errlen, "%s: expected an integer, got '%s'", opt, arg);
    *out = (int)v;
    return 0;
}

static int parse_double(const char *opt, const char *arg, double *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !isfinite(v))
        return rmx_seterr(err, errlen, "%s: expected a number, got '%s'", opt, arg);
    *out = v;
    return 0;
}

static int parse_seed(const char *arg, uint64_t *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-')
        return rmx_seterr(err, errlen, "--seed: expected a non-negative integer, got '%s'", arg);
    *out = (uint64_t)v;
    return 0;
}

enum {
    OPT_SAMPLE_RATE = 256,
    OPT_N_FFT,
    OPT_HOP,
    OPT_MELS,
    OPT_FMIN,
    OPT_FMAX,
    OPT_LOG_FLOOR,
    OPT_SEGMENT,
    OPT_VAL_FRACTION,
    OPT_SHARDS,
    OPT_VAL_SHARDS,
    OPT_THREADS,
    OPT_SEED,
    OPT_FORCE,
    OPT_DEMO
};

static const struct option LONG_OPTIONS[] = {
    {"sample-rate", required_argument, NULL, OPT_SAMPLE_RATE},
    {"n-fft", required_argument, NULL, OPT_N_FFT},
    {"hop", required_argument, NULL, OPT_HOP},
    {"mels", required_argument, NULL, OPT_MELS},
    {"fmin", required_argument, NULL, OPT_FMIN},
    {"fmax", required_argument, NULL, OPT_FMAX},
    {"log-floor", required_argument, NULL, OPT_LOG_FLOOR},
    {"segment", required_argument, NULL, OPT_SEGMENT},
    {"val-fraction", required_argument, NULL, OPT_VAL_FRACTION},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"val-shards", required_argument, NULL, OPT_VAL_SHARDS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"seed", required_argument, NULL, OPT_SEED},
    {"force", no_argument, NULL, OPT_FORCE},
    {"demo", no_argument, NULL, OPT_DEMO},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* One option's value into the options; returns -1 with a message naming the option. */
static int apply_option(cli *c, int id, const char *name, const char *arg, char *err, size_t errlen) {
    rmx_mel_params *a = &c->prep.audio;
    double d = 0.0;
    switch (id) {
    case OPT_SAMPLE_RATE: return parse_int(name, arg, &a->sample_rate, err, errlen);
    case OPT_N_FFT: return parse_int(name, arg, &a->n_fft, err, errlen);
    case OPT_HOP: return parse_int(name, arg, &a->hop_length, err, errlen);
    case OPT_MELS: return parse_int(name, arg, &a->n_mels, err, errlen);
    case OPT_SEGMENT: return parse_int(name, arg, &a->segment_frames, err, errlen);
    case OPT_SHARDS: return parse_int(name, arg, &c->prep.train_shards, err, errlen);
    case OPT_VAL_SHARDS:
        c->val_shards_given = 1;
        return parse_int(name, arg, &c->prep.val_shards, err, errlen);
    case OPT_THREADS: c->threads_given = 1; return parse_int(name, arg, &c->prep.threads, err, errlen);
    case OPT_SEED: return parse_seed(arg, &c->prep.seed, err, errlen);
    case OPT_VAL_FRACTION: return parse_double(name, arg, &c->prep.val_fraction, err, errlen);
    case OPT_FORCE: c->prep.force = 1; return 0;
    case OPT_DEMO: c->demo = 1; return 0;
    default: break;
    }
    if (parse_double(name, arg, &d, err, errlen) != 0) return -1;
    if (id == OPT_FMIN) a->fmin = (float)d;
    if (id == OPT_FMAX) {
        a->fmax = (float)d;
        c->fmax_given = 1;
    }
    if (id == OPT_LOG_FLOOR) a->log_floor = (float)d;
    return 0;
}

enum { CLI_RUN, CLI_HELP, CLI_BAD };

static int positional_error(const cli *c, char *err, size_t errlen) {
    if (c->demo) return rmx_seterr(err, errlen, "--demo takes one argument, OUTDIR (see --help)");
    return rmx_seterr(err, errlen, "expected INPUT and OUTDIR (see --help)");
}

/* Fills in what the user left to the defaults that depend on other options. */
static void derive_defaults(cli *c) {
    if (!c->fmax_given) c->prep.audio.fmax = c->prep.audio.sample_rate / 2.0f;
    if (!c->val_shards_given)
        c->prep.val_shards = c->prep.train_shards / 4 > 1 ? c->prep.train_shards / 4 : 1;
    if (c->demo) c->prep.force = 1;
}

/* CLI_RUN, CLI_HELP, or CLI_BAD with a message (every option is checked here, before any work). */
static int parse_cli(int argc, char **argv, cli *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    rmx_prep_default_options(&c->prep);
    opterr = 0;
    int id, index = 0;
    while ((id = getopt_long(argc, argv, ":h", LONG_OPTIONS, &index)) != -1) {
        if (id == 'h') return CLI_HELP;
        if (id == '?') {
            rmx_seterr(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
            return CLI_BAD;
        }
        if (id == ':') {
            rmx_seterr(err, errlen, "option '%s' needs a value", argv[optind - 1]);
            return CLI_BAD;
        }
        char name[64];
        snprintf(name, sizeof name, "--%s", LONG_OPTIONS[index].name);
        if (apply_option(c, id, name, optarg, err, errlen) != 0) return CLI_BAD;
    }
    if (argc - optind != (c->demo ? 1 : 2)) {
        positional_error(c, err, errlen);
        return CLI_BAD;
    }
    c->input = c->demo ? NULL : argv[optind];
    c->outdir = argv[argc - 1];
    derive_defaults(c);
    return rmx_prep_check_options(&c->prep, err, errlen) == 0 ? CLI_RUN : CLI_BAD;
}

/* CPUs this process may run on, shared among the ranks on the same node. */
static int default_threads(void) {
    cpu_set_t set;
    int cpus =
        sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    MPI_Comm node;
    int local = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &local);
        MPI_Comm_free(&node);
    }
    int t = cpus / (local > 0 ? local : 1);
    return t < 1 ? 1 : t > 1024 ? 1024 : t;
}

/* `complete` is 0 when nothing was written: then only the file counts are worth showing. */
static void print_summary(const rmx_prep_summary *s, const rmx_prep_options *o, const char *outdir,
                          int complete) {
    int skipped = 0;
    for (int r = 1; r < RMX_SKIP_COUNT; r++) skipped += s->files_skipped[r];
    printf("remixer-prep: %d files listed, %d read, %d skipped", s->files_listed, s->files_used, skipped);
    for (int r = 1, first = 1; r < RMX_SKIP_COUNT; r++) {
        if (!s->files_skipped[r]) continue;
        printf("%s%d %s", first ? " (" : ", ", s->files_skipped[r], rmx_prep_skip_name(r));
        first = 0;
    }
    printf("%s\n", skipped ? ")" : "");
    if (s->files_short)
        printf("  short: %d files kept with %.2f s less audio than their headers state (at most %d s each)\n",
               s->files_short, s->seconds_missing, RMX_AUDIO_MAX_MISSING_SECONDS);
    if (!complete) return;
    printf("  audio: %.3f h read (%.1f s), %.3f h in %lld segments of %d frames\n", s->seconds_read / 3600.0,
           s->seconds_read, s->seconds_segmented / 3600.0, (long long)(s->train_segments + s->val_segments),
           o->audio.segment_frames);
    printf("  train: %d files, %lld segments, %d shards in %s/train\n", s->train_files,
           (long long)s->train_segments, s->train_shards, outdir);
    printf("  val:   %d files, %lld segments, %d shards in %s/val\n", s->val_files,
           (long long)s->val_segments, s->val_shards, outdir);
    for (int g = 0; g < s->n_genres; g++)
        printf("  genre %-16s train %6lld  val %6lld segments\n", s->genre_names[g],
               (long long)s->genre_train_segments[g], (long long)s->genre_val_segments[g]);
    printf("  normalisation: mean %.6g, std %.6g (train log-mel)\n", (double)s->norm_mean,
           (double)s->norm_std);
    printf("  time: %.2f s\n", s->elapsed_s);
}

static int run(const cli *c, int rank, int world, char *err, size_t errlen) {
    char audio_dir[4096];
    const char *input = c->input;
    if (c->demo) {
        snprintf(audio_dir, sizeof audio_dir, "%s/audio", c->outdir);
        int rc = rmx_demo_write_audio(audio_dir, c->prep.seed, rank, world, c->prep.threads, err, errlen);
        int worst = rc != 0;
        MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (worst) return RMX_EXIT_FAILURE;
        input = audio_dir;
    }
    rmx_prep_summary summary;
    int code = rmx_prep_run(input, c->outdir, &c->prep, MPI_COMM_WORLD, &summary, err, errlen);
    if (rank == 0 && (code == RMX_EXIT_OK || (code == RMX_EXIT_DATA && summary.files_listed > 0)))
        print_summary(&summary, &c->prep, c->outdir, code == RMX_EXIT_OK);
    return code;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-prep");
    int provided = 0, rank = 0, world = 1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    cli c;
    char err[8192] = "";
    int parsed = parse_cli(argc, argv, &c, err, sizeof err), code = RMX_EXIT_OK;
    if (parsed == CLI_HELP) {
        if (rank == 0) fputs(USAGE, stdout);
    } else if (parsed == CLI_BAD) {
        if (rank == 0) rmx_error("%s", err); /* every rank parsed the same arguments */
        code = RMX_EXIT_USAGE;
    } else {
        if (!c.threads_given) c.prep.threads = default_threads();
        code = run(&c, rank, world, err, sizeof err);
        if (code != RMX_EXIT_OK && err[0]) rmx_error("%s", err);
    }
    MPI_Finalize();
    return code;
}
