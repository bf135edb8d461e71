/* The training loop: per step, A micro-batches of forward + backward accumulate gradients, the
 * ranks sum them, non-finite steps are skipped, the global norm is clipped, AdamW updates.
 * Around it: the resume at the start, checkpoints every checkpoint.every steps and at the end, and
 * the stop on a signal (train/signals.h) with a checkpoint and exit 75.
 *
 * Exact resume: what a step does is a function of the model, Adam's m and v, the vq state, the
 * non-finite counters (all in the checkpoint) and of the step number alone: the learning rate
 * (rmx_lr_at), the data (the loader starts at start_step; data/schedule.h), the noise and the vq
 * restarts (keyed by seed, step and global sample index), AdamW's t = step + 1. */
#include "train/trainer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef RMX_HAVE_NCCL
#include "kernels/cuda/cuda_backend.h"
#include "train/comm_nccl.h"
#endif
#include "train/schedule_lr.h"
#include "train/signals.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/progress.h"

void rmx_trainer_sum_floats(rmx_trainer *t, float *backend_buf, size_t n) {
#ifdef RMX_HAVE_NCCL
    if (t->nccl) {
        rmx_nccl_sum_floats(t->nccl, backend_buf, n);
        return;
    }
#endif
    rmx_comm_sum_floats(&t->comm, backend_buf, n);
}

/* Gradient buckets of 512 Ki floats (2 MiB): the bench-size autoencoder's 1.6 M parameters make
 * four, so the first ones are summed while the backward pass is still in the encoder. */
#define GRAD_BUCKET_FLOATS ((size_t)1 << 19)

/* NCCL between GPU ranks, MPI between CPU ranks, nothing for one rank. Collective. */
static int start_reduction(rmx_trainer *t, char *err, size_t errlen) {
    (void)err, (void)errlen; /* only NCCL's start-up can fail */
    rmx_reduce_transport transport, *use = NULL;
    if (t->comm.world > 1) {
#ifdef RMX_HAVE_NCCL
        if (rmx_comm_max_int(&t->comm, rmx_backend_is_cuda(t->be))) {
            t->nccl = rmx_nccl_create(&t->comm, t->be, err, errlen);
            if (!t->nccl) return -1;
            transport = rmx_nccl_reduce_transport(t->nccl);
        } else
#endif
            transport = rmx_reduce_transport_mpi(t->comm.world_comm);
        use = &transport;
    }
    t->reducer = rmx_reducer_create(t->stage->trained, GRAD_BUCKET_FLOATS, use);
    t->stage->ops->set_grad_ready(t->stage, rmx_reducer_hook, t->reducer);
    return 0;
}

static int start_logs(rmx_trainer *t, char *err, size_t errlen) {
    if (t->comm.rank != 0) return 0;
    if (rmx_mkdirs(t->cfg.run.dir, err, errlen) != 0) return -1;
    return rmx_metrics_open(&t->metrics, t->cfg.run.dir, t->start_step, err, errlen);
}

static int start_loader(rmx_trainer *t, char *err, size_t errlen) {
    rmx_loader_config lc = {
        .schedule = {t->cfg.train.global_batch, t->cfg.train.micro_batch, t->comm.world, t->comm.rank,
                     t->cfg.train.seed},
        .start_step = t->start_step,
        .depth = t->cfg.data.prefetch,
    };
    t->loader = rmx_loader_create(t->train, &lc, err, errlen);
    return t->loader ? 0 : -1;
}

static void alloc_step_buffers(rmx_trainer *t) {
    /* room for the evaluation's terms too (train/evaluate.h), which may be more than a step's */
    t->loss_terms = t->be->alloc(t->be, sizeof(float) * RMX_METRICS_MAX_TERMS);
    t->grad_sumsq = t->be->alloc(t->be, sizeof(float));
}

/* What each rank brings to the step boundary's all-reduce (MAX): 0 to go on, the number of a stop
 * signal it received, or STEP_DATA_ERROR, which outranks a stop. */
enum { STEP_DATA_ERROR = 1 << 16 };

/* The step boundary: the ranks agree to go on, or on why not, before the last micro-batch, whose
 * backward pass starts the gradient all-reduces. So one rank's data error stops every rank instead
 * of leaving the others waiting in a collective, and a stop signal on any rank stops all of them
 * before anything of this step is applied. Returns 0, or the agreed exit code. */
static int agree_to_go_on(rmx_trainer *t, int data_error) {
    int verdict = rmx_comm_max_int(&t->comm, data_error ? STEP_DATA_ERROR : rmx_signals_pending());
    if (verdict == STEP_DATA_ERROR) return RMX_EXIT_DATA;
    if (verdict != 0) {
        t->stop_signal = verdict;
        return RMX_EXIT_PREEMPTED;
    }
    return 0;
}

/* Forward + backward over this rank's A micro-batches, the gradient buckets summed over the ranks
 * while the last backward pass runs. *waited gets the seconds spent waiting on data. Returns 0 or
 * the exit code the ranks agreed on. */
static int accumulate_gradients(rmx_trainer *t, double *waited) {
    const float scale = 1.0f / (float)t->cfg.train.global_batch;
    char err[1024];
    *waited = 0;
    t->be->fill(t->be, t->loss_terms, 0.0f, (size_t)t->stage->n_terms);
    t->stage->ops->step_begin(t->stage, t);
    for (int k = 0; k < t->accum_steps; k++) {
        double w = 0;
        const rmx_batch *b = rmx_loader_next(t->loader, &w, err, sizeof err);
        *waited += w;
        if (!b) rmx_error("rank %d: %s", t->comm.rank, err);
        if (!b || k == t->accum_steps - 1) {
            int code = agree_to_go_on(t, !b);
            if (code != 0) return code;
            rmx_reducer_begin(t->reducer);
        }
        t->stage->ops->forward_backward(t->stage, t, b, scale, t->loss_terms);
    }
    rmx_reducer_wait_all(t->reducer);
    return 0;
}

typedef struct {
    float terms[RMX_STAGE_MAX_TERMS];
    double loss;
    double grad_norm;
    int applied;  /* 0: non-finite, skipped */
    rmx_terms extra; /* what the stage's before_update reports (vq perplexity) */
} step_result;

static void apply_update(rmx_trainer *t, step_result *r) {
    rmx_params *p = t->stage->trained;
    const rmx_config *c = &t->cfg;
    float clip = c->train.grad_clip;
    if (clip > 0 && r->grad_norm > clip) t->be->scale(t->be, p->span, (float)(clip / r->grad_norm), p->grad);
    rmx_adamw_hparams hp = {
        .lr = rmx_lr_at(t->step, c->train.steps, c->train.warmup, c->train.lr, c->train.min_lr),
        .beta1 = c->train.beta1, .beta2 = c->train.beta2, .eps = c->train.eps,
        .weight_decay = c->train.weight_decay, .t = t->step + 1,
    };
    t->be->adamw(t->be, p->span, p->n_decay, p->data, p->grad, p->m, p->v, &hp);
}

/* One optimiser step. Returns 0, or an exit code when the run must stop: RMX_EXIT_PREEMPTED when
 * the ranks agreed on a stop signal, before anything of this step was applied. */
static int train_step(rmx_trainer *t, step_result *r, double *waited) {
    int code = accumulate_gradients(t, waited);
    if (code != 0) return code;
    const rmx_stage *stage = t->stage;
    rmx_params *p = stage->trained;
    rmx_trainer_sum_floats(t, t->loss_terms, (size_t)stage->n_terms);
    t->be->to_host(t->be, r->terms, t->loss_terms, sizeof(float) * (size_t)stage->n_terms);
    float sumsq = 0;
    t->be->sumsq(t->be, p->span, p->grad, t->grad_sumsq);
    t->be->to_host(t->be, &sumsq, t->grad_sumsq, sizeof sumsq);
    r->loss = stage->ops->total_loss(stage, r->terms);
    r->grad_norm = sqrt((double)sumsq);
    r->applied = isfinite(r->loss) && isfinite(r->grad_norm);
    memset(&r->extra, 0, sizeof r->extra);
    if (!r->applied) {
        t->nonfinite_in_row++;
        t->nonfinite_total++;
        if (t->nonfinite_in_row > t->cfg.train.max_nonfinite) {
            if (t->comm.rank == 0)
                rmx_error("step %" PRId64 ": %d steps in a row had a non-finite loss or gradient "
                          "(train.max_nonfinite is %d); stopping. Lower train.lr or check the data.",
                          t->step + 1, t->nonfinite_in_row, t->cfg.train.max_nonfinite);
            return RMX_EXIT_FAILURE;
        }
        if (t->comm.rank == 0)
            rmx_warn("step %" PRId64 ": non-finite loss or gradient, step skipped (%d in a row)", t->step + 1,
                     t->nonfinite_in_row);
        return 0;
    }
    t->nonfinite_in_row = 0;
    if (stage->ops->before_update) stage->ops->before_update(t->stage, t, &r->extra);
    apply_update(t, r);
    if (stage->ops->after_update) stage->ops->after_update(t->stage, t);
    return 0;
}

/* ---- logging (rank 0) ---- */

typedef struct {
    double start_s, interval_start_s, interval_wait_s;
    int64_t interval_first_step;
} log_state;

static void record_step(rmx_trainer *t, const step_result *r, float lr) {
    rmx_terms terms = {0};
    rmx_terms_add(&terms, "loss", r->loss);
    for (int i = 0; i < t->stage->n_terms; i++)
        if (t->stage->term_names[i]) rmx_terms_add(&terms, t->stage->term_names[i], r->terms[i]);
    for (int i = 0; i < r->extra.n; i++) rmx_terms_add(&terms, r->extra.names[i], r->extra.values[i]);
    rmx_terms_add(&terms, "grad_norm", r->grad_norm);
    rmx_terms_add(&terms, "lr", lr);
    /* labelled with completed steps, like evaluations, PNGs and checkpoints (train/metrics.h) */
    rmx_metrics_write(&t->metrics, t->step + 1, "train", &terms, r->applied ? NULL : "\"skipped\": true");
}

/* "rec 0.1234 kl 12.35 perplexity 87.2": the stage's terms by name, then its extra values. */
static void describe_terms(const rmx_stage *stage, const step_result *r, char *out, size_t outlen) {
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < stage->n_terms + r->extra.n; i++) {
        int own = i < stage->n_terms;
        const char *name = own ? stage->term_names[i] : r->extra.names[i - stage->n_terms];
        double value = own ? r->terms[i] : r->extra.values[i - stage->n_terms];
        if (!name || used >= outlen) continue;
        used += (size_t)snprintf(out + used, outlen - used, "%s%s %.6g", used ? " " : "", name, value);
    }
}

static void print_line(rmx_trainer *t, const step_result *r, float lr, log_state *ls, double now) {
    int64_t steps_done = t->step + 1 - ls->interval_first_step;
    double dt = now - ls->interval_start_s;
    double samples_s = dt > 0 ? (double)steps_done * t->cfg.train.global_batch / dt : 0;
    double wait_pct = dt > 0 ? 100.0 * ls->interval_wait_s / dt : 0;
    double per_step = (now - ls->start_s) / (double)(t->step + 1 - t->start_step);
    char eta[32], terms[256];
    rmx_format_duration(per_step * (double)(t->cfg.train.steps - t->step - 1), eta, sizeof eta);
    describe_terms(t->stage, r, terms, sizeof terms);
    rmx_progress_finish(&t->bar);
    printf("step %6" PRId64 "/%" PRId64 " | loss %.4f (%s) | lr %.2e | %.1f samples/s | data %2.0f%% | ETA %s\n",
           t->step + 1, t->cfg.train.steps, r->loss, terms, lr, samples_s, wait_pct, eta);
    fflush(stdout);
    ls->interval_start_s = now;
    ls->interval_wait_s = 0;
    ls->interval_first_step = t->step + 1;
}

static void log_step(rmx_trainer *t, const step_result *r, log_state *ls, double waited) {
    if (t->comm.rank != 0) return;
    const rmx_config *c = &t->cfg;
    float lr = rmx_lr_at(t->step, c->train.steps, c->train.warmup, c->train.lr, c->train.min_lr);
    ls->interval_wait_s += waited;
    record_step(t, r, lr);
    int64_t done = t->step + 1;
    if (c->log.every > 0 && (done % c->log.every == 0 || done == c->train.steps))
        print_line(t, r, lr, ls, rmx_now_s());
    rmx_progress_update(&t->bar, done, NULL);
}

/* A fresh run evaluates the untrained model first: the baseline later evaluations improve on. A
 * resumed run repeats the evaluation due at its starting step: the interrupted run's line for it
 * went with the rest of that run's log from this step on (rmx_metrics_open), and evaluating leaves
 * the model untouched, so the figures are the same. */
static int evaluate_at_start(rmx_trainer *t) {
    int64_t every = t->cfg.eval.every;
    if (!t->val || every <= 0 || (t->start_step != 0 && t->start_step % every != 0)) return RMX_EXIT_OK;
    return t->stage->ops->evaluate(t->stage, t, t->start_step);
}

static int evaluate_if_due(rmx_trainer *t) {
    int64_t done = t->step + 1;
    int64_t every = t->cfg.eval.every;
    int due = (every > 0 && done % every == 0) || done == t->cfg.train.steps;
    if (!due || !t->val) return 0;
    return t->stage->ops->evaluate(t->stage, t, done);
}

/* ---- checkpoints and preemption (rank 0 writes; train/checkpoint.h) ---- */

static int resume(rmx_trainer *t) {
    rmx_ckpt_resume_request rq = {&t->cfg, t->ckpt_dir, &t->stage->layout, &t->comm};
    rmx_ckpt_meta meta;
    char path[RMX_CKPT_PATH_MAX], own[RMX_CKPT_PATH_MAX];
    int code = rmx_ckpt_resume(&rq, &meta, path, sizeof path);
    if (code != RMX_EXIT_OK) return code;
    snprintf(t->resumed_from, sizeof t->resumed_from, "%s", path);
    t->start_step = meta.step;
    t->nonfinite_in_row = (int)meta.nonfinite_in_row;
    t->nonfinite_total = meta.nonfinite_total;
    /* A checkpoint resumed from where this run saves its own need not be written again. */
    rmx_ckpt_path(t->ckpt_dir, meta.step, own, sizeof own);
    if (path[0] && strcmp(path, own) == 0) {
        t->ckpt_step = meta.step;
        snprintf(t->ckpt_path, sizeof t->ckpt_path, "%s", path);
    }
    return RMX_EXIT_OK;
}

static int start_checkpoints(rmx_trainer *t, char *err, size_t errlen) {
    if (t->comm.rank != 0) return 0;
    t->ckpt = rmx_ckpt_writer_create(t->ckpt_dir, t->cfg.checkpoint.keep, &t->stage->layout, err, errlen);
    return t->ckpt ? 0 : -1;
}

static rmx_ckpt_meta checkpoint_meta(const rmx_trainer *t, int64_t completed) {
    const rmx_config *c = &t->cfg;
    rmx_ckpt_meta m = {
        .step = completed,
        .samples_seen = completed * c->train.global_batch,
        .seed = c->train.seed,
        .world_size = t->comm.world,
        .global_batch = c->train.global_batch,
        .micro_batch = c->train.micro_batch,
        .input_shape = {t->stage->input_shape[0], t->stage->input_shape[1], t->stage->input_shape[2]},
        .adam_step = completed, /* step s's update used t = s + 1 (apply_update) */
        .nonfinite_in_row = t->nonfinite_in_row,
        .nonfinite_total = t->nonfinite_total,
        .config = c->text,
    };
    snprintf(m.stage, sizeof m.stage, "%s", c->stage);
    return m;
}

/* Rank 0: reports a write that has finished; with `block`, waits for the one in flight first.
 * Returns -1 when that write failed. */
static int report_checkpoint(rmx_trainer *t, int block) {
    rmx_ckpt_outcome o;
    if (!t->ckpt || !rmx_ckpt_writer_collect(t->ckpt, block, &o)) return 0;
    rmx_progress_finish(&t->bar);
    if (o.failed) {
        rmx_error("checkpoint %s was not saved: %s", o.path, o.error);
        return -1;
    }
    t->ckpt_step = o.step;
    snprintf(t->ckpt_path, sizeof t->ckpt_path, "%s", o.path);
    printf("checkpoint %s saved (%.1f MiB in %.2f s)\n", o.path, o.mib, o.seconds);
    fflush(stdout);
    return 0;
}

/* Rank 0: a checkpoint of `completed` steps, unless it is on disk already (resumed from, or a
 * periodic one of the same step). A failed earlier write is reported and this one goes ahead.
 * Returns -1 when a synchronous write failed. */
static int save_checkpoint(rmx_trainer *t, int64_t completed, int background) {
    if (t->comm.rank != 0) return 0;
    report_checkpoint(t, 1);
    if (t->ckpt_step == completed) return 0;
    rmx_ckpt_meta meta = checkpoint_meta(t, completed);
    rmx_ckpt_save(t->ckpt, &meta, background);
    return background ? 0 : report_checkpoint(t, 1);
}

/* Periodic checkpoints are written in the background while training goes on; a failed one is
 * reported and training continues with the previous checkpoint still on disk. */
static void checkpoint_if_due(rmx_trainer *t) {
    int64_t done = t->step + 1, every = t->cfg.checkpoint.every;
    if (every > 0 && done % every == 0 && done < t->cfg.train.steps) save_checkpoint(t, done, 1);
    else if (t->comm.rank == 0) report_checkpoint(t, 0);
}

/* A finished run leaves its final checkpoint on disk before it says so. */
static int save_final_checkpoint(rmx_trainer *t) {
    int failed = save_checkpoint(t, t->cfg.train.steps, 0) != 0;
    return rmx_comm_any(&t->comm, failed) ? RMX_EXIT_FAILURE : RMX_EXIT_OK;
}

/* The ranks agreed to stop before step t->step, so t->step steps are done: rank 0 saves them
 * synchronously (after any write in flight), then every rank exits 75, or 1 without a checkpoint. */
static int stop_with_checkpoint(rmx_trainer *t) {
    int failed = save_checkpoint(t, t->step, 0) != 0;
    const char *signal = rmx_signal_name(t->stop_signal);
    if (rmx_comm_any(&t->comm, failed)) {
        if (t->comm.rank == 0)
            rmx_error("stopped by %s at step %" PRId64 " without a checkpoint; exit %d", signal, t->step,
                      RMX_EXIT_FAILURE);
        return RMX_EXIT_FAILURE;
    }
    if (t->comm.rank == 0)
        rmx_info("preempted by %s at step %" PRId64 ": checkpoint %s saved; exit %d (start again to resume)",
                 signal, t->step, t->ckpt_path, RMX_EXIT_PREEMPTED);
    return RMX_EXIT_PREEMPTED;
}

/* ---- the run ---- */

/* Logs, checkpoint writer, loader. Every rank learns whether all of them started, so that no rank
 * is left waiting in the first all-reduce for one that gave up. */
static int start_run(rmx_trainer *t) {
    char err[2048];
    int failed = start_logs(t, err, sizeof err) != 0 || start_checkpoints(t, err, sizeof err) != 0 ||
                 start_loader(t, err, sizeof err) != 0 || start_reduction(t, err, sizeof err) != 0;
    if (failed) rmx_error("%s", err);
    return rmx_comm_any(&t->comm, failed) ? RMX_EXIT_FAILURE : RMX_EXIT_OK;
}

/* data.on_corrupt skip: training samples whose damaged segment was replaced, summed over the ranks
 * (the same for every world size). Collective: called by every rank of a finished run. */
static void report_damaged(rmx_trainer *t) {
    double n = (double)rmx_loader_replaced(t->loader);
    rmx_comm_sum_doubles(&t->comm, &n, 1);
    if (t->comm.rank == 0 && n > 0)
        printf("damaged segments skipped: %.0f training samples were read from the next valid segment "
               "(data.on_corrupt: skip; the warnings above name each one)\n", n);
}

static void print_finished(const rmx_trainer *t) {
    if (t->comm.rank != 0) return;
    printf("finished %" PRId64 " steps; metrics in %s/metrics.jsonl, spectrogram PNGs in %s/, "
           "final checkpoint %s\n",
           t->cfg.train.steps, t->cfg.run.dir, t->cfg.run.dir, t->ckpt_path);
}

int rmx_trainer_run(rmx_trainer *t) {
    int code = resume(t);
    if (code != RMX_EXIT_OK) return code;
    if (t->start_step >= t->cfg.train.steps) {
        /* A relaunch of a finished run: nothing to train, and its log and checkpoints stay as they are. */
        if (t->comm.rank == 0)
            printf("nothing to do: the run is at step %" PRId64 " and train.steps is %" PRId64 "\n",
                   t->start_step, t->cfg.train.steps);
        return RMX_EXIT_OK;
    }
    code = start_run(t);
    if (code != RMX_EXIT_OK) return code;
    alloc_step_buffers(t);
    code = t->stage->ops->start(t->stage, t, t->resumed_from[0] ? t->resumed_from : NULL);
    if (code != RMX_EXIT_OK) return code;
    log_state ls = {.start_s = rmx_now_s(), .interval_start_s = rmx_now_s(),
                    .interval_first_step = t->start_step};
    if (t->comm.rank == 0) {
        rmx_progress_start(&t->bar, "train", t->cfg.train.steps);
        rmx_progress_update(&t->bar, t->start_step, NULL);
    }
    code = evaluate_at_start(t);
    for (t->step = t->start_step; code == RMX_EXIT_OK && t->step < t->cfg.train.steps; t->step++) {
        step_result r;
        double waited = 0;
        code = train_step(t, &r, &waited);
        if (code != 0) break;
        log_step(t, &r, &ls, waited);
        code = evaluate_if_due(t);
        if (code != 0) break;
        checkpoint_if_due(t);
    }
    if (code == RMX_EXIT_PREEMPTED) code = stop_with_checkpoint(t);
    else if (code == RMX_EXIT_OK) code = save_final_checkpoint(t);
    report_checkpoint(t, 1); /* a periodic write still in flight when an error stopped the run */
    if (t->comm.rank == 0) rmx_progress_finish(&t->bar);
    if (code == RMX_EXIT_OK) report_damaged(t);
    if (code == RMX_EXIT_OK) print_finished(t);
    return code;
}

void rmx_trainer_free(rmx_trainer *t) {
    rmx_ckpt_writer_free(t->ckpt);
    t->ckpt = NULL;
    if (t->loader) rmx_loader_close(t->loader);
    if (t->reducer) rmx_reducer_free(t->reducer);
#ifdef RMX_HAVE_NCCL
    if (t->nccl) rmx_nccl_free(t->nccl);
#endif
    if (t->be) {
        if (t->loss_terms) t->be->free(t->be, t->loss_terms);
        if (t->grad_sumsq) t->be->free(t->be, t->grad_sumsq);
    }
    if (t->stage) t->stage->ops->free(t->stage);
    if (t->be) t->be->destroy(t->be);
    if (t->val) rmx_dataset_close(t->val);
    if (t->train) rmx_dataset_close(t->train);
    rmx_metrics_close(&t->metrics);
    rmx_config_free(&t->cfg);
}
