/* The stage-1 autoencoder of the brief (a small latent-diffusion AutoencoderKL), with a `kl` or a
 * `vq` bottleneck, explicit forward and backward over the backend interface.
 *
 * Architecture (C = channels, L = levels of channel_mult, R = res_blocks, f = 2^(L-1)):
 *   encoder: conv_in 3x3 (1 -> C); per level i: R x ResBlock(-> C*mult[i]), then, except at the
 *            last level, downsample = Conv3x3 stride 2 padding 1; mid ResBlock; GroupNorm + SiLU;
 *            conv_out 3x3 (-> 2*latent for kl: mean then log-variance; -> latent for vq).
 *   decoder: conv_in 3x3 (latent -> C*mult[L-1]); mid ResBlock; levels L-1 .. 0: R x ResBlock
 *            (-> C*mult[i]) then, except at level 0, nearest x2 upsample + Conv3x3 (channels
 *            kept); GroupNorm + SiLU; conv_out 3x3 (C -> 1).
 *   No quant_conv / post_quant_conv. GroupNorm: min(8, channels) groups, eps 1e-6.
 *   Padding of the downsample: symmetric 1 (PyTorch Conv2d(c, c, 3, stride=2, padding=1)), which
 *   maps an even size h to exactly h/2. Latent diffusion pads (0, 1, 0, 1) instead; the two
 *   differ only in which border row/column the stride-2 grid sees, and symmetric padding is the
 *   one every backend's conv supports.
 *
 * Parameter names (PyTorch style; iteration order is the forward order):
 *   enc.conv_in.{weight,bias}
 *   enc.down.<i>.res.<j>.{norm1,conv1,norm2,conv2,skip}.{weight,bias}   (skip when cin != cout)
 *   enc.down.<i>.downsample.{weight,bias}                               (i < L-1)
 *   enc.mid.res.{norm1,conv1,norm2,conv2}.{weight,bias}
 *   enc.norm_out.{weight,bias}, enc.conv_out.{weight,bias}
 *   dec.conv_in.{weight,bias}, dec.mid.res.*
 *   dec.up.<i>.res.<j>.*      (i is the level of channel_mult, visited L-1 .. 0)
 *   dec.up.<i>.upsample.{weight,bias}   (the conv after the nearest x2 upsample, i > 0)
 *   dec.norm_out.{weight,bias}, dec.conv_out.{weight,bias}
 * State registry (vq only; values updated by EMA, never by AdamW, no gradients):
 *   vq.codebook [K, latent], vq.ema_count [K], vq.ema_sum [K, latent]
 *
 * Losses, per micro-batch, with loss_scale = 1 / global_batch so that the sum over all ranks and
 * micro-batches of a step is the brief's batch mean:
 *   rec    = loss_scale * sum ||x - xhat||^2
 *   kl     = loss_scale * -1/2 sum (1 + logvar - mean^2 - exp(logvar))        (kl)
 *   commit = loss_scale * sum ||z_e - sg(z_q)||^2                             (vq)
 *   total  = rec + kl_weight * kl   |   rec + commitment * commit
 * The terms are reported unweighted (rmx_ae_total_loss applies the weights); the gradient is the
 * gradient of the total. vq uses the straight-through estimator: the gradient reaching z_q passes
 * unchanged to z_e.
 *
 * Evaluation (rmx_ae_forward, rmx_ae_encode) is deterministic: the kl bottleneck uses the mean
 * (no noise), the vq bottleneck the nearest code, and no codebook statistics are gathered.
 *
 * Activations come from ONE arena allocated at creation for micro_batch samples; every call
 * takes n <= micro_batch samples and reuses it. Pointers returned by forward calls point into the
 * arena and stay valid until the next call. */
#ifndef RMX_AUTOENCODER_H
#define RMX_AUTOENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/params.h"

#define RMX_AE_MAX_LEVELS 8

typedef enum { RMX_AE_KL = 0, RMX_AE_VQ = 1 } rmx_ae_bottleneck;

typedef struct {
    int channels;                        /* C */
    int channel_mult[RMX_AE_MAX_LEVELS]; /* e.g. {1, 2, 4} */
    int n_levels;                        /* entries used in channel_mult */
    int res_blocks;                      /* ResBlocks per level */
    int latent_channels;
    rmx_ae_bottleneck bottleneck;
    float kl_weight;           /* kl: beta */
    int codebook_size;         /* vq: K */
    float commitment;          /* vq: commitment weight (0.25) */
    float ema_decay;           /* vq: codebook EMA decay (0.99) */
    float ema_epsilon;         /* vq: Laplace smoothing of the EMA counts (1e-5) */
    float dead_code_threshold; /* vq: restart codes whose EMA count falls below this; 0: never */
    int mels, frames;          /* input M x T */
    int micro_batch;           /* m: samples per call, the arena is sized for it */
} rmx_ae_hparams;

/* The brief's bench size: 1x128x256, C 32, mult [1, 2, 4], 1 ResBlock, latent 8, kl (kl_weight
 * 1e-6), batch 8; the vq fields hold their defaults (K 512, commitment 0.25, decay 0.99,
 * epsilon 1e-5, threshold 1). */
void rmx_ae_hparams_default(rmx_ae_hparams *hp);

/* 0, or -1 with a message naming the config key, e.g. "model.channel_mult has 3 levels, so the
 * input (128 x 250) must be divisible by 4 in both dimensions; 250 is not". */
int rmx_ae_validate(const rmx_ae_hparams *hp, char *err, size_t errlen);

/* Indices of the loss terms accumulated by the forward calls. */
enum { RMX_AE_LOSS_REC = 0, RMX_AE_LOSS_KL = 1, RMX_AE_LOSS_COMMIT = 2, RMX_AE_N_LOSS = 3 };

/* total = rec + kl_weight * kl (kl) or rec + commitment * commit (vq), from host copies. */
double rmx_ae_total_loss(const rmx_ae_hparams *hp, const float terms[RMX_AE_N_LOSS]);

typedef struct rmx_ae rmx_ae;

/* Builds the model, allocates the parameter buffers and the arena through `be`, and initialises
 * the parameters from `init_seed`. NULL and a message in err when hp is invalid. */
rmx_ae *rmx_ae_create(rmx_backend *be, const rmx_ae_hparams *hp, uint64_t init_seed, char *err,
                      size_t errlen);
void rmx_ae_free(rmx_ae *ae);

/* A frozen autoencoder for the later stages: no gradient or Adam buffers (its registry is not
 * trained), weight gradients always skipped, input gradients still propagated (decode_backward,
 * encoder_backward). Its weights come from a checkpoint (rmx_ckpt_load); they start at zero. */
rmx_ae *rmx_ae_create_frozen(rmx_backend *be, const rmx_ae_hparams *hp, char *err, size_t errlen);

/* Grows the activation arena to n samples per call (no-op when it holds that many already), so a
 * model can be called on any batch size. Pointers returned by earlier calls become invalid. */
void rmx_ae_reserve(rmx_ae *ae, int n);

/* Re-initialises every parameter and the vq state (codebook U(-1/K, 1/K), ema_sum = codebook,
 * ema_count = 1: one virtual assignment per code, so codebook == ema_sum / ema_count holds from
 * the start and an unused code reaches the restart threshold after one step). */
void rmx_ae_init_params(rmx_ae *ae, uint64_t seed);

const rmx_ae_hparams *rmx_ae_hparams_of(const rmx_ae *ae);
rmx_backend *rmx_ae_backend(const rmx_ae *ae); /* the backend it computes on */
rmx_params *rmx_ae_params(rmx_ae *ae); /* trained: values, grads, Adam m, v */
rmx_params *rmx_ae_state(rmx_ae *ae);  /* not trained (vq codebook and EMA); empty for kl */
void rmx_ae_latent_shape(const rmx_ae *ae, int *channels, int *height, int *width);
size_t rmx_ae_arena_bytes(const rmx_ae *ae);

/* Frozen: weight gradients are skipped, input gradients still propagate (later stages). A model
 * made by rmx_ae_create_frozen stays frozen. */
void rmx_ae_set_frozen(rmx_ae *ae, int frozen);

/* Calls fn(arg, tensor number) as each trained tensor's gradient is accumulated during a backward
 * pass (the trainer's bucketed all-reduce, train/reducer.h); NULL stops the calls. */
void rmx_ae_set_grad_ready(rmx_ae *ae, void (*fn)(void *arg, int tensor), void *arg);

/* Start of an optimiser step: zeroes the gradients and the vq statistics of the step. */
void rmx_ae_step_begin(rmx_ae *ae);

/* One micro-batch of training: forward, losses, backward. x [n, 1, M, T] backend memory;
 * dx (NULL: skip) receives d total / d x, written; weight gradients accumulate into the flat
 * gradient buffer. sample_index: HOST array of the n global sample indices, which key the latent
 * noise (seed, RMX_RNG_LATENT, step, sample) and the vq restart choices. loss_terms: backend
 * float[RMX_AE_N_LOSS], accumulated (+=); NULL skips reporting. vq: also accumulates the step's
 * codebook statistics and restart candidates. */
void rmx_ae_forward_backward(rmx_ae *ae, int n, const float *x, float *dx,
                             const int64_t *sample_index, uint64_t seed, int64_t step,
                             float loss_scale, float *loss_terms);

/* Evaluation: returns the reconstruction [n, 1, M, T] and accumulates the loss terms (scaled by
 * loss_scale; NULL skips them). */
const float *rmx_ae_forward(rmx_ae *ae, int n, const float *x, float loss_scale, float *loss_terms);

/* The encoder's raw output: moments [n, 2*latent, h, w] (kl) or z_e [n, latent, h, w] (vq). */
const float *rmx_ae_encoder_forward(rmx_ae *ae, int n, const float *x);
/* After rmx_ae_encoder_forward: dout like its output; dx written (NULL: skip). */
void rmx_ae_encoder_backward(rmx_ae *ae, int n, const float *dout, float *dx);

/* Latents [n, latent, h, w] for the later stages: the kl mean, or the vq quantised vectors. */
const float *rmx_ae_encode(rmx_ae *ae, int n, const float *x);
/* The latents a diffusion model works on, [n, latent, h, w] (arena memory): the kl posterior mean,
 * or the vq encoder output before quantisation (as latent diffusion's VQ interface). */
const float *rmx_ae_latents(rmx_ae *ae, int n, const float *x);
/* Reconstruction [n, 1, M, T] from such latents: vq quantises them first. */
const float *rmx_ae_decode_latents(rmx_ae *ae, int n, const float *z);
/* Reconstruction [n, 1, M, T] from latents z (which must stay valid for decode_backward). */
const float *rmx_ae_decode(rmx_ae *ae, int n, const float *z);
/* After rmx_ae_decode: dxhat [n, 1, M, T]; dz written (NULL: skip). */
void rmx_ae_decode_backward(rmx_ae *ae, int n, const float *dxhat, float *dz);

/* ---- encoder features (stage 3's content and style losses) ----
 * The encoder's body is a list of steps, each one layer whose output can be read and receive a
 * gradient: k = 0 "enc.conv_in", then per level i "enc.down.<i>.res.<j>" (j < res_blocks) and,
 * except at the last level, "enc.down.<i>.downsample", then "enc.mid.res". */
int rmx_ae_feature_count(const rmx_ae *ae);
/* The step named `name`, or -1. */
int rmx_ae_feature_index(const rmx_ae *ae, const char *name);
void rmx_ae_feature_name(const rmx_ae *ae, int k, char *name, size_t namelen);
/* Step k's output [n, c, h, w]. */
void rmx_ae_feature_shape(const rmx_ae *ae, int k, int *c, int *h, int *w);
/* Runs the encoder's steps 0 .. last on x [n, 1, M, T]; out[k] (k <= last; out may be NULL) gets
 * step k's output (arena memory, valid until the next encoder call). */
void rmx_ae_features(rmx_ae *ae, int n, const float *x, int last, const float **out);
/* rmx_ae_latents and, in out[k] for every step k (out holds rmx_ae_feature_count entries), the
 * steps' outputs on the way: the targets of the remix losses in the pass that encodes. */
const float *rmx_ae_latents_features(rmx_ae *ae, int n, const float *x, const float **out);
/* After rmx_ae_features(.., last, ..) on the same n: dfeat[k] (NULL: none) is d loss / d step k's
 * output for k <= last, dfeat[last] required; dx [n, 1, M, T] written (NULL: skip). Weight
 * gradients follow the frozen flag as everywhere. */
void rmx_ae_features_backward(rmx_ae *ae, int n, int last, const float *const *dfeat, float *dx);

/* ---- vq codebook: EMA update and dead-code restarts ----
 *
 * A step of the trainer, with W ranks (W = 1 included):
 *   rmx_ae_step_begin; per micro-batch rmx_ae_forward_backward;
 *   MPI_Allreduce(MAX, MPI_UINT32_T) of rmx_ae_vq_restart_priority in place;
 *   rmx_ae_vq_restart_settle;
 *   MPI_Allreduce(SUM, float) of rmx_ae_vq_stats in place (with the gradients if convenient);
 *   rmx_ae_vq_apply_ema.
 *
 * Restarts: a code whose EMA count is below dead_code_threshold after the update takes the value
 * of one encoder output z_e of this step. Every (sample, code) pair gets a priority and a position
 * from the counter-based stream (seed, RMX_RNG_CODE_RESTART, step, sample index, code); the code
 * takes the vector at that position of the sample with the highest priority in the whole step.
 * That choice is a pure function of (seed, step, code, the step's set of samples): it does not
 * depend on the world size or the micro-batch split. Each rank keeps its best candidate per
 * code, the MAX all-reduce finds the winning priority, settle drops the candidates that lost, and
 * the SUM all-reduce brings the winner's vector (and a count, so that a tie, e.g. one sample twice
 * in a step, averages identical vectors) to every rank. A restarted code gets ema_count 1 and
 * ema_sum = its new value, like a fresh code. Only codes whose count could fall below the
 * threshold this step (ema_count < threshold / decay at the step's start) collect candidates. */

/* The step's statistics, backend memory, `*count` floats: [counts K | sums K*latent |
 * restart counts K+1 | restart sums (K+1)*latent] (row K of the restart part is gather scratch,
 * zero between calls). NULL for kl. */
float *rmx_ae_vq_stats(rmx_ae *ae, size_t *count);
/* Host uint32 [K]: the best restart priority this rank saw per code (0: none). NULL for kl. */
uint32_t *rmx_ae_vq_restart_priority(rmx_ae *ae, int *codes);
/* After the MAX all-reduce of the priorities: forgets this rank's candidates that lost. */
void rmx_ae_vq_restart_settle(rmx_ae *ae);

typedef struct {
    double perplexity;   /* exp(entropy) of the step's code usage; K when uniform */
    int codes_used;      /* codes assigned at least once this step */
    int codes_restarted; /* dead codes replaced by encoder outputs */
} rmx_vq_report;

/* After the SUM all-reduce: EMA update of the codebook, dead-code restarts, usage report. */
void rmx_ae_vq_apply_ema(rmx_ae *ae, rmx_vq_report *report);

/* Code indices [n * h * w] of the last vq forward (backend memory). NULL for kl. */
const int32_t *rmx_ae_vq_codes(const rmx_ae *ae);

/* exp(-sum p log p) with p = counts / sum(counts); 0 when all counts are 0. */
double rmx_vq_perplexity(const float *counts, int k);

#endif
