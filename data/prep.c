#include "data/prep.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/mel.h"
#include "util/exitcodes.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/progress.h"

enum { REASON_MAX = 256, PATH_MAX_LEN = 4096 };

/* ---------------------------------------------------------------- options */

void rmx_prep_default_options(rmx_prep_options *o) {
    memset(o, 0, sizeof *o);
    o->audio.sample_rate = 22050;
    o->audio.n_fft = 2048;
    o->audio.win_length = 2048;
    o->audio.hop_length = 256;
    o->audio.n_mels = 128;
    o->audio.fmin = 0.0f;
    o->audio.fmax = 11025.0f;
    o->audio.log_floor = 1e-5f;
    o->audio.segment_frames = 256;
    o->audio.norm_mean = 0.0f;
    o->audio.norm_std = 1.0f;
    o->val_fraction = 0.1;
    o->train_shards = 4;
    o->val_shards = 1;
    o->threads = 1;
    o->seed = 0;
}

int rmx_prep_check_options(const rmx_prep_options *o, char *err, size_t errlen) {
    const rmx_mel_params *a = &o->audio;
    if (a->sample_rate < 1000 || a->sample_rate > 384000)
        return rmx_seterr(err, errlen, "--sample-rate must be between 1000 and 384000 Hz, got %d",
                          a->sample_rate);
    if (a->n_fft < 16 || a->n_fft > 65536 || a->n_fft % 2 != 0)
        return rmx_seterr(err, errlen, "--n-fft must be even and between 16 and 65536, got %d", a->n_fft);
    if (a->hop_length < 1 || a->hop_length > a->n_fft)
        return rmx_seterr(err, errlen, "--hop must be between 1 and --n-fft (%d), got %d", a->n_fft,
                          a->hop_length);
    if (a->n_mels < 1 || a->n_mels > 1024)
        return rmx_seterr(err, errlen, "--mels must be between 1 and 1024, got %d", a->n_mels);
    if (!(a->fmin >= 0.0f))
        return rmx_seterr(err, errlen, "--fmin must be at least 0 Hz, got %g", (double)a->fmin);
    if (!(a->fmax <= a->sample_rate / 2.0f))
        return rmx_seterr(err, errlen, "--fmax must be at most half the sample rate (%g Hz), got %g",
                          a->sample_rate / 2.0, (double)a->fmax);
    if (!(a->fmin < a->fmax))
        return rmx_seterr(err, errlen, "--fmin (%g Hz) must be below --fmax (%g Hz)", (double)a->fmin,
                          (double)a->fmax);
    if (!(a->log_floor > 0.0f) || !isfinite(a->log_floor))
        return rmx_seterr(err, errlen, "--log-floor must be positive, got %g", (double)a->log_floor);
    if (a->segment_frames < 1 || a->segment_frames > 65536)
        return rmx_seterr(err, errlen, "--segment must be between 1 and 65536 frames, got %d",
                          a->segment_frames);
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return rmx_seterr(err, errlen, "--val-fraction must be in [0, 1), got %g", o->val_fraction);
    if (o->train_shards < 1 || o->train_shards > 99999)
        return rmx_seterr(err, errlen, "--shards must be between 1 and 99999, got %d", o->train_shards);
    if (o->val_shards < 1 || o->val_shards > 99999)
        return rmx_seterr(err, errlen, "--val-shards must be between 1 and 99999, got %d", o->val_shards);
    if (o->threads < 1 || o->threads > 1024)
        return rmx_seterr(err, errlen, "--threads must be between 1 and 1024, got %d", o->threads);
    return 0;
}

const char *rmx_prep_skip_name(int reason) {
    return reason == RMX_SKIP_TOO_SHORT ? "too short" : rmx_audio_status_name((rmx_audio_status)reason);
}

/* ---------------------------------------------------------------- the file list */

typedef struct {
    char *path;   /* to open */
    char *source; /* as recorded in the shards: relative to the folder, or as the CSV wrote it */
    int genre;
} prep_file;

typedef struct {
    prep_file *files;
    int n, cap;
    int n_genres;
    char genres[RMX_MAX_GENRES][RMX_GENRE_NAME_MAX];
} prep_list;

static void list_free(prep_list *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->files[i].path);
        free(l->files[i].source);
    }
    free(l->files);
    memset(l, 0, sizeof *l);
}

static int list_add(prep_list *l, const char *path, const char *source, int genre) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        prep_file *f = realloc(l->files, (size_t)cap * sizeof *f);
        if (!f) return -1;
        l->files = f;
        l->cap = cap;
    }
    prep_file *f = &l->files[l->n];
    f->path = strdup(path);
    f->source = strdup(source);
    f->genre = genre;
    if (!f->path || !f->source) {
        free(f->path);
        free(f->source);
        return -1;
    }
    l->n++;
    return 0;
}

static int add_genre(prep_list *l, const char *name, const char *where, char *err, size_t errlen) {
    if (l->n_genres == RMX_MAX_GENRES)
        return rmx_seterr(err, errlen, "%s: more than %d genres", where, RMX_MAX_GENRES);
    if (strlen(name) >= RMX_GENRE_NAME_MAX)
        return rmx_seterr(err, errlen, "%s: genre name '%s' is longer than %d characters", where, name,
                          RMX_GENRE_NAME_MAX - 1);
    snprintf(l->genres[l->n_genres++], RMX_GENRE_NAME_MAX, "%s", name);
    return 0;
}

/* "a/b" into out; -1 when it does not fit (paths longer than PATH_MAX_LEN are refused). */
static int join_path(char *out, size_t cap, const char *a, const char *b) {
    int n = snprintf(out, cap, "%s/%s", a, b);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int has_audio_extension(const char *name) {
    static const char *const exts[] = {".wav", ".flac", ".ogg", ".mp3"};
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        size_t el = strlen(exts[i]);
        if (len > el && strcasecmp(name + len - el, exts[i]) == 0) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in `dir`, hidden ones left out; `want_dirs` picks folders, otherwise audio names
 * (whatever they are on disk: a dangling link or a folder named x.wav is listed, then skipped
 * with a reason, so the user hears about it). */
static int sorted_entries(const char *dir, int want_dirs, char ***out, int *count, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) return rmx_seterr(err, errlen, "%s: cannot read folder: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char full[PATH_MAX_LEN];
        if (join_path(full, sizeof full, dir, e->d_name) != 0) {
            rc = rmx_seterr(err, errlen, "%s/%s: path too long", dir, e->d_name);
            break;
        }
        int keep = want_dirs ? rmx_is_dir(full) : has_audio_extension(e->d_name);
        if (!keep) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(names, (size_t)cap * sizeof *grown);
            if (!grown) {
                rc = rmx_seterr(err, errlen, "out of memory listing %s", dir);
                break;
            }
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = rmx_seterr(err, errlen, "out of memory listing %s", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    *count = n;
    return rc;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int list_genre_folder(prep_list *l, const char *root, const char *genre, char *err, size_t errlen) {
    char dir[PATH_MAX_LEN];
    if (join_path(dir, sizeof dir, root, genre) != 0)
        return rmx_seterr(err, errlen, "%s/%s: path too long", root, genre);
    char **files = NULL;
    int n = 0;
    int rc = sorted_entries(dir, 0, &files, &n, err, errlen);
    if (rc == 0 && n == 0) rmx_warn("%s: no .wav/.flac/.ogg/.mp3 files, not a genre", dir);
    if (rc == 0 && n > 0) rc = add_genre(l, genre, root, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) {
        char path[PATH_MAX_LEN], source[PATH_MAX_LEN];
        if (join_path(path, sizeof path, dir, files[i]) != 0 ||
            join_path(source, sizeof source, genre, files[i]) != 0)
            rc = rmx_seterr(err, errlen, "%s/%s: path too long", dir, files[i]);
        else if (list_add(l, path, source, l->n_genres - 1) != 0)
            rc = rmx_seterr(err, errlen, "out of memory");
    }
    free_names(files, n);
    return rc;
}

static int list_folder(prep_list *l, const char *root, char *err, size_t errlen) {
    char **genres = NULL;
    int n = 0;
    int rc = sorted_entries(root, 1, &genres, &n, err, errlen);
    for (int g = 0; rc == 0 && g < n; g++) rc = list_genre_folder(l, root, genres[g], err, errlen);
    free_names(genres, n);
    return rc;
}

/* One CSV field: plain, or double-quoted with "" standing for a quote. Returns the position
 * after the field's delimiter, or NULL at the end of the line. */
static char *csv_field(char *p, char *field, size_t cap) {
    size_t len = 0;
    if (*p == '"') {
        for (p++; *p && !(*p == '"' && p[1] != '"'); p++) {
            if (*p == '"') p++;
            if (len + 1 < cap) field[len++] = *p;
        }
        if (*p == '"') p++;
    } else {
        for (; *p && *p != ','; p++)
            if (len + 1 < cap) field[len++] = *p;
    }
    while (len > 0 && isspace((unsigned char)field[len - 1])) len--;
    field[len] = 0;
    while (*p && *p != ',') p++;
    return *p == ',' ? p + 1 : NULL;
}

/* Splits a line into its first two fields (each buffer PATH_MAX_LEN); returns the field count,
 * 3 meaning "more than two". */
static int csv_split_line(char *line, char *path, char *genre) {
    while (isspace((unsigned char)*line)) line++;
    char *rest = csv_field(line, path, PATH_MAX_LEN);
    if (!rest) return 1;
    while (isspace((unsigned char)*rest)) rest++;
    return csv_field(rest, genre, PATH_MAX_LEN) ? 3 : 2;
}

typedef struct {
    char *path, *genre;
    int line;
} csv_row;

static void free_rows(csv_row *rows, int n) {
    for (int i = 0; i < n; i++) {
        free(rows[i].path);
        free(rows[i].genre);
    }
    free(rows);
}

static int grow_rows(csv_row **rows, int n, int *cap) {
    if (n < *cap) return 0;
    int want = *cap ? 2 * *cap : 256;
    csv_row *grown = realloc(*rows, (size_t)want * sizeof *grown);
    if (!grown) return -1;
    *rows = grown;
    *cap = want;
    return 0;
}

static int read_csv_rows(const char *csv, csv_row **out, int *count, char *err, size_t errlen) {
    FILE *f = fopen(csv, "r");
    if (!f) return rmx_seterr(err, errlen, "%s: cannot open: %s", csv, strerror(errno));
    csv_row *rows = NULL;
    int n = 0, cap = 0, rc = 0, lineno = 0, seen_content = 0;
    char *line = NULL, *path = malloc(PATH_MAX_LEN), *genre = malloc(PATH_MAX_LEN);
    if (!path || !genre) rc = rmx_seterr(err, errlen, "out of memory reading %s", csv);
    size_t linecap = 0;
    while (rc == 0 && getline(&line, &linecap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (line[strspn(line, " \t")] == 0) continue;
        int fields = csv_split_line(line, path, genre);
        int first = !seen_content;
        seen_content = 1;
        if (first && fields == 2 && strcasecmp(path, "path") == 0 && strcasecmp(genre, "genre") == 0)
            continue;
        if (fields != 2 || !path[0] || !genre[0]) {
            rc = rmx_seterr(err, errlen, "%s:%d: expected 'path,genre', got '%s'", csv, lineno, line);
        } else if (strlen(path) >= PATH_MAX_LEN - 1) {
            rc = rmx_seterr(err, errlen, "%s:%d: path longer than %d characters", csv, lineno,
                            PATH_MAX_LEN - 2);
        } else if (grow_rows(&rows, n, &cap) != 0) {
            rc = rmx_seterr(err, errlen, "out of memory reading %s", csv);
        } else {
            csv_row *row = &rows[n++];
            *row = (csv_row){strdup(path), strdup(genre), lineno};
            if (!row->path || !row->genre) rc = rmx_seterr(err, errlen, "out of memory reading %s", csv);
        }
    }
    free(line);
    free(path);
    free(genre);
    fclose(f);
    *out = rows;
    *count = n;
    return rc;
}

typedef struct {
    int genre;
    const csv_row *row;
} csv_sorted;

static int cmp_csv_sorted(const void *a, const void *b) {
    const csv_sorted *x = a, *y = b;
    if (x->genre != y->genre) return x->genre < y->genre ? -1 : 1;
    return strcmp(x->row->path, y->row->path);
}

static int genre_index(const prep_list *l, const char *name) {
    for (int g = 0; g < l->n_genres; g++)
        if (strcmp(l->genres[g], name) == 0) return g;
    return -1;
}

/* Genres sorted by name; files ordered by (genre, path) as for a folder. */
static int list_from_rows(prep_list *l, const char *csv, const csv_row *rows, int n, char *err,
                          size_t errlen) {
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    csv_sorted *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    int rc = (!names || !order) ? rmx_seterr(err, errlen, "out of memory") : 0;
    for (int i = 0; rc == 0 && i < n; i++) names[i] = rows[i].genre;
    if (rc == 0) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; rc == 0 && i < n; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0) rc = add_genre(l, names[i], csv, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) order[i] = (csv_sorted){genre_index(l, rows[i].genre), &rows[i]};
    if (rc == 0) qsort(order, (size_t)n, sizeof *order, cmp_csv_sorted);
    char dir[PATH_MAX_LEN];
    snprintf(dir, sizeof dir, "%s", csv);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    for (int i = 0; rc == 0 && i < n; i++) {
        const char *p = order[i].row->path;
        char path[PATH_MAX_LEN];
        int too_long = p[0] == '/' ? snprintf(path, sizeof path, "%s", p) >= (int)sizeof path
                                   : join_path(path, sizeof path, dir, p) != 0;
        if (too_long)
            rc = rmx_seterr(err, errlen, "%s: path too long", p);
        else if (list_add(l, path, p, order[i].genre) != 0)
            rc = rmx_seterr(err, errlen, "out of memory");
    }
    free(names);
    free(order);
    return rc;
}

static int cmp_row_path(const void *a, const void *b) {
    const csv_row *x = *(const csv_row *const *)a, *y = *(const csv_row *const *)b;
    int c = strcmp(x->path, y->path);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* A file listed twice could land in both train and val, or carry two labels: refused. */
static int check_unique_paths(const char *csv, const csv_row *rows, int n, char *err, size_t errlen) {
    const csv_row **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) return rmx_seterr(err, errlen, "out of memory reading %s", csv);
    for (int i = 0; i < n; i++) sorted[i] = &rows[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_row_path);
    int rc = 0;
    for (int i = 1; rc == 0 && i < n; i++)
        if (strcmp(sorted[i]->path, sorted[i - 1]->path) == 0)
            rc = rmx_seterr(err, errlen, "%s:%d: '%s' is listed again (first on line %d)", csv,
                            sorted[i]->line, sorted[i]->path, sorted[i - 1]->line);
    free(sorted);
    return rc;
}

static int list_csv(prep_list *l, const char *csv, char *err, size_t errlen) {
    csv_row *rows = NULL;
    int n = 0;
    int rc = read_csv_rows(csv, &rows, &n, err, errlen);
    if (rc == 0) rc = check_unique_paths(csv, rows, n, err, errlen);
    if (rc == 0) rc = list_from_rows(l, csv, rows, n, err, errlen);
    free_rows(rows, n);
    return rc;
}

/* Returns an exit code: USAGE for an INPUT that is neither a folder nor a CSV, or a bad CSV. */
static int list_input(prep_list *l, const char *input, char *err, size_t errlen) {
    struct stat st;
    if (stat(input, &st) != 0) {
        rmx_seterr(err, errlen, "%s: %s", input, strerror(errno));
        return RMX_EXIT_USAGE;
    }
    int rc = S_ISDIR(st.st_mode) ? list_folder(l, input, err, errlen) : list_csv(l, input, err, errlen);
    if (rc != 0) return RMX_EXIT_USAGE;
    if (l->n == 0) {
        rmx_seterr(err, errlen, "%s: no audio files found (expected %s)", input,
                   S_ISDIR(st.st_mode) ? "sub-folders <genre>/ holding .wav, .flac, .ogg or .mp3 files"
                                       : "lines 'path,genre'");
        return RMX_EXIT_DATA;
    }
    return RMX_EXIT_OK;
}

/* ---------------------------------------------------------------- sharing the list between ranks */

/* Rank 0 lists the input and broadcasts it, so every rank works from one and the same list. */
static void pack_list(const prep_list *l, char **buf, long *len) {
    long size = 2 * (long)sizeof(int) + (long)sizeof l->genres;
    for (int i = 0; i < l->n; i++)
        size += (long)sizeof(int) + (long)strlen(l->files[i].path) + (long)strlen(l->files[i].source) + 2;
    char *b = malloc((size_t)size), *p = b;
    if (!b) {
        *buf = NULL;
        *len = 0;
        return;
    }
    memcpy(p, &l->n, sizeof(int));
    p += sizeof(int);
    memcpy(p, &l->n_genres, sizeof(int));
    p += sizeof(int);
    memcpy(p, l->genres, sizeof l->genres);
    p += sizeof l->genres;
    for (int i = 0; i < l->n; i++) {
        memcpy(p, &l->files[i].genre, sizeof(int));
        p += sizeof(int);
        size_t a = strlen(l->files[i].path) + 1, s = strlen(l->files[i].source) + 1;
        memcpy(p, l->files[i].path, a);
        p += a;
        memcpy(p, l->files[i].source, s);
        p += s;
    }
    *buf = b;
    *len = size;
}

static int unpack_list(prep_list *l, const char *p) {
    int n;
    memcpy(&n, p, sizeof(int));
    p += sizeof(int);
    memcpy(&l->n_genres, p, sizeof(int));
    p += sizeof(int);
    memcpy(l->genres, p, sizeof l->genres);
    p += sizeof l->genres;
    for (int i = 0; i < n; i++) {
        int genre;
        memcpy(&genre, p, sizeof(int));
        p += sizeof(int);
        const char *path = p;
        p += strlen(p) + 1;
        const char *source = p;
        p += strlen(p) + 1;
        if (list_add(l, path, source, genre) != 0) return -1;
    }
    return 0;
}

static int share_list(prep_list *l, int rank, MPI_Comm comm, char *err, size_t errlen) {
    char *buf = NULL;
    long len = 0;
    if (rank == 0) pack_list(l, &buf, &len);
    MPI_Bcast(&len, 1, MPI_LONG, 0, comm);
    if (rank != 0) buf = malloc((size_t)(len ? len : 1));
    int ok = buf != NULL && len > 0, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
    if (!all_ok) {
        free(buf);
        return rmx_seterr(err, errlen, "out of memory sharing the file list");
    }
    MPI_Bcast(buf, (int)len, MPI_CHAR, 0, comm);
    int rc = rank == 0 ? 0 : unpack_list(l, buf);
    free(buf);
    return rc == 0 ? 0 : rmx_seterr(err, errlen, "out of memory sharing the file list");
}

/* ---------------------------------------------------------------- threads */

typedef void (*item_fn)(void *ctx, long item);

typedef struct {
    atomic_long next;
    long n;
    item_fn fn;
    void *ctx;
} work_queue;

static void *worker(void *arg) {
    work_queue *q = arg;
    for (long k; (k = atomic_fetch_add(&q->next, 1)) < q->n;) q->fn(q->ctx, k);
    return NULL;
}

/* Calls fn(ctx, k) for k in [0, n) on up to `threads` threads, the caller being one of them. */
void rmx_prep_parallel_for(int threads, long n, item_fn fn, void *ctx) {
    work_queue q = {.n = n, .fn = fn, .ctx = ctx};
    atomic_init(&q.next, 0);
    int extra = (int)((threads < n ? threads : n) - 1), started = 0;
    pthread_t *tids = extra > 0 ? malloc((size_t)extra * sizeof *tids) : NULL;
    for (int t = 0; tids && t < extra; t++, started++)
        if (pthread_create(&tids[t], NULL, worker, &q) != 0) break;
    worker(&q);
    for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
    free(tids);
}

/* ---------------------------------------------------------------- the run's shared state */

enum { SPLIT_NONE = -1, SPLIT_TRAIN = 0, SPLIT_VAL = 1 };
static const char *const SPLIT_DIR[2] = {"train", "val"};

typedef struct {
    const rmx_prep_options *o;
    const prep_list *list;
    const rmx_mel *mel;
    int rank, world;
    /* per file, indexed like list->files; combined over ranks after each phase */
    int *status;        /* 0 usable, otherwise an RMX_SKIP_* / rmx_audio_status reason */
    int *late;          /* files found unusable while preparing them (after the split) */
    int *skip;          /* where the running phase records skips: status, then late */
    char *reason;       /* REASON_MAX bytes per file, the running phase's reasons */
    int *split, *shard; /* SPLIT_*, shard within the split */
    int64_t *segments;
    double *seconds_read;
    /* kept files whose header states more frames than decode (RMX_AUDIO_MAX_MISSING_SECONDS) */
    int64_t *frames_decoded, *frames_missing;
    double *seconds_missing;
    double *stat_n, *stat_mean, *stat_m2;
    int64_t *spill_offset; /* local: where this rank spilled the file's segments */
    /* shards */
    int n_shards[2]; /* after clamping to the number of files */
    /* this rank's work */
    long *mine;
    long n_mine;
    int spill_fd;
    int64_t spill_end;
    atomic_int failed; /* an I/O failure while preparing: the run stops after the phase */
    char failure[REASON_MAX + PATH_MAX_LEN];
    pthread_mutex_t lock; /* spill_end and progress */
    rmx_progress progress;
    long progress_done;
} prep_run;

static int shard_owner(const prep_run *r, int split, int shard) {
    int global = split == SPLIT_TRAIN ? shard : r->n_shards[SPLIT_TRAIN] + shard;
    return global % r->world;
}

static void set_reason(prep_run *r, long i, int status, const char *msg) {
    r->skip[i] = status;
    snprintf(r->reason + i * REASON_MAX, REASON_MAX, "%s", msg);
}

static void progress_step(prep_run *r) {
    pthread_mutex_lock(&r->lock);
    r->progress_done++;
    if (r->rank == 0) rmx_progress_update(&r->progress, r->progress_done, NULL);
    pthread_mutex_unlock(&r->lock);
}

static int64_t segment_count(const prep_run *r, int64_t samples) {
    return rmx_mel_frame_count(r->mel, samples) / r->o->audio.segment_frames;
}

/* ---------------------------------------------------------------- phase 1: probe */

static void probe_one(void *ctx, long k) {
    prep_run *r = ctx;
    long i = r->mine[k];
    char why[REASON_MAX];
    rmx_audio_info info;
    rmx_audio_status s = rmx_audio_probe(r->list->files[i].path, &info, why, sizeof why);
    if (s != RMX_AUDIO_OK) {
        set_reason(r, i, s, why);
    } else {
        int sr = r->o->audio.sample_rate, T = r->o->audio.segment_frames;
        int64_t samples = rmx_audio_resampled_length(info.frames, info.sample_rate, sr);
        if (segment_count(r, samples) < 1) {
            int64_t frames = rmx_mel_frame_count(r->mel, samples);
            snprintf(why, sizeof why, "too short: %.2f s gives %lld frames, one segment needs %d (%.2f s)",
                     (double)info.frames / info.sample_rate, (long long)frames, T,
                     (double)(T - 1) * r->o->audio.hop_length / sr);
            set_reason(r, i, RMX_SKIP_TOO_SHORT, why);
        }
    }
    progress_step(r);
}

static void select_mine(prep_run *r, int (*is_mine)(const prep_run *, long)) {
    r->n_mine = 0;
    for (long i = 0; i < r->list->n; i++)
        if (is_mine(r, i)) r->mine[r->n_mine++] = i;
}

static int probe_is_mine(const prep_run *r, long i) { return i % r->world == r->rank; }

/* Sums the per-file arrays over ranks: each slot was written by exactly one rank and is zero on
 * the others, so the sum is that rank's value whatever the order of the reduction. */
static void combine_skips(prep_run *r, MPI_Comm comm) {
    long n = r->list->n;
    MPI_Allreduce(MPI_IN_PLACE, r->skip, (int)n, MPI_INT, MPI_SUM, comm);
    void *send = r->rank == 0 ? MPI_IN_PLACE : r->reason;
    MPI_Reduce(send, r->reason, (int)(n * REASON_MAX), MPI_UNSIGNED_CHAR, MPI_BOR, 0, comm);
}

static void warn_skips(const prep_run *r) {
    if (r->rank != 0) return;
    for (long i = 0; i < r->list->n; i++)
        if (r->skip[i] != 0) rmx_warn("skipping %s: %s", r->list->files[i].path, r->reason + i * REASON_MAX);
}

/* Files kept although their header states more frames than decode (within the bound). */
static void warn_short(const prep_run *r) {
    if (r->rank != 0) return;
    for (long i = 0; i < r->list->n; i++)
        if (r->skip[i] == 0 && r->frames_missing[i] > 0)
            rmx_warn("%s: the header states %lld frames, %lld decode: keeping them, %lld frames (%.2f s) missing",
                     r->list->files[i].path, (long long)(r->frames_decoded[i] + r->frames_missing[i]),
                     (long long)r->frames_decoded[i], (long long)r->frames_missing[i], r->seconds_missing[i]);
}

static void run_phase(prep_run *r, const char *label, int (*is_mine)(const prep_run *, long), item_fn fn) {
    select_mine(r, is_mine);
    r->progress_done = 0;
    if (r->rank == 0) rmx_progress_start(&r->progress, label, r->n_mine);
    rmx_prep_parallel_for(r->o->threads, r->n_mine, fn, r);
    if (r->rank == 0) rmx_progress_finish(&r->progress);
}

/* ---------------------------------------------------------------- phase 2: split */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A file's place in its genre's random order: a hash of (seed, source), so it does not move when
 * other files are added or removed. */
static uint64_t split_key(uint64_t seed, const char *source) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)source; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return mix64(h ^ mix64(seed + 0x9e3779b97f4a7c15ull));
}

typedef struct {
    uint64_t key;
    long index;
} keyed_file;

static int cmp_keyed(const void *a, const void *b) {
    const keyed_file *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Stratified: round(fraction * n) val files per genre, at least one when the genre has two or
 * more files and the fraction is not 0, and always at least one train file. */
static int val_count(int n, double fraction) {
    if (n < 2 || fraction <= 0.0) return 0;
    int v = (int)floor(fraction * n + 0.5);
    return v < 1 ? 1 : v > n - 1 ? n - 1 : v;
}

static void split_genre(prep_run *r, int genre, keyed_file *scratch) {
    int n = 0;
    for (long i = 0; i < r->list->n; i++) {
        if (r->status[i] != 0 || r->list->files[i].genre != genre) continue;
        r->split[i] = SPLIT_TRAIN;
        scratch[n++] = (keyed_file){split_key(r->o->seed, r->list->files[i].source), i};
    }
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_keyed);
    int v = val_count(n, r->o->val_fraction);
    for (int k = 0; k < v; k++) r->split[scratch[k].index] = SPLIT_VAL;
}

static int split_files(prep_run *r) {
    keyed_file *scratch = malloc((size_t)r->list->n * sizeof *scratch);
    if (!scratch) return -1;
    for (long i = 0; i < r->list->n; i++) r->split[i] = SPLIT_NONE;
    for (int g = 0; g < r->list->n_genres; g++) split_genre(r, g, scratch);
    free(scratch);
    int count[2] = {0, 0};
    for (long i = 0; i < r->list->n; i++)
        if (r->split[i] != SPLIT_NONE) count[r->split[i]]++;
    r->n_shards[SPLIT_TRAIN] = count[0] < r->o->train_shards ? count[0] : r->o->train_shards;
    r->n_shards[SPLIT_VAL] = count[1] < r->o->val_shards ? count[1] : r->o->val_shards;
    int seen[2] = {0, 0};
    for (long i = 0; i < r->list->n; i++) {
        int s = r->split[i];
        if (s != SPLIT_NONE) r->shard[i] = seen[s]++ % r->n_shards[s];
    }
    return 0;
}

/* ---------------------------------------------------------------- phase 3: log-mel segments */

/* [n_mels][frames] (one row per band) -> [segment][n_mels][T], the layout a shard stores. */
static void cut_segments(const float *logmel, int64_t frames, int n_mels, int T, int64_t n_seg, float *seg) {
    for (int64_t s = 0; s < n_seg; s++)
        for (int b = 0; b < n_mels; b++)
            memcpy(seg + (s * n_mels + b) * T, logmel + b * frames + s * T, (size_t)T * sizeof *seg);
}

/* Count, mean and sum of squared deviations of one file's values, two passes in double. */
static void file_stats(const float *x, int64_t n, double *count, double *mean, double *m2) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mu = sum / (double)n, dev = 0.0;
    for (int64_t i = 0; i < n; i++) dev += ((double)x[i] - mu) * ((double)x[i] - mu);
    *count = (double)n;
    *mean = mu;
    *m2 = dev;
}

static int spill(prep_run *r, long i, const float *seg, int64_t values, char *why, size_t whylen) {
    size_t bytes = (size_t)values * sizeof *seg;
    pthread_mutex_lock(&r->lock);
    int64_t at = r->spill_end;
    r->spill_end += (int64_t)bytes;
    pthread_mutex_unlock(&r->lock);
    r->spill_offset[i] = at;
    for (size_t done = 0; done < bytes;) {
        ssize_t w = pwrite(r->spill_fd, (const char *)seg + done, bytes - done, (off_t)(at + (int64_t)done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return rmx_seterr(why, whylen, "writing the scratch file: %s",
                              w < 0 ? strerror(errno) : "disk full");
        done += (size_t)w;
    }
    return 0;
}

/* Returns 0 and fills the file's slots, 1 when the file is skipped, -1 on an I/O failure. */
static int prepare_file(prep_run *r, long i, char *why, size_t whylen) {
    const rmx_mel_params *a = &r->o->audio;
    float *x = NULL, *logmel = NULL, *seg = NULL;
    int64_t n = 0;
    rmx_audio_info info;
    rmx_audio_status s =
        rmx_audio_load_mono(r->list->files[i].path, a->sample_rate, &x, &n, &info, why, whylen);
    if (s != RMX_AUDIO_OK) {
        set_reason(r, i, s, why);
        return 1;
    }
    int64_t n_seg = segment_count(r, n), frames = n_seg * a->segment_frames;
    int64_t values = frames * a->n_mels;
    int rc = 0;
    if (n_seg < 1) {
        snprintf(why, whylen, "too short: %.2f s after decoding, one segment needs %d frames",
                 (double)n / a->sample_rate, a->segment_frames);
        set_reason(r, i, RMX_SKIP_TOO_SHORT, why);
        rc = 1;
    } else if (!(logmel = malloc((size_t)values * sizeof *logmel)) ||
               !(seg = malloc((size_t)values * sizeof *seg))) {
        rc = rmx_seterr(why, whylen, "out of memory for %lld mel values", (long long)values);
    } else if ((rc = rmx_mel_compute(r->mel, x, n, frames, logmel, why, whylen)) == 0) {
        cut_segments(logmel, frames, a->n_mels, a->segment_frames, n_seg, seg);
        file_stats(seg, values, &r->stat_n[i], &r->stat_mean[i], &r->stat_m2[i]);
        r->segments[i] = n_seg;
        r->seconds_read[i] = (double)n / a->sample_rate;
        if (info.frames_missing > 0) {
            r->frames_decoded[i] = info.frames;
            r->frames_missing[i] = info.frames_missing;
            r->seconds_missing[i] = (double)info.frames_missing / info.sample_rate;
        }
        rc = spill(r, i, seg, values, why, whylen);
    }
    free(x);
    free(logmel);
    free(seg);
    return rc;
}

static void prepare_one(void *ctx, long k) {
    prep_run *r = ctx;
    long i = r->mine[k];
    char why[REASON_MAX];
    if (prepare_file(r, i, why, sizeof why) < 0 && atomic_exchange(&r->failed, 1) == 0)
        snprintf(r->failure, sizeof r->failure, "%s: %s", r->list->files[i].path, why);
    progress_step(r);
}

static int prepare_is_mine(const prep_run *r, long i) {
    return r->status[i] == 0 && shard_owner(r, r->split[i], r->shard[i]) == r->rank;
}

static void combine_results(prep_run *r, MPI_Comm comm) {
    int n = r->list->n;
    MPI_Allreduce(MPI_IN_PLACE, r->segments, n, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->seconds_read, n, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->frames_decoded, n, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->frames_missing, n, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->seconds_missing, n, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->stat_n, n, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->stat_mean, n, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, r->stat_m2, n, MPI_DOUBLE, MPI_SUM, comm);
}

/* ---------------------------------------------------------------- phase 4: normalisation */

/* Chan et al.'s pairwise update, applied file by file in list order: the same result on every
 * rank and for any number of threads or ranks. */
static void train_norm(const prep_run *r, float *mean_out, float *std_out) {
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (long i = 0; i < r->list->n; i++) {
        if (r->status[i] != 0 || r->split[i] != SPLIT_TRAIN) continue;
        double nb = r->stat_n[i], total = n + nb, delta = r->stat_mean[i] - mean;
        mean += delta * nb / total;
        m2 += r->stat_m2[i] + delta * delta * n * nb / total;
        n = total;
    }
    double std = n > 0 ? sqrt(m2 / n) : 0.0;
    *mean_out = (float)mean;
    /* A constant dataset (silence) has no spread to divide by; leave its scale alone. */
    *std_out = std > 1e-6 ? (float)std : 1.0f;
}

static void fill_summary(const prep_run *r, rmx_prep_summary *s) {
    const int T = r->o->audio.segment_frames, hop = r->o->audio.hop_length;
    memset(s, 0, sizeof *s);
    s->files_listed = r->list->n;
    s->n_genres = r->list->n_genres;
    memcpy(s->genre_names, r->list->genres, sizeof s->genre_names);
    for (long i = 0; i < r->list->n; i++) {
        if (r->status[i] != 0) {
            s->files_skipped[r->status[i]]++;
            continue;
        }
        int g = r->list->files[i].genre;
        s->files_used++;
        s->seconds_read += r->seconds_read[i];
        if (r->frames_missing[i] > 0) {
            s->files_short++;
            s->seconds_missing += r->seconds_missing[i];
        }
        s->seconds_segmented += (double)r->segments[i] * T * hop / r->o->audio.sample_rate;
        if (r->split[i] == SPLIT_TRAIN) {
            s->train_files++;
            s->train_segments += r->segments[i];
            s->genre_train_segments[g] += r->segments[i];
        } else {
            s->val_files++;
            s->val_segments += r->segments[i];
            s->genre_val_segments[g] += r->segments[i];
        }
    }
}

/* ---------------------------------------------------------------- phase 5: shards */

/* Shards all of whose files were skipped are dropped and the rest numbered 0..count-1, so a
 * dataset never holds an empty shard. */
static void shard_numbers(const prep_run *r, int split, int *number, int *count) {
    for (int s = 0; s < r->n_shards[split]; s++) number[s] = 0;
    for (long i = 0; i < r->list->n; i++) /* a usable file has at least one segment */
        if (r->status[i] == 0 && r->split[i] == split) number[r->shard[i]] = 1;
    int next = 0;
    for (int s = 0; s < r->n_shards[split]; s++) number[s] = number[s] ? next++ : -1;
    *count = next;
}

/* The files the split was made of, in list order (those skipped late included): shard s holds
 * members s, s + S, s + 2S, ... */
static long split_members(const prep_run *r, int split, long *members) {
    long n = 0;
    for (long i = 0; i < r->list->n; i++)
        if (r->split[i] == split) members[n++] = i;
    return n;
}

static int read_spill(const prep_run *r, long i, float *buf, int64_t values, char *err, size_t errlen) {
    size_t bytes = (size_t)values * sizeof *buf;
    for (size_t done = 0; done < bytes;) {
        ssize_t got =
            pread(r->spill_fd, (char *)buf + done, bytes - done, (off_t)(r->spill_offset[i] + (int64_t)done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return rmx_seterr(err, errlen, "reading the scratch file: %s",
                              got < 0 ? strerror(errno) : "short read");
        done += (size_t)got;
    }
    return 0;
}

static int append_file(prep_run *r, rmx_shard_writer *w, long i, const rmx_mel_params *p, float *buf,
                       char *err, size_t errlen) {
    const int64_t per_seg = (int64_t)p->n_mels * p->segment_frames, values = r->segments[i] * per_seg;
    if (read_spill(r, i, buf, values, err, errlen) != 0) return -1;
    for (int64_t v = 0; v < values; v++) buf[v] = (buf[v] - p->norm_mean) / p->norm_std;
    for (int64_t s = 0; s < r->segments[i]; s++) {
        if (rmx_shard_append(w, buf + s * per_seg, r->list->files[i].genre, r->list->files[i].source,
                             s * p->segment_frames, err, errlen) != 0)
            return -1;
        progress_step(r);
    }
    return 0;
}

typedef struct {
    int split, shard;    /* which shard of the split */
    int number, count;   /* its name and the shard count after dropping empty shards */
    const long *members; /* split_members() of the split */
    long n_members;
} shard_job;

static int write_shard(prep_run *r, const char *staging, const shard_job *job, const rmx_mel_params *p,
                       float *buf, char *err, size_t errlen) {
    char path[PATH_MAX_LEN];
    char name[64];
    rmx_shard_filename(job->number, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s/%s", staging, SPLIT_DIR[job->split], name);
    rmx_shard_writer *w = rmx_shard_create(path, p, job->number, job->count, err, errlen);
    if (!w) return -1;
    for (long k = job->shard; k < job->n_members; k += r->n_shards[job->split]) {
        long i = job->members[k];
        if (r->status[i] != 0) continue;
        if (append_file(r, w, i, p, buf, err, errlen) != 0) {
            rmx_shard_abort(w);
            return -1;
        }
    }
    return rmx_shard_close(w, err, errlen);
}

static int64_t largest_file_values(const prep_run *r) {
    int64_t most = 0;
    for (long i = 0; i < r->list->n; i++)
        if (r->status[i] == 0 && r->segments[i] > most) most = r->segments[i];
    return most * r->o->audio.n_mels * r->o->audio.segment_frames;
}

static int64_t my_segments(const prep_run *r) {
    int64_t total = 0;
    for (long i = 0; i < r->list->n; i++)
        if (r->status[i] == 0 && shard_owner(r, r->split[i], r->shard[i]) == r->rank) total += r->segments[i];
    return total;
}

/* HDF5 calls stay on this one thread; the shard writer's own locking is not relied on. */
static int write_my_shards(prep_run *r, const char *staging, const rmx_mel_params *p, char *err,
                           size_t errlen) {
    float *buf = malloc((size_t)(largest_file_values(r) + 1) * sizeof *buf);
    int *number = malloc((size_t)(r->n_shards[0] + r->n_shards[1] + 1) * sizeof *number);
    long *members = malloc((size_t)(r->list->n + 1) * sizeof *members);
    int rc = (!buf || !number || !members) ? rmx_seterr(err, errlen, "out of memory writing shards") : 0;
    r->progress_done = 0;
    if (r->rank == 0) rmx_progress_start(&r->progress, "writing", my_segments(r));
    for (int split = 0; rc == 0 && split < 2; split++) {
        shard_job job = {.split = split, .members = members, .n_members = split_members(r, split, members)};
        shard_numbers(r, split, number, &job.count);
        for (job.shard = 0; rc == 0 && job.shard < r->n_shards[split]; job.shard++) {
            job.number = number[job.shard];
            if (job.number >= 0 && shard_owner(r, split, job.shard) == r->rank)
                rc = write_shard(r, staging, &job, p, buf, err, errlen);
        }
    }
    if (r->rank == 0) rmx_progress_finish(&r->progress);
    free(buf);
    free(number);
    free(members);
    return rc;
}

/* ---------------------------------------------------------------- the output folder */

static int is_shard_name(const char *name) {
    size_t n = strlen(name);
    return (strncmp(name, "shard-", 6) == 0 && n > 9 && strcmp(name + n - 3, ".h5") == 0) ||
           strncmp(name, ".shard-", 7) == 0;
}

/* An earlier dataset is refused without --force; with it, only a folder of shards is replaced. */
static int check_earlier_output(const char *outdir, const char *sub, int force, char *err, size_t errlen) {
    char dir[PATH_MAX_LEN];
    snprintf(dir, sizeof dir, "%s/%s", outdir, sub);
    struct stat st;
    if (lstat(dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return rmx_seterr(err, errlen, "%s exists and is not a folder", dir);
    DIR *d = opendir(dir);
    if (!d) return rmx_seterr(err, errlen, "%s: cannot read folder: %s", dir, strerror(errno));
    int entries = 0, others = 0;
    char other[256] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        entries++;
        if (!is_shard_name(e->d_name) && others++ == 0) snprintf(other, sizeof other, "%s", e->d_name);
    }
    closedir(d);
    if (entries == 0) return 0;
    if (!force)
        return rmx_seterr(err, errlen,
                          "%s already holds a dataset; pass --force to replace it or choose another OUTDIR",
                          dir);
    if (others > 0)
        return rmx_seterr(err, errlen, "refusing to replace %s: it holds files that are not shards (%s)", dir,
                          other);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int make_staging(const char *outdir, long id, char *staging, size_t cap, char *err, size_t errlen) {
    snprintf(staging, cap, "%s/.prep-%ld", outdir, id);
    char sub[PATH_MAX_LEN];
    for (int s = 0; s < 2; s++) {
        snprintf(sub, sizeof sub, "%s/%s", staging, SPLIT_DIR[s]);
        if (rmx_mkdirs(sub, err, errlen) != 0) return -1;
    }
    return 0;
}

/* Swaps each staged folder into place: the old one is moved aside first and deleted after. */
static int commit_staging(const char *outdir, const char *staging, char *err, size_t errlen) {
    for (int s = 0; s < 2; s++) {
        char final[PATH_MAX_LEN], staged[PATH_MAX_LEN], old[PATH_MAX_LEN];
        snprintf(final, sizeof final, "%s/%s", outdir, SPLIT_DIR[s]);
        snprintf(staged, sizeof staged, "%s/%s", staging, SPLIT_DIR[s]);
        snprintf(old, sizeof old, "%s/old-%s", staging, SPLIT_DIR[s]);
        if (rename(final, old) != 0 && errno != ENOENT)
            return rmx_seterr(err, errlen, "cannot move %s aside: %s", final, strerror(errno));
        if (rename(staged, final) != 0)
            return rmx_seterr(err, errlen, "cannot rename %s to %s: %s", staged, final, strerror(errno));
    }
    char marker[PATH_MAX_LEN];
    snprintf(marker, sizeof marker, "%s/train", outdir);
    return rmx_fsync_dir_of(marker, err, errlen);
}

/* ---------------------------------------------------------------- the run */

/* Every rank agrees on the worst exit code of the phase; a rank without its own message learns
 * that another one failed and stays quiet. */
static int agree(MPI_Comm comm, int code, char *err, size_t errlen) {
    int worst = code;
    MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm);
    if (worst != RMX_EXIT_OK && code == RMX_EXIT_OK && err && errlen) err[0] = 0;
    return worst;
}

static int alloc_run(prep_run *r, long n) {
    size_t un = (size_t)(n ? n : 1);
    r->status = calloc(un, sizeof *r->status);
    r->late = calloc(un, sizeof *r->late);
    r->reason = calloc(un, REASON_MAX);
    r->split = calloc(un, sizeof *r->split);
    r->shard = calloc(un, sizeof *r->shard);
    r->segments = calloc(un, sizeof *r->segments);
    r->seconds_read = calloc(un, sizeof *r->seconds_read);
    r->frames_decoded = calloc(un, sizeof *r->frames_decoded);
    r->frames_missing = calloc(un, sizeof *r->frames_missing);
    r->seconds_missing = calloc(un, sizeof *r->seconds_missing);
    r->stat_n = calloc(un, sizeof *r->stat_n);
    r->stat_mean = calloc(un, sizeof *r->stat_mean);
    r->stat_m2 = calloc(un, sizeof *r->stat_m2);
    r->spill_offset = calloc(un, sizeof *r->spill_offset);
    r->mine = calloc(un, sizeof *r->mine);
    return r->status && r->late && r->reason && r->split && r->shard && r->segments && r->seconds_read &&
                   r->frames_decoded && r->frames_missing && r->seconds_missing && r->stat_n && r->stat_mean && r->stat_m2 && r->spill_offset && r->mine
               ? 0
               : -1;
}

static void free_run(prep_run *r) {
    free(r->status);
    free(r->late);
    free(r->reason);
    free(r->split);
    free(r->shard);
    free(r->segments);
    free(r->seconds_read);
    free(r->frames_decoded);
    free(r->frames_missing);
    free(r->seconds_missing);
    free(r->stat_n);
    free(r->stat_mean);
    free(r->stat_m2);
    free(r->spill_offset);
    free(r->mine);
    if (r->spill_fd >= 0) close(r->spill_fd);
    pthread_mutex_destroy(&r->lock);
}

/* Rank 0 lists the input, checks OUTDIR and makes the staging folder; the others wait.
 * *created tells whether OUTDIR is new (then a failed run removes it again). */
static int setup_on_rank0(prep_list *list, const char *input, const char *outdir, const rmx_prep_options *o,
                          char *staging, size_t cap, int *created, char *err, size_t errlen) {
    if (strlen(input) > PATH_MAX_LEN / 2 || strlen(outdir) > PATH_MAX_LEN / 2) {
        rmx_seterr(err, errlen, "INPUT or OUTDIR path is longer than %d characters", PATH_MAX_LEN / 2);
        return RMX_EXIT_USAGE;
    }
    int code = list_input(list, input, err, errlen);
    if (code != RMX_EXIT_OK) return code;
    struct stat st;
    *created = stat(outdir, &st) != 0;
    if (rmx_mkdirs(outdir, err, errlen) != 0) return RMX_EXIT_USAGE;
    for (int s = 0; s < 2; s++)
        if (check_earlier_output(outdir, SPLIT_DIR[s], o->force, err, errlen) != 0) return RMX_EXIT_USAGE;
    return make_staging(outdir, (long)getpid(), staging, cap, err, errlen) == 0 ? RMX_EXIT_OK
                                                                                : RMX_EXIT_FAILURE;
}

static int open_spill(prep_run *r, const char *staging, char *err, size_t errlen) {
    char path[PATH_MAX_LEN];
    snprintf(path, sizeof path, "%s/spill-%d-XXXXXX", staging, r->rank);
    r->spill_fd = mkstemp(path);
    if (r->spill_fd < 0)
        return rmx_seterr(err, errlen, "%s: cannot create scratch file: %s", path, strerror(errno));
    /* Unlinked at once: the log-mel scratch space disappears with the process, whatever happens. */
    unlink(path);
    return 0;
}

static int probe_and_split(prep_run *r, MPI_Comm comm, char *err, size_t errlen) {
    r->skip = r->status;
    run_phase(r, "checking", probe_is_mine, probe_one);
    combine_skips(r, comm);
    warn_skips(r);
    if (split_files(r) != 0) {
        rmx_seterr(err, errlen, "out of memory");
        return RMX_EXIT_FAILURE;
    }
    return RMX_EXIT_OK;
}

/* Files that fail only when decoded keep their place in the split; their shard may end up
 * smaller, or empty and then dropped. */
static int prepare_all(prep_run *r, MPI_Comm comm, char *err, size_t errlen) {
    r->skip = r->late;
    memset(r->reason, 0, (size_t)r->list->n * REASON_MAX);
    atomic_init(&r->failed, 0);
    run_phase(r, "preparing", prepare_is_mine, prepare_one);
    combine_skips(r, comm);
    combine_results(r, comm);
    warn_skips(r);
    warn_short(r);
    for (long i = 0; i < r->list->n; i++)
        if (r->late[i] != 0) r->status[i] = r->late[i];
    if (atomic_load(&r->failed)) {
        rmx_seterr(err, errlen, "%s", r->failure);
        return RMX_EXIT_FAILURE;
    }
    return RMX_EXIT_OK;
}

static int count_shards(const prep_run *r, int split) {
    int *number = malloc((size_t)(r->n_shards[split] + 1) * sizeof *number), count = 0;
    if (number) shard_numbers(r, split, number, &count);
    free(number);
    return count;
}

static int run_pipeline(prep_run *r, const char *staging, MPI_Comm comm, rmx_prep_summary *summary, char *err,
                        size_t errlen) {
    int code = agree(comm, probe_and_split(r, comm, err, errlen), err, errlen);
    if (code != RMX_EXIT_OK) return code;
    code =
        agree(comm, open_spill(r, staging, err, errlen) == 0 ? RMX_EXIT_OK : RMX_EXIT_FAILURE, err, errlen);
    if (code != RMX_EXIT_OK) return code;
    code = agree(comm, prepare_all(r, comm, err, errlen), err, errlen);
    if (code != RMX_EXIT_OK) return code;
    rmx_mel_params p = r->o->audio;
    p.win_length = p.n_fft;
    p.n_genres = r->list->n_genres;
    memcpy(p.genre_names, r->list->genres, sizeof p.genre_names);
    train_norm(r, &p.norm_mean, &p.norm_std);
    fill_summary(r, summary);
    summary->norm_mean = p.norm_mean;
    summary->norm_std = p.norm_std;
    if (summary->train_segments == 0) {
        /* every rank knows it; one message is enough */
        if (r->rank == 0)
            rmx_seterr(err, errlen, "no usable audio: all %d files were skipped, nothing written",
                       r->list->n);
        return RMX_EXIT_DATA;
    }
    summary->train_shards = count_shards(r, SPLIT_TRAIN);
    summary->val_shards = count_shards(r, SPLIT_VAL);
    code = write_my_shards(r, staging, &p, err, errlen) == 0 ? RMX_EXIT_OK : RMX_EXIT_FAILURE;
    return agree(comm, code, err, errlen);
}

/* Options and the mel plan are the same on every rank: each checks them, rank 0 says what is wrong,
 * and nothing has touched the disk yet. */
static rmx_mel *check_and_plan(const rmx_prep_options *o, int rank, char *err, size_t errlen) {
    rmx_mel *m = NULL;
    if (rmx_prep_check_options(o, err, errlen) == 0)
        m = rmx_mel_create(o->audio.sample_rate, o->audio.n_fft, o->audio.hop_length, o->audio.n_mels,
                           o->audio.fmin, o->audio.fmax, o->audio.log_floor, err, errlen);
    if (!m && rank != 0 && errlen) err[0] = 0;
    return m;
}

static int prepare_and_write(prep_run *r, prep_list *list, char *staging, MPI_Comm comm,
                             rmx_prep_summary *summary, char *err, size_t errlen) {
    int code = agree(comm, share_list(list, r->rank, comm, err, errlen) ? RMX_EXIT_FAILURE : RMX_EXIT_OK, err,
                     errlen);
    if (code != RMX_EXIT_OK) return code;
    MPI_Bcast(staging, PATH_MAX_LEN, MPI_CHAR, 0, comm);
    r->list = list;
    code = alloc_run(r, list->n) == 0 ? RMX_EXIT_OK : RMX_EXIT_FAILURE;
    if (code != RMX_EXIT_OK) rmx_seterr(err, errlen, "out of memory for %d files", list->n);
    code = agree(comm, code, err, errlen);
    if (code != RMX_EXIT_OK) return code;
    return run_pipeline(r, staging, comm, summary, err, errlen);
}

int rmx_prep_run(const char *input, const char *outdir, const rmx_prep_options *o, MPI_Comm comm,
                 rmx_prep_summary *summary, char *err, size_t errlen) {
    double start = rmx_now_s();
    if (err && errlen) err[0] = 0;
    memset(summary, 0, sizeof *summary);
    prep_run r = {.o = o, .spill_fd = -1};
    MPI_Comm_rank(comm, &r.rank);
    MPI_Comm_size(comm, &r.world);
    r.mel = check_and_plan(o, r.rank, err, errlen);
    if (!r.mel) return RMX_EXIT_USAGE;
    pthread_mutex_init(&r.lock, NULL);
    prep_list list = {0};
    char staging[PATH_MAX_LEN] = "";
    int created = 0;
    int code = r.rank == 0
                   ? setup_on_rank0(&list, input, outdir, o, staging, sizeof staging, &created, err, errlen)
                   : RMX_EXIT_OK;
    code = agree(comm, code, err, errlen);
    if (code == RMX_EXIT_OK) code = prepare_and_write(&r, &list, staging, comm, summary, err, errlen);
    if (r.rank == 0) {
        if (code == RMX_EXIT_OK && commit_staging(outdir, staging, err, errlen) != 0) code = RMX_EXIT_FAILURE;
        if (staging[0]) remove_tree(staging);
        if (code != RMX_EXIT_OK && created) rmdir(outdir); /* only if still empty */
    }
    code = agree(comm, code, err, errlen);
    rmx_mel_free((rmx_mel *)r.mel);
    free_run(&r);
    list_free(&list);
    summary->elapsed_s = rmx_now_s() - start;
    return code;
}
