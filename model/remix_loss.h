/* Stage 3's loss, as in neural style transfer, measured by the frozen autoencoder:
 *
 *   x0_hat  = (z_t - b eps_hat) / a / latent_scale        the clean latent the transformer implies
 *   x_hat   = decoder(x0_hat)                              a mel [n, 1, M, T]
 *   content = sum over content layers l of mean ||phi_l(x_hat) - phi_l(x_orig)||^2
 *   style   = sum over style layers l of ||G_l(x_hat) - G_l(x_style)||_F^2,  G = F F^T / (C H W)
 *   tv      = mean squared neighbour difference of x_hat along frequency + along time
 * each a mean over the batch (scale = 1 / global batch), where phi_l is the output of encoder step
 * l (model/autoencoder.h, "enc.down.1.res.0"), and means run over one sample's elements.
 * total = content_weight content + style_weight style + tv_weight tv.
 *
 * Gradients flow back through the encoder and the decoder as input gradients only (the
 * autoencoder is frozen), to d total / d eps_hat = -(b / a) / latent_scale d total / d x0_hat.
 * vq: x0_hat is quantised before the decoder, with the straight-through gradient. */
#ifndef RMX_REMIX_LOSS_H
#define RMX_REMIX_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/autoencoder.h"

#define RMX_REMIX_MAX_LAYERS 8

enum { RMX_REMIX_CONTENT = 0, RMX_REMIX_STYLE = 1, RMX_REMIX_TV = 2, RMX_REMIX_N_TERMS = 3 };

typedef struct {
    float content_weight, style_weight, tv_weight;
    int n_content, content[RMX_REMIX_MAX_LAYERS]; /* encoder feature indices */
    int n_style, style[RMX_REMIX_MAX_LAYERS];
} rmx_remix_loss_config;

/* Parses a comma-separated list of encoder step names ("enc.down.0.res.0, enc.mid.res") into
 * feature indices. 0, or -1 with a message naming the unknown layer and the valid names. */
int rmx_remix_parse_layers(const rmx_ae *ae, const char *list, int *out, int *count, char *err, size_t errlen);

typedef struct rmx_remix_loss rmx_remix_loss;

/* Buffers for batches of up to max_batch through the frozen autoencoder `ae` (not owned). */
rmx_remix_loss *rmx_remix_loss_create(rmx_ae *ae, const rmx_remix_loss_config *c, int max_batch);
void rmx_remix_loss_free(rmx_remix_loss *l);

/* The targets of the next loss calls: content features of the originals and Gram matrices of the
 * style songs, from mels x_orig and x_style [n, 1, M, T] (backend memory). In the same encoder
 * passes, z_orig and z_style (backend [n, C, H, W], NULL: skip) get the latents a diffusion model
 * works on (rmx_ae_latents) times latent_scale. */
void rmx_remix_loss_targets(rmx_remix_loss *l, int n, const float *x_orig, const float *x_style, float latent_scale,
                            float *z_orig, float *z_style);

/* The mel-level loss of x_hat [n, 1, M, T] against the targets: terms[RMX_REMIX_*] +=
 * scale * term (unweighted, backend memory); dxhat WRITTEN = d(scale * total) / d x_hat. */
void rmx_remix_loss_mel(rmx_remix_loss *l, int n, const float *x_hat, float scale, float *terms, float *dxhat);

/* The whole chain from the transformer's output: x0_hat from z_t and eps_hat [n, C, H, W] with
 * the HOST per-sample noise coefficients a, b [n]; decodes, measures; deps WRITTEN =
 * d(scale * total) / d eps_hat. Returns the decoded mel (the autoencoder's memory, valid until
 * its next call). */
const float *rmx_remix_loss_eps(rmx_remix_loss *l, int n, const float *z_t, const float *eps_hat, const float *a,
                                const float *b, float latent_scale, float scale, float *terms, float *deps);

/* x0 [n, C, H, W] (scaled latents) = (z_t - b eps_hat) / a, written. */
void rmx_remix_x0(rmx_backend *be, int n, size_t per, const float *z_t, const float *eps_hat, const float *a,
                  const float *b, float *x0);

#endif
