/* One process-wide lock around HDF5.
 *
 * Debian's serial HDF5 is not built thread-safe: two threads inside the library at once corrupt its
 * global state. Every HDF5 call in Remixer (shard writer, dataset reader, the loader's prefetch
 * thread, checkpoints) therefore runs between rmx_h5_lock() and rmx_h5_unlock(). The lock is a
 * no-op when H5is_library_threadsafe() says the library protects itself. It is recursive, so a
 * locked function may call another locked function.
 *
 * While held, HDF5's automatic error-stack printing is replaced by a handler that prints nothing
 * and remembers the most specific message: callers turn failures into their own messages (naming
 * the file and the field) and add HDF5's reason from rmx_h5_error_detail() where it helps. */
#ifndef RMX_H5LOCK_H
#define RMX_H5LOCK_H
#include <stddef.h>

void rmx_h5_lock(void);
void rmx_h5_unlock(void);
/* 1 when HDF5 reports itself thread-safe (then the lock does not serialise anything). */
int rmx_h5_library_threadsafe(void);
/* The most specific message of this thread's last HDF5 failure since it took the lock ("file
 * signature not found"), or "unknown HDF5 error". Call with the lock held. */
void rmx_h5_error_detail(char *out, size_t outlen);

#endif
