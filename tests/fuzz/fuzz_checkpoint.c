/* libFuzzer harness: the checkpoint reader (train/checkpoint.c) through its public API.
 *
 * The input is written to <tmp>/ckpt-00000001.h5 and read two ways, as the programs do (a file
 * with the checksum block is checked before HDF5 sees it; one of the format before the block, the
 * HDF5 signature at byte 0, is read by a child process first, data/h5probe.h, with a 2-second limit
 * here):
 *  - rmx_ckpt_open: stage, groups, the root attributes (integers, the config string), the audio
 *    parameters of /audio (rmx_ckpt_get_audio), then rmx_ckpt_load of the tensors of a small
 *    stage-1 layout (fuzz_layout.h; the seed corpus holds checkpoints of that layout);
 *  - rmx_ckpt_read (the resume path): header, tensor lists, every dataset with its checksum.
 * After each, no HDF5 object and no file may be left open. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <hdf5.h>
#include <sanitizer/common_interface_defs.h>

#include "fuzz_common.h"
#include "fuzz_layout.h"

static rmx_fuzz_model g_model;

/* In the probe's child process (data/h5probe.c, forked for files of the old format) libhdf5 may
 * crash on a damaged file: that is what the child is for, and the parent then reports the file as
 * damaged. The child inherits libFuzzer's crash handling, which would save the input as a finding
 * of this harness; it gets the default handling instead (ASan still reports, and exits). */
static void quiet_child(void) {
    __sanitizer_set_death_callback(NULL);
    static const int crash_signals[] = {SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV};
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++) signal(crash_signals[i], SIG_DFL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    pthread_atfork(NULL, NULL, quiet_child);
    rmx_fuzz_h5_init();
    /* A probe that loops stops after 2 s (the default limit is 20 s or more). */
    setenv("RMX_H5_PROBE_SECONDS", "2", 0);
    rmx_fuzz_model_init(&g_model);
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
    char path[1024], err[2048];
    rmx_fuzz_write("ckpt-00000001.h5", data, size, path, sizeof path);
    int fds = rmx_fuzz_open_fds();
    rmx_ckpt_reader *r = rmx_ckpt_open(path, err, sizeof err);
    rmx_fuzz_note("open", r ? "ok" : err);
    int opened = r != NULL;
    if (r) {
        (void)rmx_ckpt_reader_path(r);
        const char *stage = rmx_ckpt_reader_stage(r);
        if (!stage) abort();
        static const char *const groups[] = {"model", "optim", "optim/m", "ema", "audio", "autoencoder", "nope"};
        for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) (void)rmx_ckpt_has_group(r, groups[i]);
        static const char *const ints[] = {"step", "samples_seen", "seed", "world_size", "global_batch",
                                           "micro_batch", "adam_step", "input_shape", "nonfinite_total"};
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            int64_t v;
            (void)rmx_ckpt_get_i64(r, "", ints[i], &v, err, sizeof err);
        }
        double d;
        (void)rmx_ckpt_get_f64(r, "audio", "fmax", &d, err, sizeof err);
        (void)rmx_ckpt_get_f64(r, "", "step", &d, err, sizeof err);
        char *s = rmx_ckpt_get_str(r, "", "config", err, sizeof err);
        free(s);
        s = rmx_ckpt_get_str(r, "model", "tensors", err, sizeof err);
        free(s);
        s = rmx_ckpt_get_str(r, "audio", "genre_names", err, sizeof err);
        free(s);
        rmx_mel_params p;
        rmx_fuzz_note("get_audio", rmx_ckpt_get_audio(r, "audio", &p, err, sizeof err) == 0 ? "ok" : err);
        rmx_fuzz_note("load", rmx_ckpt_load(r, &g_model.layout, err, sizeof err) == RMX_CKPT_LOADED ? "ok" : err);
        rmx_ckpt_close(r);
    }
    check_closed(fds, opened ? "rmx_ckpt_close" : "rmx_ckpt_open (failed)");

    rmx_ckpt_meta meta;
    rmx_ckpt_host h;
    rmx_ckpt_host_alloc(&h, &g_model.layout);
    rmx_fuzz_note("read", rmx_ckpt_read(path, &g_model.layout, "vae", &meta, &h, err, sizeof err) == RMX_CKPT_LOADED
                              ? "ok"
                              : err);
    rmx_ckpt_host_free(&h);
    check_closed(fds, "rmx_ckpt_read");
    return 0;
}
