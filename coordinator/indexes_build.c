/* coordinator/indexes_build.c - indexes_rebuild: the index builds of a job,
 * several at once on sessions of their own, then its constraints and
 * foreign keys in order; every step one transaction with its ledger row. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "defaults.h"
#include "hold.h"
#include "indexes.h"
#include "log.h"
#include "pgutil.h"

#define S_SQL_MAX 2048
#define S_DO_TAG  "$mapper_idx$"

typedef struct {
    int id;         /* item_id */
    char name[256]; /* index or constraint name */
    int step;       /* last step done */
    int last;       /* the step that finishes it */
} s_item_t;

/* One rebuild. */
typedef struct {
    ledger_t *l;          /* the job's ledger */
    progress_t *progress; /* where finished items are counted, or NULL */
    int stop_fd;          /* the self-pipe, or -1 */
    bool stop;            /* SIGINT/SIGTERM seen */
    s_item_t *items;      /* the job's items, in item order */
    size_t n;             /* how many */
    int built;            /* of them, finished */
    int k;                /* the step being taken */
    char *err;            /* the first failure, once failed */
    size_t errlen;        /* its size */
    bool failed;          /* err is set */
} s_ctx_t;

/* The DO block taking item id from its recorded step up to step k: it
 * locks the item's ledger row, runs the statements recorded for the steps
 * between, and records the step reached (steps with nothing to run are
 * skipped over). Nothing when the row is past k already. */
static bool s_step_sql(const ledger_t *l, const char *qjob, int id, int k,
                       char *buf, size_t n)
{
    int w = snprintf(
        buf, n,
        "DO " S_DO_TAG " DECLARE r record; s int; BEGIN "
        "SELECT * INTO r FROM %s.indexes WHERE job_id = %s AND item_id = %d "
        "AND step < %d FOR UPDATE; IF NOT FOUND THEN RETURN; END IF; "
        "IF r.tablespace IS NOT NULL THEN PERFORM set_config("
        "'default_tablespace', r.tablespace, true); END IF; "
        "IF r.step < 1 AND r.build_sql IS NOT NULL THEN EXECUTE r.build_sql; "
        "END IF; IF %d >= 2 AND r.step < 2 AND r.attach_sql IS NOT NULL THEN "
        "EXECUTE r.attach_sql; END IF; IF %d >= 3 AND r.validate_sql IS NOT "
        "NULL THEN EXECUTE r.validate_sql; END IF; s := %d; "
        "IF s < 2 AND r.attach_sql IS NULL THEN s := 2; END IF; "
        "IF s = 2 AND r.validate_sql IS NULL THEN s := 3; END IF; "
        "UPDATE %s.indexes SET step = s WHERE job_id = %s AND item_id = %d; "
        "END " S_DO_TAG,
        l->qschema, qjob, id, k, k, k, k, l->qschema, qjob, id);
    return w > 0 && (size_t)w < n && !strstr(qjob, S_DO_TAG) &&
           !strstr(l->qschema, S_DO_TAG);
}

/* The job's unfinished items, in item order. */
static bool s_load(s_ctx_t *x)
{
    char sql[S_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT item_id, name, step, CASE WHEN validate_sql IS NOT NULL "
             "THEN 3 WHEN attach_sql IS NOT NULL THEN 2 ELSE 1 END FROM "
             "%s.indexes WHERE job_id = $1 ORDER BY item_id",
             x->l->qschema);
    const char *p[] = {x->l->job_id};
    pgutil_error_t e;
    PGresult *res = pgutil_query(x->l->conn, sql, 1, p, PROTO_SIDE_TARGET, &e);
    if (!res) {
        snprintf(x->err, x->errlen, "deferred indexes: ledger: %s", e.message);
        return false;
    }
    free(x->items);
    x->n = (size_t)PQntuples(res);
    x->items = calloc(x->n ? x->n : 1, sizeof *x->items);
    x->built = 0;
    for (size_t i = 0; x->items && i < x->n; i++) {
        s_item_t *it = &x->items[i];
        it->id = atoi(PQgetvalue(res, (int)i, 0));
        snprintf(it->name, sizeof it->name, "%s", PQgetvalue(res, (int)i, 1));
        it->step = atoi(PQgetvalue(res, (int)i, 2));
        it->last = atoi(PQgetvalue(res, (int)i, 3));
        x->built += it->step >= it->last;
    }
    PQclear(res);
    if (!x->items) snprintf(x->err, x->errlen, "out of memory");
    return x->items != NULL;
}

/* Record the first failure: the item, the error, its detail (for
 * duplicates the key: "Key (k)=(77) is duplicated."). */
static void s_failed(s_ctx_t *x, const s_item_t *it, PGconn *c,
                     const PGresult *res)
{
    if (x->failed) return;
    pgutil_error_t e;
    pgutil_capture(c, res, PROTO_SIDE_TARGET, &e);
    const char *d = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : "";
    snprintf(x->err, x->errlen,
             "deferred index %s could not be rebuilt: %s%s%s%s%s (its "
             "definition stays in the ledger: fix the data, then --resume)",
             it->name, e.sqlstate, e.sqlstate[0] ? " " : "", e.message,
             d && *d ? ": " : "", d ? d : "");
    x->failed = true;
}

static void s_progress(s_ctx_t *x)
{
    if (!x->progress) return;
    progress_set_indexes(x->progress, x->built, (int)x->n);
    progress_tick(x->progress);
}

/* Drain stop_fd: a byte other than 'C' (SIGCHLD) means stop. */
static void s_check_stop(s_ctx_t *x)
{
    char b[64];
    ssize_t r;
    while (x->stop_fd >= 0 && (r = read(x->stop_fd, b, sizeof b)) > 0)
        for (ssize_t i = 0; i < r; i++)
            x->stop |= b[i] != 'C';
}

typedef struct {
    PGconn *conn;
    s_item_t *item; /* building now, or NULL */
    bool bad;       /* this build failed */
} s_slot_t;

static PGconn *s_open(const char *conninfo, s_ctx_t *x)
{
    pgutil_error_t e;
    PGconn *c = pgutil_connect(conninfo, PROTO_SIDE_TARGET,
                               "mapper-coord index build", &e);
    if (!c) {
        snprintf(x->err, x->errlen, "deferred indexes: target: %s", e.message);
        x->failed = true;
        return NULL;
    }
    /* A build whose coordinator died must not go on behind a resume's:
     * client_connection_check_interval (PostgreSQL 14+) ends it. */
    pgutil_error_t ignored;
    if (!pgutil_exec(c, "SET client_connection_check_interval = '1s'",
                     PROTO_SIDE_TARGET, &ignored))
        log_debug("index build: no client_connection_check_interval");
    if (!pgutil_exec(
            c,
            "SET statement_timeout = 0; SET lock_timeout = 0; "
            "SELECT CASE WHEN pg_size_bytes(current_setting("
            "'maintenance_work_mem')) < pg_size_bytes('" MAPPER_INDEX_MEM
            "') THEN set_config('maintenance_work_mem', '" MAPPER_INDEX_MEM
            "', false) END",
            PROTO_SIDE_TARGET, &e))
        log_warn("index build: session settings: %s", e.message);
    return c;
}

/* Read what a busy slot's build returned; frees the slot when it ended. */
static void s_collect(s_ctx_t *x, s_slot_t *s, int *finished)
{
    if (!PQconsumeInput(s->conn)) {
        s_failed(x, s->item, s->conn, NULL);
        s->item = NULL;
        return;
    }
    while (s->item && !PQisBusy(s->conn)) {
        PGresult *res = PQgetResult(s->conn);
        if (!res) {
            if (!s->bad) {
                x->built +=
                    s->item->step < s->item->last && s->item->last <= x->k;
                s->item->step = x->k;
                if (x->k == INDEXES_STEP_BUILT)
                    hold_at("index-build", ++*finished);
            }
            s->item = NULL, s->bad = false;
            s_progress(x);
            break;
        }
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            /* A step cancelled by a stop is not a failure: it is redone. */
            if (!x->stop) s_failed(x, s->item, s->conn, res);
            s->bad = true;
        }
        PQclear(res);
    }
}

/* Take every item not past it to step x->k, on up to parallel sessions:
 * hand each idle session the next item, wait on all of them and on
 * stop_fd. A failure or a stop hands out nothing more and waits for (or
 * cancels) the steps running. */
static void s_build_all(s_ctx_t *x, const char *conninfo, const char *qjob,
                        int parallel)
{
    s_slot_t slots[MAPPER_MAX_WORKERS] = {{0}};
    if (parallel > MAPPER_MAX_WORKERS) parallel = MAPPER_MAX_WORKERS;
    size_t next = 0, busy = 0;
    int finished = 0;
    for (;;) {
        while (next < x->n && x->items[next].step >= x->k)
            next++;
        for (int i = 0; i < parallel && next < x->n && !x->failed && !x->stop;
             i++) {
            s_slot_t *s = &slots[i];
            if (s->item) continue;
            if (!s->conn && !(s->conn = s_open(conninfo, x))) break;
            char sql[S_SQL_MAX];
            s_item_t *it = &x->items[next++];
            if (!s_step_sql(x->l, qjob, it->id, x->k, sql, sizeof sql) ||
                !PQsendQuery(s->conn, sql)) {
                s_failed(x, it, s->conn, NULL);
                break;
            }
            log_debug("index build: %s started", it->name);
            s->item = it;
            while (next < x->n && x->items[next].step >= x->k)
                next++;
        }
        struct pollfd fds[MAPPER_MAX_WORKERS + 1];
        int map[MAPPER_MAX_WORKERS + 1];
        nfds_t nf = 0;
        busy = 0;
        for (int i = 0; i < parallel; i++)
            if (slots[i].item) {
                fds[nf] = (struct pollfd){PQsocket(slots[i].conn), POLLIN, 0};
                map[nf++] = i, busy++;
            }
        if (!busy) break;
        fds[nf] = (struct pollfd){x->stop_fd, POLLIN, 0};
        int r = poll(fds, nf + (x->stop_fd >= 0), MAPPER_INDEX_POLL_MS);
        if (r < 0 && errno != EINTR) break;
        bool was = x->stop;
        s_check_stop(x);
        for (nfds_t i = 0; !was && x->stop && i < nf; i++) {
            PGcancel *cc = PQgetCancel(slots[map[i]].conn);
            char eb[256];
            if (cc && !PQcancel(cc, eb, sizeof eb))
                log_warn("index build: cannot cancel: %s", eb);
            PQfreeCancel(cc);
        }
        for (nfds_t i = 0; r > 0 && i < nf; i++)
            if (fds[i].revents) s_collect(x, &slots[map[i]], &finished);
        s_progress(x);
    }
    for (int i = 0; i < parallel; i++)
        PQfinish(slots[i].conn);
}

bool indexes_rebuild(ledger_t *l, const char *conninfo, int parallel,
                     progress_t *progress, int stop_fd, bool *interrupted_out,
                     char *err, size_t errlen)
{
    s_ctx_t x = {.l = l,
                 .progress = progress,
                 .stop_fd = stop_fd,
                 .err = err,
                 .errlen = errlen};
    *interrupted_out = false;
    err[0] = '\0';
    char *qjob = PQescapeLiteral(l->conn, l->job_id, strlen(l->job_id));
    if (!qjob || !s_load(&x)) {
        if (!qjob) snprintf(err, errlen, "out of memory");
        PQfreemem(qjob);
        free(x.items);
        return false;
    }
    if (x.built < (int)x.n)
        log_info("deferred indexes: rebuilding %zu of %zu, %d at a time",
                 x.n - (size_t)x.built, x.n, parallel < 1 ? 1 : parallel);
    s_progress(&x);
    /* Index builds in parallel (each takes a SHARE lock, which they
     * share); then constraints and validations one at a time (they take
     * locks that conflict with each other). */
    for (x.k = INDEXES_STEP_BUILT;
         x.k <= INDEXES_STEP_DONE && !x.failed && !x.stop; x.k++)
        s_build_all(&x, conninfo, qjob,
                    x.k > INDEXES_STEP_BUILT ? 1
                    : parallel < 1           ? 1
                                             : parallel);
    s_progress(&x);
    PQfreemem(qjob);
    free(x.items);
    *interrupted_out = x.stop && !x.failed;
    if (x.stop && !x.failed)
        snprintf(err, errlen,
                 "deferred indexes: interrupted; --resume "
                 "rebuilds the rest");
    return !x.failed && !x.stop;
}

int indexes_after_load(ledger_t *l, const char *conninfo, int parallel,
                       progress_t *progress, int stop_fd, int rc,
                       mapper_result *out)
{
    int pending = indexes_pending(l);
    if ((rc != MAPPER_EXIT_OK && rc != MAPPER_EXIT_FAILED) ||
        out->chunks_failed > 0) {
        if (pending > 0)
            log_warn("%d deferred index(es) or constraint(s) not rebuilt "
                     "(the copy did not finish): --resume rebuilds them (a "
                     "job that cannot be resumed: --restart --truncate)",
                     pending);
        return rc;
    }
    bool interrupted = false;
    char err[sizeof out->error];
    double t0 = clock_now();
    bool ok = pending == 0 ||
              (pending > 0 &&
               indexes_rebuild(l, conninfo, parallel, progress, stop_fd,
                               &interrupted, err, sizeof err));
    out->index_build_s = pending > 0 ? clock_now() - t0 : 0;
    indexes_names(l, out->deferred_indexes, sizeof out->deferred_indexes);
    if (ok) return rc;
    if (pending < 0)
        snprintf(err, sizeof err,
                 "deferred indexes: the ledger cannot be read");
    out->interrupted = interrupted;
    log_one_line(out->error, sizeof out->error, err);
    return interrupted ? MAPPER_EXIT_INTERRUPTED : MAPPER_EXIT_FAILED;
}
