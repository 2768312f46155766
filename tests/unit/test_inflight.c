/* tests/unit/test_inflight.c - unit tests of coordinator/inflight.c: the
 * digest does not depend on how the bytes are cut, chunks are assembled
 * from frames, the credit limit follows what is held, a re-read is told
 * same from different, and frames out of order are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inflight.h"
#include "log.h"

/* A data frame of chunk `chunk` holding bytes p[0..n) and `rows` rows. */
static proto_msg_t s_frame(int64_t chunk, const char *p, size_t n, int64_t rows,
                           bool last)
{
    proto_msg_t m = {.kind = PROTO_DATA,
                     .chunk_id = chunk,
                     .attempt = 1,
                     .rows = rows,
                     .last = last,
                     .data = (char *)p,
                     .data_len = n};
    return m;
}

static uint64_t s_digest_cut(const char *p, size_t n, size_t step)
{
    inflight_digest_t d;
    inflight_digest_init(&d);
    for (size_t at = 0; at < n; at += step)
        inflight_digest_add(&d, p + at, n - at < step ? n - at : step);
    return inflight_digest_end(&d);
}

static void test_digest_cut_independent(void **state)
{
    (void)state;
    char buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(i * 31 + 7);
    uint64_t whole = s_digest_cut(buf, sizeof buf, sizeof buf);
    for (size_t step = 1; step < 20; step++)
        assert_int_equal(s_digest_cut(buf, sizeof buf, step), whole);
    buf[500] ^= 1; /* one bit anywhere changes it */
    assert_int_not_equal(s_digest_cut(buf, sizeof buf, 7), whole);
    buf[500] ^= 1;
    /* Trailing zero bytes count: lengths differ, digests differ. */
    assert_int_not_equal(s_digest_cut(buf, sizeof buf - 1, 13), whole);
}

static void test_chunks_and_credit(void **state)
{
    (void)state;
    inflight_t s;
    int64_t k = -1;
    inflight_init(&s, 2);
    assert_int_equal(inflight_limit(&s), 2);
    proto_msg_t m = s_frame(0, "1\tx\n2\t", 6, 1, false);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_MORE);
    m = s_frame(0, "y\n", 2, 1, true); /* a row spanning frames */
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_COMPLETE);
    assert_int_equal(k, 0);
    assert_int_equal(s.chunks[0].rows, 2);
    assert_int_equal(s.chunks[0].len, 8);
    assert_memory_equal(s.chunks[0].data, "1\tx\n2\ty\n", 8);
    assert_int_equal(s.held, 1);
    assert_int_equal(inflight_limit(&s), 2); /* 1 known + room for 1 */
    m = s_frame(1, "3\tz\n", 4, 1, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_COMPLETE);
    assert_int_equal(inflight_limit(&s), 2); /* full: no new chunk */
    assert_int_equal(s.bytes_held, 12);
    inflight_release(&s, 0);
    assert_null(s.chunks[0].data);
    assert_int_equal(s.held, 1);
    assert_int_equal(inflight_limit(&s), 3);
    inflight_release(&s, 0); /* twice: no effect */
    assert_int_equal(s.held, 1);
    assert_int_equal(s.bytes_held, 4);
    inflight_free(&s);
}

static void test_reread(void **state)
{
    (void)state;
    inflight_t s;
    int64_t k = -1;
    inflight_init(&s, 4);
    proto_msg_t m = s_frame(0, "a\nb\n", 4, 2, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_COMPLETE);
    m = s_frame(1, "c\n", 2, 1, false); /* chunk 1 half read */
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_MORE);
    inflight_release(&s, 0); /* chunk 0 committed */
    inflight_restart(&s);    /* the reader died: again from row 1 */
    assert_int_equal(s.bytes_held, 0);
    /* The same bytes cut differently: the same chunk. */
    m = s_frame(0, "a\n", 2, 1, false);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_MORE);
    m = s_frame(0, "b\n", 2, 1, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_SAME);
    assert_int_equal(s.known, 1);
    m = s_frame(1, "c\nd\n", 4, 2, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_COMPLETE);
    assert_int_equal(k, 1);
    assert_memory_equal(s.chunks[1].data, "c\nd\n", 4);
    /* A third read returning other rows for chunk 0 is caught. */
    inflight_restart(&s);
    m = s_frame(0, "b\na\n", 4, 2, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_DIFFERS);
    inflight_free(&s);
}

static void test_out_of_order(void **state)
{
    (void)state;
    inflight_t s;
    int64_t k = -1;
    inflight_init(&s, 4);
    proto_msg_t m = s_frame(1, "x\n", 2, 1, true); /* chunk 0 skipped */
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_BAD);
    assert_int_equal(s.known, 0);
    m = s_frame(0, "x\n", 2, 1, true);
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_COMPLETE);
    m = s_frame(0, "x\n", 2, 1, true); /* chunk 0 again, no restart */
    assert_int_equal(inflight_on_data(&s, &m, &k), INFLIGHT_BAD);
    inflight_free(&s);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_cut_independent),
        cmocka_unit_test(test_chunks_and_credit),
        cmocka_unit_test(test_reread),
        cmocka_unit_test(test_out_of_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
