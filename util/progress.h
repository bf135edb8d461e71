/* A one-line progress bar on stderr, drawn only when stderr is a terminal. */
#ifndef RMX_PROGRESS_H
#define RMX_PROGRESS_H
#include <stdint.h>

typedef struct {
    const char *label;
    int64_t total;
    int64_t done;
    double start_s;
    double last_draw_s;
    int enabled; /* stderr is a tty and not disabled by RMX_NO_PROGRESS */
} rmx_progress;

void rmx_progress_start(rmx_progress *p, const char *label, int64_t total);
/* Sets the count done and redraws at most ~10 times a second; `note` may be NULL. */
void rmx_progress_update(rmx_progress *p, int64_t done, const char *note);
/* Clears the bar so the next line prints cleanly; the next update draws it again. */
void rmx_progress_finish(rmx_progress *p);
/* Clears whichever bar is on screen (util/log.h calls this before every message). */
void rmx_progress_clear_active(void);

/* Monotonic seconds. */
double rmx_now_s(void);

#endif
