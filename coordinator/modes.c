/* coordinator/modes.c - write modes: upsert key, ledger columns, counts
 * (modes.h). */
#include "modes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgutil.h"

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

bool modes_prepare(const mapper_job_spec *spec, PGconn *dst, schema_t *s,
                   bool *usage_out, char *err, size_t errlen)
{
    *usage_out = true;
    if (spec->mode != MAPPER_MODE_UPSERT) {
        if (!spec->key) return true;
        snprintf(err, errlen, "--key is for --mode upsert");
        return false;
    }
    if (!spec->key || !*spec->key) {
        snprintf(err, errlen, "--mode upsert needs --key (the key columns)");
        return false;
    }
    if (spec->no_ledger) {
        snprintf(err, errlen,
                 "--mode upsert needs the ledger (its counts "
                 "and its runs are kept there): drop --no-ledger");
        return false;
    }
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
    return spec->mode == MAPPER_MODE_UPSERT ? MAPPER_DEFER_OFF
                                            : spec->defer_indexes;
}

bool modes_ledger(ledger_t *l, const mapper_job_spec *spec, char *err,
                  size_t errlen)
{
    if (spec->mode != MAPPER_MODE_UPSERT) return true;
    char qtable[PROTO_MAX_ID * 2 + 16], sql[512];
    snprintf(qtable, sizeof qtable, "%s.chunks", l->qschema);
    const char *params[] = {qtable};
    pgutil_error_t e;
    PGresult *res = pgutil_query(
        l->conn,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) "
        "AND attname IN ('inserted', 'updated') AND NOT attisdropped",
        1, params, PROTO_SIDE_TARGET, &e);
    if (!res)
        return pgutil_reason(err, errlen, "ledger: cannot read its tables", &e);
    bool has = !strcmp(PQgetvalue(res, 0, 0), "2");
    PQclear(res);
    snprintf(sql, sizeof sql,
             "ALTER TABLE %s ADD COLUMN IF NOT EXISTS inserted bigint NOT "
             "NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS updated bigint NOT "
             "NULL DEFAULT 0",
             qtable);
    if (!has && !pgutil_exec(l->conn, sql, PROTO_SIDE_TARGET, &e))
        return pgutil_reason(err, errlen, "ledger: cannot add a column", &e);
    return true;
}

void modes_counts(ledger_t *l, const mapper_job_spec *spec, mapper_result *out)
{
    out->mode = spec->mode;
    if (spec->mode != MAPPER_MODE_UPSERT || !l) return;
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
        return;
    }
    out->rows_inserted = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    out->rows_updated = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
}
