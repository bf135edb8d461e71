/* Dataset reader: opens, checks and reads the shards of one split (layout in data/FORMAT.md). */
#include "data/dataset.h"

#include <fcntl.h>
#include <glob.h>
#include <hdf5.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5lock.h"
#include "data/h5probe.h"
#include "util/fsutil.h"
#include "util/log.h"

#define PATH_CAP 4096

typedef struct {
    char path[PATH_CAP];
    hid_t file, mel, source, offset, sources;
    int64_t rows;  /* segments in this shard */
    int64_t first; /* dataset index of its row 0 */
    int32_t *genre;
    int shard_index, shard_count;
    int version;       /* format_version: 1 (no checksums) or 2 */
    int direct_chunks; /* rows can be read as raw chunks (see read_mel_row) */
    int fd;            /* the file's descriptor when HDF5 uses plain POSIX I/O, else -1 */
    rmx_mel_params params;
} shard_file;

struct rmx_dataset {
    char spec[PATH_CAP];
    shard_file *shards;
    int n_shards;
    int64_t total;
    rmx_mel_params params;
    rmx_on_corrupt on_corrupt;
    uint8_t *damaged;  /* [total]: 1 once a segment was found damaged (skip mode); atomics */
    int64_t n_damaged; /* distinct damaged segments found so far; atomic */
};

/* ---- HDF5 helpers; all called with the HDF5 lock held ---- */

/* "float32", "int64", "uint8", "string", ...: how a user would name the type (numpy style). */
static void describe_type(hid_t t, char *out, size_t outlen) {
    size_t bits = H5Tget_size(t) * 8;
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
        snprintf(out, outlen, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
        break;
    case H5T_FLOAT: snprintf(out, outlen, "float%zu", bits); break;
    case H5T_STRING: snprintf(out, outlen, "string"); break;
    case H5T_COMPOUND: snprintf(out, outlen, "compound"); break;
    case H5T_ENUM: snprintf(out, outlen, "enum"); break;
    case H5T_ARRAY: snprintf(out, outlen, "array"); break;
    default: snprintf(out, outlen, "an unsupported type"); break;
    }
}

/* Opens dataset /name and checks its type (as describe_type names it) and rank; dims gets the shape. */
static hid_t open_dataset(hid_t file, const char *path, const char *name, const char *want_type,
                          int want_rank, hsize_t *dims, char *err, size_t errlen) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        rmx_seterr(err, errlen, "%s: dataset /%s is missing", path, name);
        return -1;
    }
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) {
        rmx_seterr(err, errlen, "%s: /%s cannot be opened as a dataset", path, name);
        return -1;
    }
    hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
    char have[32] = "?";
    describe_type(type, have, sizeof have);
    int rank = H5Sget_simple_extent_ndims(space);
    int ok = strcmp(have, want_type) == 0 && rank == want_rank;
    if (strcmp(have, want_type) != 0)
        rmx_seterr(err, errlen, "%s: /%s has type %s, expected %s", path, name, have, want_type);
    else if (rank != want_rank)
        rmx_seterr(err, errlen, "%s: /%s has rank %d, expected %d", path, name, rank, want_rank);
    else
        H5Sget_simple_extent_dims(space, dims, NULL);
    H5Tclose(type);
    H5Sclose(space);
    /* A damaged chunk index can claim gigabytes that HDF5 would allocate before reading (found
     * by fuzz_shard): more stored bytes than the file holds is damage. */
    unsigned long long stored, file_size;
    if (ok && rmx_h5_storage_exceeds_file(file, ds, &stored, &file_size)) {
        rmx_seterr(err, errlen, "%s: /%s claims %llu bytes of data but the file holds %llu: the shard is damaged", path,
                   name, stored, file_size);
        ok = 0;
    }
    if (!ok) {
        H5Dclose(ds);
        return -1;
    }
    return ds;
}

/* Opens attribute `name` of the root group and checks its class and that it holds `max_n` values
 * or fewer (1 for a scalar); *n gets the element count. */
static hid_t open_attr(hid_t file, const char *path, const char *name, H5T_class_t want,
                       const char *want_name, hsize_t max_n, hsize_t *n, char *err, size_t errlen) {
    if (H5Aexists(file, name) <= 0) {
        rmx_seterr(err, errlen, "%s: attribute '%s' is missing", path, name);
        return -1;
    }
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    if (attr < 0) {
        rmx_seterr(err, errlen, "%s: attribute '%s' cannot be opened", path, name);
        return -1;
    }
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    char have[32] = "?";
    describe_type(type, have, sizeof have);
    hssize_t count = H5Sget_simple_extent_npoints(space);
    int type_ok = H5Tget_class(type) == want;
    H5Tclose(type);
    H5Sclose(space);
    if (type_ok && count >= 1 && (hsize_t)count <= max_n) {
        *n = (hsize_t)count;
        return attr;
    }
    if (!type_ok)
        rmx_seterr(err, errlen, "%s: attribute '%s' has type %s, expected %s", path, name, have, want_name);
    else
        rmx_seterr(err, errlen, "%s: attribute '%s' has %lld values, expected 1..%llu", path, name,
                   (long long)count, (unsigned long long)max_n);
    H5Aclose(attr);
    return -1;
}

static int read_int_attr(hid_t file, const char *path, const char *name, int *out, char *err,
                         size_t errlen) {
    hsize_t n;
    hid_t attr = open_attr(file, path, name, H5T_INTEGER, "an integer", 1, &n, err, errlen);
    if (attr < 0) return -1;
    herr_t rc = H5Aread(attr, H5T_NATIVE_INT, out);
    H5Aclose(attr);
    return rc < 0 ? rmx_seterr(err, errlen, "%s: attribute '%s' cannot be read as int", path, name) : 0;
}

static int read_float_attr(hid_t file, const char *path, const char *name, float *out, char *err,
                           size_t errlen) {
    hsize_t n;
    hid_t attr = open_attr(file, path, name, H5T_FLOAT, "a float", 1, &n, err, errlen);
    if (attr < 0) return -1;
    herr_t rc = H5Aread(attr, H5T_NATIVE_FLOAT, out);
    H5Aclose(attr);
    return rc < 0 ? rmx_seterr(err, errlen, "%s: attribute '%s' cannot be read as float", path, name) : 0;
}

/* Reads n strings of an HDF5 string attribute or dataset selection into out[i] (`cap` bytes each),
 * whether the file stores them fixed-length or variable-length. `read` does the H5Aread or H5Dread
 * with the memory type it is given. Returns -1 on a read error or when a string does not fit. */
typedef herr_t (*string_reader)(hid_t obj, hid_t mem_type, void *buf, void *ctx);

static int copy_variable_strings(hid_t mem, size_t n, char *out, size_t cap, string_reader read,
                                 hid_t obj, void *ctx) {
    char **vl = calloc(n, sizeof *vl);
    int rc = vl && H5Tset_size(mem, H5T_VARIABLE) >= 0 && read(obj, mem, vl, ctx) >= 0 ? 0 : -1;
    for (size_t i = 0; vl && rc == 0 && i < n; i++)
        if (!vl[i] || strlen(vl[i]) >= cap) rc = -1;
        else snprintf(out + i * cap, cap, "%s", vl[i]);
    for (size_t i = 0; vl && i < n; i++) H5free_memory(vl[i]);
    free(vl);
    return rc;
}

static int copy_fixed_strings(hid_t mem, size_t file_width, size_t n, char *out, size_t cap,
                              string_reader read, hid_t obj, void *ctx) {
    /* One byte wider than the file's strings, so a NULLPAD string of full width stays terminated. */
    size_t width = file_width + 1;
    char *block = calloc(n, width);
    int rc = block && H5Tset_size(mem, width) >= 0 && H5Tset_strpad(mem, H5T_STR_NULLTERM) >= 0 &&
                     read(obj, mem, block, ctx) >= 0 ? 0 : -1;
    for (size_t i = 0; block && rc == 0 && i < n; i++)
        if (strlen(block + i * width) >= cap) rc = -1;
        else snprintf(out + i * cap, cap, "%s", block + i * width);
    free(block);
    return rc;
}

static int copy_strings(hid_t file_type, size_t n, char *out, size_t cap, string_reader read,
                        hid_t obj, void *ctx) {
    hid_t mem = H5Tcopy(H5T_C_S1);
    if (mem < 0) return -1;
    /* HDF5 does not convert between character sets: read in the file's own. */
    H5Tset_cset(mem, H5Tget_cset(file_type));
    int rc = H5Tis_variable_str(file_type) > 0
                 ? copy_variable_strings(mem, n, out, cap, read, obj, ctx)
                 : copy_fixed_strings(mem, H5Tget_size(file_type), n, out, cap, read, obj, ctx);
    H5Tclose(mem);
    return rc;
}

static herr_t attr_reader(hid_t attr, hid_t mem_type, void *buf, void *ctx) {
    (void)ctx;
    return H5Aread(attr, mem_type, buf);
}

/* Reads a string attribute of at most max_n values into out[i] (`cap` bytes each). */
static int read_string_attr(hid_t file, const char *path, const char *name, char *out, size_t cap,
                            int max_n, int *n_out, char *err, size_t errlen) {
    hsize_t n;
    hid_t attr = open_attr(file, path, name, H5T_STRING, "string", (hsize_t)max_n, &n, err, errlen);
    if (attr < 0) return -1;
    hid_t type = H5Aget_type(attr);
    int rc = copy_strings(type, (size_t)n, out, cap, attr_reader, attr, NULL);
    H5Tclose(type);
    H5Aclose(attr);
    if (rc < 0)
        return rmx_seterr(err, errlen,
                          "%s: attribute '%s' cannot be read (or a value is longer than %zu bytes)", path,
                          name, cap - 1);
    *n_out = (int)n;
    return 0;
}

/* ---- one shard: attributes ---- */

static int read_format(shard_file *s, char *err, size_t errlen) {
    char format[64];
    int n, version;
    if (read_string_attr(s->file, s->path, "format", format, sizeof format, 1, &n, err, errlen)) return -1;
    if (strcmp(format, RMX_SHARD_FORMAT) != 0)
        return rmx_seterr(err, errlen,
                          "%s: attribute 'format' is '%s', expected '%s' (not a Remixer dataset shard)",
                          s->path, format, RMX_SHARD_FORMAT);
    if (read_int_attr(s->file, s->path, "format_version", &version, err, errlen)) return -1;
    if (version < RMX_SHARD_VERSION_MIN || version > RMX_SHARD_VERSION)
        return rmx_seterr(err, errlen, "%s: attribute 'format_version' is %d, this build reads versions %d..%d",
                          s->path, version, RMX_SHARD_VERSION_MIN, RMX_SHARD_VERSION);
    s->version = version;
    return 0;
}

static int read_param_fields(shard_file *s, char *err, size_t errlen) {
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        void *dst = (char *)&s->params + f->offset;
        int rc = f->kind == RMX_FIELD_INT ? read_int_attr(s->file, s->path, f->name, dst, err, errlen)
                                          : read_float_attr(s->file, s->path, f->name, dst, err, errlen);
        if (rc) return -1;
    }
    return 0;
}

static int read_genre_names(shard_file *s, char *err, size_t errlen) {
    rmx_mel_params *p = &s->params;
    if (read_int_attr(s->file, s->path, "n_genres", &p->n_genres, err, errlen)) return -1;
    if (p->n_genres < 1 || p->n_genres > RMX_MAX_GENRES)
        return rmx_seterr(err, errlen, "%s: attribute 'n_genres' is %d, expected 1..%d", s->path,
                          p->n_genres, RMX_MAX_GENRES);
    int n;
    if (read_string_attr(s->file, s->path, "genre_names", &p->genre_names[0][0], RMX_GENRE_NAME_MAX,
                         RMX_MAX_GENRES, &n, err, errlen))
        return -1;
    if (n != p->n_genres)
        return rmx_seterr(err, errlen, "%s: attribute 'genre_names' has %d names but 'n_genres' is %d",
                          s->path, n, p->n_genres);
    return 0;
}

static int read_shard_attrs(shard_file *s, char *err, size_t errlen) {
    if (read_format(s, err, errlen)) return -1;
    if (read_param_fields(s, err, errlen)) return -1;
    if (read_genre_names(s, err, errlen)) return -1;
    if (read_int_attr(s->file, s->path, "shard_index", &s->shard_index, err, errlen)) return -1;
    if (read_int_attr(s->file, s->path, "shard_count", &s->shard_count, err, errlen)) return -1;
    return rmx_mel_params_validate(&s->params, s->path, err, errlen);
}

/* ---- one shard: datasets ---- */

static int open_mel(shard_file *s, char *err, size_t errlen) {
    hsize_t dims[3];
    s->mel = open_dataset(s->file, s->path, "mel", "float32", 3, dims, err, errlen);
    if (s->mel < 0) return -1;
    if (dims[1] != (hsize_t)s->params.n_mels || dims[2] != (hsize_t)s->params.segment_frames)
        return rmx_seterr(err, errlen,
                          "%s: /mel has shape [%llu, %llu, %llu] but attributes 'n_mels' %d and "
                          "'segment_frames' %d require [N, %d, %d]",
                          s->path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                          (unsigned long long)dims[2], s->params.n_mels, s->params.segment_frames,
                          s->params.n_mels, s->params.segment_frames);
    s->rows = (int64_t)dims[0];
    return 0;
}

/* A row can be read as one raw chunk, skipping HDF5's selection, conversion and chunk cache, when
 * the chunk is exactly one segment, unfiltered, and stored as native floats. */
static int rows_are_raw_chunks(const shard_file *s) {
    hid_t dcpl = H5Dget_create_plist(s->mel), type = H5Dget_type(s->mel);
    hsize_t chunk[3] = {0, 0, 0};
    int ok = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 3, chunk) == 3 &&
             chunk[0] == 1 && chunk[1] == (hsize_t)s->params.n_mels &&
             chunk[2] == (hsize_t)s->params.segment_frames && H5Pget_nfilters(dcpl) == 0 &&
             H5Tequal(type, H5T_NATIVE_FLOAT) > 0;
    H5Pclose(dcpl);
    H5Tclose(type);
    return ok;
}

static int has_fletcher32(hid_t ds) {
    hid_t dcpl = H5Dget_create_plist(ds);
    unsigned flags = 0;
    size_t n = 0;
    int yes = dcpl >= 0 &&
              H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &n, NULL, 0, NULL, NULL) >= 0;
    if (dcpl >= 0) H5Pclose(dcpl);
    return yes;
}

/* Version 2 promises a checksum on every chunk of /mel; a file that claims it without one would
 * let damage through silently. Version 1 files have none: said once per process. */
static int check_checksums(const shard_file *s, char *err, size_t errlen) {
    static int noted;
    if (s->version >= 2 && !has_fletcher32(s->mel))
        return rmx_seterr(err, errlen,
                          "%s: attribute 'format_version' is %d but /mel has no Fletcher32 checksums",
                          s->path, s->version);
    if (s->version < 2 && !__atomic_exchange_n(&noted, 1, __ATOMIC_RELAXED))
        rmx_info("note: %s is a version-%d shard without checksums: damage to its data goes undetected "
                 "(prepare the dataset again to add them)", s->path, s->version);
    return 0;
}

static int open_1d(shard_file *s, const char *name, const char *type, hid_t *ds, char *err, size_t errlen) {
    hsize_t n;
    *ds = open_dataset(s->file, s->path, name, type, 1, &n, err, errlen);
    if (*ds < 0) return -1;
    if ((int64_t)n != s->rows)
        return rmx_seterr(err, errlen, "%s: /%s has %llu entries but /mel has %lld segments", s->path,
                          name, (unsigned long long)n, (long long)s->rows);
    return 0;
}

static int load_genres(shard_file *s, hid_t genre_ds, char *err, size_t errlen) {
    s->genre = malloc((size_t)(s->rows ? s->rows : 1) * sizeof *s->genre);
    if (!s->genre) return rmx_seterr(err, errlen, "%s: out of memory reading /genre", s->path);
    if (s->rows && H5Dread(genre_ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->genre) < 0) {
        char detail[256];
        rmx_h5_error_detail(detail, sizeof detail);
        return rmx_seterr(err, errlen, "%s: /genre cannot be read: %s", s->path, detail);
    }
    for (int64_t i = 0; i < s->rows; i++)
        if (s->genre[i] < 0 || s->genre[i] >= s->params.n_genres)
            return rmx_seterr(err, errlen, "%s: /genre[%lld] is %d, outside [0, %d) (n_genres)", s->path,
                              (long long)i, (int)s->genre[i], s->params.n_genres);
    return 0;
}

static int open_shard_datasets(shard_file *s, char *err, size_t errlen) {
    if (open_mel(s, err, errlen)) return -1;
    if (check_checksums(s, err, errlen)) return -1;
    s->direct_chunks = rows_are_raw_chunks(s);
    hid_t genre_ds;
    if (open_1d(s, "genre", "int32", &genre_ds, err, errlen)) {
        if (genre_ds >= 0) H5Dclose(genre_ds);
        return -1;
    }
    int rc = load_genres(s, genre_ds, err, errlen);
    H5Dclose(genre_ds);
    if (rc) return -1;
    if (open_1d(s, "source", "int32", &s->source, err, errlen)) return -1;
    if (open_1d(s, "offset", "int64", &s->offset, err, errlen)) return -1;
    hsize_t n_sources;
    s->sources = open_dataset(s->file, s->path, "sources", "string", 1, &n_sources, err, errlen);
    return s->sources < 0 ? -1 : 0;
}

/* The file descriptor behind an HDF5 file opened with the default (sec2, POSIX) driver; -1 for
 * any other driver, where read-ahead hints are simply not given. */
static int posix_descriptor(hid_t file) {
    hid_t fapl = H5Fget_access_plist(file);
    void *handle = NULL;
    int fd = -1;
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(file, fapl, &handle) >= 0 && handle)
        fd = *(int *)handle;
    if (fapl >= 0) H5Pclose(fapl);
    return fd;
}

static void close_shard(shard_file *s) {
    hid_t *ids[] = {&s->sources, &s->offset, &s->source, &s->mel};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (*ids[i] >= 0) H5Dclose(*ids[i]);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->genre);
    s->genre = NULL;
    s->file = s->mel = s->source = s->offset = s->sources = -1;
}

static int open_shard(shard_file *s, const char *path, char *err, size_t errlen) {
    snprintf(s->path, sizeof s->path, "%s", path);
    s->file = s->mel = s->source = s->offset = s->sources = -1;
    rmx_h5_lock();
    s->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int rc = 0;
    if (s->file < 0) {
        char detail[256];
        rmx_h5_error_detail(detail, sizeof detail);
        rc = rmx_seterr(err, errlen, "%s: cannot open as HDF5: %s", path, detail);
    }
    if (!rc) rc = read_shard_attrs(s, err, errlen);
    if (!rc) rc = open_shard_datasets(s, err, errlen);
    s->fd = rc ? -1 : posix_descriptor(s->file);
    rmx_h5_unlock();
    return rc;
}

/* ---- the whole split ---- */

static int compare_paths(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shard paths `spec` names, sorted by name (so by shard index). */
static int find_shards(const char *spec, glob_t *found, char *err, size_t errlen) {
    char pattern[PATH_CAP];
    if (rmx_is_dir(spec))
        snprintf(pattern, sizeof pattern, "%s/shard-*.h5", spec);
    else
        snprintf(pattern, sizeof pattern, "%s", spec);
    int rc = glob(pattern, 0, NULL, found);
    if (rc == GLOB_NOMATCH)
        return rmx_seterr(err, errlen, "%s: no shard files found (looked for %s)", spec, pattern);
    if (rc != 0) return rmx_seterr(err, errlen, "%s: cannot list shard files", spec);
    qsort(found->gl_pathv, found->gl_pathc, sizeof *found->gl_pathv, compare_paths);
    return 0;
}

/* How the first shard is named in a mismatch message: its base name when it sits next to the
 * other file (the usual case), its full path otherwise. */
static void reference_name(const char *ref, const char *other, char *out, size_t outlen) {
    char a[PATH_CAP], b[PATH_CAP], c[PATH_CAP];
    snprintf(a, sizeof a, "%s", ref);
    snprintf(b, sizeof b, "%s", other);
    snprintf(c, sizeof c, "%s", ref);
    if (strcmp(dirname(a), dirname(b)) == 0)
        snprintf(out, outlen, "%s", basename(c));
    else
        snprintf(out, outlen, "%s", ref);
}

static int check_shard_set(const rmx_dataset *ds, char *err, size_t errlen) {
    const shard_file *first = &ds->shards[0];
    for (int i = 0; i < ds->n_shards; i++) {
        const shard_file *s = &ds->shards[i];
        char ref[PATH_CAP];
        reference_name(first->path, s->path, ref, sizeof ref);
        if (i > 0 && rmx_mel_params_compare(&s->params, s->path, &first->params, ref, err, errlen))
            return -1;
        if (s->shard_count != ds->n_shards)
            return rmx_seterr(err, errlen, "%s: attribute 'shard_count' is %d but %d shard %s found in %s",
                              s->path, s->shard_count, ds->n_shards,
                              ds->n_shards == 1 ? "file was" : "files were", ds->spec);
        if (s->shard_index != i)
            return rmx_seterr(err, errlen,
                              "%s: attribute 'shard_index' is %d, expected %d "
                              "(its place among the shards of %s sorted by name)",
                              s->path, s->shard_index, i, ds->spec);
    }
    return 0;
}

static int open_all(rmx_dataset *ds, char **paths, int n, char *err, size_t errlen) {
    ds->shards = calloc((size_t)n, sizeof *ds->shards);
    if (!ds->shards) return rmx_seterr(err, errlen, "%s: out of memory", ds->spec);
    for (int i = 0; i < n; i++) {
        ds->n_shards = i + 1; /* so close() releases the partly opened one too */
        if (open_shard(&ds->shards[i], paths[i], err, errlen)) return -1;
        ds->shards[i].first = ds->total;
        ds->total += ds->shards[i].rows;
    }
    if (check_shard_set(ds, err, errlen)) return -1;
    if (ds->total == 0)
        return rmx_seterr(err, errlen, "%s: the dataset is empty (0 segments in %d shard %s)", ds->spec, n,
                          n == 1 ? "file" : "files");
    ds->params = ds->shards[0].params;
    ds->damaged = calloc((size_t)ds->total, 1);
    if (!ds->damaged) return rmx_seterr(err, errlen, "%s: out of memory", ds->spec);
    return 0;
}

rmx_dataset *rmx_dataset_open(const char *spec, char *err, size_t errlen) {
    rmx_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        rmx_seterr(err, errlen, "%s: out of memory", spec);
        return NULL;
    }
    snprintf(ds->spec, sizeof ds->spec, "%s", spec);
    /* "data/train/" and "data/train" name the same folder; keep messages free of "//". */
    for (size_t n = strlen(ds->spec); n > 1 && ds->spec[n - 1] == '/'; n--) ds->spec[n - 1] = 0;
    glob_t found;
    if (find_shards(ds->spec, &found, err, errlen)) {
        free(ds);
        return NULL;
    }
    int rc = open_all(ds, found.gl_pathv, (int)found.gl_pathc, err, errlen);
    globfree(&found);
    if (rc) {
        rmx_dataset_close(ds);
        return NULL;
    }
    return ds;
}

void rmx_dataset_close(rmx_dataset *ds) {
    if (!ds) return;
    rmx_h5_lock();
    for (int i = 0; i < ds->n_shards; i++) close_shard(&ds->shards[i]);
    rmx_h5_unlock();
    free(ds->shards);
    free(ds->damaged);
    free(ds);
}

int64_t rmx_dataset_length(const rmx_dataset *ds) { return ds->total; }
int rmx_dataset_shard_count(const rmx_dataset *ds) { return ds->n_shards; }
const rmx_mel_params *rmx_dataset_params(const rmx_dataset *ds) { return &ds->params; }
const char *rmx_dataset_spec(const rmx_dataset *ds) { return ds->spec; }

size_t rmx_dataset_sample_floats(const rmx_dataset *ds) {
    return (size_t)ds->params.n_mels * (size_t)ds->params.segment_frames;
}

/* ---- reading samples ---- */

/* The shard holding dataset index `index` (binary search over the shards' first indices). */
static shard_file *shard_of(const rmx_dataset *ds, int64_t index) {
    int lo = 0, hi = ds->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ds->shards[mid].first <= index) lo = mid;
        else hi = mid - 1;
    }
    return &ds->shards[lo];
}

static int check_index(const rmx_dataset *ds, int64_t index, char *err, size_t errlen) {
    if (index >= 0 && index < ds->total) return 0;
    return rmx_seterr(err, errlen, "%s: sample index %lld is outside [0, %lld)", ds->spec,
                      (long long)index, (long long)ds->total);
}

static herr_t read_row_selected(hid_t ds, hsize_t row, int rank, hid_t mem_type, void *out) {
    hsize_t start[3] = {row, 0, 0}, count[3] = {1, 1, 1};
    hid_t fspace = H5Dget_space(ds);
    if (fspace < 0) return -1;
    H5Sget_simple_extent_dims(fspace, count, NULL);
    count[0] = 1;
    hid_t mspace = H5Screate_simple(rank, count, NULL);
    herr_t rc = -1;
    if (mspace >= 0 && H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
        rc = H5Dread(ds, mem_type, mspace, fspace, H5P_DEFAULT, out);
    if (mspace >= 0) H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

static herr_t read_mel_row(const shard_file *s, int64_t row, float *mel) {
    if (s->direct_chunks) {
        hsize_t offset[3] = {(hsize_t)row, 0, 0};
        uint32_t filters = 0;
        /* Falls through to the general path if the chunk was never written (a file from another
         * writer that relies on fill values). */
        if (H5Dread_chunk(s->mel, H5P_DEFAULT, offset, &filters, mel) >= 0) return 0;
    }
    return read_row_selected(s->mel, (hsize_t)row, 3, H5T_NATIVE_FLOAT, mel);
}

static int64_t first_non_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (int64_t)i;
    return -1;
}

static int read_provenance(const shard_file *s, int64_t row, char *source, size_t sourcelen,
                           int64_t *offset, char *err, size_t errlen);

/* "shard-00001.h5 segment 5 (sample 37 of data/x/train) from blues/b.wav": where a segment is and
 * where it came from, for messages. Call with the HDF5 lock held. */
static void describe_segment(const rmx_dataset *ds, const shard_file *s, int64_t row, char *out,
                             size_t outlen) {
    char source[PATH_CAP], why[256];
    if (read_provenance(s, row, source, sizeof source, NULL, why, sizeof why))
        snprintf(source, sizeof source, "an unknown source (%s)", why);
    snprintf(out, outlen, "%s segment %lld (sample %lld of %s) from %s", s->path, (long long)row,
             (long long)(s->first + row), ds->spec, source);
}

/* HDF5's reason when a chunk's Fletcher32 checksum does not match its bytes. */
static int is_checksum_failure(const char *detail) { return strstr(detail, "Fletcher32") != NULL; }

enum { ROW_OK, ROW_DAMAGED, ROW_ERROR };

/* Reads one row into mel. ROW_DAMAGED (checksum mismatch, non-finite value: a property of the file,
 * the same on every read and every rank) and ROW_ERROR (anything else, e.g. an I/O error) come with
 * `what` naming the segment and `why` the reason. */
static int read_row(const rmx_dataset *ds, const shard_file *s, int64_t row, float *mel, char *what,
                    size_t whatlen, char *why, size_t whylen) {
    rmx_h5_lock();
    herr_t rc = read_mel_row(s, row, mel);
    int verdict = ROW_OK;
    if (rc < 0) {
        rmx_h5_error_detail(why, whylen);
        verdict = is_checksum_failure(why) ? ROW_DAMAGED : ROW_ERROR;
    } else if (first_non_finite(mel, rmx_dataset_sample_floats(ds)) >= 0) {
        snprintf(why, whylen, "/mel contains a non-finite value");
        verdict = ROW_DAMAGED;
    }
    if (verdict != ROW_OK) describe_segment(ds, s, row, what, whatlen);
    rmx_h5_unlock();
    return verdict;
}

/* Records that dataset index `at` is damaged; 1 the first time (in this process). */
static int mark_damaged(rmx_dataset *ds, int64_t at) {
    if (__atomic_exchange_n(&ds->damaged[at], 1, __ATOMIC_RELAXED)) return 0;
    __atomic_add_fetch(&ds->n_damaged, 1, __ATOMIC_RELAXED);
    return 1;
}

int rmx_dataset_read_resolved(rmx_dataset *ds, int64_t index, float *mel, int32_t *genre,
                              int64_t *used, char *err, size_t errlen) {
    if (check_index(ds, index, err, errlen)) return -1;
    const int skip = ds->on_corrupt == RMX_ON_CORRUPT_SKIP;
    int64_t at = index;
    /* Skip mode: the damaged segment's place goes to the next valid one in dataset order (wrapping),
     * decided by the file's contents alone, so every rank and every run makes the same choice. */
    for (int64_t tries = 0; tries < ds->total; tries++, at = (at + 1) % ds->total) {
        if (mel && skip && __atomic_load_n(&ds->damaged[at], __ATOMIC_RELAXED)) continue;
        const shard_file *s = shard_of(ds, at);
        int64_t row = at - s->first;
        char what[3 * PATH_CAP + 128] = "", why[256] = "";
        int verdict = mel ? read_row(ds, s, row, mel, what, sizeof what, why, sizeof why) : ROW_OK;
        if (verdict == ROW_OK) {
            if (genre) *genre = s->genre[row];
            if (used) *used = at;
            return 0;
        }
        if (verdict == ROW_ERROR)
            return rmx_seterr(err, errlen, "%s: /mel[%lld] cannot be read: %s (%s)", s->path, (long long)row,
                              why, what);
        if (!skip)
            return rmx_seterr(err, errlen,
                              "damaged segment: %s: %s (data.on_corrupt: skip would read the next "
                              "valid segment in its place)",
                              what, why);
        if (mark_damaged(ds, at))
            rmx_warn("skipped damaged segment: %s: %s; the next valid segment is read in its place", what,
                     why);
    }
    return rmx_seterr(err, errlen, "%s: every one of its %lld segments is damaged", ds->spec,
                      (long long)ds->total);
}

int rmx_dataset_read(rmx_dataset *ds, int64_t index, float *mel, int32_t *genre, char *err,
                     size_t errlen) {
    return rmx_dataset_read_resolved(ds, index, mel, genre, NULL, err, errlen);
}

void rmx_dataset_set_on_corrupt(rmx_dataset *ds, rmx_on_corrupt policy) { ds->on_corrupt = policy; }

int64_t rmx_dataset_damaged_found(const rmx_dataset *ds) {
    return __atomic_load_n(&ds->n_damaged, __ATOMIC_RELAXED);
}

/* Tells the kernel which byte ranges the batch is about to read. Shuffled samples are scattered
 * 128 KiB reads that the kernel's sequential read-ahead cannot guess; announcing the whole batch
 * lets the device work on all of them at once instead of one at a time. */
static void announce_batch(const rmx_dataset *ds, const int64_t *indices, int n) {
    for (int i = 0; i < n; i++) {
        if (indices[i] < 0 || indices[i] >= ds->total) continue;
        const shard_file *s = shard_of(ds, indices[i]);
        hsize_t offset[3] = {(hsize_t)(indices[i] - s->first), 0, 0}, size = 0;
        haddr_t addr = HADDR_UNDEF;
        unsigned mask = 0;
        if (s->fd < 0) continue;
        rmx_h5_lock();
        herr_t rc = H5Dget_chunk_info_by_coord(s->mel, offset, &mask, &addr, &size);
        rmx_h5_unlock();
        if (rc >= 0 && addr != HADDR_UNDEF && size > 0)
            posix_fadvise(s->fd, (off_t)addr, (off_t)size, POSIX_FADV_WILLNEED);
    }
}

int rmx_dataset_read_batch_resolved(rmx_dataset *ds, const int64_t *indices, int n, float *mel,
                                    int32_t *genre, int64_t *used, char *err, size_t errlen) {
    size_t floats = rmx_dataset_sample_floats(ds);
    if (mel && n > 1) announce_batch(ds, indices, n);
    for (int i = 0; i < n; i++)
        if (rmx_dataset_read_resolved(ds, indices[i], mel ? mel + (size_t)i * floats : NULL,
                                      genre ? genre + i : NULL, used ? used + i : NULL, err, errlen))
            return -1;
    return 0;
}

int rmx_dataset_read_batch(rmx_dataset *ds, const int64_t *indices, int n, float *mel,
                           int32_t *genre, char *err, size_t errlen) {
    return rmx_dataset_read_batch_resolved(ds, indices, n, mel, genre, NULL, err, errlen);
}

/* ---- provenance ---- */

typedef struct {
    hsize_t row;
} element_ctx;

static herr_t element_reader(hid_t ds, hid_t mem_type, void *buf, void *ctx) {
    return read_row_selected(ds, ((element_ctx *)ctx)->row, 1, mem_type, buf);
}

static int read_source_name(const shard_file *s, int32_t id, char *out, size_t outlen, char *err,
                            size_t errlen) {
    hid_t space = H5Dget_space(s->sources);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    if (id < 0 || id >= n)
        return rmx_seterr(err, errlen, "%s: /source refers to /sources[%d] but there are %lld", s->path,
                          (int)id, (long long)n);
    hid_t type = H5Dget_type(s->sources);
    element_ctx ctx = {(hsize_t)id};
    int rc = copy_strings(type, 1, out, outlen, element_reader, s->sources, &ctx);
    H5Tclose(type);
    return rc < 0 ? rmx_seterr(err, errlen, "%s: /sources[%d] cannot be read", s->path, (int)id) : 0;
}

static int read_provenance(const shard_file *s, int64_t row, char *source, size_t sourcelen,
                           int64_t *offset, char *err, size_t errlen) {
    int32_t id;
    if (read_row_selected(s->source, (hsize_t)row, 1, H5T_NATIVE_INT32, &id) < 0)
        return rmx_seterr(err, errlen, "%s: /source[%lld] cannot be read", s->path, (long long)row);
    if (offset && read_row_selected(s->offset, (hsize_t)row, 1, H5T_NATIVE_INT64, offset) < 0)
        return rmx_seterr(err, errlen, "%s: /offset[%lld] cannot be read", s->path, (long long)row);
    return source ? read_source_name(s, id, source, sourcelen, err, errlen) : 0;
}

int rmx_dataset_provenance(rmx_dataset *ds, int64_t index, char *source, size_t sourcelen,
                           int64_t *offset, char *err, size_t errlen) {
    if (check_index(ds, index, err, errlen)) return -1;
    const shard_file *s = shard_of(ds, index);
    rmx_h5_lock();
    int rc = read_provenance(s, index - s->first, source, sourcelen, offset, err, errlen);
    rmx_h5_unlock();
    return rc;
}

int rmx_dataset_check_compatible(const rmx_dataset *train, const rmx_dataset *val, char *err,
                                 size_t errlen) {
    char val_name[PATH_CAP + 16], train_name[PATH_CAP + 16];
    snprintf(val_name, sizeof val_name, "validation set %s", val->spec);
    snprintf(train_name, sizeof train_name, "training set %s", train->spec);
    return rmx_mel_params_compare(&val->params, val_name, &train->params, train_name, err, errlen);
}
