/* worker/upsert.h - upsert mode (--mode upsert): a chunk's rows are copied
 * into a staging table and merged into the target on the key, in the
 * chunk's transaction. Every statement is built here from names quoted by
 * libpq. */
#ifndef MAPPER_UPSERT_H
#define MAPPER_UPSERT_H

#include <stdbool.h>
#include <stdint.h>

#include "copy.h"

/* The staging table: the session's own, dropped at the end of the
 * transaction. */
#define UPSERT_STAGE_SCHEMA "pg_temp"
#define UPSERT_STAGE_TABLE  "mapper_stage"

/* Whether job merges on a key (an upsert) rather than appending. */
bool upsert_is_on(const copy_job_t *job);

/* In the open target transaction: create the staging table, with the
 * target's columns, defaults and check constraints (so that a row the
 * target refuses is refused by the COPY, where bad rows can be set
 * aside), dropped at COMMIT or ROLLBACK. */
bool upsert_stage(PGconn *dst, const copy_job_t *job, void *arg,
                  pgutil_error_t *err) __attribute__((warn_unused_result));

/* Merge the staging table into the target: rows whose key is new are
 * inserted, rows whose key exists update the copied non-key columns when
 * a value differs (an unchanged row is not rewritten and not counted).
 * With a ledger, the counts go into the chunk's ledger row, in the same
 * transaction (the coordinator reads them there). */
bool upsert_merge(PGconn *dst, const copy_job_t *job, void *arg,
                  pgutil_error_t *err) __attribute__((warn_unused_result));

#endif
