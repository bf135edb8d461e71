/* The ranks of a run: MPI starts everything. The CPU backend all-reduces host buffers with MPI; the
 * CUDA backend (kernels/cuda + train/comm_nccl) reduces device buffers over NCCL. */
#ifndef RMX_COMM_H
#define RMX_COMM_H
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    MPI_Comm world_comm;
    int rank, world;
    int local_rank, local_size; /* within this node (MPI shared-memory communicator) */
} rmx_comm;

/* MPI_Init (works without mpirun as a world of one) and the node-local rank. */
void rmx_comm_init(rmx_comm *c, int *argc, char ***argv);
void rmx_comm_finalize(rmx_comm *c);
/* In-place sum over ranks of a host float buffer (no-op for a world of one). */
void rmx_comm_sum_floats(const rmx_comm *c, float *buf, size_t n);
void rmx_comm_sum_doubles(const rmx_comm *c, double *buf, size_t n);
/* 1 on every rank if `flag` is non-zero on any rank: how ranks agree on stopping. */
int rmx_comm_any(const rmx_comm *c, int flag);
/* In-place element-wise maximum over ranks of a host uint32 buffer. */
void rmx_comm_max_u32(const rmx_comm *c, uint32_t *buf, int n);
/* Largest of `value` over ranks. */
int rmx_comm_max_int(const rmx_comm *c, int value);
void rmx_comm_barrier(const rmx_comm *c);

#endif
