/* data/h5probe.h: an HDF5 file is read in a child process under a time limit before this process
 * trusts it. A good file passes; the fuzz finding F4 (a checkpoint of the format before the
 * checksum block whose global heap makes libhdf5 1.10 loop forever; argv[1]) is stopped at the
 * limit and reported, and this process goes on; F5 (a global heap that makes libhdf5 copy
 * gigabytes from a wrong place; argv[2]) kills the child, not this process; the limit follows the
 * file size and RMX_H5_PROBE_SECONDS. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/h5probe.h"
#include "data_test_util.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_limits(void) {
    unsetenv("RMX_H5_PROBE_SECONDS");
    CHECK(rmx_h5_probe_seconds(0) == 20.0);
    CHECK(rmx_h5_probe_seconds(160LL << 20) == 30.0);
    setenv("RMX_H5_PROBE_SECONDS", "3", 1);
    CHECK(rmx_h5_probe_seconds(160LL << 20) == 3.0);
    setenv("RMX_H5_PROBE_SECONDS", "0", 1); /* not a limit: the default applies */
    CHECK(rmx_h5_probe_seconds(0) == 20.0);
    setenv("RMX_H5_PROBE_SECONDS", "2s", 1);
    CHECK(rmx_h5_probe_seconds(0) == 20.0);
}

static void test_good_file(void) {
    char dir[4096], shard[4200], why[512] = "";
    rmxt_mkdtemp(dir, sizeof dir);
    rmx_mel_params p = rmxt_params(4, 8, 2);
    int rows[1] = {3};
    CHECK(rmxt_write_dataset(dir, &p, 1, rows, 0) == 0);
    snprintf(shard, sizeof shard, "%s/shard-00000.h5", dir);
    CHECK(rmx_h5_probe(shard, why, sizeof why) == 0);
    /* Not HDF5, or not there: the child finishes; the caller's own open says what is wrong. */
    snprintf(shard, sizeof shard, "%s/missing.h5", dir);
    CHECK(rmx_h5_probe(shard, why, sizeof why) == 0);
    rmxt_rmtree(dir);
}

static void test_loop_is_stopped(const char *f4) {
    setenv("RMX_H5_PROBE_SECONDS", "1", 1);
    char why[512] = "";
    double t0 = now();
    CHECK(rmx_h5_probe(f4, why, sizeof why) == -1);
    double took = now() - t0;
    CHECK(took >= 1.0 && took < 10.0);
    CHECK_STR(why, "reading it in a separate process did not finish in 1 s: its HDF5 metadata is damaged "
                   "(HDF5 loops on it)");
    /* And again: the stopped child left nothing behind that blocks the next probe. */
    CHECK(rmx_h5_probe(f4, why, sizeof why) == -1);
    unsetenv("RMX_H5_PROBE_SECONDS");
}

/* The child dies (SIGSEGV; under ASan, its report and exit status 1); this process reports it. */
static void test_crash_is_contained(const char *f5) {
    char why[512] = "";
    CHECK(rmx_h5_probe(f5, why, sizeof why) == -1);
    CHECK(strstr(why, "reading it in a separate process ") == why);
    CHECK(strstr(why, ": its HDF5 metadata is damaged") != NULL);
    printf("F5: %s\n", why);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_h5probe FINDING_F4_FILE FINDING_F5_FILE\n");
        return 2;
    }
    test_limits();
    test_good_file();
    test_loop_is_stopped(argv[1]);
    test_crash_is_contained(argv[2]);
    return rmxt_finish("h5probe");
}
