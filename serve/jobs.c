/* The service's jobs (serve/jobs.h). */
#include "serve/jobs.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util/log.h"

typedef struct job {
    char id[RMX_JOB_ID_LEN + 1];
    rmx_job_spec spec;
    rmx_job_state state;
    double progress, created, started, finished;
    rmx_service_result result;
    rmx_request_error error;
    struct job *next;      /* the store's list, newest first */
    struct job *queue_next; /* the queue, oldest first */
} job;

struct rmx_jobs {
    rmx_service *service;
    rmx_jobs_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t work;   /* a job was queued, or stopping */
    job *all;
    job *queue_head, *queue_tail;
    int queued, running, stopping;
    pthread_t *threads;
    int started;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *rmx_job_state_name(rmx_job_state s) {
    switch (s) {
    case RMX_JOB_QUEUED: return "queued";
    case RMX_JOB_RUNNING: return "running";
    case RMX_JOB_DONE: return "done";
    case RMX_JOB_FAILED: return "failed";
    case RMX_JOB_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static void free_job(job *x) {
    free(x->spec.original);
    free(x->spec.style);
    rmx_service_result_free(&x->result);
    free(x);
}

static int finished(const job *x) { return x->state >= RMX_JOB_DONE; }

/* Under the lock: drops finished jobs past their time, then the oldest finished ones beyond the
 * count (the list is newest first, so the last finished ones in it are the oldest). */
static void expire(rmx_jobs *j) {
    const double t = now_s();
    int kept = 0;
    for (job **p = &j->all; *p;) {
        job *x = *p;
        if (finished(x) && (t - x->finished > j->cfg.ttl_s || kept >= j->cfg.max_results)) {
            *p = x->next;
            free_job(x);
            continue;
        }
        if (finished(x)) kept++;
        p = &x->next;
    }
}

static job *find(rmx_jobs *j, const char *id) {
    for (job *x = j->all; x; x = x->next)
        if (!strcmp(x->id, id)) return x;
    return NULL;
}

/* ---- workers ---- */

typedef struct {
    rmx_jobs *j;
    job *x;
} run_ctx;

/* The sampler's progress: published under the lock; a nonzero answer cancels when stopping. */
static int on_progress(void *arg, double fraction) {
    run_ctx *c = arg;
    pthread_mutex_lock(&c->j->lock);
    c->x->progress = fraction;
    int stop = c->j->stopping;
    pthread_mutex_unlock(&c->j->lock);
    return stop;
}

static job *next_job(rmx_jobs *j) {
    pthread_mutex_lock(&j->lock);
    while (!j->queue_head && !j->stopping) pthread_cond_wait(&j->work, &j->lock);
    job *x = j->stopping ? NULL : j->queue_head;
    if (x) {
        j->queue_head = x->queue_next;
        if (!j->queue_head) j->queue_tail = NULL;
        j->queued--;
        j->running++;
        x->state = RMX_JOB_RUNNING;
        x->started = now_s();
    }
    pthread_mutex_unlock(&j->lock);
    return x;
}

static void run_job(rmx_jobs *j, job *x) {
    run_ctx ctx = {j, x};
    rmx_service_result res;
    char err[2048] = "";
    rmx_svc_status st =
        x->spec.remix ? rmx_service_remix(j->service, &x->spec.rmx, on_progress, &ctx, &res, err, sizeof err)
                      : rmx_service_generate(j->service, &x->spec.generate, on_progress, &ctx, &res, err, sizeof err);
    pthread_mutex_lock(&j->lock);
    x->finished = now_s();
    if (st == RMX_SVC_OK) {
        x->result = res; /* published whole, with the state, under the lock */
        x->progress = 1.0;
        x->state = RMX_JOB_DONE;
    } else {
        rmx_request_from_service(st, err, &x->error);
        x->state = st == RMX_SVC_CANCELLED ? RMX_JOB_CANCELLED : RMX_JOB_FAILED;
    }
    /* the uploads are not needed any more */
    free(x->spec.original), free(x->spec.style);
    x->spec.original = x->spec.style = NULL;
    j->running--;
    expire(j);
    pthread_mutex_unlock(&j->lock);
    if (st != RMX_SVC_OK && st != RMX_SVC_CANCELLED && st != RMX_SVC_BAD_INPUT && st != RMX_SVC_UNSUPPORTED)
        rmx_warn("job %s failed: %s", x->id, err);
}

static void *worker(void *arg) {
    rmx_jobs *j = arg;
    for (job *x; (x = next_job(j));) run_job(j, x);
    return NULL;
}

rmx_jobs *rmx_jobs_start(rmx_service *s, const rmx_jobs_config *c, char *err, size_t errlen) {
    rmx_jobs *j = calloc(1, sizeof *j);
    if (!j || !(j->threads = calloc((size_t)c->workers, sizeof *j->threads))) {
        free(j);
        rmx_seterr(err, errlen, "out of memory");
        return NULL;
    }
    j->service = s;
    j->cfg = *c;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->work, NULL);
    for (; j->started < c->workers; j->started++)
        if (pthread_create(&j->threads[j->started], NULL, worker, j) != 0) {
            rmx_seterr(err, errlen, "cannot start worker %d", j->started + 1);
            rmx_jobs_stop(j, 60);
            rmx_jobs_free(j);
            return NULL;
        }
    return j;
}

int rmx_jobs_stop(rmx_jobs *j, double grace_s) {
    pthread_mutex_lock(&j->lock);
    j->stopping = 1;
    for (job *x = j->queue_head; x; x = x->queue_next) {
        x->state = RMX_JOB_CANCELLED;
        x->finished = now_s();
        rmx_request_set_error(&x->error, 503, "", "cancelled: the server is stopping");
    }
    j->queue_head = j->queue_tail = NULL;
    j->queued = 0;
    pthread_cond_broadcast(&j->work);
    pthread_mutex_unlock(&j->lock);
    const double deadline = now_s() + grace_s;
    for (; j->started > 0; j->started--) {
        double left = deadline - now_s();
        if (left < 0) left = 0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)left;
        ts.tv_nsec += (long)((left - (double)(time_t)left) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        if (pthread_timedjoin_np(j->threads[j->started - 1], NULL, &ts) != 0) return -1;
    }
    return 0;
}

void rmx_jobs_free(rmx_jobs *j) {
    if (!j) return;
    while (j->all) {
        job *x = j->all;
        j->all = x->next;
        free_job(x);
    }
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->work);
    free(j->threads);
    free(j);
}

static int new_id(char id[RMX_JOB_ID_LEN + 1]) {
    unsigned char raw[RMX_JOB_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return -1;
    for (size_t i = 0; i < sizeof raw; i++) snprintf(id + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

int rmx_jobs_submit(rmx_jobs *j, rmx_job_spec *spec, char id[RMX_JOB_ID_LEN + 1], rmx_request_error *e) {
    job *x = calloc(1, sizeof *x);
    if (!x || new_id(x->id) != 0) {
        free(spec->original), free(spec->style), free(x);
        rmx_request_set_error(e, 500, "", "out of memory or no randomness for a job id");
        return -1;
    }
    x->spec = *spec;
    /* the request's strings point into the job's own copy */
    x->spec.generate.genre = x->spec.genre;
    x->spec.rmx.original = x->spec.original;
    x->spec.rmx.style = x->spec.style;
    x->spec.rmx.original_name = x->spec.original_name;
    x->spec.rmx.style_name = x->spec.style_name;
    x->created = now_s();
    pthread_mutex_lock(&j->lock);
    expire(j);
    const int full = j->queued >= j->cfg.max_queue;
    if (j->stopping || full) {
        pthread_mutex_unlock(&j->lock);
        free_job(x);
        rmx_request_set_error(e, 503, "", j->stopping ? "the server is stopping" : "the queue is full (%d jobs wait)",
                              j->cfg.max_queue);
        return -1;
    }
    x->next = j->all;
    j->all = x;
    if (j->queue_tail) j->queue_tail->queue_next = x;
    else j->queue_head = x;
    j->queue_tail = x;
    j->queued++;
    memcpy(id, x->id, sizeof x->id);
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->lock);
    return 0;
}

static void view_of(const rmx_jobs *j, const job *x, rmx_job_view *v) {
    memset(v, 0, sizeof *v);
    v->state = x->state;
    v->remix = x->spec.remix;
    v->progress = x->progress;
    v->seconds = x->result.seconds;
    v->error = x->error;
    const double t = now_s();
    v->wait_s = (x->state == RMX_JOB_QUEUED ? t : x->started ? x->started : x->finished) - x->created;
    v->run_s = x->started ? (finished(x) ? x->finished : t) - x->started : 0;
    if (x->state == RMX_JOB_QUEUED)
        for (const job *q = j->queue_head; q && q != x; q = q->queue_next) v->queue_position++;
}

int rmx_jobs_view(rmx_jobs *j, const char *id, rmx_job_view *v) {
    pthread_mutex_lock(&j->lock);
    expire(j);
    job *x = find(j, id);
    if (x) view_of(j, x, v);
    pthread_mutex_unlock(&j->lock);
    return x ? 0 : -1;
}

int rmx_jobs_result(rmx_jobs *j, const char *id, int png, unsigned char **data, size_t *len, rmx_job_view *v) {
    pthread_mutex_lock(&j->lock);
    expire(j);
    job *x = find(j, id);
    int rc = -1;
    if (x) {
        view_of(j, x, v);
        rc = 1;
        if (x->state == RMX_JOB_DONE) {
            const unsigned char *src = png ? x->result.png : x->result.wav;
            *len = png ? x->result.png_len : x->result.wav_len;
            *data = malloc(*len ? *len : 1);
            rc = *data ? 0 : -1;
            if (*data) memcpy(*data, src, *len);
        }
    }
    pthread_mutex_unlock(&j->lock);
    return rc;
}
