/* coordinator/mapper.h - the public face of libmapper: run one copy job
 * (the C form of the seed design's execute_query_parallel). The one header
 * installed: it stands alone and declares public types only. */
#ifndef MAPPER_H
#define MAPPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The retry knobs (defaults in mapper_job_spec_init). enabled and
 * max_retries are the seed's enable_retry and max_retries. */
typedef struct {
    bool enabled;            /* false: a failed chunk is never retried */
    int max_retries;         /* retries after the first attempt (>= 0) */
    double initial_delay;    /* seconds before retry 1 (>= 0) */
    double max_delay;        /* cap on any one delay, seconds (>= initial) */
    double exponential_base; /* delay growth per retry (>= 1) */
    bool jitter;             /* true: delay uniform in [0, d] (full jitter) */
    double deadline; /* seconds from a chunk's first start; 0 = no deadline */
} mapper_retry_config;

/* How the rows are written into the target (--mode). */
typedef enum {
    MAPPER_MODE_APPEND = 0, /* add the rows (a finished job is not rerun) */
    MAPPER_MODE_UPSERT,     /* merge each chunk on key: insert new keys,
                               update changed rows; safe to repeat */
    MAPPER_MODE_REPLACE,    /* load a new table beside the target and swap
                               it in at the end; safe to repeat */
} mapper_write_mode;

/* What a job is doing (the phases follow one another). */
typedef enum {
    MAPPER_PHASE_COPY = 0, /* copying chunks */
    MAPPER_PHASE_INDEXES,  /* rebuilding deferred indexes */
    MAPPER_PHASE_SWAP,     /* replace: indexing the new table, swapping it in */
} mapper_phase;

/* Where a job stands, at one instant; the first ten fields are the seed's
 * ProgressSnapshot. Row and byte counters of committed work (successful,
 * failed, processed, bytes, completed) never decrease. */
typedef struct {
    int64_t total_chunks;            /* chunks planned (0 while unknown) */
    int64_t completed_chunks;        /* chunks whose transaction committed */
    int64_t failed_chunks;           /* chunks failed for good */
    int64_t chunks_in_progress;      /* chunks with an attempt copying now */
    int64_t total_rows_processed;    /* successful + failed rows */
    int64_t total_rows_successful;   /* rows of committed chunks */
    int64_t total_rows_failed;       /* rows of chunks failed for good */
    double elapsed_time;             /* seconds since the job started */
    double estimated_remaining_time; /* seconds left; -1 unless eta_known */
    bool eta_known;                  /* false until an estimate is meaningful */
    double progress_percentage;      /* 0-100, 100 once every chunk finished */
    int64_t rows_total_estimate;     /* planner's row estimate (0 = unknown) */
    int64_t rows_in_flight;          /* rows of attempts still copying */
    int64_t bytes_processed;         /* bytes of committed chunks */
    double rows_per_second;          /* throughput, last ~30 s (0 = unknown) */
    double bytes_per_second;         /* same, in bytes per second */
    int64_t retries;                 /* failed attempts that will be retried */
    int workers;                     /* workers configured (0 = unknown) */
    int workers_busy;                /* workers copying a chunk now */
    int indexes_total;               /* deferred indexes to rebuild (0: none) */
    int indexes_built;               /* of them, rebuilt */
    mapper_write_mode mode;          /* the job's --mode */
    int64_t run;                     /* the job's run (0: no ledger) */
    mapper_phase phase;              /* what the job is doing */
    double swap_s; /* replace: the swap's seconds, once done */
} mapper_progress_snapshot;

/* A progress callback: snap is valid during the call only; user is the
 * spec's progress_user. It runs in the coordinator's loop (the thread that
 * called mapper_job_run), so it must return quickly. */
typedef void (*mapper_progress_fn)(const mapper_progress_snapshot *snap,
                                   void *user);

/* Where progress goes (--progress). */
typedef enum {
    MAPPER_PROGRESS_AUTO = 0, /* bar on a terminal, log lines otherwise */
    MAPPER_PROGRESS_BAR,      /* one line redrawn in place */
    MAPPER_PROGRESS_LOG,      /* key=value lines every interval */
    MAPPER_PROGRESS_JSON,     /* one JSON object per line */
    MAPPER_PROGRESS_NONE,     /* nothing */
} mapper_progress_mode;

/* What to do when the target table does not exist (--if-target-missing). */
typedef enum {
    MAPPER_TARGET_CREATE = 0, /* create it from the source's columns */
    MAPPER_TARGET_FAIL,       /* refuse to run (exit 3) */
} mapper_target_missing;
/* What a data or integrity error on a row does (--on-bad-rows). */
typedef enum {
    MAPPER_BAD_ROWS_FAIL = 0, /* the row's chunk fails */
    MAPPER_BAD_ROWS_REJECT,   /* the row is set aside, the chunk loads */
} mapper_bad_rows_mode;
/* Whether the target's indexes are built after the load (--defer-indexes). */
typedef enum {
    MAPPER_DEFER_AUTO = 0, /* defer those safe and worth deferring */
    MAPPER_DEFER_ON,       /* defer whatever can be dropped */
    MAPPER_DEFER_OFF,      /* maintain every index row by row */
} mapper_defer_indexes;

/* What to copy, and how. Fill with mapper_job_spec_init() first. */
typedef struct {
    const char *source;       /* libpq conninfo/URI; NULL: $MAPPER_SOURCE_URL,
                                 then libpq's defaults */
    const char *target;       /* likewise, $MAPPER_TARGET_URL */
    const char *table;        /* source [SCHEMA.]TABLE (SQL syntax, quotes
                                 allowed); NULL with query */
    const char *target_table; /* target [SCHEMA.]TABLE; NULL: same as table */
    const char *split_by;     /* integer column to range-split on; NULL: the
                                 single-column integer primary key, else ctid */
    int workers;              /* local worker processes (>= 1) */
    int64_t chunk_size;       /* rows per chunk, a target (>= 1) */
    int64_t max_inflight_chunks; /* stream mode: chunks held in memory at
                                    most; 0: MAPPER_INFLIGHT_PER_WORKER per
                                    worker */
    const char *worker_bin;    /* mapper-worker path; NULL: $MAPPER_WORKER_BIN,
                                  then next to this executable, then $PATH */
    mapper_retry_config retry; /* retry policy (retry_config_defaults) */
    double outage_timeout;     /* seconds a database may stay unreachable
                                  before the job gives up (> 0) */
    mapper_progress_mode progress;        /* progress output; NONE is the seed's
                                             enable_progress = false */
    double progress_interval;             /* seconds between log/JSON lines and
                                             progress_callback calls (0: 2.0) */
    mapper_progress_fn progress_callback; /* called at most once per
                                             progress_interval, and once at
                                             the end with the final snapshot
                                             (elapsed frozen, 100 % when every
                                             chunk finished), whatever the
                                             progress mode; or NULL */
    void *progress_user;                  /* passed to progress_callback */
    const char *progress_file; /* progress lines go here instead of stderr */
    const char *job_id;        /* ledger job id; NULL: derived from the spec */
    const char *state_schema;  /* ledger schema in the target ("mapper") */
    bool resume;               /* continue job_id: skip its done chunks */
    bool resume_auto;          /* start job_id if new, continue it if
                                  unfinished, do nothing if done */
    bool restart;              /* discard job_id's ledger, start afresh */
    bool truncate;             /* empty the target first (fresh jobs only) */
    bool no_ledger;            /* no ledger: a retried chunk may duplicate */
    double grace;              /* seconds running chunks may finish after
                                  SIGINT/SIGTERM before they are aborted */
    const char *listen;        /* tcp://ADDR:PORT for remote workers, or NULL */
    bool insecure;             /* allow --listen on plain TCP (no CURVE) */
    double worker_timeout;     /* a silent remote worker loses its lease */
    const char *curve_secret_key; /* coordinator's CURVE secret key file */
    const char *curve_allow; /* allowed workers' public keys: file or dir */
    /* queries and target tables */
    const char *query;   /* a SELECT to copy instead of table (then
                            target_table is required), or NULL */
    const char *columns; /* comma-separated source columns to copy, names
                            exactly as stored; NULL: all */
    mapper_target_missing if_target_missing; /* missing target table */
    /* bad rows */
    mapper_bad_rows_mode on_bad_rows; /* fail (default) or reject */
    const char *reject_file; /* reject: rows go here, reasons to FILE.log */
    int64_t max_rejects;     /* reject: the job fails once more rows than
                                this are rejected; < 0 unlimited (default) */
    mapper_defer_indexes defer_indexes; /* build indexes after the load */
    mapper_write_mode mode;             /* append (default) or upsert */
    const char *key; /* upsert: comma-separated key columns (names as
                        stored) with a unique index on the target */
} mapper_job_spec;

/* One chunk that failed for good. */
typedef struct {
    int64_t chunk_id;        /* the chunk */
    char error[512];         /* one-line error message */
    char sqlstate[6];        /* "" when none (e.g. a crashed worker) */
    char side[8];            /* "source", "target" or "worker" */
    char classification[16]; /* retry class: "integrity", "connection" */
    int attempts;            /* attempts made */
} mapper_chunk_error;

/* The job's result; field names are the seed design's. */
typedef struct {
    int64_t total_rows_processed;     /* successful + failed */
    int64_t total_rows_successful;    /* rows committed in the target */
    int64_t total_rows_failed;        /* rows of chunks that failed, and
                                         rows rejected */
    int64_t rows_rejected;            /* rows set aside (--on-bad-rows
                                         reject) in committed chunks */
    int64_t chunks_total;             /* chunks planned */
    int64_t chunks_succeeded;         /* chunks committed */
    int64_t chunks_failed;            /* chunks failed for good */
    mapper_chunk_error *chunk_errors; /* chunks_failed entries (malloc'd) */
    size_t n_chunk_errors;            /* entries in chunk_errors */
    double elapsed_s;                 /* wall time of the job */
    double rows_per_s;                /* successful rows / elapsed */
    int64_t bytes;                    /* COPY bytes committed */
    double planning_s;                /* time spent planning chunks */
    int64_t coord_max_rss_kb;         /* coordinator's peak RSS */
    int64_t worker_max_rss_kb;        /* largest worker's peak RSS */
    double coord_cpu_s;               /* coordinator's CPU (user + sys) */
    double workers_cpu_s;             /* all workers' CPU (user + sys) */
    bool interrupted;                 /* stopped by SIGINT/SIGTERM */
    char job_id[65];                  /* the ledger's job id, "" without */
    bool resumed;                     /* continued an earlier run's job */
    bool already_done;                /* resume_auto: the job was done */
    bool stream;                      /* a query read once (stream mode) */
    bool restart_only;                /* cannot resume (stream mode or
                                         ctid page ranges): restart it */
    bool ledger;                      /* chunks were recorded in a ledger */
    int exit_code;                    /* see MAPPER_EXIT_* in defaults.h */
    char error[1024];                 /* why the job could not run, or "" */
    double index_build_s;             /* time spent rebuilding indexes */
    char deferred_indexes[1024];      /* their names, comma-separated */
    mapper_write_mode mode;           /* the job's --mode */
    int64_t rows_inserted;            /* upsert: rows with a new key */
    int64_t rows_updated;             /* upsert: existing rows changed */
    bool swapped;                     /* replace: the new table took the
                                         target's place */
    double swap_s;                    /* replace: seconds the swap's
                                         transaction took, its wait for
                                         the target's lock included */
    int64_t run;                      /* the job's run this was (1, 2, ...:
                                         an upsert of a finished job, or
                                         --restart, starts the next) */
} mapper_result;

/* Defaults: workers = CPUs, chunk_size 50000, retries on (3), progress
 * auto, on_bad_rows fail, unlimited max_rejects, everything else NULL. */
void mapper_job_spec_init(mapper_job_spec *spec);

/* Overlay the seed's variables on spec: MAPPER_PARALLEL_RETRY_ENABLED and
 * MAPPER_PARALLEL_PROGRESS_ENABLED (true/false/1/0/yes/no, any case),
 * MAPPER_PARALLEL_MAX_RETRIES (a whole number >= 0). Unset variables change
 * nothing. Call it between mapper_job_spec_init and setting fields of your
 * own, so that yours win. On a bad value returns false, leaves spec as it
 * was and writes a one-line message into err. */
bool mapper_job_spec_env(mapper_job_spec *spec, char *err, size_t errlen);

/* Run one job to its end. Fills *out (free with mapper_result_free) and
 * returns its exit code: 0 all chunks done, 1 some chunk failed or some row
 * was rejected, 2 bad spec,
 * 3 could not run, 75 interrupted. Installs handlers for SIGCHLD, SIGINT,
 * SIGTERM and ignores SIGPIPE while it runs; restores them afterwards. */
int mapper_job_run(const mapper_job_spec *spec, mapper_result *out);

/* Free what *result owns. */
void mapper_result_free(mapper_result *result);

/* Print the summary table, and write the result as one JSON object. */
void mapper_result_print(const mapper_result *result, FILE *out);
bool mapper_result_write_json(const mapper_result *result, FILE *out);

/* A write mode's name, as --mode spells it: "append", "replace", "upsert". */
const char *mapper_mode_name(mapper_write_mode mode);

#ifdef __cplusplus
}
#endif

#endif
