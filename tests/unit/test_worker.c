/* tests/unit/test_worker.c - the worker's loop (worker/worker.c) against a
 * ROUTER over inproc://, its databases mocked (test_worker.wrap): a chunk
 * whose copy waits in libpq keeps sending heartbeats and hears a STOP; a
 * chunk handed out ahead waits its turn; a reader's credit that arrives
 * before its READ has started is kept, one of an earlier read is not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "copy.h"
#include "defaults.h"
#include "pgutil.h"
#include "proto.h"
#include "stream.h"
#include "worker.h"

/* The fake copy waits in job->wait (a source that has not answered yet)
 * until the test releases it, the wait says stop, or this long passed. */
#define S_COPY_WAIT_MAX_S 30.0
/* Heartbeats the test waits for while the copy waits. */
#define S_BEATS 3
/* A message from the worker is awaited at most this long. */
#define S_RECV_MS 10000

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- mocks: no database ---- */
static int s_fake_conn;

PGconn *__wrap_pgutil_connect(const char *conninfo, proto_side_t side,
                              const char *app_name, pgutil_error_t *err)
{
    (void)conninfo, (void)side, (void)app_name, (void)err;
    return (PGconn *)&s_fake_conn;
}

bool __wrap_copy_open_source(copy_conns_t *conns, pgutil_error_t *err)
{
    (void)err;
    conns->src = (PGconn *)&s_fake_conn;
    return true;
}

void __wrap_pgutil_source_identity(PGconn *conn, char *out, size_t n)
{
    (void)conn;
    snprintf(out, n, "%s", "42/test");
}

void __wrap_copy_conns_close(copy_conns_t *conns)
{
    conns->src = conns->dst = NULL;
}

static _Atomic int s_waits;    /* job->wait calls in the last copy */
static _Atomic bool s_waited;  /* the last copy's wait said stop */
static _Atomic bool s_release; /* the test lets the copy finish */

/* A copy whose source does not answer until the test releases it: all its
 * time is spent in job->wait, as the relay's is while libpq has nothing. */
copy_status_t __wrap_copy_chunk(copy_conns_t *conns, const copy_job_t *job,
                                copy_tick_fn tick, void *arg, int64_t *rows_out,
                                int64_t *bytes_out, int64_t *rejected_out,
                                pgutil_error_t *err)
{
    (void)conns, (void)tick;
    memset(err, 0, sizeof *err);
    *rows_out = *bytes_out = *rejected_out = 0;
    s_waits = 0;
    s_waited = false;
    assert_non_null(job->wait);
    double end = s_now() + S_COPY_WAIT_MAX_S;
    while (!s_release && s_now() < end) {
        s_waits++;
        if (!job->wait(arg, NULL, 0, MAPPER_PROGRESS_EVERY_MS)) {
            s_waited = true;
            return COPY_ABORTED;
        }
    }
    *rows_out = 7;
    return s_release ? COPY_OK : COPY_FAILED;
}

/* Chunks the fake read sends. */
#define S_READ_CHUNKS 3

/* A read of S_READ_CHUNKS chunks of one row each, every chunk sent only
 * once the coordinator's credit allows it, as stream_read does. */
copy_status_t __wrap_stream_read(copy_conns_t *conns, const stream_read_t *r,
                                 const stream_io_t *io, int64_t *chunks_out,
                                 int64_t *rows_out, int64_t *bytes_out,
                                 pgutil_error_t *err)
{
    (void)conns;
    memset(err, 0, sizeof *err);
    *chunks_out = *rows_out = *bytes_out = 0;
    for (int64_t k = 0; k < S_READ_CHUNKS; k++) {
        if (!io->credit(io->arg, k)) return COPY_ABORTED;
        proto_msg_t d = {.kind = PROTO_DATA,
                         .chunk_id = k,
                         .attempt = r->attempt,
                         .rows = 1,
                         .last = true,
                         .data = "x",
                         .data_len = 1};
        if (!io->send(io->arg, &d)) return COPY_ABORTED;
        (*chunks_out)++, (*rows_out)++, (*bytes_out)++;
    }
    return COPY_OK;
}

/* ---- a coordinator ---- */
typedef struct {
    void *ctx, *router, *dealer;
    worker_t *w;
    pthread_t thread;
    int rc;
    char peer[256];
    size_t peer_len;
} s_fixture_t;

static void *s_run(void *arg)
{
    s_fixture_t *f = arg;
    f->rc = worker_run(f->w);
    return NULL;
}

/* The next message from the worker (fails the test after S_RECV_MS). */
static void s_recv(s_fixture_t *f, proto_msg_t *m)
{
    zmq_pollitem_t item = {f->router, 0, ZMQ_POLLIN, 0};
    for (double end = s_now() + S_RECV_MS / 1000.0; s_now() < end;) {
        if (proto_recv(f->router, f->peer, sizeof f->peer, &f->peer_len, m))
            return;
        assert_true(zmq_poll(&item, 1, 100) >= 0);
    }
    fail_msg("no message from the worker");
}

static void s_start(s_fixture_t *f, const char *endpoint)
{
    memset(f, 0, sizeof *f);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    f->dealer = zmq_socket(f->ctx, ZMQ_DEALER);
    assert_true(proto_socket_setup(f->router, true));
    assert_true(proto_socket_setup(f->dealer, false));
    assert_int_equal(zmq_setsockopt(f->dealer, ZMQ_ROUTING_ID, "w1", 2), 0);
    assert_int_equal(zmq_bind(f->router, endpoint), 0);
    worker_config_t cfg = {.sock = f->dealer,
                           .id = "w1",
                           .source_conninfo = "",
                           .target_conninfo = "",
                           .remote = false,
                           .coord_timeout = MAPPER_COORD_TIMEOUT_S};
    f->w = worker_new(&cfg);
    assert_non_null(f->w);
    assert_int_equal(zmq_connect(f->dealer, endpoint), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, s_run, f), 0);
    proto_msg_t m;
    s_recv(f, &m);
    assert_int_equal(m.kind, PROTO_READY);
    assert_string_equal(m.source_id, "42/test");
    proto_msg_clear(&m);
}

static void s_assign_chunk(s_fixture_t *f, int64_t chunk_id)
{
    static const char cols[] = "id\0v";
    proto_msg_t a = {.kind = PROTO_ASSIGN, .chunk_id = chunk_id, .attempt = 1};
    snprintf(a.snapshot, sizeof a.snapshot, "00000003-0000001B-1");
    a.source_sql = strdup("COPY (SELECT id, v FROM t) TO STDOUT");
    snprintf(a.target_schema, sizeof a.target_schema, "public");
    snprintf(a.target_table, sizeof a.target_table, "t");
    a.columns = malloc(sizeof cols);
    memcpy(a.columns, cols, sizeof cols);
    a.columns_len = sizeof cols;
    snprintf(a.state_schema, sizeof a.state_schema, "mapper");
    assert_true(proto_send(f->router, f->peer, f->peer_len, &a));
    proto_msg_clear(&a);
}

static void s_assign(s_fixture_t *f)
{
    s_assign_chunk(f, 3);
}

/* Start the worker and give it chunk 3, whose copy then waits until the
 * test sets s_release: whatever is sent meanwhile waits in its queue. */
static void s_start_holding(s_fixture_t *f, const char *endpoint)
{
    s_release = false;
    s_waits = 0;
    s_start(f, endpoint);
    s_assign_chunk(f, 3);
    while (s_waits == 0) { /* chunk 3's copy is in its wait */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void s_stop_worker(s_fixture_t *f)
{
    proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
    assert_true(proto_send(f->router, f->peer, f->peer_len, &stop));
}

static void s_finish(s_fixture_t *f)
{
    assert_int_equal(pthread_join(f->thread, NULL), 0);
    assert_int_equal(f->rc, MAPPER_EXIT_OK);
    worker_destroy(&f->w);
    assert_null(f->w);
    zmq_close(f->dealer);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
}

/* While its copy waits (a source that has not sent a row), the worker
 * still sends heartbeats; released, the copy reports DONE. */
static void test_heartbeats_while_copy_waits(void **state)
{
    (void)state;
    s_fixture_t f;
    s_release = false;
    s_start(&f, "inproc://worker-hb");
    s_assign(&f);
    proto_msg_t m;
    for (int beats = 0; beats < S_BEATS; beats++) {
        s_recv(&f, &m);
        assert_int_equal(m.kind, PROTO_HEARTBEAT);
        proto_msg_clear(&m);
    }
    assert_true(s_waits > 0); /* they came while the copy waited */
    s_release = true;
    do {
        s_recv(&f, &m);
    } while (m.kind == PROTO_HEARTBEAT);
    assert_int_equal(m.kind, PROTO_DONE);
    assert_int_equal(m.chunk_id, 3);
    assert_int_equal(m.rows, 7);
    proto_msg_clear(&m);
    s_stop_worker(&f);
    s_finish(&f);
}

/* A STOP that arrives while the copy waits is heard there: the copy is
 * aborted and reported as a shutdown, and the loop ends. */
static void test_stop_heard_while_copy_waits(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start_holding(&f, "inproc://worker-stop");
    s_stop_worker(&f);
    proto_msg_t m;
    do {
        s_recv(&f, &m);
        if (m.kind == PROTO_HEARTBEAT) proto_msg_clear(&m);
    } while (m.kind == PROTO_HEARTBEAT);
    assert_int_equal(m.kind, PROTO_FAILED);
    assert_string_equal(m.sqlstate, MAPPER_SQLSTATE_SHUTDOWN);
    proto_msg_clear(&m);
    assert_true(s_waited);
    s_finish(&f);
}

/* The coordinator hands a worker its next chunk before the running one
 * ends, and that ASSIGN may arrive together with the running one's: while
 * a chunk runs, two more wait their turn, run in order, none refused. */
static void test_next_chunks_wait_their_turn(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start_holding(&f, "inproc://worker-ahead");
    s_assign_chunk(&f, 4);
    s_assign_chunk(&f, 5);
    s_release = true;
    proto_msg_t m;
    for (int64_t want = 3; want <= 5; want++) {
        do {
            s_recv(&f, &m);
            if (m.kind == PROTO_HEARTBEAT) proto_msg_clear(&m);
        } while (m.kind == PROTO_HEARTBEAT);
        assert_int_equal(m.kind, PROTO_DONE);
        assert_int_equal(m.chunk_id, want);
        proto_msg_clear(&m);
    }
    s_stop_worker(&f);
    s_finish(&f);
}

static void s_send_read(s_fixture_t *f, int32_t attempt, int64_t limit)
{
    proto_msg_t m = {.kind = PROTO_READ,
                     .attempt = attempt,
                     .rows = 1,
                     .limit = limit,
                     .source_sql = strdup("COPY (SELECT 1) TO STDOUT")};
    snprintf(m.snapshot, sizeof m.snapshot, "00000003-0000001B-1");
    assert_true(proto_send(f->router, f->peer, f->peer_len, &m));
    proto_msg_clear(&m);
}

static void s_send_credit(s_fixture_t *f, int32_t attempt, int64_t limit)
{
    proto_msg_t m = {.kind = PROTO_CREDIT, .attempt = attempt, .limit = limit};
    assert_true(proto_send(f->router, f->peer, f->peer_len, &m));
}

/* The next message other than a heartbeat; fails the test when only
 * heartbeats come for S_RECV_MS (a reader waiting for credit it has). */
static void s_recv_work(s_fixture_t *f, proto_msg_t *m)
{
    for (double end = s_now() + S_RECV_MS / 1000.0; s_now() < end;) {
        s_recv(f, m);
        if (m->kind != PROTO_HEARTBEAT) return;
        proto_msg_clear(m);
    }
    fail_msg("only heartbeats from the worker");
}

/* The worker's next `beats` messages are heartbeats, nothing else. */
static void s_only_heartbeats(s_fixture_t *f, int beats)
{
    proto_msg_t m;
    for (int i = 0; i < beats; i++) {
        s_recv(f, &m);
        assert_int_equal(m.kind, PROTO_HEARTBEAT);
    }
}

/* The next message is chunk's data, of the read attempt. */
static void s_expect_data(s_fixture_t *f, int64_t chunk, int32_t attempt)
{
    proto_msg_t m;
    s_recv_work(f, &m);
    assert_int_equal(m.kind, PROTO_DATA);
    assert_int_equal(m.chunk_id, chunk);
    assert_int_equal(m.attempt, attempt);
    proto_msg_clear(&m);
}

/* Read chunks first..S_READ_CHUNKS-1 of attempt, then its END. */
static void s_expect_read(s_fixture_t *f, int32_t attempt, int64_t first)
{
    for (int64_t k = first; k < S_READ_CHUNKS; k++)
        s_expect_data(f, k, attempt);
    proto_msg_t m;
    s_recv_work(f, &m);
    assert_int_equal(m.kind, PROTO_END);
    assert_int_equal(m.chunk_id, S_READ_CHUNKS);
    proto_msg_clear(&m);
}

/* Finish chunk 3, held in its copy while READ and CREDIT were queued. */
static void s_release_chunk(s_fixture_t *f)
{
    s_release = true;
    proto_msg_t m;
    s_recv_work(f, &m);
    assert_int_equal(m.kind, PROTO_DONE);
    assert_int_equal(m.chunk_id, 3);
    proto_msg_clear(&m);
}

/* The coordinator raises a reader's credit as soon as a chunk commits,
 * which may be before the worker has started the READ: both wait in its
 * queue, and the READ's own, lower limit must not undo the CREDIT (the
 * reader would wait for credit it was given, and the job forever). */
static void test_credit_before_its_read_started(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start_holding(&f, "inproc://worker-credit");
    s_send_read(&f, 2, 1);
    s_send_credit(&f, 2, S_READ_CHUNKS);
    s_release_chunk(&f);
    s_expect_read(&f, 2, 0);
    s_stop_worker(&f);
    s_finish(&f);
}

/* Credit belongs to one read: what an earlier attempt was allowed does
 * not let the next read past its own limit. */
static void test_credit_of_an_earlier_read_ignored(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start_holding(&f, "inproc://worker-stale-credit");
    s_send_credit(&f, 1, S_READ_CHUNKS);
    s_send_read(&f, 2, 1);
    s_release_chunk(&f);
    s_expect_data(&f, 0, 2);
    s_only_heartbeats(&f, 2); /* chunk 1 waits for attempt 2's credit */
    s_send_credit(&f, 2, S_READ_CHUNKS);
    s_expect_read(&f, 2, 1);
    s_stop_worker(&f);
    s_finish(&f);
}

/* A READ of a later attempt while this read waits for credit (the
 * coordinator gave this one up and came back to the same worker): this
 * read ends, reported failed, and the later one runs with its own credit;
 * waiting on, the worker would never start it. No CREDIT comes: the READ
 * carries its limit. */
static void test_credit_of_a_later_read_ends_this_one(void **state)
{
    (void)state;
    s_fixture_t f;
    s_start(&f, "inproc://worker-later-read");
    s_send_read(&f, 1, 1);
    s_expect_data(&f, 0, 1);
    s_only_heartbeats(&f, 1); /* chunk 1 of attempt 1 waits for credit */
    s_send_read(&f, 2, S_READ_CHUNKS);
    proto_msg_t m;
    s_recv_work(&f, &m);
    assert_int_equal(m.kind, PROTO_FAILED);
    assert_int_equal(m.attempt, 1);
    proto_msg_clear(&m);
    s_expect_read(&f, 2, 0);
    s_stop_worker(&f);
    s_finish(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeats_while_copy_waits),
        cmocka_unit_test(test_stop_heard_while_copy_waits),
        cmocka_unit_test(test_next_chunks_wait_their_turn),
        cmocka_unit_test(test_credit_before_its_read_started),
        cmocka_unit_test(test_credit_of_an_earlier_read_ignored),
        cmocka_unit_test(test_credit_of_a_later_read_ends_this_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
