/* coordinator/replace_validate.c - foreign keys into a replaced target,
 * validated after the swap and by --resume (replace_validate.h). The
 * ledger keeps names only; every statement is made by the server from the
 * catalogs with format(). */
#include "replace_validate.h"

#include <stdio.h>

#include "log.h"
#include "pgutil.h"

/* Room for a statement: its text and the quoted ledger schema (twice). */
#define VALIDATE_SQL_MAX (640 + 4 * PROTO_MAX_ID)

/* Run sql with params; true when it ran (its rows are not read). */
static bool s_run(ledger_t *l, const char *sql, int n, const char **params,
                  const char *what, char *err, size_t errlen)
{
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(l->conn, sql, n, params, PROTO_SIDE_TARGET, &e);
    PQclear(res);
    return res || pgutil_reason(err, errlen, what, &e);
}

bool replace_validate_table(ledger_t *l, char *err, size_t errlen)
{
    char sql[VALIDATE_SQL_MAX];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s.validations (job_id text NOT "
             "NULL REFERENCES %s.jobs ON DELETE CASCADE, table_name text NOT "
             "NULL, conname name NOT NULL, PRIMARY KEY (job_id, table_name, "
             "conname))",
             l->qschema, l->qschema);
    pgutil_error_t e;
    return pgutil_exec(l->conn, sql, PROTO_SIDE_TARGET, &e) ||
           pgutil_reason(err, errlen, "--mode replace: the ledger", &e);
}

bool replace_validate_record(ledger_t *l, const char *qtarget, char *err,
                             size_t errlen)
{
    /* regclass as text under the swap's search_path (pg_catalog) is
     * schema-qualified; the target's own keys are named by its name,
     * which the new table takes. */
    char sql[VALIDATE_SQL_MAX];
    snprintf(sql, sizeof sql,
             "WITH d AS (DELETE FROM %s.validations WHERE job_id = $1) "
             "INSERT INTO %s.validations SELECT $1, conrelid::regclass::text, "
             "conname FROM pg_constraint WHERE confrelid = "
             "to_regclass($2::text) AND contype = 'f' AND convalidated "
             "RETURNING 1",
             l->qschema, l->qschema);
    const char *params[] = {l->job_id, qtarget};
    return s_run(l, sql, 2, params,
                 "--mode replace: remembering the foreign keys to validate",
                 err, errlen);
}

/* Validate (when stmt is not empty) and forget one foreign key, in one
 * transaction. */
static bool s_one(ledger_t *l, const char *stmt, const char *table,
                  const char *conname, char *err, size_t errlen)
{
    char sql[VALIDATE_SQL_MAX];
    snprintf(sql, sizeof sql,
             "DELETE FROM %s.validations WHERE job_id = $1 AND table_name = "
             "$2 AND conname = $3 RETURNING 1",
             l->qschema);
    const char *params[] = {l->job_id, table, conname};
    pgutil_error_t e;
    if (!pgutil_exec(l->conn, "BEGIN", PROTO_SIDE_TARGET, &e))
        return pgutil_reason(err, errlen, "--mode replace", &e);
    if (*stmt)
        log_info("replace: validating foreign key %s of %s", conname, table);
    if (*stmt && !pgutil_exec(l->conn, stmt, PROTO_SIDE_TARGET, &e))
        snprintf(err, errlen,
                 "--mode replace: the swap is done, but foreign key %s of %s "
                 "into the target stays NOT VALID (enforced for new rows; fix "
                 "the rows and run again with --resume): %s",
                 conname, table, e.message);
    else if (s_run(l, sql, 3, params, "--mode replace", err, errlen) &&
             (pgutil_exec(l->conn, "COMMIT", PROTO_SIDE_TARGET, &e) ||
              pgutil_reason(err, errlen, "--mode replace", &e)))
        return true;
    pgutil_rollback(l->conn, PROTO_SIDE_TARGET, "replace");
    return false;
}

bool replace_validate_run(ledger_t *l, char *err, size_t errlen)
{
    char sql[VALIDATE_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(format('ALTER TABLE %%s VALIDATE CONSTRAINT "
             "%%I', c.conrelid::regclass, c.conname), ''), v.table_name, "
             "v.conname FROM %s.validations v LEFT JOIN pg_constraint c ON "
             "c.conrelid = to_regclass(v.table_name) AND c.conname = "
             "v.conname AND c.contype = 'f' AND NOT c.convalidated WHERE "
             "v.job_id = $1 ORDER BY 2, 3",
             l->qschema);
    const char *params[] = {l->job_id};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(l->conn, sql, 1, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "--mode replace: the ledger", &e);
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(res); i++)
        ok = s_one(l, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), err, errlen);
    PQclear(res);
    return ok;
}
