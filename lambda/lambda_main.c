/* remixer-lambda: the inference service as an AWS Lambda custom runtime. Lambda starts the
 * package's `bootstrap` (deploy/package-lambda.sh), which runs this program: it loads the
 * checkpoint once, then answers one event after another through the Runtime API (lambda/runtime.h)
 * with the handler of lambda/handler.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lambda/handler.h"
#include "lambda/runtime.h"
#include "lambda/watchdog.h"
#include "util/exitcodes.h"
#include "util/log.h"

static void usage(FILE *f) {
    fputs("usage: remixer-lambda [--checkpoint PATH] [--device D] [--threads N]\n"
          "  The inference service (a stage-2 or stage-3 checkpoint) as the bootstrap of an AWS Lambda\n"
          "  custom runtime: loads the checkpoint once, then takes events from the Lambda Runtime API\n"
          "  (function URL and API Gateway HTTP/REST events) and answers each with a response object:\n"
          "    POST .../generate  JSON {genre, seconds, steps, cfg, seed, iterations}   -> audio/wav, base64\n"
          "    POST .../remix     JSON {original, style (base64 audio), strength, ...}  -> audio/wav, base64\n"
          "    GET  .../info      the model, its genres, defaults and limits           -> application/json\n"
          "  Bad requests are 4xx responses {\"error\", \"field\"}; a response over the synchronous limit\n"
          "  is replaced by a 413 naming the length that fits. deploy/README.md describes the package.\n\n"
          "environment (Lambda sets the first three):\n"
          "  AWS_LAMBDA_RUNTIME_API   host:port of the Runtime API (required)\n"
          "  LAMBDA_TASK_ROOT         the package's folder; the checkpoint defaults to its model.h5\n"
          "  _HANDLER                 the function's handler setting (not used: there is one handler)\n"
          "  REMIXER_CHECKPOINT       the checkpoint [$LAMBDA_TASK_ROOT/model.h5]   (or --checkpoint)\n"
          "  REMIXER_DEVICE           auto | cpu | cuda [auto]                     (or --device)\n"
          "  REMIXER_THREADS          CPU threads, 0 = all [0]                     (or --threads)\n"
          "  REMIXER_MAX_SECONDS      longest clip to generate or original to remix [30]\n"
          "  REMIXER_MAX_STEPS        most DDIM steps a request may ask for [1000]\n"
          "  REMIXER_LAMBDA_DEADLINE_MARGIN_MS\n"
          "                           a job still running this long before the invocation's deadline is\n"
          "                           stopped at its next cancellation point and reported\n"
          "                           (Remixer.Timeout); one still running at half the margin is\n"
          "                           reported and the process exits (1) [1000]\n"
          "  REMIXER_LAMBDA_MAX_RESPONSE\n"
          "                           largest response payload in bytes [6291556, Lambda's limit]; a\n"
          "                           test knob: only lower values make sense\n\n"
          "function errors (posted to the Runtime API's /error): Remixer.InvalidEvent (not an HTTP\n"
          "event), Remixer.Timeout, Remixer.InternalError, Remixer.ResponseRefused (the Runtime API\n"
          "refused the response); init errors (/init/error, then exit):\n"
          "Remixer.ConfigInvalid, Remixer.CheckpointRefused.\n"
          "exit codes (while all is well it does not exit):\n"
          "  1  the Runtime API failed or went away, or a job overran its deadline (above)\n"
          "  2  bad arguments or environment (/init/error Remixer.ConfigInvalid), or\n"
          "     AWS_LAMBDA_RUNTIME_API unset (not running under Lambda)\n"
          "  4  checkpoint refused: missing, damaged, not stage 2 or 3 (/init/error\n"
          "     Remixer.CheckpointRefused)\n",
          f);
}

typedef struct {
    const char *api, *checkpoint, *device, *handler;
    char checkpoint_buf[1024];
    long threads, margin_ms, max_response;
} settings;

/* A number from the environment in [lo, hi] (absent: *out unchanged). 0, or -1 with err. */
static int env_number(const char *name, double lo, double hi, double *out, char *err, size_t errlen) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !(x >= lo && x <= hi))
        return rmx_seterr(err, errlen, "%s: expected a number from %g to %g, got '%s'", name, lo, hi, v);
    *out = x;
    return 0;
}

static int env_integer(const char *name, long lo, long hi, long *out, char *err, size_t errlen) {
    double x = (double)*out;
    if (env_number(name, (double)lo, (double)hi, &x, err, errlen) != 0) return -1;
    if (x != (double)(long)x) return rmx_seterr(err, errlen, "%s: expected an integer, got '%s'", name, getenv(name));
    *out = (long)x;
    return 0;
}

/* Command line, then the environment for what the command line left. 0, or -1 with err. */
static int read_settings(int argc, char **argv, settings *s, char *err, size_t errlen) {
    *s = (settings){.api = getenv("AWS_LAMBDA_RUNTIME_API"), .checkpoint = getenv("REMIXER_CHECKPOINT"),
                    .device = getenv("REMIXER_DEVICE"), .handler = getenv("_HANDLER"), .margin_ms = 1000,
                    .max_response = (long)RMX_LAMBDA_MAX_RESPONSE};
    if (!s->device || !*s->device) s->device = "auto";
    const char *threads_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--checkpoint") && next) s->checkpoint = argv[++i];
        else if (!strcmp(a, "--device") && next) s->device = argv[++i];
        else if (!strcmp(a, "--threads") && next) threads_arg = argv[++i];
        else return rmx_seterr(err, errlen, "%s: unknown option or missing value (see --help)", a);
    }
    if (env_integer("REMIXER_THREADS", 0, 4096, &s->threads, err, errlen) != 0 ||
        env_integer("REMIXER_LAMBDA_DEADLINE_MARGIN_MS", 0, 600000, &s->margin_ms, err, errlen) != 0 ||
        env_integer("REMIXER_LAMBDA_MAX_RESPONSE", 1024, (long)RMX_LAMBDA_MAX_RESPONSE, &s->max_response, err,
                    errlen) != 0)
        return -1;
    if (threads_arg) {
        char *end;
        s->threads = strtol(threads_arg, &end, 10);
        if (end == threads_arg || *end || s->threads < 0 || s->threads > 4096)
            return rmx_seterr(err, errlen, "--threads: expected an integer from 0 to 4096, got '%s'", threads_arg);
    }
    if (!s->checkpoint || !*s->checkpoint) {
        const char *root = getenv("LAMBDA_TASK_ROOT");
        if (!root || !*root)
            return rmx_seterr(err, errlen, "no checkpoint: set REMIXER_CHECKPOINT (or --checkpoint), or "
                              "LAMBDA_TASK_ROOT to a folder holding model.h5");
        snprintf(s->checkpoint_buf, sizeof s->checkpoint_buf, "%s/model.h5", root);
        s->checkpoint = s->checkpoint_buf;
    }
    return 0;
}

/* The request limits: remixer-serve's defaults, with the environment's overrides. */
static int read_limits(rmx_request_limits *l, char *err, size_t errlen) {
    rmx_request_default_limits(l);
    long steps = l->max_steps;
    if (env_number("REMIXER_MAX_SECONDS", 0.1, 3600, &l->max_seconds, err, errlen) != 0 ||
        env_integer("REMIXER_MAX_STEPS", 1, 100000, &steps, err, errlen) != 0)
        return -1;
    l->max_steps = (int)steps;
    return 0;
}

/* Reports a failed initialisation to Lambda (/init/error) and to the log; returns code. */
static int init_failed(rmx_lambda_runtime *rt, int code, const char *type, const char *message) {
    rmx_error("%s", message);
    char err[512];
    if (rmx_lambda_init_error(rt, type, message, err, sizeof err) != RMX_LAMBDA_ACCEPTED)
        rmx_error("reporting the init error: %s", err);
    rmx_lambda_runtime_close(rt);
    return code;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Posts the outcome. 0, or -1 when the Runtime API failed (the runtime exits). */
static int answer(rmx_lambda_runtime *rt, const rmx_lambda_invocation *inv, const rmx_lambda_outcome *o) {
    char err[1024];
    rmx_lambda_post r = o->response ? rmx_lambda_respond(rt, inv->request_id, o->response, o->response_len, err,
                                                         sizeof err)
                                    : rmx_lambda_fail(rt, inv->request_id, o->error_type, o->error_message, err,
                                                      sizeof err);
    if (r == RMX_LAMBDA_REFUSED && o->response) {
        /* the Runtime API refused the response (e.g. too large): the invocation fails instead */
        char why[sizeof err];
        snprintf(why, sizeof why, "%s", err);
        rmx_error("request %s: response refused: %s", inv->request_id, why);
        r = rmx_lambda_fail(rt, inv->request_id, "Remixer.ResponseRefused", why, err, sizeof err);
    }
    if (r == RMX_LAMBDA_FATAL) {
        rmx_error("request %s: %s", inv->request_id, err);
        return -1;
    }
    if (r == RMX_LAMBDA_REFUSED) rmx_error("request %s: %s", inv->request_id, err);
    return 0;
}

static int serve_events(rmx_lambda_runtime *rt, const rmx_lambda_handler *h, rmx_lambda_watchdog *wd) {
    char err[1024];
    for (;;) {
        rmx_lambda_invocation inv;
        if (rmx_lambda_next(rt, &inv, err, sizeof err) != 0) {
            rmx_error("%s", err);
            return RMX_EXIT_FAILURE;
        }
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rmx_lambda_outcome o;
        /* A deadline already inside the margin is refused before any job starts (lambda/handler.c):
         * nothing to watch, and a watchdog armed now would fire at once (its lead is half the
         * margin), racing that refusal and ending the runtime for an invocation it answers anyway. */
        if (!rmx_lambda_deadline_near(inv.deadline_ms, h->deadline_margin_ms))
            rmx_lambda_watchdog_arm(wd, inv.request_id, inv.deadline_ms);
        rmx_lambda_handle(h, inv.event, inv.event_len, inv.deadline_ms, &o);
        rmx_lambda_watchdog_disarm(wd);
        int ok = answer(rt, &inv, &o);
        if (o.response)
            rmx_info("request %s: %s (%.2f s)", inv.request_id, o.summary, seconds_since(&t0));
        else
            rmx_info("request %s: %s: %s (%.2f s)", inv.request_id, o.summary, o.error_message, seconds_since(&t0));
        free(o.response);
        rmx_lambda_invocation_free(&inv);
        if (ok != 0) return RMX_EXIT_FAILURE;
    }
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-lambda");
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return RMX_EXIT_OK;
        }
    char err[2048];
    settings s;
    int bad = read_settings(argc, argv, &s, err, sizeof err);
    char api_err[512];
    rmx_lambda_runtime *rt = rmx_lambda_runtime_open(s.api, api_err, sizeof api_err);
    if (!rt) { /* nobody to report to */
        rmx_error("%s", api_err);
        if (bad != 0) rmx_error("%s", err);
        return RMX_EXIT_USAGE;
    }
    rmx_lambda_handler h = {.max_response = (size_t)s.max_response, .deadline_margin_ms = s.margin_ms};
    if (bad != 0 || read_limits(&h.limits, err, sizeof err) != 0)
        return init_failed(rt, RMX_EXIT_USAGE, "Remixer.ConfigInvalid", err);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int code = rmx_service_open(s.checkpoint, s.device, (int)s.threads, &h.service, err, sizeof err);
    if (code != RMX_EXIT_OK)
        return init_failed(rt, code,
                           code == RMX_EXIT_CHECKPOINT ? "Remixer.CheckpointRefused"
                           : code == RMX_EXIT_USAGE    ? "Remixer.ConfigInvalid"
                                                       : "Remixer.InternalError",
                           err);
    const rmx_service_info *info = rmx_service_get_info(h.service);
    rmx_info("loaded %s (stage %s, step %" PRId64 ", %s) in %.2f s; handler setting '%s' is not used", s.checkpoint,
             info->stage, info->step, info->device, seconds_since(&t0), s.handler ? s.handler : "");
    /* half the margin: the handler's own cancellation comes first */
    rmx_lambda_watchdog *wd = rmx_lambda_watchdog_start(rt, h.deadline_margin_ms / 2);
    if (!wd) {
        rmx_service_close(h.service);
        return init_failed(rt, RMX_EXIT_FAILURE, "Remixer.InternalError", "cannot start the deadline watchdog");
    }
    code = serve_events(rt, &h, wd);
    rmx_lambda_watchdog_stop(wd);
    rmx_service_close(h.service);
    rmx_lambda_runtime_close(rt);
    return code;
}
