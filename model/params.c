#include "model/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/rng.h"

static void params_abort(const char *what, const char *name) {
    fprintf(stderr, "remixer: internal error: parameter registry: %s '%s'\n", what, name);
    abort();
}

void rmx_params_init(rmx_params *p, rmx_backend *be, int trained, uint64_t init_stream) {
    memset(p, 0, sizeof *p);
    p->be = be;
    p->trained = trained;
    p->init_stream = init_stream;
}

void rmx_params_free(rmx_params *p) {
    float *buffers[5] = {p->data, p->grad, p->m, p->v, p->ema};
    for (int i = 0; i < 5; i++)
        if (buffers[i]) p->be->free(p->be, buffers[i]);
    free(p->info);
    memset(p, 0, sizeof *p);
}

int rmx_params_add(rmx_params *p, const char *name, int ndim, const int64_t *shape,
                   rmx_init_kind init, float init_value) {
    if (p->data) params_abort("tensor added after finalize", name);
    if (ndim < 1 || ndim > RMX_PARAM_MAX_DIMS) params_abort("bad rank for", name);
    if (strlen(name) >= RMX_PARAM_NAME_MAX) params_abort("name too long", name);
    if (rmx_params_find(p, name) >= 0) params_abort("duplicate name", name);
    if (p->count == p->capacity) {
        p->capacity = p->capacity ? 2 * p->capacity : 64;
        p->info = realloc(p->info, (size_t)p->capacity * sizeof *p->info);
        if (!p->info) params_abort("out of memory adding", name);
    }
    rmx_param_info *t = &p->info[p->count];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    t->decay = p->trained && ndim >= 2;
    t->init = init;
    t->init_value = init_value;
    p->numel += t->numel;
    return p->count++;
}

static size_t align_up(size_t n) { return (n + RMX_PARAM_ALIGN - 1) / RMX_PARAM_ALIGN * RMX_PARAM_ALIGN; }

void rmx_params_finalize(rmx_params *p) {
    size_t offset = 0;
    /* Two passes over the registration order: decayed tensors first, then the rest. */
    for (int pass = 1; pass >= 0; pass--) {
        for (int i = 0; i < p->count; i++) {
            if (p->info[i].decay != pass) continue;
            p->info[i].offset = offset;
            offset += align_up(p->info[i].numel);
        }
        if (pass == 1) p->n_decay = offset;
    }
    p->span = offset ? offset : RMX_PARAM_ALIGN; /* never a zero-byte allocation */
    size_t bytes = p->span * sizeof(float);
    p->data = p->be->alloc(p->be, bytes);
    if (p->trained) {
        p->grad = p->be->alloc(p->be, bytes);
        p->m = p->be->alloc(p->be, bytes);
        p->v = p->be->alloc(p->be, bytes);
    }
}

void rmx_params_initialize(rmx_params *p, uint64_t seed) {
    float *host = calloc(p->span, sizeof *host);
    if (!host) params_abort("out of memory initialising", "");
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = &p->info[i];
        float *dst = host + t->offset;
        for (size_t e = 0; e < t->numel; e++) {
            if (t->init == RMX_INIT_CONST) {
                dst[e] = t->init_value;
            } else if (t->init == RMX_INIT_NORMAL) {
                dst[e] = t->init_value *
                         rmx_normal(seed, RMX_RNG_INIT, p->init_stream, (uint64_t)i, (uint32_t)e);
            } else {
                uint32_t bits = rmx_u32(seed, RMX_RNG_INIT, p->init_stream, (uint64_t)i, (uint32_t)e);
                dst[e] = t->init_value * (2.0f * rmx_u01(bits) - 1.0f);
            }
        }
    }
    p->be->to_backend(p->be, p->data, host, p->span * sizeof(float));
    free(host);
    if (p->ema) p->be->copy(p->be, p->ema, p->data, p->span * sizeof(float));
    if (p->trained) {
        p->be->fill(p->be, p->grad, 0.0f, p->span);
        p->be->fill(p->be, p->m, 0.0f, p->span);
        p->be->fill(p->be, p->v, 0.0f, p->span);
    }
}

void rmx_params_alloc_ema(rmx_params *p) {
    if (!p->data) params_abort("EMA requested before finalize", "");
    if (!p->ema) p->ema = p->be->alloc(p->be, p->span * sizeof(float));
    p->be->copy(p->be, p->ema, p->data, p->span * sizeof(float));
}

int rmx_params_find(const rmx_params *p, const char *name) {
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->info[i].name, name) == 0) return i;
    return -1;
}

void rmx_params_zero_grad(rmx_params *p) {
    if (p->grad) p->be->fill(p->be, p->grad, 0.0f, p->span);
}

const char *rmx_params_describe(const rmx_params *p, int id, char *buf, size_t buflen) {
    const rmx_param_info *t = &p->info[id];
    int used = snprintf(buf, buflen, "%s [", t->name);
    for (int d = 0; d < t->ndim && used >= 0 && (size_t)used < buflen; d++)
        used += snprintf(buf + used, buflen - (size_t)used, "%s%lld", d ? ", " : "",
                         (long long)t->shape[d]);
    if (used >= 0 && (size_t)used < buflen) snprintf(buf + used, buflen - (size_t)used, "]");
    return buf;
}
