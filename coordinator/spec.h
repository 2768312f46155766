/* coordinator/spec.h - a job spec checked before anything connects. */
#ifndef MAPPER_SPEC_H
#define MAPPER_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "mapper.h"

/* The flags alone, before any connection: false with the first that is
 * wrong, or the pair that cannot go together, in err (one line; a usage
 * error, exit 2). What needs the databases (a table, a column, a key's
 * index) is checked later, by the job. */
bool spec_check(const mapper_job_spec *spec, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
