#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/progress.h"

static const char *g_program = "remixer";

void rmx_log_set_program(const char *name) { g_program = name; }
const char *rmx_log_program(void) { return g_program; }

static void vmessage(const char *kind, const char *fmt, va_list ap) {
    rmx_progress_clear_active(); /* a message never lands on the end of a progress bar */
    fprintf(stderr, "%s: %s", g_program, kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void rmx_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

void rmx_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
}

void rmx_info(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
}

void rmx_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
    exit(code);
}

int rmx_seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}
