/* What rank 0 tells people and plots: metrics.jsonl (one JSON object per line) in the run folder
 * and one human line per log interval on stdout. */
#ifndef RMX_METRICS_H
#define RMX_METRICS_H
#include <stdint.h>
#include <stdio.h>

#define RMX_METRICS_MAX_TERMS 24

typedef struct {
    const char *names[RMX_METRICS_MAX_TERMS]; /* e.g. "loss", "rec", "kl" */
    double values[RMX_METRICS_MAX_TERMS];
    int n;
} rmx_terms;

void rmx_terms_add(rmx_terms *t, const char *name, double value);

typedef struct {
    FILE *jsonl;
    char path[4096];
} rmx_metrics;

/* Opens run_dir/metrics.jsonl for appending. Every line's "step" counts completed optimiser steps
 * (the training line of the first step says 1; the untrained baseline evaluation says 0). When
 * resuming at `resume_step` (> 0), the lines the resumed run writes again (training lines after
 * resume_step, evaluations from resume_step on) are dropped first, so the file reads as one
 * continuous run. */
int rmx_metrics_open(rmx_metrics *m, const char *run_dir, int64_t resume_step, char *err, size_t errlen);
/* {"step": s, "split": split, "<name>": value, ..., <extra JSON members or NULL>} */
void rmx_metrics_write(rmx_metrics *m, int64_t step, const char *split, const rmx_terms *t,
                       const char *extra_json);
void rmx_metrics_close(rmx_metrics *m);

/* "1h02m", "3m05s", "12s" */
void rmx_format_duration(double seconds, char *out, size_t outlen);

#endif
