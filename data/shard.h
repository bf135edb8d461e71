/* The on-disk dataset: sharded HDF5 files of log-mel segments (format described in data/FORMAT.md).
 * This header is the only place that knows the HDF5 layout; prep writes through it, the loader
 * reads through it. */
#ifndef RMX_SHARD_H
#define RMX_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define RMX_SHARD_FORMAT "remixer-mel"
/* Version 2 adds a Fletcher32 checksum to every chunk of every dataset (data/FORMAT.md); readers
 * still accept version 1 (no checksums: damage goes undetected, see data/dataset.h). */
#define RMX_SHARD_VERSION 2
#define RMX_SHARD_VERSION_MIN 1
#define RMX_MAX_GENRES 64
#define RMX_GENRE_NAME_MAX 64

/* Everything that must agree between the shards of one dataset (and between train and val). */
typedef struct {
    int sample_rate;     /* Hz after resampling (22050) */
    int n_fft;           /* 2048 */
    int win_length;      /* Hann window length (= n_fft) */
    int hop_length;      /* 256 */
    int n_mels;          /* M = 128 */
    float fmin, fmax;    /* mel filterbank range in Hz (0, sample_rate / 2) */
    float log_floor;     /* log(max(mel_power, log_floor)) */
    float norm_mean;     /* stored value = (log_mel - norm_mean) / norm_std */
    float norm_std;
    int segment_frames;  /* T = 256 */
    int n_genres;
    char genre_names[RMX_MAX_GENRES][RMX_GENRE_NAME_MAX];
} rmx_mel_params;

typedef struct rmx_shard_writer rmx_shard_writer;

/* Starts shard `shard_index` of `shard_count` at `path` (written under a temporary name). */
rmx_shard_writer *rmx_shard_create(const char *path, const rmx_mel_params *p, int shard_index,
                                   int shard_count, char *err, size_t errlen);
/* Appends one segment: mel is [n_mels * segment_frames] row-major (mel bin major, frame minor),
 * already normalised; `source` is the audio file's path relative to the input root, `offset` the
 * first frame of the segment within that file. */
int rmx_shard_append(rmx_shard_writer *w, const float *mel, int32_t genre, const char *source,
                     int64_t offset, char *err, size_t errlen);
/* Finishes the file (attributes, flush, fsync) and renames it into place; frees w. */
int rmx_shard_close(rmx_shard_writer *w, char *err, size_t errlen);
/* Removes the temporary file and frees w (on any failure, so nothing half-written remains). */
void rmx_shard_abort(rmx_shard_writer *w);

/* Segments appended so far. */
int64_t rmx_shard_length(const rmx_shard_writer *w);

/* "shard-00007.h5": the file name of shard `shard_index` (5 digits, so names sort by index). */
void rmx_shard_filename(int shard_index, char *out, size_t outlen);

/* The scalar fields of rmx_mel_params, each stored as a root attribute of the same name; one table
 * drives writing, reading and comparing them, so a new field cannot be forgotten in one place. */
typedef enum { RMX_FIELD_INT, RMX_FIELD_FLOAT } rmx_mel_field_kind;
typedef struct {
    const char *name;
    rmx_mel_field_kind kind;
    size_t offset; /* of the int or float inside rmx_mel_params */
} rmx_mel_field;
extern const rmx_mel_field rmx_mel_fields[];
extern const int rmx_mel_field_count;

/* The field's value as text ("256", "0.0123"); floats print with enough digits to round-trip. */
void rmx_mel_field_format(const rmx_mel_field *f, const rmx_mel_params *p, char *out, size_t outlen);
/* Sizes positive, floats finite, norm_std > 0, fmin < fmax <= sample_rate / 2, 1..RMX_MAX_GENRES
 * non-empty distinct genre names. Errors read "<where>: attribute 'n_fft' is 0, expected > 0". */
int rmx_mel_params_validate(const rmx_mel_params *p, const char *where, char *err, size_t errlen);
/* 0 when a and b agree on every field and genre name; otherwise -1 with
 * "<a_name>: attribute 'hop_length' is 512 but <b_name> has 256". */
int rmx_mel_params_compare(const rmx_mel_params *a, const char *a_name, const rmx_mel_params *b,
                           const char *b_name, char *err, size_t errlen);

#endif
