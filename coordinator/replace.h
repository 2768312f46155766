/* coordinator/replace.h - --mode replace: the rows are loaded into a new
 * table beside the target, which takes the target's place in one short
 * transaction once every chunk has committed. */
#ifndef MAPPER_REPLACE_H
#define MAPPER_REPLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "schema.h"

/* Before the job: refuse (false, one line naming it in err) a target whose
 * dependents or properties the swap cannot carry over (its owner, grants
 * and what depends on it: replace_deps_check), partitions or
 * inheritance, exclusion or deferrable constraints. On success
 * the chunks' rows go to the new table (s->target_name is its name). */
bool replace_check(PGconn *dst, schema_t *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* A fresh run: (re)create the new table with the target's columns,
 * defaults, identity, check and not-null constraints, storage, statistics and
 * comments, and no index. A resumed run keeps it, and makes it only when
 * it is missing and none of the job's chunks (done_chunks) is done. */
bool replace_begin(ledger_t *l, const schema_t *s, bool resumed,
                   int64_t done_chunks, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* After every chunk committed: build the target's indexes, constraints
 * and foreign keys on the new table (one transaction, repeatable), then in
 * one short transaction drop the target and its views, give the new
 * table, its indexes and constraints their names, the target's owner,
 * grants, comments, policies, triggers, sequences and publications, and
 * the foreign keys into it, and make the views again over it
 * (replace_deps_lock); after it, validate those foreign keys, each in a
 * transaction of its own (replace_validate_run). *swapped_out: the swap
 * committed (also when false is returned: a foreign key could not be
 * validated and stays NOT VALID). When the new table is gone already (a
 * run killed after its swap), only the validations left are done.
 * *swap_s_out is how long the swap's
 * transaction took, from before its BEGIN to after its COMMIT (its wait
 * for the locks included): readers of the target wait for no longer; 0
 * when there was none. */
bool replace_swap(ledger_t *l, const schema_t *s, bool *swapped_out,
                  double *swap_s_out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
