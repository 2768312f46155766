/* coordinator/ledger.c - the job ledger in the target database (ledger.h). */
#include "ledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "defaults.h"
#include "log.h"
#include "pgutil.h"
#include "reject.h"

#define LEDGER_SQL_MAX 4096
/* The most parameters a ledger statement run by s_run takes. */
#define LEDGER_MAX_PARAMS  8
#define LEDGER_ID_HASH_LEN 12
/* The advisory lock of a job is (LEDGER_LOCK_CLASS, hashtext of
 * "schema.job_id"): the class keeps it apart from other users' locks. */
#define LEDGER_LOCK_CLASS "1835098224" /* "mapp" */

static const char *const s_kind_names[] = {
    [PLAN_KEY_RANGE] = "range", [PLAN_KEY_NULL] = "null", [PLAN_CTID] = "ctid",
    [PLAN_ALL] = "all",         [PLAN_STREAM] = "stream",
};

/* Copy tmpl into buf with the quoted schema in place of every "@S". */
static void s_sql(const ledger_t *l, char *buf, size_t n, const char *tmpl)
{
    size_t j = 0, q = strlen(l->qschema);
    for (const char *p = tmpl; *p && j + 1 < n; p++) {
        if (p[0] == '@' && p[1] == 'S' && j + q + 1 < n) {
            memcpy(buf + j, l->qschema, q);
            j += q;
            p++;
        } else {
            buf[j++] = *p;
        }
    }
    buf[j] = '\0';
}

/* Ask for the job's lock without waiting: *got_out says if it is ours. */
static bool s_try_lock(ledger_t *l, bool *got_out, pgutil_error_t *e)
{
    char key[PROTO_MAX_ID * 2 + 2];
    snprintf(key, sizeof key, "%s.%s", l->schema, l->job_id);
    const char *params[] = {key};
    PGresult *res = pgutil_query(
        l->conn,
        "SELECT pg_try_advisory_lock(" LEDGER_LOCK_CLASS ", hashtext($1))", 1,
        params, PROTO_SIDE_TARGET, e);
    if (!res) return false;
    *got_out = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return true;
}

/* A session that came back takes the job's lock again. */
static void s_relock(ledger_t *l)
{
    bool got = false;
    pgutil_error_t e;
    if (l->locked && PQstatus(l->conn) == CONNECTION_OK &&
        (!s_try_lock(l, &got, &e) || !got))
        log_error("ledger: job %s: reconnected, but its lock is gone: "
                  "another coordinator may be running it",
                  l->job_id);
}

void ledger_reconnect(ledger_t *l)
{
    if (!l->conn) return;
    pgutil_probe_state_t st;
    if (l->reconnect.conn)
        st = pgutil_probe_poll(&l->reconnect);
    else if (PQstatus(l->conn) == CONNECTION_OK ||
             clock_now() < l->reconnect_at)
        return;
    else
        st = pgutil_reset_start(&l->reconnect, l->conn);
    if (st == PGUTIL_PROBE_BUSY) return;
    if (st == PGUTIL_PROBE_DOWN) {
        l->reconnect_at = clock_now() + MAPPER_LEDGER_RECONNECT_S;
        return;
    }
    log_info("ledger: job %s: the target session is back", l->job_id);
    s_relock(l);
}

/* The session, or NULL (the statement then fails at once, as on a broken
 * connection) while it is broken: reconnecting it goes on without
 * blocking (ledger_reconnect). */
static PGconn *s_conn(ledger_t *l)
{
    if (!l->reconnect.conn && PQstatus(l->conn) == CONNECTION_OK)
        return l->conn;
    ledger_reconnect(l);
    return l->reconnect.conn || PQstatus(l->conn) != CONNECTION_OK ? NULL
                                                                   : l->conn;
}

/* The session, reconnected if it broke, waiting for it: only once the
 * job's loop is over (the last writes of a job). */
static PGconn *s_conn_wait(ledger_t *l)
{
    if (!l->reconnect.conn && PQstatus(l->conn) == CONNECTION_OK)
        return l->conn;
    pgutil_probe_cancel(&l->reconnect);
    PQreset(l->conn);
    s_relock(l);
    return l->conn;
}

/* Run a statement with text parameters that returns no rows. */
static bool s_command(ledger_t *l, const char *sql, int nparams,
                      const char *const *params, pgutil_error_t *e)
{
    PGconn *conn = s_conn(l);
    PGresult *res =
        PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) pgutil_capture(conn, res, PROTO_SIDE_TARGET, e);
    PQclear(res);
    return ok;
}

/* A ledger made by an older version lacks a column: add it (only then:
 * ALTER TABLE waits for, and then blocks, every running job's chunk
 * transactions). table is "jobs" or "chunks"; ddl the column's
 * definition. */
static bool s_add_column(ledger_t *l, const char *table, const char *column,
                         const char *ddl, char *err, size_t errlen)
{
    char sql[LEDGER_SQL_MAX];
    char qtable[PROTO_MAX_ID * 2 + 16];
    snprintf(qtable, sizeof qtable, "%s.%s", l->qschema, table);
    const char *params[] = {qtable, column};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(l->conn,
                     "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                     "to_regclass($1) AND attname = $2 AND NOT attisdropped",
                     2, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read its tables", &e);
    bool has = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s",
             qtable, column, ddl);
    if (!has && !pgutil_exec(l->conn, sql, PROTO_SIDE_TARGET, &e))
        return pgutil_reason(err, errlen, "ledger: cannot add a column", &e);
    return true;
}

/* The columns each ledger table has had from its first version: a table
 * of that name without them is someone else's. */
#define LEDGER_JOBS_SHAPE                                                      \
    "{\"job_id text\",\"fingerprint text\",\"source text\","                   \
    "\"source_table text\",\"target_table text\",\"split_by text\","           \
    "\"chunk_size bigint\",\"columns text\",\"status text\","                  \
    "\"created_at timestamp with time zone\","                                 \
    "\"finished_at timestamp with time zone\"}"
#define LEDGER_CHUNKS_SHAPE                                                    \
    "{\"job_id text\",\"chunk_id bigint\",\"kind text\",\"lo bigint\","        \
    "\"hi bigint\",\"est_rows bigint\",\"state text\",\"rows bigint\","        \
    "\"attempts integer\",\"last_error text\","                                \
    "\"updated_at timestamp with time zone\"}"
#define LEDGER_REJECTS_SHAPE                                                   \
    "{\"job_id text\",\"chunk_id bigint\",\"row_index bigint\","               \
    "\"sqlstate text\",\"message text\",\"row text\"}"
#define LEDGER_INDEXES_SHAPE                                                   \
    "{\"job_id text\",\"item_id integer\",\"name text\",\"step integer\"}"

/* Refuse ledger tables already in the schema that are not plain tables
 * owned by this role with the ledger's columns: the ledger would alter
 * and write into someone else's tables. */
static bool s_check_tables(ledger_t *l, char *err, size_t errlen)
{
    const char *params[] = {l->schema, LEDGER_JOBS_SHAPE, LEDGER_CHUNKS_SHAPE,
                            LEDGER_REJECTS_SHAPE, LEDGER_INDEXES_SHAPE};
    pgutil_error_t e;
    PGresult *res = pgutil_query(
        l->conn,
        "SELECT c.relname, c.relkind = 'r' AND pg_get_userbyid(c.relowner) "
        "= current_user, (CASE c.relname WHEN 'jobs' THEN $2 WHEN 'chunks' "
        "THEN $3 WHEN 'rejects' THEN $4 ELSE $5 END)::text[] <@ ARRAY(SELECT "
        "a.attname || ' ' || "
        "format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE "
        "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), "
        "pg_get_userbyid(c.relowner), current_user FROM pg_class c JOIN "
        "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND "
        "c.relname IN ('jobs', 'chunks', 'rejects', 'indexes') ORDER BY 1 "
        "DESC",
        5, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read its tables", &e);
    bool ok = true;
    for (int i = 0; i < PQntuples(res) && ok; i++) {
        bool mine = PQgetvalue(res, i, 1)[0] == 't';
        if (mine && PQgetvalue(res, i, 2)[0] == 't') continue;
        ok = false;
        if (mine)
            snprintf(err, errlen,
                     "ledger: %s.%s exists and is not a ledger table (its "
                     "columns differ); it is left alone: give another "
                     "--state-schema",
                     l->qschema, PQgetvalue(res, i, 0));
        else
            snprintf(err, errlen,
                     "ledger: %s.%s exists and is not a table of yours "
                     "(owner %s, you are %s); it is left alone: give another "
                     "--state-schema",
                     l->qschema, PQgetvalue(res, i, 0), PQgetvalue(res, i, 3),
                     PQgetvalue(res, i, 4));
    }
    PQclear(res);
    return ok;
}

/* ledger_open's tables, once checked: made where missing, columns added. */
static bool s_create(ledger_t *l, char *err, size_t errlen)
{
    char sql[LEDGER_SQL_MAX];
    s_sql(l, sql, sizeof sql,
          "CREATE SCHEMA IF NOT EXISTS @S;"
          "CREATE TABLE IF NOT EXISTS @S.jobs ("
          " job_id text PRIMARY KEY, fingerprint text NOT NULL,"
          " source text NOT NULL, source_table text NOT NULL,"
          " target_table text NOT NULL, split_by text NOT NULL,"
          " chunk_size bigint NOT NULL, columns text NOT NULL,"
          " query text NOT NULL DEFAULT '', status text NOT NULL, created_at "
          "timestamptz NOT NULL DEFAULT "
          "now(), finished_at timestamptz);"
          "CREATE TABLE IF NOT EXISTS @S.chunks ("
          " job_id text NOT NULL REFERENCES @S.jobs ON DELETE CASCADE,"
          " chunk_id bigint NOT NULL, kind text NOT NULL, lo bigint,"
          " hi bigint, est_rows bigint NOT NULL,"
          " state text NOT NULL DEFAULT 'pending', rows bigint,"
          " attempts int NOT NULL DEFAULT 0, last_error text,"
          " updated_at timestamptz NOT NULL DEFAULT now(),"
          " rejected bigint NOT NULL DEFAULT 0,"
          " rejects_written boolean NOT NULL DEFAULT false,"
          " rejects_at bigint[], UNIQUE (job_id, chunk_id));"
          /* Rows set aside, committed with their chunk by the worker; the
           * coordinator copies them to the reject file and then says so. */
          "CREATE TABLE IF NOT EXISTS @S.rejects ("
          " job_id text NOT NULL REFERENCES @S.jobs ON DELETE CASCADE,"
          " chunk_id bigint NOT NULL, row_index bigint NOT NULL,"
          " sqlstate text NOT NULL, message text NOT NULL, row text NOT NULL,"
          " PRIMARY KEY (job_id, chunk_id, row_index));"
          /* Indexes and constraints dropped for the load (--defer-indexes):
           * the statements that put each back, and the last rebuild step
           * done. */
          "CREATE TABLE IF NOT EXISTS @S.indexes ("
          " job_id text NOT NULL, item_id int NOT NULL, name text NOT NULL,"
          " kind text NOT NULL, table_name text NOT NULL, build_sql text,"
          " attach_sql text, validate_sql text, tablespace text,"
          " step int NOT NULL DEFAULT 0, PRIMARY KEY (job_id, item_id))");
    pgutil_error_t e;
    if (!pgutil_exec(l->conn, sql, PROTO_SIDE_TARGET, &e))
        return pgutil_reason(err, errlen, "ledger: cannot create its tables",
                             &e);
    /* Columns that older ledgers lack: rows set aside (--on-bad-rows
     * reject), the reject file's progress, the source query. */
    return s_add_column(l, "chunks", "rejected", "bigint NOT NULL DEFAULT 0",
                        err, errlen) &&
           s_add_column(l, "chunks", "rejects_written",
                        "boolean NOT NULL DEFAULT false", err, errlen) &&
           s_add_column(l, "chunks", "rejects_at", "bigint[]", err, errlen) &&
           s_add_column(l, "jobs", "query", "text NOT NULL DEFAULT ''", err,
                        errlen);
}

bool ledger_open(ledger_t *l, PGconn *conn, const char *conninfo,
                 const char *schema, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->conn = conn;
    l->conninfo = conninfo;
    snprintf(l->schema, sizeof l->schema, "%s", schema);
    if (!(l->qschema = pgutil_quote_ident(conn, schema)))
        snprintf(err, errlen, "ledger: bad schema name '%s'", schema);
    else if (s_check_tables(l, err, errlen) && s_create(l, err, errlen))
        return true;
    ledger_close(l); /* a failed open leaves nothing to close */
    return false;
}

/* The spec as text (malloc'd, or NULL): what the fingerprint hashes. A
 * table's has no query part, so its job id is what it always was. */
static char *s_spec_text(const ledger_spec_t *s)
{
    char *text = NULL;
    if (asprintf(&text,
                 "source=%s table=%s target=%s split_by=%s chunk_size=%" PRId64
                 " columns=%s%s%s",
                 s->source, s->source_table, s->target_table, s->split_by,
                 s->chunk_size, s->columns, s->query[0] ? " query=" : "",
                 s->query) < 0)
        return NULL;
    return text;
}

static bool s_md5(ledger_t *l, const char *text, char *out, size_t n)
{
    const char *params[] = {text};
    pgutil_error_t e;
    PGresult *res = pgutil_query(s_conn(l), "SELECT md5($1)", 1, params,
                                 PROTO_SIDE_TARGET, &e);
    if (!res) {
        pgutil_log_error("ledger", &e);
        return false;
    }
    snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return true;
}

bool ledger_default_id(ledger_t *l, const ledger_spec_t *spec, char *id_out,
                       size_t n)
{
    char md5[64];
    char *text = s_spec_text(spec);
    bool ok = text && s_md5(l, text, md5, sizeof md5);
    free(text);
    if (ok) snprintf(id_out, n, "job-%.*s", LEDGER_ID_HASH_LEN, md5);
    return ok;
}

bool ledger_lock(ledger_t *l, const char *job_id, char *err, size_t errlen)
{
    snprintf(l->job_id, sizeof l->job_id, "%s", job_id);
    bool got = false;
    pgutil_error_t e;
    if (!s_try_lock(l, &got, &e))
        return pgutil_reason(err, errlen, "ledger: cannot lock the job", &e);
    if (!got) {
        snprintf(err, errlen,
                 "job %s is running in another coordinator (it holds the "
                 "job's lock in the target)",
                 job_id);
        return false;
    }
    l->locked = true;
    return true;
}

/* The job's identity as the jobs table keeps it, in its column order
 * (source, source_table, target_table, split_by, chunk_size, columns,
 * query); size is the chunk size as text. */
#define LEDGER_SPEC_FIELDS 7
static void s_spec_values(const ledger_spec_t *spec, const char *size,
                          const char *v[LEDGER_SPEC_FIELDS])
{
    v[0] = spec->source;
    v[1] = spec->source_table;
    v[2] = spec->target_table;
    v[3] = spec->split_by;
    v[4] = size;
    v[5] = spec->columns;
    v[6] = spec->query;
}

bool ledger_check(ledger_t *l, const char *job_id, const ledger_spec_t *spec,
                  ledger_mode_t mode, bool *exists_out, char *err,
                  size_t errlen)
{
    snprintf(l->job_id, sizeof l->job_id, "%s", job_id);
    char sql[LEDGER_SQL_MAX];
    s_sql(l, sql, sizeof sql,
          "SELECT source, source_table, target_table, split_by, chunk_size, "
          "columns, query, status FROM @S.jobs WHERE job_id = $1");
    const char *params[] = {job_id};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(s_conn(l), sql, 1, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read the jobs table",
                             &e);
    *exists_out = PQntuples(res) == 1;
    snprintf(l->status, sizeof l->status, "%s",
             *exists_out ? PQgetvalue(res, 0, 7) : "");
    if (mode == LEDGER_AUTO) mode = *exists_out ? LEDGER_RESUME : LEDGER_FRESH;
    bool ok = true;
    if (mode == LEDGER_FRESH && *exists_out) {
        snprintf(err, errlen,
                 "job %s already exists in the ledger (status %s): use "
                 "--resume to continue it, or --restart to discard its "
                 "ledger",
                 job_id, PQgetvalue(res, 0, 7));
        ok = false;
    } else if (mode == LEDGER_RESUME && !*exists_out) {
        snprintf(err, errlen, "--resume: no job %s in the ledger", job_id);
        ok = false;
    } else if (mode == LEDGER_RESUME) {
        char size[32];
        snprintf(size, sizeof size, "%" PRId64, spec->chunk_size);
        const char *names[] = {
            "source database", "table",   "target table", "split column",
            "--chunk-size",    "columns", "--query"};
        const char *now[LEDGER_SPEC_FIELDS];
        s_spec_values(spec, size, now);
        for (int i = 0; i < LEDGER_SPEC_FIELDS && ok; i++) {
            if (!strcmp(PQgetvalue(res, 0, i), now[i])) continue;
            /* A query is too long for the line: say that it differs. */
            if (i == LEDGER_SPEC_FIELDS - 1) /* the query */
                snprintf(err, errlen,
                         "--resume: job %s was started with a different "
                         "--query",
                         job_id);
            else
                snprintf(err, errlen,
                         "--resume: job %s was started with %s %s, not %s",
                         job_id, names[i], PQgetvalue(res, 0, i), now[i]);
            ok = false;
        }
    }
    PQclear(res);
    return ok;
}

/* Append v (or NULL when !present) to a PostgreSQL array literal. */
static bool s_array_add(char **buf, size_t *len, size_t *cap, const char *v)
{
    size_t add = strlen(v) + 2;
    if (*len + add + 2 > *cap) {
        size_t ncap = (*cap + add + 2) * 2;
        char *b = realloc(*buf, ncap);
        if (!b) return false;
        *buf = b;
        *cap = ncap;
    }
    *len += (size_t)snprintf(*buf + *len, *cap - *len, "%s%s",
                             *len > 1 ? "," : "", v);
    return true;
}

bool ledger_create(ledger_t *l, const ledger_spec_t *spec, const plan_t *plan,
                   bool restart, const char *truncate_sql, char *err,
                   size_t errlen)
{
    enum { ID, KIND, LO, HI, EST, NARR };
    char *arr[NARR] = {0};
    size_t len[NARR] = {0}, cap[NARR] = {0};
    bool ok = true;
    for (int a = 0; a < NARR && ok; a++)
        ok = s_array_add(&arr[a], &len[a], &cap[a], "");
    for (int a = 0; a < NARR && ok; a++)
        arr[a][0] = '{', len[a] = 1;
    for (size_t i = 0; i < plan->n && ok; i++) {
        const plan_chunk_t *c = &plan->chunks[i];
        char id[24], lo[24], hi[24], est[24], kind[16];
        /* Quoted: an unquoted null in an array literal is NULL. */
        snprintf(kind, sizeof kind, "\"%s\"", s_kind_names[c->kind]);
        snprintf(id, sizeof id, "%" PRId64, c->id);
        snprintf(lo, sizeof lo, "%" PRId64, c->lo);
        snprintf(hi, sizeof hi, "%" PRId64, c->hi);
        snprintf(est, sizeof est, "%" PRId64, c->est_rows);
        ok = s_array_add(&arr[ID], &len[ID], &cap[ID], id) &&
             s_array_add(&arr[KIND], &len[KIND], &cap[KIND], kind) &&
             s_array_add(&arr[LO], &len[LO], &cap[LO],
                         c->has_lo ? lo : "NULL") &&
             s_array_add(&arr[HI], &len[HI], &cap[HI],
                         c->has_hi ? hi : "NULL") &&
             s_array_add(&arr[EST], &len[EST], &cap[EST], est);
    }
    for (int a = 0; a < NARR && ok; a++)
        ok = s_array_add(&arr[a], &len[a], &cap[a], ""),
        arr[a][len[a] - 1] = '}';
    if (!ok) {
        snprintf(err, errlen, "ledger: out of memory");
        goto out;
    }
    char md5[64], size[32];
    char *text = s_spec_text(spec);
    snprintf(size, sizeof size, "%" PRId64, spec->chunk_size);
    ok = text && s_md5(l, text, md5, sizeof md5);
    free(text);
    if (!ok) {
        snprintf(err, errlen, "ledger: cannot compute the fingerprint");
        goto out;
    }
    PGconn *c = s_conn(l);
    pgutil_error_t e;
    char sql[LEDGER_SQL_MAX];
    ok = pgutil_exec(c, "BEGIN", PROTO_SIDE_TARGET, &e);
    if (ok && restart) {
        s_sql(l, sql, sizeof sql, "DELETE FROM @S.jobs WHERE job_id = $1");
        const char *p[] = {l->job_id};
        ok = s_command(l, sql, 1, p, &e);
    }
    if (ok && truncate_sql)
        ok = pgutil_exec(c, truncate_sql, PROTO_SIDE_TARGET, &e);
    if (ok) {
        s_sql(l, sql, sizeof sql,
              "INSERT INTO @S.jobs (job_id, fingerprint, source, "
              "source_table, target_table, split_by, chunk_size, columns, "
              "query, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
              "'running')");
        const char *p[2 + LEDGER_SPEC_FIELDS] = {l->job_id, md5};
        s_spec_values(spec, size, p + 2);
        ok = s_command(l, sql, 2 + LEDGER_SPEC_FIELDS, p, &e);
    }
    if (ok && plan->n > 0) { /* stream mode adds its chunks as it goes */
        s_sql(l, sql, sizeof sql,
              "INSERT INTO @S.chunks (job_id, chunk_id, kind, lo, hi, "
              "est_rows) SELECT $1, unnest($2::bigint[]), "
              "unnest($3::text[]), unnest($4::bigint[]), "
              "unnest($5::bigint[]), unnest($6::bigint[])");
        const char *p[] = {l->job_id, arr[ID], arr[KIND],
                           arr[LO],   arr[HI], arr[EST]};
        ok = s_command(l, sql, 6, p, &e);
    }
    if (ok) ok = pgutil_exec(c, "COMMIT", PROTO_SIDE_TARGET, &e);
    if (!ok) {
        pgutil_reason(err, errlen, "ledger: cannot record the job", &e);
        pgutil_rollback(c, PROTO_SIDE_TARGET, "ledger");
    }
out:
    for (int a = 0; a < NARR; a++)
        free(arr[a]);
    return ok;
}

bool ledger_add_chunk(ledger_t *l, const plan_chunk_t *c, char *err,
                      size_t errlen)
{
    char sql[LEDGER_SQL_MAX], id[24], lo[24], hi[24], est[24];
    s_sql(l, sql, sizeof sql,
          "INSERT INTO @S.chunks (job_id, chunk_id, kind, lo, hi, est_rows) "
          "VALUES ($1, $2, $3, $4, $5, $6) "
          "ON CONFLICT (job_id, chunk_id) DO NOTHING");
    snprintf(id, sizeof id, "%" PRId64, c->id);
    snprintf(lo, sizeof lo, "%" PRId64, c->lo);
    snprintf(hi, sizeof hi, "%" PRId64, c->hi);
    snprintf(est, sizeof est, "%" PRId64, c->est_rows);
    const char *p[] = {l->job_id, id, s_kind_names[c->kind], lo, hi, est};
    pgutil_error_t e;
    if (s_command(l, sql, 6, p, &e)) return true;
    return pgutil_reason(err, errlen, "ledger: cannot record a chunk", &e);
}

static plan_kind_t s_kind(const char *name)
{
    for (size_t k = 0; k < sizeof s_kind_names / sizeof s_kind_names[0]; k++)
        if (!strcmp(name, s_kind_names[k])) return (plan_kind_t)k;
    return PLAN_ALL;
}

bool ledger_load(ledger_t *l, plan_t *plan, bool **done_out, int64_t **rows_out,
                 int64_t **rejected_out, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    char sql[LEDGER_SQL_MAX];
    s_sql(l, sql, sizeof sql,
          "SELECT chunk_id, kind, lo, hi, est_rows, state = 'done', "
          "coalesce(rows, 0), rejected FROM @S.chunks WHERE job_id = $1 "
          "ORDER BY chunk_id");
    const char *params[] = {l->job_id};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(s_conn(l), sql, 1, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read the chunks", &e);
    int n = PQntuples(res);
    *done_out = calloc((size_t)n + 1, sizeof **done_out);
    *rows_out = calloc((size_t)n + 1, sizeof **rows_out);
    *rejected_out = calloc((size_t)n + 1, sizeof **rejected_out);
    bool ok = *done_out && *rows_out && *rejected_out;
    for (int i = 0; i < n && ok; i++) {
        plan_chunk_t c = {.id = strtoll(PQgetvalue(res, i, 0), NULL, 10),
                          .kind = s_kind(PQgetvalue(res, i, 1)),
                          .has_lo = !PQgetisnull(res, i, 2),
                          .has_hi = !PQgetisnull(res, i, 3),
                          .lo = strtoll(PQgetvalue(res, i, 2), NULL, 10),
                          .hi = strtoll(PQgetvalue(res, i, 3), NULL, 10),
                          .est_rows = strtoll(PQgetvalue(res, i, 4), NULL, 10)};
        if (c.id != i) {
            snprintf(err, errlen, "ledger: chunk %d of job %s is missing", i,
                     l->job_id);
            ok = false;
            break;
        }
        (*done_out)[i] = PQgetvalue(res, i, 5)[0] == 't';
        (*rows_out)[i] = strtoll(PQgetvalue(res, i, 6), NULL, 10);
        (*rejected_out)[i] = strtoll(PQgetvalue(res, i, 7), NULL, 10);
        ok = plan_append(plan, &c);
    }
    PQclear(res);
    if (!ok) {
        if (!err[0]) snprintf(err, errlen, "ledger: out of memory");
        plan_free(plan);
        free(*done_out);
        free(*rows_out);
        free(*rejected_out);
        *done_out = NULL;
        *rows_out = NULL;
        *rejected_out = NULL;
    }
    return ok;
}

/* Run the statement tmpl (@S: the schema) on conn with $1 the job id, $2
 * chunk_id (none when < 0), then the nmore values of more. Returns its
 * result (rows or none; the caller clears it), or NULL, logged as
 * "ledger: what" (conn NULL: the session is being reconnected). */
static PGresult *s_run(ledger_t *l, PGconn *conn, const char *tmpl,
                       int64_t chunk_id, int nmore, const char *const *more,
                       const char *what)
{
    if (!conn) {
        log_warn("ledger: %s: the target session is down (reconnecting)", what);
        return NULL;
    }
    char sql[LEDGER_SQL_MAX], id[24];
    s_sql(l, sql, sizeof sql, tmpl);
    snprintf(id, sizeof id, "%" PRId64, chunk_id);
    const char *params[LEDGER_MAX_PARAMS] = {l->job_id, id};
    int n = chunk_id < 0 ? 1 : 2;
    for (int i = 0; i < nmore && n < LEDGER_MAX_PARAMS; i++)
        params[n++] = more[i];
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return res;
    pgutil_error_t e;
    pgutil_capture(conn, res, PROTO_SIDE_TARGET, &e);
    PQclear(res);
    char context[LEDGER_SQL_MAX];
    snprintf(context, sizeof context, "ledger: %s", what);
    pgutil_log_error(context, &e);
    return NULL;
}

/* s_run for a statement that returns no rows: true when it ran. */
static bool s_run_command(ledger_t *l, PGconn *conn, const char *tmpl,
                          int64_t chunk_id, int nmore, const char *const *more,
                          const char *what)
{
    PGresult *res = s_run(l, conn, tmpl, chunk_id, nmore, more, what);
    PQclear(res);
    return res != NULL;
}

bool ledger_chunk_states(ledger_t *l, const int64_t *ids, size_t n,
                         ledger_chunk_state_t *out)
{
    char list[MAPPER_DONE_BATCH * 24 + 2];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (ledger_chunk_state_t){0};
        at += (size_t)snprintf(list + at, sizeof list - at, "%c%" PRId64,
                               i ? ',' : '{', ids[i]);
    }
    snprintf(list + at, sizeof list - at, "}");
    const char *more[] = {list};
    PGresult *res = s_run(l, s_conn(l),
                          "SELECT chunk_id, coalesce(rows, 0), rejected FROM "
                          "@S.chunks WHERE job_id = $1 AND chunk_id = "
                          "ANY ($2::bigint[]) AND state = 'done'",
                          -1, 1, more, "reading chunks' states");
    if (!res) return false;
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t i = 0; i < n; i++)
            if (ids[i] == strtoll(PQgetvalue(res, r, 0), NULL, 10))
                out[i] = (ledger_chunk_state_t){
                    .done = true,
                    .rows = strtoll(PQgetvalue(res, r, 1), NULL, 10),
                    .rejected = strtoll(PQgetvalue(res, r, 2), NULL, 10)};
    PQclear(res);
    return true;
}

int64_t ledger_done_count(ledger_t *l)
{
    PGresult *res = s_run(l, s_conn(l),
                          "SELECT count(*) FROM @S.chunks WHERE job_id = $1 "
                          "AND state = 'done'",
                          -1, 0, NULL, "counting done chunks");
    if (!res) return -1;
    int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

void ledger_chunk_failed(ledger_t *l, int64_t chunk_id, int attempts,
                         const char *error)
{
    char att[16];
    snprintf(att, sizeof att, "%d", attempts);
    char clean[PROTO_MAX_MESSAGE]; /* no password, no control characters */
    log_one_line(clean, sizeof clean, error);
    const char *more[] = {att, clean};
    (void)s_run_command(l, s_conn_wait(l),
                        "UPDATE @S.chunks SET state = 'failed', attempts = "
                        "$3, last_error = $4, updated_at = now() WHERE job_id "
                        "= $1 AND chunk_id = $2 AND state <> 'done'",
                        chunk_id, 2, more, "recording a failed chunk");
}

void ledger_finish(ledger_t *l, const char *status)
{
    const char *more[] = {status};
    (void)s_run_command(l, s_conn_wait(l),
                        "UPDATE @S.jobs SET status = $2, finished_at = now() "
                        "WHERE job_id = $1",
                        -1, 1, more, "recording the job's status");
}

bool ledger_load_rejects(ledger_t *l, int64_t chunk_id, reject_buf_t *out)
{
    PGresult *res = s_run(l, s_conn(l),
                          "SELECT row_index, sqlstate, message, row FROM "
                          "@S.rejects WHERE job_id = $1 AND chunk_id = $2 "
                          "ORDER BY row_index",
                          chunk_id, 0, NULL, "reading a chunk's rejected rows");
    if (!res) return false;
    bool ok = true;
    for (int i = 0; i < PQntuples(res) && ok; i++) {
        proto_msg_t m = {.row_index = strtoll(PQgetvalue(res, i, 0), NULL, 10),
                         .message = strdup(PQgetvalue(res, i, 2)),
                         .row = strdup(PQgetvalue(res, i, 3))};
        snprintf(m.sqlstate, sizeof m.sqlstate, "%s", PQgetvalue(res, i, 1));
        ok = m.message && m.row && reject_buf_take(out, &m);
        free(m.message);
        free(m.row);
    }
    PQclear(res);
    if (!ok) {
        log_error("ledger: out of memory reading rejected rows");
        reject_buf_clear(out);
    }
    return ok;
}

void ledger_rejects_written(ledger_t *l, int64_t chunk_id)
{
    (void)s_run_command(l, s_conn(l),
                        "UPDATE @S.chunks SET rejects_written = true WHERE "
                        "job_id = $1 AND chunk_id = $2",
                        chunk_id, 0, NULL, "recording rejected rows written");
}

bool ledger_rejects_at(ledger_t *l, int64_t chunk_id, int64_t rows_at,
                       int64_t log_at)
{
    if (rows_at < 0 || log_at < 0) {
        log_error("reject file: cannot tell its size");
        return false;
    }
    char r[24], g[24];
    snprintf(r, sizeof r, "%" PRId64, rows_at);
    snprintf(g, sizeof g, "%" PRId64, log_at);
    const char *more[] = {r, g};
    return s_run_command(l, s_conn(l),
                         "UPDATE @S.chunks SET rejects_at = ARRAY[$3, "
                         "$4]::bigint[] WHERE job_id = $1 AND chunk_id = $2",
                         chunk_id, 2, more, "recording where rejected rows go");
}

bool ledger_rejects_unwritten(ledger_t *l, ledger_unwritten_t **out,
                              size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    PGresult *res =
        s_run(l, s_conn_wait(l),
              "SELECT chunk_id, coalesce(rejects_at[1], -1), "
              "coalesce(rejects_at[2], -1) FROM @S.chunks WHERE job_id = $1 "
              "AND state = 'done' AND rejected > 0 AND NOT rejects_written "
              "ORDER BY chunk_id",
              -1, 0, NULL, "finding rejected rows not written");
    if (!res) return false;
    size_t n = (size_t)PQntuples(res);
    ledger_unwritten_t *v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = (ledger_unwritten_t){
            strtoll(PQgetvalue(res, (int)i, 0), NULL, 10),
            {strtoll(PQgetvalue(res, (int)i, 1), NULL, 10),
             strtoll(PQgetvalue(res, (int)i, 2), NULL, 10)}};
    PQclear(res);
    if (!v) {
        log_error("ledger: out of memory");
        return false;
    }
    *out = v;
    *n_out = n;
    return true;
}

void ledger_close(ledger_t *l)
{
    pgutil_probe_cancel(&l->reconnect);
    free(l->qschema);
    memset(l, 0, sizeof *l);
}
