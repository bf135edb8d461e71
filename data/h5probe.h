/* Reading an HDF5 file nothing has verified, without putting the process at risk.
 *
 * libhdf5 trusts a file's metadata. Fuzzing found damaged metadata that makes it allocate
 * gigabytes (finding F1, a chunk index) and loop forever (F4, an entry of the global heap that
 * holds variable-length strings); other damage may crash it. A checkpoint with the whole-file
 * checksum is verified before HDF5 sees it; a checkpoint from before that checksum is not, so it
 * is probed first: a child process opens it and reads every attribute and dataset of every object,
 * under a time limit. Only when the child finishes is the file read by this process (the same
 * library on the same bytes does the same again), so a crash or a hang costs the child, not the
 * trainer, and the file is reported as damaged.
 *
 * The parent holds the HDF5 lock across fork(), so no other thread is inside HDF5 when the child's
 * copy of the library is made; the child never takes a lock, never calls MPI or CUDA, and leaves
 * with _exit (nothing of the parent's open files is flushed or closed). */
#ifndef RMX_H5PROBE_H
#define RMX_H5PROBE_H
#include <stddef.h>

#include <hdf5.h>

/* The time limit for a file of `bytes` bytes: 20 s plus 1 s per 16 MiB (reading slower than 1 MiB/s
 * is taken for a hang); the environment variable RMX_H5_PROBE_SECONDS (an integer >= 1) replaces it. */
double rmx_h5_probe_seconds(long long bytes);

/* 0 when a child process read all of `path` and exited normally (whatever HDF5 thought of the
 * contents: the caller's own read reports that with a precise message). -1 with the reason in why
 * (not naming the file) when the child was killed by a signal, did not finish in time, or could not
 * be started. */
int rmx_h5_probe(const char *path, char *why, size_t whylen);

/* 1 when dataset `ds` of `file` claims more stored bytes than the whole file holds: a damaged chunk
 * index, whose claimed size HDF5 would allocate before reading (fuzz finding F1). *stored and
 * *file_size get both sizes for the message. Call with the HDF5 lock held. */
int rmx_h5_storage_exceeds_file(hid_t file, hid_t ds, unsigned long long *stored, unsigned long long *file_size);

#endif
