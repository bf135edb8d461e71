/* The AWS Lambda Runtime API client of a custom runtime (libcurl): ask for the next event, post
 * its response or its error, report a failed initialisation.
 * Routes (base http://$AWS_LAMBDA_RUNTIME_API/2018-06-01, docs: lambda/latest/dg/runtimes-api.html):
 *   GET  /runtime/invocation/next             blocks until an event; 200
 *   POST /runtime/invocation/{id}/response    202
 *   POST /runtime/invocation/{id}/error       202; body {errorMessage, errorType}
 *   POST /runtime/init/error                  202
 * The error posts carry the Lambda-Runtime-Function-Error-Type header (errorType, in Lambda's
 * <Category.Reason> form).
 *
 * Usage:
 *   rmx_lambda_runtime *rt = rmx_lambda_runtime_open(getenv("AWS_LAMBDA_RUNTIME_API"), err, errlen);
 *   rmx_lambda_invocation inv;
 *   while (rmx_lambda_next(rt, &inv, err, errlen) == 0) {
 *       ... rmx_lambda_respond(rt, inv.request_id, json, len, err, errlen) or rmx_lambda_fail(...) ...
 *       rmx_lambda_invocation_free(&inv);
 *   } */
#ifndef RMX_LAMBDA_RUNTIME_H
#define RMX_LAMBDA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

typedef struct rmx_lambda_runtime rmx_lambda_runtime;

typedef struct {
    char request_id[128];     /* Lambda-Runtime-Aws-Request-Id */
    int64_t deadline_ms;      /* Lambda-Runtime-Deadline-Ms: Unix time in ms; 0 when absent */
    char function_arn[256];   /* Lambda-Runtime-Invoked-Function-Arn */
    char trace_id[512];       /* Lambda-Runtime-Trace-Id ("" when absent) */
    char *event;              /* the event (malloc'd, NUL-terminated; JSON as Lambda sends it) */
    size_t event_len;
} rmx_lambda_invocation;

/* What a post came to. */
typedef enum {
    RMX_LAMBDA_ACCEPTED = 0, /* 202 */
    RMX_LAMBDA_REFUSED,      /* 4xx (e.g. 413 payload too large): this invocation failed, go on */
    RMX_LAMBDA_FATAL,        /* no answer, 5xx or another status: the runtime should exit */
} rmx_lambda_post;

/* api: host:port, the value of AWS_LAMBDA_RUNTIME_API. NULL with the message in err. */
rmx_lambda_runtime *rmx_lambda_runtime_open(const char *api, char *err, size_t errlen);
void rmx_lambda_runtime_close(rmx_lambda_runtime *rt);

/* Waits (without a time limit, as the docs ask) for the next event. 0, or -1 with the message in
 * err when the Runtime API cannot be reached or answers other than 200 with a request id: the
 * runtime should exit. Sets _X_AMZN_TRACE_ID to the trace id, as the docs ask of custom runtimes. */
int rmx_lambda_next(rmx_lambda_runtime *rt, rmx_lambda_invocation *inv, char *err, size_t errlen);
void rmx_lambda_invocation_free(rmx_lambda_invocation *inv);

/* The invocation's result (body: the response payload, e.g. a function URL's response object). */
rmx_lambda_post rmx_lambda_respond(rmx_lambda_runtime *rt, const char *request_id, const char *body, size_t len,
                                   char *err, size_t errlen);
/* The invocation failed: {errorMessage: message, errorType: type} and the error-type header. */
rmx_lambda_post rmx_lambda_fail(rmx_lambda_runtime *rt, const char *request_id, const char *type,
                                const char *message, char *err, size_t errlen);
/* Initialisation failed (the runtime exits afterwards): the same body on /runtime/init/error. */
rmx_lambda_post rmx_lambda_init_error(rmx_lambda_runtime *rt, const char *type, const char *message, char *err,
                                      size_t errlen);

#endif
