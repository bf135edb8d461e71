#include "fuzz_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[512];

static void cleanup(void) {
    if (!g_dir[0]) return;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
}

/* Where the input files go: $TMPDIR when set, else /dev/shm when it is there. Memory, not disk:
 * on ext4, rewriting a truncated file makes close() write it back (its replace-via-truncate rule),
 * which cost a third of every shard execution. */
static const char *tmp_base(void) {
    const char *base = getenv("TMPDIR");
    if (base && base[0]) return base;
    return access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
}

const char *rmx_fuzz_dir(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "%s/rmx-fuzz-XXXXXX", tmp_base());
        if (!mkdtemp(g_dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(cleanup);
    }
    return g_dir;
}

void rmx_fuzz_write(const char *name, const uint8_t *data, size_t size, char *out, size_t outlen) {
    snprintf(out, outlen, "%s/%s", rmx_fuzz_dir(), name);
    FILE *f = fopen(out, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(out);
        abort();
    }
}

void rmx_fuzz_note(const char *what, const char *msg) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("RMX_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "[fuzz] %s: %s\n", what, msg);
}

int rmx_fuzz_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the one opendir holds */
}

void rmx_fuzz_check_fds(int before, const char *what) {
    int after = rmx_fuzz_open_fds();
    if (before >= 0 && after != before) {
        fprintf(stderr, "rmx-fuzz: %s left %d file descriptor(s) open (%d before, %d after)\n", what,
                after - before, before, after);
        abort();
    }
}

/* Leaks inside third-party decoders on malformed input are theirs (reported, not ours to fix) and
 * would stop every run at the first one: LeakSanitizer ignores allocations made under these
 * libraries. Leaks of our own resources (an HDF5 id, a SNDFILE not closed) still show: the
 * harnesses check open file descriptors and open HDF5 objects after every input. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libhdf5\n"
           "leak:libsndfile\n"
           "leak:libvorbis\n"
           "leak:libogg\n"
           "leak:libFLAC\n"
           "leak:libopus\n"
           "leak:libmpg123\n"
           "leak:libmp3lame\n";
}

/* ---- HDF5 ---- */
#include <hdf5.h>

void rmx_fuzz_h5_init(void) {
    /* No size limits on HDF5's free lists: every file open allocates the metadata cache (about
     * 600 KB, over the default 64 KB a list keeps), which ASan then maps, zeroes and unmaps anew
     * each time. Kept on the list, it is reused. */
    H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
}
