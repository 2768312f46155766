/* coordinator/reject.h - the reject file: rows the target refused, in COPY
 * text form, and FILE.log beside it with one line per row saying why.
 * With the ledger, the worker records each rejected row in the target in
 * its chunk's transaction, and the coordinator writes them from there once
 * the chunk committed (and on --resume, those not written yet); without
 * it, the coordinator holds each running attempt's reported rows and
 * writes them only when that attempt commits. Either way a row is never
 * written for a rolled-back attempt. */
#ifndef MAPPER_REJECT_H
#define MAPPER_REJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* The log file's name: the reject file's with this added. */
#define REJECT_LOG_SUFFIX ".log"

/* Both files hold source rows: readable by their owner only. */
#define REJECT_FILE_MODE 0600

/* One rejected row, as a worker reported it. */
typedef struct {
    int64_t row_index;                     /* index in the chunk (0 = first) */
    char sqlstate[PROTO_SQLSTATE_LEN + 1]; /* why, e.g. 23514 */
    char *message;                         /* the error (malloc'd) */
    char *row;                             /* one COPY text line (malloc'd) */
} reject_row_t;

/* An attempt's rejected rows in row order, held until it commits. Zero it
 * to start. */
typedef struct {
    reject_row_t *v; /* rows (malloc'd) */
    size_t n;        /* rows held */
    size_t cap;      /* rows allocated */
} reject_buf_t;

typedef struct reject_t reject_t;

/* Open path and path.log for appending (both created if missing), mode
 * 0600, never through a symbolic link, close-on-exec. NULL, with a
 * one-line reason in err, when either cannot be opened. */
reject_t *reject_new(const char *path, char *err, size_t errlen);

/* Close both files. Accepts NULL; sets *self_p to NULL. */
void reject_destroy(reject_t **self_p);

/* Take a reported row into buf: its message and row are moved out of msg
 * (left NULL there). False when out of memory (logged). */
bool reject_buf_take(reject_buf_t *buf, proto_msg_t *msg)
    __attribute__((warn_unused_result));

/* Drop what buf holds (the attempt rolled back). */
void reject_buf_clear(reject_buf_t *buf);

/* A committed attempt of chunk_id: append its rows, in row order, to the
 * reject file and one line each to the log, then flush both, and empty
 * buf. A log line reads "chunk C row R SQLSTATE message": R counts from 1
 * in the chunk, the message is one line. False when a write fails
 * (logged). */
bool reject_write(reject_t *self, int64_t chunk_id, reject_buf_t *buf)
    __attribute__((warn_unused_result));

/* The ledger, as ledger.h has it (reject.h does not need all of it). */
typedef struct ledger_t ledger_t;

/* A committed chunk's rejected rows, read from the ledger (where the
 * worker recorded them in the chunk's transaction), appended as
 * reject_write does and synced, then recorded in the ledger as written.
 * Where the write starts in each file is recorded in the ledger first; at
 * (NULL: none) is what an earlier, unfinished write recorded: what it left
 * at the end of the files is removed first, so no row is there twice.
 * rejected is the chunk's count, to say when the ledger holds fewer. False
 * when they could not be read or written (logged). */
bool reject_write_committed(reject_t *self, ledger_t *ledger, int64_t chunk_id,
                            int64_t rejected, const int64_t *at)
    __attribute__((warn_unused_result));

#endif
