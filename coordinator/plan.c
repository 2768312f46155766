/* coordinator/plan.c - chunk planning (see plan.h). */
#include "plan.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgutil.h"

static plan_chunk_t *s_add(plan_t *p, plan_kind_t kind)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        plan_chunk_t *c = realloc(p->chunks, cap * sizeof *c);
        if (!c) {
            log_error("plan: out of memory at %zu chunks", p->n);
            return NULL;
        }
        p->chunks = c;
        p->cap = cap;
    }
    plan_chunk_t *c = &p->chunks[p->n];
    memset(c, 0, sizeof *c);
    c->id = (int64_t)p->n;
    c->kind = kind;
    p->n++;
    return c;
}

bool plan_keyset_walk(plan_step_fn step, void *ctx, int64_t chunk_size,
                      int64_t null_rows, plan_t *out)
{
    memset(out, 0, sizeof *out);
    bool found = false;
    int64_t key = 0, moved = 0;
    if (!step(ctx, 0, &found, &key, &moved)) goto fail;
    plan_chunk_t *cur = NULL;
    while (found) {
        /* key is the first row of a new chunk, unless a duplicate key
         * would make an empty range: then the rows join the current one. */
        if (!cur || key > cur->lo) {
            if (cur) {
                cur->has_hi = true;
                cur->hi = key;
            }
            cur = s_add(out, PLAN_KEY_RANGE);
            if (!cur) goto fail;
            cur->has_lo = out->n > 1;
            cur->lo = key;
        }
        int64_t skip = chunk_size - 1;
        if (!step(ctx, skip, &found, &key, &moved)) goto fail;
        cur->est_rows += 1 + moved;
    }
    if (!cur) {
        cur = s_add(out, PLAN_KEY_RANGE); /* no keys: one open range */
        if (!cur) goto fail;
    }
    if (null_rows > 0) {
        plan_chunk_t *n = s_add(out, PLAN_KEY_NULL);
        if (!n) goto fail;
        n->est_rows = null_rows;
    }
    for (size_t i = 0; i < out->n; i++)
        out->est_rows += out->chunks[i].est_rows;
    return true;
fail:
    plan_free(out);
    return false;
}

bool plan_ctid(int64_t pages, double rows_per_page, int64_t chunk_size,
               plan_t *out)
{
    memset(out, 0, sizeof *out);
    if (rows_per_page < 1) rows_per_page = 1;
    int64_t per = (int64_t)((double)chunk_size / rows_per_page);
    if (per < 1) per = 1;
    int64_t page = 0;
    do {
        plan_chunk_t *c = s_add(out, PLAN_CTID);
        if (!c) goto fail;
        c->has_lo = true;
        c->lo = page;
        page += per;
        c->has_hi = page < pages;
        c->hi = page;
        int64_t span = (c->has_hi ? page : pages) - c->lo;
        c->est_rows = (int64_t)((double)(span > 0 ? span : 0) * rows_per_page);
        out->est_rows += c->est_rows;
    } while (page < pages);
    return true;
fail:
    plan_free(out);
    return false;
}

bool plan_all(int64_t est_rows, plan_t *out)
{
    memset(out, 0, sizeof *out);
    plan_chunk_t *c = s_add(out, PLAN_ALL);
    if (!c) return false;
    c->est_rows = est_rows;
    out->est_rows = est_rows;
    return true;
}

typedef struct {
    PGconn *conn; /* inside the snapshot transaction */
} s_pg_walk_t;

/* MOVE FORWARD skip; FETCH 1, sent as one query so both results come back
 * on one round trip. MOVE FORWARD 0 would re-read the current row, so a
 * zero skip sends only the FETCH. */
static bool s_pg_step(void *ctx, int64_t skip, bool *found, int64_t *key_out,
                      int64_t *moved_out)
{
    s_pg_walk_t *w = ctx;
    char sql[160];
    if (skip > 0)
        snprintf(sql, sizeof sql,
                 "MOVE FORWARD %" PRId64
                 " IN mapper_plan; FETCH 1 FROM mapper_plan",
                 skip);
    else
        snprintf(sql, sizeof sql, "FETCH 1 FROM mapper_plan");
    *found = false;
    *moved_out = 0;
    if (!PQsendQuery(w->conn, sql)) {
        pgutil_error_t err;
        pgutil_capture(w->conn, NULL, PROTO_SIDE_SOURCE, &err);
        pgutil_log_error("planning", &err);
        return false;
    }
    bool ok = true;
    PGresult *res;
    while ((res = PQgetResult(w->conn))) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK && !strncmp(PQcmdStatus(res), "MOVE", 4)) {
            *moved_out = strtoll(PQcmdTuples(res), NULL, 10);
        } else if (st == PGRES_TUPLES_OK) {
            if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
                *found = true;
                *key_out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            }
        } else if (ok) {
            pgutil_error_t err;
            pgutil_capture(w->conn, res, PROTO_SIDE_SOURCE, &err);
            pgutil_log_error("planning", &err);
            ok = false;
        }
        PQclear(res);
    }
    return ok;
}

bool plan_equal_width(int64_t min, int64_t max, int64_t rows_est,
                      int64_t chunk_size, int64_t null_rows, plan_t *out)
{
    memset(out, 0, sizeof *out);
    double span = (double)max - (double)min + 1;
    double per_key = span > 0 && rows_est > 0 ? (double)rows_est / span : 1;
    int64_t lo = min;
    do {
        plan_chunk_t *c = s_add(out, PLAN_KEY_RANGE);
        if (!c) goto fail;
        c->has_lo = out->n > 1;
        c->lo = lo;
        /* Stop before overflowing: the last range is open above anyway. */
        bool last = max - lo < chunk_size;
        c->has_hi = !last;
        c->hi = last ? 0 : lo + chunk_size;
        double keys = last ? (double)max - (double)lo + 1 : (double)chunk_size;
        c->est_rows = (int64_t)(keys * per_key + 0.5);
        out->est_rows += c->est_rows;
        if (last) break;
        lo += chunk_size;
    } while (true);
    if (null_rows > 0) {
        plan_chunk_t *n = s_add(out, PLAN_KEY_NULL);
        if (!n) goto fail;
        n->est_rows = null_rows;
        out->est_rows += null_rows;
    }
    return true;
fail:
    plan_free(out);
    return false;
}

/* Run the planner's statement (printf-style) on the source. Its result
 * (rows or none; the caller clears it), or NULL, logged. */
__attribute__((format(printf, 2, 3))) static PGresult *
s_runf(PGconn *conn, const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    if (n < 0) {
        log_error("planning: out of memory");
        return NULL;
    }
    /* One statement only (the extended protocol): qfrom may hold a query. */
    PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return res;
    pgutil_error_t err;
    pgutil_capture(conn, res, PROTO_SIDE_SOURCE, &err);
    PQclear(res);
    pgutil_log_error("planning", &err);
    return NULL;
}

/* min, max and the NULL count of the key: three index probes. */
static bool s_key_stats(PGconn *conn, const char *qtable, const char *qcol,
                        bool *empty, int64_t *min, int64_t *max, int64_t *nulls)
{
    PGresult *res =
        s_runf(conn,
               "SELECT (SELECT min(%s) FROM %s), (SELECT max(%s) FROM %s), "
               "(SELECT count(*) FROM %s WHERE %s IS NULL)",
               qcol, qtable, qcol, qtable, qtable, qcol);
    if (!res) return false;
    *empty = PQgetisnull(res, 0, 0);
    *min = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    *max = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    *nulls = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    PQclear(res);
    return true;
}

/* Walk the non-NULL keys of qcol in qtable (a table or a FROM item) in
 * order with a cursor: MOVE FORWARD n; FETCH 1 per boundary. */
static bool s_cursor_walk(PGconn *conn, const char *qtable, const char *qcol,
                          int64_t chunk_size, int64_t nulls, plan_t *out)
{
    PGresult *res =
        s_runf(conn,
               "DECLARE mapper_plan NO SCROLL CURSOR FOR SELECT %s FROM %s "
               "WHERE %s IS NOT NULL ORDER BY %s",
               qcol, qtable, qcol, qcol);
    if (!res) return false;
    PQclear(res);
    pgutil_error_t err;
    s_pg_walk_t w = {conn};
    bool ok = plan_keyset_walk(s_pg_step, &w, chunk_size, nulls, out);
    if (!pgutil_exec(conn, "CLOSE mapper_plan", PROTO_SIDE_SOURCE, &err)) {
        pgutil_log_error("planning", &err);
        plan_free(out);
        ok = false;
    }
    return ok;
}

bool plan_keyset_pg(PGconn *conn, const char *qtable, const char *qcol,
                    int64_t chunk_size, double reltuples, plan_t *out,
                    bool *dense_out)
{
    memset(out, 0, sizeof *out);
    *dense_out = false;
    bool empty = true;
    int64_t min = 0, max = 0, nulls = 0;
    if (!s_key_stats(conn, qtable, qcol, &empty, &min, &max, &nulls))
        return false;
    double span = (double)max - (double)min + 1;
    if (!empty && reltuples >= 1 && span <= PLAN_DENSE_SLACK * reltuples) {
        *dense_out = true;
        return plan_equal_width(min, max, (int64_t)reltuples, chunk_size, nulls,
                                out);
    }
    return s_cursor_walk(conn, qtable, qcol, chunk_size, nulls, out);
}

bool plan_query_pg(PGconn *conn, const char *qfrom, const char *qcol,
                   int64_t chunk_size, plan_t *out, bool *dense_out)
{
    memset(out, 0, sizeof *out);
    *dense_out = false;
    PGresult *res = s_runf(conn,
                           "SELECT min(%s), max(%s), count(%s), count(*) - "
                           "count(%s) FROM %s",
                           qcol, qcol, qcol, qcol, qfrom);
    if (!res) return false;
    bool empty = PQgetisnull(res, 0, 0);
    int64_t min = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    int64_t max = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    int64_t keys = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    int64_t nulls = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
    double span = (double)max - (double)min + 1;
    if (!empty && span <= PLAN_DENSE_SLACK * (double)keys) {
        /* Keys per range for chunk_size rows: fewer when keys repeat. */
        int64_t width = (int64_t)((double)chunk_size * span / (double)keys);
        *dense_out = true;
        return plan_equal_width(min, max, keys, width > 0 ? width : 1, nulls,
                                out);
    }
    return s_cursor_walk(conn, qfrom, qcol, chunk_size, nulls, out);
}

bool plan_chunk_where(const plan_chunk_t *c, const char *qcol, char *buf,
                      size_t n)
{
    int w = 0;
    switch (c->kind) {
    case PLAN_ALL:
        w = snprintf(buf, n, "%s", "");
        break;
    case PLAN_KEY_NULL:
        w = snprintf(buf, n, " WHERE %s IS NULL", qcol);
        break;
    case PLAN_KEY_RANGE:
        if (c->has_lo && c->has_hi)
            w = snprintf(buf, n, " WHERE %s >= %" PRId64 " AND %s < %" PRId64,
                         qcol, c->lo, qcol, c->hi);
        else if (c->has_lo)
            w = snprintf(buf, n, " WHERE %s >= %" PRId64, qcol, c->lo);
        else if (c->has_hi)
            w = snprintf(buf, n, " WHERE %s < %" PRId64, qcol, c->hi);
        else
            w = snprintf(buf, n, " WHERE %s IS NOT NULL", qcol);
        break;
    case PLAN_CTID:
        if (c->has_hi)
            w = snprintf(buf, n,
                         " WHERE ctid >= '(%" PRId64 ",0)'::tid AND ctid < "
                         "'(%" PRId64 ",0)'::tid",
                         c->lo, c->hi);
        else
            w = snprintf(buf, n, " WHERE ctid >= '(%" PRId64 ",0)'::tid",
                         c->lo);
        break;
    case PLAN_STREAM: /* its rows are cut from one read, not selected */
        log_error("plan: chunk %" PRId64 " is a stream chunk", c->id);
        return false;
    }
    if (w < 0 || (size_t)w >= n) {
        log_error("plan: WHERE clause of chunk %" PRId64 " too long", c->id);
        return false;
    }
    return true;
}

bool plan_append(plan_t *plan, const plan_chunk_t *c)
{
    plan_chunk_t *slot = s_add(plan, c->kind);
    if (!slot) return false;
    *slot = *c;
    plan->est_rows += c->est_rows;
    return true;
}

void plan_free(plan_t *plan)
{
    if (!plan) return;
    free(plan->chunks);
    memset(plan, 0, sizeof *plan);
}
