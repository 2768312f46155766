/* worker/worker.h - a mapper-worker's event loop and its state: say ready,
 * copy each chunk the coordinator assigns, report progress and outcomes,
 * exchange heartbeats. worker/main.c is the command line around it. */
#ifndef MAPPER_WORKER_H
#define MAPPER_WORKER_H

#include <stdbool.h>

typedef struct worker worker_t;

/* What a worker needs; strings are borrowed for the worker's life. */
typedef struct {
    void *sock;                  /* a DEALER, set up, not yet connected */
    const char *id;              /* its routing id (1..PROTO_MAX_ID bytes) */
    const char *source_conninfo; /* source database ("" = libpq defaults) */
    const char *target_conninfo; /* target database */
    bool remote;                 /* not forked by the coordinator */
    double coord_timeout;        /* remote: give up after this much silence */
} worker_config_t;

/* A worker with its source session open (its identity read, to be sent
 * with READY); NULL when the source is unreachable or memory ran out
 * (logged). */
worker_t *worker_new(const worker_config_t *cfg);

/* Serve the coordinator (connect cfg->sock first) until told to stop, a
 * signal asks (worker_stop), or the coordinator is lost. Returns the
 * process's exit status (MAPPER_EXIT_*). */
int worker_run(worker_t *w);

/* Close the sessions and free the worker; *self_p becomes NULL. */
void worker_destroy(worker_t **self_p);

/* Ask every worker to stop soon: the chunk in hand is rolled back and
 * reported. Async-signal-safe. */
void worker_stop(void);

#endif
