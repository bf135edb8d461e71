/* remixer-serve's HTTP side (libmicrohttpd): the routes, uploads, limits and JSON answers.
 *
 *   GET  /, /app.js, /style.css     the page (built into the binary)
 *   GET  /healthz                   {"status": "ok"} (503 "stopping" while it stops)
 *   GET  /api/info                  serve/request.h's info document
 *   POST /api/generate              JSON (or a form): 202 {"id", "state", ...}
 *   POST /api/remix                 multipart: files original and style, fields as JSON numbers;
 *                                   or JSON with base64 original and style
 *   GET  /api/jobs/ID               {"id", "operation", "state", "progress", "queue_position", ...}
 *   GET  /api/jobs/ID/audio.wav     the result (409 while it runs)
 *   GET  /api/jobs/ID/mel.png       its spectrogram
 *
 * Bodies are counted as they arrive and never buffered beyond limits.max_upload_bytes: a
 * Content-Length over it is answered 413 before the body is read, a chunked body over it is
 * discarded and answered 413. */
#ifndef RMX_SERVE_API_H
#define RMX_SERVE_API_H

#include "infer/service.h"
#include "serve/jobs.h"
#include "serve/request.h"

typedef struct {
    rmx_service *service;
    rmx_jobs *jobs;
    rmx_request_limits limits;
    volatile int stopping; /* /healthz says so, new jobs are refused */
} rmx_api;

struct MHD_Daemon;
/* The daemon on host:port (port 0: any free one) with a connection timeout of timeout_s; NULL
 * with a message. *bound_port: the port it listens on. */
struct MHD_Daemon *rmx_api_start(rmx_api *api, const char *host, int port, int timeout_s, int *bound_port, char *err,
                                 size_t errlen);

#endif
