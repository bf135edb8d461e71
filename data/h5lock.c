#include "data/h5lock.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_mutex;
static int g_serialise;

/* Lock depth of this thread; only the outermost lock/unlock swap HDF5's error handler. */
static _Thread_local int t_depth;
static _Thread_local H5E_auto2_t t_saved_func;
static _Thread_local void *t_saved_data;
/* The most specific message of the last HDF5 failure while locked. Captured by the error handler
 * itself because the next HDF5 call (even a successful H5Sclose) clears the error stack. */
static _Thread_local char t_detail[512];

static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    (void)data;
    if (n == 0 && e->desc && e->desc[0]) snprintf(t_detail, sizeof t_detail, "%s", e->desc);
    return 0;
}

/* Installed instead of HDF5's printer while the lock is held: remembers, prints nothing. */
static herr_t capture_error(hid_t stack, void *client_data) {
    (void)client_data;
    t_detail[0] = 0;
    /* Upward starts at the innermost frame, where HDF5 says what actually went wrong. */
    H5Ewalk2(stack, H5E_WALK_UPWARD, take_innermost, NULL);
    return 0;
}

static void init_once(void) {
    hbool_t safe = 0;
    if (H5is_library_threadsafe(&safe) < 0) safe = 0;
    g_serialise = !safe;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_mutex, &attr);
    pthread_mutexattr_destroy(&attr);
}

int rmx_h5_library_threadsafe(void) {
    pthread_once(&g_once, init_once);
    return !g_serialise;
}

void rmx_h5_lock(void) {
    pthread_once(&g_once, init_once);
    if (g_serialise) pthread_mutex_lock(&g_mutex);
    if (t_depth++ == 0) {
        H5Eget_auto2(H5E_DEFAULT, &t_saved_func, &t_saved_data);
        H5Eset_auto2(H5E_DEFAULT, capture_error, NULL);
        t_detail[0] = 0;
    }
}

void rmx_h5_unlock(void) {
    if (--t_depth == 0) H5Eset_auto2(H5E_DEFAULT, t_saved_func, t_saved_data);
    if (g_serialise) pthread_mutex_unlock(&g_mutex);
}

void rmx_h5_error_detail(char *out, size_t outlen) {
    if (out && outlen) snprintf(out, outlen, "%s", t_detail[0] ? t_detail : "unknown HDF5 error");
}
