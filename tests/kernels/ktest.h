/* Helpers shared by the kernel tests: random data, error measures, pass/fail bookkeeping.
 * Every check prints what it compared, the error it found and the bound it held it to. */
#ifndef RMX_KTEST_H
#define RMX_KTEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

static int kt_failures = 0;

/* xorshift64*: test data only; the kernels' own randomness is Philox. */
static uint64_t kt_state = 0x9E3779B97F4A7C15ull;

static inline void kt_seed(uint64_t s) { kt_state = s ? s : 1; }

static inline double kt_uniform(void) {
    kt_state ^= kt_state >> 12;
    kt_state ^= kt_state << 25;
    kt_state ^= kt_state >> 27;
    return (double)((kt_state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static inline float *kt_alloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static inline float *kt_rand(size_t n, float lo, float hi) {
    float *p = kt_alloc(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)kt_uniform();
    return p;
}

static inline float *kt_copy(const float *src, size_t n) {
    float *p = kt_alloc(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static inline double kt_max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

/* max |got - want| / max |want| (absolute when want is all zeros); NaN anywhere gives +inf. */
static inline double kt_rel_err(const float *got, const float *want, size_t n) {
    double scale = kt_max_abs(want, n), e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d != d) return INFINITY;
        e = fmax(e, d);
    }
    return scale > 0.0 ? e / scale : e;
}

static inline double kt_rel_err_d(const float *got, const double *want, size_t n) {
    double scale = 0.0, e = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d != d) return INFINITY;
        e = fmax(e, d);
    }
    return scale > 0.0 ? e / scale : e;
}

/* Prints one line per check; returns whether it passed. */
static inline int kt_report(const char *what, double err, double tol) {
    int ok = err <= tol;
    printf("%-4s %-62s err %.3e  tol %.1e\n", ok ? "ok" : "FAIL", what, err, tol);
    if (!ok) kt_failures++;
    return ok;
}

static inline void kt_expect(int cond, const char *what) {
    printf("%-4s %s\n", cond ? "ok" : "FAIL", what);
    if (!cond) kt_failures++;
}

static inline int kt_finish(const char *name) {
    if (kt_failures) printf("%s: %d check(s) FAILED\n", name, kt_failures);
    else printf("%s: all checks passed\n", name);
    return kt_failures ? 1 : 0;
}

#endif
