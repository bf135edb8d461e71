/* Internals of the cpu backend: it starts from the ref backend (memory, and nothing else) and
 * replaces every compute op with a fast version from conv.c and ops.c. */
#ifndef RMX_KERNELS_CPU_H
#define RMX_KERNELS_CPU_H

#include "kernels/backend.h"

typedef struct {
    int threads; /* OpenMP threads every parallel region of this backend uses */
} rmx_cpu_impl;

static inline int rmx_cpu_threads(const rmx_backend *be) {
    return ((const rmx_cpu_impl *)be->impl)->threads;
}

/* Sum of n floats in double. Eight independent accumulators let the compiler vectorise the loop;
 * the grouping depends on n alone, so the result never depends on threads or alignment. */
static inline double rmx_sum_f64(const float *x, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[i + l];
    for (; i < n; i++) acc[i & 7] += x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void rmx_cpu_install_conv(rmx_backend *be);
void rmx_cpu_install_ops(rmx_backend *be);

#endif
