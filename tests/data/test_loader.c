/* The prefetching loader: it delivers exactly the schedule's micro-batches with the right data,
 * the same with or without the background thread and from any start step; a read error reaches
 * the caller with its message; closing never hangs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "data_test_util.h"

enum { M = 8, T = 16, GENRES = 3, B = 8, MICRO = 2, WORLD = 2, A = B / (WORLD * MICRO) };
enum { K = 40 }; /* micro-batches compared: 20 steps, several epochs of 21 samples */

typedef struct {
    int64_t step;
    int micro;
    int64_t index[MICRO], position[MICRO];
    int32_t genre[MICRO];
    float mel[MICRO * M * T];
} record;

static rmx_loader_config loader_config(int rank, int64_t start_step, int depth) {
    rmx_loader_config c = {0};
    c.schedule = (rmx_schedule_config){.global_batch = B, .micro_batch = MICRO, .world = WORLD,
                                       .rank = rank, .seed = 3};
    c.start_step = start_step;
    c.depth = depth;
    return c;
}

static void to_record(const rmx_batch *b, record *r) {
    r->step = b->step;
    r->micro = b->micro;
    memcpy(r->index, b->index, sizeof r->index);
    memcpy(r->position, b->position, sizeof r->position);
    memcpy(r->genre, b->genre, sizeof r->genre);
    memcpy(r->mel, b->mel, sizeof r->mel);
}

/* Reads n micro-batches; returns how many arrived before an error (err gets its message). */
static int run_loader(rmx_dataset *ds, rmx_loader_config cfg, record *out, int n, char *err, size_t errlen) {
    rmx_loader *l = rmx_loader_create(ds, &cfg, err, errlen);
    CHECK(l != NULL);
    if (!l) return 0;
    int got = 0;
    for (; got < n; got++) {
        double waited = -1;
        const rmx_batch *b = rmx_loader_next(l, &waited, err, errlen);
        if (!b) break;
        CHECK(waited >= 0);
        CHECK(b->m == MICRO && b->accum_steps == A);
        to_record(b, &out[got]);
    }
    rmx_loader_close(l);
    return got;
}

/* Each record is micro-batch k after the start, as the schedule defines it, with the data the
 * writer stored for those samples. */
static void check_against_schedule(const record *r, int n, rmx_loader_config cfg, int64_t n_samples) {
    char err[256];
    rmx_schedule *s = rmx_schedule_create(&cfg.schedule, n_samples, err, sizeof err);
    for (int k = 0; s && k < n; k++) {
        int64_t idx[MICRO], pos[MICRO];
        CHECK(r[k].step == cfg.start_step + k / A && r[k].micro == k % A);
        rmx_schedule_micro_batch(s, r[k].step, r[k].micro, idx, pos);
        CHECK(memcmp(idx, r[k].index, sizeof idx) == 0 && memcmp(pos, r[k].position, sizeof pos) == 0);
        int data_ok = 1;
        for (int i = 0; i < MICRO; i++) {
            data_ok &= r[k].genre[i] == rmxt_genre_of(idx[i], GENRES);
            for (int b = 0; b < M; b++)
                for (int t = 0; t < T; t++)
                    data_ok &= r[k].mel[(i * M + b) * T + t] == rmxt_mel_value(idx[i], b, t);
        }
        CHECK(data_ok);
    }
    rmx_schedule_free(s);
}

static void test_prefetch_matches_sync(rmx_dataset *ds) {
    static record sync[K], prefetched[K];
    char err[1024];
    CHECK(run_loader(ds, loader_config(1, 0, 0), sync, K, err, sizeof err) == K);
    CHECK(run_loader(ds, loader_config(1, 0, 3), prefetched, K, err, sizeof err) == K);
    CHECK(memcmp(sync, prefetched, sizeof sync) == 0);
    check_against_schedule(sync, K, loader_config(1, 0, 0), rmx_dataset_length(ds));
}

static void test_start_step(rmx_dataset *ds) {
    enum { START = 7 };
    static record from_zero[K], resumed[K - START * A];
    char err[1024];
    CHECK(run_loader(ds, loader_config(0, 0, 2), from_zero, K, err, sizeof err) == K);
    CHECK(run_loader(ds, loader_config(0, START, 2), resumed, K - START * A, err, sizeof err) == K - START * A);
    CHECK(memcmp(from_zero + START * A, resumed, sizeof resumed) == 0);
}

/* The micro-batch holding dataset index `bad` first (counting from step 0 on rank 1). */
static int first_micro_batch_with(int64_t bad, int64_t n_samples) {
    rmx_loader_config c = loader_config(1, 0, 0);
    char err[256];
    rmx_schedule *s = rmx_schedule_create(&c.schedule, n_samples, err, sizeof err);
    int found = -1;
    for (int k = 0; s && found < 0 && k < K; k++) {
        int64_t idx[MICRO];
        rmx_schedule_micro_batch(s, k / A, k % A, idx, NULL);
        for (int i = 0; i < MICRO; i++)
            if (idx[i] == bad) found = k;
    }
    rmx_schedule_free(s);
    return found;
}

/* Sample 9 (shard 1, row 2) holds a NaN: both modes deliver everything before it, then the error. */
static void test_error_reaches_caller(const char *root) {
    char dir[4096], err[1024], want[16384], path[4096];
    rmxt_subdir(root, "nan", dir, sizeof dir);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    int rows[3] = {7, 5, 9};
    CHECK(rmxt_write_dataset(dir, &p, 3, rows, 0) == 0);
    rmxt_shard_path(dir, 1, path, sizeof path);
    CHECK(rmxt_poke_mel(path, 2, 1, 4, NAN) == 0);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    int bad = first_micro_batch_with(9, rmx_dataset_length(ds));
    CHECK(bad > 0);
    snprintf(want, sizeof want,
             "damaged segment: %s segment 2 (sample 9 of %s) from genre3/file_003.wav: /mel contains a "
             "non-finite value (data.on_corrupt: skip would read the next valid segment in its place)",
             path, dir);
    static record out[K];
    for (int depth = 0; depth <= 2; depth += 2) {
        rmx_loader_config c = loader_config(1, 0, depth);
        rmx_loader *l = rmx_loader_create(ds, &c, err, sizeof err);
        CHECK(l != NULL);
        for (int k = 0; l && k < bad; k++) CHECK(rmx_loader_next(l, NULL, err, sizeof err) != NULL);
        for (int again = 0; l && again < 2; again++) {
            err[0] = 0;
            CHECK(rmx_loader_next(l, NULL, err, sizeof err) == NULL);
            CHECK_STR(err, want);
        }
        rmx_loader_close(l);
    }
    CHECK(run_loader(ds, loader_config(1, 0, 1), out, K, err, sizeof err) == bad);
    rmx_dataset_close(ds);
}

static int g_allocs, g_frees;
static void *counting_alloc(size_t bytes) {
    g_allocs++;
    return malloc(bytes);
}
static void counting_free(void *p) {
    g_frees++;
    free(p);
}

/* Closing with the ring full (thread blocked), or before anything was read, returns promptly
 * and gives every buffer back to the allocator it came from. */
static void test_close(rmx_dataset *ds) {
    char err[1024];
    rmx_loader_config c = loader_config(0, 0, 4);
    c.alloc_buffer = counting_alloc;
    c.free_buffer = counting_free;
    rmx_loader *l = rmx_loader_create(ds, &c, err, sizeof err);
    CHECK(l != NULL && g_allocs == 5);
    CHECK(l && rmx_loader_next(l, NULL, err, sizeof err) != NULL);
    rmx_loader_close(l);
    l = rmx_loader_create(ds, &c, err, sizeof err);
    rmx_loader_close(l);
    CHECK(g_allocs == 10 && g_frees == 10);
}

/* Two prefetch threads and the main thread read the same dataset at once: HDF5 sees one call at
 * a time and everyone gets the right data. */
static void test_concurrent_loaders(rmx_dataset *ds) {
    char err[1024];
    rmx_loader_config c0 = loader_config(0, 0, 2), c1 = loader_config(1, 0, 2);
    rmx_loader *l0 = rmx_loader_create(ds, &c0, err, sizeof err);
    rmx_loader *l1 = rmx_loader_create(ds, &c1, err, sizeof err);
    CHECK(l0 && l1);
    static record r0[K], r1[K];
    float mel[M * T];
    for (int k = 0; l0 && l1 && k < K; k++) {
        const rmx_batch *b0 = rmx_loader_next(l0, NULL, err, sizeof err);
        const rmx_batch *b1 = rmx_loader_next(l1, NULL, err, sizeof err);
        CHECK(b0 && b1);
        if (!b0 || !b1) break;
        to_record(b0, &r0[k]);
        to_record(b1, &r1[k]);
        CHECK(rmx_dataset_read(ds, k % rmx_dataset_length(ds), mel, NULL, err, sizeof err) == 0);
        CHECK(mel[3] == rmxt_mel_value(k % rmx_dataset_length(ds), 0, 3));
    }
    rmx_loader_close(l0);
    rmx_loader_close(l1);
    check_against_schedule(r0, K, c0, rmx_dataset_length(ds));
    check_against_schedule(r1, K, c1, rmx_dataset_length(ds));
}

static void test_create_errors(rmx_dataset *ds) {
    char err[1024];
    rmx_loader_config c = loader_config(0, 0, 2);
    c.schedule.world = 3;
    CHECK(rmx_loader_create(ds, &c, err, sizeof err) == NULL);
    CHECK_STR(err, "train.global_batch 8 is not divisible by world size 3 x train.micro_batch 2");
    c = loader_config(0, 0, -1);
    CHECK(rmx_loader_create(ds, &c, err, sizeof err) == NULL);
    CHECK_STR(err, "loader: start step 0 and depth -1 must be >= 0");
}

int main(void) {
    char root[4096], dir[4096], err[1024];
    rmxt_mkdtemp(root, sizeof root);
    rmxt_subdir(root, "good", dir, sizeof dir);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    int rows[3] = {7, 5, 9};
    CHECK(rmxt_write_dataset(dir, &p, 3, rows, 0) == 0);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (ds) {
        test_prefetch_matches_sync(ds);
        test_start_step(ds);
        test_close(ds);
        test_concurrent_loaders(ds);
        test_create_errors(ds);
        rmx_dataset_close(ds);
    }
    test_error_reaches_caller(root);
    rmxt_rmtree(root);
    return rmxt_finish("test_loader");
}
