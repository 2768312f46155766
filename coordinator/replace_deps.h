/* coordinator/replace_deps.h - what depends on the target of --mode
 * replace, carried over to the new table by the swap: its owner, grants,
 * comments, row-level security, policies, triggers, publications,
 * sequences and the foreign keys into it, and the views over it (and over
 * those), with their options, owners, grants and comments. */
#ifndef MAPPER_REPLACE_DEPS_H
#define MAPPER_REPLACE_DEPS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* Before the job: refuse (false, one line naming it in err) a dependent of
 * the target qtarget (quoted, qualified) that the swap cannot carry over:
 * a materialized view or another table's rule over it, a rule on it, a
 * view over it with rules, triggers or column defaults of its own; the
 * target or such a view owned by a role the running user is not a member
 * of, or with a grant by another role than its owner; a foreign key into
 * it from a partitioned table or a partition, or from a table owned by a
 * role the running user is not a member of; a publication naming it owned
 * by such a role; anything else that depends on it or on such a view (a
 * function's body, another table's policy, a column of its row type). */
bool replace_deps_check(PGconn *dst, const char *qtarget, char *err,
                        size_t errlen) __attribute__((warn_unused_result));

/* Inside the swap's transaction, with search_path pg_catalog: lock the
 * views over qtarget, outermost first (the order a reader of a view locks
 * them, so that the two cannot deadlock), then qtarget; then, captured
 * under those locks, the statements to run before qtarget is dropped
 * (*before_out: drop the views and the foreign keys of other tables into
 * it; make the sequences owned by its columns
 * the new table's (qnew), give its identity sequences' last values to the
 * new ones) and after qnew took its name (*after_out: give it the target's
 * owner, grants, comments, row-level security and policies; create the
 * views again over it, in dependency order, with their options, owners,
 * grants and comments; give the identity sequences the old names; create
 * the triggers, enabled or not as they were; add it to the target's
 * publications; add the foreign keys of other tables into it again, NOT
 * VALID; replace_validate validates them once the swap committed). Both
 * malloc'd, maybe "".
 * The tables those foreign keys are on are locked before the target. */
bool replace_deps_lock(PGconn *dst, const char *qtarget, const char *qnew,
                       char **before_out, char **after_out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

#endif
