/* tests/unit/test_dispatch_stream.c - unit tests of the stream mode's
 * sending in coordinator/dispatch_stream.c, over real ZeroMQ inproc
 * sockets: a chunk's data frames that meet a writer's full queue are sent
 * when it drains, in order, none dropped; a queue that stays full fails the
 * attempt instead of losing frames. */
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

#define S_FRAMES  12 /* data frames in the chunk */
#define S_HWM     2  /* messages a queue holds, each side */
#define S_ROWS    777
#define S_ENDPT   "inproc://dispatch-stream"
#define S_WAIT_MS 2000

typedef struct {
    void *ctx, *router, *dealer;
    dispatch_config_t cfg;
    dispatch_loop_t l;
    dispatch_worker_t w;
    size_t len; /* bytes in the chunk */
} s_fixture;

static void s_setopt_int(void *socket, int opt, int v)
{
    assert_int_equal(zmq_setsockopt(socket, opt, &v, sizeof v), 0);
}

/* A ROUTER (the coordinator's) and a DEALER named "w1" (a writer), both
 * with small queues, and a loop holding one stream chunk of S_FRAMES full
 * frames plus a few bytes. */
static int s_setup(void **state)
{
    s_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    f->dealer = zmq_socket(f->ctx, ZMQ_DEALER);
    s_setopt_int(f->router, ZMQ_SNDHWM, S_HWM);
    s_setopt_int(f->dealer, ZMQ_RCVHWM, S_HWM);
    assert_true(proto_socket_setup(f->router, true));
    assert_true(proto_socket_setup(f->dealer, false));
    assert_int_equal(zmq_setsockopt(f->dealer, ZMQ_ROUTING_ID, "w1", 2), 0);
    assert_int_equal(zmq_bind(f->router, S_ENDPT), 0);
    assert_int_equal(zmq_connect(f->dealer, S_ENDPT), 0);
    /* The router learns the peer from its first message. */
    proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
    assert_true(proto_send(f->dealer, NULL, 0, &hb));
    zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, S_WAIT_MS), 1);
    char peer[64];
    size_t peer_len;
    proto_msg_t m;
    assert_true(proto_recv(f->router, peer, sizeof peer, &peer_len, &m));
    proto_msg_clear(&m);

    f->cfg.router = f->router;
    f->cfg.worker_timeout = 3600;
    f->l.cfg = &f->cfg;
    f->l.stream = true;
    inflight_init(&f->l.held, 4);
    f->len = (size_t)S_FRAMES * PROTO_MAX_DATA + 5;
    f->l.held.chunks = calloc(1, sizeof *f->l.held.chunks);
    assert_non_null(f->l.held.chunks);
    f->l.held.cap = 1;
    f->l.held.known = 1;
    inflight_chunk_t *h = &f->l.held.chunks[0];
    h->data = malloc(f->len);
    assert_non_null(h->data);
    for (size_t i = 0; i < f->len; i++)
        h->data[i] = (char)(i * 7 + i / 4093);
    h->len = h->cap = f->len;
    h->rows = S_ROWS;
    snprintf(f->w.id, sizeof f->w.id, "w1");
    f->w.alive = f->w.ready = true;
    f->w.chunk = 0;
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture *f = *state;
    inflight_free(&f->l.held);
    zmq_close(f->dealer);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    free(f);
    return 0;
}

/* Read every data frame waiting at the dealer into got (at *at); true when
 * the last one came. */
static bool s_drain(s_fixture *f, char *got, size_t *at, int64_t *rows)
{
    bool last = false;
    proto_msg_t m;
    while (proto_recv(f->dealer, NULL, 0, NULL, &m)) {
        assert_int_equal(m.kind, PROTO_DATA);
        assert_int_equal(m.chunk_id, 0);
        assert_int_equal(m.attempt, 3);
        assert_false(last); /* nothing after the last */
        assert_true(*at + m.data_len <= f->len);
        memcpy(got + *at, m.data, m.data_len);
        *at += m.data_len;
        *rows += m.rows;
        last = m.last;
        proto_msg_clear(&m);
    }
    return last;
}

static void test_full_queue_is_sent_when_it_drains(void **state)
{
    s_fixture *f = *state;
    /* More frames than both queues hold: the first send fills them. */
    assert_true(dispatch_stream_send_rows(&f->l, &f->w, 0, 3));
    assert_true(f->w.sending); /* frames are left, not dropped */
    char *got = malloc(f->len);
    assert_non_null(got);
    size_t at = 0;
    int64_t rows = 0;
    bool last = false;
    for (int round = 0; !last && round < 10 * S_FRAMES; round++) {
        zmq_pollitem_t it = {f->dealer, 0, ZMQ_POLLIN, 0};
        (void)zmq_poll(&it, 1, 100);
        last = s_drain(f, got, &at, &rows);
        assert_true(dispatch_stream_flush(&f->l, &f->w));
    }
    assert_true(last);
    assert_false(f->w.sending);
    assert_int_equal(at, f->len);
    assert_int_equal(rows, S_ROWS);
    assert_memory_equal(got, f->l.held.chunks[0].data, f->len);
    free(got);
}

static void test_queue_full_too_long_fails(void **state)
{
    s_fixture *f = *state;
    f->cfg.worker_timeout = 0; /* no patience: a full queue fails at once */
    assert_false(dispatch_stream_send_rows(&f->l, &f->w, 0, 3));
    assert_false(f->w.sending);
    /* What went out is a prefix of the chunk, without its last frame. */
    char *got = malloc(f->len);
    assert_non_null(got);
    size_t at = 0;
    int64_t rows = 0;
    assert_false(s_drain(f, got, &at, &rows));
    assert_true(at > 0 && at < f->len);
    assert_memory_equal(got, f->l.held.chunks[0].data, at);
    free(got);
}

static void test_rows_gone_fails(void **state)
{
    s_fixture *f = *state;
    inflight_release(&f->l.held, 0);
    assert_false(dispatch_stream_send_rows(&f->l, &f->w, 0, 3));
    assert_false(f->w.sending);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_queue_is_sent_when_it_drains,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_too_long_fails, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_rows_gone_fails, s_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
