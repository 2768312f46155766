/* coordinator/dispatch.c - the coordinator's event loop (dispatch.h). */
#include "dispatch.h"
#include "dispatch_loop.h"

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

double dispatch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* *sum += v, saturating (logged) instead of overflowing. */
static void s_add(int64_t *sum, int64_t v)
{
    if (!__builtin_add_overflow(*sum, v, sum)) return;
    log_error("a count overflows: kept at its maximum");
    *sum = INT64_MAX;
}

/* Rows expected in chunk ci (for a chunk that failed). */
static int64_t s_est_rows(const dispatch_loop_t *l, size_t ci)
{
    if (!l->stream) return l->cfg->plan->chunks[ci].est_rows;
    return (int64_t)ci < l->held.known ? l->held.chunks[ci].rows : 0;
}

static bool s_grow_workers(dispatch_loop_t *l)
{
    if (l->nworkers == l->cap_workers) {
        size_t cap = l->cap_workers ? l->cap_workers * 2 : 16;
        dispatch_worker_t *w = realloc(l->workers, cap * sizeof *w);
        if (!w) {
            log_error("out of memory for %zu workers", cap);
            return false;
        }
        l->workers = w;
        l->cap_workers = cap;
    }
    return true;
}

static bool s_spawn(dispatch_loop_t *l)
{
    if (!s_grow_workers(l)) return false;
    dispatch_worker_t *w = &l->workers[l->nworkers];
    memset(w, 0, sizeof *w);
    w->chunk = -1;
    if (!dispatch_random_id(w->id, sizeof w->id)) return false;
    w->pid = spawn_worker(l->cfg->spawn, w->id);
    if (w->pid < 0) return false;
    w->alive = true;
    w->last_heard = dispatch_now();
    l->nworkers++;
    l->alive++;
    log_debug("started worker %s (pid %ld)", w->id, (long)w->pid);
    return true;
}

static dispatch_worker_t *s_worker_by_id(dispatch_loop_t *l, const char *id,
                                         size_t len)
{
    for (size_t i = 0; i < l->nworkers; i++)
        if (l->workers[i].alive && strlen(l->workers[i].id) == len &&
            !memcmp(l->workers[i].id, id, len))
            return &l->workers[i];
    return NULL;
}

bool dispatch_send(dispatch_loop_t *l, dispatch_worker_t *w,
                   const proto_msg_t *m)
{
    return proto_send(l->cfg->router, w->id, strlen(w->id), m);
}

static bool s_in_outage(const dispatch_loop_t *l)
{
    return l->outage[PROTO_SIDE_SOURCE].active ||
           l->outage[PROTO_SIDE_TARGET].active;
}

static void s_outage_begin(dispatch_loop_t *l, proto_side_t side, double now)
{
    dispatch_outage_t *o = &l->outage[side];
    o->active = true;
    o->since = now;
    o->probe_wait = MAPPER_OUTAGE_PROBE_MIN_S;
    o->next_probe = now + o->probe_wait;
    log_warn("%s database unreachable from %d chunks in a row: pausing "
             "dispatch and probing it (giving up after %.0f s)",
             pgutil_side_name(side), o->streak, l->cfg->outage_timeout);
}

/* Past --max-rejects the job stops handing out chunks. */
static void s_check_max_rejects(dispatch_loop_t *l)
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

/* A committed attempt's rejected rows go to the reject file: with the
 * ledger, those committed with the chunk; without, those reported. */
static void s_rejects_committed(dispatch_loop_t *l, size_t ci, int64_t rejected)
{
    dispatch_chunk_t *c = &l->chunks[ci];
    c->rejected = rejected;
    s_add(&l->rejected, rejected);
    if (!l->cfg->rejects) return;
    bool ok = true;
    if (l->cfg->ledger) {
        reject_buf_clear(&c->rejects);
        ok = rejected == 0 ||
             reject_write_committed(l->cfg->rejects, l->cfg->ledger,
                                    (int64_t)ci, rejected, NULL);
    } else {
        if ((int64_t)c->rejects.n != rejected)
            log_error("chunk %zu: %" PRId64 " rows were set aside but %zu "
                      "reached the coordinator: the reject file lacks %" PRId64,
                      ci, rejected, c->rejects.n,
                      rejected - (int64_t)c->rejects.n);
        ok = !c->rejects.n ||
             reject_write(l->cfg->rejects, (int64_t)ci, &c->rejects);
    }
    if (!ok && !l->out->error[0])
        snprintf(l->out->error, sizeof l->out->error,
                 "the reject file could not be written (see the log)");
    s_check_max_rejects(l);
}

/* Past --max-rejects: the chunks waiting to start fail. */
static void s_fail_waiting(dispatch_loop_t *l)
{
    if (dispatch_stream_open(l)) { /* the rest of the result is not read */
        l->read_failed = true;
        l->reader = -1;
        dispatch_chunk_add(l); /* pending, for the unread rest: failed below */
    }
    for (size_t i = 0; i < l->nchunks; i++) {
        dispatch_chunk_t *c = &l->chunks[i];
        if (c->state != DISPATCH_PENDING) continue;
        memset(&c->error, 0, sizeof c->error);
        snprintf(c->error.message, sizeof c->error.message,
                 "not run: more than %" PRId64 " rows rejected "
                 "(--max-rejects %" PRId64 ")",
                 l->cfg->max_rejects, l->cfg->max_rejects);
        c->class_name = "max-rejects";
        c->state = DISPATCH_FAILED;
        l->unfinished--;
        progress_chunk_failed(l->cfg->progress, i, s_est_rows(l, i));
        dispatch_stream_release(l, i);
    }
}

/* Chunk ci's attempt committed (or the ledger says an earlier one did),
 * setting `rejected` rows aside. */
static void s_chunk_done(dispatch_loop_t *l, size_t ci, int attempt,
                         int64_t rows, int64_t bytes, int64_t rejected)
{
    dispatch_chunk_t *c = &l->chunks[ci];
    s_rejects_committed(l, ci, rejected);
    c->state = DISPATCH_DONE;
    c->worker = -1;
    c->rows = rows;
    c->bytes = bytes;
    l->unfinished--;
    l->outage[PROTO_SIDE_SOURCE].streak = 0;
    l->outage[PROTO_SIDE_TARGET].streak = 0;
    progress_chunk_committed(l->cfg->progress, (int64_t)ci, attempt, rows,
                             bytes);
    log_debug("chunk %zu done: %" PRId64 " rows", ci, rows);
    dispatch_stream_release(l, ci);
}

/* An attempt whose outcome is unknown (its worker died, or the target
 * connection broke, maybe during COMMIT) is settled by the ledger. */
static bool s_settled_by_ledger(dispatch_loop_t *l, size_t ci,
                                dispatch_cause_t cause)
{
    dispatch_chunk_t *c = &l->chunks[ci];
    int64_t rows = 0, rejected = 0;
    if (!l->cfg->ledger || l->outage[PROTO_SIDE_TARGET].active) return false;
    if (cause == DISPATCH_REPORTED &&
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
static void s_attempt_failed(dispatch_loop_t *l, size_t ci,
                             dispatch_cause_t cause)
{
    dispatch_chunk_t *c = &l->chunks[ci];
    if (s_settled_by_ledger(l, ci, cause)) return;
    reject_buf_clear(&c->rejects); /* rolled back: the retry reports again */
    double now = dispatch_now();
    c->state = DISPATCH_PENDING;
    c->worker = -1;
    c->rows = c->bytes = 0;
    int attempt = c->attempts;
    retry_error e = {.side = c->error.side,
                     .conn_lost = c->error.conn_bad,
                     .worker_crashed = cause == DISPATCH_CRASHED ||
                                       cause == DISPATCH_DISBELIEVED,
                     .heartbeat_lost = cause == DISPATCH_LEASE_LOST};
    memcpy(e.sqlstate, c->error.sqlstate, sizeof e.sqlstate);
    retry_verdict v = retry_classify(&e);
    c->class_name = v.class_name;
    const char *side = pgutil_side_name(c->error.side);
    if (retry_is_connection_failure(&e)) {
        dispatch_outage_t *o = &l->outage[c->error.side];
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
    c->state = DISPATCH_FAILED;
    l->unfinished--;
    progress_chunk_failed(l->cfg->progress, ci, s_est_rows(l, ci));
    dispatch_stream_release(l, ci);
    log_error("chunk %zu failed after %d attempt%s (%s%s%s, %s, %s): %s", ci,
              c->attempts, c->attempts == 1 ? "" : "s", side,
              c->error.sqlstate[0] ? " " : "", c->error.sqlstate, v.class_name,
              retry_reason_name(d.reason), c->error.message);
}

/* Probe databases in an outage; end the outage when one answers, or end
 * the job (every undone chunk failed) when it lasted too long. */
static void s_probe(dispatch_loop_t *l)
{
    double now = dispatch_now();
    for (int side = PROTO_SIDE_SOURCE; side <= PROTO_SIDE_TARGET; side++) {
        dispatch_outage_t *o = &l->outage[side];
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
                dispatch_chunk_t *c = &l->chunks[i];
                if (c->state != DISPATCH_PENDING &&
                    c->state != DISPATCH_RUNNING)
                    continue;
                if (c->state == DISPATCH_RUNNING && c->worker >= 0)
                    l->workers[c->worker].chunk = -1;
                memset(&c->error, 0, sizeof c->error);
                c->error.side = (proto_side_t)side;
                c->error.conn_bad = true;
                snprintf(c->error.message, sizeof c->error.message,
                         "%s database unreachable for more than %.0f s",
                         pgutil_side_name((proto_side_t)side),
                         l->cfg->outage_timeout);
                c->class_name = "outage";
                if (c->state == DISPATCH_RUNNING)
                    progress_chunk_attempt_failed(l->cfg->progress, i,
                                                  c->attempts, false);
                progress_chunk_failed(l->cfg->progress, i, s_est_rows(l, i));
                c->state = DISPATCH_FAILED;
                l->unfinished--;
                dispatch_stream_release(l, i);
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
static ssize_t s_next_chunk(dispatch_loop_t *l, double now)
{
    for (size_t i = 0; i < l->next_pending; i++)
        if (l->chunks[i].state == DISPATCH_PENDING &&
            l->chunks[i].not_before <= now)
            return (ssize_t)i;
    while (l->next_pending < l->nchunks &&
           l->chunks[l->next_pending].state != DISPATCH_PENDING)
        l->next_pending++;
    if (l->next_pending < l->nchunks) return (ssize_t)l->next_pending++;
    return -1;
}

static void s_assign(dispatch_loop_t *l, dispatch_worker_t *w)
{
    if (l->over_max_rejects) s_fail_waiting(l);
    double now = dispatch_now();
    if (dispatch_stream_open(l) && l->reader < 0 && now >= l->read_not_before) {
        dispatch_stream_start_reader(l, w);
        return;
    }
    ssize_t ci = s_next_chunk(l, now);
    if (ci < 0) {
        if (l->unfinished == 0 && !dispatch_stream_open(l)) {
            proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
            if (!dispatch_send(l, w, &stop)) { /* logged; SIGCHLD will tell */
            }
        }
        return;
    }
    dispatch_chunk_t *c = &l->chunks[ci];
    proto_msg_t m = {.kind = l->stream ? PROTO_WRITE : PROTO_ASSIGN,
                     .chunk_id = ci};
    if (!schema_target_fields(l->cfg->schema, &m) ||
        (!l->stream &&
         !schema_chunk_sql(l->cfg->schema, &l->cfg->plan->chunks[ci],
                           &m.source_sql))) {
        c->state = DISPATCH_FAILED;
        l->unfinished--;
        proto_msg_clear(&m);
        return;
    }
    c->attempts++;
    if (c->attempts == 1) c->first_start = dispatch_now();
    m.attempt = c->attempts;
    snprintf(m.snapshot, sizeof m.snapshot, "%s", l->cfg->snapshot);
    if (l->cfg->ledger) {
        snprintf(m.job_id, sizeof m.job_id, "%s", l->cfg->ledger->job_id);
        snprintf(m.state_schema, sizeof m.state_schema, "%s",
                 l->cfg->ledger->schema);
    }
    m.reject_rows = l->cfg->rejects != NULL;
    c->state = DISPATCH_RUNNING;
    c->worker = (int)(w - l->workers);
    progress_chunk_started(l->cfg->progress, ci, m.attempt);
    w->chunk = ci;
    if (!dispatch_send(l, w, &m) ||
        (l->stream &&
         !dispatch_stream_send_rows(l, w, (size_t)ci, m.attempt))) {
        /* The worker is going away; its SIGCHLD puts the chunk back. */
        log_warn("chunk %zd: could not assign to %s", ci, w->id);
    }
    log_debug("chunk %zd attempt %d -> %s", ci, m.attempt, w->id);
    proto_msg_clear(&m);
}

/* The chunk a result is about, if the sender really holds that attempt. */
static dispatch_chunk_t *s_held(dispatch_loop_t *l, dispatch_worker_t *w,
                                const proto_msg_t *m)
{
    if (m->chunk_id < 0 || (size_t)m->chunk_id >= l->nchunks ||
        w->chunk != m->chunk_id)
        return NULL;
    dispatch_chunk_t *c = &l->chunks[m->chunk_id];
    if (c->state != DISPATCH_RUNNING || c->attempts != m->attempt) return NULL;
    return c;
}

/* A READY from a peer we hold no lease for: a remote worker (only with
 * --listen), or one coming back after its lease was lost. */
static dispatch_worker_t *s_register(dispatch_loop_t *l, const char *peer,
                                     size_t peer_len, const proto_msg_t *m)
{
    char who[PROTO_PEER_TEXT];
    proto_peer_text(peer, peer_len, who, sizeof who);
    /* The worker's name is its routing id (proto caps both at
     * PROTO_MAX_ID, and DISPATCH_ID_LEN holds that much). */
    if (!l->cfg->listen || peer_len > PROTO_MAX_ID ||
        peer_len != strlen(m->worker) || memcmp(peer, m->worker, peer_len)) {
        log_warn("ready from unexpected peer %s ignored%s", who,
                 l->cfg->listen ? " (its routing id is not its worker name)"
                                : "");
        return NULL;
    }
    dispatch_worker_t *w = NULL, *dead = NULL;
    for (size_t i = 0; i < l->nworkers && !w; i++) {
        dispatch_worker_t *x = &l->workers[i];
        if (x->remote && !strcmp(x->id, m->worker))
            w = x; /* back after losing its lease; its key stays bound */
        else if (x->remote && !x->alive && !x->banned && x->chunk < 0 &&
                 l->reader != (int)i && !dead)
            dead = x; /* an entry of a remote worker that left: reused */
    }
    if (w && w->banned) {
        log_warn("ready from %s ignored: it was sent away", who);
        return NULL;
    }
    if (!w) {
        if (!dead && !s_grow_workers(l)) return NULL;
        w = dead ? dead : &l->workers[l->nworkers++];
        memset(w, 0, sizeof *w);
        snprintf(w->id, sizeof w->id, "%s", m->worker);
        w->remote = true;
    }
    w->alive = true;
    w->ready = false;
    w->chunk = -1;
    log_info("remote worker %s (pid %" PRId64 ") connected", w->id, m->pid);
    return w;
}

/* READY: check the worker reads the job's source database, then give it a
 * chunk. A READY from a worker that holds a chunk means it gave that
 * attempt up (it lost us for a while). */
static void s_on_ready(dispatch_loop_t *l, dispatch_worker_t *w,
                       const proto_msg_t *m)
{
    if (w->chunk >= 0) {
        dispatch_chunk_t *c = &l->chunks[w->chunk];
        memset(&c->error, 0, sizeof c->error);
        snprintf(c->error.message, sizeof c->error.message,
                 "worker %s gave the chunk up (it lost the coordinator)",
                 w->id);
        size_t ci = (size_t)w->chunk;
        w->chunk = -1;
        s_attempt_failed(l, ci, DISPATCH_LEASE_LOST);
    }
    if (l->reader == (int)(w - l->workers))
        dispatch_stream_reader_lost(
            l, DISPATCH_LEASE_LOST,
            "the reader gave the read up (it lost the coordinator)");
    if (strcmp(m->source_id, l->cfg->source_id)) {
        char why[PROTO_MAX_MESSAGE];
        /* The peer hears its own identity back, never the job's. */
        snprintf(why, sizeof why,
                 "its source database is %s, not the job's: check its "
                 "--source",
                 m->source_id);
        log_error("refusing worker %s: %s (the job's is %s)", w->id, why,
                  l->cfg->source_id);
        proto_msg_t stop = {.kind = PROTO_STOP, .message = why};
        if (!dispatch_send(l, w, &stop)) { /* logged */
        }
        w->alive = w->pid > 0; /* a local one exits; SIGCHLD reaps it */
        return;
    }
    w->ready = true;
    l->early_deaths = 0;
    if (l->stopping) {
        proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
        if (!dispatch_send(l, w, &stop)) { /* logged */
        }
    } else if (!s_in_outage(l)) {
        s_assign(l, w);
    }
}

/* Remote workers silent for the worker timeout lose their lease and their
 * chunk; every live worker hears from us once a heartbeat interval. */
static void s_leases(dispatch_loop_t *l)
{
    double now = dispatch_now();
    bool beat = now - l->last_beat >= MAPPER_HEARTBEAT_S;
    if (beat) l->last_beat = now;
    proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
    for (size_t i = 0; i < l->nworkers; i++) {
        dispatch_worker_t *w = &l->workers[i];
        if (!w->alive || !w->ready) continue;
        if (w->remote && now - w->last_heard > l->cfg->worker_timeout) {
            log_warn("worker %s silent for %.0f s: its lease is lost", w->id,
                     now - w->last_heard);
            w->alive = false;
            if (w->chunk >= 0) {
                dispatch_chunk_t *c = &l->chunks[w->chunk];
                memset(&c->error, 0, sizeof c->error);
                snprintf(c->error.message, sizeof c->error.message,
                         "worker %s lost its lease (silent for %.0f s)", w->id,
                         now - w->last_heard);
                size_t ci = (size_t)w->chunk;
                w->chunk = -1;
                s_attempt_failed(l, ci, DISPATCH_LEASE_LOST);
            }
            if (l->reader == (int)i)
                dispatch_stream_reader_lost(l, DISPATCH_LEASE_LOST,
                                            "the reader lost its lease");
            continue;
        }
        if (beat && !dispatch_send(l, w, &hb)) { /* logged */
        }
    }
}

static void s_on_message(dispatch_loop_t *l, const char *peer, size_t peer_len,
                         const char *user, proto_msg_t *m)
{
    dispatch_worker_t *w = s_worker_by_id(l, peer, peer_len);
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
    if (!w || w->banned) { /* a sent-away local one is on its way out */
        char who[PROTO_PEER_TEXT];
        log_debug("%s from %s (no lease) ignored", proto_kind_name(m->kind),
                  proto_peer_text(peer, peer_len, who, sizeof who));
        return;
    }
    w->last_heard = dispatch_now();
    if (m->kind == PROTO_HEARTBEAT) return;
    if (m->kind == PROTO_READY) {
        s_on_ready(l, w, m);
        return;
    }
    if (l->stream && l->reader == (int)(w - l->workers)) {
        if (dispatch_stream_on_reader(l, w, m) && !l->stopping &&
            !s_in_outage(l))
            s_assign(l, w);
        return;
    }
    if (m->kind != PROTO_PROGRESS && m->kind != PROTO_DONE &&
        m->kind != PROTO_FAILED &&
        (m->kind != PROTO_REJECT || !l->cfg->rejects)) {
        log_warn("unexpected %s from %s ignored", proto_kind_name(m->kind),
                 w->id);
        return;
    }
    dispatch_chunk_t *c = s_held(l, w, m);
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
    int64_t rows = m->rows, rejected = m->rejected;
    if (m->kind == PROTO_DONE &&
        !dispatch_done_checked(l, w, ci, m, &rows, &rejected)) {
        s_attempt_failed(l, ci, DISPATCH_DISBELIEVED);
        if (!w->ready) return; /* sent away */
    } else if (m->kind == PROTO_DONE) {
        if (m->already)
            log_info("chunk %zu attempt %d: already committed by an earlier "
                     "attempt (ledger)",
                     ci, m->attempt);
        s_chunk_done(l, ci, m->attempt, rows, m->bytes, rejected);
    } else {
        memset(&c->error, 0, sizeof c->error);
        c->error.side = m->side;
        memcpy(c->error.sqlstate, m->sqlstate, sizeof c->error.sqlstate);
        c->error.conn_bad = m->conn_bad;
        snprintf(c->error.message, sizeof c->error.message, "%s",
                 m->message ? m->message : "");
        s_attempt_failed(l, ci, DISPATCH_REPORTED);
    }
    if (!l->stopping && !s_in_outage(l)) s_assign(l, w);
}

/* Reap the workers that exited: only our own children, by pid, so that a
 * program embedding libmapper keeps its other children to itself. */
static void s_reap(dispatch_loop_t *l)
{
    for (size_t i = 0; i < l->nworkers; i++) {
        dispatch_worker_t *w = &l->workers[i];
        int status;
        pid_t pid = w->pid > 0 ? waitpid(w->pid, &status, WNOHANG) : 0;
        if (pid <= 0) continue;
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
            dispatch_chunk_t *c = &l->chunks[w->chunk];
            memset(&c->error, 0, sizeof c->error);
            c->error.side = PROTO_SIDE_NONE;
            snprintf(c->error.message, sizeof c->error.message,
                     "worker %s died (%s %d) during the chunk", w->id,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status)
                                         : WEXITSTATUS(status));
            s_attempt_failed(l, (size_t)w->chunk, DISPATCH_CRASHED);
            w->chunk = -1;
        }
        if (l->reader == (int)(w - l->workers)) {
            char why[128];
            snprintf(why, sizeof why, "the reader %s died (%s %d)", w->id,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status)
                                         : WEXITSTATUS(status));
            dispatch_stream_reader_lost(l, DISPATCH_CRASHED, why);
        }
    }
}

/* Read the self-pipe: 'C' reaps children, 'T' starts the stop. */
static void s_on_signals(dispatch_loop_t *l)
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
                l->stop_at = dispatch_now();
                l->out->interrupted = true;
            }
        }
    }
}

static void s_drain_router(dispatch_loop_t *l)
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
static bool s_top_up(dispatch_loop_t *l)
{
    int want = l->cfg->workers;
    if (dispatch_stream_open(l))
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
static void s_assign_idle(dispatch_loop_t *l)
{
    if (l->over_max_rejects) s_fail_waiting(l);
    if (s_in_outage(l)) return;
    for (size_t i = 0; i < l->nworkers && !l->stopping; i++) {
        dispatch_worker_t *w = &l->workers[i];
        if (w->alive && w->ready && w->chunk < 0 && (int)i != l->reader)
            s_assign(l, w);
    }
}

static void s_poll(dispatch_loop_t *l, long timeout_ms)
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

static size_t s_running(const dispatch_loop_t *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nchunks; i++)
        if (l->chunks[i].state == DISPATCH_RUNNING) n++;
    return n;
}

/* After a stop signal, the loop goes on until the running chunks end or
 * the grace period is over. */
static bool s_stopped(const dispatch_loop_t *l)
{
    if (!l->stopping) return false;
    return s_running(l) == 0 || dispatch_now() >= l->stop_at + l->cfg->grace;
}

/* Tell every worker to stop; SIGTERM them when interrupted; wait, then
 * SIGKILL what is left. Every child is reaped. */
static void s_shutdown(dispatch_loop_t *l)
{
    proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
    for (size_t i = 0; i < l->nworkers; i++) {
        dispatch_worker_t *w = &l->workers[i];
        if (!w->alive) continue;
        if (w->ready && !dispatch_send(l, w, &stop)) { /* logged */
        }
        if (w->pid > 0 && (l->stopping || !w->ready)) kill(w->pid, SIGTERM);
    }
    double deadline = dispatch_now() + MAPPER_SHUTDOWN_WAIT_MS / 1000.0;
    while (l->alive > 0 && dispatch_now() < deadline) {
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

static void s_fill_result(dispatch_loop_t *l)
{
    mapper_result *out = l->out;
    out->chunks_total = (int64_t)l->nchunks;
    size_t nfail = 0;
    for (size_t i = 0; i < l->nchunks; i++)
        if (l->chunks[i].state == DISPATCH_FAILED) nfail++;
    out->chunk_errors = nfail ? calloc(nfail, sizeof *out->chunk_errors) : NULL;
    for (size_t i = 0; i < l->nchunks; i++) {
        dispatch_chunk_t *c = &l->chunks[i];
        if (c->state == DISPATCH_DONE) {
            out->chunks_succeeded++;
            s_add(&out->total_rows_successful, c->rows);
            s_add(&out->rows_rejected, c->rejected);
            s_add(&out->total_rows_failed, c->rejected);
            s_add(&out->bytes, c->bytes);
        } else if (c->state == DISPATCH_FAILED) {
            out->chunks_failed++;
            s_add(&out->total_rows_failed, s_est_rows(l, i));
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
    out->total_rows_processed = out->total_rows_successful;
    s_add(&out->total_rows_processed, out->total_rows_failed);
}

bool dispatch_run(const dispatch_config_t *cfg, mapper_result *out)
{
    dispatch_loop_t l = {.cfg = cfg,
                         .out = out,
                         .nchunks = cfg->plan->n,
                         .cap_chunks = cfg->plan->n ? cfg->plan->n : 1,
                         .stream = cfg->read_sql != NULL,
                         .reader = -1};
    l.unfinished = l.nchunks;
    inflight_init(&l.held, cfg->max_inflight);
    l.held.chunk_rows = cfg->chunk_rows;
    l.chunks = calloc(l.cap_chunks, sizeof *l.chunks);
    if (!l.chunks) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return false;
    }
    retry_rng_seed_process(&l.rng);
    for (size_t i = 0; i < l.nchunks; i++) {
        l.chunks[i].worker = -1;
        if (cfg->done && cfg->done[i]) {
            l.chunks[i].state = DISPATCH_DONE;
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
    while ((l.unfinished > 0 || dispatch_stream_open(&l)) && !s_stopped(&l)) {
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
