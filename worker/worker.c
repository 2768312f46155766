/* worker/worker.c - a mapper-worker's event loop (worker.h). */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "copy.h"
#include "defaults.h"
#include "fault.h"
#include "growbuf.h"
#include "log.h"
#include "proto.h"
#include "stream.h"

#define WORKER_POLL_MS 200
/* The relay waits for at most this many libpq sockets (source, target). */
#define WORKER_MAX_PG_FDS 2
/* While the first connection comes up, the worker waits for it (the
 * socket turns writable) and says READY at once; this often at least. */
#define WORKER_CONNECT_POLL_MS 10
/* Work that may wait while a chunk runs: the coordinator hands a worker
 * its next chunks before the running one ends (no idle gap between them),
 * and one more may be in flight while the worker takes the first. */
#define WORKER_QUEUE (MAPPER_AHEAD_MAX + 1)
/* A stream chunk's buffer starts this big, and doubles. */
#define WORKER_FIRST_CHUNK_BYTES (1024 * 1024)

static volatile sig_atomic_t s_stop;

void worker_stop(void)
{
    s_stop = 1;
}

struct worker {
    copy_conns_t conns;                      /* source and target sessions */
    void *sock;                              /* DEALER to the coordinator */
    char id[PROTO_MAX_ID + 1];               /* routing id */
    char source_id[PROTO_MAX_SOURCE_ID + 1]; /* this worker's source */
    bool remote;                             /* not forked by the coordinator */
    double coord_timeout;  /* remote: give up after this much silence */
    double last_heard;     /* when the coordinator last spoke */
    double last_sent;      /* when we last sent anything */
    double last_ready;     /* when we last said ready */
    double started;        /* when the loop started */
    bool ready_unsent;     /* the last READY found no coordinator connected */
    bool heard;            /* the coordinator ever answered */
    bool lost;             /* silence past the liveness limit */
    bool refused;          /* the coordinator refused us */
    bool stop;             /* told to stop (STOP, lost, out of memory) */
    int64_t chunk_id;      /* chunk being copied */
    int32_t attempt;       /* its attempt */
    int64_t limit;         /* reader: chunks below this may be sent */
    int32_t limit_attempt; /* the read attempt limit belongs to */
    proto_msg_t next[WORKER_QUEUE]; /* ASSIGNs or READs not yet started,
                                       in order */
    int has_next;                   /* how many next holds */
    proto_msg_t write; /* writer: the WRITE whose rows are arriving */
    bool writing;      /* write holds a WRITE */
    bool write_ready;  /* its last data frame arrived */
    char *buf;         /* its rows */
    size_t len, cap;   /* bytes in buf, allocated */
    int64_t buf_rows;  /* rows in buf */
};
typedef struct worker s_worker_t;

/* Whether this worker is to stop: told so, or a signal (worker_stop). */
static bool s_stopping(const s_worker_t *w)
{
    return s_stop || w->stop;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Send m to the coordinator when the protocol recovers from its loss (a
 * heartbeat, progress, ready, a refusal: the next one, or the
 * coordinator's lease, tells): a failure is logged by proto_send and
 * nothing else is to be done about it. */
static void s_send(s_worker_t *w, const proto_msg_t *m)
{
    w->last_sent = s_now();
    proto_send(w->sock, NULL, 0, m);
}

/* True when a coordinator is connected (with ZMQ_IMMEDIATE, the socket is
 * writable only then). */
static bool s_connected(s_worker_t *w)
{
    int events = 0;
    size_t size = sizeof events;
    return !zmq_getsockopt(w->sock, ZMQ_EVENTS, &events, &size) &&
           (events & ZMQ_POLLOUT);
}

static void s_send_ready(s_worker_t *w)
{
    w->last_ready = s_now();
    w->ready_unsent = !s_connected(w);
    if (w->ready_unsent) {
        log_debug("no coordinator connected yet");
        return;
    }
    proto_msg_t ready = {.kind = PROTO_READY, .pid = getpid()};
    snprintf(ready.worker, sizeof ready.worker, "%s", w->id);
    snprintf(ready.source_id, sizeof ready.source_id, "%s", w->source_id);
    w->last_ready = s_now();
    s_send(w, &ready);
}

/* Forget the WRITE in hand and its rows. */
static void s_write_clear(s_worker_t *w)
{
    proto_msg_clear(&w->write);
    w->writing = w->write_ready = false;
    w->len = 0;
    w->buf_rows = 0;
}

/* A data frame of the WRITE in hand: keep its rows. */
static void s_on_data(s_worker_t *w, const proto_msg_t *m)
{
    if (!w->writing || w->write_ready || m->chunk_id != w->write.chunk_id ||
        m->attempt != w->write.attempt) {
        log_debug("data for chunk %" PRId64 " attempt %d ignored", m->chunk_id,
                  m->attempt);
        return;
    }
    if (!growbuf_reserve(&w->buf, &w->cap, w->len + m->data_len,
                         WORKER_FIRST_CHUNK_BYTES)) {
        log_error("out of memory for chunk %" PRId64 " (%zu bytes)",
                  m->chunk_id, w->len + m->data_len);
        w->stop = true;
        return;
    }
    if (m->data_len) memcpy(w->buf + w->len, m->data, m->data_len);
    w->len += m->data_len;
    w->buf_rows += m->rows;
    w->write_ready = m->last;
}

/* Refuse work that came while the worker had work waiting already (the
 * coordinator took a READY for "gave my chunk up" while it was not): the
 * coordinator retries the chunk elsewhere. */
static void s_refuse(s_worker_t *w, const proto_msg_t *m)
{
    char why[PROTO_MAX_MESSAGE];
    snprintf(why, sizeof why, "worker %s was busy with other work", w->id);
    proto_msg_t r = {.kind = PROTO_FAILED,
                     .chunk_id = m->chunk_id,
                     .attempt = m->attempt,
                     .side = PROTO_SIDE_NONE,
                     .message = why};
    memcpy(r.sqlstate, MAPPER_SQLSTATE_SHUTDOWN, sizeof r.sqlstate);
    log_warn("%s for chunk %" PRId64 " refused: %s", proto_kind_name(m->kind),
             m->chunk_id, why);
    s_send(w, &r);
}

/* Credit belongs to one read attempt: a later attempt's replaces it, the
 * same attempt's only raises it. A READ brings its attempt's first credit
 * as it arrives, and a CREDIT may come before that READ has started: the
 * READ's own limit must not undo it. */
static void s_credit_raise(s_worker_t *w, int32_t attempt, int64_t limit)
{
    if (attempt > w->limit_attempt) {
        w->limit_attempt = attempt;
        w->limit = limit;
    } else if (attempt == w->limit_attempt && limit > w->limit) {
        w->limit = limit;
    }
}

/* Handle every waiting message. Work is never dropped: an ASSIGN or READ
 * waits in w->next (WORKER_QUEUE of them) even while a chunk runs, a WRITE
 * in w->write until its rows have arrived; work beyond that is refused. */
static void s_drain(s_worker_t *w)
{
    proto_msg_t msg;
    while (!s_stopping(w) && proto_recv(w->sock, NULL, 0, NULL, &msg)) {
        w->last_heard = s_now();
        w->heard = true;
        if (w->lost) log_info("the coordinator answers again");
        w->lost = false;
        if (msg.kind == PROTO_STOP) {
            if (msg.message && *msg.message) {
                log_error("refused by the coordinator: %s", msg.message);
                w->refused = true;
            }
            w->stop = true;
        } else if ((msg.kind == PROTO_ASSIGN || msg.kind == PROTO_READ) &&
                   w->has_next < WORKER_QUEUE) {
            if (msg.kind == PROTO_READ)
                s_credit_raise(w, msg.attempt, msg.limit);
            w->next[w->has_next++] = msg;
            continue; /* run by the main loop */
        } else if (msg.kind == PROTO_WRITE && !w->writing) {
            w->write = msg;
            w->writing = true;
            continue; /* kept until its rows arrive */
        } else if (msg.kind == PROTO_ASSIGN || msg.kind == PROTO_READ ||
                   msg.kind == PROTO_WRITE) {
            s_refuse(w, &msg);
        } else if (msg.kind == PROTO_DATA) {
            s_on_data(w, &msg);
        } else if (msg.kind == PROTO_CREDIT) {
            s_credit_raise(w, msg.attempt, msg.limit);
        } else if (msg.kind != PROTO_HEARTBEAT) {
            log_warn("ignoring unexpected %s", proto_kind_name(msg.kind));
        }
        proto_msg_clear(&msg);
    }
}

/* Remote workers watch the coordinator's heartbeats: past the liveness
 * limit the chunk in hand is abandoned; past --coordinator-timeout the
 * worker gives up. */
static void s_watch(s_worker_t *w)
{
    if (!w->remote) return;
    double now = s_now(), silent = now - w->last_heard;
    if (!w->lost && silent > MAPPER_COORD_LIVENESS_S) {
        log_warn("no word from the coordinator for %.0f s", silent);
        w->lost = true;
    }
    if (silent > w->coord_timeout) {
        log_error("%s for %.0f s: giving up",
                  w->heard ? "lost the coordinator" : "no coordinator answered",
                  silent);
        w->stop = true;
    }
}

/* Wait up to a poll interval for events on the socket while hearing the
 * coordinator; false when the worker is stopping or lost it. */
static bool s_wait(s_worker_t *w, short events)
{
    zmq_pollitem_t item = {w->sock, 0, events, 0};
    if (zmq_poll(&item, 1, WORKER_POLL_MS) < 0 && errno != EINTR) return false;
    s_drain(w);
    s_watch(w);
    return !s_stopping(w) && !w->lost;
}

/* Send a message that must not be dropped: while the send queue is full
 * (the high-water mark), wait for room, still hearing the coordinator.
 * Gives up when the worker is told to stop or loses the coordinator. */
static bool s_send_surely(s_worker_t *w, const proto_msg_t *m)
{
    for (;;) {
        w->last_sent = s_now();
        if (proto_send(w->sock, NULL, 0, m)) return true;
        if (errno != EAGAIN || !s_wait(w, ZMQ_POLLOUT)) return false;
    }
}

/* A row the target refused: to the coordinator, which writes it to the
 * reject file once the chunk commits. */
static bool s_reject(void *arg, int64_t row_index, const char *sqlstate,
                     const char *message, const char *row, size_t len)
{
    s_worker_t *w = arg;
    proto_msg_t m = {.kind = PROTO_REJECT,
                     .chunk_id = w->chunk_id,
                     .attempt = w->attempt,
                     .row_index = row_index,
                     .message = (char *)message,
                     .row = strndup(row, len)};
    snprintf(m.sqlstate, sizeof m.sqlstate, "%s", sqlstate);
    bool ok = m.row && s_send_surely(w, &m);
    if (!ok)
        log_error("chunk %" PRId64 ": could not send rejected row %" PRId64,
                  w->chunk_id, row_index + 1);
    free(m.row);
    return ok;
}

static bool s_tick(void *arg, int64_t rows, int64_t bytes)
{
    s_worker_t *w = arg;
    proto_msg_t m = {.kind = PROTO_PROGRESS,
                     .chunk_id = w->chunk_id,
                     .attempt = w->attempt,
                     .rows = rows,
                     .bytes = bytes};
    s_send(w, &m);
    s_drain(w);
    s_watch(w);
    return !s_stopping(w) && !w->lost;
}

/* copy_wait_fn: wait for the libpq sockets and the coordinator together,
 * hearing it, and sending heartbeats on time whatever libpq is doing. */
static bool s_wait_pg(void *arg, struct pollfd *fds, int nfds, int timeout_ms)
{
    s_worker_t *w = arg;
    zmq_pollitem_t items[1 + WORKER_MAX_PG_FDS] = {{w->sock, 0, ZMQ_POLLIN, 0}};
    if (nfds > WORKER_MAX_PG_FDS) nfds = WORKER_MAX_PG_FDS;
    for (int i = 0; i < nfds; i++) {
        items[1 + i].fd = fds[i].fd;
        items[1 + i].events =
            (short)(((fds[i].events & POLLIN) ? ZMQ_POLLIN : 0) |
                    ((fds[i].events & POLLOUT) ? ZMQ_POLLOUT : 0));
    }
    if (s_stopping(w)) return false;
    double beat = w->last_sent + MAPPER_HEARTBEAT_S - s_now();
    long wait = beat * 1000 < timeout_ms ? (long)(beat * 1000) : timeout_ms;
    if (zmq_poll(items, 1 + nfds, wait < 0 ? 0 : wait) < 0 && errno != EINTR) {
        log_error("poll: %s", zmq_strerror(errno));
        return false;
    }
    for (int i = 0; i < nfds; i++) {
        short ev = items[1 + i].revents;
        fds[i].revents = (short)(((ev & ZMQ_POLLIN) ? POLLIN : 0) |
                                 ((ev & ZMQ_POLLOUT) ? POLLOUT : 0) |
                                 ((ev & ZMQ_POLLERR) ? POLLERR : 0));
    }
    s_drain(w);
    s_watch(w);
    if (w->heard && s_now() - w->last_sent > MAPPER_HEARTBEAT_S) {
        proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
        s_send(w, &hb);
    }
    return !s_stopping(w) && !w->lost;
}

/* Report how an attempt ended (a chunk's, or with kind END a read's). */
static void s_report(s_worker_t *w, copy_status_t st, proto_kind_t ok_kind,
                     int64_t chunk_id, int32_t attempt, int64_t rows,
                     int64_t bytes, int64_t rejected, const pgutil_error_t *err)
{
    proto_msg_t r = {.chunk_id = chunk_id, .attempt = attempt};
    char msg[PROTO_MAX_MESSAGE];
    if (st == COPY_OK || st == COPY_ALREADY) {
        r.kind = ok_kind;
        r.already = st == COPY_ALREADY;
        r.rows = rows;
        r.bytes = bytes;
        r.rejected = rejected;
    } else if (st == COPY_ABORTED) {
        /* Rolled back on purpose: a shutdown, which is worth a retry. */
        r.kind = PROTO_FAILED;
        r.side = PROTO_SIDE_NONE;
        memcpy(r.sqlstate, MAPPER_SQLSTATE_SHUTDOWN, sizeof r.sqlstate);
        snprintf(msg, sizeof msg, "worker %s rolled the chunk back: %s", w->id,
                 w->lost ? "lost the coordinator" : "asked to stop");
        r.message = msg;
        log_warn("chunk %" PRId64 " attempt %d: %s", chunk_id, attempt, msg);
    } else {
        r.kind = PROTO_FAILED;
        r.side = err->side;
        memcpy(r.sqlstate, err->sqlstate, sizeof r.sqlstate);
        r.conn_bad = err->conn_bad;
        snprintf(msg, sizeof msg, "%s", err->message);
        r.message = msg;
        log_warn("%s %" PRId64 " attempt %d: %s: %s%s%s",
                 ok_kind == PROTO_END ? "reading, chunk" : "chunk", chunk_id,
                 attempt, pgutil_side_name(err->side), err->sqlstate,
                 err->sqlstate[0] ? " " : "", err->message);
    }
    if (!s_send_surely(w, &r))
        log_error("chunk %" PRId64 ": could not report the outcome", chunk_id);
}

/* Copy one chunk (ASSIGN), or write one held in memory (WRITE). */
static void s_run_chunk(s_worker_t *w, copy_conns_t *conns,
                        const copy_job_t *job)
{
    w->chunk_id = job->chunk_id;
    w->attempt = job->attempt;
    int64_t rows = 0, bytes = 0, rejected = 0;
    pgutil_error_t err;
    log_debug("chunk %" PRId64 " attempt %d: start", job->chunk_id,
              job->attempt);
    copy_status_t st =
        copy_chunk(conns, job, s_tick, w, &rows, &bytes, &rejected, &err);
    s_report(w, st, PROTO_DONE, job->chunk_id, job->attempt, rows, bytes,
             rejected, &err);
}

/* stream_io_t's send: a reader's data must not be dropped. */
static bool s_send_wait(void *arg, const proto_msg_t *m)
{
    return s_send_surely(arg, m);
}

/* Wait until the coordinator lets the reader send chunk. Credit for a
 * later read attempt ends this one: the coordinator gave it up, and the
 * later READ waits behind it. */
static bool s_credit(void *arg, int64_t chunk)
{
    s_worker_t *w = arg;
    if (fault_hit("ignore-credit", chunk, w->attempt)) return true;
    for (;;) {
        if (w->limit_attempt != w->attempt) {
            log_warn("read attempt %d given up: the coordinator started "
                     "attempt %d",
                     w->attempt, w->limit_attempt);
            return false;
        }
        if (chunk < w->limit) break;
        if (!s_wait(w, ZMQ_POLLIN)) return false;
        if (s_now() - w->last_sent > MAPPER_HEARTBEAT_S) {
            proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
            s_send(w, &hb);
        }
    }
    return !s_stopping(w) && !w->lost;
}

/* Stream mode: read the whole query and send it in chunks. */
static void s_run_read(s_worker_t *w, copy_conns_t *conns, const proto_msg_t *a)
{
    w->attempt = a->attempt; /* its credit: s_credit_raise, as it came */
    stream_read_t r = {a->attempt, a->snapshot, a->source_sql, a->rows};
    stream_io_t io = {s_send_wait, s_credit, s_wait_pg, w};
    int64_t chunks = 0, rows = 0, bytes = 0;
    pgutil_error_t err;
    log_debug("reading the stream, attempt %d", a->attempt);
    copy_status_t st =
        stream_read(conns, &r, &io, &chunks, &rows, &bytes, &err);
    s_report(w, st, PROTO_END, chunks, a->attempt, rows, bytes, 0, &err);
}

/* The worker's own view of its source: refused by the coordinator when it
 * is not the job's source. */
static bool s_source_identity(copy_conns_t *conns, s_worker_t *w)
{
    pgutil_error_t err; /* the session every chunk then reuses: set up */
    if (!copy_open_source(conns, &err)) {
        char where[256];
        log_describe_conninfo(where, sizeof where, conns->source_conninfo);
        log_error("source database unreachable (%s): %s", where, err.message);
        return false;
    }
    pgutil_source_identity(conns->src, w->source_id, sizeof w->source_id);
    return true;
}

worker_t *worker_new(const worker_config_t *cfg)
{
    s_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        log_error("out of memory");
        return NULL;
    }
    w->sock = cfg->sock;
    snprintf(w->id, sizeof w->id, "%s", cfg->id);
    w->remote = cfg->remote;
    w->coord_timeout = cfg->coord_timeout;
    w->chunk_id = -1;
    w->conns.source_conninfo = cfg->source_conninfo;
    w->conns.target_conninfo = cfg->target_conninfo;
    if (!s_source_identity(&w->conns, w)) {
        worker_destroy(&w);
        return NULL;
    }
    return w;
}

int worker_run(worker_t *w)
{
    w->last_heard = s_now();
    w->started = s_now();
    s_send_ready(w);
    while (!s_stopping(w)) {
        /* Just started and the connection not up yet: say ready as soon
         * as it is (a job of one small chunk should not wait a second). */
        bool connecting = w->ready_unsent && !w->heard &&
                          s_now() - w->started < MAPPER_HEARTBEAT_S;
        zmq_pollitem_t item = {
            w->sock, 0, (short)(ZMQ_POLLIN | (connecting ? ZMQ_POLLOUT : 0)),
            0};
        long wait = w->has_next || w->write_ready ? 0
                    : connecting                  ? WORKER_CONNECT_POLL_MS
                                                  : WORKER_POLL_MS;
        if (zmq_poll(&item, 1, wait) < 0 && errno != EINTR) {
            log_error("poll: %s", zmq_strerror(errno));
            break;
        }
        s_drain(w);
        if (w->has_next) {
            proto_msg_t a = w->next[0]; /* ours now; a new next may arrive */
            memmove(&w->next[0], &w->next[1],
                    sizeof w->next[0] * (size_t)--w->has_next);
            if (a.kind == PROTO_READ) {
                s_run_read(w, &w->conns, &a);
            } else {
                copy_job_t job = {.chunk_id = a.chunk_id,
                                  .attempt = a.attempt,
                                  .snapshot = a.snapshot,
                                  .source_sql = a.source_sql,
                                  .target_schema = a.target_schema,
                                  .target_table = a.target_table,
                                  .columns = a.columns,
                                  .columns_len = a.columns_len,
                                  .binary = a.binary,
                                  .key = a.key,
                                  .key_len = a.key_len,
                                  .job_id = a.job_id,
                                  .state_schema = a.state_schema,
                                  .reject_rows = a.reject_rows,
                                  .on_reject = s_reject,
                                  .wait = s_wait_pg};
                s_run_chunk(w, &w->conns, &job);
            }
            proto_msg_clear(&a);
        }
        if (w->write_ready) {
            proto_msg_t *m = &w->write;
            copy_job_t job = {.chunk_id = m->chunk_id,
                              .attempt = m->attempt,
                              .target_schema = m->target_schema,
                              .target_table = m->target_table,
                              .columns = m->columns,
                              .columns_len = m->columns_len,
                              .binary = m->binary,
                              .key = m->key,
                              .key_len = m->key_len,
                              .job_id = m->job_id,
                              .state_schema = m->state_schema,
                              .data = w->buf ? w->buf : "",
                              .data_len = w->len,
                              .data_rows = w->buf_rows,
                              .reject_rows = m->reject_rows,
                              .on_reject = s_reject,
                              .wait = s_wait_pg};
            s_run_chunk(w, &w->conns, &job);
            s_write_clear(w);
        }
        s_watch(w);
        double now = s_now();
        /* Say ready again while unheard: the coordinator may have started
         * after us, restarted, or dropped our lease. */
        if ((w->lost || !w->heard) &&
            (connecting || now - w->last_ready > MAPPER_HEARTBEAT_S))
            s_send_ready(w);
        else if (w->heard && now - w->last_sent > MAPPER_HEARTBEAT_S) {
            proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
            s_send(w, &hb);
        }
    }
    return w->refused               ? MAPPER_EXIT_CANNOT_RUN
           : w->remote && !w->heard ? MAPPER_EXIT_CANNOT_RUN
           : w->remote && w->lost   ? MAPPER_EXIT_INTERRUPTED
                                    : MAPPER_EXIT_OK;
}

void worker_destroy(worker_t **self_p)
{
    s_worker_t *w = *self_p;
    if (!w) return;
    copy_conns_close(&w->conns);
    s_write_clear(w);
    free(w->buf);
    for (int i = 0; i < w->has_next; i++)
        proto_msg_clear(&w->next[i]);
    free(w);
    *self_p = NULL;
}
