/* coordinator/dispatch_ahead.c - the chunks a worker holds ahead: how many
 * it may hold, when the loop may rest, and what becomes of them when the
 * worker goes on, dies or is sent away (dispatch_loop.h). */
#include "dispatch_loop.h"

#include <inttypes.h>
#include <string.h>

/* How many chunks w may hold ahead: about MAPPER_AHEAD_MS of its chunks
 * (by its period, dispatch_ahead_ended), at least one. */
static int s_depth(const dispatch_worker_t *w)
{
    if (w->period <= 0) return 1;
    double n = MAPPER_AHEAD_MS / 1000.0 / w->period;
    return n >= MAPPER_AHEAD_MAX ? MAPPER_AHEAD_MAX : n > 1 ? (int)n : 1;
}

/* Chunks waiting to start beyond one for each worker that holds none
 * (*busy: the workers that run one). */
static size_t s_spare(const dispatch_loop_t *l, size_t *busy)
{
    size_t idle = 0;
    *busy = 0;
    for (size_t i = 0; i < l->nworkers; i++) {
        const dispatch_worker_t *x = &l->workers[i];
        if (!x->alive || (int)i == l->reader) continue;
        if (x->chunk < 0)
            idle++;
        else
            (*busy)++;
    }
    size_t waiting = l->chunks.unfinished - chunks_running(&l->chunks);
    return waiting > idle ? waiting - idle : 0;
}

bool dispatch_ahead_wanted(const dispatch_loop_t *l, const dispatch_worker_t *w)
{
    if (l->stream || l->cfg->max_rejects >= 0 || !w->alive || !w->ready ||
        w->chunk < 0 || w->nahead >= s_depth(w))
        return false;
    /* The first one ahead needs a chunk to spare; each one after it, one
     * more than there are busy workers, so that the last chunks are shared
     * out and no worker is left with several while another runs dry. */
    size_t busy, spare = s_spare(l, &busy);
    return w->nahead == 0 ? spare > 0 : spare > busy;
}

/* Where chunk ci is in w's chunks ahead, or -1. */
static int s_find(const dispatch_worker_t *w, int64_t ci)
{
    for (int i = 0; i < w->nahead; i++)
        if (w->ahead[i] == ci) return i;
    return -1;
}

void dispatch_ahead_runs(dispatch_loop_t *l, dispatch_worker_t *w)
{
    if (w->nahead == 0) return;
    w->chunk = w->ahead[0];
    w->nahead--;
    memmove(w->ahead, w->ahead + 1, (size_t)w->nahead * sizeof *w->ahead);
    chunks_ahead_runs(&l->chunks, (size_t)w->chunk);
}

/* w reports on the k-th chunk it holds ahead: it went on without a word
 * about the chunk it ran and those before that one (their outcomes were
 * lost on the way), so they are settled as lost, and that one runs. */
static void s_went_on(dispatch_loop_t *l, dispatch_worker_t *w, int k)
{
    int64_t next = w->ahead[k];
    while (w->chunk != next && w->nahead > 0) {
        dispatch_run_lost(l, w, CHUNKS_LEASE_LOST,
                          "worker %s went on to chunk %" PRId64
                          " without reporting this one",
                          w->id, next);
        dispatch_ahead_runs(l, w);
    }
}

chunks_chunk_t *dispatch_held(dispatch_loop_t *l, dispatch_worker_t *w,
                              const proto_msg_t *m)
{
    if (m->chunk_id < 0 || (size_t)m->chunk_id >= l->chunks.n) return NULL;
    int k = w->chunk == m->chunk_id ? -1 : s_find(w, m->chunk_id);
    if (w->chunk != m->chunk_id && k < 0) return NULL;
    chunks_chunk_t *c = &l->chunks.v[m->chunk_id];
    if (c->attempts != m->attempt) return NULL;
    if (k >= 0 && c->state == CHUNKS_AHEAD) {
        if (m->kind == PROTO_FAILED) { /* refused: it had no room for it */
            dispatch_take_back(l, w, k);
            return NULL;
        }
        s_went_on(l, w, k);
        return c;
    }
    return c->state == CHUNKS_RUNNING ? c : NULL;
}

void dispatch_ahead_ended(dispatch_worker_t *w, double now)
{
    /* A moving average: two DONEs heard in one turn say little alone. */
    double took = now - w->last_end;
    if (w->last_end > 0)
        w->period = w->period > 0 ? w->period + (took - w->period) / 4 : took;
    w->last_end = now;
}

bool dispatch_may_rest(const dispatch_loop_t *l)
{
    if (l->stream || l->stopping || l->cfg->max_rejects >= 0) return false;
    double rate = 0; /* chunk ends a second, all workers together */
    for (size_t i = 0; i < l->nworkers; i++) {
        const dispatch_worker_t *x = &l->workers[i];
        if (!x->alive || !x->ready || x->chunk < 0) continue;
        if (x->nahead * x->period < MAPPER_REST_SLACK_MS / 1000.0) return false;
        rate += 1 / x->period;
    }
    return rate * MAPPER_REST_MS / 1000.0 >= MAPPER_REST_DONES;
}

void dispatch_take_back(dispatch_loop_t *l, dispatch_worker_t *w, int from)
{
    /* The last first: each goes to the front of the queue. */
    while (w->nahead > from && from >= 0)
        chunks_take_back(&l->chunks, (size_t)w->ahead[--w->nahead]);
}
