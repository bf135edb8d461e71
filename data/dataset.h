/* A split of the dataset (train or val): every shard of one folder or glob, read as one indexed
 * sequence of segments. Sample i of the dataset is row i - first(s) of the shard s holding it,
 * shards taken in file-name order.
 *
 * Opening checks everything that can be checked without reading the spectrograms: every shard is a
 * "remixer-mel" version-1 file, has the datasets and attributes of data/FORMAT.md with the right
 * types and shapes, agrees with the first shard on every audio parameter, the normalisation and the
 * genre names, and the shards found are exactly shard_index 0..shard_count-1. Errors name the file
 * and the field. Non-finite spectrogram values are caught when a sample is read.
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

/* Reads sample `index` (0 <= index < length): mel [M * T] (mel bin major), genre id. Either output
 * may be NULL. Fails on an out-of-range index, an I/O error or a non-finite value. */
int rmx_dataset_read(rmx_dataset *ds, int64_t index, float *mel, int32_t *genre, char *err,
                     size_t errlen);
/* Reads n samples into mel [n * M * T] and genre [n], in the order given. */
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
