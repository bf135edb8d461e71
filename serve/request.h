/* Requests of the inference service as JSON (jansson), shared by remixer-serve and remixer-lambda:
 * a JSON object -> rmx_generate_request / rmx_remix_request with the programs' defaults and range
 * checks, errors that name the field, and the /api/info document.
 *
 * Usage (a generate request):
 *   rmx_request_limits lim;
 *   rmx_request_default_limits(&lim);                  // or from --max-seconds etc.
 *   json_error_t je;
 *   json_t *body = json_loadb(text, len, 0, &je);      // NULL: rmx_request_bad_json(&je, &e)
 *   rmx_generate_request r;
 *   rmx_request_error e;
 *   if (rmx_request_generate(service, body, &lim, &r, &e) != 0) {
 *       json_t *doc = rmx_request_error_json(&e);      // {"error": "...", "field": "genre"}
 *       ... answer e.status (400, 422) with doc ...
 *   }
 *   // r.genre points into body: keep body until the job is done
 *
 * A remix: rmx_request_remix reads the numbers (strength, style_scale, style_offset, steps, seed,
 * iterations) and leaves the audio to the caller (remixer-serve: multipart uploads);
 * rmx_request_remix_base64 also decodes "original" and "style" as base64 strings (remixer-lambda).
 * Multipart text fields become JSON values through rmx_request_form_value ("12" -> 12), so both
 * front ends check them in one place.
 *
 * Status codes: 400 for a body that is not a JSON object, a field of the wrong type, an unknown
 * field, an upload that is missing, empty or not audio; 422 for a value out of range, an unknown
 * genre, an original longer than the limit, an operation this checkpoint does not offer; 413 is
 * the front end's (uploads over the size limit). */
#ifndef RMX_REQUEST_H
#define RMX_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "infer/service.h"

typedef struct {
    double max_seconds;      /* longest clip to generate, longest original to remix */
    int max_steps;           /* DDIM steps */
    int max_iterations;      /* Griffin-Lim iterations */
    size_t max_upload_bytes; /* per request body (the front end enforces it: 413) */
    int workers, max_queue;  /* reported in /api/info */
} rmx_request_limits;

typedef struct {
    int status;          /* HTTP status: 400, 404, 413, 422, 503, 500 */
    char field[64];      /* the field at fault, "" when none */
    char message[1536];
} rmx_request_error;

/* max_seconds 30, max_steps 1000, max_iterations 1000, 20 MiB, 1 worker, queue 8. */
void rmx_request_default_limits(rmx_request_limits *l);

/* 0, or -1 with e filled. Fields: genre (string, required), seconds, steps, cfg, seed, iterations. */
int rmx_request_generate(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                         rmx_generate_request *out, rmx_request_error *e);
/* The numeric fields of a remix into out (defaults for absent ones; out->max_seconds from l);
 * out->original / style are left NULL. Fields beyond those in `extra_fields` (NULL-terminated,
 * may be NULL) are refused as unknown. */
int rmx_request_remix(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                      const char *const *extra_fields, rmx_remix_request *out, rmx_request_error *e);
/* rmx_request_remix plus "original" and "style" as base64 strings (required) and the optional
 * strings "original_name" and "style_name"; *original and *style are malloc'd (the caller frees
 * them, also on failure) and out points into them and into body. */
int rmx_request_remix_base64(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                             rmx_remix_request *out, unsigned char **original, unsigned char **style,
                             rmx_request_error *e);

/* Standard base64 (padding optional, whitespace skipped): 0, or -1 for a character outside the
 * alphabet or a bad length. *out is malloc'd. */
int rmx_request_base64_decode(const char *text, size_t len, unsigned char **out, size_t *outlen);

/* A multipart text field as a JSON value: an integer or a finite number when the whole text is
 * one, else a string. New reference. */
json_t *rmx_request_form_value(const char *text);

/* e for a body jansson could not parse (400, field "body"). */
void rmx_request_bad_json(const json_error_t *je, rmx_request_error *e);
/* e from what rmx_service_generate / _remix returned (BAD_INPUT 400 or 422, UNSUPPORTED 422,
 * FAILED 500, CANCELLED 503); the field from the message. */
void rmx_request_from_service(rmx_svc_status st, const char *err, rmx_request_error *e);
void rmx_request_set_error(rmx_request_error *e, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error": message, "field": field} (field omitted when empty). New reference. */
json_t *rmx_request_error_json(const rmx_request_error *e);

/* The /api/info document: {"stage", "operations": [...], "genres": [...], "model": {checkpoint,
 * step, device, sample_rate, n_mels, hop_length, segment_seconds, timesteps, parameters},
 * "defaults": {generate: {...}, remix: {...}}, "limits": {...}}. New reference. */
json_t *rmx_request_info_json(const rmx_service *s, const rmx_request_limits *l);

#endif
