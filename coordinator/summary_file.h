/* coordinator/summary_file.h - --summary-json FILE: written whole or not
 * at all, and checked before the job runs. */
#ifndef MAPPER_SUMMARY_FILE_H
#define MAPPER_SUMMARY_FILE_H

#include <stdbool.h>

#include "mapper.h"

/* Before the job: a file can be made beside path (one is made and removed),
 * so a job never runs to find out at its end that its summary cannot be
 * written. False with one line logged. */
bool summary_file_check(const char *path);

/* Write r as JSON to path whole or not at all: a new file beside it
 * (mkstemp: never a name planted in advance, mode 0600), fsynced, then
 * renamed over path. A symbolic link at path is replaced, not followed.
 * False with one line logged. */
bool summary_file_write(const char *path, const mapper_result *r);

#endif
