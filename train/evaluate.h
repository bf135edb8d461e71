/* Evaluation on the validation split: reconstruction and KL (or commitment) losses, spectral
 * convergence of the reconstructed mel, a metrics.jsonl line with "split": "val", and a PNG of
 * inputs beside their reconstructions. */
#ifndef RMX_EVALUATE_H
#define RMX_EVALUATE_H
#include <stdint.h>

#include "train/trainer.h"

/* The validation set of an evaluation is fixed: min(N, eval.batches x micro_batch) samples spread
 * evenly over the split, split over the ranks in contiguous slices, so the figures do not depend on the world
 * size. Collective: every rank calls it. Returns 0 or an exit code. `label_step` names the
 * metrics line and the PNG (eval-<step>.png). */
int rmx_evaluate(rmx_trainer *t, int64_t label_step);

/* Spectral convergence ||S - S^||_F / ||S||_F over the linear mel magnitude
 * S = sqrt(mel power) = exp((x * std + mean) / 2), x the stored normalised log-mel: the two sums it
 * needs, accumulated over `count` floats. */
void rmx_spectral_sums(const float *x, const float *xhat, size_t count, float norm_mean, float norm_std,
                       double *diff_sq, double *ref_sq);

#endif
