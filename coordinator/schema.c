/* coordinator/schema.c - catalog lookups and COPY statements (schema.h). */
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "log.h"
#include "pgutil.h"
#include "typeinfo.h"

/* Types with OIDs below this are built in, the same in every database, so
 * binary COPY between them is safe (user types' binary forms embed OIDs). */
#define SCHEMA_FIRST_USER_OID 16384
#define SCHEMA_SQL_MAX        256

/* Type OIDs of int8, int2 and int4: the types a split key may have. */
#define SCHEMA_INT8_OID 20
#define SCHEMA_INT2_OID 21
#define SCHEMA_INT4_OID 23

typedef struct {
    char *name;    /* column name */
    char *type;    /* type OID as text */
    char *typmod;  /* typmod as text */
    bool is_int;   /* int2, int4 or int8 */
    bool required; /* NOT NULL without a default, not identity */
} s_col_t;

typedef struct {
    char *qname;   /* quoted schema.table, or the query's FROM item */
    char *nspname; /* its schema's name (tables only) */
    char *relname; /* its name (tables only) */
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
    char *owned[] = {t->qname, t->nspname, t->relname, t->pk};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
    free(t->cols);
    memset(t, 0, sizeof *t);
}

/* Read what (its "columns", its "primary key") of table name from the
 * catalog on conn with sql ($1: the table's oid, in oid_params). The rows
 * (the caller clears them), or NULL with the reason in err. */
static PGresult *s_catalog(PGconn *conn, proto_side_t side, const char *name,
                           const char *const *oid_params, const char *sql,
                           const char *what, char *err, size_t errlen)
{
    pgutil_error_t e;
    PGresult *res = pgutil_query(conn, sql, 1, oid_params, side, &e);
    if (res) return res;
    char context[256];
    snprintf(context, sizeof context, "%s table %s - cannot read its %s",
             pgutil_side_name(side), name, what);
    pgutil_reason(err, errlen, context, &e);
    return NULL;
}

/* Resolve name (SQL syntax, search_path applies) on conn into *t;
 * *missing_out (may be NULL) tells that it does not exist. */
static bool s_table_load(PGconn *conn, proto_side_t side, const char *name,
                         s_table_t *t, bool *missing_out, char *err,
                         size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (missing_out) *missing_out = false;
    pgutil_error_t e;
    const char *params[] = {name};
    PGresult *res = pgutil_query(
        conn,
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind, "
        "pg_relation_size(c.oid) / current_setting('block_size')::int, "
        "c.reltuples, c.oid, n.nspname, c.relname FROM pg_class c JOIN "
        "pg_namespace n "
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
        if (missing_out) *missing_out = true;
        return log_reason(err, errlen, "%s table %s %s", pgutil_side_name(side),
                          name, "does not exist");
    }
    t->qname = strdup(PQgetvalue(res, 0, 0));
    t->nspname = strdup(PQgetvalue(res, 0, 5));
    t->relname = strdup(PQgetvalue(res, 0, 6));
    t->relkind = PQgetvalue(res, 0, 1)[0];
    t->pages = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    t->tuples = strtod(PQgetvalue(res, 0, 3), NULL);
    const char *oid_params[] = {PQgetvalue(res, 0, 4)};
    char oid[32];
    snprintf(oid, sizeof oid, "%s", oid_params[0]);
    PQclear(res);
    oid_params[0] = oid;

    res = s_catalog(conn, side, name, oid_params,
                    "SELECT attname, atttypid, atttypmod, "
                    "atttypid IN (20, 21, 23), attnotnull AND NOT "
                    "atthasdef AND attidentity = '' FROM pg_attribute "
                    "WHERE attrelid = $1::oid AND attnum > 0 AND NOT "
                    "attisdropped AND attgenerated = '' ORDER BY attnum",
                    "columns", err, errlen);
    if (!res) return false;
    t->ncols = PQntuples(res);
    t->cols = calloc((size_t)t->ncols + 1, sizeof *t->cols);
    for (int i = 0; t->cols && i < t->ncols; i++) {
        t->cols[i].name = strdup(PQgetvalue(res, i, 0));
        t->cols[i].type = strdup(PQgetvalue(res, i, 1));
        t->cols[i].typmod = strdup(PQgetvalue(res, i, 2));
        t->cols[i].is_int = PQgetvalue(res, i, 3)[0] == 't';
        t->cols[i].required = PQgetvalue(res, i, 4)[0] == 't';
    }
    PQclear(res);

    res = s_catalog(conn, side, name, oid_params,
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                    "WHERE i.indrelid = $1::oid AND i.indisprimary AND "
                    "i.indnkeyatts = 1 AND a.atttypid IN (20, 21, 23)",
                    "primary key", err, errlen);
    if (!res) return false;
    if (PQntuples(res) == 1) t->pk = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!t->cols || !t->qname || !t->nspname || !t->relname)
        return log_reason(err, errlen, "%s table %s %s", pgutil_side_name(side),
                          name, "- out of memory");
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

/* a, b and c joined (malloc'd), or NULL. */
static char *s_concat(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *buf = malloc(n);
    if (buf) snprintf(buf, n, "%s%s%s", a, b, c);
    return buf;
}

/* query without trailing whitespace and semicolons (malloc'd). */
static char *s_trim_query(const char *query)
{
    char *q = strdup(query);
    if (!q) return NULL;
    size_t n = strlen(q);
    while (n > 0 && (strchr(" \t\r\n\f\v;", q[n - 1])))
        q[--n] = '\0';
    return q;
}

/* The planner's row estimate for the query (< 0 when unknown). */
static double s_query_estimate(PGconn *src, const char *select)
{
    char *sql = s_concat("EXPLAIN (FORMAT JSON) ", select, "");
    pgutil_error_t e;
    PGresult *res =
        sql ? pgutil_query(src, sql, 0, NULL, PROTO_SIDE_SOURCE, &e) : NULL;
    free(sql);
    if (!res) return -1;
    const char *rows = strstr(PQgetvalue(res, 0, 0), "\"Plan Rows\":");
    double est = rows ? strtod(rows + strlen("\"Plan Rows\":"), NULL) : -1;
    PQclear(res);
    return est;
}

/* Describe query on src (inside the job's read-only snapshot transaction)
 * as if it were a table: its result columns, FROM item and row estimate.
 * Preparing "SELECT * FROM (<query>) AS q" refuses anything but a single
 * read-only SELECT without running it. */
static bool s_query_load(PGconn *src, const char *query, s_table_t *t,
                         bool *usage, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    char *trimmed = s_trim_query(query);
    /* The newlines end a trailing "-- comment" before the parenthesis. */
    t->qname = trimmed ? s_concat("(\n", trimmed, "\n) AS q") : NULL;
    char *select = t->qname ? s_concat("SELECT * FROM ", t->qname, "") : NULL;
    free(trimmed);
    t->relkind = 'q';
    bool ok = false;
    *usage = true;
    if (!select) {
        snprintf(err, errlen, "--query: out of memory");
        *usage = false;
        goto done;
    }
    if (!strcmp(t->qname, "(\n\n) AS q")) {
        snprintf(err, errlen, "--query: the query is empty");
        goto done;
    }
    PGresult *res = PQprepare(src, "", select, 0, NULL);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        PQclear(res);
        res = PQdescribePrepared(src, "");
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pgutil_error_t e;
        pgutil_capture(src, res, PROTO_SIDE_SOURCE, &e);
        PQclear(res);
        /* A statement that is not a SELECT fails as a syntax error once
         * wrapped; a data-modifying WITH as "not supported". */
        bool not_select =
            !strcmp(e.sqlstate, "42601") || !strcmp(e.sqlstate, "0A000");
        snprintf(err, errlen, "--query: %s%s",
                 not_select ? "not a single SELECT statement: " : "",
                 e.message);
        *usage = !e.conn_bad;
        goto done;
    }
    t->ncols = PQnfields(res);
    t->cols = calloc((size_t)t->ncols + 1, sizeof *t->cols);
    for (int i = 0; t->cols && i < t->ncols; i++) {
        char num[24];
        Oid type = PQftype(res, i);
        t->cols[i].name = strdup(PQfname(res, i));
        snprintf(num, sizeof num, "%u", type);
        t->cols[i].type = strdup(num);
        snprintf(num, sizeof num, "%d", PQfmod(res, i));
        t->cols[i].typmod = strdup(num);
        t->cols[i].is_int = type == SCHEMA_INT8_OID ||
                            type == SCHEMA_INT2_OID || type == SCHEMA_INT4_OID;
    }
    PQclear(res);
    if (!t->cols) {
        snprintf(err, errlen, "--query: out of memory");
        *usage = false;
        goto done;
    }
    for (int i = 0; i < t->ncols; i++)
        for (int k = 0; k < i; k++)
            if (!strcmp(t->cols[i].name, t->cols[k].name)) {
                snprintf(err, errlen,
                         "--query: column \"%s\" appears more than once in "
                         "the result: alias it",
                         t->cols[i].name);
                goto done;
            }
    t->tuples = s_query_estimate(src, select);
    ok = true;
done:
    free(select);
    if (!ok) s_table_free(t);
    return ok;
}

/* The source columns to copy: all of them, or those named in the
 * comma-separated list, in its order. *pick_out (malloc'd) holds indexes
 * into s->cols. */
static bool s_pick_columns(const s_table_t *s, const char *what,
                           const char *list, int **pick_out, int *n_out,
                           char *err, size_t errlen)
{
    *n_out = 0;
    int *pick = *pick_out = calloc((size_t)s->ncols + 1, sizeof *pick);
    char *copy = list ? strdup(list) : NULL;
    if (!pick || (list && !copy)) {
        free(copy);
        snprintf(err, errlen, "out of memory reading the schema");
        return false;
    }
    if (!list) {
        for (int i = 0; i < s->ncols; i++)
            pick[(*n_out)++] = i;
        return true;
    }
    bool ok = true;
    char *rest = copy, *name;
    while (ok && (name = strsep(&rest, ","))) {
        int found = -1;
        for (int i = 0; i < s->ncols && found < 0; i++)
            if (!strcmp(s->cols[i].name, name)) found = i;
        for (int k = 0; k < *n_out && found >= 0; k++)
            if (pick[k] == found) {
                snprintf(err, errlen, "--columns: \"%s\" is named twice", name);
                ok = false;
            }
        if (found < 0) {
            snprintf(err, errlen, "--columns: %s has no column \"%s\"", what,
                     name);
            ok = false;
        } else if (ok) {
            pick[(*n_out)++] = found;
        }
    }
    free(copy);
    return ok;
}

/* The split column: split_by, which must be an integer column of s, or
 * the table's integer primary key, or NULL. */
static bool s_split_column(PGconn *src, const s_table_t *s, const char *what,
                           const char *split_by, char **qsplit_out, char *err,
                           size_t errlen)
{
    *qsplit_out = NULL;
    if (!split_by) {
        if (s->pk && !(*qsplit_out = pgutil_quote_ident(src, s->pk))) {
            snprintf(err, errlen, "out of memory reading the schema");
            return false;
        }
        return true;
    }
    const s_col_t *c = s_find(s, split_by);
    if (!c) {
        snprintf(err, errlen, "--split-by: %s has no column \"%s\"", what,
                 split_by);
        return false;
    }
    if (!c->is_int) {
        snprintf(err, errlen,
                 "--split-by: column \"%s\" is not an integer column "
                 "(smallint, integer or bigint)",
                 split_by);
        return false;
    }
    if (!(*qsplit_out = pgutil_quote_ident(src, split_by))) {
        snprintf(err, errlen, "out of memory reading the schema");
        return false;
    }
    return true;
}

/* One column of CREATE TABLE: its quoted name and the source's name for
 * its type. A user-defined type must exist by that name on the target. */
static bool s_column_def(PGconn *src, PGconn *dst, const char *table,
                         const s_col_t *c, char **buf, size_t *len, char *err,
                         size_t errlen)
{
    pgutil_error_t e;
    const char *params[] = {c->type, c->typmod};
    PGresult *res = pgutil_query(src, "SELECT format_type($1::oid, $2::int)", 2,
                                 params, PROTO_SIDE_SOURCE, &e);
    if (!res) {
        snprintf(err, errlen,
                 "source: cannot name the type of column \"%s\": %s", c->name,
                 e.message);
        return false;
    }
    char *type = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    bool ok = type != NULL;
    if (ok && strtoll(c->type, NULL, 10) >= SCHEMA_FIRST_USER_OID) {
        const char *tparams[] = {type};
        res = pgutil_query(dst, "SELECT to_regtype($1) IS NOT NULL", 1, tparams,
                           PROTO_SIDE_TARGET, &e);
        ok = res && PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        if (!ok) {
            snprintf(err, errlen,
                     "target table %s does not exist and cannot be created: "
                     "column \"%s\" has type %s, which the target database "
                     "lacks (create the type or the table on the target "
                     "first)",
                     table, c->name, type);
            free(type);
            return false;
        }
    }
    char *qname = ok ? pgutil_quote_ident(src, c->name) : NULL;
    ok = qname && (*len == 0 || s_append(buf, len, ", ")) &&
         s_append(buf, len, qname) && s_append(buf, len, " ") &&
         s_append(buf, len, type);
    free(qname);
    free(type);
    if (!ok) snprintf(err, errlen, "out of memory reading the schema");
    return ok;
}

/* CREATE TABLE table (the picked columns of s, with the source's types; no
 * constraints, no defaults) on dst. The name is parsed and quoted by the
 * target, so it cannot carry anything but a name. */
static bool s_create_target(PGconn *src, PGconn *dst, const char *table,
                            const s_table_t *s, const int *pick, int npick,
                            char *err, size_t errlen)
{
    char *cols = NULL;
    size_t len = 0;
    for (int i = 0; i < npick; i++)
        if (!s_column_def(src, dst, table, &s->cols[pick[i]], &cols, &len, err,
                          errlen)) {
            free(cols);
            return false;
        }
    pgutil_error_t e;
    const char *params[] = {table, cols};
    PGresult *res = pgutil_query(
        dst,
        "SELECT format('CREATE TABLE %s (%s)', string_agg(quote_ident(p), "
        "'.' ORDER BY i), $2::text) FROM unnest(parse_ident($1)) WITH "
        "ORDINALITY AS u(p, i)",
        2, params, PROTO_SIDE_TARGET, &e);
    free(cols);
    bool ok =
        res && pgutil_exec(dst, PQgetvalue(res, 0, 0), PROTO_SIDE_TARGET, &e);
    PQclear(res);
    if (!ok) {
        snprintf(err, errlen, "target table %s cannot be created: %s", table,
                 e.message);
        return false;
    }
    log_info("created target table %s (%d columns)", table, npick);
    return true;
}

/* Target columns that must be copied but are not: NOT NULL, no default,
 * not identity. Lists them all in err. */
static bool s_check_required(const s_table_t *s, const int *pick, int npick,
                             const s_table_t *t, char *err, size_t errlen)
{
    char *names = NULL;
    size_t len = 0;
    for (int i = 0; i < t->ncols; i++) {
        bool copied = false;
        for (int k = 0; k < npick && !copied; k++)
            copied = !strcmp(s->cols[pick[k]].name, t->cols[i].name);
        if (copied || !t->cols[i].required) continue;
        if ((len && !s_append(&names, &len, ", ")) ||
            !s_append(&names, &len, "\"") ||
            !s_append(&names, &len, t->cols[i].name) ||
            !s_append(&names, &len, "\"")) {
            free(names);
            snprintf(err, errlen, "out of memory reading the schema");
            return false;
        }
    }
    if (!names) return true;
    snprintf(err, errlen,
             "target table %s: not copied, but NOT NULL without a default: %s",
             t->qname, names);
    free(names);
    return false;
}

/* Picked columns whose type (per ti, in pick order) COPY FROM cannot load:
 * all named in one line in err, after prefix, with the way out: in the
 * query or by --columns for a target to create (is_query tells which), on
 * the target itself for one that exists. */
static bool s_check_loadable(const s_table_t *s, const int *pick, int npick,
                             const typeinfo_t *ti, const char *prefix,
                             bool exists, bool is_query, char *err,
                             size_t errlen)
{
    char *list = NULL;
    size_t len = 0;
    const char *first = NULL;
    for (int i = 0; i < npick; i++) {
        if (!ti[i].unloadable) continue;
        const char *name = s->cols[pick[i]].name;
        bool inside = strcmp(ti[i].unloadable, ti[i].name) != 0;
        char item[PROTO_MAX_MESSAGE];
        snprintf(item, sizeof item, "%scolumn \"%s\" of type %s%s%s%s",
                 len ? ", " : "", name, ti[i].name, inside ? " (holds " : "",
                 inside ? ti[i].unloadable : "", inside ? ")" : "");
        if (!first) first = name;
        if (!s_append(&list, &len, item)) {
            free(list);
            snprintf(err, errlen, "out of memory reading the schema");
            return false;
        }
    }
    if (!list) return true;
    if (exists)
        snprintf(err, errlen,
                 "%s: COPY FROM cannot load %s; give such a column a type "
                 "that can be loaded (e.g. text) on the target",
                 prefix, list);
    else
        snprintf(err, errlen,
                 "%s: COPY FROM cannot load %s; %s (e.g. \"%s\"::text)%s",
                 prefix, list,
                 is_query ? "select such a column as text in the query"
                          : "copy such a column as text with --query",
                 first, is_query ? "" : " or leave it out with --columns");
    free(list);
    return false;
}

/* current_setting(name) on conn into out ("" when unreadable). */
static void s_setting(PGconn *conn, proto_side_t side, const char *name,
                      char *out, size_t n)
{
    pgutil_error_t e;
    const char *params[] = {name};
    PGresult *res =
        pgutil_query(conn, "SELECT current_setting($1)", 1, params, side, &e);
    snprintf(out, n, "%s", res ? PQgetvalue(res, 0, 0) : "");
    if (!res) pgutil_log_error("reading a setting", &e);
    PQclear(res);
}

/* Money prints and reads by lc_monetary (symbol, separators, decimals), so
 * between databases whose lc_monetary differ its text is not its value:
 * refuse, naming every picked column with money in it on either side,
 * when the copy is text or rows may be re-read as text. */
static bool s_check_money(PGconn *src, PGconn *dst, const s_table_t *s,
                          const int *pick, int npick, const typeinfo_t *si,
                          const typeinfo_t *ti, bool text, bool rows_as_text,
                          char *err, size_t errlen)
{
    if (!text && !rows_as_text) return true;
    char *names = NULL;
    size_t len = 0;
    const char *first = NULL;
    int count = 0;
    for (int i = 0; i < npick; i++) {
        if (!si[i].money && !ti[i].money) continue;
        if (!count++) first = s->cols[pick[i]].name;
        if ((len && !s_append(&names, &len, ", ")) ||
            !s_append(&names, &len, "\"") ||
            !s_append(&names, &len, s->cols[pick[i]].name) ||
            !s_append(&names, &len, "\"")) {
            free(names);
            snprintf(err, errlen, "out of memory reading the schema");
            return false;
        }
    }
    if (!names) return true;
    char lsrc[128], ldst[128];
    s_setting(src, PROTO_SIDE_SOURCE, "lc_monetary", lsrc, sizeof lsrc);
    s_setting(dst, PROTO_SIDE_TARGET, "lc_monetary", ldst, sizeof ldst);
    bool same = lsrc[0] && !strcmp(lsrc, ldst);
    if (!same)
        snprintf(err, errlen,
                 "%s %s %s money, whose text follows lc_monetary, which "
                 "differs (source '%s', target '%s'): %s would not carry it "
                 "exactly; make lc_monetary the same on both databases, or "
                 "select it as \"%s\"::numeric in a query",
                 count > 1 ? "columns" : "column", names,
                 count > 1 ? "hold" : "holds", lsrc, ldst,
                 text ? "text COPY"
                      : "--on-bad-rows reject, which re-reads rows as text,",
                 first);
    free(names);
    return same;
}

/* Whether a target created from the source's types gets binary COPY (the
 * same decision schema_load makes once it exists). */
static bool s_created_binary(const s_table_t *s, const int *pick, int npick,
                             const typeinfo_t *si)
{
    for (int i = 0; i < npick; i++)
        if (!si[i].binary ||
            strtoll(s->cols[pick[i]].type, NULL, 10) >= SCHEMA_FIRST_USER_OID)
            return false;
    return true;
}

/* Append a column name and its NUL to out->columns (as the wire carries
 * them). */
static bool s_add_name(schema_t *out, const char *name)
{
    size_t n = strlen(name) + 1;
    if (n > PROTO_MAX_NAME + 1) {
        log_error("column \"%s\": a name longer than %d bytes", name,
                  PROTO_MAX_NAME);
        return false;
    }
    char *c = realloc(out->columns, out->columns_len + n);
    if (!c) return false;
    memcpy(c + out->columns_len, name, n);
    out->columns = c;
    out->columns_len += n;
    return true;
}

/* Copy what out keeps of the source s and the target t: their names and
 * the source's size. False (err) when a target name is too long for the
 * wire or memory runs out. */
static bool s_fill_tables(schema_t *out, const s_table_t *s, const s_table_t *t,
                          char *err, size_t errlen)
{
    if (strlen(t->nspname) > PROTO_MAX_NAME ||
        strlen(t->relname) > PROTO_MAX_NAME) {
        snprintf(err, errlen, "target table %s: a name longer than %d bytes",
                 t->qname, PROTO_MAX_NAME);
        return false;
    }
    out->qsource = strdup(s->qname);
    out->qtarget = strdup(t->qname);
    out->target_schema = strdup(t->nspname);
    out->target_name = strdup(t->relname);
    if (!out->qsource || !out->qtarget || !out->target_schema ||
        !out->target_name) {
        snprintf(err, errlen, "out of memory reading the schema");
        return false;
    }
    out->relkind = s->relkind;
    out->pages = s->pages;
    out->reltuples = s->tuples;
    return true;
}

bool schema_load(PGconn *src, PGconn *dst, const schema_request_t *req,
                 schema_t *out, bool *usage_error_out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    *usage_error_out = false;
    s_table_t s = {0}, t = {0};
    int *pick = NULL, npick = 0;
    const char **types = NULL;
    typeinfo_t *si = NULL, *ti = NULL;
    bool ok = false;
    const char *tname = req->target_table ? req->target_table : req->table;
    if (req->query
            ? !s_query_load(src, req->query, &s, usage_error_out, err, errlen)
            : !s_table_load(src, PROTO_SIDE_SOURCE, req->table, &s, NULL, err,
                            errlen))
        goto done;
    char what[300];
    if (req->query)
        snprintf(what, sizeof what, "the query");
    else
        snprintf(what, sizeof what, "source table %s", s.qname);
    if (s.ncols == 0) {
        snprintf(err, errlen, "%s has no columns", what);
        *usage_error_out = req->query != NULL;
        goto done;
    }
    *usage_error_out = true;
    if (!s_pick_columns(&s, what, req->columns, &pick, &npick, err, errlen) ||
        !s_split_column(src, &s, what, req->split_by, &out->qsplit, err,
                        errlen))
        goto done;
    *usage_error_out = false;
    types = calloc((size_t)npick + 1, sizeof *types);
    if (!types) goto oom;
    for (int i = 0; i < npick; i++)
        types[i] = s.cols[pick[i]].type;
    if (!typeinfo_load(src, PROTO_SIDE_SOURCE, types, npick, &si)) {
        snprintf(err, errlen, "source: cannot read the columns' types");
        goto done;
    }
    char prefix[600];
    bool missing = false;
    if (!s_table_load(dst, PROTO_SIDE_TARGET, tname, &t, &missing, err,
                      errlen)) {
        snprintf(prefix, sizeof prefix, "target table %s cannot be created",
                 tname);
        if (!missing || !req->create_target ||
            !s_check_loadable(&s, pick, npick, si, prefix, false, req->query,
                              err, errlen) ||
            !s_check_money(src, dst, &s, pick, npick, si, si,
                           !s_created_binary(&s, pick, npick, si),
                           req->rows_as_text, err, errlen) ||
            !s_create_target(src, dst, tname, &s, pick, npick, err, errlen) ||
            !s_table_load(dst, PROTO_SIDE_TARGET, tname, &t, NULL, err, errlen))
            goto done;
    }
    out->binary = true;
    size_t len = 0;
    for (int i = 0; i < npick; i++) {
        const s_col_t *sc = &s.cols[pick[i]];
        const s_col_t *tc = s_find(&t, sc->name);
        if (!tc) {
            snprintf(err, errlen, "target table %s has no column \"%s\"",
                     t.qname, sc->name);
            goto done;
        }
        if (strcmp(sc->type, tc->type) || strcmp(sc->typmod, tc->typmod) ||
            strtoll(sc->type, NULL, 10) >= SCHEMA_FIRST_USER_OID)
            out->binary = false;
        types[i] = tc->type;
        char *q = pgutil_quote_ident(src, sc->name);
        bool appended = q && (i == 0 || s_append(&out->qcolumns, &len, ", ")) &&
                        s_append(&out->qcolumns, &len, q) &&
                        s_add_name(out, sc->name);
        free(q);
        if (!appended) goto oom;
        out->ncolumns++;
    }
    if (!typeinfo_load(dst, PROTO_SIDE_TARGET, types, npick, &ti)) {
        snprintf(err, errlen, "target: cannot read the columns' types");
        goto done;
    }
    snprintf(prefix, sizeof prefix, "target table %s", t.qname);
    if (!s_check_loadable(&s, pick, npick, ti, prefix, !missing, req->query,
                          err, errlen))
        goto done;
    /* Binary only where both sides have a binary form of every type
     * inside the column (aclitem has none); else text, as for a mismatch. */
    for (int i = 0; i < npick; i++)
        out->binary = out->binary && si[i].binary && ti[i].binary;
    if (!s_check_money(src, dst, &s, pick, npick, si, ti, !out->binary,
                       req->rows_as_text, err, errlen))
        goto done;
    if (!s_check_required(&s, pick, npick, &t, err, errlen)) goto done;
    ok = s_fill_tables(out, &s, &t, err, errlen);
    out->is_query = req->query != NULL;
    goto done;
oom:
    snprintf(err, errlen, "out of memory reading the schema");
done:
    typeinfo_free(&si, npick);
    typeinfo_free(&ti, npick);
    free(types);
    free(pick);
    s_table_free(&s);
    s_table_free(&t);
    if (!ok) schema_free(out);
    return ok;
}

bool schema_chunk_sql(const schema_t *s, const plan_chunk_t *c,
                      char **source_sql_out)
{
    char where[SCHEMA_SQL_MAX + 128];
    if (!plan_chunk_where(c, s->qsplit ? s->qsplit : "", where, sizeof where))
        return false;
    const char *fmt = s->binary ? MAPPER_COPY_BINARY_SUFFIX : "";
    size_t n = strlen(s->qcolumns) + strlen(s->qsource) + strlen(where) + 64;
    char *a = malloc(n);
    if (!a) {
        log_error("out of memory building chunk %lld SQL", (long long)c->id);
        return false;
    }
    snprintf(a, n, "COPY (SELECT %s FROM %s%s) TO STDOUT%s", s->qcolumns,
             s->qsource, where, fmt);
    *source_sql_out = a;
    return true;
}

bool schema_target_fields(const schema_t *s, proto_msg_t *m)
{
    m->columns = malloc(s->columns_len);
    m->key = s->key_len ? malloc(s->key_len) : NULL;
    if (!m->columns || (s->key_len && !m->key)) {
        log_error("out of memory for a chunk's column names");
        return false;
    }
    memcpy(m->columns, s->columns, s->columns_len);
    m->columns_len = s->columns_len;
    if (s->key_len) memcpy(m->key, s->key, s->key_len);
    m->key_len = s->key_len;
    snprintf(m->target_schema, sizeof m->target_schema, "%s", s->target_schema);
    snprintf(m->target_table, sizeof m->target_table, "%s", s->target_name);
    m->binary = s->binary;
    return true;
}

void schema_free(schema_t *s)
{
    if (!s) return;
    char *owned[] = {s->qsource,     s->qtarget, s->qcolumns, s->target_schema,
                     s->target_name, s->columns, s->key,      s->qsplit};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
    memset(s, 0, sizeof *s);
}
