/* tests/unit/test_reject.c - unit tests of coordinator/reject.c: the reject
 * file and its log, appended only for what reject_write is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "reject.h"

#define S_READ_MAX 4096

/* The whole of a file, or "" (static buffer). */
static const char *s_slurp(const char *path)
{
    static char buf[S_READ_MAX];
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* A reported row, as the dispatcher takes it from a message. */
static void s_take(reject_buf_t *b, int64_t index, const char *state,
                   const char *message, const char *row)
{
    proto_msg_t m = {.kind = PROTO_REJECT, .row_index = index};
    strcpy(m.sqlstate, state);
    m.message = strdup(message);
    m.row = strdup(row);
    assert_true(reject_buf_take(b, &m));
    assert_null(m.message);
    assert_null(m.row);
}

static void test_write_and_append(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_reject.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], log_path[256];
    snprintf(path, sizeof path, "%s/bad.rows", dir);
    snprintf(log_path, sizeof log_path, "%s/bad.rows.log", dir);
    char err[256] = "";
    reject_t *r = reject_new(path, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(s_slurp(path), "");
    assert_string_equal(s_slurp(log_path), "");

    reject_buf_t b = {0};
    s_take(&b, 0, "23514", "violates check constraint \"c\"", "1\t-1\tx\\ty\n");
    s_take(&b, 4241, "22P02", "line one\nline two\ttabbed", "4242\t\\N\n");
    assert_int_equal(b.n, 2);
    assert_true(reject_write(r, 3, &b));
    assert_int_equal(b.n, 0); /* emptied */
    assert_null(b.v);
    assert_string_equal(s_slurp(path), "1\t-1\tx\\ty\n4242\t\\N\n");
    assert_string_equal(s_slurp(log_path),
                        "chunk 3 row 1 23514 violates check constraint \"c\"\n"
                        "chunk 3 row 4242 22P02 line one line two tabbed\n");

    /* a dropped attempt writes nothing; an empty commit writes nothing */
    s_take(&b, 7, "23514", "gone", "rolled back\n");
    reject_buf_clear(&b);
    assert_int_equal(b.n, 0);
    assert_true(reject_write(r, 4, &b));
    reject_destroy(&r);
    assert_null(r);
    reject_destroy(&r); /* NULL is fine */

    /* opened again: appended, never truncated */
    r = reject_new(path, err, sizeof err);
    assert_non_null(r);
    s_take(&b, 9, "23505", "duplicate key", "10\n");
    assert_true(reject_write(r, 0, &b));
    reject_destroy(&r);
    assert_string_equal(s_slurp(path), "1\t-1\tx\\ty\n4242\t\\N\n10\n");
    assert_non_null(strstr(s_slurp(log_path), "\nchunk 0 row 10 23505 "
                                              "duplicate key\n"));
    unlink(path);
    unlink(log_path);
    rmdir(dir);
}

static void test_cannot_open(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(reject_new("/nonexistent-dir/x/bad.rows", err, sizeof err));
    assert_non_null(strstr(err, "cannot open /nonexistent-dir/x/bad.rows"));
    assert_null(strchr(err, '\n'));
    /* the rows file opens, its log cannot (a directory is in the way) */
    char dir[] = "/tmp/test_reject.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], log_dir[256];
    snprintf(path, sizeof path, "%s/r", dir);
    snprintf(log_dir, sizeof log_dir, "%s/r.log", dir);
    assert_int_equal(mkdir(log_dir, 0700), 0);
    assert_null(reject_new(path, err, sizeof err));
    assert_non_null(strstr(err, "r.log"));
    rmdir(log_dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_and_append),
        cmocka_unit_test(test_cannot_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
