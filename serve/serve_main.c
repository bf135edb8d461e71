/* remixer-serve: a stage-2 or stage-3 checkpoint served over HTTP, a web page and a JSON API
 * (serve/api.h), jobs run by worker threads over one loaded model (serve/jobs.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/service.h"
#include "serve/api.h"
#include "serve/jobs.h"
#include "serve/request.h"
#include "util/exitcodes.h"
#include "util/log.h"

typedef struct {
    const char *checkpoint, *host, *device;
    int port, workers, max_queue, threads, client_timeout, max_results;
    double max_upload_mb, max_seconds, result_ttl, grace;
} cli;

static void usage(FILE *f) {
    fputs("usage: remixer-serve CHECKPOINT [options]\n"
          "  Serves a stage-2 (diffusion) checkpoint's generate or a stage-3 (remix) checkpoint's remix\n"
          "  over HTTP: a web page at / and a JSON API (/api/info, /api/generate, /api/remix,\n"
          "  /api/jobs/ID, /api/jobs/ID/audio.wav, /api/jobs/ID/mel.png, /healthz; see README.md).\n"
          "  Prints 'listening on http://HOST:PORT/' once it accepts requests. SIGTERM or SIGINT:\n"
          "  stops accepting, cancels queued jobs, lets running ones stop or finish within --grace\n"
          "  seconds, exits 0.\n\n"
          "options (default in brackets):\n"
          "  --host ADDR          the address to listen on (IPv4 or IPv6) [127.0.0.1]\n"
          "  --port N             the port; 0 picks a free one [8080]\n"
          "  --workers N          jobs run at once (they share one model: see README.md) [1]\n"
          "  --max-queue Q        jobs that may wait; beyond them 503 with Retry-After [8]\n"
          "  --max-upload-mb M    the largest request body, uploads included; beyond it 413 [20]\n"
          "  --max-seconds S      the longest clip to generate and the longest original to remix [30]\n"
          "  --device D           auto | cpu | cuda [auto]\n"
          "  --threads N          CPU threads of the model and the vocoder (0: all) [0]\n"
          "  --client-timeout S   a connection idle this long is closed (slow or stalled clients) [30]\n"
          "  --result-ttl S       a result is kept this long after it finished [600]\n"
          "  --max-results N      at most this many finished jobs are kept, the oldest go first [64]\n"
          "  --grace S            on SIGTERM, how long running jobs may take to stop [10]\n"
          "  -h, --help           this text\n\n"
          "exit codes: 0 stopped by SIGTERM/SIGINT (or --help), 1 runtime failure (cannot listen, cannot\n"
          "            start threads), 2 bad arguments (or cuda asked for and absent), 4 checkpoint\n"
          "            refused (missing, damaged, not stage 2 or 3)\n",
          f);
}

static int parse_number(const char *opt, const char *text, double lo, double hi, int integer, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text ? text : "", &end);
    if (!text || !*text || *end || errno || !isfinite(v) || v < lo || v > hi || (integer && v != floor(v))) {
        rmx_error("%s: expected %s from %g to %g, got '%s'", opt, integer ? "an integer" : "a number", lo, hi,
                  text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* One numeric option: its range and where it goes. */
typedef struct {
    const char *name;
    double lo, hi;
    int integer;
    int *i;
    double *d;
} number_option;

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, cli *c) {
    *c = (cli){.host = "127.0.0.1", .device = "auto", .port = 8080, .workers = 1, .max_queue = 8,
               .client_timeout = 30, .max_results = 64, .max_upload_mb = 20, .max_seconds = 30, .result_ttl = 600,
               .grace = 10};
    const number_option numbers[] = {
        {"--port", 0, 65535, 1, &c->port, NULL},          {"--workers", 1, 64, 1, &c->workers, NULL},
        {"--max-queue", 0, 100000, 1, &c->max_queue, NULL}, {"--threads", 0, 4096, 1, &c->threads, NULL},
        {"--client-timeout", 1, 3600, 1, &c->client_timeout, NULL},
        {"--max-results", 1, 100000, 1, &c->max_results, NULL},
        {"--max-upload-mb", 0.001, 4096, 0, NULL, &c->max_upload_mb},
        {"--max-seconds", 0.05, 3600, 0, NULL, &c->max_seconds},
        {"--result-ttl", 1, 1e7, 0, NULL, &c->result_ttl},     {"--grace", 0, 3600, 0, NULL, &c->grace}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return RMX_EXIT_OK;
        }
        if (a[0] != '-') {
            if (c->checkpoint) {
                rmx_error("one checkpoint expected, got '%s' and '%s'", c->checkpoint, a);
                return RMX_EXIT_USAGE;
            }
            c->checkpoint = a;
            continue;
        }
        if (!v) {
            rmx_error("%s needs a value (see --help)", a);
            return RMX_EXIT_USAGE;
        }
        i++;
        if (!strcmp(a, "--host")) {
            unsigned char addr[sizeof(struct in6_addr)];
            if (inet_pton(AF_INET, v, addr) != 1 && inet_pton(AF_INET6, v, addr) != 1) {
                rmx_error("--host: expected an IPv4 or IPv6 address, got '%s'", v);
                return RMX_EXIT_USAGE;
            }
            c->host = v;
            continue;
        }
        if (!strcmp(a, "--device")) {
            if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
                rmx_error("--device: expected auto, cpu or cuda, got '%s'", v);
                return RMX_EXIT_USAGE;
            }
            c->device = v;
            continue;
        }
        const number_option *o = NULL;
        for (size_t k = 0; k < sizeof numbers / sizeof *numbers && !o; k++)
            if (!strcmp(a, numbers[k].name)) o = &numbers[k];
        if (!o) {
            rmx_error("unknown option '%s' (see --help)", a);
            return RMX_EXIT_USAGE;
        }
        double x;
        if (parse_number(a, v, o->lo, o->hi, o->integer, &x) != 0) return RMX_EXIT_USAGE;
        if (o->i) *o->i = (int)x;
        else *o->d = x;
    }
    if (!c->checkpoint) {
        usage(stderr);
        return RMX_EXIT_USAGE;
    }
    return -1;
}

/* SIGTERM and SIGINT are taken by sigwait in the main thread; every thread started after this
 * inherits the mask. */
static void block_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void describe(const rmx_service_info *i, const char *host, int port, int workers) {
    printf("remixer-serve: %s (stage %s, step %lld, %s), offers %s; %d worker%s\n", i->checkpoint, i->stage,
           (long long)i->step, i->device, i->can_generate ? "generate" : "remix", workers, workers == 1 ? "" : "s");
    printf("listening on http://%s%s%s:%d/\n", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    fflush(stdout);
}

/* Waits for SIGTERM/SIGINT, then stops: no new connections or jobs, queued jobs cancelled,
 * running ones asked to stop; within --grace the workers end. */
static int serve_until_signal(rmx_api *api, struct MHD_Daemon *d, const sigset_t *set, double grace) {
    int sig = 0;
    sigwait(set, &sig);
    printf("remixer-serve: %s: stopping (running jobs get %g s)\n", strsignal(sig), grace);
    fflush(stdout);
    api->stopping = 1;
    MHD_socket listener = MHD_quiesce_daemon(d);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    if (rmx_jobs_stop(api->jobs, grace) != 0) {
        /* a job still in its model section: its result is never published; leave now */
        printf("remixer-serve: stopped (a running job did not end within %g s and was abandoned)\n", grace);
        fflush(stdout);
        _exit(RMX_EXIT_OK);
    }
    MHD_stop_daemon(d);
    printf("remixer-serve: stopped\n");
    fflush(stdout);
    return RMX_EXIT_OK;
}

static int run(const cli *c) {
    sigset_t set;
    block_signals(&set);
    char err[4096];
    rmx_service *s = NULL;
    int code = rmx_service_open(c->checkpoint, c->device, c->threads, &s, err, sizeof err);
    if (code != RMX_EXIT_OK) {
        rmx_error("%s", err);
        return code;
    }
    rmx_api api = {.service = s};
    rmx_request_default_limits(&api.limits);
    api.limits.max_seconds = c->max_seconds;
    api.limits.max_upload_bytes = (size_t)(c->max_upload_mb * 1024 * 1024);
    api.limits.workers = c->workers;
    api.limits.max_queue = c->max_queue;
    rmx_jobs_config jc = {.workers = c->workers, .max_queue = c->max_queue, .max_results = c->max_results,
                          .ttl_s = c->result_ttl};
    api.jobs = rmx_jobs_start(s, &jc, err, sizeof err);
    int port = 0;
    struct MHD_Daemon *d = api.jobs ? rmx_api_start(&api, c->host, c->port, c->client_timeout, &port, err, sizeof err)
                                    : NULL;
    if (!d) {
        rmx_error("%s", err);
        if (api.jobs && rmx_jobs_stop(api.jobs, 60) == 0) rmx_jobs_free(api.jobs);
        rmx_service_close(s);
        return RMX_EXIT_FAILURE;
    }
    describe(rmx_service_get_info(s), c->host, port, c->workers);
    code = serve_until_signal(&api, d, &set, c->grace);
    rmx_jobs_free(api.jobs);
    rmx_service_close(s);
    return code;
}

int main(int argc, char **argv) {
    rmx_log_set_program("remixer-serve");
    cli c;
    int code = parse_args(argc, argv, &c);
    if (code >= 0) return code;
    return run(&c);
}
