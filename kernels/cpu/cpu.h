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

/* The hot element-wise loops are compiled for AVX-512, for AVX2 + FMA and for baseline x86-64, and
 * the loader picks the widest the CPU has: the build stays portable (no -march) and a modern core
 * still gets its full vector width. Every clone does the same IEEE operations in the same order
 * (the library is built with -ffp-contract=off), so results do not depend on the clone. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define RMX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RMX_CLONES
#endif

/* Thread t's share [*begin, *end) of n elements, cut at multiples of 16 floats (64 bytes) so two
 * threads never write the same cache line. */
static inline void rmx_thread_range(size_t n, int t, int nth, size_t *begin, size_t *end) {
    size_t per = (n / 16 + (size_t)nth - 1) / (size_t)nth * 16;
    size_t b = per * (size_t)t, e = b + per;
    if (t == nth - 1 || e > n) e = n;
    *begin = b < n ? b : n;
    *end = e;
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

/* Sum of a[i] * b[i] in double, grouped like rmx_sum_f64. */
static inline double rmx_dot_f64(const float *a, const float *b, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 7] += (double)a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void rmx_cpu_install_conv(rmx_backend *be);
void rmx_cpu_install_ops(rmx_backend *be);

#endif
