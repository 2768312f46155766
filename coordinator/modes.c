/* coordinator/modes.c - write modes: upsert key, ledger columns, counts
 * (modes.h). */
#include "modes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "log.h"
#include "pgutil.h"
#include "replace.h"

/* Whether name is one of the NUL-ended names at list (len bytes). */
static bool s_has(const char *list, size_t len, const char *name)
{
    for (size_t at = 0; at < len; at += strlen(list + at) + 1)
        if (!strcmp(list + at, name)) return true;
    return false;
}

/* The --key list as NUL-ended names in s->key: each a copied column,
 * none twice. */
static bool s_parse_key(const char *key, schema_t *s, char *err, size_t errlen)
{
    size_t n = strlen(key);
    if (!(s->key = malloc(n + 1))) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    memcpy(s->key, key, n + 1);
    for (size_t at = 0; at <= n;) {
        char *name = s->key + at;
        size_t len = strcspn(name, ",");
        name[len] = '\0';
        bool twice = s_has(s->key, at, name);
        if (!len || twice || !s_has(s->columns, s->columns_len, name)) {
            snprintf(err, errlen, "--key %s: '%s' is %s", key, name,
                     !len    ? "an empty name"
                     : twice ? "given twice"
                             : "not a copied column");
            return false;
        }
        at += len + 1;
    }
    s->key_len = n + 1;
    return true;
}

/* Unique indexes ON CONFLICT can use whose key columns are exactly $2's
 * (a comma-separated list): valid, immediate, no predicate or
 * expression. */
#define MODES_KEY_INDEX_SQL                                                    \
    "SELECT count(*) FROM pg_index i WHERE i.indrelid = to_regclass($1) "      \
    "AND i.indisunique AND i.indisvalid AND i.indimmediate "                   \
    "AND i.indpred IS NULL AND i.indexprs IS NULL AND (SELECT "                \
    "array_agg(a.attname::text ORDER BY a.attname::text) FROM "                \
    "unnest(i.indkey::int2[]) "                                                \
    "WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = i.indrelid "  \
    "AND a.attnum = k.n WHERE k.o <= i.indnkeyatts) = (SELECT array_agg(x "    \
    "ORDER BY x) FROM unnest(string_to_array($2, ',')) x)"

bool modes_validate(const mapper_job_spec *spec, char *err, size_t errlen)
{
    if (spec->mode != MAPPER_MODE_UPSERT && spec->key)
        return log_reason(err, errlen, "--key is for --mode upsert");
    if (spec->mode == MAPPER_MODE_REPLACE &&
        (spec->truncate || spec->no_ledger))
        return log_reason(err, errlen,
                          "--mode replace: not with %s (the target is left "
                          "as it is until the swap, which needs the ledger)",
                          spec->truncate ? "--truncate" : "--no-ledger");
    if (spec->mode == MAPPER_MODE_UPSERT && (!spec->key || !*spec->key))
        return log_reason(err, errlen,
                          "--mode upsert needs --key (the key columns)");
    if (spec->mode == MAPPER_MODE_UPSERT && spec->no_ledger)
        return log_reason(err, errlen,
                          "--mode upsert needs the ledger (its counts "
                          "and its runs are kept there): drop --no-ledger");
    return true;
}

bool modes_prepare(const mapper_job_spec *spec, PGconn *dst, schema_t *s,
                   bool *usage_out, char *err, size_t errlen)
{
    *usage_out = true;
    if (spec->mode == MAPPER_MODE_REPLACE) {
        *usage_out = false;
        return replace_check(dst, s, err, errlen);
    }
    if (spec->mode != MAPPER_MODE_UPSERT) return true;
    if (!s_parse_key(spec->key, s, err, errlen)) return false;
    *usage_out = false;
    const char *params[] = {s->qtarget, spec->key};
    pgutil_error_t e;
    PGresult *res = pgutil_query(dst, MODES_KEY_INDEX_SQL, 2, params,
                                 PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "--key: cannot read the indexes", &e);
    bool ok = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    if (!ok)
        snprintf(err, errlen,
                 "--mode upsert --key %s: %s has no unique index or "
                 "constraint on exactly these columns (ON CONFLICT needs one)",
                 spec->key, s->qtarget);
    return ok;
}

mapper_defer_indexes modes_defer_indexes(const mapper_job_spec *spec)
{
    return spec->mode != MAPPER_MODE_APPEND ? MAPPER_DEFER_OFF
                                            : spec->defer_indexes;
}

/* Add the columns the modes use to the ledger where missing. */
static bool s_columns(ledger_t *l, char *err, size_t errlen)
{
    char sql[512], chunks[PROTO_MAX_ID * 2 + 16], jobs[PROTO_MAX_ID * 2 + 16];
    snprintf(chunks, sizeof chunks, "%s.chunks", l->qschema);
    snprintf(jobs, sizeof jobs, "%s.jobs", l->qschema);
    const char *params[] = {chunks, jobs};
    pgutil_error_t e;
    PGresult *res = pgutil_query(
        l->conn,
        "SELECT count(*) FROM pg_attribute WHERE (attrelid, attname) IN "
        "((to_regclass($1), 'inserted'), (to_regclass($1), 'updated'), "
        "(to_regclass($2), 'run')) AND NOT attisdropped",
        2, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read its tables", &e);
    bool has = !strcmp(PQgetvalue(res, 0, 0), "3");
    PQclear(res);
    snprintf(sql, sizeof sql,
             "ALTER TABLE %s.chunks ADD COLUMN IF NOT EXISTS inserted bigint "
             "NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS updated bigint NOT "
             "NULL DEFAULT 0; ALTER TABLE %s.jobs ADD COLUMN IF NOT EXISTS run "
             "bigint NOT NULL DEFAULT 1",
             l->qschema, l->qschema);
    if (!has && !pgutil_exec(l->conn, sql, PROTO_SIDE_TARGET, &e))
        return pgutil_reason(err, errlen, "ledger: cannot add a column", &e);
    return true;
}

bool modes_start(ledger_t *l, const mapper_job_spec *spec, const char *job_id,
                 ledger_mode_t *mode, int64_t *run_out, char *err,
                 size_t errlen)
{
    *run_out = 1;
    if (!s_columns(l, err, errlen)) return false;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT status = 'done', run FROM %s.jobs WHERE job_id = $1",
             l->qschema);
    const char *params[] = {job_id};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(l->conn, sql, 1, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read the jobs table",
                             &e);
    bool exists = PQntuples(res) == 1;
    bool done = exists && PQgetvalue(res, 0, 0)[0] == 't';
    int64_t run = exists ? strtoll(PQgetvalue(res, 0, 1), NULL, 10) : 0;
    PQclear(res);
    bool again = *mode == LEDGER_FRESH || *mode == LEDGER_AUTO;
    if (done && again && spec->mode != MAPPER_MODE_APPEND) {
        *mode = LEDGER_RESTART;
        log_info("job %s is done: %s starts its run %" PRId64, job_id,
                 spec->mode == MAPPER_MODE_UPSERT ? "an upsert" : "a replace",
                 run + 1);
    } else if (done && *mode == LEDGER_FRESH) {
        snprintf(err, errlen,
                 "job %s already exists in the ledger and is done: --resume "
                 "finds nothing to do, and running it again would append its "
                 "rows a second time; use --mode replace to copy it afresh "
                 "beside the target and swap, --mode upsert to merge the rows "
                 "again, or --restart --truncate to empty the target and copy "
                 "afresh",
                 job_id);
        return false;
    }
    *run_out = !exists ? 1 : *mode == LEDGER_RESTART ? run + 1 : run;
    return true;
}

bool modes_run(ledger_t *l, const mapper_job_spec *spec, const schema_t *s,
               mapper_result *out)
{
    if (!l->conn) return true; /* no ledger */
    char sql[256], text[24];
    snprintf(sql, sizeof sql, "UPDATE %s.jobs SET run = $2 WHERE job_id = $1",
             l->qschema);
    snprintf(text, sizeof text, "%" PRId64, out->run);
    const char *params[] = {l->job_id, text};
    PGresult *res = PQexecParams(l->conn, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pgutil_error_t e;
        pgutil_capture(l->conn, res, PROTO_SIDE_TARGET, &e);
        log_warn("ledger: cannot record run %" PRId64 " of job %s: %s",
                 out->run, l->job_id, e.message);
    }
    PQclear(res);
    if (spec->mode != MAPPER_MODE_REPLACE ||
        replace_begin(l, s, out->resumed,
                      out->resumed ? ledger_done_count(l) : 0, out->error,
                      sizeof out->error))
        return true;
    out->exit_code = MAPPER_EXIT_CANNOT_RUN;
    return false;
}

bool modes_truncate_refused(ledger_t *l, const mapper_result *out)
{
    return !out->restart_only && strcmp(l->status, "done") != 0 &&
           ledger_done_count(l) != 0;
}

int modes_finish(ledger_t *l, const mapper_job_spec *spec, const schema_t *s,
                 int rc, progress_t *progress, mapper_result *out)
{
    out->mode = spec->mode;
    if (spec->mode == MAPPER_MODE_REPLACE && l->conn && rc == MAPPER_EXIT_OK) {
        progress_set_phase(progress, MAPPER_PHASE_SWAP);
        progress_tick(progress);
        bool swapped = false;
        bool ok = replace_swap(l, s, &swapped, &out->swap_s, out->error,
                               sizeof out->error);
        out->swapped = swapped;
        if (swapped) progress_set_swap(progress, out->swap_s);
        if (!ok) return swapped ? MAPPER_EXIT_FAILED : MAPPER_EXIT_CANNOT_RUN;
    }
    if (spec->mode != MAPPER_MODE_UPSERT || !l->conn) return rc;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(inserted), 0), coalesce(sum(updated), 0) "
             "FROM %s.chunks WHERE job_id = $1 AND state = 'done'",
             l->qschema);
    const char *params[] = {l->job_id};
    pgutil_error_t e;
    PGresult *res =
        pgutil_query(l->conn, sql, 1, params, PROTO_SIDE_TARGET, &e);
    if (!res) {
        log_warn("ledger: cannot read the rows inserted and updated: %s",
                 e.message);
        return rc;
    }
    out->rows_inserted = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    out->rows_updated = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return rc;
}
