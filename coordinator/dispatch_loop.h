/* coordinator/dispatch_loop.h - the dispatcher's state, shared by its
 * two halves: dispatch.c (the event loop: workers, chunks, retries) and
 * dispatch_stream.c (stream mode: the reader and the chunks it cuts).
 * Private to those two files; the public face is dispatch.h. */
#ifndef MAPPER_DISPATCH_LOOP_H
#define MAPPER_DISPATCH_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "curve.h"
#include "dispatch.h"
#include "inflight.h"
#include "pgutil.h"
#include "proto.h"
#include "reject.h"
#include "retry.h"

/* A worker's routing id with its NUL: a remote worker's name may be
 * PROTO_MAX_ID bytes. Local workers' ids are "w" and this many random
 * bytes in hex. */
#define DISPATCH_ID_LEN          (PROTO_MAX_ID + 1)
#define DISPATCH_RANDOM_ID_BYTES 8

/* Why an attempt ended without a result. */
typedef enum {
    DISPATCH_REPORTED,    /* the worker reported the failure */
    DISPATCH_CRASHED,     /* the worker process died */
    DISPATCH_LEASE_LOST,  /* a remote worker stopped answering */
    DISPATCH_DISBELIEVED, /* its done was not borne out by the ledger */
} dispatch_cause_t;

typedef enum {
    DISPATCH_PENDING, /* not yet run, or waiting for its retry time */
    DISPATCH_RUNNING, /* held by a worker */
    DISPATCH_DONE,    /* committed */
    DISPATCH_FAILED,  /* failed for good */
} dispatch_state_t;

typedef struct {
    dispatch_state_t state; /* where the chunk is */
    int attempts;           /* attempts started */
    double not_before;      /* monotonic time its next attempt may start */
    double first_start;     /* monotonic time of its first attempt */
    const char *class_name; /* retry class of the last error */
    int worker;             /* index of the worker holding it, or -1 */
    int64_t rows;           /* rows committed (or reported in flight) */
    int64_t bytes;          /* bytes likewise */
    int64_t rejected;       /* rows set aside when it committed */
    reject_buf_t rejects;   /* the running attempt's rejected rows */
    pgutil_error_t error;   /* last error */
} dispatch_chunk_t;

typedef struct {
    pid_t pid;   /* process id (local), 0 when reaped/remote */
    bool alive;  /* running (local) or holding a lease (remote) */
    bool remote; /* connected by itself over --listen */
    char user[CURVE_KEY_LEN + 1]; /* its authenticated key (CURVE), or "" */
    bool keyed;                   /* user is bound (at its first message) */
    double last_heard;            /* monotonic time of its last message */
    char id[DISPATCH_ID_LEN];     /* routing id */
    bool ready;                   /* said ready */
    bool banned;                  /* sent away: its id is not taken back */
    int64_t chunk;                /* chunk held, or -1 */
} dispatch_worker_t;

/* A database that stopped answering: dispatching waits while it lasts. */
typedef struct {
    int streak;        /* connection failures in a row on this side */
    bool active;       /* in an outage now */
    double since;      /* when it began */
    double next_probe; /* when to PQping next */
    double probe_wait; /* current probe interval */
} dispatch_outage_t;

typedef struct {
    const dispatch_config_t *cfg; /* what to run */
    dispatch_outage_t outage[3];  /* by proto_side_t */
    retry_rng rng;                /* jitter draws */
    dispatch_chunk_t *chunks;     /* one per plan chunk */
    size_t nchunks;               /* plan->n, or stream chunks known */
    size_t cap_chunks;            /* entries allocated */
    size_t next_pending;          /* first chunk never started */
    size_t unfinished;            /* chunks not DONE or FAILED */
    dispatch_worker_t *workers;   /* every worker started, alive or not */
    size_t nworkers;              /* entries used */
    size_t cap_workers;           /* entries allocated */
    int alive;                    /* workers not yet reaped */
    int early_deaths;             /* deaths before ready, in a row */
    bool stopping;                /* a stop signal arrived */
    double last_beat;             /* when heartbeats last went out */
    double stop_at;               /* when */
    int64_t rejected;             /* rows set aside in committed chunks */
    bool over_max_rejects;        /* past --max-rejects: no chunk starts */
    mapper_result *out;           /* result being filled */
    /* Stream mode. */
    bool stream;             /* the chunks come from one reader */
    inflight_t held;         /* their rows, until committed */
    int reader;              /* index of the reading worker, or -1 */
    int read_attempts;       /* reads started */
    double read_not_before;  /* when the next read may start */
    double read_first_start; /* when the first began */
    bool read_done;          /* the reader sent every chunk */
    bool read_failed;        /* reading failed for good */
    int64_t rows_cut;        /* rows in the chunks known */
} dispatch_loop_t;

/* Monotonic seconds. */
double dispatch_now(void);

/* Send m to worker w (logged on failure). */
bool dispatch_send(dispatch_loop_t *l, dispatch_worker_t *w,
                   const proto_msg_t *m);

/* Tell w it is refused (why: one line, sent to it) and forget it: a
 * local one exits (SIGCHLD reaps it), a remote one loses its lease and
 * is not taken back under its id. */
void dispatch_send_away(dispatch_loop_t *l, dispatch_worker_t *w,
                        const char *why);

/* A forked worker's routing id into dst (size n): "w" and
 * DISPATCH_RANDOM_ID_BYTES random bytes in hex, so that no peer can guess
 * it and claim it first. False (logged) when no random bytes came. */
bool dispatch_random_id(char *dst, size_t n)
    __attribute__((warn_unused_result));

/* (dispatch_trust.c) A DONE is believed only when the chunk's ledger row,
 * committed in the same transaction as its rows, says done: the rows loaded and
 * set aside are then the ledger's (*rows_out, *rejected_out). Without a ledger
 * only forked workers run (--no-ledger refuses --listen) and their word is
 * taken. False fails the attempt (c->error says why); a DONE the ledger
 * contradicts also sends its worker away. One indexed lookup. */
bool dispatch_done_checked(dispatch_loop_t *l, dispatch_worker_t *w, size_t ci,
                           const proto_msg_t *m, int64_t *rows_out,
                           int64_t *rejected_out)
    __attribute__((warn_unused_result));

/* Stream mode (dispatch_stream.c). */

/* More stream chunks may still come. */
bool dispatch_stream_open(const dispatch_loop_t *l);

/* A stream chunk committed or failed for good: free its rows, raise the
 * reader's credit. No-op outside stream mode. */
void dispatch_stream_release(dispatch_loop_t *l, size_t ci);

/* One more chunk entry, pending (stream mode finds chunks as it reads). */
dispatch_chunk_t *dispatch_chunk_add(dispatch_loop_t *l);

/* Make w the reader: it reads the query from its first row. */
void dispatch_stream_start_reader(dispatch_loop_t *l, dispatch_worker_t *w);

/* Send chunk ci's rows to w, after its WRITE. */
bool dispatch_stream_send_rows(dispatch_loop_t *l, dispatch_worker_t *w,
                               size_t ci, int attempt);

/* The reader's process or lease is gone (why: for the log and summary). */
void dispatch_stream_reader_lost(dispatch_loop_t *l, dispatch_cause_t cause,
                                 const char *why);

/* A message from the reader. Returns true when w is free for other work
 * (it finished or failed its read). */
bool dispatch_stream_on_reader(dispatch_loop_t *l, dispatch_worker_t *w,
                               const proto_msg_t *m);

#endif
