/* coordinator/dispatch_stream.c - stream mode in the dispatcher: one
 * worker reads the query once; its rows arrive as data frames, are cut
 * into chunks held until they commit, and go to writers with their WRITE
 * (dispatch_loop.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "dispatch_loop.h"
#include "ledger.h"
#include "log.h"
#include "progress.h"

/* More stream chunks may still come. */
bool dispatch_stream_open(const dispatch_loop_t *l)
{
    return l->stream && !l->read_done && !l->read_failed;
}

/* A stream chunk could not be recorded: the job fails loudly rather than
 * end without the rows (why: for the result). */
static void s_lost(dispatch_loop_t *l, const char *why)
{
    log_error("stream mode: %s: the rest of the query is not copied", why);
    if (!l->out->error[0])
        snprintf(l->out->error, sizeof l->out->error,
                 "%s: the rest of the query is not copied", why);
}

/* Tell the reader how far it may read. */
static void s_send_credit(dispatch_loop_t *l)
{
    if (l->reader < 0) return;
    dispatch_worker_t *w = &l->workers[l->reader];
    proto_msg_t m = {.kind = PROTO_CREDIT,
                     .attempt = l->read_attempts,
                     .limit = inflight_limit(&l->held)};
    dispatch_send(l, w, &m); /* a failure is logged; the lease tells */
}

/* A stream chunk's rows are no longer needed: free them, raise the
 * reader's credit. */
void dispatch_stream_release(void *ctx, size_t ci)
{
    dispatch_loop_t *l = ctx;
    inflight_release(&l->held, (int64_t)ci);
    s_send_credit(l);
}

/* Stream mode: make w the reader; it reads from the first row. */
void dispatch_stream_start_reader(dispatch_loop_t *l, dispatch_worker_t *w)
{
    l->reader = (int)(w - l->workers);
    if (++l->read_attempts == 1) l->read_first_start = clock_now();
    inflight_restart(&l->held);
    proto_msg_t m = {.kind = PROTO_READ,
                     .attempt = l->read_attempts,
                     .rows = l->cfg->chunk_rows,
                     .limit = inflight_limit(&l->held),
                     .source_sql = strdup(l->cfg->read_sql)};
    snprintf(m.snapshot, sizeof m.snapshot, "%s", l->cfg->snapshot);
    if (!m.source_sql || !dispatch_send(l, w, &m))
        log_warn("could not hand the read to %s", w->id); /* it will tell */
    log_debug("reader: %s reads the query (attempt %d)", w->id,
              l->read_attempts);
    proto_msg_clear(&m);
}

bool dispatch_stream_send_rows(dispatch_loop_t *l, dispatch_worker_t *w,
                               size_t ci, int attempt)
{
    w->sending = true;
    w->sent = 0;
    w->send_attempt = attempt;
    w->sent_last = clock_now();
    (void)ci; /* w->chunk is ci */
    return dispatch_stream_flush(l, w);
}

bool dispatch_stream_flush(dispatch_loop_t *l, dispatch_worker_t *w)
{
    if (!w->sending) return true;
    size_t ci = (size_t)w->chunk;
    const inflight_chunk_t *h = w->chunk >= 0 && (int64_t)ci < l->held.known
                                    ? &l->held.chunks[ci]
                                    : NULL;
    if (!h || !h->data) {
        w->sending = false;
        log_error("chunk %" PRId64 ": its rows are gone", w->chunk);
        return false;
    }
    while (w->sending) {
        size_t n = h->len - w->sent;
        if (n > PROTO_MAX_DATA) n = PROTO_MAX_DATA;
        bool last = w->sent + n == h->len;
        proto_msg_t d = {.kind = PROTO_DATA,
                         .chunk_id = (int64_t)ci,
                         .attempt = w->send_attempt,
                         .rows = last ? h->rows : 0,
                         .last = last,
                         .data = h->data + w->sent,
                         .data_len = n};
        if (!proto_send_if_there(l->cfg->router, w->id, strlen(w->id), &d)) {
            double stuck = clock_now() - w->sent_last;
            if (errno == EAGAIN && stuck <= l->cfg->worker_timeout)
                return true; /* its queue is full: the rest waits */
            w->sending = false;
            log_warn("chunk %zu attempt %d: cannot send its rows to %s (%s)",
                     ci, w->send_attempt, w->id,
                     errno == EAGAIN ? "its queue stayed full"
                                     : zmq_strerror(errno));
            return false;
        }
        w->sent_last = clock_now();
        if (last)
            w->sending = false;
        else
            w->sent += n;
    }
    return true;
}

/* Reading the query failed (e: why): read again from the first row after
 * a delay, or (final, or out of attempts) stop reading: the chunks not
 * read are one failed chunk carrying the error. */
static void s_read_failed(dispatch_loop_t *l, chunks_cause_t cause,
                          const pgutil_error_t *e, bool final)
{
    l->reader = -1;
    inflight_restart(&l->held);
    const char *class_name = "other";
    retry_decision d = {0};
    if (!final)
        d = chunks_decide(&l->chunks, e, cause, l->read_attempts,
                          l->read_first_start, &class_name);
    const char *side = pgutil_side_name(e->side);
    if (d.retry) {
        l->read_not_before = clock_now() + d.delay;
        log_warn("reading the query failed (attempt %d: %s%s%s, %s: %s); "
                 "reading it again from the first row in %.2f s (chunks read "
                 "already: %" PRId64 ", compared, not kept twice)",
                 l->read_attempts, side, e->sqlstate[0] ? " " : "", e->sqlstate,
                 class_name, e->message, d.delay, l->held.known);
        return;
    }
    l->read_failed = true;
    log_error("reading the query failed after %d attempt%s (%s%s%s): %s; "
              "rows after the first %" PRId64 " are not copied",
              l->read_attempts, l->read_attempts == 1 ? "" : "s", side,
              e->sqlstate[0] ? " " : "", e->sqlstate, e->message, l->rows_cut);
    progress_set_total_chunks(l->cfg->progress, (int64_t)l->chunks.n + 1);
    chunks_chunk_t *c = chunks_add(&l->chunks, 0);
    if (!c) { /* logged: the job must not look whole */
        s_lost(l, "out of memory for the chunk that carries the read's "
                  "error");
        return;
    }
    c->attempts = l->read_attempts;
    chunks_fail(&l->chunks, l->chunks.n - 1, e->side, class_name, e->message);
    *chunks_error(&l->chunks, l->chunks.n - 1) = *e;
}

/* The reader's process or lease is gone. */
void dispatch_stream_reader_lost(dispatch_loop_t *l, chunks_cause_t cause,
                                 const char *why)
{
    pgutil_error_t e = {.side = PROTO_SIDE_NONE};
    snprintf(e.message, sizeof e.message, "%s", why);
    s_read_failed(l, cause, &e, false);
}

/* A new stream chunk is complete: record it and make it runnable. */
static void s_stream_chunk(dispatch_loop_t *l, int64_t k)
{
    if ((size_t)k != l->chunks.n) return;
    int64_t rows = l->held.chunks[k].rows;
    if (!chunks_add(&l->chunks, rows)) { /* logged */
        l->read_failed = true;
        l->reader = -1;
        s_lost(l, "out of memory for a chunk read");
        return;
    }
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
        log_error("chunk %" PRId64 ": %s", k, err);
        chunks_fail(&l->chunks, (size_t)k, PROTO_SIDE_TARGET, NULL, err);
        return;
    }
    log_debug("chunk %" PRId64 " read: %" PRId64 " rows", k, rows);
}

/* A message from the reader. */
bool dispatch_stream_on_reader(dispatch_loop_t *l, dispatch_worker_t *w,
                               const proto_msg_t *m)
{
    if (m->attempt != l->read_attempts ||
        (m->kind != PROTO_DATA && m->kind != PROTO_END &&
         m->kind != PROTO_FAILED)) {
        log_debug("%s from the reader ignored", proto_kind_name(m->kind));
        return false;
    }
    pgutil_error_t e = {.side = PROTO_SIDE_NONE};
    if (m->kind == PROTO_DATA) {
        int64_t k = 0;
        inflight_event_t ev = inflight_on_data(&l->held, m, &k);
        switch (ev) {
        case INFLIGHT_MORE:
        case INFLIGHT_SAME:
            return false;
        case INFLIGHT_COMPLETE:
            s_stream_chunk(l, k);
            return false;
        case INFLIGHT_DIFFERS:
            snprintf(e.message, sizeof e.message,
                     "the query returned different rows for chunk %" PRId64
                     " when it was read again: its order is not stable "
                     "(use --split-by, or an ORDER BY on a unique key)",
                     k);
            s_read_failed(l, CHUNKS_REPORTED, &e, true);
            return false;
        case INFLIGHT_BAD:
            snprintf(e.message, sizeof e.message,
                     "reader %s sent chunk %" PRId64 " out of order", w->id, k);
            s_read_failed(l, CHUNKS_REPORTED, &e, false);
            return false;
        case INFLIGHT_OVER_CREDIT:
        case INFLIGHT_OVER_SIZE:
            snprintf(e.message, sizeof e.message,
                     "reader %s sent chunk %" PRId64 " %s", w->id, k,
                     ev == INFLIGHT_OVER_CREDIT
                         ? "beyond its credit"
                         : "with more rows or bytes than a chunk holds");
            log_error("%s: the read fails and %s is sent away", e.message,
                      w->id);
            s_read_failed(l, CHUNKS_DISBELIEVED, &e, false);
            dispatch_send_away(l, w, e.message);
            return false;
        }
    }
    if (m->kind == PROTO_END && m->chunk_id != l->held.known) {
        snprintf(e.message, sizeof e.message,
                 "reader %s ended after %" PRId64 " chunks, %" PRId64
                 " arrived",
                 w->id, m->chunk_id, l->held.known);
        s_read_failed(l, CHUNKS_REPORTED, &e, false);
    } else if (m->kind == PROTO_END) {
        l->read_done = true;
        l->reader = -1;
        progress_set_total_chunks(l->cfg->progress, (int64_t)l->chunks.n);
        log_info("read the whole query: %" PRId64 " rows in %zu chunks",
                 m->rows, l->chunks.n);
    } else {
        e.side = m->side;
        memcpy(e.sqlstate, m->sqlstate, sizeof e.sqlstate);
        e.conn_bad = m->conn_bad;
        snprintf(e.message, sizeof e.message, "%s",
                 m->message ? m->message : "");
        s_read_failed(l, CHUNKS_REPORTED, &e, false);
    }
    return true; /* w is free for other work */
}
