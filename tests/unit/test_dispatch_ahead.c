/* tests/unit/test_dispatch_ahead.c - unit tests of the chunks a worker
 * holds ahead (coordinator/dispatch_ahead.c): how many it may hold (by how
 * fast its chunks end, and never so many that another worker runs dry),
 * each transition of what it holds (goes on, went on without a word,
 * refused, taken back), the period's moving average, and when the loop
 * may rest. No database, no sockets: the chunk table is real. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_clock.h"
#include "dispatch_loop.h"
#include "log.h"

#define S_WORKERS 16

typedef struct {
    mapper_retry_config retry;
    mapper_result out;
    dispatch_config_t cfg;
    dispatch_loop_t l;
    dispatch_worker_t w[S_WORKERS];
} s_fixture;

static s_fixture *s_new(size_t chunks)
{
    s_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    retry_config_defaults(&f->retry);
    f->retry.jitter = false;
    f->cfg.max_rejects = MAPPER_UNLIMITED_REJECTS;
    f->l.cfg = &f->cfg;
    f->l.out = &f->out;
    f->l.reader = -1;
    f->l.workers = f->w;
    f->l.nworkers = 2; /* a third joins in some tests */
    for (int i = 0; i < S_WORKERS; i++) {
        snprintf(f->w[i].id, sizeof f->w[i].id, "w%d", i);
        f->w[i].alive = f->w[i].ready = true;
        f->w[i].chunk = -1;
    }
    assert_true(chunks_init(&f->l.chunks, chunks, &f->retry, 30, NULL, NULL));
    return f;
}

static void s_free(s_fixture *f)
{
    chunks_free(&f->l.chunks);
    free(f);
}

/* Worker i starts the next chunk, as the loop's s_assign does. */
static int64_t s_run(s_fixture *f, int i)
{
    ssize_t ci = chunks_next(&f->l.chunks);
    assert_true(ci >= 0);
    chunks_start(&f->l.chunks, (size_t)ci, i);
    f->w[i].chunk = ci;
    return ci;
}

/* Worker i is handed the next chunk ahead. */
static int64_t s_ahead(s_fixture *f, int i)
{
    ssize_t ci = chunks_next_ahead(&f->l.chunks);
    assert_true(ci >= 0);
    assert_int_equal(chunks_start_ahead(&f->l.chunks, (size_t)ci, i), 1);
    f->w[i].ahead[f->w[i].nahead++] = ci;
    return ci;
}

static uint8_t s_state(s_fixture *f, int64_t ci)
{
    return f->l.chunks.v[ci].state;
}

/* Fill worker 0 as far as it wants; how many it holds ahead then. */
static int s_fill(s_fixture *f)
{
    while (dispatch_ahead_wanted(&f->l, &f->w[0]))
        s_ahead(f, 0);
    return f->w[0].nahead;
}

static void test_depth_follows_chunk_period(void **state)
{
    (void)state;
    s_fixture *f = s_new(100);
    s_run(f, 0);
    s_run(f, 1);
    assert_int_equal(s_fill(f), 1); /* period unknown: one */
    f->w[0].period = 0.001;         /* 1 ms chunks: about 5 ms of them */
    assert_int_equal(s_fill(f), MAPPER_AHEAD_MS);
    f->w[0].period = 0.0001; /* 0.1 ms: capped */
    assert_int_equal(s_fill(f), MAPPER_AHEAD_MAX);
    s_free(f);

    f = s_new(100);
    s_run(f, 0);
    f->w[0].period = 0.05; /* slow chunks: one ahead */
    assert_int_equal(s_fill(f), 1);
    s_free(f);
}

static void test_nothing_ahead_when_it_may_not(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    assert_false(dispatch_ahead_wanted(&f->l, w)); /* runs nothing */
    s_run(f, 0);
    assert_true(dispatch_ahead_wanted(&f->l, w));
    w->ready = false;
    assert_false(dispatch_ahead_wanted(&f->l, w));
    w->ready = true;
    f->cfg.max_rejects = 5; /* past it no chunk may start */
    assert_false(dispatch_ahead_wanted(&f->l, w));
    f->cfg.max_rejects = MAPPER_UNLIMITED_REJECTS;
    f->l.stream = true;
    assert_false(dispatch_ahead_wanted(&f->l, w));
    s_free(f);
}

/* The last chunks are shared out: a worker takes a second one ahead only
 * when every busy worker could still take one, and never one an idle
 * worker needs. */
static void test_last_chunks_shared_out(void **state)
{
    (void)state;
    s_fixture *f = s_new(5);
    s_run(f, 0);
    s_run(f, 1);
    f->w[0].period = f->w[1].period = 0.0001;
    assert_int_equal(s_fill(f), 1); /* 3 wait, 2 busy: one, not two */
    assert_true(dispatch_ahead_wanted(&f->l, &f->w[1]));
    s_ahead(f, 1);
    assert_false(dispatch_ahead_wanted(&f->l, &f->w[1]));
    s_free(f);

    f = s_new(3);
    s_run(f, 0);
    f->l.nworkers = 3; /* w2 idle, w1 idle: the one left is theirs */
    assert_false(dispatch_ahead_wanted(&f->l, &f->w[0]));
    f->w[2].alive = false; /* one idle worker, two chunks waiting */
    assert_true(dispatch_ahead_wanted(&f->l, &f->w[0]));
    s_free(f);
}

static void test_goes_on_in_order(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    s_run(f, 0);
    int64_t a = s_ahead(f, 0), b = s_ahead(f, 0);
    assert_int_equal(s_state(f, a), CHUNKS_AHEAD);
    dispatch_ahead_runs(&f->l, w);
    assert_int_equal(w->chunk, a);
    assert_int_equal(s_state(f, a), CHUNKS_RUNNING);
    assert_int_equal(w->nahead, 1);
    assert_int_equal(w->ahead[0], b);
    dispatch_ahead_runs(&f->l, w);
    assert_int_equal(w->chunk, b);
    assert_int_equal(w->nahead, 0);
    dispatch_ahead_runs(&f->l, w); /* nothing ahead: nothing changes */
    assert_int_equal(w->chunk, b);
    s_free(f);
}

/* Taken back from the from-th on: back at the front of the queue, in
 * their order, without using an attempt. */
static void test_taken_back_in_order(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    s_run(f, 0);
    int64_t a = s_ahead(f, 0), b = s_ahead(f, 0), c = s_ahead(f, 0);
    dispatch_take_back(&f->l, w, 1);
    assert_int_equal(w->nahead, 1);
    assert_int_equal(w->ahead[0], a);
    assert_int_equal(s_state(f, b), CHUNKS_PENDING);
    assert_int_equal(s_state(f, c), CHUNKS_PENDING);
    assert_int_equal(f->l.chunks.v[b].attempts, 0);
    assert_int_equal(chunks_next(&f->l.chunks), b);
    assert_int_equal(chunks_next(&f->l.chunks), c);
    dispatch_take_back(&f->l, w, 0);
    assert_int_equal(w->nahead, 0);
    assert_int_equal(s_state(f, a), CHUNKS_PENDING);
    s_free(f);
}

static proto_msg_t s_msg(proto_kind_t kind, int64_t ci, int attempt)
{
    return (proto_msg_t){.kind = kind, .chunk_id = ci, .attempt = attempt};
}

/* A DONE about the second chunk ahead: the worker ran the first two
 * without a word (lost: retried), and the one it speaks of runs. */
static void test_report_on_a_chunk_ahead(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    int64_t r = s_run(f, 0), a = s_ahead(f, 0), b = s_ahead(f, 0),
            c = s_ahead(f, 0);
    proto_msg_t m = s_msg(PROTO_DONE, b, 1);
    chunks_chunk_t *held = dispatch_held(&f->l, w, &m);
    assert_ptr_equal(held, &f->l.chunks.v[b]);
    assert_int_equal(w->chunk, b);
    assert_int_equal(s_state(f, b), CHUNKS_RUNNING);
    assert_int_equal(w->nahead, 1);
    assert_int_equal(w->ahead[0], c);
    assert_int_equal(s_state(f, r), CHUNKS_PENDING); /* to retry */
    assert_int_equal(s_state(f, a), CHUNKS_PENDING);
    assert_non_null(strstr(chunks_last_error(&f->l.chunks, (size_t)r)->message,
                           "went on to chunk"));
    s_free(f);
}

/* A FAILED about a chunk ahead is a refusal: it and those after it go
 * back; those before it stay the worker's. */
static void test_refused_chunk_ahead(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    int64_t r = s_run(f, 0), a = s_ahead(f, 0), b = s_ahead(f, 0),
            c = s_ahead(f, 0);
    proto_msg_t m = s_msg(PROTO_FAILED, b, 1);
    assert_null(dispatch_held(&f->l, w, &m));
    assert_int_equal(w->chunk, r);
    assert_int_equal(w->nahead, 1);
    assert_int_equal(w->ahead[0], a);
    assert_int_equal(s_state(f, b), CHUNKS_PENDING);
    assert_int_equal(s_state(f, c), CHUNKS_PENDING);
    s_free(f);
}

static void test_stale_reports_change_nothing(void **state)
{
    (void)state;
    s_fixture *f = s_new(10);
    dispatch_worker_t *w = &f->w[0];
    int64_t r = s_run(f, 0), a = s_ahead(f, 0);
    proto_msg_t old = s_msg(PROTO_DONE, a, 2); /* another attempt */
    assert_null(dispatch_held(&f->l, w, &old));
    proto_msg_t other = s_msg(PROTO_DONE, 7, 1); /* not its chunk */
    assert_null(dispatch_held(&f->l, w, &other));
    proto_msg_t out = s_msg(PROTO_DONE, 99, 1); /* no such chunk */
    assert_null(dispatch_held(&f->l, w, &out));
    assert_int_equal(w->chunk, r);
    assert_int_equal(w->nahead, 1);
    assert_int_equal(s_state(f, a), CHUNKS_AHEAD);
    proto_msg_t mine = s_msg(PROTO_PROGRESS, r, 1);
    assert_ptr_equal(dispatch_held(&f->l, w, &mine), &f->l.chunks.v[r]);
    s_free(f);
}

static void test_period_is_a_moving_average(void **state)
{
    (void)state;
    dispatch_worker_t w = {.chunk = -1};
    dispatch_ahead_ended(&w, 1.0);
    assert_true(w.period == 0); /* one end says nothing */
    dispatch_ahead_ended(&w, 1.004);
    assert_true(w.period > 0.0039 && w.period < 0.0041);
    dispatch_ahead_ended(&w, 1.012); /* 8 ms: a quarter of the way */
    assert_true(w.period > 0.0049 && w.period < 0.0051);
}

static void test_rest_only_with_slack_and_many_ends(void **state)
{
    (void)state;
    s_fixture *f = s_new(100);
    s_run(f, 0);
    s_run(f, 1);
    assert_false(dispatch_may_rest(&f->l)); /* periods unknown */
    f->w[0].period = f->w[1].period = 0.0009;
    for (int i = 0; i < 4; i++) {
        s_ahead(f, 0);
        s_ahead(f, 1);
    }
    assert_true(dispatch_may_rest(&f->l)); /* 3.6 ms each, 2.2 ends a ms */
    f->l.stopping = true;
    assert_false(dispatch_may_rest(&f->l));
    f->l.stopping = false;
    dispatch_take_back(&f->l, &f->w[1], 2); /* 1.8 ms: could run dry */
    assert_false(dispatch_may_rest(&f->l));
    s_free(f);

    f = s_new(100);
    s_run(f, 0);
    s_run(f, 1);
    f->w[0].period = f->w[1].period = 0.005; /* 5 ms chunks */
    s_ahead(f, 0);
    s_ahead(f, 1);
    assert_false(dispatch_may_rest(&f->l)); /* slack, but few ends */
    s_free(f);
}

/* A million chunks through the dispatcher's hands with 16 simulated
 * workers on short chunks (each holds several ahead): every report is
 * checked by dispatch_held, every worker refilled by
 * dispatch_ahead_wanted. Constant cost a chunk (cpu_clock.h). */
#define PERF_CHUNKS    1000000
#define PERF_WORKERS   S_WORKERS
#define PERF_MAX_CPU_S CPU_CLOCK_MILLION_MAX_S

static void test_million_chunks_through_the_hands(void **state)
{
    (void)state;
    double cpu0 = cpu_clock_s();
    s_fixture *f = s_new(PERF_CHUNKS);
    f->l.nworkers = PERF_WORKERS;
    size_t done = 0, most = 0;
    double now = 1.0;
    while (f->l.chunks.unfinished > 0) {
        for (int i = 0; i < PERF_WORKERS; i++) {
            dispatch_worker_t *w = &f->w[i];
            ssize_t ci;
            if (w->chunk < 0 && (ci = chunks_next(&f->l.chunks)) >= 0) {
                chunks_start(&f->l.chunks, (size_t)ci, i);
                w->chunk = ci;
            }
            while (dispatch_ahead_wanted(&f->l, w))
                s_ahead(f, i);
            if ((size_t)w->nahead > most) most = (size_t)w->nahead;
            if (w->chunk < 0) continue;
            proto_msg_t m =
                s_msg(PROTO_DONE, w->chunk, f->l.chunks.v[w->chunk].attempts);
            assert_non_null(dispatch_held(&f->l, w, &m));
            chunks_done(&f->l.chunks, (size_t)w->chunk, m.attempt, 100, 1000,
                        0);
            done++;
            w->chunk = -1;
            now += 0.0001;
            dispatch_ahead_ended(w, now);
            dispatch_ahead_runs(&f->l, w);
        }
    }
    double cpu = cpu_clock_s() - cpu0;
    assert_int_equal(done, PERF_CHUNKS);
    assert_true(most > 1); /* short chunks: several held ahead */
    for (size_t i = 0; i < f->l.chunks.n; i++)
        assert_int_equal(f->l.chunks.v[i].state, CHUNKS_DONE);
    print_message("%d chunks: %.3f s of CPU (bound %.1f s)\n", PERF_CHUNKS, cpu,
                  PERF_MAX_CPU_S);
    assert_true(cpu < PERF_MAX_CPU_S);
    s_free(f);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth_follows_chunk_period),
        cmocka_unit_test(test_nothing_ahead_when_it_may_not),
        cmocka_unit_test(test_last_chunks_shared_out),
        cmocka_unit_test(test_goes_on_in_order),
        cmocka_unit_test(test_taken_back_in_order),
        cmocka_unit_test(test_report_on_a_chunk_ahead),
        cmocka_unit_test(test_refused_chunk_ahead),
        cmocka_unit_test(test_stale_reports_change_nothing),
        cmocka_unit_test(test_period_is_a_moving_average),
        cmocka_unit_test(test_rest_only_with_slack_and_many_ends),
        cmocka_unit_test(test_million_chunks_through_the_hands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
