/* HTTP requests as Lambda delivers them, and the response objects it expects back.
 *
 * In: the events of a function URL and of an API Gateway HTTP API (payload format 2.0: rawPath,
 * requestContext.http.method) or REST API (1.0: path, httpMethod); the body is text, or base64
 * when isBase64Encoded is true (binary content types).
 * Out: {statusCode, headers, body, isBase64Encoded}, which function URLs and both API types turn
 * into the HTTP response; binary bodies (a WAV) travel base64-encoded with isBase64Encoded true. */
#ifndef RMX_LAMBDA_EVENT_H
#define RMX_LAMBDA_EVENT_H

#include <jansson.h>
#include <stddef.h>

typedef struct {
    json_t *event;        /* the whole event (owned) */
    const char *method;   /* "GET", "POST", ... (points into event) */
    const char *path;     /* as the client sent it, stage prefix included (points into event) */
    char route[64];       /* the path's last segment ("generate"), "" for the root */
    unsigned char *body;  /* decoded, NUL-terminated (malloc'd; "" when the event has none) */
    size_t body_len;
} rmx_lambda_http;

/* 0, or -1 with the reason in err when the event is not an HTTP event of the forms above (not
 * JSON, no path or method, a body that is neither a string nor null, isBase64Encoded with a body
 * that is not base64). */
int rmx_lambda_http_parse(const char *text, size_t len, rmx_lambda_http *out, char *err, size_t errlen);
void rmx_lambda_http_free(rmx_lambda_http *h);

/* A response object as JSON text (malloc'd; *len its length), NULL when out of memory. headers: a
 * JSON object of header -> string (stolen; NULL for none). body is put in as is: base64 text when
 * is_base64. */
char *rmx_lambda_response(int status, json_t *headers, const char *body, int is_base64, size_t *len);
/* A JSON document (stolen) as the response's application/json body. */
char *rmx_lambda_response_json(int status, json_t *doc, json_t *headers, size_t *len);
/* Binary content (e.g. a WAV) base64-encoded into the response, isBase64Encoded true. */
char *rmx_lambda_response_binary(int status, const char *content_type, const void *data, size_t n, json_t *headers,
                                 size_t *len);

#endif
