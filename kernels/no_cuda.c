/* Built only when CMake found no nvcc: the CUDA constructor still links, and says why it failed. */
#include <stdio.h>

#include "kernels/backend.h"

rmx_backend *rmx_backend_cuda_create(int device_ordinal, char *err, size_t errlen) {
    (void)device_ordinal;
    if (err && errlen)
        snprintf(err, errlen, "this build has no CUDA backend (nvcc was not found at configure time)");
    return NULL;
}
