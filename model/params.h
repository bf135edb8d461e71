/* The parameter registry: every tensor of a model, named and shaped as PyTorch would, lives at an
 * offset in ONE flat float buffer. One flat buffer each for the values, the gradients and Adam's
 * m and v means one all-reduce, one optimizer call and one checkpoint loop.
 *
 * Layout: tensors whose weight decay applies (ndim >= 2: conv kernels, linear matrices) come first,
 * in registration order, then the rest (biases, norm gains), also in registration order, so that
 * AdamW's n_decay split (kernels/backend.h) is one number. Every tensor starts at a multiple of
 * RMX_PARAM_ALIGN floats (padding floats are zero and never read as parameters); `numel` counts
 * parameters only, `span` the buffer length including the padding.
 *
 * Two kinds of registry:
 *   trained  values + gradients + Adam m + Adam v (the optimiser updates these), and an EMA of
 *            the values once rmx_params_alloc_ema is called (stage 2's EMA weights);
 *   state    values only: tensors updated by other rules (the VQ codebook and its EMA
 *            statistics), which AdamW must never touch.
 *
 * Iteration (checkpoints, the PyTorch mapping) is by tensor number 0 .. count-1 in registration
 * order, which is the order of the modules in the PyTorch twin.
 *
 * Initialisation is deterministic and rank-independent: element e of tensor number i is drawn
 * from the counter-based stream (seed, RMX_RNG_INIT, step = the registry's stream, index = i,
 * n = e) (util/rng.h), so the same seed gives the same model on every rank and on every backend:
 * RMX_INIT_UNIFORM maps the word rmx_u32(..) to U(-value, value), RMX_INIT_NORMAL takes
 * rmx_normal(..) (the e-th normal of that stream) times value. */
#ifndef RMX_PARAMS_H
#define RMX_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#define RMX_PARAM_NAME_MAX 96
#define RMX_PARAM_MAX_DIMS 4
#define RMX_PARAM_ALIGN 16 /* floats: 64-byte boundaries for vector loads and coalesced access */

typedef enum {
    RMX_INIT_UNIFORM, /* U(-value, value): PyTorch's conv/linear default with value 1/sqrt(fan_in),
                       * xavier-uniform with value sqrt(6 / (fan_in + fan_out)) */
    RMX_INIT_CONST,   /* every element = value (GroupNorm weight 1, bias 0) */
    RMX_INIT_NORMAL,  /* N(0, value^2): value is the standard deviation (DiT's embeddings, 0.02) */
} rmx_init_kind;

typedef struct {
    char name[RMX_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[RMX_PARAM_MAX_DIMS];
    size_t numel;
    size_t offset;  /* in floats, into the registry's flat buffers */
    int decay;      /* 1: AdamW's weight decay applies (trained registry and ndim >= 2) */
    rmx_init_kind init;
    float init_value;
} rmx_param_info;

typedef struct {
    rmx_backend *be;
    int trained;          /* 1: grad, m, v exist */
    uint64_t init_stream; /* the `step` field of this registry's init stream */
    rmx_param_info *info;
    int count, capacity;
    size_t numel;   /* parameters, without padding */
    size_t span;    /* floats in each flat buffer, with padding */
    size_t n_decay; /* floats [0, n_decay) of the buffers hold the decayed tensors */
    float *data, *grad, *m, *v; /* backend memory after finalize; grad/m/v NULL for state */
    float *ema;                 /* backend memory after rmx_params_alloc_ema, else NULL */
} rmx_params;

/* An empty registry. `init_stream` separates registries of one model in the init stream. */
void rmx_params_init(rmx_params *p, rmx_backend *be, int trained, uint64_t init_stream);
void rmx_params_free(rmx_params *p);

/* Registers a tensor; returns its number. Before rmx_params_finalize only. Aborts on a duplicate
 * name (a programming error, not a user error). */
int rmx_params_add(rmx_params *p, const char *name, int ndim, const int64_t *shape,
                   rmx_init_kind init, float init_value);

/* Fixes the layout (decayed first) and allocates the flat buffers through the backend. */
void rmx_params_finalize(rmx_params *p);

/* Writes every tensor's initial values (see the file comment); zeroes grad, m and v; an EMA
 * buffer, when allocated, restarts as a copy of the new values. */
void rmx_params_initialize(rmx_params *p, uint64_t seed);

/* Allocates the EMA buffer (span floats, same layout as the values) after finalize and sets it to
 * the current values (an EMA starts as a copy of the weights); again: copies again. Freed by
 * rmx_params_free. */
void rmx_params_alloc_ema(rmx_params *p);

/* The tensor number of `name`, or -1. */
int rmx_params_find(const rmx_params *p, const char *name);

static inline const rmx_param_info *rmx_params_get(const rmx_params *p, int id) {
    return &p->info[id];
}
static inline float *rmx_params_data(const rmx_params *p, int id) {
    return p->data + p->info[id].offset;
}
/* NULL for a state registry. */
static inline float *rmx_params_grad(const rmx_params *p, int id) {
    return p->grad ? p->grad + p->info[id].offset : NULL;
}

/* NULL without an EMA buffer. */
static inline float *rmx_params_ema(const rmx_params *p, int id) {
    return p->ema ? p->ema + p->info[id].offset : NULL;
}

/* Zeroes the gradient buffer (start of an optimiser step). */
void rmx_params_zero_grad(rmx_params *p);

/* "enc.down.0.res.0.conv1.weight [64, 32, 3, 3]" into buf; returns buf. */
const char *rmx_params_describe(const rmx_params *p, int id, char *buf, size_t buflen);

#endif
