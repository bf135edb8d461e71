#include "train/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "util/log.h"

void rmx_terms_add(rmx_terms *t, const char *name, double value) {
    if (t->n >= RMX_METRICS_MAX_TERMS) return;
    t->names[t->n] = name;
    t->values[t->n] = value;
    t->n++;
}

/* The "step" member of a metrics line, or -1 if the line has none. */
static int64_t line_step(const char *line) {
    const char *p = strstr(line, "\"step\":");
    return p ? strtoll(p + 7, NULL, 10) : -1;
}

/* Whether a line of the interrupted run belongs to the resumed run's log. Every line is labelled
 * with completed steps: the training line of step s (1-based) and the evaluation after it both say
 * s. A run resumed at `resume_step` keeps the training lines up to it and the evaluations before
 * it; it repeats the evaluation at resume_step itself (the trainer's evaluate_at_start). */
static int keep_line(const char *line, int64_t resume_step) {
    int64_t step = line_step(line);
    if (step < resume_step) return 1;
    return step == resume_step && strstr(line, "\"split\": \"train\"") != NULL;
}

/* Rewrites the file without the lines a resume at resume_step replaces (durably, through a
 * temporary). */
static int drop_lines_from(const char *path, int64_t resume_step, char *err, size_t errlen) {
    FILE *in = fopen(path, "r");
    if (!in) return 0; /* nothing written yet */
    char tmp[4096];
    rmx_tmp_name(path, tmp, sizeof tmp);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return rmx_seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0)
        if (keep_line(line, resume_step)) fputs(line, out);
    free(line);
    fclose(in);
    if (fclose(out) != 0) return rmx_seterr(err, errlen, "%s: write failed", tmp);
    return rmx_commit_file(tmp, path, err, errlen);
}

int rmx_metrics_open(rmx_metrics *m, const char *run_dir, int64_t resume_step, char *err, size_t errlen) {
    snprintf(m->path, sizeof m->path, "%s/metrics.jsonl", run_dir);
    if (resume_step > 0 && drop_lines_from(m->path, resume_step, err, errlen) != 0) return -1;
    if (resume_step == 0) remove(m->path); /* a fresh run starts a fresh log */
    m->jsonl = fopen(m->path, "a");
    if (!m->jsonl) return rmx_seterr(err, errlen, "%s: cannot open for appending: %s", m->path, strerror(errno));
    return 0;
}

static void write_number(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f); /* JSON has no NaN */
}

void rmx_metrics_write(rmx_metrics *m, int64_t step, const char *split, const rmx_terms *t,
                       const char *extra_json) {
    if (!m->jsonl) return;
    fprintf(m->jsonl, "{\"step\": %" PRId64 ", \"split\": \"%s\"", step, split);
    for (int i = 0; i < t->n; i++) {
        fprintf(m->jsonl, ", \"%s\": ", t->names[i]);
        write_number(m->jsonl, t->values[i]);
    }
    if (extra_json && *extra_json) fprintf(m->jsonl, ", %s", extra_json);
    fputs("}\n", m->jsonl);
    fflush(m->jsonl);
}

void rmx_metrics_close(rmx_metrics *m) {
    if (m->jsonl) fclose(m->jsonl);
    m->jsonl = NULL;
}

void rmx_format_duration(double seconds, char *out, size_t outlen) {
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(out, outlen, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, outlen, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60) snprintf(out, outlen, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, outlen, "%lds", s);
}
