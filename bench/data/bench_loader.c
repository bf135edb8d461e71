/* Loader throughput next to the raw read speed of the same bytes.
 *
 *   bench_loader [--dir DIR] [--segments N] [--shards S] [--mels M] [--frames T] [--runs R]
 *                [--batch B] [--micro m] [--depth D] [--compute-ms C] [--cold] [--keep]
 *
 * Writes a dataset of N random M x T segments through the shard writer (into DIR, default a fresh
 * folder under $TMPDIR), then times, R times each and reporting the median:
 *   raw read()    every shard file read whole with read(2) (the bytes on disk, no HDF5),
 *   H5Dread       every shard's /mel read whole with one H5Dread (HDF5, no per-sample work),
 *   loader        one epoch through the prefetching loader (depth D), as a training rank sees it,
 *                 from the first next() to the last (opening the shards is timed separately),
 *   loader sync   the same with depth 0 (reads inside next()).
 * Then it pretends to train: C ms of (sleeping) compute per micro-batch, and reports the share of
 * time next() kept the caller waiting, with and without prefetching.
 * --cold asks the kernel to drop the files' cached pages (posix_fadvise DONTNEED) before every run,
 * so reads come from the device; without it they come from the page cache. */
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/h5lock.h"
#include "data/loader.h"
#include "data/shard.h"
#include "util/fsutil.h"
#include "util/progress.h"

typedef struct {
    char dir[4096];
    int segments, shards, mels, frames, runs, batch, micro, depth, cold, keep;
    double compute_ms;
} options;

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){.segments = 384, .shards = 4, .mels = 128, .frames = 256, .runs = 5,
                   .batch = 32, .micro = 8, .depth = 4, .compute_ms = 2.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *ints[] = {&o->segments, &o->shards, &o->mels, &o->frames, &o->runs, &o->batch, &o->micro, &o->depth};
        const char *names[] = {"--segments", "--shards", "--mels", "--frames", "--runs", "--batch", "--micro", "--depth"};
        int matched = 0;
        for (int k = 0; k < 8 && !matched; k++)
            if (strcmp(a, names[k]) == 0 && v) {
                *ints[k] = atoi(v);
                matched = 1;
                i++;
            }
        if (matched) continue;
        if (strcmp(a, "--dir") == 0 && v) snprintf(o->dir, sizeof o->dir, "%s", argv[++i]);
        else if (strcmp(a, "--compute-ms") == 0 && v) o->compute_ms = atof(argv[++i]);
        else if (strcmp(a, "--cold") == 0) o->cold = 1;
        else if (strcmp(a, "--keep") == 0) o->keep = 1;
        else return -1;
    }
    return o->segments > 0 && o->shards > 0 && o->runs > 0 && o->segments >= o->batch ? 0 : -1;
}

/* ---- the dataset ---- */

static void fill_segment(float *mel, size_t n, uint64_t key) {
    uint64_t x = key * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        mel[i] = (float)(x >> 40) / (float)(1 << 24) * 4.0f - 2.0f;
    }
}

static int write_dataset(const options *o, double *seconds) {
    rmx_mel_params p = {.sample_rate = 22050, .n_fft = 2048, .win_length = 2048, .hop_length = 256,
                        .n_mels = o->mels, .fmin = 0, .fmax = 11025, .log_floor = 1e-10f,
                        .norm_mean = 0, .norm_std = 1, .segment_frames = o->frames, .n_genres = 4};
    for (int g = 0; g < p.n_genres; g++) snprintf(p.genre_names[g], RMX_GENRE_NAME_MAX, "genre%d", g);
    size_t n = (size_t)o->mels * (size_t)o->frames;
    float *mel = malloc(n * sizeof *mel);
    char err[1024], path[4200], name[64];
    double t0 = rmx_now_s();
    int64_t key = 0;
    for (int s = 0; s < o->shards; s++) {
        rmx_shard_filename(s, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", o->dir, name);
        rmx_shard_writer *w = rmx_shard_create(path, &p, s, o->shards, err, sizeof err);
        int rows = o->segments / o->shards + (s < o->segments % o->shards);
        for (int r = 0; w && r < rows; r++, key++) {
            fill_segment(mel, n, (uint64_t)key);
            if (rmx_shard_append(w, mel, (int32_t)(key % 4), "bench.wav", r * o->frames, err, sizeof err)) {
                rmx_shard_abort(w);
                w = NULL;
            }
        }
        if (!w || rmx_shard_close(w, err, sizeof err)) {
            fprintf(stderr, "bench_loader: %s\n", err);
            free(mel);
            return -1;
        }
    }
    *seconds = rmx_now_s() - t0;
    free(mel);
    return 0;
}

static void shard_path(const options *o, int s, char *out, size_t outlen) {
    char name[64];
    rmx_shard_filename(s, name, sizeof name);
    snprintf(out, outlen, "%s/%s", o->dir, name);
}

/* Without --cold this does nothing: the files stay in the page cache between runs. */
static void drop_cache(const options *o) {
    if (!o->cold) return;
    for (int s = 0; s < o->shards; s++) {
        char path[4200];
        shard_path(o, s, path, sizeof path);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* ---- the measurements: each returns seconds, or -1 ---- */

/* Into one buffer as large as the data, like H5Dread below: the cost of getting the bytes into
 * memory, not of reading them into a buffer that stays in the CPU cache. */
static double time_raw_read(const options *o, char *buf, size_t buflen, size_t *bytes) {
    *bytes = 0;
    drop_cache(o);
    double t0 = rmx_now_s();
    for (int s = 0; s < o->shards; s++) {
        char path[4200];
        shard_path(o, s, path, sizeof path);
        int fd = open(path, O_RDONLY);
        if (fd < 0) return -1;
        for (ssize_t got; *bytes < buflen && (got = read(fd, buf + *bytes, buflen - *bytes)) > 0;)
            *bytes += (size_t)got;
        close(fd);
    }
    return rmx_now_s() - t0;
}

static double time_h5dread(const options *o, float *all) {
    drop_cache(o);
    double t0 = rmx_now_s();
    size_t done = 0;
    herr_t rc = 0;
    rmx_h5_lock();
    for (int s = 0; s < o->shards && rc >= 0; s++) {
        char path[4200];
        shard_path(o, s, path, sizeof path);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t ds = f >= 0 ? H5Dopen2(f, "mel", H5P_DEFAULT) : -1;
        hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
        rc = ds >= 0 ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, all + done) : -1;
        if (space >= 0) done += (size_t)H5Sget_simple_extent_npoints(space), H5Sclose(space);
        if (ds >= 0) H5Dclose(ds);
        if (f >= 0) H5Fclose(f);
    }
    rmx_h5_unlock();
    return rc < 0 ? -1 : rmx_now_s() - t0;
}

typedef struct {
    double open_s;  /* dataset open + loader create */
    double run_s;   /* first next() to the end of the last micro-batch */
    double wait_s;  /* summed time next() blocked */
    int64_t samples;
} loader_run;

/* Stands in for a training step's compute; sleeping, as a rank mostly waits on its GPU. */
static void pretend_compute(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

/* One epoch (as many whole steps as fit) through the loader. */
static int time_loader(const options *o, int depth, double compute_ms, loader_run *out) {
    char err[1024] = "";
    drop_cache(o);
    double t0 = rmx_now_s();
    rmx_dataset *ds = rmx_dataset_open(o->dir, err, sizeof err);
    rmx_loader_config c = {.start_step = 0, .depth = depth};
    c.schedule = (rmx_schedule_config){.global_batch = o->batch, .micro_batch = o->micro, .world = 1, .rank = 0, .seed = 1};
    rmx_loader *l = ds ? rmx_loader_create(ds, &c, err, sizeof err) : NULL;
    double t1 = rmx_now_s();
    int64_t micro_batches = (o->segments / o->batch) * (o->batch / o->micro);
    int ok = l != NULL;
    out->wait_s = 0;
    for (int64_t k = 0; ok && k < micro_batches; k++) {
        double waited = 0;
        ok = rmx_loader_next(l, &waited, err, sizeof err) != NULL;
        out->wait_s += waited;
        pretend_compute(compute_ms);
    }
    out->open_s = t1 - t0;
    out->run_s = rmx_now_s() - t1;
    out->samples = micro_batches * o->micro;
    rmx_loader_close(l);
    rmx_dataset_close(ds);
    if (!ok) fprintf(stderr, "bench_loader: %s\n", err);
    return ok ? 0 : -1;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static void print_row(const char *name, double samples_per_s, size_t sample_bytes, double raw_rate) {
    printf("%-24s %12.0f %10.0f %8.2f\n", name, samples_per_s, samples_per_s * sample_bytes / 1e6,
           samples_per_s / raw_rate);
}

enum { MAX_RUNS = 64 };

/* Median samples/s of each way of reading, over o->runs runs. */
static int measure_throughput(const options *o, float *all) {
    double raw[MAX_RUNS], h5[MAX_RUNS], pre[MAX_RUNS], syn[MAX_RUNS], open_s[MAX_RUNS];
    size_t bytes = 0, sample_bytes = (size_t)o->mels * (size_t)o->frames * sizeof(float);
    int runs = o->runs < MAX_RUNS ? o->runs : MAX_RUNS;
    /* The files are a little larger than the samples (HDF5 metadata, small datasets). */
    size_t data_bytes = (size_t)o->segments * sample_bytes, raw_cap = data_bytes + data_bytes / 8 + (1 << 20);
    char *raw_buf = malloc(raw_cap);
    for (int r = 0; raw_buf && r < runs; r++) {
        loader_run a, b;
        double raw_s = time_raw_read(o, raw_buf, raw_cap, &bytes), h5_s = time_h5dread(o, all);
        if (raw_s <= 0 || h5_s <= 0 || time_loader(o, o->depth, 0, &a) || time_loader(o, 0, 0, &b)) {
            free(raw_buf);
            return -1;
        }
        raw[r] = (double)bytes / sample_bytes / raw_s;
        h5[r] = o->segments / h5_s;
        pre[r] = a.samples / a.run_s;
        syn[r] = b.samples / b.run_s;
        open_s[r] = a.open_s;
    }
    free(raw_buf);
    if (!raw_buf) return -1;
    double raw_rate = median(raw, runs);
    printf("%-24s %12s %10s %8s\n", "median of runs", "samples/s", "MB/s", "vs raw");
    print_row("raw read() of files", raw_rate, sample_bytes, raw_rate);
    print_row("H5Dread whole /mel", median(h5, runs), sample_bytes, raw_rate);
    print_row("loader, prefetch", median(pre, runs), sample_bytes, raw_rate);
    print_row("loader, synchronous", median(syn, runs), sample_bytes, raw_rate);
    printf("opening the %d shards and starting the loader: %.1f ms (median)\n", o->shards, 1e3 * median(open_s, runs));
    return 0;
}

/* Median share of the time the caller waited on data while "computing" o->compute_ms per micro-batch. */
static int measure_waiting(const options *o) {
    if (o->compute_ms <= 0) return 0;
    double pre[MAX_RUNS], syn[MAX_RUNS];
    int runs = o->runs < MAX_RUNS ? o->runs : MAX_RUNS;
    for (int r = 0; r < runs; r++) {
        loader_run a, b;
        if (time_loader(o, o->depth, o->compute_ms, &a) || time_loader(o, 0, o->compute_ms, &b)) return -1;
        pre[r] = 100 * a.wait_s / a.run_s;
        syn[r] = 100 * b.wait_s / b.run_s;
    }
    printf("with %.1f ms of compute per micro-batch, time waiting on data: prefetch %.1f%%, synchronous %.1f%%\n",
           o->compute_ms, median(pre, runs), median(syn, runs));
    return 0;
}

static int run_benchmarks(const options *o) {
    float *all = malloc((size_t)o->segments * (size_t)o->mels * (size_t)o->frames * sizeof(float));
    int rc = all ? measure_throughput(o, all) : -1;
    free(all);
    return rc ? rc : measure_waiting(o);
}

int main(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o)) {
        fprintf(stderr, "usage: bench_loader [--dir DIR] [--segments N] [--shards S] [--mels M] [--frames T]\n"
                        "                    [--runs R] [--batch B] [--micro m] [--depth D] [--compute-ms C]\n"
                        "                    [--cold] [--keep]\n");
        return 2;
    }
    int made_dir = !o.dir[0];
    if (made_dir) {
        const char *tmp = getenv("TMPDIR");
        snprintf(o.dir, sizeof o.dir, "%s/rmx-bench-loader-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(o.dir)) return perror("mkdtemp"), 1;
    }
    double write_s;
    if (write_dataset(&o, &write_s)) return 1;
    printf("dataset: %d segments of %d x %d float32 in %d shards (%.1f MB) in %s; written in %.2f s (%.0f segments/s)\n",
           o.segments, o.mels, o.frames, o.shards, o.segments * (double)o.mels * o.frames * 4 / 1e6, o.dir,
           write_s, o.segments / write_s);
    printf("loader: global batch %d, micro-batch %d, prefetch depth %d; %d runs, page cache %s\n", o.batch,
           o.micro, o.depth, o.runs, o.cold ? "dropped before each run (--cold)" : "warm");
    int rc = run_benchmarks(&o);
    if (!o.keep) {
        for (int s = 0; s < o.shards; s++) {
            char path[4200];
            shard_path(&o, s, path, sizeof path);
            unlink(path);
        }
        if (made_dir) rmdir(o.dir);
    }
    return rc ? 1 : 0;
}
