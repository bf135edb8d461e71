/* The service's jobs: a bounded queue, worker threads over one rmx_service, and the finished jobs'
 * results kept for a bounded time and count.
 *
 * A job is created queued (rmx_jobs_submit refuses it when max_queue jobs already wait: the 503
 * case), run by the first free worker, and ends done (its WAV and PNG complete), failed (an error
 * with the HTTP status and field) or cancelled (the server is stopping). A job's state and result
 * change only under the store's lock, and a result is published whole: a reader sees a job done
 * with its bytes or not done, never half a result. Results expire `ttl_s` seconds after they
 * finish, and the oldest finished jobs go first when more than `max_results` are kept.
 *
 * Job ids are 128 random bits (getrandom) in hex: unguessable, so the id is the capability. */
#ifndef RMX_SERVE_JOBS_H
#define RMX_SERVE_JOBS_H

#include <stddef.h>

#include "infer/service.h"
#include "serve/request.h"

typedef struct rmx_jobs rmx_jobs;

typedef enum { RMX_JOB_QUEUED, RMX_JOB_RUNNING, RMX_JOB_DONE, RMX_JOB_FAILED, RMX_JOB_CANCELLED } rmx_job_state;

#define RMX_JOB_ID_LEN 32
#define RMX_UPLOAD_NAME_MAX 256

/* What a job is asked to do; the store takes ownership of original / style (malloc'd). */
typedef struct {
    int remix; /* 0 generate, 1 remix */
    rmx_generate_request generate;
    char genre[RMX_GENRE_NAME_MAX];
    rmx_remix_request rmx;
    unsigned char *original, *style;
    char original_name[RMX_UPLOAD_NAME_MAX], style_name[RMX_UPLOAD_NAME_MAX];
} rmx_job_spec;

/* A copy of a job's public state. */
typedef struct {
    rmx_job_state state;
    int remix;
    double progress;       /* 0..1 */
    int queue_position;    /* jobs ahead of it while queued (0: next) */
    double seconds;        /* the result's length once done */
    double wait_s, run_s;  /* queued, running (so far or in all) */
    rmx_request_error error; /* when failed or cancelled */
} rmx_job_view;

typedef struct {
    int workers, max_queue, max_results;
    double ttl_s;
} rmx_jobs_config;

rmx_jobs *rmx_jobs_start(rmx_service *s, const rmx_jobs_config *c, char *err, size_t errlen);
/* Refuses new jobs, cancels the queued ones, asks the running ones to stop at their next
 * cancellation point and waits up to grace_s for the workers. 0 when they all ended, -1 when
 * the time ran out (the caller exits anyway; no result of a job that did not end is published). */
int rmx_jobs_stop(rmx_jobs *j, double grace_s);
/* After a successful stop: frees everything. */
void rmx_jobs_free(rmx_jobs *j);

/* 0 with the id, or -1 with e (503: the queue is full or the server is stopping). spec's
 * buffers are the store's from here on, also on failure. */
int rmx_jobs_submit(rmx_jobs *j, rmx_job_spec *spec, char id[RMX_JOB_ID_LEN + 1], rmx_request_error *e);
/* 0, or -1 when no such job is kept. */
int rmx_jobs_view(rmx_jobs *j, const char *id, rmx_job_view *v);
/* A copy of a done job's WAV (png 0) or PNG (png 1): 0 with *data malloc'd; -1 when no such job
 * is kept; 1 when it is not done (v says its state). */
int rmx_jobs_result(rmx_jobs *j, const char *id, int png, unsigned char **data, size_t *len, rmx_job_view *v);

const char *rmx_job_state_name(rmx_job_state s);

#endif
