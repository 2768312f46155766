/* coordinator/chunks.c - the chunk table and its transitions (chunks.h). */
#include "chunks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "defaults.h"
#include "growbuf.h"
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
    for (size_t i = 0; i < t->n; i++) {
        reject_buf_clear(&t->v[i].rejects);
        free(t->v[i].fault);
    }
    free(t->v);
    free(t->ready);
    free(t->timers);
    t->v = NULL;
    t->ready = NULL;
    t->timers = NULL;
    t->n = t->cap = 0;
    t->ready_len = t->ready_cap = t->ntimers = t->cap_timers = 0;
}

static bool s_held(uint8_t state)
{
    return state == CHUNKS_RUNNING || state == CHUNKS_AHEAD;
}

/* Chunk c leaves its state for s, keeping the count of held chunks. */
static void s_set_state(chunks_t *t, chunks_chunk_t *c, chunks_state_t s)
{
    if (s_held(c->state)) t->running--;
    if (s_held((uint8_t)s)) t->running++;
    c->state = (uint8_t)s;
}

/* Append ci to the ready ring. */
static bool s_ready_push(chunks_t *t, size_t ci)
{
    if (t->ready_len == t->ready_cap) {
        size_t old = t->ready_cap;
        if (!growbuf_room((void **)&t->ready, &t->ready_cap, t->ready_len,
                          sizeof *t->ready, 64, "ready chunks"))
            return false;
        /* it was full: the entries before the head move past the old
         * end, so the ring reads on from head without a wrap */
        for (size_t i = 0; i < t->ready_head; i++)
            t->ready[old + i] = t->ready[i];
    }
    t->ready[(t->ready_head + t->ready_len) % t->ready_cap] = ci;
    t->ready_len++;
    return true;
}

/* Put ci first in the ready ring. */
static bool s_ready_push_front(chunks_t *t, size_t ci)
{
    if (!s_ready_push(t, ci)) return false; /* room, and the ring unwrapped */
    t->ready_len--;
    t->ready_head = (t->ready_head + t->ready_cap - 1) % t->ready_cap;
    t->ready[t->ready_head] = ci;
    t->ready_len++;
    return true;
}

static size_t s_ready_pop(chunks_t *t)
{
    size_t ci = t->ready[t->ready_head];
    t->ready_head = (t->ready_head + 1) % t->ready_cap;
    t->ready_len--;
    return ci;
}

/* Heap order: earlier time first, then lower chunk id. */
static bool s_before(const chunks_timer_t *a, const chunks_timer_t *b)
{
    return a->at < b->at || (a->at == b->at && a->ci < b->ci);
}

static bool s_timer_push(chunks_t *t, double at, size_t ci)
{
    if (!growbuf_room((void **)&t->timers, &t->cap_timers, t->ntimers,
                      sizeof *t->timers, 64, "retry timers"))
        return false;
    chunks_timer_t x = {.at = at, .ci = ci};
    size_t i = t->ntimers++;
    while (i > 0 && s_before(&x, &t->timers[(i - 1) / 2])) {
        t->timers[i] = t->timers[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->timers[i] = x;
    return true;
}

static void s_timer_pop(chunks_t *t)
{
    chunks_timer_t x = t->timers[--t->ntimers];
    size_t i = 0, n = t->ntimers;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && s_before(&t->timers[k + 1], &t->timers[k])) k++;
        if (!s_before(&t->timers[k], &x)) break;
        t->timers[i] = t->timers[k];
        i = k;
    }
    if (n) t->timers[i] = x;
}

/* Chunk ci is pending again, to start at `at` (now or later): queued in
 * the ready ring or the retry heap. Out of memory (logged) leaves it
 * unqueued: it fails for good rather than being forgotten. */
static void s_enqueue(chunks_t *t, size_t ci, double at, double now)
{
    chunks_chunk_t *c = &t->v[ci];
    c->not_before = at;
    c->queued = at <= now ? s_ready_push(t, ci) : s_timer_push(t, at, ci);
    if (!c->queued)
        chunks_fail(t, ci, PROTO_SIDE_NONE, NULL,
                    "out of memory to queue its retry");
}

chunks_chunk_t *chunks_add(chunks_t *t, int64_t est_rows)
{
    if (!growbuf_room((void **)&t->v, &t->cap, t->n, sizeof *t->v, 64,
                      "chunks"))
        return NULL;
    chunks_chunk_t *c = &t->v[t->n++];
    memset(c, 0, sizeof *c);
    c->state = CHUNKS_PENDING;
    c->worker = -1;
    c->est_rows = est_rows;
    t->unfinished++;
    return c;
}

void chunks_resumed(chunks_t *t, size_t ci, int64_t rows, int64_t rejected)
{
    chunks_chunk_t *c = &t->v[ci];
    s_set_state(t, c, CHUNKS_DONE);
    c->rows = rows;
    c->rejected = rejected;
    t->unfinished--;
    if (t->progress)
        progress_chunk_committed(t->progress, (int64_t)ci, 0, rows, 0);
}

/* The chunk chunks_next would hand out, left where it is: due retries
 * move from the heap to the ready ring, ended entries are dropped. */
static ssize_t s_peek(chunks_t *t)
{
    double now = t->clock();
    while (t->ntimers > 0 && t->timers[0].at <= now) {
        size_t ci = t->timers[0].ci;
        s_timer_pop(t);
        if (t->v[ci].state == CHUNKS_PENDING && t->v[ci].queued &&
            !s_ready_push(t, ci))
            chunks_fail(t, ci, PROTO_SIDE_NONE, NULL,
                        "out of memory to queue its retry");
    }
    while (t->ready_len > 0) {
        size_t ci = t->ready[t->ready_head];
        const chunks_chunk_t *c = &t->v[ci];
        if (c->state == CHUNKS_PENDING && c->queued) return (ssize_t)ci;
        (void)s_ready_pop(t); /* ended while it waited */
    }
    while (t->next_pending < t->n &&
           t->v[t->next_pending].state != CHUNKS_PENDING)
        t->next_pending++;
    return t->next_pending < t->n ? (ssize_t)t->next_pending : -1;
}

/* Take chunk ci, the one s_peek found, off its queue. */
static void s_take(chunks_t *t, size_t ci)
{
    if (t->ready_len > 0 && t->ready[t->ready_head] == ci)
        (void)s_ready_pop(t);
    else
        t->next_pending++;
    t->v[ci].queued = false;
}

ssize_t chunks_next(chunks_t *t)
{
    ssize_t ci = s_peek(t);
    if (ci >= 0) s_take(t, (size_t)ci);
    return ci;
}

ssize_t chunks_next_ahead(chunks_t *t)
{
    ssize_t ci = s_peek(t);
    if (ci < 0 || t->v[ci].taken_back) return -1;
    s_take(t, (size_t)ci);
    return ci;
}

int chunks_start(chunks_t *t, size_t ci, int worker)
{
    chunks_chunk_t *c = &t->v[ci];
    c->attempts++;
    if (c->attempts == 1) c->first_start = t->clock();
    c->queued = false;
    s_set_state(t, c, CHUNKS_RUNNING);
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
    s_set_state(t, c, CHUNKS_DONE);
    c->worker = -1;
    free(c->fault); /* errors are kept for chunks that failed */
    c->fault = NULL;
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
    s_set_state(t, c, CHUNKS_FAILED);
    c->worker = -1;
    t->unfinished--;
    if (t->progress)
        progress_chunk_failed(t->progress, (int64_t)ci, c->est_rows);
    if (t->on_end) t->on_end(t->on_end_ctx, ci);
}

/* Chunk c's fault record, allocated at its first failure; NULL (logged)
 * when out of memory. */
static chunks_fault_t *s_fault(chunks_chunk_t *c, size_t ci)
{
    if (!c->fault && !(c->fault = calloc(1, sizeof *c->fault)))
        log_error("chunk %zu: out of memory for its error: the summary "
                  "will not say it",
                  ci);
    return c->fault;
}

/* The error chunk c's failure is read from. */
static pgutil_error_t *s_err(chunks_t *t, chunks_chunk_t *c)
{
    return c->fault ? &c->fault->error : &t->spare;
}

pgutil_error_t *chunks_error(chunks_t *t, size_t ci)
{
    chunks_fault_t *f = s_fault(&t->v[ci], ci);
    pgutil_error_t *e = f ? &f->error : &t->spare;
    memset(e, 0, sizeof *e);
    return e;
}

const pgutil_error_t *chunks_last_error(const chunks_t *t, size_t ci)
{
    return t->v[ci].fault ? &t->v[ci].fault->error : NULL;
}

const char *chunks_class(const chunks_t *t, size_t ci)
{
    return t->v[ci].fault ? t->v[ci].fault->class_name : NULL;
}

void chunks_fail(chunks_t *t, size_t ci, proto_side_t side,
                 const char *class_name, const char *message)
{
    chunks_chunk_t *c = &t->v[ci];
    pgutil_error_t *e = chunks_error(t, ci);
    e->side = side;
    snprintf(e->message, sizeof e->message, "%s", message);
    if (c->fault) c->fault->class_name = class_name;
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
    const pgutil_error_t *e = s_err(t, &t->v[ci]);
    retry_error re = s_retry_error(e, cause);
    if (!retry_is_connection_failure(&re)) return false;
    chunks_outage_t *o = &t->outage[e->side];
    if (!o->active && ++o->streak >= MAPPER_OUTAGE_STREAK) {
        o->active = true;
        o->since = now;
        o->probe_wait = MAPPER_OUTAGE_PROBE_MIN_S;
        o->next_probe = now + o->probe_wait;
        log_warn("%s database unreachable from %d chunks in a row: pausing "
                 "dispatch and probing it (giving up after %.0f s)",
                 pgutil_side_name(e->side), o->streak, t->outage_timeout);
    }
    return o->active;
}

chunks_outcome_t chunks_attempt_failed(chunks_t *t, size_t ci,
                                       chunks_cause_t cause)
{
    chunks_chunk_t *c = &t->v[ci];
    reject_buf_clear(&c->rejects); /* rolled back: the retry reports again */
    double now = t->clock();
    s_set_state(t, c, CHUNKS_PENDING);
    c->worker = -1;
    c->rows = c->bytes = 0;
    int attempt = c->attempts;
    const pgutil_error_t *e = s_err(t, c);
    const char *side = pgutil_side_name(e->side);
    const char *class_name = chunks_classify(e, cause).class_name;
    if (c->fault) c->fault->class_name = class_name;
    if (s_outage_counts(t, ci, cause, now)) {
        if (t->progress)
            progress_chunk_attempt_failed(t->progress, (int64_t)ci, attempt,
                                          true);
        c->attempts--; /* the outage's fault, not the chunk's */
        s_enqueue(t, ci, now, now);
        log_info("chunk %zu: %s unreachable (outage): will run again when "
                 "it answers",
                 ci, side);
        return CHUNKS_PAUSED;
    }
    retry_decision d =
        chunks_decide(t, e, cause, c->attempts, c->first_start, NULL);
    if (t->progress)
        progress_chunk_attempt_failed(t->progress, (int64_t)ci, attempt,
                                      d.retry);
    if (d.retry) {
        log_warn("chunk %zu attempt %d failed (%s%s%s, %s: %s); retry in "
                 "%.2f s",
                 ci, c->attempts, side, e->sqlstate[0] ? " " : "", e->sqlstate,
                 class_name, e->message, d.delay);
        s_enqueue(t, ci, now + d.delay, now);
        return c->state == CHUNKS_PENDING ? CHUNKS_RETRY : CHUNKS_GONE;
    }
    log_error("chunk %zu failed after %d attempt%s (%s%s%s, %s, %s): %s", ci,
              c->attempts, c->attempts == 1 ? "" : "s", side,
              e->sqlstate[0] ? " " : "", e->sqlstate, class_name,
              retry_reason_name(d.reason), e->message);
    s_end_failed(t, ci);
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
            if (s != CHUNKS_PENDING && !s_held(s)) continue;
            chunks_fail(t, i, side, "outage", why);
            s_err(t, &t->v[i])->conn_bad = true;
        }
        return CHUNKS_GAVE_UP;
    }
    o->probe_wait *= 2;
    if (o->probe_wait > MAPPER_OUTAGE_PROBE_MAX_S)
        o->probe_wait = MAPPER_OUTAGE_PROBE_MAX_S;
    o->next_probe = now + o->probe_wait;
    return CHUNKS_WAITING;
}

int chunks_start_ahead(chunks_t *t, size_t ci, int worker)
{
    chunks_chunk_t *c = &t->v[ci];
    c->attempts++;
    c->queued = false;
    s_set_state(t, c, CHUNKS_AHEAD);
    c->worker = worker;
    return c->attempts;
}

void chunks_ahead_runs(chunks_t *t, size_t ci)
{
    chunks_chunk_t *c = &t->v[ci];
    if (c->state != CHUNKS_AHEAD) return;
    if (c->attempts == 1) c->first_start = t->clock();
    s_set_state(t, c, CHUNKS_RUNNING);
    if (t->progress)
        progress_chunk_started(t->progress, (int64_t)ci, c->attempts);
}

void chunks_take_back(chunks_t *t, size_t ci)
{
    chunks_chunk_t *c = &t->v[ci];
    if (c->state != CHUNKS_AHEAD) return;
    s_set_state(t, c, CHUNKS_PENDING);
    c->attempts--;
    c->worker = -1;
    c->taken_back = true;
    c->not_before = t->clock();
    c->queued = s_ready_push_front(t, ci);
    if (!c->queued)
        chunks_fail(t, ci, PROTO_SIDE_NONE, NULL,
                    "out of memory to queue it again");
    log_debug("chunk %zu: taken back before its turn", ci);
}

size_t chunks_running(const chunks_t *t)
{
    return t->running;
}
