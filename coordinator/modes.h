/* coordinator/modes.h - write modes (--mode): checking an upsert's key
 * against the target, the ledger columns it needs, and its counts. */
#ifndef MAPPER_MODES_H
#define MAPPER_MODES_H

#include <stdbool.h>
#include <stddef.h>

#include "ledger.h"
#include "mapper.h"
#include "progress.h"
#include "schema.h"

/* The write-mode flags that cannot go together (--key without upsert,
 * upsert without --key or with --no-ledger, replace with --truncate or
 * --no-ledger), before anything is connected: false with one line in err
 * (a usage error). */
bool modes_validate(const mapper_job_spec *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* After modes_validate, check spec's mode and key against the loaded schema:
 * with upsert, every
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

/* With job_id locked, before the ledger checks it: give the ledger the
 * columns the modes use (added once: ALTER TABLE waits for every running
 * job's chunk transactions), and decide the run. A finished job run again
 * (without --resume or --restart) starts its next run under upsert (*mode
 * becomes LEDGER_RESTART), and is refused under append with a message
 * naming what to do instead. *run_out is the run this one is: 1 for a new
 * job, the same on --resume, the next after a restart. */
bool modes_start(ledger_t *l, const mapper_job_spec *spec, const char *job_id,
                 ledger_mode_t *mode, int64_t *run_out, char *err,
                 size_t errlen) __attribute__((warn_unused_result));

/* After the job's plan is recorded (l's conn is NULL without a ledger):
 * record
 * out->run as the job's run (a failure is only logged: the number is only
 * reported), and for a replace make the new table (a fresh run). False
 * with out->error and out->exit_code set when that fails. */
bool modes_run(ledger_t *l, const mapper_job_spec *spec, const schema_t *s,
               mapper_result *out) __attribute__((warn_unused_result));

/* Whether --truncate of the existing job l would discard chunks it has
 * committed that --resume could still use: an unfinished job that can be
 * resumed (a finished one is copied afresh, as asked). */
bool modes_truncate_refused(ledger_t *l, const mapper_result *out);

/* After the chunks (rc is the job's exit status so far): set out's mode;
 * for a replace that succeeded, enter progress's swap phase, build the new
 * table's indexes and swap it in (out->swapped and out->swap_s, also given
 * to progress; MAPPER_EXIT_CANNOT_RUN with out->error when that fails, and
 * --resume tries again); for an upsert, read the rows inserted and updated
 * as the committed chunks recorded them (logged when unreadable). Returns
 * the exit status. */
int modes_finish(ledger_t *l, const mapper_job_spec *spec, const schema_t *s,
                 int rc, progress_t *progress, mapper_result *out);

#endif
