/* coordinator/schema.c - catalog lookups and COPY statements (schema.h). */
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "log.h"
#include "pgutil.h"

/* Types with OIDs below this are built in, the same in every database, so
 * binary COPY between them is safe (user types' binary forms embed OIDs). */
#define SCHEMA_FIRST_USER_OID 16384
#define SCHEMA_SQL_MAX        256

typedef struct {
    char *name;   /* column name */
    char *type;   /* type OID as text */
    char *typmod; /* typmod as text */
    bool is_int;  /* int2, int4 or int8 */
} s_col_t;

typedef struct {
    char *qname;   /* quoted schema.table */
    char relkind;  /* pg_class.relkind */
    int64_t pages; /* heap pages */
    double tuples; /* reltuples */
    s_col_t *cols; /* columns in attnum order */
    int ncols;     /* number of columns */
    char *pk;      /* single-column integer primary key, or NULL */
} s_table_t;

static void s_table_free(s_table_t *t)
{
    for (int i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
        free(t->cols[i].typmod);
    }
    free(t->cols);
    free(t->qname);
    free(t->pk);
    memset(t, 0, sizeof *t);
}

/* Write "<side> table <name>: <what>" into err; returns false. */
static bool s_fail(char *err, size_t errlen, proto_side_t side,
                   const char *name, const char *what)
{
    snprintf(err, errlen, "%s table %s %s", pgutil_side_name(side), name, what);
    return false;
}

/* Resolve name (SQL syntax, search_path applies) on conn into *t. */
static bool s_table_load(PGconn *conn, proto_side_t side, const char *name,
                         s_table_t *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    pgutil_error_t e;
    const char *params[] = {name};
    PGresult *res = pgutil_query(
        conn,
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind, "
        "pg_relation_size(c.oid) / current_setting('block_size')::int, "
        "c.reltuples, c.oid FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        1, params, side, &e);
    if (!res) {
        /* to_regclass raises on bad syntax, e.g. an unbalanced quote. */
        snprintf(err, errlen, "%s table %s: %s", pgutil_side_name(side), name,
                 e.message);
        return false;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return s_fail(err, errlen, side, name, "does not exist");
    }
    t->qname = strdup(PQgetvalue(res, 0, 0));
    t->relkind = PQgetvalue(res, 0, 1)[0];
    t->pages = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    t->tuples = strtod(PQgetvalue(res, 0, 3), NULL);
    const char *oid_params[] = {PQgetvalue(res, 0, 4)};
    char oid[32];
    snprintf(oid, sizeof oid, "%s", oid_params[0]);
    PQclear(res);
    oid_params[0] = oid;

    res = pgutil_query(conn,
                       "SELECT attname, atttypid, atttypmod, "
                       "atttypid IN (20, 21, 23) FROM pg_attribute "
                       "WHERE attrelid = $1::oid AND attnum > 0 AND NOT "
                       "attisdropped AND attgenerated = '' ORDER BY attnum",
                       1, oid_params, side, &e);
    if (!res) {
        pgutil_log_error("reading columns", &e);
        return s_fail(err, errlen, side, name, "- cannot read its columns");
    }
    t->ncols = PQntuples(res);
    t->cols = calloc((size_t)t->ncols + 1, sizeof *t->cols);
    for (int i = 0; t->cols && i < t->ncols; i++) {
        t->cols[i].name = strdup(PQgetvalue(res, i, 0));
        t->cols[i].type = strdup(PQgetvalue(res, i, 1));
        t->cols[i].typmod = strdup(PQgetvalue(res, i, 2));
        t->cols[i].is_int = PQgetvalue(res, i, 3)[0] == 't';
    }
    PQclear(res);

    res = pgutil_query(conn,
                       "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                       "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                       "WHERE i.indrelid = $1::oid AND i.indisprimary AND "
                       "i.indnkeyatts = 1 AND a.atttypid IN (20, 21, 23)",
                       1, oid_params, side, &e);
    if (!res) {
        pgutil_log_error("reading primary key", &e);
        return s_fail(err, errlen, side, name, "- cannot read its primary key");
    }
    if (PQntuples(res) == 1) t->pk = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!t->cols || !t->qname)
        return s_fail(err, errlen, side, name, "- out of memory");
    return true;
}

static const s_col_t *s_find(const s_table_t *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (!strcmp(t->cols[i].name, name)) return &t->cols[i];
    return NULL;
}

/* Append s to the growing buffer *buf (length *len). */
static bool s_append(char **buf, size_t *len, const char *s)
{
    size_t add = strlen(s);
    char *b = realloc(*buf, *len + add + 1);
    if (!b) return false;
    memcpy(b + *len, s, add + 1);
    *buf = b;
    *len += add;
    return true;
}

bool schema_load(PGconn *src, PGconn *dst, const char *table,
                 const char *target_table, const char *split_by, schema_t *out,
                 bool *usage_error_out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    *usage_error_out = false;
    s_table_t s, t;
    if (!s_table_load(src, PROTO_SIDE_SOURCE, table, &s, err, errlen))
        return false;
    if (!s_table_load(dst, PROTO_SIDE_TARGET,
                      target_table ? target_table : table, &t, err, errlen)) {
        s_table_free(&s);
        return false;
    }
    bool ok = false;
    out->binary = true;
    size_t len = 0;
    for (int i = 0; i < s.ncols; i++) {
        const s_col_t *sc = &s.cols[i];
        const s_col_t *tc = s_find(&t, sc->name);
        if (!tc) {
            snprintf(err, errlen, "target table %s has no column \"%s\"",
                     t.qname, sc->name);
            goto done;
        }
        if (strcmp(sc->type, tc->type) || strcmp(sc->typmod, tc->typmod) ||
            strtoll(sc->type, NULL, 10) >= SCHEMA_FIRST_USER_OID)
            out->binary = false;
        char *q = pgutil_quote_ident(src, sc->name);
        bool appended = q && (i == 0 || s_append(&out->qcolumns, &len, ", ")) &&
                        s_append(&out->qcolumns, &len, q);
        free(q);
        if (!appended) goto oom;
        out->ncolumns++;
    }
    if (s.ncols == 0) {
        snprintf(err, errlen, "source table %s has no columns", s.qname);
        goto done;
    }
    if (split_by) {
        const s_col_t *c = s_find(&s, split_by);
        if (!c) {
            snprintf(err, errlen,
                     "--split-by: source table %s has no column \"%s\"",
                     s.qname, split_by);
            *usage_error_out = true;
            goto done;
        }
        if (!c->is_int) {
            snprintf(err, errlen,
                     "--split-by: column \"%s\" is not an integer column "
                     "(smallint, integer or bigint)",
                     split_by);
            *usage_error_out = true;
            goto done;
        }
        out->qsplit = pgutil_quote_ident(src, split_by);
    } else if (s.pk) {
        out->qsplit = pgutil_quote_ident(src, s.pk);
    }
    out->qsource = strdup(s.qname);
    out->qtarget = strdup(t.qname);
    if (!out->qsource || !out->qtarget) goto oom;
    out->relkind = s.relkind;
    out->pages = s.pages;
    out->reltuples = s.tuples;
    ok = true;
    goto done;
oom:
    snprintf(err, errlen, "out of memory reading the schema");
done:
    s_table_free(&s);
    s_table_free(&t);
    if (!ok) schema_free(out);
    return ok;
}

bool schema_chunk_sql(const schema_t *s, const plan_chunk_t *c,
                      char **source_sql_out, char **target_sql_out)
{
    char where[SCHEMA_SQL_MAX + 128];
    if (!plan_chunk_where(c, s->qsplit ? s->qsplit : "", where, sizeof where))
        return false;
    const char *fmt = s->binary ? MAPPER_COPY_BINARY_SUFFIX : "";
    size_t n1 = strlen(s->qcolumns) + strlen(s->qsource) + strlen(where) + 64;
    size_t n2 = strlen(s->qcolumns) + strlen(s->qtarget) + 64;
    char *a = malloc(n1), *b = malloc(n2);
    if (!a || !b) {
        free(a);
        free(b);
        log_error("out of memory building chunk %lld SQL", (long long)c->id);
        return false;
    }
    snprintf(a, n1, "COPY (SELECT %s FROM %s%s) TO STDOUT%s", s->qcolumns,
             s->qsource, where, fmt);
    snprintf(b, n2, "COPY %s (%s) FROM STDIN%s", s->qtarget, s->qcolumns, fmt);
    *source_sql_out = a;
    *target_sql_out = b;
    return true;
}

void schema_free(schema_t *s)
{
    if (!s) return;
    free(s->qsource);
    free(s->qtarget);
    free(s->qcolumns);
    free(s->qsplit);
    memset(s, 0, sizeof *s);
}
