/* The remixer-prep pipeline: audio files -> normalised log-mel segments -> sharded HDF5.
 *
 * Input: a folder in the GTZAN layout (<root>/<genre>/<file>.{wav,flac,ogg,mp3}) or a CSV of
 * `path,genre`. Files are listed in (genre, path) order, genres sorted by name.
 *
 * Steps, each a pure function of the input and the options, so the output is byte-identical for
 * any number of threads or MPI ranks:
 *   1. probe every header; unreadable, empty, non-audio, truncated and too-short files are skipped
 *      with a warning naming the file and the reason (a header that states at most
 *      RMX_AUDIO_MAX_MISSING_SECONDS more than the file holds is kept, with a warning, in 3);
 *   2. split the usable files into train and val per genre (by file, never by segment), chosen by a
 *      hash of (seed, path); file j of a split goes to shard j mod S;
 *   3. decode, downmix, resample, log-mel, cut into segments of T frames (the tail is dropped);
 *      the rank that owns a shard processes that shard's files, its threads a file each;
 *   4. mean and std of the train log-mel: per-file (count, mean, M2) combined in file order;
 *   5. each rank writes its shards, values (log_mel - mean) / std, into a staging folder
 *      OUTDIR/.prep-<pid>; when every rank has succeeded rank 0 renames it to OUTDIR/train and
 *      OUTDIR/val. On failure the staging folder is removed: no half dataset is ever visible.
 * An earlier dataset in OUTDIR is refused unless `force` is set; then it is replaced, each folder
 * by a rename, once the new one is complete. */
#ifndef RMX_PREP_H
#define RMX_PREP_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "data/audio.h"
#include "data/shard.h"

/* Why a file was skipped: the audio categories plus "too short for one segment". */
enum { RMX_SKIP_TOO_SHORT = RMX_AUDIO_STATUS_COUNT, RMX_SKIP_COUNT };

typedef struct {
    /* sample_rate, n_fft, win_length, hop_length, n_mels, fmin, fmax, log_floor, segment_frames;
     * the pipeline fills in norm_*, n_genres and genre_names. */
    rmx_mel_params audio;
    double val_fraction; /* of each genre's files, 0 <= f < 1 */
    int train_shards;    /* at most; never more than the split has files */
    int val_shards;
    int threads;   /* per rank */
    uint64_t seed; /* picks the val files */
    int force;     /* replace OUTDIR/train and OUTDIR/val of an earlier run */
} rmx_prep_options;

typedef struct {
    int files_listed, files_used;
    int files_skipped[RMX_SKIP_COUNT]; /* index 0 unused */
    int train_files, val_files;
    int64_t train_segments, val_segments;
    int train_shards, val_shards; /* written */
    double seconds_read;          /* audio decoded from the used files */
    int files_short;              /* used files whose header states more frames than decode */
    double seconds_missing;       /* what their headers state beyond what decodes, in all */
    double seconds_segmented;     /* audio inside the kept segments */
    int n_genres;
    char genre_names[RMX_MAX_GENRES][RMX_GENRE_NAME_MAX];
    int64_t genre_train_segments[RMX_MAX_GENRES], genre_val_segments[RMX_MAX_GENRES];
    float norm_mean, norm_std;
    double elapsed_s;
} rmx_prep_summary;

/* The brief's defaults: 22,050 Hz, n_fft 2048, hop 256, 128 mels, 0 .. sr/2, floor 1e-5,
 * 256-frame segments, 10% val, 4 train shards, 1 val shard, 1 thread, seed 0. */
void rmx_prep_default_options(rmx_prep_options *o);

/* Checks the options; the message names the command-line option at fault. */
int rmx_prep_check_options(const rmx_prep_options *o, char *err, size_t errlen);

/* Short name of a skip reason ("unreadable", ..., "too short"). */
const char *rmx_prep_skip_name(int reason);

/* Runs the pipeline on every rank of `comm` (collective). Returns an exit code of
 * util/exitcodes.h: RMX_EXIT_OK, RMX_EXIT_USAGE (bad INPUT or OUTDIR), RMX_EXIT_DATA (nothing
 * usable), RMX_EXIT_FAILURE (I/O). On failure `err` holds the message on the rank that met it and
 * is empty on the others. Warnings about skipped files are printed by rank 0, in file order;
 * the summary is filled on every rank. */
int rmx_prep_run(const char *input, const char *outdir, const rmx_prep_options *o, MPI_Comm comm,
                 rmx_prep_summary *summary, char *err, size_t errlen);

/* Calls fn(ctx, k) for every k in [0, n) on up to `threads` threads (the caller is one of them),
 * handing out k in increasing order; fn must be safe to run concurrently. */
void rmx_prep_parallel_for(int threads, long n, void (*fn)(void *ctx, long k), void *ctx);

#endif
