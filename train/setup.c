/* remixer-train start-up: config -> data -> schedule -> backend -> stage, and the --dry-run plan.
 * Every rank runs the same checks on the same inputs, so all agree on failing; only rank 0 speaks. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/schedule.h"
#include "train/trainer.h"
#include "util/exitcodes.h"
#include "util/log.h"

static int fail(const rmx_trainer *t, int code, const char *msg) {
    if (t->comm.rank == 0) rmx_error("%s", msg);
    return code;
}

/* device: auto takes CUDA when this build has it and a GPU is visible, else the CPU. */
static int choose_backend(rmx_trainer *t, char *err, size_t errlen) {
    const char *device = t->cfg.device;
    if (strcmp(device, "cpu") != 0) {
        int ordinal = t->comm.local_rank; /* each rank takes the GPU of its local rank */
        t->be = rmx_backend_cuda_create(ordinal, err, errlen);
        if (t->be) return 0;
        if (strcmp(device, "cuda") == 0) {
            char why[2048];
            snprintf(why, sizeof why, "%s", err);
            return rmx_seterr(err, errlen, "%s: device: cuda was asked for, but %s", t->cfg.path, why);
        }
    }
    t->be = rmx_backend_cpu_create(t->cfg.train.threads);
    return 0;
}

static int open_data(rmx_trainer *t, char *err, size_t errlen) {
    if (!t->cfg.data.train[0])
        return rmx_seterr(err, errlen, "%s: data.train: a training dataset is required (a shard folder or glob)",
                          t->cfg.path);
    rmx_on_corrupt on_corrupt =
        strcmp(t->cfg.data.on_corrupt, "skip") == 0 ? RMX_ON_CORRUPT_SKIP : RMX_ON_CORRUPT_STOP;
    t->train = rmx_dataset_open(t->cfg.data.train, err, errlen);
    if (!t->train) return -1;
    rmx_dataset_set_on_corrupt(t->train, on_corrupt);
    if (!t->cfg.data.val[0]) return 0;
    t->val = rmx_dataset_open(t->cfg.data.val, err, errlen);
    if (!t->val) return -1;
    rmx_dataset_set_on_corrupt(t->val, on_corrupt);
    return rmx_dataset_check_compatible(t->train, t->val, err, errlen);
}

static int check_stage(const rmx_trainer *t, char *err, size_t errlen) {
    if (rmx_stage_find(t->cfg.stage)) return 0;
    return rmx_seterr(err, errlen,
                      "%s: stage: '%s' is not trained by this version of remixer-train; the stages are %s",
                      t->cfg.path, t->cfg.stage, rmx_stage_names());
}

static int check_schedule(rmx_trainer *t, char *err, size_t errlen) {
    rmx_schedule_config sc = {t->cfg.train.global_batch, t->cfg.train.micro_batch, t->comm.world,
                              t->comm.rank, t->cfg.train.seed};
    return rmx_schedule_check(&sc, &t->accum_steps, err, errlen);
}

int rmx_trainer_setup(rmx_trainer *t, const char *config_path, const char *const *overrides,
                      int n_overrides) {
    char err[2048];
    if (rmx_config_load(&t->cfg, config_path, overrides, n_overrides, err, sizeof err) != 0)
        return fail(t, RMX_EXIT_USAGE, err);
    if (check_stage(t, err, sizeof err) != 0 || check_schedule(t, err, sizeof err) != 0)
        return fail(t, RMX_EXIT_USAGE, err);
    if (open_data(t, err, sizeof err) != 0) return fail(t, RMX_EXIT_DATA, err);
    if (choose_backend(t, err, sizeof err) != 0) return fail(t, RMX_EXIT_USAGE, err);
    int code = rmx_stage_find(t->cfg.stage)->create(t, &t->stage, err, sizeof err);
    if (code != RMX_EXIT_OK) return fail(t, code, err);
    const rmx_config *c = &t->cfg;
    snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s", c->checkpoint.dir[0] ? c->checkpoint.dir : c->run.dir);
    t->ckpt_step = -1;
    return RMX_EXIT_OK;
}

static double mib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* Names the newest checkpoint without reading it: verifying reads every tensor, which the plan
 * leaves to the real start. */
static void print_checkpoint_plan(const rmx_trainer *t) {
    const rmx_config *c = &t->cfg;
    char when[64] = "at the end";
    if (c->checkpoint.every > 0)
        snprintf(when, sizeof when, "every %" PRId64 " steps and at the end", c->checkpoint.every);
    printf("  checkpoints    %s, newest %d kept, in %s\n", when, c->checkpoint.keep, t->ckpt_dir);
    rmx_ckpt_file *files;
    int n = rmx_ckpt_list(t->ckpt_dir, &files);
    if (strcmp(c->checkpoint.resume, "auto") != 0)
        printf("  resume         %s\n", c->checkpoint.resume);
    else if (n > 0)
        printf("  resume         auto: newest is %s (verified when training starts)\n", files[0].path);
    else
        printf("  resume         auto: no checkpoint yet, training starts at step 0\n");
    free(files);
}

void rmx_trainer_print_plan(const rmx_trainer *t) {
    if (t->comm.rank != 0) return;
    const rmx_config *c = &t->cfg;
    const rmx_mel_params *mp = rmx_dataset_params(t->train);
    int64_t n = rmx_dataset_length(t->train);
    double epochs = (double)c->train.steps * (double)c->train.global_batch / (double)n;
    printf("plan for %s (stage %s, device %s)\n", c->path, c->stage, t->be->name);
    printf("  ranks          %d (%d on this node), %d OpenMP threads each requested (0 = default)\n",
           t->comm.world, t->comm.local_size, c->train.threads);
    printf("  train data     %s: %" PRId64 " segments of %d mels x %d frames in %d shards, %d genres\n",
           c->data.train, n, mp->n_mels, mp->segment_frames, rmx_dataset_shard_count(t->train),
           mp->n_genres);
    if (t->val)
        printf("  val data       %s: %" PRId64 " segments in %d shards\n", c->data.val,
               rmx_dataset_length(t->val), rmx_dataset_shard_count(t->val));
    printf("  batches        global %d = %d ranks x %d accumulation steps x micro-batch %d\n",
           c->train.global_batch, t->comm.world, t->accum_steps, c->train.micro_batch);
    printf("  steps          %" PRId64 " (%.2f epochs, %.1f steps per epoch)\n", c->train.steps, epochs,
           (double)n / (double)c->train.global_batch);
    t->stage->ops->print_plan(t->stage, t);
    printf("  memory/rank    %.1f MiB parameters, optimiser state and activations (micro-batch %d)\n",
           mib(t->stage->memory_bytes), c->train.micro_batch);
    printf("  run folder     %s\n", c->run.dir);
    print_checkpoint_plan(t);
}
