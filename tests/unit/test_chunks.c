/* tests/unit/test_chunks.c - unit tests of coordinator/chunks.c: every
 * transition of the chunk state machine (pending, running, waiting for a
 * retry, paused by an outage, done, failed for good) and every retry and
 * outage decision, on an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "chunks.h"
#include "cpu_clock.h"
#include "log.h"

static double s_time;
static double s_clock(void)
{
    return s_time;
}

static size_t s_ended[64];
static size_t s_nended;
static void s_on_end(void *ctx, size_t ci)
{
    (void)ctx;
    s_ended[s_nended++] = ci;
}

static mapper_retry_config s_cfg;

/* A table of n chunks on the test clock, no jitter, 1 s .. 8 s. */
static chunks_t s_table(size_t n)
{
    s_time = 100;
    s_nended = 0;
    retry_config_defaults(&s_cfg);
    s_cfg.jitter = false;
    s_cfg.initial_delay = 1;
    s_cfg.max_delay = 8;
    s_cfg.max_retries = 2;
    chunks_t t;
    assert_true(chunks_init(&t, n, &s_cfg, 30, NULL, s_clock));
    t.on_end = s_on_end;
    return t;
}

/* Chunk ci is the next that may start: start it on worker w. */
static int s_start(chunks_t *t, size_t ci, int w)
{
    assert_int_equal(chunks_next(t), (ssize_t)ci);
    return chunks_start(t, ci, w);
}

/* Chunk ci's running attempt failed with (side, sqlstate). */
static chunks_outcome_t s_fail_with(chunks_t *t, size_t ci, proto_side_t side,
                                    const char *sqlstate, chunks_cause_t cause)
{
    pgutil_error_t *e = chunks_error(t, ci);
    e->side = side;
    snprintf(e->sqlstate, sizeof e->sqlstate, "%s", sqlstate);
    snprintf(e->message, sizeof e->message, "boom");
    return chunks_attempt_failed(t, ci, cause);
}

static void test_init_all_pending(void **state)
{
    (void)state;
    chunks_t t = s_table(3);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.unfinished, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(t.v[i].state, CHUNKS_PENDING);
        assert_int_equal(t.v[i].worker, -1);
    }
    assert_int_equal(chunks_running(&t), 0);
    chunks_free(&t);
}

static void test_next_in_order_then_none(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    assert_int_equal(chunks_next(&t), 0);
    assert_int_equal(chunks_start(&t, 0, 5), 1);
    assert_int_equal(chunks_next(&t), 1);
    assert_int_equal(chunks_start(&t, 1, 6), 1);
    assert_int_equal(chunks_next(&t), -1);
    assert_int_equal(chunks_running(&t), 2);
    chunks_free(&t);
}

static void test_start_counts_attempt_and_first_start(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    assert_int_equal(s_start(&t, 0, 3), 1);
    assert_int_equal(t.v[0].state, CHUNKS_RUNNING);
    assert_int_equal(t.v[0].worker, 3);
    assert_true(t.v[0].first_start == 100);
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED),
        CHUNKS_RETRY);
    s_time = 150;
    assert_int_equal(s_start(&t, 0, 4), 2);
    assert_true(t.v[0].first_start == 100); /* the first attempt's */
    chunks_free(&t);
}

static void test_done(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    s_start(&t, 0, 0);
    s_start(&t, 1, 0);
    t.outage[PROTO_SIDE_SOURCE].streak = 2;
    chunks_done(&t, 1, 1, 10, 99, 2);
    assert_int_equal(t.v[1].state, CHUNKS_DONE);
    assert_int_equal(t.v[1].rows, 10);
    assert_int_equal(t.v[1].bytes, 99);
    assert_int_equal(t.v[1].rejected, 2);
    assert_int_equal(t.v[1].worker, -1);
    assert_int_equal(t.unfinished, 1);
    assert_int_equal(t.outage[PROTO_SIDE_SOURCE].streak, 0);
    assert_int_equal(s_nended, 1);
    assert_int_equal(s_ended[0], 1);
    chunks_done(&t, 1, 1, 10, 99, 2); /* twice: nothing more */
    assert_int_equal(t.unfinished, 1);
    assert_int_equal(s_nended, 1);
    chunks_free(&t);
}

static void test_retry_waits_for_its_time(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    s_start(&t, 0, 0);
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40P01", CHUNKS_REPORTED),
        CHUNKS_RETRY);
    assert_int_equal(t.v[0].state, CHUNKS_PENDING);
    assert_string_equal(chunks_class(&t, 0), "deadlock");
    assert_true(t.v[0].not_before == 101); /* initial delay 1 s */
    assert_int_equal(chunks_next(&t), -1);
    s_time = 101;
    s_start(&t, 0, 0); /* due now */
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40P01", CHUNKS_REPORTED),
        CHUNKS_RETRY);
    assert_true(t.v[0].not_before == 103); /* 2 s: backoff doubles */
    assert_int_equal(s_nended, 0);
    assert_int_equal(t.unfinished, 1);
    chunks_free(&t);
}

static void test_permanent_fails_for_good(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    s_start(&t, 0, 0);
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_TARGET, "42P01", CHUNKS_REPORTED),
        CHUNKS_GONE);
    assert_int_equal(t.v[0].state, CHUNKS_FAILED);
    assert_string_equal(chunks_class(&t, 0), "syntax");
    assert_string_equal(chunks_last_error(&t, 0)->message, "boom");
    assert_int_equal(t.unfinished, 0);
    assert_int_equal(s_nended, 1);
    assert_int_equal(chunks_next(&t), -1);
    chunks_free(&t);
}

static void test_exhausted(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    for (int i = 0; i < 2; i++) {
        s_start(&t, 0, 0);
        assert_int_equal(
            s_fail_with(&t, 0, PROTO_SIDE_NONE, "", CHUNKS_CRASHED),
            CHUNKS_RETRY);
        assert_string_equal(chunks_class(&t, 0), "crash");
        s_time += 10;
    }
    s_start(&t, 0, 0);
    assert_int_equal(s_fail_with(&t, 0, PROTO_SIDE_NONE, "", CHUNKS_CRASHED),
                     CHUNKS_GONE);
    assert_int_equal(t.v[0].attempts, 3);
    chunks_free(&t);
}

static void test_disabled(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    s_cfg.enabled = false;
    s_start(&t, 0, 0);
    assert_int_equal(s_fail_with(&t, 0, PROTO_SIDE_NONE, "", CHUNKS_LEASE_LOST),
                     CHUNKS_GONE);
    assert_string_equal(chunks_class(&t, 0), "heartbeat");
    chunks_free(&t);
}

static void test_deadline(void **state)
{
    (void)state;
    chunks_t t = s_table(1);
    s_cfg.deadline = 5;
    s_start(&t, 0, 0);
    s_time = 104.5; /* the 1 s delay is clamped to the deadline */
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_NONE, "", CHUNKS_DISBELIEVED),
        CHUNKS_RETRY);
    assert_true(t.v[0].not_before == 105);
    s_time = 106;
    s_start(&t, 0, 0);
    assert_int_equal(
        s_fail_with(&t, 0, PROTO_SIDE_NONE, "", CHUNKS_DISBELIEVED),
        CHUNKS_GONE);
    chunks_free(&t);
}

static void test_decide_for_the_reader(void **state)
{
    (void)state;
    chunks_t t = s_table(0);
    pgutil_error_t e = {.side = PROTO_SIDE_SOURCE, .sqlstate = "08006"};
    const char *cls = NULL;
    retry_decision d = chunks_decide(&t, &e, CHUNKS_REPORTED, 1, 100, &cls);
    assert_true(d.retry);
    assert_string_equal(cls, "connection");
    d = chunks_decide(&t, &e, CHUNKS_REPORTED, 3, 100, &cls);
    assert_false(d.retry);
    assert_int_equal(d.reason, RETRY_EXHAUSTED);
    memcpy(e.sqlstate, "22P02", 6);
    d = chunks_decide(&t, &e, CHUNKS_REPORTED, 1, 100, &cls);
    assert_false(d.retry);
    assert_int_equal(d.reason, RETRY_PERMANENT);
    assert_string_equal(cls, "data");
    chunks_free(&t);
}

/* MAPPER_OUTAGE_STREAK connection failures in a row start an outage; the
 * one that starts it and any after it use no attempt. */
static void test_outage_pauses(void **state)
{
    (void)state;
    chunks_t t = s_table(4);
    for (size_t i = 0; i + 1 < MAPPER_OUTAGE_STREAK; i++) {
        s_start(&t, i, 0);
        assert_int_equal(
            s_fail_with(&t, i, PROTO_SIDE_SOURCE, "08006", CHUNKS_REPORTED),
            CHUNKS_RETRY);
        assert_false(chunks_in_outage(&t, PROTO_SIDE_NONE));
    }
    size_t last = MAPPER_OUTAGE_STREAK - 1;
    s_start(&t, last, 0);
    assert_int_equal(
        s_fail_with(&t, last, PROTO_SIDE_SOURCE, "08006", CHUNKS_REPORTED),
        CHUNKS_PAUSED);
    assert_true(chunks_in_outage(&t, PROTO_SIDE_SOURCE));
    assert_true(chunks_in_outage(&t, PROTO_SIDE_NONE));
    assert_false(chunks_in_outage(&t, PROTO_SIDE_TARGET));
    assert_int_equal(t.v[last].attempts, 0);
    assert_int_equal(t.v[last].state, CHUNKS_PENDING);
    assert_true(t.v[last].not_before == s_time);
    chunks_free(&t);
}

/* A crash is not a database's fault: it never counts towards an outage. */
static void test_crash_is_no_outage(void **state)
{
    (void)state;
    chunks_t t = s_table(MAPPER_OUTAGE_STREAK);
    for (size_t i = 0; i < MAPPER_OUTAGE_STREAK; i++) {
        s_start(&t, i, 0);
        assert_int_equal(
            s_fail_with(&t, i, PROTO_SIDE_NONE, "", CHUNKS_CRASHED),
            CHUNKS_RETRY);
    }
    assert_false(chunks_in_outage(&t, PROTO_SIDE_NONE));
    chunks_free(&t);
}

static void s_start_outage(chunks_t *t, proto_side_t side)
{
    for (size_t i = 0; i < MAPPER_OUTAGE_STREAK; i++) {
        s_start(t, i, 0);
        (void)s_fail_with(t, i, side, "57P03", CHUNKS_REPORTED);
    }
    assert_true(chunks_in_outage(t, side));
}

static void test_probe_resumes(void **state)
{
    (void)state;
    chunks_t t = s_table(MAPPER_OUTAGE_STREAK);
    s_start_outage(&t, PROTO_SIDE_TARGET);
    assert_false(chunks_probe_due(&t, PROTO_SIDE_TARGET));
    assert_false(chunks_probe_due(&t, PROTO_SIDE_SOURCE));
    s_time += MAPPER_OUTAGE_PROBE_MIN_S;
    assert_true(chunks_probe_due(&t, PROTO_SIDE_TARGET));
    assert_int_equal(chunks_probed(&t, PROTO_SIDE_TARGET, true),
                     CHUNKS_RESUMED);
    assert_false(chunks_in_outage(&t, PROTO_SIDE_NONE));
    assert_int_equal(t.outage[PROTO_SIDE_TARGET].streak, 0);
    assert_int_equal(t.unfinished, MAPPER_OUTAGE_STREAK);
    chunks_free(&t);
}

static void test_probe_backs_off(void **state)
{
    (void)state;
    chunks_t t = s_table(MAPPER_OUTAGE_STREAK);
    s_start_outage(&t, PROTO_SIDE_SOURCE);
    double wait = MAPPER_OUTAGE_PROBE_MIN_S;
    for (int i = 0; i < 8; i++) {
        s_time += wait;
        assert_true(chunks_probe_due(&t, PROTO_SIDE_SOURCE));
        assert_int_equal(chunks_probed(&t, PROTO_SIDE_SOURCE, false),
                         CHUNKS_WAITING);
        wait = wait * 2 > MAPPER_OUTAGE_PROBE_MAX_S ? MAPPER_OUTAGE_PROBE_MAX_S
                                                    : wait * 2;
        assert_true(t.outage[PROTO_SIDE_SOURCE].probe_wait == wait);
        assert_false(chunks_probe_due(&t, PROTO_SIDE_SOURCE));
    }
    assert_true(chunks_in_outage(&t, PROTO_SIDE_SOURCE));
    chunks_free(&t);
}

static void test_probe_gives_up(void **state)
{
    (void)state;
    chunks_t t = s_table(MAPPER_OUTAGE_STREAK + 2);
    s_start_outage(&t, PROTO_SIDE_SOURCE);
    size_t run = MAPPER_OUTAGE_STREAK, done = MAPPER_OUTAGE_STREAK + 1;
    (void)chunks_start(&t, run, 1);
    (void)chunks_start(&t, done, 2);
    chunks_done(&t, done, 1, 5, 5, 0);
    s_nended = 0;
    s_time += 31; /* past the 30 s outage timeout */
    assert_int_equal(chunks_probed(&t, PROTO_SIDE_SOURCE, false),
                     CHUNKS_GAVE_UP);
    for (size_t i = 0; i <= run; i++) {
        assert_int_equal(t.v[i].state, CHUNKS_FAILED);
        assert_string_equal(chunks_class(&t, i), "outage");
        assert_true(chunks_last_error(&t, i)->conn_bad);
        assert_int_equal(chunks_last_error(&t, i)->side, PROTO_SIDE_SOURCE);
        assert_non_null(
            strstr(chunks_last_error(&t, i)->message, "unreachable"));
    }
    assert_int_equal(t.v[done].state, CHUNKS_DONE);
    assert_int_equal(t.unfinished, 0);
    assert_int_equal(s_nended, run + 1);
    chunks_free(&t);
}

static void test_fail_running_and_ended(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    s_start(&t, 0, 7);
    chunks_fail(&t, 0, PROTO_SIDE_TARGET, NULL, "cannot record it");
    assert_int_equal(t.v[0].state, CHUNKS_FAILED);
    assert_int_equal(t.v[0].worker, -1);
    assert_null(chunks_class(&t, 0));
    assert_int_equal(chunks_last_error(&t, 0)->side, PROTO_SIDE_TARGET);
    assert_string_equal(chunks_last_error(&t, 0)->message, "cannot record it");
    assert_int_equal(t.unfinished, 1);
    chunks_fail(&t, 0, PROTO_SIDE_TARGET, NULL, "again"); /* no-op */
    assert_int_equal(t.unfinished, 1);
    assert_int_equal(s_nended, 1);
    s_start(&t, 1, 0);
    chunks_done(&t, 1, 1, 1, 1, 0);
    chunks_fail(&t, 1, PROTO_SIDE_NONE, NULL, "too late"); /* no-op */
    assert_int_equal(t.v[1].state, CHUNKS_DONE);
    chunks_free(&t);
}

static void test_fail_pending_only(void **state)
{
    (void)state;
    chunks_t t = s_table(3);
    s_start(&t, 0, 0);
    chunks_fail_pending(&t, "max-rejects", "not run");
    assert_int_equal(t.v[0].state, CHUNKS_RUNNING);
    assert_int_equal(t.v[1].state, CHUNKS_FAILED);
    assert_int_equal(t.v[2].state, CHUNKS_FAILED);
    assert_string_equal(chunks_class(&t, 2), "max-rejects");
    assert_int_equal(t.unfinished, 1);
    assert_int_equal(chunks_next(&t), -1);
    chunks_free(&t);
}

static void test_add_grows(void **state)
{
    (void)state;
    chunks_t t = s_table(0);
    for (int i = 0; i < 100; i++) {
        chunks_chunk_t *c = chunks_add(&t, i);
        assert_non_null(c);
        assert_int_equal(c->state, CHUNKS_PENDING);
        assert_int_equal(c->est_rows, i);
    }
    assert_int_equal(t.n, 100);
    assert_int_equal(t.unfinished, 100);
    assert_int_equal(chunks_next(&t), 0);
    chunks_free(&t);
}

static void test_resumed_is_skipped(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    chunks_resumed(&t, 0, 42, 1);
    assert_int_equal(t.v[0].state, CHUNKS_DONE);
    assert_int_equal(t.v[0].rows, 42);
    assert_int_equal(t.v[0].rejected, 1);
    assert_int_equal(t.unfinished, 1);
    assert_int_equal(chunks_next(&t), 1);
    chunks_free(&t);
}

/* A retry of an early chunk comes before fresh ones. */
static void test_retries_first(void **state)
{
    (void)state;
    chunks_t t = s_table(3);
    s_start(&t, 0, 0);
    (void)s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    s_time += 10;
    s_start(&t, 0, 0);
    assert_int_equal(chunks_next(&t), 1);
    chunks_free(&t);
}

/* Retries whose time has come start earliest time first, each once; a
 * chunk failed for good while it waits is not handed out. */
static void test_retry_queue_order(void **state)
{
    (void)state;
    chunks_t t = s_table(4);
    s_start(&t, 0, 0);
    s_start(&t, 1, 1);
    s_start(&t, 2, 2);
    (void)s_fail_with(&t, 1, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    s_time += 0.5;
    (void)s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    (void)s_fail_with(&t, 2, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    assert_int_equal(chunks_running(&t), 0);
    chunks_fail(&t, 2, PROTO_SIDE_NONE, "max-rejects", "not run");
    s_time += 10;
    assert_int_equal(chunks_next(&t), 1); /* due first */
    assert_int_equal(chunks_next(&t), 0);
    assert_int_equal(chunks_next(&t), 3); /* 2 failed: fresh ones next */
    assert_int_equal(chunks_next(&t), -1);
    chunks_free(&t);
}

/* A chunk's error is kept only once it failed, and dropped when it
 * commits after all. */
static void test_error_kept_only_for_failures(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    s_start(&t, 0, 0);
    s_start(&t, 1, 1);
    assert_null(chunks_last_error(&t, 0));
    assert_null(chunks_class(&t, 0));
    (void)s_fail_with(&t, 0, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    assert_non_null(chunks_last_error(&t, 0));
    assert_string_equal(chunks_last_error(&t, 0)->sqlstate, "40001");
    chunks_done(&t, 1, 1, 5, 50, 0);
    assert_null(chunks_last_error(&t, 1));
    s_time += 10;
    s_start(&t, 0, 0);
    chunks_done(&t, 0, 2, 5, 50, 0);
    assert_null(chunks_last_error(&t, 0));
    assert_int_equal(chunks_running(&t), 0);
    chunks_free(&t);
}

/* The ready ring keeps its order when it grows, also while wrapped. */
static void test_ready_ring_grows(void **state)
{
    (void)state;
    enum { N = 200, HALF = N / 2, TAKEN = 10 };
    chunks_t t = s_table(N);
    for (size_t i = 0; i < N; i++)
        s_start(&t, i, 0);
    for (size_t i = 0; i < HALF; i++)
        (void)s_fail_with(&t, i, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    s_time += 10;
    for (size_t i = 0; i < TAKEN; i++)
        assert_int_equal(chunks_next(&t), (ssize_t)i);
    for (size_t i = HALF; i < N; i++)
        (void)s_fail_with(&t, i, PROTO_SIDE_TARGET, "40001", CHUNKS_REPORTED);
    s_time += 10;
    for (size_t i = TAKEN; i < N; i++)
        assert_int_equal(chunks_next(&t), (ssize_t)i);
    assert_int_equal(chunks_next(&t), -1);
    chunks_free(&t);
}

/* A chunk handed out ahead is held (not started) until its worker gets to
 * it; then it runs with the attempt number it was given. */
static void test_ahead_runs(void **state)
{
    (void)state;
    chunks_t t = s_table(3);
    s_start(&t, 0, 0);
    assert_int_equal(chunks_next_ahead(&t), 1);
    assert_int_equal(chunks_start_ahead(&t, 1, 0), 1);
    assert_int_equal(t.v[1].state, CHUNKS_AHEAD);
    assert_int_equal(chunks_running(&t), 2); /* held: 0 runs, 1 ahead */
    s_time = 105;
    chunks_done(&t, 0, 1, 10, 10, 0);
    chunks_ahead_runs(&t, 1);
    assert_int_equal(t.v[1].state, CHUNKS_RUNNING);
    assert_true(t.v[1].first_start == 105); /* when it began, not sent */
    chunks_done(&t, 1, 1, 10, 10, 0);
    assert_int_equal(chunks_running(&t), 0);
    assert_int_equal(t.unfinished, 1);
    chunks_free(&t);
}

/* A chunk taken back from a worker that died before its turn is pending
 * again, first in line, its attempt not counted; from then on it is only
 * handed out to run at once. */
static void test_take_back(void **state)
{
    (void)state;
    chunks_t t = s_table(4);
    s_start(&t, 0, 0);
    assert_int_equal(chunks_next_ahead(&t), 1);
    assert_int_equal(chunks_start_ahead(&t, 1, 0), 1);
    chunks_take_back(&t, 1);
    assert_int_equal(t.v[1].state, CHUNKS_PENDING);
    assert_int_equal(t.v[1].attempts, 0);
    assert_int_equal(t.v[1].worker, -1);
    assert_int_equal(chunks_running(&t), 1);
    assert_int_equal(s_nended, 0);
    assert_int_equal(chunks_next_ahead(&t), -1); /* not ahead again */
    assert_int_equal(chunks_next(&t), 1);        /* first in line */
    assert_int_equal(chunks_start(&t, 1, 1), 1); /* its first attempt */
    assert_int_equal(chunks_next_ahead(&t), 2);
    chunks_take_back(&t, 0); /* not ahead: nothing happens */
    assert_int_equal(t.v[0].state, CHUNKS_RUNNING);
    chunks_free(&t);
}

/* Giving up on an outage fails the chunks held ahead too. */
static void test_gave_up_fails_ahead(void **state)
{
    (void)state;
    chunks_t t = s_table(2);
    s_start(&t, 0, 0);
    assert_int_equal(chunks_next_ahead(&t), 1);
    (void)chunks_start_ahead(&t, 1, 0);
    for (int i = 0; i < 3; i++) {
        pgutil_error_t *e = chunks_error(&t, 0);
        e->side = PROTO_SIDE_SOURCE;
        e->conn_bad = true;
        if (t.v[0].state == CHUNKS_RUNNING)
            (void)chunks_attempt_failed(&t, 0, CHUNKS_REPORTED);
        s_time += 100;
        if (chunks_next(&t) == 0) (void)chunks_start(&t, 0, 0);
    }
    assert_true(chunks_in_outage(&t, PROTO_SIDE_SOURCE));
    s_time += 100;
    assert_int_equal(chunks_probed(&t, PROTO_SIDE_SOURCE, false),
                     CHUNKS_GAVE_UP);
    assert_int_equal(t.v[1].state, CHUNKS_FAILED);
    assert_int_equal(t.unfinished, 0);
    assert_int_equal(chunks_running(&t), 0);
    chunks_free(&t);
}

/* The bound: a million planned chunks through the state machine,
 * with simulated workers (no database): every 50th first attempt fails
 * with a retryable error and runs again after its delay, every event goes
 * to a progress tracker too. The whole run costs less than
 * CPU_CLOCK_MILLION_MAX_S of CPU. */
#define PERF_CHUNKS    1000000
#define PERF_WORKERS   16
#define PERF_MAX_CPU_S CPU_CLOCK_MILLION_MAX_S

static void test_million_chunks_constant_cost(void **state)
{
    (void)state;
    double cpu0 = cpu_clock_s();
    progress_t *p = progress_new(PERF_CHUNKS, NULL, NULL, 1.0);
    assert_non_null(p);
    chunks_t t = s_table(PERF_CHUNKS);
    t.on_end = NULL;
    t.progress = p;
    /* each worker runs one chunk and holds the next ahead, as the
     * dispatcher hands them out */
    ssize_t run[PERF_WORKERS], ahead[PERF_WORKERS];
    int attempt[PERF_WORKERS];
    size_t retried = 0, done = 0;
    for (int w = 0; w < PERF_WORKERS; w++)
        run[w] = ahead[w] = -1;
    while (t.unfinished > 0) {
        bool busy = false;
        for (int w = 0; w < PERF_WORKERS; w++) {
            if (run[w] < 0 && (run[w] = chunks_next(&t)) >= 0)
                attempt[w] = chunks_start(&t, (size_t)run[w], w);
            if (run[w] >= 0 && ahead[w] < 0 &&
                (ahead[w] = chunks_next_ahead(&t)) >= 0)
                (void)chunks_start_ahead(&t, (size_t)ahead[w], w);
            if (run[w] < 0) continue;
            size_t ci = (size_t)run[w];
            busy = true;
            if (attempt[w] == 1 && ci % 50 == 0) {
                assert_int_equal(s_fail_with(&t, ci, PROTO_SIDE_TARGET, "40001",
                                             CHUNKS_REPORTED),
                                 CHUNKS_RETRY);
                retried++;
            } else {
                chunks_done(&t, ci, attempt[w], 100, 1000, 0);
                done++;
            }
            run[w] = ahead[w];
            ahead[w] = -1;
            if (run[w] >= 0) {
                chunks_ahead_runs(&t, (size_t)run[w]);
                attempt[w] = t.v[run[w]].attempts;
            }
        }
        s_time += busy ? 0.001 : 1.0; /* idle: wait for the retries */
    }
    double cpu = cpu_clock_s() - cpu0;
    assert_int_equal(done, PERF_CHUNKS);
    assert_int_equal(retried, PERF_CHUNKS / 50);
    assert_int_equal(chunks_running(&t), 0);
    for (size_t i = 0; i < t.n; i++)
        assert_int_equal(t.v[i].state, CHUNKS_DONE);
    print_message("%d chunks: %.3f s of CPU (bound %.1f s)\n", PERF_CHUNKS, cpu,
                  PERF_MAX_CPU_S);
    assert_true(cpu < PERF_MAX_CPU_S);
    chunks_free(&t);
    progress_destroy(&p);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_all_pending),
        cmocka_unit_test(test_next_in_order_then_none),
        cmocka_unit_test(test_start_counts_attempt_and_first_start),
        cmocka_unit_test(test_done),
        cmocka_unit_test(test_retry_waits_for_its_time),
        cmocka_unit_test(test_permanent_fails_for_good),
        cmocka_unit_test(test_exhausted),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_decide_for_the_reader),
        cmocka_unit_test(test_outage_pauses),
        cmocka_unit_test(test_crash_is_no_outage),
        cmocka_unit_test(test_probe_resumes),
        cmocka_unit_test(test_probe_backs_off),
        cmocka_unit_test(test_probe_gives_up),
        cmocka_unit_test(test_fail_running_and_ended),
        cmocka_unit_test(test_fail_pending_only),
        cmocka_unit_test(test_add_grows),
        cmocka_unit_test(test_resumed_is_skipped),
        cmocka_unit_test(test_retries_first),
        cmocka_unit_test(test_retry_queue_order),
        cmocka_unit_test(test_error_kept_only_for_failures),
        cmocka_unit_test(test_ready_ring_grows),
        cmocka_unit_test(test_ahead_runs),
        cmocka_unit_test(test_take_back),
        cmocka_unit_test(test_gave_up_fails_ahead),
        cmocka_unit_test(test_million_chunks_constant_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
