/* coordinator/chunks.c - the chunk table and its transitions (chunks.h). */
#include "chunks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "log.h"

bool chunks_init(chunks_t *t, size_t n, const mapper_retry_config *retry,
                 double outage_timeout, progress_t *progress, clock_fn clock)
{
    memset(t, 0, sizeof *t);
    t->retry = retry;
    t->outage_timeout = outage_timeout;
    t->progress = progress;
    t->clock = clock ? clock : clock_now;
    retry_rng_seed_process(&t->rng);
    t->cap = n ? n : 1;
    t->v = calloc(t->cap, sizeof *t->v);
    if (!t->v) {
        log_error("out of memory for %zu chunks", t->cap);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        t->v[i].worker = -1;
    t->n = t->unfinished = n;
    return true;
}

void chunks_free(chunks_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        reject_buf_clear(&t->v[i].rejects);
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

chunks_chunk_t *chunks_add(chunks_t *t, int64_t est_rows)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        chunks_chunk_t *v = realloc(t->v, cap * sizeof *v);
        if (!v) {
            log_error("out of memory for %zu chunks", cap);
            return NULL;
        }
        t->v = v;
        t->cap = cap;
    }
    chunks_chunk_t *c = &t->v[t->n++];
    memset(c, 0, sizeof *c);
    c->worker = -1;
    c->est_rows = est_rows;
    t->unfinished++;
    return c;
}

void chunks_resumed(chunks_t *t, size_t ci, int64_t rows, int64_t rejected)
{
    chunks_chunk_t *c = &t->v[ci];
    c->state = CHUNKS_DONE;
    c->rows = rows;
    c->rejected = rejected;
    t->unfinished--;
    if (t->progress)
        progress_chunk_committed(t->progress, (int64_t)ci, 0, rows, 0);
}

ssize_t chunks_next(chunks_t *t)
{
    double now = t->clock();
    for (size_t i = 0; i < t->next_pending; i++)
        if (t->v[i].state == CHUNKS_PENDING && t->v[i].not_before <= now)
            return (ssize_t)i;
    while (t->next_pending < t->n &&
           t->v[t->next_pending].state != CHUNKS_PENDING)
        t->next_pending++;
    if (t->next_pending < t->n) return (ssize_t)t->next_pending++;
    return -1;
}

int chunks_start(chunks_t *t, size_t ci, int worker)
{
    chunks_chunk_t *c = &t->v[ci];
    c->attempts++;
    if (c->attempts == 1) c->first_start = t->clock();
    c->state = CHUNKS_RUNNING;
    c->worker = worker;
    if (t->progress)
        progress_chunk_started(t->progress, (int64_t)ci, c->attempts);
    return c->attempts;
}

void chunks_done(chunks_t *t, size_t ci, int attempt, int64_t rows,
                 int64_t bytes, int64_t rejected)
{
    chunks_chunk_t *c = &t->v[ci];
    if (c->state == CHUNKS_DONE || c->state == CHUNKS_FAILED) return;
    c->state = CHUNKS_DONE;
    c->worker = -1;
    c->rows = rows;
    c->bytes = bytes;
    c->rejected = rejected;
    t->unfinished--;
    t->outage[PROTO_SIDE_SOURCE].streak = 0;
    t->outage[PROTO_SIDE_TARGET].streak = 0;
    if (t->progress)
        progress_chunk_committed(t->progress, (int64_t)ci, attempt, rows,
                                 bytes);
    log_debug("chunk %zu done: %" PRId64 " rows", ci, rows);
    if (t->on_end) t->on_end(t->on_end_ctx, ci);
}

/* The end of a chunk that failed for good, whatever the reason: the only
 * place a chunk becomes FAILED. A running attempt ends first. */
static void s_end_failed(chunks_t *t, size_t ci)
{
    chunks_chunk_t *c = &t->v[ci];
    if (c->state == CHUNKS_DONE || c->state == CHUNKS_FAILED) return;
    if (c->state == CHUNKS_RUNNING && t->progress)
        progress_chunk_attempt_failed(t->progress, (int64_t)ci, c->attempts,
                                      false);
    c->state = CHUNKS_FAILED;
    c->worker = -1;
    t->unfinished--;
    if (t->progress)
        progress_chunk_failed(t->progress, (int64_t)ci, c->est_rows);
    if (t->on_end) t->on_end(t->on_end_ctx, ci);
}

void chunks_fail(chunks_t *t, size_t ci, proto_side_t side,
                 const char *class_name, const char *message)
{
    chunks_chunk_t *c = &t->v[ci];
    memset(&c->error, 0, sizeof c->error);
    c->error.side = side;
    snprintf(c->error.message, sizeof c->error.message, "%s", message);
    c->class_name = class_name;
    s_end_failed(t, ci);
}

/* The retry module's view of an error of this cause. */
static retry_error s_retry_error(const pgutil_error_t *e, chunks_cause_t cause)
{
    retry_error re = {.side = e->side,
                      .conn_lost = e->conn_bad,
                      .worker_crashed = cause == CHUNKS_CRASHED ||
                                        cause == CHUNKS_DISBELIEVED,
                      .heartbeat_lost = cause == CHUNKS_LEASE_LOST};
    memcpy(re.sqlstate, e->sqlstate, sizeof re.sqlstate);
    return re;
}

retry_verdict chunks_classify(const pgutil_error_t *e, chunks_cause_t cause)
{
    retry_error re = s_retry_error(e, cause);
    return retry_classify(&re);
}

retry_decision chunks_decide(chunks_t *t, const pgutil_error_t *e,
                             chunks_cause_t cause, int attempts,
                             double first_start, const char **class_out)
{
    retry_verdict v = chunks_classify(e, cause);
    if (class_out) *class_out = v.class_name;
    return retry_decide_chunk(t->retry, attempts, &v, first_start, t->clock,
                              &t->rng);
}

/* A connection failure on side counts towards an outage; true when the
 * side is in one now (the failure is the outage's, not the chunk's). */
static bool s_outage_counts(chunks_t *t, size_t ci, chunks_cause_t cause,
                            double now)
{
    chunks_chunk_t *c = &t->v[ci];
    retry_error re = s_retry_error(&c->error, cause);
    if (!retry_is_connection_failure(&re)) return false;
    chunks_outage_t *o = &t->outage[c->error.side];
    if (!o->active && ++o->streak >= MAPPER_OUTAGE_STREAK) {
        o->active = true;
        o->since = now;
        o->probe_wait = MAPPER_OUTAGE_PROBE_MIN_S;
        o->next_probe = now + o->probe_wait;
        log_warn("%s database unreachable from %d chunks in a row: pausing "
                 "dispatch and probing it (giving up after %.0f s)",
                 pgutil_side_name(c->error.side), o->streak, t->outage_timeout);
    }
    return o->active;
}

chunks_outcome_t chunks_attempt_failed(chunks_t *t, size_t ci,
                                       chunks_cause_t cause)
{
    chunks_chunk_t *c = &t->v[ci];
    reject_buf_clear(&c->rejects); /* rolled back: the retry reports again */
    double now = t->clock();
    c->state = CHUNKS_PENDING;
    c->worker = -1;
    c->rows = c->bytes = 0;
    int attempt = c->attempts;
    const char *side = pgutil_side_name(c->error.side);
    c->class_name = chunks_classify(&c->error, cause).class_name;
    if (s_outage_counts(t, ci, cause, now)) {
        if (t->progress)
            progress_chunk_attempt_failed(t->progress, (int64_t)ci, attempt,
                                          true);
        c->attempts--; /* the outage's fault, not the chunk's */
        c->not_before = now;
        log_info("chunk %zu: %s unreachable (outage): will run again when "
                 "it answers",
                 ci, side);
        return CHUNKS_PAUSED;
    }
    retry_decision d =
        chunks_decide(t, &c->error, cause, c->attempts, c->first_start, NULL);
    if (t->progress)
        progress_chunk_attempt_failed(t->progress, (int64_t)ci, attempt,
                                      d.retry);
    if (d.retry) {
        c->not_before = now + d.delay;
        log_warn("chunk %zu attempt %d failed (%s%s%s, %s: %s); retry in "
                 "%.2f s",
                 ci, c->attempts, side, c->error.sqlstate[0] ? " " : "",
                 c->error.sqlstate, c->class_name, c->error.message, d.delay);
        return CHUNKS_RETRY;
    }
    s_end_failed(t, ci);
    log_error("chunk %zu failed after %d attempt%s (%s%s%s, %s, %s): %s", ci,
              c->attempts, c->attempts == 1 ? "" : "s", side,
              c->error.sqlstate[0] ? " " : "", c->error.sqlstate, c->class_name,
              retry_reason_name(d.reason), c->error.message);
    return CHUNKS_GONE;
}

void chunks_fail_pending(chunks_t *t, const char *class_name,
                         const char *message)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].state == CHUNKS_PENDING)
            chunks_fail(t, i, PROTO_SIDE_NONE, class_name, message);
}

bool chunks_in_outage(const chunks_t *t, proto_side_t side)
{
    if (side == PROTO_SIDE_SOURCE || side == PROTO_SIDE_TARGET)
        return t->outage[side].active;
    return t->outage[PROTO_SIDE_SOURCE].active ||
           t->outage[PROTO_SIDE_TARGET].active;
}

bool chunks_probe_due(const chunks_t *t, proto_side_t side)
{
    const chunks_outage_t *o = &t->outage[side];
    return o->active && t->clock() >= o->next_probe;
}

chunks_probe_t chunks_probed(chunks_t *t, proto_side_t side, bool answered)
{
    chunks_outage_t *o = &t->outage[side];
    double now = t->clock();
    const char *name = pgutil_side_name(side);
    if (answered) {
        log_warn("%s database answers again after %.1f s: resuming", name,
                 now - o->since);
        memset(o, 0, sizeof *o);
        return CHUNKS_RESUMED;
    }
    if (now - o->since > t->outage_timeout) {
        log_error("%s database unreachable for more than %.0f s: giving up",
                  name, t->outage_timeout);
        char why[PROTO_MAX_MESSAGE];
        snprintf(why, sizeof why,
                 "%s database unreachable for more than "
                 "%.0f s",
                 name, t->outage_timeout);
        for (size_t i = 0; i < t->n; i++) {
            chunks_state_t s = t->v[i].state;
            if (s != CHUNKS_PENDING && s != CHUNKS_RUNNING) continue;
            chunks_fail(t, i, side, "outage", why);
            t->v[i].error.conn_bad = true;
        }
        return CHUNKS_GAVE_UP;
    }
    o->probe_wait *= 2;
    if (o->probe_wait > MAPPER_OUTAGE_PROBE_MAX_S)
        o->probe_wait = MAPPER_OUTAGE_PROBE_MAX_S;
    o->next_probe = now + o->probe_wait;
    return CHUNKS_WAITING;
}

size_t chunks_running(const chunks_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].state == CHUNKS_RUNNING) n++;
    return n;
}
