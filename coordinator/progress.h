/* coordinator/progress.h - the coordinator's progress tracker: chunk and row
 * counters, throughput, percentage and ETA, and a throttled callback.
 * Single-threaded: the coordinator's loop is its only user (its lines are
 * coordinator/report.c's). */
#ifndef MAPPER_PROGRESS_H
#define MAPPER_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapper.h"

/* Callback throttle: at most one call per interval (seconds). */
#define PROGRESS_DEFAULT_UPDATE_INTERVAL_S 2.0
/* estimated_remaining_time when eta_known is false. */
#define PROGRESS_ETA_UNKNOWN (-1.0)

/* Throughput: (time, work) samples in a ring, at least GAP seconds apart;
 * the rate is the work done over the last WINDOW seconds. The ring holds
 * a little more than WINDOW / GAP samples. */
#define PROGRESS_RATE_WINDOW_S     30.0
#define PROGRESS_RATE_SAMPLE_GAP_S 0.25
#define PROGRESS_RATE_SAMPLES      128
/* A rate measured over less than this (seconds) is not reported. */
#define PROGRESS_RATE_MIN_SPAN_S 0.5
/* The ETA stays unknown until this fraction of the work is done, or the
 * rate has been measured for this long. */
#define PROGRESS_ETA_MIN_FRACTION 0.02
#define PROGRESS_ETA_MIN_SPAN_S   2.0

/* Percentage bounds; below 100 until every chunk has finished. */
#define PROGRESS_PCT_MAX            100.0
#define PROGRESS_PCT_UNFINISHED_MAX 99.9

/* Chunk table: open addressing, capacity a power of two, grown (doubled)
 * above this load; Fibonacci hashing (2^64 / golden ratio) of chunk ids. */
#define PROGRESS_TABLE_MIN_CAPACITY 64
#define PROGRESS_TABLE_MAX_LOAD     0.5
#define PROGRESS_HASH_MULTIPLIER    0x9E3779B97F4A7C15ULL

/* Formatting: a buffer of PROGRESS_LINE_MAX bytes holds any line. */
#define PROGRESS_LINE_MAX             1024
#define PROGRESS_JOB_NAME_MAX         64 /* longer job names are cut */
#define PROGRESS_FIELD_MAX            32 /* one formatted number or time */
#define PROGRESS_BAR_DEFAULT_WIDTH    30
#define PROGRESS_BAR_MAX_WIDTH        200
#define PROGRESS_BAR_FILL             '#'
#define PROGRESS_BAR_EMPTY            '-'
#define PROGRESS_HUMAN_STEP           1000.0 /* k, M, G, T */
#define PROGRESS_HUMAN_DECIMALS_BELOW 100.0  /* 12.3k but 123k */
#define PROGRESS_BYTES_PER_MB         1e6
#define PROGRESS_SECONDS_PER_MINUTE   60
#define PROGRESS_SECONDS_PER_HOUR     3600
#define PROGRESS_NS_PER_S             1e9

/* mapper_progress_snapshot, where a job stands, is public: see mapper.h. */

/* Called with a snapshot (valid during the call only) and the user pointer
 * given to progress_new. It may call progress_snapshot. */
typedef mapper_progress_fn progress_callback_fn;

/* A monotonic clock in seconds; the default reads CLOCK_MONOTONIC. */
typedef double (*progress_clock_fn)(void *user);

typedef struct progress_t progress_t;

/* Create a tracker for total_chunks chunks (0 when not planned yet), with
 * an optional callback fired at most once per update_interval seconds from
 * progress_tick and once more from progress_finish (update_interval <= 0:
 * PROGRESS_DEFAULT_UPDATE_INTERVAL_S). The clock starts now. Returns NULL
 * (logged) on failure. */
progress_t *progress_new(int64_t total_chunks, progress_callback_fn callback,
                         void *user, double update_interval);

/* Destroy the tracker and set *self_p to NULL. Accepts NULL and *NULL. */
void progress_destroy(progress_t **self_p);

/* Replace the clock (NULL: CLOCK_MONOTONIC) and restart the elapsed time
 * from its current reading. Call before the first event. */
void progress_set_clock(progress_t *self, progress_clock_fn clock, void *user);

/* The planner's figures, settable at any time: chunks planned, estimated
 * rows in all of them (0 = unknown), workers (0 = unknown). Negative
 * values count as 0. */
void progress_set_total_chunks(progress_t *self, int64_t total_chunks);
void progress_set_rows_total_estimate(progress_t *self, int64_t rows);
void progress_set_workers(progress_t *self, int workers);
/* The deferred index rebuild: built of total done (total 0: none); with
 * total > 0 the phase is MAPPER_PHASE_INDEXES. */
void progress_set_indexes(progress_t *self, int built, int total);
/* The job's --mode and run (0: no ledger). */
void progress_set_mode(progress_t *self, mapper_write_mode mode, int64_t run);
/* The job entered phase: the next progress_tick calls back, whatever the
 * interval, so that the change is shown. */
void progress_set_phase(progress_t *self, mapper_phase phase);
/* The swap of a replace took seconds. */
void progress_set_swap(progress_t *self, double seconds);

/* Chunk events. Chunk ids may be any int64. An event
 * that does not fit the chunk's state (a stale attempt, a chunk already
 * finished) is ignored and logged at debug level, so a stale or repeated
 * report is never counted twice. None of them calls the callback. */

/* Attempt `attempt` of a chunk started copying. If another attempt of it
 * was still running, that attempt's in-flight rows are dropped. */
void progress_chunk_started(progress_t *self, int64_t chunk_id,
                            int32_t attempt);

/* The running attempt reports rows and bytes copied so far (cumulative for
 * the attempt, as workers send them). Smaller numbers than before are
 * ignored. */
void progress_chunk_rows(progress_t *self, int64_t chunk_id, int32_t attempt,
                         int64_t rows, int64_t bytes);

/* The chunk's transaction committed with rows and bytes (final figures).
 * Accepted from the running attempt, or for a chunk with no attempt
 * running (a chunk found done by --resume: counted without a start). */
void progress_chunk_committed(progress_t *self, int64_t chunk_id,
                              int32_t attempt, int64_t rows, int64_t bytes);

/* The running attempt failed: its in-flight rows are dropped (they never
 * reach committed counters). will_retry counts a retry. */
void progress_chunk_attempt_failed(progress_t *self, int64_t chunk_id,
                                   int32_t attempt, bool will_retry);

/* The chunk failed for good (no more attempts); a running attempt's
 * in-flight rows are dropped. rows_failed, when known (>= 0), counts in
 * total_rows_failed; pass -1 when unknown. */
void progress_chunk_failed(progress_t *self, int64_t chunk_id,
                           int64_t rows_failed);

/* Fire the callback if update_interval has passed since the last call (or
 * the start), and take a throughput sample. The coordinator calls it from
 * its loop. Does nothing after progress_finish. */
void progress_tick(progress_t *self);

/* The job ended: freeze the elapsed time and fire the callback one last
 * time. Later calls do nothing. */
void progress_finish(progress_t *self);

/* The current state; callable at any time. Percentage:
 * rows committed, failed or in flight against the row estimate (without
 * one, finished chunks against the total). Rate: rows moved per second
 * over the last PROGRESS_RATE_WINDOW_S, counting attempts that later
 * failed. ETA: rows left at the rate per busy worker, times the workers
 * that can still be busy, plus the tail of the last chunks. */
mapper_progress_snapshot progress_snapshot(progress_t *self);

/* False once an event was lost to an allocation failure (logged then): the
 * counters are no longer exact. */
bool progress_ok(progress_t *self);

#endif
