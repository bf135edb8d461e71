/* Counter-based randomness (Philox4x32-10 from Random123).
 *
 * Every random number is a pure function of (seed, purpose, step, global sample index, element):
 * the noise a sample gets does not depend on the number of ranks, the micro-batch split, or on
 * whether the run was resumed. Header-only and free of host-only calls, so the CUDA kernels
 * include the same functions the CPU code (and its tests) use. */
#ifndef RMX_RNG_H
#define RMX_RNG_H

#include <stdint.h>
#include <math.h>
#include <Random123/philox.h>

#ifdef __CUDACC__
#define RMX_HD __host__ __device__
#else
#define RMX_HD
#endif

/* What the numbers are for; distinct purposes never share a stream. */
enum rmx_rng_purpose {
    RMX_RNG_PERMUTATION = 1, /* epoch permutation of the sample stream */
    RMX_RNG_LATENT = 2,      /* reparameterisation noise z = mu + sigma * eps */
    RMX_RNG_DIFFUSION_T = 3, /* diffusion timestep per sample */
    RMX_RNG_DIFFUSION_EPS = 4,
    RMX_RNG_LABEL_DROP = 5,  /* classifier-free guidance label dropout */
    RMX_RNG_CODE_RESTART = 6,/* VQ dead-code restarts */
    RMX_RNG_INIT = 7,        /* parameter initialisation */
    RMX_RNG_SAMPLING = 8,    /* generation / remix sampling noise */
    RMX_RNG_DEMO = 9,        /* demo dataset synthesis */
    RMX_RNG_REMIX_PAIR = 10, /* remix: the style segment paired with a training sample */
    RMX_RNG_REMIX_T = 11,    /* remix: the strength (noise level) of a training sample */
    RMX_RNG_REMIX_EPS = 12,  /* remix: the noise of a training sample */
    RMX_RNG_STYLE_DROP = 13, /* remix: style-token dropout (style guidance) */
};

/* Four 32-bit words for (seed, purpose, step, index) and the counter `ctr` within that stream. */
static inline RMX_HD philox4x32_ctr_t rmx_philox(uint64_t seed, uint32_t purpose, uint64_t step,
                                                  uint64_t index, uint32_t ctr) {
    philox4x32_key_t k = {{(uint32_t)seed, (uint32_t)(seed >> 32)}};
    philox4x32_ctr_t c = {{ctr, purpose ^ ((uint32_t)(step >> 32) << 8), (uint32_t)step,
                           (uint32_t)index ^ ((uint32_t)(index >> 32) * 0x9E3779B9u)}};
    return philox4x32(c, k);
}

/* Uniform in (0, 1), never exactly 0 or 1. */
static inline RMX_HD float rmx_u01(uint32_t x) { return ((float)(x >> 8) + 0.5f) * (1.0f / 16777216.0f); }

/* The n-th standard normal of a stream: Box-Muller on one Philox block gives 2 pairs, i.e. 4 normals. */
static inline RMX_HD float rmx_normal(uint64_t seed, uint32_t purpose, uint64_t step, uint64_t index,
                                      uint32_t n) {
    philox4x32_ctr_t r = rmx_philox(seed, purpose, step, index, n >> 2);
    uint32_t pair = (n >> 1) & 1u;
    float u1 = rmx_u01(r.v[2 * pair]), u2 = rmx_u01(r.v[2 * pair + 1]);
    float rad = sqrtf(-2.0f * logf(u1));
    float ang = 6.283185307179586f * u2;
    return (n & 1u) ? rad * sinf(ang) : rad * cosf(ang);
}

/* The n-th uniform 32-bit word of a stream. */
static inline RMX_HD uint32_t rmx_u32(uint64_t seed, uint32_t purpose, uint64_t step, uint64_t index,
                                      uint32_t n) {
    return rmx_philox(seed, purpose, step, index, n >> 2).v[n & 3u];
}

#endif
