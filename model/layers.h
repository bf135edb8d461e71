/* Building blocks with explicit forward and backward: convolution, GroupNorm + SiLU, the ResBlock,
 * nearest-x2 upsample + convolution. No autograd: each block keeps the activations its backward
 * needs (carved from the model's arena) and remembers the input of its last forward.
 *
 * Memory: a SiLU output is read only by the conv right after it, and a shortcut conv's output
 * only by the add after it, so both live in ONE shared scratch tensor (ctx->scratch) instead of
 * a tensor per layer; the backward recomputes a SiLU output into the scratch just before the
 * conv backward that needs it (one cheap element-wise pass; about a sixth of the arena saved).
 *
 * Gradient conventions follow kernels/backend.h: input gradients are written, weight gradients
 * accumulate into the registry's flat gradient buffer, and a frozen context (remix stage) skips the
 * weight gradients but still propagates input gradients. */
#ifndef RMX_LAYERS_H
#define RMX_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/params.h"

/* GroupNorm as in latent diffusion: g = min(8, channels) groups, eps 1e-6. */
#define RMX_GN_MAX_GROUPS 8
#define RMX_GN_EPS 1e-6f

/* Activation memory: ONE backend allocation, carved into tensors at creation. The model is
 * planned twice: a first pass with base == NULL only counts bytes (and the largest conv
 * workspace), the second hands out pointers into the allocation. */
typedef struct {
    rmx_backend *be;
    char *base;       /* NULL while counting */
    size_t used;      /* bytes */
    size_t workspace; /* floats: the largest conv2d_workspace of any planned conv */
    size_t largest;   /* floats: the largest tensor handed out so far */
    int batch;        /* micro-batch capacity m: every tensor is sized for it */
} rmx_arena;

float *rmx_arena_floats(rmx_arena *a, size_t n);
int32_t *rmx_arena_ints(rmx_arena *a, size_t n);

/* What a forward/backward call needs besides the block itself. */
typedef struct {
    rmx_backend *be;
    const rmx_params *params;
    int frozen;       /* 1: weight gradients skipped */
    float *workspace; /* conv scratch of arena.workspace floats */
    float *scratch;   /* transient activations, the size of the largest activation */
    /* Called with a tensor's number once its weight gradient of this backward pass has been
     * accumulated (NULL: nobody listens). Every parameter is used once per pass, so the trainer
     * can start reducing a gradient bucket while the rest of the backward pass runs. */
    void (*grad_ready)(void *arg, int tensor);
    void *grad_ready_arg;
} rmx_layer_ctx;

/* ---- convolution [cout, cin, k, k] + bias [cout], PyTorch's default init ---- */
typedef struct {
    int weight, bias; /* tensor numbers in the registry */
    int cin, cout, k, stride, pad;
    int h, w, hout, wout; /* planned input and output size */
    float *out;           /* [m, cout, hout, wout], or NULL: the output goes to ctx->scratch */
    const float *x;       /* input of the last forward */
} rmx_conv;

void rmx_conv_register(rmx_conv *c, rmx_params *p, const char *name, int cin, int cout, int k,
                       int stride, int pad);
void rmx_conv_plan(rmx_conv *c, rmx_arena *a, int h, int w);
/* Like rmx_conv_plan, for an output read once right away: it goes to ctx->scratch. */
void rmx_conv_plan_transient(rmx_conv *c, rmx_arena *a, int h, int w);
const float *rmx_conv_forward(const rmx_layer_ctx *ctx, rmx_conv *c, int n, const float *x);
/* dx written (NULL: skip). */
void rmx_conv_backward(const rmx_layer_ctx *ctx, const rmx_conv *c, int n, const float *dy,
                       float *dx);

/* ---- GroupNorm(min(8, c), c) followed by SiLU ---- */
typedef struct {
    int weight, bias;
    int c, groups, hw;
    float *norm, *mean, *rstd; /* the GroupNorm output and statistics; the SiLU output is transient */
    const float *x;
} rmx_norm_act;

void rmx_norm_act_register(rmx_norm_act *na, rmx_params *p, const char *name, int c);
void rmx_norm_act_plan(rmx_norm_act *na, rmx_arena *a, int hw);
/* Returns the SiLU output, in ctx->scratch: to be consumed before the next transient output. */
const float *rmx_norm_act_forward(const rmx_layer_ctx *ctx, rmx_norm_act *na, int n, const float *x);
/* Writes the last forward's SiLU output into ctx->scratch again (before the backward of the conv
 * that read it). */
void rmx_norm_act_recompute(const rmx_layer_ctx *ctx, const rmx_norm_act *na, int n);
/* dx written; dx may be the same buffer as dout; tmp is scratch of the same size. */
void rmx_norm_act_backward(const rmx_layer_ctx *ctx, const rmx_norm_act *na, int n,
                           const float *dout, float *dx, float *tmp);

/* ---- ResBlock(cin, cout): out = skip(x) + conv2(act2(conv1(act1(x)))) ---- */
typedef struct {
    int cin, cout, h, w;
    rmx_norm_act act1, act2;
    rmx_conv conv1, conv2;
    rmx_conv skip; /* 1x1, only when cin != cout */
    int has_skip;
} rmx_resblock;

/* Registers <name>.norm1, .conv1, .norm2, .conv2 and (cin != cout) .skip. */
void rmx_resblock_register(rmx_resblock *rb, rmx_params *p, const char *name, int cin, int cout);
void rmx_resblock_plan(rmx_resblock *rb, rmx_arena *a, int h, int w);
/* Returns the block's output [n, cout, h, w] (arena memory). */
const float *rmx_resblock_forward(const rmx_layer_ctx *ctx, rmx_resblock *rb, int n, const float *x);
/* dx written; dout, dx, tmp1, tmp2 and ctx->scratch are distinct buffers of at least
 * n*max(cin,cout)*h*w floats. */
void rmx_resblock_backward(const rmx_layer_ctx *ctx, const rmx_resblock *rb, int n,
                           const float *dout, float *dx, float *tmp1, float *tmp2);

/* ---- nearest x2 upsample followed by Conv3x3(c, c) (the decoder's upsample keeps channels) ---- */
typedef struct {
    int c, h, w; /* input size, before upsampling */
    float *up;   /* [m, c, 2h, 2w] */
    rmx_conv conv;
} rmx_upsample;

void rmx_upsample_register(rmx_upsample *u, rmx_params *p, const char *name, int c);
void rmx_upsample_plan(rmx_upsample *u, rmx_arena *a, int h, int w);
const float *rmx_upsample_forward(const rmx_layer_ctx *ctx, rmx_upsample *u, int n, const float *x);
/* dx written; tmp is scratch of n*c*4hw floats. */
void rmx_upsample_backward(const rmx_layer_ctx *ctx, const rmx_upsample *u, int n,
                           const float *dout, float *dx, float *tmp);

#endif
