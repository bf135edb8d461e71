/* The batch schedule: what each rank trains on at each step is a pure function of the step that
 * visits every sample once per epoch and does not depend on the world size or on where a run
 * (re)started. */
#include <stdlib.h>
#include <string.h>

#include "data/schedule.h"
#include "data_test_util.h"

static rmx_schedule_config config(int64_t b, int m, int world, int rank, uint64_t seed) {
    rmx_schedule_config c = {.global_batch = b, .micro_batch = m, .world = world, .rank = rank, .seed = seed};
    return c;
}

static int is_permutation(const int64_t *perm, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    int ok = seen != NULL;
    for (int64_t i = 0; ok && i < n; i++) {
        ok = perm[i] >= 0 && perm[i] < n && !seen[perm[i]];
        if (ok) seen[perm[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_permutations(void) {
    enum { N = 1000 };
    static int64_t a[N], b[N], c[N], d[N];
    rmx_epoch_permutation(42, 0, N, a);
    rmx_epoch_permutation(42, 0, N, b);
    rmx_epoch_permutation(42, 1, N, c);
    rmx_epoch_permutation(43, 0, N, d);
    CHECK(is_permutation(a, N) && is_permutation(c, N) && is_permutation(d, N));
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    CHECK(memcmp(a, d, sizeof a) != 0);
    int fixed_points = 0;
    for (int i = 0; i < N; i++) fixed_points += a[i] == i;
    CHECK(fixed_points < 10); /* a shuffle, not the identity (expected about 1) */
    int64_t one = -1;
    rmx_epoch_permutation(42, 5, 1, &one);
    CHECK(one == 0);
}

/* The stream must not change between builds: a run resumed by a newer binary would otherwise
 * train on a different trajectory. These values pin Fisher-Yates over Philox as documented. */
static void test_stream_is_pinned(void) {
    int64_t perm[10];
    const int64_t want[10] = {0, 6, 4, 1, 3, 7, 9, 2, 5, 8};
    rmx_epoch_permutation(1234, 3, 10, perm);
    int same = memcmp(perm, want, sizeof perm) == 0;
    CHECK(same);
    if (!same) {
        fprintf(stderr, "permutation(seed 1234, epoch 3, n 10) =");
        for (int i = 0; i < 10; i++) fprintf(stderr, " %lld", (long long)perm[i]);
        fprintf(stderr, "\n");
    }
}

/* Every element of steps [0, steps) on every rank, in rank-major, micro-batch, element order. */
static int collect(int64_t n, rmx_schedule_config c, int64_t steps, int64_t *positions, int64_t *indices) {
    int64_t k = 0;
    for (int64_t s = 0; s < steps; s++) {
        for (int r = 0; r < c.world; r++) {
            c.rank = r;
            char err[256];
            rmx_schedule *sch = rmx_schedule_create(&c, n, err, sizeof err);
            if (!sch) return -1;
            for (int j = 0; j < rmx_schedule_accum_steps(sch); j++, k += c.micro_batch)
                rmx_schedule_micro_batch(sch, s, j, indices + k, positions + k);
            rmx_schedule_free(sch);
        }
    }
    return 0;
}

static void test_each_sample_once_per_epoch(void) {
    enum { N = 37, B = 12, STEPS = 13 }; /* 156 positions: 4 full epochs, B does not divide N */
    int64_t pos[STEPS * B], idx[STEPS * B];
    CHECK(collect(N, config(B, 2, 2, 0, 9), STEPS, pos, idx) == 0);
    int64_t *count = calloc(STEPS * B, sizeof *count);
    for (int i = 0; i < STEPS * B; i++)
        if (pos[i] >= 0 && pos[i] < STEPS * B) count[pos[i]]++;
    int each_position_once = 1;
    for (int i = 0; i < STEPS * B; i++) each_position_once &= count[i] == 1;
    CHECK(each_position_once);
    for (int64_t epoch = 0; epoch < 4; epoch++) {
        int64_t seen[N] = {0};
        for (int i = 0; i < STEPS * B; i++)
            if (pos[i] / N == epoch) seen[idx[i]]++;
        int each_sample_once = 1;
        for (int i = 0; i < N; i++) each_sample_once &= seen[i] == 1;
        CHECK(each_sample_once);
    }
    free(count);
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* W = 1, 2, 4 (with micro-batches 4, 2, 1, and 2 accumulation steps each) see the same samples at
 * every step: the same multiset, and in fact the same sequence cut into rank slices. */
static void test_world_sizes_agree(void) {
    enum { N = 50, B = 16, STEPS = 10 };
    static int64_t pos[3][STEPS * B], idx[3][STEPS * B];
    const int worlds[3] = {1, 2, 4}, micros[3] = {8, 4, 2};
    for (int w = 0; w < 3; w++)
        CHECK(collect(N, config(B, micros[w], worlds[w], 0, 77), STEPS, pos[w], idx[w]) == 0);
    for (int w = 1; w < 3; w++) {
        for (int s = 0; s < STEPS; s++) {
            int64_t a[B], b[B];
            memcpy(a, idx[0] + s * B, sizeof a);
            memcpy(b, idx[w] + s * B, sizeof b);
            qsort(a, B, sizeof *a, compare_i64);
            qsort(b, B, sizeof *b, compare_i64);
            CHECK(memcmp(a, b, sizeof a) == 0);
        }
        CHECK(memcmp(idx[0], idx[w], sizeof idx[0]) == 0);
        CHECK(memcmp(pos[0], pos[w], sizeof pos[0]) == 0);
    }
}

/* A schedule started at step s (a resumed run) gives the batches of one that ran up to s. */
static void test_resume(void) {
    enum { N = 29, M = 3, A = 2, B = 12, STEPS = 20, START = 12 };
    char err[256];
    rmx_schedule_config c = config(B, M, 2, 1, 5);
    rmx_schedule *from_zero = rmx_schedule_create(&c, N, err, sizeof err);
    rmx_schedule *resumed = rmx_schedule_create(&c, N, err, sizeof err);
    CHECK(from_zero && resumed && rmx_schedule_accum_steps(from_zero) == A);
    if (!from_zero || !resumed) return;
    int64_t full[STEPS][A][M], pos[STEPS][A][M];
    for (int s = 0; s < STEPS; s++)
        for (int j = 0; j < A; j++) CHECK(rmx_schedule_micro_batch(from_zero, s, j, full[s][j], pos[s][j]) == 0);
    for (int s = START; s < STEPS; s++)
        for (int j = 0; j < A; j++) {
            int64_t got[M], got_pos[M];
            rmx_schedule_micro_batch(resumed, s, j, got, got_pos);
            CHECK(memcmp(got, full[s][j], sizeof got) == 0 && memcmp(got_pos, pos[s][j], sizeof got_pos) == 0);
        }
    /* Going back to an earlier epoch regenerates its permutation rather than reusing the cache. */
    int64_t again[M];
    rmx_schedule_micro_batch(resumed, 0, 1, again, NULL);
    CHECK(memcmp(again, full[0][1], sizeof again) == 0);
    /* Rank 1 of 2 at step 3, micro-batch 1: positions 3*12 + 6 + 3 .. +2. */
    CHECK(pos[3][1][0] == 45 && pos[3][1][2] == 47);
    CHECK(rmx_schedule_micro_batch(resumed, -1, 0, again, NULL) == -1);
    CHECK(rmx_schedule_micro_batch(resumed, 0, A, again, NULL) == -1);
    rmx_schedule_free(from_zero);
    rmx_schedule_free(resumed);
}

static void test_divisibility(void) {
    char err[256] = "";
    int accum = 0;
    rmx_schedule_config c = config(8, 2, 3, 0, 1);
    CHECK(rmx_schedule_check(&c, &accum, err, sizeof err) == -1);
    CHECK_STR(err, "train.global_batch 8 is not divisible by world size 3 x train.micro_batch 2");
    CHECK(rmx_schedule_create(&c, 100, err, sizeof err) == NULL);
    CHECK_STR(err, "train.global_batch 8 is not divisible by world size 3 x train.micro_batch 2");
    c = config(32, 4, 2, 1, 1);
    CHECK(rmx_schedule_check(&c, &accum, err, sizeof err) == 0 && accum == 4);
    c = config(32, 0, 2, 1, 1);
    CHECK(rmx_schedule_check(&c, &accum, err, sizeof err) == -1);
    CHECK_STR(err, "train.micro_batch is 0, expected >= 1");
    c = config(32, 4, 2, 2, 1);
    CHECK(rmx_schedule_check(&c, &accum, err, sizeof err) == -1);
    CHECK_STR(err, "rank 2 is outside a world of 2 ranks");
    c = config(32, 4, 2, 0, 1);
    CHECK(rmx_schedule_create(&c, 0, err, sizeof err) == NULL);
    CHECK_STR(err, "the dataset has no samples to schedule");
}

int main(void) {
    test_permutations();
    test_stream_is_pinned();
    test_each_sample_once_per_epoch();
    test_world_sizes_agree();
    test_resume();
    test_divisibility();
    return rmxt_finish("test_schedule");
}
