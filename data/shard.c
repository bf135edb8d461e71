/* Shard writer: one HDF5 file of log-mel segments, laid out as data/FORMAT.md describes.
 *
 * Determinism: the same segments in the same order give a byte-identical file. HDF5 would otherwise
 * stamp object modification times and pick on-disk structures by library default, so every object
 * is created with time tracking off, the file format is pinned to the HDF5 1.8 structures (readable
 * by every HDF5 since 1.8, and unchanged when a newer library moves its defaults), and objects are
 * created in a fixed order: /mel while appending, then /genre, /source, /offset, /sources and the
 * root attributes at close. */
#include "data/shard.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/h5lock.h"
#include "util/fsutil.h"
#include "util/log.h"

#define PATH_CAP 4096

const rmx_mel_field rmx_mel_fields[] = {
    {"sample_rate", RMX_FIELD_INT, offsetof(rmx_mel_params, sample_rate)},
    {"n_fft", RMX_FIELD_INT, offsetof(rmx_mel_params, n_fft)},
    {"win_length", RMX_FIELD_INT, offsetof(rmx_mel_params, win_length)},
    {"hop_length", RMX_FIELD_INT, offsetof(rmx_mel_params, hop_length)},
    {"n_mels", RMX_FIELD_INT, offsetof(rmx_mel_params, n_mels)},
    {"fmin", RMX_FIELD_FLOAT, offsetof(rmx_mel_params, fmin)},
    {"fmax", RMX_FIELD_FLOAT, offsetof(rmx_mel_params, fmax)},
    {"log_floor", RMX_FIELD_FLOAT, offsetof(rmx_mel_params, log_floor)},
    {"norm_mean", RMX_FIELD_FLOAT, offsetof(rmx_mel_params, norm_mean)},
    {"norm_std", RMX_FIELD_FLOAT, offsetof(rmx_mel_params, norm_std)},
    {"segment_frames", RMX_FIELD_INT, offsetof(rmx_mel_params, segment_frames)},
};
const int rmx_mel_field_count = (int)(sizeof rmx_mel_fields / sizeof rmx_mel_fields[0]);

static int field_int(const rmx_mel_field *f, const rmx_mel_params *p) {
    return *(const int *)((const char *)p + f->offset);
}

static float field_float(const rmx_mel_field *f, const rmx_mel_params *p) {
    return *(const float *)((const char *)p + f->offset);
}

void rmx_mel_field_format(const rmx_mel_field *f, const rmx_mel_params *p, char *out, size_t outlen) {
    if (f->kind == RMX_FIELD_INT)
        snprintf(out, outlen, "%d", field_int(f, p));
    else
        snprintf(out, outlen, "%.9g", (double)field_float(f, p));
}

void rmx_shard_filename(int shard_index, char *out, size_t outlen) {
    snprintf(out, outlen, "shard-%05d.h5", shard_index);
}

/* ---- parameter checks, shared by the writer and the reader ---- */

static int validate_sizes(const rmx_mel_params *p, const char *where, char *err, size_t errlen) {
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        if (f->kind == RMX_FIELD_INT && field_int(f, p) <= 0)
            return rmx_seterr(err, errlen, "%s: attribute '%s' is %d, expected > 0", where, f->name,
                              field_int(f, p));
        if (f->kind == RMX_FIELD_FLOAT && !isfinite(field_float(f, p)))
            return rmx_seterr(err, errlen, "%s: attribute '%s' is not finite", where, f->name);
    }
    if (p->win_length > p->n_fft)
        return rmx_seterr(err, errlen, "%s: attribute 'win_length' is %d, larger than n_fft %d", where,
                          p->win_length, p->n_fft);
    if (p->fmin < 0 || p->fmax <= p->fmin)
        return rmx_seterr(err, errlen, "%s: attributes 'fmin' %g and 'fmax' %g do not make a range",
                          where, (double)p->fmin, (double)p->fmax);
    if (p->log_floor <= 0)
        return rmx_seterr(err, errlen, "%s: attribute 'log_floor' is %g, expected > 0", where,
                          (double)p->log_floor);
    if (p->norm_std <= 0)
        return rmx_seterr(err, errlen, "%s: attribute 'norm_std' is %g, expected > 0", where,
                          (double)p->norm_std);
    return 0;
}

static int validate_genres(const rmx_mel_params *p, const char *where, char *err, size_t errlen) {
    if (p->n_genres < 1 || p->n_genres > RMX_MAX_GENRES)
        return rmx_seterr(err, errlen, "%s: attribute 'n_genres' is %d, expected 1..%d", where,
                          p->n_genres, RMX_MAX_GENRES);
    for (int g = 0; g < p->n_genres; g++) {
        const char *name = p->genre_names[g];
        size_t len = strnlen(name, RMX_GENRE_NAME_MAX);
        if (len == 0 || len >= RMX_GENRE_NAME_MAX)
            return rmx_seterr(err, errlen, "%s: genre_names[%d] is empty or longer than %d bytes",
                              where, g, RMX_GENRE_NAME_MAX - 1);
        for (int h = 0; h < g; h++)
            if (strcmp(p->genre_names[h], name) == 0)
                return rmx_seterr(err, errlen, "%s: genre '%s' appears twice in genre_names", where,
                                  name);
    }
    return 0;
}

int rmx_mel_params_validate(const rmx_mel_params *p, const char *where, char *err, size_t errlen) {
    if (validate_sizes(p, where, err, errlen)) return -1;
    return validate_genres(p, where, err, errlen);
}

static int compare_genres(const rmx_mel_params *a, const char *a_name, const rmx_mel_params *b,
                          const char *b_name, char *err, size_t errlen) {
    if (a->n_genres != b->n_genres)
        return rmx_seterr(err, errlen, "%s: attribute 'n_genres' is %d but %s has %d", a_name,
                          a->n_genres, b_name, b->n_genres);
    for (int g = 0; g < a->n_genres && g < RMX_MAX_GENRES; g++)
        if (strncmp(a->genre_names[g], b->genre_names[g], RMX_GENRE_NAME_MAX) != 0)
            return rmx_seterr(err, errlen, "%s: attribute 'genre_names'[%d] is '%s' but %s has '%s'",
                              a_name, g, a->genre_names[g], b_name, b->genre_names[g]);
    return 0;
}

int rmx_mel_params_compare(const rmx_mel_params *a, const char *a_name, const rmx_mel_params *b,
                           const char *b_name, char *err, size_t errlen) {
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        /* Bitwise for floats: the normalisation is computed once per dataset and copied into every
         * shard, so any difference at all means the shards came from different runs. */
        int same = f->kind == RMX_FIELD_INT
                       ? field_int(f, a) == field_int(f, b)
                       : memcmp((const char *)a + f->offset, (const char *)b + f->offset, sizeof(float)) == 0;
        if (same) continue;
        char va[64], vb[64];
        rmx_mel_field_format(f, a, va, sizeof va);
        rmx_mel_field_format(f, b, vb, sizeof vb);
        return rmx_seterr(err, errlen, "%s: attribute '%s' is %s but %s has %s", a_name, f->name, va,
                          b_name, vb);
    }
    return compare_genres(a, a_name, b, b_name, err, errlen);
}

/* ---- the writer ---- */

struct rmx_shard_writer {
    char final_path[PATH_CAP];
    char tmp_path[PATH_CAP];
    rmx_mel_params params;
    int shard_index, shard_count;
    hid_t file, mel;
    int64_t n, cap;       /* segments written, capacity of the per-segment arrays */
    int32_t *genre;       /* per segment */
    int32_t *source;      /* per segment: index into sources */
    int64_t *offset;      /* per segment: first frame in the source */
    char **sources;       /* distinct source paths in order of first appearance */
    int32_t n_sources, cap_sources;
};

/* Creation property list for any object (dataset, group, file root) with time stamps off. */
static hid_t untimed_plist(hid_t cls) {
    hid_t pl = H5Pcreate(cls);
    if (pl >= 0 && H5Pset_obj_track_times(pl, 0) < 0) {
        H5Pclose(pl);
        return -1;
    }
    return pl;
}

static hid_t create_file(const char *tmp_path) {
    hid_t fcpl = untimed_plist(H5P_FILE_CREATE);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t file = -1;
    /* The 1.10 file format: besides the superblock and object headers (checksummed since 1.8), the
     * chunk index of /mel is an extensible array with checksums instead of a version-1 B-tree
     * without, so damage to a shard's metadata is caught by HDF5 as well (fuzz finding F1 was a
     * chunk size in such a B-tree). Readable by HDF5 1.10 and later (h5py included). */
    if (fcpl >= 0 && fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0)
        file = H5Fcreate(tmp_path, H5F_ACC_TRUNC, fcpl, fapl);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    return file;
}

/* /mel [0, M, T], extendible along N, one segment per chunk so a sample is one contiguous read, and
 * a Fletcher32 checksum per chunk, so damage to one segment is caught when it is read and confined
 * to that segment. */
static hid_t create_mel(hid_t file, const rmx_mel_params *p) {
    hsize_t dims[3] = {0, (hsize_t)p->n_mels, (hsize_t)p->segment_frames};
    hsize_t maxdims[3] = {H5S_UNLIMITED, dims[1], dims[2]};
    hsize_t chunk[3] = {1, dims[1], dims[2]};
    hid_t space = H5Screate_simple(3, dims, maxdims);
    hid_t dcpl = untimed_plist(H5P_DATASET_CREATE);
    hid_t ds = -1;
    /* Every chunk is written whole, so fill values would only cost a second write. */
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 3, chunk) >= 0 &&
        H5Pset_fletcher32(dcpl) >= 0 && H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0)
        ds = H5Dcreate2(file, "mel", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return ds;
}

static int check_create_args(const char *path, const rmx_mel_params *p, int shard_index,
                             int shard_count, char *err, size_t errlen) {
    if (strlen(path) + 32 >= PATH_CAP) return rmx_seterr(err, errlen, "%s: path too long", path);
    if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count)
        return rmx_seterr(err, errlen, "%s: shard index %d is outside a set of %d shards", path,
                          shard_index, shard_count);
    return rmx_mel_params_validate(p, path, err, errlen);
}

rmx_shard_writer *rmx_shard_create(const char *path, const rmx_mel_params *p, int shard_index,
                                   int shard_count, char *err, size_t errlen) {
    if (check_create_args(path, p, shard_index, shard_count, err, errlen)) return NULL;
    rmx_shard_writer *w = calloc(1, sizeof *w);
    if (!w) {
        rmx_seterr(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    snprintf(w->final_path, sizeof w->final_path, "%s", path);
    rmx_tmp_name(path, w->tmp_path, sizeof w->tmp_path);
    w->params = *p;
    w->shard_index = shard_index;
    w->shard_count = shard_count;
    w->mel = -1;
    rmx_h5_lock();
    w->file = create_file(w->tmp_path);
    if (w->file >= 0) w->mel = create_mel(w->file, p);
    char detail[256] = "";
    if (w->mel < 0) rmx_h5_error_detail(detail, sizeof detail);
    rmx_h5_unlock();
    if (w->mel < 0) {
        rmx_seterr(err, errlen, "%s: cannot create HDF5 file %s: %s", path, w->tmp_path, detail);
        rmx_shard_abort(w);
        return NULL;
    }
    return w;
}

int64_t rmx_shard_length(const rmx_shard_writer *w) { return w->n; }

static int grow_segments(rmx_shard_writer *w) {
    if (w->n < w->cap) return 0;
    int64_t cap = w->cap ? 2 * w->cap : 256;
    int32_t *g = realloc(w->genre, (size_t)cap * sizeof *g);
    if (g) w->genre = g;
    int32_t *s = realloc(w->source, (size_t)cap * sizeof *s);
    if (s) w->source = s;
    int64_t *o = realloc(w->offset, (size_t)cap * sizeof *o);
    if (o) w->offset = o;
    if (!g || !s || !o) return -1;
    w->cap = cap;
    return 0;
}

/* Index of `source` in the shard's list, adding it when new. Segments of one file arrive together,
 * so the search starts from the most recent entry and almost always stops there. */
static int32_t source_id(rmx_shard_writer *w, const char *source) {
    for (int32_t i = w->n_sources - 1; i >= 0; i--)
        if (strcmp(w->sources[i], source) == 0) return i;
    if (w->n_sources == w->cap_sources) {
        int32_t cap = w->cap_sources ? 2 * w->cap_sources : 64;
        char **s = realloc(w->sources, (size_t)cap * sizeof *s);
        if (!s) return -1;
        w->sources = s;
        w->cap_sources = cap;
    }
    char *copy = strdup(source);
    if (!copy) return -1;
    w->sources[w->n_sources] = copy;
    return w->n_sources++;
}

static int first_non_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 1;
    return 0;
}

static herr_t write_mel_row(hid_t mel, int64_t row, const rmx_mel_params *p, const float *data) {
    hsize_t dims[3] = {(hsize_t)row + 1, (hsize_t)p->n_mels, (hsize_t)p->segment_frames};
    hsize_t start[3] = {(hsize_t)row, 0, 0};
    hsize_t count[3] = {1, dims[1], dims[2]};
    if (H5Dset_extent(mel, dims) < 0) return -1;
    hid_t fspace = H5Dget_space(mel);
    hid_t mspace = H5Screate_simple(3, count, NULL);
    herr_t rc = -1;
    if (fspace >= 0 && mspace >= 0 &&
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
        rc = H5Dwrite(mel, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, data);
    if (fspace >= 0) H5Sclose(fspace);
    if (mspace >= 0) H5Sclose(mspace);
    return rc;
}

int rmx_shard_append(rmx_shard_writer *w, const float *mel, int32_t genre, const char *source,
                     int64_t offset, char *err, size_t errlen) {
    const rmx_mel_params *p = &w->params;
    if (genre < 0 || genre >= p->n_genres)
        return rmx_seterr(err, errlen, "%s: segment %lld from %s has genre %d, outside [0, %d)",
                          w->final_path, (long long)w->n, source, (int)genre, p->n_genres);
    if (first_non_finite(mel, (size_t)p->n_mels * (size_t)p->segment_frames))
        return rmx_seterr(err, errlen, "%s: segment %lld from %s contains a non-finite value",
                          w->final_path, (long long)w->n, source);
    if (w->n >= INT32_MAX || grow_segments(w) < 0)
        return rmx_seterr(err, errlen, "%s: out of memory at segment %lld", w->final_path,
                          (long long)w->n);
    int32_t sid = source_id(w, source);
    if (sid < 0) return rmx_seterr(err, errlen, "%s: out of memory", w->final_path);
    rmx_h5_lock();
    herr_t rc = write_mel_row(w->mel, w->n, p, mel);
    char detail[256] = "";
    if (rc < 0) rmx_h5_error_detail(detail, sizeof detail);
    rmx_h5_unlock();
    if (rc < 0)
        return rmx_seterr(err, errlen, "%s: cannot write segment %lld: %s", w->final_path,
                          (long long)w->n, detail);
    w->genre[w->n] = genre;
    w->source[w->n] = sid;
    w->offset[w->n] = offset;
    w->n++;
    return 0;
}

/* ---- closing: the small datasets and the attributes ---- */

/* Entries per chunk of the per-segment datasets: 16 KiB of int32, read whole when a row is read. */
#define CHUNK_1D 4096

/* A 1-D dataset, chunked with a Fletcher32 checksum per chunk (an empty one stays contiguous: a
 * chunk cannot be larger than a fixed-size dataset, and there is nothing to protect). */
static herr_t write_1d(hid_t file, const char *name, hid_t file_type, hid_t mem_type, hsize_t n,
                       const void *data) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t dcpl = untimed_plist(H5P_DATASET_CREATE);
    hid_t ds = -1;
    herr_t rc = -1;
    hsize_t chunk = n < CHUNK_1D ? n : CHUNK_1D;
    if (dcpl >= 0 && n > 0 && (H5Pset_chunk(dcpl, 1, &chunk) < 0 || H5Pset_fletcher32(dcpl) < 0)) {
        H5Pclose(dcpl);
        dcpl = -1;
    }
    if (space >= 0 && dcpl >= 0) ds = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds >= 0) rc = n ? H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

/* Fixed-length UTF-8 strings, NUL-terminated, width = longest + 1 (at least 1 byte). */
static hid_t fixed_string_type(char *const *strings, size_t n) {
    size_t width = 1;
    for (size_t i = 0; i < n; i++)
        if (strlen(strings[i]) + 1 > width) width = strlen(strings[i]) + 1;
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, width) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Packs strings into one zeroed block of n * width bytes, the memory layout of a fixed string array. */
static char *pack_strings(char *const *strings, size_t n, size_t width) {
    char *block = calloc(n ? n : 1, width);
    if (!block) return NULL;
    for (size_t i = 0; i < n; i++) memcpy(block + i * width, strings[i], strlen(strings[i]));
    return block;
}

static herr_t write_string_dataset(hid_t file, const char *name, char *const *strings, size_t n) {
    hid_t t = fixed_string_type(strings, n);
    if (t < 0) return -1;
    char *block = pack_strings(strings, n, H5Tget_size(t));
    herr_t rc = block ? write_1d(file, name, t, t, n, block) : -1;
    free(block);
    H5Tclose(t);
    return rc;
}

static herr_t write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, hsize_t n,
                         int scalar, const void *data) {
    hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t attr = -1;
    herr_t rc = -1;
    if (space >= 0) attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0) rc = H5Awrite(attr, mem_type, data);
    if (attr >= 0 && H5Aclose(attr) < 0) rc = -1;
    if (space >= 0) H5Sclose(space);
    return rc;
}

static herr_t write_int_attr(hid_t obj, const char *name, int value) {
    return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, 1, 1, &value);
}

static herr_t write_string_attr(hid_t obj, const char *name, char *const *strings, size_t n,
                                int scalar) {
    hid_t t = fixed_string_type(strings, n);
    if (t < 0) return -1;
    char *block = pack_strings(strings, n, H5Tget_size(t));
    herr_t rc = block ? write_attr(obj, name, t, t, n, scalar, block) : -1;
    free(block);
    H5Tclose(t);
    return rc;
}

static herr_t write_param_attrs(hid_t file, const rmx_mel_params *p) {
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        herr_t rc;
        if (f->kind == RMX_FIELD_INT) {
            rc = write_int_attr(file, f->name, field_int(f, p));
        } else {
            float v = field_float(f, p);
            rc = write_attr(file, f->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, 1, &v);
        }
        if (rc < 0) return -1;
    }
    return 0;
}

static herr_t write_root_attrs(const rmx_shard_writer *w) {
    char *format = RMX_SHARD_FORMAT;
    char *names[RMX_MAX_GENRES];
    for (int g = 0; g < w->params.n_genres; g++) names[g] = (char *)w->params.genre_names[g];
    if (write_string_attr(w->file, "format", &format, 1, 1) < 0) return -1;
    if (write_int_attr(w->file, "format_version", RMX_SHARD_VERSION) < 0) return -1;
    if (write_param_attrs(w->file, &w->params) < 0) return -1;
    if (write_int_attr(w->file, "n_genres", w->params.n_genres) < 0) return -1;
    if (write_string_attr(w->file, "genre_names", names, (size_t)w->params.n_genres, 0) < 0) return -1;
    if (write_int_attr(w->file, "shard_index", w->shard_index) < 0) return -1;
    return write_int_attr(w->file, "shard_count", w->shard_count);
}

static herr_t finish_file(rmx_shard_writer *w) {
    hsize_t n = (hsize_t)w->n;
    if (write_1d(w->file, "genre", H5T_STD_I32LE, H5T_NATIVE_INT32, n, w->genre) < 0) return -1;
    if (write_1d(w->file, "source", H5T_STD_I32LE, H5T_NATIVE_INT32, n, w->source) < 0) return -1;
    if (write_1d(w->file, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, n, w->offset) < 0) return -1;
    if (write_string_dataset(w->file, "sources", w->sources, (size_t)w->n_sources) < 0) return -1;
    if (write_root_attrs(w) < 0) return -1;
    herr_t rc = H5Dclose(w->mel);
    w->mel = -1;
    if (H5Fclose(w->file) < 0) rc = -1;
    w->file = -1;
    return rc;
}

static void free_writer(rmx_shard_writer *w) {
    for (int32_t i = 0; i < w->n_sources; i++) free(w->sources[i]);
    free(w->sources);
    free(w->genre);
    free(w->source);
    free(w->offset);
    free(w);
}

int rmx_shard_close(rmx_shard_writer *w, char *err, size_t errlen) {
    rmx_h5_lock();
    herr_t rc = finish_file(w);
    char detail[256] = "";
    if (rc < 0) rmx_h5_error_detail(detail, sizeof detail);
    rmx_h5_unlock();
    if (rc < 0) {
        rmx_seterr(err, errlen, "%s: cannot finish HDF5 file: %s", w->final_path, detail);
        rmx_shard_abort(w);
        return -1;
    }
    if (rmx_commit_file(w->tmp_path, w->final_path, err, errlen) < 0) {
        rmx_shard_abort(w);
        return -1;
    }
    free_writer(w);
    return 0;
}

void rmx_shard_abort(rmx_shard_writer *w) {
    if (!w) return;
    rmx_h5_lock();
    if (w->mel >= 0) H5Dclose(w->mel);
    if (w->file >= 0) H5Fclose(w->file);
    rmx_h5_unlock();
    unlink(w->tmp_path);
    free_writer(w);
}
