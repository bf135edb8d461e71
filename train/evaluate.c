#include "train/evaluate.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/plot.h"
#include "train/png.h"
#include "util/exitcodes.h"
#include "util/log.h"

enum { PNG_SAMPLES = 4 }; /* input | reconstruction rows in the evaluation PNG */

void rmx_spectral_sums(const float *x, const float *xhat, size_t count, float norm_mean, float norm_std,
                       double *diff_sq, double *ref_sq) {
    for (size_t i = 0; i < count; i++) {
        double s = exp(0.5 * ((double)x[i] * norm_std + norm_mean));
        double s_hat = exp(0.5 * ((double)xhat[i] * norm_std + norm_mean));
        *diff_sq += (s - s_hat) * (s - s_hat);
        *ref_sq += s * s;
    }
}

typedef struct {
    int64_t n_val;               /* samples in the validation split */
    int64_t n_eval;              /* samples in this evaluation, over all ranks */
    int64_t first, end;          /* this rank's slice */
    float *host_x, *host_xhat;   /* [m * sample] */
    int32_t *genre;
    int64_t *idx;                /* [m] dataset indices of a chunk */
    float *png_panels;           /* [PNG_SAMPLES * 2 * sample], summed over the ranks */
    double sums[2];              /* spectral convergence: diff_sq, ref_sq */
} eval_state;

/* Evaluation sample j is dataset sample j * N / n_eval: spread over the whole split, so the
 * figures and the PNG cover every genre even though shards are written genre by genre. */
static int64_t eval_index(const eval_state *es, int64_t j) { return j * es->n_val / es->n_eval; }

/* The PNG shows min(PNG_SAMPLES, n_eval) panels: panel k is evaluation sample k * n_eval / panels,
 * spread evenly over the evaluation set. Whichever rank evaluates a panel's sample keeps it; the
 * panels are then summed over the ranks (each is filled on exactly one rank, zero elsewhere, so
 * the sum is exact), and the picture is the same for any number of ranks. */
static int png_panel_count(const eval_state *es) {
    return (int)(es->n_eval < PNG_SAMPLES ? es->n_eval : PNG_SAMPLES);
}

static void keep_for_png(eval_state *es, int64_t j, const float *x, const float *xhat, size_t sample) {
    int panels = png_panel_count(es);
    int64_t k = (j * panels + panels - 1) / es->n_eval; /* the smallest k with k * n_eval / panels >= j */
    if (k >= panels || k * es->n_eval / panels != j) return;
    memcpy(es->png_panels + (size_t)(2 * k) * sample, x, sizeof(float) * sample);
    memcpy(es->png_panels + (size_t)(2 * k + 1) * sample, xhat, sizeof(float) * sample);
}

static int eval_slice(rmx_trainer *t, eval_state *es, char *err, size_t errlen) {
    const int m = t->cfg.train.micro_batch;
    const size_t sample = rmx_dataset_sample_floats(t->val);
    const rmx_mel_params *mp = rmx_dataset_params(t->val);
    const float scale = 1.0f / (float)es->n_eval;
    for (int64_t at = es->first; at < es->end; at += m) {
        int n = (int)(es->end - at < m ? es->end - at : m);
        for (int i = 0; i < n; i++) es->idx[i] = eval_index(es, at + i);
        if (rmx_dataset_read_batch(t->val, es->idx, n, es->host_x, es->genre, err, errlen) != 0) return -1;
        t->be->to_backend(t->be, t->x, es->host_x, sizeof(float) * sample * (size_t)n);
        const float *xhat = rmx_ae_forward(t->ae, n, t->x, scale, t->loss_terms);
        t->be->to_host(t->be, es->host_xhat, xhat, sizeof(float) * sample * (size_t)n);
        for (int i = 0; i < n; i++) {
            const float *xi = es->host_x + (size_t)i * sample, *yi = es->host_xhat + (size_t)i * sample;
            rmx_spectral_sums(xi, yi, sample, mp->norm_mean, mp->norm_std, &es->sums[0], &es->sums[1]);
            keep_for_png(es, at + i, xi, yi, sample);
        }
    }
    return 0;
}

static void report(rmx_trainer *t, eval_state *es, int64_t label_step, const float terms[RMX_AE_N_LOSS]) {
    double sc = es->sums[1] > 0 ? sqrt(es->sums[0] / es->sums[1]) : NAN;
    double loss = rmx_ae_total_loss(&t->hp, terms);
    rmx_terms m = {0};
    rmx_terms_add(&m, "loss", loss);
    rmx_terms_add(&m, "rec", terms[RMX_AE_LOSS_REC]);
    if (t->hp.bottleneck == RMX_AE_KL) rmx_terms_add(&m, "kl", terms[RMX_AE_LOSS_KL]);
    else rmx_terms_add(&m, "commit", terms[RMX_AE_LOSS_COMMIT]);
    rmx_terms_add(&m, "spectral_convergence", sc);
    rmx_metrics_write(&t->metrics, label_step, "val", &m, NULL);
    char png[RMX_PATH_MAX + 64], err[1024];
    snprintf(png, sizeof png, "%s/eval-%06" PRId64 ".png", t->cfg.run.dir, label_step);
    rmx_progress_finish(&t->bar);
    printf("eval %6" PRId64 " | val loss %.4f (rec %.4f) | spectral convergence %.4f | %" PRId64
           " samples | %s\n", label_step, loss, terms[RMX_AE_LOSS_REC], sc, es->n_eval, png);
    fflush(stdout);
    const rmx_mel_params *mp = rmx_dataset_params(t->val);
    const size_t sample = rmx_dataset_sample_floats(t->val);
    const float *panels[2 * PNG_SAMPLES];
    int rows = png_panel_count(es);
    for (int i = 0; i < 2 * rows; i++) panels[i] = es->png_panels + (size_t)i * sample;
    if (rows > 0 &&
        rmx_png_spectrograms(png, panels, rows, 2, mp->n_mels, mp->segment_frames, 0, 0, err,
                             sizeof err) != 0)
        rmx_warn("%s", err);
    snprintf(png, sizeof png, "%s/loss.png", t->cfg.run.dir);
    if (rmx_plot_losses(t->metrics.path, png, err, sizeof err) != 0) rmx_warn("%s", err);
}

int rmx_evaluate(rmx_trainer *t, int64_t label_step) {
    const int m = t->cfg.train.micro_batch, w = t->comm.world, r = t->comm.rank;
    const size_t sample = rmx_dataset_sample_floats(t->val);
    eval_state es = {0};
    int64_t wanted = (int64_t)t->cfg.eval.batches * m;
    es.n_val = rmx_dataset_length(t->val);
    es.n_eval = wanted < es.n_val ? wanted : es.n_val;
    es.first = es.n_eval * r / w;
    es.end = es.n_eval * (r + 1) / w;
    es.host_x = malloc(sizeof(float) * sample * (size_t)m);
    es.host_xhat = malloc(sizeof(float) * sample * (size_t)m);
    es.genre = malloc(sizeof(int32_t) * (size_t)m);
    es.idx = malloc(sizeof(int64_t) * (size_t)m);
    es.png_panels = calloc(sample * 2 * PNG_SAMPLES, sizeof(float));
    t->be->fill(t->be, t->loss_terms, 0.0f, RMX_AE_N_LOSS);
    char err[1024];
    int bad = eval_slice(t, &es, err, sizeof err) != 0;
    if (bad) rmx_error("rank %d: evaluation: %s", r, err);
    int code = rmx_comm_any(&t->comm, bad) ? RMX_EXIT_DATA : 0;
    if (code == 0) {
        float terms[RMX_AE_N_LOSS];
        rmx_trainer_sum_floats(t, t->loss_terms, RMX_AE_N_LOSS);
        t->be->to_host(t->be, terms, t->loss_terms, sizeof terms);
        rmx_comm_sum_doubles(&t->comm, es.sums, 2);
        rmx_comm_sum_floats(&t->comm, es.png_panels, sample * 2 * (size_t)png_panel_count(&es));
        if (r == 0) report(t, &es, label_step, terms);
    }
    free(es.host_x);
    free(es.host_xhat);
    free(es.genre);
    free(es.idx);
    free(es.png_panels);
    return code;
}
