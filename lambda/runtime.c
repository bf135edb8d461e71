/* The AWS Lambda Runtime API client (lambda/runtime.h). */
#include "lambda/runtime.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

struct rmx_lambda_runtime {
    CURL *curl;  /* one handle: its connection to the endpoint is kept alive between calls */
    char base[512];
};

/* A growing buffer for a response body. */
typedef struct {
    char *data;
    size_t len, cap;
    int oom;
} body_buf;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    body_buf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return 0; /* curl reports a write error */
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Copies the value of header `name` (case-insensitive) out of one header line, trimmed. */
static void header_value(const char *line, size_t n, const char *name, char *out, size_t outlen) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t len = (size_t)(end - v) < outlen - 1 ? (size_t)(end - v) : outlen - 1;
    memcpy(out, v, len);
    out[len] = '\0';
}

typedef struct {
    rmx_lambda_invocation *inv;
    char deadline[32];
} next_headers;

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata) {
    next_headers *h = userdata;
    size_t n = size * nmemb;
    header_value(line, n, "Lambda-Runtime-Aws-Request-Id", h->inv->request_id, sizeof h->inv->request_id);
    header_value(line, n, "Lambda-Runtime-Deadline-Ms", h->deadline, sizeof h->deadline);
    header_value(line, n, "Lambda-Runtime-Invoked-Function-Arn", h->inv->function_arn, sizeof h->inv->function_arn);
    header_value(line, n, "Lambda-Runtime-Trace-Id", h->inv->trace_id, sizeof h->inv->trace_id);
    return n;
}

rmx_lambda_runtime *rmx_lambda_runtime_open(const char *api, char *err, size_t errlen) {
    if (!api || !*api) {
        rmx_seterr(err, errlen, "AWS_LAMBDA_RUNTIME_API is not set: this program runs as the bootstrap of a Lambda "
                   "custom runtime, where Lambda sets it to the Runtime API's host:port");
        return NULL;
    }
    if (strchr(api, '/') || strlen(api) > 256) {
        rmx_seterr(err, errlen, "AWS_LAMBDA_RUNTIME_API: expected host:port, got '%s'", api);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rmx_seterr(err, errlen, "libcurl failed to initialise");
        return NULL;
    }
    rmx_lambda_runtime *rt = calloc(1, sizeof *rt);
    if (rt) rt->curl = curl_easy_init();
    if (!rt || !rt->curl) {
        free(rt);
        rmx_seterr(err, errlen, "out of memory starting the Runtime API client");
        return NULL;
    }
    snprintf(rt->base, sizeof rt->base, "http://%s/2018-06-01/runtime", api);
    return rt;
}

void rmx_lambda_runtime_close(rmx_lambda_runtime *rt) {
    if (!rt) return;
    curl_easy_cleanup(rt->curl);
    free(rt);
    curl_global_cleanup();
}

/* One request on the kept handle: GET when body is NULL, else POST of body, with `headers` (freed
 * here). Returns the HTTP status, or -1 with the transfer's error in err. The answer's body lands in
 * out (when given). */
static long perform(rmx_lambda_runtime *rt, const char *url, const char *body, size_t len, struct curl_slist *headers,
                    curl_write_callback on_header_fn, void *header_ctx, body_buf *out, char *err, size_t errlen) {
    CURL *c = rt->curl;
    curl_easy_reset(c);
    body_buf sink = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 0L); /* /next blocks for as long as there is no event */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out ? out : &sink);
    if (on_header_fn) {
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header_fn);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, header_ctx);
    }
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    /* no "Expect: 100-continue" round trip before a large body */
    struct curl_slist *h = curl_slist_append(headers, "Expect:");
    if (!h) {
        curl_slist_free_all(headers);
        free(sink.data);
        rmx_seterr(err, errlen, "out of memory");
        return -1;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        rmx_seterr(err, errlen, "%s %s: %s", body ? "POST" : "GET", url, curl_easy_strerror(rc));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    free(sink.data);
    return status;
}

int rmx_lambda_next(rmx_lambda_runtime *rt, rmx_lambda_invocation *inv, char *err, size_t errlen) {
    memset(inv, 0, sizeof *inv);
    char url[600];
    snprintf(url, sizeof url, "%s/invocation/next", rt->base);
    next_headers h = {.inv = inv};
    body_buf b = {0};
    long status = perform(rt, url, NULL, 0, NULL, on_header, &h, &b, err, errlen);
    if (status < 0 || b.oom) {
        free(b.data);
        return b.oom ? rmx_seterr(err, errlen, "out of memory receiving an event") : -1;
    }
    if (status != 200 || !inv->request_id[0]) {
        rmx_seterr(err, errlen, "GET %s: status %ld%s: %.300s", url, status,
                   inv->request_id[0] ? "" : " without Lambda-Runtime-Aws-Request-Id", b.data ? b.data : "");
        free(b.data);
        return -1;
    }
    inv->deadline_ms = h.deadline[0] ? strtoll(h.deadline, NULL, 10) : 0;
    inv->event = b.data ? b.data : strdup("");
    inv->event_len = b.len;
    if (inv->trace_id[0])
        setenv("_X_AMZN_TRACE_ID", inv->trace_id, 1);
    else
        unsetenv("_X_AMZN_TRACE_ID");
    return inv->event ? 0 : rmx_seterr(err, errlen, "out of memory");
}

void rmx_lambda_invocation_free(rmx_lambda_invocation *inv) {
    free(inv->event);
    inv->event = NULL;
}

/* The answer of a post: 202 accepted, 4xx refused (the invocation goes on without it), else fatal. */
static rmx_lambda_post post(rmx_lambda_runtime *rt, const char *url, const char *body, size_t len,
                            struct curl_slist *headers, char *err, size_t errlen) {
    body_buf b = {0};
    long status = perform(rt, url, body, len, headers, NULL, NULL, &b, err, errlen);
    rmx_lambda_post r = status == 202 ? RMX_LAMBDA_ACCEPTED
                        : status >= 400 && status < 500 ? RMX_LAMBDA_REFUSED
                                                        : RMX_LAMBDA_FATAL;
    if (r != RMX_LAMBDA_ACCEPTED && status >= 0)
        rmx_seterr(err, errlen, "POST %s: status %ld: %.300s", url, status, b.data ? b.data : "");
    free(b.data);
    return r;
}

/* The URL of an invocation's route; the request id escaped, since it becomes part of the path. */
static int invocation_url(rmx_lambda_runtime *rt, const char *request_id, const char *route, char *url, size_t n) {
    char *id = curl_easy_escape(rt->curl, request_id, 0);
    if (!id) return -1;
    snprintf(url, n, "%s/invocation/%s/%s", rt->base, id, route);
    curl_free(id);
    return 0;
}

rmx_lambda_post rmx_lambda_respond(rmx_lambda_runtime *rt, const char *request_id, const char *body, size_t len,
                                   char *err, size_t errlen) {
    char url[800];
    if (invocation_url(rt, request_id, "response", url, sizeof url) != 0) {
        rmx_seterr(err, errlen, "out of memory");
        return RMX_LAMBDA_FATAL;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    return post(rt, url, body, len, h, err, errlen);
}

/* POSTs {errorMessage, errorType} with the error-type header to url. */
static rmx_lambda_post post_error(rmx_lambda_runtime *rt, const char *url, const char *type, const char *message,
                                  char *err, size_t errlen) {
    json_t *doc = json_pack("{s:s, s:s, s:[]}", "errorMessage", message, "errorType", type, "stackTrace");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    char header[256];
    snprintf(header, sizeof header, "Lambda-Runtime-Function-Error-Type: %s", type);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h2 = h ? curl_slist_append(h, header) : NULL;
    if (!text || !h2) {
        free(text);
        curl_slist_free_all(h);
        rmx_seterr(err, errlen, "out of memory");
        return RMX_LAMBDA_FATAL;
    }
    rmx_lambda_post r = post(rt, url, text, strlen(text), h2, err, errlen);
    free(text);
    return r;
}

rmx_lambda_post rmx_lambda_fail(rmx_lambda_runtime *rt, const char *request_id, const char *type,
                                const char *message, char *err, size_t errlen) {
    char url[800];
    if (invocation_url(rt, request_id, "error", url, sizeof url) != 0) {
        rmx_seterr(err, errlen, "out of memory");
        return RMX_LAMBDA_FATAL;
    }
    return post_error(rt, url, type, message, err, errlen);
}

rmx_lambda_post rmx_lambda_init_error(rmx_lambda_runtime *rt, const char *type, const char *message, char *err,
                                      size_t errlen) {
    char url[600];
    snprintf(url, sizeof url, "%s/init/error", rt->base);
    return post_error(rt, url, type, message, err, errlen);
}
