/* coordinator/chunks.h - the chunk table and its state machine: pending,
 * running, waiting for a retry, paused by an outage, done, failed for good.
 * No sockets and no database calls: the dispatcher (dispatch.c) does the
 * talking and tells this module what happened; retries and outages are
 * decided here, through coordinator/retry, by an injectable clock. */
#ifndef MAPPER_CHUNKS_H
#define MAPPER_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "pgutil.h"
#include "progress.h"
#include "proto.h"
#include "reject.h"
#include "retry.h"

#define CHUNKS_WUR __attribute__((warn_unused_result))

/* Why an attempt ended without a result. */
typedef enum {
    CHUNKS_REPORTED,    /* the worker reported the failure */
    CHUNKS_CRASHED,     /* the worker process died */
    CHUNKS_LEASE_LOST,  /* a remote worker stopped answering */
    CHUNKS_DISBELIEVED, /* its done was not borne out by the ledger */
} chunks_cause_t;

typedef enum {
    CHUNKS_PENDING, /* not yet run, or waiting for its retry time */
    CHUNKS_RUNNING, /* held by a worker */
    CHUNKS_DONE,    /* committed */
    CHUNKS_FAILED,  /* failed for good */
    CHUNKS_AHEAD,   /* handed to a worker to run after its running chunk:
                       its attempt is numbered, it has not started */
} chunks_state_t;

/* What a chunk that failed keeps of its last error: allocated at its first
 * failure, so that the chunks that never fail cost nothing for it. */
typedef struct {
    pgutil_error_t error;   /* last error */
    const char *class_name; /* its retry class, or NULL */
} chunks_fault_t;

/* One chunk, compact: a million of them fit in about 100 MB. */
typedef struct {
    double not_before;     /* monotonic time its next attempt may start */
    double first_start;    /* monotonic time of its first attempt */
    int64_t est_rows;      /* rows it is expected to hold (counted failed) */
    int64_t rows;          /* rows committed (or reported in flight) */
    int64_t bytes;         /* bytes likewise */
    int64_t rejected;      /* rows set aside when it committed */
    chunks_fault_t *fault; /* its last error, or NULL: it never failed */
    reject_buf_t rejects;  /* the running attempt's rejected rows */
    int32_t worker;        /* index of the worker holding it, or -1 */
    int32_t attempts;      /* attempts started */
    uint8_t state;         /* chunks_state_t: where the chunk is */
    bool queued;           /* pending in the ready or the retry queue */
    bool taken_back;       /* once taken back from a worker's hands ahead:
                              handed out again only to run at once */
} chunks_chunk_t;

/* A pending chunk waiting for its retry time, in the retry heap. */
typedef struct {
    double at; /* when it may start */
    size_t ci; /* which chunk */
} chunks_timer_t;

/* A database that stopped answering: no chunk starts while it lasts. */
typedef struct {
    int streak;        /* connection failures in a row on this side */
    bool active;       /* in an outage now */
    double since;      /* when it began */
    double next_probe; /* when to probe next */
    double probe_wait; /* current probe interval */
} chunks_outage_t;

/* Called when a chunk ends (done or failed for good): the stream mode frees
 * its rows and raises the reader's credit there. */
typedef void (*chunks_end_fn)(void *ctx, size_t ci);

typedef struct {
    const mapper_retry_config *retry; /* retry policy */
    double outage_timeout;     /* seconds a database may stay unreachable */
    progress_t *progress;      /* told of every chunk event, or NULL */
    clock_fn clock;            /* monotonic seconds */
    retry_rng rng;             /* jitter draws */
    chunks_end_fn on_end;      /* or NULL */
    void *on_end_ctx;          /* its first argument */
    chunks_chunk_t *v;         /* the chunks */
    size_t n;                  /* entries used */
    size_t cap;                /* entries allocated */
    size_t next_pending;       /* first chunk never started */
    size_t unfinished;         /* chunks not DONE or FAILED */
    size_t running;            /* chunks RUNNING or AHEAD: held by workers */
    size_t *ready;             /* pending again and due: a ring (FIFO) */
    size_t ready_head;         /* its first entry */
    size_t ready_len;          /* entries in it */
    size_t ready_cap;          /* entries allocated */
    chunks_timer_t *timers;    /* pending, waiting for a time: a min-heap */
    size_t ntimers;            /* entries in it */
    size_t cap_timers;         /* entries allocated */
    pgutil_error_t spare;      /* an error's room when a fault cannot be
                                  allocated (logged) */
    chunks_outage_t outage[3]; /* by proto_side_t */
} chunks_t;

/* What became of a failed attempt. */
typedef enum {
    CHUNKS_RETRY,  /* pending again, after a delay */
    CHUNKS_PAUSED, /* pending, waiting for its database (attempt not used) */
    CHUNKS_GONE,   /* failed for good */
} chunks_outcome_t;

/* What a probe's answer did to an outage. */
typedef enum {
    CHUNKS_RESUMED, /* it answered: the outage is over */
    CHUNKS_WAITING, /* still down: probed again later */
    CHUNKS_GAVE_UP, /* down too long: every unfinished chunk failed */
} chunks_probe_t;

/* A table of n pending chunks (clock NULL: clock_now; progress may be
 * NULL). False (logged) when out of memory. */
bool chunks_init(chunks_t *t, size_t n, const mapper_retry_config *retry,
                 double outage_timeout, progress_t *progress,
                 clock_fn clock) CHUNKS_WUR;
void chunks_free(chunks_t *t);

/* One more pending chunk expected to hold est_rows (stream mode finds
 * chunks as it reads). NULL (logged) when out of memory. */
chunks_chunk_t *chunks_add(chunks_t *t, int64_t est_rows) CHUNKS_WUR;

/* Chunk ci was committed by an earlier run (resume). */
void chunks_resumed(chunks_t *t, size_t ci, int64_t rows, int64_t rejected);

/* The next chunk that may start now: retries whose time has come first
 * (earliest time first), then fresh ones in order; -1 when none may.
 * The chunk is taken off its queue: the caller starts it or fails it.
 * O(log n) at most: a ready queue and a retry heap, never a scan. */
ssize_t chunks_next(chunks_t *t);

/* Chunk ci (pending) starts its next attempt on worker `worker`; returns
 * that attempt's number. */
int chunks_start(chunks_t *t, size_t ci, int worker);

/* As chunks_next, for a worker that is busy: the chunk it will run after
 * its running one. -1 also when the next chunk was taken back from a
 * worker before (it runs only at once, so that a chunk that kills its
 * worker is counted: see chunks_take_back); it stays first in line. */
ssize_t chunks_next_ahead(chunks_t *t);

/* Chunk ci (pending, from chunks_next_ahead) is handed to worker `worker`
 * to run after its running chunk: AHEAD, with its next attempt's number
 * (returned); it counts as held, not yet as started. */
int chunks_start_ahead(chunks_t *t, size_t ci, int worker);

/* The worker finished its running chunk: chunk ci (AHEAD) runs now. */
void chunks_ahead_runs(chunks_t *t, size_t ci);

/* Chunk ci (AHEAD) comes back from a worker that died, lost its lease or
 * gave its work up before its turn: pending again, first in line, its
 * attempt not counted. Had the worker begun it after all, its ledger row
 * tells the next attempt ("already"), so it is never counted twice. */
void chunks_take_back(chunks_t *t, size_t ci);

/* Chunk ci committed by attempt `attempt`; ends any outage streak. */
void chunks_done(chunks_t *t, size_t ci, int attempt, int64_t rows,
                 int64_t bytes, int64_t rejected);

/* Fail chunk ci for good (the one way to do it): its error becomes
 * (side, class_name, message), a running attempt ends first, the chunk is
 * counted failed with its expected rows, and on_end is told. */
void chunks_fail(chunks_t *t, size_t ci, proto_side_t side,
                 const char *class_name, const char *message);

/* Chunk ci's error, for the caller to fill before chunks_attempt_failed
 * (cleared here). Never NULL: without memory for it (logged) a shared
 * spare is returned. */
pgutil_error_t *chunks_error(chunks_t *t, size_t ci);

/* Chunk ci's last error and its retry class; NULL and NULL when it never
 * failed. */
const pgutil_error_t *chunks_last_error(const chunks_t *t, size_t ci);
const char *chunks_class(const chunks_t *t, size_t ci);

/* The retry verdict on an error of the given cause. */
retry_verdict chunks_classify(const pgutil_error_t *e, chunks_cause_t cause);

/* Decide about retry `attempts` of something first started at first_start
 * that failed with e (the stream reader uses it too). */
retry_decision chunks_decide(chunks_t *t, const pgutil_error_t *e,
                             chunks_cause_t cause, int attempts,
                             double first_start, const char **class_out);

/* Chunk ci's running attempt failed with ci's error (set by the caller
 * through chunks_error):
 * a connection failure on a database in an outage (or that starts one)
 * pauses the chunk without using an attempt; else it retries after the
 * policy's delay, or fails for good. Logged here. */
chunks_outcome_t chunks_attempt_failed(chunks_t *t, size_t ci,
                                       chunks_cause_t cause);

/* Every pending chunk fails for good with class_name and message (e.g. past
 * --max-rejects). A scan: it happens once in a job. */
void chunks_fail_pending(chunks_t *t, const char *class_name,
                         const char *message);

/* True when a database is in an outage (side PROTO_SIDE_NONE: either). */
bool chunks_in_outage(const chunks_t *t, proto_side_t side);

/* True when side is in an outage and its next probe is due. */
bool chunks_probe_due(const chunks_t *t, proto_side_t side);

/* A probe of side answered (or not): end the outage, wait longer before the
 * next probe, or - down longer than the outage timeout - fail every
 * unfinished chunk for good. */
chunks_probe_t chunks_probed(chunks_t *t, proto_side_t side, bool answered);

/* Chunks held by workers now, running or ahead (a counter). */
size_t chunks_running(const chunks_t *t);

#endif
