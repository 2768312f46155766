/* tests/unit/test_progress.c - unit tests for coordinator/progress.c: counting,
 * callback throttling, rate and ETA on a simulated job (injected clock, no
 * sleeping), thread safety and the formatters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "log.h"
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* An injected clock: whatever the test says it is. */
typedef struct {
    double now; /* seconds */
} fake_clock_t;

static double fake_clock(void *user)
{
    return ((fake_clock_t *)user)->now;
}

/* Records what the callback saw. */
typedef struct {
    int calls;                     /* times called */
    mapper_progress_snapshot last; /* last snapshot passed */
} calls_t;

static void count_calls(const mapper_progress_snapshot *snap, void *user)
{
    calls_t *calls = user;
    calls->calls++;
    calls->last = *snap;
}

static progress_t *new_tracker(int64_t total, fake_clock_t *clock,
                               progress_callback_fn cb, void *user,
                               double interval)
{
    progress_t *p = progress_new(total, cb, user, interval);
    assert_non_null(p);
    progress_set_clock(p, fake_clock, clock);
    return p;
}

static void test_new_destroy(void **state)
{
    (void)state;
    assert_null(progress_new(-1, NULL, NULL, 0));
    progress_t *p = progress_new(10, NULL, NULL, 0);
    assert_non_null(p);
    assert_true(progress_ok(p));
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.total_chunks, 10);
    assert_false(s.eta_known);
    assert_true(s.estimated_remaining_time < 0);
    progress_destroy(&p);
    assert_null(p);
    progress_destroy(&p);
    progress_destroy(NULL);
}

static void test_snapshot_arithmetic(void **state)
{
    (void)state;
    fake_clock_t clock = {100.0};
    progress_t *p = new_tracker(4, &clock, NULL, NULL, 0);
    progress_set_rows_total_estimate(p, 1000);
    progress_set_workers(p, 2);

    clock.now = 101.0;
    progress_chunk_started(p, 0, 1);
    progress_chunk_started(p, 1, 1);
    progress_chunk_rows(p, 0, 1, 100, 1000);
    progress_chunk_rows(p, 1, 1, 50, 500);
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.chunks_in_progress, 2);
    assert_int_equal(s.workers_busy, 2);
    assert_int_equal(s.workers, 2);
    assert_int_equal(s.rows_in_flight, 150);
    assert_int_equal(s.total_rows_successful, 0);
    assert_int_equal(s.total_rows_processed, 0);
    assert_int_equal(s.bytes_processed, 0);
    assert_true(fabs(s.progress_percentage - 15.0) < 1e-9);
    assert_true(fabs(s.elapsed_time - 1.0) < 1e-9);

    progress_chunk_committed(p, 0, 1, 250, 2500);
    s = progress_snapshot(p);
    assert_int_equal(s.completed_chunks, 1);
    assert_int_equal(s.total_rows_successful, 250);
    assert_int_equal(s.total_rows_processed, 250);
    assert_int_equal(s.bytes_processed, 2500);
    assert_int_equal(s.rows_in_flight, 50);
    assert_int_equal(s.chunks_in_progress, 1);
    assert_true(fabs(s.progress_percentage - 30.0) < 1e-9);

    /* Failed for good with 100 rows known: processed, not successful. */
    progress_chunk_failed(p, 2, 100);
    s = progress_snapshot(p);
    assert_int_equal(s.failed_chunks, 1);
    assert_int_equal(s.total_rows_failed, 100);
    assert_int_equal(s.total_rows_processed, 350);
    assert_int_equal(s.total_rows_successful, 250);

    /* Rows beyond the estimate: never 100 % while a chunk is left. */
    progress_chunk_committed(p, 1, 1, 700, 7000);
    s = progress_snapshot(p);
    assert_int_equal(s.total_rows_processed, 1050);
    assert_true(s.progress_percentage < 100.0);
    assert_true(s.progress_percentage >= 99.0);

    /* A chunk counted done without a start (--resume) completes the job. */
    progress_chunk_committed(p, 3, 0, 10, 100);
    s = progress_snapshot(p);
    assert_int_equal(s.completed_chunks, 3);
    assert_int_equal(s.failed_chunks, 1);
    assert_int_equal(s.chunks_in_progress, 0);
    assert_int_equal(s.rows_in_flight, 0);
    assert_int_equal(s.total_rows_successful, 960);
    assert_true(s.progress_percentage == 100.0);
    assert_true(s.eta_known);
    assert_true(s.estimated_remaining_time == 0.0);
    progress_destroy(&p);
}

static void test_percentage_without_estimate(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(0, &clock, NULL, NULL, 0);
    progress_chunk_started(p, 0, 1);
    progress_chunk_committed(p, 0, 1, 10, 10);
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.total_chunks, 0); /* not planned yet */
    assert_true(s.progress_percentage == 0.0);

    progress_set_total_chunks(p, 4);
    s = progress_snapshot(p);
    assert_int_equal(s.total_chunks, 4);
    assert_true(fabs(s.progress_percentage - 25.0) < 1e-9);
    progress_destroy(&p);
}

static void test_callback_throttle(void **state)
{
    (void)state;
    fake_clock_t clock = {10.0};
    calls_t calls = {0};
    progress_t *p = new_tracker(2, &clock, count_calls, &calls, 2.0);

    double quiet[] = {10.0, 10.5, 11.9};
    for (size_t i = 0; i < sizeof quiet / sizeof quiet[0]; i++) {
        clock.now = quiet[i];
        progress_tick(p);
    }
    assert_int_equal(calls.calls, 0);

    /* Events alone never call back. */
    progress_chunk_started(p, 0, 1);
    clock.now = 12.5;
    progress_chunk_rows(p, 0, 1, 10, 10);
    assert_int_equal(calls.calls, 0);

    progress_tick(p); /* 2.5 s since start */
    assert_int_equal(calls.calls, 1);
    assert_true(fabs(calls.last.elapsed_time - 2.5) < 1e-9);
    assert_int_equal(calls.last.rows_in_flight, 10);

    clock.now = 13.0;
    progress_tick(p);
    clock.now = 14.4;
    progress_tick(p);
    assert_int_equal(calls.calls, 1);
    clock.now = 14.5;
    progress_tick(p);
    assert_int_equal(calls.calls, 2);

    /* The final call comes even right after a periodic one. */
    clock.now = 14.6;
    progress_chunk_committed(p, 0, 1, 20, 20);
    progress_finish(p);
    assert_int_equal(calls.calls, 3);
    assert_int_equal(calls.last.total_rows_successful, 20);
    assert_true(fabs(calls.last.elapsed_time - 4.6) < 1e-9);
    assert_false(calls.last.eta_known); /* stopped with a chunk left */

    /* Then nothing more, and the elapsed time is frozen. */
    clock.now = 30.0;
    progress_tick(p);
    progress_finish(p);
    assert_int_equal(calls.calls, 3);
    assert_true(fabs(progress_snapshot(p).elapsed_time - 4.6) < 1e-9);
    progress_destroy(&p);
}

static void test_callback_default_interval(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    calls_t calls = {0};
    progress_t *p = new_tracker(1, &clock, count_calls, &calls, 0);
    clock.now = PROGRESS_DEFAULT_UPDATE_INTERVAL_S - 0.01;
    progress_tick(p);
    assert_int_equal(calls.calls, 0);
    clock.now = PROGRESS_DEFAULT_UPDATE_INTERVAL_S;
    progress_tick(p);
    assert_int_equal(calls.calls, 1);
    progress_destroy(&p);
}

/* A simulated job: SIM_WORKERS workers copy SIM_CHUNKS chunks of uneven
 * size at SIM_RATE rows/s each, reporting every SIM_STEP seconds. */
#define SIM_WORKERS       4
#define SIM_CHUNKS        40
#define SIM_RATE          10000.0
#define SIM_STEP          0.1
#define SIM_MAX_STEPS     2000
#define SIM_BYTES_PER_ROW 100

typedef struct {
    double t;       /* clock */
    double pct;     /* progress_percentage */
    bool eta_known; /* snapshot's eta_known */
    double eta;     /* snapshot's ETA */
} sim_point_t;

static sim_point_t s_points[SIM_MAX_STEPS];

static void test_eta_simulated_job(void **state)
{
    (void)state;
    int64_t size[SIM_CHUNKS], total = 0;
    uint32_t seed = 12345;
    for (int i = 0; i < SIM_CHUNKS; i++) {
        seed = seed * 1103515245u + 12345u;
        size[i] = 5000 + (int64_t)((seed >> 8) % 70000); /* 5k..75k rows */
        total += size[i];
    }
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(SIM_CHUNKS, &clock, NULL, NULL, 0);
    progress_set_rows_total_estimate(p, total);
    progress_set_workers(p, SIM_WORKERS);

    int64_t chunk[SIM_WORKERS], rows[SIM_WORKERS];
    int next = 0, done = 0, npoints = 0;
    for (int w = 0; w < SIM_WORKERS; w++)
        chunk[w] = -1;
    while (done < SIM_CHUNKS && npoints < SIM_MAX_STEPS) {
        for (int w = 0; w < SIM_WORKERS; w++) {
            if (chunk[w] >= 0 || next >= SIM_CHUNKS) continue;
            chunk[w] = next++;
            rows[w] = 0;
            progress_chunk_started(p, chunk[w], 1);
        }
        progress_tick(p);
        mapper_progress_snapshot s = progress_snapshot(p);
        s_points[npoints++] =
            (sim_point_t){clock.now, s.progress_percentage, s.eta_known,
                          s.estimated_remaining_time};
        clock.now += SIM_STEP;
        for (int w = 0; w < SIM_WORKERS; w++) {
            if (chunk[w] < 0) continue;
            rows[w] += (int64_t)(SIM_RATE * SIM_STEP);
            if (rows[w] >= size[chunk[w]]) {
                progress_chunk_committed(p, chunk[w], 1, size[chunk[w]],
                                         size[chunk[w]] * SIM_BYTES_PER_ROW);
                chunk[w] = -1;
                done++;
            } else {
                progress_chunk_rows(p, chunk[w], 1, rows[w],
                                    rows[w] * SIM_BYTES_PER_ROW);
            }
        }
    }
    assert_int_equal(done, SIM_CHUNKS);
    double t_end = clock.now;
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_true(s.progress_percentage == 100.0);
    assert_int_equal(s.total_rows_successful, total);
    assert_int_equal(s.bytes_processed, total * SIM_BYTES_PER_ROW);

    /* Unknown at the start; within 25 % of the truth from 20 % done on,
     * but for the last 15 % of the time: the tail is one uneven chunk that
     * no estimate without chunk sizes can foresee. */
    assert_false(s_points[0].eta_known);
    assert_false(s_points[1].eta_known);
    int checked = 0;
    for (int i = 0; i < npoints; i++) {
        double truth = t_end - s_points[i].t;
        if (s_points[i].pct < 20.0 || truth < 0.15 * t_end) continue;
        assert_true(s_points[i].eta_known);
        double err = fabs(s_points[i].eta - truth) / truth;
        if (err > 0.25)
            fail_msg("t=%.1f pct=%.1f eta=%.2f truth=%.2f", s_points[i].t,
                     s_points[i].pct, s_points[i].eta, truth);
        checked++;
    }
    assert_true(checked > 50);
    progress_destroy(&p);
}

/* Two chunks left for four workers: the tail runs on two, then one. */
static void test_eta_tail(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(2, &clock, NULL, NULL, 0);
    progress_set_workers(p, 4);
    progress_set_rows_total_estimate(p, 30000); /* 20,000 + 10,000 rows */
    progress_chunk_started(p, 0, 1);
    progress_chunk_started(p, 1, 1);
    for (int i = 1; i <= 50; i++) { /* 1,000 rows/s each, for 5 s */
        clock.now = i * 0.1;
        progress_chunk_rows(p, 0, 1, i * 100, 0);
        progress_chunk_rows(p, 1, 1, i * 100, 0);
        progress_tick(p);
    }
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.rows_in_flight, 10000);
    assert_true(fabs(s.rows_per_second - 2000.0) < 100.0);
    assert_true(s.eta_known);
    /* The job ends when the larger chunk does: 15,000 rows at 1,000/s.
     * Four workers on 20,000 rows would say 5 s; two, 10 s. */
    double truth = 15.0;
    if (fabs(s.estimated_remaining_time - truth) > 0.25 * truth)
        fail_msg("eta %.2f, truth %.2f", s.estimated_remaining_time, truth);
    progress_destroy(&p);
}

static void test_failed_attempt_drops_in_flight(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(2, &clock, NULL, NULL, 0);
    progress_chunk_started(p, 7, 1);
    progress_chunk_rows(p, 7, 1, 500, 5000);
    assert_int_equal(progress_snapshot(p).rows_in_flight, 500);

    progress_chunk_attempt_failed(p, 7, 1, true);
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.rows_in_flight, 0);
    assert_int_equal(s.total_rows_successful, 0);
    assert_int_equal(s.total_rows_processed, 0);
    assert_int_equal(s.chunks_in_progress, 0);
    assert_int_equal(s.retries, 1);

    /* Late reports of the failed attempt are ignored. */
    progress_chunk_rows(p, 7, 1, 800, 8000);
    progress_chunk_started(p, 7, 2);
    progress_chunk_rows(p, 7, 1, 900, 9000);
    progress_chunk_rows(p, 7, 2, 300, 3000);
    progress_chunk_rows(p, 7, 2, 200, 2000); /* smaller: ignored */
    progress_chunk_started(p, 7, 2);         /* duplicate: ignored */
    s = progress_snapshot(p);
    assert_int_equal(s.rows_in_flight, 300);
    assert_int_equal(s.chunks_in_progress, 1);
    progress_chunk_committed(p, 7, 1, 999, 999); /* stale attempt */
    progress_chunk_committed(p, 7, 2, 600, 6000);
    progress_chunk_committed(p, 7, 2, 600, 6000); /* duplicate */
    s = progress_snapshot(p);
    assert_int_equal(s.rows_in_flight, 0);
    assert_int_equal(s.total_rows_successful, 600);
    assert_int_equal(s.bytes_processed, 6000);
    assert_int_equal(s.completed_chunks, 1);

    /* A last attempt that fails for good: in-flight dropped, rows unknown. */
    progress_chunk_started(p, 8, 4);
    progress_chunk_rows(p, 8, 4, 50, 50);
    progress_chunk_attempt_failed(p, 8, 4, false);
    progress_chunk_failed(p, 8, -1);
    s = progress_snapshot(p);
    assert_int_equal(s.retries, 1);
    assert_int_equal(s.failed_chunks, 1);
    assert_int_equal(s.total_rows_failed, 0);
    assert_int_equal(s.rows_in_flight, 0);
    assert_int_equal(s.total_rows_processed, 600);
    assert_true(s.progress_percentage == 100.0);
    progress_destroy(&p);
}

static void test_counters_monotone(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    enum { CHUNKS = 50, STEPS = 5000 };
    progress_t *p = new_tracker(CHUNKS, &clock, NULL, NULL, 0.5);
    progress_set_rows_total_estimate(p, CHUNKS * 1000);
    progress_set_workers(p, 4);
    int32_t attempt[CHUNKS] = {0};
    int64_t rows[CHUNKS] = {0};
    mapper_progress_snapshot prev = progress_snapshot(p);
    uint32_t seed = 7;
    for (int i = 0; i < STEPS; i++) {
        seed = seed * 1103515245u + 12345u;
        int c = (int)((seed >> 8) % CHUNKS);
        int op = (int)((seed >> 20) % 6);
        clock.now += 0.05;
        switch (op) {
        case 0:
            progress_chunk_started(p, c, ++attempt[c]);
            rows[c] = 0;
            break;
        case 1:
        case 2:
            rows[c] += 100;
            progress_chunk_rows(p, c, attempt[c], rows[c], rows[c] * 10);
            break;
        case 3:
            progress_chunk_attempt_failed(p, c, attempt[c], true);
            break;
        case 4:
            progress_chunk_committed(p, c, attempt[c], rows[c], rows[c] * 10);
            break;
        default:
            if (seed % 7 == 0) progress_chunk_failed(p, c, rows[c]);
            progress_tick(p);
            break;
        }
        mapper_progress_snapshot s = progress_snapshot(p);
        assert_true(s.total_rows_successful >= prev.total_rows_successful);
        assert_true(s.total_rows_processed >= prev.total_rows_processed);
        assert_true(s.total_rows_failed >= prev.total_rows_failed);
        assert_true(s.bytes_processed >= prev.bytes_processed);
        assert_true(s.completed_chunks >= prev.completed_chunks);
        assert_true(s.failed_chunks >= prev.failed_chunks);
        assert_true(s.retries >= prev.retries);
        assert_true(s.rows_in_flight >= 0);
        assert_true(s.progress_percentage >= 0.0);
        assert_true(s.progress_percentage <= 100.0);
        assert_true(s.completed_chunks + s.failed_chunks +
                        s.chunks_in_progress <=
                    CHUNKS);
        assert_int_equal(s.total_rows_processed,
                         s.total_rows_successful + s.total_rows_failed);
        prev = s;
    }
    assert_true(prev.completed_chunks > 0);
    assert_true(prev.retries > 0);
    progress_destroy(&p);
}

/* Absurd figures from a worker saturate instead of overflowing. */
static void test_huge_figures_saturate(void **state)
{
    (void)state;
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(3, &clock, NULL, NULL, 0);
    progress_set_rows_total_estimate(p, INT64_MAX);
    progress_chunk_started(p, 0, 1);
    progress_chunk_rows(p, 0, 1, INT64_MAX, INT64_MAX);
    progress_chunk_committed(p, 0, 1, INT64_MAX, INT64_MAX);
    progress_chunk_committed(p, 1, 1, INT64_MAX, INT64_MAX);
    progress_chunk_failed(p, 2, INT64_MAX);
    progress_chunk_rows(p, 3, 1, -5, -5); /* unknown chunk: ignored */
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_true(s.total_rows_successful == INT64_MAX);
    assert_true(s.total_rows_processed == INT64_MAX);
    assert_true(s.bytes_processed == INT64_MAX);
    assert_true(s.progress_percentage == 100.0);
    progress_destroy(&p);
}

/* Ids anywhere in int64, enough of them to grow the table many times. */
static void test_sparse_chunk_ids(void **state)
{
    (void)state;
    enum { N = 5000 };
    fake_clock_t clock = {0.0};
    progress_t *p = new_tracker(N + 3, &clock, NULL, NULL, 0);
    progress_chunk_started(p, INT64_MIN, 1);
    progress_chunk_started(p, INT64_MAX, 1);
    progress_chunk_started(p, -1, 1);
    for (int64_t i = 0; i < N; i++)
        progress_chunk_started(p, i << 32, 1);
    for (int64_t i = 0; i < N; i++)
        progress_chunk_committed(p, i << 32, 1, 2, 3);
    progress_chunk_committed(p, INT64_MIN, 1, 1, 1);
    progress_chunk_committed(p, INT64_MAX, 1, 1, 1);
    progress_chunk_committed(p, -1, 1, 1, 1);
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.completed_chunks, N + 3);
    assert_int_equal(s.total_rows_successful, 2 * N + 3);
    assert_int_equal(s.bytes_processed, 3 * N + 3);
    assert_int_equal(s.chunks_in_progress, 0);
    assert_true(progress_ok(p));
    progress_destroy(&p);
}

/* The mode and run are shown as set; a phase change (the index rebuild,
 * the swap) is shown at the next tick, whatever the interval; the swap's
 * seconds reach the final call. */
static void test_mode_and_phase(void **state)
{
    (void)state;
    fake_clock_t clock = {1.0};
    calls_t calls = {0};
    progress_t *p = new_tracker(1, &clock, count_calls, &calls, 10.0);
    mapper_progress_snapshot s = progress_snapshot(p);
    assert_int_equal(s.mode, MAPPER_MODE_APPEND);
    assert_int_equal(s.run, 0);
    assert_int_equal(s.phase, MAPPER_PHASE_COPY);
    progress_set_mode(p, MAPPER_MODE_REPLACE, 3);
    progress_chunk_started(p, 0, 1);
    progress_chunk_committed(p, 0, 1, 5, 5);
    clock.now = 1.5;
    progress_tick(p);
    assert_int_equal(calls.calls, 0);

    progress_set_phase(p, MAPPER_PHASE_SWAP);
    progress_tick(p);
    assert_int_equal(calls.calls, 1);
    assert_int_equal(calls.last.mode, MAPPER_MODE_REPLACE);
    assert_int_equal(calls.last.run, 3);
    assert_int_equal(calls.last.phase, MAPPER_PHASE_SWAP);
    assert_true(calls.last.swap_s == 0.0);
    progress_tick(p); /* shown once: the interval applies again */
    assert_int_equal(calls.calls, 1);

    progress_set_swap(p, 0.25);
    progress_finish(p);
    assert_int_equal(calls.calls, 2);
    assert_true(fabs(calls.last.swap_s - 0.25) < 1e-9);
    assert_int_equal(calls.last.phase, MAPPER_PHASE_SWAP);
    progress_destroy(&p);

    p = new_tracker(1, &clock, count_calls, &calls, 10.0);
    progress_set_mode(p, MAPPER_MODE_UPSERT, -2);
    progress_set_indexes(p, 0, 4);
    progress_tick(p);
    assert_int_equal(calls.calls, 3);
    assert_int_equal(calls.last.phase, MAPPER_PHASE_INDEXES);
    assert_int_equal(calls.last.run, 0);
    progress_set_indexes(p, 1, 4); /* the same phase: not shown at once */
    progress_tick(p);
    assert_int_equal(calls.calls, 3);
    progress_destroy(&p);
}

int main(void)
{
    log_init("test", LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_snapshot_arithmetic),
        cmocka_unit_test(test_percentage_without_estimate),
        cmocka_unit_test(test_callback_throttle),
        cmocka_unit_test(test_callback_default_interval),
        cmocka_unit_test(test_eta_simulated_job),
        cmocka_unit_test(test_eta_tail),
        cmocka_unit_test(test_failed_attempt_drops_in_flight),
        cmocka_unit_test(test_counters_monotone),
        cmocka_unit_test(test_huge_figures_saturate),
        cmocka_unit_test(test_sparse_chunk_ids),
        cmocka_unit_test(test_mode_and_phase),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
