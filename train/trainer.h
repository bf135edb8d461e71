/* The training loop of remixer-train: one object per rank holding the run's pieces (config,
 * ranks, backend, data, model, logs), a plan printed by --dry-run, and the loop itself. */
#ifndef RMX_TRAINER_H
#define RMX_TRAINER_H

#include <stdint.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "kernels/backend.h"
#include "model/autoencoder.h"
#include "train/comm.h"
#include "train/config.h"
#include "train/metrics.h"

typedef struct {
    rmx_config cfg;
    rmx_comm comm;
    rmx_backend *be;
    rmx_dataset *train, *val;
    rmx_ae_hparams hp;
    rmx_ae *ae;
    int accum_steps;      /* A = B / (W m) */
    int64_t start_step;   /* 0, or the step a resumed run continues from */
    int64_t step;         /* next step to run */

    /* backend buffers of one micro-batch */
    float *x;             /* [m, 1, M, T] */
    float *loss_terms;    /* [RMX_AE_N_LOSS], summed over the step's micro-batches */
    float *grad_sumsq;    /* [1] */

    rmx_loader *loader;
    rmx_metrics metrics;
    int nonfinite_in_row;
    int64_t nonfinite_total;
} rmx_trainer;

/* Everything up to (not including) the data loader and the logs: config -> ranks -> data ->
 * schedule check -> backend -> model. Returns an exit code (RMX_EXIT_OK on success) after
 * printing the message on rank 0. */
int rmx_trainer_setup(rmx_trainer *t, const char *config_path, const char *const *overrides,
                      int n_overrides);
/* The --dry-run plan on rank 0: world, batches, parameters, memory. */
void rmx_trainer_print_plan(const rmx_trainer *t);
/* Trains to train.steps; returns the process exit code. */
int rmx_trainer_run(rmx_trainer *t);
void rmx_trainer_free(rmx_trainer *t);

#endif
