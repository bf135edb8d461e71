/* The stage-2 diffusion transformer: DiT with adaLN-Zero (facebookresearch/DiT, models.py) over
 * the frozen autoencoder's latents, with learn_sigma off (it predicts the noise only: out channels
 * = in channels) and a non-square token grid. Explicit forward and backward over the backend
 * interface, one flat parameter registry, one activation arena.
 *
 * Architecture (latent [n, C, H, W], patch p, grid gh x gw = H/p x W/p, N = gh gw tokens, width
 * D, `heads` heads of D/heads, MLP width int(D mlp_ratio), F = freq_dim):
 *   tokens  patchify x into N row-major tokens of C p p features ordered (c, p, q), then
 *           x_embedder.proj (a Linear over the token features, stored with the shape of
 *           PyTorch's Conv2d(C, D, kernel = stride = p)), plus the fixed 2-D sin-cos pos_embed
 *           [1, N, D]: the first D/2 features encode the token's column (width index), the
 *           second D/2 its row; each half is [sin(pos w_i), cos(pos w_i)], w_i = 10000^(-i/(D/4)),
 *           i < D/4.
 *   c       t_embedder: sinusoidal(t) [cos(t f_j), sin(t f_j)], f_j = exp(-ln(10000) j / (F/2)),
 *           -> mlp.0 (F -> D) -> SiLU -> mlp.2 (D -> D); plus y_embedder.embedding_table[y],
 *           a table of num_classes + 1 rows whose last row is the null (unconditional) class.
 *   block   (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) = the six D-wide
 *           column blocks, in that order, of adaLN_modulation.1(SiLU(c)) [n, 6D];
 *           x += gate_msa * attn.proj(MHSA(attn.qkv(LN(x) (1 + scale_msa) + shift_msa)));
 *           x += gate_mlp * mlp.fc2(GELU_tanh(mlp.fc1(LN(x) (1 + scale_mlp) + shift_mlp)));
 *           LN: LayerNorm eps 1e-6 without affine parameters (norm1, norm2 hold no tensors);
 *           qkv per token is q | k | v, each split into heads (PyTorch's reshape(B, N, 3, heads,
 *           head_dim)); attention scale head_dim^-0.5.
 *   final   (shift, scale) = the two column blocks of final_layer.adaLN_modulation.1(SiLU(c));
 *           final_layer.linear(LN(x) (1 + scale) + shift) gives p p C features per token,
 *           ordered (p, q, c); unpatchify to [n, C, H, W] (einsum 'nhwpqc -> nchpwq').
 *
 * Parameter names, shapes and order are those of DiT's state_dict (the PyTorch twin
 * bench/diffusion/dit_twin.py loads a checkpoint's /model with load_state_dict(strict=True)):
 *   state registry (not trained; a checkpoint's /model holds it too, so /model = state_dict):
 *     pos_embed [1, N, D]                                   fixed sin-cos, set at init
 *   trained registry, in this order:
 *     x_embedder.proj.weight [D, C, p, p], x_embedder.proj.bias [D]
 *     t_embedder.mlp.0.weight [D, F], .bias [D]; t_embedder.mlp.2.weight [D, D], .bias [D]
 *     y_embedder.embedding_table.weight [num_classes + 1, D]   (an nn.Embedding, hence .weight)
 *     blocks.<i>.attn.qkv.weight [3D, D], .bias [3D]; blocks.<i>.attn.proj.weight [D, D], .bias
 *     blocks.<i>.mlp.fc1.weight [Dm, D], .bias [Dm]; blocks.<i>.mlp.fc2.weight [D, Dm], .bias [D]
 *     blocks.<i>.adaLN_modulation.1.weight [6D, D], .bias [6D]
 *     final_layer.linear.weight [p p C, D], .bias [p p C]
 *     final_layer.adaLN_modulation.1.weight [2D, D], .bias [2D]
 * Initialisation (DiT's initialize_weights): every Linear xavier-uniform, U(+-sqrt(6 / (fan_in +
 * fan_out))), with zero bias (qkv as one [3D, D] matrix; the patch embedding on its [D, C p p]
 * view); the label table and both timestep-MLP weights N(0, 0.02); zero weight and bias for every
 * adaLN_modulation.1 and for final_layer.linear. So a fresh model outputs exactly 0.
 *
 * Style tokens (stage 3, remix; hparams.style = 1; style = 0 is the stage-2 model above, bit for
 * bit, with the same registries, arena and results). The style latent has the content's shape
 * [C, H, W] and gives N style tokens, appended after each sample's N content tokens: every block
 * runs on one joint sequence of L = 2N tokens per sample (rows [0, N) content, [N, 2N) style;
 * norms, modulation by the sample's c, MLP and gated residuals per token, one attention over all
 * 2N), and only the N content tokens go to the final layer and unpatchify.
 *   style token  style_embedder.proj(patch of the style latent) + style_type + pos_embed, the
 *                same patch order and positions as the content; a sample whose style is dropped
 *                (style_keep 0: classifier-free guidance on style) has style_null + style_type +
 *                pos_embed in every style row instead.
 *   tensors      appended to the trained registry after every stage-2 tensor (which keep their
 *                numbers, names, shapes, init streams and relative order), in this order:
 *                  style_embedder.proj.weight [D, C, p, p], style_embedder.proj.bias [D]
 *                  style_type [1, 1, D], style_null [1, 1, D]
 *                The registry's layout rule holds unchanged (model/params.h: ndim >= 2 decays):
 *                the proj weight, style_type and style_null sit at the end of the decayed block,
 *                the proj bias at the end of the undecayed one; so, as for the label table,
 *                train.weight_decay applies to the two [1, 1, D] embeddings. In the flat buffer
 *                the stage-2 biases therefore move (by the span of the three decayed style
 *                tensors): checkpoints map by name, not by offset.
 *   init         style_embedder.proj like x_embedder (xavier on [D, C p p], zero bias; a trainer
 *                starting from a stage-2 checkpoint overwrites it with x_embedder's values:
 *                rmx_dit_copy_style_embedder_from_x), style_type N(0, 0.02), style_null zeros.
 *   twin         bench/diffusion/dit_twin.py DiTTwin(style=True), forward(x, t, y, style, keep).
 *
 * Activations come from ONE arena sized for micro_batch samples (rmx_dit_reserve grows it).
 * With style tokens the blocks' activations hold L = 2N rows per sample.
 * Per block the forward keeps LN outputs, qkv, the attention output and its log-sum-exps, the
 * projection, fc1 and fc2 outputs and the modulation; the modulated LN outputs and the GELU
 * output are recomputed in the backward (cheap element-wise passes). Pointers returned by
 * rmx_dit_forward point into the arena and stay valid until the next forward or reserve. */
#ifndef RMX_DIT_H
#define RMX_DIT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/params.h"

#define RMX_DIT_LN_EPS 1e-6f

typedef struct {
    int in_channels, height, width; /* latent C, H, W (from the autoencoder) */
    int patch, hidden, depth, heads;
    float mlp_ratio;                /* MLP width = int(hidden * mlp_ratio), as DiT */
    int num_classes;                /* genres; the label table has one more (null) row */
    int freq_dim;                   /* sinusoidal timestep features (DiT: 256) */
    int micro_batch;                /* samples per call the arena is first sized for */
    int style;                      /* 0: stage 2 (no style tokens); 1: N style tokens appended */
} rmx_dit_hparams;

/* The DiT-S width class over the bench latent: hidden 384, depth 12, heads 6, patch 2, mlp 4,
 * freq 256; latent 8 x 32 x 64 (the bench autoencoder's), 4 genres, micro-batch 8, style 0. The trainer
 * overwrites the latent shape and the class count from the autoencoder and the data. */
void rmx_dit_hparams_default(rmx_dit_hparams *hp);

/* 0, or -1 with a message naming the config key, e.g. "dit.heads (5) must divide dit.hidden
 * (384)", "dit.patch (3) must divide the latent grid 32 x 64". */
int rmx_dit_validate(const rmx_dit_hparams *hp, char *err, size_t errlen);

typedef struct rmx_dit rmx_dit;

/* Builds the model, allocates the registries and the arena through `be` and initialises the
 * parameters from init_seed. NULL and a message in err when hp is invalid. */
rmx_dit *rmx_dit_create(rmx_backend *be, const rmx_dit_hparams *hp, uint64_t init_seed, char *err,
                        size_t errlen);
void rmx_dit_free(rmx_dit *dit);

/* Re-initialises the trained tensors (DiT's init, deterministic and rank-independent: see
 * model/params.h) and writes pos_embed; zeroes grads and Adam moments; an allocated EMA buffer
 * restarts as a copy of the new values. */
void rmx_dit_init_params(rmx_dit *dit, uint64_t seed);

rmx_params *rmx_dit_params(rmx_dit *dit); /* trained: values, grads, Adam m, v (and EMA) */
rmx_params *rmx_dit_state(rmx_dit *dit);  /* pos_embed */
const rmx_dit_hparams *rmx_dit_hparams_of(const rmx_dit *dit);
int rmx_dit_tokens(const rmx_dit *dit);   /* N = (H/p) (W/p): content tokens (the output's) */
int rmx_dit_sequence(const rmx_dit *dit); /* L: tokens per sample in the blocks, N or 2N (style) */
size_t rmx_dit_arena_bytes(const rmx_dit *dit);
int rmx_dit_capacity(const rmx_dit *dit); /* samples the arena holds now */

/* Grows the activation arena to hold n samples (no-op when it already does). Sampling runs cond
 * and uncond in one batch, 2x the training micro-batch. Invalidates earlier outputs. The arena
 * plans L tokens per sample in the blocks (2N with style), N in the final layer. */
void rmx_dit_reserve(rmx_dit *dit, int n);

/* Frozen: weight gradients skipped, the input gradient still computed. */
void rmx_dit_set_frozen(rmx_dit *dit, int frozen);

/* fn(arg, tensor number) is called for each trained tensor exactly once per (unfrozen) backward,
 * as soon as its gradient of that pass is final (the trainer's bucketed all-reduce); NULL stops
 * the calls. Order: final layer, blocks depth-1 .. 0 (mlp.fc2, mlp.fc1, attn.proj, attn.qkv,
 * adaLN_modulation.1), x_embedder, [style on: style_embedder.proj, style_type, style_null],
 * t_embedder mlp.2, mlp.0, y_embedder, weight before bias. All four style tensors are announced
 * after either forward, whether or not any style was kept (their gradient may be 0). */
void rmx_dit_set_grad_ready(rmx_dit *dit, void (*fn)(void *arg, int tensor), void *arg);

/* Start of an optimiser step: zeroes the gradients. */
void rmx_dit_step_begin(rmx_dit *dit);

/* The noise prediction [n, C, H, W] (arena memory) for x [n, C, H, W] (backend memory), t HOST
 * float [n] (timesteps, 0..999 in training; any value, fractions too, for samplers) and y HOST
 * int32 [n] in [0, num_classes] (num_classes: the null class). n <= rmx_dit_capacity. */
const float *rmx_dit_forward(rmx_dit *dit, int n, const float *x, const float *t, const int32_t *y);

/* Style on (hparams.style = 1): as rmx_dit_forward, with style latents [n, C, H, W] (backend
 * memory; may be NULL when every style_keep is 0) and style_keep HOST [n] (0: that sample's style
 * is dropped, its style tokens are style_null's). Aborts on a model without style tokens. On a
 * style model rmx_dit_forward(..) is rmx_dit_forward_style(.., NULL, all 0): every style dropped. */
const float *rmx_dit_forward_style(rmx_dit *dit, int n, const float *x, const float *t,
                                   const int32_t *y, const float *style,
                                   const uint8_t *style_keep);

/* Style on: copies x_embedder.proj's weight and bias over style_embedder.proj's in the values
 * buffer (and in the EMA buffer, from x_embedder's EMA, when one is allocated): stage 3 starting
 * from a stage-2 checkpoint. 0, or -1 (nothing done) on a model without style tokens. */
int rmx_dit_copy_style_embedder_from_x(rmx_dit *dit);

/* After rmx_dit_forward or rmx_dit_forward_style on the same n: deps = d loss / d output
 * [n, C, H, W] (backend memory). Weight gradients ACCUMULATE (+=) into the flat gradient buffer
 * (skipped when frozen), the style tensors' included; dx [n, C, H, W] is WRITTEN (NULL: skip);
 * there is no gradient w.r.t. the style latents. */
void rmx_dit_backward(rmx_dit *dit, int n, const float *deps, float *dx);

/* Forward FLOPs per sample: 2 m k n of every GEMM (token and conditioning linears) plus 4 L^2 D
 * per block for the attention products (L = N, or 2N with style: the blocks' linears also run on
 * L tokens, the style_embedder on N, the final layer on N); element-wise work not counted. A
 * training step costs about 3x. */
double rmx_dit_flops_per_sample(const rmx_dit_hparams *hp);

/* The fixed positions [gh * gw, d] (host, row-major tokens) into out: d % 4 == 0. */
void rmx_dit_pos_embed(int gh, int gw, int d, float *out);

#endif
