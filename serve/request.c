/* Requests of the inference service as JSON (serve/request.h). */
#include "serve/request.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rmx_request_default_limits(rmx_request_limits *l) {
    *l = (rmx_request_limits){.max_seconds = 30, .max_steps = 1000, .max_iterations = 1000,
                              .max_upload_bytes = (size_t)20 << 20, .workers = 1, .max_queue = 8};
}

void rmx_request_set_error(rmx_request_error *e, int status, const char *field, const char *fmt, ...) {
    e->status = status;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

json_t *rmx_request_error_json(const rmx_request_error *e) {
    json_t *doc = json_pack("{s:s}", "error", e->message);
    if (e->field[0]) json_object_set_new(doc, "field", json_string(e->field));
    return doc;
}

void rmx_request_bad_json(const json_error_t *je, rmx_request_error *e) {
    rmx_request_set_error(e, 400, "body", "body: not valid JSON: %s (line %d, column %d)", je->text, je->line,
                          je->column);
}

void rmx_request_from_service(rmx_svc_status st, const char *err, rmx_request_error *e) {
    char field[64];
    rmx_service_error_field(err, field, sizeof field);
    int status = 500;
    if (st == RMX_SVC_UNSUPPORTED) status = 422;
    else if (st == RMX_SVC_CANCELLED) status = 503;
    else if (st == RMX_SVC_BAD_INPUT)
        /* an upload that is not usable audio is a bad request (400); a value the service judged (a
         * genre, a range, an original over the length limit) is unprocessable (422) */
        status = (!strcmp(field, "original") || !strcmp(field, "style")) && !strstr(err, "more than the limit") ? 400
                                                                                                               : 422;
    rmx_request_set_error(e, status, field, "%s", err);
}

/* ---- typed fields ---- */

/* A number field in [lo, hi] (absent: *out unchanged). 0, or -1 with e (400 wrong type, 422 range). */
static int get_number(const json_t *body, const char *name, double lo, double hi, double *out, rmx_request_error *e) {
    const json_t *v = json_object_get(body, name);
    if (!v) return 0;
    if (!json_is_number(v)) {
        rmx_request_set_error(e, 400, name, "%s: expected a number, got %s", name,
                              json_is_string(v) ? "a string" : json_is_boolean(v) ? "a boolean" : "another type");
        return -1;
    }
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        rmx_request_set_error(e, 422, name, "%s: expected a number from %g to %g, got %g", name, lo, hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

/* An integer field in [lo, hi]. */
static int get_integer(const json_t *body, const char *name, long long lo, long long hi, long long *out,
                       rmx_request_error *e) {
    const json_t *v = json_object_get(body, name);
    if (!v) return 0;
    double real = json_is_real(v) ? json_real_value(v) : 0;
    if (!json_is_integer(v) && !(json_is_real(v) && real == floor(real) && fabs(real) < 9007199254740992.0)) {
        rmx_request_set_error(e, 400, name, "%s: expected an integer, got %s", name,
                              json_is_real(v) ? "a fraction" : json_is_string(v) ? "a string" : "another type");
        return -1;
    }
    long long x = json_is_integer(v) ? json_integer_value(v) : (long long)real;
    if (x < lo || x > hi) {
        rmx_request_set_error(e, 422, name, "%s: expected an integer from %lld to %lld, got %lld", name, lo, hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_int(const json_t *body, const char *name, int lo, int hi, int *out, rmx_request_error *e) {
    long long x = *out;
    if (get_integer(body, name, lo, hi, &x, e) != 0) return -1;
    *out = (int)x;
    return 0;
}

static int get_seed(const json_t *body, uint64_t *out, rmx_request_error *e) {
    long long x = (long long)*out;
    if (get_integer(body, "seed", 0, 9007199254740992LL, &x, e) != 0) return -1;
    *out = (uint64_t)x;
    return 0;
}

static int get_string(const json_t *body, const char *name, const char **out, rmx_request_error *e) {
    const json_t *v = json_object_get(body, name);
    if (!v) return 0;
    if (!json_is_string(v)) {
        rmx_request_set_error(e, 400, name, "%s: expected a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* Every key of body is one of `known` or `extra` (NULL-terminated lists). */
static int only_known(const json_t *body, const char *const *known, const char *const *extra, rmx_request_error *e) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++) ok = !strcmp(*k, key);
        for (const char *const *k = extra; k && *k && !ok; k++) ok = !strcmp(*k, key);
        if (!ok) {
            char list[512] = "";
            size_t used = 0;
            for (const char *const *k = known; *k && used < sizeof list; k++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k == known ? "" : ", ", *k);
            rmx_request_set_error(e, 400, key, "%s: unknown field; the fields are %s", key, list);
            return -1;
        }
    }
    return 0;
}

static int require_object(const json_t *body, rmx_request_error *e) {
    if (json_is_object(body)) return 0;
    rmx_request_set_error(e, 400, "body", "body: expected a JSON object");
    return -1;
}

/* ---- generate ---- */

int rmx_request_generate(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                         rmx_generate_request *out, rmx_request_error *e) {
    static const char *const fields[] = {"genre", "seconds", "steps", "cfg", "seed", "iterations", NULL};
    rmx_service_generate_defaults(s, out);
    if (require_object(body, e) || only_known(body, fields, NULL, e)) return -1;
    const rmx_service_info *info = rmx_service_get_info(s);
    if (!info->can_generate) {
        rmx_request_set_error(e, 422, "operation", "operation: generate is not offered by this model (stage %s)",
                              info->stage);
        return -1;
    }
    if (get_string(body, "genre", &out->genre, e) || get_number(body, "seconds", 0.05, l->max_seconds, &out->seconds, e) ||
        get_int(body, "steps", 1, l->max_steps, &out->steps, e) || get_number(body, "cfg", 0, 100, &out->cfg, e) ||
        get_seed(body, &out->seed, e) || get_int(body, "iterations", 0, l->max_iterations, &out->iterations, e))
        return -1;
    if (!out->genre) {
        rmx_request_set_error(e, 400, "genre", "genre: required");
        return -1;
    }
    for (int i = 0; i < info->n_genres; i++)
        if (!strcmp(info->genres[i], out->genre)) return 0;
    char list[RMX_MAX_GENRES * (RMX_GENRE_NAME_MAX + 2)] = "";
    size_t used = 0;
    for (int i = 0; i < info->n_genres && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", info->genres[i]);
    rmx_request_set_error(e, 422, "genre", "genre: unknown '%.200s', expected one of %s", out->genre, list);
    return -1;
}

/* ---- remix ---- */

static const char *const REMIX_FIELDS[] = {"strength", "style_scale", "style_offset", "steps", "seed", "iterations",
                                           NULL};

int rmx_request_remix(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                      const char *const *extra_fields, rmx_remix_request *out, rmx_request_error *e) {
    rmx_service_remix_defaults(s, out);
    out->max_seconds = l->max_seconds;
    if (require_object(body, e) || only_known(body, REMIX_FIELDS, extra_fields, e)) return -1;
    const rmx_service_info *info = rmx_service_get_info(s);
    if (!info->can_remix) {
        rmx_request_set_error(e, 422, "operation", "operation: remix is not offered by this model (stage %s)",
                              info->stage);
        return -1;
    }
    return get_number(body, "strength", 0, 1, &out->strength, e) ||
                   get_number(body, "style_scale", 0, 100, &out->style_scale, e) ||
                   get_number(body, "style_offset", 0, 1e7, &out->style_offset, e) ||
                   get_int(body, "steps", 1, l->max_steps, &out->steps, e) || get_seed(body, &out->seed, e) ||
                   get_int(body, "iterations", 0, l->max_iterations, &out->iterations, e)
               ? -1
               : 0;
}

/* A required base64 audio field. */
static int get_audio(const json_t *body, const char *name, unsigned char **data, size_t *len, rmx_request_error *e) {
    const json_t *v = json_object_get(body, name);
    if (!v) {
        rmx_request_set_error(e, 400, name, "%s: required (the audio file, base64)", name);
        return -1;
    }
    if (!json_is_string(v)) {
        rmx_request_set_error(e, 400, name, "%s: expected a base64 string", name);
        return -1;
    }
    if (rmx_request_base64_decode(json_string_value(v), json_string_length(v), data, len) != 0) {
        rmx_request_set_error(e, 400, name, "%s: not valid base64", name);
        return -1;
    }
    return 0;
}

int rmx_request_remix_base64(const rmx_service *s, const json_t *body, const rmx_request_limits *l,
                             rmx_remix_request *out, unsigned char **original, unsigned char **style,
                             rmx_request_error *e) {
    static const char *const extra[] = {"original", "style", "original_name", "style_name", NULL};
    *original = *style = NULL;
    if (rmx_request_remix(s, body, l, extra, out, e) != 0) return -1;
    if (get_audio(body, "original", original, &out->original_len, e) ||
        get_audio(body, "style", style, &out->style_len, e) ||
        get_string(body, "original_name", &out->original_name, e) || get_string(body, "style_name", &out->style_name, e))
        return -1;
    out->original = *original;
    out->style = *style;
    return 0;
}

/* ---- base64 ---- */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int rmx_request_base64_decode(const char *text, size_t len, unsigned char **out, size_t *outlen) {
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (!buf) return -1;
    size_t n = 0, pads = 0;
    unsigned acc = 0;
    int bits = 0, digits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pads++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pads) { /* a character outside the alphabet, or data after the padding */
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        digits++;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (digits % 4 == 1 || pads > 2) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = n;
    return 0;
}

/* ---- multipart fields ---- */

json_t *rmx_request_form_value(const char *text) {
    char *end = NULL;
    errno = 0;
    long long i = strtoll(text, &end, 10);
    if (*text && !*end && !errno) return json_integer(i);
    errno = 0;
    double d = strtod(text, &end);
    if (*text && !*end && !errno && isfinite(d)) return json_real(d);
    return json_string(text);
}

/* ---- /api/info ---- */

static json_t *genres_json(const rmx_service_info *i) {
    json_t *a = json_array();
    for (int k = 0; k < i->n_genres; k++) json_array_append_new(a, json_string(i->genres[k]));
    return a;
}

/* The file's name without its folder: the server's paths are none of a client's business. */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

json_t *rmx_request_info_json(const rmx_service *s, const rmx_request_limits *l) {
    const rmx_service_info *i = rmx_service_get_info(s);
    json_t *ops = json_array();
    if (i->can_generate) json_array_append_new(ops, json_string("generate"));
    if (i->can_remix) json_array_append_new(ops, json_string("remix"));
    rmx_generate_request g;
    rmx_remix_request r;
    rmx_service_generate_defaults(s, &g);
    rmx_service_remix_defaults(s, &r);
    return json_pack(
        "{s:s, s:o, s:o, s:{s:s, s:I, s:s, s:i, s:i, s:i, s:f, s:i, s:I}, "
        "s:{s:{s:f, s:i, s:f, s:I, s:i}, s:{s:f, s:f, s:f, s:i, s:I, s:i}}, "
        "s:{s:f, s:i, s:i, s:I, s:i, s:i}}",
        "stage", i->stage, "operations", ops, "genres", genres_json(i),
        "model", "checkpoint", base_name(i->checkpoint), "step", (json_int_t)i->step, "device", i->device,
        "sample_rate", i->sample_rate, "n_mels", i->n_mels, "hop_length", i->hop_length,
        "segment_seconds", i->segment_seconds, "timesteps", i->timesteps, "parameters", (json_int_t)i->parameters,
        "defaults", "generate", "seconds", g.seconds, "steps", g.steps, "cfg", g.cfg, "seed", (json_int_t)g.seed,
        "iterations", g.iterations, "remix", "strength", r.strength, "style_scale", r.style_scale, "style_offset",
        r.style_offset, "steps", r.steps, "seed", (json_int_t)r.seed, "iterations", r.iterations,
        "limits", "max_seconds", l->max_seconds, "max_steps", l->max_steps, "max_iterations", l->max_iterations,
        "max_upload_bytes", (json_int_t)l->max_upload_bytes, "workers", l->workers, "max_queue", l->max_queue);
}
