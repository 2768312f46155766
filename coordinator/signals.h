/* coordinator/signals.h - SIGCHLD, SIGINT and SIGTERM for the length of a
 * job: each writes one byte to a self-pipe the loop polls ('C' for a
 * child, 'T' to stop); a second SIGINT/SIGTERM exits at once
 * (MAPPER_EXIT_INTERRUPTED). SIGPIPE is ignored meanwhile. */
#ifndef MAPPER_SIGNALS_H
#define MAPPER_SIGNALS_H

#include <signal.h>
#include <stdbool.h>

typedef struct {
    struct sigaction chld, intr, term, pipe; /* to restore */
    int fds[2];                              /* self-pipe */
} signals_t;

/* Install the handlers (the old ones kept in *s) and open the self-pipe
 * (s->fds[0] to poll). False when the pipe cannot be made. */
bool signals_install(signals_t *s) __attribute__((warn_unused_result));

/* Put the old handlers back and close the self-pipe. */
void signals_restore(signals_t *s);

#endif
