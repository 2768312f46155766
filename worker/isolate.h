/* worker/isolate.h - find the rows of a chunk the target refuses (data or
 * integrity errors) and load all the others, over rows held in memory in
 * COPY text form. Used only after a chunk's COPY failed: a clean chunk
 * never comes here. */
#ifndef MAPPER_ISOLATE_H
#define MAPPER_ISOLATE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgutil.h"

/* The outcome of one try to load a range of rows. */
typedef enum {
    ISOLATE_LOADED, /* the rows are in (inside the open transaction) */
    ISOLATE_BAD,    /* refused for a row's data (SQLSTATE class 22/23);
                       nothing of the try is left */
    ISOLATE_ERROR,  /* anything else: give the chunk up */
} isolate_try_t;

/* Try to load rows [first, last) for good, or leave no trace of the try.
 * On ISOLATE_BAD, *line_out is the failing row's line within the try
 * (1 = first) or 0 when unknown; *err says why (both outcomes but
 * LOADED). */
typedef isolate_try_t (*isolate_load_fn)(void *arg, size_t first, size_t last,
                                         int64_t *line_out,
                                         pgutil_error_t *err);

/* One row set aside. */
typedef struct {
    size_t index;                          /* row index in the chunk */
    char sqlstate[PROTO_SQLSTATE_LEN + 1]; /* why, e.g. 23514 */
    char *message;                         /* one-line error (malloc'd) */
} isolate_reject_t;

/* The rejected rows of one isolation, in increasing index order. */
typedef struct {
    isolate_reject_t *rows; /* n entries (malloc'd) */
    size_t n;               /* rows rejected */
} isolate_rejects_t;

/* Rows held in memory: row i is text[off[i] .. off[i + 1]), each one COPY
 * text line with its newline; off has n + 1 entries. */
typedef struct {
    const char *text;  /* every row, back to back */
    const size_t *off; /* row boundaries */
    size_t n;          /* rows */
} isolate_rows_t;

/* Load rows [0, nrows) with load(), setting aside each row that fails on
 * its own: a failing range that names its bad line is split around that
 * row; one that names none is halved; a single failing row is rejected.
 * Every row ends up loaded exactly once or rejected. Returns false (with
 * *err from the failing try) when a try ends in ISOLATE_ERROR or memory
 * runs out; *out is then empty. */
bool isolate_run(isolate_load_fn load, void *arg, size_t nrows,
                 isolate_rejects_t *out, pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Called after each try of isolate_rows with the rows loaded so far;
 * returns false to stop (the isolation then fails with *aborted_out set). */
typedef bool (*isolate_tick_fn)(void *arg, int64_t rows_loaded);

/* isolate_run on the target: each try is "SAVEPOINT; copy_sql (a text
 * COPY ... FROM STDIN) with the range's rows; RELEASE" or, when COPY fails
 * with SQLSTATE class 22 or 23, "ROLLBACK TO SAVEPOINT" with the line
 * number taken from the error's "COPY <table>, line N" context. dst must
 * be inside a transaction. */
bool isolate_rows(PGconn *dst, const char *copy_sql, const isolate_rows_t *rows,
                  isolate_tick_fn tick, void *tick_arg, isolate_rejects_t *out,
                  bool *aborted_out, pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Record each row of rej in the ledger's rejects table (state_schema
 * unquoted), in dst's open transaction, so the rows commit with their
 * chunk or not at all: job, chunk, row index, SQLSTATE, message and the
 * row's COPY text line as held in rows. False with *err filled. */
bool isolate_record(PGconn *dst, const char *state_schema, const char *job_id,
                    int64_t chunk_id, const isolate_rows_t *rows,
                    const isolate_rejects_t *rej, pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Whether err is a data or integrity error (SQLSTATE class 22 or 23). */
bool isolate_is_bad_data(const pgutil_error_t *err);

/* Free what *r holds and empty it. */
void isolate_rejects_clear(isolate_rejects_t *r);

#endif
