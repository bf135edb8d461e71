/* Damaged shards: a bit flipped in a /mel chunk is caught by the chunk's Fletcher32 checksum and
 * named (shard, segment, sample, source); the stop policy fails the read, the skip policy reads the
 * next valid segment in its place, the same way for every world size and prefetch depth; version-1
 * shards (no checksums) still read; a bit flipped anywhere else in the file is an error message,
 * never a crash. `test_corrupt CASE` with CASE one of stop, skip, worldsize, v1, metadata.
 * Tools for test_corrupt_train.sh: `test_corrupt flip SHARD ROW` flips a bit in /mel row ROW's
 * chunk; `test_corrupt flipbyte FILE OFFSET` flips bit 0 of the byte at OFFSET. */
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "data_test_util.h"

enum { M = 8, T = 16, GENRES = 3 };

static const char *HINT = " (data.on_corrupt: skip would read the next valid segment in its place)";

/* Three shards of 7, 5 and 9 segments: dataset index = sample key. */
static void write_set(const char *root, const char *name, char *dir, size_t dirlen) {
    rmxt_subdir(root, name, dir, dirlen);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    int rows[3] = {7, 5, 9};
    CHECK(rmxt_write_dataset(dir, &p, 3, rows, 0) == 0);
}

/* Flips one bit in the chunk of dataset index `key` (shard 0: 0..6, 1: 7..11, 2: 12..20). */
static void damage(const char *dir, int key) {
    int shard = key < 7 ? 0 : key < 12 ? 1 : 2, row = key - (shard == 0 ? 0 : shard == 1 ? 7 : 12);
    char path[4096];
    rmxt_shard_path(dir, shard, path, sizeof path);
    CHECK(rmxt_flip_chunk_bit(path, row, 101, 2) == 0);
}

static int same_as_key(const float *mel, int64_t key) {
    float want[M * T];
    rmxt_fill_mel(key, M, T, want);
    return memcmp(mel, want, sizeof want) == 0;
}

static void test_stop(const char *root) {
    char dir[4096], path[4096], err[8192], want[16384];
    write_set(root, "stop", dir, sizeof dir);
    damage(dir, 9);
    rmxt_shard_path(dir, 1, path, sizeof path);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    float mel[M * T];
    int32_t g;
    CHECK(rmx_dataset_read(ds, 8, mel, &g, err, sizeof err) == 0 && same_as_key(mel, 8));
    CHECK(rmx_dataset_read(ds, 10, mel, &g, err, sizeof err) == 0 && same_as_key(mel, 10));
    CHECK(rmx_dataset_read(ds, 9, mel, &g, err, sizeof err) == -1);
    snprintf(want, sizeof want,
             "damaged segment: %s segment 2 (sample 9 of %s) from genre3/file_003.wav: data error "
             "detected by Fletcher32 checksum%s",
             path, dir, HINT);
    CHECK_STR(err, want);
    /* the genre alone (no spectrogram read) is still there */
    CHECK(rmx_dataset_read(ds, 9, NULL, &g, err, sizeof err) == 0 && g == rmxt_genre_of(9, GENRES));

    /* The loader hands the error to the caller at the micro-batch that holds sample 9, whatever
     * the prefetch depth, and never earlier. */
    for (int depth = 0; depth <= 3; depth += 3) {
        rmx_loader_config c = {.schedule = {4, 2, 1, 0, 11}, .depth = depth};
        rmx_loader *l = rmx_loader_create(ds, &c, err, sizeof err);
        rmx_schedule *s = rmx_schedule_create(&c.schedule, rmx_dataset_length(ds), err, sizeof err);
        CHECK(l != NULL && s != NULL);
        int failed = 0;
        for (int64_t k = 0; l && s && k < 40 && !failed; k++) {
            int64_t idx[2];
            rmx_schedule_micro_batch(s, k / 2, (int)(k % 2), idx, NULL);
            int holds = idx[0] == 9 || idx[1] == 9;
            err[0] = 0;
            const rmx_batch *b = rmx_loader_next(l, NULL, err, sizeof err);
            CHECK((b == NULL) == holds);
            if (!b) {
                CHECK_STR(err, want);
                failed = 1;
            }
        }
        CHECK(failed);
        rmx_schedule_free(s);
        rmx_loader_close(l);
    }
    rmx_dataset_close(ds);
}

static void test_skip(const char *root) {
    char dir[4096], err[8192];
    write_set(root, "skip", dir, sizeof dir);
    damage(dir, 9);
    damage(dir, 15);
    damage(dir, 16);
    damage(dir, 20);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    rmx_dataset_set_on_corrupt(ds, RMX_ON_CORRUPT_SKIP);
    float mel[M * T];
    int32_t g;
    int64_t used = -1;
    /* 9 -> 10; 15 and 16 -> 17; 20 (the last) wraps to 0; twice, the same answer */
    int64_t asked[] = {9, 15, 16, 20, 9, 3};
    int64_t got[] = {10, 17, 17, 0, 10, 3};
    for (int i = 0; i < 6; i++) {
        CHECK(rmx_dataset_read_resolved(ds, asked[i], mel, &g, &used, err, sizeof err) == 0);
        CHECK(used == got[i] && same_as_key(mel, got[i]) && g == rmxt_genre_of(got[i], GENRES));
    }
    CHECK(rmx_dataset_damaged_found(ds) == 4);
    /* batches: indices may be the output array itself */
    int64_t idx[4] = {20, 9, 11, 16};
    float four[4 * M * T];
    int32_t genres[4];
    CHECK(rmx_dataset_read_batch_resolved(ds, idx, 4, four, genres, idx, err, sizeof err) == 0);
    CHECK(idx[0] == 0 && idx[1] == 10 && idx[2] == 11 && idx[3] == 17);
    for (int i = 0; i < 4; i++) CHECK(same_as_key(four + i * M * T, idx[i]));
    rmx_dataset_close(ds);

    /* every segment damaged: an error, not an endless search */
    char all[4096];
    rmxt_subdir(root, "all", all, sizeof all);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    int rows[1] = {2};
    CHECK(rmxt_write_dataset(all, &p, 1, rows, 0) == 0);
    char path[4096], want[8192];
    rmxt_shard_path(all, 0, path, sizeof path);
    CHECK(rmxt_flip_chunk_bit(path, 0, 0, 0) == 0 && rmxt_flip_chunk_bit(path, 1, 7, 7) == 0);
    ds = rmx_dataset_open(all, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    rmx_dataset_set_on_corrupt(ds, RMX_ON_CORRUPT_SKIP);
    CHECK(rmx_dataset_read(ds, 1, mel, &g, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: every one of its 2 segments is damaged", all);
    CHECK_STR(err, want);
    rmx_dataset_close(ds);
}

/* What the ranks of one world size deliver, by stream position: dataset index and first value. */
enum { STEPS = 12, B = 8, SLOTS = STEPS * B };
typedef struct {
    int64_t index[SLOTS];
    float first[SLOTS];
    int64_t replaced;
} delivery;

static void deliver(rmx_dataset *ds, int world, int depth, delivery *d) {
    char err[8192];
    memset(d, 0, sizeof *d);
    for (int r = 0; r < world; r++) {
        rmx_loader_config c = {.schedule = {B, 2, world, r, 5}, .depth = depth};
        rmx_loader *l = rmx_loader_create(ds, &c, err, sizeof err);
        CHECK(l != NULL);
        if (!l) return;
        int per_step = rmx_loader_accum_steps(l);
        for (int k = 0; k < STEPS * per_step; k++) {
            const rmx_batch *b = rmx_loader_next(l, NULL, err, sizeof err);
            CHECK(b != NULL);
            if (!b) break;
            for (int i = 0; i < b->m; i++) {
                d->index[b->position[i]] = b->index[i];
                d->first[b->position[i]] = b->mel[(size_t)i * M * T];
            }
        }
        d->replaced += rmx_loader_replaced(l);
        rmx_loader_close(l);
    }
}

static void test_worldsize(const char *root) {
    char dir[4096], err[8192];
    write_set(root, "world", dir, sizeof dir);
    damage(dir, 9);
    damage(dir, 14);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    rmx_dataset_set_on_corrupt(ds, RMX_ON_CORRUPT_SKIP);
    /* the positions whose scheduled segment is damaged */
    rmx_schedule_config sc = {B, 2, 1, 0, 5};
    rmx_schedule *s = rmx_schedule_create(&sc, rmx_dataset_length(ds), err, sizeof err);
    int64_t expect_replaced = 0;
    for (int64_t p = 0; p < SLOTS; p++) {
        int64_t i = rmx_schedule_index_at(s, p);
        expect_replaced += i == 9 || i == 14;
    }
    rmx_schedule_free(s);
    CHECK(expect_replaced > 0);
    static delivery one, two, four, deep;
    deliver(ds, 1, 0, &one);
    deliver(ds, 2, 2, &two);
    deliver(ds, 4, 1, &four);
    deliver(ds, 1, 5, &deep);
    CHECK(memcmp(&one, &two, sizeof one) == 0);
    CHECK(memcmp(&one, &four, sizeof one) == 0);
    CHECK(memcmp(&one, &deep, sizeof one) == 0);
    CHECK(one.replaced == expect_replaced);
    for (int p = 0; p < SLOTS; p++) CHECK(one.index[p] != 9 && one.index[p] != 14);
    CHECK(rmx_dataset_damaged_found(ds) == 2);
    rmx_dataset_close(ds);
}

static void test_v1(const char *root) {
    char dir[4096], path[4096], err[8192], want[8192];
    write_set(root, "v1", dir, sizeof dir);
    rmxt_shard_path(dir, 1, path, sizeof path);
    CHECK(rmxt_strip_checksums(path, 1) == 0);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    float mel[M * T];
    int32_t g;
    for (int64_t i = 0; i < rmx_dataset_length(ds); i++)
        CHECK(rmx_dataset_read(ds, i, mel, &g, err, sizeof err) == 0 && same_as_key(mel, i) &&
              g == rmxt_genre_of(i, GENRES));
    rmx_dataset_close(ds);
    /* Without checksums a flipped bit reads as data: one value of sample 9 changes, silently. */
    CHECK(rmxt_flip_chunk_bit(path, 2, 101, 2) == 0);
    ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    CHECK(rmx_dataset_read(ds, 9, mel, &g, err, sizeof err) == 0);
    float good[M * T];
    rmxt_fill_mel(9, M, T, good);
    int differ = 0;
    for (int i = 0; i < M * T; i++) differ += mel[i] != good[i];
    CHECK(differ == 1);
    rmx_dataset_close(ds);

    /* A file that says version 2 must have the checksums. */
    write_set(root, "liar", dir, sizeof dir);
    rmxt_shard_path(dir, 2, path, sizeof path);
    CHECK(rmxt_strip_checksums(path, 2) == 0);
    CHECK(rmx_dataset_open(dir, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: attribute 'format_version' is 2 but /mel has no Fletcher32 checksums", path);
    CHECK_STR(err, want);
}

/* Open the dataset and read every sample, as training would. Exit status 0: all read; 3: an error
 * whose message names the shard; 9: an error that does not. */
static int read_everything(const char *dir, const char *path) {
    char err[8192];
    alarm(20);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    int rc = ds ? 0 : 3;
    float mel[M * T];
    int32_t g;
    char source[256];
    int64_t offset;
    for (int64_t i = 0; ds && i < rmx_dataset_length(ds) && !rc; i++)
        if (rmx_dataset_read(ds, i, mel, &g, err, sizeof err) ||
            rmx_dataset_provenance(ds, i, source, sizeof source, &offset, err, sizeof err))
            rc = 3;
    if (rc && !strstr(err, path)) {
        fprintf(stderr, "message does not name %s: %s\n", path, err);
        rc = 9;
    }
    rmx_dataset_close(ds);
    return rc;
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int rc = a && b ? 0 : -1;
    char buf[65536];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n) rc = -1;
    if (a) fclose(a);
    if (b && fclose(b) != 0) rc = -1;
    return rc;
}

/* Every 7th byte of a shard outside the /mel chunks (superblock, object headers, B-trees, heaps,
 * the small datasets), one flipped bit at a time (the bit cycles): each either still reads or fails
 * with a message naming the file; none crashes or hangs. (Every byte: 7118 flips, none crashed, in
 * 50 s; HDF5 retries a metadata read whose checksum fails, which makes each refusal slow.) */
static void test_metadata(const char *root) {
    char dir[4096], orig[4096 + 32], path[4096];
    rmxt_subdir(root, "meta", dir, sizeof dir);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    int rows[1] = {4};
    CHECK(rmxt_write_dataset(dir, &p, 1, rows, 0) == 0);
    rmxt_shard_path(dir, 0, path, sizeof path);
    snprintf(orig, sizeof orig, "%s/original.bin", root);
    CHECK(copy_file(path, orig) == 0);
    long start, end;
    int n_rows;
    CHECK(rmxt_mel_chunk_span(path, &start, &end, &n_rows) == 0 && n_rows == 4);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    int outcome[10] = {0}, crashed = 0, tried = 0;
    for (long at = 0; at < (long)st.st_size; at += 7) {
        if (at >= start && at < end) continue;
        int bit = (int)(at / 7 % 8);
        CHECK(copy_file(orig, path) == 0 && rmxt_flip_file_bit(path, at, bit) == 0);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) _exit(read_everything(dir, path));
        int status = 0;
        waitpid(pid, &status, 0);
        tried++;
        if (WIFEXITED(status) && WEXITSTATUS(status) < 10) {
            outcome[WEXITSTATUS(status)]++;
            if (WEXITSTATUS(status) == 9) {
                fprintf(stderr, "byte %ld bit %d: unnamed error\n", at, bit);
                rmxt_failures++;
            }
        } else {
            fprintf(stderr, "byte %ld bit %d: the reader %s %d\n", at, bit,
                    WIFSIGNALED(status) ? "died of signal" : "exited with", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            crashed++;
        }
    }
    printf("metadata: %d single-bit flips outside the /mel chunks: %d read unchanged, %d refused with "
           "a message naming the shard, %d crashed\n",
           tried, outcome[0], outcome[3], crashed);
    CHECK(crashed == 0);
    CHECK(outcome[3] > 0);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "flip")) return rmxt_flip_chunk_bit(argv[2], atoi(argv[3]), 101, 2) ? 1 : 0;
    if (argc == 4 && !strcmp(argv[1], "flipbyte")) return rmxt_flip_file_bit(argv[2], atol(argv[3]), 0) ? 1 : 0;
    if (argc != 2) {
        fprintf(stderr, "usage: test_corrupt stop|skip|worldsize|v1|metadata\n");
        return 2;
    }
    char root[4096];
    rmxt_mkdtemp(root, sizeof root);
    if (!strcmp(argv[1], "stop")) test_stop(root);
    else if (!strcmp(argv[1], "skip")) test_skip(root);
    else if (!strcmp(argv[1], "worldsize")) test_worldsize(root);
    else if (!strcmp(argv[1], "v1")) test_v1(root);
    else if (!strcmp(argv[1], "metadata")) test_metadata(root);
    else {
        fprintf(stderr, "test_corrupt: unknown case %s\n", argv[1]);
        rmxt_failures++;
    }
    rmxt_rmtree(root);
    return rmxt_finish(argv[1]);
}
