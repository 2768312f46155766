/* coordinator/typeinfo.c - a column type's COPY abilities (typeinfo.h). */
#include "typeinfo.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgutil.h"

/* Input functions that refuse every value (PostgreSQL's source: the
 * planner's and statistics' internal forms, a DDL command handle, BRIN
 * summaries and GiST's tsvector signature exist only to be printed).
 * Matched by name so that the list holds on servers that lack some. A
 * pseudo-type (anyarray, record, ...) is refused by its typtype. */
#define TYPEINFO_UNLOADABLE_INPUTS                                             \
    "{pg_node_tree_in,pg_ndistinct_in,pg_dependencies_in,pg_mcv_list_in,"      \
    "pg_ddl_command_in,brin_bloom_summary_in,brin_minmax_multi_summary_in,"    \
    "gtsvectorin}"

/* Walk each type down to what it is made of: array elements (typelem),
 * a domain's base type, a composite's attributes, a range's subtype. */
#define TYPEINFO_SQL                                                           \
    "WITH RECURSIVE walk(top, oid) AS ("                                       \
    " SELECT i, t FROM unnest($1::oid[]) WITH ORDINALITY AS u(t, i)"           \
    " UNION SELECT w.top, s.sub FROM walk w"                                   \
    " JOIN pg_type ty ON ty.oid = w.oid, LATERAL ("                            \
    "  SELECT ty.typelem WHERE ty.typelem <> 0"                                \
    "  UNION ALL SELECT ty.typbasetype WHERE ty.typbasetype <> 0"              \
    "  UNION ALL SELECT a.atttypid FROM pg_attribute a"                        \
    "   WHERE a.attrelid = ty.typrelid AND a.attnum > 0"                       \
    "   AND NOT a.attisdropped"                                                \
    "  UNION ALL SELECT r.rngsubtype FROM pg_range r"                          \
    "   WHERE r.rngtypid = ty.oid) AS s(sub))"                                 \
    " SELECT w.top, format_type(min(u.t), NULL),"                              \
    " coalesce(bool_and(ty.typsend <> 0 AND ty.typreceive <> 0), false),"      \
    " coalesce(bool_or(ty.oid = 'money'::regtype), false),"                    \
    " min(format_type(ty.oid, NULL)) FILTER (WHERE ty.typtype = 'p'"           \
    "  OR ty.typinput::text = ANY ($2::text[]))"                               \
    " FROM walk w JOIN unnest($1::oid[]) WITH ORDINALITY AS u(t, i)"           \
    " ON u.i = w.top LEFT JOIN pg_type ty ON ty.oid = w.oid"                   \
    " GROUP BY w.top ORDER BY w.top"

/* "{a,b,c}" from n OIDs as text (malloc'd), or NULL. */
static char *s_oid_array(const char *const *types, int n)
{
    size_t len = 3;
    for (int i = 0; i < n; i++)
        len += strlen(types[i]) + 1;
    char *buf = malloc(len);
    if (!buf) return NULL;
    size_t at = 0;
    buf[at++] = '{';
    for (int i = 0; i < n; i++) {
        if (i) buf[at++] = ',';
        size_t k = strlen(types[i]);
        memcpy(buf + at, types[i], k);
        at += k;
    }
    buf[at++] = '}';
    buf[at] = '\0';
    return buf;
}

bool typeinfo_load(PGconn *conn, proto_side_t side, const char *const *types,
                   int n, typeinfo_t **out_p)
{
    *out_p = NULL;
    char *oids = s_oid_array(types, n);
    typeinfo_t *out = calloc((size_t)n + 1, sizeof *out);
    if (!oids || !out) {
        free(oids);
        free(out);
        log_error("%s: out of memory reading column types",
                  pgutil_side_name(side));
        return false;
    }
    pgutil_error_t e;
    const char *params[] = {oids, TYPEINFO_UNLOADABLE_INPUTS};
    PGresult *res = pgutil_query(conn, TYPEINFO_SQL, 2, params, side, &e);
    free(oids);
    if (!res || PQntuples(res) != n) {
        if (res) snprintf(e.message, sizeof e.message, "unexpected rows");
        pgutil_log_error("reading column types", &e);
        PQclear(res);
        free(out);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        out[i].name = strdup(PQgetvalue(res, i, 1));
        out[i].binary = PQgetvalue(res, i, 2)[0] == 't';
        out[i].money = PQgetvalue(res, i, 3)[0] == 't';
        if (!PQgetisnull(res, i, 4))
            ok = ok && (out[i].unloadable = strdup(PQgetvalue(res, i, 4)));
        ok = ok && out[i].name;
    }
    PQclear(res);
    if (!ok) {
        log_error("%s: out of memory reading column types",
                  pgutil_side_name(side));
        typeinfo_free(&out, n);
    }
    *out_p = out;
    return ok;
}

void typeinfo_free(typeinfo_t **self_p, int n)
{
    if (!self_p || !*self_p) return;
    for (int i = 0; i < n; i++) {
        free((*self_p)[i].name);
        free((*self_p)[i].unloadable);
    }
    free(*self_p);
    *self_p = NULL;
}
