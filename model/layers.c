#include "model/layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Every tensor starts on a 256-byte boundary: full cache lines on the CPU, aligned vector loads
 * and coalesced access on a GPU. */
#define RMX_ARENA_ALIGN 256

static void *arena_take(rmx_arena *a, size_t bytes) {
    void *p = a->base ? a->base + a->used : NULL;
    a->used += (bytes + RMX_ARENA_ALIGN - 1) / RMX_ARENA_ALIGN * RMX_ARENA_ALIGN;
    return p;
}

float *rmx_arena_floats(rmx_arena *a, size_t n) {
    if (n > a->largest) a->largest = n;
    return arena_take(a, n * sizeof(float));
}
int32_t *rmx_arena_ints(rmx_arena *a, size_t n) { return arena_take(a, n * sizeof(int32_t)); }

static float *weight_grad(const rmx_layer_ctx *ctx, int id) {
    return ctx->frozen ? NULL : rmx_params_grad(ctx->params, id);
}

/* After a block's weight and bias gradients are accumulated. */
static void announce_grads(const rmx_layer_ctx *ctx, int weight, int bias) {
    if (ctx->frozen || !ctx->grad_ready) return;
    ctx->grad_ready(ctx->grad_ready_arg, weight);
    ctx->grad_ready(ctx->grad_ready_arg, bias);
}

/* Names are built from fixed module paths, so one that does not fit is a programming error. */
static void join_name(char *buf, size_t len, const char *prefix, const char *suffix) {
    int n = snprintf(buf, len, "%s.%s", prefix, suffix);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "parameter name '%s.%s' is longer than %zu characters\n", prefix, suffix, len - 1);
        abort();
    }
}

/* ---- convolution ---- */

void rmx_conv_register(rmx_conv *c, rmx_params *p, const char *name, int cin, int cout, int k,
                       int stride, int pad) {
    char full[RMX_PARAM_NAME_MAX];
    /* PyTorch's Conv2d default: kaiming_uniform(a = sqrt(5)) gives U(-1/sqrt(fan_in), ..) for
     * the weight, and the bias uses the same bound. */
    float bound = 1.0f / sqrtf((float)(cin * k * k));
    int64_t wshape[4] = {cout, cin, k, k}, bshape[1] = {cout};
    join_name(full, sizeof full, name, "weight");
    c->weight = rmx_params_add(p, full, 4, wshape, RMX_INIT_UNIFORM, bound);
    join_name(full, sizeof full, name, "bias");
    c->bias = rmx_params_add(p, full, 1, bshape, RMX_INIT_UNIFORM, bound);
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    c->stride = stride;
    c->pad = pad;
}

static rmx_conv_shape conv_shape(const rmx_conv *c, int n) {
    return rmx_conv_shape_make(n, c->cin, c->h, c->w, c->cout, c->k, c->stride, c->pad);
}

static void conv_plan_shape(rmx_conv *c, rmx_arena *a, int h, int w) {
    c->h = h;
    c->w = w;
    rmx_conv_shape s = conv_shape(c, a->batch);
    c->hout = s.hout;
    c->wout = s.wout;
    size_t ws = a->be->conv2d_workspace(a->be, &s);
    if (ws > a->workspace) a->workspace = ws;
}

void rmx_conv_plan(rmx_conv *c, rmx_arena *a, int h, int w) {
    conv_plan_shape(c, a, h, w);
    c->out = rmx_arena_floats(a, (size_t)a->batch * c->cout * c->hout * c->wout);
}

void rmx_conv_plan_transient(rmx_conv *c, rmx_arena *a, int h, int w) {
    conv_plan_shape(c, a, h, w);
    c->out = NULL;
}

const float *rmx_conv_forward(const rmx_layer_ctx *ctx, rmx_conv *c, int n, const float *x) {
    rmx_conv_shape s = conv_shape(c, n);
    float *y = c->out ? c->out : ctx->scratch;
    c->x = x;
    ctx->be->conv2d_fwd(ctx->be, &s, x, rmx_params_data(ctx->params, c->weight),
                        rmx_params_data(ctx->params, c->bias), y, ctx->workspace);
    return y;
}

void rmx_conv_backward(const rmx_layer_ctx *ctx, const rmx_conv *c, int n, const float *dy,
                       float *dx) {
    rmx_conv_shape s = conv_shape(c, n);
    ctx->be->conv2d_bwd(ctx->be, &s, c->x, rmx_params_data(ctx->params, c->weight), dy, dx,
                        weight_grad(ctx, c->weight), weight_grad(ctx, c->bias), ctx->workspace);
    announce_grads(ctx, c->weight, c->bias);
}

/* ---- GroupNorm + SiLU ---- */

void rmx_norm_act_register(rmx_norm_act *na, rmx_params *p, const char *name, int c) {
    char full[RMX_PARAM_NAME_MAX];
    int64_t shape[1] = {c};
    join_name(full, sizeof full, name, "weight");
    na->weight = rmx_params_add(p, full, 1, shape, RMX_INIT_CONST, 1.0f);
    join_name(full, sizeof full, name, "bias");
    na->bias = rmx_params_add(p, full, 1, shape, RMX_INIT_CONST, 0.0f);
    na->c = c;
    na->groups = c < RMX_GN_MAX_GROUPS ? c : RMX_GN_MAX_GROUPS;
}

void rmx_norm_act_plan(rmx_norm_act *na, rmx_arena *a, int hw) {
    size_t count = (size_t)a->batch * na->c * hw;
    na->hw = hw;
    na->norm = rmx_arena_floats(a, count);
    na->mean = rmx_arena_floats(a, (size_t)a->batch * na->groups);
    na->rstd = rmx_arena_floats(a, (size_t)a->batch * na->groups);
}

const float *rmx_norm_act_forward(const rmx_layer_ctx *ctx, rmx_norm_act *na, int n, const float *x) {
    rmx_backend *be = ctx->be;
    na->x = x;
    be->groupnorm_fwd(be, n, na->c, na->hw, na->groups, RMX_GN_EPS, x,
                      rmx_params_data(ctx->params, na->weight),
                      rmx_params_data(ctx->params, na->bias), na->norm, na->mean, na->rstd);
    be->silu_fwd(be, (size_t)n * na->c * na->hw, na->norm, ctx->scratch);
    return ctx->scratch;
}

void rmx_norm_act_recompute(const rmx_layer_ctx *ctx, const rmx_norm_act *na, int n) {
    ctx->be->silu_fwd(ctx->be, (size_t)n * na->c * na->hw, na->norm, ctx->scratch);
}

void rmx_norm_act_backward(const rmx_layer_ctx *ctx, const rmx_norm_act *na, int n,
                           const float *dout, float *dx, float *tmp) {
    rmx_backend *be = ctx->be;
    be->silu_bwd(be, (size_t)n * na->c * na->hw, na->norm, dout, tmp);
    be->groupnorm_bwd(be, n, na->c, na->hw, na->groups, na->x,
                      rmx_params_data(ctx->params, na->weight), na->mean, na->rstd, tmp, dx,
                      weight_grad(ctx, na->weight), weight_grad(ctx, na->bias));
    announce_grads(ctx, na->weight, na->bias);
}

/* ---- ResBlock ---- */

void rmx_resblock_register(rmx_resblock *rb, rmx_params *p, const char *name, int cin, int cout) {
    char full[RMX_PARAM_NAME_MAX];
    rb->cin = cin;
    rb->cout = cout;
    join_name(full, sizeof full, name, "norm1");
    rmx_norm_act_register(&rb->act1, p, full, cin);
    join_name(full, sizeof full, name, "conv1");
    rmx_conv_register(&rb->conv1, p, full, cin, cout, 3, 1, 1);
    join_name(full, sizeof full, name, "norm2");
    rmx_norm_act_register(&rb->act2, p, full, cout);
    join_name(full, sizeof full, name, "conv2");
    rmx_conv_register(&rb->conv2, p, full, cout, cout, 3, 1, 1);
    rb->has_skip = cin != cout;
    if (rb->has_skip) {
        join_name(full, sizeof full, name, "skip");
        rmx_conv_register(&rb->skip, p, full, cin, cout, 1, 1, 0);
    }
}

void rmx_resblock_plan(rmx_resblock *rb, rmx_arena *a, int h, int w) {
    rb->h = h;
    rb->w = w;
    rmx_norm_act_plan(&rb->act1, a, h * w);
    rmx_conv_plan(&rb->conv1, a, h, w);
    rmx_norm_act_plan(&rb->act2, a, h * w);
    rmx_conv_plan(&rb->conv2, a, h, w);
    if (rb->has_skip) rmx_conv_plan_transient(&rb->skip, a, h, w);
}

const float *rmx_resblock_forward(const rmx_layer_ctx *ctx, rmx_resblock *rb, int n, const float *x) {
    const float *h = rmx_norm_act_forward(ctx, &rb->act1, n, x);
    h = rmx_conv_forward(ctx, &rb->conv1, n, h);
    h = rmx_norm_act_forward(ctx, &rb->act2, n, h);
    rmx_conv_forward(ctx, &rb->conv2, n, h);
    /* conv2's output buffer doubles as the block's output: out = h + skip(x); the skip conv's
     * output is transient (the SiLU output conv2 read is no longer needed). */
    const float *shortcut = rb->has_skip ? rmx_conv_forward(ctx, &rb->skip, n, x) : x;
    ctx->be->axpy(ctx->be, (size_t)n * rb->cout * rb->h * rb->w, 1.0f, shortcut, rb->conv2.out);
    return rb->conv2.out;
}

void rmx_resblock_backward(const rmx_layer_ctx *ctx, const rmx_resblock *rb, int n,
                           const float *dout, float *dx, float *tmp1, float *tmp2) {
    rmx_backend *be = ctx->be;
    /* The shortcut first: it writes dx, the residual branch then adds into it. */
    if (rb->has_skip)
        rmx_conv_backward(ctx, &rb->skip, n, dout, dx);
    else
        be->copy(be, dx, dout, (size_t)n * rb->cout * rb->h * rb->w * sizeof(float));
    rmx_norm_act_recompute(ctx, &rb->act2, n);
    rmx_conv_backward(ctx, &rb->conv2, n, dout, tmp1);
    rmx_norm_act_backward(ctx, &rb->act2, n, tmp1, tmp1, tmp2);
    rmx_norm_act_recompute(ctx, &rb->act1, n);
    rmx_conv_backward(ctx, &rb->conv1, n, tmp1, tmp2);
    rmx_norm_act_backward(ctx, &rb->act1, n, tmp2, tmp2, tmp1);
    be->axpy(be, (size_t)n * rb->cin * rb->h * rb->w, 1.0f, tmp2, dx);
}

/* ---- nearest x2 upsample + conv ---- */

void rmx_upsample_register(rmx_upsample *u, rmx_params *p, const char *name, int c) {
    u->c = c;
    rmx_conv_register(&u->conv, p, name, c, c, 3, 1, 1);
}

void rmx_upsample_plan(rmx_upsample *u, rmx_arena *a, int h, int w) {
    u->h = h;
    u->w = w;
    u->up = rmx_arena_floats(a, (size_t)a->batch * u->c * 4 * h * w);
    rmx_conv_plan(&u->conv, a, 2 * h, 2 * w);
}

const float *rmx_upsample_forward(const rmx_layer_ctx *ctx, rmx_upsample *u, int n, const float *x) {
    ctx->be->upsample2x_fwd(ctx->be, n, u->c, u->h, u->w, x, u->up);
    return rmx_conv_forward(ctx, &u->conv, n, u->up);
}

void rmx_upsample_backward(const rmx_layer_ctx *ctx, const rmx_upsample *u, int n,
                           const float *dout, float *dx, float *tmp) {
    rmx_conv_backward(ctx, &u->conv, n, dout, tmp);
    ctx->be->upsample2x_bwd(ctx->be, n, u->c, u->h, u->w, tmp, dx);
}
