/* The transformer ops (the stage-2 DiT) and the diffusion arithmetic on the CPU.
 *
 * GEMMs go through rmx_cpu_sgemm (gemm.c), one single-threaded call per work item, with OpenMP
 * over the items. Every work decomposition is a function of the problem's shape alone, never of
 * the thread count, and every reduction that crosses items runs in a fixed order, so the results
 * are bit-identical for any number of threads:
 *   linear      y and dx in tiles of (rows, columns); dw in tiles of (out, in), each summing over
 *               all rows in one call (split by output rows, never by the summed dimension); db as
 *               column sums, row by row in order, in double
 *   modulate, gated_add   the per-sample column sums (dshift, dscale, dgate) over tokens in order,
 *               in double (the reference's order: the same bits)
 *   attention   flash-style, per (sample, head) and block of ATT_BQ queries: S = scale Q K^T against
 *               all keys (one sgemm), the stable softmax (row max, e^(s - max), lse = max + log of
 *               the sum), out = P V; forward items are (sample, head, query block). The backward
 *               recomputes P = e^(S - lse), dP = dO V^T, D = rowsum(dO O), dS = P (dP - D),
 *               dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO, the query blocks of a (sample,
 *               head) visited in order by one thread (threads take whole (sample, head) pairs).
 *               Each thread packs a head's keys and values once for all its query blocks.
 *               Memory: a [ATT_BQ x tokens] score block (two in the backward) and three packed
 *               [tokens x head_dim] operands per thread.
 *   embedding_bwd   the table gradient summed over i in increasing order, in double (as the
 *               reference: the same bits). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/elementwise.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384

/* ---- linear ---- */

/* Tile sizes (rows x columns of the output) of the linear GEMMs. Fixed, so a tile's sgemm call is
 * the same whatever thread runs it; rows in multiples of the micro-kernel's 12, columns of its 32. */
#define LIN_TM 240
#define LIN_TN 384
#define LIN_DW_MIN_TILES 16 /* dw tiles shrink (from 192 x 192) until there are this many */
#define LIN_COLS 64 /* columns of one db task */

static int ceil_div_i(int a, int b) { return (a + b - 1) / b; }

/* The dw tile: large tiles pack x and dy fewer times (each tile packs its x columns and dy
 * columns over all rows), small ones give the threads more work items. From 192 x 192, the larger
 * side halves (rows 192 -> 96 -> 48, columns 192 -> 96 -> 64) until there are LIN_DW_MIN_TILES
 * tiles: a function of the shape alone. */
static void lin_dw_tile(int out, int in, int *tm, int *tn) {
    int m = 192, n = 192;
    while ((long)ceil_div_i(out, m) * ceil_div_i(in, n) < LIN_DW_MIN_TILES && (m > 48 || n > 64)) {
        if (m >= n && m > 48)
            m /= 2;
        else if (n > 64)
            n = n == 96 ? 64 : n / 2;
        else
            m /= 2;
    }
    *tm = m, *tn = n;
}

/* y[r, o] = sum_i x[r, i] w[o, i] + b[o] */
static void cpu_linear_fwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                           const float *b, float *y) {
    int tr = ceil_div_i(rows, LIN_TM), tc = ceil_div_i(out, LIN_TN);
    long tiles = (long)tr * tc;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(dynamic, 1) if (tiles > 1)
    for (long t = 0; t < tiles; t++) {
        int r0 = (int)(t / tc) * LIN_TM, c0 = (int)(t % tc) * LIN_TN;
        int nr = rows - r0 < LIN_TM ? rows - r0 : LIN_TM, nc = out - c0 < LIN_TN ? out - c0 : LIN_TN;
        float *yt = y + (size_t)r0 * out + c0;
        rmx_cpu_sgemm(0, 1, nr, nc, in, 1.0f, x + (size_t)r0 * in, in, w + (size_t)c0 * in, in, 0.0f, yt,
                      out);
        if (b)
            for (int r = 0; r < nr; r++)
                for (int c = 0; c < nc; c++) yt[(size_t)r * out + c] += b[c0 + c];
    }
}

static void cpu_linear_bwd(rmx_backend *be, int rows, int in, int out, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db) {
    int nt = rmx_cpu_threads(be);
    if (dx) {
        /* dx [rows, in] = dy [rows, out] w [out, in] */
        int tr = ceil_div_i(rows, LIN_TM), tc = ceil_div_i(in, LIN_TN);
        long tiles = (long)tr * tc;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (tiles > 1)
        for (long t = 0; t < tiles; t++) {
            int r0 = (int)(t / tc) * LIN_TM, c0 = (int)(t % tc) * LIN_TN;
            int nr = rows - r0 < LIN_TM ? rows - r0 : LIN_TM, nc = in - c0 < LIN_TN ? in - c0 : LIN_TN;
            rmx_cpu_sgemm(0, 0, nr, nc, out, 1.0f, dy + (size_t)r0 * out, out, w + c0, in, 0.0f,
                          dx + (size_t)r0 * in + c0, in);
        }
    }
    if (dw) {
        /* dw [out, in] += dy^T [out, rows] x [rows, in]: tiles of dw, each summing all rows */
        int tm, tn;
        lin_dw_tile(out, in, &tm, &tn);
        int tr = ceil_div_i(out, tm), tc = ceil_div_i(in, tn);
        long tiles = (long)tr * tc;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (tiles > 1)
        for (long t = 0; t < tiles; t++) {
            int o0 = (int)(t / tc) * tm, c0 = (int)(t % tc) * tn;
            int no = out - o0 < tm ? out - o0 : tm, nc = in - c0 < tn ? in - c0 : tn;
            rmx_cpu_sgemm(1, 0, no, nc, rows, 1.0f, dy + o0, out, x + c0, in, 1.0f, dw + (size_t)o0 * in + c0,
                          in);
        }
    }
    if (db) {
        int tasks = ceil_div_i(out, LIN_COLS);
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)rows * out > PAR_MIN)
        for (int t = 0; t < tasks; t++) {
            int c0 = t * LIN_COLS, nc = out - c0 < LIN_COLS ? out - c0 : LIN_COLS;
            double acc[LIN_COLS] = {0};
            for (int r = 0; r < rows; r++) {
                const float *d = dy + (size_t)r * out + c0;
                for (int c = 0; c < nc; c++) acc[c] += d[c];
            }
            for (int c = 0; c < nc; c++) db[c0 + c] += (float)acc[c];
        }
    }
}

/* ---- LayerNorm (no affine) ---- */

/* Sum of (x - mu)^2 in double, grouped like rmx_sum_f64. */
static double sumsq_dev(const float *x, size_t n, double mu) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += ((double)x[i + l] - mu) * ((double)x[i + l] - mu);
    for (; i < n; i++) acc[i & 7] += ((double)x[i] - mu) * ((double)x[i] - mu);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void cpu_layernorm_fwd(rmx_backend *be, int rows, int d, float eps, const float *x, float *y,
                              float *rstd) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)rows * d > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double mu = rmx_sum_f64(xr, (size_t)d) / d;
        float mean = (float)mu, rs = rmx_layernorm_rstd(sumsq_dev(xr, (size_t)d, mu) / d, eps);
        for (int j = 0; j < d; j++) yr[j] = rmx_layernorm(xr[j], mean, rs);
        if (rstd) rstd[r] = rs;
    }
}

static void cpu_layernorm_bwd(rmx_backend *be, int rows, int d, const float *y, const float *rstd,
                              const float *dy, float *dx) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)rows * d > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * d, *dyr = dy + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        float mdy = (float)(rmx_sum_f64(dyr, (size_t)d) / d),
              mdyy = (float)(rmx_dot_f64(dyr, yr, (size_t)d) / d);
        float rs = rstd[r];
        for (int j = 0; j < d; j++) dxr[j] = rmx_layernorm_dx(dyr[j], yr[j], rs, mdy, mdyy);
    }
}

/* ---- GELU ---- */

RMX_CLONES static void gelu_fwd_range(const float *x, float *y, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) y[i] = rmx_gelu(x[i]);
}

RMX_CLONES static void gelu_bwd_range(const float *x, const float *dy, float *dx, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) dx[i] = dy[i] * rmx_gelu_grad(x[i]);
}

static void cpu_gelu_fwd(rmx_backend *be, size_t n, const float *x, float *y) {
#pragma omp parallel num_threads(rmx_cpu_threads(be)) if (n > PAR_MIN)
    {
        size_t b, e;
        rmx_thread_range(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        gelu_fwd_range(x, y, b, e);
    }
}

static void cpu_gelu_bwd(rmx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
#pragma omp parallel num_threads(rmx_cpu_threads(be)) if (n > PAR_MIN)
    {
        size_t b, e;
        rmx_thread_range(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        gelu_bwd_range(x, dy, dx, b, e);
    }
}

/* ---- adaLN modulation and the gated residual ---- */

static void cpu_modulate_fwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                             const float *shift, const float *scale, int ld, float *y) {
    long rows = (long)batch * tokens;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)rows * d > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        size_t b = (size_t)(r / tokens);
        const float *xr = x + (size_t)r * d, *sh = shift + b * ld, *sc = scale + b * ld;
        float *yr = y + (size_t)r * d;
        for (int j = 0; j < d; j++) yr[j] = rmx_modulate(xr[j], sh[j], sc[j]);
    }
}

/* Per-sample column sums over tokens, in token order, in double: out1[b ld + j] = sum_t a[b, t, j]
 * and (when out2) out2[b ld + j] = sum_t a[b, t, j] c[b, t, j]. Tasks are (sample, block of
 * columns), each walking the tokens in order: the reference's additions, the same bits. */
#define COLSUM_COLS 64
static void token_colsums(int nt, int batch, int tokens, int d, int ld, const float *a, const float *c,
                          float *out1, float *out2) {
    int cb = ceil_div_i(d, COLSUM_COLS);
    long tasks = (long)batch * cb;
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)batch * tokens * d > PAR_MIN)
    for (long t = 0; t < tasks; t++) {
        int b = (int)(t / cb), c0 = (int)(t % cb) * COLSUM_COLS,
            nc = d - c0 < COLSUM_COLS ? d - c0 : COLSUM_COLS;
        double s1[COLSUM_COLS] = {0}, s2[COLSUM_COLS] = {0};
        for (int k = 0; k < tokens; k++) {
            size_t off = ((size_t)b * tokens + k) * d + c0;
            const float *ar = a + off;
            if (out1)
                for (int j = 0; j < nc; j++) s1[j] += ar[j];
            if (out2) {
                const float *cr = c + off;
                for (int j = 0; j < nc; j++) s2[j] += (double)ar[j] * cr[j];
            }
        }
        for (int j = 0; j < nc; j++) {
            if (out1) out1[(size_t)b * ld + c0 + j] = (float)s1[j];
            if (out2) out2[(size_t)b * ld + c0 + j] = (float)s2[j];
        }
    }
}

static void cpu_modulate_bwd(rmx_backend *be, int batch, int tokens, int d, const float *x,
                             const float *scale, int ld, const float *dy, float *dx, float *dshift,
                             float *dscale) {
    int nt = rmx_cpu_threads(be);
    long rows = (long)batch * tokens;
    /* the sums first: dx may overwrite dy (in place) */
    if (dshift || dscale) token_colsums(nt, batch, tokens, d, ld, dy, x, dshift, dscale);
    if (dx) {
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)rows * d > PAR_MIN)
        for (long r = 0; r < rows; r++) {
            const float *sc = scale + (size_t)(r / tokens) * ld, *dyr = dy + (size_t)r * d;
            float *dxr = dx + (size_t)r * d;
            for (int j = 0; j < d; j++) dxr[j] = rmx_modulate_dx(dyr[j], sc[j]);
        }
    }
}

static void cpu_gated_add_fwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                              const float *gate, int ld, float *y) {
    long rows = (long)batch * tokens;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)rows * d > PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const float *g = gate + (size_t)(r / tokens) * ld, *hr = h + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        for (int j = 0; j < d; j++) yr[j] = rmx_gated_add(yr[j], g[j], hr[j]);
    }
}

static void cpu_gated_add_bwd(rmx_backend *be, int batch, int tokens, int d, const float *h,
                              const float *gate, int ld, const float *dy, float *dh, float *dgate) {
    int nt = rmx_cpu_threads(be);
    long rows = (long)batch * tokens;
    if (dgate) token_colsums(nt, batch, tokens, d, ld, dy, h, NULL, dgate); /* first: dh may be dy */
    if (dh) {
#pragma omp parallel for num_threads(nt) schedule(static) if ((size_t)rows * d > PAR_MIN)
        for (long r = 0; r < rows; r++) {
            const float *g = gate + (size_t)(r / tokens) * ld, *dyr = dy + (size_t)r * d;
            float *dhr = dh + (size_t)r * d;
            for (int j = 0; j < d; j++) dhr[j] = g[j] * dyr[j];
        }
    }
}

/* ---- attention ---- */

#define ATT_BQ 128 /* queries per block */

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* Sixteen floats as one GCC vector: the row max compiles to vector compares and blends in every
 * clone (the scalar form of a float max reduction does not vectorise). */
typedef float att_v16f __attribute__((vector_size(64)));
typedef int att_v16i __attribute__((vector_size(64)));

/* One thread's slice of the workspace: the score block S and the dP block (backward), each
 * [ATT_BQ x tokens], and three packed key / value operands of the head (rmx_cpu_pack_b): K^T and V
 * in the forward; K^T, V^T and K in the backward. */
typedef struct {
    size_t block, pack, total;
} att_layout;

static att_layout att_slice(int tokens, int hd) {
    att_layout l;
    size_t bq = (size_t)(tokens < ATT_BQ ? tokens : ATT_BQ);
    size_t pk = rmx_cpu_pack_floats(hd, tokens), pv = rmx_cpu_pack_floats(tokens, hd);
    l.block = round16(bq * tokens);
    l.pack = round16(pk > pv ? pk : pv);
    l.total = 2 * l.block + 3 * l.pack;
    return l;
}

static size_t cpu_attention_workspace(rmx_backend *be, int batch, int tokens, int d, int heads) {
    (void)batch;
    if (tokens <= 0 || heads <= 0) return 0;
    return (size_t)rmx_cpu_threads(be) * att_slice(tokens, d / heads).total;
}

/* Row i of S [nq x n] becomes its softmax P, and lse[i] its log-sum-exp: e = e^(s - max) stored
 * and summed (double, sixteen lanes in a fixed grouping), then P = e / sum. (The backward's
 * e^(s - lse) equals this P to rounding.) */
RMX_CLONES static void att_softmax_rows(int nq, int n, float *S, float *lse) {
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * n, mx = s[0];
        int j = 0;
        if (n >= 16) { /* sixteen lanes as one vector (a max is exact in any order) */
            att_v16f lane, v;
            memcpy(&lane, s, sizeof lane);
            for (j = 16; j + 16 <= n; j += 16) {
                memcpy(&v, s + j, sizeof v);
                att_v16i gt = v > lane;
                lane = (att_v16f)(((att_v16i)v & gt) | ((att_v16i)lane & ~gt));
            }
            for (int k = 0; k < 16; k++) mx = lane[k] > mx ? lane[k] : mx;
        }
        for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
        double acc[16] = {0};
        for (j = 0; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k++) acc[k] += s[j + k] = rmx_softmax_exp(s[j + k], mx);
        for (; j < n; j++) acc[j & 15] += s[j] = rmx_softmax_exp(s[j], mx);
        double sum = 0.0;
        for (int k = 0; k < 16; k++) sum += acc[k];
        lse[i] = rmx_logsumexp(mx, sum);
        float inv = (float)(1.0 / sum);
        for (j = 0; j < n; j++) s[j] *= inv;
    }
}

/* The backward's probabilities from the saved lse: P = e^(s - lse) (the forward's P to rounding). */
RMX_CLONES static void att_probs(int nq, int n, float *S, const float *lse) {
    for (int i = 0; i < nq; i++) {
        float *s = S + (size_t)i * n, l = lse[i];
        for (int j = 0; j < n; j++) s[j] = rmx_softmax_exp(s[j], l);
    }
}

/* The pointers of (sample b, head h) inside qkv [batch, tokens, 3d]: q, k, v with row stride 3d. */
typedef struct {
    const float *q, *k, *v;
} att_heads;

static att_heads att_ptrs(const float *qkv, int b, int h, int tokens, int d, int hd) {
    const float *base = qkv + (size_t)b * tokens * 3 * d + (size_t)h * hd;
    att_heads p = {base, base + d, base + 2 * d};
    return p;
}

/* Forward items: whole (sample, head) pairs, whose keys and values are packed once for all their
 * query blocks, when there are at least as many pairs as threads; else (sample, head, query block)
 * items, each packing what it uses. The two give the same bits (the same packed operands and
 * kernel calls), so the result does not depend on the thread count. */
static void cpu_attention_fwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                              float *out, float *lse, float *ws) {
    int nt = rmx_cpu_threads(be), hd = d / heads, nqb = ceil_div_i(tokens, ATT_BQ), ld = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    int whole = (long)batch * heads >= nt;
    long items = (long)batch * heads * (whole ? 1 : nqb);
    att_layout lay = att_slice(tokens, hd);
#pragma omp parallel num_threads(nt) if (items > 1)
    {
        float *S = ws + (size_t)omp_get_thread_num() * lay.total, *pk = S + 2 * lay.block, *pv = pk + lay.pack;
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            int bh = (int)(whole ? it : it / nqb), b = bh / heads, h = bh % heads;
            int qb0 = whole ? 0 : (int)(it % nqb), qb1 = whole ? nqb : qb0 + 1;
            att_heads p = att_ptrs(qkv, b, h, tokens, d, hd);
            rmx_cpu_packed kt = rmx_cpu_pack_b(1, hd, tokens, p.k, ld, pk); /* S = scale Q K^T */
            rmx_cpu_packed v = rmx_cpu_pack_b(0, tokens, hd, p.v, ld, pv);  /* out = P V */
            for (int qb = qb0; qb < qb1; qb++) {
                int q0 = qb * ATT_BQ, nq = tokens - q0 < ATT_BQ ? tokens - q0 : ATT_BQ;
                rmx_cpu_sgemm_packed(0, nq, scale, p.q + (size_t)q0 * ld, ld, &kt, 0.0f, S, tokens);
                att_softmax_rows(nq, tokens, S, lse + ((size_t)b * heads + h) * tokens + q0);
                rmx_cpu_sgemm_packed(0, nq, 1.0f, S, tokens, &v, 0.0f,
                                     out + ((size_t)b * tokens + q0) * d + (size_t)h * hd, d);
            }
        }
    }
}

/* dS = P (dP - D) in place of dP, with D[i] = sum_c dO_ic O_ic (double, rounded once). */
RMX_CLONES static void att_dscores(int nq, int n, int hd, const float *P, float *dP, const float *dO,
                                   const float *O, int ldo) {
    for (int i = 0; i < nq; i++) {
        float D = (float)rmx_dot_f64(dO + (size_t)i * ldo, O + (size_t)i * ldo, (size_t)hd);
        const float *p = P + (size_t)i * n;
        float *g = dP + (size_t)i * n;
        for (int j = 0; j < n; j++) g[j] = rmx_softmax_dscore(p[j], g[j], D);
    }
}

static void cpu_attention_bwd(rmx_backend *be, int batch, int tokens, int d, int heads, const float *qkv,
                              const float *out, const float *lse, const float *dout, float *dqkv, float *ws) {
    int nt = rmx_cpu_threads(be), hd = d / heads, nqb = ceil_div_i(tokens, ATT_BQ), ld = 3 * d;
    float scale = (float)(1.0 / sqrt((double)hd));
    long items = (long)batch * heads;
    att_layout lay = att_slice(tokens, hd);
#pragma omp parallel num_threads(nt) if (items > 1)
    {
        float *P = ws + (size_t)omp_get_thread_num() * lay.total, *dP = P + lay.block;
        float *pk = dP + lay.block, *pvt = pk + lay.pack, *pkk = pvt + lay.pack;
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            int b = (int)(it / heads), h = (int)(it % heads);
            att_heads p = att_ptrs(qkv, b, h, tokens, d, hd);
            float *dq = dqkv + (size_t)b * tokens * ld + (size_t)h * hd, *dk = dq + d, *dv = dq + 2 * d;
            const float *o = out + (size_t)b * tokens * d + (size_t)h * hd;
            const float *dob = dout + (size_t)b * tokens * d + (size_t)h * hd;
            const float *l = lse + ((size_t)b * heads + h) * tokens;
            rmx_cpu_packed kt = rmx_cpu_pack_b(1, hd, tokens, p.k, ld, pk);  /* S = scale Q K^T */
            rmx_cpu_packed vt = rmx_cpu_pack_b(1, hd, tokens, p.v, ld, pvt); /* dP = dO V^T */
            rmx_cpu_packed k = rmx_cpu_pack_b(0, tokens, hd, p.k, ld, pkk);  /* dQ = scale dS K */
            for (int qb = 0; qb < nqb; qb++) {
                int q0 = qb * ATT_BQ, nq = tokens - q0 < ATT_BQ ? tokens - q0 : ATT_BQ;
                const float *qblk = p.q + (size_t)q0 * ld, *doblk = dob + (size_t)q0 * d;
                float beta = qb ? 1.0f : 0.0f; /* the first block writes dK, dV; the others add */
                rmx_cpu_sgemm_packed(0, nq, scale, qblk, ld, &kt, 0.0f, P, tokens);
                att_probs(nq, tokens, P, l + q0);
                rmx_cpu_sgemm_packed(0, nq, 1.0f, doblk, d, &vt, 0.0f, dP, tokens);
                att_dscores(nq, tokens, hd, P, dP, doblk, o + (size_t)q0 * d, d);
                rmx_cpu_sgemm_packed(0, nq, scale, dP, tokens, &k, 0.0f, dq + (size_t)q0 * ld, ld);
                rmx_cpu_sgemm(1, 0, tokens, hd, nq, scale, dP, tokens, qblk, ld, beta, dk, ld);
                rmx_cpu_sgemm(1, 0, tokens, hd, nq, 1.0f, P, tokens, doblk, d, beta, dv, ld);
            }
        }
    }
}

/* ---- embedding, timestep, patches, broadcast ---- */

static void cpu_embedding_fwd(rmx_backend *be, int n, int d, const int32_t *idx, const float *table,
                              float *y) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)n * d > PAR_MIN)
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * d, table + (size_t)idx[i] * d, sizeof(float) * d);
}

/* Tasks own blocks of columns of the whole table and walk i in increasing order, summing in double:
 * the reference's additions, so the same bits. */
static void cpu_embedding_bwd(rmx_backend *be, int n, int d, int rows, const int32_t *idx, const float *dy,
                              float *dtable) {
    int cb = ceil_div_i(d, COLSUM_COLS);
    double *acc = malloc(sizeof(double) * (size_t)rows * d);
    if (!acc) abort();
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)n * d > PAR_MIN)
    for (int t = 0; t < cb; t++) {
        int c0 = t * COLSUM_COLS, nc = d - c0 < COLSUM_COLS ? d - c0 : COLSUM_COLS;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < nc; j++) acc[(size_t)r * d + c0 + j] = 0.0;
        for (int i = 0; i < n; i++) {
            double *a = acc + (size_t)idx[i] * d + c0;
            const float *g = dy + (size_t)i * d + c0;
            for (int j = 0; j < nc; j++) a[j] += g[j];
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < nc; j++) dtable[(size_t)r * d + c0 + j] += (float)acc[(size_t)r * d + c0 + j];
    }
    free(acc);
}

static void cpu_timestep_embed(rmx_backend *be, int n, int dim, const float *t, float *y) {
    int half = dim / 2;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)n * dim > PAR_MIN)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            float f = rmx_timestep_freq(j, half);
            y[(size_t)i * dim + j] = rmx_timestep_cos(t[i], f);
            y[(size_t)i * dim + half + j] = rmx_timestep_sin(t[i], f);
        }
}

/* One token at a time: its c p p features gathered from (or scattered to) the image, so tokens
 * are independent work items and no two threads write one element. The image offset of feature
 * (ch, py, px) of token `tok`: */
static size_t patch_pixel(int c, int h, int w, int p, long tok, int ch, int py, int px) {
    int gw = w / p, gh = h / p;
    int b = (int)(tok / ((long)gh * gw)), g = (int)(tok % ((long)gh * gw)), gy = g / gw, gx = g % gw;
    return (((size_t)b * c + ch) * h + (size_t)gy * p + py) * w + (size_t)gx * p + px;
}

static void cpu_patchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order, const float *x,
                         float *tokens) {
    long ntok = (long)batch * (h / p) * (w / p);
    size_t feat = (size_t)c * p * p;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)ntok * feat > PAR_MIN)
    for (long t = 0; t < ntok; t++)
        for (int ch = 0; ch < c; ch++)
            for (int py = 0; py < p; py++)
                for (int px = 0; px < p; px++)
                    tokens[t * feat + rmx_patch_feature(order, c, p, ch, py, px)] =
                        x[patch_pixel(c, h, w, p, t, ch, py, px)];
}

static void cpu_unpatchify(rmx_backend *be, int batch, int c, int h, int w, int p, int order,
                           const float *tokens, float *x) {
    long ntok = (long)batch * (h / p) * (w / p);
    size_t feat = (size_t)c * p * p;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)ntok * feat > PAR_MIN)
    for (long t = 0; t < ntok; t++)
        for (int ch = 0; ch < c; ch++)
            for (int py = 0; py < p; py++)
                for (int px = 0; px < p; px++)
                    x[patch_pixel(c, h, w, p, t, ch, py, px)] =
                        tokens[t * feat + rmx_patch_feature(order, c, p, ch, py, px)];
}

static void cpu_add_broadcast(rmx_backend *be, int batch, size_t n, const float *a, float *y) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if ((size_t)batch * n > PAR_MIN)
    for (int b = 0; b < batch; b++) {
        float *yb = y + (size_t)b * n;
        for (size_t i = 0; i < n; i++) yb[i] += a[i];
    }
}

/* ---- diffusion arithmetic ---- */

static void cpu_axpby_samples(rmx_backend *be, int n, size_t per_sample, const float *a, const float *x,
                              const float *b, const float *e, float *y) {
    size_t total = (size_t)n * per_sample;
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (total > PAR_MIN)
    for (size_t k = 0; k < total; k++) {
        size_t s = k / per_sample;
        y[k] = rmx_axpby(a[s], x[k], b[s], e[k]);
    }
}

static void cpu_ema_update(rmx_backend *be, size_t n, float decay, const float *param, float *ema) {
#pragma omp parallel for num_threads(rmx_cpu_threads(be)) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) ema[i] = rmx_ema(ema[i], param[i], decay);
}

void rmx_cpu_install_transformer(rmx_backend *be) {
    be->linear_fwd = cpu_linear_fwd;
    be->linear_bwd = cpu_linear_bwd;
    be->layernorm_fwd = cpu_layernorm_fwd;
    be->layernorm_bwd = cpu_layernorm_bwd;
    be->gelu_fwd = cpu_gelu_fwd;
    be->gelu_bwd = cpu_gelu_bwd;
    be->modulate_fwd = cpu_modulate_fwd;
    be->modulate_bwd = cpu_modulate_bwd;
    be->gated_add_fwd = cpu_gated_add_fwd;
    be->gated_add_bwd = cpu_gated_add_bwd;
    be->attention_workspace = cpu_attention_workspace;
    be->attention_fwd = cpu_attention_fwd;
    be->attention_bwd = cpu_attention_bwd;
    be->embedding_fwd = cpu_embedding_fwd;
    be->embedding_bwd = cpu_embedding_bwd;
    be->timestep_embed = cpu_timestep_embed;
    be->patchify = cpu_patchify;
    be->unpatchify = cpu_unpatchify;
    be->add_broadcast = cpu_add_broadcast;
    be->axpby_samples = cpu_axpby_samples;
    be->ema_update = cpu_ema_update;
}
