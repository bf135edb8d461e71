/* The cpu backend: OpenBLAS sgemm for the convolutions, OpenMP for everything else.
 *
 * Threading: every parallel region is ours (OpenMP, `threads` wide) and each thread calls sgemm on
 * its own block, so OpenBLAS is pinned to one thread. Two thread pools on the same cores would
 * oversubscribe them, and per-thread single-threaded GEMMs measured as fast as OpenBLAS's own
 * threading on the convolution shapes, with no hand-off between the pools. The OpenBLAS setting is
 * process-wide: other sgemm callers in the process get one thread too. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

static void cpu_destroy(rmx_backend *be) {
    free(be->impl);
    free(be);
}

rmx_backend *rmx_backend_cpu_create(int threads) {
    rmx_backend *be = rmx_backend_ref_create();
    if (!be) return NULL;
    rmx_cpu_impl *impl = calloc(1, sizeof *impl);
    if (!impl) {
        be->destroy(be);
        return NULL;
    }
    impl->threads = threads > 0 ? threads : omp_get_max_threads();
    openblas_set_num_threads(1);
    be->name = "cpu";
    be->impl = impl;
    be->destroy = cpu_destroy;
    rmx_cpu_install_conv(be);
    rmx_cpu_install_ops(be);
    rmx_cpu_install_transformer(be);
    char err[160];
    if (rmx_backend_check(be, err, sizeof err)) {
        fprintf(stderr, "remixer: internal error: %s\n", err);
        cpu_destroy(be);
        return NULL;
    }
    return be;
}
