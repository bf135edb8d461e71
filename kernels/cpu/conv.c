/* Convolution on the CPU: im2col + OpenBLAS sgemm, blocked over output rows.
 *
 * Work is cut into items (sample, block of output rows); each OpenMP thread takes items in turn,
 * unfolds its block into a private column buffer (a few MiB at most) and runs a single-threaded
 * sgemm on it. Per-thread GEMMs on blocks of ~1000 columns reach 75-90% of the library's
 * large-square sgemm rate on these shapes, and the unfolded block is consumed while still in cache
 * instead of round-tripping a whole-batch column matrix through memory.
 *
 *   forward     y[co, P] = w[co, K] col[K, P] (+ bias)        K = cin k k, P = block positions
 *   dw          dw[co, K] += dy[co, P] col[K, P]^T             per-thread partials, summed in order
 *   dx stride 1 a forward convolution of dy with the flipped, transposed kernel (pad k-1-pad), so it
 *               reuses the forward path and needs no scatter
 *   dx other    dcol[K, P] = w^T dy[co, P], then col2im; blocks two apart never overlap, so even
 *               and odd blocks run as two race-free phases
 * A 1x1 stride-1 convolution without padding skips the unfolding: the input is its own col matrix.
 * A stride-1 convolution with one output channel sums shifted rows directly (see conv1_row). */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

/* Column-buffer size a block aims at (floats): 512 Ki floats = 2 MiB. Measured on the bench layers,
 * this beat L2-sized blocks (128 Ki floats) by 2-5%: fewer, larger GEMMs amortise packing the
 * weights and the per-call overhead, and the block is still read back from L3. */
#define CONV_BLOCK_FLOATS (512 * 1024)
/* Fewer columns than this starves the GEMM kernel whatever the cache says. */
#define CONV_MIN_COLS 512

typedef struct {
    int rows;       /* output rows per block */
    int nblk;       /* blocks per sample */
    size_t col;     /* floats of one thread's column buffer */
    int direct;     /* 1x1, stride 1, no padding: no unfolding */
} conv_plan;

static int conv_is_direct(const rmx_conv_shape *s) { return s->k == 1 && s->stride == 1 && s->pad == 0; }

/* A stride-1 dx can run as a forward convolution only when the transposed padding is >= 0. */
static int conv_dx_as_fwd(const rmx_conv_shape *s) { return s->stride == 1 && s->pad <= s->k - 1; }

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static conv_plan conv_plan_make(const rmx_conv_shape *s, int min_rows) {
    conv_plan p;
    size_t kdim = (size_t)s->cin * s->k * s->k;
    size_t cols = CONV_BLOCK_FLOATS / kdim;
    if (cols < CONV_MIN_COLS) cols = CONV_MIN_COLS;
    int rows = (int)((cols + (size_t)s->wout / 2) / (size_t)s->wout);
    if (rows < min_rows) rows = min_rows;
    if (rows < 1) rows = 1;
    if (rows > s->hout) rows = s->hout;
    p.rows = rows;
    p.nblk = (s->hout + rows - 1) / rows;
    p.direct = conv_is_direct(s);
    /* whole 48-position panels for the AVX-512 path, plus one unfolded row */
    size_t pp = ((size_t)rows * s->wout + 47) / 48 * 48;
    p.col = round16(kdim * pp) + pp;
    return p;
}

/* The shape dx is computed with when it runs as a forward convolution of dy. */
static rmx_conv_shape conv_dx_shape(const rmx_conv_shape *s) {
    return rmx_conv_shape_make(s->n, s->cout, s->hout, s->wout, s->cin, s->k, 1, s->k - 1 - s->pad);
}

/* col2im needs blocks two apart to touch disjoint input rows: (rows-1) s + k - 1 < 2 rows s. */
static int conv_col2im_min_rows(const rmx_conv_shape *s) {
    int r = 1;
    while ((r - 1) * s->stride + s->k - 1 >= 2 * r * s->stride) r++;
    return r;
}

/* Workspace layout (floats): [flipped kernel | per-thread column buffers | per-thread dw partials]. */
typedef struct {
    size_t wflip, col_each, dw_each, total;
} conv_ws_layout;

static conv_ws_layout conv_ws(const rmx_conv_shape *s, int nt) {
    conv_ws_layout l;
    size_t col = conv_plan_make(s, 1).col;
    if (conv_dx_as_fwd(s)) {
        rmx_conv_shape t = conv_dx_shape(s);
        size_t c = conv_plan_make(&t, 1).col;
        if (c > col) col = c;
    } else {
        conv_plan p = conv_plan_make(s, conv_col2im_min_rows(s));
        /* + dy's block in 48-position panels for the AVX-512 path */
        size_t c = p.col + round16((size_t)s->cout * (((size_t)p.rows * s->wout + 47) / 48 * 48));
        if (c > col) col = c;
    }
    {
        /* the AVX-512 dw path: the plain unfolded block, then dy's block transposed */
        conv_plan p = conv_plan_make(s, 1);
        size_t P = (size_t)p.rows * s->wout;
        size_t c = round16((size_t)s->cin * s->k * s->k * P) + round16((size_t)s->cout * P);
        if (!p.direct && c > col) col = c;
    }
    /* the flipped kernel (dx as a forward pass) or the transposed one (dx through col2im) */
    l.wflip = round16((size_t)s->cin * s->cout * s->k * s->k);
    l.col_each = col;
    l.dw_each = round16((size_t)s->cout * s->cin * s->k * s->k);
    l.total = l.wflip + (size_t)nt * (col + l.dw_each);
    return l;
}

static size_t cpu_conv2d_workspace(rmx_backend *be, const rmx_conv_shape *s) {
    return conv_ws(s, rmx_cpu_threads(be)).total;
}

/* Output positions of block `blk`: rows [r0, r1). */
static void conv_block(const rmx_conv_shape *s, const conv_plan *p, int blk, int *r0, int *r1) {
    *r0 = blk * p->rows;
    *r1 = *r0 + p->rows < s->hout ? *r0 + p->rows : s->hout;
}

/* Valid output columns [lo, hi) for tap kx: 0 <= ox s - pad + kx < w. */
static void conv_tap_range(const rmx_conv_shape *s, int kx, int *lo, int *hi) {
    int a = s->pad - kx; /* need ox s >= a */
    *lo = a <= 0 ? 0 : (a + s->stride - 1) / s->stride;
    int b = s->w - 1 + s->pad - kx; /* need ox s <= b */
    *hi = b < 0 ? 0 : b / s->stride + 1;
    if (*hi > s->wout) *hi = s->wout;
    if (*lo > *hi) *lo = *hi;
}

/* col[(ci k + ky) k + kx][(oy - r0) wout + ox] = x[ci, oy s - pad + ky, ox s - pad + kx] (0 outside). */
/* Rows r0..r1 of the unfolded input for one tap (input channel ci, kernel offset ky, kx): for each
 * output row, the input samples that tap multiplies, zero where it reads padding. */
static inline void im2col_tap_rows(const rmx_conv_shape *s, const float *xb, int ci, int ky, int kx,
                                   int r0, int r1, float *rows) {
    int wo = s->wout, lo, hi;
    conv_tap_range(s, kx, &lo, &hi);
    for (int oy = r0; oy < r1; oy++) {
        float *dst = rows + (size_t)(oy - r0) * wo;
        int iy = oy * s->stride - s->pad + ky;
        if (iy < 0 || iy >= s->h || lo >= hi) {
            memset(dst, 0, sizeof(float) * wo);
            continue;
        }
        const float *src = xb + ((size_t)ci * s->h + iy) * s->w - s->pad + kx;
        if (lo > 0) memset(dst, 0, sizeof(float) * lo);
        if (s->stride == 1)
            memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
        else
            for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox * s->stride];
        if (hi < wo) memset(dst + hi, 0, sizeof(float) * (wo - hi));
    }
}

RMX_CLONES static void im2col(const rmx_conv_shape *s, const float *xb, int r0, int r1, float *col) {
    int k = s->k, wo = s->wout;
    size_t P = (size_t)(r1 - r0) * wo;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(ci * k + ky) * k + kx) * P;
                im2col_tap_rows(s, xb, ci, ky, kx, r0, r1, row);
            }
}

/* The adjoint of im2col: dxb[ci, iy, ix] += every column entry that was read from it. */
RMX_CLONES static void col2im_add(const rmx_conv_shape *s, const float *col, int r0, int r1, float *dxb) {
    int k = s->k, wo = s->wout;
    size_t P = (size_t)(r1 - r0) * wo;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + ((size_t)(ci * k + ky) * k + kx) * P;
                int lo, hi;
                conv_tap_range(s, kx, &lo, &hi);
                for (int oy = r0; oy < r1; oy++) {
                    int iy = oy * s->stride - s->pad + ky;
                    if (iy < 0 || iy >= s->h) continue;
                    const float *src = row + (size_t)(oy - r0) * wo;
                    float *dst = dxb + ((size_t)ci * s->h + iy) * s->w - s->pad + kx;
                    for (int ox = lo; ox < hi; ox++) dst[ox * s->stride] += src[ox];
                }
            }
}

/* ---- AVX-512 GEMM for the unfolded forward pass ----
 * OpenBLAS 0.3.21 runs its AVX2 (Haswell) kernels on cores it does not know (Zen 5), at half the
 * width the core has. Where the CPU has AVX-512 and cout is a multiple of 8, the forward pass (and
 * the stride-1 dx, which runs through it) unfolds each row block straight into panels of 48
 * positions, [panel][K][48], and multiplies them with an 8 x 48 register-blocked kernel. Every
 * output is bias + the sum over k = 0 .. K-1 in order (one FMA per term), whatever the thread
 * count or the block size. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CONV_HAVE_AVX512 1
#include <immintrin.h>

#define PK_NR 48
#define PK_MR 8

/* The AVX-512 paths run where the CPU has AVX-512F, unless RMX_CPU_GENERIC is set: the test suite
 * sets it to check the OpenBLAS path on the same machine (rmx_cpu_avx512, gemm.c). */
static int conv_avx512_ok(void) { return rmx_cpu_avx512(); }

/* im2col into panels: colp[(j K + kk) 48 + c] = col[kk][j 48 + c], zero past the last position.
 * Each unfolded row is built in `line` (P floats, in L1) as im2col does, then copied out in 48s. */
__attribute__((target("avx512f"))) static void im2col_packed(const rmx_conv_shape *s, const float *xb,
                                                             int r0, int r1, float *colp, float *line) {
    int k = s->k, wo = s->wout;
    size_t K = (size_t)s->cin * k * k;
    int P = (r1 - r0) * wo, np = (P + PK_NR - 1) / PK_NR;
    for (int i = P; i < np * PK_NR; i++) line[i] = 0.0f;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                size_t kk = ((size_t)ci * k + ky) * k + kx;
                im2col_tap_rows(s, xb, ci, ky, kx, r0, r1, line);
                float *d = colp + kk * PK_NR;
                for (int j = 0; j < np; j++, d += K * PK_NR) {
                    const float *l = line + (size_t)j * PK_NR;
                    _mm512_storeu_ps(d, _mm512_loadu_ps(l));
                    _mm512_storeu_ps(d + 16, _mm512_loadu_ps(l + 16));
                    _mm512_storeu_ps(d + 32, _mm512_loadu_ps(l + 32));
                }
            }
}

/* C[8 x ncols] (ldc) = bias + A[8 x K] (lda) B where B is one panel [K][48]; ncols <= 48. */
__attribute__((target("avx512f"))) static void pk_kernel_8x48(int K, const float *A, int lda,
                                                               const float *B, const float *bias,
                                                               float *C, size_t ldc, int ncols) {
    __m512 c[PK_MR][3];
    for (int m = 0; m < PK_MR; m++) c[m][0] = c[m][1] = c[m][2] = _mm512_setzero_ps();
    const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * (size_t)lda, *a3 = A + 3 * (size_t)lda;
    const float *a4 = A + 4 * (size_t)lda, *a5 = A + 5 * (size_t)lda, *a6 = A + 6 * (size_t)lda,
                *a7 = A + 7 * (size_t)lda;
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * PK_NR;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32);
        __m512 a;
#define PK_ROW(m, ap)                                   \
    a = _mm512_set1_ps(ap[k]);                          \
    c[m][0] = _mm512_fmadd_ps(a, b0, c[m][0]);          \
    c[m][1] = _mm512_fmadd_ps(a, b1, c[m][1]);          \
    c[m][2] = _mm512_fmadd_ps(a, b2, c[m][2]);
        PK_ROW(0, a0) PK_ROW(1, a1) PK_ROW(2, a2) PK_ROW(3, a3)
        PK_ROW(4, a4) PK_ROW(5, a5) PK_ROW(6, a6) PK_ROW(7, a7)
#undef PK_ROW
    }
    for (int m = 0; m < PK_MR; m++) {
        float *cr = C + (size_t)m * ldc;
        __m512 bv = _mm512_set1_ps(bias ? bias[m] : 0.0f);
        for (int v = 0; v < 3; v++) {
            int n = ncols - 16 * v;
            if (n <= 0) break;
            __m512 r = bias ? _mm512_add_ps(bv, c[m][v]) : c[m][v];
            if (n >= 16)
                _mm512_storeu_ps(cr + 16 * v, r);
            else
                _mm512_mask_storeu_ps(cr + 16 * v, (__mmask16)((1u << n) - 1), r);
        }
    }
}

/* dw on the same footing: dwT[kk, co] += sum over the block's positions p, in order, of
 * col[kk, p] dy[co, p], with col the plain unfolded block (12 rows at a time, broadcast) and dy
 * transposed into panels of 32 channels, [co / 32][P][32]. Needs K % 12 == 0 and cout % 32 == 0. */
#define DW_MR 12
#define DW_NR 32

__attribute__((target("avx512f"))) static void dw_kernel_12x32(int P, const float *A, size_t lda,
                                                                const float *B, float *C, size_t ldc) {
    __m512 c[DW_MR][2];
    for (int m = 0; m < DW_MR; m++) c[m][0] = c[m][1] = _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        const float *b = B + (size_t)p * DW_NR;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        for (int m = 0; m < DW_MR; m++) {
            __m512 a = _mm512_set1_ps(A[(size_t)m * lda + p]);
            c[m][0] = _mm512_fmadd_ps(a, b0, c[m][0]);
            c[m][1] = _mm512_fmadd_ps(a, b1, c[m][1]);
        }
    }
    for (int m = 0; m < DW_MR; m++) {
        float *cr = C + (size_t)m * ldc;
        _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), c[m][0]));
        _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), c[m][1]));
    }
}

/* dyt[(jn P + p) 32 + c] = dy[jn 32 + c, p] for the block's P positions (row stride ld). */
static void dw_pack_dy(int cout, int P, const float *dy, size_t ld, float *dyt) {
    for (int jn = 0; jn < cout / DW_NR; jn++)
        for (int p0 = 0; p0 < P; p0 += 64) {
            int pe = p0 + 64 < P ? p0 + 64 : P;
            for (int c = 0; c < DW_NR; c++) {
                const float *src = dy + (size_t)(jn * DW_NR + c) * ld;
                float *d = dyt + (size_t)jn * P * DW_NR + c;
                for (int p = p0; p < pe; p++) d[(size_t)p * DW_NR] = src[p];
            }
        }
}

/* One work item of the forward pass: unfold rows [r0, r1) of sample xb, write y's block at C. */
static void conv_fwd_item_avx512(const rmx_conv_shape *s, const float *xb, int r0, int r1,
                                 const float *w, const float *bias, float *C, size_t out_plane,
                                 float *colp) {
    int K = s->cin * s->k * s->k, P = (r1 - r0) * s->wout;
    int np = (P + PK_NR - 1) / PK_NR;
    im2col_packed(s, xb, r0, r1, colp, colp + (size_t)K * np * PK_NR);
    for (int j = 0; j < np; j++) {
        int nc = P - j * PK_NR < PK_NR ? P - j * PK_NR : PK_NR;
        const float *B = colp + (size_t)j * K * PK_NR;
        for (int m = 0; m < s->cout; m += PK_MR)
            pk_kernel_8x48(K, w + (size_t)m * K, K, B, bias ? bias + m : NULL,
                           C + (size_t)m * out_plane + (size_t)j * PK_NR, out_plane, nc);
    }
}
#else
#define CONV_HAVE_AVX512 0
#endif

/* ---- one output channel (the decoder's last layer) ----
 * A GEMM with one row degenerates into a memory-bound pass over the unfolded matrix; summing
 * shifted input rows straight into the output row does the same arithmetic from cache instead. */

/* y[oy, :] = bias + sum over (ci, ky, kx), in that order, of w * the shifted input row. */
RMX_CLONES static void conv1_row(const rmx_conv_shape *s, const float *xb, const float *w, float bias,
                                 int oy, float *yrow) {
    int k = s->k;
    for (int ox = 0; ox < s->wout; ox++) yrow[ox] = bias;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++) {
            int iy = oy - s->pad + ky;
            if (iy < 0 || iy >= s->h) continue;
            const float *xr = xb + ((size_t)ci * s->h + iy) * s->w;
            for (int kx = 0; kx < k; kx++) {
                int lo, hi;
                conv_tap_range(s, kx, &lo, &hi);
                float wv = w[(ci * k + ky) * k + kx];
                const float *src = xr - s->pad + kx;
                for (int ox = lo; ox < hi; ox++) yrow[ox] += wv * src[ox];
            }
        }
}

static void conv1_fwd(const rmx_conv_shape *s, int nt, const float *x, const float *w, const float *bias,
                      float *y) {
    size_t in_plane = (size_t)s->h * s->w;
    long rows = (long)s->n * s->hout;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long i = 0; i < rows; i++) {
        int b = (int)(i / s->hout), oy = (int)(i % s->hout);
        conv1_row(s, x + (size_t)b * s->cin * in_plane, w, bias ? bias[0] : 0.0f, oy,
                  y + (size_t)i * s->wout);
    }
}

/* dw[ci, :, :] += sum over samples and output positions of dy * shifted x, in double. One input
 * channel per call, all its taps in one pass so each dy row is read once per tap from L1; samples
 * in order, so the result does not depend on the thread count. */
#define CONV1_MAX_TAPS 64
RMX_CLONES static void conv1_dw_channel(const rmx_conv_shape *s, const float *x, const float *dy, int ci,
                                        float *dwc) {
    int k = s->k;
    size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->hout * s->wout;
    double acc[CONV1_MAX_TAPS] = {0};
    for (int b = 0; b < s->n; b++)
        for (int oy = 0; oy < s->hout; oy++) {
            const float *dr = dy + (size_t)b * out_plane + (size_t)oy * s->wout;
            for (int ky = 0; ky < k; ky++) {
                int iy = oy - s->pad + ky;
                if (iy < 0 || iy >= s->h) continue;
                const float *xr = x + ((size_t)b * s->cin + ci) * in_plane + (size_t)iy * s->w;
                for (int kx = 0; kx < k; kx++) {
                    int lo, hi;
                    conv_tap_range(s, kx, &lo, &hi);
                    if (lo < hi)
                        acc[ky * k + kx] += rmx_dot_f64(dr + lo, xr - s->pad + kx + lo, (size_t)(hi - lo));
                }
            }
        }
    for (int t = 0; t < k * k; t++) dwc[t] += (float)acc[t];
}

static void conv1_dw(const rmx_conv_shape *s, int nt, const float *x, const float *dy, float *dw) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int ci = 0; ci < s->cin; ci++) conv1_dw_channel(s, x, dy, ci, dw + (size_t)ci * s->k * s->k);
}

static int conv_is_single(const rmx_conv_shape *s) {
    return s->cout == 1 && s->stride == 1 && s->k * s->k <= CONV1_MAX_TAPS;
}

/* The input columns of one work item (a row block of one sample): the im2col matrix [kdim x P]
 * built in `col`, or, for a 1x1 stride-1 convolution, the input itself read in place. */
typedef struct {
    const float *B; /* [kdim x positions], leading dimension ldb */
    int ldb, positions;
    size_t first; /* the item's first output position within the sample's plane */
} item_columns;

static item_columns conv_item_columns(const rmx_conv_shape *s, const conv_plan *p, long item,
                                      const float *x, float *col, int *sample) {
    int r0, r1;
    *sample = (int)(item / p->nblk);
    conv_block(s, p, (int)(item % p->nblk), &r0, &r1);
    size_t in_plane = (size_t)s->h * s->w;
    const float *xb = x + (size_t)*sample * s->cin * in_plane;
    item_columns c = {col, (r1 - r0) * s->wout, (r1 - r0) * s->wout, (size_t)r0 * s->wout};
    if (p->direct) {
        c.B = xb + c.first;
        c.ldb = (int)in_plane;
    } else {
        im2col(s, xb, r0, r1, col);
    }
    return c;
}

/* The forward pass over all items; `colbuf` holds nt buffers of `col_each` floats. */
static void conv_fwd_run(const rmx_conv_shape *s, int nt, const float *x, const float *w,
                         const float *bias, float *y, float *colbuf, size_t col_each) {
    if (conv_is_single(s)) {
        conv1_fwd(s, nt, x, w, bias, y);
        return;
    }
    conv_plan p = conv_plan_make(s, 1);
    int kdim = s->cin * s->k * s->k;
    size_t out_plane = (size_t)s->hout * s->wout;
    long items = (long)s->n * p.nblk;
#if CONV_HAVE_AVX512
    if (s->cout % PK_MR == 0 && conv_avx512_ok()) {
        size_t in_plane = (size_t)s->h * s->w;
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            float *col = colbuf + (size_t)t * col_each;
            for (long i = t; i < items; i += nth) {
                int b = (int)(i / p.nblk), r0, r1;
                conv_block(s, &p, (int)(i % p.nblk), &r0, &r1);
                conv_fwd_item_avx512(s, x + (size_t)b * s->cin * in_plane, r0, r1, w, bias,
                                     y + (size_t)b * s->cout * out_plane + (size_t)r0 * s->wout, out_plane,
                                     col);
            }
        }
        return;
    }
#endif
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *col = colbuf + (size_t)t * col_each;
        for (long i = t; i < items; i += nth) {
            int b;
            item_columns cols = conv_item_columns(s, &p, i, x, col, &b);
            int P = cols.positions;
            size_t p0 = cols.first;
            const float *B = cols.B;
            int ldb = cols.ldb;
            float *C = y + (size_t)b * s->cout * out_plane + p0;
            float beta = 0.0f;
            if (bias) {
                for (int co = 0; co < s->cout; co++)
                    for (int j = 0; j < P; j++) C[co * out_plane + j] = bias[co];
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, P, kdim, 1.0f, w, kdim,
                        B, ldb, beta, C, (int)out_plane);
        }
    }
}

static void cpu_conv2d_fwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                           const float *b, float *y, float *ws) {
    int nt = rmx_cpu_threads(be);
    conv_ws_layout l = conv_ws(s, nt);
    conv_fwd_run(s, nt, x, w, b, y, ws + l.wflip, l.col_each);
}

/* wflip[ci, co, ky, kx] = w[co, ci, k-1-ky, k-1-kx]: the kernel of the transposed convolution. */
static void conv_flip_kernel(const rmx_conv_shape *s, const float *w, float *wflip) {
    int k = s->k, kk = k * k;
    for (int ci = 0; ci < s->cin; ci++)
        for (int co = 0; co < s->cout; co++)
            for (int t = 0; t < kk; t++)
                wflip[((size_t)ci * s->cout + co) * kk + t] = w[((size_t)co * s->cin + ci) * kk + kk - 1 - t];
}

/* dx for strides the forward path cannot express: dcol = w^T dy per block, scattered back. */
static void conv_dx_col2im(const rmx_conv_shape *s, int nt, const float *w, const float *dy, float *dx,
                           float *colbuf, size_t col_each, float *wt) {
    conv_plan p = conv_plan_make(s, conv_col2im_min_rows(s));
    int kdim = s->cin * s->k * s->k;
    size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->hout * s->wout;
    long items = (long)s->n * p.nblk;
    memset(dx, 0, sizeof(float) * (size_t)s->n * s->cin * in_plane);
#if CONV_HAVE_AVX512
    if (kdim % PK_MR == 0 && conv_avx512_ok()) {
        /* dcol = w^T dy with the forward kernel: wt[m, co] = w[co, m], dy packed in panels */
        int cout = s->cout;
        for (int m = 0; m < kdim; m++)
            for (int co = 0; co < cout; co++) wt[(size_t)m * cout + co] = w[(size_t)co * kdim + m];
        for (int phase = 0; phase < 2; phase++) {
#pragma omp parallel num_threads(nt)
            {
                int t = omp_get_thread_num(), nth = omp_get_num_threads();
                float *col = colbuf + (size_t)t * col_each;
                float *dyp = col + p.col;
                long mine = 0;
                for (long i = 0; i < items; i++) {
                    int b = (int)(i / p.nblk), blk = (int)(i % p.nblk), r0, r1;
                    if (blk % 2 != phase || mine++ % nth != t) continue;
                    conv_block(s, &p, blk, &r0, &r1);
                    int P = (r1 - r0) * s->wout, np = (P + PK_NR - 1) / PK_NR;
                    const float *A = dy + (size_t)b * cout * out_plane + (size_t)r0 * s->wout;
                    for (int j = 0; j < np; j++) {
                        int nc = P - j * PK_NR < PK_NR ? P - j * PK_NR : PK_NR;
                        for (int co = 0; co < cout; co++) {
                            float *d = dyp + ((size_t)j * cout + co) * PK_NR;
                            memcpy(d, A + (size_t)co * out_plane + (size_t)j * PK_NR, sizeof(float) * nc);
                            if (nc < PK_NR) memset(d + nc, 0, sizeof(float) * (PK_NR - nc));
                        }
                    }
                    for (int j = 0; j < np; j++) {
                        int nc = P - j * PK_NR < PK_NR ? P - j * PK_NR : PK_NR;
                        for (int m = 0; m < kdim; m += PK_MR)
                            pk_kernel_8x48(cout, wt + (size_t)m * cout, cout, dyp + (size_t)j * cout * PK_NR,
                                           NULL, col + (size_t)m * P + (size_t)j * PK_NR, (size_t)P, nc);
                    }
                    col2im_add(s, col, r0, r1, dx + (size_t)b * s->cin * in_plane);
                }
            }
        }
        return;
    }
#else
    (void)wt;
#endif
    for (int phase = 0; phase < 2; phase++) {
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            float *col = colbuf + (size_t)t * col_each;
            long mine = 0;
            for (long i = 0; i < items; i++) {
                int b = (int)(i / p.nblk), blk = (int)(i % p.nblk), r0, r1;
                if (blk % 2 != phase || mine++ % nth != t) continue;
                conv_block(s, &p, blk, &r0, &r1);
                int P = (r1 - r0) * s->wout;
                const float *A = dy + (size_t)b * s->cout * out_plane + (size_t)r0 * s->wout;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kdim, P, s->cout, 1.0f, w, kdim,
                            A, (int)out_plane, 0.0f, col, P);
                col2im_add(s, col, r0, r1, dx + (size_t)b * s->cin * in_plane);
            }
        }
    }
}

/* dw += dy col^T over all items: each thread into its own partial, then partials summed in thread
 * order, so the result does not depend on which thread finished first. */
static void conv_dw(const rmx_conv_shape *s, int nt, const float *x, const float *dy, float *dw,
                    float *colbuf, size_t col_each, float *dwbuf, size_t dw_each) {
    conv_plan p = conv_plan_make(s, 1);
    int kdim = s->cin * s->k * s->k;
    size_t out_plane = (size_t)s->hout * s->wout;
    size_t nw = (size_t)s->cout * kdim;
    long items = (long)s->n * p.nblk;
    int used = nt;
#if CONV_HAVE_AVX512
    if (!p.direct && kdim % DW_MR == 0 && s->cout % DW_NR == 0 && conv_avx512_ok()) {
        size_t in_plane = (size_t)s->h * s->w;
        int cout = s->cout;
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
#pragma omp single
            used = nth;
            float *col = colbuf + (size_t)t * col_each, *part = dwbuf + (size_t)t * dw_each;
            float *dyt = col + round16((size_t)kdim * p.rows * s->wout);
            memset(part, 0, sizeof(float) * nw);
            for (long i = t; i < items; i += nth) {
                int b = (int)(i / p.nblk), r0, r1;
                conv_block(s, &p, (int)(i % p.nblk), &r0, &r1);
                int P = (r1 - r0) * s->wout;
                im2col(s, x + (size_t)b * s->cin * in_plane, r0, r1, col);
                dw_pack_dy(cout, P, dy + (size_t)b * cout * out_plane + (size_t)r0 * s->wout, out_plane, dyt);
                for (int m = 0; m < kdim; m += DW_MR)
                    for (int jn = 0; jn < cout / DW_NR; jn++)
                        dw_kernel_12x32(P, col + (size_t)m * P, (size_t)P, dyt + (size_t)jn * P * DW_NR,
                                        part + (size_t)m * cout + jn * DW_NR, (size_t)cout);
            }
#pragma omp barrier
#pragma omp for schedule(static)
            for (size_t e = 0; e < nw; e++) {
                size_t co = e / (size_t)kdim, kk = e % (size_t)kdim;
                float acc = dw[e];
                for (int u = 0; u < used; u++) acc += dwbuf[(size_t)u * dw_each + kk * cout + co];
                dw[e] = acc;
            }
        }
        return;
    }
#endif
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), nth = omp_get_num_threads();
#pragma omp single
        used = nth;
        float *col = colbuf + (size_t)t * col_each, *part = dwbuf + (size_t)t * dw_each;
        memset(part, 0, sizeof(float) * nw);
        for (long i = t; i < items; i += nth) {
            int b;
            item_columns cols = conv_item_columns(s, &p, i, x, col, &b);
            int P = cols.positions;
            size_t p0 = cols.first;
            const float *B = cols.B;
            int ldb = cols.ldb;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, kdim, P, 1.0f,
                        dy + (size_t)b * s->cout * out_plane + p0, (int)out_plane, B, ldb, 1.0f, part, kdim);
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (size_t e = 0; e < nw; e++) {
            float acc = dw[e];
            for (int u = 0; u < used; u++) acc += dwbuf[(size_t)u * dw_each + e];
            dw[e] = acc;
        }
    }
}

/* db[co] += sum of dy over samples and positions, in double, one channel per iteration. */
static void conv_db(const rmx_conv_shape *s, int nt, const float *dy, float *db) {
    size_t out_plane = (size_t)s->hout * s->wout;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int co = 0; co < s->cout; co++) {
        double acc = 0.0;
        for (int b = 0; b < s->n; b++)
            acc += rmx_sum_f64(dy + ((size_t)b * s->cout + co) * out_plane, out_plane);
        db[co] += (float)acc;
    }
}

static void cpu_conv2d_bwd(rmx_backend *be, const rmx_conv_shape *s, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db, float *ws) {
    int nt = rmx_cpu_threads(be);
    conv_ws_layout l = conv_ws(s, nt);
    float *colbuf = ws + l.wflip, *dwbuf = colbuf + (size_t)nt * l.col_each;
    if (db) conv_db(s, nt, dy, db);
    if (dw && conv_is_single(s))
        conv1_dw(s, nt, x, dy, dw);
    else if (dw)
        conv_dw(s, nt, x, dy, dw, colbuf, l.col_each, dwbuf, l.dw_each);
    if (!dx) return;
    if (conv_dx_as_fwd(s)) {
        rmx_conv_shape t = conv_dx_shape(s);
        conv_flip_kernel(s, w, ws);
        conv_fwd_run(&t, nt, dy, ws, NULL, dx, colbuf, l.col_each);
    } else {
        conv_dx_col2im(s, nt, w, dy, dx, colbuf, l.col_each, ws);
    }
}

void rmx_cpu_install_conv(rmx_backend *be) {
    be->conv2d_workspace = cpu_conv2d_workspace;
    be->conv2d_fwd = cpu_conv2d_fwd;
    be->conv2d_bwd = cpu_conv2d_bwd;
}
