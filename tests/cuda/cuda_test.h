/* Helpers of the GPU tests: the skip rule, and host <-> device copies of test data.
 *
 * Every GPU test starts with cuda_or_skip(): where rmx_backend_cuda_create returns NULL (no GPU
 * visible, or a build without CUDA) it prints the reason and exits 77, which ctest reports as
 * skipped (SKIP_RETURN_CODE 77). */
#ifndef RMX_CUDA_TEST_H
#define RMX_CUDA_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

#define RMX_TEST_SKIP 77

static inline rmx_backend *cuda_or_skip(const char *test) {
    char err[512] = "";
    rmx_backend *be = rmx_backend_cuda_create(0, err, sizeof err);
    if (!be) {
        printf("%s: SKIPPED: %s\n", test, err);
        fflush(stdout);
        exit(RMX_TEST_SKIP);
    }
    return be;
}

/* Device buffers of one test case, freed together. */
#define DEV_MAX 64
typedef struct {
    rmx_backend *be;
    void *p[DEV_MAX];
    int n;
} dev_pool;

static inline void *dev_track(dev_pool *pool, void *p) {
    if (pool->n == DEV_MAX) {
        fprintf(stderr, "dev_pool: too many buffers\n");
        abort();
    }
    pool->p[pool->n++] = p;
    return p;
}

/* A device copy of n host floats (n == 0 gives a valid small buffer). */
static inline float *dev_upload(dev_pool *pool, const float *h, size_t n) {
    float *d = (float *)dev_track(pool, pool->be->alloc(pool->be, (n ? n : 1) * sizeof(float)));
    if (h && n) pool->be->to_backend(pool->be, d, h, n * sizeof(float));
    return d;
}

static inline int32_t *dev_upload_ints(dev_pool *pool, const int32_t *h, size_t n) {
    int32_t *d = (int32_t *)dev_track(pool, pool->be->alloc(pool->be, (n ? n : 1) * sizeof(int32_t)));
    if (h && n) pool->be->to_backend(pool->be, d, h, n * sizeof(int32_t));
    return d;
}

/* A zero-filled device buffer. */
static inline float *dev_zeros(dev_pool *pool, size_t n) { return dev_upload(pool, NULL, n); }

/* A device buffer of garbage (large values, no zeros) for outputs documented as written: an op
 * that added to its output instead of writing it, or left part of it unwritten, shows. */
static inline float *dev_garbage(dev_pool *pool, size_t n) {
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    if (!h) abort();
    for (size_t i = 0; i < n; i++) h[i] = 1.0e6f + (float)(i % 7);
    float *d = dev_upload(pool, h, n);
    free(h);
    return d;
}

static inline int32_t *dev_garbage_ints(dev_pool *pool, size_t n) {
    int32_t *h = (int32_t *)malloc((n ? n : 1) * sizeof(int32_t));
    if (!h) abort();
    for (size_t i = 0; i < n; i++) h[i] = -7;
    int32_t *d = dev_upload_ints(pool, h, n);
    free(h);
    return d;
}

/* A fresh host copy of n device floats (caller frees). */
static inline float *dev_download(rmx_backend *be, const float *d, size_t n) {
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    if (!h) abort();
    if (n) be->to_host(be, h, d, n * sizeof(float));
    return h;
}

static inline void dev_pool_free(dev_pool *pool) {
    for (int i = 0; i < pool->n; i++) pool->be->free(pool->be, pool->p[i]);
    pool->n = 0;
}

#endif
