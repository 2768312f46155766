/* coordinator/dispatch.c - the coordinator's event loop (dispatch.h). */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "defaults.h"
#include "inflight.h"
#include "log.h"
#include "pgutil.h"
#include "proto.h"
#include "retry.h"

/* Workers that die before saying ready, in a row, before we give up. */
#define DISPATCH_MAX_EARLY_DEATHS 8
#define DISPATCH_ID_LEN           32

/* Why an attempt ended without a result. */
typedef enum {
    S_REPORTED,   /* the worker reported the failure */
    S_CRASHED,    /* the worker process died */
    S_LEASE_LOST, /* a remote worker stopped answering */
} s_cause_t;

typedef enum {
    S_PENDING, /* not yet run, or waiting for its retry time */
    S_RUNNING, /* held by a worker */
    S_DONE,    /* committed */
    S_FAILED,  /* failed for good */
} s_state_t;

typedef struct {
    s_state_t state;        /* where the chunk is */
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
} s_chunk_t;

typedef struct {
    pid_t pid;   /* process id (local), 0 when reaped/remote */
    bool alive;  /* running (local) or holding a lease (remote) */
    bool remote; /* connected by itself over --listen */
    char user[CURVE_KEY_LEN + 1]; /* its authenticated key (CURVE), or "" */
    bool keyed;                   /* user is bound (at its first message) */
    double last_heard;            /* monotonic time of its last message */
    char id[DISPATCH_ID_LEN];     /* routing id */
    bool ready;                   /* said ready */
    int64_t chunk;                /* chunk held, or -1 */
} s_worker_t;

/* A database that stopped answering: dispatching waits while it lasts. */
typedef struct {
    int streak;        /* connection failures in a row on this side */
    bool active;       /* in an outage now */
    double since;      /* when it began */
    double next_probe; /* when to PQping next */
    double probe_wait; /* current probe interval */
} s_outage_t;

typedef struct {
    const dispatch_config_t *cfg; /* what to run */
    s_outage_t outage[3];         /* by proto_side_t */
    retry_rng rng;                /* jitter draws */
    s_chunk_t *chunks;            /* one per plan chunk */
    size_t nchunks;               /* plan->n, or stream chunks known */
    size_t cap_chunks;            /* entries allocated */
    size_t next_pending;          /* first chunk never started */
    size_t unfinished;            /* chunks not DONE or FAILED */
    s_worker_t *workers;          /* every worker started, alive or not */
    size_t nworkers;              /* entries used */
    size_t cap_workers;           /* entries allocated */
    int alive;                    /* workers not yet reaped */
    int early_deaths;             /* deaths before ready, in a row */
    unsigned seq;                 /* routing id sequence */
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
} s_loop_t;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* More stream chunks may still come. */
static bool s_stream_open(const s_loop_t *l)
{
    return l->stream && !l->read_done && !l->read_failed;
}

/* Rows expected in chunk ci (for a chunk that failed). */
static int64_t s_est_rows(const s_loop_t *l, size_t ci)
{
    if (!l->stream) return l->cfg->plan->chunks[ci].est_rows;
    return (int64_t)ci < l->held.known ? l->held.chunks[ci].rows : 0;
}

/* Tell the reader how far it may read. */
static void s_send_credit(s_loop_t *l)
{
    if (l->reader < 0) return;
    s_worker_t *w = &l->workers[l->reader];
    proto_msg_t m = {.kind = PROTO_CREDIT, .limit = inflight_limit(&l->held)};
    if (!proto_send(l->cfg->router, w->id, strlen(w->id), &m)) { /* logged */
    }
}

/* A stream chunk's rows are no longer needed: free them, raise the
 * reader's credit. */
static void s_stream_release(s_loop_t *l, size_t ci)
{
    if (!l->stream) return;
    inflight_release(&l->held, (int64_t)ci);
    s_send_credit(l);
}

/* One more chunk entry (stream mode). */
static s_chunk_t *s_chunk_add(s_loop_t *l)
{
    if (l->nchunks == l->cap_chunks) {
        size_t cap = l->cap_chunks ? l->cap_chunks * 2 : 64;
        s_chunk_t *c = realloc(l->chunks, cap * sizeof *c);
        if (!c) {
            log_error("out of memory for %zu chunks", cap);
            return NULL;
        }
        l->chunks = c;
        l->cap_chunks = cap;
    }
    s_chunk_t *c = &l->chunks[l->nchunks++];
    memset(c, 0, sizeof *c);
    c->worker = -1;
    l->unfinished++;
    return c;
}

static bool s_grow_workers(s_loop_t *l)
{
    if (l->nworkers == l->cap_workers) {
        size_t cap = l->cap_workers ? l->cap_workers * 2 : 16;
        s_worker_t *w = realloc(l->workers, cap * sizeof *w);
        if (!w) {
            log_error("out of memory for %zu workers", cap);
            return false;
        }
        l->workers = w;
        l->cap_workers = cap;
    }
    return true;
}

static bool s_spawn(s_loop_t *l)
{
    if (!s_grow_workers(l)) return false;
    s_worker_t *w = &l->workers[l->nworkers];
    memset(w, 0, sizeof *w);
    w->chunk = -1;
    snprintf(w->id, sizeof w->id, "w%u-%ld", ++l->seq, (long)getpid());
    w->pid = spawn_worker(l->cfg->spawn, w->id);
    if (w->pid < 0) return false;
    w->alive = true;
    w->last_heard = s_now();
    l->nworkers++;
    l->alive++;
    log_debug("started worker %s (pid %ld)", w->id, (long)w->pid);
    return true;
}

static s_worker_t *s_worker_by_id(s_loop_t *l, const char *id, size_t len)
{
    for (size_t i = 0; i < l->nworkers; i++)
        if (l->workers[i].alive && strlen(l->workers[i].id) == len &&
            !memcmp(l->workers[i].id, id, len))
            return &l->workers[i];
    return NULL;
}

static bool s_send(s_loop_t *l, s_worker_t *w, const proto_msg_t *m)
{
    return proto_send(l->cfg->router, w->id, strlen(w->id), m);
}

static bool s_in_outage(const s_loop_t *l)
{
    return l->outage[PROTO_SIDE_SOURCE].active ||
           l->outage[PROTO_SIDE_TARGET].active;
}

static void s_outage_begin(s_loop_t *l, proto_side_t side, double now)
{
    s_outage_t *o = &l->outage[side];
    o->active = true;
    o->since = now;
    o->probe_wait = MAPPER_OUTAGE_PROBE_MIN_S;
    o->next_probe = now + o->probe_wait;
    log_warn("%s database unreachable from %d chunks in a row: pausing "
             "dispatch and probing it (giving up after %.0f s)",
             pgutil_side_name(side), o->streak, l->cfg->outage_timeout);
}

/* Past --max-rejects the job stops handing out chunks. */
static void s_check_max_rejects(s_loop_t *l)
{
    if (l->cfg->max_rejects < 0 || l->rejected <= l->cfg->max_rejects ||
        l->over_max_rejects)
        return;
    l->over_max_rejects = true;
    log_error("%" PRId64 " rows rejected, more than --max-rejects %" PRId64
              ": no more chunks start",
              l->rejected, l->cfg->max_rejects);
    snprintf(l->out->error, sizeof l->out->error,
             "more than %" PRId64 " rows rejected (--max-rejects %" PRId64
             "): the job stopped",
             l->cfg->max_rejects, l->cfg->max_rejects);
}

/* A committed attempt's rejected rows go to the reject file. */
static void s_rejects_committed(s_loop_t *l, size_t ci, int64_t rejected)
{
    s_chunk_t *c = &l->chunks[ci];
    c->rejected = rejected;
    l->rejected += rejected;
    if (!l->cfg->rejects) return;
    if ((int64_t)c->rejects.n != rejected)
        log_error("chunk %zu: %" PRId64 " rows were set aside but %zu reached "
                  "the coordinator: the reject file lacks %" PRId64,
                  ci, rejected, c->rejects.n, rejected - (int64_t)c->rejects.n);
    if (c->rejects.n &&
        !reject_write(l->cfg->rejects, (int64_t)ci, &c->rejects) &&
        !l->out->error[0])
        snprintf(l->out->error, sizeof l->out->error,
                 "the reject file could not be written (see the log)");
    s_check_max_rejects(l);
}

/* Past --max-rejects: the chunks waiting to start fail. */
static void s_fail_waiting(s_loop_t *l)
{
    if (s_stream_open(l)) { /* the rest of the result is not read */
        l->read_failed = true;
        l->reader = -1;
        if (s_chunk_add(l)) l->chunks[l->nchunks - 1].state = S_PENDING;
    }
    for (size_t i = 0; i < l->nchunks; i++) {
        s_chunk_t *c = &l->chunks[i];
        if (c->state != S_PENDING) continue;
        memset(&c->error, 0, sizeof c->error);
        snprintf(c->error.message, sizeof c->error.message,
                 "not run: more than %" PRId64 " rows rejected "
                 "(--max-rejects %" PRId64 ")",
                 l->cfg->max_rejects, l->cfg->max_rejects);
        c->class_name = "max-rejects";
        c->state = S_FAILED;
        l->unfinished--;
        progress_chunk_failed(l->cfg->progress, i, s_est_rows(l, i));
        s_stream_release(l, i);
    }
}

/* Chunk ci's attempt committed (or the ledger says an earlier one did),
 * setting `rejected` rows aside. */
static void s_chunk_done(s_loop_t *l, size_t ci, int attempt, int64_t rows,
                         int64_t bytes, int64_t rejected)
{
    s_chunk_t *c = &l->chunks[ci];
    s_rejects_committed(l, ci, rejected);
    c->state = S_DONE;
    c->worker = -1;
    c->rows = rows;
    c->bytes = bytes;
    l->unfinished--;
    l->outage[PROTO_SIDE_SOURCE].streak = 0;
    l->outage[PROTO_SIDE_TARGET].streak = 0;
    progress_chunk_committed(l->cfg->progress, (int64_t)ci, attempt, rows,
                             bytes);
    log_debug("chunk %zu done: %" PRId64 " rows", ci, rows);
    s_stream_release(l, ci);
}

/* An attempt whose outcome is unknown (its worker died, or the target
 * connection broke, maybe during COMMIT) is settled by the ledger. */
static bool s_settled_by_ledger(s_loop_t *l, size_t ci, s_cause_t cause)
{
    s_chunk_t *c = &l->chunks[ci];
    int64_t rows = 0, rejected = 0;
    if (!l->cfg->ledger || l->outage[PROTO_SIDE_TARGET].active) return false;
    if (cause == S_REPORTED &&
        !(c->error.conn_bad && c->error.side == PROTO_SIDE_TARGET))
        return false;
    if (!ledger_chunk_done(l->cfg->ledger, (int64_t)ci, &rows, &rejected))
        return false;
    log_info("chunk %zu attempt %d: outcome unknown, the ledger says it "
             "committed",
             ci, c->attempts);
    s_chunk_done(l, ci, c->attempts, rows, 0, rejected);
    return true;
}

/* Decide what happens to a chunk whose attempt failed: retry after a delay
 * (the retry policy), or fail it for good. A connection failure on a
 * database known to be in an outage does not use up an attempt. */
static void s_attempt_failed(s_loop_t *l, size_t ci, s_cause_t cause)
{
    s_chunk_t *c = &l->chunks[ci];
    if (s_settled_by_ledger(l, ci, cause)) return;
    reject_buf_clear(&c->rejects); /* rolled back: the retry reports again */
    double now = s_now();
    c->state = S_PENDING;
    c->worker = -1;
    c->rows = c->bytes = 0;
    int attempt = c->attempts;
    retry_error e = {.side = c->error.side,
                     .conn_lost = c->error.conn_bad,
                     .worker_crashed = cause == S_CRASHED,
                     .heartbeat_lost = cause == S_LEASE_LOST};
    memcpy(e.sqlstate, c->error.sqlstate, sizeof e.sqlstate);
    retry_verdict v = retry_classify(&e);
    c->class_name = v.class_name;
    const char *side = pgutil_side_name(c->error.side);
    if (retry_is_connection_failure(&e)) {
        s_outage_t *o = &l->outage[c->error.side];
        if (!o->active && ++o->streak >= MAPPER_OUTAGE_STREAK)
            s_outage_begin(l, c->error.side, now);
        if (o->active) {
            progress_chunk_attempt_failed(l->cfg->progress, ci, attempt, true);
            c->attempts--; /* the outage's fault, not the chunk's */
            c->not_before = now;
            log_info("chunk %zu: %s unreachable (outage): will run again "
                     "when it answers",
                     ci, side);
            return;
        }
    }
    retry_decision d = retry_decide_chunk(l->cfg->retry, c->attempts, &v,
                                          c->first_start, NULL, &l->rng);
    progress_chunk_attempt_failed(l->cfg->progress, ci, attempt, d.retry);
    if (d.retry) {
        c->not_before = now + d.delay;
        log_warn("chunk %zu attempt %d failed (%s%s%s, %s: %s); retry in "
                 "%.2f s",
                 ci, c->attempts, side, c->error.sqlstate[0] ? " " : "",
                 c->error.sqlstate, v.class_name, c->error.message, d.delay);
        return;
    }
    c->state = S_FAILED;
    l->unfinished--;
    progress_chunk_failed(l->cfg->progress, ci, s_est_rows(l, ci));
    s_stream_release(l, ci);
    log_error("chunk %zu failed after %d attempt%s (%s%s%s, %s, %s): %s", ci,
              c->attempts, c->attempts == 1 ? "" : "s", side,
              c->error.sqlstate[0] ? " " : "", c->error.sqlstate, v.class_name,
              retry_reason_name(d.reason), c->error.message);
}

/* Probe databases in an outage; end the outage when one answers, or end
 * the job (every undone chunk failed) when it lasted too long. */
static void s_probe(s_loop_t *l)
{
    double now = s_now();
    for (int side = PROTO_SIDE_SOURCE; side <= PROTO_SIDE_TARGET; side++) {
        s_outage_t *o = &l->outage[side];
        if (!o->active || now < o->next_probe) continue;
        if (pgutil_ping(l->cfg->conninfo[side])) {
            log_warn("%s database answers again after %.1f s: resuming",
                     pgutil_side_name((proto_side_t)side), now - o->since);
            memset(o, 0, sizeof *o);
            continue;
        }
        if (now - o->since > l->cfg->outage_timeout) {
            log_error("%s database unreachable for more than %.0f s: giving up",
                      pgutil_side_name((proto_side_t)side),
                      l->cfg->outage_timeout);
            for (size_t i = 0; i < l->nchunks; i++) {
                s_chunk_t *c = &l->chunks[i];
                if (c->state != S_PENDING && c->state != S_RUNNING) continue;
                if (c->state == S_RUNNING && c->worker >= 0)
                    l->workers[c->worker].chunk = -1;
                memset(&c->error, 0, sizeof c->error);
                c->error.side = (proto_side_t)side;
                c->error.conn_bad = true;
                snprintf(c->error.message, sizeof c->error.message,
                         "%s database unreachable for more than %.0f s",
                         pgutil_side_name((proto_side_t)side),
                         l->cfg->outage_timeout);
                c->class_name = "outage";
                if (c->state == S_RUNNING)
                    progress_chunk_attempt_failed(l->cfg->progress, i,
                                                  c->attempts, false);
                progress_chunk_failed(l->cfg->progress, i, s_est_rows(l, i));
                c->state = S_FAILED;
                l->unfinished--;
                s_stream_release(l, i);
            }
            return;
        }
        o->probe_wait *= 2;
        if (o->probe_wait > MAPPER_OUTAGE_PROBE_MAX_S)
            o->probe_wait = MAPPER_OUTAGE_PROBE_MAX_S;
        o->next_probe = now + o->probe_wait;
    }
}

/* The next chunk that may start now: retries first, then fresh ones. */
static ssize_t s_next_chunk(s_loop_t *l, double now)
{
    for (size_t i = 0; i < l->next_pending; i++)
        if (l->chunks[i].state == S_PENDING && l->chunks[i].not_before <= now)
            return (ssize_t)i;
    while (l->next_pending < l->nchunks &&
           l->chunks[l->next_pending].state != S_PENDING)
        l->next_pending++;
    if (l->next_pending < l->nchunks) return (ssize_t)l->next_pending++;
    return -1;
}

/* Stream mode: make w the reader; it reads from the first row. */
static void s_start_reader(s_loop_t *l, s_worker_t *w)
{
    l->reader = (int)(w - l->workers);
    if (++l->read_attempts == 1) l->read_first_start = s_now();
    inflight_restart(&l->held);
    proto_msg_t m = {.kind = PROTO_READ,
                     .attempt = l->read_attempts,
                     .rows = l->cfg->chunk_rows,
                     .limit = inflight_limit(&l->held),
                     .source_sql = strdup(l->cfg->read_sql)};
    snprintf(m.snapshot, sizeof m.snapshot, "%s", l->cfg->snapshot);
    if (!m.source_sql || !s_send(l, w, &m))
        log_warn("could not hand the read to %s", w->id); /* it will tell */
    log_debug("reader: %s reads the query (attempt %d)", w->id,
              l->read_attempts);
    proto_msg_clear(&m);
}

/* Stream mode: send chunk ci's rows to w after its WRITE. */
static bool s_send_rows(s_loop_t *l, s_worker_t *w, size_t ci, int attempt)
{
    const inflight_chunk_t *h = &l->held.chunks[ci];
    if (!h->data) {
        log_error("chunk %zu: its rows are gone", ci);
        return false;
    }
    for (size_t at = 0;;) {
        size_t n = h->len - at;
        if (n > PROTO_MAX_DATA) n = PROTO_MAX_DATA;
        bool last = at + n == h->len;
        proto_msg_t d = {.kind = PROTO_DATA,
                         .chunk_id = (int64_t)ci,
                         .attempt = attempt,
                         .rows = last ? h->rows : 0,
                         .last = last,
                         .data = h->data + at,
                         .data_len = n};
        if (!s_send(l, w, &d)) return false;
        if (last) return true;
        at += n;
    }
}

static void s_assign(s_loop_t *l, s_worker_t *w)
{
    if (l->over_max_rejects) s_fail_waiting(l);
    double now = s_now();
    if (s_stream_open(l) && l->reader < 0 && now >= l->read_not_before) {
        s_start_reader(l, w);
        return;
    }
    ssize_t ci = s_next_chunk(l, now);
    if (ci < 0) {
        if (l->unfinished == 0 && !s_stream_open(l)) {
            proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
            if (!s_send(l, w, &stop)) { /* logged; SIGCHLD will tell */
            }
        }
        return;
    }
    s_chunk_t *c = &l->chunks[ci];
    proto_msg_t m = {.kind = l->stream ? PROTO_WRITE : PROTO_ASSIGN,
                     .chunk_id = ci};
    if (l->stream ? !(m.target_sql = strdup(l->cfg->write_sql))
                  : !schema_chunk_sql(l->cfg->schema, &l->cfg->plan->chunks[ci],
                                      &m.source_sql, &m.target_sql)) {
        c->state = S_FAILED;
        l->unfinished--;
        proto_msg_clear(&m);
        return;
    }
    c->attempts++;
    if (c->attempts == 1) c->first_start = s_now();
    m.attempt = c->attempts;
    snprintf(m.snapshot, sizeof m.snapshot, "%s", l->cfg->snapshot);
    if (l->cfg->ledger) {
        snprintf(m.job_id, sizeof m.job_id, "%s", l->cfg->ledger->job_id);
        snprintf(m.state_schema, sizeof m.state_schema, "%s",
                 l->cfg->ledger->schema);
    }
    m.reject_rows = l->cfg->rejects != NULL;
    c->state = S_RUNNING;
    c->worker = (int)(w - l->workers);
    progress_chunk_started(l->cfg->progress, ci, m.attempt);
    w->chunk = ci;
    if (!s_send(l, w, &m) ||
        (l->stream && !s_send_rows(l, w, (size_t)ci, m.attempt))) {
        /* The worker is going away; its SIGCHLD puts the chunk back. */
        log_warn("chunk %zd: could not assign to %s", ci, w->id);
    }
    log_debug("chunk %zd attempt %d -> %s", ci, m.attempt, w->id);
    proto_msg_clear(&m);
}

/* Reading the query failed (e: why): read again from the first row after
 * a delay, or (final, or out of attempts) stop reading: the chunks not
 * read are one failed chunk carrying the error. */
static void s_read_failed(s_loop_t *l, s_cause_t cause, const pgutil_error_t *e,
                          bool final)
{
    l->reader = -1;
    inflight_restart(&l->held);
    retry_error re = {.side = e->side,
                      .conn_lost = e->conn_bad,
                      .worker_crashed = cause == S_CRASHED,
                      .heartbeat_lost = cause == S_LEASE_LOST};
    memcpy(re.sqlstate, e->sqlstate, sizeof re.sqlstate);
    retry_verdict v = retry_classify(&re);
    retry_decision d = {0};
    if (!final)
        d = retry_decide_chunk(l->cfg->retry, l->read_attempts, &v,
                               l->read_first_start, NULL, &l->rng);
    const char *side = pgutil_side_name(e->side);
    if (d.retry) {
        l->read_not_before = s_now() + d.delay;
        log_warn("reading the query failed (attempt %d: %s%s%s, %s: %s); "
                 "reading it again from the first row in %.2f s (chunks read "
                 "already: %" PRId64 ", compared, not kept twice)",
                 l->read_attempts, side, e->sqlstate[0] ? " " : "", e->sqlstate,
                 v.class_name, e->message, d.delay, l->held.known);
        return;
    }
    l->read_failed = true;
    s_chunk_t *c = s_chunk_add(l);
    if (!c) return;
    c->state = S_FAILED;
    l->unfinished--;
    c->attempts = l->read_attempts;
    c->error = *e;
    c->class_name = final ? "other" : v.class_name;
    progress_set_total_chunks(l->cfg->progress, (int64_t)l->nchunks);
    progress_chunk_failed(l->cfg->progress, (int64_t)l->nchunks - 1, 0);
    log_error("reading the query failed after %d attempt%s (%s%s%s): %s; "
              "rows after the first %" PRId64 " are not copied",
              l->read_attempts, l->read_attempts == 1 ? "" : "s", side,
              e->sqlstate[0] ? " " : "", e->sqlstate, e->message, l->rows_cut);
}

/* The reader's process or lease is gone. */
static void s_reader_lost(s_loop_t *l, s_cause_t cause, const char *why)
{
    pgutil_error_t e = {.side = PROTO_SIDE_NONE};
    snprintf(e.message, sizeof e.message, "%s", why);
    s_read_failed(l, cause, &e, false);
}

/* A new stream chunk is complete: record it and make it runnable. */
static void s_stream_chunk(s_loop_t *l, int64_t k)
{
    if ((size_t)k != l->nchunks || !s_chunk_add(l)) return;
    s_chunk_t *c = &l->chunks[k];
    int64_t rows = l->held.chunks[k].rows;
    plan_chunk_t pc = {.id = k,
                       .kind = PLAN_STREAM,
                       .has_lo = true,
                       .has_hi = true,
                       .lo = l->rows_cut,
                       .hi = l->rows_cut + rows,
                       .est_rows = rows};
    l->rows_cut += rows;
    int64_t est =
        l->cfg->chunk_rows > 0
            ? (l->cfg->est_rows + l->cfg->chunk_rows - 1) / l->cfg->chunk_rows
            : 0;
    progress_set_total_chunks(l->cfg->progress,
                              est > k + 2 ? est : k + 2); /* one more? */
    char err[512];
    if (l->cfg->ledger &&
        !ledger_add_chunk(l->cfg->ledger, &pc, err, sizeof err)) {
        c->state = S_FAILED;
        l->unfinished--;
        c->error.side = PROTO_SIDE_TARGET;
        snprintf(c->error.message, sizeof c->error.message, "%s", err);
        progress_chunk_failed(l->cfg->progress, k, rows);
        s_stream_release(l, (size_t)k);
        log_error("chunk %" PRId64 ": %s", k, err);
        return;
    }
    log_debug("chunk %" PRId64 " read: %" PRId64 " rows", k, rows);
}

/* A message from the reader. */
static void s_on_reader(s_loop_t *l, s_worker_t *w, const proto_msg_t *m)
{
    if (m->attempt != l->read_attempts ||
        (m->kind != PROTO_DATA && m->kind != PROTO_END &&
         m->kind != PROTO_FAILED)) {
        log_debug("%s from the reader ignored", proto_kind_name(m->kind));
        return;
    }
    pgutil_error_t e = {.side = PROTO_SIDE_NONE};
    if (m->kind == PROTO_DATA) {
        int64_t k = 0;
        switch (inflight_on_data(&l->held, m, &k)) {
        case INFLIGHT_MORE:
        case INFLIGHT_SAME:
            return;
        case INFLIGHT_COMPLETE:
            s_stream_chunk(l, k);
            return;
        case INFLIGHT_DIFFERS:
            snprintf(e.message, sizeof e.message,
                     "the query returned different rows for chunk %" PRId64
                     " when it was read again: its order is not stable "
                     "(use --split-by, or an ORDER BY on a unique key)",
                     k);
            s_read_failed(l, S_REPORTED, &e, true);
            return;
        case INFLIGHT_BAD:
            snprintf(e.message, sizeof e.message,
                     "reader %s sent chunk %" PRId64 " out of order", w->id, k);
            s_read_failed(l, S_REPORTED, &e, false);
            return;
        }
    }
    if (m->kind == PROTO_END && m->chunk_id != l->held.known) {
        snprintf(e.message, sizeof e.message,
                 "reader %s ended after %" PRId64 " chunks, %" PRId64
                 " arrived",
                 w->id, m->chunk_id, l->held.known);
        s_read_failed(l, S_REPORTED, &e, false);
    } else if (m->kind == PROTO_END) {
        l->read_done = true;
        l->reader = -1;
        progress_set_total_chunks(l->cfg->progress, (int64_t)l->nchunks);
        log_info("read the whole query: %" PRId64 " rows in %zu chunks",
                 m->rows, l->nchunks);
    } else {
        e.side = m->side;
        memcpy(e.sqlstate, m->sqlstate, sizeof e.sqlstate);
        e.conn_bad = m->conn_bad;
        snprintf(e.message, sizeof e.message, "%s",
                 m->message ? m->message : "");
        s_read_failed(l, S_REPORTED, &e, false);
    }
    if (!l->stopping && !s_in_outage(l)) s_assign(l, w);
}

/* The chunk a result is about, if the sender really holds that attempt. */
static s_chunk_t *s_held(s_loop_t *l, s_worker_t *w, const proto_msg_t *m)
{
    if (m->chunk_id < 0 || (size_t)m->chunk_id >= l->nchunks ||
        w->chunk != m->chunk_id)
        return NULL;
    s_chunk_t *c = &l->chunks[m->chunk_id];
    if (c->state != S_RUNNING || c->attempts != m->attempt) return NULL;
    return c;
}

/* A READY from a peer we hold no lease for: a remote worker (only with
 * --listen), or one coming back after its lease was lost. */
static s_worker_t *s_register(s_loop_t *l, const char *peer, size_t peer_len,
                              const proto_msg_t *m)
{
    char who[PROTO_PEER_TEXT];
    proto_peer_text(peer, peer_len, who, sizeof who);
    if (!l->cfg->listen || peer_len >= DISPATCH_ID_LEN ||
        peer_len != strlen(m->worker) || memcmp(peer, m->worker, peer_len)) {
        log_warn("ready from unexpected peer %s ignored", who);
        return NULL;
    }
    s_worker_t *w = NULL;
    for (size_t i = 0; i < l->nworkers && !w; i++)
        if (l->workers[i].remote && !strcmp(l->workers[i].id, m->worker))
            w = &l->workers[i]; /* back after losing its lease */
    if (!w) {
        if (!s_grow_workers(l)) return NULL;
        w = &l->workers[l->nworkers++];
        memset(w, 0, sizeof *w);
        snprintf(w->id, sizeof w->id, "%s", m->worker);
        w->remote = true;
    }
    w->alive = true;
    w->ready = false;
    w->keyed = false;
    w->chunk = -1;
    log_info("remote worker %s (pid %" PRId64 ") connected", w->id, m->pid);
    return w;
}

/* READY: check the worker reads the job's source database, then give it a
 * chunk. A READY from a worker that holds a chunk means it gave that
 * attempt up (it lost us for a while). */
static void s_on_ready(s_loop_t *l, s_worker_t *w, const proto_msg_t *m)
{
    if (w->chunk >= 0) {
        s_chunk_t *c = &l->chunks[w->chunk];
        memset(&c->error, 0, sizeof c->error);
        snprintf(c->error.message, sizeof c->error.message,
                 "worker %s gave the chunk up (it lost the coordinator)",
                 w->id);
        size_t ci = (size_t)w->chunk;
        w->chunk = -1;
        s_attempt_failed(l, ci, S_LEASE_LOST);
    }
    if (l->reader == (int)(w - l->workers))
        s_reader_lost(l, S_LEASE_LOST,
                      "the reader gave the read up (it lost the coordinator)");
    if (strcmp(m->source_id, l->cfg->source_id)) {
        char why[PROTO_MAX_MESSAGE];
        snprintf(why, sizeof why,
                 "its source database is %s, the job's is %s: check its "
                 "--source",
                 m->source_id, l->cfg->source_id);
        log_error("refusing worker %s: %s", w->id, why);
        proto_msg_t stop = {.kind = PROTO_STOP, .message = why};
        if (!s_send(l, w, &stop)) { /* logged */
        }
        w->alive = w->pid > 0; /* a local one exits; SIGCHLD reaps it */
        return;
    }
    w->ready = true;
    l->early_deaths = 0;
    if (l->stopping) {
        proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
        if (!s_send(l, w, &stop)) { /* logged */
        }
    } else if (!s_in_outage(l)) {
        s_assign(l, w);
    }
}

/* Remote workers silent for the worker timeout lose their lease and their
 * chunk; every live worker hears from us once a heartbeat interval. */
static void s_leases(s_loop_t *l)
{
    double now = s_now();
    bool beat = now - l->last_beat >= MAPPER_HEARTBEAT_S;
    if (beat) l->last_beat = now;
    proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
    for (size_t i = 0; i < l->nworkers; i++) {
        s_worker_t *w = &l->workers[i];
        if (!w->alive || !w->ready) continue;
        if (w->remote && now - w->last_heard > l->cfg->worker_timeout) {
            log_warn("worker %s silent for %.0f s: its lease is lost", w->id,
                     now - w->last_heard);
            w->alive = false;
            if (w->chunk >= 0) {
                s_chunk_t *c = &l->chunks[w->chunk];
                memset(&c->error, 0, sizeof c->error);
                snprintf(c->error.message, sizeof c->error.message,
                         "worker %s lost its lease (silent for %.0f s)", w->id,
                         now - w->last_heard);
                size_t ci = (size_t)w->chunk;
                w->chunk = -1;
                s_attempt_failed(l, ci, S_LEASE_LOST);
            }
            if (l->reader == (int)i)
                s_reader_lost(l, S_LEASE_LOST, "the reader lost its lease");
            continue;
        }
        if (beat && !s_send(l, w, &hb)) { /* logged */
        }
    }
}

static void s_on_message(s_loop_t *l, const char *peer, size_t peer_len,
                         const char *user, proto_msg_t *m)
{
    s_worker_t *w = s_worker_by_id(l, peer, peer_len);
    if (!w && m->kind == PROTO_READY) w = s_register(l, peer, peer_len, m);
    if (w && !w->keyed) { /* its first message binds its key */
        snprintf(w->user, sizeof w->user, "%s", user);
        w->keyed = true;
    }
    if (w && strcmp(w->user, user)) {
        /* Another key speaking under this worker's routing id. */
        log_warn("%s claiming to be worker %s with another key: dropped",
                 proto_kind_name(m->kind), w->id);
        return;
    }
    if (!w) {
        char who[PROTO_PEER_TEXT];
        log_debug("%s from %s (no lease) ignored", proto_kind_name(m->kind),
                  proto_peer_text(peer, peer_len, who, sizeof who));
        return;
    }
    w->last_heard = s_now();
    if (m->kind == PROTO_HEARTBEAT) return;
    if (m->kind == PROTO_READY) {
        s_on_ready(l, w, m);
        return;
    }
    if (l->stream && l->reader == (int)(w - l->workers)) {
        s_on_reader(l, w, m);
        return;
    }
    if (m->kind != PROTO_PROGRESS && m->kind != PROTO_DONE &&
        m->kind != PROTO_FAILED &&
        (m->kind != PROTO_REJECT || !l->cfg->rejects)) {
        log_warn("unexpected %s from %s ignored", proto_kind_name(m->kind),
                 w->id);
        return;
    }
    s_chunk_t *c = s_held(l, w, m);
    if (!c) {
        log_debug("stale %s for chunk %" PRId64 " attempt %d from %s ignored",
                  proto_kind_name(m->kind), m->chunk_id, m->attempt, w->id);
        return;
    }
    size_t ci = (size_t)m->chunk_id;
    if (m->kind == PROTO_PROGRESS) {
        c->rows = m->rows;
        c->bytes = m->bytes;
        progress_chunk_rows(l->cfg->progress, m->chunk_id, m->attempt, m->rows,
                            m->bytes);
        return;
    }
    if (m->kind == PROTO_REJECT) {
        /* A worker reports rows in order, each once. */
        const reject_buf_t *b = &c->rejects;
        if (b->n && m->row_index <= b->v[b->n - 1].row_index)
            log_warn("chunk %zu attempt %d: reject of row %" PRId64
                     " out of order from %s ignored",
                     ci, m->attempt, m->row_index + 1, w->id);
        else if (!reject_buf_take(&c->rejects, m)) { /* logged; done tells */
        }
        return;
    }
    w->chunk = -1;
    if (m->kind == PROTO_DONE) {
        if (m->already)
            log_info("chunk %zu attempt %d: already committed by an earlier "
                     "attempt (ledger)",
                     ci, m->attempt);
        s_chunk_done(l, ci, m->attempt, m->rows, m->bytes, m->rejected);
    } else {
        memset(&c->error, 0, sizeof c->error);
        c->error.side = m->side;
        memcpy(c->error.sqlstate, m->sqlstate, sizeof c->error.sqlstate);
        c->error.conn_bad = m->conn_bad;
        snprintf(c->error.message, sizeof c->error.message, "%s",
                 m->message ? m->message : "");
        s_attempt_failed(l, ci, S_REPORTED);
    }
    if (!l->stopping && !s_in_outage(l)) s_assign(l, w);
}

static void s_reap(s_loop_t *l)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        s_worker_t *w = NULL;
        for (size_t i = 0; i < l->nworkers; i++)
            if (l->workers[i].pid == pid) w = &l->workers[i];
        if (!w) continue;
        w->pid = 0;
        w->alive = false;
        l->alive--;
        bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!clean) {
            if (WIFSIGNALED(status))
                log_warn("worker %s (pid %ld) killed by signal %d", w->id,
                         (long)pid, WTERMSIG(status));
            else
                log_warn("worker %s (pid %ld) exited with status %d", w->id,
                         (long)pid, WEXITSTATUS(status));
        }
        if (!w->ready) l->early_deaths++;
        if (w->chunk >= 0) {
            s_chunk_t *c = &l->chunks[w->chunk];
            memset(&c->error, 0, sizeof c->error);
            c->error.side = PROTO_SIDE_NONE;
            snprintf(c->error.message, sizeof c->error.message,
                     "worker %s died (%s %d) during the chunk", w->id,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status)
                                         : WEXITSTATUS(status));
            s_attempt_failed(l, (size_t)w->chunk, S_CRASHED);
            w->chunk = -1;
        }
        if (l->reader == (int)(w - l->workers)) {
            char why[128];
            snprintf(why, sizeof why, "the reader %s died (%s %d)", w->id,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status)
                                         : WEXITSTATUS(status));
            s_reader_lost(l, S_CRASHED, why);
        }
    }
}

/* Read the self-pipe: 'C' reaps children, 'T' starts the stop. */
static void s_on_signals(s_loop_t *l)
{
    char buf[64];
    ssize_t n;
    while ((n = read(l->cfg->signal_fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == 'C') s_reap(l);
            if (buf[i] == 'T' && !l->stopping) {
                log_warn("interrupted: no new chunks; running ones may "
                         "finish for %.0f s",
                         l->cfg->grace);
                l->stopping = true;
                l->stop_at = s_now();
                l->out->interrupted = true;
            }
        }
    }
}

static void s_drain_router(s_loop_t *l)
{
    char peer[256];
    size_t peer_len = 0;
    proto_msg_t m;
    for (;;) {
        int more_ready = 0;
        size_t sz = sizeof more_ready;
        if (zmq_getsockopt(l->cfg->router, ZMQ_EVENTS, &more_ready, &sz) ||
            !(more_ready & ZMQ_POLLIN))
            return;
        char user[CURVE_KEY_LEN + 1];
        if (!proto_recv_user(l->cfg->router, peer, sizeof peer, &peer_len, user,
                             sizeof user, &m))
            continue; /* malformed and dropped (logged) */
        s_on_message(l, peer, peer_len, user, &m);
        proto_msg_clear(&m);
    }
}

/* Keep min(workers, unfinished chunks) workers alive. */
static bool s_top_up(s_loop_t *l)
{
    int want = l->cfg->workers;
    if (s_stream_open(l))
        want += want > 0; /* the reader, besides the writers */
    else if ((size_t)want > l->unfinished)
        want = (int)l->unfinished;
    while (!l->stopping && l->alive < want) {
        if (l->early_deaths >= DISPATCH_MAX_EARLY_DEATHS) {
            snprintf(l->out->error, sizeof l->out->error,
                     "%d workers in a row died before they started (see "
                     "the log above)",
                     l->early_deaths);
            return false;
        }
        if (!s_spawn(l)) {
            snprintf(l->out->error, sizeof l->out->error,
                     "cannot start a worker process");
            return false;
        }
    }
    return true;
}

/* Hand chunks whose retry time has come to idle workers. */
static void s_assign_idle(s_loop_t *l)
{
    if (l->over_max_rejects) s_fail_waiting(l);
    if (s_in_outage(l)) return;
    for (size_t i = 0; i < l->nworkers && !l->stopping; i++) {
        s_worker_t *w = &l->workers[i];
        if (w->alive && w->ready && w->chunk < 0 && (int)i != l->reader)
            s_assign(l, w);
    }
}

static void s_poll(s_loop_t *l, long timeout_ms)
{
    zmq_pollitem_t items[] = {
        {l->cfg->router, 0, ZMQ_POLLIN, 0},
        {NULL, l->cfg->signal_fd, ZMQ_POLLIN, 0},
        {l->cfg->zap ? curve_zap_socket(l->cfg->zap) : NULL, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, l->cfg->zap ? 3 : 2, timeout_ms) < 0 && errno != EINTR)
        log_error("poll: %s", zmq_strerror(errno));
    if (l->cfg->zap) curve_zap_handle(l->cfg->zap);
    s_on_signals(l);
    s_drain_router(l);
}

static size_t s_running(const s_loop_t *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nchunks; i++)
        if (l->chunks[i].state == S_RUNNING) n++;
    return n;
}

/* After a stop signal, the loop goes on until the running chunks end or
 * the grace period is over. */
static bool s_stopped(const s_loop_t *l)
{
    if (!l->stopping) return false;
    return s_running(l) == 0 || s_now() >= l->stop_at + l->cfg->grace;
}

/* Tell every worker to stop; SIGTERM them when interrupted; wait, then
 * SIGKILL what is left. Every child is reaped. */
static void s_shutdown(s_loop_t *l)
{
    proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
    for (size_t i = 0; i < l->nworkers; i++) {
        s_worker_t *w = &l->workers[i];
        if (!w->alive) continue;
        if (w->ready && !s_send(l, w, &stop)) { /* logged */
        }
        if (w->pid > 0 && (l->stopping || !w->ready)) kill(w->pid, SIGTERM);
    }
    double deadline = s_now() + MAPPER_SHUTDOWN_WAIT_MS / 1000.0;
    while (l->alive > 0 && s_now() < deadline) {
        s_poll(l, MAPPER_LOOP_TICK_MS);
        s_reap(l);
    }
    for (size_t i = 0; i < l->nworkers; i++)
        if (l->workers[i].pid > 0) {
            log_warn("worker %s did not stop: SIGKILL", l->workers[i].id);
            kill(l->workers[i].pid, SIGKILL);
            waitpid(l->workers[i].pid, NULL, 0);
            l->workers[i].pid = 0;
            l->alive--;
        }
}

static void s_fill_result(s_loop_t *l)
{
    mapper_result *out = l->out;
    out->chunks_total = (int64_t)l->nchunks;
    size_t nfail = 0;
    for (size_t i = 0; i < l->nchunks; i++)
        if (l->chunks[i].state == S_FAILED) nfail++;
    out->chunk_errors = nfail ? calloc(nfail, sizeof *out->chunk_errors) : NULL;
    for (size_t i = 0; i < l->nchunks; i++) {
        s_chunk_t *c = &l->chunks[i];
        if (c->state == S_DONE) {
            out->chunks_succeeded++;
            out->total_rows_successful += c->rows;
            out->rows_rejected += c->rejected;
            out->total_rows_failed += c->rejected;
            out->bytes += c->bytes;
        } else if (c->state == S_FAILED) {
            out->chunks_failed++;
            out->total_rows_failed += s_est_rows(l, i);
            if (!out->chunk_errors) continue;
            if (l->cfg->ledger)
                ledger_chunk_failed(l->cfg->ledger, (int64_t)i, c->attempts,
                                    c->error.message);
            mapper_chunk_error *e = &out->chunk_errors[out->n_chunk_errors++];
            e->chunk_id = (int64_t)i;
            e->attempts = c->attempts;
            snprintf(e->error, sizeof e->error, "%.*s",
                     (int)sizeof e->error - 1, c->error.message);
            snprintf(e->sqlstate, sizeof e->sqlstate, "%s", c->error.sqlstate);
            snprintf(e->side, sizeof e->side, "%s",
                     pgutil_side_name(c->error.side));
            snprintf(e->classification, sizeof e->classification, "%s",
                     c->class_name ? c->class_name : "other");
        }
    }
    out->total_rows_processed =
        out->total_rows_successful + out->total_rows_failed;
}

bool dispatch_run(const dispatch_config_t *cfg, mapper_result *out)
{
    s_loop_t l = {.cfg = cfg,
                  .out = out,
                  .nchunks = cfg->plan->n,
                  .cap_chunks = cfg->plan->n ? cfg->plan->n : 1,
                  .stream = cfg->read_sql != NULL,
                  .reader = -1};
    l.unfinished = l.nchunks;
    inflight_init(&l.held, cfg->max_inflight);
    l.chunks = calloc(l.cap_chunks, sizeof *l.chunks);
    if (!l.chunks) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return false;
    }
    retry_rng_seed_process(&l.rng);
    for (size_t i = 0; i < l.nchunks; i++) {
        l.chunks[i].worker = -1;
        if (cfg->done && cfg->done[i]) {
            l.chunks[i].state = S_DONE;
            l.chunks[i].rows = cfg->done_rows[i];
            l.chunks[i].rejected =
                cfg->done_rejected ? cfg->done_rejected[i] : 0;
            l.rejected += l.chunks[i].rejected;
            l.unfinished--;
            progress_chunk_committed(cfg->progress, (int64_t)i, 0,
                                     cfg->done_rows[i], 0);
        }
    }
    l.next_pending = 0;
    s_check_max_rejects(&l); /* a resumed job may be past it already */
    bool ok = true;
    while ((l.unfinished > 0 || s_stream_open(&l)) && !s_stopped(&l)) {
        if (!s_top_up(&l)) {
            ok = false;
            break;
        }
        s_assign_idle(&l);
        s_poll(&l, MAPPER_LOOP_TICK_MS);
        s_probe(&l);
        s_leases(&l);
        progress_tick(cfg->progress);
    }
    s_shutdown(&l);
    s_fill_result(&l);
    inflight_free(&l.held);
    for (size_t i = 0; i < l.nchunks; i++)
        reject_buf_clear(&l.chunks[i].rejects);
    free(l.chunks);
    free(l.workers);
    return ok;
}
