/* tests/unit/test_dispatch_trust.c - unit tests of the DONEs the
 * dispatcher checks against the ledger in one query (coordinator/
 * dispatch_trust.c, dispatch_outcome.c), with the ledger's read mocked
 * (-Wl,--wrap=ledger_chunk_states) and real ZeroMQ inproc sockets: a
 * worker's DONE whose ledger row is not done is not counted, also when it
 * is checked in the same query as honest ones, and its worker is sent away
 * with the chunk it went on to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "dispatch_loop.h"
#include "log.h"

#define S_ENDPT   "inproc://dispatch-trust"
#define S_CHUNKS  4
#define S_ROWS    100
#define S_WAIT_MS 2000

enum { S_HONEST, S_LIAR, S_NWORKERS };

/* The mocked ledger: which chunks are marked done, and what was asked. */
static bool s_done[S_CHUNKS];
static int s_queries;
static size_t s_first_n;
static int64_t s_first_ids[MAPPER_DONE_BATCH];

bool __wrap_ledger_chunk_states(ledger_t *l, const int64_t *ids, size_t n,
                                ledger_chunk_state_t *out);
bool __wrap_ledger_chunk_states(ledger_t *l, const int64_t *ids, size_t n,
                                ledger_chunk_state_t *out)
{
    (void)l;
    if (s_queries++ == 0) {
        s_first_n = n;
        memcpy(s_first_ids, ids, n * sizeof *ids);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] >= 0 && ids[i] < S_CHUNKS);
        out[i] = (ledger_chunk_state_t){.done = s_done[ids[i]],
                                        .rows = s_done[ids[i]] ? S_ROWS : 0};
    }
    return true;
}

typedef struct {
    void *ctx, *router, *dealer[S_NWORKERS];
    ledger_t ledger; /* never read: the mock answers */
    mapper_retry_config retry;
    mapper_result out;
    dispatch_config_t cfg;
    dispatch_loop_t l;
    dispatch_worker_t w[S_NWORKERS];
} s_fixture;

static const char *const s_ids[S_NWORKERS] = {"honest", "liar"};

static int s_setup(void **state)
{
    s_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_true(proto_socket_setup(f->router, true));
    assert_int_equal(zmq_bind(f->router, S_ENDPT), 0);
    for (int i = 0; i < S_NWORKERS; i++) {
        f->dealer[i] = zmq_socket(f->ctx, ZMQ_DEALER);
        assert_true(proto_socket_setup(f->dealer[i], false));
        assert_int_equal(zmq_setsockopt(f->dealer[i], ZMQ_ROUTING_ID, s_ids[i],
                                        strlen(s_ids[i])),
                         0);
        assert_int_equal(zmq_connect(f->dealer[i], S_ENDPT), 0);
        /* The router learns the peer from its first message. */
        proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
        assert_true(proto_send(f->dealer[i], NULL, 0, &hb));
        zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
        assert_int_equal(zmq_poll(&it, 1, S_WAIT_MS), 1);
        char peer[64];
        size_t peer_len;
        proto_msg_t m;
        assert_true(proto_recv(f->router, peer, sizeof peer, &peer_len, &m));
        proto_msg_clear(&m);
        dispatch_worker_t *w = &f->w[i];
        snprintf(w->id, sizeof w->id, "%s", s_ids[i]);
        w->alive = w->ready = true;
        w->chunk = -1;
    }
    retry_config_defaults(&f->retry);
    f->retry.jitter = false;
    f->cfg.router = f->router;
    f->cfg.ledger = &f->ledger;
    f->cfg.max_rejects = MAPPER_UNLIMITED_REJECTS;
    f->l.cfg = &f->cfg;
    f->l.out = &f->out;
    f->l.reader = -1;
    f->l.workers = f->w;
    f->l.nworkers = S_NWORKERS;
    assert_true(chunks_init(&f->l.chunks, S_CHUNKS, &f->retry, 30, NULL, NULL));
    memset(s_done, 0, sizeof s_done);
    s_queries = 0;
    s_first_n = 0;
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture *f = *state;
    chunks_free(&f->l.chunks);
    for (int i = 0; i < S_NWORKERS; i++)
        zmq_close(f->dealer[i]);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    free(f);
    return 0;
}

/* Chunk ci (the next one) starts on worker i. */
static int s_start(s_fixture *f, size_t ci, int i)
{
    assert_int_equal(chunks_next(&f->l.chunks), (ssize_t)ci);
    f->w[i].chunk = (int64_t)ci;
    return chunks_start(&f->l.chunks, ci, i);
}

/* Worker i says DONE for chunk ci (attempt): kept for the batch, and the
 * worker holds it no more. */
static void s_done_heard(s_fixture *f, int i, size_t ci, int attempt)
{
    proto_msg_t m = {.kind = PROTO_DONE,
                     .chunk_id = (int64_t)ci,
                     .attempt = attempt,
                     .rows = S_ROWS};
    dispatch_done_defer(&f->l, &f->w[i], &m);
    f->w[i].chunk = -1;
}

static void test_lie_in_a_batch_of_honest_dones(void **state)
{
    s_fixture *f = *state;
    int a0 = s_start(f, 0, S_HONEST);
    int a1 = s_start(f, 1, S_LIAR);
    s_done_heard(f, S_HONEST, 0, a0);
    s_done_heard(f, S_LIAR, 1, a1); /* the liar copied nothing */
    int a2 = s_start(f, 2, S_HONEST);
    s_done_heard(f, S_HONEST, 2, a2);
    s_start(f, 3, S_LIAR); /* the liar went on to chunk 3 */
    s_done[0] = s_done[2] = true;
    assert_int_equal(f->l.ndone, 3);

    dispatch_done_flush(&f->l);

    /* The three DONEs were checked in one query. */
    assert_int_equal(s_first_n, 3);
    assert_int_equal(s_first_ids[0], 0);
    assert_int_equal(s_first_ids[1], 1);
    assert_int_equal(s_first_ids[2], 2);
    assert_int_equal(f->l.ndone, 0);
    /* The honest ones count, with the ledger's rows. */
    assert_int_equal(f->l.chunks.v[0].state, CHUNKS_DONE);
    assert_int_equal(f->l.chunks.v[2].state, CHUNKS_DONE);
    assert_int_equal(f->l.chunks.v[0].rows, S_ROWS);
    /* The lie does not: chunk 1 waits for its retry. */
    assert_int_equal(f->l.chunks.v[1].state, CHUNKS_PENDING);
    assert_int_equal(f->l.chunks.unfinished, 2);
    const pgutil_error_t *e = chunks_last_error(&f->l.chunks, 1);
    assert_non_null(e);
    assert_non_null(strstr(e->message, "contradicts the ledger"));
    /* The liar is sent away, and loses the chunk it went on to. */
    assert_true(f->w[S_LIAR].banned);
    assert_false(f->w[S_LIAR].ready);
    assert_int_equal(f->w[S_LIAR].chunk, -1);
    assert_int_equal(f->l.chunks.v[3].state, CHUNKS_PENDING);
    assert_false(f->w[S_HONEST].banned);
    zmq_pollitem_t it = {f->dealer[S_LIAR], 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, S_WAIT_MS), 1);
    proto_msg_t m;
    assert_true(proto_recv(f->dealer[S_LIAR], NULL, 0, NULL, &m));
    assert_int_equal(m.kind, PROTO_STOP);
    assert_non_null(strstr(m.message, "contradicts the ledger"));
    proto_msg_clear(&m);
}

static void test_all_honest_one_query(void **state)
{
    s_fixture *f = *state;
    for (size_t ci = 0; ci < S_CHUNKS; ci++) {
        int i = (int)(ci % S_NWORKERS);
        s_done_heard(f, i, ci, s_start(f, ci, i));
        s_done[ci] = true;
    }
    dispatch_done_flush(&f->l);
    assert_int_equal(s_queries, 1);
    assert_int_equal(s_first_n, S_CHUNKS);
    assert_int_equal(f->l.chunks.unfinished, 0);
    assert_false(f->w[S_LIAR].banned);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lie_in_a_batch_of_honest_dones,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_all_honest_one_query, s_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
