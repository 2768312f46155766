/* coordinator/dispatch_loop.h - the dispatcher's state, shared by its
 * layers: dispatch.c (the event loop: poll, signals, reaping, timers) on
 * top of dispatch_outcome.c (what becomes of an attempt), dispatch_result.c
 * (the job's result), dispatch_stream.c (stream mode: the reader and the
 * chunks it cuts), on top of dispatch_trust.c (sending to a worker, what is
 * believed of it), on top of chunks.c (the chunk state machine). Nothing
 * below calls up. Private to those files; the public face is dispatch.h. */
#ifndef MAPPER_DISPATCH_LOOP_H
#define MAPPER_DISPATCH_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chunks.h"
#include "clock.h"
#include "curve.h"
#include "defaults.h"
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
    int64_t chunk;                /* chunk it runs, or -1 */
    /* Chunks it runs next, in order (range mode; their ASSIGNs wait at
     * the worker, so no idle gap between chunks): dispatch_ahead.c. */
    int64_t ahead[MAPPER_AHEAD_MAX];
    int nahead;      /* entries of ahead used */
    double last_end; /* monotonic time its last chunk ended, or 0 */
    double period;   /* time between its chunk ends (a moving average), or 0 */
    /* Stream mode: rows of its chunk not yet sent (its queue was full). */
    bool sending;     /* some are left */
    size_t sent;      /* bytes of the chunk sent */
    int send_attempt; /* the attempt they belong to */
    double sent_last; /* monotonic time a frame last went out */
} dispatch_worker_t;

/* A DONE heard, waiting to be checked against the ledger with the others
 * heard about the same time (dispatch_done_read). */
typedef struct {
    int worker;              /* index of the worker that sent it */
    proto_msg_t m;           /* what it said (its counts; no owned fields) */
    bool read;               /* the ledger was read for it, into st */
    ledger_chunk_state_t st; /* the chunk's ledger row */
} dispatch_done_t;

typedef struct {
    const dispatch_config_t *cfg; /* what to run */
    chunks_t chunks;            /* one per plan chunk, or stream chunks known */
    pgutil_probe_t probe[3];    /* by proto_side_t: a database in an outage */
    dispatch_worker_t *workers; /* every worker started, alive or not */
    size_t nworkers;            /* entries used */
    size_t cap_workers;         /* entries allocated */
    int alive;                  /* workers not yet reaped */
    int early_deaths;           /* deaths before ready, in a row */
    bool stopping;              /* a stop signal arrived */
    double last_beat;           /* when heartbeats last went out */
    double stop_at;             /* when */
    int64_t rejected;           /* rows set aside in committed chunks */
    bool over_max_rejects;      /* past --max-rejects: no chunk starts */
    mapper_result *out;         /* result being filled */
    dispatch_done_t done[MAPPER_DONE_BATCH]; /* DONEs not yet checked */
    size_t ndone;                            /* entries used */
    double done_due;                         /* when they are checked */
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

/* (dispatch_trust.c) Send m to worker w (logged on failure). */
bool dispatch_send(dispatch_loop_t *l, dispatch_worker_t *w,
                   const proto_msg_t *m);

/* Tell w it is refused (why: one line, sent to it) and forget it: a
 * local one exits (SIGCHLD reaps it), a remote one loses its lease and
 * is not taken back under its id. Its chunks ahead are taken back. */
void dispatch_send_away(dispatch_loop_t *l, dispatch_worker_t *w,
                        const char *why);

/* The chunks a worker holds ahead (dispatch_ahead.c). */

/* w may take one more chunk ahead now: it runs one, holds fewer ahead than
 * its depth (one; MAPPER_AHEAD_MAX when its chunks are short), and enough
 * chunks wait to start that no other worker goes without (range mode, no
 * --max-rejects). */
bool dispatch_ahead_wanted(const dispatch_loop_t *l,
                           const dispatch_worker_t *w);

/* w went on to the first chunk it holds ahead: it runs now. */
void dispatch_ahead_runs(dispatch_loop_t *l, dispatch_worker_t *w);

/* The chunk a PROGRESS, REJECT, DONE or FAILED m from w is about, if w
 * really holds that attempt, else NULL. About a chunk w holds ahead: w went
 * on to it without a word about those before it (their outcomes lost on
 * the way: settled as lost) and it runs now - or, a FAILED, w refused it
 * (no room): it and those after it are taken back. */
chunks_chunk_t *dispatch_held(dispatch_loop_t *l, dispatch_worker_t *w,
                              const proto_msg_t *m);

/* w's chunk ended now: its period (time between chunk ends) is updated. */
void dispatch_ahead_ended(dispatch_worker_t *w, double now);

/* The loop may rest before its next turn (MAPPER_REST_MS): every worker
 * that runs a chunk holds at least MAPPER_REST_AHEAD ahead, so none can
 * run dry meanwhile, and a DONE heard then waits with others. */
bool dispatch_may_rest(const dispatch_loop_t *l);

/* The chunks w holds ahead from its from-th on (0: all) go back to the
 * queue, in their order (chunks_take_back): w died, lost its lease, gave
 * its work up, was sent away, or refused the from-th. */
void dispatch_take_back(dispatch_loop_t *l, dispatch_worker_t *w, int from);

/* A forked worker's routing id into dst (size n): "w" and
 * DISPATCH_RANDOM_ID_BYTES random bytes in hex, so that no peer can guess
 * it and claim it first. False (logged) when no random bytes came. */
bool dispatch_random_id(char *dst, size_t n)
    __attribute__((warn_unused_result));

/* (dispatch_trust.c) Keep w's DONE m (for a chunk it held) to be checked
 * with others (from l->done_due, MAPPER_DONE_BATCH_MS after the first).
 * Room must be left (ndone < MAPPER_DONE_BATCH). */
void dispatch_done_defer(dispatch_loop_t *l, dispatch_worker_t *w,
                         const proto_msg_t *m);

/* (dispatch_trust.c) Read the ledger rows of every kept DONE's chunk in one
 * query (each entry's read and st); a ledger that cannot be read leaves
 * read false (logged). */
void dispatch_done_read(dispatch_loop_t *l);

/* (dispatch_trust.c) A DONE is believed only when the chunk's ledger row,
 * committed in the same transaction as its rows and read after the DONE
 * arrived (st, or NULL when it could not be read), says done: the rows
 * loaded and set aside are then the ledger's (*rows_out, *rejected_out).
 * Without a ledger only forked workers run (--no-ledger refuses --listen)
 * and their word is taken. False fails the attempt (c->error says why); a
 * DONE the ledger contradicts also sends its worker away. */
bool dispatch_done_checked(dispatch_loop_t *l, dispatch_worker_t *w, size_t ci,
                           const proto_msg_t *m, const ledger_chunk_state_t *st,
                           int64_t *rows_out, int64_t *rejected_out)
    __attribute__((warn_unused_result));

/* (dispatch_outcome.c) Past --max-rejects the job stops handing out chunks. */
void dispatch_check_max_rejects(dispatch_loop_t *l);

/* (dispatch_outcome.c) Past --max-rejects: the chunks waiting to start fail,
 * and so does the rest of a stream that is not read. */
void dispatch_fail_waiting(dispatch_loop_t *l);

/* (dispatch_outcome.c) A chunk's attempt failed (its error is set): the ledger
 * may know it committed; else the state machine retries, pauses or fails it. */
void dispatch_attempt_failed(dispatch_loop_t *l, size_t ci,
                             chunks_cause_t cause);

/* (dispatch_outcome.c) w's attempt at the chunk it runs is lost (cause; the
 * rest says why, printf-style, as the chunk's error): w holds nothing any more
 * (its chunks ahead are taken back), and the chunk is retried, paused or
 * failed. */
void dispatch_attempt_lost(dispatch_loop_t *l, dispatch_worker_t *w,
                           chunks_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* (dispatch_outcome.c) Likewise, but only the chunk w runs: what it holds
 * ahead stays its own (it went on to those). */
void dispatch_run_lost(dispatch_loop_t *l, dispatch_worker_t *w,
                       chunks_cause_t cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* (dispatch_outcome.c) w's DONE m (st: the chunk's ledger row read after it
 * came, or NULL) is counted, or the attempt fails; a worker sent away for it
 * loses what it went on to. */
void dispatch_done_settle(dispatch_loop_t *l, dispatch_worker_t *w,
                          const proto_msg_t *m, const ledger_chunk_state_t *st);

/* (dispatch_outcome.c) Settle the DONEs kept (dispatch_done_defer) after one
 * query of their chunks' ledger rows, in the order they came; a chunk that
 * ended otherwise meanwhile (an outage given up) is left as it is. */
void dispatch_done_flush(dispatch_loop_t *l);

/* (dispatch_result.c) *sum += v, saturating (logged) instead of
 * overflowing. */
void dispatch_add(int64_t *sum, int64_t v);

/* (dispatch_result.c) Fill l->out from the chunk table once the job is
 * over: counts, and each failed chunk's error (written to the ledger too,
 * whether or not memory for the summary's list could be had). */
void dispatch_fill_result(dispatch_loop_t *l);

/* Stream mode (dispatch_stream.c). */

/* More stream chunks may still come. */
bool dispatch_stream_open(const dispatch_loop_t *l);

/* A stream chunk committed or failed for good: free its rows, raise the
 * reader's credit. The chunk table's on_end in stream mode (ctx: the
 * dispatch_loop_t). */
void dispatch_stream_release(void *ctx, size_t ci);

/* Make w the reader: it reads the query from its first row. */
void dispatch_stream_start_reader(dispatch_loop_t *l, dispatch_worker_t *w);

/* Send chunk ci's rows to w, after its WRITE: as many frames as its queue
 * takes now; the rest go out with dispatch_stream_flush. False (logged)
 * when they cannot be sent at all. */
bool dispatch_stream_send_rows(dispatch_loop_t *l, dispatch_worker_t *w,
                               size_t ci, int attempt)
    __attribute__((warn_unused_result));

/* Send more of w's chunk rows, if some are left (w->sending) and its queue
 * takes them. A frame is never dropped: it goes out, or - the peer gone, or
 * its queue full for the worker timeout - false (logged) and the caller
 * fails the attempt. True when all went out or the rest can wait. */
bool dispatch_stream_flush(dispatch_loop_t *l, dispatch_worker_t *w)
    __attribute__((warn_unused_result));

/* The reader's process or lease is gone (why: for the log and summary). */
void dispatch_stream_reader_lost(dispatch_loop_t *l, chunks_cause_t cause,
                                 const char *why);

/* A message from the reader. Returns true when w is free for other work
 * (it finished or failed its read). */
bool dispatch_stream_on_reader(dispatch_loop_t *l, dispatch_worker_t *w,
                               const proto_msg_t *m);

#endif
