/* Vector quantisation on the GPU: nearest code, the codebook statistics, the EMA update.
 *
 * All three reproduce the reference's float arithmetic in the reference's order, so the codes,
 * counts and sums are bit-identical to the CPU backends': the search is rmx_vq_nearest (distances
 * summed in channel order), and the statistics of a code are accumulated position by position in (sample,
 * position) order by one warp that owns the code. */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/elementwise.h"

/* One thread per position: the nearest code by the shared direct scan (ties keep the lowest
 * index). The codebook rows are read by every thread of a warp at once, which the cache
 * broadcasts. */
__global__ void vq_quantize_kernel(int n, int d, int hw, const float *z_e, const float *codebook,
                                   int k, int32_t *idx, float *z_q) {
    size_t total = (size_t)n * hw;
    for (size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        size_t b = q / hw, p = q % hw;
        int best = rmx_vq_nearest(z_e + b * d * hw + p, hw, codebook, k, d);
        idx[q] = best;
        for (int j = 0; j < d; j++) z_q[(b * d + j) * hw + p] = codebook[(size_t)best * d + j];
    }
}

static void cuda_vq_quantize(rmx_backend *be, int n, int d, int hw, const float *z_e,
                             const float *codebook, int k, int32_t *idx, float *z_q) {
    size_t total = (size_t)n * hw;
    if (!total) return;
    vq_quantize_kernel<<<ew_blocks(total), EW_THREADS, 0, cuda_impl(be)->stream>>>(
        n, d, hw, z_e, codebook, k, idx, z_q);
    CUDA_LAUNCHED();
}

/* One warp per code. The warp walks the positions 32 at a time; a ballot marks the positions
 * assigned to its code, and their vectors are added in position order, lane l holding channel
 * jb + l. Channels beyond 32 take further walks. Lane 0 counts during the first walk. */
#define VQ_WARPS 8
__global__ void vq_stats_kernel(int n, int d, int hw, const float *z_e, const int32_t *idx, int k,
                                float *counts, float *sums) {
    int lane = threadIdx.x & 31;
    int code = blockIdx.x * VQ_WARPS + (threadIdx.x >> 5);
    if (code >= k) return; /* a whole warp leaves together */
    size_t total = (size_t)n * hw;
    for (int jb = 0; jb < d; jb += 32) {
        int j = jb + lane;
        float count = jb == 0 ? counts[code] : 0.0f;
        float acc = j < d ? sums[(size_t)code * d + j] : 0.0f;
        for (size_t q0 = 0; q0 < total; q0 += 32) {
            size_t q = q0 + lane;
            unsigned mask = __ballot_sync(0xffffffffu, q < total && idx[q] == code);
            while (mask) {
                int bit = __ffs(mask) - 1;
                mask &= mask - 1;
                size_t qq = q0 + bit, b = qq / hw, p = qq % hw;
                count += 1.0f;
                if (j < d) acc += z_e[(b * d + j) * hw + p];
            }
        }
        if (jb == 0 && lane == 0) counts[code] = count;
        if (j < d) sums[(size_t)code * d + j] = acc;
    }
}

static void cuda_vq_stats(rmx_backend *be, int n, int d, int hw, const float *z_e,
                          const int32_t *idx, int k, float *counts, float *sums) {
    if (k <= 0 || d <= 0) return;
    unsigned blocks = (unsigned)ceil_div((size_t)k, VQ_WARPS);
    vq_stats_kernel<<<blocks, 32 * VQ_WARPS, 0, cuda_impl(be)->stream>>>(n, d, hw, z_e, idx, k,
                                                                          counts, sums);
    CUDA_LAUNCHED();
}

/* One block: the counts' EMA and their total (fixed-order block sum), then the sums' EMA and the
 * codebook from the Laplace-smoothed counts. k codes of d floats are far too few for more. */
__global__ void vq_ema_update_kernel(int k, int d, float decay, float eps, const float *counts,
                                     const float *sums, float *ema_count, float *ema_sum,
                                     float *codebook) {
    double acc = 0.0;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        ema_count[j] = rmx_ema(ema_count[j], counts[j], decay);
        acc += ema_count[j];
    }
    float total = (float)block_sum_all(acc); /* its barriers publish ema_count to the block */
    size_t table = (size_t)k * d;
    for (size_t e = threadIdx.x; e < table; e += blockDim.x) {
        int j = (int)(e / d);
        float smoothed = rmx_laplace_count(ema_count[j], total, k, eps);
        ema_sum[e] = rmx_ema(ema_sum[e], sums[e], decay);
        codebook[e] = rmx_codebook_entry(ema_sum[e], smoothed);
    }
}

static void cuda_vq_ema_update(rmx_backend *be, int k, int d, float decay, float eps,
                               const float *counts, const float *sums, float *ema_count,
                               float *ema_sum, float *codebook) {
    if (k <= 0) return;
    vq_ema_update_kernel<<<1, 1024, 0, cuda_impl(be)->stream>>>(k, d, decay, eps, counts, sums,
                                                                 ema_count, ema_sum, codebook);
    CUDA_LAUNCHED();
}

void rmx_cuda_install_vq(rmx_backend *be) {
    be->vq_quantize = cuda_vq_quantize;
    be->vq_stats = cuda_vq_stats;
    be->vq_ema_update = cuda_vq_ema_update;
}
