/* coordinator/dispatch_trust.c - what the dispatcher believes of a
 * worker (dispatch_loop.h): sending to it, unguessable ids for the workers
 * it forks, DONEs checked against the ledger (those heard about the same
 * time in one query), and sending a worker away. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "dispatch_loop.h"
#include "ledger.h"
#include "log.h"

bool dispatch_random_id(char *dst, size_t n)
{
    unsigned char r[DISPATCH_RANDOM_ID_BYTES];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        log_error("getrandom: cannot draw a worker id");
        return false;
    }
    size_t at = (size_t)snprintf(dst, n, "w");
    for (size_t i = 0; i < sizeof r && at + 2 < n; i++)
        at += (size_t)snprintf(dst + at, n - at, "%02x", r[i]);
    return true;
}

bool dispatch_send(dispatch_loop_t *l, dispatch_worker_t *w,
                   const proto_msg_t *m)
{
    return proto_send(l->cfg->router, w->id, strlen(w->id), m);
}

void dispatch_send_away(dispatch_loop_t *l, dispatch_worker_t *w,
                        const char *why)
{
    proto_msg_t stop = {.kind = PROTO_STOP, .message = (char *)why};
    dispatch_send(l, w, &stop); /* a failure is logged; the lease tells */
    w->ready = false;
    w->banned = true;
    w->alive = w->pid > 0;
    dispatch_take_back(l, w, 0);
}

/* The most rows (loaded plus set aside) chunk ci can hold: a stream
 * chunk's rows are known; otherwise a bound that keeps every sum of
 * counts far from overflowing. */
static int64_t s_max_rows(const dispatch_loop_t *l, size_t ci)
{
    if (l->stream && (int64_t)ci < l->held.known)
        return l->held.chunks[ci].rows;
    return PROTO_MAX_COUNT;
}

void dispatch_done_defer(dispatch_loop_t *l, dispatch_worker_t *w,
                         const proto_msg_t *m)
{
    if (!l->ndone) l->done_due = clock_now() + MAPPER_DONE_BATCH_MS / 1000.0;
    l->done[l->ndone++] = (dispatch_done_t){.worker = (int)(w - l->workers),
                                            .m = {.kind = PROTO_DONE,
                                                  .chunk_id = m->chunk_id,
                                                  .attempt = m->attempt,
                                                  .rows = m->rows,
                                                  .bytes = m->bytes,
                                                  .rejected = m->rejected,
                                                  .already = m->already}};
}

void dispatch_done_read(dispatch_loop_t *l)
{
    int64_t ids[MAPPER_DONE_BATCH];
    ledger_chunk_state_t st[MAPPER_DONE_BATCH];
    for (size_t i = 0; i < l->ndone; i++)
        ids[i] = l->done[i].m.chunk_id;
    bool read =
        l->ndone > 0 && ledger_chunk_states(l->cfg->ledger, ids, l->ndone, st);
    for (size_t i = 0; i < l->ndone; i++) {
        l->done[i].read = read;
        if (read) l->done[i].st = st[i];
    }
}

bool dispatch_done_checked(dispatch_loop_t *l, dispatch_worker_t *w, size_t ci,
                           const proto_msg_t *m, const ledger_chunk_state_t *st,
                           int64_t *rows_out, int64_t *rejected_out)
{
    pgutil_error_t err = {0}; /* the chunk's error when it is disbelieved */
    int64_t bound = s_max_rows(l, ci);
    if (m->rows > bound || m->rejected > bound - m->rows) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s counts %" PRId64
                 " rows and %" PRId64 " set aside, more than the chunk "
                 "holds (%" PRId64 ")",
                 ci, m->attempt, w->id, m->rows, m->rejected, bound);
    } else if (!l->cfg->ledger) {
        return true;
    } else if (!st) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s could not be checked "
                 "in the ledger",
                 ci, m->attempt, w->id);
        *chunks_error(&l->chunks, ci) = err;
        return false;
    } else if (!st->done) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s contradicts the "
                 "ledger (the chunk is not committed)",
                 ci, m->attempt, w->id);
    } else if (st->rows > bound || st->rejected > bound - st->rows) {
        snprintf(err.message, sizeof err.message,
                 "the ledger counts %" PRId64 " rows and %" PRId64
                 " set aside for chunk %zu, more than it holds (%" PRId64 ")",
                 st->rows, st->rejected, ci, bound);
        *chunks_error(&l->chunks, ci) = err;
        return false;
    } else {
        if (st->rows != m->rows || st->rejected != m->rejected)
            log_warn("done for chunk %zu attempt %d from %s says %" PRId64
                     " rows (%" PRId64 " set aside), the ledger %" PRId64
                     " (%" PRId64 "): the ledger's counts are kept",
                     ci, m->attempt, w->id, m->rows, m->rejected, st->rows,
                     st->rejected);
        *rows_out = st->rows;
        *rejected_out = st->rejected;
        return true;
    }
    log_error("%s: the attempt fails and %s is sent away", err.message, w->id);
    dispatch_send_away(l, w, err.message);
    *chunks_error(&l->chunks, ci) = err;
    return false;
}
