/* The bucketed gradient all-reduce (train/reducer.h) over real MPI ranks, on host buffers:
 *   - the plan: buckets tile the buffer, hold whole tensors, never mix decayed and undecayed
 *     tensors, respect the size cap, and are ordered by expected completion;
 *   - every bucket is started exactly once per step, in plan order, whatever order (different on
 *     every rank) the tensors are reported in, and a bucket starts as soon as it and all buckets
 *     before it are complete (overlap with the backward pass);
 *   - the result equals one plain MPI_Allreduce of the whole buffer: exactly for integer-valued
 *     floats, within float rounding for random values; two runs give the same bits;
 *   - a world of one (no transport) leaves the buffer alone.
 * Runs with any number of ranks (ctest: 1, 2 and 4). */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/params.h"
#include "train/reducer.h"

static int failures = 0, rank = 0, world = 1;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            failures++;                                                                   \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", rank, __FILE__, __LINE__, \
                    #cond);                                                               \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

/* xorshift64*: test data and orders only */
static uint64_t rng_state;
static uint64_t next_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static double next_unit(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

/* A registry shaped like a small model: per layer a conv kernel and bias, per norm a gain and a
 * bias, sizes from a few floats to a few thousand (some above the small caps used below). */
static void build_registry(rmx_params *p, rmx_backend *be) {
    rmx_params_init(p, be, 1, 0);
    char name[64];
    for (int l = 0; l < 14; l++) {
        int cin = 1 + (l * 5) % 17, cout = 2 + (l * 7) % 23, k = l % 3 == 2 ? 1 : 3;
        int64_t norm_shape[1] = {cin};
        snprintf(name, sizeof name, "layer.%d.norm.weight", l);
        rmx_params_add(p, name, 1, norm_shape, RMX_INIT_CONST, 1.0f);
        snprintf(name, sizeof name, "layer.%d.norm.bias", l);
        rmx_params_add(p, name, 1, norm_shape, RMX_INIT_CONST, 0.0f);
        int64_t wshape[4] = {cout, cin, k, k}, bshape[1] = {cout};
        snprintf(name, sizeof name, "layer.%d.conv.weight", l);
        rmx_params_add(p, name, 4, wshape, RMX_INIT_UNIFORM, 0.1f);
        snprintf(name, sizeof name, "layer.%d.conv.bias", l);
        rmx_params_add(p, name, 1, bshape, RMX_INIT_UNIFORM, 0.1f);
    }
    rmx_params_finalize(p);
}

/* ------------------------------------------------------------------------------------------ */
/* a transport that records what it is asked to do, around the MPI one                          */

#define MAX_STARTS 4096
typedef struct {
    rmx_reduce_transport inner;
    const float *base;
    size_t start_begin[MAX_STARTS], start_n[MAX_STARTS];
    int starts, finishes;
} recorder;

static void rec_start(void *ctx, float *buf, size_t n) {
    recorder *r = ctx;
    if (r->starts < MAX_STARTS) {
        r->start_begin[r->starts] = (size_t)(buf - r->base);
        r->start_n[r->starts] = n;
    }
    r->starts++;
    if (r->inner.start) r->inner.start(r->inner.ctx, buf, n);
}
static void rec_finish(void *ctx) {
    recorder *r = ctx;
    r->finishes++;
    if (r->inner.finish) r->inner.finish(r->inner.ctx);
}
static void rec_progress(void *ctx) {
    recorder *r = ctx;
    if (r->inner.progress) r->inner.progress(r->inner.ctx);
}
static void rec_destroy(void *ctx) {
    recorder *r = ctx;
    if (r->inner.destroy) r->inner.destroy(r->inner.ctx);
    free(r);
}

static rmx_reducer *make_reducer(const rmx_params *p, size_t cap, recorder **rec_out) {
    recorder *rec = calloc(1, sizeof *rec);
    if (!rec) abort();
    rec->inner = rmx_reduce_transport_mpi(MPI_COMM_WORLD);
    rec->base = p->grad;
    rmx_reduce_transport t = {rec, rec_start, rec_finish, rec_progress, rec_destroy};
    *rec_out = rec;
    return rmx_reducer_create(p, cap, &t);
}

/* ------------------------------------------------------------------------------------------ */
/* the plan                                                                                     */

static void check_plan(const rmx_params *p, const rmx_reducer *r, size_t cap, const char *what) {
    int nb;
    const rmx_bucket *b = rmx_reducer_buckets(r, &nb);
    CHECK(nb >= 1, "%s: no buckets", what);
    /* tiling: sorted by begin, each starts where the previous ended, from 0 to span */
    size_t covered = 0;
    for (int k = 0; k < nb; k++) covered += b[k].end - b[k].begin;
    CHECK(covered == p->span, "%s: buckets cover %zu floats of %zu", what, covered, p->span);
    size_t pos = 0;
    for (int step = 0; step < nb; step++) {
        int found = -1;
        for (int k = 0; k < nb; k++)
            if (b[k].begin == pos && b[k].end > pos) found = k;
        CHECK(found >= 0, "%s: no bucket starts at float %zu", what, pos);
        if (found < 0) break;
        pos = b[found].end;
    }
    CHECK(pos == p->span, "%s: tiling ends at %zu, span %zu", what, pos, p->span);
    /* whole tensors: each tensor lies inside exactly one bucket */
    for (int i = 0; i < p->count; i++) {
        const rmx_param_info *t = rmx_params_get(p, i);
        int inside = 0;
        for (int k = 0; k < nb; k++)
            if (t->offset >= b[k].begin && t->offset + t->numel <= b[k].end) inside++;
        CHECK(inside == 1, "%s: tensor %s lies in %d buckets", what, t->name, inside);
    }
    for (int k = 0; k < nb; k++) {
        /* one decay class per bucket, and the cap unless a single tensor exceeds it */
        int decayed = 0, plain = 0, lowest = p->count;
        for (int i = 0; i < p->count; i++) {
            const rmx_param_info *t = rmx_params_get(p, i);
            if (t->offset < b[k].begin || t->offset >= b[k].end) continue;
            decayed += t->decay;
            plain += !t->decay;
            if (i < lowest) lowest = i;
        }
        CHECK(!(decayed && plain), "%s: bucket %d mixes decayed and undecayed tensors", what, k);
        CHECK(decayed + plain == b[k].tensors, "%s: bucket %d holds %d tensors, says %d", what, k,
              decayed + plain, b[k].tensors);
        CHECK(b[k].end - b[k].begin <= cap || b[k].tensors == 1,
              "%s: bucket %d has %zu floats over the cap %zu with %d tensors", what, k,
              b[k].end - b[k].begin, cap, b[k].tensors);
        CHECK(b[k].min_id == lowest, "%s: bucket %d min_id %d, lowest tensor %d", what, k,
              b[k].min_id, lowest);
        if (k > 0)
            CHECK(b[k].min_id < b[k - 1].min_id, "%s: bucket %d (lowest tensor %d) after bucket %d "
                  "(lowest tensor %d): not in completion order", what, k, b[k].min_id, k - 1,
                  b[k - 1].min_id);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* steps                                                                                        */

enum { ORDER_BACKWARD, ORDER_RANDOM, ORDER_HALF, ORDER_NONE, ORDER_NO_BEGIN, N_ORDERS };
static const char *const order_names[N_ORDERS] = {"backward order", "random order per rank",
                                                  "half reported", "none reported", "no begin"};

/* One step: fills are the caller's; reports tensors in the given order, checking the overlap
 * property on the way, then waits. */
static void run_step(const rmx_params *p, rmx_reducer *r, recorder *rec, int order, uint64_t seed) {
    int n = p->count, nb;
    const rmx_bucket *b = rmx_reducer_buckets(r, &nb);
    int *perm = malloc((size_t)n * sizeof *perm);
    if (!perm) abort();
    for (int i = 0; i < n; i++) perm[i] = n - 1 - i; /* the backward pass: last registered first */
    if (order == ORDER_RANDOM) {
        rng_state = seed * 0x9E3779B97F4A7C15ull + (uint64_t)rank * 7919u + 1;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(next_u64() % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }
    int starts0 = rec->starts, finishes0 = rec->finishes;
    int reported = order == ORDER_HALF ? n / 2 : (order == ORDER_NONE || order == ORDER_NO_BEGIN) ? 0 : n;
    if (order == ORDER_NO_BEGIN) {
        /* notifications outside begin .. wait_all belong to earlier micro-batches: ignored */
        for (int i = 0; i < n; i++) rmx_reducer_mark_ready(r, i);
        CHECK(rec->starts == starts0, "%s: %d starts without begin", order_names[order],
              rec->starts - starts0);
    } else {
        rmx_reducer_begin(r);
    }
    unsigned char *marked = calloc((size_t)n, 1);
    if (!marked) abort();
    for (int i = 0; i < reported; i++) {
        rmx_reducer_mark_ready(r, perm[i]);
        if (i % 3 == 0) rmx_reducer_hook(r, perm[i]); /* repeats are ignored */
        marked[perm[i]] = 1;
        /* as soon as a prefix of the launch order is complete, all of it has started */
        int complete = 0;
        while (complete < nb) {
            int all = 1;
            for (int q = 0; q < n; q++) {
                const rmx_param_info *t = rmx_params_get(p, q);
                if (t->offset >= b[complete].begin && t->offset < b[complete].end && !marked[q]) all = 0;
            }
            if (!all) break;
            complete++;
        }
        CHECK(rmx_reducer_started(r) == complete,
              "%s: after %d reports %d buckets complete in prefix, %d started",
              order_names[order], i + 1, complete, rmx_reducer_started(r));
    }
    free(marked);
    if (reported == n && order != ORDER_NO_BEGIN)
        CHECK(rmx_reducer_started(r) == nb, "%s: all reported, %d of %d buckets started",
              order_names[order], rmx_reducer_started(r), nb);
    rmx_reducer_wait_all(r);
    /* every bucket exactly once, in plan order, and one finish */
    CHECK(rec->starts - starts0 == nb, "%s: %d starts for %d buckets", order_names[order],
          rec->starts - starts0, nb);
    for (int k = 0; k < nb && starts0 + k < MAX_STARTS; k++)
        CHECK(rec->start_begin[starts0 + k] == b[k].begin &&
                  rec->start_n[starts0 + k] == b[k].end - b[k].begin,
              "%s: start %d was [%zu, +%zu), bucket %d is [%zu, %zu)", order_names[order], k,
              rec->start_begin[starts0 + k], rec->start_n[starts0 + k], k, b[k].begin, b[k].end);
    CHECK(rec->finishes - finishes0 == 1, "%s: %d finishes", order_names[order],
          rec->finishes - finishes0);
    free(perm);
}

/* Integer-valued floats: every algorithm sums them exactly, so the result must be exact. */
static void test_exact(const rmx_params *p, size_t cap, int order) {
    recorder *rec;
    rmx_reducer *r = make_reducer(p, cap, &rec);
    for (int step = 0; step < 3; step++) {
        for (size_t e = 0; e < p->span; e++)
            p->grad[e] = (float)((rank + 1) * (int)((e * 31 + (size_t)step) % 97 + 1));
        run_step(p, r, rec, order, (uint64_t)step + 1);
        double ranks = 0.5 * world * (world + 1);
        size_t bad = 0, first_bad = 0;
        for (size_t e = 0; e < p->span; e++)
            if (p->grad[e] != (float)(ranks * (double)((e * 31 + (size_t)step) % 97 + 1))) {
                if (!bad) first_bad = e;
                bad++;
            }
        CHECK(bad == 0, "cap %zu, %s, step %d: %zu floats differ from the exact sum (first %zu)",
              cap, order_names[order], step, bad, first_bad);
    }
    rmx_reducer_free(r);
}

/* Random floats: against one MPI_Allreduce of the whole buffer, within float rounding; and the
 * same bits when repeated with other report orders. */
static void test_random(const rmx_params *p, size_t cap) {
    size_t n = p->span;
    float *input = malloc(n * sizeof *input), *want = malloc(n * sizeof *want);
    float *first = malloc(n * sizeof *first);
    if (!input || !want || !first) abort();
    rng_state = 0x1234567ull + (uint64_t)rank * 1000003u;
    for (size_t e = 0; e < n; e++) input[e] = (float)(2.0 * next_unit() - 1.0) * (float)(1 + e % 7);
    memcpy(want, input, n * sizeof *want);
    MPI_Allreduce(MPI_IN_PLACE, want, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    recorder *rec;
    rmx_reducer *r = make_reducer(p, cap, &rec);
    for (int order = 0; order < N_ORDERS; order++) {
        memcpy(p->grad, input, n * sizeof *input);
        run_step(p, r, rec, order, 99);
        double worst = 0.0;
        for (size_t e = 0; e < n; e++) {
            /* world terms of magnitude <= 7: a few ulps of world * 7 */
            double d = fabs((double)p->grad[e] - want[e]);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 4.0 * world * 7.0 * 1.2e-7, "cap %zu, %s: differs from MPI_Allreduce by %g",
              cap, order_names[order], worst);
        if (order == 0)
            memcpy(first, p->grad, n * sizeof *first);
        else
            CHECK(memcmp(first, p->grad, n * sizeof *first) == 0,
                  "cap %zu, %s: not bit-identical to the backward-order run", cap, order_names[order]);
    }
    rmx_reducer_free(r);
    free(input);
    free(want);
    free(first);
}

/* A world of one: no transport, nothing happens, and the plan is still there. */
static void test_world_of_one(const rmx_params *p) {
    rmx_reducer *r = rmx_reducer_create(p, 500, NULL);
    for (size_t e = 0; e < p->span; e++) p->grad[e] = (float)e * 0.5f;
    rmx_reducer_begin(r);
    for (int i = p->count - 1; i >= 0; i--) rmx_reducer_mark_ready(r, i);
    rmx_reducer_wait_all(r);
    rmx_reducer_wait_all(r);
    int nb;
    rmx_reducer_buckets(r, &nb);
    CHECK(nb > 1, "world of one: %d buckets planned", nb);
    size_t bad = 0;
    for (size_t e = 0; e < p->span; e++) bad += p->grad[e] != (float)e * 0.5f;
    CHECK(bad == 0, "world of one: %zu floats changed", bad);
    check_plan(p, r, 500, "world of one");
    rmx_reducer_free(r);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    rmx_backend *be = rmx_backend_ref_create();
    rmx_params p;
    build_registry(&p, be);
    if (rank == 0)
        printf("reducer: %d ranks, %d tensors, %zu floats (%zu decayed)\n", world, p.count, p.span,
               p.n_decay);

    /* caps: tiny (many buckets, some tensors above the cap), medium, the default (one bucket per
     * decay class) */
    const size_t caps[] = {64, 700, 0};
    for (size_t c = 0; c < sizeof caps / sizeof *caps; c++) {
        size_t cap = caps[c] ? caps[c] : RMX_REDUCER_DEFAULT_BUCKET_FLOATS;
        recorder *rec;
        rmx_reducer *r = make_reducer(&p, caps[c], &rec);
        char what[64];
        snprintf(what, sizeof what, "cap %zu", cap);
        check_plan(&p, r, cap, what);
        int nb;
        rmx_reducer_buckets(r, &nb);
        if (rank == 0) printf("cap %zu: %d buckets\n", cap, nb);
        if (caps[c] == 0) CHECK(nb == 2, "default cap: %d buckets, expected one per decay class", nb);
        rmx_reducer_free(r);
        for (int order = 0; order < N_ORDERS; order++) test_exact(&p, cap, order);
        test_random(&p, cap);
    }
    test_world_of_one(&p);

    rmx_params_free(&p);
    be->destroy(be);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf(total ? "reducer: %d check(s) FAILED\n" : "reducer: all checks passed\n", total);
    MPI_Finalize();
    return total ? 1 : 0;
}
