/* coordinator/schema.h - what the coordinator learns from the catalogs:
 * the source table or query, the target table (created when missing),
 * their matching columns, the split key, and the COPY statements a chunk
 * runs. */
#ifndef MAPPER_SCHEMA_H
#define MAPPER_SCHEMA_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "plan.h"
#include "proto.h"

typedef struct {
    char *qsource;       /* quoted "schema"."table" on the source, or for a
                            query the FROM item "(\n<query>\n) AS q" */
    bool is_query;       /* the source is a query (qsource as above) */
    char *qtarget;       /* quoted "schema"."table" on the target */
    char *qcolumns;      /* quoted, comma-separated column list */
    char *target_schema; /* the target's schema name (unquoted) */
    char *target_name;   /* the target table's name (unquoted) */
    char *columns;       /* the column names, each ended by a NUL */
    size_t columns_len;  /* bytes at columns */
    int ncolumns;        /* columns copied */
    char *key;           /* upsert: key names, each ended by a NUL, or NULL */
    size_t key_len;      /* bytes at key, 0 when not an upsert */
    bool binary;         /* every column's type matches and has a binary
                            form on both sides: binary COPY */
    char relkind;        /* source relkind: 'r' table, 'p' partitioned, ... */
    char *qsplit;        /* quoted split column, or NULL: no integer key */
    int64_t pages;       /* source heap pages (ctid planning) */
    double reltuples;    /* planner's row estimate, < 0 unknown */
} schema_t;

/* What schema_load is asked to find. */
typedef struct {
    const char *table;        /* source [SCHEMA.]TABLE, or NULL with query */
    const char *query;        /* source SELECT, or NULL */
    const char *target_table; /* target table; NULL: same as table */
    const char *split_by;     /* column to split on, or NULL */
    const char *columns;      /* comma-separated columns to copy; NULL: all */
    bool create_target;       /* create the target table when missing */
    bool rows_as_text;        /* rows may be re-read as text (bad rows set
                                 aside) even when the copy is binary */
} schema_request_t;

/* Look the source table up (or describe the query, inside src's open
 * transaction: a query that is not a single SELECT is refused there), pick
 * the columns, find the target table (creating it when missing and
 * allowed) and match columns by name. On failure writes one line naming
 * the object into err and returns false; *usage_error_out tells a bad
 * request (exit 2: bad query, split_by or columns) from a missing or
 * unusable object (exit 3). */
bool schema_load(PGconn *src, PGconn *dst, const schema_request_t *req,
                 schema_t *out, bool *usage_error_out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Build the chunk's "COPY (SELECT ...) TO STDOUT" statement (malloc'd). */
bool schema_chunk_sql(const schema_t *s, const plan_chunk_t *c,
                      char **source_sql_out)
    __attribute__((warn_unused_result));

/* Fill m's target fields (target_schema, target_table, columns, binary,
 * key):
 * where a chunk's rows go, as names the worker quotes itself. */
bool schema_target_fields(const schema_t *s, proto_msg_t *m)
    __attribute__((warn_unused_result));

void schema_free(schema_t *s);

#endif
