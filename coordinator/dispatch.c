/* coordinator/dispatch.c - the coordinator's event loop (dispatch.h). */
#include "dispatch.h"
#include "dispatch_loop.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "defaults.h"
#include "growbuf.h"
#include "inflight.h"
#include "log.h"
#include "pgutil.h"
#include "proto.h"
#include "retry.h"

/* Workers that die before saying ready, in a row, before we give up. */
#define DISPATCH_MAX_EARLY_DEATHS 8

static bool s_grow_workers(dispatch_loop_t *l)
{
    return growbuf_room((void **)&l->workers, &l->cap_workers, l->nworkers,
                        sizeof *l->workers, 16, "workers");
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
    w->last_heard = clock_now();
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

/* Probe databases in an outage, without blocking the loop: a probe
 * starts when one is due and is polled every tick. End the outage when the
 * database answers, or end the job (every undone chunk failed) when it
 * lasted too long. */
static void s_probe(dispatch_loop_t *l)
{
    for (int side = PROTO_SIDE_SOURCE; side <= PROTO_SIDE_TARGET; side++) {
        pgutil_probe_t *p = &l->probe[side];
        pgutil_probe_state_t st;
        if (p->conn)
            st = pgutil_probe_poll(p);
        else if (chunks_probe_due(&l->chunks, (proto_side_t)side))
            st = pgutil_probe_start(p, l->cfg->conninfo[side]);
        else
            continue;
        if (st == PGUTIL_PROBE_BUSY ||
            chunks_probed(&l->chunks, (proto_side_t)side,
                          st == PGUTIL_PROBE_UP) != CHUNKS_GAVE_UP)
            continue;
        for (size_t i = 0; i < l->nworkers; i++) {
            l->workers[i].chunk = -1;
            l->workers[i].nahead = 0;
        }
        return;
    }
}

/* Give w the next chunk that may start (or the read, in stream mode) - or,
 * when w runs one already, one more it runs after those it holds; a worker
 * with nothing left to do is told to stop. */
static void s_assign(dispatch_loop_t *l, dispatch_worker_t *w)
{
    bool ahead = w->chunk >= 0;
    if (ahead && w->nahead >= MAPPER_AHEAD_MAX) return;
    if (l->over_max_rejects) dispatch_fail_waiting(l);
    if (dispatch_stream_open(l) && l->reader < 0 &&
        clock_now() >= l->read_not_before) {
        dispatch_stream_start_reader(l, w);
        return;
    }
    ssize_t ci =
        ahead ? chunks_next_ahead(&l->chunks) : chunks_next(&l->chunks);
    if (ci < 0) {
        if (!ahead && l->chunks.unfinished == 0 && !dispatch_stream_open(l)) {
            proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
            if (!dispatch_send(l, w, &stop)) { /* logged; SIGCHLD will tell */
            }
        }
        return;
    }
    proto_msg_t m = {.kind = l->stream ? PROTO_WRITE : PROTO_ASSIGN,
                     .chunk_id = ci};
    if (!schema_target_fields(l->cfg->schema, &m) ||
        (!l->stream &&
         !schema_chunk_sql(l->cfg->schema, &l->cfg->plan->chunks[ci],
                           &m.source_sql))) {
        log_error("chunk %zd: its statement could not be built", ci);
        chunks_fail(&l->chunks, (size_t)ci, PROTO_SIDE_NONE, NULL,
                    "its statement could not be built (see the log)");
        proto_msg_clear(&m);
        return;
    }
    snprintf(m.snapshot, sizeof m.snapshot, "%s", l->cfg->snapshot);
    if (l->cfg->ledger) {
        snprintf(m.job_id, sizeof m.job_id, "%s", l->cfg->ledger->job_id);
        snprintf(m.state_schema, sizeof m.state_schema, "%s",
                 l->cfg->ledger->schema);
    }
    m.reject_rows = l->cfg->rejects != NULL;
    int wi = (int)(w - l->workers);
    m.attempt = ahead ? chunks_start_ahead(&l->chunks, (size_t)ci, wi)
                      : chunks_start(&l->chunks, (size_t)ci, wi);
    if (ahead)
        w->ahead[w->nahead++] = ci;
    else
        w->chunk = ci;
    if (!dispatch_send(l, w, &m) ||
        (l->stream &&
         !dispatch_stream_send_rows(l, w, (size_t)ci, m.attempt))) {
        /* The worker is going away; its SIGCHLD puts the chunk back. */
        log_warn("chunk %zd: could not assign to %s", ci, w->id);
    }
    if (ahead)
        log_debug("chunk %zd attempt %d -> %s (ahead, %d held)", ci, m.attempt,
                  w->id, w->nahead);
    else
        log_debug("chunk %zd attempt %d -> %s", ci, m.attempt, w->id);
    proto_msg_clear(&m);
}

/* Keep w busy: a chunk to run and, in range mode when there are chunks to
 * spare, the next ones ahead (dispatch_ahead_wanted), so that it never
 * waits for an ASSIGN. Not with --max-rejects: past it no chunk may start,
 * and a worker goes on to its chunks ahead without asking. */
static void s_fill(dispatch_loop_t *l, dispatch_worker_t *w)
{
    if (w->chunk < 0) s_assign(l, w);
    while (dispatch_ahead_wanted(l, w)) {
        int held = w->nahead;
        s_assign(l, w);
        if (w->nahead == held) return; /* none may start now */
    }
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
                 x->nahead == 0 && l->reader != (int)i && !dead)
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
    w->nahead = 0;
    log_info("remote worker %s (pid %" PRId64 ") connected", w->id, m->pid);
    return w;
}

/* READY: check the worker reads the job's source database, then give it a
 * chunk. A READY from a worker that holds a chunk means it gave that
 * attempt up (it lost us for a while). */
static void s_on_ready(dispatch_loop_t *l, dispatch_worker_t *w,
                       const proto_msg_t *m)
{
    dispatch_attempt_lost(
        l, w, CHUNKS_LEASE_LOST,
        "worker %s gave the chunk up (it lost the coordinator)", w->id);
    if (l->reader == (int)(w - l->workers))
        dispatch_stream_reader_lost(
            l, CHUNKS_LEASE_LOST,
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
    } else if (!chunks_in_outage(&l->chunks, PROTO_SIDE_NONE)) {
        s_fill(l, w);
    }
}

/* Remote workers silent for the worker timeout lose their lease and their
 * chunk; every live worker hears from us once a heartbeat interval. */
static void s_leases(dispatch_loop_t *l)
{
    double now = clock_now();
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
            dispatch_attempt_lost(
                l, w, CHUNKS_LEASE_LOST,
                "worker %s lost its lease (silent for %.0f s)", w->id,
                now - w->last_heard);
            if (l->reader == (int)i)
                dispatch_stream_reader_lost(l, CHUNKS_LEASE_LOST,
                                            "the reader lost its lease");
            continue;
        }
        if (beat && !dispatch_send(l, w, &hb)) { /* logged */
        }
    }
}

/* w is done with the chunk it ran: the first one it holds ahead runs
 * (the worker went on to it at once), and it is kept busy. */
static void s_went_free(dispatch_loop_t *l, dispatch_worker_t *w)
{
    dispatch_ahead_runs(l, w);
    if (!l->stopping && !chunks_in_outage(&l->chunks, PROTO_SIDE_NONE))
        s_fill(l, w);
}

/* w's chunk ended: a DONE is kept to be checked against the ledger with
 * others heard about the same time (defaults.h; at once with --max-rejects,
 * whose count must be known before the next chunk starts), while w goes on
 * at once; a FAILED (or, without a ledger, a DONE) is settled now. */
static void s_outcome(dispatch_loop_t *l, dispatch_worker_t *w,
                      const proto_msg_t *m)
{
    size_t ci = (size_t)m->chunk_id;
    w->chunk = -1;
    dispatch_ahead_ended(w, clock_now());
    if (m->kind == PROTO_DONE && l->cfg->ledger) {
        dispatch_done_defer(l, w, m);
        if (l->ndone == MAPPER_DONE_BATCH || l->cfg->max_rejects >= 0)
            dispatch_done_flush(l);
    } else if (m->kind == PROTO_DONE) {
        dispatch_done_settle(l, w, m, NULL);
    } else {
        pgutil_error_t *e = chunks_error(&l->chunks, ci);
        e->side = m->side;
        memcpy(e->sqlstate, m->sqlstate, sizeof e->sqlstate);
        e->conn_bad = m->conn_bad;
        snprintf(e->message, sizeof e->message, "%s",
                 m->message ? m->message : "");
        dispatch_attempt_failed(l, ci, CHUNKS_REPORTED);
    }
    if (w->ready) s_went_free(l, w); /* else sent away */
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
    w->last_heard = clock_now();
    if (m->kind == PROTO_HEARTBEAT) return;
    if (m->kind == PROTO_READY) {
        s_on_ready(l, w, m);
        return;
    }
    if (l->stream && l->reader == (int)(w - l->workers)) {
        if (dispatch_stream_on_reader(l, w, m) && !l->stopping &&
            !chunks_in_outage(&l->chunks, PROTO_SIDE_NONE))
            s_fill(l, w);
        return;
    }
    if (m->kind != PROTO_PROGRESS && m->kind != PROTO_DONE &&
        m->kind != PROTO_FAILED &&
        (m->kind != PROTO_REJECT || !l->cfg->rejects)) {
        log_warn("unexpected %s from %s ignored", proto_kind_name(m->kind),
                 w->id);
        return;
    }
    chunks_chunk_t *c = dispatch_held(l, w, m);
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
    s_outcome(l, w, m);
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
        dispatch_attempt_lost(
            l, w, CHUNKS_CRASHED, "worker %s died (%s %d) during the chunk",
            w->id, WIFSIGNALED(status) ? "signal" : "exit status",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        if (l->reader == (int)(w - l->workers)) {
            char why[128];
            snprintf(why, sizeof why, "the reader %s died (%s %d)", w->id,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status)
                                         : WEXITSTATUS(status));
            dispatch_stream_reader_lost(l, CHUNKS_CRASHED, why);
        }
    }
}

/* Stream mode: send the rows that did not fit in a writer's queue. A
 * writer whose rows cannot go out (gone, or its queue full for the worker
 * timeout) loses the attempt, and is stopped: it holds half a chunk. */
static void s_flush_sends(dispatch_loop_t *l)
{
    for (size_t i = 0; i < l->nworkers; i++) {
        dispatch_worker_t *w = &l->workers[i];
        if (!w->sending) continue;
        const chunks_chunk_t *c = w->chunk >= 0 ? &l->chunks.v[w->chunk] : NULL;
        if (!w->alive || !c || c->state != CHUNKS_RUNNING ||
            c->attempts != w->send_attempt) {
            w->sending = false; /* the attempt is over */
            continue;
        }
        if (dispatch_stream_flush(l, w)) continue;
        dispatch_attempt_lost(l, w, CHUNKS_LEASE_LOST,
                              "the chunk's rows could not be sent to worker %s",
                              w->id);
        if (w->pid > 0)
            kill(w->pid, SIGTERM); /* SIGCHLD reaps and replaces it */
        else
            dispatch_send_away(l, w, "it did not take its chunk's rows");
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
                l->stop_at = clock_now();
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
    for (;;) { /* until nothing waits: no ZMQ_EVENTS check per message */
        char user[CURVE_KEY_LEN + 1];
        if (!proto_recv_user(l->cfg->router, peer, sizeof peer, &peer_len, user,
                             sizeof user, &m)) {
            if (errno == EPROTO) continue; /* malformed, dropped (logged) */
            break;                         /* EAGAIN: drained */
        }
        s_on_message(l, peer, peer_len, user, &m);
        proto_msg_clear(&m);
    }
    /* Checked when due, or at once when nothing else is left to wait for
     * (or the rows of stream chunks wait for them). */
    if (l->ndone && (l->stream || l->chunks.unfinished == l->ndone ||
                     clock_now() >= l->done_due))
        dispatch_done_flush(l);
}

/* Keep min(workers, unfinished chunks) workers alive. */
static bool s_top_up(dispatch_loop_t *l)
{
    int want = l->cfg->workers;
    if (dispatch_stream_open(l))
        want += want > 0; /* the reader, besides the writers */
    else if ((size_t)want > l->chunks.unfinished)
        want = (int)l->chunks.unfinished;
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

/* Hand chunks whose retry time has come to idle workers, and chunks
 * ahead to busy ones that want them (s_fill decides). */
static void s_assign_idle(dispatch_loop_t *l)
{
    if (l->over_max_rejects) dispatch_fail_waiting(l);
    if (chunks_in_outage(&l->chunks, PROTO_SIDE_NONE)) return;
    for (size_t i = 0; i < l->nworkers && !l->stopping; i++) {
        dispatch_worker_t *w = &l->workers[i];
        if (w->alive && w->ready && (int)i != l->reader) s_fill(l, w);
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
    /* What a worker said before it died is heard before its death: a
     * chunk it reported done is not lost with it. */
    s_drain_router(l);
    if (items[1].revents & ZMQ_POLLIN) s_on_signals(l);
}

/* Rest a moment (dispatch_may_rest): what the workers say meanwhile waits
 * for the next turn; only a signal cuts the rest short. */
static void s_rest(dispatch_loop_t *l)
{
    struct pollfd p = {.fd = l->cfg->signal_fd, .events = POLLIN};
    if (poll(&p, 1, MAPPER_REST_MS) < 0 && errno != EINTR)
        log_error("poll: %s", strerror(errno));
}

/* How long the loop may wait for an event (ms): a tick, or less when kept
 * DONEs must be checked sooner (MAPPER_DONE_WAIT_MS after the first). */
static long s_timeout(const dispatch_loop_t *l)
{
    if (!l->ndone) return MAPPER_LOOP_TICK_MS;
    double wait = (MAPPER_DONE_WAIT_MS - MAPPER_DONE_BATCH_MS) / 1000.0;
    long ms = (long)((l->done_due + wait - clock_now()) * 1000.0) + 1;
    return ms < 0 ? 0 : ms < MAPPER_LOOP_TICK_MS ? ms : MAPPER_LOOP_TICK_MS;
}

/* After a stop signal, the loop goes on until the running chunks end or
 * the grace period is over. */
static bool s_stopped(const dispatch_loop_t *l)
{
    if (!l->stopping) return false;
    return chunks_running(&l->chunks) == 0 ||
           clock_now() >= l->stop_at + l->cfg->grace;
}

/* Tell every worker to stop; SIGTERM them when interrupted; wait, then
 * SIGKILL what is left. Every child is reaped. */
/* Remote workers are sent STOP until they leave: one STOP can be lost
 * with the connection it was queued on, and a worker that never hears it
 * waits out its --coordinator-timeout and exits 75 although the job is
 * over. A worker that left is no longer a routing peer (ROUTER_MANDATORY
 * then refuses the send), so "gone" needs no reply from it. */
static void s_farewell(dispatch_loop_t *l)
{
    proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
    double end = clock_now() + MAPPER_FAREWELL_MS / 1000.0;
    for (;;) {
        bool anyone = false;
        for (size_t i = 0; i < l->nworkers; i++) {
            dispatch_worker_t *w = &l->workers[i];
            if (!w->remote || !w->ready || w->banned) continue;
            if (proto_send_if_there(l->cfg->router, w->id, strlen(w->id),
                                    &stop) ||
                errno != EHOSTUNREACH)
                anyone = true;
            else
                w->ready = false; /* gone: it heard its STOP */
        }
        if (!anyone || clock_now() >= end) return;
        s_poll(l, MAPPER_FAREWELL_EVERY_MS);
    }
}

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
    double deadline = clock_now() + MAPPER_SHUTDOWN_WAIT_MS / 1000.0;
    while (l->alive > 0 && clock_now() < deadline) {
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
    s_farewell(l);
}

bool dispatch_run(const dispatch_config_t *cfg, mapper_result *out)
{
    dispatch_loop_t l = {
        .cfg = cfg, .out = out, .stream = cfg->read_sql != NULL, .reader = -1};
    if (!chunks_init(&l.chunks, cfg->plan->n, cfg->retry, cfg->outage_timeout,
                     cfg->progress, NULL)) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return false;
    }
    if (l.stream) {
        l.chunks.on_end = dispatch_stream_release;
        l.chunks.on_end_ctx = &l;
    }
    inflight_init(&l.held, cfg->max_inflight);
    l.held.chunk_rows = cfg->chunk_rows;
    for (size_t i = 0; i < l.chunks.n; i++) {
        l.chunks.v[i].est_rows = cfg->plan->chunks[i].est_rows;
        if (!cfg->done || !cfg->done[i]) continue;
        int64_t rejected = cfg->done_rejected ? cfg->done_rejected[i] : 0;
        chunks_resumed(&l.chunks, i, cfg->done_rows[i], rejected);
        l.rejected += rejected;
    }
    dispatch_check_max_rejects(&l); /* a resumed job may be past it already */
    bool ok = true;
    long turns = 0, rests = 0;
    while ((l.chunks.unfinished > 0 || dispatch_stream_open(&l)) &&
           !s_stopped(&l)) {
        if (!(ok = s_top_up(&l))) break;
        s_assign_idle(&l);
        turns++;
        if (dispatch_may_rest(&l)) {
            s_rest(&l);
            rests++;
        }
        s_poll(&l, s_timeout(&l));
        s_flush_sends(&l);
        s_probe(&l);
        if (cfg->ledger) ledger_reconnect(cfg->ledger);
        s_leases(&l);
        progress_tick(cfg->progress);
    }
    log_debug("%ld turns of the loop, %ld after a rest", turns, rests);
    dispatch_done_flush(&l);
    s_shutdown(&l);
    dispatch_done_flush(&l); /* DONEs heard while the workers stopped */
    dispatch_fill_result(&l);
    for (int side = 0; side < 3; side++)
        pgutil_probe_cancel(&l.probe[side]);
    inflight_free(&l.held);
    chunks_free(&l.chunks);
    free(l.workers);
    return ok;
}
