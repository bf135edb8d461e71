/* The deadline's last resort (lambda/watchdog.h). */
#include "lambda/watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lambda/handler.h"
#include "util/exitcodes.h"
#include "util/log.h"

struct rmx_lambda_watchdog {
    rmx_lambda_runtime *rt;
    int64_t lead_ms;
    pthread_t thread;
    pthread_mutex_t lock; /* held by the thread from firing to the end of the process */
    pthread_cond_t changed;
    int armed, stopping;
    char request_id[128];
    int64_t fire_at_ms; /* Unix ms, the clock of the deadline (pthread_cond_timedwait's default) */
};

static void fire(rmx_lambda_watchdog *w) {
    char msg[512], err[512];
    snprintf(msg, sizeof msg,
             "deadline: the job was still running %lld ms before the invocation's deadline (the function's timeout) "
             "and had not reached a point where it can stop; the runtime ends so that Lambda starts a fresh one. "
             "Raise the timeout or ask for fewer seconds or steps",
             (long long)w->lead_ms);
    rmx_error("request %s: %s", w->request_id, msg);
    if (rmx_lambda_fail(w->rt, w->request_id, "Remixer.Timeout", msg, err, sizeof err) != RMX_LAMBDA_ACCEPTED)
        rmx_error("request %s: %s", w->request_id, err);
    fflush(stderr);
    _exit(RMX_EXIT_FAILURE); /* the job's thread is mid-computation: nothing to clean up safely */
}

static void *watch(void *arg) {
    rmx_lambda_watchdog *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        if (!w->armed) {
            pthread_cond_wait(&w->changed, &w->lock);
            continue;
        }
        if (rmx_lambda_now_ms() >= w->fire_at_ms) fire(w);
        struct timespec until = {.tv_sec = w->fire_at_ms / 1000, .tv_nsec = (long)(w->fire_at_ms % 1000) * 1000000};
        pthread_cond_timedwait(&w->changed, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

rmx_lambda_watchdog *rmx_lambda_watchdog_start(rmx_lambda_runtime *rt, int64_t lead_ms) {
    rmx_lambda_watchdog *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->rt = rt;
    w->lead_ms = lead_ms;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->changed, NULL);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->changed);
        free(w);
        return NULL;
    }
    return w;
}

void rmx_lambda_watchdog_stop(rmx_lambda_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->changed);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->changed);
    free(w);
}

void rmx_lambda_watchdog_arm(rmx_lambda_watchdog *w, const char *request_id, int64_t deadline_ms) {
    if (deadline_ms <= 0) return;
    pthread_mutex_lock(&w->lock);
    snprintf(w->request_id, sizeof w->request_id, "%s", request_id);
    w->fire_at_ms = deadline_ms - w->lead_ms;
    w->armed = 1;
    pthread_cond_signal(&w->changed);
    pthread_mutex_unlock(&w->lock);
}

void rmx_lambda_watchdog_disarm(rmx_lambda_watchdog *w) {
    pthread_mutex_lock(&w->lock); /* blocks for good once the thread has fired */
    w->armed = 0;
    pthread_cond_signal(&w->changed);
    pthread_mutex_unlock(&w->lock);
}
