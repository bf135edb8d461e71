/* remixer-serve's HTTP side (serve/api.h). */
#include "serve/api.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve/assets.h"
#include "util/log.h"

enum {
    POST_BUFFER = 64 * 1024, /* the post processor's buffer */
    TEXT_FIELD_MAX = 4096,   /* a multipart text field */
    RETRY_AFTER_S = 2,
};

/* ---- one request's state across the handler's calls ---- */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int present;
    char name[RMX_UPLOAD_NAME_MAX];
} upload;

typedef struct {
    int route;             /* ROUTE_GENERATE or ROUTE_REMIX */
    size_t received;
    int too_large;
    char *body;            /* a JSON body */
    size_t body_len;
    struct MHD_PostProcessor *pp;
    json_t *fields;        /* form text fields as JSON values */
    char key[64], text[TEXT_FIELD_MAX + 1];
    size_t text_len;
    int text_too_long;
    upload original, style;
    rmx_request_error e;   /* a form error found while parsing */
} request_state;

enum { ROUTE_GENERATE = 1, ROUTE_REMIX = 2 };

static void free_state(request_state *r) {
    if (!r) return;
    if (r->pp) MHD_destroy_post_processor(r->pp);
    json_decref(r->fields);
    free(r->body);
    free(r->original.data);
    free(r->style.data);
    free(r);
}

/* The state of a request without a body of interest (GET, or a method answered 405): its answer is
 * queued on the handler's second call, once MHD has the whole request, so that the connection may
 * stay open for the next request (an answer queued on the first call makes MHD close it). */
static char g_no_body;

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    if (*con_cls != &g_no_body) free_state(*con_cls);
    *con_cls = NULL;
}

/* ---- answers ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, void *data, size_t len,
                             enum MHD_ResponseMemoryMode mode, int retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *doc, int retry_after) {
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) return MHD_NO;
    return reply(c, status, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE, retry_after);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, const rmx_request_error *e) {
    return reply_json(c, (unsigned)e->status, rmx_request_error_json(e), e->status == 503 ? RETRY_AFTER_S : 0);
}

__attribute__((format(printf, 4, 5))) static enum MHD_Result fail(struct MHD_Connection *c, int status,
                                                                   const char *field, const char *fmt, ...) {
    rmx_request_error e;
    rmx_request_set_error(&e, status, field, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return reply_error(c, &e);
}

/* ---- the page ---- */

static enum MHD_Result serve_asset(struct MHD_Connection *c, const char *url) {
    for (const rmx_asset *a = rmx_assets; a->path; a++) {
        if (strcmp(a->path, url) != 0) continue;
        struct MHD_Response *r =
            MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
        /* everything the page uses comes from here */
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:");
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ok;
    }
    return fail(c, 404, "", "no such page: %s", url);
}

/* ---- jobs ---- */

static json_t *view_json(const char *id, const rmx_job_view *v) {
    json_t *doc = json_pack("{s:s, s:s, s:s, s:f, s:f, s:f}", "id", id, "operation", v->remix ? "remix" : "generate",
                            "state", rmx_job_state_name(v->state), "progress", v->progress, "wait_seconds", v->wait_s,
                            "run_seconds", v->run_s);
    if (v->state == RMX_JOB_QUEUED) json_object_set_new(doc, "queue_position", json_integer(v->queue_position));
    if (v->state == RMX_JOB_DONE) {
        char url[128];
        json_object_set_new(doc, "seconds", json_real(v->seconds));
        snprintf(url, sizeof url, "/api/jobs/%s/audio.wav", id);
        json_object_set_new(doc, "audio", json_string(url));
        snprintf(url, sizeof url, "/api/jobs/%s/mel.png", id);
        json_object_set_new(doc, "mel", json_string(url));
    }
    if (v->state == RMX_JOB_FAILED || v->state == RMX_JOB_CANCELLED) {
        json_object_set_new(doc, "error", json_string(v->error.message));
        if (v->error.field[0]) json_object_set_new(doc, "field", json_string(v->error.field));
        json_object_set_new(doc, "status", json_integer(v->error.status));
    }
    return doc;
}

static int valid_id(const char *s, size_t len) {
    if (len != RMX_JOB_ID_LEN) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    return 1;
}

/* /api/jobs/ID, /api/jobs/ID/audio.wav, /api/jobs/ID/mel.png */
static enum MHD_Result serve_job(rmx_api *api, struct MHD_Connection *c, const char *rest) {
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!valid_id(rest, idlen)) return fail(c, 404, "id", "id: no such job: %.64s", rest);
    char id[RMX_JOB_ID_LEN + 1];
    memcpy(id, rest, idlen);
    id[idlen] = 0;
    rmx_job_view v;
    if (!slash) {
        if (rmx_jobs_view(api->jobs, id, &v) != 0) return fail(c, 404, "id", "id: no such job (or it expired): %s", id);
        return reply_json(c, 200, view_json(id, &v), 0);
    }
    const int png = !strcmp(slash, "/mel.png");
    if (!png && strcmp(slash, "/audio.wav") != 0)
        return fail(c, 404, "", "no such resource: %.80s (audio.wav or mel.png)", slash + 1);
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = rmx_jobs_result(api->jobs, id, png, &data, &len, &v);
    if (rc < 0) return fail(c, 404, "id", "id: no such job (or it expired): %s", id);
    if (rc > 0) {
        rmx_request_error e;
        if (v.state == RMX_JOB_FAILED || v.state == RMX_JOB_CANCELLED) e = v.error;
        else rmx_request_set_error(&e, 409, "", "the job is %s: no result yet", rmx_job_state_name(v.state));
        if (e.status < 400) e.status = 409;
        return reply_error(c, &e);
    }
    return reply(c, 200, png ? "image/png" : "audio/wav", data, len, MHD_RESPMEM_MUST_FREE, 0);
}

/* ---- uploads ---- */

static int append(upload *u, const char *data, size_t size) {
    if (u->len + size + 1 > u->cap) {
        size_t cap = u->cap ? u->cap : 65536;
        while (cap < u->len + size + 1) cap *= 2;
        unsigned char *bigger = realloc(u->data, cap);
        if (!bigger) return -1;
        u->data = bigger;
        u->cap = cap;
    }
    memcpy(u->data + u->len, data, size);
    u->len += size;
    return 0;
}

/* The last path component of an upload's file name, printable ASCII only (it lands in WAV
 * metadata). */
static void upload_name(const char *filename, const char *fallback, char *out, size_t len) {
    const char *base = filename && *filename ? filename : fallback;
    for (const char *p = base; *p; p++)
        if (*p == '/' || *p == '\\') base = p + 1;
    size_t n = 0;
    for (const char *p = base; *p && n + 1 < len; p++) out[n++] = (*p >= 32 && *p < 127) ? *p : '_';
    out[n] = 0;
    if (!n) snprintf(out, len, "%s", fallback);
}

static void flush_text(request_state *r) {
    if (!r->key[0]) return;
    r->text[r->text_len] = 0;
    json_object_set_new(r->fields, r->key, rmx_request_form_value(r->text));
    r->key[0] = 0;
    r->text_len = 0;
}

static enum MHD_Result on_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                const char *content_type, const char *transfer_encoding, const char *data,
                                uint64_t off, size_t size) {
    (void)kind, (void)content_type, (void)transfer_encoding;
    request_state *r = cls;
    upload *u = !strcmp(key, "original") ? &r->original : !strcmp(key, "style") ? &r->style : NULL;
    if (u && r->route == ROUTE_REMIX) {
        if (!u->present) upload_name(filename, key, u->name, sizeof u->name);
        u->present = 1;
        if (append(u, data, size) != 0) {
            rmx_request_set_error(&r->e, 500, key, "%s: out of memory for the upload", key);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (off == 0 || strcmp(r->key, key) != 0) {
        flush_text(r);
        snprintf(r->key, sizeof r->key, "%s", key);
    }
    if (r->text_len + size > TEXT_FIELD_MAX) {
        rmx_request_set_error(&r->e, 400, key, "%s: longer than %d bytes", key, TEXT_FIELD_MAX);
        return MHD_NO;
    }
    memcpy(r->text + r->text_len, data, size);
    r->text_len += size;
    return MHD_YES;
}

/* multipart/form-data goes through the post processor; any other body is read as JSON (so that
 * `curl -d '{...}'`, which says x-www-form-urlencoded, works). */
static int is_form(const char *type) {
    return type && !strncasecmp(type, MHD_HTTP_POST_ENCODING_MULTIPART_FORMDATA,
                                strlen(MHD_HTTP_POST_ENCODING_MULTIPART_FORMDATA));
}

/* The first call of a POST: 413 now when Content-Length is over the limit, else the state. */
static enum MHD_Result begin_post(rmx_api *api, struct MHD_Connection *c, int route, void **con_cls) {
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(length, &end, 10);
        if (errno || end == length || n > api->limits.max_upload_bytes) {
            return fail(c, 413, "body", "body: larger than the limit of %zu bytes", api->limits.max_upload_bytes);
        }
    }
    request_state *r = calloc(1, sizeof *r);
    if (!r || !(r->fields = json_object())) {
        free(r);
        return MHD_NO;
    }
    r->route = route;
    const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (is_form(type) && !(r->pp = MHD_create_post_processor(c, POST_BUFFER, on_field, r))) {
        free_state(r);
        return fail(c, 400, "body", "body: a form this server cannot parse (%s)", type);
    }
    *con_cls = r;
    return MHD_YES;
}

/* A chunk of the body: counted, then parsed or buffered while within the limit. */
static enum MHD_Result body_chunk(rmx_api *api, request_state *r, const char *data, size_t size) {
    r->received += size;
    if (r->too_large || r->received > api->limits.max_upload_bytes) {
        r->too_large = 1; /* discarded; answered 413 at the end */
        return MHD_YES;
    }
    if (r->e.status) return MHD_YES;
    if (r->pp) {
        if (MHD_post_process(r->pp, data, size) != MHD_YES && !r->e.status)
            rmx_request_set_error(&r->e, 400, "body", "body: a malformed form");
        return MHD_YES;
    }
    char *bigger = realloc(r->body, r->body_len + size + 1);
    if (!bigger) return MHD_NO;
    r->body = bigger;
    memcpy(r->body + r->body_len, data, size);
    r->body_len += size;
    r->body[r->body_len] = 0;
    return MHD_YES;
}

/* The request as a JSON object: the form's fields, or the parsed body. NULL with e set. */
static json_t *request_json(request_state *r, rmx_request_error *e) {
    if (r->pp) {
        flush_text(r);
        return json_incref(r->fields);
    }
    json_error_t je;
    json_t *doc = json_loadb(r->body ? r->body : "", r->body_len, 0, &je);
    if (!doc) rmx_request_bad_json(&je, e);
    return doc;
}

static enum MHD_Result submit(rmx_api *api, struct MHD_Connection *c, rmx_job_spec *spec) {
    char id[RMX_JOB_ID_LEN + 1];
    rmx_request_error e;
    if (api->stopping) {
        free(spec->original), free(spec->style);
        rmx_request_set_error(&e, 503, "", "the server is stopping");
        return reply_error(c, &e);
    }
    if (rmx_jobs_submit(api->jobs, spec, id, &e) != 0) return reply_error(c, &e);
    rmx_job_view v;
    if (rmx_jobs_view(api->jobs, id, &v) != 0) memset(&v, 0, sizeof v);
    return reply_json(c, 202, view_json(id, &v), 0);
}

static enum MHD_Result finish_generate(rmx_api *api, struct MHD_Connection *c, json_t *doc) {
    rmx_job_spec spec;
    memset(&spec, 0, sizeof spec);
    rmx_request_error e;
    if (rmx_request_generate(api->service, doc, &api->limits, &spec.generate, &e) != 0) {
        json_decref(doc);
        return reply_error(c, &e);
    }
    snprintf(spec.genre, sizeof spec.genre, "%s", spec.generate.genre);
    json_decref(doc);
    return submit(api, c, &spec);
}

static enum MHD_Result finish_remix(rmx_api *api, struct MHD_Connection *c, request_state *r, json_t *doc) {
    rmx_job_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.remix = 1;
    rmx_request_error e;
    int rc;
    if (r->pp) {
        rc = rmx_request_remix(api->service, doc, &api->limits, NULL, &spec.rmx, &e);
        /* the uploads move into the job */
        if (r->original.present) spec.original = r->original.data ? r->original.data : calloc(1, 1);
        if (r->style.present) spec.style = r->style.data ? r->style.data : calloc(1, 1);
        spec.rmx.original_len = r->original.len, spec.rmx.style_len = r->style.len;
        snprintf(spec.original_name, sizeof spec.original_name, "%s", r->original.name);
        snprintf(spec.style_name, sizeof spec.style_name, "%s", r->style.name);
        r->original.data = r->style.data = NULL;
    } else {
        rc = rmx_request_remix_base64(api->service, doc, &api->limits, &spec.rmx, &spec.original, &spec.style, &e);
        if (rc == 0) {
            upload_name(spec.rmx.original_name, "original", spec.original_name, sizeof spec.original_name);
            upload_name(spec.rmx.style_name, "style", spec.style_name, sizeof spec.style_name);
        }
    }
    json_decref(doc);
    if (rc == 0 && (!spec.original || !spec.style)) {
        const char *missing = spec.original ? "style" : "original";
        rmx_request_set_error(&e, 400, missing, "%s: required (an audio file)", missing);
        rc = -1;
    }
    if (rc != 0) {
        free(spec.original), free(spec.style);
        return reply_error(c, &e);
    }
    return submit(api, c, &spec);
}

static enum MHD_Result finish_post(rmx_api *api, struct MHD_Connection *c, request_state *r) {
    if (r->too_large) {
        return fail(c, 413, "body", "body: larger than the limit of %zu bytes", api->limits.max_upload_bytes);
    }
    if (r->e.status) return reply_error(c, &r->e);
    rmx_request_error e;
    json_t *doc = request_json(r, &e);
    if (!doc) return reply_error(c, &e);
    return r->route == ROUTE_GENERATE ? finish_generate(api, c, doc) : finish_remix(api, c, r, doc);
}

/* ---- routing ---- */

static enum MHD_Result serve_get(rmx_api *api, struct MHD_Connection *c, const char *url) {
    if (!strcmp(url, "/healthz")) {
        if (api->stopping) return reply_json(c, 503, json_pack("{s:s}", "status", "stopping"), RETRY_AFTER_S);
        return reply_json(c, 200, json_pack("{s:s}", "status", "ok"), 0);
    }
    if (!strcmp(url, "/api/info")) return reply_json(c, 200, rmx_request_info_json(api->service, &api->limits), 0);
    if (!strncmp(url, "/api/jobs/", 10)) return serve_job(api, c, url + 10);
    if (!strncmp(url, "/api/", 5)) return fail(c, 404, "", "no such endpoint: %.100s", url);
    return serve_asset(c, url);
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *c, const char *allow) {
    rmx_request_error e;
    rmx_request_set_error(&e, 405, "method", "method: this resource takes %s", allow);
    json_t *doc = rmx_request_error_json(&e);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ok = MHD_queue_response(c, 405, r);
    MHD_destroy_response(r);
    return ok;
}

static int post_route(const char *url) {
    return !strcmp(url, "/api/generate") ? ROUTE_GENERATE : !strcmp(url, "/api/remix") ? ROUTE_REMIX : 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    (void)version;
    rmx_api *api = cls;
    const int route = post_route(url);
    if (*con_cls == &g_no_body) {
        if (*upload_data_size) { /* a body nobody asked for: read and dropped */
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (route) return method_not_allowed(c, "POST");
        if (!strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD)) return serve_get(api, c, url);
        return method_not_allowed(c, "GET, HEAD");
    }
    if (*con_cls) { /* the body of a POST, then its end */
        request_state *r = *con_cls;
        if (*upload_data_size) {
            enum MHD_Result ok = body_chunk(api, r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return ok;
        }
        return finish_post(api, c, r);
    }
    if (!strcmp(method, MHD_HTTP_METHOD_POST) && route) return begin_post(api, c, route, con_cls);
    *con_cls = &g_no_body;
    return MHD_YES;
}

/* ---- the daemon ---- */

static void on_panic(void *cls, const char *file, unsigned line, const char *reason) {
    (void)cls;
    rmx_error("libmicrohttpd: %s:%u: %s", file, line, reason ? reason : "internal error");
    abort();
}

struct MHD_Daemon *rmx_api_start(rmx_api *api, const char *host, int port, int timeout_s, int *bound_port, char *err,
                                 size_t errlen) {
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        rmx_seterr(err, errlen, "--host: expected an IPv4 or IPv6 address, got '%s'", host);
        return NULL;
    }
    MHD_set_panic_func(on_panic, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, api, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
        MHD_OPTION_END);
    if (!d) {
        rmx_seterr(err, errlen, "cannot listen on %s port %d: %s", host, port, strerror(errno));
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : port;
    return d;
}
