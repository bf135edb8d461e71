/* rmx_backend_check: every function pointer of the interface, by name, so a backend that misses
 * an op is refused when it is created ("backend cuda lacks attention_bwd"), never found by a NULL
 * call in the middle of a run. The table lists every op of struct rmx_backend; a test NULLs each
 * pointer-sized slot of the struct in turn and expects a refusal, so an op added to the struct but
 * not to this table fails the suite. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"

#define OP(name) {offsetof(rmx_backend, name), #name}

static const struct {
    size_t offset;
    const char *name;
} ops[] = {
    OP(alloc), OP(free), OP(to_backend), OP(to_host), OP(copy), OP(fill), OP(sync), OP(destroy),
    OP(conv2d_workspace), OP(conv2d_fwd), OP(conv2d_bwd),
    OP(groupnorm_fwd), OP(groupnorm_bwd), OP(silu_fwd), OP(silu_bwd), OP(upsample2x_fwd),
    OP(upsample2x_bwd),
    OP(add), OP(axpy), OP(scale),
    OP(randn),
    OP(gaussian_sample_fwd), OP(gaussian_sample_bwd),
    OP(mse_loss), OP(kl_loss),
    OP(vq_quantize), OP(vq_stats), OP(vq_ema_update),
    OP(adamw), OP(sumsq),
    OP(linear_fwd), OP(linear_bwd), OP(layernorm_fwd), OP(layernorm_bwd), OP(gelu_fwd),
    OP(gelu_bwd), OP(modulate_fwd), OP(modulate_bwd), OP(gated_add_fwd), OP(gated_add_bwd),
    OP(attention_workspace), OP(attention_fwd), OP(attention_bwd), OP(embedding_fwd),
    OP(embedding_bwd), OP(timestep_embed), OP(patchify), OP(unpatchify), OP(add_broadcast),
    OP(axpby_samples), OP(ema_update),
    OP(gram_fwd), OP(gram_bwd), OP(tv_loss),
};

int rmx_backend_check(const rmx_backend *be, char *err, size_t errlen) {
    if (!be) {
        if (err && errlen) snprintf(err, errlen, "no backend (NULL)");
        return -1;
    }
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + ops[i].offset, sizeof fn);
        if (!fn) {
            if (err && errlen)
                snprintf(err, errlen, "backend %s lacks %s", be->name ? be->name : "(unnamed)", ops[i].name);
            return -1;
        }
    }
    return 0;
}
