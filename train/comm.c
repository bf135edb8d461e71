#include "train/comm.h"

#include <limits.h>

void rmx_comm_init(rmx_comm *c, int *argc, char ***argv) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init(argc, argv);
    c->world_comm = MPI_COMM_WORLD;
    MPI_Comm_rank(c->world_comm, &c->rank);
    MPI_Comm_size(c->world_comm, &c->world);
    MPI_Comm node;
    MPI_Comm_split_type(c->world_comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
}

void rmx_comm_finalize(rmx_comm *c) {
    (void)c;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

/* MPI counts are ints: reduce huge buffers in pieces. */
static void sum_in_chunks(const rmx_comm *c, void *buf, size_t n, MPI_Datatype type, size_t elem) {
    const size_t chunk = (size_t)INT_MAX / 2;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * elem, (int)len, type, MPI_SUM, c->world_comm);
    }
}

void rmx_comm_sum_floats(const rmx_comm *c, float *buf, size_t n) {
    if (c->world > 1) sum_in_chunks(c, buf, n, MPI_FLOAT, sizeof(float));
}

void rmx_comm_sum_doubles(const rmx_comm *c, double *buf, size_t n) {
    if (c->world > 1) sum_in_chunks(c, buf, n, MPI_DOUBLE, sizeof(double));
}

void rmx_comm_max_u32(const rmx_comm *c, uint32_t *buf, int n) {
    if (c->world > 1) MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_UINT32_T, MPI_MAX, c->world_comm);
}

int rmx_comm_any(const rmx_comm *c, int flag) {
    int in = flag != 0, out = in;
    if (c->world > 1) MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, c->world_comm);
    return out;
}

int rmx_comm_max_int(const rmx_comm *c, int value) {
    int out = value;
    if (c->world > 1) MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MAX, c->world_comm);
    return out;
}

void rmx_comm_barrier(const rmx_comm *c) {
    if (c->world > 1) MPI_Barrier(c->world_comm);
}
