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

/* A stale attempt holding the chunk's ledger row is waited for this long. */
#define COPY_LEDGER_LOCK_WAIT "5s"

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

/* The results of a query sent on conn, awaited through wait: n of them,
 * of the statuses in want; a TUPLES_OK one is kept in *rows_out (caller
 * clears) when rows_out is given. Unless the last is a COPY, the query
 * must then be over (one round trip for several statements). */
static copy_status_t s_results(PGconn *conn, proto_side_t side,
                               const ExecStatusType *want, int n,
                               copy_wait_fn wait, void *arg,
                               PGresult **rows_out, pgutil_error_t *err)
{
    bool copy = want[n - 1] == PGRES_COPY_IN || want[n - 1] == PGRES_COPY_OUT;
    for (int i = 0; i <= n; i++) {
        if (i == n && copy) break;
        copy_status_t st = relay_await_result(conn, side, wait, arg, err);
        if (st != COPY_OK) return st;
        PGresult *res = PQgetResult(conn);
        if (i == n && !res) break;
        if (i == n || PQresultStatus(res) != want[i]) {
            pgutil_capture(conn, res, side, err);
            if (!err->message[0])
                snprintf(err->message, sizeof err->message,
                         "unexpected result %s",
                         PQresStatus(PQresultStatus(res)));
            PQclear(res);
            return COPY_FAILED;
        }
        if (want[i] == PGRES_TUPLES_OK && rows_out)
            *rows_out = res;
        else
            PQclear(res);
    }
    return COPY_OK;
}

/* The ledger's statements for job's chunk as one simple query, values as
 * literals: with mark_done the update and COMMIT; else BEGIN and the row
 * locked and read (waiting at most COPY_LEDGER_LOCK_WAIT for a stale
 * attempt that holds it: then 55P03, which is retried). malloc'd, or NULL
 * with *err set. */
static char *s_ledger_sql(PGconn *dst, const copy_job_t *job, bool mark_done,
                          int64_t rows, int64_t rejected, pgutil_error_t *err)
{
    char *qs = pgutil_quote_ident(dst, job->state_schema);
    char *id = PQescapeLiteral(dst, job->job_id, strlen(job->job_id));
    size_t n = (qs ? strlen(qs) : 0) + (id ? strlen(id) : 0) + 512;
    char *sql = qs && id ? malloc(n) : NULL;
    if (sql && mark_done)
        snprintf(sql, n,
                 "UPDATE %s.chunks SET state = 'done', rows = %" PRId64
                 ", attempts = %d, rejected = %" PRId64 ", last_error = NULL, "
                 "updated_at = now() WHERE job_id = %s AND chunk_id = %" PRId64
                 "; COMMIT",
                 qs, rows, job->attempt, rejected, id, job->chunk_id);
    else if (sql)
        snprintf(sql, n,
                 "BEGIN; SET LOCAL lock_timeout = '" COPY_LEDGER_LOCK_WAIT "'; "
                 "SELECT state = 'done', coalesce(rows, 0), rejected FROM "
                 "%s.chunks WHERE job_id = %s AND chunk_id = %" PRId64
                 " FOR UPDATE; SET LOCAL lock_timeout = 0",
                 qs, id, job->chunk_id);
    free(qs);
    PQfreemem(id);
    if (!sql) {
        err->side = PROTO_SIDE_TARGET;
        snprintf(err->message, sizeof err->message, "out of memory");
    }
    return sql;
}

/* Send sql (one or more statements) on conn; false with *err set. */
static bool s_send(PGconn *conn, const char *sql, proto_side_t side,
                   pgutil_error_t *err)
{
    if (sql && PQsendQuery(conn, sql)) return true;
    if (sql) pgutil_capture(conn, NULL, side, err);
    return false;
}

/* Open the target's transaction and, with a ledger, lock and read the
 * chunk's row, in one round trip: *done_out tells an earlier attempt
 * committed it (with *rows_out rows and *rejected_out set aside). */
static copy_status_t s_target_begin(copy_conns_t *c, const copy_job_t *job,
                                    void *arg, bool *done_out,
                                    int64_t *rows_out, int64_t *rejected_out,
                                    pgutil_error_t *err)
{
    static const ExecStatusType want[] = {PGRES_COMMAND_OK, PGRES_COMMAND_OK,
                                          PGRES_TUPLES_OK, PGRES_COMMAND_OK};
    bool ledger = job->job_id[0] != '\0';
    char *sql = ledger ? s_ledger_sql(c->dst, job, false, 0, 0, err) : NULL;
    bool sent = s_send(c->dst, ledger ? sql : "BEGIN", PROTO_SIDE_TARGET, err);
    free(sql);
    if (!sent) return COPY_FAILED;
    PGresult *res = NULL;
    copy_status_t st = s_results(c->dst, PROTO_SIDE_TARGET, want,
                                 ledger ? 4 : 1, job->wait, arg, &res, err);
    if (st != COPY_OK || !ledger) return st;
    if (PQntuples(res) == 1) {
        *done_out = PQgetvalue(res, 0, 0)[0] == 't';
        *rows_out = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        *rejected_out = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    } else {
        err->side = PROTO_SIDE_TARGET;
        snprintf(err->message, sizeof err->message,
                 "the ledger has no row for job %s chunk %" PRId64, job->job_id,
                 job->chunk_id);
        st = COPY_FAILED;
    }
    PQclear(res);
    return st;
}

bool copy_open_source(copy_conns_t *c, pgutil_error_t *err)
{
    return s_open(&c->src, c->source_conninfo, PROTO_SIDE_SOURCE, err);
}

/* Source: send BEGIN (repeatable read, read only) and the snapshot's
 * import, as one query; its results are read by s_source_copy. */
static bool s_source_begin(copy_conns_t *c, const char *snapshot,
                           pgutil_error_t *err)
{
    /* The last chunk's read-only transaction ends in the same query. */
    bool open = c->src && PQstatus(c->src) == CONNECTION_OK &&
                PQtransactionStatus(c->src) == PQTRANS_INTRANS;
    if (!open && !s_open(&c->src, c->source_conninfo, PROTO_SIDE_SOURCE, err))
        return false;
    char *lit = PQescapeLiteral(c->src, snapshot, strlen(snapshot));
    size_t n = lit ? strlen(lit) + 128 : 0;
    char *begin = lit ? malloc(n) : NULL;
    if (begin)
        snprintf(begin, n,
                 "%sBEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                 "SET TRANSACTION SNAPSHOT %s",
                 open ? "COMMIT; " : "", lit);
    PQfreemem(lit);
    if (!begin) snprintf(err->message, sizeof err->message, "out of memory");
    bool ok = s_send(c->src, begin, PROTO_SIDE_SOURCE, err);
    free(begin);
    return ok;
}

/* Source, after s_source_begin: its results, then send sql (one
 * statement: the extended protocol takes no more, so the coordinator's SQL
 * cannot leave the read-only transaction). */
static copy_status_t s_source_copy(copy_conns_t *c, const char *sql,
                                   copy_wait_fn wait, void *arg,
                                   pgutil_error_t *err)
{
    PGresult *res;
    for (;;) { /* [COMMIT,] BEGIN, SET: each must succeed */
        copy_status_t st =
            relay_await_result(c->src, PROTO_SIDE_SOURCE, wait, arg, err);
        if (st != COPY_OK) return st;
        if (!(res = PQgetResult(c->src))) break;
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok) pgutil_capture(c->src, res, PROTO_SIDE_SOURCE, err);
        PQclear(res);
        if (!ok) return COPY_FAILED;
    }
    if (PQsendQueryParams(c->src, sql, 0, NULL, NULL, NULL, NULL, 0))
        return COPY_OK;
    pgutil_capture(c->src, NULL, PROTO_SIDE_SOURCE, err);
    return COPY_FAILED;
}

/* Source, after s_source_copy: its COPY has begun. */
static copy_status_t s_source_copying(copy_conns_t *c, copy_wait_fn wait,
                                      void *arg, bool *binary_out,
                                      pgutil_error_t *err)
{
    copy_status_t st =
        relay_await_result(c->src, PROTO_SIDE_SOURCE, wait, arg, err);
    if (st != COPY_OK) return st;
    PGresult *res = PQgetResult(c->src);
    bool ok = PQresultStatus(res) == PGRES_COPY_OUT;
    if (!ok) pgutil_capture(c->src, res, PROTO_SIDE_SOURCE, err);
    *binary_out = ok && PQbinaryTuples(res);
    PQclear(res);
    return ok ? COPY_OK : COPY_FAILED;
}

copy_status_t copy_source_start(copy_conns_t *c, const char *snapshot,
                                const char *sql, copy_wait_fn wait, void *arg,
                                bool *binary_out, pgutil_error_t *err)
{
    if (!s_source_begin(c, snapshot, err)) return COPY_FAILED;
    copy_status_t st = s_source_copy(c, sql, wait, arg, err);
    return st == COPY_OK ? s_source_copying(c, wait, arg, binary_out, err) : st;
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

/* Target: send COPY FROM STDIN (the transaction is already open). */
static bool s_target_copy(copy_conns_t *c, const copy_job_t *job,
                          pgutil_error_t *err)
{
    char *sql = s_target_sql(c->dst, job, job->binary, err);
    if (!sql) return false;
    int sent = PQsendQueryParams(c->dst, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    if (!sent) pgutil_capture(c->dst, NULL, PROTO_SIDE_TARGET, err);
    return sent;
}

/* Target: start COPY FROM STDIN and await it (the target may wait for a
 * lock on its table before it answers). */
static copy_status_t s_target_start(copy_conns_t *c, const copy_job_t *job,
                                    void *arg, pgutil_error_t *err)
{
    static const ExecStatusType want[] = {PGRES_COPY_IN};
    if (!s_target_copy(c, job, err)) return COPY_FAILED;
    return s_results(c->dst, PROTO_SIDE_TARGET, want, 1, job->wait, arg, NULL,
                     err);
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
    int64_t bytes = 0, naps = 0;
    for (;;) {
        char *row = NULL;
        int n = PQgetCopyData(src, &row, 1);
        if (n == -1) break;
        if (n == 0) {
            copy_status_t st =
                relay_read_source(src, bytes, &naps, wait, wait_arg, err);
            if (st != COPY_OK) return st;
            continue;
        }
        if (n < 0) {
            pgutil_capture(src, NULL, PROTO_SIDE_SOURCE, err);
            return COPY_FAILED;
        }
        bytes += n;
        bool ok = fn(arg, row, (size_t)n, err);
        PQfreemem(row);
        if (!ok) return COPY_FAILED;
    }
    log_debug("source read: %" PRId64 " bytes, %" PRId64 " naps", bytes, naps);
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
        s_target_begin(c, job, arg, &done, rows_out, rejected_out, err) !=
            COPY_OK)
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

/* Start a chunk read from the source: the source's and the target's
 * set-up overlap, two round trips in all before the first row (BEGIN and
 * snapshot | BEGIN and ledger row; then the two COPYs). */
static copy_status_t s_start_both(copy_conns_t *c, const copy_job_t *job,
                                  void *arg, copy_job_t *to, bool *done_out,
                                  int64_t *rows_out, int64_t *rejected_out,
                                  bool *binary_out, pgutil_error_t *err)
{
    static const ExecStatusType copy_in[] = {PGRES_COPY_IN};
    if (!s_source_begin(c, job->snapshot, err) ||
        !s_open(&c->dst, c->target_conninfo, PROTO_SIDE_TARGET, err))
        return COPY_FAILED;
    copy_status_t st =
        s_target_begin(c, job, arg, done_out, rows_out, rejected_out, err);
    if (st != COPY_OK || *done_out) return st;
    if (!s_stage(c->dst, job, arg, to, err)) return COPY_FAILED;
    st = s_source_copy(c, job->source_sql, job->wait, arg, err);
    if (st != COPY_OK) return st;
    if (!s_target_copy(c, to, err)) return COPY_FAILED;
    st = s_results(c->dst, PROTO_SIDE_TARGET, copy_in, 1, job->wait, arg, NULL,
                   err);
    return st == COPY_OK ? s_source_copying(c, job->wait, arg, binary_out, err)
                         : st;
}

copy_status_t copy_chunk(copy_conns_t *conns, const copy_job_t *job,
                         copy_tick_fn tick, void *arg, int64_t *rows_out,
                         int64_t *bytes_out, int64_t *rejected_out,
                         pgutil_error_t *err)
{
    static const ExecStatusType ended[] = {PGRES_COMMAND_OK, PGRES_COMMAND_OK};
    memset(err, 0, sizeof *err);
    *rows_out = *bytes_out = *rejected_out = 0;
    copy_status_t st = COPY_FAILED;
    bool binary = false, done = false, ledger = job->job_id[0] != '\0';
    int64_t rows = 0, bytes = 0, rejected = 0;
    pgutil_error_t ignored;
    copy_job_t to = *job; /* where the rows go: the target, or staging */
    if (job->data) {
        if (!s_open(&conns->dst, conns->target_conninfo, PROTO_SIDE_TARGET,
                    err) ||
            (st = s_target_begin(conns, job, arg, &done, &rows, &rejected,
                                 err)) != COPY_OK)
            goto fail;
        if (done) goto already;
        if (!s_stage(conns->dst, job, arg, &to, err)) goto fail;
        st = s_target_start(conns, &to, arg, err);
        if (st != COPY_OK) goto fail;
        st = s_write_memory(conns, tick, arg, &to, err);
        rows = job->data_rows;
        bytes = (int64_t)job->data_len;
    } else {
        st = s_start_both(conns, job, arg, &to, &done, &rows, &rejected,
                          &binary, err);
        if (st != COPY_OK) goto fail;
        if (done) {
            PQfinish(conns->src); /* its read had not begun: just ends */
            conns->src = NULL;
            goto already;
        }
        st = relay_stream(conns, tick, arg, &to, binary, &rows, &bytes, err);
    }
    if (st == COPY_FAILED && job->reject_rows && isolate_is_bad_data(err))
        st = s_isolate(conns, job, tick, arg, &rows, &bytes, &rejected, err);
    if (st == COPY_ALREADY) goto already;
    if (st != COPY_OK) goto fail;
    st = COPY_FAILED;
    if (upsert_is_on(job) && !upsert_merge(conns->dst, job, arg, err))
        goto fail;
    fault_at("before-commit", job->chunk_id, job->attempt);
    /* The ledger row and COMMIT in one round trip. */
    char *end = ledger
                    ? s_ledger_sql(conns->dst, job, true, rows, rejected, err)
                    : NULL;
    bool sent =
        s_send(conns->dst, ledger ? end : "COMMIT", PROTO_SIDE_TARGET, err);
    free(end);
    if (!sent || s_results(conns->dst, PROTO_SIDE_TARGET, ended, ledger ? 2 : 1,
                           job->wait, arg, NULL, err) != COPY_OK)
        goto fail;
    fault_at("after-commit", job->chunk_id, job->attempt);
    /* The data is committed. The read-only source transaction ends with
     * the next chunk's BEGIN, in the same query, or with the session. */
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
