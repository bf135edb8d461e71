/* Process exit codes shared by every Remixer program (documented in README.md). */
#ifndef RMX_EXITCODES_H
#define RMX_EXITCODES_H

enum {
    RMX_EXIT_OK = 0,          /* finished: all requested steps done */
    RMX_EXIT_FAILURE = 1,     /* runtime failure: I/O error, too many non-finite steps, internal error */
    RMX_EXIT_USAGE = 2,       /* bad command line or configuration */
    RMX_EXIT_DATA = 3,        /* bad or inconsistent dataset, or nothing usable in the input */
    RMX_EXIT_CHECKPOINT = 4,  /* checkpoint refused: architecture/stage mismatch, none verifies */
    RMX_EXIT_PREEMPTED = 75,  /* stopped by a signal after saving a checkpoint: start me again (EX_TEMPFAIL) */
};

#endif
