#include "data_test_util.h"

#include <ftw.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int rmxt_failures;

void rmxt_check_str(const char *file, int line, const char *got, const char *want) {
    if (strcmp(got, want) == 0) return;
    fprintf(stderr, "%s:%d: check failed:\n   got: %s\n  want: %s\n", file, line, got, want);
    rmxt_failures++;
}

int rmxt_finish(const char *test_name) {
    if (rmxt_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", test_name, rmxt_failures);
        return 1;
    }
    printf("%s: all checks passed\n", test_name);
    return 0;
}

void rmxt_mkdtemp(char *out, size_t outlen) {
    const char *base = getenv("TMPDIR");
    snprintf(out, outlen, "%s/rmx-data-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        exit(2);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void rmxt_rmtree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

void rmxt_subdir(const char *parent, const char *name, char *out, size_t outlen) {
    snprintf(out, outlen, "%s/%s", parent, name);
    if (mkdir(out, 0777) != 0) {
        perror(out);
        exit(2);
    }
}

rmx_mel_params rmxt_params(int n_mels, int frames, int n_genres) {
    rmx_mel_params p;
    memset(&p, 0, sizeof p);
    p.sample_rate = 22050;
    p.n_fft = 2048;
    p.win_length = 2048;
    p.hop_length = 256;
    p.n_mels = n_mels;
    p.fmin = 0.0f;
    p.fmax = 11025.0f;
    p.log_floor = 1e-10f;
    p.norm_mean = -4.25f;
    p.norm_std = 2.5f;
    p.segment_frames = frames;
    p.n_genres = n_genres;
    for (int g = 0; g < n_genres; g++) snprintf(p.genre_names[g], RMX_GENRE_NAME_MAX, "g%d", g);
    return p;
}

float rmxt_mel_value(int64_t key, int bin, int frame) {
    return (float)((key * 131 + bin * 7 + frame) % 1000) / 8.0f - 60.0f;
}

void rmxt_fill_mel(int64_t key, int n_mels, int frames, float *mel) {
    for (int b = 0; b < n_mels; b++)
        for (int t = 0; t < frames; t++) mel[b * frames + t] = rmxt_mel_value(key, b, t);
}

int32_t rmxt_genre_of(int64_t key, int n_genres) { return (int32_t)(key % n_genres); }

void rmxt_source_of(int64_t key, int frames, char *out, size_t outlen, int64_t *offset) {
    snprintf(out, outlen, "genre%d/file_%03d.wav", (int)(key / 3 % 4), (int)(key / 3));
    *offset = (key % 3) * frames;
}

void rmxt_shard_path(const char *dir, int i, char *out, size_t outlen) {
    char name[64];
    rmx_shard_filename(i, name, sizeof name);
    snprintf(out, outlen, "%s/%s", dir, name);
}

static int write_shard(const char *path, const rmx_mel_params *p, int index, int count, int rows,
                       int64_t first_key, float *mel) {
    char err[1024], source[256];
    rmx_shard_writer *w = rmx_shard_create(path, p, index, count, err, sizeof err);
    if (!w) {
        fprintf(stderr, "rmx_shard_create: %s\n", err);
        return -1;
    }
    for (int r = 0; r < rows; r++) {
        int64_t key = first_key + r, offset;
        rmxt_fill_mel(key, p->n_mels, p->segment_frames, mel);
        rmxt_source_of(key, p->segment_frames, source, sizeof source, &offset);
        if (rmx_shard_append(w, mel, rmxt_genre_of(key, p->n_genres), source, offset, err, sizeof err)) {
            fprintf(stderr, "rmx_shard_append: %s\n", err);
            rmx_shard_abort(w);
            return -1;
        }
    }
    if (rmx_shard_close(w, err, sizeof err)) {
        fprintf(stderr, "rmx_shard_close: %s\n", err);
        return -1;
    }
    return 0;
}

int rmxt_write_dataset(const char *dir, const rmx_mel_params *p, int n_shards, const int *rows,
                       int64_t first_key) {
    float *mel = malloc((size_t)p->n_mels * (size_t)p->segment_frames * sizeof *mel);
    int rc = mel ? 0 : -1;
    for (int i = 0; i < n_shards && rc == 0; i++) {
        char path[4096];
        rmxt_shard_path(dir, i, path, sizeof path);
        rc = write_shard(path, p, i, n_shards, rows[i], first_key, mel);
        first_key += rows[i];
    }
    free(mel);
    return rc;
}

int rmxt_poke_mel(const char *shard_path, int row, int bin, int frame, float value) {
    hid_t f = H5Fopen(shard_path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = f >= 0 ? H5Dopen2(f, "mel", H5P_DEFAULT) : -1;
    hid_t fspace = ds >= 0 ? H5Dget_space(ds) : -1;
    hsize_t at[3] = {(hsize_t)row, (hsize_t)bin, (hsize_t)frame}, one[3] = {1, 1, 1};
    hid_t mspace = H5Screate_simple(1, one, NULL);
    herr_t rc = -1;
    if (fspace >= 0 && H5Sselect_hyperslab(fspace, H5S_SELECT_SET, at, NULL, one, NULL) >= 0)
        rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, &value);
    H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return rc < 0 ? -1 : 0;
}

int rmxt_flip_file_bit(const char *path, long offset, int bit) {
    FILE *f = fopen(path, "r+b");
    if (!f) return -1;
    int c = fseek(f, offset, SEEK_SET) == 0 ? fgetc(f) : EOF;
    int rc = -1;
    if (c != EOF && fseek(f, offset, SEEK_SET) == 0 && fputc(c ^ (1 << bit), f) != EOF) rc = 0;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

/* File offset and stored size of /mel row `row`'s chunk. */
static int chunk_location(const char *shard_path, int row, haddr_t *addr, hsize_t *size) {
    hid_t f = H5Fopen(shard_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = f >= 0 ? H5Dopen2(f, "mel", H5P_DEFAULT) : -1;
    hsize_t at[3] = {(hsize_t)row, 0, 0};
    unsigned mask = 0;
    *addr = HADDR_UNDEF;
    *size = 0;
    herr_t rc = ds >= 0 ? H5Dget_chunk_info_by_coord(ds, at, &mask, addr, size) : -1;
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return rc < 0 || *addr == HADDR_UNDEF ? -1 : 0;
}

int rmxt_flip_chunk_bit(const char *shard_path, int row, size_t byte, int bit) {
    haddr_t addr;
    hsize_t size;
    if (chunk_location(shard_path, row, &addr, &size) || byte >= size) return -1;
    return rmxt_flip_file_bit(shard_path, (long)(addr + byte), bit);
}

int rmxt_mel_chunk_span(const char *shard_path, long *start, long *end, int *rows) {
    hid_t f = H5Fopen(shard_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = f >= 0 ? H5Dopen2(f, "mel", H5P_DEFAULT) : -1;
    hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
    hsize_t dims[3] = {0, 0, 0};
    if (space >= 0) H5Sget_simple_extent_dims(space, dims, NULL);
    if (space >= 0) H5Sclose(space);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    if (ds < 0) return -1;
    *rows = (int)dims[0];
    *start = -1;
    *end = -1;
    for (int r = 0; r < *rows; r++) {
        haddr_t addr;
        hsize_t size;
        if (chunk_location(shard_path, r, &addr, &size)) return -1;
        if (*start < 0 || (long)addr < *start) *start = (long)addr;
        if ((long)(addr + size) > *end) *end = (long)(addr + size);
    }
    return 0;
}

/* Rewrites dataset `name` with the same type, shape and chunking but no filters. */
static int rewrite_unfiltered(hid_t f, const char *name) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t type = H5Dget_type(ds), space = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    char *buf = malloc((size_t)(n > 0 ? n : 1) * H5Tget_size(type));
    int rc = buf && (n == 0 || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) ? 0 : -1;
    H5Dclose(ds);
    if (!rc && H5Pget_layout(dcpl) == H5D_CHUNKED) rc = H5Premove_filter(dcpl, H5Z_FILTER_ALL) < 0 ? -1 : 0;
    if (!rc) rc = H5Ldelete(f, name, H5P_DEFAULT) < 0 ? -1 : 0;
    hid_t out = rc ? -1 : H5Dcreate2(f, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (out < 0 || (n > 0 && H5Dwrite(out, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) rc = -1;
    if (out >= 0) H5Dclose(out);
    free(buf);
    H5Tclose(type);
    H5Sclose(space);
    H5Pclose(dcpl);
    return rc;
}

int rmxt_strip_checksums(const char *shard_path, int version) {
    hid_t f = H5Fopen(shard_path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return -1;
    const char *names[] = {"mel", "genre", "source", "offset", "sources"};
    int rc = 0;
    for (int i = 0; i < 5 && !rc; i++) rc = rewrite_unfiltered(f, names[i]);
    hid_t attr = rc ? -1 : H5Aopen(f, "format_version", H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT, &version) < 0) rc = -1;
    if (attr >= 0) H5Aclose(attr);
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}
