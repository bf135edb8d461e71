/* The evaluation loop and PNG panels every stage shares (train/evaluate.h). */
#include "train/evaluate.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/plot.h"
#include "train/png.h"
#include "train/trainer.h"
#include "util/exitcodes.h"
#include "util/log.h"

void rmx_spectral_sums(const float *x, const float *xhat, size_t count, float norm_mean, float norm_std,
                       double *diff_sq, double *ref_sq) {
    for (size_t i = 0; i < count; i++) {
        double s = exp(0.5 * ((double)x[i] * norm_std + norm_mean));
        double s_hat = exp(0.5 * ((double)xhat[i] * norm_std + norm_mean));
        *diff_sq += (s - s_hat) * (s - s_hat);
        *ref_sq += s * s;
    }
}

/* ---- the evaluation set ---- */

void rmx_eval_set_make(const rmx_trainer *t, rmx_eval_set *s) {
    const int w = t->comm.world, r = t->comm.rank;
    int64_t wanted = (int64_t)t->cfg.eval.batches * t->cfg.train.micro_batch;
    s->n_val = rmx_dataset_length(t->val);
    s->n_eval = wanted < s->n_val ? wanted : s->n_val;
    s->first = s->n_eval * r / w;
    s->end = s->n_eval * (r + 1) / w;
}

int64_t rmx_eval_index(const rmx_eval_set *s, int64_t j) { return j * s->n_val / s->n_eval; }

int rmx_eval_png_rows(const rmx_eval_set *s) {
    return (int)(s->n_eval < RMX_EVAL_PNG_ROWS ? s->n_eval : RMX_EVAL_PNG_ROWS);
}

int rmx_eval_png_row(const rmx_eval_set *s, int64_t j) {
    int rows = rmx_eval_png_rows(s);
    int64_t k = (j * rows + rows - 1) / s->n_eval; /* the smallest k with k * n_eval / rows >= j */
    return k < rows && k * s->n_eval / rows == j ? (int)k : -1;
}

/* ---- the loop ---- */

static int eval_slice(rmx_trainer *t, const rmx_eval_set *s, rmx_eval_fn fn, void *arg, char *err,
                      size_t errlen) {
    const int m = t->cfg.train.micro_batch;
    const size_t sample = rmx_dataset_sample_floats(t->val);
    float *mel = malloc(sizeof(float) * sample * (size_t)m);
    float *scratch = malloc(sizeof(float) * sample * (size_t)m);
    int32_t *genre = malloc(sizeof(int32_t) * (size_t)m);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)m);
    int rc = mel && scratch && genre && idx ? 0 : rmx_seterr(err, errlen, "out of memory");
    for (int64_t at = s->first; rc == 0 && at < s->end; at += m) {
        int n = (int)(s->end - at < m ? s->end - at : m);
        for (int i = 0; i < n; i++) idx[i] = rmx_eval_index(s, at + i);
        rc = rmx_dataset_read_batch(t->val, idx, n, mel, genre, err, errlen);
        if (rc != 0) break;
        rmx_eval_chunk c = {.n = n, .first = at, .mel = mel, .genre = genre, .index = idx,
                            .scale = 1.0f / (float)s->n_eval, .scratch = scratch};
        rc = fn(arg, t, &c, t->loss_terms);
    }
    free(mel);
    free(scratch);
    free(genre);
    free(idx);
    return rc;
}

int rmx_eval_run(rmx_trainer *t, const rmx_eval_set *s, rmx_eval_fn fn, void *arg, int n_terms,
                 float *terms) {
    char err[1024];
    if (n_terms > RMX_METRICS_MAX_TERMS) n_terms = RMX_METRICS_MAX_TERMS; /* the trainer's buffer */
    t->be->fill(t->be, t->loss_terms, 0.0f, (size_t)n_terms);
    int bad = eval_slice(t, s, fn, arg, err, sizeof err) != 0;
    if (bad) rmx_error("rank %d: evaluation: %s", t->comm.rank, err);
    if (rmx_comm_any(&t->comm, bad)) return RMX_EXIT_DATA;
    rmx_trainer_sum_floats(t, t->loss_terms, (size_t)n_terms);
    t->be->to_host(t->be, terms, t->loss_terms, sizeof(float) * (size_t)n_terms);
    return 0;
}

/* ---- PNG panels ---- */

struct rmx_eval_panels {
    int rows, cols, m, t;
    float *data; /* [rows * cols * m * t] */
};

rmx_eval_panels *rmx_eval_panels_create(int rows, int cols, int m, int t) {
    rmx_eval_panels *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    *p = (rmx_eval_panels){rows, cols, m, t, calloc((size_t)rows * cols * m * t + 1, sizeof(float))};
    if (!p->data) {
        free(p);
        return NULL;
    }
    return p;
}

void rmx_eval_panel_set(rmx_eval_panels *p, int row, int col, const float *data) {
    if (!p || row < 0 || row >= p->rows || col < 0 || col >= p->cols) return;
    size_t panel = (size_t)p->m * p->t;
    memcpy(p->data + (size_t)(row * p->cols + col) * panel, data, sizeof(float) * panel);
}

void rmx_eval_panels_gather(rmx_eval_panels *p, const rmx_comm *c) {
    if (p) rmx_comm_sum_floats(c, p->data, (size_t)p->rows * p->cols * p->m * p->t);
}

void rmx_eval_panels_write(const rmx_eval_panels *p, const char *path) {
    if (!p || p->rows == 0) return;
    const float **panels = malloc(sizeof *panels * (size_t)(p->rows * p->cols));
    if (!panels) return;
    size_t panel = (size_t)p->m * p->t;
    for (int i = 0; i < p->rows * p->cols; i++) panels[i] = p->data + (size_t)i * panel;
    char err[1024];
    if (rmx_png_spectrograms(path, panels, p->rows, p->cols, p->m, p->t, 0, 0, err, sizeof err) != 0)
        rmx_warn("%s", err);
    free(panels);
}

void rmx_eval_panels_free(rmx_eval_panels *p) {
    if (!p) return;
    free(p->data);
    free(p);
}

void rmx_eval_png_path(const rmx_trainer *t, int64_t label_step, char *out, size_t outlen) {
    snprintf(out, outlen, "%s/eval-%06" PRId64 ".png", t->cfg.run.dir, label_step);
}

void rmx_eval_plot_losses(rmx_trainer *t) {
    char png[RMX_PATH_MAX + 64], err[1024];
    snprintf(png, sizeof png, "%s/loss.png", t->cfg.run.dir);
    if (rmx_plot_losses(t->metrics.path, png, err, sizeof err) != 0) rmx_warn("%s", err);
}

int rmx_eval_genre_examples(rmx_trainer *t, int64_t *out) {
    const int G = rmx_dataset_params(t->val)->n_genres;
    for (int g = 0; g < G; g++) out[g] = -1;
    char err[1024];
    for (int64_t i = 0, n = rmx_dataset_length(t->val); i < n; i++) {
        int32_t genre = -1;
        if (rmx_dataset_read(t->val, i, NULL, &genre, err, sizeof err) != 0) {
            rmx_error("rank %d: evaluation: %s", t->comm.rank, err);
            return -1;
        }
        if (genre >= 0 && genre < G && out[genre] < 0) out[genre] = i;
    }
    return 0;
}
