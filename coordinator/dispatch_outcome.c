/* coordinator/dispatch_outcome.c - what becomes of a chunk's attempt
 * (dispatch_loop.h): counted done when the ledger bears it out (the DONEs
 * heard about the same time checked in one query), retried, paused or
 * failed, and the rows it set aside written out. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dispatch_loop.h"
#include "ledger.h"
#include "log.h"

void dispatch_check_max_rejects(dispatch_loop_t *l)
{
    if (l->cfg->max_rejects < 0 || l->rejected <= l->cfg->max_rejects ||
        l->over_max_rejects)
        return;
    l->over_max_rejects = true;
    log_error("%" PRId64 " rows rejected, more than --max-rejects %" PRId64
              ": no more chunks start",
              l->rejected, l->cfg->max_rejects);
    snprintf(l->out->error, sizeof l->out->error,
             "more than %" PRId64 " rows rejected (--max-rejects %" PRId64
             "): the job stopped",
             l->cfg->max_rejects, l->cfg->max_rejects);
}

/* A committed attempt's rejected rows go to the reject file: with the
 * ledger, those committed with the chunk; without, those reported. */
static void s_rejects_committed(dispatch_loop_t *l, size_t ci, int64_t rejected)
{
    chunks_chunk_t *c = &l->chunks.v[ci];
    c->rejected = rejected;
    dispatch_add(&l->rejected, rejected);
    if (!l->cfg->rejects) return;
    bool ok = true;
    if (l->cfg->ledger) {
        reject_buf_clear(&c->rejects);
        ok = rejected == 0 ||
             reject_write_committed(l->cfg->rejects, l->cfg->ledger,
                                    (int64_t)ci, rejected, NULL);
    } else {
        if ((int64_t)c->rejects.n != rejected)
            log_error("chunk %zu: %" PRId64 " rows were set aside but %zu "
                      "reached the coordinator: the reject file lacks %" PRId64,
                      ci, rejected, c->rejects.n,
                      rejected - (int64_t)c->rejects.n);
        ok = !c->rejects.n ||
             reject_write(l->cfg->rejects, (int64_t)ci, &c->rejects);
    }
    if (!ok && !l->out->error[0])
        snprintf(l->out->error, sizeof l->out->error,
                 "the reject file could not be written (see the log)");
    dispatch_check_max_rejects(l);
}

void dispatch_fail_waiting(dispatch_loop_t *l)
{
    if (dispatch_stream_open(l)) {
        l->read_failed = true;
        l->reader = -1;
        if (!chunks_add(&l->chunks, 0) && !l->out->error[0]) /* logged */
            snprintf(l->out->error, sizeof l->out->error,
                     "out of memory: the rest of the query is not copied");
    }
    char why[PROTO_MAX_MESSAGE];
    snprintf(why, sizeof why,
             "not run: more than %" PRId64 " rows rejected "
             "(--max-rejects %" PRId64 ")",
             l->cfg->max_rejects, l->cfg->max_rejects);
    chunks_fail_pending(&l->chunks, "max-rejects", why);
}

/* Chunk ci's attempt committed (or the ledger says an earlier one did),
 * setting `rejected` rows aside. */
static void s_chunk_done(dispatch_loop_t *l, size_t ci, int attempt,
                         int64_t rows, int64_t bytes, int64_t rejected)
{
    s_rejects_committed(l, ci, rejected);
    chunks_done(&l->chunks, ci, attempt, rows, bytes, rejected);
}

/* An attempt whose outcome is unknown (its worker died, or the target
 * connection broke, maybe during COMMIT) is settled by the ledger. */
static bool s_settled_by_ledger(dispatch_loop_t *l, size_t ci,
                                chunks_cause_t cause)
{
    chunks_chunk_t *c = &l->chunks.v[ci];
    const pgutil_error_t *e = chunks_last_error(&l->chunks, ci);
    int64_t id = (int64_t)ci;
    ledger_chunk_state_t st;
    if (!l->cfg->ledger || chunks_in_outage(&l->chunks, PROTO_SIDE_TARGET))
        return false;
    if (cause == CHUNKS_REPORTED &&
        !(e && e->conn_bad && e->side == PROTO_SIDE_TARGET))
        return false;
    if (!ledger_chunk_states(l->cfg->ledger, &id, 1, &st) || !st.done)
        return false;
    log_info("chunk %zu attempt %d: outcome unknown, the ledger says it "
             "committed",
             ci, c->attempts);
    s_chunk_done(l, ci, c->attempts, st.rows, 0, st.rejected);
    return true;
}

void dispatch_attempt_failed(dispatch_loop_t *l, size_t ci,
                             chunks_cause_t cause)
{
    if (s_settled_by_ledger(l, ci, cause)) return;
    (void)chunks_attempt_failed(&l->chunks, ci, cause);
}

static void s_run_lost(dispatch_loop_t *l, dispatch_worker_t *w,
                       chunks_cause_t cause, const char *fmt, va_list ap)
{
    if (w->chunk < 0) return;
    size_t ci = (size_t)w->chunk;
    pgutil_error_t *e = chunks_error(&l->chunks, ci);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    w->chunk = -1;
    dispatch_attempt_failed(l, ci, cause);
}

void dispatch_attempt_lost(dispatch_loop_t *l, dispatch_worker_t *w,
                           chunks_cause_t cause, const char *fmt, ...)
{
    dispatch_take_back(l, w, 0);
    va_list ap;
    va_start(ap, fmt);
    s_run_lost(l, w, cause, fmt, ap);
    va_end(ap);
}

void dispatch_run_lost(dispatch_loop_t *l, dispatch_worker_t *w,
                       chunks_cause_t cause, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_run_lost(l, w, cause, fmt, ap);
    va_end(ap);
}

void dispatch_done_settle(dispatch_loop_t *l, dispatch_worker_t *w,
                          const proto_msg_t *m, const ledger_chunk_state_t *st)
{
    size_t ci = (size_t)m->chunk_id;
    int64_t rows = m->rows, rejected = m->rejected;
    if (dispatch_done_checked(l, w, ci, m, st, &rows, &rejected)) {
        if (m->already)
            log_info("chunk %zu attempt %d: already committed by an earlier "
                     "attempt (ledger)",
                     ci, m->attempt);
        s_chunk_done(l, ci, m->attempt, rows, m->bytes, rejected);
        return;
    }
    dispatch_attempt_failed(l, ci, CHUNKS_DISBELIEVED);
    if (!w->ready)
        dispatch_attempt_lost(l, w, CHUNKS_LEASE_LOST,
                              "worker %s was sent away", w->id);
}

void dispatch_done_flush(dispatch_loop_t *l)
{
    dispatch_done_read(l);
    size_t n = l->ndone;
    l->ndone = 0;
    for (size_t i = 0; i < n; i++) {
        const dispatch_done_t *d = &l->done[i];
        const chunks_chunk_t *c = &l->chunks.v[d->m.chunk_id];
        if (c->state != CHUNKS_RUNNING || c->attempts != d->m.attempt) continue;
        dispatch_done_settle(l, &l->workers[d->worker], &d->m,
                             d->read ? &d->st : NULL);
    }
}
