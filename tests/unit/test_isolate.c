/* tests/unit/test_isolate.c - unit tests of worker/isolate.c: the search
 * for bad rows, driven by a fake "load rows [a, b)" that knows which rows
 * are bad, with and without the failing line number, and with lines that
 * are wrong. No database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "isolate.h"
#include "log.h"

#define S_MAX_ROWS 1000

/* How the fake target reports a bad row's line. */
typedef enum {
    S_LINES,      /* the true line, as PostgreSQL does */
    S_NO_LINES,   /* none: bisection */
    S_LINE_LATE,  /* one past the true line (or past the range) */
    S_LINE_EARLY, /* one before the true line (0 on the first: none) */
    S_LINE_HUGE,  /* far outside the range */
} s_mode_t;

typedef struct {
    size_t n;               /* rows */
    bool bad[S_MAX_ROWS];   /* bad[i]: row i is refused */
    int loaded[S_MAX_ROWS]; /* times row i was loaded */
    s_mode_t mode;          /* how lines are reported */
    size_t tries;           /* calls so far */
    size_t error_at;        /* fail hard at this try (1 = first), 0 never */
} s_fake_t;

static isolate_try_t s_load(void *arg, size_t first, size_t last,
                            int64_t *line_out, pgutil_error_t *err)
{
    s_fake_t *f = arg;
    f->tries++;
    assert_true(first < last && last <= f->n);
    if (f->tries == f->error_at) {
        err->side = PROTO_SIDE_TARGET;
        strcpy(err->sqlstate, "08006");
        err->conn_bad = true;
        strcpy(err->message, "server closed the connection");
        return ISOLATE_ERROR;
    }
    size_t bad = first;
    while (bad < last && !f->bad[bad])
        bad++;
    if (bad == last) {
        for (size_t i = first; i < last; i++)
            f->loaded[i]++;
        return ISOLATE_LOADED;
    }
    err->side = PROTO_SIDE_TARGET;
    strcpy(err->sqlstate, "23514");
    snprintf(err->message, sizeof err->message, "row %zu violates c", bad);
    int64_t line = (int64_t)(bad - first) + 1;
    switch (f->mode) {
    case S_LINES:
        *line_out = line;
        break;
    case S_NO_LINES:
        *line_out = 0;
        break;
    case S_LINE_LATE:
        *line_out = line + 1;
        break;
    case S_LINE_EARLY:
        *line_out = line - 1;
        break;
    case S_LINE_HUGE:
        *line_out = INT64_MAX;
        break;
    }
    return ISOLATE_BAD;
}

/* Isolate n rows with the given bad ones; check every good row loaded
 * exactly once, every bad row rejected once with its own error, in order.
 * Returns the number of tries. */
static size_t s_check(size_t n, const size_t *bad, size_t nbad, s_mode_t mode)
{
    s_fake_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->n = n;
    f->mode = mode;
    for (size_t i = 0; i < nbad; i++)
        f->bad[bad[i]] = true;
    isolate_rejects_t out;
    pgutil_error_t err;
    assert_true(isolate_run(s_load, f, n, &out, &err));
    assert_int_equal(out.n, nbad);
    for (size_t i = 0; i < nbad; i++) {
        char want[64];
        snprintf(want, sizeof want, "row %zu violates c", bad[i]);
        assert_int_equal(out.rows[i].index, bad[i]);
        assert_string_equal(out.rows[i].sqlstate, "23514");
        assert_string_equal(out.rows[i].message, want);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(f->loaded[i], f->bad[i] ? 0 : 1);
    size_t tries = f->tries;
    isolate_rejects_clear(&out);
    assert_null(out.rows);
    assert_int_equal(out.n, 0);
    free(f);
    return tries;
}

/* The bad-row layouts every mode is tried on (bad indexes ascending). */
typedef struct {
    size_t n;
    size_t nbad;
    size_t bad[16];
} s_case_t;

static const s_case_t s_cases[] = {
    {0, 0, {0}},                                  /* no rows */
    {1000, 0, {0}},                               /* clean */
    {1, 1, {0}},                                  /* a single bad row */
    {1000, 1, {500}},                             /* one in the middle */
    {1000, 1, {0}},                               /* the first */
    {1000, 1, {999}},                             /* the last */
    {1000, 2, {0, 999}},                          /* first and last */
    {1000, 7, {3, 140, 141, 142, 600, 998, 999}}, /* several, adjacent */
    {1000, 4, {10, 11, 12, 13}},                  /* a run */
    {8, 8, {0, 1, 2, 3, 4, 5, 6, 7}},             /* all bad */
    {2, 1, {1}},
    {3, 2, {0, 2}},
};

static void s_every_case(s_mode_t mode)
{
    for (size_t c = 0; c < sizeof s_cases / sizeof *s_cases; c++)
        s_check(s_cases[c].n, s_cases[c].bad, s_cases[c].nbad, mode);
}

static void test_line_numbers(void **state)
{
    (void)state;
    s_every_case(S_LINES);
    /* With true lines each bad row costs at most three tries: the range
     * it fails, the rows before it, itself alone. */
    static const size_t seven[] = {3, 140, 141, 142, 600, 998, 999};
    assert_true(s_check(1000, seven, 7, S_LINES) <= 1 + 3 * 7);
    static const size_t one[] = {500};
    assert_int_equal(s_check(1000, one, 1, S_LINES), 4);
    assert_int_equal(s_check(1000, NULL, 0, S_LINES), 1);
}

static void test_bisection(void **state)
{
    (void)state;
    s_every_case(S_NO_LINES);
    /* Without lines: about two tries per level per bad row. */
    static const size_t seven[] = {3, 140, 141, 142, 600, 998, 999};
    assert_true(s_check(1000, seven, 7, S_NO_LINES) <= 1 + 2 * 7 * 11);
    static const size_t one[] = {500};
    assert_true(s_check(1000, one, 1, S_NO_LINES) <= 1 + 2 * 11);
}

/* A wrong line number costs tries, never a good row nor a bad one. */
static void test_wrong_line_numbers(void **state)
{
    (void)state;
    s_every_case(S_LINE_LATE);
    s_every_case(S_LINE_EARLY);
    s_every_case(S_LINE_HUGE);
}

/* Any other error ends the isolation at once with that error, and leaves
 * nothing in the result. */
static void test_other_error_stops(void **state)
{
    (void)state;
    for (size_t at = 1; at <= 6; at++) {
        s_fake_t *f = calloc(1, sizeof *f);
        assert_non_null(f);
        f->n = 100;
        f->bad[5] = f->bad[50] = f->bad[51] = true;
        f->error_at = at;
        isolate_rejects_t out;
        pgutil_error_t err;
        assert_false(isolate_run(s_load, f, f->n, &out, &err));
        assert_int_equal(f->tries, at);
        assert_int_equal(out.n, 0);
        assert_null(out.rows);
        assert_string_equal(err.sqlstate, "08006");
        assert_true(err.conn_bad);
        assert_string_equal(err.message, "server closed the connection");
        free(f);
    }
}

static void test_is_bad_data(void **state)
{
    (void)state;
    pgutil_error_t e = {.side = PROTO_SIDE_TARGET};
    static const char *const bad[] = {"22P02", "23514", "23505", "22001"};
    static const char *const other[] = {"",     "40001", "42P01", "08006",
                                        "2200", "57014", "XX000"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        strcpy(e.sqlstate, bad[i]);
        assert_true(isolate_is_bad_data(&e));
    }
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        snprintf(e.sqlstate, sizeof e.sqlstate, "%s", other[i]);
        assert_false(isolate_is_bad_data(&e));
    }
    strcpy(e.sqlstate, "23514");
    e.side = PROTO_SIDE_SOURCE; /* a source error is never a bad row */
    assert_false(isolate_is_bad_data(&e));
    e.side = PROTO_SIDE_TARGET;
    e.conn_bad = true;
    assert_false(isolate_is_bad_data(&e));
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_numbers),
        cmocka_unit_test(test_bisection),
        cmocka_unit_test(test_wrong_line_numbers),
        cmocka_unit_test(test_other_error_stops),
        cmocka_unit_test(test_is_bad_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
