/* Shared pieces of the data tests: checks that count failures, scratch folders, and small
 * synthetic datasets written through the real shard writer. */
#ifndef RMX_DATA_TEST_UTIL_H
#define RMX_DATA_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/shard.h"

extern int rmxt_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            rmxt_failures++;                                                           \
        }                                                                              \
    } while (0)

/* Checks that `got` equals `want` exactly, printing both when not. */
#define CHECK_STR(got, want) rmxt_check_str(__FILE__, __LINE__, (got), (want))
void rmxt_check_str(const char *file, int line, const char *got, const char *want);

/* Prints the summary and returns the process exit status (0 when every check passed). */
int rmxt_finish(const char *test_name);

/* A fresh folder under $TMPDIR (or /tmp); rmxt_rmtree removes it with everything inside. */
void rmxt_mkdtemp(char *out, size_t outlen);
void rmxt_rmtree(const char *path);
/* Creates (empty) sub-folder `name` of `parent`; out gets its path. */
void rmxt_subdir(const char *parent, const char *name, char *out, size_t outlen);

/* Parameters of a small dataset: M mels, T frames, n_genres genres named g0, g1, ... */
rmx_mel_params rmxt_params(int n_mels, int frames, int n_genres);

/* The value every test expects at (sample key, mel bin, frame): exact in float32, distinct enough
 * that a misplaced row or transposed axis shows. Samples are keyed by their dataset index. */
float rmxt_mel_value(int64_t key, int bin, int frame);
void rmxt_fill_mel(int64_t key, int n_mels, int frames, float *mel);
int32_t rmxt_genre_of(int64_t key, int n_genres);
/* Source path and offset the writer gets for sample `key` (3 segments per source file). */
void rmxt_source_of(int64_t key, int frames, char *out, size_t outlen, int64_t *offset);

/* Writes `n_shards` shards of `rows[i]` segments into `dir` with params p; sample keys continue
 * across shards starting at `first_key`. Returns 0, or -1 after printing the writer's error. */
int rmxt_write_dataset(const char *dir, const rmx_mel_params *p, int n_shards, const int *rows,
                       int64_t first_key);
/* Overwrites /mel[row, bin, frame] of a shard file in place, as damage or a foreign tool would
 * (the writer itself refuses non-finite values). */
int rmxt_poke_mel(const char *shard_path, int row, int bin, int frame, float value);
/* Damage as a disk or a copy would do it, behind HDF5's back: flips bit `bit` of byte `byte` of the
 * stored chunk of /mel row `row` (found with H5Dget_chunk_info_by_coord); the chunk's checksum no
 * longer matches. Returns 0, or -1 when the chunk cannot be found or written. */
int rmxt_flip_chunk_bit(const char *shard_path, int row, size_t byte, int bit);
/* Flips bit `bit` of the byte at file offset `offset`. */
int rmxt_flip_file_bit(const char *path, long offset, int bit);
/* [*start, *end) bytes of the file that hold /mel chunks; *rows gets the number of chunks. */
int rmxt_mel_chunk_span(const char *shard_path, long *start, long *end, int *rows);
/* Turns a shard into a format-version-1 one, as the writer before checksums made it: every dataset
 * rewritten without its Fletcher32 filter (same type, shape and chunking) and format_version = 1
 * (or `version`, to fake a file that claims checksums it does not have). */
int rmxt_strip_checksums(const char *shard_path, int version);
/* Path of shard i in dir. */
void rmxt_shard_path(const char *dir, int i, char *out, size_t outlen);

#endif
