/* worker/isolate.c - set aside the rows the target refuses (isolate.h). */
#include "isolate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The savepoint each try runs under, and the most bytes handed to one
 * PQputCopyData call. */
#define ISOLATE_SAVEPOINT "mapper_isolate"
#define ISOLATE_PUT_BYTES (1024 * 1024)
/* What a failed COPY's context says about its row: "COPY t, line N". */
#define ISOLATE_CONTEXT_COPY "COPY "
#define ISOLATE_CONTEXT_LINE ", line "
/* The ledger's record of one rejected row (schema quoted in %s). */
#define ISOLATE_RECORD_SQL                                                     \
    "INSERT INTO %s.rejects (job_id, chunk_id, row_index, sqlstate, "          \
    "message, row) VALUES ($1, $2, $3, $4, $5, $6)"

/* A range of rows still to load: [first, last). */
typedef struct {
    size_t first;
    size_t last;
} s_range_t;

/* Ranges waiting, the next one on top. */
typedef struct {
    s_range_t *v; /* entries (malloc'd) */
    size_t n;     /* in use */
    size_t cap;   /* allocated */
} s_stack_t;

static bool s_oom(pgutil_error_t *err)
{
    memset(err, 0, sizeof *err);
    snprintf(err->message, sizeof err->message,
             "out of memory isolating bad rows");
    return false;
}

/* Push [first, last) unless it is empty. */
static bool s_push(s_stack_t *s, size_t first, size_t last, pgutil_error_t *err)
{
    if (first >= last) return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        s_range_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) return s_oom(err);
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (s_range_t){first, last};
    return true;
}

static bool s_reject(isolate_rejects_t *out, size_t index,
                     const pgutil_error_t *why, pgutil_error_t *err)
{
    isolate_reject_t *v = realloc(out->rows, (out->n + 1) * sizeof *v);
    if (!v) return s_oom(err);
    out->rows = v;
    isolate_reject_t *r = &out->rows[out->n];
    memset(r, 0, sizeof *r);
    r->index = index;
    memcpy(r->sqlstate, why->sqlstate, sizeof r->sqlstate);
    r->message = strdup(why->message);
    if (!r->message) return s_oom(err);
    out->n++;
    return true;
}

bool isolate_run(isolate_load_fn load, void *arg, size_t nrows,
                 isolate_rejects_t *out, pgutil_error_t *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    s_stack_t todo = {0};
    bool ok = s_push(&todo, 0, nrows, err);
    /* Ranges are pushed right part first, so rows are settled left to
     * right and rejects come out in index order. */
    while (ok && todo.n > 0) {
        s_range_t r = todo.v[--todo.n];
        size_t n = r.last - r.first;
        int64_t line = 0;
        pgutil_error_t why;
        memset(&why, 0, sizeof why);
        isolate_try_t t = load(arg, r.first, r.last, &line, &why);
        if (t == ISOLATE_LOADED) continue;
        if (t != ISOLATE_BAD) {
            *err = why;
            ok = false;
        } else if (n == 1) {
            ok = s_reject(out, r.first, &why, err);
        } else if (line >= 1 && (uint64_t)line <= n) {
            /* The named row is tried alone too: a misreported line then
             * costs a try, never a good row. */
            size_t bad = r.first + (size_t)line - 1;
            ok = s_push(&todo, bad + 1, r.last, err) &&
                 s_push(&todo, bad, bad + 1, err) &&
                 s_push(&todo, r.first, bad, err);
        } else {
            size_t mid = r.first + n / 2;
            ok = s_push(&todo, mid, r.last, err) &&
                 s_push(&todo, r.first, mid, err);
        }
    }
    free(todo.v);
    if (!ok) isolate_rejects_clear(out);
    return ok;
}

bool isolate_is_bad_data(const pgutil_error_t *err)
{
    return !err->conn_bad && err->side == PROTO_SIDE_TARGET &&
           strlen(err->sqlstate) == PROTO_SQLSTATE_LEN &&
           (!strncmp(err->sqlstate, "22", 2) ||
            !strncmp(err->sqlstate, "23", 2));
}

void isolate_rejects_clear(isolate_rejects_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        free(r->rows[i].message);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

/* ---- the target side ---- */

typedef struct {
    PGconn *dst;                /* target session, in a transaction */
    const char *sql;            /* text COPY ... FROM STDIN */
    const isolate_rows_t *rows; /* the chunk's rows */
    isolate_tick_fn tick;       /* after each try, or NULL */
    void *tick_arg;             /* its argument */
    int64_t loaded;             /* rows loaded so far */
    bool aborted;               /* tick asked to stop */
} s_target_t;

/* N of the first "COPY ..., line N" line of a failed COPY's context, or 0
 * (none, e.g. the server's messages are translated). */
static int64_t s_context_line(const PGresult *res)
{
    const char *p = PQresultErrorField(res, PG_DIAG_CONTEXT);
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *at =
            memmem(p, len, ISOLATE_CONTEXT_LINE, strlen(ISOLATE_CONTEXT_LINE));
        if (!strncmp(p, ISOLATE_CONTEXT_COPY, strlen(ISOLATE_CONTEXT_COPY)) &&
            at) {
            char *end;
            long long v = strtoll(at + strlen(ISOLATE_CONTEXT_LINE), &end, 10);
            return end > at + strlen(ISOLATE_CONTEXT_LINE) && v > 0 ? v : 0;
        }
        p = eol ? eol + 1 : p + len;
    }
    return 0;
}

/* Send rows [first, last) into the COPY started on dst and end it. */
static bool s_send_rows(s_target_t *t, size_t first, size_t last)
{
    const char *at = t->rows->text + t->rows->off[first];
    size_t left = t->rows->off[last] - t->rows->off[first];
    while (left > 0) {
        size_t n = left < ISOLATE_PUT_BYTES ? left : ISOLATE_PUT_BYTES;
        if (PQputCopyData(t->dst, at, (int)n) != 1) return false;
        at += n;
        left -= n;
    }
    return PQputCopyEnd(t->dst, NULL) == 1;
}

/* One try: the range under a savepoint, kept or rolled back. */
static isolate_try_t s_target_try(s_target_t *t, size_t first, size_t last,
                                  int64_t *line_out, pgutil_error_t *err)
{
    if (!pgutil_exec(t->dst, "SAVEPOINT " ISOLATE_SAVEPOINT, PROTO_SIDE_TARGET,
                     err))
        return ISOLATE_ERROR;
    PGresult *res = PQexec(t->dst, t->sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        pgutil_capture(t->dst, res, PROTO_SIDE_TARGET, err);
        PQclear(res);
        return ISOLATE_ERROR;
    }
    PQclear(res);
    bool sent = s_send_rows(t, first, last);
    res = PQgetResult(t->dst);
    ExecStatusType st = PQresultStatus(res);
    isolate_try_t outcome = ISOLATE_LOADED;
    if (st != PGRES_COMMAND_OK || !sent) {
        pgutil_capture(t->dst, res, PROTO_SIDE_TARGET, err);
        outcome = isolate_is_bad_data(err) ? ISOLATE_BAD : ISOLATE_ERROR;
        if (outcome == ISOLATE_BAD) *line_out = s_context_line(res);
    }
    PQclear(res);
    /* A COPY still open (a send failed early) is not waited for. */
    while (st != PGRES_COPY_IN && (res = PQgetResult(t->dst))) {
        st = PQresultStatus(res);
        PQclear(res);
    }
    if (outcome == ISOLATE_ERROR) return outcome;
    pgutil_error_t e;
    const char *end = outcome == ISOLATE_LOADED
                          ? "RELEASE SAVEPOINT " ISOLATE_SAVEPOINT
                          : "ROLLBACK TO SAVEPOINT " ISOLATE_SAVEPOINT;
    if (!pgutil_exec(t->dst, end, PROTO_SIDE_TARGET, &e)) {
        *err = e;
        return ISOLATE_ERROR;
    }
    return outcome;
}

static isolate_try_t s_target_load(void *arg, size_t first, size_t last,
                                   int64_t *line_out, pgutil_error_t *err)
{
    s_target_t *t = arg;
    isolate_try_t outcome = s_target_try(t, first, last, line_out, err);
    if (outcome == ISOLATE_LOADED) t->loaded += (int64_t)(last - first);
    if (outcome != ISOLATE_ERROR && t->tick &&
        !t->tick(t->tick_arg, t->loaded)) {
        t->aborted = true;
        memset(err, 0, sizeof *err);
        snprintf(err->message, sizeof err->message,
                 "asked to stop while isolating bad rows");
        return ISOLATE_ERROR;
    }
    return outcome;
}

bool isolate_rows(PGconn *dst, const char *copy_sql, const isolate_rows_t *rows,
                  isolate_tick_fn tick, void *tick_arg, isolate_rejects_t *out,
                  bool *aborted_out, pgutil_error_t *err)
{
    s_target_t t = {.dst = dst,
                    .sql = copy_sql,
                    .rows = rows,
                    .tick = tick,
                    .tick_arg = tick_arg};
    bool ok = isolate_run(s_target_load, &t, rows->n, out, err);
    *aborted_out = t.aborted;
    return ok;
}

bool isolate_record(PGconn *dst, const char *state_schema, const char *job_id,
                    int64_t chunk_id, const isolate_rows_t *rows,
                    const isolate_rejects_t *rej, pgutil_error_t *err)
{
    char *qs = rej->n ? pgutil_quote_ident(dst, state_schema) : NULL;
    char *sql = NULL;
    if (rej->n && (!qs || asprintf(&sql, ISOLATE_RECORD_SQL, qs) < 0)) {
        free(qs);
        return s_oom(err);
    }
    free(qs);
    bool ok = true;
    for (size_t i = 0; i < rej->n && ok; i++) {
        const isolate_reject_t *r = &rej->rows[i];
        char id[24], index[24];
        snprintf(id, sizeof id, "%" PRId64, chunk_id);
        snprintf(index, sizeof index, "%zu", r->index);
        char *row = strndup(rows->text + rows->off[r->index],
                            rows->off[r->index + 1] - rows->off[r->index]);
        if (!row) {
            ok = s_oom(err);
            break;
        }
        const char *params[] = {job_id,      id,         index,
                                r->sqlstate, r->message, row};
        PGresult *res = PQexecParams(dst, sql, 6, NULL, params, NULL, NULL, 0);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok) pgutil_capture(dst, res, PROTO_SIDE_TARGET, err);
        PQclear(res);
        free(row);
    }
    free(sql);
    return ok;
}
