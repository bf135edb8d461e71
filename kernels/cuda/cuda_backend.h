/* What the CUDA backend shows beyond kernels/backend.h, for the code that must meet it on the GPU:
 * the NCCL communicator (train/comm_nccl.c) orders its collectives after the backend's work through
 * the backend's compute stream, and checks it was given a CUDA backend at all.
 *
 * Plain C: train/ includes it from .c files; the .cu files include it too. */
#ifndef RMX_CUDA_BACKEND_H
#define RMX_CUDA_BACKEND_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/backend.h" /* C declarations, also when a .cu file includes this first */

/* 1 when `be` came from rmx_backend_cuda_create. */
int rmx_backend_is_cuda(const rmx_backend *be);

/* The one stream every op of the backend is queued on (to_backend, copy and to_host included). */
cudaStream_t rmx_cuda_stream(const rmx_backend *be);

/* The device ordinal the backend was created on (each rank: its local rank). */
int rmx_cuda_device(const rmx_backend *be);

#ifdef __cplusplus
}
#endif

#endif
