/* Checkpoints: `ckpt-<step>.h5`, written by rank 0, read back on resume.
 *
 * File (format "remixer-checkpoint", version 1). HDF5 with the 1.8 object format, so that every
 * metadata block carries a checksum; every dataset is float32 little-endian, chunked, with the
 * Fletcher32 filter, and holds one tensor with its PyTorch shape (the registry's padding is not
 * stored):
 *   /model/<name>     the model's state_dict: every trained parameter, then the state tensors that
 *                     other rules update (vq.codebook, vq.ema_count, vq.ema_sum). PyTorch keeps the
 *                     latter as buffers, so `load_state_dict` of /model alone restores the model.
 *   /optim/m/<name>   AdamW's first moment of each trained parameter
 *   /optim/v/<name>   AdamW's second moment
 *   /ema/<name>       EMA weights, in stages that keep them
 * The groups /model, /optim and /ema carry an attribute `tensors`: one "name [d0, d1, ...]" string
 * per tensor, in registration order. That list is the architecture fingerprint a resume compares.
 * Root attributes: format, format_version, stage, step (completed optimiser steps), samples_seen
 * (step x global batch), seed, config (the resolved YAML), world_size, global_batch, micro_batch,
 * input_shape ([1, M, T] of one sample), adam_step (AdamW's t after the last update, = step: the
 * trainer's update at step s uses t = s + 1), nonfinite_in_row, nonfinite_total.
 *
 * Whole-file checksum: the file starts with a 4096-byte HDF5 user block (HDF5 and h5py skip it) that
 * the writer fills after closing the HDF5 file and before the rename: magic "RMXCKSUM", version 1,
 * block size, file length, the CRC-64/XZ of every byte after the block and the CRC-64 of the block
 * itself (layout in checkpoint.c). Every reader (rmx_ckpt_read, so resume, and rmx_ckpt_open) checks
 * it before HDF5 opens the file: a mismatch, another length or a zeroed block is RMX_CKPT_DAMAGED.
 * A file whose first bytes are the HDF5 signature predates the block and loads with a note.
 *
 * Nothing else is needed for an exact resume: the data position, the learning rate and every
 * random number are pure functions of (seed, step, sample) (data/schedule.h, util/rng.h).
 *
 * Writing: the buffers are copied to host memory, then a background thread writes
 * `.ckpt-<step>.h5.tmp.<pid>`, fsyncs it, renames it to `ckpt-<step>.h5` and fsyncs the folder
 * (util/fsutil.h); only then are checkpoints beyond the newest `keep` deleted. A crash leaves at
 * most a temporary, which the next start removes. Every HDF5 call is made under data/h5lock.h's
 * lock, one dataset at a time, so the loader's prefetch thread keeps reading meanwhile.
 * Test hook: RMX_TEST_CKPT_DELAY_MS=N makes the writer sleep N ms after each dataset, so a test
 * can kill a process in the middle of a write.
 *
 * Resume (rmx_ckpt_resume, every rank): rank 0 picks and reads the checkpoint, reading every
 * dataset (which verifies each Fletcher32 checksum), then broadcasts the tensors, so only rank 0
 * needs to see the checkpoint folder. */
#ifndef RMX_CHECKPOINT_H
#define RMX_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "model/params.h"
#include "train/comm.h"
#include "train/config.h"

#define RMX_CKPT_FORMAT "remixer-checkpoint"
#define RMX_CKPT_VERSION 1
#define RMX_CKPT_MAX_PARTS 8
#define RMX_CKPT_PATH_MAX (RMX_PATH_MAX + 64)

/* ---- what a checkpoint holds ---- */

/* One registry and the group its values go to. */
typedef struct {
    const char *group;  /* "model", "ema", "autoencoder", ... */
    rmx_params *params;
    int with_adam;      /* the trained registry: its Adam m and v go to /optim/m and /optim/v */
    float *values;      /* the buffer stored (NULL: params->data; e.g. the registry's EMA copy) */
} rmx_ckpt_part;

/* Attributes beyond the tensors, e.g. the dataset's audio parameters under /audio. The pointers
 * must stay valid while the layout is used (writes happen in a background thread). */
typedef enum { RMX_ATTR_F64, RMX_ATTR_I64, RMX_ATTR_STR, RMX_ATTR_STRS } rmx_ckpt_attr_kind;
typedef struct {
    const char *group; /* "" for the root; a group no tensor part names is created for it */
    const char *name;
    rmx_ckpt_attr_kind kind;
    double f64;
    int64_t i64;
    const char *str;   /* STR */
    const char *strs;  /* STRS: n_strs NUL-terminated strings, `width` bytes apart */
    int n_strs, width;
} rmx_ckpt_attr;

#define RMX_CKPT_MAX_ATTRS 48
#define RMX_CKPT_MAX_GROUPS 8

typedef struct {
    rmx_ckpt_part part[RMX_CKPT_MAX_PARTS];
    int n_parts;
    rmx_ckpt_attr attr[RMX_CKPT_MAX_ATTRS];
    int n_attrs;
} rmx_ckpt_layout;

/* Appends a registry (an empty one is skipped). At most one part may have with_adam. */
void rmx_ckpt_layout_add(rmx_ckpt_layout *layout, const char *group, rmx_params *params, int with_adam);
/* Appends a registry whose stored values are `values` (same layout as params->data), e.g. the
 * EMA of the trained weights under /ema. */
void rmx_ckpt_layout_add_values(rmx_ckpt_layout *layout, const char *group, rmx_params *params,
                                float *values);
void rmx_ckpt_layout_attr_f64(rmx_ckpt_layout *layout, const char *group, const char *name, double v);
void rmx_ckpt_layout_attr_i64(rmx_ckpt_layout *layout, const char *group, const char *name, int64_t v);
void rmx_ckpt_layout_attr_str(rmx_ckpt_layout *layout, const char *group, const char *name, const char *s);
/* The dataset's audio parameters (data/shard.h's fields, same names) and genre_names, as
 * attributes of /<group>: what a program turning latents back into audio needs. */
void rmx_ckpt_layout_audio(rmx_ckpt_layout *layout, const char *group, const rmx_mel_params *p);

typedef struct {
    char stage[16];
    int64_t step;          /* completed optimiser steps */
    int64_t samples_seen;
    uint64_t seed;
    int32_t world_size, global_batch, micro_batch;
    int32_t input_shape[3];
    int64_t adam_step;
    int64_t nonfinite_in_row, nonfinite_total;
    const char *config;    /* written; the reader leaves it NULL */
} rmx_ckpt_meta;

/* Host copies of a layout's buffers, `span` floats each (padding zero). */
typedef struct {
    float *values[RMX_CKPT_MAX_PARTS];
    float *m[RMX_CKPT_MAX_PARTS], *v[RMX_CKPT_MAX_PARTS]; /* NULL unless with_adam */
} rmx_ckpt_host;

void rmx_ckpt_host_alloc(rmx_ckpt_host *h, const rmx_ckpt_layout *layout);
void rmx_ckpt_host_free(rmx_ckpt_host *h);
/* Backend buffers -> host copies, and back. */
void rmx_ckpt_host_download(rmx_ckpt_host *h, const rmx_ckpt_layout *layout);
void rmx_ckpt_host_upload(const rmx_ckpt_host *h, const rmx_ckpt_layout *layout);

/* ---- files ---- */

/* "<dir>/ckpt-<step, 8 digits>.h5" */
void rmx_ckpt_path(const char *dir, int64_t step, char *out, size_t outlen);

typedef struct {
    char path[RMX_CKPT_PATH_MAX];
    int64_t step;
} rmx_ckpt_file;

/* The `ckpt-<step>.h5` files of `dir`, newest (highest step) first, in *files (free() it).
 * Returns their number: 0 when the folder does not exist. */
int rmx_ckpt_list(const char *dir, rmx_ckpt_file **files);

/* ---- reading ---- */

typedef enum {
    RMX_CKPT_LOADED = 0,
    RMX_CKPT_DAMAGED,   /* unreadable, incomplete, or a checksum failed: another one may do */
    RMX_CKPT_REFUSED,   /* intact, but of another stage, architecture or format version */
} rmx_ckpt_status;

/* Reads and verifies `path` against `layout` and `stage`: root attributes, the tensor lists, then
 * every dataset into `h` (allocated by the caller). The message in err says why it failed, e.g.
 *   "/model/enc.conv_in.weight: cannot read: data error detected by Fletcher32 checksum"
 *   "checkpoint runs/x/ckpt-00000100.h5 has enc.conv_in.weight [8, 1, 3, 3] but the model has
 *    [16, 1, 3, 3]" */
rmx_ckpt_status rmx_ckpt_read(const char *path, const rmx_ckpt_layout *layout, const char *stage,
                              rmx_ckpt_meta *meta, rmx_ckpt_host *h, char *err, size_t errlen);

/* ---- writing (rank 0) ---- */

typedef struct rmx_ckpt_writer rmx_ckpt_writer;

typedef struct {
    int64_t step;
    char path[RMX_CKPT_PATH_MAX];
    int failed;
    char error[2048];
    double seconds, mib;
} rmx_ckpt_outcome;

/* Creates `dir` if needed. NULL with a message when it cannot. */
rmx_ckpt_writer *rmx_ckpt_writer_create(const char *dir, int keep, const rmx_ckpt_layout *layout,
                                        char *err, size_t errlen);
/* Writes a checkpoint of the registries' current values. Waits for the write in flight first
 * (collect its outcome before calling), copies the buffers to host memory, then writes in a
 * background thread (background = 1) or before returning. */
void rmx_ckpt_save(rmx_ckpt_writer *w, const rmx_ckpt_meta *meta, int background);
/* The outcome of a finished write not collected yet: returns 1 and fills *out, else 0. With
 * `block`, waits for the write in flight. */
int rmx_ckpt_writer_collect(rmx_ckpt_writer *w, int block, rmx_ckpt_outcome *out);
/* Waits for the write in flight (a checkpoint is never abandoned half written), then frees. */
void rmx_ckpt_writer_free(rmx_ckpt_writer *w);

/* ---- reading parts of a checkpoint (later stages, the programs that generate) ---- */

typedef struct rmx_ckpt_reader rmx_ckpt_reader;

/* Opens `path` and checks its format and version. NULL with a message naming the file. */
rmx_ckpt_reader *rmx_ckpt_open(const char *path, char *err, size_t errlen);
void rmx_ckpt_close(rmx_ckpt_reader *r);
const char *rmx_ckpt_reader_path(const rmx_ckpt_reader *r);
/* Root attribute `stage` ("vae", "diffusion", ...). */
const char *rmx_ckpt_reader_stage(const rmx_ckpt_reader *r);
/* Whether group `/group` exists. */
int rmx_ckpt_has_group(rmx_ckpt_reader *r, const char *group);
/* Attributes of /group ("" the root). 0, or -1 with "<file>: /audio: attribute 'n_fft' is
 * missing". A string comes back malloc'd. */
int rmx_ckpt_get_i64(rmx_ckpt_reader *r, const char *group, const char *name, int64_t *out, char *err,
                     size_t errlen);
int rmx_ckpt_get_f64(rmx_ckpt_reader *r, const char *group, const char *name, double *out, char *err,
                     size_t errlen);
char *rmx_ckpt_get_str(rmx_ckpt_reader *r, const char *group, const char *name, char *err, size_t errlen);
/* The audio parameters rmx_ckpt_layout_audio stored under /group, validated. */
int rmx_ckpt_get_audio(rmx_ckpt_reader *r, const char *group, rmx_mel_params *p, char *err, size_t errlen);
/* Reads the tensors of the layout's parts from their groups into the parts' buffers (backend
 * memory): each group must list exactly the tensors of the parts naming it, with their shapes, and
 * every chunk's checksum is verified. RMX_CKPT_REFUSED when the tensors differ (the message names
 * the first difference), RMX_CKPT_DAMAGED when they cannot be read. Attributes are not read. */
rmx_ckpt_status rmx_ckpt_load(rmx_ckpt_reader *r, const rmx_ckpt_layout *layout, char *err, size_t errlen);

/* ---- resuming (every rank) ---- */

typedef struct {
    const rmx_config *cfg;        /* checkpoint.resume, stage, train.seed, train.global_batch */
    const char *dir;              /* the checkpoint folder */
    const rmx_ckpt_layout *layout;
    const rmx_comm *comm;
} rmx_ckpt_resume_request;

/* Applies checkpoint.resume:
 *   auto   the newest checkpoint of `dir` that verifies; a damaged one is reported on rank 0 and
 *          the next older one tried; temporaries left by interrupted writes are removed; none at
 *          all: a fresh start
 *   never  a fresh start (saying so when `dir` holds checkpoints)
 *   PATH   that file, or fail
 * A checkpoint of another stage or architecture is refused, naming the mismatch. On a resume the
 * tensors are broadcast from rank 0 and uploaded on every rank, *meta describes the checkpoint and
 * `path` names it (on every rank; pathlen must be the same on all); on a fresh start meta->step is
 * 0 and path is empty. Returns RMX_EXIT_OK, or
 * RMX_EXIT_CHECKPOINT on every rank after rank 0 printed why. */
int rmx_ckpt_resume(const rmx_ckpt_resume_request *rq, rmx_ckpt_meta *meta, char *path, size_t pathlen);

#endif
