/* worker/copy.c - stream one chunk from source to target (copy.h). */
#include "copy.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "defaults.h"
#include "fault.h"
#include "growbuf.h"
#include "isolate.h"
#include "log.h"
#include "relay.h"
#include "upsert.h"

/* Rows are gathered into one CopyData message of about this size: fewer
 * messages and system calls than one message per row. */
#define COPY_BATCH_BYTES (64 * 1024)
/* The target's COPY statement is built in a buffer this big, doubled. */
#define COPY_SQL_FIRST_BYTES 256
/* Stream mode writes from memory in pieces this big, ticking between. */
#define COPY_MEMORY_BATCH_BYTES (1024 * 1024)
/* No timeouts on the data path; server-side keepalives so that a worker
 * whose host vanished does not hold its locks for the kernel's two hours
 * (ignored on Unix sockets). */
#define COPY_SESSION_SQL                                                       \
    "SET statement_timeout = 0; SET lock_timeout = 0; "                        \
    "SET idle_in_transaction_session_timeout = 0; "                            \
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "          \
    "SET tcp_keepalives_count = 3"

/* The ledger: lock the chunk's row and read its state; mark it done. */
#define COPY_LEDGER_CHECK                                                      \
    "SELECT state = 'done', coalesce(rows, 0), rejected FROM %s.chunks "       \
    "WHERE job_id = $1 AND chunk_id = $2 FOR UPDATE"
#define COPY_LEDGER_LOCK_WAIT "5s"
#define COPY_LEDGER_DONE                                                       \
    "UPDATE %s.chunks SET state = 'done', rows = $3, attempts = $4, "          \
    "rejected = $5, last_error = NULL, updated_at = now() WHERE job_id = $1 "  \
    "AND chunk_id = $2"

void copy_conns_close(copy_conns_t *conns)
{
    PQfinish(conns->src);
    PQfinish(conns->dst);
    conns->src = conns->dst = NULL;
}

static bool s_open(PGconn **conn, const char *conninfo, proto_side_t side,
                   pgutil_error_t *err)
{
    if (*conn && PQstatus(*conn) == CONNECTION_OK &&
        PQtransactionStatus(*conn) == PQTRANS_IDLE)
        return true;
    PQfinish(*conn);
    *conn = pgutil_connect(conninfo, side, "mapper-worker", err);
    if (!*conn) return false;
    if (!pgutil_exec(*conn, COPY_SESSION_SQL, side, err)) {
        PQfinish(*conn);
        *conn = NULL;
        return false;
    }
    return true;
}

/* Run a ledger statement on the target: the check (job_id, chunk_id), or
 * with mark_done the update (job_id, chunk_id, rows, attempt, rejected).
 * Returns its result (caller clears) or NULL with *err filled. */
static PGresult *s_ledger(copy_conns_t *c, const copy_job_t *job,
                          bool mark_done, int64_t rows, int64_t rejected,
                          void *arg, pgutil_error_t *err)
{
    const char *tmpl = mark_done ? COPY_LEDGER_DONE : COPY_LEDGER_CHECK;
    ExecStatusType want = mark_done ? PGRES_COMMAND_OK : PGRES_TUPLES_OK;
    char *qs = pgutil_quote_ident(c->dst, job->state_schema);
    size_t n = strlen(tmpl) + (qs ? strlen(qs) : 0) + 1;
    char *sql = qs ? malloc(n) : NULL;
    if (!sql) {
        free(qs);
        snprintf(err->message, sizeof err->message, "out of memory");
        return NULL;
    }
    snprintf(sql, n, mark_done ? COPY_LEDGER_DONE : COPY_LEDGER_CHECK, qs);
    free(qs);
    char id[24], r[24], a[16], rej[24];
    snprintf(id, sizeof id, "%" PRId64, job->chunk_id);
    snprintf(r, sizeof r, "%" PRId64, rows);
    snprintf(a, sizeof a, "%d", job->attempt);
    snprintf(rej, sizeof rej, "%" PRId64, rejected);
    const char *params[] = {job->job_id, id, r, a, rej};
    /* Sent, then waited for through job->wait: a lock wait here (a stale
     * attempt holds the row) goes on hearing the coordinator and sending
     * heartbeats, so it never costs this worker its lease. */
    int sent = PQsendQueryParams(c->dst, sql, mark_done ? 5 : 2, NULL, params,
                                 NULL, NULL, 0);
    free(sql);
    if (!sent || relay_await_result(c->dst, PROTO_SIDE_TARGET, job->wait, arg,
                                    err) != COPY_OK) {
        if (!sent) {
            pgutil_capture(c->dst, NULL, PROTO_SIDE_TARGET, err);
        } else if (!err->message[0]) { /* a stop: retried elsewhere */
            memcpy(err->sqlstate, MAPPER_SQLSTATE_SHUTDOWN,
                   sizeof err->sqlstate);
            snprintf(err->message, sizeof err->message,
                     "asked to stop while waiting for the ledger");
        }
        return NULL;
    }
    PGresult *res = PQgetResult(c->dst);
    for (PGresult *more; (more = PQgetResult(c->dst));)
        PQclear(more);
    if (PQresultStatus(res) == want) return res;
    pgutil_capture(c->dst, res, PROTO_SIDE_TARGET, err);
    PQclear(res);
    return NULL;
}

/* In the target transaction: lock the chunk's ledger row and tell whether
 * an earlier attempt already committed it (with how many rows, and rows
 * rejected). */
static bool s_ledger_check(copy_conns_t *c, const copy_job_t *job, void *arg,
                           bool *done_out, int64_t *rows_out,
                           int64_t *rejected_out, pgutil_error_t *err)
{
    /* Another attempt of this chunk (a stale worker) may hold the row:
     * wait a little, then fail with 55P03, which is retried. */
    if (!pgutil_exec(c->dst,
                     "SET LOCAL lock_timeout = '" COPY_LEDGER_LOCK_WAIT "'",
                     PROTO_SIDE_TARGET, err))
        return false;
    PGresult *res = s_ledger(c, job, false, 0, 0, arg, err);
    if (!res) return false;
    if (!pgutil_exec(c->dst, "SET LOCAL lock_timeout = 0", PROTO_SIDE_TARGET,
                     err)) {
        PQclear(res);
        return false;
    }
    bool ok = PQntuples(res) == 1;
    if (ok) {
        *done_out = PQgetvalue(res, 0, 0)[0] == 't';
        *rows_out = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        *rejected_out = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    } else {
        err->side = PROTO_SIDE_TARGET;
        snprintf(err->message, sizeof err->message,
                 "the ledger has no row for job %s chunk %" PRId64, job->job_id,
                 job->chunk_id);
    }
    PQclear(res);
    return ok;
}

bool copy_open_source(copy_conns_t *c, pgutil_error_t *err)
{
    return s_open(&c->src, c->source_conninfo, PROTO_SIDE_SOURCE, err);
}

copy_status_t copy_source_start(copy_conns_t *c, const char *snapshot,
                                const char *sql, copy_wait_fn wait, void *arg,
                                bool *binary_out, pgutil_error_t *err)
{
    if (!s_open(&c->src, c->source_conninfo, PROTO_SIDE_SOURCE, err))
        return COPY_FAILED;
    char *lit = PQescapeLiteral(c->src, snapshot, strlen(snapshot));
    if (!lit) {
        pgutil_capture(c->src, NULL, PROTO_SIDE_SOURCE, err);
        return COPY_FAILED;
    }
    size_t n = strlen(lit) + 128;
    char *begin = malloc(n);
    if (begin)
        snprintf(begin, n,
                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                 "SET TRANSACTION SNAPSHOT %s",
                 lit);
    PQfreemem(lit);
    if (!begin) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return COPY_FAILED;
    }
    bool ok = pgutil_exec(c->src, begin, PROTO_SIDE_SOURCE, err);
    free(begin);
    if (!ok) return COPY_FAILED;
    if (!PQsendQueryParams(c->src, sql, 0, NULL, NULL, NULL, NULL, 0)) {
        pgutil_capture(c->src, NULL, PROTO_SIDE_SOURCE, err);
        return COPY_FAILED;
    }
    copy_status_t st =
        relay_await_result(c->src, PROTO_SIDE_SOURCE, wait, arg, err);
    if (st != COPY_OK) return st;
    PGresult *res = PQgetResult(c->src);
    ok = PQresultStatus(res) == PGRES_COPY_OUT;
    if (!ok) pgutil_capture(c->src, res, PROTO_SIDE_SOURCE, err);
    *binary_out = ok && PQbinaryTuples(res);
    PQclear(res);
    return ok ? COPY_OK : COPY_FAILED;
}

/* Append n bytes at p to the buffer *buf (len used, cap allocated). */
static bool s_cat(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (!growbuf_reserve(buf, cap, *len + n, COPY_SQL_FIRST_BYTES))
        return false;
    memcpy(*buf + *len, p, n);
    *len += n;
    return true;
}

/* The target's statement, built here from the job's names, each quoted by
 * libpq: COPY "schema"."table" ("a", "b", ...) FROM STDIN, with the binary
 * option when binary. Nothing else the coordinator sends reaches the
 * target. malloc'd, or NULL with *err set. */
static char *s_target_sql(PGconn *dst, const copy_job_t *job, bool binary,
                          pgutil_error_t *err)
{
    char *qs = pgutil_quote_ident(dst, job->target_schema);
    char *qt = pgutil_quote_ident(dst, job->target_table);
    char *sql = NULL;
    size_t len = 0, cap = 0;
    bool ok = qs && qt;
    const char *parts[] = {"COPY ", qs, ".", qt, " ("};
    for (size_t i = 0; ok && i < sizeof parts / sizeof *parts; i++)
        ok = s_cat(&sql, &len, &cap, parts[i], strlen(parts[i]));
    for (size_t at = 0; ok && at < job->columns_len;) {
        const char *name = job->columns + at;
        char *q = pgutil_quote_ident(dst, name);
        ok = q && (at == 0 || s_cat(&sql, &len, &cap, ", ", 2)) &&
             s_cat(&sql, &len, &cap, q, strlen(q));
        free(q);
        at += strlen(name) + 1;
    }
    const char *tail =
        binary ? ") FROM STDIN" MAPPER_COPY_BINARY_SUFFIX : ") FROM STDIN";
    ok = ok && s_cat(&sql, &len, &cap, tail, strlen(tail) + 1);
    free(qs);
    free(qt);
    if (ok) return sql;
    free(sql);
    pgutil_capture(dst, NULL, PROTO_SIDE_TARGET, err);
    if (!err->message[0])
        snprintf(err->message, sizeof err->message, "out of memory");
    return NULL;
}

/* Target: start COPY FROM STDIN (the transaction is already open). */
static copy_status_t s_target_start(copy_conns_t *c, const copy_job_t *job,
                                    void *arg, pgutil_error_t *err)
{
    char *sql = s_target_sql(c->dst, job, job->binary, err);
    if (!sql) return COPY_FAILED;
    int sent = PQsendQueryParams(c->dst, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    if (!sent) {
        pgutil_capture(c->dst, NULL, PROTO_SIDE_TARGET, err);
        return COPY_FAILED;
    }
    /* The target may wait for a lock on its table before it answers. */
    copy_status_t st =
        relay_await_result(c->dst, PROTO_SIDE_TARGET, job->wait, arg, err);
    if (st != COPY_OK) return st;
    PGresult *res = PQgetResult(c->dst);
    bool ok = PQresultStatus(res) == PGRES_COPY_IN;
    if (!ok) pgutil_capture(c->dst, res, PROTO_SIDE_TARGET, err);
    PQclear(res);
    return ok ? COPY_OK : COPY_FAILED;
}

/* Whether a COPY statement is binary: it ends with the binary option. */
static bool s_is_binary(const char *sql)
{
    size_t n = strlen(sql), k = strlen(MAPPER_COPY_BINARY_SUFFIX);
    return n >= k && !strcmp(sql + n - k, MAPPER_COPY_BINARY_SUFFIX);
}

static bool s_put(PGconn *dst, const char *buf, size_t len, pgutil_error_t *err)
{
    if (len == 0 || PQputCopyData(dst, buf, (int)len) == 1) return true;
    pgutil_capture(dst, NULL, PROTO_SIDE_TARGET, err);
    return false;
}

/* Stream mode: write the chunk's rows held in memory, in batches, with
 * the binary header and trailer around them when the COPY is binary. */
static copy_status_t s_write_memory(copy_conns_t *c, copy_tick_fn tick,
                                    void *arg, const copy_job_t *job,
                                    pgutil_error_t *err)
{
    bool binary = job->binary;
    if (binary &&
        !s_put(c->dst, COPY_BINARY_HEADER, COPY_BINARY_HEADER_LEN, err))
        return COPY_FAILED;
    for (size_t at = 0; at < job->data_len;) {
        size_t n = job->data_len - at;
        if (n > COPY_MEMORY_BATCH_BYTES) n = COPY_MEMORY_BATCH_BYTES;
        if (!s_put(c->dst, job->data + at, n, err)) return COPY_FAILED;
        if (at == 0) fault_at("mid-copy", job->chunk_id, job->attempt);
        at += n;
        if (at < job->data_len) {
            int64_t rows = (int64_t)((double)job->data_rows * (double)at /
                                     (double)job->data_len);
            if (!tick(arg, rows, (int64_t)at)) return COPY_ABORTED;
        }
    }
    if (binary && !s_put(c->dst, COPY_BINARY_TRAILER, 2, err))
        return COPY_FAILED;
    if (PQputCopyEnd(c->dst, NULL) != 1) {
        pgutil_capture(c->dst, NULL, PROTO_SIDE_TARGET, err);
        return COPY_FAILED;
    }
    if (!relay_result(c->dst, PGRES_COMMAND_OK, PROTO_SIDE_TARGET, err))
        return COPY_FAILED;
    return COPY_OK;
}

/* A chunk's rows held in memory for isolation: COPY text lines back to
 * back, and where each starts (n + 1 offsets). */
typedef struct {
    char *text;  /* the rows */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    size_t *off; /* row i is text[off[i] .. off[i + 1]) */
    size_t n;    /* rows */
    size_t ncap; /* offsets allocated */
} s_held_t;

static void s_held_free(s_held_t *h)
{
    free(h->text);
    free(h->off);
    memset(h, 0, sizeof *h);
}

/* Append one row (the next offset is its end). */
static bool s_held_add(s_held_t *h, const char *row, size_t n)
{
    if (h->n + 2 > h->ncap) {
        size_t cap = h->ncap ? h->ncap * 2 : 1024;
        size_t *off = realloc(h->off, cap * sizeof *off);
        if (!off) return false;
        h->off = off;
        h->ncap = cap;
    }
    if (!growbuf_reserve(&h->text, &h->cap, h->len + n, COPY_BATCH_BYTES))
        return false;
    memcpy(h->text + h->len, row, n);
    h->off[h->n] = h->len;
    h->len += n;
    h->off[++h->n] = h->len;
    return true;
}

/* sql without MAPPER_COPY_BINARY_SUFFIX at its end (malloc'd), or NULL. */
static char *s_text_sql(const char *sql)
{
    size_t n = strlen(sql);
    return strndup(sql, s_is_binary(sql) ? n - strlen(MAPPER_COPY_BINARY_SUFFIX)
                                         : n);
}

copy_status_t copy_each_row(PGconn *src, copy_row_fn fn, void *arg,
                            copy_wait_fn wait, void *wait_arg,
                            pgutil_error_t *err)
{
    for (;;) {
        char *row = NULL;
        int n = PQgetCopyData(src, &row, 1);
        if (n == -1) break;
        if (n == 0) {
            copy_status_t st =
                relay_read_more(src, PROTO_SIDE_SOURCE, wait, wait_arg, err);
            if (st != COPY_OK) return st;
            continue;
        }
        if (n < 0) {
            pgutil_capture(src, NULL, PROTO_SIDE_SOURCE, err);
            return COPY_FAILED;
        }
        bool ok = fn(arg, row, (size_t)n, err);
        PQfreemem(row);
        if (!ok) return COPY_FAILED;
    }
    copy_status_t st =
        relay_await_result(src, PROTO_SIDE_SOURCE, wait, wait_arg, err);
    if (st != COPY_OK) return st;
    return relay_result(src, PGRES_COMMAND_OK, PROTO_SIDE_SOURCE, err)
               ? COPY_OK
               : COPY_FAILED;
}

/* copy_row_fn: keep one row for isolation. */
static bool s_held_row(void *arg, const char *row, size_t n,
                       pgutil_error_t *err)
{
    s_held_t *h = arg;
    if (s_held_add(h, row, n)) return true;
    snprintf(err->message, sizeof err->message,
             "out of memory holding %zu rows for isolation", h->n);
    return false;
}

/* Stream mode: the chunk's rows are in memory already, as text COPY rows
 * (the coordinator reads a stream as text when bad rows are set aside):
 * each ends at its newline. */
static bool s_held_split(s_held_t *h, const copy_job_t *job,
                         pgutil_error_t *err)
{
    if (job->binary) {
        snprintf(err->message, sizeof err->message,
                 "cannot set rows of a binary stream chunk aside");
        return false;
    }
    for (size_t at = 0; at < job->data_len;) {
        const char *nl = memchr(job->data + at, '\n', job->data_len - at);
        size_t n =
            nl ? (size_t)(nl - (job->data + at)) + 1 : job->data_len - at;
        if (!s_held_row(h, job->data + at, n, err)) return false;
        at += n;
    }
    return true;
}

/* copy_tick_fn as an isolate_tick_fn. */
typedef struct {
    copy_tick_fn tick;
    void *arg;
} s_ticker_t;

static bool s_isolate_tick(void *arg, int64_t rows_loaded)
{
    s_ticker_t *t = arg;
    return t->tick(t->arg, rows_loaded, 0);
}

/* Hand the rejected rows to job->on_reject, in order. */
static bool s_report_rejects(const copy_job_t *job, void *arg,
                             const s_held_t *h, const isolate_rejects_t *rej,
                             pgutil_error_t *err)
{
    for (size_t i = 0; i < rej->n; i++) {
        const isolate_reject_t *r = &rej->rows[i];
        size_t len = h->off[r->index + 1] - h->off[r->index];
        if (len > PROTO_MAX_ROW) {
            err->side = PROTO_SIDE_NONE;
            memcpy(err->sqlstate, r->sqlstate, sizeof err->sqlstate);
            snprintf(err->message, sizeof err->message,
                     "rejected row %zu is %zu bytes, more than the %d a reject "
                     "can carry (%s)",
                     r->index + 1, len, PROTO_MAX_ROW, r->message);
            return false;
        }
    }
    for (size_t i = 0; i < rej->n; i++) {
        const isolate_reject_t *r = &rej->rows[i];
        if (!job->on_reject(arg, (int64_t)r->index, r->sqlstate, r->message,
                            h->text + h->off[r->index],
                            h->off[r->index + 1] - h->off[r->index])) {
            err->side = PROTO_SIDE_NONE;
            snprintf(err->message, sizeof err->message,
                     "could not report rejected row %zu to the coordinator",
                     r->index + 1);
            return false;
        }
    }
    return true;
}

/* Upsert: create the staging table in the open transaction, and make *to
 * job with its rows going there; otherwise *to is job. */
static bool s_stage(PGconn *dst, const copy_job_t *job, void *arg,
                    copy_job_t *to, pgutil_error_t *err)
{
    *to = *job;
    if (!upsert_is_on(job)) return true;
    to->target_schema = UPSERT_STAGE_SCHEMA;
    to->target_table = UPSERT_STAGE_TABLE;
    return upsert_stage(dst, job, arg, err);
}

/* After the target refused the chunk's COPY for a row's data: start over
 * in a new target transaction (the ledger row locked again), read the
 * chunk as text into memory, load all but the bad rows and report those.
 * Leaves the transaction open for the ledger update and COMMIT. */
static copy_status_t s_isolate(copy_conns_t *c, const copy_job_t *job,
                               copy_tick_fn tick, void *arg, int64_t *rows_out,
                               int64_t *bytes_out, int64_t *rejected_out,
                               pgutil_error_t *err)
{
    log_info("chunk %" PRId64 " attempt %d: target refused a row (%s %s): "
             "isolating the bad rows",
             job->chunk_id, job->attempt, err->sqlstate, err->message);
    if (!job->data) {
        PQfinish(c->src); /* its transaction ends; the snapshot is imported
                             anew */
        c->src = NULL;
    }
    bool done = false, ledger = job->job_id[0] != '\0', aborted = false;
    if (!pgutil_exec(c->dst, "ROLLBACK", PROTO_SIDE_TARGET, err) ||
        (!job->data &&
         !s_open(&c->src, c->source_conninfo, PROTO_SIDE_SOURCE, err)) ||
        !pgutil_exec(c->dst, "BEGIN", PROTO_SIDE_TARGET, err) ||
        (ledger &&
         !s_ledger_check(c, job, arg, &done, rows_out, rejected_out, err)))
        return COPY_FAILED;
    if (done) return COPY_ALREADY;
    copy_job_t to;
    if (!s_stage(c->dst, job, arg, &to, err)) return COPY_FAILED;
    char *source_sql = job->data ? NULL : s_text_sql(job->source_sql);
    char *target_sql = s_target_sql(c->dst, &to, false, err);
    s_held_t held = {0};
    isolate_rejects_t rej = {0};
    s_ticker_t ticker = {tick, arg};
    copy_status_t st = COPY_FAILED;
    bool binary = false;
    if ((!job->data && !source_sql) || !target_sql) {
        snprintf(err->message, sizeof err->message, "out of memory");
        goto out;
    }
    if (job->data ? !s_held_split(&held, job, err)
                  : (copy_source_start(c, job->snapshot, source_sql, job->wait,
                                       arg, &binary, err) != COPY_OK ||
                     copy_each_row(c->src, s_held_row, &held, job->wait, arg,
                                   err) != COPY_OK))
        goto out;
    if (!isolate_rows(c->dst, target_sql,
                      &(isolate_rows_t){held.text, held.off, held.n},
                      s_isolate_tick, &ticker, &rej, &aborted, err)) {
        st = aborted ? COPY_ABORTED : COPY_FAILED;
        goto out;
    }
    if (!s_report_rejects(job, arg, &held, &rej, err) ||
        (ledger &&
         !isolate_record(c->dst, job->state_schema, job->job_id, job->chunk_id,
                         &(isolate_rows_t){held.text, held.off, held.n}, &rej,
                         err)))
        goto out;
    int64_t bytes = (int64_t)held.len;
    for (size_t i = 0; i < rej.n; i++)
        bytes -= (int64_t)(held.off[rej.rows[i].index + 1] -
                           held.off[rej.rows[i].index]);
    log_info("chunk %" PRId64 " attempt %d: %zu of %zu rows set aside",
             job->chunk_id, job->attempt, rej.n, held.n);
    *rows_out = (int64_t)(held.n - rej.n);
    *bytes_out = bytes;
    *rejected_out = (int64_t)rej.n;
    st = COPY_OK;
out:
    isolate_rejects_clear(&rej);
    s_held_free(&held);
    free(source_sql);
    free(target_sql);
    return st;
}

copy_status_t copy_chunk(copy_conns_t *conns, const copy_job_t *job,
                         copy_tick_fn tick, void *arg, int64_t *rows_out,
                         int64_t *bytes_out, int64_t *rejected_out,
                         pgutil_error_t *err)
{
    memset(err, 0, sizeof *err);
    *rows_out = *bytes_out = *rejected_out = 0;
    copy_status_t st = COPY_FAILED;
    bool binary = false, done = false, ledger = job->job_id[0] != '\0';
    int64_t rows = 0, bytes = 0, rejected = 0, inserted = 0, updated = 0;
    pgutil_error_t ignored;
    copy_job_t to; /* where the rows go: the target, or a staging table */
    if ((!job->data && !s_open(&conns->src, conns->source_conninfo,
                               PROTO_SIDE_SOURCE, err)) ||
        !s_open(&conns->dst, conns->target_conninfo, PROTO_SIDE_TARGET, err) ||
        !pgutil_exec(conns->dst, "BEGIN", PROTO_SIDE_TARGET, err) ||
        (ledger &&
         !s_ledger_check(conns, job, arg, &done, &rows, &rejected, err)))
        goto fail;
    if (done) goto already;
    if (!s_stage(conns->dst, job, arg, &to, err)) goto fail;
    if (job->data) {
        st = s_target_start(conns, &to, arg, err);
        if (st != COPY_OK) goto fail;
        st = s_write_memory(conns, tick, arg, &to, err);
        rows = job->data_rows;
        bytes = (int64_t)job->data_len;
    } else {
        st = copy_source_start(conns, job->snapshot, job->source_sql, job->wait,
                               arg, &binary, err);
        if (st == COPY_OK) st = s_target_start(conns, &to, arg, err);
        if (st != COPY_OK) goto fail;
        st = relay_stream(conns, tick, arg, &to, binary, &rows, &bytes, err);
    }
    if (st == COPY_FAILED && job->reject_rows && isolate_is_bad_data(err))
        st = s_isolate(conns, job, tick, arg, &rows, &bytes, &rejected, err);
    if (st == COPY_ALREADY) goto already;
    if (st != COPY_OK) goto fail;
    st = COPY_FAILED;
    if (upsert_is_on(job) &&
        !upsert_merge(conns->dst, job, arg, &inserted, &updated, err))
        goto fail;
    if (ledger) {
        PGresult *res = s_ledger(conns, job, true, rows, rejected, arg, err);
        if (!res) goto fail;
        PQclear(res);
    }
    fault_at("before-commit", job->chunk_id, job->attempt);
    if (!pgutil_exec(conns->dst, "COMMIT", PROTO_SIDE_TARGET, err)) goto fail;
    fault_at("after-commit", job->chunk_id, job->attempt);
    /* The data is committed; the read-only source transaction just ends. */
    if (!job->data &&
        !pgutil_exec(conns->src, "COMMIT", PROTO_SIDE_SOURCE, &ignored)) {
        PQfinish(conns->src);
        conns->src = NULL;
    }
    *rows_out = rows;
    *bytes_out = bytes;
    *rejected_out = rejected;
    return COPY_OK;
already:
    if (!pgutil_exec(conns->dst, "ROLLBACK", PROTO_SIDE_TARGET, &ignored))
        copy_conns_close(conns);
    *rows_out = rows;
    *rejected_out = rejected;
    return COPY_ALREADY;
fail:
    /* Closing the sessions rolls both transactions back, and also ends a
     * COPY still streaming on the other side. */
    copy_conns_close(conns);
    return st;
}
