/* remixer-train: trains the model a config describes, data-parallel over MPI ranks.
 *   mpirun -np 2 remixer-train configs/demo-vae.yaml [--set key.path=value ...] [--dry-run] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/signals.h"
#include "train/trainer.h"
#include "util/exitcodes.h"
#include "util/log.h"

#define MAX_OVERRIDES 128

static void usage(FILE *f) {
    fputs("usage: remixer-train CONFIG [options]\n"
          "  Trains the stage the config names (stage: vae) on the ranks mpirun starts.\n\n"
          "options:\n"
          "  --set KEY=VALUE   override one config key (repeatable), e.g. --set train.steps=500\n"
          "  --dry-run         check config and data, print the plan (ranks, batches, parameters,\n"
          "                    memory), and exit without training\n"
          "  --print-config    print the resolved config with each key's documentation and exit\n"
          "  --help-config     print every config key, its type, range and default, and exit\n"
          "  -h, --help        this text\n\n"
          "checkpoints: ckpt-<step>.h5 in checkpoint.dir (default run.dir) every checkpoint.every\n"
          "  steps and at the end; checkpoint.resume auto|never|PATH picks what a start resumes from.\n"
          "  SIGTERM, SIGINT or SIGUSR1 (what mpirun passes on) stops the ranks at the next step,\n"
          "  after rank 0 has saved a checkpoint; the run then exits 75.\n\n"
          "exit codes: 0 finished, 1 runtime failure, 2 usage or config error, 3 data error,\n"
          "            4 checkpoint refused, 75 preempted after saving a checkpoint (start again)\n",
          f);
}

typedef struct {
    const char *config;
    const char *overrides[MAX_OVERRIDES];
    int n_overrides;
    int dry_run, print_config;
} cli;

/* Returns -1 to continue, or an exit code. */
static int parse_args(int argc, char **argv, cli *c, int rank) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (rank == 0) usage(stdout);
            return RMX_EXIT_OK;
        } else if (!strcmp(a, "--help-config")) {
            if (rank == 0) rmx_config_print_schema(stdout);
            return RMX_EXIT_OK;
        } else if (!strcmp(a, "--dry-run")) {
            c->dry_run = 1;
        } else if (!strcmp(a, "--print-config")) {
            c->print_config = 1;
        } else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
            const char *kv = a[5] == '=' ? a + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!kv) {
                if (rank == 0) rmx_error("--set needs KEY=VALUE");
                return RMX_EXIT_USAGE;
            }
            if (c->n_overrides == MAX_OVERRIDES) {
                if (rank == 0) rmx_error("more than %d --set options", MAX_OVERRIDES);
                return RMX_EXIT_USAGE;
            }
            c->overrides[c->n_overrides++] = kv;
        } else if (a[0] == '-') {
            if (rank == 0) rmx_error("unknown option '%s' (see --help)", a);
            return RMX_EXIT_USAGE;
        } else if (c->config) {
            if (rank == 0) rmx_error("one config file expected, got '%s' and '%s'", c->config, a);
            return RMX_EXIT_USAGE;
        } else {
            c->config = a;
        }
    }
    if (!c->config) {
        if (rank == 0) usage(stderr);
        return RMX_EXIT_USAGE;
    }
    return -1;
}

static int print_config(const cli *c, int rank) {
    rmx_config cfg;
    char err[2048];
    if (rmx_config_load(&cfg, c->config, c->overrides, c->n_overrides, err, sizeof err) != 0) {
        if (rank == 0) rmx_error("%s", err);
        return RMX_EXIT_USAGE;
    }
    if (rank == 0) rmx_config_print(&cfg, stdout);
    rmx_config_free(&cfg);
    return RMX_EXIT_OK;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-train");
    static rmx_trainer t; /* large; zero-initialised */
    rmx_comm_init(&t.comm, &argc, &argv);
    rmx_signals_install(); /* after MPI_Init: ours replace any handler the MPI library set */
    cli c = {0};
    int code = parse_args(argc, argv, &c, t.comm.rank);
    if (code < 0 && c.print_config) code = print_config(&c, t.comm.rank);
    if (code < 0) {
        code = rmx_trainer_setup(&t, c.config, c.overrides, c.n_overrides);
        if (code == RMX_EXIT_OK && c.dry_run) rmx_trainer_print_plan(&t);
        else if (code == RMX_EXIT_OK) code = rmx_trainer_run(&t);
    }
    rmx_trainer_free(&t);
    rmx_comm_finalize(&t.comm);
    return code;
}
