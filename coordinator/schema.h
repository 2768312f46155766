/* coordinator/schema.h - what the coordinator learns from the catalogs:
 * the source and target tables, their matching columns, the split key, and
 * the COPY statements a chunk runs. */
#ifndef MAPPER_SCHEMA_H
#define MAPPER_SCHEMA_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "plan.h"

typedef struct {
    char *qsource;    /* quoted "schema"."table" on the source */
    char *qtarget;    /* quoted "schema"."table" on the target */
    char *qcolumns;   /* quoted, comma-separated column list */
    int ncolumns;     /* columns copied */
    bool binary;      /* every column's type matches: binary COPY */
    char relkind;     /* source relkind: 'r' table, 'p' partitioned, ... */
    char *qsplit;     /* quoted split column, or NULL: no integer key */
    int64_t pages;    /* source heap pages (ctid planning) */
    double reltuples; /* planner's row estimate, < 0 unknown */
} schema_t;

/* Look both tables up and match columns by name. On failure writes one line
 * naming the object into err and returns false. split_by (may be NULL)
 * names the column to split on; *usage_error_out tells a bad split_by
 * (exit 2) from a missing object (exit 3). */
bool schema_load(PGconn *src, PGconn *dst, const char *table,
                 const char *target_table, const char *split_by, schema_t *out,
                 bool *usage_error_out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Build the chunk's "COPY (SELECT ...) TO STDOUT" and "COPY ... FROM STDIN"
 * statements (malloc'd). */
bool schema_chunk_sql(const schema_t *s, const plan_chunk_t *c,
                      char **source_sql_out, char **target_sql_out)
    __attribute__((warn_unused_result));

void schema_free(schema_t *s);

#endif
