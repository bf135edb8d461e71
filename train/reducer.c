#include "train/reducer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rmx_reducer {
    float *grad;
    int n_tensors;
    int *order;          /* tensor numbers in memory (offset) order */
    int *bucket_of;      /* tensor number -> bucket */
    rmx_bucket *buckets; /* in launch order */
    int n_buckets;
    int *pending;        /* per bucket: tensors not yet marked this step */
    unsigned char *ready;
    int started;         /* buckets [0, started) have been handed to the transport */
    int armed;
    int has_transport;
    rmx_reduce_transport t;
};

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "remixer: error: out of host memory (gradient reducer)\n");
        abort();
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* the plan                                                                                     */

typedef struct {
    size_t offset;
    int id;
} placed;

static int by_offset(const void *a, const void *b) {
    size_t x = ((const placed *)a)->offset, y = ((const placed *)b)->offset;
    return (x > y) - (x < y);
}

static int by_completion(const void *a, const void *b) {
    int x = ((const rmx_bucket *)a)->min_id, y = ((const rmx_bucket *)b)->min_id;
    return (x < y) - (x > y); /* highest lowest-tensor-number first */
}

/* Tensor i of the memory order owns floats [offset_i, offset_{i+1}) (its padding included; the
 * last one up to span), so the buckets tile the whole buffer. They are cut walking memory
 * backwards, where the backward pass starts, so the last tensors form the first bucket. */
static void plan(rmx_reducer *r, const rmx_params *p, size_t cap) {
    int n = p->count;
    placed *mem = xcalloc((size_t)n, sizeof *mem);
    for (int i = 0; i < n; i++) mem[i] = (placed){p->info[i].offset, i};
    qsort(mem, (size_t)n, sizeof *mem, by_offset);
    r->order = xcalloc((size_t)n, sizeof *r->order);
    for (int i = 0; i < n; i++) r->order[i] = mem[i].id;
    free(mem);

    r->buckets = xcalloc((size_t)n, sizeof *r->buckets);
    r->n_buckets = 0;
    int hi = n - 1;
    while (hi >= 0) {
        const rmx_param_info *top = &p->info[r->order[hi]];
        size_t end = hi == n - 1 ? p->span : p->info[r->order[hi + 1]].offset;
        int lo = hi;
        while (lo > 0) {
            const rmx_param_info *prev = &p->info[r->order[lo - 1]];
            if (prev->decay != top->decay) break;    /* decayed and undecayed apart */
            if (end - prev->offset > cap) break;      /* would outgrow the bucket */
            lo--;
        }
        rmx_bucket *b = &r->buckets[r->n_buckets++];
        b->begin = lo == 0 ? 0 : p->info[r->order[lo]].offset;
        b->end = end;
        b->first = lo;
        b->last = hi;
        b->tensors = hi - lo + 1;
        b->min_id = r->order[lo];
        for (int i = lo; i <= hi; i++)
            if (r->order[i] < b->min_id) b->min_id = r->order[i];
        hi = lo - 1;
    }
    qsort(r->buckets, (size_t)r->n_buckets, sizeof *r->buckets, by_completion);
    r->bucket_of = xcalloc((size_t)n, sizeof *r->bucket_of);
    for (int k = 0; k < r->n_buckets; k++)
        for (int i = r->buckets[k].first; i <= r->buckets[k].last; i++) r->bucket_of[r->order[i]] = k;
}

rmx_reducer *rmx_reducer_create(const rmx_params *p, size_t bucket_floats,
                                const rmx_reduce_transport *transport) {
    if (!p->trained || !p->grad) {
        fprintf(stderr, "remixer: internal error: gradient reducer on a registry without gradients\n");
        abort();
    }
    rmx_reducer *r = xcalloc(1, sizeof *r);
    r->grad = p->grad;
    r->n_tensors = p->count;
    plan(r, p, bucket_floats ? bucket_floats : RMX_REDUCER_DEFAULT_BUCKET_FLOATS);
    r->pending = xcalloc((size_t)r->n_buckets, sizeof *r->pending);
    r->ready = xcalloc((size_t)r->n_tensors, 1);
    if (transport) {
        r->t = *transport;
        r->has_transport = 1;
    }
    return r;
}

void rmx_reducer_free(rmx_reducer *r) {
    if (!r) return;
    if (r->has_transport && r->t.destroy) r->t.destroy(r->t.ctx);
    free(r->order);
    free(r->bucket_of);
    free(r->buckets);
    free(r->pending);
    free(r->ready);
    free(r);
}

/* ------------------------------------------------------------------------------------------ */
/* a step                                                                                       */

void rmx_reducer_begin(rmx_reducer *r) {
    memset(r->ready, 0, (size_t)r->n_tensors);
    for (int k = 0; k < r->n_buckets; k++) r->pending[k] = r->buckets[k].tensors;
    r->started = 0;
    r->armed = 1;
}

static void start_bucket(rmx_reducer *r) {
    const rmx_bucket *b = &r->buckets[r->started++];
    if (r->has_transport) r->t.start(r->t.ctx, r->grad + b->begin, b->end - b->begin);
}

void rmx_reducer_mark_ready(rmx_reducer *r, int tensor) {
    if (tensor < 0 || tensor >= r->n_tensors) {
        fprintf(stderr, "remixer: internal error: gradient reducer: no tensor %d (of %d)\n", tensor,
                r->n_tensors);
        abort();
    }
    if (!r->armed || r->ready[tensor]) return;
    r->ready[tensor] = 1;
    r->pending[r->bucket_of[tensor]]--;
    while (r->started < r->n_buckets && r->pending[r->started] == 0) start_bucket(r);
    if (r->has_transport && r->t.progress) r->t.progress(r->t.ctx);
}

void rmx_reducer_hook(void *reducer, int tensor) { rmx_reducer_mark_ready(reducer, tensor); }

void rmx_reducer_wait_all(rmx_reducer *r) {
    if (!r->armed) rmx_reducer_begin(r);
    while (r->started < r->n_buckets) start_bucket(r);
    if (r->has_transport) r->t.finish(r->t.ctx);
    r->armed = 0;
}

const rmx_bucket *rmx_reducer_buckets(const rmx_reducer *r, int *count) {
    if (count) *count = r->n_buckets;
    return r->buckets;
}

int rmx_reducer_started(const rmx_reducer *r) { return r->started; }

/* ------------------------------------------------------------------------------------------ */
/* MPI transport                                                                                */

typedef struct {
    MPI_Comm comm;
    MPI_Request *req;
    int n, cap;
} mpi_transport;

static void mpi_start(void *ctx, float *buf, size_t n) {
    mpi_transport *m = ctx;
    /* MPI counts are ints: a bucket beyond INT_MAX floats goes in pieces */
    const size_t piece = (size_t)INT_MAX / 2;
    for (size_t off = 0; off < n; off += piece) {
        size_t len = n - off < piece ? n - off : piece;
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->req = realloc(m->req, (size_t)m->cap * sizeof *m->req);
            if (!m->req) {
                fprintf(stderr, "remixer: error: out of host memory (gradient reducer)\n");
                abort();
            }
        }
        MPI_Iallreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_FLOAT, MPI_SUM, m->comm,
                       &m->req[m->n++]);
    }
}

static void mpi_progress(void *ctx) {
    mpi_transport *m = ctx;
    int done;
    if (m->n) MPI_Testall(m->n, m->req, &done, MPI_STATUSES_IGNORE);
}

static void mpi_finish(void *ctx) {
    mpi_transport *m = ctx;
    if (m->n) MPI_Waitall(m->n, m->req, MPI_STATUSES_IGNORE);
    m->n = 0;
}

static void mpi_destroy(void *ctx) {
    mpi_transport *m = ctx;
    mpi_finish(m);
    MPI_Comm_free(&m->comm);
    free(m->req);
    free(m);
}

rmx_reduce_transport rmx_reduce_transport_mpi(MPI_Comm comm) {
    mpi_transport *m = xcalloc(1, sizeof *m);
    /* a communicator of its own: the buckets' pending collectives never interleave with the
     * blocking ones the trainer runs on the world communicator meanwhile */
    MPI_Comm_dup(comm, &m->comm);
    rmx_reduce_transport t = {m, mpi_start, mpi_finish, mpi_progress, mpi_destroy};
    return t;
}
