/* coordinator/indexes.c - deferred index and constraint builds (indexes.h).
 * The ledger's indexes table holds, per job and item, the statements that
 * put the item back; a rebuild step runs in one transaction a DO block that
 * reads its statement from that row (locked), runs it and records the step,
 * so the SQL run is only ever what the ledger recorded from the catalogs. */
#include "indexes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgutil.h"

#define S_SQL_MAX 4096

/* The key columns of index i (alias i), as a comma-separated list of the
 * md5 of their names: comparable between databases, no quoting issues. */
#define S_KEY_COLS                                                             \
    "(SELECT string_agg(md5(a.attname), ',' ORDER BY a.attname) FROM "         \
    "pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY "         \
    "((i.indkey::int2[])[0:i.indnkeyatts - 1]))"

/* One item to defer, as found in the catalogs (every string malloc'd). */
typedef struct {
    char *name;     /* index or constraint name, as stored */
    char *build;    /* CREATE INDEX, or NULL */
    char *attach;   /* ALTER TABLE … ADD CONSTRAINT, or NULL */
    char *validate; /* ALTER TABLE … VALIDATE CONSTRAINT, or NULL */
    char *drop;     /* what removes it before the load */
    char *ts;       /* its tablespace, or NULL for the default */
    const char *kind;
} s_item_t;

typedef struct {
    s_item_t *v;
    size_t n, cap;
} s_items_t;

static void s_items_free(s_items_t *x)
{
    for (size_t i = 0; i < x->n; i++) {
        s_item_t *it = &x->v[i];
        free(it->name), free(it->build), free(it->attach);
        free(it->validate), free(it->drop), free(it->ts);
    }
    free(x->v);
}

static char *s_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static char *s_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static bool s_push(s_items_t *x, s_item_t it)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 8;
        s_item_t *v = realloc(x->v, cap * sizeof *v);
        if (!v) return false;
        x->v = v, x->cap = cap;
    }
    x->v[x->n++] = it;
    /* Every item has what drops it, and something that puts it back. */
    return it.name && it.drop && (it.build || it.attach) &&
           (strcmp(it.kind, "primary key") && strcmp(it.kind, "unique")
                ? true
                : it.build && it.attach) &&
           (strcmp(it.kind, "foreign key") || it.attach);
}

/* Whether every name hash of sub (a S_KEY_COLS list) is in set. */
static bool s_subset(const char *sub, const char *set)
{
    for (const char *p = sub; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool found = false;
        for (const char *q = set; *q && !found;) {
            const char *f = strchr(q, ',');
            size_t m = f ? (size_t)(f - q) : strlen(q);
            found = m == n && !strncmp(p, q, n);
            q += m + (f != NULL);
        }
        if (!found) return false;
        p += n + (e != NULL);
    }
    return *sub != '\0';
}

/* The ncolumns NUL-ended names at names as a text[] literal (malloc'd),
 * or NULL. */
static char *s_text_array(const char *names, int ncolumns)
{
    size_t len = 3;
    const char *p = names;
    for (int i = 0; i < ncolumns; i++, p += strlen(p) + 1)
        len += 2 * strlen(p) + 3;
    char *out = malloc(len), *o = out;
    if (!out) return NULL;
    *o++ = '{';
    p = names;
    for (int i = 0; i < ncolumns; i++, p += strlen(p) + 1) {
        if (i) *o++ = ',';
        *o++ = '"';
        for (const char *c = p; *c; c++) {
            if (*c == '"' || *c == '\\') *o++ = '\\';
            *o++ = *c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

/* Why auto keeps a unique index the source may not guarantee, or NULL. */
static const char *s_unsure_unique(const PGresult *src_keys, bool expr,
                                   const char *cols, bool is_query)
{
    if (is_query) return "the source is a query, which guarantees no key";
    if (expr)
        return "the source cannot be shown to guarantee it "
               "(expressions or NULLS NOT DISTINCT)";
    for (int r = 0; src_keys && r < PQntuples(src_keys); r++)
        if (s_subset(PQgetvalue(src_keys, r, 0), cols)) return NULL;
    return "the source table has no unique index on its columns";
}

enum {
    C_NAME,
    C_QNAME,
    C_IDEF,
    C_CONTYPE,
    C_QCON,
    C_CDEF,
    C_DEFERRABLE,
    C_DEFERRED,
    C_UNIQUE,
    C_PINNED,
    C_EXPR,
    C_COLS,
    C_FKDEP,
    C_TS
};

/* Append the items of the target's indexes (and constraints on them). */
static bool s_index_items(PGconn *dst, const PGresult *res,
                          const PGresult *src_keys,
                          const indexes_request_t *req, s_items_t *out)
{
    bool ok = true;
    for (int r = 0; r < PQntuples(res) && ok; r++) {
        const char *name = PQgetvalue(res, r, C_NAME);
        char ct = PQgetvalue(res, r, C_CONTYPE)[0];
        const char *why = NULL;
        if (PQgetvalue(res, r, C_PINNED)[0] == 't')
            why = "it is the replica identity, or not valid";
        else if (PQgetvalue(res, r, C_FKDEP)[0] == 't')
            why = "a foreign key of another table depends on it";
        else if (req->mode == MAPPER_DEFER_AUTO && ct == 'x')
            why = "the source does not guarantee an exclusion constraint";
        else if (req->mode == MAPPER_DEFER_AUTO &&
                 PQgetvalue(res, r, C_UNIQUE)[0] == 't')
            why = s_unsure_unique(
                src_keys,
                PQgetvalue(res, r, C_EXPR)[0] == 't' ||
                    strstr(PQgetvalue(res, r, C_IDEF), "NULLS NOT DISTINCT"),
                PQgetvalue(res, r, C_COLS), !req->qsource);
        if (why) {
            log_info("deferred indexes: keeping %s on %s: %s", name,
                     req->qtarget, why);
            continue;
        }
        const char *qcon = PQgetvalue(res, r, C_QCON);
        char *qidx = PQescapeIdentifier(dst, name, strlen(name));
        const char *defer = PQgetvalue(res, r, C_DEFERRABLE)[0] != 't' ? ""
                            : PQgetvalue(res, r, C_DEFERRED)[0] == 't'
                                ? " DEFERRABLE INITIALLY DEFERRED"
                                : " DEFERRABLE";
        s_item_t it = {.name = strdup(name), .kind = "index"};
        if (!PQgetisnull(res, r, C_TS))
            it.ts = strdup(PQgetvalue(res, r, C_TS));
        if (ct == 'p' || ct == 'u') {
            it.kind = ct == 'p' ? "primary key" : "unique";
            it.build = strdup(PQgetvalue(res, r, C_IDEF));
            it.attach = s_printf("ALTER TABLE %s ADD CONSTRAINT %s %s USING "
                                 "INDEX %s%s",
                                 req->qtarget, qcon,
                                 ct == 'p' ? "PRIMARY KEY" : "UNIQUE",
                                 qidx ? qidx : "", defer);
        } else if (ct == 'x') {
            it.kind = "exclusion";
            it.attach =
                s_printf("ALTER TABLE %s ADD CONSTRAINT %s %s", req->qtarget,
                         qcon, PQgetvalue(res, r, C_CDEF));
        } else {
            it.build = strdup(PQgetvalue(res, r, C_IDEF));
        }
        it.drop = ct ? s_printf("ALTER TABLE %s DROP CONSTRAINT %s",
                                req->qtarget, qcon)
                     : s_printf("DROP INDEX %s", PQgetvalue(res, r, C_QNAME));
        PQfreemem(qidx);
        ok = s_push(out, it);
    }
    return ok;
}

/* Append the target's foreign keys (NOT VALID, then VALIDATE). */
static bool s_fk_items(const PGresult *res, const indexes_request_t *req,
                       s_items_t *out)
{
    const char *qtarget = req->qtarget;
    bool ok = true;
    for (int r = 0; r < PQntuples(res) && ok; r++) {
        if (req->mode == MAPPER_DEFER_AUTO && req->rejects) {
            log_info("deferred indexes: keeping %s on %s: with "
                     "--on-bad-rows reject, rows breaking it are set aside "
                     "as they load",
                     PQgetvalue(res, r, 0), qtarget);
            continue;
        }
        const char *qcon = PQgetvalue(res, r, 1);
        bool valid = PQgetvalue(res, r, 3)[0] == 't';
        s_item_t it = {.name = strdup(PQgetvalue(res, r, 0)),
                       .kind = "foreign key"};
        it.attach =
            s_printf("ALTER TABLE %s ADD CONSTRAINT %s %s%s", qtarget, qcon,
                     PQgetvalue(res, r, 2), valid ? " NOT VALID" : "");
        if (valid)
            it.validate = s_printf("ALTER TABLE %s VALIDATE CONSTRAINT %s",
                                   qtarget, qcon);
        it.drop = s_printf("ALTER TABLE %s DROP CONSTRAINT %s", qtarget, qcon);
        ok = s_push(out, it);
    }
    return ok;
}

/* Read the catalogs: the target's indexes and foreign keys into items,
 * or nothing when the table is not to be touched (logged why). */
static bool s_read_items(PGconn *dst, PGconn *src, const indexes_request_t *req,
                         s_items_t *items, char *err, size_t errlen)
{
    pgutil_error_t e;
    const char *p[] = {req->qtarget};
    char sql[S_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT c.relkind::text, EXISTS (SELECT 1 FROM %s), "
             "pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = "
             "$1::regclass",
             req->qtarget);
    PGresult *t = pgutil_query(dst, sql, 1, p, PROTO_SIDE_TARGET, &e);
    if (!t) {
        snprintf(err, errlen, "deferred indexes: %s", e.message);
        return false;
    }
    const char *why = PQgetvalue(t, 0, 0)[0] == 'p' ? "is partitioned"
                      : !req->truncate && PQgetvalue(t, 0, 1)[0] == 't'
                          ? "is not empty"
                      : PQgetvalue(t, 0, 2)[0] != 't'
                          ? "is not this role's own (only its owner may drop "
                            "its indexes)"
                          : NULL;
    if (why) log_info("deferred indexes: none: %s %s", req->qtarget, why);
    PQclear(t);
    if (why) return true;
    PGresult *keys = NULL;
    if (req->qsource && req->mode == MAPPER_DEFER_AUTO) {
        /* The source's unique keys on columns that are all copied. */
        char *copied = s_text_array(req->columns, req->ncolumns);
        const char *sp[] = {req->qsource, copied};
        keys = copied ? pgutil_query(
                            src,
                            "SELECT " S_KEY_COLS " FROM pg_index i WHERE "
                            "i.indrelid = $1::regclass AND i.indisunique AND "
                            "i.indisvalid AND i.indpred IS NULL AND "
                            "i.indexprs IS NULL AND NOT EXISTS (SELECT 1 "
                            "FROM pg_attribute a WHERE a.attrelid = "
                            "i.indrelid AND a.attnum = ANY ((i.indkey::int2[])"
                            "[0:i.indnkeyatts - 1]) AND a.attname <> ALL "
                            "($2::text[]))",
                            2, sp, PROTO_SIDE_SOURCE, &e)
                      : NULL;
        free(copied);
        if (!keys) {
            snprintf(err, errlen, "deferred indexes: source: %s",
                     copied ? e.message : "out of memory");
            return false;
        }
    }
    PGresult *idx = pgutil_query(
        dst,
        "SELECT ic.relname, format('%I.%I', n.nspname, ic.relname), "
        "pg_get_indexdef(i.indexrelid), coalesce(c.contype::text, ''), "
        "coalesce(quote_ident(c.conname), ''), coalesce(pg_get_constraintdef("
        "c.oid), ''), coalesce(c.condeferrable, false), coalesce("
        "c.condeferred, false), i.indisunique, i.indisreplident OR NOT "
        "i.indisvalid OR NOT i.indisready, i.indexprs IS NOT NULL, "
        "coalesce(" S_KEY_COLS ", ''), EXISTS (SELECT 1 FROM pg_constraint f "
        "WHERE f.contype = 'f' AND f.conindid = i.indexrelid AND f.conrelid "
        "<> i.indrelid), ts.spcname FROM pg_index i JOIN pg_class ic ON "
        "ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = "
        "ic.relnamespace LEFT JOIN pg_constraint c ON c.conindid = "
        "i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', "
        "'u', 'x') LEFT JOIN pg_tablespace ts ON ts.oid = ic.reltablespace "
        "WHERE i.indrelid = $1::regclass ORDER BY c.contype = 'p' IS NOT "
        "TRUE, c.contype IS NULL, ic.relname",
        1, p, PROTO_SIDE_TARGET, &e);
    PGresult *fks =
        idx ? pgutil_query(dst,
                           "SELECT conname, quote_ident(conname), "
                           "pg_get_constraintdef(oid), convalidated FROM "
                           "pg_constraint WHERE conrelid = $1::regclass AND "
                           "contype = 'f' ORDER BY conname",
                           1, p, PROTO_SIDE_TARGET, &e)
            : NULL;
    bool ok = idx && fks;
    if (!ok) snprintf(err, errlen, "deferred indexes: %s", e.message);
    if (ok && (!s_index_items(dst, idx, keys, req, items) ||
               !s_fk_items(fks, req, items))) {
        snprintf(err, errlen, "deferred indexes: out of memory");
        ok = false;
    }
    PQclear(keys), PQclear(idx), PQclear(fks);
    return ok;
}

/* A SQL literal for s (NULL: the word NULL); malloc'd, or NULL. */
static char *s_lit(PGconn *c, const char *s)
{
    if (!s) return strdup("NULL");
    char *q = PQescapeLiteral(c, s, strlen(s));
    char *r = q ? strdup(q) : NULL;
    PQfreemem(q);
    return r;
}

/* Into *sql (malloc'd): before (or nothing), the statements recording
 * items from item id base + 1 on, then dropping them last one first. */
static bool s_drop_sql(ledger_t *l, const s_items_t *items, long base,
                       const char *qtarget, const char *before, char **sql)
{
    char *job = s_lit(l->conn, l->job_id), *tab = s_lit(l->conn, qtarget);
    char *s = s_printf("%s%sDELETE FROM %s.indexes WHERE job_id = %s AND "
                       "step = %d;",
                       before ? before : "", before ? "; " : "", l->qschema,
                       job ? job : "", INDEXES_STEP_DONE);
    for (size_t i = 0; s && job && tab && i < items->n; i++) {
        const s_item_t *it = &items->v[i];
        char *v[] = {s_lit(l->conn, it->name), s_lit(l->conn, it->build),
                     s_lit(l->conn, it->attach), s_lit(l->conn, it->validate),
                     s_lit(l->conn, it->ts)};
        char *next = NULL;
        if (v[0] && v[1] && v[2] && v[3] && v[4])
            next = s_printf("%s INSERT INTO %s.indexes (job_id, item_id, "
                            "name, kind, table_name, build_sql, attach_sql, "
                            "validate_sql, tablespace) VALUES (%s, %ld, %s, "
                            "'%s', %s, %s, %s, %s, %s);",
                            s, l->qschema, job, base + 1 + (long)i, v[0],
                            it->kind, tab, v[1], v[2], v[3], v[4]);
        for (int k = 0; k < 5; k++)
            free(v[k]);
        free(s);
        s = next;
    }
    for (size_t i = items->n; s && i-- > 0;) {
        char *next = s_printf("%s %s;", s, items->v[i].drop);
        free(s);
        s = next;
    }
    free(job), free(tab);
    *sql = s;
    return s != NULL;
}

/* Set dst's search_path to value (NULL: pg_catalog alone, so that the
 * definitions read name every object with its schema and mean the same in
 * any session), keeping the old one in saved (n bytes) when given. */
static bool s_search_path(PGconn *dst, const char *value, char *saved, size_t n)
{
    const char *p[] = {value ? value : "pg_catalog"};
    pgutil_error_t e;
    PGresult *r = pgutil_query(dst,
                               "SELECT current_setting('search_path'), "
                               "set_config('search_path', $1, false)",
                               1, p, PROTO_SIDE_TARGET, &e);
    if (!r) pgutil_log_error("deferred indexes: search_path", &e);
    if (r && saved) snprintf(saved, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return r != NULL;
}

bool indexes_plan_drop(ledger_t *l, PGconn *dst, PGconn *src,
                       const indexes_request_t *req, char **sql_out, char *err,
                       size_t errlen)
{
    *sql_out = NULL;
    err[0] = '\0';
    s_items_t items = {0};
    char path[S_SQL_MAX] = "";
    bool ok = req->mode == MAPPER_DEFER_OFF ||
              (s_search_path(dst, NULL, path, sizeof path) &&
               s_read_items(dst, src, req, &items, err, errlen));
    if (path[0] && !s_search_path(dst, path, NULL, 0)) ok = false;
    if (!ok && !err[0])
        snprintf(err, errlen,
                 "deferred indexes: cannot set "
                 "the search_path");
    long base = 0;
    if (ok && items.n) {
        char sql[S_SQL_MAX];
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(max(item_id), 0) FROM %s.indexes WHERE "
                 "job_id = $1",
                 l->qschema);
        const char *p[] = {l->job_id};
        pgutil_error_t e;
        PGresult *res = pgutil_query(dst, sql, 1, p, PROTO_SIDE_TARGET, &e);
        if (res) base = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        ok = res != NULL;
        if (!ok) snprintf(err, errlen, "ledger: %s", e.message);
    }
    if (ok && items.n &&
        !s_drop_sql(l, &items, base, req->qtarget, req->truncate, sql_out)) {
        snprintf(err, errlen, "deferred indexes: out of memory");
        ok = false;
    }
    if (ok && !items.n && req->truncate &&
        !(*sql_out = strdup(req->truncate))) {
        snprintf(err, errlen, "out of memory");
        ok = false;
    }
    if (ok && items.n) {
        char names[512] = "";
        size_t len = 0;
        for (size_t i = 0; i < items.n && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                    i ? ", " : "", items.v[i].name);
        log_info("deferred indexes: %zu on %s built after the load: %s",
                 items.n, req->qtarget, names);
    }
    s_items_free(&items);
    return ok;
}

/* Count job_id's items with step < INDEXES_STEP_DONE (-1: logged error). */
static int s_count(ledger_t *l, const char *job_id)
{
    char sql[S_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s.indexes WHERE job_id = $1 AND step < %d",
             l->qschema, INDEXES_STEP_DONE);
    const char *p[] = {job_id};
    pgutil_error_t e;
    PGresult *res = pgutil_query(l->conn, sql, 1, p, PROTO_SIDE_TARGET, &e);
    if (!res) {
        pgutil_log_error("ledger: deferred indexes", &e);
        return -1;
    }
    int n = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

int indexes_pending(ledger_t *l)
{
    return s_count(l, l->job_id);
}

void indexes_warn_pending(ledger_t *l, const char *job_id)
{
    int n = s_count(l, job_id);
    if (n > 0)
        log_warn("job %s: %d deferred index(es) or constraint(s) of its "
                 "target are missing (dropped for the load, not rebuilt "
                 "yet): --resume restores them (a job that cannot be "
                 "resumed: run it again with --restart --truncate)",
                 job_id, n);
}

void indexes_names(ledger_t *l, char *out, size_t n)
{
    out[0] = '\0';
    char sql[S_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(string_agg(name, ',' ORDER BY item_id), '') "
             "FROM %s.indexes WHERE job_id = $1",
             l->qschema);
    const char *p[] = {l->job_id};
    pgutil_error_t e;
    PGresult *res = pgutil_query(l->conn, sql, 1, p, PROTO_SIDE_TARGET, &e);
    if (res) snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}
