/* The last resort against an invocation's deadline. The handler stops a job at the service's next
 * cancellation point once the deadline is near (lambda/handler.h), but a job can run on for a
 * while before it reaches one (the sampler, the vocoder), and past the deadline Lambda kills the
 * process without a word. So a thread watches the invocation in progress: if it is still
 * unanswered at its deadline minus `lead_ms`, the thread posts a Remixer.Timeout error for it and
 * ends the process (exit 1); Lambda starts a fresh runtime for the next event, as after its own
 * timeout, and the log and the error say what happened. */
#ifndef RMX_LAMBDA_WATCHDOG_H
#define RMX_LAMBDA_WATCHDOG_H

#include <stdint.h>

#include "lambda/runtime.h"

typedef struct rmx_lambda_watchdog rmx_lambda_watchdog;

/* NULL when the thread cannot start. rt is used only while an invocation is armed and unanswered
 * (the main thread is then inside the job, not on the Runtime API). */
rmx_lambda_watchdog *rmx_lambda_watchdog_start(rmx_lambda_runtime *rt, int64_t lead_ms);
void rmx_lambda_watchdog_stop(rmx_lambda_watchdog *w);

/* Watches request_id until rmx_lambda_watchdog_disarm; deadline_ms 0: no deadline, nothing to do. */
void rmx_lambda_watchdog_arm(rmx_lambda_watchdog *w, const char *request_id, int64_t deadline_ms);
/* The job is done: the caller answers the invocation. Never returns once the watchdog has fired
 * (the process is ending). */
void rmx_lambda_watchdog_disarm(rmx_lambda_watchdog *w);

#endif
