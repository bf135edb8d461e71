/* One Lambda invocation of the inference service (lambda/handler.h). */
#include "lambda/handler.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lambda/event.h"
#include "util/log.h"

int64_t rmx_lambda_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void function_error(rmx_lambda_outcome *out, const char *type, const char *message) {
    out->error_type = type;
    snprintf(out->error_message, sizeof out->error_message, "%s", message);
    snprintf(out->summary, sizeof out->summary, "%s", type);
}

/* The outcome's response, or an InternalError when building it ran out of memory. */
static void set_response(rmx_lambda_outcome *out, int status, char *text, size_t len) {
    if (!text) return function_error(out, "Remixer.InternalError", "out of memory building the response");
    out->response = text;
    out->response_len = len;
    out->status = status;
}

static void respond_error(rmx_lambda_outcome *out, const rmx_request_error *e, json_t *headers) {
    size_t len = 0;
    char *text = rmx_lambda_response_json(e->status, rmx_request_error_json(e), headers, &len);
    set_response(out, e->status, text, len);
    snprintf(out->summary, sizeof out->summary, "%d: %.200s", e->status, e->message);
}

static void not_allowed(rmx_lambda_outcome *out, const rmx_lambda_http *req, const char *allow) {
    rmx_request_error e;
    rmx_request_set_error(&e, 405, "", "method: %s %s is not allowed, use %s", req->method, req->path, allow);
    respond_error(out, &e, json_pack("{s:s}", "Allow", allow));
}

/* ---- the deadline ---- */

typedef struct {
    int64_t deadline_ms, margin_ms;
    double fraction; /* of the job done when it was last asked */
} deadline_watch;

int rmx_lambda_deadline_near(int64_t deadline_ms, int64_t margin_ms) {
    return deadline_ms > 0 && rmx_lambda_now_ms() >= deadline_ms - margin_ms;
}

static int deadline_near(const deadline_watch *w) { return rmx_lambda_deadline_near(w->deadline_ms, w->margin_ms); }

/* The service's progress callback: a nonzero return stops the job before the deadline passes, so
 * that its error can still be reported (past the deadline Lambda kills the process). */
static int watch_deadline(void *ctx, double fraction) {
    deadline_watch *w = ctx;
    w->fraction = fraction;
    return deadline_near(w);
}

/* started: whether the job ran (and was stopped) or was refused before it began. */
static void timed_out(rmx_lambda_outcome *out, const deadline_watch *w, int started) {
    char msg[512];
    long long left = (long long)(w->deadline_ms - rmx_lambda_now_ms());
    if (started)
        snprintf(msg, sizeof msg,
                 "deadline: stopped with %.0f%% of the job done, %lld ms before the invocation's deadline (the "
                 "function's timeout); raise the timeout or ask for fewer seconds or steps",
                 100 * w->fraction, left);
    else
        snprintf(msg, sizeof msg,
                 "deadline: %lld ms left before the invocation's deadline, less than the %lld-ms margin; the job was "
                 "not started",
                 left, (long long)w->margin_ms);
    function_error(out, "Remixer.Timeout", msg);
}

/* ---- answers ---- */

/* A name safe inside a Content-Disposition filename. */
static void safe_name(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; in[k] && k + 1 < n; k++) {
        char c = in[k];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.';
        out[k] = ok ? c : '_';
    }
    out[k] = '\0';
}

/* 200 with the WAV, or a 413 when the response would exceed the limit: `field` names what to ask
 * less of. */
static void respond_wav(const rmx_lambda_handler *h, rmx_lambda_outcome *out, const rmx_service_result *res,
                        const char *filename, const char *field) {
    char disposition[256];
    snprintf(disposition, sizeof disposition, "inline; filename=\"%s\"", filename);
    size_t len = 0;
    char *text = rmx_lambda_response_binary(200, "audio/wav", res->wav, res->wav_len,
                                            json_pack("{s:s}", "Content-Disposition", disposition), &len);
    if (!text || len <= h->max_response) {
        set_response(out, 200, text, len);
        snprintf(out->summary, sizeof out->summary, "200: %.2f s of audio, %zu-byte WAV, %zu-byte response",
                 res->seconds, res->wav_len, len);
        return;
    }
    /* the audio's share of the response grows with its length; the rest is fixed */
    size_t audio = (res->wav_len + 2) / 3 * 4, fixed = len - audio;
    double fits = h->max_response > fixed ? res->seconds * (double)(h->max_response - fixed) / (double)audio : 0;
    free(text);
    rmx_request_error e;
    rmx_request_set_error(&e, 413, field,
                          "%s: %.2f s of audio make a %zu-byte response (a %zu-byte WAV, base64-encoded), over Lambda's "
                          "limit of %zu bytes for a synchronous response; %s at most %.1f s",
                          field, res->seconds, len, res->wav_len, h->max_response,
                          strcmp(field, "original") ? "ask for" : "send an original of", floor(fits * 10) / 10);
    respond_error(out, &e, NULL);
}

/* What the service returned -> the outcome. */
static void finish(const rmx_lambda_handler *h, rmx_lambda_outcome *out, rmx_svc_status st, const char *err,
                   const rmx_service_result *res, const deadline_watch *w, const char *filename, const char *field) {
    if (st == RMX_SVC_OK) return respond_wav(h, out, res, filename, field);
    if (st == RMX_SVC_CANCELLED) return timed_out(out, w, 1);
    if (st == RMX_SVC_FAILED) return function_error(out, "Remixer.InternalError", err);
    rmx_request_error e;
    rmx_request_from_service(st, err, &e);
    respond_error(out, &e, NULL);
}

/* The request body as a JSON document, or NULL after answering 400. */
static json_t *json_body(const rmx_lambda_http *req, rmx_lambda_outcome *out) {
    json_error_t je;
    json_t *body = json_loadb((const char *)req->body, req->body_len, 0, &je);
    if (!body) {
        rmx_request_error e;
        rmx_request_bad_json(&je, &e);
        respond_error(out, &e, NULL);
    }
    return body;
}

static void generate(const rmx_lambda_handler *h, const rmx_lambda_http *req, deadline_watch *w,
                     rmx_lambda_outcome *out) {
    json_t *body = json_body(req, out);
    if (!body) return;
    rmx_generate_request r;
    rmx_request_error e;
    if (rmx_request_generate(h->service, body, &h->limits, &r, &e) != 0) {
        respond_error(out, &e, NULL);
    } else {
        char err[2048] = "", genre[64], filename[128];
        rmx_service_result res = {0};
        rmx_svc_status st = rmx_service_generate(h->service, &r, watch_deadline, w, &res, err, sizeof err);
        safe_name(r.genre, genre, sizeof genre);
        snprintf(filename, sizeof filename, "%s-%llu.wav", genre, (unsigned long long)r.seed);
        finish(h, out, st, err, &res, w, filename, "seconds");
        if (st == RMX_SVC_OK) rmx_service_result_free(&res);
    }
    json_decref(body);
}

static void remix(const rmx_lambda_handler *h, const rmx_lambda_http *req, deadline_watch *w, rmx_lambda_outcome *out) {
    json_t *body = json_body(req, out);
    if (!body) return;
    rmx_remix_request r;
    rmx_request_error e;
    unsigned char *original = NULL, *style = NULL;
    if (rmx_request_remix_base64(h->service, body, &h->limits, &r, &original, &style, &e) != 0) {
        respond_error(out, &e, NULL);
    } else {
        char err[2048] = "";
        rmx_service_result res = {0};
        rmx_svc_status st = rmx_service_remix(h->service, &r, watch_deadline, w, &res, err, sizeof err);
        char filename[64];
        snprintf(filename, sizeof filename, "remix-%llu.wav", (unsigned long long)r.seed);
        finish(h, out, st, err, &res, w, filename, "original");
        if (st == RMX_SVC_OK) rmx_service_result_free(&res);
    }
    free(original);
    free(style);
    json_decref(body);
}

static void info(const rmx_lambda_handler *h, rmx_lambda_outcome *out) {
    json_t *doc = rmx_request_info_json(h->service, &h->limits);
    json_t *limits = json_object_get(doc, "limits");
    if (json_is_object(limits)) json_object_set_new(limits, "max_response_bytes", json_integer((json_int_t)h->max_response));
    size_t len = 0;
    char *text = rmx_lambda_response_json(200, doc, NULL, &len);
    set_response(out, 200, text, len);
}

static void route(const rmx_lambda_handler *h, const rmx_lambda_http *req, deadline_watch *w, rmx_lambda_outcome *out) {
    int post = !strcmp(req->method, "POST"), get = !strcmp(req->method, "GET");
    const char *r = req->route;
    if (!strcmp(r, "generate") || !strcmp(r, "remix")) {
        if (!post) return not_allowed(out, req, "POST");
        if (deadline_near(w)) return timed_out(out, w, 0);
        return r[0] == 'g' ? generate(h, req, w, out) : remix(h, req, w, out);
    }
    if (!strcmp(r, "info") || !r[0]) return get ? info(h, out) : not_allowed(out, req, "GET");
    rmx_request_error e;
    rmx_request_set_error(&e, 404, "", "path: no route %s, expected POST /generate, POST /remix or GET /info",
                          req->path);
    respond_error(out, &e, NULL);
}

void rmx_lambda_handle(const rmx_lambda_handler *h, const char *event, size_t event_len, int64_t deadline_ms,
                       rmx_lambda_outcome *out) {
    memset(out, 0, sizeof *out);
    char err[1024];
    rmx_lambda_http req;
    if (rmx_lambda_http_parse(event, event_len, &req, err, sizeof err) != 0)
        return function_error(out, "Remixer.InvalidEvent", err);
    deadline_watch w = {.deadline_ms = deadline_ms, .margin_ms = h->deadline_margin_ms};
    route(h, &req, &w, out);
    if (out->response && !out->summary[0]) snprintf(out->summary, sizeof out->summary, "%d", out->status);
    char line[sizeof out->summary];
    snprintf(line, sizeof line, "%.16s %.80s -> %.150s", req.method, req.path, out->summary);
    memcpy(out->summary, line, sizeof line);
    rmx_lambda_http_free(&req);
}
