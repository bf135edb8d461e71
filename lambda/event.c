/* HTTP events in, response objects out (lambda/event.h). */
#include "lambda/event.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "serve/request.h"
#include "util/log.h"

/* The keys of an object, comma-separated, for a message about an event of another shape. */
static void list_keys(const json_t *obj, char *out, size_t n) {
    const char *key;
    json_t *value;
    size_t used = 0;
    out[0] = '\0';
    json_object_foreach((json_t *)obj, key, value) {
        (void)value;
        int w = snprintf(out + used, n - used, "%s%s", used ? ", " : "", key);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
}

/* The string at a chain of object keys (NULL-terminated), or NULL. */
static const char *string_at(const json_t *obj, const char *const *keys) {
    for (; *keys && obj; keys++) obj = json_object_get(obj, *keys);
    return json_is_string(obj) ? json_string_value(obj) : NULL;
}

/* The last non-empty segment of path ("/prod/api/generate/" -> "generate"). */
static void last_segment(const char *path, char *out, size_t n) {
    size_t end = strlen(path);
    while (end > 0 && path[end - 1] == '/') end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t len = end - start < n - 1 ? end - start : n - 1;
    memcpy(out, path + start, len);
    out[len] = '\0';
}

static int parse_body(const json_t *event, rmx_lambda_http *out, char *err, size_t errlen) {
    const json_t *body = json_object_get(event, "body");
    const json_t *b64 = json_object_get(event, "isBase64Encoded");
    if (body && !json_is_string(body) && !json_is_null(body))
        return rmx_seterr(err, errlen, "event: body: expected a string or null, got another type");
    if (b64 && !json_is_boolean(b64))
        return rmx_seterr(err, errlen, "event: isBase64Encoded: expected true or false");
    const char *text = json_is_string(body) ? json_string_value(body) : "";
    size_t len = json_is_string(body) ? json_string_length(body) : 0;
    if (json_is_true(b64)) {
        unsigned char *raw;
        size_t n;
        if (rmx_request_base64_decode(text, len, &raw, &n) != 0)
            return rmx_seterr(err, errlen, "event: body: isBase64Encoded is true but the body is not base64");
        out->body = realloc(raw, n + 1);
        if (!out->body) {
            free(raw);
            return rmx_seterr(err, errlen, "out of memory");
        }
        out->body_len = n;
    } else {
        out->body = malloc(len + 1);
        if (!out->body) return rmx_seterr(err, errlen, "out of memory");
        memcpy(out->body, text, len);
        out->body_len = len;
    }
    out->body[out->body_len] = '\0';
    return 0;
}

int rmx_lambda_http_parse(const char *text, size_t len, rmx_lambda_http *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    json_error_t je;
    out->event = json_loadb(text, len, 0, &je);
    if (!out->event)
        return rmx_seterr(err, errlen, "event: not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    if (!json_is_object(out->event)) {
        rmx_lambda_http_free(out);
        return rmx_seterr(err, errlen, "event: expected a JSON object (a function URL or API Gateway event)");
    }
    static const char *const raw_path[] = {"rawPath", NULL}, *const path_v1[] = {"path", NULL};
    static const char *const method_v2[] = {"requestContext", "http", "method", NULL}, *const method_v1[] = {
                                                                                         "httpMethod", NULL};
    out->path = string_at(out->event, raw_path);
    if (!out->path) out->path = string_at(out->event, path_v1);
    out->method = string_at(out->event, method_v2);
    if (!out->method) out->method = string_at(out->event, method_v1);
    if (!out->path || !out->method) {
        char keys[512];
        list_keys(out->event, keys, sizeof keys);
        rmx_lambda_http_free(out);
        return rmx_seterr(err, errlen,
                          "event: expected a function URL or API Gateway event (rawPath and requestContext.http.method, "
                          "or path and httpMethod), got the keys: %s",
                          keys[0] ? keys : "(none)");
    }
    last_segment(out->path, out->route, sizeof out->route);
    if (parse_body(out->event, out, err, errlen) != 0) {
        rmx_lambda_http_free(out);
        return -1;
    }
    return 0;
}

void rmx_lambda_http_free(rmx_lambda_http *h) {
    json_decref(h->event);
    free(h->body);
    memset(h, 0, sizeof *h);
}

char *rmx_lambda_response(int status, json_t *headers, const char *body, int is_base64, size_t *len) {
    json_t *doc = json_object();
    if (!headers) headers = json_object();
    char *text = NULL;
    if (doc && headers &&
        json_object_set_new(doc, "statusCode", json_integer(status)) == 0 &&
        json_object_set(doc, "headers", headers) == 0 &&
        json_object_set_new(doc, "body", json_string_nocheck(body)) == 0 &&
        json_object_set_new(doc, "isBase64Encoded", json_boolean(is_base64)) == 0)
        text = json_dumps(doc, JSON_COMPACT);
    json_decref(headers);
    json_decref(doc);
    if (text) *len = strlen(text);
    return text;
}

char *rmx_lambda_response_json(int status, json_t *doc, json_t *headers, size_t *len) {
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!headers) headers = json_object();
    if (!body || !headers || json_object_set_new(headers, "Content-Type", json_string("application/json")) != 0) {
        free(body);
        json_decref(headers);
        return NULL;
    }
    char *text = rmx_lambda_response(status, headers, body, 0, len);
    free(body);
    return text;
}

char *rmx_lambda_response_binary(int status, const char *content_type, const void *data, size_t n, json_t *headers,
                                 size_t *len) {
    /* OpenSSL's encoder (libcurl links libcrypto, so it is in the package anyway) takes an int */
    char *b64 = n <= (size_t)INT_MAX / 4 * 3 ? malloc((n + 2) / 3 * 4 + 1) : NULL;
    if (!headers) headers = json_object();
    if (!b64 || !headers || json_object_set_new(headers, "Content-Type", json_string(content_type)) != 0) {
        free(b64);
        json_decref(headers);
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)b64, data, (int)n);
    char *text = rmx_lambda_response(status, headers, b64, 1, len);
    free(b64);
    return text;
}
