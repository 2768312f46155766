/* coordinator/dispatch_trust.c - what the dispatcher believes of a
 * worker (dispatch_loop.h): sending to it, unguessable ids for the workers
 * it forks, a DONE checked against the ledger, and sending a worker away. */
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
    dispatch_take_back(l, w);
}

void dispatch_take_back(dispatch_loop_t *l, dispatch_worker_t *w)
{
    if (w->ahead < 0) return;
    chunks_take_back(&l->chunks, (size_t)w->ahead);
    w->ahead = -1;
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

bool dispatch_done_checked(dispatch_loop_t *l, dispatch_worker_t *w, size_t ci,
                           const proto_msg_t *m, int64_t *rows_out,
                           int64_t *rejected_out)
{
    pgutil_error_t err = {0}; /* the chunk's error when it is disbelieved */
    int64_t bound = s_max_rows(l, ci);
    bool done = false;
    if (m->rows > bound || m->rejected > bound - m->rows) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s counts %" PRId64
                 " rows and %" PRId64 " set aside, more than the chunk "
                 "holds (%" PRId64 ")",
                 ci, m->attempt, w->id, m->rows, m->rejected, bound);
    } else if (!l->cfg->ledger) {
        return true;
    } else if (!ledger_chunk_state(l->cfg->ledger, (int64_t)ci, &done, rows_out,
                                   rejected_out)) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s could not be checked "
                 "in the ledger",
                 ci, m->attempt, w->id);
        *chunks_error(&l->chunks, ci) = err;
        return false;
    } else if (!done) {
        snprintf(err.message, sizeof err.message,
                 "done for chunk %zu attempt %d from %s contradicts the "
                 "ledger (the chunk is not committed)",
                 ci, m->attempt, w->id);
    } else if (*rows_out > bound || *rejected_out > bound - *rows_out) {
        snprintf(err.message, sizeof err.message,
                 "the ledger counts %" PRId64 " rows and %" PRId64
                 " set aside for chunk %zu, more than it holds (%" PRId64 ")",
                 *rows_out, *rejected_out, ci, bound);
        *chunks_error(&l->chunks, ci) = err;
        return false;
    } else {
        if (*rows_out != m->rows || *rejected_out != m->rejected)
            log_warn("done for chunk %zu attempt %d from %s says %" PRId64
                     " rows (%" PRId64 " set aside), the ledger %" PRId64
                     " (%" PRId64 "): the ledger's counts are kept",
                     ci, m->attempt, w->id, m->rows, m->rejected, *rows_out,
                     *rejected_out);
        return true;
    }
    log_error("%s: the attempt fails and %s is sent away", err.message, w->id);
    dispatch_send_away(l, w, err.message);
    *chunks_error(&l->chunks, ci) = err;
    return false;
}
