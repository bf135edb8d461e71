/* A dataset that is not what the format promises is refused with a message naming the file and
 * the field. Each case starts from a good two-shard set, breaks one thing with plain HDF5 calls
 * (as a foreign tool or a damaged copy would), and checks the exact message. */
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "data_test_util.h"

enum { M = 4, T = 8, GENRES = 3 };

static char g_root[4096];
static int g_case;

/* A fresh good dataset (shards of 3 and 2 segments) in its own folder. */
static void good_set(char *dir, size_t dirlen, const rmx_mel_params *p) {
    char name[32];
    snprintf(name, sizeof name, "case%02d", g_case++);
    rmxt_subdir(g_root, name, dir, dirlen);
    int rows[2] = {3, 2};
    CHECK(rmxt_write_dataset(dir, p, 2, rows, 0) == 0);
}

/* Opening `spec` fails with exactly `want` (failures report the caller's line). */
#define expect_open_error(spec, want) expect_open_error_at(__LINE__, (spec), (want))
static void expect_open_error_at(int line, const char *spec, const char *want) {
    char err[2048] = "";
    rmx_dataset *ds = rmx_dataset_open(spec, err, sizeof err);
    CHECK(ds == NULL);
    rmx_dataset_close(ds);
    rmxt_check_str(__FILE__, line, err, want);
}

static hid_t open_rw(const char *dir, int shard) {
    char path[4096];
    rmxt_shard_path(dir, shard, path, sizeof path);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    return f;
}

static void create_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(ds >= 0);
    H5Dclose(ds);
    H5Sclose(space);
}

static void replace_dataset(const char *dir, int shard, const char *name, hid_t type, int rank,
                            const hsize_t *dims) {
    hid_t f = open_rw(dir, shard);
    CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    create_dataset(f, name, type, rank, dims);
    H5Fclose(f);
}

static void set_attr(const char *dir, int shard, const char *name, hid_t type, const void *value) {
    hid_t f = open_rw(dir, shard);
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, type, value) >= 0);
    H5Aclose(a);
    H5Sclose(space);
    H5Fclose(f);
}

/* Writes one value into /mel[row, bin, frame] or /genre[row]. */
static void poke(const char *dir, int shard, const char *name, int rank, const hsize_t *at,
                 hid_t mem_type, const void *value) {
    hid_t f = open_rw(dir, shard);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), fspace = H5Dget_space(ds);
    hsize_t one[3] = {1, 1, 1};
    hid_t mspace = H5Screate_simple(1, one, NULL);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, at, NULL, one, NULL);
    CHECK(rank >= 1 && H5Dwrite(ds, mem_type, mspace, fspace, H5P_DEFAULT, value) >= 0);
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(ds);
    H5Fclose(f);
}

/* Shard `shard` of dir is replaced by the same shard written with other parameters. */
static void replace_shard_with_params(const char *dir, int shard, const rmx_mel_params *p) {
    char other[4096], from[4096], to[4096];
    snprintf(other, sizeof other, "%s.other", dir);
    rmxt_subdir(g_root, strrchr(other, '/') + 1, other, sizeof other);
    int rows[2] = {3, 2};
    CHECK(rmxt_write_dataset(other, p, 2, rows, 0) == 0);
    rmxt_shard_path(other, shard, from, sizeof from);
    rmxt_shard_path(dir, shard, to, sizeof to);
    CHECK(rename(from, to) == 0);
}

static void test_parameter_mismatches(const rmx_mel_params *p) {
    char dir[4096], want[16384];
    rmx_mel_params q = *p;
    good_set(dir, sizeof dir, p);
    q.hop_length = 512;
    replace_shard_with_params(dir, 1, &q);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'hop_length' is 512 but shard-00000.h5 has 256", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    q = *p;
    q.norm_mean = -4.0f;
    replace_shard_with_params(dir, 1, &q);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'norm_mean' is -4 but shard-00000.h5 has -4.25", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    q = *p;
    snprintf(q.genre_names[1], RMX_GENRE_NAME_MAX, "jazz");
    replace_shard_with_params(dir, 1, &q);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'genre_names'[1] is 'jazz' but shard-00000.h5 has 'g1'", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    q = *p;
    q.n_mels = 2 * M; /* a different shape */
    replace_shard_with_params(dir, 1, &q);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'n_mels' is 8 but shard-00000.h5 has 4", dir);
    expect_open_error(dir, want);
}

static void test_missing_pieces(const rmx_mel_params *p) {
    char dir[4096], want[16384];
    good_set(dir, sizeof dir, p);
    hid_t f = open_rw(dir, 1);
    CHECK(H5Ldelete(f, "genre", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    snprintf(want, sizeof want, "%s/shard-00001.h5: dataset /genre is missing", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    f = open_rw(dir, 0);
    CHECK(H5Adelete(f, "norm_std") >= 0);
    H5Fclose(f);
    snprintf(want, sizeof want, "%s/shard-00000.h5: attribute 'norm_std' is missing", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    f = open_rw(dir, 1);
    CHECK(H5Adelete(f, "format") >= 0);
    H5Fclose(f);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'format' is missing", dir);
    expect_open_error(dir, want);
}

static void test_wrong_types(const rmx_mel_params *p) {
    char dir[4096], want[16384];
    good_set(dir, sizeof dir, p);
    hsize_t rows[1] = {2};
    replace_dataset(dir, 1, "genre", H5T_IEEE_F32LE, 1, rows);
    snprintf(want, sizeof want, "%s/shard-00001.h5: /genre has type float32, expected int32", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    hsize_t mel[3] = {3, M, T};
    replace_dataset(dir, 0, "mel", H5T_IEEE_F64LE, 3, mel);
    snprintf(want, sizeof want, "%s/shard-00000.h5: /mel has type float64, expected float32", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    hsize_t flat[2] = {3, M * T};
    replace_dataset(dir, 0, "mel", H5T_IEEE_F32LE, 2, flat);
    snprintf(want, sizeof want, "%s/shard-00000.h5: /mel has rank 2, expected 3", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    hsize_t transposed[3] = {3, T, M};
    replace_dataset(dir, 0, "mel", H5T_IEEE_F32LE, 3, transposed);
    snprintf(want, sizeof want, "%s/shard-00000.h5: /mel has shape [3, 8, 4] but attributes 'n_mels' 4 and "
             "'segment_frames' 8 require [N, 4, 8]", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    hsize_t short_rows[1] = {1};
    replace_dataset(dir, 1, "offset", H5T_STD_I64LE, 1, short_rows);
    snprintf(want, sizeof want, "%s/shard-00001.h5: /offset has 1 entries but /mel has 2 segments", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    float hop = 256.0f;
    set_attr(dir, 1, "hop_length", H5T_NATIVE_FLOAT, &hop);
    snprintf(want, sizeof want, "%s/shard-00001.h5: attribute 'hop_length' has type float32, expected an integer", dir);
    expect_open_error(dir, want);
}

static void test_foreign_files(const rmx_mel_params *p) {
    char dir[4096], want[16384], path[4096];
    good_set(dir, sizeof dir, p);
    int version = 3;
    set_attr(dir, 0, "format_version", H5T_NATIVE_INT, &version);
    snprintf(want, sizeof want, "%s/shard-00000.h5: attribute 'format_version' is 3, this build reads versions 1..2", dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    rmxt_shard_path(dir, 1, path, sizeof path);
    FILE *f = fopen(path, "w");
    fputs("not an HDF5 file\n", f);
    fclose(f);
    char err[2048] = "";
    CHECK(rmx_dataset_open(dir, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: cannot open as HDF5: ", path);
    CHECK(strncmp(err, want, strlen(want)) == 0);
}

static void test_shard_set(const rmx_mel_params *p) {
    char dir[4096], want[16384], path[4096];
    good_set(dir, sizeof dir, p);
    rmxt_shard_path(dir, 1, path, sizeof path);
    CHECK(remove(path) == 0);
    snprintf(want, sizeof want, "%s/shard-00000.h5: attribute 'shard_count' is 2 but 1 shard file was found in %s", dir, dir);
    expect_open_error(dir, want);

    good_set(dir, sizeof dir, p);
    int index = 1;
    set_attr(dir, 0, "shard_index", H5T_NATIVE_INT, &index);
    snprintf(want, sizeof want,
             "%s/shard-00000.h5: attribute 'shard_index' is 1, expected 0 (its place among the shards of %s "
             "sorted by name)", dir, dir);
    expect_open_error(dir, want);

    rmxt_subdir(g_root, "nothing", dir, sizeof dir);
    snprintf(want, sizeof want, "%s: no shard files found (looked for %s/shard-*.h5)", dir, dir);
    expect_open_error(dir, want);

    rmxt_subdir(g_root, "empty", dir, sizeof dir);
    int rows[1] = {0};
    CHECK(rmxt_write_dataset(dir, p, 1, rows, 0) == 0);
    snprintf(want, sizeof want, "%s: the dataset is empty (0 segments in 1 shard file)", dir);
    expect_open_error(dir, want);
}

static void test_bad_values(const rmx_mel_params *p) {
    char dir[4096], want[16384], err[2048];
    good_set(dir, sizeof dir, p);
    int32_t genre = 9;
    hsize_t at1[1] = {1};
    poke(dir, 1, "genre", 1, at1, H5T_NATIVE_INT32, &genre);
    snprintf(want, sizeof want, "%s/shard-00001.h5: /genre[1] is 9, outside [0, 3) (n_genres)", dir);
    expect_open_error(dir, want);

    /* A non-finite value opens fine and fails exactly the sample that holds it (dataset index 4 =
     * shard 1, row 1). */
    good_set(dir, sizeof dir, p);
    float nan = NAN;
    hsize_t at[3] = {1, 2, 5};
    poke(dir, 1, "mel", 3, at, H5T_NATIVE_FLOAT, &nan);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) return;
    float mel[M * T];
    int32_t g;
    CHECK(rmx_dataset_read(ds, 3, mel, &g, err, sizeof err) == 0);
    CHECK(rmx_dataset_read(ds, 4, mel, &g, err, sizeof err) == -1);
    snprintf(want, sizeof want,
             "damaged segment: %s/shard-00001.h5 segment 1 (sample 4 of %s) from genre1/file_001.wav: /mel "
             "contains a non-finite value (data.on_corrupt: skip would read the next valid segment in its place)",
             dir, dir);
    CHECK_STR(err, want);
    int64_t idx[2] = {0, 4};
    float two[2 * M * T];
    CHECK(rmx_dataset_read_batch(ds, idx, 2, two, NULL, err, sizeof err) == -1);
    CHECK_STR(err, want);
    rmx_dataset_close(ds);
}

static void test_train_val_agreement(const rmx_mel_params *p) {
    char train_dir[4096], val_dir[4096], err[2048], want[16384];
    good_set(train_dir, sizeof train_dir, p);
    good_set(val_dir, sizeof val_dir, p);
    rmx_dataset *train = rmx_dataset_open(train_dir, err, sizeof err);
    rmx_dataset *val = rmx_dataset_open(val_dir, err, sizeof err);
    CHECK(train && val);
    if (train && val) CHECK(rmx_dataset_check_compatible(train, val, err, sizeof err) == 0);
    rmx_dataset_close(val);

    rmx_mel_params q = *p;
    snprintf(q.genre_names[2], RMX_GENRE_NAME_MAX, "rock");
    rmxt_subdir(g_root, "val-other", val_dir, sizeof val_dir);
    int rows[1] = {2};
    CHECK(rmxt_write_dataset(val_dir, &q, 1, rows, 0) == 0);
    val = rmx_dataset_open(val_dir, err, sizeof err);
    CHECK(val != NULL);
    if (train && val) {
        CHECK(rmx_dataset_check_compatible(train, val, err, sizeof err) == -1);
        snprintf(want, sizeof want, "validation set %s: attribute 'genre_names'[2] is 'rock' but training set %s has 'g2'",
                 val_dir, train_dir);
        CHECK_STR(err, want);
    }
    rmx_dataset_close(val);
    rmx_dataset_close(train);
}

/* A glob selects shards like a folder does; a trailing slash on a folder changes nothing. */
static void test_specs(const rmx_mel_params *p) {
    char dir[4096], spec[4200], err[2048];
    good_set(dir, sizeof dir, p);
    snprintf(spec, sizeof spec, "%s/shard-0000[0-9].h5", dir);
    rmx_dataset *ds = rmx_dataset_open(spec, err, sizeof err);
    CHECK(ds && rmx_dataset_length(ds) == 5);
    rmx_dataset_close(ds);
    snprintf(spec, sizeof spec, "%s/", dir);
    ds = rmx_dataset_open(spec, err, sizeof err);
    CHECK(ds && rmx_dataset_length(ds) == 5 && strcmp(rmx_dataset_spec(ds), dir) == 0);
    rmx_dataset_close(ds);
}

int main(void) {
    rmxt_mkdtemp(g_root, sizeof g_root);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    test_parameter_mismatches(&p);
    test_missing_pieces(&p);
    test_wrong_types(&p);
    test_foreign_files(&p);
    test_shard_set(&p);
    test_bad_values(&p);
    test_train_val_agreement(&p);
    test_specs(&p);
    rmxt_rmtree(g_root);
    return rmxt_finish("test_dataset_errors");
}
