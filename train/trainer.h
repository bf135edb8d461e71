/* The training loop of remixer-train: one object per rank holding the run's pieces (config,
 * ranks, backend, data, model, logs, checkpoints), a plan printed by --dry-run, and the loop
 * itself. */
#ifndef RMX_TRAINER_H
#define RMX_TRAINER_H

#include <stdint.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "train/checkpoint.h"
#include "train/comm.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/reducer.h"
#include "train/stage.h"
#include "util/progress.h"

struct rmx_trainer {
    rmx_config cfg;
    rmx_comm comm;
    rmx_backend *be;
    rmx_dataset *train, *val;
    rmx_stage *stage;     /* the objective (train/stage.h) */
    int accum_steps;      /* A = B / (W m) */
    int64_t start_step;   /* 0, or the step a resumed run continues from */
    int64_t step;         /* next step to run */

    /* backend buffers of one step */
    float *loss_terms;    /* [stage->n_terms], summed over the step's micro-batches */
    float *grad_sumsq;    /* [1] */

    rmx_loader *loader;
    rmx_reducer *reducer;  /* bucketed gradient all-reduce (train/reducer.h) */
    struct rmx_nccl *nccl; /* GPU ranks: NCCL for every reduction (train/comm_nccl.h), else NULL */
    rmx_metrics metrics;
    rmx_progress bar;     /* rank 0, on a terminal; cleared before any line is printed */
    int nonfinite_in_row;
    int64_t nonfinite_total;

    /* checkpoints (train/checkpoint.h) and preemption (train/signals.h) */
    char ckpt_dir[RMX_PATH_MAX];  /* checkpoint.dir, or run.dir when that is empty */
    rmx_ckpt_writer *ckpt;        /* rank 0 */
    int64_t ckpt_step;            /* the newest checkpoint known to be on disk in ckpt_dir, or -1 */
    char ckpt_path[RMX_CKPT_PATH_MAX];
    char resumed_from[RMX_CKPT_PATH_MAX]; /* the checkpoint this run resumed from, or empty */
    int stop_signal;              /* the signal the ranks agreed to stop on, or 0 */
};

/* Everything up to (not including) the resume, the data loader and the logs: config -> ranks ->
 * data -> schedule check -> backend -> the stage (its models and checkpoint layout). Returns an exit code
 * (RMX_EXIT_OK on success) after printing the message on rank 0. */
int rmx_trainer_setup(rmx_trainer *t, const char *config_path, const char *const *overrides,
                      int n_overrides);
/* The --dry-run plan on rank 0: world, batches, parameters, memory, checkpoints. */
void rmx_trainer_print_plan(const rmx_trainer *t);
/* Resumes (checkpoint.resume), then trains to train.steps with periodic and final checkpoints;
 * returns the process exit code: RMX_EXIT_PREEMPTED after a stop signal and its checkpoint. */
int rmx_trainer_run(rmx_trainer *t);
void rmx_trainer_free(rmx_trainer *t);

/* Sums a small backend buffer (loss scalars, vq statistics) over the ranks, in place: NCCL on
 * device memory between GPU ranks, MPI on the host memory of the CPU backends. Collective. */
void rmx_trainer_sum_floats(rmx_trainer *t, float *backend_buf, size_t n);

#endif
