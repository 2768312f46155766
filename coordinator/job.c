/* coordinator/job.c - mapper_job_run: connect, export the snapshot, read
 * the schema, plan, start the workers and run the event loop. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "curve.h"
#include "defaults.h"
#include "dispatch.h"
#include "indexes.h"
#include "ledger.h"
#include "log.h"
#include "mapper.h"
#include "modes.h"
#include "pgutil.h"
#include "plan.h"
#include "progress.h"
#include "reject.h"
#include "report.h"
#include "schema.h"
#include "signals.h"
#include "spawn.h"
#include "spec.h"

#define JOB_SOCKET_NAME "coord.sock"

static int s_fail(mapper_result *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(mapper_result *out, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vreason(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    out->exit_code = code;
    return code;
}

/* True when a bound endpoint (ZMQ_LAST_ENDPOINT: tcp://ADDR:PORT with a
 * numeric address) is on loopback only. */
static bool s_loopback(const char *bound)
{
    const char *host = bound + strlen("tcp://");
    return !strncmp(host, "127.", 4) || !strncmp(host, "[::1]:", 6);
}

/* The flags, before anything connects: a usage error at the first that
 * is wrong. */
static int s_validate(const mapper_job_spec *spec, mapper_result *out)
{
    char err[512];
    return spec_check(spec, err, sizeof err)
               ? MAPPER_EXIT_OK
               : s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
}

/* Connect one side; on failure fill out and return NULL. */
static PGconn *s_connect(const char *conninfo, proto_side_t side,
                         mapper_result *out)
{
    pgutil_error_t err;
    PGconn *c = pgutil_connect(conninfo, side, "mapper-coord", &err);
    if (!c) {
        char where[256];
        log_describe_conninfo(where, sizeof where, conninfo);
        s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s database unreachable (%s): %s",
               pgutil_side_name(side), where, err.message);
    }
    return c;
}

/* Begin the job's snapshot transaction on src and export its snapshot. */
static bool s_export_snapshot(PGconn *src, char *id, size_t n,
                              mapper_result *out)
{
    pgutil_error_t err;
    PGresult *res = NULL;
    if (pgutil_exec(src,
                    "SET idle_in_transaction_session_timeout = 0; "
                    "SET statement_timeout = 0; SET lock_timeout = 0; "
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    PROTO_SIDE_SOURCE, &err))
        res = pgutil_query(src, "SELECT pg_export_snapshot()", 0, NULL,
                           PROTO_SIDE_SOURCE, &err);
    if (!res) {
        s_fail(out, MAPPER_EXIT_CANNOT_RUN,
               "source: cannot export a snapshot: %s", err.message);
        return false;
    }
    snprintf(id, n, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return true;
}

/* Stream chunks held in memory at most. */
static int64_t s_max_inflight(const mapper_job_spec *spec)
{
    if (spec->max_inflight_chunks > 0) return spec->max_inflight_chunks;
    int64_t n = (int64_t)MAPPER_INFLIGHT_PER_WORKER * spec->workers;
    return n > MAPPER_INFLIGHT_PER_WORKER ? n : MAPPER_INFLIGHT_PER_WORKER;
}

/* A query without --split-by is read once and cut into chunks as it
 * streams (stream mode): there is nothing to plan. */
static bool s_stream_mode(const schema_t *s)
{
    return s->is_query && !s->qsplit;
}

static bool s_plan(PGconn *src, const schema_t *s, int64_t chunk_size,
                   plan_t *plan, const char **how)
{
    if (s->is_query) {
        bool dense = false;
        bool ok =
            plan_query_pg(src, s->qsource, s->qsplit, chunk_size, plan, &dense);
        *how = dense ? "equal key ranges over the query's result (dense key) "
                       "on "
                     : "key ranges (a walk of the query's sorted result) on ";
        return ok;
    }
    if (s->qsplit) {
        bool dense = false;
        bool ok = plan_keyset_pg(src, s->qsource, s->qsplit, chunk_size,
                                 s->reltuples, plan, &dense);
        *how = dense ? "equal key ranges (dense key) on "
                     : "key ranges (index walk) on ";
        return ok;
    }
    *how = "ctid page ranges";
    if (s->relkind == 'r' || s->relkind == 'm') {
        double rpp = s->pages > 0 && s->reltuples > 0
                         ? s->reltuples / (double)s->pages
                         : MAPPER_DEFAULT_ROWS_PER_PAGE;
        return plan_ctid(s->pages, rpp, chunk_size, plan);
    }
    return plan_all(s->reltuples > 0 ? (int64_t)s->reltuples : 0, plan);
}

typedef struct {
    PGconn *src, *dst;   /* the coordinator's sessions */
    schema_t schema;     /* tables and columns */
    plan_t plan;         /* chunks */
    char snapshot[64];   /* exported snapshot id */
    char dir[256];       /* private directory for the ipc socket */
    char endpoint[300];  /* ipc:// endpoint */
    void *zctx, *router; /* ZeroMQ */
    spawn_t spawn;       /* worker start-up */
    char source_id[PROTO_MAX_SOURCE_ID + 1]; /* source database identity */
    ledger_t ledger;                         /* the job's ledger */
    bool has_ledger;                         /* ledger is open */
    bool *done;             /* resumed: chunks already committed */
    int64_t *done_rows;     /* their rows */
    int64_t *done_rejected; /* their rows set aside */
    curve_allow_t *allow;   /* CURVE allow-list */
    curve_zap_t *zap;       /* ZAP handler */
    bool stream;            /* stream mode */
    char *read_sql;         /* stream mode: the reader's COPY */
} s_job_t;

/* Lock the job (one coordinator per job), pick its run and check it against
 * mode; --resume=auto starts, resumes or finds it done (already_done). */
static int s_lock_check(const mapper_job_spec *spec, s_job_t *j,
                        const char *job_id, const ledger_spec_t *ls,
                        ledger_mode_t *mode, bool *exists, mapper_result *out)
{
    char err[1024];
    if (!ledger_lock(&j->ledger, job_id, err, sizeof err))
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s", err);
    if (!modes_start(&j->ledger, spec, job_id, mode, &out->run, err,
                     sizeof err) ||
        !ledger_check(&j->ledger, job_id, ls, *mode, exists, err, sizeof err))
        return s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
    if (*mode != LEDGER_AUTO) return MAPPER_EXIT_OK;
    *mode = *exists ? LEDGER_RESUME : LEDGER_FRESH;
    if (*exists && !strcmp(j->ledger.status, "done")) {
        snprintf(out->job_id, sizeof out->job_id, "%s", job_id);
        out->ledger = out->already_done = true;
        return MAPPER_EXIT_OK;
    }
    if (*exists && out->restart_only)
        return s_fail(out, MAPPER_EXIT_USAGE,
                      "--resume=auto: job %s is unfinished, and cannot be "
                      "picked up where it stopped (a stream job, or a table "
                      "cut into ctid page ranges); run it again with "
                      "--restart --truncate",
                      job_id);
    return MAPPER_EXIT_OK;
}

/* Plan afresh, or load the plan of the job being resumed; record a fresh
 * plan in the ledger (with --truncate in the same transaction). */
/* --resume is refused for a stream and for ctid ranges (exit 2, out says
 * why); else MAPPER_EXIT_OK. */
static int s_check_resumable(const s_job_t *j, mapper_result *out)
{
    if (j->stream)
        return s_fail(out, MAPPER_EXIT_USAGE,
                      "--resume: a query without --split-by is read as one "
                      "stream, which cannot be picked up where it stopped; "
                      "run it again with --restart --truncate, or use "
                      "--split-by");
    /* A row updated between the runs may move to another page: from an
     * unfinished range into a finished one (lost) or back (copied twice). */
    if (!j->schema.qsplit)
        return s_fail(out, MAPPER_EXIT_USAGE,
                      "--resume: %s has no integer key, so it was cut into "
                      "ctid page ranges, and rows may move between pages "
                      "under a new snapshot (lost or copied twice); run it "
                      "again with --restart --truncate, or give --split-by",
                      j->schema.qsource);
    return MAPPER_EXIT_OK;
}

static int s_plan_job(const mapper_job_spec *spec, s_job_t *j,
                      const char *target, mapper_result *out)
{
    char err[1024];
    /* A query is named by its text (the query field), not its FROM item. */
    ledger_spec_t ls = {j->source_id,
                        j->schema.is_query ? "(query)" : j->schema.qsource,
                        j->schema.qtarget,
                        j->stream          ? "(stream)"
                        : j->schema.qsplit ? j->schema.qsplit
                                           : "ctid",
                        spec->chunk_size,
                        j->schema.qcolumns,
                        spec->query ? spec->query : ""};
    bool exists = false;
    int refused = spec->resume ? s_check_resumable(j, out) : MAPPER_EXIT_OK;
    if (refused != MAPPER_EXIT_OK) return refused;
    ledger_mode_t mode = spec->resume        ? LEDGER_RESUME
                         : spec->restart     ? LEDGER_RESTART
                         : spec->resume_auto ? LEDGER_AUTO
                                             : LEDGER_FRESH;
    if (!spec->no_ledger) {
        if (!ledger_open(&j->ledger, j->dst, target,
                         spec->state_schema ? spec->state_schema
                                            : MAPPER_DEFAULT_STATE_SCHEMA,
                         err, sizeof err))
            return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s", err);
        j->has_ledger = true;
        char id[PROTO_MAX_ID + 1];
        if (!spec->job_id && !ledger_default_id(&j->ledger, &ls, id, sizeof id))
            return s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                          "ledger: cannot derive the job id");
        if (mode == LEDGER_FRESH)
            indexes_warn_pending(&j->ledger, spec->job_id ? spec->job_id : id);
        int rc = s_lock_check(spec, j, spec->job_id ? spec->job_id : id, &ls,
                              &mode, &exists, out);
        if (rc != MAPPER_EXIT_OK || out->already_done) return rc;
        if (exists && spec->truncate && modes_truncate_refused(&j->ledger, out))
            return s_fail(out, MAPPER_EXIT_USAGE,
                          "--truncate refused: job %s has committed chunks "
                          "(--restart alone keeps the target's rows)",
                          j->ledger.job_id);
        snprintf(out->job_id, sizeof out->job_id, "%s", j->ledger.job_id);
        out->ledger = true;
        log_info("job %s (ledger %s.jobs in the target)%s", out->job_id,
                 j->ledger.qschema, mode == LEDGER_RESUME ? ": resuming" : "");
    }
    double t0 = clock_now();
    if (mode == LEDGER_RESUME) {
        if (!ledger_load(&j->ledger, &j->plan, &j->done, &j->done_rows,
                         &j->done_rejected, err, sizeof err))
            return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s", err);
        out->resumed = true;
        size_t left = 0;
        for (size_t i = 0; i < j->plan.n; i++)
            left += !j->done[i];
        log_warn("resumed job %s: %zu of %zu chunks left; they read a new "
                 "snapshot of the source (the first run's died with it)",
                 out->job_id, left, j->plan.n);
        return MAPPER_EXIT_OK;
    }
    const char *how = "";
    if (j->stream) {
        plan_chunk_t all = {.kind = PLAN_ALL};
        /* A writer sets bad rows aside from the rows it holds: text rows,
         * which end at their newline, and go to the reject file as is. */
        if (spec->on_bad_rows == MAPPER_BAD_ROWS_REJECT)
            j->schema.binary = false;
        if (!schema_chunk_sql(&j->schema, &all, &j->read_sql))
            return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "out of memory");
        j->plan.est_rows =
            j->schema.reltuples > 0 ? (int64_t)j->schema.reltuples : 0;
        log_info("stream mode: one reader, chunks of %" PRId64
                 " rows, at most %" PRId64 " in memory, %s COPY",
                 spec->chunk_size, s_max_inflight(spec),
                 j->schema.binary ? "binary" : "text");
    } else if (!s_plan(j->src, &j->schema, spec->chunk_size, &j->plan, &how)) {
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                      "planning the chunks failed");
    }
    out->planning_s = clock_now() - t0;
    if (!j->stream)
        log_info("planned %zu chunks (%s%s, about %" PRId64 " rows) in %.2f s, "
                 "%s COPY",
                 j->plan.n, how, j->schema.qsplit ? j->schema.qsplit : "",
                 j->plan.est_rows, out->planning_s,
                 j->schema.binary ? "binary" : "text");
    char truncate[600];
    snprintf(truncate, sizeof truncate, "TRUNCATE %s", j->schema.qtarget);
    if (j->has_ledger) {
        indexes_request_t ir = {modes_defer_indexes(spec),
                                j->schema.qtarget,
                                j->schema.is_query ? NULL : j->schema.qsource,
                                j->schema.columns,
                                j->schema.ncolumns,
                                spec->truncate ? truncate : NULL,
                                spec->on_bad_rows == MAPPER_BAD_ROWS_REJECT};
        char *first = NULL;
        bool ok = indexes_plan_drop(&j->ledger, j->dst, j->src, &ir, &first,
                                    err, sizeof err) &&
                  ledger_create(&j->ledger, &ls, &j->plan, exists, first, err,
                                sizeof err);
        free(first);
        if (!ok) return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s", err);
    } else if (spec->truncate) {
        pgutil_error_t e;
        if (!pgutil_exec(j->dst, truncate, PROTO_SIDE_TARGET, &e))
            return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "--truncate: %s",
                          e.message);
    }
    return MAPPER_EXIT_OK;
}

/* Log where remote workers may connect: the address actually bound (an
 * endpoint such as "tcp://127.0.0.1:1;0.0.0.0:5555" binds the wildcard),
 * with a warning when plain TCP is open beyond loopback. */
static void s_listening(const mapper_job_spec *spec, void *router)
{
    char bound[256] = "";
    size_t n = sizeof bound;
    if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, bound, &n)) bound[0] = '\0';
    const char *at = bound[0] ? bound : spec->listen;
    if (spec->curve_secret_key)
        log_info("listening for workers on %s (CURVE)", at);
    else if (!strncmp(at, "tcp://", 6) && s_loopback(at))
        log_warn("listening for workers on %s (plain TCP, --insecure): any "
                 "local process may connect",
                 at);
    else
        log_warn("listening for workers on %s (plain TCP, --insecure): any "
                 "host that reaches it may connect",
                 at);
}

/* CURVE on the ROUTER: the coordinator's key, the allow-list, a ZAP
 * handler, and a key pair for this run's forked workers (handed to them
 * through their environment, its public half allowed). */
static int s_curve(const mapper_job_spec *spec, s_job_t *j, char *env_server,
                   char *env_secret, size_t n, mapper_result *out)
{
    char err[512], secret[CURVE_KEY_LEN + 1], public[CURVE_KEY_LEN + 1];
    char run_public[CURVE_KEY_LEN + 1], run_secret[CURVE_KEY_LEN + 1];
    if (!curve_available())
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                      "this libzmq has no CURVE support");
    if (!curve_read_key(spec->curve_secret_key, true, secret, err, sizeof err))
        return s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
    j->allow = spec->curve_allow
                   ? curve_allow_load(spec->curve_allow, err, sizeof err)
                   : curve_allow_new();
    if (!j->allow) return s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
    if (zmq_curve_keypair(run_public, run_secret) ||
        !curve_public_from_secret(secret, public) ||
        !curve_allow_add(j->allow, run_public))
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "cannot make CURVE keys");
    snprintf(env_server, n, "%s=%s", MAPPER_ENV_CURVE_SERVER, public);
    snprintf(env_secret, n, "%s=%s", MAPPER_ENV_CURVE_SECRET, run_secret);
    if (!(j->zap = curve_zap_new(j->zctx, j->allow)) ||
        !curve_server_setup(j->router, secret))
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                      "cannot set up CURVE (see the log above)");
    log_info("CURVE on: %zu allowed worker key(s) and this run's own",
             curve_allow_count(j->allow) - 1);
    return MAPPER_EXIT_OK;
}

static int s_prepare(const mapper_job_spec *spec, s_job_t *j,
                     const char *source, const char *target, mapper_result *out)
{
    if (!(j->src = s_connect(source, PROTO_SIDE_SOURCE, out)))
        return out->exit_code;
    if (!(j->dst = s_connect(target, PROTO_SIDE_TARGET, out)))
        return out->exit_code;
    pgutil_source_identity(j->src, j->source_id, sizeof j->source_id);
    if (!s_export_snapshot(j->src, j->snapshot, sizeof j->snapshot, out))
        return out->exit_code;
    bool usage = false;
    char err[1024];
    /* --resume never creates the target: a resumed job's table exists. */
    schema_request_t req = {
        .table = spec->table,
        .query = spec->query,
        .target_table = spec->target_table,
        .split_by = spec->split_by,
        .columns = spec->columns,
        .create_target =
            spec->if_target_missing == MAPPER_TARGET_CREATE && !spec->resume,
        .rows_as_text = spec->on_bad_rows == MAPPER_BAD_ROWS_REJECT};
    if (!schema_load(j->src, j->dst, &req, &j->schema, &usage, err,
                     sizeof err) ||
        !modes_prepare(spec, j->dst, &j->schema, &usage, err, sizeof err))
        return s_fail(out, usage ? MAPPER_EXIT_USAGE : MAPPER_EXIT_CANNOT_RUN,
                      "%s", err);
    j->stream = out->stream = s_stream_mode(&j->schema);
    out->restart_only = j->stream || !j->schema.qsplit;
    int rc = s_plan_job(spec, j, target, out);
    if (rc != MAPPER_EXIT_OK || out->already_done) return rc;
    if (!modes_run(&j->ledger, spec, &j->schema, out)) return out->exit_code;

    char perr[512];
    char *bin = spawn_find_worker(spec->worker_bin, perr, sizeof perr);
    if (!bin) return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "%s", perr);
    const char *tmp = getenv("TMPDIR");
    snprintf(j->dir, sizeof j->dir, "%s/mapper-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(j->dir)) {
        j->dir[0] = '\0';
        free(bin);
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                      "cannot create a directory in %s: %s",
                      tmp && *tmp ? tmp : "/tmp", strerror(errno));
    }
    snprintf(j->endpoint, sizeof j->endpoint, "ipc://%s/" JOB_SOCKET_NAME,
             j->dir);
    j->zctx = zmq_ctx_new();
    j->router = j->zctx ? zmq_socket(j->zctx, ZMQ_ROUTER) : NULL;
    /* No ZMQ_ROUTER_HANDOVER: a second connection claiming a connected
     * worker's routing id hears nothing. ZMTP heartbeats end connections
     * whose peer vanished, so that a worker coming back under its id is
     * heard again. */
    int hb_ivl = (int)(MAPPER_HEARTBEAT_S * 1000);
    int hb_timeout = (int)(MAPPER_LINK_TIMEOUT_S * 1000);
    if (!j->router || !proto_socket_setup(j->router, true) ||
        zmq_setsockopt(j->router, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) ||
        zmq_setsockopt(j->router, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout,
                       sizeof hb_timeout)) {
        free(bin);
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "cannot make a socket: %s",
                      zmq_strerror(errno));
    }
    /* CURVE: the ZAP handler first, then the keys, then the binds. */
    char env_server[80] = "", env_secret[80] = "";
    const char *extra_env[] = {env_server, env_secret, NULL};
    if (spec->curve_secret_key &&
        (rc = s_curve(spec, j, env_server, env_secret, sizeof env_server,
                      out)) != MAPPER_EXIT_OK) {
        free(bin);
        return rc;
    }
    const char *endpoints[] = {j->endpoint, spec->listen};
    for (int i = 0; i < 2; i++) {
        if (!endpoints[i] || !zmq_bind(j->router, endpoints[i])) continue;
        free(bin);
        return s_fail(out, i ? MAPPER_EXIT_USAGE : MAPPER_EXIT_CANNOT_RUN,
                      "cannot bind %s: %s", endpoints[i], zmq_strerror(errno));
    }
    if (spec->listen) s_listening(spec, j->router);
    bool ok = spawn_init(&j->spawn, bin, j->endpoint, source, target,
                         env_server[0] ? extra_env : NULL,
                         log_get_level() >= LOG_DEBUG);
    free(bin);
    if (!ok) return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "out of memory");
    return MAPPER_EXIT_OK;
}

/* A resumed job: the rejected rows of chunks that committed while no
 * coordinator wrote them (it died first) go to the reject file now. */
static bool s_rejects_catch_up(s_job_t *j, reject_t *rejects)
{
    ledger_unwritten_t *v = NULL;
    size_t n = 0;
    bool ok = ledger_rejects_unwritten(&j->ledger, &v, &n);
    for (size_t i = 0; ok && i < n; i++) {
        int64_t id = v[i].chunk_id;
        ok = id >= 0 && (size_t)id < j->plan.n &&
             reject_write_committed(rejects, &j->ledger, id,
                                    j->done_rejected[id],
                                    v[i].at[0] >= 0 ? v[i].at : NULL);
    }
    if (ok && n)
        log_info("resumed: the rejected rows of %zu committed chunk(s) were "
                 "not in the reject file yet: written",
                 n);
    free(v);
    return ok;
}

/* A resumed job without a reject file: say so when rows set aside by the
 * first run never reached its file (they stay in the ledger). */
static void s_rejects_left(s_job_t *j)
{
    ledger_unwritten_t *v = NULL;
    size_t n = 0;
    if (ledger_rejects_unwritten(&j->ledger, &v, &n) && n)
        log_warn("rows set aside by %zu committed chunk(s) are not in a "
                 "reject file yet: resume with --on-bad-rows=reject "
                 "--reject-file FILE to write them (they are kept in %s."
                 "rejects)",
                 n, j->ledger.qschema);
    free(v);
}

static void s_cleanup(s_job_t *j)
{
    /* The last STOPs to remote workers may still be queued: give them a
     * moment to leave (a worker that never hears one waits out its
     * --coordinator-timeout and exits 75), without hanging on a peer
     * that is gone. */
    int linger = MAPPER_STOP_LINGER_MS;
    if (j->router &&
        zmq_setsockopt(j->router, ZMQ_LINGER, &linger, sizeof linger))
        log_debug("ZMQ_LINGER: %s", zmq_strerror(errno));
    if (j->router) zmq_close(j->router);
    curve_zap_destroy(&j->zap);
    curve_allow_destroy(&j->allow);
    if (j->zctx) zmq_ctx_term(j->zctx);
    if (j->dir[0]) {
        char sock[300];
        snprintf(sock, sizeof sock, "%s/" JOB_SOCKET_NAME, j->dir);
        unlink(sock);
        rmdir(j->dir);
    }
    spawn_free(&j->spawn);
    if (j->has_ledger) ledger_close(&j->ledger);
    free(j->done);
    free(j->done_rows);
    free(j->read_sql);
    free(j->done_rejected);
    plan_free(&j->plan);
    schema_free(&j->schema);
    PQfinish(j->src);
    PQfinish(j->dst);
}

static double s_cpu(const struct rusage *u)
{
    return (double)(u->ru_utime.tv_sec + u->ru_stime.tv_sec) +
           (double)(u->ru_utime.tv_usec + u->ru_stime.tv_usec) / 1e6;
}

/* Resource figures; children are counted once reaped (all are, by now). */
static void s_resources(mapper_result *out)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    out->coord_max_rss_kb = self.ru_maxrss;
    out->worker_max_rss_kb = kids.ru_maxrss;
    out->coord_cpu_s = s_cpu(&self);
    out->workers_cpu_s = s_cpu(&kids);
}

int mapper_job_run(const mapper_job_spec *spec, mapper_result *out)
{
    memset(out, 0, sizeof *out);
    if (s_validate(spec, out) != MAPPER_EXIT_OK) return out->exit_code;
    const char *source =
        spec->source ? spec->source : getenv(MAPPER_ENV_SOURCE);
    const char *target =
        spec->target ? spec->target : getenv(MAPPER_ENV_TARGET);
    double t0 = clock_now();
    s_job_t j = {0};
    char err[256];
    /* Learn the passwords before anything can print them. */
    if (!log_hide_conninfo(source, NULL, err, sizeof err))
        return s_fail(out, MAPPER_EXIT_USAGE, "source: %s", err);
    if (!log_hide_conninfo(target, NULL, err, sizeof err))
        return s_fail(out, MAPPER_EXIT_USAGE, "target: %s", err);
    reject_t *rejects = NULL;
    if (spec->on_bad_rows == MAPPER_BAD_ROWS_REJECT &&
        !(rejects = reject_new(spec->reject_file, err, sizeof err)))
        return s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
    signals_t sig;
    if (!signals_install(&sig)) {
        reject_destroy(&rejects);
        return s_fail(out, MAPPER_EXIT_CANNOT_RUN, "pipe: %s", strerror(errno));
    }
    int rc =
        s_prepare(spec, &j, source ? source : "", target ? target : "", out);
    if (rc == MAPPER_EXIT_OK && out->resumed && !rejects && j.has_ledger)
        s_rejects_left(&j);
    if (rc == MAPPER_EXIT_OK && out->resumed && rejects && j.has_ledger &&
        !s_rejects_catch_up(&j, rejects))
        rc = s_fail(out, MAPPER_EXIT_CANNOT_RUN,
                    "--resume: the rejected rows of committed chunks could "
                    "not be written to the reject file (see the log)");
    report_t *report = NULL;
    progress_t *progress = NULL;
    if (out->already_done) {
        log_info("job %s already done: nothing to do", out->job_id);
    } else if (rc == MAPPER_EXIT_OK &&
               (spec->progress != MAPPER_PROGRESS_NONE ||
                spec->progress_callback) &&
               !(report = report_new(spec, err, sizeof err))) {
        rc = s_fail(out, MAPPER_EXIT_USAGE, "%s", err);
    }
    if (rc == MAPPER_EXIT_OK && !out->already_done &&
        !(progress =
              progress_new(j.stream ? (j.plan.est_rows + spec->chunk_size - 1) /
                                          spec->chunk_size
                                    : (int64_t)j.plan.n,
                           report ? report_callback : NULL, report,
                           report ? report_interval(report) : 0)))
        rc = s_fail(out, MAPPER_EXIT_CANNOT_RUN, "out of memory");
    if (rc == MAPPER_EXIT_OK && !out->already_done) {
        progress_set_rows_total_estimate(progress, j.plan.est_rows);
        progress_set_workers(progress, spec->workers);
        progress_set_mode(progress, spec->mode, out->run);
        dispatch_config_t cfg = {
            .schema = &j.schema,
            .plan = &j.plan,
            .snapshot = j.snapshot,
            .spawn = &j.spawn,
            .workers = spec->workers,
            .router = j.router,
            .signal_fd = sig.fds[0],
            .retry = &spec->retry,
            .outage_timeout = spec->outage_timeout,
            .conninfo = {"", source ? source : "", target ? target : ""},
            .progress = progress,
            .ledger = j.has_ledger ? &j.ledger : NULL,
            .done = j.done,
            .done_rows = j.done_rows,
            .done_rejected = j.done_rejected,
            .rejects = rejects,
            .max_rejects = spec->max_rejects,
            .grace = spec->grace,
            .listen = spec->listen,
            .worker_timeout = spec->worker_timeout,
            .source_id = j.source_id,
            .zap = j.zap,
            .read_sql = j.read_sql,
            .chunk_rows = spec->chunk_size,
            .max_inflight = s_max_inflight(spec),
            .est_rows = j.plan.est_rows};
        if (!dispatch_run(&cfg, out))
            rc = MAPPER_EXIT_CANNOT_RUN;
        else if (out->interrupted)
            rc = MAPPER_EXIT_INTERRUPTED;
        else if (out->chunks_failed > 0 || out->rows_rejected > 0)
            rc = MAPPER_EXIT_FAILED;
        if (j.has_ledger)
            rc = indexes_after_load(&j.ledger, target ? target : "",
                                    spec->workers, progress, sig.fds[0], rc,
                                    out);
        rc = modes_finish(&j.ledger, spec, &j.schema, rc, progress, out);
        report_last(report);
        progress_finish(progress);
        if (out->rows_rejected > 0 && rejects)
            log_warn("%" PRId64 " rows rejected: the rows are in %s, the "
                     "reasons in %s" REJECT_LOG_SUFFIX,
                     out->rows_rejected, spec->reject_file, spec->reject_file);
        if (j.has_ledger)
            ledger_finish(&j.ledger, rc == MAPPER_EXIT_OK ? "done"
                                     : rc == MAPPER_EXIT_FAILED
                                         ? "failed"
                                         : "interrupted");
    }
    progress_destroy(&progress);
    report_destroy(&report);
    s_cleanup(&j);
    reject_destroy(&rejects);
    signals_restore(&sig);
    out->elapsed_s = clock_now() - t0;
    out->rows_per_s = out->elapsed_s > 0
                          ? (double)out->total_rows_successful / out->elapsed_s
                          : 0;
    out->exit_code = rc;
    s_resources(out);
    return rc;
}

void mapper_result_free(mapper_result *result)
{
    if (!result) return;
    free(result->chunk_errors);
    result->chunk_errors = NULL;
    result->n_chunk_errors = 0;
}
