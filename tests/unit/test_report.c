/* tests/unit/test_report.c - unit tests for coordinator/report.c: the
 * spec's progress_callback behind the tracker (injected clock, no
 * sleeping): at most once per progress_interval, once more at the end,
 * whatever the progress mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mapper.h"
#include "progress.h"
#include "report.h"

/* An injected clock: whatever the test says it is. */
typedef struct {
    double now; /* seconds */
} fake_clock_t;

static double fake_clock(void *user)
{
    return ((fake_clock_t *)user)->now;
}

/* What the embedder's callback saw. */
typedef struct {
    int calls;                     /* times called */
    double elapsed[16];            /* elapsed_time of each call */
    mapper_progress_snapshot last; /* the last snapshot */
} seen_t;

static void on_progress(const mapper_progress_snapshot *snap, void *user)
{
    seen_t *seen = user;
    if (seen->calls < 16) seen->elapsed[seen->calls] = snap->elapsed_time;
    seen->calls++;
    seen->last = *snap;
}

/* A job of 2 chunks with a report for mode and interval; the clock runs
 * in steps of 0.25 s up to `until`, ticking at each step. */
static void s_run(mapper_progress_mode mode, double interval, double until,
                  seen_t *seen)
{
    mapper_job_spec spec;
    mapper_job_spec_init(&spec);
    spec.progress = mode;
    spec.progress_interval = interval;
    spec.progress_callback = on_progress;
    spec.progress_user = seen;
    spec.progress_file = "/dev/null"; /* a bar or lines: not on stderr */
    char err[128];
    report_t *report = report_new(&spec, err, sizeof err);
    assert_non_null(report);
    progress_t *p =
        progress_new(2, report_callback, report, report_interval(report));
    assert_non_null(p);
    fake_clock_t clock = {0};
    progress_set_clock(p, fake_clock, &clock);
    progress_chunk_started(p, 0, 1);
    progress_chunk_started(p, 1, 1);
    for (int step = 1; step * 0.25 <= until; step++) {
        clock.now = step * 0.25;
        if (step == 4) progress_chunk_committed(p, 0, 1, 100, 1000);
        progress_tick(p);
    }
    progress_chunk_committed(p, 1, 1, 50, 500);
    clock.now += 0.1;
    report_last(report);
    progress_finish(p);
    clock.now += 5; /* frozen: later reads do not move */
    progress_tick(p);
    progress_destroy(&p);
    report_destroy(&report);
}

/* Progress output off: the callback still runs, every full interval, and
 * once more at the end with the final figures. */
static void test_callback_without_output(void **state)
{
    (void)state;
    seen_t seen = {0};
    s_run(MAPPER_PROGRESS_NONE, 1.0, 3.0, &seen);
    assert_int_equal(seen.calls, 4); /* 1.0, 2.0, 3.0, the end */
    assert_true(seen.elapsed[0] == 1.0);
    assert_true(seen.elapsed[1] == 2.0);
    assert_true(seen.elapsed[2] == 3.0);
    assert_true(seen.elapsed[3] > 3.0 && seen.elapsed[3] < 3.2);
    assert_true(seen.last.progress_percentage == 100.0);
    assert_int_equal(seen.last.total_rows_successful, 150);
    assert_int_equal(seen.last.completed_chunks, 2);
}

/* The bar is redrawn every 0.1 s, so the tracker fires at every tick;
 * the callback still runs once per its own interval (1.5 s). */
static void test_callback_throttled_under_the_bar(void **state)
{
    (void)state;
    seen_t seen = {0};
    s_run(MAPPER_PROGRESS_BAR, 1.5, 4.0, &seen);
    assert_int_equal(seen.calls, 3); /* 1.5, 3.0, the end */
    assert_true(seen.elapsed[0] == 1.5);
    assert_true(seen.elapsed[1] == 3.0);
    for (int i = 1; i < seen.calls - 1; i++)
        assert_true(seen.elapsed[i] - seen.elapsed[i - 1] >= 1.5);
}

/* A job shorter than one interval: one call, the final one. */
static void test_short_job_one_final_call(void **state)
{
    (void)state;
    seen_t seen = {0};
    s_run(MAPPER_PROGRESS_NONE, 10.0, 2.0, &seen);
    assert_int_equal(seen.calls, 1);
    assert_true(seen.last.progress_percentage == 100.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_callback_without_output),
        cmocka_unit_test(test_callback_throttled_under_the_bar),
        cmocka_unit_test(test_short_job_one_final_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
