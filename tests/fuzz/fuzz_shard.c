/* libFuzzer harness: the shard reader (data/dataset.c, data/shard.c) on one file.
 *
 * The input is written as <tmp>/shard-00000.h5, the folder opened with rmx_dataset_open, and every
 * sample read (mel and genre) with its provenance, up to MAX_SAMPLES (a fuzzed length can be
 * huge; the last sample is read as well). Inputs of odd length use the skip policy for damaged
 * segments, even ones stop. Afterwards no HDF5 object and no file may be left open. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <hdf5.h>

#include "data/dataset.h"
#include "fuzz_common.h"
#include "util/log.h"

#define MAX_SAMPLES 64

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    rmx_fuzz_h5_init();
    return 0;
}

/* Every HDF5 object and file the reader opened is closed again. */
static void check_closed(int fds, const char *what) {
    ssize_t open_objects = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objects != 0) {
        fprintf(stderr, "rmx-fuzz: %s left %zd HDF5 object(s) open\n", what, open_objects);
        abort();
    }
    rmx_fuzz_check_fds(fds, what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[1024], err[1024];
    rmx_fuzz_write("shard-00000.h5", data, size, path, sizeof path);
    int fds = rmx_fuzz_open_fds();
    rmx_dataset *ds = rmx_dataset_open(rmx_fuzz_dir(), err, sizeof err);
    if (!ds) {
        rmx_fuzz_note("open", err);
        check_closed(fds, "rmx_dataset_open (failed)");
        return 0;
    }
    rmx_fuzz_note("open", "ok");
    if (size & 1) rmx_dataset_set_on_corrupt(ds, RMX_ON_CORRUPT_SKIP);
    int64_t n = rmx_dataset_length(ds);
    size_t floats = rmx_dataset_sample_floats(ds);
    float *mel = malloc(floats * sizeof *mel);
    for (int64_t i = 0; i < n; i++) {
        if (i == MAX_SAMPLES) i = n - 1;
        int32_t genre = -1;
        int64_t used = -1;
        int rc = rmx_dataset_read_resolved(ds, i, mel, &genre, &used, err, sizeof err);
        rmx_fuzz_note("read", rc == 0 ? "ok" : err);
        if (rc == 0) {
            const rmx_mel_params *p = rmx_dataset_params(ds);
            if (genre < 0 || genre >= p->n_genres || used < 0 || used >= n) {
                fprintf(stderr, "sample %lld: genre %d of %d, used %lld of %lld\n", (long long)i,
                        (int)genre, p->n_genres, (long long)used, (long long)n);
                abort();
            }
        }
        char source[1024];
        int64_t offset;
        (void)rmx_dataset_provenance(ds, i, source, sizeof source, &offset, err, sizeof err);
    }
    /* Out of range must fail, not read. */
    if (rmx_dataset_read(ds, n, mel, NULL, err, sizeof err) == 0) abort();
    int64_t batch[3] = {0, n - 1, n / 2};
    (void)rmx_dataset_read_batch(ds, batch, 3, NULL, NULL, err, sizeof err);
    free(mel);
    rmx_dataset_close(ds);
    check_closed(fds, "rmx_dataset_close");
    return 0;
}
