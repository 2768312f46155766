/* worker/relay.c - the non-blocking relay from source to target (relay.h). */
#include "relay.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "defaults.h"
#include "fault.h"
#include "log.h"

/* The buffer between source and target: rows read while the target's
 * libpq sends the previous batch. 64 KiB to 4 MiB measured the same time
 * (2,000,000 rows, one chunk); the worker's peak RSS grows with it (12.2
 * MB at 64 KiB, 12.8 at 256 KiB, 14.3 at 1 MiB, 20.4 at 4 MiB). */
#define RELAY_BYTES (256 * 1024)

/* Reading in gulps. A source streaming rows a little slower than the
 * worker reads them woke it for every packet it sent (8 kB), and those
 * wake-ups were most of a worker's CPU: 0.47 s for 2,000,000 rows on two
 * workers against 0.27 s reading in gulps, and the load 4 % shorter (two
 * CPUs, both busy); a stream's reader: 0.61 s against 0.41 s, 5 %. So
 * once a COPY has moved RELAY_NAP_AFTER bytes, a worker that has read all
 * the source sent sleeps RELAY_NAP_US, then reads what came meanwhile (one
 * read: libpq's buffer does not grow for it, and what is left is read at
 * once on the next turn). The source does not wait for it: the sockets'
 * buffers hold more than that many microseconds of rows, and a source
 * faster than the worker never lets its socket run dry. A COPY smaller
 * than RELAY_NAP_AFTER never sleeps, since the sleep could only delay its
 * end. */
#define RELAY_NAP_US    500
#define RELAY_NAP_AFTER (1024 * 1024)

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool s_put(PGconn *dst, const char *buf, size_t len, pgutil_error_t *err)
{
    if (len == 0 || PQputCopyData(dst, buf, (int)len) == 1) return true;
    pgutil_capture(dst, NULL, PROTO_SIDE_TARGET, err);
    return false;
}

bool relay_result(PGconn *conn, ExecStatusType want, proto_side_t side,
                  pgutil_error_t *err)
{
    PGresult *res = PQgetResult(conn);
    bool ok = PQresultStatus(res) == want;
    if (!ok) pgutil_capture(conn, res, side, err);
    PQclear(res);
    while ((res = PQgetResult(conn)))
        PQclear(res);
    return ok;
}

/* The relay: wait for the libpq sockets in fds through job->wait, or
 * poll(2) alone when there is none. False to abort (a stop). */
bool relay_wait(copy_wait_fn wait, void *arg, struct pollfd *fds, int nfds,
                int timeout_ms)
{
    for (int i = 0; i < nfds; i++)
        fds[i].revents = 0;
    if (wait) return wait(arg, fds, nfds, timeout_ms);
    return poll(fds, (nfds_t)nfds, timeout_ms) >= 0 || errno == EINTR;
}

/* Wait (one poll interval at most) for conn to be readable: 1 when it
 * is, 0 when not yet, -1 when wait said stop. */
static int s_wait_readable(PGconn *conn, copy_wait_fn wait, void *arg)
{
    struct pollfd fd = {.fd = PQsocket(conn), .events = POLLIN};
    if (!relay_wait(wait, arg, &fd, 1, MAPPER_PROGRESS_EVERY_MS)) return -1;
    return fd.revents != 0;
}

copy_status_t relay_read_more(PGconn *conn, proto_side_t side,
                              copy_wait_fn wait, void *arg, pgutil_error_t *err)
{
    int readable = s_wait_readable(conn, wait, arg);
    if (readable < 0) return COPY_ABORTED;
    if (readable && !PQconsumeInput(conn)) {
        pgutil_capture(conn, NULL, side, err);
        return COPY_FAILED;
    }
    return COPY_OK;
}

bool relay_nap_due(int64_t chunk_bytes, int queued)
{
    return chunk_bytes >= RELAY_NAP_AFTER && queued == 0;
}

/* Bytes waiting in the socket's receive queue, or -1 when unknown. */
static int s_queued(PGconn *conn)
{
    int n = 0;
    return ioctl(PQsocket(conn), FIONREAD, &n) == 0 ? n : -1;
}

/* The source is readable: read what it sent; past RELAY_NAP_AFTER bytes
 * of its COPY, with nothing more waiting, nap (counted in *naps) and
 * read again (see RELAY_NAP_US). False with *err when the connection
 * failed. */
static bool s_read_source(PGconn *src, int64_t chunk_bytes, int64_t *naps,
                          pgutil_error_t *err)
{
    if (!PQconsumeInput(src)) goto fail;
    if (!relay_nap_due(chunk_bytes, s_queued(src))) return true;
    (*naps)++;
    struct timespec nap = {0, RELAY_NAP_US * 1000L};
    nanosleep(&nap, NULL);
    if (PQconsumeInput(src)) return true;
fail:
    pgutil_capture(src, NULL, PROTO_SIDE_SOURCE, err);
    return false;
}

copy_status_t relay_read_source(PGconn *src, int64_t bytes, int64_t *naps,
                                copy_wait_fn wait, void *arg,
                                pgutil_error_t *err)
{
    int readable = s_wait_readable(src, wait, arg);
    if (readable < 0) return COPY_ABORTED;
    return !readable || s_read_source(src, bytes, naps, err) ? COPY_OK
                                                             : COPY_FAILED;
}

/* Wait (serving job->wait) until conn has a whole result to give, so that
 * the PQgetResult after it does not block. */
copy_status_t relay_await_result(PGconn *conn, proto_side_t side,
                                 copy_wait_fn wait, void *arg,
                                 pgutil_error_t *err)
{
    while (PQisBusy(conn)) {
        copy_status_t st = relay_read_more(conn, side, wait, arg, err);
        if (st != COPY_OK) return st;
    }
    return COPY_OK;
}

/* Send what libpq holds for the target: *busy_out tells that some is still
 * queued (wait for POLLOUT). On readable, the target's input is consumed
 * first (libpq's rule for a non-blocking flush). */
static bool s_flush(PGconn *dst, bool readable, bool *busy_out,
                    pgutil_error_t *err)
{
    int rc = readable && !PQconsumeInput(dst) ? -1 : PQflush(dst);
    *busy_out = rc == 1;
    if (rc >= 0) return true;
    pgutil_capture(dst, NULL, PROTO_SIDE_TARGET, err);
    return false;
}

/* Hand what buffer holds to the target's libpq (only when libpq has sent
 * all it held before, so that its own buffer never grows past one batch)
 * and start sending it. */
static bool s_feed(PGconn *dst, char *buf, size_t *used, bool *busy,
                   pgutil_error_t *err)
{
    if (*busy || *used == 0) return true;
    if (!s_put(dst, buf, *used, err)) return false;
    *used = 0;
    return s_flush(dst, false, busy, err);
}

/* The relay's state: rows read from the source wait in buf (at most
 * RELAY_BYTES) until the target's libpq has sent the previous batch;
 * the part of a row that does not fit waits in pending. */
typedef struct {
    char *buf;         /* rows read, not yet handed to the target */
    size_t used;       /* bytes in buf */
    char *pending;     /* a row not all in buf yet (libpq's), or NULL */
    size_t pending_n;  /* its bytes */
    size_t pending_at; /* how many of them are in buf already */
    bool src_done;     /* the source's COPY ended */
    bool src_dry;      /* the source has no whole row buffered */
    bool dst_busy;     /* the target's libpq still holds unsent data */
} s_relay_t;

/* Move what fits of the pending row into the buffer, and free the row
 * once all of it is there. A row longer than the buffer goes in slices
 * (COPY data may be cut anywhere), so the target's libpq never holds more
 * than one buffer: a 2 MB row handed to it whole grew its buffer to 4 MB,
 * and the worker past its 32 MB. */
static void s_relay_pending(s_relay_t *r)
{
    if (!r->pending) return;
    size_t n = r->pending_n - r->pending_at;
    if (n > RELAY_BYTES - r->used) n = RELAY_BYTES - r->used;
    memcpy(r->buf + r->used, r->pending + r->pending_at, n);
    r->used += n;
    r->pending_at += n;
    if (r->pending_at < r->pending_n) return;
    PQfreemem(r->pending);
    r->pending = NULL;
    r->pending_at = 0;
}

/* Read every whole row the source sent while there is room (rows and
 * bytes counted; *next_tick_ms zeroed after the mid-copy fault point).
 * False with *err when the source failed. */
static bool s_relay_read(copy_conns_t *c, s_relay_t *r, const copy_job_t *job,
                         int64_t *rows, int64_t *bytes, double *next_tick_ms,
                         pgutil_error_t *err)
{
    while (!r->src_done && !r->pending) {
        char *row = NULL;
        int n = PQgetCopyData(c->src, &row, 1);
        r->src_dry = n == 0;
        if (n == 0) break;
        if (n == -1) {
            r->src_done = true;
            break;
        }
        if (n < 0) {
            pgutil_capture(c->src, NULL, PROTO_SIDE_SOURCE, err);
            return false;
        }
        (*rows)++;
        *bytes += n;
        r->pending = row;
        r->pending_n = (size_t)n;
        s_relay_pending(r);
        if (*rows == 2 && getenv(MAPPER_ENV_FAULT)) {
            /* after a hold, hear the coordinator at once (without a
             * fault, no extra message for every chunk) */
            fault_at("mid-copy", job->chunk_id, job->attempt);
            *next_tick_ms = 0;
        }
    }
    return true;
}

/* The source's COPY has ended: check its result, end the target's COPY,
 * send what libpq still holds (waiting through wait) and check the
 * target's result. */
static copy_status_t s_relay_end(copy_conns_t *c, copy_wait_fn wait, void *arg,
                                 pgutil_error_t *err)
{
    copy_status_t st =
        relay_await_result(c->src, PROTO_SIDE_SOURCE, wait, arg, err);
    if (st != COPY_OK) return st;
    if (!relay_result(c->src, PGRES_COMMAND_OK, PROTO_SIDE_SOURCE, err))
        return COPY_FAILED;
    if (PQputCopyEnd(c->dst, NULL) != 1) {
        pgutil_capture(c->dst, NULL, PROTO_SIDE_TARGET, err);
        return COPY_FAILED;
    }
    for (bool busy = true, readable = false; busy;) {
        if (!s_flush(c->dst, readable, &busy, err)) return COPY_FAILED;
        if (!busy) break;
        struct pollfd fd = {PQsocket(c->dst), POLLIN | POLLOUT, 0};
        if (!relay_wait(wait, arg, &fd, 1, MAPPER_PROGRESS_EVERY_MS))
            return COPY_ABORTED;
        readable = fd.revents & (POLLIN | POLLERR);
    }
    st = relay_await_result(c->dst, PROTO_SIDE_TARGET, wait, arg, err);
    if (st != COPY_OK) return st;
    return relay_result(c->dst, PGRES_COMMAND_OK, PROTO_SIDE_TARGET, err)
               ? COPY_OK
               : COPY_FAILED;
}

/* Stream rows until the source's COPY ends, both sessions non-blocking:
 * the source is read while the target is fed, and every wait goes through
 * job->wait (the worker's heartbeats, its coordinator, its signals).
 * Binary COPY sends one CopyData message per row, the file header riding
 * on the first and a trailer message after the last (header and trailer
 * share one message when there is no row): rows = messages - 1. */
copy_status_t relay_stream(copy_conns_t *c, copy_tick_fn tick, void *arg,
                           const copy_job_t *job, bool binary,
                           int64_t *rows_out, int64_t *bytes_out,
                           pgutil_error_t *err)
{
    s_relay_t r = {.buf = malloc(RELAY_BYTES)};
    if (!r.buf) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return COPY_FAILED;
    }
    if (PQsetnonblocking(c->src, 1) || PQsetnonblocking(c->dst, 1)) {
        pgutil_capture(c->src, NULL, PROTO_SIDE_SOURCE, err);
        free(r.buf);
        return COPY_FAILED;
    }
    int64_t rows = 0, bytes = 0, naps = 0;
    int64_t next_tick_rows = MAPPER_PROGRESS_EVERY_ROWS;
    double next_tick_ms = s_now_ms() + MAPPER_PROGRESS_EVERY_MS;
    copy_status_t st = COPY_FAILED;
    for (;;) {
        if (!s_relay_read(c, &r, job, &rows, &bytes, &next_tick_ms, err))
            goto out;
        if (!s_feed(c->dst, r.buf, &r.used, &r.dst_busy, err)) goto out;
        s_relay_pending(&r);
        if (!s_feed(c->dst, r.buf, &r.used, &r.dst_busy, err)) goto out;
        if (r.src_done && !r.pending && r.used == 0 && !r.dst_busy) break;
        if (rows >= next_tick_rows || s_now_ms() >= next_tick_ms) {
            if (!tick(arg, rows, bytes)) {
                st = COPY_ABORTED;
                goto out;
            }
            next_tick_rows = rows + MAPPER_PROGRESS_EVERY_ROWS;
            next_tick_ms = s_now_ms() + MAPPER_PROGRESS_EVERY_MS;
        }
        /* Wait for the source when it has nothing whole and there is room
         * for more; for the target while libpq holds unsent data. */
        struct pollfd fds[2];
        int nfds = 0, at_src = -1, at_dst = -1;
        bool want_src = !r.src_done && !r.pending && r.src_dry;
        if (want_src) {
            at_src = nfds;
            fds[nfds++] = (struct pollfd){PQsocket(c->src), POLLIN, 0};
        }
        if (r.dst_busy) {
            at_dst = nfds;
            fds[nfds++] =
                (struct pollfd){PQsocket(c->dst), POLLIN | POLLOUT, 0};
        }
        if (nfds == 0) continue; /* rows to move, nothing to wait for */
        if (!relay_wait(job->wait, arg, fds, nfds, MAPPER_PROGRESS_EVERY_MS)) {
            st = COPY_ABORTED;
            goto out;
        }
        if (at_src >= 0 && fds[at_src].revents) {
            if (!s_read_source(c->src, bytes, &naps, err)) goto out;
            r.src_dry = false;
        }
        if (at_dst >= 0 && fds[at_dst].revents &&
            !s_flush(c->dst, fds[at_dst].revents & (POLLIN | POLLERR),
                     &r.dst_busy, err))
            goto out;
    }
    if ((st = s_relay_end(c, job->wait, arg, err)) != COPY_OK) goto out;
    *rows_out = binary && rows > 0 ? rows - 1 : rows;
    *bytes_out = bytes;
    log_debug("chunk %" PRId64 " attempt %d: %" PRId64
              " bytes relayed, %" PRId64 " naps reading the source",
              job->chunk_id, job->attempt, bytes, naps);
    st = COPY_OK;
out:
    PQfreemem(r.pending);
    free(r.buf);
    /* Back to blocking for the ledger and COMMIT. That fails only with
     * data unsent (a chunk cut short: its sessions are closed anyway). */
    bool src_ok = !PQsetnonblocking(c->src, 0);
    bool dst_ok = !PQsetnonblocking(c->dst, 0);
    if ((!src_ok || !dst_ok) && st == COPY_OK) {
        pgutil_capture(src_ok ? c->dst : c->src, NULL,
                       src_ok ? PROTO_SIDE_TARGET : PROTO_SIDE_SOURCE, err);
        st = COPY_FAILED;
    }
    return st;
}
