/* tests/unit/test_report.c - unit tests for coordinator/report.c: the
 * spec's progress_callback behind the tracker (injected clock, no
 * sleeping): at most once per progress_interval, once more at the end,
 * whatever the progress mode; and the formatters of its lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

/* A snapshot with every field set, for the formatters. */
static mapper_progress_snapshot sample_snapshot(void)
{
    return (mapper_progress_snapshot){
        .total_chunks = 10,
        .completed_chunks = 3,
        .failed_chunks = 0,
        .chunks_in_progress = 4,
        .total_rows_processed = 1150000,
        .total_rows_successful = 1150000,
        .total_rows_failed = 0,
        .elapsed_time = 83.0,
        .estimated_remaining_time = PROGRESS_ETA_UNKNOWN,
        .eta_known = false,
        .progress_percentage = 42.0,
        .rows_total_estimate = 2900000,
        .rows_in_flight = 68000,
        .bytes_processed = 123456789,
        .rows_per_second = 350000.0,
        .bytes_per_second = 12300000.0,
        .retries = 0,
        .workers = 4,
        .workers_busy = 4,
    };
}

static void test_format_json(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_json(&s, buf, sizeof buf));
    size_t len = strlen(buf);
    assert_true(len > 2);
    assert_int_equal(buf[0], '{');
    assert_int_equal(buf[len - 1], '}');
    assert_null(strchr(buf, '\n'));
    static const char *const keys[] = {
        "\"total_chunks\":10,",
        "\"completed_chunks\":3,",
        "\"failed_chunks\":0,",
        "\"chunks_in_progress\":4,",
        "\"total_rows_processed\":1150000,",
        "\"total_rows_successful\":1150000,",
        "\"total_rows_failed\":0,",
        "\"elapsed_time\":83.000,",
        "\"estimated_remaining_time\":null,",
        "\"eta_known\":false,",
        "\"progress_percentage\":42.000,",
        "\"rows_total_estimate\":2900000,",
        "\"rows_in_flight\":68000,",
        "\"bytes_processed\":123456789,",
        "\"rows_per_second\":350000.000,",
        "\"bytes_per_second\":12300000.000,",
        "\"retries\":0,",
        "\"workers\":4,",
        "\"workers_busy\":4,",
        "\"indexes_total\":0,",
        "\"indexes_built\":0,",
        "\"mode\":\"append\",",
        "\"run\":0,",
        "\"phase\":\"copy\",",
        "\"swap_s\":0.000}",
    };
    size_t nkeys = sizeof keys / sizeof keys[0];
    for (size_t i = 0; i < nkeys; i++)
        if (!strstr(buf, keys[i])) fail_msg("missing %s in %s", keys[i], buf);
    /* Exactly these keys: one colon per key. */
    size_t colons = 0;
    for (const char *c = buf; *c; c++)
        colons += *c == ':';
    assert_int_equal(colons, nkeys);

    s.eta_known = true;
    s.estimated_remaining_time = 130.5;
    assert_true(report_format_json(&s, buf, sizeof buf));
    assert_non_null(strstr(buf, "\"estimated_remaining_time\":130.500,"));
    assert_non_null(strstr(buf, "\"eta_known\":true,"));

    char small[16];
    assert_false(report_format_json(&s, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_false(report_format_json(&s, NULL, 0));
}

static void test_format_log(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_log(&s, "My Job", buf, sizeof buf));
    assert_non_null(strstr(buf, "job=\"My Job\" pct=42.0 chunks=3/10 "));
    assert_non_null(strstr(buf, " rows=1150000 "));
    assert_non_null(strstr(buf, " rows_in_flight=68000 "));
    assert_non_null(strstr(buf, " rows_per_s=350000 "));
    assert_non_null(strstr(buf, " elapsed_s=83.0 "));
    assert_non_null(strstr(buf, " eta_s=unknown "));
    assert_non_null(strstr(buf, " workers=4/4"));
    assert_null(strchr(buf, '\n'));

    s.eta_known = true;
    s.estimated_remaining_time = 12.25;
    assert_true(report_format_log(&s, "events", buf, sizeof buf));
    assert_non_null(strstr(buf, "job=\"events\" pct="));
    assert_non_null(strstr(buf, " eta_s=12.2"));
    assert_true(report_format_log(&s, "a\"b\\c\nd", buf, sizeof buf));
    assert_non_null(strstr(buf, "job=\"a\\\"b\\\\c?d\" "));
    assert_true(report_format_log(&s, NULL, buf, sizeof buf));
    assert_non_null(strstr(buf, "job=\"job\" "));
}

static void test_format_bar(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, "[####------]  42.0% "));
    assert_non_null(strstr(buf, " 1.2M/2.9M rows "));
    assert_non_null(strstr(buf, " 350k rows/s "));
    assert_non_null(strstr(buf, " 12.3 MB/s "));
    assert_non_null(strstr(buf, " 01:23 eta --:-- "));
    assert_non_null(strstr(buf, " chunks 3/10 busy 4/4"));
    assert_null(strstr(buf, "retries"));
    assert_null(strstr(buf, "failed"));
    assert_null(strchr(buf, '\n'));

    s.retries = 2;
    s.failed_chunks = 1;
    s.eta_known = true;
    s.estimated_remaining_time = 3725.0;
    s.progress_percentage = 100.0;
    assert_true(report_format_bar(&s, 0, buf, sizeof buf));
    char full[PROGRESS_BAR_DEFAULT_WIDTH + 3];
    full[0] = '[';
    memset(full + 1, PROGRESS_BAR_FILL, PROGRESS_BAR_DEFAULT_WIDTH);
    full[PROGRESS_BAR_DEFAULT_WIDTH + 1] = ']';
    full[PROGRESS_BAR_DEFAULT_WIDTH + 2] = '\0';
    assert_non_null(strstr(buf, full));
    assert_non_null(strstr(buf, "100.0%"));
    assert_non_null(strstr(buf, " eta 1:02:05 "));
    assert_non_null(strstr(buf, " retries 2 failed 1"));

    char small[8];
    assert_false(report_format_bar(&s, 10, small, sizeof small));
}

/* Saturated figures (INT64_MAX everywhere) still fit a line. */
static void test_format_huge(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    s.total_rows_processed = s.total_rows_successful = INT64_MAX;
    s.bytes_processed = s.rows_total_estimate = INT64_MAX;
    s.progress_percentage = 100.0;
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_json(&s, buf, sizeof buf));
    assert_true(report_format_bar(&s, PROGRESS_BAR_MAX_WIDTH, buf, sizeof buf));
    assert_true(report_format_log(&s, "x", buf, sizeof buf));
}

/* The deferred index rebuild shows as a phase, only while there is one. */
static void test_format_indexes(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_null(strstr(buf, "indexes"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_null(strstr(buf, "indexes"));
    s.indexes_total = 5;
    s.indexes_built = 2;
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_non_null(strstr(buf, " indexes=2/5"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, " indexes 2/5"));
    assert_true(report_format_json(&s, buf, sizeof buf));
    assert_non_null(strstr(buf, "\"indexes_total\":5,\"indexes_built\":2,"));
}

/* Every line names the mode, the run where there is one, and the phase;
 * a replace's swap shows as a phase, then with its seconds. */
static void test_format_mode_phase(void **state)
{
    (void)state;
    mapper_progress_snapshot s = sample_snapshot();
    char buf[PROGRESS_LINE_MAX];
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_non_null(strstr(buf, " mode=append phase=copy"));
    assert_null(strstr(buf, "run="));
    assert_null(strstr(buf, "swap"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, "busy 4/4 append"));
    assert_null(strstr(buf, " run "));

    s.mode = MAPPER_MODE_UPSERT;
    s.run = 2;
    s.phase = MAPPER_PHASE_INDEXES;
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_non_null(strstr(buf, " mode=upsert run=2 phase=indexes"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, " upsert run 2"));
    assert_true(report_format_json(&s, buf, sizeof buf));
    assert_non_null(
        strstr(buf, "\"mode\":\"upsert\",\"run\":2,\"phase\":\"indexes\""));

    s.mode = MAPPER_MODE_REPLACE;
    s.phase = MAPPER_PHASE_SWAP;
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_non_null(strstr(buf, " mode=replace run=2 phase=swap"));
    assert_null(strstr(buf, "swap_s"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, " replace run 2 swap"));
    s.swap_s = 0.0421;
    assert_true(report_format_log(&s, "j", buf, sizeof buf));
    assert_non_null(strstr(buf, " phase=swap swap_s=0.042"));
    assert_true(report_format_bar(&s, 10, buf, sizeof buf));
    assert_non_null(strstr(buf, " replace run 2 swap 0.04s"));
    assert_true(report_format_json(&s, buf, sizeof buf));
    assert_non_null(strstr(buf, "\"phase\":\"swap\",\"swap_s\":0.042}"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_json),
        cmocka_unit_test(test_format_log),
        cmocka_unit_test(test_format_bar),
        cmocka_unit_test(test_format_huge),
        cmocka_unit_test(test_format_indexes),
        cmocka_unit_test(test_format_mode_phase),
        cmocka_unit_test(test_callback_without_output),
        cmocka_unit_test(test_callback_throttled_under_the_bar),
        cmocka_unit_test(test_short_job_one_final_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
