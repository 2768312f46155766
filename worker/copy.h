/* worker/copy.h - copy one chunk: the source's COPY TO STDOUT stream fed
 * straight into the target's COPY FROM STDIN, in one target transaction.
 * Rows are never parsed; memory does not grow with the chunk. */
#ifndef MAPPER_COPY_H
#define MAPPER_COPY_H

#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "pgutil.h"

/* The worker's two connections, kept open across chunks. */
typedef struct {
    const char *source_conninfo; /* from the environment, never argv */
    const char *target_conninfo; /* likewise */
    PGconn *src;                 /* source session, or NULL */
    PGconn *dst;                 /* target session, or NULL */
} copy_conns_t;

typedef enum {
    COPY_OK,      /* committed */
    COPY_FAILED,  /* rolled back; *err says why */
    COPY_ABORTED, /* rolled back because tick() asked to stop */
    COPY_ALREADY, /* the ledger says an earlier attempt committed it */
} copy_status_t;

/* Called every few thousand rows or ~100 ms with the rows and bytes so far;
 * returns false to abort the chunk (a stop request). */
typedef bool (*copy_tick_fn)(void *arg, int64_t rows, int64_t bytes);

/* Wait at most timeout_ms for the events asked of the libpq sockets in
 * fds (POLLIN, POLLOUT; revents filled), serving the caller's own work
 * (the coordinator's socket, heartbeats) meanwhile; returns false to abort
 * the chunk (a stop request). */
typedef bool (*copy_wait_fn)(void *arg, struct pollfd *fds, int nfds,
                             int timeout_ms);

/* Called for each row set aside, in row order, before the chunk commits,
 * with the row as one COPY text line (len bytes, newline included);
 * returns false to fail the chunk (it then rolls back, *err untouched:
 * the callback logs why). */
typedef bool (*copy_reject_fn)(void *arg, int64_t row_index,
                               const char *sqlstate, const char *message,
                               const char *row, size_t len);

/* What a chunk needs: the snapshot to import, the source statement and
 * where its rows go (names the worker quotes itself: the target sees no
 * SQL from the coordinator). */
typedef struct {
    int64_t chunk_id;          /* for fault injection and logs */
    int32_t attempt;           /* likewise */
    const char *snapshot;      /* exported snapshot id */
    const char *source_sql;    /* COPY (SELECT ...) TO STDOUT ... */
    const char *target_schema; /* target table's schema (a name) */
    const char *target_table;  /* target table (a name) */
    const char *columns;       /* column names, each ended by a NUL */
    size_t columns_len;        /* bytes at columns */
    bool binary;               /* binary COPY on both sides */
    const char *key;           /* upsert: key names, each ended by a NUL */
    size_t key_len;            /* bytes at key; 0: append, no merge */
    const char *job_id;        /* ledger job id; "" = no ledger */
    const char *state_schema;  /* ledger schema (unquoted) */
    const char *data;          /* stream mode: the chunk's rows in memory
                                  (COPY's own form, no binary header or
                                  trailer), written instead of reading the
                                  source; NULL otherwise */
    size_t data_len;           /* bytes at data */
    int64_t data_rows;         /* rows at data */
    bool reject_rows;          /* set bad rows aside instead of failing */
    copy_reject_fn on_reject;  /* told of each (reject_rows); gets arg */
    copy_wait_fn wait;         /* the relay waits here (gets arg); NULL:
                                  poll(2) on the libpq sockets alone */
} copy_job_t;

/* Copy one chunk. The relay never blocks in libpq: both sessions are
 * non-blocking while rows flow, the source read into a bounded buffer
 * while the target is fed, and every wait goes through job->wait. On COPY_OK,
 * *rows_out and *bytes_out hold what committed and *rejected_out the rows set
 * aside (COPY_ALREADY: the ledger's rows and rejected). On failure the
 * connections are closed (the server rolls back) and reopened by the next call;
 * *err was captured before they were closed. With job->reject_rows, a COPY the
 * target refuses for a row's data (SQLSTATE class 22 or 23) is rolled back and
 * the chunk is read again from the source as text into memory, its bad rows
 * isolated (isolate.h) and passed to job->on_reject, and the other rows loaded,
 * all in one new transaction with the ledger update. A clean chunk never
 * buffers. */
copy_status_t copy_chunk(copy_conns_t *conns, const copy_job_t *job,
                         copy_tick_fn tick, void *arg, int64_t *rows_out,
                         int64_t *bytes_out, int64_t *rejected_out,
                         pgutil_error_t *err);

/* Open the source session unless it is open and idle. */
bool copy_open_source(copy_conns_t *conns, pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Open (or keep) the source session, import the snapshot in a REPEATABLE
 * READ READ ONLY transaction, and start sql (one COPY ... TO STDOUT
 * statement, sent with the extended protocol so that it can never be
 * more than one), waiting for its start through wait (gets wait_arg;
 * NULL: poll(2)): a source may say nothing for long (a sort, a lock).
 * *binary_out tells the format. COPY_ABORTED when wait said stop. */
copy_status_t copy_source_start(copy_conns_t *conns, const char *snapshot,
                                const char *sql, copy_wait_fn wait,
                                void *wait_arg, bool *binary_out,
                                pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Called with each row of a COPY TO STDOUT; false stops (with *err set,
 * or a flag of the caller's). */
typedef bool (*copy_row_fn)(void *arg, const char *row, size_t n,
                            pgutil_error_t *err);

/* Feed every row of the COPY running on src to fn, reading without
 * blocking and waiting through wait (as copy_source_start), then check
 * the COPY's result. COPY_FAILED when src failed (*err) or fn stopped,
 * COPY_ABORTED when wait said stop; the COPY may then still be running. */
copy_status_t copy_each_row(PGconn *src, copy_row_fn fn, void *arg,
                            copy_wait_fn wait, void *wait_arg,
                            pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* The 19-byte header of a binary COPY stream with no extension, and the
 * trailer (a row with -1 fields). */
#define COPY_BINARY_HEADER     "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0"
#define COPY_BINARY_HEADER_LEN 19
#define COPY_BINARY_TRAILER    "\377\377"

/* Close both connections. */
void copy_conns_close(copy_conns_t *conns);

#endif
