/* One Lambda invocation of the inference service: an HTTP event (lambda/event.h) -> the service
 * (infer/service.h, requests checked by serve/request.h) -> a response object, or a function error.
 *
 * Routes (the path's last segment, so a stage prefix or /api/ in front does not matter):
 *   POST .../generate   JSON body {genre, seconds, steps, cfg, seed, iterations} -> 200 audio/wav
 *   POST .../remix      JSON body {original, style (base64 audio files), strength, style_scale,
 *                       style_offset, steps, seed, iterations, original_name, style_name} -> 200 audio/wav
 *   GET  .../info or /  the /api/info document of remixer-serve -> 200 application/json
 * The WAV travels base64-encoded (isBase64Encoded true). A bad request is a response object with
 * a 4xx status and {"error", "field"} (as remixer-serve answers); a response that would exceed the
 * synchronous payload limit is replaced by a 413 of that form, so it is never sent.
 * Function errors (posted to /error, the client sees a 502): an event that is not an HTTP event
 * (Remixer.InvalidEvent), a job stopped because the invocation's deadline came near
 * (Remixer.Timeout), a failure of the service itself (Remixer.InternalError). */
#ifndef RMX_LAMBDA_HANDLER_H
#define RMX_LAMBDA_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#include "infer/service.h"
#include "serve/request.h"

/* Lambda's limit on a synchronous response, as its error message gives it ("exceeded maximum
 * allowed payload size (6291556 bytes)"). */
#define RMX_LAMBDA_MAX_RESPONSE ((size_t)6291556)

typedef struct {
    rmx_service *service;
    rmx_request_limits limits;
    size_t max_response;         /* bytes of a response payload */
    int64_t deadline_margin_ms;  /* a job still running this long before the deadline is stopped */
} rmx_lambda_handler;

typedef struct {
    char *response;           /* the payload for /response (malloc'd), or NULL: a function error */
    size_t response_len;
    int status;               /* the response's statusCode (for the log) */
    const char *error_type;   /* with response NULL: Remixer.InvalidEvent / Timeout / InternalError */
    char error_message[2048];
    char summary[256];        /* one line for the log: route and what came of it */
} rmx_lambda_outcome;

/* deadline_ms: the invocation's deadline (Unix ms; 0: none). The outcome's response is freed by
 * the caller. */
void rmx_lambda_handle(const rmx_lambda_handler *h, const char *event, size_t event_len, int64_t deadline_ms,
                       rmx_lambda_outcome *out);

/* Milliseconds since the Unix epoch (the clock of Lambda-Runtime-Deadline-Ms). */
int64_t rmx_lambda_now_ms(void);

/* Whether a deadline (Unix ms; 0: none) is now within margin_ms: a job is then not started, and a
 * running one is stopped at its next cancellation point. */
int rmx_lambda_deadline_near(int64_t deadline_ms, int64_t margin_ms);

#endif
