/* The shard writer: what it writes is what data/FORMAT.md promises (checked with plain HDF5 calls,
 * independent of the reader), the reader gives it back, the same input gives the same bytes, and
 * nothing half-written is ever left under the final name. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/shard.h"
#include "data_test_util.h"

enum { M = 8, T = 16, GENRES = 3 };

static int attr_int(hid_t file, const char *name) {
    int v = -12345;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT, &v) < 0) fprintf(stderr, "cannot read attribute %s\n", name);
    if (a >= 0) H5Aclose(a);
    return v;
}

static float attr_float(hid_t file, const char *name) {
    float v = NAN;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_FLOAT, &v) < 0) fprintf(stderr, "cannot read attribute %s\n", name);
    if (a >= 0) H5Aclose(a);
    return v;
}

/* Reads a fixed-length string attribute (what the writer produces) into out[i], 64 bytes each. */
static int attr_strings(hid_t file, const char *name, char out[][64], int max_n) {
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    int n = (int)H5Sget_simple_extent_npoints(space);
    size_t width = H5Tget_size(type);
    char *buf = calloc((size_t)n, width);
    CHECK(H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0);
    CHECK(n <= max_n && width < 64);
    if (n <= max_n && width < 64 && H5Aread(a, type, buf) >= 0)
        for (int i = 0; i < n; i++) snprintf(out[i], 64, "%.*s", (int)width, buf + (size_t)i * width);
    free(buf);
    H5Tclose(type);
    H5Sclose(space);
    H5Aclose(a);
    return n;
}

static void check_dataset_layout(hid_t file, const char *name, hid_t want_type, int rank,
                                 const hsize_t *want_dims) {
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    CHECK(ds >= 0);
    if (ds < 0) return;
    hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
    hsize_t dims[3] = {0, 0, 0};
    CHECK(H5Tequal(type, want_type) > 0);
    CHECK(H5Sget_simple_extent_ndims(space) == rank);
    H5Sget_simple_extent_dims(space, dims, NULL);
    for (int i = 0; i < rank; i++) CHECK(dims[i] == want_dims[i]);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(ds);
}

/* /mel is chunked one segment per chunk, with a Fletcher32 checksum per chunk, and extendible along N. */
static void check_mel_chunking(hid_t file) {
    hid_t ds = H5Dopen2(file, "mel", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(ds), space = H5Dget_space(ds);
    hsize_t chunk[3] = {0, 0, 0}, maxdims[3] = {0, 0, 0};
    CHECK(H5Pget_layout(dcpl) == H5D_CHUNKED);
    CHECK(H5Pget_chunk(dcpl, 3, chunk) == 3 && chunk[0] == 1 && chunk[1] == M && chunk[2] == T);
    CHECK(H5Pget_nfilters(dcpl) == 1 && H5Pget_filter2(dcpl, 0, NULL, NULL, NULL, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32);
    H5Sget_simple_extent_dims(space, NULL, maxdims);
    CHECK(maxdims[0] == H5S_UNLIMITED && maxdims[1] == M && maxdims[2] == T);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Dclose(ds);
}

static void check_root_attributes(hid_t file, const rmx_mel_params *p, int index, int count) {
    char strings[RMX_MAX_GENRES][64];
    CHECK(attr_strings(file, "format", strings, 1) == 1);
    CHECK_STR(strings[0], RMX_SHARD_FORMAT);
    CHECK(attr_int(file, "format_version") == RMX_SHARD_VERSION);
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        const char *src = (const char *)p + f->offset;
        if (f->kind == RMX_FIELD_INT) CHECK(attr_int(file, f->name) == *(const int *)src);
        else CHECK(attr_float(file, f->name) == *(const float *)src);
    }
    CHECK(attr_int(file, "n_genres") == p->n_genres);
    CHECK(attr_strings(file, "genre_names", strings, RMX_MAX_GENRES) == p->n_genres);
    for (int g = 0; g < p->n_genres; g++) CHECK_STR(strings[g], p->genre_names[g]);
    CHECK(attr_int(file, "shard_index") == index);
    CHECK(attr_int(file, "shard_count") == count);
}

/* Shard 1 of a two-shard set, inspected with plain HDF5. */
static void test_layout_and_attributes(const char *dir, const rmx_mel_params *p) {
    char path[4096];
    rmxt_shard_path(dir, 1, path, sizeof path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(file >= 0);
    if (file < 0) return;
    check_root_attributes(file, p, 1, 2);
    hsize_t mel_dims[3] = {4, M, T}, rows[1] = {4};
    check_dataset_layout(file, "mel", H5T_IEEE_F32LE, 3, mel_dims);
    check_dataset_layout(file, "genre", H5T_STD_I32LE, 1, rows);
    check_dataset_layout(file, "source", H5T_STD_I32LE, 1, rows);
    check_dataset_layout(file, "offset", H5T_STD_I64LE, 1, rows);
    check_mel_chunking(file);
    /* the per-segment datasets carry checksums too */
    const char *small[] = {"genre", "source", "offset", "sources"};
    for (int i = 0; i < 4; i++) {
        hid_t ds = H5Dopen2(file, small[i], H5P_DEFAULT), dcpl = H5Dget_create_plist(ds);
        CHECK(H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) == 1 &&
              H5Pget_filter2(dcpl, 0, NULL, NULL, NULL, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32);
        H5Pclose(dcpl);
        H5Dclose(ds);
    }
    /* Keys 3..6 come from sources file_001 (keys 3, 4, 5) and file_002 (key 6). */
    char sources[4][64];
    hid_t ds = H5Dopen2(file, "sources", H5P_DEFAULT);
    hid_t type = H5Dget_type(ds);
    CHECK(H5Tget_class(type) == H5T_STRING && H5Tget_size(type) < 64);
    char buf[4 * 64] = {0};
    hsize_t n = 0;
    hid_t space = H5Dget_space(ds);
    H5Sget_simple_extent_dims(space, &n, NULL);
    CHECK(n == 2);
    if (n == 2 && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0)
        for (int i = 0; i < 2; i++)
            snprintf(sources[i], 64, "%.*s", (int)H5Tget_size(type), buf + i * H5Tget_size(type));
    CHECK_STR(sources[0], "genre1/file_001.wav");
    CHECK_STR(sources[1], "genre2/file_002.wav");
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(ds);
    H5Fclose(file);
}

static void check_sample(rmx_dataset *ds, int64_t key, float *mel) {
    char err[1024], source[256], want_source[256];
    int32_t genre = -1;
    int64_t offset = -1, want_offset;
    CHECK(rmx_dataset_read(ds, key, mel, &genre, err, sizeof err) == 0);
    int same = 1;
    for (int b = 0; b < M; b++)
        for (int t = 0; t < T; t++) same &= mel[b * T + t] == rmxt_mel_value(key, b, t);
    CHECK(same);
    CHECK(genre == rmxt_genre_of(key, GENRES));
    CHECK(rmx_dataset_provenance(ds, key, source, sizeof source, &offset, err, sizeof err) == 0);
    rmxt_source_of(key, T, want_source, sizeof want_source, &want_offset);
    CHECK_STR(source, want_source);
    CHECK(offset == want_offset);
}

/* What was appended comes back through the dataset reader, sample by sample. */
static void test_reader_roundtrip(const char *dir, const rmx_mel_params *p) {
    char err[1024];
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) {
        fprintf(stderr, "open: %s\n", err);
        return;
    }
    CHECK(rmx_dataset_length(ds) == 7);
    CHECK(rmx_dataset_shard_count(ds) == 2);
    CHECK(rmx_dataset_sample_floats(ds) == M * T);
    CHECK(rmx_mel_params_compare(rmx_dataset_params(ds), "read", p, "written", err, sizeof err) == 0);
    float mel[M * T];
    for (int64_t key = 0; key < 7; key++) check_sample(ds, key, mel);
    /* read_batch keeps the caller's order, across shards. */
    int64_t idx[3] = {6, 0, 3};
    float batch[3 * M * T];
    int32_t genres[3];
    CHECK(rmx_dataset_read_batch(ds, idx, 3, batch, genres, err, sizeof err) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(batch[i * M * T + 5] == rmxt_mel_value(idx[i], 0, 5));
        CHECK(genres[i] == rmxt_genre_of(idx[i], GENRES));
    }
    CHECK(rmx_dataset_read(ds, 7, mel, NULL, err, sizeof err) == -1);
    char want[4200];
    snprintf(want, sizeof want, "%s: sample index 7 is outside [0, 7)", dir);
    CHECK_STR(err, want);
    rmx_dataset_close(ds);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    for (int ca = 0, cb = 0; same && ca != EOF;) {
        ca = fgetc(fa);
        cb = fgetc(fb);
        same = ca == cb;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Same input, written a second apart (so any time stamp would differ): same bytes. */
static void test_byte_identical(const char *root, const rmx_mel_params *p) {
    char a[4096], b[4096], c[4096], fa[4096], fb[4096], fc[4096];
    rmxt_subdir(root, "same-a", a, sizeof a);
    rmxt_subdir(root, "same-b", b, sizeof b);
    rmxt_subdir(root, "other", c, sizeof c);
    int rows[2] = {5, 2};
    CHECK(rmxt_write_dataset(a, p, 2, rows, 0) == 0);
    sleep(1);
    usleep(200000);
    CHECK(rmxt_write_dataset(b, p, 2, rows, 0) == 0);
    CHECK(rmxt_write_dataset(c, p, 2, rows, 1) == 0); /* different content, same shape */
    for (int i = 0; i < 2; i++) {
        rmxt_shard_path(a, i, fa, sizeof fa);
        rmxt_shard_path(b, i, fb, sizeof fb);
        rmxt_shard_path(c, i, fc, sizeof fc);
        CHECK(file_size(fa) > 0 && file_size(fa) == file_size(fb));
        CHECK(same_bytes(fa, fb));
        CHECK(!same_bytes(fa, fc));
    }
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    if (d) closedir(d);
    return n;
}

/* The file appears under its final name only when complete; abort leaves nothing. */
static void test_temporary_file(const char *root, const rmx_mel_params *p) {
    char dir[4096], path[4096], err[1024];
    rmxt_subdir(root, "tmp", dir, sizeof dir);
    rmxt_shard_path(dir, 0, path, sizeof path);
    float mel[M * T];
    rmxt_fill_mel(0, M, T, mel);
    rmx_shard_writer *w = rmx_shard_create(path, p, 0, 1, err, sizeof err);
    CHECK(w != NULL);
    if (!w) return;
    CHECK(rmx_shard_append(w, mel, 0, "a.wav", 0, err, sizeof err) == 0);
    CHECK(rmx_shard_length(w) == 1);
    CHECK(access(path, F_OK) != 0);
    CHECK(count_entries(dir) == 1); /* the temporary */
    rmx_shard_abort(w);
    CHECK(count_entries(dir) == 0);

    w = rmx_shard_create(path, p, 0, 1, err, sizeof err);
    CHECK(w && rmx_shard_append(w, mel, 0, "a.wav", 0, err, sizeof err) == 0);
    CHECK(w && rmx_shard_close(w, err, sizeof err) == 0);
    CHECK(access(path, F_OK) == 0);
    CHECK(count_entries(dir) == 1); /* only the final file */
}

static void test_writer_rejects(const char *root, const rmx_mel_params *p) {
    char dir[4096], path[4096], err[1024], want[4600];
    rmxt_subdir(root, "reject", dir, sizeof dir);
    rmxt_shard_path(dir, 0, path, sizeof path);
    float mel[M * T];
    rmxt_fill_mel(0, M, T, mel);
    rmx_shard_writer *w = rmx_shard_create(path, p, 0, 1, err, sizeof err);
    CHECK(w != NULL);
    if (!w) return;
    mel[17] = INFINITY;
    CHECK(rmx_shard_append(w, mel, 0, "blues/a.wav", 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: segment 0 from blues/a.wav contains a non-finite value", path);
    CHECK_STR(err, want);
    mel[17] = 0;
    CHECK(rmx_shard_append(w, mel, GENRES, "blues/a.wav", 0, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s: segment 0 from blues/a.wav has genre 3, outside [0, 3)", path);
    CHECK_STR(err, want);
    rmx_shard_abort(w);
    CHECK(count_entries(dir) == 0);

    CHECK(rmx_shard_create(path, p, 2, 2, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: shard index 2 is outside a set of 2 shards", path);
    CHECK_STR(err, want);
    rmx_mel_params bad = *p;
    bad.hop_length = 0;
    CHECK(rmx_shard_create(path, &bad, 0, 1, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: attribute 'hop_length' is 0, expected > 0", path);
    CHECK_STR(err, want);
    bad = *p;
    snprintf(bad.genre_names[2], RMX_GENRE_NAME_MAX, "g0");
    CHECK(rmx_shard_create(path, &bad, 0, 1, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: genre 'g0' appears twice in genre_names", path);
    CHECK_STR(err, want);
    CHECK(count_entries(dir) == 0);
}

/* Rewrites a string dataset or root attribute of `path` as variable-length strings, the way h5py
 * writes Python str values by default. */
static void make_variable_length(const char *path, const char *name, int is_attr, const char **values, hsize_t n) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate_simple(1, &n, NULL);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    herr_t rc;
    if (is_attr) {
        H5Adelete(f, name);
        hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
        rc = H5Awrite(a, type, values);
        H5Aclose(a);
    } else {
        H5Ldelete(f, name, H5P_DEFAULT);
        hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        rc = H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
        H5Dclose(d);
    }
    CHECK(rc >= 0);
    H5Sclose(space);
    H5Tclose(type);
    H5Fclose(f);
}

/* Shards touched by other tools may hold variable-length strings: they read the same. */
static void test_variable_length_strings(const char *root, const rmx_mel_params *p) {
    char dir[4096], path[4096], err[1024];
    rmxt_subdir(root, "vlen", dir, sizeof dir);
    int rows[1] = {3};
    CHECK(rmxt_write_dataset(dir, p, 1, rows, 0) == 0);
    rmxt_shard_path(dir, 0, path, sizeof path);
    const char *sources[1] = {"genre0/file_000.wav"}, *genres[GENRES] = {"g0", "g1", "g2"};
    make_variable_length(path, "sources", 0, sources, 1);
    make_variable_length(path, "genre_names", 1, genres, GENRES);
    rmx_dataset *ds = rmx_dataset_open(dir, err, sizeof err);
    CHECK(ds != NULL);
    if (!ds) {
        fprintf(stderr, "open: %s\n", err);
        return;
    }
    CHECK(rmx_mel_params_compare(rmx_dataset_params(ds), "read", p, "written", err, sizeof err) == 0);
    float mel[M * T];
    for (int64_t key = 0; key < 3; key++) check_sample(ds, key, mel);
    rmx_dataset_close(ds);
}

int main(void) {
    char root[4096], dir[4096];
    rmxt_mkdtemp(root, sizeof root);
    rmx_mel_params p = rmxt_params(M, T, GENRES);
    rmxt_subdir(root, "set", dir, sizeof dir);
    int rows[2] = {3, 4};
    CHECK(rmxt_write_dataset(dir, &p, 2, rows, 0) == 0);
    test_layout_and_attributes(dir, &p);
    test_reader_roundtrip(dir, &p);
    test_byte_identical(root, &p);
    test_temporary_file(root, &p);
    test_writer_rejects(root, &p);
    test_variable_length_strings(root, &p);
    rmxt_rmtree(root);
    return rmxt_finish("test_shard");
}
