/* common/defaults.h - defaults, timeouts and exit codes shared by mapper's
 * coordinator and worker. No magic numbers in .c files: they live here. */
#ifndef MAPPER_DEFAULTS_H
#define MAPPER_DEFAULTS_H

#define MAPPER_VERSION "0.1.0"

/* Exit statuses (documented in README and --help). */
#define MAPPER_EXIT_OK          0  /* every chunk done */
#define MAPPER_EXIT_FAILED      1  /* finished with failed chunks or rows */
#define MAPPER_EXIT_USAGE       2  /* usage or configuration error */
#define MAPPER_EXIT_CANNOT_RUN  3  /* a database unreachable, a table missing */
#define MAPPER_EXIT_INTERRUPTED 75 /* SIGINT/SIGTERM; EX_TEMPFAIL */

#define MAPPER_DEFAULT_CHUNK_SIZE 50000
/* --max-rejects by default: no limit. */
#define MAPPER_UNLIMITED_REJECTS (-1)
#define MAPPER_MAX_WORKERS       1024
/* Outages: this many connection failures in a row on one database, from
 * different chunks, pause dispatching to probe it; the job gives up after
 * the outage timeout. Probes back off from the first delay to the cap. */
#define MAPPER_OUTAGE_STREAK      3
#define MAPPER_OUTAGE_TIMEOUT_S   300.0
#define MAPPER_OUTAGE_PROBE_MIN_S 0.5
#define MAPPER_OUTAGE_PROBE_MAX_S 5.0
/* A broken ledger session is reconnected at most this often. */
#define MAPPER_LEDGER_RECONNECT_S 1.0

/* libpq session settings for every connection we open. */
#define MAPPER_CONNECT_TIMEOUT_S     "10"
#define MAPPER_KEEPALIVES_IDLE_S     "10"
#define MAPPER_KEEPALIVES_INTERVAL_S "5"
#define MAPPER_KEEPALIVES_COUNT      "3"
#define MAPPER_TCP_USER_TIMEOUT_MS   "30000"

/* What ends a chunk's COPY statements when both sides use binary COPY;
 * the worker strips it to read a chunk again as text (bad rows), and a
 * stream writer adds the binary header and trailer when it is there. */
#define MAPPER_COPY_BINARY_SUFFIX " (FORMAT binary)"

/* Worker progress reports while a chunk streams. */
#define MAPPER_PROGRESS_EVERY_ROWS 10000
#define MAPPER_PROGRESS_EVERY_MS   100

/* ctid planning: rows per page assumed when statistics are missing. */
#define MAPPER_DEFAULT_ROWS_PER_PAGE 60

/* Coordinator event loop tick (ms): upper bound on timer lateness. */
#define MAPPER_LOOP_TICK_MS 200
/* The coordinator checks the DONE reports it hears against the ledger in
 * one query for at most this many: at the first turn of its loop at least
 * MAPPER_DONE_BATCH_MS (ms) after the first DONE, woken by another event,
 * or by a timer of its own at MAPPER_DONE_WAIT_MS. A chunk is counted that
 * much later; its worker goes on at once. */
#define MAPPER_DONE_BATCH    64
#define MAPPER_DONE_BATCH_MS 10
#define MAPPER_DONE_WAIT_MS  40
/* A busy worker holds its next chunk ahead (its ASSIGN waits at the
 * worker, so no idle gap between chunks); one whose chunks end close
 * together holds about MAPPER_AHEAD_MS (ms) of them, at most
 * MAPPER_AHEAD_MAX. While every busy worker holds MAPPER_REST_SLACK_MS of
 * chunks ahead and MAPPER_REST_DONES chunks or more end in MAPPER_REST_MS,
 * the coordinator rests that long between turns, so that one turn hears
 * several DONEs and sends several ASSIGNs: fewer wake-ups a chunk. A
 * worker keeps MAPPER_AHEAD_MAX + 1 ASSIGNs waiting (one more for a
 * READY's race). */
#define MAPPER_AHEAD_MAX     8
#define MAPPER_AHEAD_MS      5
#define MAPPER_REST_SLACK_MS 3
#define MAPPER_REST_MS       1
#define MAPPER_REST_DONES    2
/* How long shutdown waits for workers before SIGKILL (ms). */
#define MAPPER_SHUTDOWN_WAIT_MS 5000
/* How long the coordinator's socket may keep unsent messages (the final
 * STOPs) at the end of a job (ms). */
#define MAPPER_STOP_LINGER_MS 2000
/* At the end of a job, remote workers still connected are sent STOP again
 * this often (ms) until they leave, for at most MAPPER_FAREWELL_MS. */
#define MAPPER_FAREWELL_EVERY_MS 100
#define MAPPER_FAREWELL_MS       5000

/* The ledger's schema in the target, and how long running chunks may
 * finish after SIGINT/SIGTERM. */
#define MAPPER_DEFAULT_STATE_SCHEMA "mapper"
#define MAPPER_GRACE_S              30.0

/* Heartbeats and leases (remote workers). The coordinator and the workers
 * say something at least every MAPPER_HEARTBEAT_S; a worker silent for the
 * worker timeout loses its chunk; a worker that has not heard the
 * coordinator for the liveness limit abandons its chunk, and gives up
 * after the coordinator timeout. */
#define MAPPER_HEARTBEAT_S      1.0
#define MAPPER_WORKER_TIMEOUT_S 30.0
#define MAPPER_COORD_LIVENESS_S 10.0
#define MAPPER_COORD_TIMEOUT_S  60.0
/* The coordinator's socket pings each connection (ZMTP heartbeats) and
 * closes one silent this long, so that a worker reconnecting under its
 * routing id is heard again (ids are never handed over). */
#define MAPPER_LINK_TIMEOUT_S 10.0

/* Stream mode: chunks held in memory at once, per worker, by default. */
#define MAPPER_INFLIGHT_PER_WORKER 2
#define MAPPER_MAX_INFLIGHT        100000
/* Blocks smaller than this come from the heap, not mmap (mallopt). */
#define MAPPER_MMAP_THRESHOLD (32 * 1024 * 1024)

/* What a worker reports for a chunk it rolled back on purpose (a stop):
 * admin_shutdown, which the retry policy retries. */
#define MAPPER_SQLSTATE_SHUTDOWN "57P01"

/* Environment variables. */
#define MAPPER_ENV_SOURCE     "MAPPER_SOURCE_URL"
#define MAPPER_ENV_TARGET     "MAPPER_TARGET_URL"
#define MAPPER_ENV_WORKER_BIN "MAPPER_WORKER_BIN"
#define MAPPER_ENV_FAULT      "MAPPER_FAULT"
/* Test-only: a "pause-" fault holds until this file exists (see fault_at). */
#define MAPPER_ENV_FAULT_RELEASE "MAPPER_FAULT_RELEASE"
/* A coordinator held by a pause fault looks for the release file this
 * often (ns), this many times at most (five minutes). */
#define MAPPER_FAULT_POLL_NS    50000000L
#define MAPPER_FAULT_HOLD_POLLS 6000

/* Deferred index builds: maintenance_work_mem of each build session (raised
 * to this, never lowered), and how often (ms) the wait for builds wakes to
 * report progress. */
#define MAPPER_INDEX_MEM     "256MB"
#define MAPPER_INDEX_POLL_MS 500
/* CURVE keys handed to forked workers (never on argv). */
#define MAPPER_ENV_CURVE_SERVER     "MAPPER_CURVE_SERVER_KEY"
#define MAPPER_ENV_CURVE_SECRET     "MAPPER_CURVE_SECRET_KEY"
#define MAPPER_ENV_PROGRESS_ENABLED "MAPPER_PARALLEL_PROGRESS_ENABLED"
/* MAPPER_RESUME=auto is --resume=auto (its only value). */
#define MAPPER_ENV_RESUME  "MAPPER_RESUME"
#define MAPPER_RESUME_AUTO "auto"
/* A buffer this big holds any message about a bad environment variable. */
#define MAPPER_ENV_ERR_MAX 256

/* ---- retry policy (coordinator/retry.h) ---- */
#define MAPPER_RETRY_ENABLED          true /* retry failed chunks at all */
#define MAPPER_RETRY_MAX_RETRIES      3    /* retries after the first attempt */
#define MAPPER_RETRY_INITIAL_DELAY_S  1.0  /* delay before retry 1 */
#define MAPPER_RETRY_MAX_DELAY_S      60.0 /* cap on any one delay */
#define MAPPER_RETRY_EXPONENTIAL_BASE 2.0  /* delay growth per retry */
#define MAPPER_RETRY_JITTER           true /* full jitter: uniform in [0, d] */
#define MAPPER_RETRY_DEADLINE_S       0.0 /* per-chunk retry deadline; 0 = off */
#define MAPPER_ENV_RETRY_ENABLED      "MAPPER_PARALLEL_RETRY_ENABLED"
#define MAPPER_ENV_MAX_RETRIES        "MAPPER_PARALLEL_MAX_RETRIES"
/* ---- end retry policy ---- */

#endif
