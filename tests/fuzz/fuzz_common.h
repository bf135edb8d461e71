/* Shared by the libFuzzer harnesses: the input bytes as a file with a fixed name in a private
 * temporary folder (made once per process, in memory where /dev/shm is there, removed at exit). */
#ifndef RMX_FUZZ_COMMON_H
#define RMX_FUZZ_COMMON_H
#include <stddef.h>
#include <stdint.h>

/* The folder (created on first use). */
const char *rmx_fuzz_dir(void);
/* Writes data to <dir>/<name> (truncating), and puts the full path in out. Aborts on I/O error:
 * a harness that cannot write its input must not report "no crash". */
void rmx_fuzz_write(const char *name, const uint8_t *data, size_t size, char *out, size_t outlen);
/* With RMX_FUZZ_VERBOSE set, prints "<what>: <msg>" to stderr (to see how far a seed gets). */
void rmx_fuzz_note(const char *what, const char *msg);
/* Open file descriptors of this process (-1 when /proc is not there). */
int rmx_fuzz_open_fds(void);
/* Aborts (a finding) when the count differs from `before`: `what` leaked a file. */
void rmx_fuzz_check_fds(int before, const char *what);
/* Tunes the HDF5 library for many small files in one process (LLVMFuzzerInitialize calls it). */
void rmx_fuzz_h5_init(void);
#endif
