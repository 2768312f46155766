/* tests/unit/test_log.c - unit tests for common/log.c: one-line messages
 * without control characters, and passwords hidden in argv and removed,
 * in every spelling, from what the process writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "log.h"

/* ---- one line, no control characters ---- */

static void test_one_line_controls(void **state)
{
    (void)state;
    char out[128];
    log_one_line(out, sizeof out, "a\nb\r\tc\033[31mred\007 \x7f\xc2\x9b!  ");
    assert_string_equal(out, "a b c\\x1b[31mred\\x07 \\x7f\\x9b!");
    /* UTF-8 that is not a control character is kept. */
    log_one_line(out, sizeof out, "caf\xc3\xa9 \xc2\xa0x");
    assert_string_equal(out, "caf\xc3\xa9 \xc2\xa0x");
    /* An escape that does not fit is left out whole. */
    log_one_line(out, 4, "ab\033");
    assert_string_equal(out, "ab");
}

/* ---- passwords ---- */

/* Hide conninfo held in a copy of argv: the copy (and a refusal's reason)
 * must lose every part of the password; once learnt, each whole spelling
 * (the first n_whole of secrets) is removed from a message. */
static void s_hide(const char *conninfo, const char *const *secrets,
                   size_t n_whole, bool want_ok)
{
    char arg[256], err[512], out[512];
    snprintf(arg, sizeof arg, "%s", conninfo);
    bool ok = log_hide_conninfo(conninfo, arg, err, sizeof err);
    assert_int_equal(ok, want_ok);
    for (size_t i = 0; secrets[i]; i++) {
        assert_null(strstr(arg, secrets[i]));
        if (!ok) assert_null(strstr(err, secrets[i]));
        char line[256];
        snprintf(line, sizeof line, "error near \"%s\" here", secrets[i]);
        log_one_line(out, sizeof out, line);
        if (ok && i < n_whole) assert_null(strstr(out, secrets[i]));
    }
}

static void test_hide_keyword_value(void **state)
{
    (void)state;
    s_hide("host=h password = s3cretA user=u",
           (const char *[]){"s3cretA", NULL}, 1, true);
    s_hide("host=h password='two wordsB' user=u",
           (const char *[]){"two wordsB", "wordsB", NULL}, 1, true);
    s_hide("host=h password='it\\'sC'",
           (const char *[]){"it's"
                            "C",
                            "it\\'sC", "sC", NULL},
           2, true);
}

static void test_hide_uri(void **state)
{
    (void)state;
    s_hide("postgresql://app:p%40ssD@db/x",
           (const char *[]){"p@ssD", "p%40ssD", "ssD", NULL}, 2, true);
    s_hide("postgres://app@db/x?sslmode=disable&password=qE%21",
           (const char *[]){"qE!", "qE%21", NULL}, 2, true);
}

static void test_hide_refused(void **state)
{
    (void)state;
    s_hide("postgresql://app:p@ssF@db/x",
           (const char *[]){"ssF", "p@ssF", NULL}, 0, false);
    s_hide("postgresql://app:50%offG@db/x", (const char *[]){"offG", NULL}, 0,
           false);
    s_hide("host=h password=correctH horseH battery",
           (const char *[]){"horseH", "correctH", NULL}, 0, false);
    char arg[] = "password=a b", err[256];
    assert_false(log_hide_conninfo(arg, arg, err, sizeof err));
    assert_string_equal(arg, "xxxxxxxxxxxx");
    assert_non_null(strstr(err, "not a valid connection string"));
}

static void test_hide_env_only(void **state)
{
    (void)state;
    char err[256], out[128];
    assert_true(log_hide_conninfo("password=EnvPwI", NULL, err, sizeof err));
    log_one_line(out, sizeof out, "x EnvPwI y");
    assert_string_equal(out, "x " LOG_REDACTED " y");
    assert_true(log_hide_conninfo(NULL, NULL, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest log_tests[] = {
        cmocka_unit_test(test_one_line_controls),
        cmocka_unit_test(test_hide_keyword_value),
        cmocka_unit_test(test_hide_uri),
        cmocka_unit_test(test_hide_refused),
        cmocka_unit_test(test_hide_env_only),
    };
    return cmocka_run_group_tests(log_tests, NULL, NULL);
}
