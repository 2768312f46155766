/* coordinator/modes.h - write modes (--mode): checking an upsert's key
 * against the target, the ledger columns it needs, and its counts. */
#ifndef MAPPER_MODES_H
#define MAPPER_MODES_H

#include <stdbool.h>
#include <stddef.h>

#include "ledger.h"
#include "mapper.h"
#include "schema.h"

/* Check spec's mode and key against the loaded schema: with upsert, every
 * --key column is copied and the target has a valid, immediate unique
 * index (or constraint) on exactly those columns; the key then goes into
 * s->key for the assignments. On failure writes one line naming the key
 * and the table into err; *usage_out tells a bad request (exit 2) from a
 * target that cannot take it (exit 3). */
bool modes_prepare(const mapper_job_spec *spec, PGconn *dst, schema_t *s,
                   bool *usage_out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The --defer-indexes mode the job runs with: an upsert keeps every
 * index (ON CONFLICT needs the key's unique index, and it is checked
 * before the load). */
mapper_defer_indexes modes_defer_indexes(const mapper_job_spec *spec);

/* Give the ledger's chunks the columns an upsert counts into (added once:
 * ALTER TABLE waits for every running job's chunk transactions). Nothing
 * for append. */
bool modes_ledger(ledger_t *l, const mapper_job_spec *spec, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Fill out's mode and, for an upsert, the rows inserted and updated as
 * the job's committed chunks recorded them (logged when unreadable). */
void modes_counts(ledger_t *l, const mapper_job_spec *spec, mapper_result *out);

#endif
