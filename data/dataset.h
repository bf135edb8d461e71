/* A split of the dataset (train or val): every shard of one folder or glob, read as one indexed
 * sequence of segments. Sample i of the dataset is row i - first(s) of the shard s holding it,
 * shards taken in file-name order.
 *
 * Opening checks everything that can be checked without reading the spectrograms: every shard is a
 * "remixer-mel" file of version 1 or 2 (version 2 must carry Fletcher32 checksums on /mel), has the datasets and attributes of data/FORMAT.md with the right
 * types and shapes, agrees with the first shard on every audio parameter, the normalisation and the
 * genre names, and the shards found are exactly shard_index 0..shard_count-1. Errors name the file
 * and the field. Non-finite spectrogram values are caught when a sample is read.
 *
 * Damaged segments: a segment whose /mel chunk fails its Fletcher32 checksum (version 2), or holds a
 * non-finite value, is damaged: a property of the file, found the same way by every read and every
 * rank. What a read does with one is the dataset's policy (rmx_dataset_set_on_corrupt): stop (the
 * default) fails the read with "damaged segment: <shard> segment <row> (sample <i> of <spec>) from
 * <source>: <reason> ..."; skip logs one warning line per damaged segment (the first time this
 * process finds it) and reads the next valid segment in dataset order (index + 1, + 2, ..., wrapping)
 * in its place, so the replacement depends on the data alone, never on timing, prefetching or the
 * number of ranks. Other read failures (I/O errors) fail the read under both policies. Version-1
 * shards have no checksums: a flipped bit there is read as data (one note per process says so).
 *
 * Reads are safe from several threads at once (HDF5 calls are serialised by data/h5lock.h). */
#ifndef RMX_DATASET_H
#define RMX_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"

typedef struct rmx_dataset rmx_dataset;

/* `spec` is a folder (all shard-*.h5 in it) or a glob ("data/demo/train/shard-0000[0-3].h5"). */
rmx_dataset *rmx_dataset_open(const char *spec, char *err, size_t errlen);
void rmx_dataset_close(rmx_dataset *ds);

/* Total segments over all shards (> 0 for an opened dataset). */
int64_t rmx_dataset_length(const rmx_dataset *ds);
int rmx_dataset_shard_count(const rmx_dataset *ds);
/* The parameters every shard agrees on: M = n_mels, T = segment_frames, genres, normalisation. */
const rmx_mel_params *rmx_dataset_params(const rmx_dataset *ds);
/* Floats in one sample: n_mels * segment_frames. */
size_t rmx_dataset_sample_floats(const rmx_dataset *ds);
/* The folder or glob the dataset was opened from. */
const char *rmx_dataset_spec(const rmx_dataset *ds);

typedef enum { RMX_ON_CORRUPT_STOP = 0, RMX_ON_CORRUPT_SKIP } rmx_on_corrupt;
/* The damaged-segment policy of every later read (default stop). Set it before reads start. */
void rmx_dataset_set_on_corrupt(rmx_dataset *ds, rmx_on_corrupt policy);
/* Distinct damaged segments this process has found (and skipped) so far. */
int64_t rmx_dataset_damaged_found(const rmx_dataset *ds);

/* Reads sample `index` (0 <= index < length): mel [M * T] (mel bin major), genre id. Either output
 * may be NULL. Fails on an out-of-range index, an I/O error, or a damaged segment under the stop
 * policy. Under skip, the sample read may be a later one; *used (may be NULL) gets its index. With
 * mel NULL nothing is read and nothing is replaced. */
int rmx_dataset_read_resolved(rmx_dataset *ds, int64_t index, float *mel, int32_t *genre,
                              int64_t *used, char *err, size_t errlen);
int rmx_dataset_read(rmx_dataset *ds, int64_t index, float *mel, int32_t *genre, char *err,
                     size_t errlen);
/* Reads n samples into mel [n * M * T] and genre [n], in the order given; used [n] (may be NULL,
 * may be `indices` itself) gets the index each one was read from. */
int rmx_dataset_read_batch_resolved(rmx_dataset *ds, const int64_t *indices, int n, float *mel,
                                    int32_t *genre, int64_t *used, char *err, size_t errlen);
int rmx_dataset_read_batch(rmx_dataset *ds, const int64_t *indices, int n, float *mel,
                           int32_t *genre, char *err, size_t errlen);
/* Provenance of sample `index`: the source file's path relative to the prep input, and the first
 * frame of the segment within it. */
int rmx_dataset_provenance(rmx_dataset *ds, int64_t index, char *source, size_t sourcelen,
                           int64_t *offset, char *err, size_t errlen);

/* Train and val must describe the same features: same parameters, normalisation and genre names. */
int rmx_dataset_check_compatible(const rmx_dataset *train, const rmx_dataset *val, char *err,
                                 size_t errlen);

#endif
