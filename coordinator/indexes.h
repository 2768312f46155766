/* coordinator/indexes.h - deferred index and constraint builds: record a
 * table's indexes, the constraints they back and its foreign keys in the
 * ledger, drop them before a load, and rebuild them after it (several at
 * once, each in its own transaction), resumably. */
#ifndef MAPPER_INDEXES_H
#define MAPPER_INDEXES_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "ledger.h"
#include "mapper.h"
#include "progress.h"

/* Rebuild steps an item goes through; ledger column "step" holds the last
 * one done (0: dropped, nothing rebuilt yet). */
#define INDEXES_STEP_BUILT    1 /* its index is built (CREATE INDEX) */
#define INDEXES_STEP_ATTACHED 2 /* its constraint is added (ALTER TABLE) */
#define INDEXES_STEP_DONE     3 /* its foreign key is validated: all done */

/* What to defer on one table. */
typedef struct {
    mapper_defer_indexes mode; /* auto, on or off */
    const char *qtarget;       /* the table acted on (quoted) */
    const char *qsource;       /* source table whose unique indexes prove a
                                  target's unique ones safe; NULL: a query */
    const char *columns;       /* the columns copied, each ended by a NUL */
    int ncolumns;              /* how many */
    const char *truncate;      /* statement emptying it first, or NULL */
    bool rejects;              /* rows breaking a constraint are set aside
                                  (--on-bad-rows reject): auto keeps the
                                  foreign keys, which would only fail */
} indexes_request_t;

/* Read the table's indexes and constraints (target session dst; source
 * session src for the source's unique indexes), decide what to defer
 * (logging one line per kept item and why) and return in *sql_out
 * (malloc'd; NULL when there is nothing to run) req->truncate, then the
 * statements that record them in l's ledger and drop them, to run in the
 * job's first target transaction. False (err set) when the catalogs cannot be
 * read. */
bool indexes_plan_drop(ledger_t *l, PGconn *dst, PGconn *src,
                       const indexes_request_t *req, char **sql_out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* How many of l's job's recorded items are not rebuilt yet (-1 when the
 * ledger cannot be read; logged). */
int indexes_pending(ledger_t *l);

/* Log that job_id has deferred items missing from its table and that
 * --resume restores them (nothing when it has none). */
void indexes_warn_pending(ledger_t *l, const char *job_id);

/* Rebuild every item of l's job not rebuilt yet: index builds on up to
 * parallel sessions opened with conninfo, one index per session at a
 * time, then the constraints and foreign keys in order on l's session.
 * Each step commits with its ledger row, so a rebuild killed at any
 * moment is finished by the next. Counts finished items into progress (may
 * be NULL); a byte on stop_fd (-1: none) other than 'C' interrupts it
 * (*interrupted_out). On failure err names the item and the error (for
 * duplicates, one offending key); records stay for a later --resume. */
bool indexes_rebuild(ledger_t *l, const char *conninfo, int parallel,
                     progress_t *progress, int stop_fd, bool *interrupted_out,
                     char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* After the copy of l's job ended (rc its exit code): when every chunk
 * committed, rebuild its deferred items as indexes_rebuild does (a
 * resumed job's too) and fill out's index_build_s and deferred_indexes;
 * otherwise say that --resume will. Returns rc, or 1 when the rebuild
 * failed, 75 when it was interrupted (out->error, out->interrupted set). */
int indexes_after_load(ledger_t *l, const char *conninfo, int parallel,
                       progress_t *progress, int stop_fd, int rc,
                       mapper_result *out);

/* The names of every item recorded for l's job, comma-separated, into
 * out (n bytes; cut short if longer). */
void indexes_names(ledger_t *l, char *out, size_t n);

#endif
