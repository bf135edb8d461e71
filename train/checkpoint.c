/* Checkpoint files: layout and host copies, the background writer, the verifying reader, and
 * the resume policy (see checkpoint.h for the format). */
#include "train/checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/h5lock.h"
#include "data/h5probe.h"
#include "train/signals.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"

enum {
    CHUNK_BYTES = 1 << 20, /* chunks of at most 1 MiB: Fletcher32 needs a chunked layout */
    LINE_MAX_CHARS = RMX_PARAM_NAME_MAX + 96, /* "name [d0, d1, d2, d3]" */
};

static void ckpt_abort(const char *what) {
    fprintf(stderr, "remixer: internal error: checkpoint: %s\n", what);
    abort();
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) ckpt_abort("out of memory");
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* ---- layout and host copies ---- */

void rmx_ckpt_layout_add(rmx_ckpt_layout *layout, const char *group, rmx_params *params, int with_adam) {
    if (!params || params->count == 0) return;
    if (layout->n_parts == RMX_CKPT_MAX_PARTS) ckpt_abort("too many registries");
    layout->part[layout->n_parts++] = (rmx_ckpt_part){group, params, with_adam && params->trained, NULL};
}

void rmx_ckpt_layout_add_values(rmx_ckpt_layout *layout, const char *group, rmx_params *params,
                                float *values) {
    if (!params || params->count == 0) return;
    if (layout->n_parts == RMX_CKPT_MAX_PARTS) ckpt_abort("too many registries");
    layout->part[layout->n_parts++] = (rmx_ckpt_part){group, params, 0, values};
}

/* The backend buffer a part's values live in. */
static float *part_values(const rmx_ckpt_part *part) {
    return part->values ? part->values : part->params->data;
}

static rmx_ckpt_attr *new_attr(rmx_ckpt_layout *layout, const char *group, const char *name,
                               rmx_ckpt_attr_kind kind) {
    if (layout->n_attrs == RMX_CKPT_MAX_ATTRS) ckpt_abort("too many attributes");
    rmx_ckpt_attr *a = &layout->attr[layout->n_attrs++];
    *a = (rmx_ckpt_attr){.group = group, .name = name, .kind = kind};
    return a;
}

void rmx_ckpt_layout_attr_f64(rmx_ckpt_layout *layout, const char *group, const char *name, double v) {
    new_attr(layout, group, name, RMX_ATTR_F64)->f64 = v;
}

void rmx_ckpt_layout_attr_i64(rmx_ckpt_layout *layout, const char *group, const char *name, int64_t v) {
    new_attr(layout, group, name, RMX_ATTR_I64)->i64 = v;
}

void rmx_ckpt_layout_attr_str(rmx_ckpt_layout *layout, const char *group, const char *name, const char *s) {
    new_attr(layout, group, name, RMX_ATTR_STR)->str = s;
}

void rmx_ckpt_layout_audio(rmx_ckpt_layout *layout, const char *group, const rmx_mel_params *p) {
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        const char *at = (const char *)p + f->offset;
        if (f->kind == RMX_FIELD_INT) rmx_ckpt_layout_attr_i64(layout, group, f->name, *(const int *)at);
        else rmx_ckpt_layout_attr_f64(layout, group, f->name, *(const float *)at);
    }
    rmx_ckpt_attr *a = new_attr(layout, group, "genre_names", RMX_ATTR_STRS);
    a->strs = &p->genre_names[0][0];
    a->n_strs = p->n_genres;
    a->width = RMX_GENRE_NAME_MAX;
}

void rmx_ckpt_host_alloc(rmx_ckpt_host *h, const rmx_ckpt_layout *layout) {
    memset(h, 0, sizeof *h);
    for (int i = 0; i < layout->n_parts; i++) {
        size_t span = layout->part[i].params->span;
        h->values[i] = xcalloc(span, sizeof(float));
        if (!layout->part[i].with_adam) continue;
        h->m[i] = xcalloc(span, sizeof(float));
        h->v[i] = xcalloc(span, sizeof(float));
    }
}

void rmx_ckpt_host_free(rmx_ckpt_host *h) {
    for (int i = 0; i < RMX_CKPT_MAX_PARTS; i++) {
        free(h->values[i]);
        free(h->m[i]);
        free(h->v[i]);
    }
    memset(h, 0, sizeof *h);
}

void rmx_ckpt_host_download(rmx_ckpt_host *h, const rmx_ckpt_layout *layout) {
    for (int i = 0; i < layout->n_parts; i++) {
        const rmx_params *p = layout->part[i].params;
        size_t bytes = p->span * sizeof(float);
        p->be->to_host(p->be, h->values[i], part_values(&layout->part[i]), bytes);
        if (!layout->part[i].with_adam) continue;
        p->be->to_host(p->be, h->m[i], p->m, bytes);
        p->be->to_host(p->be, h->v[i], p->v, bytes);
    }
}

void rmx_ckpt_host_upload(const rmx_ckpt_host *h, const rmx_ckpt_layout *layout) {
    for (int i = 0; i < layout->n_parts; i++) {
        const rmx_params *p = layout->part[i].params;
        size_t bytes = p->span * sizeof(float);
        p->be->to_backend(p->be, part_values(&layout->part[i]), h->values[i], bytes);
        if (!layout->part[i].with_adam) continue;
        p->be->to_backend(p->be, p->m, h->m[i], bytes);
        p->be->to_backend(p->be, p->v, h->v[i], bytes);
    }
}

/* The "name [d0, d1, ...]" lines of the tensors stored in `group`; "optim" lists the trained
 * registry's tensors, whose Adam moments it holds. Returns the count; free with free_lines. */
static int tensor_lines(const rmx_ckpt_layout *layout, const char *group, char ***lines) {
    int n = 0;
    for (int i = 0; i < layout->n_parts; i++) n += layout->part[i].params->count;
    *lines = xcalloc((size_t)n, sizeof **lines);
    int used = 0;
    for (int i = 0; i < layout->n_parts; i++) {
        const rmx_ckpt_part *part = &layout->part[i];
        int in_group = strcmp(group, "optim") == 0 ? part->with_adam : strcmp(group, part->group) == 0;
        for (int t = 0; in_group && t < part->params->count; t++) {
            (*lines)[used] = xcalloc(LINE_MAX_CHARS, 1);
            rmx_params_describe(part->params, t, (*lines)[used++], LINE_MAX_CHARS);
        }
    }
    return used;
}

static void free_lines(char **lines, size_t n) {
    for (size_t i = 0; lines && i < n; i++) free(lines[i]);
    free(lines);
}

/* ---- files ---- */

void rmx_ckpt_path(const char *dir, int64_t step, char *out, size_t outlen) {
    snprintf(out, outlen, "%s/ckpt-%08" PRId64 ".h5", dir, step);
}

/* The step of a file named "ckpt-<digits>.h5", or -1. */
static int64_t step_of_name(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0 || !isdigit((unsigned char)name[5])) return -1;
    char *end;
    errno = 0;
    long long step = strtoll(name + 5, &end, 10);
    return errno == 0 && strcmp(end, ".h5") == 0 ? (int64_t)step : -1;
}

static int newest_first(const void *a, const void *b) {
    int64_t sa = ((const rmx_ckpt_file *)a)->step, sb = ((const rmx_ckpt_file *)b)->step;
    return sa < sb ? 1 : sa > sb ? -1 : 0;
}

int rmx_ckpt_list(const char *dir, rmx_ckpt_file **files) {
    *files = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int64_t step = step_of_name(e->d_name);
        if (step < 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            *files = realloc(*files, (size_t)cap * sizeof **files);
            if (!*files) ckpt_abort("out of memory listing checkpoints");
        }
        snprintf((*files)[n].path, sizeof (*files)[n].path, "%s/%s", dir, e->d_name);
        (*files)[n++].step = step;
    }
    closedir(d);
    if (n) qsort(*files, (size_t)n, sizeof **files, newest_first);
    return n;
}

/* What an interrupted write leaves: ".ckpt-<step>.h5.tmp.<pid>" (rmx_tmp_name). Removed at the
 * next start; nothing else writes checkpoints into a run's folder at that time. */
static void remove_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, ".ckpt-", 6) != 0 || !strstr(e->d_name, ".h5.tmp.")) continue;
        char path[RMX_CKPT_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0)
            rmx_info("removed %s, the remains of a checkpoint write that did not finish", path);
    }
    closedir(d);
}

/* After `step` is durable: deletes the checkpoints older than it beyond the newest `keep`.
 * Checkpoints of later steps are left alone: they come from a run this one branched off (resume
 * from a path, or `never`), and only the user knows whether they still matter. */
static void remove_old_checkpoints(const char *dir, int64_t step, int keep) {
    rmx_ckpt_file *files;
    int n = rmx_ckpt_list(dir, &files), kept = 0, removed = 0;
    for (int i = 0; i < n; i++) {
        if (files[i].step > step) continue;
        if (kept < keep) kept++;
        else if (unlink(files[i].path) == 0) removed++;
        else rmx_warn("cannot delete old checkpoint %s: %s", files[i].path, strerror(errno));
    }
    if (removed) {
        char err[512];
        if (rmx_fsync_dir_of(files[0].path, err, sizeof err) != 0) rmx_warn("%s", err);
    }
    free(files);
}

/* ---- the whole-file checksum (the HDF5 user block) ---- */

/* Every checkpoint starts with a HEADER_BYTES user block, which HDF5 skips (its superblock follows
 * at byte HEADER_BYTES; h5py and every HDF5 tool read the file as usual). The writer fills it after
 * closing the HDF5 file and before the rename; the reader checks it before HDF5 sees the file, so a
 * damaged file never reaches the HDF5 parser. Little-endian:
 *   0   8  magic "RMXCKSUM"
 *   8   4  header version (1)
 *   12  4  user block size (HEADER_BYTES)
 *   16  8  file length in bytes, user block included
 *   24  8  CRC-64/XZ of bytes HEADER_BYTES .. length-1
 *   32  8  CRC-64/XZ of the user block with these 8 bytes zero
 *   40     a line of text saying the above; zero up to HEADER_BYTES
 * A file whose first 8 bytes are the HDF5 signature is of the format before this block. */
enum { HEADER_BYTES = 4096, HEADER_VERSION = 1, IO_BYTES = 1 << 20 };
static const unsigned char HEADER_MAGIC[8] = {'R', 'M', 'X', 'C', 'K', 'S', 'U', 'M'};
static const unsigned char HDF5_SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static uint64_t crc64_table[8][256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

static void crc64_init(void) {
    for (int i = 0; i < 256; i++) {
        uint64_t c = (uint64_t)i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xC96C5795D7870F42ull : c >> 1;
        crc64_table[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc64_table[t][i] = (crc64_table[t - 1][i] >> 8) ^ crc64_table[0][crc64_table[t - 1][i] & 0xff];
}

static uint64_t get_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* CRC-64/XZ (ECMA-182 polynomial, reflected; "123456789" -> 0x995DC9BBDF1939FA), continued from
 * `crc` (0 to start), slicing by 8. */
static uint64_t crc64(uint64_t crc, const unsigned char *p, size_t n) {
    pthread_once(&crc64_once, crc64_init);
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        crc ^= get_le64(p);
        crc = crc64_table[7][crc & 0xff] ^ crc64_table[6][(crc >> 8) & 0xff] ^
              crc64_table[5][(crc >> 16) & 0xff] ^ crc64_table[4][(crc >> 24) & 0xff] ^
              crc64_table[3][(crc >> 32) & 0xff] ^ crc64_table[2][(crc >> 40) & 0xff] ^
              crc64_table[1][(crc >> 48) & 0xff] ^ crc64_table[0][crc >> 56];
    }
    for (; n; p++, n--) crc = crc64_table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* pread of exactly n bytes at off: 0, or -1 (errno set; EIO-like 0 for a short file). */
static int pread_all(int fd, unsigned char *buf, size_t n, off_t off) {
    while (n) {
        ssize_t got = pread(fd, buf, n, off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            if (got == 0) errno = 0;
            return -1;
        }
        buf += got;
        n -= (size_t)got;
        off += got;
    }
    return 0;
}

/* The CRC-64 of bytes [from, to) of fd into *out: 0, or -1 with errno. */
static int crc64_of_range(int fd, off_t from, off_t to, uint64_t *out) {
    unsigned char *buf = malloc(IO_BYTES);
    if (!buf) ckpt_abort("out of memory");
    uint64_t crc = 0;
    int rc = 0;
    for (off_t off = from; off < to && rc == 0;) {
        size_t n = to - off < IO_BYTES ? (size_t)(to - off) : IO_BYTES;
        rc = pread_all(fd, buf, n, off);
        if (rc == 0) crc = crc64(crc, buf, n);
        off += (off_t)n;
    }
    free(buf);
    *out = crc;
    return rc;
}

static uint64_t header_crc(const unsigned char *h) {
    unsigned char copy[HEADER_BYTES];
    memcpy(copy, h, HEADER_BYTES);
    memset(copy + 32, 0, 8);
    return crc64(0, copy, HEADER_BYTES);
}

/* Fills the user block of the closed HDF5 file `tmp` (rmx_commit_file fsyncs it afterwards). */
static int seal_file(const char *tmp, char *err, size_t errlen) {
    int fd = open(tmp, O_RDWR);
    if (fd < 0) return rmx_seterr(err, errlen, "%s: cannot reopen to checksum: %s", tmp, strerror(errno));
    struct stat st;
    uint64_t crc = 0;
    int rc = fstat(fd, &st) == 0 && st.st_size > HEADER_BYTES ? 0 : -1;
    if (rc == 0) rc = crc64_of_range(fd, HEADER_BYTES, st.st_size, &crc);
    if (rc != 0) {
        int e = errno;
        close(fd);
        return rmx_seterr(err, errlen, "%s: cannot read back to checksum: %s", tmp, e ? strerror(e) : "short file");
    }
    unsigned char h[HEADER_BYTES] = {0};
    memcpy(h, HEADER_MAGIC, 8);
    put_le(h + 8, HEADER_VERSION, 4);
    put_le(h + 12, HEADER_BYTES, 4);
    put_le(h + 16, (uint64_t)st.st_size, 8);
    put_le(h + 24, crc, 8);
    snprintf((char *)h + 40, HEADER_BYTES - 40,
             "\nRemixer checkpoint: HDF5 from byte %d; bytes 16-23: file length, 24-31: CRC-64/XZ of bytes "
             "%d..end, 32-39: CRC-64/XZ of this block (with 32-39 zero); little-endian\n",
             HEADER_BYTES, HEADER_BYTES);
    put_le(h + 32, header_crc(h), 8);
    ssize_t put = pwrite(fd, h, HEADER_BYTES, 0);
    int e = errno;
    if (close(fd) != 0 && put == HEADER_BYTES) {
        e = errno;
        put = -1;
    }
    if (put != HEADER_BYTES)
        return rmx_seterr(err, errlen, "%s: cannot write the checksum block: %s", tmp,
                          put < 0 ? strerror(e) : "short write");
    return 0;
}

/* SEAL_FOREIGN: the first bytes are neither the block's magic (up to a few damaged bits) nor the
 * HDF5 signature: not a checkpoint, or damaged at its start; a resume treats it as damaged. */
typedef enum { SEAL_OK, SEAL_OLD_FORMAT, SEAL_DAMAGED, SEAL_NEWER, SEAL_FOREIGN } seal_status;

/* Bits that differ between two 8-byte strings. */
static int bit_distance8(const unsigned char *a, const unsigned char *b) {
    int d = 0;
    for (int i = 0; i < 8; i++) d += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return d;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* Checks a checkpoint's whole-file checksum before HDF5 opens it. The message (why) does not name
 * the file. SEAL_OLD_FORMAT: a file from before the checksum block (HDF5 signature at byte 0). */
static seal_status verify_seal(const char *path, char *why, size_t whylen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        rmx_seterr(why, whylen, "cannot open it: %s", strerror(errno));
        return SEAL_DAMAGED;
    }
    struct stat st;
    unsigned char h[HEADER_BYTES];
    seal_status s = SEAL_DAMAGED;
    if (fstat(fd, &st) != 0) {
        rmx_seterr(why, whylen, "cannot stat it: %s", strerror(errno));
    } else if (st.st_size < 8) {
        rmx_seterr(why, whylen, "it is %lld bytes long: truncated", (long long)st.st_size);
    } else if (pread_all(fd, h, 8, 0) != 0) {
        rmx_seterr(why, whylen, "cannot read its first bytes: %s", errno ? strerror(errno) : "short read");
    } else if (memcmp(h, HDF5_SIGNATURE, 8) == 0) {
        s = SEAL_OLD_FORMAT;
    } else if (bit_distance8(h, HEADER_MAGIC) > 8 && !all_zero(h, 8)) {
        rmx_seterr(why, whylen, "it starts with neither Remixer's checksum block nor the HDF5 signature (not a "
                   "checkpoint, or damaged at its start)");
        s = SEAL_FOREIGN;
    } else if (st.st_size <= HEADER_BYTES) {
        rmx_seterr(why, whylen, "it is %lld bytes long, not even its %d-byte checksum block and the HDF5 "
                   "superblock: truncated", (long long)st.st_size, HEADER_BYTES);
    } else if (pread_all(fd, h, HEADER_BYTES, 0) != 0) {
        rmx_seterr(why, whylen, "cannot read its checksum block: %s", errno ? strerror(errno) : "short read");
    } else if (all_zero(h, HEADER_BYTES)) {
        rmx_seterr(why, whylen, "bytes 0..%d (its checksum block) are all zero: the file is damaged",
                   HEADER_BYTES - 1);
    } else if (memcmp(h, HEADER_MAGIC, 8) != 0 || get_le64(h + 32) != header_crc(h)) {
        rmx_seterr(why, whylen, "%s of its checksum block (bytes 0..%d) differs: the file is damaged",
                   memcmp(h, HEADER_MAGIC, 8) != 0 ? "the magic" : "the checksum", HEADER_BYTES - 1);
    } else if (get_le32(h + 8) != HEADER_VERSION || get_le32(h + 12) != HEADER_BYTES) {
        rmx_seterr(why, whylen, "its checksum block has version %u and size %u; this program reads version %d, "
                   "size %d", get_le32(h + 8), get_le32(h + 12), HEADER_VERSION, HEADER_BYTES);
        s = SEAL_NEWER;
    } else if (get_le64(h + 16) != (uint64_t)st.st_size) {
        rmx_seterr(why, whylen, "it is %lld bytes long but was written with %" PRIu64 ": %s",
                   (long long)st.st_size, get_le64(h + 16),
                   (uint64_t)st.st_size < get_le64(h + 16) ? "truncated" : "the file is damaged");
    } else {
        uint64_t crc = 0;
        if (crc64_of_range(fd, HEADER_BYTES, st.st_size, &crc) != 0)
            rmx_seterr(why, whylen, "cannot read it: %s", errno ? strerror(errno) : "short read");
        else if (crc != get_le64(h + 24))
            rmx_seterr(why, whylen, "checksum of bytes %d..%lld differs: the file is damaged", HEADER_BYTES,
                       (long long)st.st_size - 1);
        else
            s = SEAL_OK;
    }
    close(fd);
    return s;
}

/* The note for a file without the checksum block, once per file and process. */
static void note_old_format(const char *path) {
    static char last[RMX_CKPT_PATH_MAX];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    int again = strcmp(last, path) == 0;
    snprintf(last, sizeof last, "%s", path);
    pthread_mutex_unlock(&mu);
    if (!again) rmx_info("%s has no whole-file checksum (written before checkpoints had one); loading it", path);
}

/* A file without the checksum block is read in a child process first (data/h5probe.h): damaged
 * HDF5 metadata can crash libhdf5 or make it loop forever. True when that read finished; false
 * with the reason in why. */
static bool old_format_survives(const char *path, char *why, size_t whylen) {
    note_old_format(path);
    return rmx_h5_probe(path, why, whylen) == 0;
}

/* ---- writing HDF5 (callers hold the HDF5 lock) ---- */

/* An object-creation property list without modification times: a checkpoint's bytes depend on
 * its contents only. */
static hid_t untimed_plist(hid_t cls) {
    hid_t p = H5Pcreate(cls);
    if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

static int write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, int scalar,
                      hsize_t n, const void *data) {
    hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t attr = space >= 0 ? H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int rc = attr >= 0 && H5Awrite(attr, mem_type, data) >= 0 ? 0 : -1;
    if (attr >= 0 && H5Aclose(attr) < 0) rc = -1;
    if (space >= 0) H5Sclose(space);
    return rc;
}

static int write_i64(hid_t obj, const char *name, int64_t v) {
    return write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 1, 1, &v);
}

static int write_i32(hid_t obj, const char *name, int32_t v) {
    return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 1, &v);
}

/* Variable-length UTF-8: h5py reads these as str (fixed-length ones come back as bytes). */
static int write_strings(hid_t obj, const char *name, const char *const *s, size_t n, int scalar) {
    hid_t type = H5Tcopy(H5T_C_S1);
    int rc = type >= 0 && H5Tset_size(type, H5T_VARIABLE) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0
                 ? write_attr(obj, name, type, type, scalar, n, s)
                 : -1;
    if (type >= 0) H5Tclose(type);
    return rc;
}

static int write_string(hid_t obj, const char *name, const char *s) {
    return write_strings(obj, name, &s, 1, 1);
}

static int write_root_attributes(hid_t file, const rmx_ckpt_meta *m) {
    hsize_t three = 3;
    int bad = write_string(file, "format", RMX_CKPT_FORMAT) ||
              write_i32(file, "format_version", RMX_CKPT_VERSION) || write_string(file, "stage", m->stage) ||
              write_i64(file, "step", m->step) || write_i64(file, "samples_seen", m->samples_seen) ||
              write_attr(file, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, 1, &m->seed) ||
              write_string(file, "config", m->config ? m->config : "") ||
              write_i32(file, "world_size", m->world_size) ||
              write_i32(file, "global_batch", m->global_batch) ||
              write_i32(file, "micro_batch", m->micro_batch) ||
              write_attr(file, "input_shape", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, three, m->input_shape) ||
              write_i64(file, "adam_step", m->adam_step) ||
              write_i64(file, "nonfinite_in_row", m->nonfinite_in_row) ||
              write_i64(file, "nonfinite_total", m->nonfinite_total);
    return bad ? -1 : 0;
}

/* Creates group `path` ("/model"); with `listed`, also its `tensors` attribute. */
static int create_group(hid_t file, const char *path, const rmx_ckpt_layout *layout, const char *listed) {
    hid_t gcpl = untimed_plist(H5P_GROUP_CREATE);
    hid_t g = gcpl >= 0 ? H5Gcreate2(file, path, H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
    int rc = g >= 0 ? 0 : -1;
    if (rc == 0 && listed) {
        char **lines;
        int n = tensor_lines(layout, listed, &lines);
        rc = write_strings(g, "tensors", (const char *const *)lines, (size_t)n, 0);
        free_lines(lines, (size_t)n);
    }
    if (g >= 0 && H5Gclose(g) < 0) rc = -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    return rc;
}

static int group_seen_before(const rmx_ckpt_layout *layout, int part) {
    for (int i = 0; i < part; i++)
        if (strcmp(layout->part[i].group, layout->part[part].group) == 0) return 1;
    return 0;
}

static int create_groups(hid_t file, const rmx_ckpt_layout *layout) {
    int adam = 0;
    for (int i = 0; i < layout->n_parts; i++) {
        adam |= layout->part[i].with_adam;
        if (group_seen_before(layout, i)) continue;
        char path[64];
        snprintf(path, sizeof path, "/%s", layout->part[i].group);
        if (create_group(file, path, layout, layout->part[i].group) != 0) return -1;
    }
    if (!adam) return 0;
    if (create_group(file, "/optim", layout, "optim") != 0) return -1;
    if (create_group(file, "/optim/m", layout, NULL) != 0) return -1;
    return create_group(file, "/optim/v", layout, NULL);
}

static int write_f64(hid_t obj, const char *name, double v) {
    return write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, 1, &v);
}

static int write_one_attr(hid_t obj, const rmx_ckpt_attr *a) {
    switch (a->kind) {
    case RMX_ATTR_F64: return write_f64(obj, a->name, a->f64);
    case RMX_ATTR_I64: return write_i64(obj, a->name, a->i64);
    case RMX_ATTR_STR: return write_string(obj, a->name, a->str ? a->str : "");
    case RMX_ATTR_STRS: {
        const char *list[RMX_MAX_GENRES];
        int n = a->n_strs < RMX_MAX_GENRES ? a->n_strs : RMX_MAX_GENRES;
        for (int i = 0; i < n; i++) list[i] = a->strs + (size_t)i * (size_t)a->width;
        return write_strings(obj, a->name, list, (size_t)n, 0);
    }
    }
    return -1;
}

/* The layout's attributes, each on its group (created when no tensor part made it). */
static int write_layout_attrs(hid_t file, const rmx_ckpt_layout *layout) {
    for (int i = 0; i < layout->n_attrs; i++) {
        const rmx_ckpt_attr *a = &layout->attr[i];
        char path[64];
        snprintf(path, sizeof path, "/%s", a->group);
        if (a->group[0] && H5Lexists(file, path, H5P_DEFAULT) <= 0 && create_group(file, path, layout, NULL) != 0)
            return -1;
        hid_t obj = a->group[0] ? H5Gopen2(file, path, H5P_DEFAULT) : file;
        int rc = obj >= 0 ? write_one_attr(obj, a) : -1;
        if (a->group[0] && obj >= 0) H5Gclose(obj);
        if (rc != 0) return -1;
    }
    return 0;
}

static int write_tensor(hid_t group, const rmx_param_info *t, const float *data) {
    hsize_t dims[RMX_PARAM_MAX_DIMS], chunk[RMX_PARAM_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = chunk[d] = (hsize_t)t->shape[d];
    /* Whole trailing dimensions per chunk; as many leading rows as fit in CHUNK_BYTES. */
    hsize_t row_bytes = (hsize_t)(t->numel / (size_t)t->shape[0]) * sizeof(float);
    hsize_t rows = CHUNK_BYTES / row_bytes;
    chunk[0] = rows < 1 ? 1 : rows < dims[0] ? rows : dims[0];
    hid_t space = H5Screate_simple(t->ndim, dims, NULL);
    hid_t dcpl = untimed_plist(H5P_DATASET_CREATE);
    int rc = space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, t->ndim, chunk) >= 0 &&
                     H5Pset_fletcher32(dcpl) >= 0
                 ? 0
                 : -1;
    hid_t ds = rc == 0 ? H5Dcreate2(group, t->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)
                       : -1;
    if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) rc = -1;
    if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

static int h5_failure(char *err, size_t errlen, const char *path, const char *what) {
    char detail[512];
    rmx_h5_error_detail(detail, sizeof detail);
    return rmx_seterr(err, errlen, "%s: %s: %s", path, what, detail);
}

/* ---- writing a file ---- */

typedef struct {
    const char *tmp;
    hid_t file;
    long delay_ms;
    char *err;
    size_t errlen;
} file_job;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* One dataset under the lock, so that the loader's thread can read between two of them. */
static int write_one(file_job *job, const char *group_path, const rmx_param_info *t, const float *data) {
    rmx_h5_lock();
    hid_t g = H5Gopen2(job->file, group_path, H5P_DEFAULT);
    int rc = g >= 0 && write_tensor(g, t, data) == 0 ? 0 : -1;
    if (rc != 0) {
        char what[LINE_MAX_CHARS + 64];
        snprintf(what, sizeof what, "cannot write %s/%s", group_path, t->name);
        h5_failure(job->err, job->errlen, job->tmp, what);
    }
    if (g >= 0) H5Gclose(g);
    rmx_h5_unlock();
    if (job->delay_ms > 0) sleep_ms(job->delay_ms);
    return rc;
}

static int write_registry(file_job *job, const char *group_path, const rmx_params *p, const float *host) {
    for (int t = 0; t < p->count; t++)
        if (write_one(job, group_path, &p->info[t], host + p->info[t].offset) != 0) return -1;
    return 0;
}

static int write_tensors(file_job *job, const rmx_ckpt_layout *layout, const rmx_ckpt_host *h) {
    for (int i = 0; i < layout->n_parts; i++) {
        const rmx_ckpt_part *part = &layout->part[i];
        char group_path[64];
        snprintf(group_path, sizeof group_path, "/%s", part->group);
        if (write_registry(job, group_path, part->params, h->values[i]) != 0) return -1;
        if (part->with_adam && (write_registry(job, "/optim/m", part->params, h->m[i]) != 0 ||
                                write_registry(job, "/optim/v", part->params, h->v[i]) != 0))
            return -1;
    }
    return 0;
}

static int write_file(file_job *job, const rmx_ckpt_layout *layout, const rmx_ckpt_host *h,
                      const rmx_ckpt_meta *meta) {
    rmx_h5_lock();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    /* The 1.8 object format: checksummed metadata, readable by every HDF5 since 1.8 and h5py. */
    if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    /* The user block seal_file fills after the close. */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl >= 0 && H5Pset_userblock(fcpl, HEADER_BYTES) < 0) {
        H5Pclose(fcpl);
        fcpl = -1;
    }
    job->file = fapl >= 0 && fcpl >= 0 ? H5Fcreate(job->tmp, H5F_ACC_TRUNC, fcpl, fapl) : -1;
    if (fapl >= 0) H5Pclose(fapl);
    if (fcpl >= 0) H5Pclose(fcpl);
    int rc = job->file >= 0 ? 0 : h5_failure(job->err, job->errlen, job->tmp, "cannot create");
    if (rc == 0 && (write_root_attributes(job->file, meta) != 0 || create_groups(job->file, layout) != 0 ||
                    write_layout_attrs(job->file, layout) != 0))
        rc = h5_failure(job->err, job->errlen, job->tmp, "cannot write the attributes and groups");
    rmx_h5_unlock();
    if (rc == 0) rc = write_tensors(job, layout, h);
    rmx_h5_lock();
    if (job->file >= 0 && H5Fclose(job->file) < 0 && rc == 0)
        rc = h5_failure(job->err, job->errlen, job->tmp, "cannot close");
    rmx_h5_unlock();
    return rc;
}

/* ---- the writer ---- */

struct rmx_ckpt_writer {
    char dir[RMX_PATH_MAX];
    int keep;
    long delay_ms; /* RMX_TEST_CKPT_DELAY_MS */
    rmx_ckpt_layout layout;
    rmx_ckpt_host host; /* the snapshot being written */
    rmx_ckpt_meta meta;
    char *config;       /* meta.config's own copy */
    pthread_t thread;
    int in_flight;      /* a thread was started and not joined yet */
    atomic_int finished; /* the thread's last act */
    int has_outcome;
    rmx_ckpt_outcome outcome;
};

rmx_ckpt_writer *rmx_ckpt_writer_create(const char *dir, int keep, const rmx_ckpt_layout *layout,
                                        char *err, size_t errlen) {
    if (rmx_mkdirs(dir, err, errlen) != 0) return NULL;
    rmx_ckpt_writer *w = xcalloc(1, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    w->keep = keep < 1 ? 1 : keep;
    const char *delay = getenv("RMX_TEST_CKPT_DELAY_MS");
    w->delay_ms = delay ? strtol(delay, NULL, 10) : 0;
    w->layout = *layout;
    rmx_ckpt_host_alloc(&w->host, layout);
    return w;
}

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Temporary name, every dataset, fsync, rename, directory fsync; then the old ones go. */
static void write_checkpoint(rmx_ckpt_writer *w) {
    rmx_ckpt_outcome *o = &w->outcome;
    memset(o, 0, sizeof *o);
    double start = now_s();
    o->step = w->meta.step;
    rmx_ckpt_path(w->dir, o->step, o->path, sizeof o->path);
    char tmp[RMX_CKPT_PATH_MAX + 64];
    rmx_tmp_name(o->path, tmp, sizeof tmp);
    file_job job = {.tmp = tmp, .file = -1, .delay_ms = w->delay_ms, .err = o->error,
                    .errlen = sizeof o->error};
    int rc = write_file(&job, &w->layout, &w->host, &w->meta);
    if (rc == 0) rc = seal_file(tmp, o->error, sizeof o->error);
    o->mib = (double)file_size(tmp) / (1024.0 * 1024.0);
    if (rc == 0) rc = rmx_commit_file(tmp, o->path, o->error, sizeof o->error);
    if (rc == 0) remove_old_checkpoints(w->dir, o->step, w->keep);
    else {
        unlink(tmp);
        o->failed = 1;
    }
    o->seconds = now_s() - start;
}

static void *writer_thread(void *arg) {
    rmx_ckpt_writer *w = arg;
    write_checkpoint(w);
    atomic_store(&w->finished, 1);
    return NULL;
}

static void join_in_flight(rmx_ckpt_writer *w) {
    if (!w->in_flight) return;
    pthread_join(w->thread, NULL);
    w->in_flight = 0;
    w->has_outcome = 1;
}

/* The thread starts with the stop signals blocked, so that they reach the training thread. */
static int start_writer_thread(rmx_ckpt_writer *w) {
    sigset_t saved;
    rmx_signals_block(&saved);
    atomic_store(&w->finished, 0);
    int rc = pthread_create(&w->thread, NULL, writer_thread, w);
    rmx_signals_restore(&saved);
    if (rc == 0) w->in_flight = 1;
    return rc;
}

void rmx_ckpt_save(rmx_ckpt_writer *w, const rmx_ckpt_meta *meta, int background) {
    join_in_flight(w); /* never two writes at once: they would share the host snapshot */
    w->has_outcome = 0;
    rmx_ckpt_host_download(&w->host, &w->layout);
    free(w->config);
    w->config = strdup(meta->config ? meta->config : "");
    if (!w->config) ckpt_abort("out of memory");
    w->meta = *meta;
    w->meta.config = w->config;
    if (background && start_writer_thread(w) == 0) return;
    write_checkpoint(w); /* asked for, or no thread could be started */
    w->has_outcome = 1;
}

int rmx_ckpt_writer_collect(rmx_ckpt_writer *w, int block, rmx_ckpt_outcome *out) {
    if (w->in_flight && (block || atomic_load(&w->finished))) join_in_flight(w);
    if (!w->has_outcome) return 0;
    *out = w->outcome;
    w->has_outcome = 0;
    return 1;
}

void rmx_ckpt_writer_free(rmx_ckpt_writer *w) {
    if (!w) return;
    join_in_flight(w);
    rmx_ckpt_host_free(&w->host);
    free(w->config);
    free(w);
}

/* ---- reading HDF5 (callers hold the HDF5 lock) ---- */

static hid_t open_attr(hid_t obj, const char *name, H5T_class_t want, char *err, size_t errlen) {
    if (H5Aexists(obj, name) <= 0) {
        rmx_seterr(err, errlen, "attribute '%s' is missing", name);
        return -1;
    }
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    int ok = type >= 0 && H5Tget_class(type) == want;
    if (type >= 0) H5Tclose(type);
    if (ok) return attr;
    if (attr >= 0) H5Aclose(attr);
    rmx_seterr(err, errlen, "attribute '%s' is not %s", name, want == H5T_STRING ? "a string" : "an integer");
    return -1;
}

/* An integer attribute of one element, converted to `mem_type` (int64 or uint64). */
static int read_integer(hid_t obj, const char *name, hid_t mem_type, void *out, char *err, size_t errlen) {
    hid_t attr = open_attr(obj, name, H5T_INTEGER, err, errlen);
    if (attr < 0) return -1;
    hid_t space = H5Aget_space(attr);
    int rc = space >= 0 && H5Sget_simple_extent_npoints(space) == 1 && H5Aread(attr, mem_type, out) >= 0
                 ? 0
                 : -1;
    if (space >= 0) H5Sclose(space);
    H5Aclose(attr);
    return rc == 0 ? 0 : rmx_seterr(err, errlen, "attribute '%s' is not a single integer", name);
}

/* A string attribute (fixed or variable length, scalar or 1-D) as *n strdup'ed strings. */
static char **read_strings(hid_t obj, const char *name, size_t *n, char *err, size_t errlen) {
    hid_t attr = open_attr(obj, name, H5T_STRING, err, errlen);
    if (attr < 0) return NULL;
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr), mem = H5Tcopy(H5T_C_S1);
    hssize_t count = H5Sget_simple_extent_npoints(space);
    *n = count > 0 ? (size_t)count : 0;
    char **out = xcalloc(*n, sizeof *out);
    int rc = -1;
    H5Tset_cset(mem, H5Tget_cset(type));
    if (H5Tis_variable_str(type) > 0) {
        char **vl = xcalloc(*n, sizeof *vl);
        if (H5Tset_size(mem, H5T_VARIABLE) >= 0 && H5Aread(attr, mem, vl) >= 0) rc = 0;
        for (size_t i = 0; i < *n; i++) {
            out[i] = strdup(rc == 0 && vl[i] ? vl[i] : "");
            if (vl[i]) H5free_memory(vl[i]);
        }
        free(vl);
    } else {
        size_t width = H5Tget_size(type);
        char *block = xcalloc(*n, width);
        if (H5Tset_size(mem, width) >= 0 && H5Tset_strpad(mem, H5Tget_strpad(type)) >= 0 &&
            H5Aread(attr, mem, block) >= 0)
            rc = 0;
        for (size_t i = 0; i < *n; i++) out[i] = strndup(block + i * width, width);
        free(block);
    }
    H5Tclose(mem);
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(attr);
    if (rc == 0) return out;
    free_lines(out, *n);
    rmx_seterr(err, errlen, "attribute '%s' cannot be read", name);
    return NULL;
}

/* A scalar string attribute into out. */
static int read_string(hid_t obj, const char *name, char *out, size_t outlen, char *err, size_t errlen) {
    size_t n = 0;
    char **s = read_strings(obj, name, &n, err, errlen);
    if (!s) return -1;
    snprintf(out, outlen, "%s", n ? s[0] : "");
    free_lines(s, n);
    return 0;
}

/* ---- reading a file ---- */

typedef struct {
    hid_t file;
    const char *path;
    const rmx_ckpt_layout *layout;
    char *err;
    size_t errlen;
} read_job;

static rmx_ckpt_status damaged(read_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets the message (why the file cannot be used) and says so. */
static rmx_ckpt_status damaged(read_job *job, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->err, job->errlen, fmt, ap);
    va_end(ap);
    return RMX_CKPT_DAMAGED;
}

static rmx_ckpt_status read_counters(read_job *job, rmx_ckpt_meta *m) {
    struct {
        const char *name;
        int64_t *out;
    } fields[] = {{"step", &m->step}, {"samples_seen", &m->samples_seen}, {"adam_step", &m->adam_step},
                  {"nonfinite_in_row", &m->nonfinite_in_row}, {"nonfinite_total", &m->nonfinite_total}};
    int64_t world = 0, batch = 0, micro = 0;
    char why[512];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (read_integer(job->file, fields[i].name, H5T_NATIVE_INT64, fields[i].out, why, sizeof why) != 0)
            return damaged(job, "%s", why);
    if (read_integer(job->file, "seed", H5T_NATIVE_UINT64, &m->seed, why, sizeof why) != 0 ||
        read_integer(job->file, "world_size", H5T_NATIVE_INT64, &world, why, sizeof why) != 0 ||
        read_integer(job->file, "global_batch", H5T_NATIVE_INT64, &batch, why, sizeof why) != 0 ||
        read_integer(job->file, "micro_batch", H5T_NATIVE_INT64, &micro, why, sizeof why) != 0)
        return damaged(job, "%s", why);
    m->world_size = (int32_t)world;
    m->global_batch = (int32_t)batch;
    m->micro_batch = (int32_t)micro;
    if (m->step < 0 || world < 1 || batch < 1)
        return damaged(job, "implausible step, world_size or global_batch");
    return RMX_CKPT_LOADED;
}

static rmx_ckpt_status read_header(read_job *job, const char *stage, rmx_ckpt_meta *m) {
    char format[64], why[512];
    int64_t version = 0;
    if (read_string(job->file, "format", format, sizeof format, why, sizeof why) != 0)
        return damaged(job, "%s", why);
    if (strcmp(format, RMX_CKPT_FORMAT) != 0)
        return damaged(job, "attribute 'format' is '%s', not '%s'", format, RMX_CKPT_FORMAT);
    if (read_integer(job->file, "format_version", H5T_NATIVE_INT64, &version, why, sizeof why) != 0)
        return damaged(job, "%s", why);
    if (version != RMX_CKPT_VERSION) {
        rmx_seterr(job->err, job->errlen,
                   "checkpoint %s has format version %" PRId64 "; this remixer-train reads version %d",
                   job->path, version, RMX_CKPT_VERSION);
        return RMX_CKPT_REFUSED;
    }
    if (read_string(job->file, "stage", m->stage, sizeof m->stage, why, sizeof why) != 0)
        return damaged(job, "%s", why);
    rmx_ckpt_status st = read_counters(job, m);
    if (st != RMX_CKPT_LOADED) return st;
    if (strcmp(m->stage, stage) != 0) {
        rmx_seterr(job->err, job->errlen, "checkpoint %s is of stage '%s' but the config's stage is '%s'",
                   job->path, m->stage, stage);
        return RMX_CKPT_REFUSED;
    }
    if (m->adam_step != m->step) {
        rmx_seterr(job->err, job->errlen,
                   "checkpoint %s has adam_step %" PRId64 " at step %" PRId64
                   "; this remixer-train counts every step as an AdamW step",
                   job->path, m->adam_step, m->step);
        return RMX_CKPT_REFUSED;
    }
    return RMX_CKPT_LOADED;
}

/* "name [shape]" -> the length of name, and the "[shape]" part. */
static size_t name_length(const char *line) {
    const char *bracket = strstr(line, " [");
    return bracket ? (size_t)(bracket - line) : strlen(line);
}

static const char *shape_of(const char *line) {
    const char *bracket = strstr(line, " [");
    return bracket ? bracket + 1 : "[]";
}

static int find_by_name(char **lines, size_t n, const char *line) {
    size_t len = name_length(line);
    for (size_t i = 0; i < n; i++)
        if (name_length(lines[i]) == len && strncmp(lines[i], line, len) == 0) return (int)i;
    return -1;
}

/* Compares the tensor list of a group in the file (`have`) with the model's (`want`) as sets of
 * names with shapes; the message names the first difference and counts the others. */
static int compare_tensors(read_job *job, const char *group, char **have, size_t n_have, char **want,
                           size_t n_want) {
    char first[LINE_MAX_CHARS * 2 + RMX_CKPT_PATH_MAX + 64] = "";
    int differences = 0;
    for (size_t i = 0; i < n_want; i++) {
        int j = find_by_name(have, n_have, want[i]);
        if (j >= 0 && strcmp(shape_of(have[j]), shape_of(want[i])) == 0) continue;
        if (differences++) continue;
        if (j < 0)
            snprintf(first, sizeof first, "checkpoint %s lacks %s (/%s), which the model has", job->path,
                     want[i], group);
        else
            snprintf(first, sizeof first, "checkpoint %s has %s but the model has %s", job->path, have[j],
                     shape_of(want[i]));
    }
    for (size_t j = 0; j < n_have; j++) {
        if (find_by_name(want, n_want, have[j]) >= 0 || differences++) continue;
        snprintf(first, sizeof first, "checkpoint %s has %s (/%s), which the model lacks", job->path, have[j],
                 group);
    }
    if (differences == 0) return 0;
    if (differences == 1) return rmx_seterr(job->err, job->errlen, "%s", first);
    return rmx_seterr(job->err, job->errlen, "%s (and %d more differences)", first, differences - 1);
}

/* Whether a group's tensor list names exactly the datasets the group stores, each once (those of
 * /optim are in /optim/m). A file this program wrote always agrees with itself; one that does not
 * is damaged (a file without the checksum block, read as it is), not of another architecture. */
static bool list_matches_datasets(read_job *job, const char *group, char **have, size_t n_have) {
    char path[64], name[LINE_MAX_CHARS + 64];
    snprintf(path, sizeof path, strcmp(group, "optim") == 0 ? "/optim/m" : "/%s", group);
    H5G_info_t info;
    hid_t g = H5Gopen2(job->file, path, H5P_DEFAULT);
    bool ok = g >= 0 && H5Gget_info(g, &info) >= 0 && info.nlinks == n_have;
    if (g >= 0) H5Gclose(g);
    for (size_t i = 0; ok && i < n_have; i++) {
        int len = (int)name_length(have[i]);
        snprintf(name, sizeof name, "%s/%.*s", path, len, have[i]);
        ok = len > 0 && strchr(have[i], '/') == NULL && find_by_name(have, i, have[i]) < 0 &&
             H5Lexists(job->file, name, H5P_DEFAULT) > 0;
    }
    return ok;
}

static rmx_ckpt_status check_group(read_job *job, const char *group) {
    char path[64], why[512];
    snprintf(path, sizeof path, "/%s", group);
    int required = strcmp(group, "model") == 0 || strcmp(group, "optim") == 0;
    if (H5Lexists(job->file, path, H5P_DEFAULT) <= 0) {
        if (required) return damaged(job, "group %s is missing", path);
        rmx_seterr(job->err, job->errlen, "checkpoint %s has no %s, which the model keeps", job->path, path);
        return RMX_CKPT_REFUSED;
    }
    hid_t g = H5Gopen2(job->file, path, H5P_DEFAULT);
    size_t n_have = 0;
    char **have = g >= 0 ? read_strings(g, "tensors", &n_have, why, sizeof why) : NULL;
    if (g >= 0) H5Gclose(g);
    if (!have) return damaged(job, "group %s: %s", path, g >= 0 ? why : "cannot be opened");
    char **want;
    int n_want = tensor_lines(job->layout, group, &want);
    rmx_ckpt_status st = RMX_CKPT_LOADED;
    if (compare_tensors(job, group, have, n_have, want, (size_t)n_want) != 0)
        st = list_matches_datasets(job, group, have, n_have)
                 ? RMX_CKPT_REFUSED
                 : damaged(job, "group %s: its tensor list does not name the datasets it holds", path);
    free_lines(have, n_have);
    free_lines(want, (size_t)n_want);
    return st;
}

static rmx_ckpt_status check_architecture(read_job *job) {
    const rmx_ckpt_layout *layout = job->layout;
    for (int i = 0; i < layout->n_parts; i++) {
        if (group_seen_before(layout, i)) continue;
        rmx_ckpt_status st = check_group(job, layout->part[i].group);
        if (st != RMX_CKPT_LOADED) return st;
    }
    for (int i = 0; i < layout->n_parts; i++)
        if (layout->part[i].with_adam) return check_group(job, "optim");
    return RMX_CKPT_LOADED;
}

static int dims_match(hid_t ds, const rmx_param_info *t) {
    hid_t space = H5Dget_space(ds);
    hsize_t dims[RMX_PARAM_MAX_DIMS + 1];
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int ok = ndim == t->ndim;
    if (ok) H5Sget_simple_extent_dims(space, dims, NULL);
    for (int d = 0; ok && d < ndim; d++) ok = dims[d] == (hsize_t)t->shape[d];
    if (space >= 0) H5Sclose(space);
    return ok;
}

/* Reads a whole dataset: HDF5 verifies the Fletcher32 checksum of every chunk it reads. */
static rmx_ckpt_status read_tensor(read_job *job, const char *group_path, const rmx_param_info *t,
                                   float *out) {
    char name[LINE_MAX_CHARS + 64];
    snprintf(name, sizeof name, "%s/%s", group_path, t->name);
    if (H5Lexists(job->file, name, H5P_DEFAULT) <= 0) return damaged(job, "dataset %s is missing", name);
    hid_t ds = H5Dopen2(job->file, name, H5P_DEFAULT);
    if (ds < 0) return damaged(job, "dataset %s cannot be opened", name);
    hid_t type = H5Dget_type(ds);
    int is_float = type >= 0 && H5Tget_class(type) == H5T_FLOAT;
    if (type >= 0) H5Tclose(type);
    rmx_ckpt_status st = RMX_CKPT_LOADED;
    unsigned long long stored, file_size;
    if (!is_float || !dims_match(ds, t)) {
        st = damaged(job, "dataset %s is not float with the shape its group's tensor list gives", name);
    } else if (rmx_h5_storage_exceeds_file(job->file, ds, &stored, &file_size)) {
        /* Only a file without the checksum block, or one made by hand, gets here. */
        st = damaged(job, "dataset %s claims %llu bytes of data but the file holds %llu", name, stored, file_size);
    } else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        char detail[512];
        rmx_h5_error_detail(detail, sizeof detail);
        st = damaged(job, "%s: cannot read: %s", name, detail);
    }
    H5Dclose(ds);
    return st;
}

static rmx_ckpt_status read_registry(read_job *job, const char *group_path, const rmx_params *p,
                                     float *host) {
    for (int t = 0; t < p->count; t++) {
        rmx_ckpt_status st = read_tensor(job, group_path, &p->info[t], host + p->info[t].offset);
        if (st != RMX_CKPT_LOADED) return st;
    }
    return RMX_CKPT_LOADED;
}

static rmx_ckpt_status read_tensors(read_job *job, rmx_ckpt_host *h) {
    const rmx_ckpt_layout *layout = job->layout;
    for (int i = 0; i < layout->n_parts; i++) {
        const rmx_ckpt_part *part = &layout->part[i];
        char group_path[64];
        snprintf(group_path, sizeof group_path, "/%s", part->group);
        rmx_ckpt_status st = read_registry(job, group_path, part->params, h->values[i]);
        if (st != RMX_CKPT_LOADED) return st;
        if (!part->with_adam) continue;
        st = read_registry(job, "/optim/m", part->params, h->m[i]);
        if (st == RMX_CKPT_LOADED) st = read_registry(job, "/optim/v", part->params, h->v[i]);
        if (st != RMX_CKPT_LOADED) return st;
    }
    return RMX_CKPT_LOADED;
}

rmx_ckpt_status rmx_ckpt_read(const char *path, const rmx_ckpt_layout *layout, const char *stage,
                              rmx_ckpt_meta *meta, rmx_ckpt_host *h, char *err, size_t errlen) {
    memset(meta, 0, sizeof *meta);
    read_job job = {.file = -1, .path = path, .layout = layout, .err = err, .errlen = errlen};
    seal_status seal = verify_seal(path, err, errlen);
    if (seal == SEAL_DAMAGED || seal == SEAL_FOREIGN) return RMX_CKPT_DAMAGED;
    if (seal == SEAL_NEWER) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        rmx_seterr(err, errlen, "checkpoint %s: %s", path, why);
        return RMX_CKPT_REFUSED;
    }
    if (seal == SEAL_OLD_FORMAT && !old_format_survives(path, err, errlen)) return RMX_CKPT_DAMAGED;
    rmx_h5_lock();
    job.file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    rmx_ckpt_status st;
    if (job.file < 0) {
        char detail[512];
        rmx_h5_error_detail(detail, sizeof detail);
        st = damaged(&job, "cannot open it as HDF5: %s", detail);
    } else {
        st = read_header(&job, stage, meta);
        if (st == RMX_CKPT_LOADED) st = check_architecture(&job);
        if (st == RMX_CKPT_LOADED) st = read_tensors(&job, h);
        H5Fclose(job.file);
    }
    rmx_h5_unlock();
    return st;
}

/* ---- reading parts of a checkpoint ---- */

struct rmx_ckpt_reader {
    hid_t file;
    char path[RMX_CKPT_PATH_MAX];
    char stage[16];
};

/* A float attribute of one element. */
static int read_double(hid_t obj, const char *name, double *out, char *err, size_t errlen) {
    hid_t attr = open_attr(obj, name, H5T_FLOAT, err, errlen);
    if (attr < 0) return -1;
    hid_t space = H5Aget_space(attr);
    int rc = space >= 0 && H5Sget_simple_extent_npoints(space) == 1 && H5Aread(attr, H5T_NATIVE_DOUBLE, out) >= 0
                 ? 0
                 : -1;
    if (space >= 0) H5Sclose(space);
    H5Aclose(attr);
    return rc == 0 ? 0 : rmx_seterr(err, errlen, "attribute '%s' is not a single number", name);
}

rmx_ckpt_reader *rmx_ckpt_open(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) { /* "No such file or directory" says more than HDF5's message */
        rmx_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    rmx_ckpt_reader *r = xcalloc(1, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    char why[512], format[64] = "";
    int64_t version = 0;
    seal_status seal = verify_seal(path, why, sizeof why);
    if (seal == SEAL_DAMAGED || seal == SEAL_NEWER || seal == SEAL_FOREIGN) {
        rmx_seterr(err, errlen, "%s: %s%s", path,
                   seal == SEAL_DAMAGED   ? "damaged checkpoint: "
                   : seal == SEAL_FOREIGN ? "cannot open it as a checkpoint: "
                                          : "",
                   why);
        r->file = -1;
        rmx_ckpt_close(r);
        return NULL;
    }
    if (seal == SEAL_OLD_FORMAT && !old_format_survives(path, why, sizeof why)) {
        rmx_seterr(err, errlen, "%s: damaged checkpoint: %s", path, why);
        r->file = -1;
        rmx_ckpt_close(r);
        return NULL;
    }
    rmx_h5_lock();
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int rc = 0;
    if (r->file < 0) {
        rmx_h5_error_detail(why, sizeof why);
        rc = rmx_seterr(err, errlen, "%s: cannot open it as a checkpoint (HDF5: %s)", path, why);
    } else if (read_string(r->file, "format", format, sizeof format, why, sizeof why) != 0 ||
               strcmp(format, RMX_CKPT_FORMAT) != 0) {
        rc = rmx_seterr(err, errlen, "%s: not a Remixer checkpoint (%s)", path,
                        format[0] ? "attribute 'format' differs" : why);
    } else if (read_integer(r->file, "format_version", H5T_NATIVE_INT64, &version, why, sizeof why) != 0) {
        rc = rmx_seterr(err, errlen, "%s: %s", path, why);
    } else if (version != RMX_CKPT_VERSION) {
        rc = rmx_seterr(err, errlen, "%s: checkpoint format version %" PRId64 "; this program reads version %d",
                        path, version, RMX_CKPT_VERSION);
    } else if (read_string(r->file, "stage", r->stage, sizeof r->stage, why, sizeof why) != 0) {
        rc = rmx_seterr(err, errlen, "%s: %s", path, why);
    }
    rmx_h5_unlock();
    if (rc == 0) return r;
    rmx_ckpt_close(r);
    return NULL;
}

void rmx_ckpt_close(rmx_ckpt_reader *r) {
    if (!r) return;
    if (r->file >= 0) {
        rmx_h5_lock();
        H5Fclose(r->file);
        rmx_h5_unlock();
    }
    free(r);
}

const char *rmx_ckpt_reader_path(const rmx_ckpt_reader *r) { return r->path; }
const char *rmx_ckpt_reader_stage(const rmx_ckpt_reader *r) { return r->stage; }

int rmx_ckpt_has_group(rmx_ckpt_reader *r, const char *group) {
    char path[96];
    snprintf(path, sizeof path, "/%s", group);
    rmx_h5_lock();
    int yes = H5Lexists(r->file, path, H5P_DEFAULT) > 0;
    rmx_h5_unlock();
    return yes;
}

/* Opens /group (the root for ""); -1 with a message when it is not there. */
static hid_t open_group(rmx_ckpt_reader *r, const char *group, char *err, size_t errlen) {
    if (!group[0]) return r->file;
    char path[96];
    snprintf(path, sizeof path, "/%s", group);
    hid_t g = H5Lexists(r->file, path, H5P_DEFAULT) > 0 ? H5Gopen2(r->file, path, H5P_DEFAULT) : -1;
    if (g < 0) rmx_seterr(err, errlen, "%s: group %s is missing", r->path, path);
    return g;
}

static void close_group(rmx_ckpt_reader *r, hid_t g) {
    if (g >= 0 && g != r->file) H5Gclose(g);
}

/* Reads one attribute of /group through `get`, prefixing a failure with the file and group. */
static int get_attr(rmx_ckpt_reader *r, const char *group, const char *name, void *out, char *err, size_t errlen,
                    int (*get)(hid_t, const char *, void *, char *, size_t)) {
    rmx_h5_lock();
    hid_t g = open_group(r, group, err, errlen);
    char why[512];
    int rc = g >= 0 ? get(g, name, out, why, sizeof why) : -1;
    if (g >= 0 && rc != 0) rmx_seterr(err, errlen, "%s: /%s: %s", r->path, group, why);
    close_group(r, g);
    rmx_h5_unlock();
    return rc;
}

static int get_i64(hid_t g, const char *name, void *out, char *err, size_t errlen) {
    return read_integer(g, name, H5T_NATIVE_INT64, out, err, errlen);
}

static int get_f64(hid_t g, const char *name, void *out, char *err, size_t errlen) {
    return read_double(g, name, out, err, errlen);
}

static int get_str(hid_t g, const char *name, void *out, char *err, size_t errlen) {
    size_t n = 0;
    char **s = read_strings(g, name, &n, err, errlen);
    if (!s) return -1;
    *(char **)out = strdup(n ? s[0] : "");
    free_lines(s, n);
    return 0;
}

int rmx_ckpt_get_i64(rmx_ckpt_reader *r, const char *group, const char *name, int64_t *out, char *err,
                     size_t errlen) {
    return get_attr(r, group, name, out, err, errlen, get_i64);
}

int rmx_ckpt_get_f64(rmx_ckpt_reader *r, const char *group, const char *name, double *out, char *err,
                     size_t errlen) {
    return get_attr(r, group, name, out, err, errlen, get_f64);
}

char *rmx_ckpt_get_str(rmx_ckpt_reader *r, const char *group, const char *name, char *err, size_t errlen) {
    char *s = NULL;
    return get_attr(r, group, name, &s, err, errlen, get_str) == 0 ? s : NULL;
}

static int get_genres(hid_t g, const char *name, void *out, char *err, size_t errlen) {
    rmx_mel_params *p = out;
    size_t n = 0;
    char **s = read_strings(g, name, &n, err, errlen);
    if (!s) return -1;
    int rc = n >= 1 && n <= RMX_MAX_GENRES ? 0 : rmx_seterr(err, errlen, "attribute '%s' holds %zu names", name, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (strlen(s[i]) >= RMX_GENRE_NAME_MAX) rc = rmx_seterr(err, errlen, "genre name %zu is too long", i);
        else snprintf(p->genre_names[i], RMX_GENRE_NAME_MAX, "%s", s[i]);
    }
    p->n_genres = (int)n;
    free_lines(s, n);
    return rc;
}

int rmx_ckpt_get_audio(rmx_ckpt_reader *r, const char *group, rmx_mel_params *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    for (int i = 0; i < rmx_mel_field_count; i++) {
        const rmx_mel_field *f = &rmx_mel_fields[i];
        char *at = (char *)p + f->offset;
        if (f->kind == RMX_FIELD_INT) {
            int64_t v = 0;
            if (rmx_ckpt_get_i64(r, group, f->name, &v, err, errlen) != 0) return -1;
            *(int *)at = (int)v;
        } else {
            double v = 0;
            if (rmx_ckpt_get_f64(r, group, f->name, &v, err, errlen) != 0) return -1;
            *(float *)at = (float)v;
        }
    }
    if (get_attr(r, group, "genre_names", p, err, errlen, get_genres) != 0) return -1;
    char where[RMX_CKPT_PATH_MAX + 16];
    snprintf(where, sizeof where, "%s: /%s", r->path, group);
    return rmx_mel_params_validate(p, where, err, errlen);
}

rmx_ckpt_status rmx_ckpt_load(rmx_ckpt_reader *r, const rmx_ckpt_layout *layout, char *err, size_t errlen) {
    read_job job = {.file = r->file, .path = r->path, .layout = layout, .err = err, .errlen = errlen};
    rmx_ckpt_host h;
    rmx_ckpt_host_alloc(&h, layout);
    rmx_h5_lock();
    rmx_ckpt_status st = check_architecture(&job);
    if (st == RMX_CKPT_LOADED) st = read_tensors(&job, &h);
    rmx_h5_unlock();
    if (st == RMX_CKPT_LOADED) rmx_ckpt_host_upload(&h, layout);
    rmx_ckpt_host_free(&h);
    return st;
}

/* ---- the resume policy (rank 0 picks and reads) ---- */

static int resume_auto(const rmx_ckpt_resume_request *rq, rmx_ckpt_meta *meta, rmx_ckpt_host *h, char *path,
                       size_t pathlen) {
    remove_temporaries(rq->dir);
    rmx_ckpt_file *files;
    int n = rmx_ckpt_list(rq->dir, &files), code = RMX_EXIT_OK;
    if (n == 0) {
        printf("no checkpoint in %s: starting at step 0\n", rq->dir);
        fflush(stdout);
    }
    for (int i = 0; i < n; i++) {
        char why[2048];
        rmx_ckpt_status st =
            rmx_ckpt_read(files[i].path, rq->layout, rq->cfg->stage, meta, h, why, sizeof why);
        if (st == RMX_CKPT_LOADED) {
            snprintf(path, pathlen, "%s", files[i].path);
            break;
        }
        if (st == RMX_CKPT_REFUSED) {
            rmx_error("%s; refusing to resume (use another checkpoint.dir, or the model of that run)", why);
            code = RMX_EXIT_CHECKPOINT;
            break;
        }
        if (i + 1 < n) {
            rmx_warn("checkpoint %s is damaged (%s), falling back to %s", files[i].path, why,
                     base_name(files[i + 1].path));
            continue;
        }
        rmx_error("checkpoint %s is damaged (%s), and no older checkpoint in %s verifies", files[i].path, why,
                  rq->dir);
        code = RMX_EXIT_CHECKPOINT;
    }
    free(files);
    return code;
}

static int resume_never(const rmx_ckpt_resume_request *rq) {
    rmx_ckpt_file *files;
    int n = rmx_ckpt_list(rq->dir, &files);
    if (n > 0)
        rmx_warn("checkpoint.resume is never: starting at step 0 although %s holds %d checkpoint%s "
                 "(newest %s), which a later start with resume auto would pick up",
                 rq->dir, n, n == 1 ? "" : "s", base_name(files[0].path));
    free(files);
    return RMX_EXIT_OK;
}

static int resume_from_path(const rmx_ckpt_resume_request *rq, rmx_ckpt_meta *meta, rmx_ckpt_host *h,
                            char *path, size_t pathlen) {
    const char *file = rq->cfg->checkpoint.resume;
    struct stat st;
    if (stat(file, &st) != 0) {
        rmx_error("checkpoint.resume: %s: %s", file, strerror(errno));
        return RMX_EXIT_CHECKPOINT;
    }
    if (S_ISDIR(st.st_mode)) {
        rmx_error("checkpoint.resume: %s is a folder; name a ckpt-<step>.h5 file, or use auto with "
                  "checkpoint.dir",
                  file);
        return RMX_EXIT_CHECKPOINT;
    }
    char why[2048];
    rmx_ckpt_status status = rmx_ckpt_read(file, rq->layout, rq->cfg->stage, meta, h, why, sizeof why);
    if (status == RMX_CKPT_DAMAGED) rmx_error("checkpoint %s is damaged (%s)", file, why);
    if (status == RMX_CKPT_REFUSED) rmx_error("%s; refusing to resume", why);
    if (status != RMX_CKPT_LOADED) return RMX_EXIT_CHECKPOINT;
    snprintf(path, pathlen, "%s", file);
    return RMX_EXIT_OK;
}

/* Things that are allowed to differ but change what "continuing" means. */
static void warn_about_changes(const rmx_ckpt_resume_request *rq, const rmx_ckpt_meta *m, const char *path) {
    const rmx_config *c = rq->cfg;
    if (m->seed != c->train.seed)
        rmx_warn("checkpoint %s was written with train.seed %" PRIu64 ", the config has %" PRIu64
                 ": data order and noise from step %" PRId64 " on follow the new seed",
                 path, m->seed, c->train.seed, m->step);
    if (m->global_batch != c->train.global_batch)
        rmx_warn("checkpoint %s was written with train.global_batch %d, the config has %d: from step %" PRId64
                 " on each step takes %d samples, so the data stream does not continue where that run"
                 " stopped",
                 path, m->global_batch, c->train.global_batch, m->step, c->train.global_batch);
}

static void bcast_floats(const rmx_comm *c, float *buf, size_t n) {
    const size_t chunk = (size_t)INT_MAX / 2; /* MPI counts are ints */
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        MPI_Bcast(buf + off, (int)len, MPI_FLOAT, 0, c->world_comm);
    }
}

static void bcast_host(const rmx_comm *c, rmx_ckpt_host *h, const rmx_ckpt_layout *layout) {
    if (c->world == 1) return;
    for (int i = 0; i < layout->n_parts; i++) {
        size_t span = layout->part[i].params->span;
        bcast_floats(c, h->values[i], span);
        if (!layout->part[i].with_adam) continue;
        bcast_floats(c, h->m[i], span);
        bcast_floats(c, h->v[i], span);
    }
}

static int pick_and_read(const rmx_ckpt_resume_request *rq, rmx_ckpt_meta *meta, rmx_ckpt_host *h, char *path,
                         size_t pathlen) {
    const char *mode = rq->cfg->checkpoint.resume;
    if (strcmp(mode, "never") == 0) return resume_never(rq);
    if (strcmp(mode, "auto") == 0) return resume_auto(rq, meta, h, path, pathlen);
    return resume_from_path(rq, meta, h, path, pathlen);
}

int rmx_ckpt_resume(const rmx_ckpt_resume_request *rq, rmx_ckpt_meta *meta, char *path, size_t pathlen) {
    const rmx_comm *c = rq->comm;
    rmx_ckpt_host h;
    memset(meta, 0, sizeof *meta);
    path[0] = 0;
    /* exit code, resumed?, step, nonfinite_in_row, nonfinite_total */
    int64_t head[5] = {RMX_EXIT_OK, 0, 0, 0, 0};
    if (c->rank == 0) {
        rmx_ckpt_host_alloc(&h, rq->layout);
        head[0] = pick_and_read(rq, meta, &h, path, pathlen);
        head[1] = path[0] != 0;
        head[2] = meta->step;
        head[3] = meta->nonfinite_in_row;
        head[4] = meta->nonfinite_total;
    }
    MPI_Bcast(head, 5, MPI_INT64_T, 0, c->world_comm);
    if (head[0] == RMX_EXIT_OK && head[1] && c->world > 1) MPI_Bcast(path, (int)pathlen, MPI_CHAR, 0, c->world_comm);
    if (head[0] == RMX_EXIT_OK && head[1]) {
        if (c->rank != 0) rmx_ckpt_host_alloc(&h, rq->layout);
        bcast_host(c, &h, rq->layout);
        rmx_ckpt_host_upload(&h, rq->layout);
        meta->step = head[2];
        meta->nonfinite_in_row = head[3];
        meta->nonfinite_total = head[4];
    }
    if (c->rank == 0 || (head[0] == RMX_EXIT_OK && head[1])) rmx_ckpt_host_free(&h);
    if (c->rank == 0 && head[0] == RMX_EXIT_OK && head[1]) {
        printf("resumed from %s at step %" PRId64 " (written by %d rank%s)\n", path, meta->step,
               meta->world_size, meta->world_size == 1 ? "" : "s");
        fflush(stdout);
        warn_about_changes(rq, meta, path);
    }
    return (int)head[0];
}
