/* coordinator/dispatch.h - the coordinator's event loop: one thread,
 * zmq_poll over the ROUTER and the signal self-pipe, timers for retries.
 * Hands out chunks, tracks attempts, restarts dead workers, decides. */
#ifndef MAPPER_DISPATCH_H
#define MAPPER_DISPATCH_H

#include <stdbool.h>

#include "curve.h"
#include "ledger.h"
#include "mapper.h"
#include "plan.h"
#include "progress.h"
#include "reject.h"
#include "schema.h"
#include "spawn.h"

typedef struct {
    const schema_t *schema; /* tables, columns, split key */
    const plan_t *plan;     /* the chunks */
    const char *snapshot;   /* exported snapshot id */
    const spawn_t *spawn;   /* how to start a local worker */
    int workers;            /* local workers wanted */
    void *router;           /* bound ROUTER socket */
    int signal_fd;          /* self-pipe read end: 'C' child, 'T' stop */
    const mapper_retry_config *retry; /* retry policy */
    double outage_timeout;    /* seconds a database may stay unreachable */
    const char *conninfo[3];  /* by proto_side_t: for probing in outages */
    progress_t *progress;     /* told of every chunk event; ticked */
    ledger_t *ledger;         /* the job's ledger, or NULL (--no-ledger) */
    const bool *done;         /* chunks already committed (resume), or NULL */
    const int64_t *done_rows; /* their rows */
    const int64_t *done_rejected; /* their rows set aside, or NULL */
    const char *listen;    /* --listen endpoint: remote workers welcome */
    double worker_timeout; /* a remote worker silent this long loses its
                              lease */
    const char *source_id; /* the job's source database identity */
    curve_zap_t *zap;      /* CURVE ZAP handler to poll, or NULL */
    double grace;          /* seconds running chunks may finish after a
                              stop signal */
    reject_t *rejects;     /* --on-bad-rows=reject: the reject file, or
                              NULL (a data error fails the chunk) */
    int64_t max_rejects;   /* rejected rows allowed; < 0 unlimited */
    /* Stream mode (read_sql set; plan empty): one worker runs read_sql once
     * and cuts its rows into chunks of chunk_rows, which other workers
     * write into the schema's target; at most max_inflight chunks are
     * held. */
    const char *read_sql; /* COPY (query) TO STDOUT, or NULL */
    int64_t chunk_rows;   /* rows per stream chunk */
    int64_t max_inflight; /* chunks held in memory at most */
    int64_t est_rows;     /* the planner's estimate of the result */
} dispatch_config_t;

/* Run every chunk to an end (done or failed for good), or until a stop
 * signal; reap every worker before returning. Fills the counters, errors
 * and `interrupted` of *out. Returns false when the job could not run at
 * all (e.g. workers die before they start), with out->error set. */
bool dispatch_run(const dispatch_config_t *cfg, mapper_result *out)
    __attribute__((warn_unused_result));

#endif
