#include "data/loader.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/progress.h"

#define ERR_CAP 1024

struct rmx_loader {
    rmx_dataset *ds;
    rmx_schedule *schedule; /* used only by the producer (the thread, or next() when synchronous) */
    int64_t *used;          /* the producer's: [m] indices actually read (rmx_dataset_read_batch_resolved) */
    rmx_loader_config cfg;
    int accum;
    int n_slots;
    rmx_batch *slots;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mutex;
    pthread_cond_t ready; /* a micro-batch was produced, or the producer failed */
    pthread_cond_t space; /* the consumer released a slot, or close() asked to stop */
    /* Micro-batch k (counted from the start) lives in slot k % n_slots. Guarded by mutex: */
    int64_t produced; /* micro-batches filled */
    int64_t consumed; /* micro-batches handed to the caller */
    int64_t replaced; /* damaged samples replaced in the micro-batches handed to the caller */
    int holding;      /* the caller still holds micro-batch consumed - 1 */
    int failed;       /* the producer stopped at micro-batch `produced` with `error` */
    int stop;
    char error[ERR_CAP];
};

static void *default_alloc(size_t bytes) { return malloc(bytes); }

/* ---- buffers ---- */

static int alloc_slot(rmx_loader *l, rmx_batch *b) {
    size_t m = (size_t)l->cfg.schedule.micro_batch;
    b->mel = l->cfg.alloc_buffer(m * rmx_dataset_sample_floats(l->ds) * sizeof(float));
    b->genre = malloc(m * sizeof *b->genre);
    b->index = malloc(m * sizeof *b->index);
    b->position = malloc(m * sizeof *b->position);
    return b->mel && b->genre && b->index && b->position ? 0 : -1;
}

static void free_slots(rmx_loader *l) {
    for (int i = 0; l->slots && i < l->n_slots; i++) {
        rmx_batch *b = &l->slots[i];
        if (b->mel) l->cfg.free_buffer(b->mel);
        free(b->genre);
        free(b->index);
        free(b->position);
    }
    free(l->slots);
    free(l->used);
}

/* Reads micro-batch k (counted from the start step) into b. */
static int fill(rmx_loader *l, int64_t k, rmx_batch *b, char *err, size_t errlen) {
    b->step = l->cfg.start_step + k / l->accum;
    b->micro = (int)(k % l->accum);
    b->accum_steps = l->accum;
    b->m = l->cfg.schedule.micro_batch;
    if (rmx_schedule_micro_batch(l->schedule, b->step, b->micro, b->index, b->position))
        return rmx_seterr(err, errlen, "step %lld micro-batch %d is outside the schedule",
                          (long long)b->step, b->micro);
    if (rmx_dataset_read_batch_resolved(l->ds, b->index, b->m, b->mel, b->genre, l->used, err, errlen))
        return -1;
    b->replaced = 0;
    for (int i = 0; i < b->m; i++) {
        b->replaced += l->used[i] != b->index[i];
        b->index[i] = l->used[i];
    }
    return 0;
}

/* ---- the prefetch thread ---- */

/* Waits until slot k is free (the caller has released micro-batch k - n_slots); 0 when stopping. */
static int wait_for_space(rmx_loader *l, int64_t k) {
    pthread_mutex_lock(&l->mutex);
    while (!l->stop && k - (l->consumed - l->holding) >= l->n_slots)
        pthread_cond_wait(&l->space, &l->mutex);
    int go = !l->stop;
    pthread_mutex_unlock(&l->mutex);
    return go;
}

static void *prefetch_main(void *arg) {
    rmx_loader *l = arg;
    char err[ERR_CAP];
    for (int64_t k = 0; wait_for_space(l, k); k++) {
        /* The slot is ours until `produced` moves past it: fill it without holding the mutex. */
        int rc = fill(l, k, &l->slots[k % l->n_slots], err, sizeof err);
        pthread_mutex_lock(&l->mutex);
        if (rc == 0) {
            l->produced = k + 1;
        } else {
            l->failed = 1;
            snprintf(l->error, sizeof l->error, "%s", err);
        }
        pthread_cond_signal(&l->ready);
        pthread_mutex_unlock(&l->mutex);
        if (rc) break;
    }
    return NULL;
}

/* The thread gets no signals: SIGTERM and friends must reach the training thread's handler. */
static int start_thread(rmx_loader *l) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, prefetch_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    l->thread_started = rc == 0;
    return rc;
}

/* ---- public ---- */

static int init_loader(rmx_loader *l, rmx_dataset *ds, const rmx_loader_config *cfg, char *err,
                       size_t errlen) {
    l->ds = ds;
    l->cfg = *cfg;
    if (!l->cfg.alloc_buffer || !l->cfg.free_buffer) {
        l->cfg.alloc_buffer = default_alloc;
        l->cfg.free_buffer = free;
    }
    if (cfg->start_step < 0 || cfg->depth < 0)
        return rmx_seterr(err, errlen, "loader: start step %lld and depth %d must be >= 0",
                          (long long)cfg->start_step, cfg->depth);
    l->schedule = rmx_schedule_create(&cfg->schedule, rmx_dataset_length(ds), err, errlen);
    if (!l->schedule) return -1;
    l->accum = rmx_schedule_accum_steps(l->schedule);
    l->n_slots = cfg->depth + 1;
    l->slots = calloc((size_t)l->n_slots, sizeof *l->slots);
    l->used = malloc((size_t)cfg->schedule.micro_batch * sizeof *l->used);
    if (!l->slots || !l->used) return rmx_seterr(err, errlen, "loader: out of memory");
    for (int i = 0; i < l->n_slots; i++)
        if (alloc_slot(l, &l->slots[i]))
            return rmx_seterr(err, errlen, "loader: out of memory for %d buffers of %d samples",
                              l->n_slots, cfg->schedule.micro_batch);
    return 0;
}

rmx_loader *rmx_loader_create(rmx_dataset *ds, const rmx_loader_config *cfg, char *err, size_t errlen) {
    rmx_loader *l = calloc(1, sizeof *l);
    if (!l) {
        rmx_seterr(err, errlen, "loader: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->mutex, NULL);
    pthread_cond_init(&l->ready, NULL);
    pthread_cond_init(&l->space, NULL);
    int rc = init_loader(l, ds, cfg, err, errlen);
    if (rc == 0 && cfg->depth > 0 && start_thread(l) != 0)
        rc = rmx_seterr(err, errlen, "loader: cannot start the prefetch thread");
    if (rc == 0) return l;
    rmx_loader_close(l);
    return NULL;
}

int rmx_loader_accum_steps(const rmx_loader *l) { return l->accum; }

int64_t rmx_loader_replaced(const rmx_loader *l) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mutex);
    int64_t n = l->replaced;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mutex);
    return n;
}

static const rmx_batch *next_synchronous(rmx_loader *l, double *waited_s, char *err, size_t errlen) {
    double t0 = rmx_now_s();
    rmx_batch *b = &l->slots[0];
    int rc = l->failed ? rmx_seterr(err, errlen, "%s", l->error)
                       : fill(l, l->consumed, b, l->error, sizeof l->error);
    if (waited_s) *waited_s = rmx_now_s() - t0;
    if (rc == 0) {
        l->consumed++;
        l->replaced += b->replaced;
        return b;
    }
    l->failed = 1;
    rmx_seterr(err, errlen, "%s", l->error);
    return NULL;
}

const rmx_batch *rmx_loader_next(rmx_loader *l, double *waited_s, char *err, size_t errlen) {
    if (!l->thread_started) return next_synchronous(l, waited_s, err, errlen);
    pthread_mutex_lock(&l->mutex);
    if (l->holding) {
        l->holding = 0;
        pthread_cond_signal(&l->space);
    }
    double t0 = rmx_now_s();
    while (l->produced <= l->consumed && !l->failed) pthread_cond_wait(&l->ready, &l->mutex);
    if (waited_s) *waited_s = rmx_now_s() - t0;
    const rmx_batch *b = NULL;
    if (l->produced > l->consumed) {
        b = &l->slots[l->consumed % l->n_slots];
        l->consumed++;
        l->replaced += b->replaced;
        l->holding = 1;
    } else {
        rmx_seterr(err, errlen, "%s", l->error);
    }
    pthread_mutex_unlock(&l->mutex);
    return b;
}

void rmx_loader_close(rmx_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mutex);
        l->stop = 1;
        pthread_cond_signal(&l->space);
        pthread_mutex_unlock(&l->mutex);
        pthread_join(l->thread, NULL);
    }
    free_slots(l);
    rmx_schedule_free(l->schedule);
    pthread_cond_destroy(&l->ready);
    pthread_cond_destroy(&l->space);
    pthread_mutex_destroy(&l->mutex);
    free(l);
}
