/* The inference service's core: one loaded stage-2 (diffusion) or stage-3 (remix) checkpoint and
 * one request -> WAV bytes and a spectrogram PNG, all in memory; no HTTP, no JSON (remixer-serve
 * and remixer-lambda put those around it: serve/request.h).
 *
 * Usage:
 *   rmx_service *s;
 *   char err[2048];
 *   int code = rmx_service_open("ckpt.h5", "auto", 0, &s, err, sizeof err); // RMX_EXIT_*
 *   if (code != RMX_EXIT_OK) { fprintf(stderr, "%s\n", err); return code; }
 *   const rmx_service_info *info = rmx_service_get_info(s);      // stage, operations, genres
 *   rmx_generate_request r;
 *   rmx_service_generate_defaults(s, &r);                         // then set what the client gave
 *   r.genre = "drums";
 *   rmx_service_result res;
 *   if (rmx_service_generate(s, &r, NULL, NULL, &res, err, sizeof err) == RMX_SVC_OK) {
 *       ... res.wav[0 .. res.wav_len), res.png[0 .. res.png_len) ...
 *       rmx_service_result_free(&res);
 *   }
 *   rmx_service_close(s);
 *
 * Operations: a stage-2 checkpoint offers generate, a stage-3 checkpoint offers remix (its
 * transformer is trained with style tokens; generate is not offered there: see the README's
 * "Inference service" section). Asking for an operation the model lacks is RMX_SVC_UNSUPPORTED.
 *
 * Threads: rmx_service_generate / _remix may be called from several threads at once on one
 * service. The model keeps its activations in one arena per network (model/dit.h, the
 * autoencoder's, the backend's scratch), so the model section of a job (sampling, encoder,
 * decoder) runs under the service's mutex, one job at a time; decoding uploads, computing mels,
 * the vocoder (Griffin-Lim, the larger part of a CPU job) and the WAV/PNG encoding run outside
 * it, in parallel.
 *
 * Determinism: the same request gives the same bytes as remixer-generate --count 1 / remixer-remix
 * with the same options (the WAV metadata names the checkpoint as it was given to
 * rmx_service_open, and for a remix original_name and style_name as the programs name the paths).
 *
 * Errors: RMX_SVC_BAD_INPUT messages start with the field name and a colon ("genre: unknown
 * 'x', expected one of ...", "original: not audio (...)"), so a front end can name the field;
 * rmx_service_error_field copies that name out. */
#ifndef RMX_SERVICE_H
#define RMX_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "data/shard.h"
#include "train/config.h"

typedef struct rmx_service rmx_service;

typedef enum {
    RMX_SVC_OK = 0,
    RMX_SVC_BAD_INPUT,   /* the request: a field out of range, an upload that is not usable audio */
    RMX_SVC_UNSUPPORTED, /* the operation is not offered by this checkpoint's stage */
    RMX_SVC_CANCELLED,   /* the progress callback asked to stop */
    RMX_SVC_FAILED,      /* runtime failure (out of memory, a non-finite model output) */
} rmx_svc_status;

/* Facts about the loaded model, for /api/info and the page. */
typedef struct {
    char checkpoint[RMX_PATH_MAX]; /* as given to rmx_service_open */
    char stage[16];                /* "diffusion" (stage 2) or "remix" (stage 3) */
    int can_generate, can_remix;
    int64_t step;                  /* the checkpoint's training step */
    char device[8];                /* "cpu" or "cuda" */
    int n_genres;
    char genres[RMX_MAX_GENRES][RMX_GENRE_NAME_MAX];
    int sample_rate, n_mels, hop_length;
    double segment_seconds;        /* one model segment; longer audio is made segment by segment */
    int timesteps;                 /* the diffusion schedule's length (steps above it run as it) */
    size_t parameters;             /* the transformer's parameter count */
} rmx_service_info;

typedef struct {
    const char *genre;   /* a genre of the checkpoint (required) */
    double seconds;      /* length of the clip, > 0 */
    int steps;           /* DDIM steps */
    double cfg;          /* classifier-free guidance (1: conditional only, 0: unconditional) */
    uint64_t seed;
    int iterations;      /* Griffin-Lim iterations */
} rmx_generate_request;

typedef struct {
    const void *original; /* the song whose content is kept: encoded audio (any format libsndfile reads) */
    size_t original_len;
    const void *style;    /* the song whose character is taken */
    size_t style_len;
    const char *original_name, *style_name; /* for the WAV metadata; NULL: "original", "style" */
    double strength;      /* 0 (the original through the autoencoder) .. 1 */
    double style_scale;   /* style guidance */
    double style_offset;  /* seconds into the style song where its segment starts */
    int steps;            /* DDIM steps over the whole schedule */
    uint64_t seed;
    int iterations;       /* Griffin-Lim iterations */
    double max_seconds;   /* > 0: an original longer than this is refused (BAD_INPUT, field original),
                             and a style longer than this or 600 s, whichever is more (field style);
                             judged from the headers, before decoding */
} rmx_remix_request;

typedef struct {
    unsigned char *wav;   /* a complete 16-bit PCM mono WAV file (malloc'd) */
    size_t wav_len;
    unsigned char *png;   /* the generated log-mel spectrogram as a PNG file (malloc'd) */
    size_t png_len;
    double seconds;       /* the audio's length */
    int sample_rate;
} rmx_service_result;

/* Called between steps with the fraction of the job done (0..1, rising); a nonzero return cancels
 * the job at its next cancellation point (between sampler segments' phases and before the
 * vocoder): RMX_SVC_CANCELLED. */
typedef int (*rmx_service_progress_fn)(void *ctx, double fraction);

/* device: auto | cpu | cuda; threads: CPU threads, 0 = all. Returns RMX_EXIT_OK, RMX_EXIT_USAGE
 * (cuda asked for and absent) or RMX_EXIT_CHECKPOINT (missing, damaged, not stage 2 or 3), with
 * the message in err. */
int rmx_service_open(const char *checkpoint, const char *device, int threads, rmx_service **out, char *err,
                     size_t errlen);
void rmx_service_close(rmx_service *s);

const rmx_service_info *rmx_service_get_info(const rmx_service *s);

/* The programs' defaults: one segment, 50 steps, cfg 3, seed 0, 32 iterations; strength 0.6,
 * style_scale 2, style_offset 0; genre / audio unset. */
void rmx_service_generate_defaults(const rmx_service *s, rmx_generate_request *r);
void rmx_service_remix_defaults(const rmx_service *s, rmx_remix_request *r);

rmx_svc_status rmx_service_generate(rmx_service *s, const rmx_generate_request *r, rmx_service_progress_fn progress,
                                    void *ctx, rmx_service_result *out, char *err, size_t errlen);
rmx_svc_status rmx_service_remix(rmx_service *s, const rmx_remix_request *r, rmx_service_progress_fn progress,
                                 void *ctx, rmx_service_result *out, char *err, size_t errlen);
void rmx_service_result_free(rmx_service_result *r);

/* The field a BAD_INPUT message names (the text before its first ':'), or "" when it names none. */
void rmx_service_error_field(const char *err, char *field, size_t len);

const char *rmx_service_status_name(rmx_svc_status s);

#endif
