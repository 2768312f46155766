/* coordinator/ledger.h - the job ledger in the target database: a jobs row
 * per job and a chunks row per chunk. A worker marks its chunk done in the
 * same transaction as the chunk's rows, so a chunk is never written twice
 * and an interrupted job can be resumed with exactly the same plan. */
#ifndef MAPPER_LEDGER_H
#define MAPPER_LEDGER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgutil.h"
#include "plan.h"
#include "proto.h"
#include "reject.h"

/* What identifies a job's spec; stored with the job and compared on
 * --resume, one field at a time so a refusal can say what differs. */
typedef struct {
    const char *source;       /* source database identity */
    const char *source_table; /* quoted source table */
    const char *target_table; /* quoted target table */
    const char *split_by;     /* quoted split column, or "ctid" */
    int64_t chunk_size;       /* rows per chunk */
    const char *columns;      /* quoted column list */
    const char *query;        /* the source query, "" for a table */
} ledger_spec_t;

typedef struct ledger_t {
    PGconn *conn;                  /* the coordinator's target session */
    const char *conninfo;          /* to reconnect it after an outage */
    char *qschema;                 /* quoted ledger schema */
    char schema[PROTO_MAX_ID + 1]; /* the schema's name, as given */
    char job_id[PROTO_MAX_ID + 1]; /* this job */
    char status[16];               /* its status when checked, "" if new */
    bool locked;                   /* this session holds the job's lock */
    pgutil_probe_t reconnect;      /* the session's reconnection, if any */
    double reconnect_at;           /* clock_now() before which none starts */
} ledger_t;

/* How a job starts. */
typedef enum {
    LEDGER_FRESH,   /* new job; refuse if the id exists */
    LEDGER_RESUME,  /* continue an existing job with the same spec */
    LEDGER_RESTART, /* discard the id's ledger, then start fresh */
    LEDGER_AUTO,    /* as LEDGER_RESUME if the id exists, else fresh */
} ledger_mode_t;

/* Create the schema (1 to PROTO_MAX_ID / 2 bytes, as spec_check makes
 * sure) and tables if missing. Tables of those names that are
 * not this role's own or not shaped as the ledger's are refused, left
 * untouched. On failure, err says why, and there is nothing to close. */
bool ledger_open(ledger_t *l, PGconn *conn, const char *conninfo,
                 const char *schema, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The default job id for spec: "job-" and 12 hex digits of its hash. */
bool ledger_default_id(ledger_t *l, const ledger_spec_t *spec, char *id_out,
                       size_t n) __attribute__((warn_unused_result));

/* Take the job's lock: a session-level advisory lock in the target,
 * held by the ledger's session until it ends (so a coordinator that dies
 * lets go). False, with err naming the job, when another session holds it
 * or the lock cannot be asked for. */
bool ledger_lock(ledger_t *l, const char *job_id, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Look the job up and check it against mode: a fresh job must not exist,
 * a resumed one must exist with the same spec. Returns false with err set
 * (a usage error) when refused. *exists_out tells whether it exists,
 * l->status its status. */
bool ledger_check(ledger_t *l, const char *job_id, const ledger_spec_t *spec,
                  ledger_mode_t mode, bool *exists_out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Record a fresh job and its plan; with truncate_sql (may be NULL) run it
 * in the same transaction (--truncate). With restart, the old ledger of
 * the id is discarded first. */
bool ledger_create(ledger_t *l, const ledger_spec_t *spec, const plan_t *plan,
                   bool restart, const char *truncate_sql, char *err,
                   size_t errlen) __attribute__((warn_unused_result));

/* Record one more chunk of a running job (stream mode finds its chunks
 * as it reads); a chunk already recorded is left as it is. */
bool ledger_add_chunk(ledger_t *l, const plan_chunk_t *c, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/* Load a resumed job's plan; done[i] (malloc'd, plan->n entries),
 * rows[i] and rejected[i] say which chunks are committed already, with
 * how many rows loaded and set aside. */
bool ledger_load(ledger_t *l, plan_t *plan, bool **done_out, int64_t **rows_out,
                 int64_t **rejected_out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* A chunk's ledger row as ledger_chunk_states reads it. */
typedef struct {
    bool done;        /* marked done (committed with its rows) */
    int64_t rows;     /* rows it loaded, when done */
    int64_t rejected; /* rows it set aside, when done */
} ledger_chunk_state_t;

/* Read the ledger rows of the n (<= MAPPER_DONE_BATCH) chunks ids into
 * out[i]: one query for all, so that the DONEs heard in one turn of the
 * loop cost one round trip. False (logged) when the ledger cannot be
 * read. Reconnects if needed. */
bool ledger_chunk_states(ledger_t *l, const int64_t *ids, size_t n,
                         ledger_chunk_state_t *out)
    __attribute__((warn_unused_result));

/* How many chunks of the job are committed (-1 when it cannot tell). */
int64_t ledger_done_count(ledger_t *l);

/* Record a chunk that failed for good, and the job's final status. */
void ledger_chunk_failed(ledger_t *l, int64_t chunk_id, int attempts,
                         const char *error);
void ledger_finish(ledger_t *l, const char *status);

/* The rows chunk_id set aside, as committed with it (ordered by row),
 * appended to *out. False (logged) when they cannot be read. */
bool ledger_load_rejects(ledger_t *l, int64_t chunk_id, reject_buf_t *out)
    __attribute__((warn_unused_result));

/* Record that chunk_id's rejected rows are in the reject file (synced). */
void ledger_rejects_written(ledger_t *l, int64_t chunk_id);

/* Record that chunk_id's rejected rows are about to be appended at these
 * offsets of the reject file and its log. False (logged) on error. */
bool ledger_rejects_at(ledger_t *l, int64_t chunk_id, int64_t rows_at,
                       int64_t log_at) __attribute__((warn_unused_result));

/* A committed chunk whose rejected rows are not recorded as written. */
typedef struct {
    int64_t chunk_id; /* the chunk */
    int64_t at[2];    /* where a write of them began in the reject file and
                         its log, -1 when none began */
} ledger_unwritten_t;

/* Those chunks (malloc'd, *n_out of them). False (logged) on error. */
bool ledger_rejects_unwritten(ledger_t *l, ledger_unwritten_t **out,
                              size_t *n_out)
    __attribute__((warn_unused_result));

void ledger_close(ledger_t *l);

/* Reconnect a broken session without blocking: start (at most every
 * MAPPER_LEDGER_RECONNECT_S) or advance a reconnection; a session that is
 * back takes the job's lock again. The job's loop calls it every tick;
 * meanwhile every ledger statement fails at once, as on a broken
 * connection. */
void ledger_reconnect(ledger_t *l);

#endif
