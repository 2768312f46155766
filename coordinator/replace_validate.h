/* coordinator/replace_validate.h - the foreign keys into the target that
 * the swap of --mode replace adds back NOT VALID: kept in the ledger
 * (table "validations") by the swap's transaction, validated after it,
 * each in a transaction of its own that also forgets it, so that a run
 * killed or failed in between is finished by --resume. */
#ifndef MAPPER_REPLACE_VALIDATE_H
#define MAPPER_REPLACE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "ledger.h"

/* Create the ledger's table of foreign keys to validate, if missing. */
bool replace_validate_table(ledger_t *l, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Inside the swap's transaction, before the foreign keys into qtarget are
 * dropped: remember (by their table's qualified name and their name) the
 * valid ones, in place of what the job remembered before. */
bool replace_validate_record(ledger_t *l, const char *qtarget, char *err,
                             size_t errlen) __attribute__((warn_unused_result));

/* Validate every foreign key remembered for the job that is still NOT
 * VALID, and forget each one validated or gone. false (err names the
 * first that failed and why) leaves it remembered, still NOT VALID. */
bool replace_validate_run(ledger_t *l, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
