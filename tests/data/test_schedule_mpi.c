/* Real MPI ranks, each with its own prefetching loader over the same shards, together train on
 * exactly the samples a single process would: rank 0 gathers what every rank loaded at every step
 * and compares it with the 1-rank run, sample by sample and value by value. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "data_test_util.h"

enum { M = 4, T = 8, GENRES = 5, B = 8, MICRO = 2, STEPS = 12 };

typedef struct {
    int64_t step, position, index;
    int32_t genre, pad;
    uint64_t mel_hash;
} element;

/* FNV-1a over the bytes of one sample: equal hashes mean equal data for this test's purposes. */
static uint64_t hash_floats(const float *x, size_t n) {
    const unsigned char *p = (const unsigned char *)x;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n * sizeof *x; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Every element this rank loads in steps [0, STEPS), in delivery order; -1 on a loader error. */
static int load_steps(rmx_dataset *ds, int world, int rank, int depth, element *out) {
    char err[1024];
    rmx_loader_config c = {.start_step = 0, .depth = depth};
    c.schedule = (rmx_schedule_config){.global_batch = B, .micro_batch = MICRO, .world = world, .rank = rank, .seed = 11};
    rmx_loader *l = rmx_loader_create(ds, &c, err, sizeof err);
    if (!l) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return -1;
    }
    int n = 0;
    for (int k = 0; k < STEPS * rmx_loader_accum_steps(l); k++) {
        const rmx_batch *b = rmx_loader_next(l, NULL, err, sizeof err);
        if (!b) {
            fprintf(stderr, "rank %d: %s\n", rank, err);
            rmx_loader_close(l);
            return -1;
        }
        for (int i = 0; i < b->m; i++, n++) {
            out[n] = (element){b->step, b->position[i], b->index[i], b->genre[i], 0,
                               hash_floats(b->mel + (size_t)i * M * T, M * T)};
        }
    }
    rmx_loader_close(l);
    return 0;
}

static int compare_index(const void *a, const void *b) {
    int64_t x = ((const element *)a)->index, y = ((const element *)b)->index;
    return (x > y) - (x < y);
}

/* all[r * per_rank ...] holds rank r's elements; per step, the union over ranks must be the
 * 1-rank batch: the same multiset of samples, and (ranks taking contiguous slices) the same order. */
static void compare_with_single_rank(const element *all, int world, const element *single) {
    int per_rank_step = B / world;
    for (int s = 0; s < STEPS; s++) {
        element got[B], want[B];
        for (int r = 0; r < world; r++)
            memcpy(got + r * per_rank_step, all + (size_t)r * STEPS * per_rank_step + s * per_rank_step,
                   per_rank_step * sizeof *got);
        memcpy(want, single + s * B, sizeof want);
        CHECK(memcmp(got, want, sizeof got) == 0);
        qsort(got, B, sizeof *got, compare_index);
        qsort(want, B, sizeof *want, compare_index);
        int same_multiset = 1;
        for (int i = 0; i < B; i++)
            same_multiset &= got[i].index == want[i].index && got[i].mel_hash == want[i].mel_hash &&
                             got[i].genre == want[i].genre && got[i].step == s;
        CHECK(same_multiset);
    }
}

/* Rank 0 writes the dataset and tells everyone where it is. */
static void share_dataset(int rank, char *dir, size_t dirlen) {
    if (rank == 0) {
        rmxt_mkdtemp(dir, dirlen);
        rmx_mel_params p = rmxt_params(M, T, GENRES);
        int rows[3] = {11, 6, 8};
        CHECK(rmxt_write_dataset(dir, &p, 3, rows, 0) == 0);
    }
    MPI_Bcast(dir, (int)dirlen, MPI_CHAR, 0, MPI_COMM_WORLD);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    char dir[4096] = "", err[1024];
    share_dataset(rank, dir, sizeof dir);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    int per_rank = STEPS * B / world;
    element *mine = calloc((size_t)per_rank, sizeof *mine);
    element *all = rank == 0 ? calloc((size_t)STEPS * B, sizeof *all) : NULL;
    CHECK(ds && load_steps(ds, world, rank, 2, mine) == 0);
    printf("rank %d of %d: loaded %d samples over %d steps\n", rank, world, per_rank, STEPS);
    MPI_Gather(mine, per_rank * (int)sizeof *mine, MPI_BYTE, all, per_rank * (int)sizeof *mine,
               MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank == 0 && ds) {
        element *single = calloc((size_t)STEPS * B, sizeof *single);
        CHECK(load_steps(ds, 1, 0, 0, single) == 0);
        compare_with_single_rank(all, world, single);
        free(single);
    }
    rmx_dataset_close(ds);
    int failures = 0;
    MPI_Allreduce(&rmxt_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) rmxt_rmtree(dir);
    free(mine);
    free(all);
    MPI_Finalize();
    rmxt_failures = failures;
    return rank == 0 ? rmxt_finish("test_schedule_mpi") : (failures ? 1 : 0);
}
