/* The cpu backend's single-threaded sgemm for the transformer ops (linear, attention).
 *
 * OpenBLAS 0.3.21 picks its kernels by the CPU model and falls back to old ones on models it does
 * not know: SSE3 "Prescott" kernels (about 30 GFLOP/s a core) on the Xeon this project is
 * developed on, AVX2 "Haswell" ones on Zen 5, against about 150 GFLOP/s with its AVX-512 kernels
 * (OPENBLAS_CORETYPE=SkylakeX, which has to be set before the library loads). So where the CPU has
 * AVX-512F this file runs its own GEMM: the classic blocked scheme (GotoBLAS / BLIS) with a
 * 12 x 32 register-blocked micro-kernel:
 *   for each block of NC columns, for each block of KC of the summed dimension:
 *     pack op(B)[KC x NC] into panels of 32 columns, [panel][k][32];
 *     for each block of MC rows: pack op(A)[MC x KC] into panels of 12 rows, [panel][k][12];
 *       for each (32-column panel, 12-row panel): the micro-kernel, 24 accumulators of 16 floats.
 * Every C element is the sum over k in order within a KC block (one FMA per term), the blocks added
 * in k order, so a call's result depends on its arguments alone, never on the thread that runs it.
 * RMX_CPU_GENERIC=1 (the tests set it too) or a CPU without AVX-512 takes cblas_sgemm instead.
 *
 * Packing buffers are per thread, grown on demand and kept until the thread exits (one MC x KC
 * block of A and one KC x NC block of B: under 1.3 MiB), so the many small GEMMs do not allocate. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

int rmx_cpu_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    static int ok = -1;
    if (ok < 0) { /* a data race of two first calls writes the same value */
        __builtin_cpu_init();
        const char *generic = getenv("RMX_CPU_GENERIC");
        ok = __builtin_cpu_supports("avx512f") && !(generic && *generic && strcmp(generic, "0") != 0);
    }
    return ok;
#else
    return 0;
#endif
}

static void blas_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define GM_MR 12
#define GM_NR 32
#define GM_KC 256
#define GM_MC 144  /* a multiple of GM_MR: the packed A block, 144 KiB, stays in L2 */
#define GM_NC 1024 /* a multiple of GM_NR: the packed B block, 1 MiB */

/* The calling thread's packing buffer, kept between calls (a pthread key: freed when the thread
 * exits, so a pool thread that goes away leaves no leak). */
typedef struct {
    float *p;
    size_t cap;
} gm_tls;

static pthread_key_t gm_key;
static pthread_once_t gm_once = PTHREAD_ONCE_INIT;

static void gm_tls_free(void *v) {
    gm_tls *t = v;
    free(t->p);
    free(t);
}

static void gm_key_make(void) {
    if (pthread_key_create(&gm_key, gm_tls_free)) abort();
}

static float *gm_buffer(size_t floats) {
    pthread_once(&gm_once, gm_key_make);
    gm_tls *t = pthread_getspecific(gm_key);
    if (!t) {
        if (!(t = calloc(1, sizeof *t)) || pthread_setspecific(gm_key, t)) abort();
    }
    if (floats > t->cap) {
        free(t->p);
        t->p = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        if (!t->p) abort();
        t->cap = floats;
    }
    return t->p;
}

/* op(A) rows [i0, i0 + mc), columns [k0, k0 + kc) into panels of GM_MR rows: ap[(p kc + k) MR + r],
 * zero past the last row. op(A)(i, k) = ta ? a[k lda + i] : a[i lda + k]. */
static void gm_pack_a(int ta, const float *a, int lda, int i0, int mc, int k0, int kc, float *ap) {
    for (int p = 0; p * GM_MR < mc; p++) {
        float *dst = ap + (size_t)p * kc * GM_MR;
        int rows = mc - p * GM_MR < GM_MR ? mc - p * GM_MR : GM_MR, r0 = i0 + p * GM_MR;
        if (ta) {
            for (int k = 0; k < kc; k++) {
                const float *src = a + (size_t)(k0 + k) * lda + r0;
                float *d = dst + (size_t)k * GM_MR;
                int r = 0;
                for (; r < rows; r++) d[r] = src[r];
                for (; r < GM_MR; r++) d[r] = 0.0f;
            }
        } else if (rows == GM_MR) {
            /* k outer: contiguous writes, twelve sequential read streams */
            const float *src = a + (size_t)r0 * lda + k0;
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < GM_MR; r++) dst[(size_t)k * GM_MR + r] = src[(size_t)r * lda + k];
        } else {
            const float *src = a + (size_t)r0 * lda + k0;
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < GM_MR; r++)
                    dst[(size_t)k * GM_MR + r] = r < rows ? src[(size_t)r * lda + k] : 0.0f;
        }
    }
}

/* op(B) rows [k0, k0 + kc), columns [j0, j0 + nc) into panels of GM_NR columns:
 * bp[(q kc + k) NR + c], zero past the last column. op(B)(k, j) = tb ? b[j ldb + k] : b[k ldb + j]. */
static void gm_pack_b(int tb, const float *b, int ldb, int k0, int kc, int j0, int nc, float *bp) {
    for (int q = 0; q * GM_NR < nc; q++) {
        float *dst = bp + (size_t)q * kc * GM_NR;
        int cols = nc - q * GM_NR < GM_NR ? nc - q * GM_NR : GM_NR, c0 = j0 + q * GM_NR;
        if (tb && cols == GM_NR) {
            const float *src = b + (size_t)c0 * ldb + k0;
            for (int k = 0; k < kc; k++)
                for (int c = 0; c < GM_NR; c++) dst[(size_t)k * GM_NR + c] = src[(size_t)c * ldb + k];
        } else if (tb) {
            const float *src = b + (size_t)c0 * ldb + k0;
            for (int k = 0; k < kc; k++)
                for (int c = 0; c < GM_NR; c++)
                    dst[(size_t)k * GM_NR + c] = c < cols ? src[(size_t)c * ldb + k] : 0.0f;
        } else {
            for (int k = 0; k < kc; k++) {
                const float *src = b + (size_t)(k0 + k) * ldb + c0;
                float *d = dst + (size_t)k * GM_NR;
                int c = 0;
                for (; c < cols; c++) d[c] = src[c];
                for (; c < GM_NR; c++) d[c] = 0.0f;
            }
        }
    }
}

/* C[mr x nr] (ldc) = alpha acc + beta C on the first K block (C not read when beta is 0), else
 * C += alpha acc; acc = the panel product over kc. */
__attribute__((target("avx512f"))) static void gm_kernel(int kc, const float *ap, const float *bp, float *c,
                                                         int ldc, int mr, int nr, float alpha, float beta,
                                                         int first) {
    __m512 acc[GM_MR][2];
    for (int r = 0; r < GM_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *a = ap + (size_t)k * GM_MR;
        __m512 b0 = _mm512_loadu_ps(bp + (size_t)k * GM_NR),
               b1 = _mm512_loadu_ps(bp + (size_t)k * GM_NR + 16);
        __m512 x;
        /* clang-format off */
#define GM_ROW(r)                                  \
    x = _mm512_set1_ps(a[r]);                      \
    acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]); \
    acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
        GM_ROW(0) GM_ROW(1) GM_ROW(2) GM_ROW(3) GM_ROW(4) GM_ROW(5)
        GM_ROW(6) GM_ROW(7) GM_ROW(8) GM_ROW(9) GM_ROW(10) GM_ROW(11)
#undef GM_ROW
        /* clang-format on */
    }
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : (__mmask16)0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < mr; r++) {
        float *row = c + (size_t)r * ldc;
        __m512 v0 = _mm512_mul_ps(va, acc[r][0]), v1 = _mm512_mul_ps(va, acc[r][1]);
        if (!first) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), v1);
        } else if (beta != 0.0f) {
            v0 = _mm512_add_ps(v0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, row)));
            v1 = _mm512_add_ps(v1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16)));
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
}

/* Floats of a whole op(B) [k x n] packed as gm_sgemm packs it block by block: for each block of
 * GM_NC columns (jc), for each block of GM_KC rows (pc), its panels; block (jc, pc) starts at
 * jc k + ncp pc with ncp the block's width rounded up to GM_NR. */
static size_t gm_packed_floats(int k, int n) { return (size_t)(n + GM_NR - 1) / GM_NR * GM_NR * (size_t)k; }

static size_t gm_block_offset(int k, int jc, int nc, int pc) {
    return (size_t)jc * k + (size_t)(nc + GM_NR - 1) / GM_NR * GM_NR * pc;
}

static void gm_pack_b_all(int tb, int k, int n, const float *b, int ldb, float *packed) {
    for (int jc = 0; jc < n; jc += GM_NC) {
        int nc = n - jc < GM_NC ? n - jc : GM_NC;
        for (int pc = 0; pc < k; pc += GM_KC)
            gm_pack_b(tb, b, ldb, pc, k - pc < GM_KC ? k - pc : GM_KC, jc, nc,
                      packed + gm_block_offset(k, jc, nc, pc));
    }
}

/* C = alpha op(A) op(B) + beta C; op(B) packed beforehand (prepacked) or block by block here. */
static void gm_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, const float *prepacked, float beta, float *c, int ldc) {
    if (k <= 0) { /* C = beta C, with beta 0 writing zeros whatever C held */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return;
    }
    int mcmax = m < GM_MC ? m : GM_MC, ncmax = n < GM_NC ? n : GM_NC, kcmax = k < GM_KC ? k : GM_KC;
    size_t asz = (size_t)(mcmax + GM_MR - 1) / GM_MR * GM_MR * kcmax;
    float *ap = gm_buffer(asz + (prepacked ? 0 : (size_t)(ncmax + GM_NR - 1) / GM_NR * GM_NR * kcmax));
    for (int jc = 0; jc < n; jc += GM_NC) {
        int nc = n - jc < GM_NC ? n - jc : GM_NC;
        for (int pc = 0; pc < k; pc += GM_KC) {
            int kc = k - pc < GM_KC ? k - pc : GM_KC;
            const float *bp;
            if (prepacked) {
                bp = prepacked + gm_block_offset(k, jc, nc, pc);
            } else {
                gm_pack_b(tb, b, ldb, pc, kc, jc, nc, ap + asz);
                bp = ap + asz;
            }
            for (int ic = 0; ic < m; ic += GM_MC) {
                int mc = m - ic < GM_MC ? m - ic : GM_MC;
                gm_pack_a(ta, a, lda, ic, mc, pc, kc, ap);
                for (int jr = 0; jr < nc; jr += GM_NR)
                    for (int ir = 0; ir < mc; ir += GM_MR)
                        gm_kernel(kc, ap + (size_t)ir * kc, bp + (size_t)jr * kc,
                                  c + (size_t)(ic + ir) * ldc + jc + jr, ldc,
                                  mc - ir < GM_MR ? mc - ir : GM_MR, nc - jr < GM_NR ? nc - jr : GM_NR, alpha,
                                  beta, pc == 0);
            }
        }
    }
}
#endif

void rmx_cpu_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                   int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
#if defined(__x86_64__) && defined(__GNUC__)
    if (rmx_cpu_avx512()) {
        gm_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, NULL, beta, c, ldc);
        return;
    }
#endif
    blas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

size_t rmx_cpu_pack_floats(int k, int n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (rmx_cpu_avx512()) return k > 0 && n > 0 ? gm_packed_floats(k, n) : 0;
#endif
    (void)k, (void)n;
    return 0;
}

rmx_cpu_packed rmx_cpu_pack_b(int tb, int k, int n, const float *b, int ldb, float *buf) {
    rmx_cpu_packed p = {tb, k, n, ldb, b, NULL};
#if defined(__x86_64__) && defined(__GNUC__)
    if (rmx_cpu_avx512() && k > 0 && n > 0) {
        gm_pack_b_all(tb, k, n, b, ldb, buf);
        p.packed = buf;
    }
#endif
    (void)buf;
    return p;
}

void rmx_cpu_sgemm_packed(int ta, int m, float alpha, const float *a, int lda, const rmx_cpu_packed *b,
                          float beta, float *c, int ldc) {
    if (m <= 0 || b->n <= 0) return;
#if defined(__x86_64__) && defined(__GNUC__)
    if (b->packed) {
        gm_sgemm(ta, b->tb, m, b->n, b->k, alpha, a, lda, b->b, b->ldb, b->packed, beta, c, ldc);
        return;
    }
#endif
    blas_sgemm(ta, b->tb, m, b->n, b->k, alpha, a, lda, b->b, b->ldb, beta, c, ldc);
}
