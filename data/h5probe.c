#include "data/h5probe.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/h5lock.h"
#include "util/log.h"

/* ---- the child: read everything ---- */

/* Values larger than this are not read: damaged dimensions can claim any size, and the file could
 * not hold them anyway (what the caller reads is bounded by its own model). */
static size_t g_value_budget;

/* A buffer for every value of an attribute or dataset of `file_type` over `space`, in native form
 * (*mem_type), or NULL when they would not fit the budget. */
static void *native_buffer(hid_t file_type, hid_t space, hid_t *mem_type) {
    *mem_type = file_type >= 0 ? H5Tget_native_type(file_type, H5T_DIR_ASCEND) : -1;
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    size_t width = *mem_type >= 0 ? H5Tget_size(*mem_type) : 0;
    if (n <= 0 || width == 0 || (uint64_t)n > g_value_budget / width) return NULL;
    return calloc((size_t)n, width);
}

/* Nothing read here is given back (ids, memory of variable-length values): the child exits after. */
static herr_t read_attribute(hid_t loc, const char *name, const H5A_info_t *info, void *unused) {
    (void)info;
    (void)unused;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT), mem_type;
    void *buf = attr >= 0 ? native_buffer(H5Aget_type(attr), H5Aget_space(attr), &mem_type) : NULL;
    if (buf) (void)H5Aread(attr, mem_type, buf);
    return 0; /* on to the next attribute, whatever this one was */
}

static void read_dataset(hid_t ds) {
    hid_t mem_type;
    void *buf = native_buffer(H5Dget_type(ds), H5Dget_space(ds), &mem_type);
    if (buf) (void)H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

static herr_t read_object(hid_t group, const char *name, const H5L_info_t *info, void *unused) {
    (void)unused;
    if (info->type != H5L_TYPE_HARD) return 0; /* soft and external links lead nowhere new */
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return 0;
    (void)H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, read_attribute, NULL);
    if (H5Iget_type(obj) == H5I_DATASET) read_dataset(obj);
    return 0;
}

static _Noreturn void probe_child(const char *path, long long bytes) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_value_budget = (size_t)(4 * bytes) + ((size_t)64 << 20);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file >= 0) {
        (void)H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, read_attribute, NULL);
        (void)H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, read_object, NULL);
    }
    _exit(0);
}

/* ---- the parent: wait, within the limit ---- */

double rmx_h5_probe_seconds(long long bytes) {
    const char *env = getenv("RMX_H5_PROBE_SECONDS");
    char *end;
    long v = env ? strtol(env, &end, 10) : 0;
    if (env && end != env && *end == '\0' && v >= 1) return (double)v;
    return 20.0 + (double)bytes / (16.0 * 1024 * 1024);
}

static int child_outcome(int status, char *why, size_t whylen) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status))
        return rmx_seterr(why, whylen, "reading it in a separate process ended with signal %d (%s): its HDF5 "
                          "metadata is damaged", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return rmx_seterr(why, whylen, "reading it in a separate process failed (exit status %d): its HDF5 metadata "
                      "is damaged", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* Waits for the child up to `limit` seconds: its end of the pipe closes when it exits, so poll()
 * wakes at once. Returns 0 with *status when it ended, -1 when the time is up. */
static int wait_for_child(pid_t pid, int pipe_read, double limit, int *status) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        double left = limit - ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec));
        struct pollfd p = {.fd = pipe_read, .events = POLLIN};
        int ready = left > 0 ? poll(&p, 1, (int)(left * 1000) + 1) : 0;
        if (ready < 0 && errno == EINTR) continue;
        /* Ended, or the time is up: a child that exited just now still counts as finished. */
        pid_t done = waitpid(pid, status, ready > 0 ? 0 : WNOHANG);
        if (done == pid) return 0;
        if (ready > 0 || left <= 0) return -1;
    }
}

int rmx_h5_probe(const char *path, char *why, size_t whylen) {
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : 0;
    double limit = rmx_h5_probe_seconds(bytes);
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        return rmx_seterr(why, whylen, "cannot start a process to probe it: %s", strerror(errno));
    rmx_h5_lock(); /* no other thread inside HDF5 while its state is copied */
    pid_t pid = fork();
    if (pid == 0) {
        close(pipe_fds[0]);
        probe_child(path, bytes); /* the write end closes when it exits */
    }
    int fork_errno = errno;
    rmx_h5_unlock();
    close(pipe_fds[1]);
    if (pid < 0) {
        close(pipe_fds[0]);
        return rmx_seterr(why, whylen, "cannot start a process to probe it: %s", strerror(fork_errno));
    }
    int status = 0;
    int ended = wait_for_child(pid, pipe_fds[0], limit, &status) == 0;
    close(pipe_fds[0]);
    if (ended) return child_outcome(status, why, whylen);
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return rmx_seterr(why, whylen, "reading it in a separate process did not finish in %.0f s: its HDF5 metadata "
                      "is damaged (HDF5 loops on it)", limit);
}

int rmx_h5_storage_exceeds_file(hid_t file, hid_t ds, unsigned long long *stored, unsigned long long *file_size) {
    hsize_t size = 0;
    *stored = H5Dget_storage_size(ds);
    *file_size = H5Fget_filesize(file, &size) >= 0 ? size : 0;
    return *file_size > 0 && *stored > *file_size;
}
