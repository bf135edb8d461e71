/* The inference service's core (infer/service.h). */
#include "infer/service.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/vocoder.h"
#include "data/wav.h"
#include "infer/generator.h"
#include "infer/infer.h"
#include "infer/remixer.h"
#include "train/checkpoint.h"
#include "train/png.h"
#include "util/exitcodes.h"
#include "util/log.h"

/* Shares of a job's progress: the model part, then the vocoder. */
#define MODEL_SHARE 0.7
#define NNLS_SHARE 0.1
/* The longest style upload when max_seconds is shorter: 10 minutes of audio decode to at most a few
 * hundred MB of floats. */
#define STYLE_MAX_SECONDS 600.0

struct rmx_service {
    rmx_service_info info;
    int is_remix;
    rmx_generator gen;        /* stage 2 */
    rmx_backend *be;          /* stage 3: the backend of `remix` */
    rmx_diffusion_ckpt remix; /* stage 3 */
    pthread_mutex_t model_lock; /* the model's activation arenas: one job's model section at a time */
};

/* err from fmt, and st: the one-line way to fail with a message. */
__attribute__((format(printf, 4, 5))) static rmx_svc_status say(rmx_svc_status st, char *err, size_t errlen,
                                                                const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

/* ---- opening ---- */

static int read_stage(const char *path, char *stage, size_t len, char *err, size_t errlen) {
    rmx_ckpt_reader *r = rmx_ckpt_open(path, err, errlen);
    if (!r) return RMX_EXIT_CHECKPOINT;
    snprintf(stage, len, "%s", rmx_ckpt_reader_stage(r));
    rmx_ckpt_close(r);
    return RMX_EXIT_OK;
}

static void fill_info(rmx_service *s, const char *path, const rmx_diffusion_ckpt *m, const rmx_backend *be) {
    rmx_service_info *i = &s->info;
    const rmx_mel_params *a = &m->fae.audio;
    snprintf(i->checkpoint, sizeof i->checkpoint, "%s", path);
    snprintf(i->stage, sizeof i->stage, "%s", m->stage);
    i->can_generate = !s->is_remix;
    i->can_remix = s->is_remix;
    i->step = m->step;
    snprintf(i->device, sizeof i->device, "%s", strstr(be->name, "cuda") ? "cuda" : "cpu");
    i->n_genres = a->n_genres;
    memcpy(i->genres, a->genre_names, sizeof i->genres);
    i->sample_rate = a->sample_rate;
    i->n_mels = a->n_mels;
    i->hop_length = a->hop_length;
    i->segment_seconds = (double)(a->segment_frames - 1) * a->hop_length / a->sample_rate;
    i->timesteps = m->sched.timesteps;
    i->parameters = rmx_dit_params(m->dit)->numel;
}

static int open_remix(rmx_service *s, const char *path, const char *device, int threads, char *err, size_t errlen) {
    if (!(s->be = rmx_infer_backend(device, threads, err, errlen))) return RMX_EXIT_USAGE;
    int code = rmx_diffusion_ckpt_load(s->be, path, 4, RMX_DIT_REMIX, 0, &s->remix, err, errlen);
    if (code != RMX_EXIT_OK) {
        s->be->destroy(s->be);
        s->be = NULL;
    }
    return code;
}

int rmx_service_open(const char *checkpoint, const char *device, int threads, rmx_service **out, char *err,
                     size_t errlen) {
    *out = NULL;
    char stage[64];
    int code = read_stage(checkpoint, stage, sizeof stage, err, errlen);
    if (code != RMX_EXIT_OK) return code;
    const int remix = strcmp(stage, "remix") == 0;
    if (!remix && strcmp(stage, "diffusion") != 0) {
        rmx_seterr(err, errlen,
                   "%s is a checkpoint of stage %s; the service needs a stage-2 (diffusion) checkpoint to generate "
                   "or a stage-3 (remix) checkpoint to remix",
                   checkpoint, stage);
        return RMX_EXIT_CHECKPOINT;
    }
    rmx_service *s = calloc(1, sizeof *s);
    if (!s) {
        rmx_seterr(err, errlen, "out of memory");
        return RMX_EXIT_FAILURE;
    }
    s->is_remix = remix;
    code = remix ? open_remix(s, checkpoint, device, threads, err, errlen)
                 : rmx_generator_open(&s->gen, checkpoint, device, threads, err, errlen);
    if (code != RMX_EXIT_OK) {
        free(s);
        return code;
    }
    fill_info(s, checkpoint, remix ? &s->remix : &s->gen.m, remix ? s->be : s->gen.be);
    pthread_mutex_init(&s->model_lock, NULL);
    *out = s;
    return RMX_EXIT_OK;
}

void rmx_service_close(rmx_service *s) {
    if (!s) return;
    if (s->is_remix) {
        rmx_diffusion_ckpt_free(&s->remix);
        if (s->be) s->be->destroy(s->be);
    } else {
        rmx_generator_close(&s->gen);
    }
    pthread_mutex_destroy(&s->model_lock);
    free(s);
}

const rmx_service_info *rmx_service_get_info(const rmx_service *s) { return &s->info; }

void rmx_service_generate_defaults(const rmx_service *s, rmx_generate_request *r) {
    *r = (rmx_generate_request){.genre = NULL, .seconds = s->info.segment_seconds, .steps = 50, .cfg = 3.0,
                                .seed = 0, .iterations = RMX_VOCODER_DEFAULT_ITERATIONS};
}

void rmx_service_remix_defaults(const rmx_service *s, rmx_remix_request *r) {
    (void)s;
    rmx_remix_options o;
    rmx_remix_default_options(&o);
    *r = (rmx_remix_request){.strength = o.strength, .style_scale = o.style_scale, .style_offset = o.style_offset,
                             .steps = o.steps, .seed = o.seed, .iterations = o.iterations};
}

void rmx_service_result_free(rmx_service_result *r) {
    free(r->wav);
    free(r->png);
    memset(r, 0, sizeof *r);
}

void rmx_service_error_field(const char *err, char *field, size_t len) {
    size_t n = strcspn(err, ": ");
    if (err[n] != ':' || n == 0 || n >= len) n = 0;
    memcpy(field, err, n);
    field[n] = 0;
}

const char *rmx_service_status_name(rmx_svc_status s) {
    switch (s) {
    case RMX_SVC_OK: return "ok";
    case RMX_SVC_BAD_INPUT: return "bad input";
    case RMX_SVC_UNSUPPORTED: return "unsupported";
    case RMX_SVC_CANCELLED: return "cancelled";
    case RMX_SVC_FAILED: return "failed";
    }
    return "unknown";
}

/* ---- progress ---- */

typedef struct {
    rmx_service_progress_fn fn;
    void *ctx;
    int cancelled;
} progress;

static void report(progress *p, double fraction) {
    if (p->fn && !p->cancelled && p->fn(p->ctx, fraction)) p->cancelled = 1;
}

/* The model part's steps (generator: sampling steps over all segments). */
static void on_model_steps(void *arg, int64_t done, int64_t total) {
    report(arg, MODEL_SHARE * (double)done / (double)(total > 0 ? total : 1));
}

/* rmx_infer_progress_fn: the remix's segments, then the vocoder's NNLS and Griffin-Lim. */
static void on_phase(void *arg, const char *what, int64_t done, int64_t total) {
    double f = (double)done / (double)(total > 0 ? total : 1);
    if (!strcmp(what, "NNLS")) f = MODEL_SHARE + NNLS_SHARE * f;
    else if (!strcmp(what, "Griffin-Lim")) f = MODEL_SHARE + NNLS_SHARE + (1.0 - MODEL_SHARE - NNLS_SHARE) * f;
    else f = MODEL_SHARE * f;
    report(arg, f);
}

/* ---- results ---- */

/* audio -> WAV bytes, mel [n_mels][frames] -> PNG bytes. */
static rmx_svc_status encode_result(const rmx_service *s, const float *audio, int64_t n, const rmx_wav_options *wo,
                                    const float *mel, int64_t frames, rmx_service_result *out, char *err,
                                    size_t errlen) {
    memset(out, 0, sizeof *out);
    out->sample_rate = s->info.sample_rate;
    out->seconds = (double)n / s->info.sample_rate;
    if (rmx_wav_encode(audio, n, s->info.sample_rate, wo, NULL, &out->wav, &out->wav_len, err, errlen) != 0)
        return RMX_SVC_FAILED;
    const float *panels[1] = {mel};
    if (rmx_png_spectrograms_encode(panels, 1, 1, s->info.n_mels, (int)frames, 0, 0, &out->png, &out->png_len, err,
                                    errlen) != 0) {
        rmx_service_result_free(out);
        return RMX_SVC_FAILED;
    }
    return RMX_SVC_OK;
}

static rmx_svc_status bad(char *err, size_t errlen, const char *field, const char *what, double lo, double hi,
                          double got) {
    rmx_seterr(err, errlen, "%s: %s must be from %g to %g, got %g", field, what, lo, hi, got);
    return RMX_SVC_BAD_INPUT;
}

/* ---- generate ---- */

static rmx_svc_status check_generate(const rmx_service *s, const rmx_generate_request *r, int *genre, char *err,
                                     size_t errlen) {
    if (!s->info.can_generate)
        return say(RMX_SVC_UNSUPPORTED, err, errlen,
                          "operation: generate is not offered by %s, a checkpoint of stage %s (generate needs a "
                          "stage-2 (diffusion) checkpoint)",
                          s->info.checkpoint, s->info.stage);
    *genre = r->genre ? rmx_generator_genre(&s->gen, r->genre) : -1;
    if (*genre < 0) {
        char list[RMX_MAX_GENRES * (RMX_GENRE_NAME_MAX + 2)] = "";
        size_t used = 0;
        for (int i = 0; i < s->info.n_genres && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", s->info.genres[i]);
        if (!r->genre) return say(RMX_SVC_BAD_INPUT, err, errlen, "genre: required, one of %s", list);
        return say(RMX_SVC_BAD_INPUT, err, errlen, "genre: unknown '%s', expected one of %s", r->genre, list);
    }
    if (!(r->seconds >= 0.05 && r->seconds <= 3600)) return bad(err, errlen, "seconds", "the length", 0.05, 3600, r->seconds);
    if (r->steps < 1 || r->steps > 10000) return bad(err, errlen, "steps", "DDIM steps", 1, 10000, r->steps);
    if (!(r->cfg >= 0 && r->cfg <= 100)) return bad(err, errlen, "cfg", "the guidance", 0, 100, r->cfg);
    if (r->iterations < 0 || r->iterations > 10000)
        return bad(err, errlen, "iterations", "Griffin-Lim iterations", 0, 10000, r->iterations);
    return RMX_SVC_OK;
}

/* The metadata remixer-generate writes for clip 0 of a genre. */
static void generate_wav_text(const rmx_service *s, const rmx_generate_request *r, const char *genre, int64_t n,
                              char *title, size_t tlen, char *comment, size_t clen) {
    snprintf(title, tlen, "%s #%d", genre, 0);
    snprintf(comment, clen,
             "remixer-generate %s step %" PRId64 ": genre %s, clip %d, seed %" PRIu64
             ", steps %d, cfg %g, eta %g, seconds %.3f, griffin-lim %d",
             s->gen.path, s->gen.m.step, genre, 0, r->seed, r->steps, (float)r->cfg, 0.0f,
             (double)n / s->info.sample_rate, r->iterations);
}

rmx_svc_status rmx_service_generate(rmx_service *s, const rmx_generate_request *r, rmx_service_progress_fn fn,
                                    void *ctx, rmx_service_result *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int genre = -1;
    rmx_svc_status st = check_generate(s, r, &genre, err, errlen);
    if (st != RMX_SVC_OK) return st;
    const rmx_mel_params *a = rmx_generator_audio(&s->gen);
    const int64_t frames = rmx_generator_frames(&s->gen, r->seconds), samples = llround(r->seconds * a->sample_rate);
    float *mel = malloc(sizeof(float) * (size_t)a->n_mels * (size_t)frames);
    if (!mel) return say(RMX_SVC_FAILED, err, errlen, "out of memory for %" PRId64 " frames", frames);
    progress p = {fn, ctx, 0};
    /* clip 0 of the genre, keyed as remixer-generate keys it */
    const int32_t y = genre;
    const int64_t key = (int64_t)genre * 1000003;
    rmx_generate_opts o = {.steps = r->steps, .cfg = (float)r->cfg, .eta = 0.0f, .seed = r->seed,
                           .progress = on_model_steps, .arg = &p};
    pthread_mutex_lock(&s->model_lock);
    int rc = rmx_generate_mel(&s->gen, &o, 1, &y, &key, frames, mel, err, errlen);
    pthread_mutex_unlock(&s->model_lock);
    if (rc != 0 || p.cancelled) {
        free(mel);
        if (rc == 0) rmx_seterr(err, errlen, "cancelled");
        return rc != 0 ? RMX_SVC_FAILED : RMX_SVC_CANCELLED;
    }
    rmx_remix_options vo = {.iterations = r->iterations, .seed = r->seed};
    float *audio = NULL;
    int64_t n = 0;
    if (rmx_remix_vocode(a, mel, frames, samples, &vo, on_phase, &p, &audio, &n, err, errlen) != 0) {
        free(mel);
        return RMX_SVC_FAILED;
    }
    st = p.cancelled ? RMX_SVC_CANCELLED : RMX_SVC_OK;
    if (st == RMX_SVC_CANCELLED) rmx_seterr(err, errlen, "cancelled");
    char title[160], comment[RMX_PATH_MAX + 512];
    const char *name = a->genre_names[genre];
    generate_wav_text(s, r, name, n, title, sizeof title, comment, sizeof comment);
    rmx_wav_options wo;
    rmx_wav_default_options(&wo);
    wo.title = title;
    wo.comment = comment;
    wo.genre = name;
    if (st == RMX_SVC_OK) st = encode_result(s, audio, n, &wo, mel, frames, out, err, errlen);
    free(audio);
    free(mel);
    return st;
}

/* ---- remix ---- */

static rmx_svc_status check_remix(const rmx_service *s, const rmx_remix_request *r, char *err, size_t errlen) {
    if (!s->info.can_remix)
        return say(RMX_SVC_UNSUPPORTED, err, errlen,
                          "operation: remix is not offered by %s, a checkpoint of stage %s (remixing needs a "
                          "stage-3 (remix) checkpoint)",
                          s->info.checkpoint, s->info.stage);
    if (!(r->strength >= 0 && r->strength <= 1)) return bad(err, errlen, "strength", "the strength", 0, 1, r->strength);
    if (!(r->style_scale >= 0 && r->style_scale <= 100))
        return bad(err, errlen, "style_scale", "the style guidance", 0, 100, r->style_scale);
    if (!(r->style_offset >= 0 && r->style_offset <= 1e7))
        return bad(err, errlen, "style_offset", "the style offset", 0, 1e7, r->style_offset);
    if (r->steps < 1 || r->steps > 100000) return bad(err, errlen, "steps", "DDIM steps", 1, 100000, r->steps);
    if (r->iterations < 0 || r->iterations > 100000)
        return bad(err, errlen, "iterations", "Griffin-Lim iterations", 0, 100000, r->iterations);
    if (!r->original) return say(RMX_SVC_BAD_INPUT, err, errlen, "original: required (an audio file)");
    if (!r->style) return say(RMX_SVC_BAD_INPUT, err, errlen, "style: required (an audio file)");
    return RMX_SVC_OK;
}

/* An upload's length from its header, before anything is decoded (a small compressed file can
 * hold hours of audio): BAD_INPUT when it is over `limit` seconds (0: no limit) or unreadable. */
static rmx_svc_status check_length(const void *data, size_t len, const char *field, double limit, char *err,
                                   size_t errlen) {
    rmx_audio_info info;
    char why[1024];
    if (rmx_audio_probe_memory(data, len, &info, why, sizeof why) != RMX_AUDIO_OK)
        return say(RMX_SVC_BAD_INPUT, err, errlen, "%s: %s", field, why);
    const double seconds = (double)info.frames / info.sample_rate;
    if (limit > 0 && seconds > limit)
        return say(RMX_SVC_BAD_INPUT, err, errlen, "%s: %.2f s long, more than the limit of %g s", field, seconds,
                   limit);
    return RMX_SVC_OK;
}

/* Both uploads decoded and their mels computed; the original within max_seconds, the style within
 * the larger of max_seconds and STYLE_MAX_SECONDS (only one segment of it is used, but all of it
 * is decoded). */
static rmx_svc_status decode_uploads(const rmx_service *s, const rmx_remix_request *r, rmx_infer_audio *a,
                                     rmx_infer_audio *b, char *err, size_t errlen) {
    const rmx_mel_params *p = &s->remix.fae.audio;
    const double style_limit = r->max_seconds > 0 && r->max_seconds < STYLE_MAX_SECONDS ? STYLE_MAX_SECONDS
                                                                                        : r->max_seconds;
    rmx_svc_status st = check_length(r->original, r->original_len, "original", r->max_seconds, err, errlen);
    if (st == RMX_SVC_OK) st = check_length(r->style, r->style_len, "style", style_limit, err, errlen);
    if (st != RMX_SVC_OK) return st;
    int code = rmx_infer_load_audio_memory(r->original, r->original_len, "original", p, a, err, errlen);
    if (code != RMX_EXIT_OK) return code == RMX_EXIT_DATA ? RMX_SVC_BAD_INPUT : RMX_SVC_FAILED;
    code = rmx_infer_load_audio_memory(r->style, r->style_len, "style", p, b, err, errlen);
    if (code != RMX_EXIT_OK) {
        rmx_infer_audio_free(a);
        return code == RMX_EXIT_DATA ? RMX_SVC_BAD_INPUT : RMX_SVC_FAILED;
    }
    char why[512];
    const char *field = rmx_remix_check_length(p, a, why, sizeof why) != 0   ? "original"
                        : rmx_remix_check_length(p, b, why, sizeof why) != 0 ? "style"
                                                                              : NULL;
    if (field) {
        rmx_infer_audio_free(a);
        rmx_infer_audio_free(b);
        return say(RMX_SVC_BAD_INPUT, err, errlen, "%s: %s", field, why);
    }
    return RMX_SVC_OK;
}

/* The remix of decoded inputs into out. */
static rmx_svc_status remix_decoded(rmx_service *s, const rmx_remix_request *r, const rmx_infer_audio *a,
                                    const rmx_infer_audio *b, progress *p, rmx_service_result *out, char *err,
                                    size_t errlen) {
    const rmx_mel_params *mp = &s->remix.fae.audio;
    rmx_remix_options o = {.strength = r->strength, .style_scale = r->style_scale, .style_offset = r->style_offset,
                           .steps = r->steps, .iterations = r->iterations, .seed = r->seed};
    float *y = malloc(sizeof(float) * (size_t)mp->n_mels * a->frames), *audio = NULL;
    if (!y) return say(RMX_SVC_FAILED, err, errlen, "out of memory for %" PRId64 " frames", a->frames);
    rmx_remix_facts f;
    pthread_mutex_lock(&s->model_lock);
    int rc = rmx_remix_mel(&s->remix, a, b, &o, on_phase, p, y, &f, err, errlen);
    pthread_mutex_unlock(&s->model_lock);
    int64_t n = 0;
    rmx_svc_status st = rc != 0 ? RMX_SVC_FAILED : p->cancelled ? RMX_SVC_CANCELLED : RMX_SVC_OK;
    if (st == RMX_SVC_OK && rmx_remix_vocode(mp, y, a->frames, a->n, &o, on_phase, p, &audio, &n, err, errlen) != 0)
        st = RMX_SVC_FAILED;
    if (st == RMX_SVC_OK && p->cancelled) st = RMX_SVC_CANCELLED;
    if (st == RMX_SVC_CANCELLED) rmx_seterr(err, errlen, "cancelled");
    if (st == RMX_SVC_OK) {
        char title[1024], comment[8192];
        rmx_remix_wav_text(&s->remix, &o, r->original_name ? r->original_name : "original",
                           r->style_name ? r->style_name : "style", &f, title, sizeof title, comment, sizeof comment);
        rmx_wav_options wo;
        rmx_wav_default_options(&wo);
        wo.title = title;
        wo.comment = comment;
        st = encode_result(s, audio, n, &wo, y, a->frames, out, err, errlen);
    }
    free(audio);
    free(y);
    return st;
}

rmx_svc_status rmx_service_remix(rmx_service *s, const rmx_remix_request *r, rmx_service_progress_fn fn, void *ctx,
                                 rmx_service_result *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    rmx_svc_status st = check_remix(s, r, err, errlen);
    if (st != RMX_SVC_OK) return st;
    rmx_infer_audio a, b;
    if ((st = decode_uploads(s, r, &a, &b, err, errlen)) != RMX_SVC_OK) return st;
    progress p = {fn, ctx, 0};
    report(&p, 0.0);
    st = p.cancelled ? RMX_SVC_CANCELLED : remix_decoded(s, r, &a, &b, &p, out, err, errlen);
    if (st == RMX_SVC_CANCELLED) rmx_seterr(err, errlen, "cancelled");
    rmx_infer_audio_free(&a);
    rmx_infer_audio_free(&b);
    return st;
}
