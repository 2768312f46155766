/* coordinator/plan.h - chunk planning: integer-key ranges from a keyset
 * walk of the key's index, or ctid page ranges. Every source row falls in
 * exactly one chunk: the first range is open below, the last open above,
 * and rows with a NULL key get a chunk of their own. */
#ifndef MAPPER_PLAN_H
#define MAPPER_PLAN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    PLAN_KEY_RANGE, /* key >= lo (if has_lo) AND key < hi (if has_hi) */
    PLAN_KEY_NULL,  /* key IS NULL */
    PLAN_CTID,      /* ctid >= (lo,0) AND ctid < (hi,0) (if has_hi) */
    PLAN_ALL,       /* every row (no usable key and no ctid) */
    PLAN_STREAM,    /* stream mode: rows lo..hi-1 of the query's result, in
                       the order it returned them (no WHERE clause) */
} plan_kind_t;

typedef struct {
    int64_t id;       /* 0..n-1, in key order */
    plan_kind_t kind; /* how the range is expressed */
    bool has_lo;      /* lower bound present */
    bool has_hi;      /* upper bound present */
    int64_t lo;       /* inclusive lower key or first page */
    int64_t hi;       /* exclusive upper key or page */
    int64_t est_rows; /* rows expected in the chunk */
} plan_chunk_t;

typedef struct {
    plan_chunk_t *chunks; /* n chunks */
    size_t n;             /* number of chunks */
    size_t cap;           /* allocated */
    int64_t est_rows;     /* sum of est_rows */
} plan_t;

/* One step of a keyset walk: skip `skip` keys forward, then read the next
 * one. Sets *found and *key_out when there was a next key, and *moved_out
 * to the number of keys actually skipped. Returns false on error. */
typedef bool (*plan_step_fn)(void *ctx, int64_t skip, bool *found,
                             int64_t *key_out, int64_t *moved_out);

/* Walk the non-NULL keys in order with step() and build key ranges of about
 * chunk_size rows; null_rows > 0 adds a NULL-key chunk. An empty key set
 * with no NULLs gives one open chunk (it copies nothing, checks the path). */
bool plan_keyset_walk(plan_step_fn step, void *ctx, int64_t chunk_size,
                      int64_t null_rows, plan_t *out)
    __attribute__((warn_unused_result));

/* ctid page ranges over `pages` heap pages with about rows_per_page rows
 * each; the last range is open-ended (relation sizes go stale). */
bool plan_ctid(int64_t pages, double rows_per_page, int64_t chunk_size,
               plan_t *out) __attribute__((warn_unused_result));

/* One chunk for every row. */
bool plan_all(int64_t est_rows, plan_t *out)
    __attribute__((warn_unused_result));

/* Equal-width key ranges of chunk_size keys over [min, max], for a key
 * that is dense (about one row per key): rows_est rows in all; null_rows
 * > 0 adds a NULL-key chunk. First range open below, last open above. */
bool plan_equal_width(int64_t min, int64_t max, int64_t rows_est,
                      int64_t chunk_size, int64_t null_rows, plan_t *out)
    __attribute__((warn_unused_result));

/* Plan an integer key's ranges on conn (inside the job's snapshot
 * transaction). A key whose span max-min+1 is within PLAN_DENSE_SLACK of
 * the planner's row count (reltuples, < 0 unknown) is dense: equal-width
 * ranges are even, and cost two index probes. Otherwise a cursor walks
 * the index (MOVE FORWARD n; FETCH 1), so gaps and skew still give even
 * chunks. qtable and qcol are quoted identifiers. *dense_out tells which. */
bool plan_keyset_pg(PGconn *conn, const char *qtable, const char *qcol,
                    int64_t chunk_size, double reltuples, plan_t *out,
                    bool *dense_out) __attribute__((warn_unused_result));

/* Plan integer key ranges over a query's result: qfrom is the FROM item
 * "(<query>) AS q" and qcol a quoted column of it. One pass over the result
 * gives min, max and the counts of keys and NULLs; a dense key (span
 * within PLAN_DENSE_SLACK of its count) gets equal-width ranges of about
 * chunk_size rows (narrower when keys repeat), any other
 * a cursor walk over the sorted keys (a second pass). *dense_out tells
 * which. Runs inside the job's snapshot transaction. */
bool plan_query_pg(PGconn *conn, const char *qfrom, const char *qcol,
                   int64_t chunk_size, plan_t *out, bool *dense_out)
    __attribute__((warn_unused_result));

/* A key spanning at most this many times its row count counts as dense. */
#define PLAN_DENSE_SLACK 1.1

/* The WHERE clause (with leading " WHERE ", or "" for PLAN_ALL) selecting
 * chunk c on quoted column qcol, written into buf (size n). */
bool plan_chunk_where(const plan_chunk_t *c, const char *qcol, char *buf,
                      size_t n) __attribute__((warn_unused_result));

/* Append a copy of c (its id included) to plan. */
bool plan_append(plan_t *plan, const plan_chunk_t *c)
    __attribute__((warn_unused_result));

void plan_free(plan_t *plan);

#endif
