/* Stop requests from outside: a preempted pod (SIGTERM), Ctrl-C (SIGINT), and SIGUSR1, which
 * Open MPI's mpirun passes on to every rank untouched (it answers SIGTERM by killing the ranks
 * within a second, so scripts/relaunch.sh forwards SIGUSR1 to mpirun instead). All three mean the
 * same: finish the current step boundary, save a checkpoint, exit RMX_EXIT_PREEMPTED.
 *
 * The handler only records the signal (async-signal-safe); the trainer polls it once per step,
 * and the ranks agree on it in the step's existing all-reduce. Further signals change nothing: a
 * checkpoint being written completes, and the atomic rename keeps the files consistent anyway. */
#ifndef RMX_SIGNALS_H
#define RMX_SIGNALS_H

#include <signal.h>

/* Installs the handler for SIGTERM, SIGINT and SIGUSR1 (after MPI_Init, so it replaces any handler
 * the MPI library installed). */
void rmx_signals_install(void);

/* The number of the first stop signal received, or 0 if none. */
int rmx_signals_pending(void);

/* "SIGTERM", "SIGINT", "SIGUSR1", else "signal N" (in a static buffer). */
const char *rmx_signal_name(int signo);

/* Blocks the stop signals in the calling thread, saving the previous mask: a thread created
 * meanwhile inherits the mask, so the signals keep going to the main thread. */
void rmx_signals_block(sigset_t *saved);
void rmx_signals_restore(const sigset_t *saved);

#endif
