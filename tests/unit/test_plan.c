/* tests/unit/test_plan.c - chunk planning: keyset walks over in-memory key
 * sets (gaps, skew, duplicates, NULLs, one row, none), ctid ranges, and the
 * WHERE clauses. The property checked everywhere: every key falls in
 * exactly one chunk, and chunks hold about chunk_size rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"

typedef struct {
    const int64_t *keys; /* sorted non-NULL keys */
    size_t n;            /* how many */
    size_t pos;          /* keys consumed so far (cursor position) */
    int steps;           /* calls made */
} fake_cursor_t;

/* The cursor's MOVE FORWARD skip; FETCH 1 over the array. */
static bool fake_step(void *ctx, int64_t skip, bool *found, int64_t *key,
                      int64_t *moved)
{
    fake_cursor_t *c = ctx;
    c->steps++;
    size_t left = c->n - c->pos;
    *moved = (size_t)skip < left ? skip : (int64_t)left;
    c->pos += (size_t)*moved;
    *found = c->pos < c->n;
    if (*found) *key = c->keys[c->pos++];
    return true;
}

static bool in_chunk(const plan_chunk_t *c, int64_t k)
{
    if (c->kind != PLAN_KEY_RANGE) return false;
    return (!c->has_lo || k >= c->lo) && (!c->has_hi || k < c->hi);
}

/* Each key in exactly one range chunk; estimates add up to the keys, and
 * are exact per chunk when keys are unique. */
static void check_cover(const plan_t *p, const int64_t *keys, size_t n,
                        bool unique)
{
    int64_t *count = calloc(p->n, sizeof *count), total = 0;
    for (size_t i = 0; i < n; i++) {
        int hits = 0;
        for (size_t c = 0; c < p->n; c++)
            if (in_chunk(&p->chunks[c], keys[i])) {
                hits++;
                count[c]++;
            }
        assert_int_equal(hits, 1);
    }
    for (size_t c = 0; c < p->n; c++) {
        assert_int_equal(p->chunks[c].id, (int64_t)c);
        if (p->chunks[c].kind == PLAN_KEY_RANGE) {
            total += p->chunks[c].est_rows;
            if (unique) assert_int_equal(count[c], p->chunks[c].est_rows);
        }
    }
    assert_int_equal(total, (int64_t)n);
    free(count);
}

static void plan_keys(const int64_t *keys, size_t n, int64_t cs, int64_t nulls,
                      plan_t *p)
{
    fake_cursor_t c = {keys, n, 0, 0};
    assert_true(plan_keyset_walk(fake_step, &c, cs, nulls, p));
    bool unique = true;
    for (size_t i = 1; i < n; i++)
        if (keys[i] == keys[i - 1]) unique = false;
    check_cover(p, keys, n, unique);
}

static void test_dense(void **state)
{
    (void)state;
    int64_t keys[1000];
    for (int i = 0; i < 1000; i++)
        keys[i] = i + 1;
    plan_t p;
    plan_keys(keys, 1000, 100, 0, &p);
    assert_int_equal(p.n, 10);
    assert_int_equal(p.est_rows, 1000);
    for (size_t i = 0; i < p.n; i++)
        assert_int_equal(p.chunks[i].est_rows, 100);
    assert_false(p.chunks[0].has_lo); /* open below */
    assert_false(p.chunks[9].has_hi); /* open above */
    assert_int_equal(p.chunks[1].lo, 101);
    plan_free(&p);
}

static void test_gaps_and_skew(void **state)
{
    (void)state;
    /* 500 keys packed together, then 500 spread over a huge range. */
    int64_t keys[1000];
    for (int i = 0; i < 500; i++)
        keys[i] = i;
    for (int i = 0; i < 500; i++)
        keys[500 + i] = 1000000 + (int64_t)i * 9999991;
    plan_t p;
    plan_keys(keys, 1000, 250, 0, &p);
    assert_int_equal(p.n, 4); /* even by rows, whatever the key spread */
    for (size_t i = 0; i < p.n; i++)
        assert_int_equal(p.chunks[i].est_rows, 250);
    plan_free(&p);
}

static void test_uneven_tail(void **state)
{
    (void)state;
    int64_t keys[1005];
    for (int i = 0; i < 1005; i++)
        keys[i] = i * 3;
    plan_t p;
    plan_keys(keys, 1005, 100, 0, &p);
    assert_int_equal(p.n, 11);
    assert_int_equal(p.chunks[10].est_rows, 5);
    assert_int_equal(p.est_rows, 1005);
    plan_free(&p);
}

static void test_duplicates(void **state)
{
    (void)state;
    /* 300 rows with key 7 span several chunk_size windows: no empty range. */
    int64_t keys[400];
    for (int i = 0; i < 50; i++)
        keys[i] = i;
    for (int i = 50; i < 350; i++)
        keys[i] = 77;
    for (int i = 350; i < 400; i++)
        keys[i] = i;
    plan_t p;
    plan_keys(keys, 400, 40, 0, &p);
    for (size_t i = 0; i < p.n; i++)
        if (p.chunks[i].has_lo && p.chunks[i].has_hi)
            assert_true(p.chunks[i].lo < p.chunks[i].hi);
    plan_free(&p);
}

static void test_nulls(void **state)
{
    (void)state;
    int64_t keys[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    plan_t p;
    plan_keys(keys, 10, 4, 17, &p);
    assert_int_equal(p.n, 4); /* 3 ranges + the NULL chunk */
    assert_int_equal(p.chunks[3].kind, PLAN_KEY_NULL);
    assert_int_equal(p.chunks[3].est_rows, 17);
    assert_int_equal(p.est_rows, 27);
    plan_free(&p);
}

static void test_single_row(void **state)
{
    (void)state;
    int64_t keys[1] = {42};
    plan_t p;
    plan_keys(keys, 1, 50000, 0, &p);
    assert_int_equal(p.n, 1);
    assert_false(p.chunks[0].has_lo);
    assert_false(p.chunks[0].has_hi);
    assert_int_equal(p.chunks[0].est_rows, 1);
    plan_free(&p);
}

static void test_empty(void **state)
{
    (void)state;
    plan_t p;
    plan_keys(NULL, 0, 10, 0, &p);
    assert_int_equal(p.n, 1); /* one open chunk: copies nothing */
    assert_int_equal(p.est_rows, 0);
    plan_free(&p);
    plan_keys(NULL, 0, 10, 3, &p); /* only NULL keys */
    assert_int_equal(p.n, 2);
    assert_int_equal(p.chunks[1].kind, PLAN_KEY_NULL);
    plan_free(&p);
}

static void test_chunk_size_one(void **state)
{
    (void)state;
    int64_t keys[5] = {-9, -1, 0, 5, 1000};
    plan_t p;
    plan_keys(keys, 5, 1, 0, &p);
    assert_int_equal(p.n, 5);
    plan_free(&p);
}

static void test_walk_is_linear(void **state)
{
    (void)state;
    int64_t keys[1000];
    for (int i = 0; i < 1000; i++)
        keys[i] = i;
    fake_cursor_t c = {keys, 1000, 0, 0};
    plan_t p;
    assert_true(plan_keyset_walk(fake_step, &c, 100, 0, &p));
    assert_int_equal(c.steps, 11); /* one round trip per boundary, plus end */
    plan_free(&p);
}

static void test_equal_width(void **state)
{
    (void)state;
    plan_t p;
    assert_true(plan_equal_width(1, 1000, 1000, 100, 0, &p));
    assert_int_equal(p.n, 10);
    assert_false(p.chunks[0].has_lo);
    assert_int_equal(p.chunks[0].hi, 101);
    assert_int_equal(p.chunks[1].lo, 101);
    assert_false(p.chunks[9].has_hi);
    assert_int_equal(p.est_rows, 1000);
    int64_t keys[1000];
    for (int i = 0; i < 1000; i++)
        keys[i] = i + 1;
    check_cover(&p, keys, 1000, true);
    plan_free(&p);
    /* An uneven tail, and a NULL chunk. */
    assert_true(plan_equal_width(-50, 49, 100, 30, 7, &p));
    assert_int_equal(p.n, 5);
    assert_int_equal(p.chunks[3].est_rows, 10);
    assert_int_equal(p.chunks[4].kind, PLAN_KEY_NULL);
    assert_int_equal(p.est_rows, 107);
    plan_free(&p);
    /* Keys up to INT64_MAX: no overflow, last range open. */
    assert_true(plan_equal_width(INT64_MAX - 25, INT64_MAX, 26, 10, 0, &p));
    assert_int_equal(p.n, 3);
    assert_false(p.chunks[2].has_hi);
    assert_int_equal(p.chunks[2].lo, INT64_MAX - 5);
    plan_free(&p);
}

static void test_ctid(void **state)
{
    (void)state;
    plan_t p;
    assert_true(plan_ctid(1000, 50.0, 5000, &p)); /* 100 pages per chunk */
    assert_int_equal(p.n, 10);
    assert_int_equal(p.chunks[0].lo, 0);
    assert_int_equal(p.chunks[0].hi, 100);
    assert_false(p.chunks[9].has_hi); /* last range open-ended */
    for (size_t i = 1; i < p.n; i++)
        assert_int_equal(p.chunks[i].lo, p.chunks[i - 1].hi);
    plan_free(&p);
    assert_true(plan_ctid(0, 0, 5000, &p)); /* empty relation */
    assert_int_equal(p.n, 1);
    assert_false(p.chunks[0].has_hi);
    plan_free(&p);
    /* Block numbers beyond 32 bits stay exact. */
    assert_true(plan_ctid(6000000000LL, 1.0, 3000000000LL, &p));
    assert_int_equal(p.chunks[1].lo, 3000000000LL);
    plan_free(&p);
}

static void test_where(void **state)
{
    (void)state;
    char buf[256];
    plan_chunk_t c = {.kind = PLAN_KEY_RANGE,
                      .has_lo = true,
                      .has_hi = true,
                      .lo = -5,
                      .hi = 10};
    assert_true(plan_chunk_where(&c, "\"id\"", buf, sizeof buf));
    assert_string_equal(buf, " WHERE \"id\" >= -5 AND \"id\" < 10");
    c.has_lo = false;
    assert_true(plan_chunk_where(&c, "\"id\"", buf, sizeof buf));
    assert_string_equal(buf, " WHERE \"id\" < 10");
    c.has_hi = false;
    assert_true(plan_chunk_where(&c, "\"id\"", buf, sizeof buf));
    assert_string_equal(buf, " WHERE \"id\" IS NOT NULL");
    c.kind = PLAN_KEY_NULL;
    assert_true(plan_chunk_where(&c, "\"id\"", buf, sizeof buf));
    assert_string_equal(buf, " WHERE \"id\" IS NULL");
    c = (plan_chunk_t){
        .kind = PLAN_CTID, .has_lo = true, .lo = 7, .hi = 9, .has_hi = true};
    assert_true(plan_chunk_where(&c, "", buf, sizeof buf));
    assert_string_equal(buf,
                        " WHERE ctid >= '(7,0)'::tid AND ctid < '(9,0)'::tid");
    assert_false(plan_chunk_where(&c, "", buf, 10)); /* too small: refused */
}

int main(void)
{
    const struct CMUnitTest plan_tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_gaps_and_skew),
        cmocka_unit_test(test_uneven_tail),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_nulls),
        cmocka_unit_test(test_single_row),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_chunk_size_one),
        cmocka_unit_test(test_walk_is_linear),
        cmocka_unit_test(test_ctid),
        cmocka_unit_test(test_equal_width),
        cmocka_unit_test(test_where),
    };
    return cmocka_run_group_tests(plan_tests, NULL, NULL);
}
