/* worker/upsert.c - staging table and merge of upsert mode (upsert.h). */
#include "upsert.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "growbuf.h"
#include "relay.h"

/* Statements are built in a buffer this big, doubled. */
#define UPSERT_SQL_FIRST_BYTES 512

/* A statement being built; failed is sticky (out of memory, a name libpq
 * could not quote), checked once at the end. */
typedef struct {
    PGconn *conn; /* quotes names */
    char *sql;    /* the text, NUL-terminated */
    size_t len;   /* bytes used, without the NUL */
    size_t cap;   /* bytes allocated */
    bool failed;  /* something could not be added */
} s_sql_t;

static void s_add(s_sql_t *b, const char *text)
{
    size_t n = strlen(text);
    if (b->failed || !growbuf_reserve(&b->sql, &b->cap, b->len + n + 1,
                                      UPSERT_SQL_FIRST_BYTES)) {
        b->failed = true;
        return;
    }
    memcpy(b->sql + b->len, text, n + 1);
    b->len += n;
}

/* prefix, then the name quoted by libpq. */
static void s_name(s_sql_t *b, const char *prefix, const char *name)
{
    char *q = b->failed ? NULL : pgutil_quote_ident(b->conn, name);
    if (!q) {
        b->failed = true;
        return;
    }
    s_add(b, prefix);
    s_add(b, q);
    free(q);
}

/* Whether name is one of the NUL-ended names at list (len bytes). */
static bool s_in(const char *list, size_t len, const char *name)
{
    for (size_t at = 0; at < len; at += strlen(list + at) + 1)
        if (!strcmp(list + at, name)) return true;
    return false;
}

/* For each column (only those in the key, or only those not in it, or
 * all): before ", " between them, then each qualified by prefix. */
typedef enum { S_ALL, S_KEY, S_NOT_KEY } s_which_t;

static void s_list(s_sql_t *b, const copy_job_t *job, s_which_t which,
                   const char *prefix)
{
    bool first = true;
    for (size_t at = 0; at < job->columns_len;) {
        const char *name = job->columns + at;
        at += strlen(name) + 1;
        bool key = s_in(job->key, job->key_len, name);
        if ((which == S_KEY && !key) || (which == S_NOT_KEY && key)) continue;
        s_add(b, first ? "" : ", ");
        s_name(b, prefix, name);
        first = false;
    }
}

/* Whether a column is copied that is not part of the key. */
static bool s_has_non_key(const copy_job_t *job)
{
    for (size_t at = 0; at < job->columns_len;
         at += strlen(job->columns + at) + 1)
        if (!s_in(job->key, job->key_len, job->columns + at)) return true;
    return false;
}

bool upsert_is_on(const copy_job_t *job)
{
    return job->key_len > 0;
}

/* Send b's statement (params as given), wait through job->wait, and return
 * its result if its status is want (caller clears), else NULL with *err. */
static PGresult *s_run(s_sql_t *b, const copy_job_t *job, void *arg,
                       int nparams, const char *const *params,
                       ExecStatusType want, pgutil_error_t *err)
{
    PGresult *res = NULL;
    if (b->failed) {
        pgutil_capture(b->conn, NULL, PROTO_SIDE_TARGET, err);
        if (!err->message[0])
            snprintf(err->message, sizeof err->message, "out of memory");
    } else if (!PQsendQueryParams(b->conn, b->sql, nparams, NULL, params, NULL,
                                  NULL, 0)) {
        pgutil_capture(b->conn, NULL, PROTO_SIDE_TARGET, err);
    } else if (relay_await_result(b->conn, PROTO_SIDE_TARGET, job->wait, arg,
                                  err) == COPY_OK) {
        res = PQgetResult(b->conn);
        for (PGresult *more; (more = PQgetResult(b->conn));)
            PQclear(more);
        if (PQresultStatus(res) != want) {
            pgutil_capture(b->conn, res, PROTO_SIDE_TARGET, err);
            PQclear(res);
            res = NULL;
        }
    } else if (!err->message[0]) { /* a stop: retried elsewhere */
        memcpy(err->sqlstate, MAPPER_SQLSTATE_SHUTDOWN, sizeof err->sqlstate);
        snprintf(err->message, sizeof err->message,
                 "asked to stop while merging the chunk");
    }
    free(b->sql);
    b->sql = NULL;
    return res;
}

bool upsert_stage(PGconn *dst, const copy_job_t *job, void *arg,
                  pgutil_error_t *err)
{
    s_sql_t b = {.conn = dst};
    s_add(&b, "CREATE TEMP TABLE " UPSERT_STAGE_TABLE " (LIKE ");
    s_name(&b, "", job->target_schema);
    s_name(&b, ".", job->target_table);
    s_add(&b, " INCLUDING DEFAULTS INCLUDING CONSTRAINTS) ON COMMIT DROP");
    PGresult *res = s_run(&b, job, arg, 0, NULL, PGRES_COMMAND_OK, err);
    PQclear(res);
    return res != NULL;
}

/* The merge: INSERT INTO target AS t (cols) SELECT cols FROM stage
 * ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c, ... WHERE
 * ROW(t.c, ...) IS DISTINCT FROM ROW(EXCLUDED.c, ...) (DO NOTHING when
 * every column is in the key), counting inserted and updated rows; with
 * a ledger, those counts are written to the chunk's row ($1 job, $2
 * chunk) by the same statement. */
static void s_merge_sql(s_sql_t *b, const copy_job_t *job, const char *qledger)
{
    s_add(b, "WITH m AS (INSERT INTO ");
    s_name(b, "", job->target_schema);
    s_name(b, ".", job->target_table);
    s_add(b, " AS t (");
    s_list(b, job, S_ALL, "");
    s_add(b, ") SELECT ");
    s_list(b, job, S_ALL, "");
    s_add(b,
          " FROM " UPSERT_STAGE_SCHEMA "." UPSERT_STAGE_TABLE " ON CONFLICT (");
    s_list(b, job, S_KEY, "");
    if (s_has_non_key(job)) {
        s_add(b, ") DO UPDATE SET (");
        s_list(b, job, S_NOT_KEY, "");
        s_add(b, ") = ROW(");
        s_list(b, job, S_NOT_KEY, "EXCLUDED.");
        s_add(b, ") WHERE ROW(");
        s_list(b, job, S_NOT_KEY, "t.");
        s_add(b, ") IS DISTINCT FROM ROW(");
        s_list(b, job, S_NOT_KEY, "EXCLUDED.");
        s_add(b, ")");
    } else {
        s_add(b, ") DO NOTHING");
    }
    s_add(b, " RETURNING (t.xmax = 0) AS ins), c AS (SELECT count(*) FILTER "
             "(WHERE ins) AS i, count(*) FILTER (WHERE NOT ins) AS u FROM m) ");
    if (qledger) {
        s_add(b, "UPDATE ");
        s_add(b, qledger);
        s_add(b, ".chunks SET inserted = c.i, updated = c.u FROM c WHERE "
                 "job_id = $1 AND chunk_id = $2 RETURNING c.i, c.u");
    } else {
        s_add(b, "SELECT i, u FROM c");
    }
}

bool upsert_merge(PGconn *dst, const copy_job_t *job, void *arg,
                  pgutil_error_t *err)
{
    bool ledger = job->job_id[0] != '\0';
    char *qledger = ledger ? pgutil_quote_ident(dst, job->state_schema) : NULL;
    s_sql_t b = {.conn = dst, .failed = ledger && !qledger};
    s_merge_sql(&b, job, qledger);
    free(qledger);
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, job->chunk_id);
    const char *params[] = {job->job_id, id};
    PGresult *res = s_run(&b, job, arg, ledger ? 2 : 0, ledger ? params : NULL,
                          PGRES_TUPLES_OK, err);
    if (!res) return false;
    bool ok = PQntuples(res) == 1; /* the counts went to the ledger row */
    if (!ok) {
        err->side = PROTO_SIDE_TARGET;
        snprintf(err->message, sizeof err->message,
                 "the ledger has no row for job %s chunk %" PRId64, job->job_id,
                 job->chunk_id);
    }
    PQclear(res);
    return ok;
}
