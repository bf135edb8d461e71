#include "train/signals.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const int k_stop_signals[] = {SIGTERM, SIGINT, SIGUSR1};
enum { N_STOP_SIGNALS = sizeof k_stop_signals / sizeof k_stop_signals[0] };

/* Written only by the handler, read by the trainer's step loop. */
static volatile sig_atomic_t g_first_signal;

static void on_stop_signal(int signo) {
    if (g_first_signal == 0) g_first_signal = signo;
}

static void stop_signal_set(sigset_t *set) {
    sigemptyset(set);
    for (int i = 0; i < N_STOP_SIGNALS; i++) sigaddset(set, k_stop_signals[i]);
}

void rmx_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    /* Blocking system calls (file writes, MPI's polling) resume instead of failing with EINTR. */
    sa.sa_flags = SA_RESTART;
    stop_signal_set(&sa.sa_mask);
    for (int i = 0; i < N_STOP_SIGNALS; i++) sigaction(k_stop_signals[i], &sa, NULL);
}

int rmx_signals_pending(void) { return (int)g_first_signal; }

const char *rmx_signal_name(int signo) {
    static char other[32];
    switch (signo) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: snprintf(other, sizeof other, "signal %d", signo); return other;
    }
}

void rmx_signals_block(sigset_t *saved) {
    sigset_t set;
    stop_signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, saved);
}

void rmx_signals_restore(const sigset_t *saved) { pthread_sigmask(SIG_SETMASK, saved, NULL); }
