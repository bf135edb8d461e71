/* Human-facing messages. Library code reports errors through an errbuf; programs print them here. */
#ifndef RMX_LOG_H
#define RMX_LOG_H
#include <stdarg.h>
#include <stddef.h>

/* Program name used as the prefix of every message ("remixer-prep: warning: ..."). */
void rmx_log_set_program(const char *name);
const char *rmx_log_program(void);

void rmx_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void rmx_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void rmx_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "program: error: ..." and exits with `code`. */
_Noreturn void rmx_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* snprintf into an error buffer of the library convention (char *err, size_t errlen); returns -1. */
int rmx_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
