/* What every stage's evaluation shares: a fixed validation set split over the ranks, the reading
 * loop, the loss terms summed over the ranks, PNG panels gathered from the ranks, and loss.png.
 * The stages' own evaluations live in train/stage_*.c. */
#ifndef RMX_EVALUATE_H
#define RMX_EVALUATE_H
#include <stddef.h>
#include <stdint.h>

#include "train/comm.h"

typedef struct rmx_trainer rmx_trainer;

/* The validation set of an evaluation is fixed: n_eval = min(N, eval.batches x micro_batch)
 * samples, evaluation sample j being dataset sample j * N / n_eval (spread over the whole split, so
 * the figures cover every genre although shards are written genre by genre), split over the ranks
 * in contiguous slices [first, end). So the figures do not depend on the world size. */
typedef struct {
    int64_t n_val, n_eval;
    int64_t first, end; /* this rank's slice of evaluation samples */
} rmx_eval_set;

void rmx_eval_set_make(const rmx_trainer *t, rmx_eval_set *s);
int64_t rmx_eval_index(const rmx_eval_set *s, int64_t j);

/* The PNG of an evaluation shows min(RMX_EVAL_PNG_ROWS, n_eval) evaluation samples spread evenly
 * over the set: row k shows sample k * n_eval / rows. */
enum { RMX_EVAL_PNG_ROWS = 4 };
int rmx_eval_png_rows(const rmx_eval_set *s);
/* The PNG row of evaluation sample j, or -1 when it is not shown. */
int rmx_eval_png_row(const rmx_eval_set *s, int64_t j);

/* One micro-batch of this rank's slice, read from the validation split. */
typedef struct {
    int n;                /* samples */
    int64_t first;        /* evaluation index of the first sample */
    const float *mel;     /* host [n * M * T] */
    const int32_t *genre; /* host [n] */
    const int64_t *index; /* dataset indices [n] */
    float scale;          /* 1 / n_eval: terms accumulated with it sum to the set's mean */
    float *scratch;       /* host [micro_batch * M * T], the stage's to use */
} rmx_eval_chunk;

typedef int (*rmx_eval_fn)(void *arg, rmx_trainer *t, const rmx_eval_chunk *c, float *loss_terms);

/* Reads this rank's slice in micro-batches and calls fn on each; fn accumulates n_terms loss terms
 * into the backend buffer it is given. The terms are then summed over the ranks into `terms`
 * (host). Collective; a read error on any rank stops every rank with RMX_EXIT_DATA. */
int rmx_eval_run(rmx_trainer *t, const rmx_eval_set *s, rmx_eval_fn fn, void *arg, int n_terms,
                 float *terms);

/* out[g] = the first validation sample of genre g, or -1 (out holds the genre count). 0, or -1
 * after a read error (printed). */
int rmx_eval_genre_examples(rmx_trainer *t, int64_t *out);

/* rows x cols spectrogram panels of [m x t] floats for an evaluation PNG. Each rank sets the
 * panels of the samples it evaluated; rmx_eval_panels_gather sums them over the ranks (every panel
 * is set on exactly one rank and zero elsewhere, so the sum is exact), which makes the picture the
 * same for any number of ranks. */
typedef struct rmx_eval_panels rmx_eval_panels;
rmx_eval_panels *rmx_eval_panels_create(int rows, int cols, int m, int t);
void rmx_eval_panel_set(rmx_eval_panels *p, int row, int col, const float *data);
void rmx_eval_panels_gather(rmx_eval_panels *p, const rmx_comm *c);
/* Writes the PNG (rank 0); a failure is a warning, not a stop. */
void rmx_eval_panels_write(const rmx_eval_panels *p, const char *path);
void rmx_eval_panels_free(rmx_eval_panels *p);

/* "<run.dir>/eval-<step, 6 digits>.png" */
void rmx_eval_png_path(const rmx_trainer *t, int64_t label_step, char *out, size_t outlen);
/* Redraws <run.dir>/loss.png from metrics.jsonl (rank 0; a failure is a warning). */
void rmx_eval_plot_losses(rmx_trainer *t);

/* Spectral convergence ||S - S^||_F / ||S||_F over the linear mel magnitude
 * S = sqrt(mel power) = exp((x * std + mean) / 2), x the stored normalised log-mel: the two sums it
 * needs, accumulated over `count` floats. */
void rmx_spectral_sums(const float *x, const float *xhat, size_t count, float norm_mean, float norm_std,
                       double *diff_sq, double *ref_sq);

#endif
