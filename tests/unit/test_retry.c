/* tests/unit/test_retry.c - unit tests for coordinator/retry.c: backoff,
 * jitter, per-process seeding, the classification table, environment,
 * validation, deadlines and decisions. No timing: the clock is injected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "retry.h"

/* Defaults with jitter off: delays are exact. */
static mapper_retry_config s_plain(void)
{
    mapper_retry_config cfg;
    retry_config_defaults(&cfg);
    cfg.jitter = false;
    return cfg;
}

/* ---- configuration ---- */

static void test_defaults(void **state)
{
    (void)state;
    mapper_retry_config cfg;
    memset(&cfg, 0xab, sizeof cfg);
    retry_config_defaults(&cfg);
    assert_true(cfg.enabled);
    assert_int_equal(cfg.max_retries, 3);
    assert_true(cfg.initial_delay == 1.0);
    assert_true(cfg.max_delay == 60.0);
    assert_true(cfg.exponential_base == 2.0);
    assert_true(cfg.jitter);
    assert_true(cfg.deadline == 0.0);
    char err[RETRY_ERR_MAX] = "";
    assert_true(retry_config_validate(&cfg, err, sizeof err));
    assert_string_equal(err, "");
}

/* One bad config: validation fails and the message names the field. */
static void s_expect_invalid(const mapper_retry_config *cfg, const char *field)
{
    char err[RETRY_ERR_MAX] = "";
    if (retry_config_validate(cfg, err, sizeof err))
        fail_msg("validate accepted a bad %s", field);
    if (!strstr(err, field))
        fail_msg("message \"%s\" does not name %s", err, field);
    assert_null(strchr(err, '\n'));
}

static void test_validate_bad_fields(void **state)
{
    (void)state;
    const double bad_seconds[] = {-1.0, -0.001, NAN, INFINITY, -INFINITY};
    const size_t n = sizeof bad_seconds / sizeof bad_seconds[0];
    mapper_retry_config cfg;

    cfg = s_plain();
    cfg.max_retries = -1;
    s_expect_invalid(&cfg, "max_retries");

    for (size_t i = 0; i < n; i++) {
        cfg = s_plain();
        cfg.initial_delay = bad_seconds[i];
        s_expect_invalid(&cfg, "initial_delay");
        cfg = s_plain();
        cfg.max_delay = bad_seconds[i];
        s_expect_invalid(&cfg, "max_delay");
        cfg = s_plain();
        cfg.deadline = bad_seconds[i];
        s_expect_invalid(&cfg, "deadline");
    }

    const double bad_bases[] = {0.0, 0.5, 0.999, -2.0, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_bases / sizeof bad_bases[0]; i++) {
        cfg = s_plain();
        cfg.exponential_base = bad_bases[i];
        s_expect_invalid(&cfg, "exponential_base");
    }

    cfg = s_plain();
    cfg.initial_delay = 61.0;
    s_expect_invalid(&cfg, "initial_delay");
    s_expect_invalid(&cfg, "max_delay");
}

static void test_validate_edges_accepted(void **state)
{
    (void)state;
    char err[RETRY_ERR_MAX];
    mapper_retry_config cfg = s_plain();
    cfg.max_retries = 0;
    cfg.exponential_base = 1.0;
    cfg.initial_delay = 0.0;
    cfg.max_delay = 0.0;
    cfg.deadline = 0.0;
    assert_true(retry_config_validate(&cfg, err, sizeof err));
    cfg = s_plain();
    cfg.initial_delay = cfg.max_delay;
    cfg.deadline = 3600.0;
    assert_true(retry_config_validate(&cfg, err, sizeof err));
    /* A NULL buffer is allowed: the answer still comes back. */
    cfg.max_retries = -5;
    assert_false(retry_config_validate(&cfg, NULL, 0));
}

/* ---- environment ---- */

static int s_clear_env(void **state)
{
    (void)state;
    unsetenv(MAPPER_ENV_RETRY_ENABLED);
    unsetenv(MAPPER_ENV_MAX_RETRIES);
    return 0;
}

static void test_env_unset_changes_nothing(void **state)
{
    (void)state;
    char err[RETRY_ERR_MAX];
    mapper_retry_config cfg = s_plain();
    cfg.max_retries = 9;
    cfg.enabled = false;
    assert_true(retry_config_from_env(&cfg, err, sizeof err));
    assert_int_equal(cfg.max_retries, 9);
    assert_false(cfg.enabled);
}

static void test_env_enabled_values(void **state)
{
    (void)state;
    static const struct {
        const char *value; /* the variable's value */
        bool enabled;      /* what it must mean */
    } cases[] = {{"true", true},   {"TRUE", true},   {"True", true},
                 {"1", true},      {"yes", true},    {"YES", true},
                 {"false", false}, {"FaLsE", false}, {"0", false},
                 {"no", false},    {"No", false}};
    char err[RETRY_ERR_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mapper_retry_config cfg = s_plain();
        cfg.enabled = !cases[i].enabled;
        setenv(MAPPER_ENV_RETRY_ENABLED, cases[i].value, 1);
        if (!retry_config_from_env(&cfg, err, sizeof err))
            fail_msg("'%s' refused: %s", cases[i].value, err);
        if (cfg.enabled != cases[i].enabled)
            fail_msg("'%s' read as %d", cases[i].value, cfg.enabled);
    }
}

static void test_env_enabled_garbage(void **state)
{
    (void)state;
    const char *bad[] = {"maybe", "", " true", "true ", "2", "on", "y", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[RETRY_ERR_MAX] = "";
        mapper_retry_config cfg = s_plain();
        setenv(MAPPER_ENV_RETRY_ENABLED, bad[i], 1);
        if (retry_config_from_env(&cfg, err, sizeof err))
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err, "MAPPER_PARALLEL_RETRY_ENABLED"));
        char quoted[RETRY_ENV_VALUE_SHOWN + 3];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        if (!strstr(err, quoted))
            fail_msg("message \"%s\" does not quote %s", err, quoted);
        assert_true(cfg.enabled); /* unchanged */
    }
}

static void test_env_max_retries(void **state)
{
    (void)state;
    static const struct {
        const char *value; /* the variable's value */
        int retries;       /* what it must mean */
    } good[] = {{"0", 0}, {"7", 7}, {"007", 7}, {"2147483647", INT_MAX}};
    char err[RETRY_ERR_MAX];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        mapper_retry_config cfg = s_plain();
        setenv(MAPPER_ENV_MAX_RETRIES, good[i].value, 1);
        if (!retry_config_from_env(&cfg, err, sizeof err))
            fail_msg("'%s' refused: %s", good[i].value, err);
        assert_int_equal(cfg.max_retries, good[i].retries);
    }
}

static void test_env_max_retries_garbage(void **state)
{
    (void)state;
    const char *bad[] = {"-1",
                         "abc",
                         "3x",
                         "",
                         "+3",
                         " 3",
                         "3 ",
                         "1.5",
                         "0x10",
                         "2147483648",
                         "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[RETRY_ERR_MAX] = "";
        mapper_retry_config cfg = s_plain();
        setenv(MAPPER_ENV_MAX_RETRIES, bad[i], 1);
        if (retry_config_from_env(&cfg, err, sizeof err))
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err, "MAPPER_PARALLEL_MAX_RETRIES"));
        char quoted[RETRY_ENV_VALUE_SHOWN + 3];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        if (!strstr(err, quoted))
            fail_msg("message \"%s\" does not quote %s", err, quoted);
        assert_int_equal(cfg.max_retries, 3); /* unchanged */
    }
}

static void test_env_error_leaves_config_unchanged(void **state)
{
    (void)state;
    /* A good first variable is not applied when the second one is bad. */
    char err[RETRY_ERR_MAX];
    mapper_retry_config cfg = s_plain();
    setenv(MAPPER_ENV_RETRY_ENABLED, "no", 1);
    setenv(MAPPER_ENV_MAX_RETRIES, "lots", 1);
    assert_false(retry_config_from_env(&cfg, err, sizeof err));
    assert_true(cfg.enabled);
    assert_int_equal(cfg.max_retries, 3);
}

static void test_env_error_is_one_bounded_line(void **state)
{
    (void)state;
    char value[1000];
    memset(value, 'z', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    value[3] = '\n';
    value[5] = '\t';
    setenv(MAPPER_ENV_MAX_RETRIES, value, 1);
    char err[RETRY_ERR_MAX];
    mapper_retry_config cfg = s_plain();
    assert_false(retry_config_from_env(&cfg, err, sizeof err));
    assert_null(strchr(err, '\n'));
    assert_null(strchr(err, '\t'));
    assert_non_null(strstr(err, "'zzz?z?zzz"));
    assert_true(strlen(err) < RETRY_ENV_VALUE_SHOWN + 80);
}

/* ---- backoff and jitter ---- */

static void test_backoff_default_sequence(void **state)
{
    (void)state;
    const double want[] = {1, 2, 4, 8, 16, 32, 60, 60};
    mapper_retry_config cfg = s_plain();
    for (int k = 1; k <= 8; k++) {
        assert_true(retry_backoff(&cfg, k) == want[k - 1]);
        assert_true(retry_delay(&cfg, k, NULL) == want[k - 1]);
    }
}

static void test_backoff_cap(void **state)
{
    (void)state;
    mapper_retry_config cfg = s_plain();
    cfg.initial_delay = 5.0;
    cfg.max_delay = 12.0;
    cfg.exponential_base = 3.0;
    assert_true(retry_backoff(&cfg, 1) == 5.0);
    assert_true(retry_backoff(&cfg, 2) == 12.0);
    assert_true(retry_backoff(&cfg, 3) == 12.0);

    cfg.initial_delay = 12.0; /* initial == max */
    assert_true(retry_backoff(&cfg, 1) == 12.0);
    assert_true(retry_backoff(&cfg, 4) == 12.0);

    cfg.initial_delay = 2.5; /* base 1: constant */
    cfg.exponential_base = 1.0;
    assert_true(retry_backoff(&cfg, 1) == 2.5);
    assert_true(retry_backoff(&cfg, 1000) == 2.5);

    cfg.initial_delay = 0.0; /* no delay at all */
    cfg.exponential_base = 2.0;
    assert_true(retry_backoff(&cfg, 1) == 0.0);
    assert_true(retry_backoff(&cfg, INT_MAX) == 0.0);
}

static void test_backoff_huge_k(void **state)
{
    (void)state;
    mapper_retry_config cfg = s_plain();
    /* 2^1100 overflows a double; the answer must still be the cap. */
    const int ks[] = {64, 1025, 1100, 1 << 20, INT_MAX};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
        assert_true(retry_backoff(&cfg, ks[i]) == 60.0);

    cfg.initial_delay = 1e-300;
    cfg.max_delay = 1e300;
    cfg.exponential_base = 1e10;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        double d = retry_backoff(&cfg, ks[i]);
        assert_true(isfinite(d));
        assert_true(d == 1e300);
    }
    assert_true(retry_backoff(&cfg, 2) == 1e-290);

    cfg = s_plain();
    cfg.jitter = true;
    retry_rng rng;
    retry_rng_seed(&rng, 7);
    double d = retry_delay(&cfg, INT_MAX, &rng);
    assert_true(isfinite(d) && d >= 0.0 && d <= 60.0);
}

static void test_jitter_bounds_and_mean(void **state)
{
    (void)state;
    enum { DRAWS = 100000 };
    mapper_retry_config cfg;
    retry_config_defaults(&cfg); /* jitter on */
    retry_rng rng;
    retry_rng_seed(&rng, 42);
    const int ks[] = {1, 3, 7};
    const double caps[] = {1.0, 4.0, 60.0};
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
        double sum = 0, lo = caps[j], hi = 0;
        for (int i = 0; i < DRAWS; i++) {
            double d = retry_delay(&cfg, ks[j], &rng);
            if (!(d >= 0.0 && d <= caps[j]))
                fail_msg("k=%d draw %d: %g outside [0, %g]", ks[j], i, d,
                         caps[j]);
            sum += d;
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        double mean = sum / DRAWS;
        /* Uniform on [0, d]: mean d/2, sd of the mean d/sqrt(12 DRAWS),
         * about 0.001 d; allow 1 %. */
        if (fabs(mean - caps[j] / 2) > 0.01 * caps[j])
            fail_msg("k=%d: mean %g, expected %g", ks[j], mean, caps[j] / 2);
        /* The whole range is used, not a slice of it. */
        assert_true(lo < 0.001 * caps[j]);
        assert_true(hi > 0.999 * caps[j]);
    }
}

static void test_rng_seeded_is_reproducible(void **state)
{
    (void)state;
    retry_rng a, b, c;
    retry_rng_seed(&a, 12345);
    retry_rng_seed(&b, 12345);
    retry_rng_seed(&c, 12346);
    int same_as_c = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = retry_rng_next(&a);
        assert_true(x == retry_rng_next(&b));
        same_as_c += x == retry_rng_next(&c);
    }
    assert_int_equal(same_as_c, 0);

    retry_rng z; /* seed 0 is fine for splitmix64 */
    retry_rng_seed(&z, 0);
    assert_true(retry_rng_next(&z) != retry_rng_next(&z));
}

static void test_rng_uniform_range(void **state)
{
    (void)state;
    retry_rng rng;
    retry_rng_seed(&rng, 99);
    for (int i = 0; i < 10000; i++) {
        double u = retry_rng_uniform(&rng);
        assert_true(u >= 0.0 && u <= 1.0);
    }
}

/* Fork a child that seeds per process and writes its first delay (at the
 * 60 s cap, jitter on) into fd. Returns the child's pid. */
static pid_t s_spawn_drawer(int fd)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mapper_retry_config cfg;
        retry_config_defaults(&cfg);
        retry_rng rng;
        retry_rng_seed_process(&rng);
        double d = retry_delay(&cfg, 10, &rng);
        ssize_t n = write(fd, &d, sizeof d);
        _exit(n == (ssize_t)sizeof d ? 0 : 1);
    }
    return pid;
}

static void test_forked_processes_draw_differently(void **state)
{
    (void)state;
    enum { CHILDREN = 2 };
    double got[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = s_spawn_drawer(fds[1]);
        close(fds[1]);
        assert_int_equal(read(fds[0], &got[i], sizeof got[i]), sizeof got[i]);
        close(fds[0]);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_true(got[i] >= 0.0 && got[i] <= 60.0);
    }
    if (got[0] == got[1]) fail_msg("both children drew %.17g", got[0]);
}

/* ---- classification ---- */

enum {
    F_CONN = 1,  /* conn_lost */
    F_CRASH = 2, /* worker_crashed */
    F_HEART = 4, /* heartbeat_lost */
};

static retry_error s_err(const char *sqlstate, int flags, proto_side_t side)
{
    retry_error e;
    memset(&e, 0, sizeof e);
    snprintf(e.sqlstate, sizeof e.sqlstate, "%s", sqlstate);
    e.side = side;
    e.conn_lost = flags & F_CONN;
    e.worker_crashed = flags & F_CRASH;
    e.heartbeat_lost = flags & F_HEART;
    return e;
}

static void test_classify_table(void **state)
{
    (void)state;
    static const struct {
        const char *sqlstate; /* "" for none */
        int flags;            /* F_* */
        bool retryable;       /* expected */
        const char *name;     /* expected class name */
    } cases[] = {
        /* retryable */
        {"08000", 0, true, "connection"},
        {"08006", 0, true, "connection"},
        {"08001", 0, true, "connection"},
        {"40001", 0, true, "serialization"},
        {"40P01", 0, true, "deadlock"},
        {"53000", 0, true, "resources"},
        {"53100", 0, true, "resources"},
        {"53200", 0, true, "resources"},
        {"53300", 0, true, "resources"},
        {"57P01", 0, true, "shutdown"},
        {"57P02", 0, true, "shutdown"},
        {"57P03", 0, true, "shutdown"},
        {"55P03", 0, true, "lock"},
        {"55006", 0, true, "lock"},
        {"57014", 0, true, "cancelled"},
        {"58000", 0, true, "system"},
        {"58030", 0, true, "system"},
        {"", F_CONN, true, "connection"},
        {"", F_CRASH, true, "crash"},
        {"", F_HEART, true, "heartbeat"},
        {"42601", F_CRASH, true, "crash"}, /* a crash wins */
        {"57P01", F_CONN, true, "shutdown"},
        {"08006", F_CONN, true, "connection"},
        {"1234", F_CONN, true, "connection"}, /* malformed: ignored */
        /* not retryable */
        {"42601", 0, false, "syntax"},
        {"42P01", 0, false, "syntax"},
        {"42703", 0, false, "syntax"},
        {"42501", 0, false, "syntax"},
        {"22012", 0, false, "data"},
        {"22P02", 0, false, "data"},
        {"23505", 0, false, "integrity"},
        {"23502", 0, false, "integrity"},
        {"28000", 0, false, "auth"},
        {"28P01", 0, false, "auth"},
        {"28P01", F_CONN, false, "auth"}, /* failed connect, bad password */
        {"3D000", 0, false, "no-database"},
        {"3D000", F_CONN, false, "no-database"},
        {"0A000", 0, false, "unsupported"},
        {"55000", 0, false, "other"}, /* a snapshot gone: final anyway */
        {"XX000", 0, false, "internal"},
        {"XX001", 0, false, "internal"},
        {"25P02", 0, false, "other"},
        {"P0001", 0, false, "other"},
        {"57000", 0, false, "other"},
        {"40002", 0, false, "other"},
        {"58P01", 0, false, "other"},
        {"55P02", 0, false, "other"},
        {"", 0, false, "other"},
        {"08", 0, false, "other"},    /* a class alone is not a SQLSTATE */
        {"08x06", 0, false, "other"}, /* lowercase: malformed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        retry_error e =
            s_err(cases[i].sqlstate, cases[i].flags, PROTO_SIDE_SOURCE);
        retry_verdict v = retry_classify(&e);
        if (v.retryable != cases[i].retryable ||
            strcmp(v.class_name, cases[i].name) != 0)
            fail_msg("case %zu ('%s', flags %d): got %s/%s, want %s/%s", i,
                     cases[i].sqlstate, cases[i].flags,
                     v.retryable ? "retry" : "final", v.class_name,
                     cases[i].retryable ? "retry" : "final", cases[i].name);
    }
}

static void test_connection_failure(void **state)
{
    (void)state;
    static const struct {
        const char *sqlstate; /* "" for none */
        int flags;            /* F_* */
        proto_side_t side;    /* which database */
        bool down;            /* expected */
    } cases[] = {
        {"08006", 0, PROTO_SIDE_SOURCE, true},
        {"08001", 0, PROTO_SIDE_TARGET, true},
        {"57P01", 0, PROTO_SIDE_TARGET, true},
        {"57P02", 0, PROTO_SIDE_SOURCE, true},
        {"57P03", 0, PROTO_SIDE_SOURCE, true},
        {"", F_CONN, PROTO_SIDE_TARGET, true},
        {"57P01", F_CONN, PROTO_SIDE_SOURCE, true},
        {"08006", 0, PROTO_SIDE_NONE, false},
        {"", F_CONN, PROTO_SIDE_NONE, false},
        {"28P01", F_CONN, PROTO_SIDE_SOURCE, false},
        {"3D000", F_CONN, PROTO_SIDE_TARGET, false},
        {"40001", 0, PROTO_SIDE_SOURCE, false},
        {"53300", 0, PROTO_SIDE_TARGET, false},
        {"57014", 0, PROTO_SIDE_SOURCE, false},
        {"", F_CRASH, PROTO_SIDE_NONE, false},
        {"", F_HEART, PROTO_SIDE_NONE, false},
        {"", 0, PROTO_SIDE_SOURCE, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        retry_error e = s_err(cases[i].sqlstate, cases[i].flags, cases[i].side);
        if (retry_is_connection_failure(&e) != cases[i].down)
            fail_msg("case %zu ('%s', flags %d, side %d): want %d", i,
                     cases[i].sqlstate, cases[i].flags, cases[i].side,
                     cases[i].down);
    }
}

/* ---- deadlines ---- */

static void test_deadline_clamp(void **state)
{
    (void)state;
    mapper_retry_config cfg = s_plain();
    double out = -1;

    /* No deadline: the delay passes through, however late it is. */
    assert_true(retry_deadline_clamp(&cfg, 100.0, 1e9, 7.0, &out));
    assert_true(out == 7.0);

    cfg.deadline = 30.0; /* chunk started at 100: deadline at 130 */
    assert_true(retry_deadline_clamp(&cfg, 100.0, 110.0, 5.0, &out));
    assert_true(out == 5.0);
    assert_true(retry_deadline_clamp(&cfg, 100.0, 125.0, 5.0, &out));
    assert_true(out == 5.0); /* exactly reaches the deadline */
    assert_true(retry_deadline_clamp(&cfg, 100.0, 128.0, 5.0, &out));
    assert_true(out == 2.0); /* clamped */
    assert_true(retry_deadline_clamp(&cfg, 100.0, 128.0, 0.0, &out));
    assert_true(out == 0.0);

    out = -1;
    assert_false(retry_deadline_clamp(&cfg, 100.0, 130.0, 5.0, &out));
    assert_true(out == 0.0);
    out = -1;
    assert_false(retry_deadline_clamp(&cfg, 100.0, 500.0, 0.0, &out));
    assert_true(out == 0.0);
}

static double s_fake_now;

static double s_fake_clock(void)
{
    return s_fake_now;
}

static void test_decide_chunk_with_injected_clock(void **state)
{
    (void)state;
    const retry_verdict ok = {true, "connection"};
    mapper_retry_config cfg = s_plain();
    cfg.max_retries = 10;
    cfg.deadline = 10.0;

    s_fake_now = 1000.0; /* first attempt started at 1000 */
    retry_decision d =
        retry_decide_chunk(&cfg, 1, &ok, 1000.0, s_fake_clock, NULL);
    assert_true(d.retry);
    assert_true(d.delay == 1.0);
    assert_int_equal(d.reason, RETRY_GO);

    s_fake_now = 1009.5; /* retry 3 wants 4 s; 0.5 s are left */
    d = retry_decide_chunk(&cfg, 3, &ok, 1000.0, s_fake_clock, NULL);
    assert_true(d.retry);
    assert_true(d.delay == 0.5);

    s_fake_now = 1010.0; /* deadline reached */
    d = retry_decide_chunk(&cfg, 3, &ok, 1000.0, s_fake_clock, NULL);
    assert_false(d.retry);
    assert_true(d.delay == 0.0);
    assert_int_equal(d.reason, RETRY_PAST_DEADLINE);

    s_fake_now = 5000.0; /* no deadline: time does not matter */
    cfg.deadline = 0.0;
    d = retry_decide_chunk(&cfg, 2, &ok, 1000.0, s_fake_clock, NULL);
    assert_true(d.retry);
    assert_true(d.delay == 2.0);

    /* Without a clock the monotonic one is used. */
    d = retry_decide_chunk(&cfg, 2, &ok, clock_now(), NULL, NULL);
    assert_true(d.retry);

    /* Other refusals come before the clock is read. */
    const retry_verdict final = {false, "syntax"};
    d = retry_decide_chunk(&cfg, 1, &final, 1000.0, s_fake_clock, NULL);
    assert_int_equal(d.reason, RETRY_PERMANENT);
}

static void test_clock_monotonic(void **state)
{
    (void)state;
    double a = clock_now();
    double b = clock_now();
    assert_true(a > 0.0 && b >= a);
}

/* ---- decisions ---- */

static void test_decide_exhausted(void **state)
{
    (void)state;
    const retry_verdict ok = {true, "deadlock"};
    mapper_retry_config cfg = s_plain(); /* max_retries 3 */
    const double want[] = {1.0, 2.0, 4.0};
    for (int attempts = 1; attempts <= 3; attempts++) {
        retry_decision d = retry_decide(&cfg, attempts, &ok, NULL);
        assert_true(d.retry);
        assert_int_equal(d.reason, RETRY_GO);
        assert_true(d.delay == want[attempts - 1]);
    }
    for (int attempts = 4; attempts <= 6; attempts++) {
        retry_decision d = retry_decide(&cfg, attempts, &ok, NULL);
        assert_false(d.retry);
        assert_true(d.delay == 0.0);
        assert_int_equal(d.reason, RETRY_EXHAUSTED);
    }
    cfg.max_retries = 0;
    retry_decision d = retry_decide(&cfg, 1, &ok, NULL);
    assert_false(d.retry);
    assert_int_equal(d.reason, RETRY_EXHAUSTED);
}

static void test_decide_disabled_never_retries(void **state)
{
    (void)state;
    retry_error e = s_err("", F_CONN, PROTO_SIDE_TARGET);
    retry_verdict v = retry_classify(&e);
    assert_true(v.retryable);
    mapper_retry_config cfg = s_plain();
    cfg.enabled = false;
    cfg.max_retries = 100;
    for (int attempts = 1; attempts <= 5; attempts++) {
        retry_decision d = retry_decide(&cfg, attempts, &v, NULL);
        assert_false(d.retry);
        assert_int_equal(d.reason, RETRY_DISABLED);
    }
}

static void test_decide_permanent_never_retries(void **state)
{
    (void)state;
    const char *final[] = {"42P01", "23505", "28P01", "XX000", "25P02"};
    mapper_retry_config cfg = s_plain();
    cfg.max_retries = 100;
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++) {
        retry_error e = s_err(final[i], 0, PROTO_SIDE_TARGET);
        retry_verdict v = retry_classify(&e);
        retry_decision d = retry_decide(&cfg, 1, &v, NULL);
        assert_false(d.retry);
        assert_true(d.delay == 0.0);
        assert_int_equal(d.reason, RETRY_PERMANENT);
    }
}

static void test_decide_with_jitter(void **state)
{
    (void)state;
    const retry_verdict ok = {true, "lock"};
    mapper_retry_config cfg;
    retry_config_defaults(&cfg);
    retry_rng a, b;
    retry_rng_seed(&a, 2024);
    retry_rng_seed(&b, 2024);
    for (int attempts = 1; attempts <= 3; attempts++) {
        retry_decision d = retry_decide(&cfg, attempts, &ok, &a);
        assert_true(d.retry);
        assert_true(d.delay >= 0.0 && d.delay <= retry_backoff(&cfg, attempts));
        /* The same seed gives the same delay: decisions are reproducible. */
        assert_true(d.delay == retry_delay(&cfg, attempts, &b));
    }
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(retry_reason_name(RETRY_GO), "retry");
    assert_string_equal(retry_reason_name(RETRY_DISABLED), "disabled");
    assert_string_equal(retry_reason_name(RETRY_PERMANENT), "permanent");
    assert_string_equal(retry_reason_name(RETRY_EXHAUSTED), "exhausted");
    assert_string_equal(retry_reason_name(RETRY_PAST_DEADLINE), "deadline");
    assert_string_equal(retry_reason_name((retry_reason)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest retry_tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_validate_bad_fields),
        cmocka_unit_test(test_validate_edges_accepted),
        cmocka_unit_test_setup_teardown(test_env_unset_changes_nothing,
                                        s_clear_env, s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_enabled_values, s_clear_env,
                                        s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_enabled_garbage, s_clear_env,
                                        s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_max_retries, s_clear_env,
                                        s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_max_retries_garbage,
                                        s_clear_env, s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_error_leaves_config_unchanged,
                                        s_clear_env, s_clear_env),
        cmocka_unit_test_setup_teardown(test_env_error_is_one_bounded_line,
                                        s_clear_env, s_clear_env),
        cmocka_unit_test(test_backoff_default_sequence),
        cmocka_unit_test(test_backoff_cap),
        cmocka_unit_test(test_backoff_huge_k),
        cmocka_unit_test(test_jitter_bounds_and_mean),
        cmocka_unit_test(test_rng_seeded_is_reproducible),
        cmocka_unit_test(test_rng_uniform_range),
        cmocka_unit_test(test_forked_processes_draw_differently),
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_connection_failure),
        cmocka_unit_test(test_deadline_clamp),
        cmocka_unit_test(test_decide_chunk_with_injected_clock),
        cmocka_unit_test(test_clock_monotonic),
        cmocka_unit_test(test_decide_exhausted),
        cmocka_unit_test(test_decide_disabled_never_retries),
        cmocka_unit_test(test_decide_permanent_never_retries),
        cmocka_unit_test(test_decide_with_jitter),
        cmocka_unit_test(test_reason_names),
    };
    return cmocka_run_group_tests(retry_tests, NULL, NULL);
}
