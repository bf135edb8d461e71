/* Internals of the cpu backend: it starts from the ref backend (memory, and nothing else) and
 * replaces every compute op with a fast version from conv.c, ops.c and transformer.c. */
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

/* C = alpha op(A) op(B) + beta C, row-major, op = transpose when ta / tb; single-threaded (the
 * callers parallelise over their own work items). The same call gives the same bits whatever
 * thread runs it. (gemm.c) */
void rmx_cpu_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);

/* An op(B) operand packed once for several rmx_cpu_sgemm_packed calls (attention reuses the keys
 * and values of a head for every block of queries). The result is the bits rmx_cpu_sgemm gives. */
typedef struct {
    int tb, k, n, ldb;
    const float *b; /* the operand itself (the OpenBLAS path reads it) */
    float *packed;  /* its packed copy, or NULL on the OpenBLAS path */
} rmx_cpu_packed;

/* Floats the packed copy of a [k x n] op(B) takes (0 on the OpenBLAS path). */
size_t rmx_cpu_pack_floats(int k, int n);
/* op(B) [k x n] (b, ldb, tb as rmx_cpu_sgemm's) packed into buf (rmx_cpu_pack_floats(k, n) floats). */
rmx_cpu_packed rmx_cpu_pack_b(int tb, int k, int n, const float *b, int ldb, float *buf);
/* C [m x b->n] = alpha op(A) op(B) + beta C, op(B) the packed operand. */
void rmx_cpu_sgemm_packed(int ta, int m, float alpha, const float *a, int lda, const rmx_cpu_packed *b,
                          float beta, float *c, int ldc);

/* 1 where the CPU has AVX-512F and RMX_CPU_GENERIC is unset (or "0"): the backend's own AVX-512
 * micro-kernels run (convolutions, rmx_cpu_sgemm); else OpenBLAS does. Read once. (gemm.c) */
int rmx_cpu_avx512(void);

void rmx_cpu_install_conv(rmx_backend *be);
void rmx_cpu_install_ops(rmx_backend *be);
void rmx_cpu_install_transformer(rmx_backend *be);

#endif
