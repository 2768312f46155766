/* tests/unit/test_proto.c - unit tests of common/proto.c: round trips,
 * hostile frames, and send/receive over real ZeroMQ inproc sockets. */
#include <errno.h>
#include <msgpack.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <cmocka.h>

#include "log.h"
#include "proto.h"

#define S_NKINDS          13   /* PROTO_READY..PROTO_REJECT */
#define S_WAIT_MS         2000 /* longest wait for an inproc message */
#define S_WAIT_STEP_MS    10   /* poll step while waiting */
#define S_FUZZ_ROUNDS     3000 /* mutations per kind */
#define S_MAX_TEST_FIELDS 24

static const proto_kind_t s_all_kinds[S_NKINDS] = {
    PROTO_READY, PROTO_ASSIGN,    PROTO_PROGRESS, PROTO_DONE,   PROTO_FAILED,
    PROTO_STOP,  PROTO_HEARTBEAT, PROTO_READ,     PROTO_CREDIT, PROTO_DATA,
    PROTO_END,   PROTO_WRITE,     PROTO_REJECT};

/* ------------------------------------------------------------------ */
/* Messages and frames built by hand                                   */

/* Column names as the wire carries them: each ended by a NUL; any other
 * byte goes (the worker quotes them). */
static const char s_cols[] = "id\0Some Name\0\"q\"\0a;b\n";

/* Set m's target fields (columns: n bytes at cols, copied). */
static void s_set_target(proto_msg_t *m, const char *schema, const char *table,
                         const char *cols, size_t n)
{
    snprintf(m->target_schema, sizeof m->target_schema, "%s", schema);
    snprintf(m->target_table, sizeof m->target_table, "%s", table);
    m->columns = malloc(n);
    assert_non_null(m->columns);
    memcpy(m->columns, cols, n);
    m->columns_len = n;
    m->binary = true; /* not the zero default */
}

/* A message of kind with every field of that kind set (others zero). */
static proto_msg_t s_sample(proto_kind_t kind)
{
    proto_msg_t m = {.kind = kind};
    switch (kind) {
    case PROTO_READY:
        strcpy(m.worker, "worker-7");
        m.pid = 4242;
        strcpy(m.source_id, "7312345678901234567/app db");
        break;
    case PROTO_ASSIGN:
        m.chunk_id = 12;
        m.attempt = 2;
        strcpy(m.snapshot, "00000003-0000001B-1");
        m.source_sql = strdup("COPY (SELECT * FROM t WHERE ctid >= '(0,0)' "
                              "AND ctid < '(100,0)') TO STDOUT");
        s_set_target(&m, "Public", "t;\"drop\"", s_cols, sizeof s_cols);
        m.key = malloc(sizeof "id\0Some Name");
        assert_non_null(m.key);
        memcpy(m.key, "id\0Some Name", sizeof "id\0Some Name");
        m.key_len = sizeof "id\0Some Name";
        strcpy(m.job_id, "job-20240501-1a2b");
        strcpy(m.state_schema, "mapper_state");
        m.reject_rows = true; /* not the zero default */
        break;
    case PROTO_PROGRESS:
    case PROTO_DONE:
        m.chunk_id = 12;
        m.attempt = 1;
        m.rows = 5000000000LL;
        m.bytes = INT64_C(1) << 40;
        m.already = kind == PROTO_DONE; /* not the zero default */
        m.rejected = kind == PROTO_DONE ? 7 : 0;
        break;
    case PROTO_REJECT:
        m.chunk_id = 12;
        m.attempt = 2;
        m.row_index = 1233;
        strcpy(m.sqlstate, "23514");
        m.message = strdup("new row for relation \"t\" violates check "
                           "constraint \"c\"");
        m.row = strdup("1234\tab\\tc\t\\N\n");
        break;
    case PROTO_FAILED:
        m.chunk_id = 12;
        m.attempt = 3;
        m.side = PROTO_SIDE_TARGET;
        strcpy(m.sqlstate, "23505");
        m.conn_bad = true;
        m.message = strdup("duplicate key value violates unique constraint");
        break;
    case PROTO_STOP: /* a refusal: not the "" of a finished job */
        m.message = strdup("source database 7312345678901234567/other is "
                           "not the job's");
        break;
    case PROTO_READ:
        m.attempt = 2;
        strcpy(m.snapshot, "00000003-0000001B-1");
        m.source_sql = strdup("COPY (SELECT * FROM (\nSELECT 1\n) AS q) TO "
                              "STDOUT");
        m.rows = 50000;
        m.limit = 8;
        break;
    case PROTO_CREDIT:
        m.attempt = 2;
        m.limit = INT64_C(1) << 33;
        break;
    case PROTO_DATA: /* rows are bytes: NULs and all */
        m.chunk_id = 12;
        m.attempt = 1;
        m.rows = 2;
        m.last = true;
        m.data_len = 7;
        m.data = malloc(m.data_len);
        memcpy(m.data, "a\0b\nc\xff\n", m.data_len);
        break;
    case PROTO_END:
        m.chunk_id = 40;
        m.attempt = 3;
        m.rows = 2000000;
        m.bytes = 123456789;
        break;
    case PROTO_WRITE:
        m.chunk_id = 12;
        m.attempt = 2;
        s_set_target(&m, "s", "t", "a\0", 2);
        strcpy(m.job_id, "job-7");
        strcpy(m.state_schema, "mapper");
        m.reject_rows = true;
        break;
    default:
        break;
    }
    return m;
}

static void s_assert_str_or_null(const char *a, const char *b)
{
    if (!a || !b) {
        assert_ptr_equal(a, b);
        return;
    }
    assert_string_equal(a, b);
}

static void s_assert_msg_equal(const proto_msg_t *a, const proto_msg_t *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->worker, b->worker);
    assert_int_equal(a->pid, b->pid);
    assert_int_equal(a->chunk_id, b->chunk_id);
    assert_int_equal(a->attempt, b->attempt);
    assert_string_equal(a->snapshot, b->snapshot);
    s_assert_str_or_null(a->source_sql, b->source_sql);
    assert_string_equal(a->target_schema, b->target_schema);
    assert_string_equal(a->target_table, b->target_table);
    assert_int_equal(a->columns_len, b->columns_len);
    if (a->columns_len)
        assert_memory_equal(a->columns, b->columns, a->columns_len);
    assert_int_equal(a->key_len, b->key_len);
    if (a->key_len) assert_memory_equal(a->key, b->key, a->key_len);
    assert_int_equal(a->binary, b->binary);
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->bytes, b->bytes);
    assert_int_equal(a->side, b->side);
    assert_string_equal(a->sqlstate, b->sqlstate);
    assert_int_equal(a->conn_bad, b->conn_bad);
    s_assert_str_or_null(a->message, b->message);
    assert_string_equal(a->job_id, b->job_id);
    assert_string_equal(a->state_schema, b->state_schema);
    assert_int_equal(a->already, b->already);
    assert_string_equal(a->source_id, b->source_id);
    assert_int_equal(a->limit, b->limit);
    assert_int_equal(a->last, b->last);
    assert_int_equal(a->data_len, b->data_len);
    if (a->data_len) assert_memory_equal(a->data, b->data, a->data_len);
    assert_int_equal(a->reject_rows, b->reject_rows);
    assert_int_equal(a->row_index, b->row_index);
    s_assert_str_or_null(a->row, b->row);
    assert_int_equal(a->rejected, b->rejected);
}

/* What a hand-built field's value is. */
typedef enum {
    V_STR,
    V_INT,
    V_UINT,
    V_BOOL,
    V_NIL,
    V_FLOAT,
    V_BIN,
    V_MAP,   /* an empty map */
    V_ARRAY, /* an empty array */
    V_RAW,   /* bytes s[0..n) as they are */
} s_vtype_t;

/* One hand-built key/value pair. */
typedef struct {
    const char *key; /* key bytes */
    size_t klen;     /* 0: strlen(key) */
    s_vtype_t t;     /* value type */
    const char *s;   /* V_STR, V_BIN, V_RAW bytes */
    size_t n;        /* 0: strlen(s) (V_STR, V_BIN) */
    int64_t i;       /* V_INT, V_BOOL */
    uint64_t u;      /* V_UINT */
} s_kv_t;

#define KV_STR(k, v)                                                           \
    {                                                                          \
        .key = (k), .t = V_STR, .s = (v)                                       \
    }
#define KV_INT(k, v)                                                           \
    {                                                                          \
        .key = (k), .t = V_INT, .i = (v)                                       \
    }
#define KV_BOOL(k, v)                                                          \
    {                                                                          \
        .key = (k), .t = V_BOOL, .i = (v)                                      \
    }

/* A hand-built message: up to S_MAX_TEST_FIELDS pairs. */
typedef struct {
    s_kv_t kv[S_MAX_TEST_FIELDS];
    size_t n;
} s_fields_t;

/* The valid wire form of s_sample(kind), built without proto_encode. */
static s_fields_t s_valid_fields(proto_kind_t kind)
{
    s_fields_t f = {.n = 0};
    f.kv[f.n++] = (s_kv_t)KV_STR("type", proto_kind_name(kind));
    f.kv[f.n++] = (s_kv_t)KV_INT("version", PROTO_VERSION);
    switch (kind) {
    case PROTO_READY:
        f.kv[f.n++] = (s_kv_t)KV_STR("worker", "worker-7");
        f.kv[f.n++] = (s_kv_t)KV_INT("pid", 4242);
        f.kv[f.n++] = (s_kv_t)KV_STR("source_id", "7312345678901234567/App DB");
        break;
    case PROTO_ASSIGN:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 12);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 2);
        f.kv[f.n++] = (s_kv_t)KV_STR("snapshot", "00000003-0000001B-1");
        f.kv[f.n++] = (s_kv_t)KV_STR("source_sql", "COPY (SELECT 1) TO STDOUT");
        f.kv[f.n++] = (s_kv_t)KV_STR("target_schema", "public");
        f.kv[f.n++] = (s_kv_t)KV_STR("target_table", "T t");
        f.kv[f.n++] =
            (s_kv_t){.key = "columns", .t = V_BIN, .s = "a\0b\0", .n = 4};
        f.kv[f.n++] = (s_kv_t)KV_BOOL("binary", 0);
        f.kv[f.n++] = (s_kv_t){.key = "key", .t = V_BIN, .s = "a\0", .n = 2};
        f.kv[f.n++] = (s_kv_t)KV_STR("job_id", "job-7");
        f.kv[f.n++] = (s_kv_t)KV_STR("state_schema", "Mapper State");
        f.kv[f.n++] = (s_kv_t)KV_BOOL("reject_rows", 1);
        break;
    case PROTO_PROGRESS:
    case PROTO_DONE:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 12);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_INT("rows", 5000000000LL);
        f.kv[f.n++] = (s_kv_t)KV_INT("bytes", 77);
        if (kind == PROTO_DONE) f.kv[f.n++] = (s_kv_t)KV_BOOL("already", 1);
        if (kind == PROTO_DONE) f.kv[f.n++] = (s_kv_t)KV_INT("rejected", 7);
        break;
    case PROTO_REJECT:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 12);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 2);
        f.kv[f.n++] = (s_kv_t)KV_INT("row_index", 1233);
        f.kv[f.n++] = (s_kv_t)KV_STR("sqlstate", "22P02");
        f.kv[f.n++] = (s_kv_t)KV_STR("message", "invalid input syntax");
        f.kv[f.n++] = (s_kv_t)KV_STR("row", "x\t\\N\n");
        break;
    case PROTO_FAILED:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 12);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 3);
        f.kv[f.n++] = (s_kv_t)KV_INT("side", 2);
        f.kv[f.n++] = (s_kv_t)KV_STR("sqlstate", "23505");
        f.kv[f.n++] = (s_kv_t)KV_BOOL("conn_bad", 1);
        f.kv[f.n++] = (s_kv_t)KV_STR("message", "boom");
        break;
    case PROTO_STOP:
        f.kv[f.n++] = (s_kv_t)KV_STR("message", "refused: wrong source");
        break;
    case PROTO_READ:
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_STR("snapshot", "00000003-0000001B-1");
        f.kv[f.n++] = (s_kv_t)KV_STR("source_sql", "COPY (SELECT 1) TO STDOUT");
        f.kv[f.n++] = (s_kv_t)KV_INT("rows", 1000);
        f.kv[f.n++] = (s_kv_t)KV_INT("limit", 4);
        break;
    case PROTO_CREDIT:
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_INT("limit", 5);
        break;
    case PROTO_DATA:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 3);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_INT("rows", 1);
        f.kv[f.n++] = (s_kv_t)KV_BOOL("last", 0);
        f.kv[f.n++] = (s_kv_t){.key = "data", .t = V_BIN, .s = "1\tx\n"};
        break;
    case PROTO_END:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 3);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_INT("rows", 3000);
        f.kv[f.n++] = (s_kv_t)KV_INT("bytes", 77);
        break;
    case PROTO_WRITE:
        f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 3);
        f.kv[f.n++] = (s_kv_t)KV_INT("attempt", 1);
        f.kv[f.n++] = (s_kv_t)KV_STR("target_schema", "public");
        f.kv[f.n++] = (s_kv_t)KV_STR("target_table", "t");
        f.kv[f.n++] =
            (s_kv_t){.key = "columns", .t = V_BIN, .s = "a\0", .n = 2};
        f.kv[f.n++] = (s_kv_t)KV_BOOL("binary", 1);
        f.kv[f.n++] = (s_kv_t){.key = "key", .t = V_BIN, .s = "", .n = 0};
        f.kv[f.n++] = (s_kv_t)KV_STR("job_id", "job-7");
        f.kv[f.n++] = (s_kv_t)KV_STR("state_schema", "mapper");
        f.kv[f.n++] = (s_kv_t)KV_BOOL("reject_rows", 0);
        break;
    default:
        break;
    }
    return f;
}

/* Index of key in f; fails the test when absent. */
static size_t s_find(const s_fields_t *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->kv[i].key, key)) return i;
    fail_msg("no key %s", key);
    return 0;
}

static void s_pack_kv(msgpack_packer *pk, msgpack_sbuffer *sb, const s_kv_t *kv)
{
    size_t klen = kv->klen ? kv->klen : strlen(kv->key);
    size_t n = kv->s && !kv->n ? strlen(kv->s) : kv->n;
    assert_int_equal(msgpack_pack_str_with_body(pk, kv->key, klen), 0);
    int rc = 0;
    switch (kv->t) {
    case V_STR:
        rc = msgpack_pack_str_with_body(pk, kv->s, n);
        break;
    case V_INT:
        rc = msgpack_pack_int64(pk, kv->i);
        break;
    case V_UINT:
        rc = msgpack_pack_uint64(pk, kv->u);
        break;
    case V_BOOL:
        rc = kv->i ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case V_NIL:
        rc = msgpack_pack_nil(pk);
        break;
    case V_FLOAT:
        rc = msgpack_pack_double(pk, 1.5);
        break;
    case V_BIN:
        rc = msgpack_pack_bin_with_body(pk, kv->s ? kv->s : "", n);
        break;
    case V_MAP:
        rc = msgpack_pack_map(pk, 0);
        break;
    case V_ARRAY:
        rc = msgpack_pack_array(pk, 0);
        break;
    case V_RAW:
        rc = msgpack_sbuffer_write(sb, kv->s, kv->n);
        break;
    }
    assert_int_equal(rc, 0);
}

/* Pack f as one map into sb (initialised here; caller destroys). */
static void s_build(const s_fields_t *f, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_map(&pk, (uint32_t)f->n), 0);
    for (size_t i = 0; i < f->n; i++)
        s_pack_kv(&pk, sb, &f->kv[i]);
}

/* Decoding must fail with a one-line reason containing want (if given),
 * and leave *out zeroed. */
static void s_expect_reject(const void *buf, size_t len, const char *want)
{
    static const proto_msg_t zero;
    proto_msg_t out;
    char err[PROTO_ERR_LEN];
    memset(&out, 0xa5, sizeof out);
    strcpy(err, "untouched");
    bool ok = proto_decode(buf, len, &out, err, sizeof err);
    if (ok) {
        proto_msg_clear(&out);
        fail_msg("frame of %zu bytes accepted, expected '%s'", len,
                 want ? want : "any error");
    }
    assert_true(err[0] != '\0');
    assert_string_not_equal(err, "untouched");
    assert_null(strchr(err, '\n'));
    if (want && !strstr(err, want))
        fail_msg("reason '%s' does not mention '%s'", err, want);
    assert_memory_equal(&out, &zero, sizeof out);
}

static void s_expect_reject_fields(const s_fields_t *f, const char *want)
{
    msgpack_sbuffer sb;
    s_build(f, &sb);
    s_expect_reject(sb.data, sb.size, want);
    msgpack_sbuffer_destroy(&sb);
}

static void s_expect_accept_fields(const s_fields_t *f, proto_msg_t *out)
{
    msgpack_sbuffer sb;
    char err[PROTO_ERR_LEN] = "";
    s_build(f, &sb);
    bool ok = proto_decode(sb.data, sb.size, out, err, sizeof err);
    msgpack_sbuffer_destroy(&sb);
    if (!ok) fail_msg("valid frame rejected: %s", err);
}

/* f with field key's value replaced by v. */
static s_fields_t s_with(proto_kind_t kind, const char *key, s_kv_t v)
{
    s_fields_t f = s_valid_fields(kind);
    v.key = key;
    f.kv[s_find(&f, key)] = v;
    return f;
}

/* ------------------------------------------------------------------ */
/* Encoding and round trips                                            */

static void test_kind_names(void **state)
{
    (void)state;
    static const char *const names[S_NKINDS] = {
        "ready", "assign", "progress", "done", "failed", "stop",  "heartbeat",
        "read",  "credit", "data",     "end",  "write",  "reject"};
    for (size_t i = 0; i < S_NKINDS; i++)
        assert_string_equal(proto_kind_name(s_all_kinds[i]), names[i]);
    assert_string_equal(proto_kind_name(0), "unknown");
    assert_string_equal(proto_kind_name(PROTO_REJECT + 1), "unknown");
}

/* The keys each kind must carry besides type and version (the contract in
 * proto.h, restated independently of proto.c). */
static const char *const *s_kind_keys(proto_kind_t kind)
{
    static const char *const ready[] = {"worker", "pid", "source_id", NULL};
    static const char *const assign[] = {
        "chunk_id",   "attempt",       "snapshot",
        "source_sql", "target_schema", "target_table",
        "columns",    "binary",        "key",
        "job_id",     "state_schema",  "reject_rows",
        NULL};
    static const char *const progress[] = {"chunk_id", "attempt", "rows",
                                           "bytes", NULL};
    static const char *const done[] = {"chunk_id", "attempt",  "rows", "bytes",
                                       "already",  "rejected", NULL};
    static const char *const reject[] = {
        "chunk_id", "attempt", "row_index", "sqlstate", "message", "row", NULL};
    static const char *const failed[] = {
        "chunk_id", "attempt", "side", "sqlstate", "conn_bad", "message", NULL};
    static const char *const stop[] = {"message", NULL};
    static const char *const read[] = {"attempt", "snapshot", "source_sql",
                                       "rows",    "limit",    NULL};
    static const char *const credit[] = {"attempt", "limit", NULL};
    static const char *const data[] = {"chunk_id", "attempt", "rows",
                                       "last",     "data",    NULL};
    static const char *const end[] = {"chunk_id", "attempt", "rows", "bytes",
                                      NULL};
    static const char *const write[] = {
        "chunk_id", "attempt", "target_schema", "target_table", "columns",
        "binary",   "key",     "job_id",        "state_schema", "reject_rows",
        NULL};
    static const char *const none[] = {NULL};
    switch (kind) {
    case PROTO_READY:
        return ready;
    case PROTO_ASSIGN:
        return assign;
    case PROTO_PROGRESS:
        return progress;
    case PROTO_DONE:
        return done;
    case PROTO_FAILED:
        return failed;
    case PROTO_STOP:
        return stop;
    case PROTO_READ:
        return read;
    case PROTO_CREDIT:
        return credit;
    case PROTO_DATA:
        return data;
    case PROTO_END:
        return end;
    case PROTO_WRITE:
        return write;
    case PROTO_REJECT:
        return reject;
    default:
        return none;
    }
}

/* The encoded frame is one map: "type" = kind name, "version" = 1, and
 * exactly the kind's keys, each once, with its wire type. */
static void s_check_wire(const char *buf, size_t len, proto_kind_t kind)
{
    msgpack_unpacked up;
    size_t off = 0;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
    const char *const *keys = s_kind_keys(kind);
    size_t nkeys = 0;
    while (keys[nkeys])
        nkeys++;
    assert_int_equal(up.data.via.map.size, 2 + nkeys);
    size_t matched = 0;
    for (uint32_t i = 0; i < up.data.via.map.size; i++) {
        const msgpack_object *k = &up.data.via.map.ptr[i].key;
        const msgpack_object *v = &up.data.via.map.ptr[i].val;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        char name[32] = "";
        assert_true(k->via.str.size < sizeof name);
        memcpy(name, k->via.str.ptr, k->via.str.size);
        if (!strcmp(name, "type")) {
            const char *want = proto_kind_name(kind);
            assert_int_equal(v->type, MSGPACK_OBJECT_STR);
            assert_int_equal(v->via.str.size, strlen(want));
            assert_memory_equal(v->via.str.ptr, want, strlen(want));
            continue;
        }
        if (!strcmp(name, "version")) {
            assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
            assert_int_equal(v->via.u64, PROTO_VERSION);
            continue;
        }
        size_t known = 0;
        for (size_t j = 0; keys[j]; j++)
            known += !strcmp(keys[j], name);
        if (known != 1)
            fail_msg("unexpected key %s in %s", name, proto_kind_name(kind));
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *prev = &up.data.via.map.ptr[j].key;
            if (prev->via.str.size == k->via.str.size &&
                !memcmp(prev->via.str.ptr, k->via.str.ptr, k->via.str.size))
                fail_msg("key %s twice in %s", name, proto_kind_name(kind));
        }
        matched++;
        if (!strcmp(name, "side"))
            assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        if (!strcmp(name, "conn_bad") || !strcmp(name, "already") ||
            !strcmp(name, "last") || !strcmp(name, "reject_rows"))
            assert_int_equal(v->type, MSGPACK_OBJECT_BOOLEAN);
        if (!strcmp(name, "data") || !strcmp(name, "columns") ||
            !strcmp(name, "key"))
            assert_int_equal(v->type, MSGPACK_OBJECT_BIN);
        if (!strcmp(name, "sqlstate") || !strcmp(name, "message") ||
            !strcmp(name, "worker") || !strcmp(name, "snapshot") ||
            !strcmp(name, "source_sql") || !strcmp(name, "target_schema") ||
            !strcmp(name, "target_table") || !strcmp(name, "job_id") ||
            !strcmp(name, "state_schema") || !strcmp(name, "source_id") ||
            !strcmp(name, "row"))
            assert_int_equal(v->type, MSGPACK_OBJECT_STR);
    }
    assert_int_equal(matched, nkeys);
    msgpack_unpacked_destroy(&up);
}

static void s_round_trip(const proto_msg_t *in)
{
    char *buf = NULL;
    size_t len = 0;
    proto_msg_t out;
    char err[PROTO_ERR_LEN] = "";
    assert_true(proto_encode(in, &buf, &len));
    assert_non_null(buf);
    assert_true(len > 0 && len <= PROTO_MAX_FRAME);
    s_check_wire(buf, len, in->kind);
    if (!proto_decode(buf, len, &out, err, sizeof err))
        fail_msg("own frame rejected: %s", err);
    s_assert_msg_equal(in, &out);
    proto_msg_clear(&out);
    free(buf);
}

static void test_round_trip_every_kind(void **state)
{
    (void)state;
    for (size_t i = 0; i < S_NKINDS; i++) {
        proto_msg_t m = s_sample(s_all_kinds[i]);
        s_round_trip(&m);
        proto_msg_clear(&m);
    }
}

static void s_expect_encode_fails(const proto_msg_t *m);

static void test_round_trip_limits(void **state)
{
    (void)state;
    proto_msg_t m = s_sample(PROTO_READY);
    memset(m.worker, 'w', PROTO_MAX_ID);
    m.worker[PROTO_MAX_ID] = '\0';
    m.pid = INT64_MAX;
    s_round_trip(&m);

    /* source_id: empty, and at its limit with every kind of byte but NUL
     * (it is compared, never parsed) */
    m = s_sample(PROTO_READY);
    m.source_id[0] = '\0';
    s_round_trip(&m);
    static const char any_bytes[] =
        " \t\n\r\x01\x1f\x7f\x80\xc3\xa9\xff\"'\\;/";
    for (size_t i = 0; i < PROTO_MAX_SOURCE_ID; i++)
        m.source_id[i] = any_bytes[i % (sizeof any_bytes - 1)];
    m.source_id[PROTO_MAX_SOURCE_ID] = '\0';
    s_round_trip(&m);
    memset(m.source_id, '9', PROTO_MAX_SOURCE_ID);
    m.source_id[PROTO_MAX_SOURCE_ID - 1] = 'z';
    s_round_trip(&m);

    /* stop: "" (the job is over), a multi-line reason with any bytes, and
     * a reason at its limit */
    static const char *const reasons[] = {"", "line one\nline two",
                                          "\x01\x7f\xff caf\xc3\xa9 \t\r"};
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
        m = s_sample(PROTO_STOP);
        free(m.message);
        m.message = strdup(reasons[i]);
        assert_non_null(m.message);
        s_round_trip(&m);
        proto_msg_clear(&m);
    }
    m = s_sample(PROTO_STOP);
    free(m.message);
    m.message = malloc(PROTO_MAX_MESSAGE + 1);
    assert_non_null(m.message);
    memset(m.message, 'r', PROTO_MAX_MESSAGE);
    m.message[PROTO_MAX_MESSAGE] = '\0';
    s_round_trip(&m);
    proto_msg_clear(&m);

    m = s_sample(PROTO_ASSIGN);
    free(m.source_sql);
    m.source_sql = malloc(PROTO_MAX_SQL + 1);
    assert_non_null(m.source_sql);
    memset(m.source_sql, 's', PROTO_MAX_SQL);
    m.source_sql[PROTO_MAX_SQL] = '\0';
    m.snapshot[0] = '\0'; /* no snapshot */
    m.chunk_id = 0;
    m.attempt = INT32_MAX;
    s_round_trip(&m);
    proto_msg_clear(&m);

    /* no ledger: job_id and state_schema empty */
    m = s_sample(PROTO_ASSIGN);
    m.job_id[0] = '\0';
    m.state_schema[0] = '\0';
    s_round_trip(&m);
    proto_msg_clear(&m);

    /* job_id at its limit, from the edges of its charset; state_schema at
     * its limit, with every kind of byte but NUL (it is quoted, not an id) */
    m = s_sample(PROTO_ASSIGN);
    memset(m.job_id, 'j', PROTO_MAX_ID);
    m.job_id[0] = '!';
    m.job_id[PROTO_MAX_ID - 1] = '~';
    m.job_id[PROTO_MAX_ID] = '\0';
    static const char schema_bytes[] =
        " \t\n\r\x01\x1f\x7f\x80\xc3\xa9\xff\"'\\;";
    for (size_t i = 0; i < PROTO_MAX_ID; i++)
        m.state_schema[i] = schema_bytes[i % (sizeof schema_bytes - 1)];
    m.state_schema[PROTO_MAX_ID] = '\0';
    s_round_trip(&m);
    proto_msg_clear(&m);

    m = s_sample(PROTO_DONE);
    m.rows = PROTO_MAX_COUNT;
    m.bytes = 0;
    m.chunk_id = INT64_MAX;
    s_round_trip(&m);
    m.rows = PROTO_MAX_COUNT + 1; /* counts stay far from overflowing */
    s_expect_encode_fails(&m);
    m.rows = PROTO_MAX_COUNT;
    m.already = false;
    s_round_trip(&m);
    m.already = true;
    m.rows = 0; /* already committed: nothing copied this attempt */
    s_round_trip(&m);

    static const char *const states[] = {"", "XX000", "40P01", "08006"};
    for (int side = PROTO_SIDE_NONE; side <= PROTO_SIDE_TARGET; side++) {
        for (size_t i = 0; i < sizeof states / sizeof *states; i++) {
            m = s_sample(PROTO_FAILED);
            m.side = (proto_side_t)side;
            strcpy(m.sqlstate, states[i]);
            m.conn_bad = (i % 2) == 0;
            free(m.message);
            m.message = strdup(side == 0 ? "" : "line one\nline two");
            s_round_trip(&m);
            proto_msg_clear(&m);
        }
    }
    m = s_sample(PROTO_FAILED);
    free(m.message);
    m.message = malloc(PROTO_MAX_MESSAGE + 1);
    assert_non_null(m.message);
    memset(m.message, 'm', PROTO_MAX_MESSAGE);
    m.message[PROTO_MAX_MESSAGE] = '\0';
    s_round_trip(&m);
    proto_msg_clear(&m);
}

/* Fields that do not belong to the kind are not sent. */
/* Stream data: any bytes up to PROTO_MAX_DATA, as msgpack bin only. */
static void test_data_limits(void **state)
{
    (void)state;
    proto_msg_t m = s_sample(PROTO_DATA);
    free(m.data);
    m.data_len = PROTO_MAX_DATA;
    m.data = malloc(m.data_len);
    for (size_t i = 0; i < m.data_len; i++)
        m.data[i] = (char)(i * 7);
    s_round_trip(&m);
    char *buf = NULL;
    size_t len = 0;
    m.data_len = PROTO_MAX_DATA + 1;
    m.data = realloc(m.data, m.data_len);
    assert_false(proto_encode(&m, &buf, &len));
    assert_null(buf);
    proto_msg_clear(&m);
    m = s_sample(PROTO_DATA); /* no bytes at all: an empty frame */
    free(m.data);
    m.data = NULL;
    m.data_len = 0;
    m.last = false;
    s_round_trip(&m);
    s_fields_t f = s_valid_fields(PROTO_DATA);
    f.kv[s_find(&f, "data")] = (s_kv_t)KV_STR("data", "1\tx\n");
    s_expect_reject_fields(&f, "must be binary");
    f = s_valid_fields(PROTO_CREDIT);
    f.kv[s_find(&f, "limit")] = (s_kv_t)KV_INT("limit", -1);
    s_expect_reject_fields(&f, "limit");
}

static void test_encode_only_kind_fields(void **state)
{
    (void)state;
    proto_msg_t m = s_sample(PROTO_HEARTBEAT);
    m.chunk_id = 5;
    m.rows = 9;
    strcpy(m.worker, "stray");
    strcpy(m.job_id, "stray-job");
    strcpy(m.state_schema, "stray schema");
    strcpy(m.source_id, "stray/source");
    m.message = strdup("stray message");
    assert_non_null(m.message);
    m.already = true;
    char *buf;
    size_t len;
    proto_msg_t out;
    char err[PROTO_ERR_LEN];
    assert_true(proto_encode(&m, &buf, &len));
    s_check_wire(buf, len, PROTO_HEARTBEAT);
    assert_true(proto_decode(buf, len, &out, err, sizeof err));
    assert_int_equal(out.kind, PROTO_HEARTBEAT);
    assert_int_equal(out.chunk_id, 0);
    assert_int_equal(out.rows, 0);
    assert_string_equal(out.worker, "");
    assert_string_equal(out.job_id, "");
    assert_string_equal(out.state_schema, "");
    assert_string_equal(out.source_id, "");
    assert_null(out.message);
    assert_false(out.already);
    proto_msg_clear(&out);
    proto_msg_clear(&m);
    free(buf);

    /* "already" belongs to done only, job_id and state_schema to assign
     * only: a progress (or failed) message never carries them, even when
     * set, and not even when over their limits */
    static const proto_kind_t others[] = {PROTO_PROGRESS, PROTO_FAILED,
                                          PROTO_READY};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        m = s_sample(others[i]);
        m.already = true;
        memset(m.job_id, 'j', sizeof m.job_id); /* not terminated */
        memset(m.state_schema, 's', sizeof m.state_schema);
        assert_true(proto_encode(&m, &buf, &len));
        s_check_wire(buf, len, others[i]);
        assert_true(proto_decode(buf, len, &out, err, sizeof err));
        assert_int_equal(out.kind, others[i]);
        assert_false(out.already);
        assert_string_equal(out.job_id, "");
        assert_string_equal(out.state_schema, "");
        proto_msg_clear(&out);
        proto_msg_clear(&m);
        free(buf);
    }
    /* and assign never carries "already" */
    m = s_sample(PROTO_ASSIGN);
    m.already = true;
    assert_true(proto_encode(&m, &buf, &len));
    s_check_wire(buf, len, PROTO_ASSIGN);
    assert_true(proto_decode(buf, len, &out, err, sizeof err));
    assert_false(out.already);
    assert_string_equal(out.job_id, m.job_id);
    proto_msg_clear(&out);
    proto_msg_clear(&m);
    free(buf);

    /* source_id belongs to ready only, message to failed, stop and reject:
     * every other kind leaves them out, even when set over their limits */
    for (size_t k = 0; k < S_NKINDS; k++) {
        proto_kind_t kind = s_all_kinds[k];
        bool has_source = kind == PROTO_READY;
        bool has_message =
            kind == PROTO_FAILED || kind == PROTO_STOP || kind == PROTO_REJECT;
        m = s_sample(kind);
        if (!has_source) /* not terminated */
            memset(m.source_id, 'i', sizeof m.source_id);
        if (!has_message) {
            m.message = malloc(PROTO_MAX_MESSAGE + 2);
            assert_non_null(m.message);
            memset(m.message, 'm', PROTO_MAX_MESSAGE + 1);
            m.message[PROTO_MAX_MESSAGE + 1] = '\0';
        }
        assert_true(proto_encode(&m, &buf, &len));
        s_check_wire(buf, len, kind);
        assert_true(proto_decode(buf, len, &out, err, sizeof err));
        assert_int_equal(out.kind, kind);
        if (has_source)
            assert_string_equal(out.source_id, m.source_id);
        else
            assert_string_equal(out.source_id, "");
        if (has_message)
            assert_string_equal(out.message, m.message);
        else
            assert_null(out.message);
        proto_msg_clear(&out);
        proto_msg_clear(&m);
        free(buf);
    }
}

static void s_expect_encode_fails(const proto_msg_t *m)
{
    char *buf = (char *)"sentinel";
    size_t len = 99;
    assert_false(proto_encode(m, &buf, &len));
    assert_null(buf);
    assert_int_equal(len, 0);
}

/* The upsert key: names like columns, but none at all is allowed (not an
 * upsert); a malformed list is refused on encode and on decode. */
static void test_key_field(void **state)
{
    (void)state;
    proto_msg_t m = s_sample(PROTO_ASSIGN);
    s_round_trip(&m); /* two names */
    size_t saved_len = m.key_len;
    m.key_len = 0; /* none: not an upsert */
    s_round_trip(&m);
    static const struct {
        const char *bytes;
        size_t n;
    } bad[] = {{"a", 1}, {"a\0b", 3}, {"\0", 1}, {"a\0\0", 3}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memcpy(m.key, bad[i].bytes, bad[i].n);
        m.key_len = bad[i].n;
        s_expect_encode_fails(&m);
    }
    m.key_len = saved_len;
    proto_msg_clear(&m);
    /* on decode: a key whose name is not ended by a NUL */
    s_fields_t f =
        s_with(PROTO_WRITE, "key", (s_kv_t){.t = V_BIN, .s = "id", .n = 2});
    s_expect_reject_fields(&f, "key");
    f = s_with(PROTO_ASSIGN, "key", (s_kv_t){.t = V_BIN, .s = "\0", .n = 1});
    s_expect_reject_fields(&f, "key");
    proto_msg_t out;
    f = s_valid_fields(PROTO_ASSIGN);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.key_len, 2);
    assert_memory_equal(out.key, "a\0", 2);
    proto_msg_clear(&out);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    proto_msg_t m = {.kind = 0};
    s_expect_encode_fails(&m);
    m.kind = PROTO_REJECT + 1;
    s_expect_encode_fails(&m);

    m = s_sample(PROTO_READY);
    m.worker[0] = '\0';
    s_expect_encode_fails(&m);
    strcpy(m.worker, "has space");
    s_expect_encode_fails(&m);
    memset(m.worker, 'w', sizeof m.worker); /* not terminated */
    s_expect_encode_fails(&m);
    m = s_sample(PROTO_READY);
    m.pid = 0;
    s_expect_encode_fails(&m);
    /* source_id: any bytes, but at most PROTO_MAX_SOURCE_ID */
    m = s_sample(PROTO_READY);
    memset(m.source_id, 'i', sizeof m.source_id); /* not terminated */
    s_expect_encode_fails(&m);

    m = s_sample(PROTO_ASSIGN);
    char *saved = m.source_sql;
    m.source_sql = NULL;
    s_expect_encode_fails(&m);
    m.source_sql = saved;
    /* target names: none, too long; columns: none, not ended by a NUL,
     * an empty name, a name too long */
    m.target_table[0] = '\0';
    s_expect_encode_fails(&m);
    memset(m.target_table, 't', PROTO_MAX_NAME);
    s_round_trip(&m);
    memset(m.target_schema, 's', sizeof m.target_schema); /* unterminated */
    s_expect_encode_fails(&m);
    snprintf(m.target_schema, sizeof m.target_schema, "s");
    char *cols = m.columns;
    m.columns = NULL;
    s_expect_encode_fails(&m);
    m.columns = cols;
    static const struct {
        const char *bytes;
        size_t n;
    } bad_cols[] = {{"a", 1}, {"a\0b", 3}, {"\0", 1}, {"a\0\0", 3}};
    size_t saved_len = m.columns_len;
    for (size_t i = 0; i < sizeof bad_cols / sizeof *bad_cols; i++) {
        memcpy(m.columns, bad_cols[i].bytes, bad_cols[i].n);
        m.columns_len = bad_cols[i].n;
        s_expect_encode_fails(&m);
    }
    m.columns_len = saved_len;
    proto_msg_clear(&m);
    m = s_sample(PROTO_ASSIGN);
    char name[PROTO_MAX_NAME + 2];
    memset(name, 'c', sizeof name);
    free(m.columns);
    m.columns = malloc(sizeof name);
    assert_non_null(m.columns);
    memcpy(m.columns, name, PROTO_MAX_NAME);
    m.columns[PROTO_MAX_NAME] = '\0';
    m.columns_len = PROTO_MAX_NAME + 1;
    s_round_trip(&m); /* the longest name */
    memcpy(m.columns, name, PROTO_MAX_NAME + 1);
    m.columns[PROTO_MAX_NAME + 1] = '\0';
    m.columns_len = PROTO_MAX_NAME + 2;
    s_expect_encode_fails(&m); /* one byte longer */
    proto_msg_clear(&m);
    m = s_sample(PROTO_ASSIGN);
    free(m.columns);
    m.columns_len = 2 * (PROTO_MAX_COLUMNS + 1);
    m.columns = malloc(m.columns_len);
    assert_non_null(m.columns);
    for (size_t i = 0; i < m.columns_len; i += 2)
        memcpy(m.columns + i, "x", 2);
    s_expect_encode_fails(&m); /* one name too many */
    m.columns_len -= 2;
    s_round_trip(&m); /* PROTO_MAX_COLUMNS names */
    proto_msg_clear(&m);
    m = s_sample(PROTO_ASSIGN);
    m.attempt = 0;
    s_expect_encode_fails(&m);
    m.attempt = 1;
    m.chunk_id = -1;
    s_expect_encode_fails(&m);
    memset(m.snapshot, 'x', sizeof m.snapshot); /* not terminated */
    m.chunk_id = 1;
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);

    /* job_id: an id (printable ASCII, no space), at most PROTO_MAX_ID */
    static const char *const bad_ids[] = {"job 1", "job\t1",    "job\n",
                                          "\x7f",  "j\xc3\xa9", "\x01"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        m = s_sample(PROTO_ASSIGN);
        strcpy(m.job_id, bad_ids[i]);
        s_expect_encode_fails(&m);
        proto_msg_clear(&m);
    }
    m = s_sample(PROTO_ASSIGN);
    memset(m.job_id, 'j', sizeof m.job_id); /* not terminated */
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);
    /* state_schema: any bytes, but at most PROTO_MAX_ID */
    m = s_sample(PROTO_ASSIGN);
    memset(m.state_schema, 's', sizeof m.state_schema); /* not terminated */
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);

    m = s_sample(PROTO_PROGRESS);
    m.rows = -1;
    s_expect_encode_fails(&m);
    m.rows = 0;
    m.bytes = -7;
    s_expect_encode_fails(&m);

    static const char *const bad_states[] = {"abcde", "4000", "40 01", "XX00!"};
    for (size_t i = 0; i < sizeof bad_states / sizeof *bad_states; i++) {
        m = s_sample(PROTO_FAILED);
        strcpy(m.sqlstate, bad_states[i]);
        s_expect_encode_fails(&m);
        proto_msg_clear(&m);
    }
    m = s_sample(PROTO_FAILED);
    m.side = (proto_side_t)3;
    s_expect_encode_fails(&m);
    m.side = PROTO_SIDE_SOURCE;
    free(m.message);
    m.message = NULL;
    s_expect_encode_fails(&m);
    m.message = malloc(PROTO_MAX_MESSAGE + 2);
    assert_non_null(m.message);
    memset(m.message, 'm', PROTO_MAX_MESSAGE + 1);
    m.message[PROTO_MAX_MESSAGE + 1] = '\0';
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);

    /* stop: message is required ("" is not NULL) and limited */
    m = s_sample(PROTO_STOP);
    free(m.message);
    m.message = NULL;
    s_expect_encode_fails(&m);
    m = (proto_msg_t){.kind = PROTO_STOP};
    s_expect_encode_fails(&m);
    m.message = malloc(PROTO_MAX_MESSAGE + 2);
    assert_non_null(m.message);
    memset(m.message, 'r', PROTO_MAX_MESSAGE + 1);
    m.message[PROTO_MAX_MESSAGE + 1] = '\0';
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);
}

/* The bad-rows fields: reject_rows only in assign, rejected only in done,
 * and a reject's row is exactly one COPY text line within its limit. */
static void test_reject_rows(void **state)
{
    (void)state;
    /* round trips: the smallest row, every byte but NUL and newline, the
     * largest row, a row index of 0, an assign without reject mode */
    proto_msg_t m = s_sample(PROTO_REJECT);
    free(m.row);
    m.row = strdup("\n");
    m.row_index = 0;
    s_round_trip(&m);
    char *row = malloc(PROTO_MAX_ROW + 2);
    assert_non_null(row);
    for (size_t i = 0; i < 300; i++)
        row[i] = (char)(i % 255 + 1) == '\n' ? '\t' : (char)(i % 255 + 1);
    row[299] = '\n';
    row[300] = '\0';
    free(m.row);
    m.row = strdup(row);
    s_round_trip(&m);
    memset(row, 'r', PROTO_MAX_ROW - 1);
    row[PROTO_MAX_ROW - 1] = '\n';
    row[PROTO_MAX_ROW] = '\0';
    free(m.row);
    m.row = strdup(row);
    s_round_trip(&m);
    /* one byte more does not encode */
    row[PROTO_MAX_ROW - 1] = 'r';
    row[PROTO_MAX_ROW] = '\n';
    row[PROTO_MAX_ROW + 1] = '\0';
    free(m.row);
    m.row = strdup(row);
    s_expect_encode_fails(&m);
    /* neither does a row that is not one line, nor none */
    static const char *const not_lines[] = {"", "x", "a\nb\n", "\n\n",
                                            "a\tb\n\n"};
    for (size_t i = 0; i < sizeof not_lines / sizeof *not_lines; i++) {
        free(m.row);
        m.row = strdup(not_lines[i]);
        s_expect_encode_fails(&m);
        s_fields_t f =
            s_with(PROTO_REJECT, "row", (s_kv_t)KV_STR("", not_lines[i]));
        s_expect_reject_fields(&f, "row");
    }
    free(m.row);
    m.row = NULL;
    s_expect_encode_fails(&m);
    proto_msg_clear(&m);
    m = s_sample(PROTO_ASSIGN);
    m.reject_rows = false;
    s_round_trip(&m);
    proto_msg_clear(&m);
    m = s_sample(PROTO_DONE);
    m.rejected = PROTO_MAX_COUNT;
    s_round_trip(&m);
    m.rejected = PROTO_MAX_COUNT + 1;
    s_expect_encode_fails(&m);
    m.rejected = -1;
    s_expect_encode_fails(&m);

    /* decoding: the limits, a NUL, negative numbers, missing fields */
    s_fields_t f =
        s_with(PROTO_REJECT, "row",
               (s_kv_t){.t = V_STR, .s = row, .n = PROTO_MAX_ROW + 1});
    s_expect_reject_fields(&f, "row");
    f = s_with(PROTO_REJECT, "row",
               (s_kv_t){.t = V_STR, .s = "a\0b\n", .n = 4});
    s_expect_reject_fields(&f, "NUL");
    f = s_with(PROTO_REJECT, "row", (s_kv_t){.t = V_BIN, .s = "a\n"});
    s_expect_reject_fields(&f, "row");
    f = s_with(PROTO_REJECT, "row_index", (s_kv_t)KV_INT("", -1));
    s_expect_reject_fields(&f, "row_index");
    f = s_with(PROTO_DONE, "rejected", (s_kv_t)KV_INT("", -1));
    s_expect_reject_fields(&f, "rejected");
    f = s_with(PROTO_ASSIGN, "reject_rows", (s_kv_t)KV_INT("", 1));
    s_expect_reject_fields(&f, "reject_rows");
    free(row);

    proto_msg_t out;
    f = s_valid_fields(PROTO_REJECT);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_REJECT);
    assert_int_equal(out.chunk_id, 12);
    assert_int_equal(out.attempt, 2);
    assert_int_equal(out.row_index, 1233);
    assert_string_equal(out.sqlstate, "22P02");
    assert_string_equal(out.message, "invalid input syntax");
    assert_string_equal(out.row, "x\t\\N\n");
    proto_msg_clear(&out);
    f = s_valid_fields(PROTO_ASSIGN);
    s_expect_accept_fields(&f, &out);
    assert_true(out.reject_rows);
    proto_msg_clear(&out);
    f = s_valid_fields(PROTO_DONE);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.rejected, 7);
    proto_msg_clear(&out);

    /* each new field stays in its kind */
    f = s_valid_fields(PROTO_DONE);
    f.kv[f.n++] = (s_kv_t)KV_BOOL("reject_rows", 1);
    s_expect_reject_fields(&f, "'reject_rows' not allowed in 'done'");
    f = s_valid_fields(PROTO_PROGRESS);
    f.kv[f.n++] = (s_kv_t)KV_INT("rejected", 1);
    s_expect_reject_fields(&f, "'rejected' not allowed in 'progress'");
    f = s_valid_fields(PROTO_FAILED);
    f.kv[f.n++] = (s_kv_t)KV_STR("row", "x\n");
    s_expect_reject_fields(&f, "'row' not allowed in 'failed'");
    f = s_valid_fields(PROTO_DONE);
    f.kv[f.n++] = (s_kv_t)KV_INT("row_index", 1);
    s_expect_reject_fields(&f, "'row_index' not allowed in 'done'");
    f = s_valid_fields(PROTO_REJECT);
    f.kv[f.n++] = (s_kv_t)KV_BOOL("conn_bad", 0);
    s_expect_reject_fields(&f, "'conn_bad' not allowed in 'reject'");
    f = s_valid_fields(PROTO_REJECT);
    f.kv[f.n++] = (s_kv_t)KV_INT("rejected", 1);
    s_expect_reject_fields(&f, "'rejected' not allowed in 'reject'");
    /* stray values are not sent by kinds without them */
    m = s_sample(PROTO_PROGRESS);
    m.rejected = 5;
    m.reject_rows = true;
    m.row_index = 9;
    m.row = strdup("two\nlines");
    char *buf;
    size_t len;
    char err[PROTO_ERR_LEN];
    assert_true(proto_encode(&m, &buf, &len));
    s_check_wire(buf, len, PROTO_PROGRESS);
    assert_true(proto_decode(buf, len, &out, err, sizeof err));
    assert_int_equal(out.rejected, 0);
    assert_false(out.reject_rows);
    assert_int_equal(out.row_index, 0);
    assert_null(out.row);
    proto_msg_clear(&out);
    proto_msg_clear(&m);
    free(buf);
}

/* ------------------------------------------------------------------ */
/* Hostile frames                                                      */

/* The hand-built frames are valid (so the rejections below mean something),
 * in any key order, and carry exactly the keys of the independent list. */
static void test_decode_hand_built(void **state)
{
    (void)state;
    for (size_t i = 0; i < S_NKINDS; i++) {
        s_fields_t f = s_valid_fields(s_all_kinds[i]);
        const char *const *keys = s_kind_keys(s_all_kinds[i]);
        size_t nkeys = 0;
        for (; keys[nkeys]; nkeys++)
            (void)s_find(&f, keys[nkeys]);
        assert_int_equal(f.n, 2 + nkeys);
        (void)s_find(&f, "type");
        (void)s_find(&f, "version");
        proto_msg_t out;
        s_expect_accept_fields(&f, &out);
        assert_int_equal(out.kind, s_all_kinds[i]);
        proto_msg_clear(&out);

        s_fields_t rev = {.n = f.n};
        for (size_t j = 0; j < f.n; j++)
            rev.kv[j] = f.kv[f.n - 1 - j];
        s_expect_accept_fields(&rev, &out);
        assert_int_equal(out.kind, s_all_kinds[i]);
        proto_msg_clear(&out);
    }
    proto_msg_t out;
    s_fields_t f = s_valid_fields(PROTO_FAILED);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.chunk_id, 12);
    assert_int_equal(out.attempt, 3);
    assert_int_equal(out.side, PROTO_SIDE_TARGET);
    assert_string_equal(out.sqlstate, "23505");
    assert_true(out.conn_bad);
    assert_string_equal(out.message, "boom");
    proto_msg_clear(&out);

    f = s_valid_fields(PROTO_ASSIGN);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.chunk_id, 12);
    assert_int_equal(out.attempt, 2);
    assert_string_equal(out.snapshot, "00000003-0000001B-1");
    assert_string_equal(out.source_sql, "COPY (SELECT 1) TO STDOUT");
    assert_string_equal(out.target_schema, "public");
    assert_string_equal(out.target_table, "T t");
    assert_int_equal(out.columns_len, 4);
    assert_memory_equal(out.columns, "a\0b\0", 4);
    assert_false(out.binary);
    assert_string_equal(out.job_id, "job-7");
    assert_string_equal(out.state_schema, "Mapper State");
    assert_false(out.already);
    proto_msg_clear(&out);

    f = s_valid_fields(PROTO_DONE);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.chunk_id, 12);
    assert_int_equal(out.attempt, 1);
    assert_int_equal(out.rows, 5000000000LL);
    assert_int_equal(out.bytes, 77);
    assert_true(out.already);
    proto_msg_clear(&out);
    f = s_with(PROTO_DONE, "already", (s_kv_t)KV_BOOL("", 0));
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_DONE);
    assert_false(out.already);
    proto_msg_clear(&out);

    f = s_valid_fields(PROTO_PROGRESS);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_PROGRESS);
    assert_false(out.already);
    proto_msg_clear(&out);

    f = s_valid_fields(PROTO_READY);
    s_expect_accept_fields(&f, &out);
    assert_string_equal(out.worker, "worker-7");
    assert_int_equal(out.pid, 4242);
    assert_string_equal(out.source_id, "7312345678901234567/App DB");
    assert_null(out.message);
    proto_msg_clear(&out);

    f = s_valid_fields(PROTO_STOP);
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_string_equal(out.message, "refused: wrong source");
    assert_string_equal(out.source_id, "");
    proto_msg_clear(&out);
    /* "" is a real, allocated empty string: the job is over */
    f = s_with(PROTO_STOP, "message", (s_kv_t)KV_STR("", ""));
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_non_null(out.message);
    assert_string_equal(out.message, "");
    proto_msg_clear(&out);
}

/* Which alternative value types count as "the same type" as a field's. */
static bool s_same_category(s_vtype_t a, s_vtype_t b)
{
    bool ia = a == V_INT || a == V_UINT, ib = b == V_INT || b == V_UINT;
    return a == b || (ia && ib);
}

static void test_decode_wrong_types(void **state)
{
    (void)state;
    static const s_kv_t alternatives[] = {
        {.t = V_STR, .s = "1"},
        {.t = V_INT, .i = 1},
        {.t = V_BOOL, .i = 1},
        {.t = V_NIL},
        {.t = V_FLOAT},
        {.t = V_BIN, .s = "x"},
        {.t = V_MAP},
        {.t = V_ARRAY},
        {.t = V_RAW, .s = "\xd4\x01\x00", .n = 3}, /* fixext 1 */
    };
    size_t tried = 0;
    for (size_t k = 0; k < S_NKINDS; k++) {
        s_fields_t base = s_valid_fields(s_all_kinds[k]);
        for (size_t i = 0; i < base.n; i++) {
            for (size_t a = 0; a < sizeof alternatives / sizeof *alternatives;
                 a++) {
                if (s_same_category(base.kv[i].t, alternatives[a].t)) continue;
                s_fields_t f = base;
                f.kv[i] = alternatives[a];
                f.kv[i].key = base.kv[i].key;
                bool nested =
                    alternatives[a].t == V_MAP || alternatives[a].t == V_ARRAY;
                s_expect_reject_fields(&f, nested ? "nested" : base.kv[i].key);
                tried++;
            }
        }
    }
    assert_true(tried > 200);
}

/* Every proper prefix of every kind's frame is refused. */
static void test_decode_truncated(void **state)
{
    (void)state;
    for (size_t k = 0; k < S_NKINDS; k++) {
        proto_msg_t m = s_sample(s_all_kinds[k]);
        char *buf;
        size_t len;
        assert_true(proto_encode(&m, &buf, &len));
        for (size_t n = 0; n < len; n++) {
            /* an exact-size copy so ASan sees any read past the prefix */
            char *prefix = malloc(n ? n : 1);
            assert_non_null(prefix);
            memcpy(prefix, buf, n);
            s_expect_reject(prefix, n, NULL);
            free(prefix);
        }
        free(buf);
        proto_msg_clear(&m);
    }
}

static void test_decode_oversized_strings(void **state)
{
    (void)state;
    char *big = malloc(PROTO_MAX_SQL + 2);
    assert_non_null(big);
    memset(big, 'a', PROTO_MAX_SQL + 1);
    big[PROTO_MAX_SQL + 1] = '\0';

    struct {
        proto_kind_t kind;
        const char *key;
        size_t len;
    } cases[] = {
        {PROTO_READY, "worker", PROTO_MAX_ID + 1},
        {PROTO_ASSIGN, "snapshot", PROTO_MAX_ID + 1},
        {PROTO_ASSIGN, "source_sql", PROTO_MAX_SQL + 1},
        {PROTO_ASSIGN, "target_schema", PROTO_MAX_NAME + 1},
        {PROTO_WRITE, "target_table", PROTO_MAX_NAME + 1},
        {PROTO_ASSIGN, "job_id", PROTO_MAX_ID + 1},
        {PROTO_ASSIGN, "state_schema", PROTO_MAX_ID + 1},
        {PROTO_FAILED, "message", PROTO_MAX_MESSAGE + 1},
        {PROTO_STOP, "message", PROTO_MAX_MESSAGE + 1},
        {PROTO_READY, "source_id", PROTO_MAX_SOURCE_ID + 1},
        {PROTO_FAILED, "sqlstate", PROTO_SQLSTATE_LEN + 1},
        {PROTO_READY, "type", PROTO_MAX_ID + 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        s_fields_t f =
            s_with(cases[i].kind, cases[i].key,
                   (s_kv_t){.t = V_STR, .s = big, .n = cases[i].len});
        s_expect_reject_fields(&f, cases[i].key);
        /* one byte less is within the limit (type: unknown, still refused) */
        if (!strcmp(cases[i].key, "type") || !strcmp(cases[i].key, "sqlstate"))
            continue;
        proto_msg_t out;
        f.kv[s_find(&f, cases[i].key)].n = cases[i].len - 1;
        s_expect_accept_fields(&f, &out);
        proto_msg_clear(&out);
    }
    free(big);

    /* empty where a value is required */
    s_fields_t f = s_with(PROTO_READY, "worker", (s_kv_t)KV_STR("", ""));
    s_expect_reject_fields(&f, "worker");
    f = s_with(PROTO_ASSIGN, "source_sql", (s_kv_t)KV_STR("", ""));
    s_expect_reject_fields(&f, "source_sql");
    f = s_with(PROTO_READY, "worker", (s_kv_t)KV_STR("", "bad id"));
    s_expect_reject_fields(&f, "worker");

    /* empty is allowed where "none" is meaningful */
    static const char *const may_be_empty[] = {"snapshot", "job_id",
                                               "state_schema"};
    for (size_t i = 0; i < sizeof may_be_empty / sizeof *may_be_empty; i++) {
        f = s_with(PROTO_ASSIGN, may_be_empty[i], (s_kv_t)KV_STR("", ""));
        proto_msg_t out;
        s_expect_accept_fields(&f, &out);
        assert_int_equal(out.kind, PROTO_ASSIGN);
        assert_string_equal(out.snapshot, i == 0 ? "" : "00000003-0000001B-1");
        assert_string_equal(out.job_id, i == 1 ? "" : "job-7");
        assert_string_equal(out.state_schema, i == 2 ? "" : "Mapper State");
        proto_msg_clear(&out);
    }
    f = s_with(PROTO_READY, "source_id", (s_kv_t)KV_STR("", ""));
    proto_msg_t out;
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.kind, PROTO_READY);
    assert_string_equal(out.source_id, "");
    assert_string_equal(out.worker, "worker-7");
    proto_msg_clear(&out);
    f = s_with(PROTO_STOP, "message", (s_kv_t)KV_STR("", ""));
    s_expect_accept_fields(&f, &out);
    assert_string_equal(out.message, "");
    proto_msg_clear(&out);
}

/* Id fields (worker, snapshot, job_id) take printable ASCII without space;
 * state_schema (quoted on use), source_id (compared only) and message (in
 * failed and stop) take any byte but NUL. */
static void test_decode_string_charsets(void **state)
{
    (void)state;
    static const char *const not_ids[] = {
        "a b", " ", "a\tb", "a\nb", "\x01", "\x7f", "caf\xc3\xa9", "\xff",
    };
    static const char *const ids[] = {"!", "~", "job-7", "A_b.c:d/e@f"};
    struct {
        proto_kind_t kind;
        const char *key;
        bool id;
    } cases[] = {
        {PROTO_READY, "worker", true},
        {PROTO_ASSIGN, "snapshot", true},
        {PROTO_ASSIGN, "job_id", true},
        {PROTO_ASSIGN, "state_schema", false},
        {PROTO_FAILED, "message", false},
        {PROTO_STOP, "message", false},
        {PROTO_READY, "source_id", false},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (size_t i = 0; i < sizeof not_ids / sizeof *not_ids; i++) {
            s_fields_t f = s_with(cases[c].kind, cases[c].key,
                                  (s_kv_t)KV_STR("", not_ids[i]));
            if (cases[c].id) {
                s_expect_reject_fields(&f, cases[c].key);
                continue;
            }
            proto_msg_t out;
            s_expect_accept_fields(&f, &out);
            const char *got = !strcmp(cases[c].key, "message") ? out.message
                              : !strcmp(cases[c].key, "source_id")
                                  ? out.source_id
                                  : out.state_schema;
            assert_string_equal(got, not_ids[i]);
            proto_msg_clear(&out);
        }
        for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
            s_fields_t f =
                s_with(cases[c].kind, cases[c].key, (s_kv_t)KV_STR("", ids[i]));
            proto_msg_t out;
            s_expect_accept_fields(&f, &out);
            proto_msg_clear(&out);
        }
    }
    /* the accepted bytes reach the message intact */
    s_fields_t f =
        s_with(PROTO_ASSIGN, "job_id", (s_kv_t)KV_STR("", "A_b.c:d/e@f"));
    proto_msg_t out;
    s_expect_accept_fields(&f, &out);
    assert_string_equal(out.job_id, "A_b.c:d/e@f");
    proto_msg_clear(&out);
    /* every byte value but NUL, in one source_id and one stop message */
    char all[256];
    for (size_t i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    s_fields_t bytes_ready =
        s_with(PROTO_READY, "source_id",
               (s_kv_t){.t = V_STR, .s = all, .n = PROTO_MAX_SOURCE_ID});
    s_expect_accept_fields(&bytes_ready, &out);
    assert_int_equal(strlen(out.source_id), PROTO_MAX_SOURCE_ID);
    assert_memory_equal(out.source_id, all, PROTO_MAX_SOURCE_ID);
    proto_msg_clear(&out);
    s_fields_t bytes_stop =
        s_with(PROTO_STOP, "message", (s_kv_t){.t = V_STR, .s = all, .n = 255});
    s_expect_accept_fields(&bytes_stop, &out);
    assert_int_equal(strlen(out.message), 255);
    assert_memory_equal(out.message, all, 255);
    proto_msg_clear(&out);
    s_fields_t tail = s_with(PROTO_READY, "source_id",
                             (s_kv_t){.t = V_STR, .s = all + 95, .n = 160});
    s_expect_accept_fields(&tail, &out); /* bytes 0x60..0xff */
    assert_memory_equal(out.source_id, all + 95, 160);
    proto_msg_clear(&out);
}

static void test_decode_unknown_type(void **state)
{
    (void)state;
    static const char *const types[] = {"bogus", "READY", "rewind", "readyy"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        s_fields_t f =
            s_with(PROTO_HEARTBEAT, "type", (s_kv_t)KV_STR("", types[i]));
        s_expect_reject_fields(&f, "unknown message type");
    }
    s_fields_t f = s_with(PROTO_HEARTBEAT, "type",
                          (s_kv_t){.t = V_STR, .s = "ready\0", .n = 6});
    s_expect_reject_fields(&f, "type");
    f = s_with(PROTO_HEARTBEAT, "type", (s_kv_t)KV_STR("", ""));
    s_expect_reject_fields(&f, "type");
}

static void test_decode_wrong_version(void **state)
{
    (void)state;
    const int64_t versions[] = {PROTO_VERSION + 1, 0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
        s_fields_t f =
            s_with(PROTO_STOP, "version", (s_kv_t)KV_INT("", versions[i]));
        s_expect_reject_fields(&f, "version");
    }
    s_fields_t f =
        s_with(PROTO_STOP, "version", (s_kv_t){.t = V_UINT, .u = UINT64_MAX});
    s_expect_reject_fields(&f, "version");
    f = s_with(PROTO_STOP, "version", (s_kv_t)KV_STR("", "1"));
    s_expect_reject_fields(&f, "version");
}

static void test_decode_missing_field(void **state)
{
    (void)state;
    for (size_t k = 0; k < S_NKINDS; k++) {
        s_fields_t base = s_valid_fields(s_all_kinds[k]);
        for (size_t i = 0; i < base.n; i++) {
            s_fields_t f = {.n = 0};
            for (size_t j = 0; j < base.n; j++)
                if (j != i) f.kv[f.n++] = base.kv[j];
            char want[64];
            snprintf(want, sizeof want, "missing field '%s'", base.kv[i].key);
            s_expect_reject_fields(&f, want);
        }
    }
    s_fields_t empty = {.n = 0};
    s_expect_reject_fields(&empty, "missing");
}

static void test_decode_unknown_field(void **state)
{
    (void)state;
    for (size_t k = 0; k < S_NKINDS; k++) {
        s_fields_t f = s_valid_fields(s_all_kinds[k]);
        f.kv[f.n++] = (s_kv_t)KV_INT("bogus", 1);
        s_expect_reject_fields(&f, "unknown field 'bogus'");
    }
    /* a real field of another kind */
    s_fields_t f = s_valid_fields(PROTO_READY);
    f.kv[f.n++] = (s_kv_t)KV_INT("rows", 5);
    s_expect_reject_fields(&f, "'rows' not allowed in 'ready'");
    f = s_valid_fields(PROTO_HEARTBEAT);
    f.kv[f.n++] = (s_kv_t)KV_INT("chunk_id", 5);
    s_expect_reject_fields(&f, "not allowed");
    /* the new fields stay in their own kinds */
    f = s_valid_fields(PROTO_PROGRESS);
    f.kv[f.n++] = (s_kv_t)KV_BOOL("already", 1);
    s_expect_reject_fields(&f, "'already' not allowed in 'progress'");
    f = s_valid_fields(PROTO_ASSIGN);
    f.kv[f.n++] = (s_kv_t)KV_BOOL("already", 0);
    s_expect_reject_fields(&f, "'already' not allowed in 'assign'");
    f = s_valid_fields(PROTO_DONE);
    f.kv[f.n++] = (s_kv_t)KV_STR("job_id", "job-7");
    s_expect_reject_fields(&f, "'job_id' not allowed in 'done'");
    f = s_valid_fields(PROTO_FAILED);
    f.kv[f.n++] = (s_kv_t)KV_STR("state_schema", "mapper");
    s_expect_reject_fields(&f, "'state_schema' not allowed in 'failed'");
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = (s_kv_t)KV_STR("job_id", "");
    s_expect_reject_fields(&f, "'job_id' not allowed in 'stop'");
    /* source_id only in ready, message only in failed, stop and reject */
    for (size_t k = 0; k < S_NKINDS; k++) {
        proto_kind_t kind = s_all_kinds[k];
        char want[96];
        if (kind != PROTO_READY) {
            f = s_valid_fields(kind);
            f.kv[f.n++] =
                (s_kv_t)KV_STR("source_id", "7312345678901234567/app");
            snprintf(want, sizeof want, "'source_id' not allowed in '%s'",
                     proto_kind_name(kind));
            s_expect_reject_fields(&f, want);
        }
        if (kind != PROTO_FAILED && kind != PROTO_STOP &&
            kind != PROTO_REJECT) {
            f = s_valid_fields(kind);
            f.kv[f.n++] = (s_kv_t)KV_STR("message", "");
            snprintf(want, sizeof want, "'message' not allowed in '%s'",
                     proto_kind_name(kind));
            s_expect_reject_fields(&f, want);
        }
    }
    /* stop takes nothing of failed's besides message */
    static const char *const failed_only[] = {"chunk_id", "attempt", "side",
                                              "sqlstate", "conn_bad"};
    for (size_t i = 0; i < sizeof failed_only / sizeof *failed_only; i++) {
        s_fields_t failed = s_valid_fields(PROTO_FAILED);
        char want[96];
        f = s_valid_fields(PROTO_STOP);
        f.kv[f.n++] = failed.kv[s_find(&failed, failed_only[i])];
        snprintf(want, sizeof want, "'%s' not allowed in 'stop'",
                 failed_only[i]);
        s_expect_reject_fields(&f, want);
    }
    /* a ready with "source" spelled as another kind's field */
    f = s_valid_fields(PROTO_READY);
    f.kv[s_find(&f, "source_id")].key = "source_sql";
    s_expect_reject_fields(&f, "'source_sql' not allowed in 'ready'");
    f = s_valid_fields(PROTO_STOP);
    f.kv[s_find(&f, "message")].key = "reason";
    s_expect_reject_fields(&f, "unknown field 'reason'");
    /* near misses of the new names */
    static const char *const near[] = {
        "job",           "jobid",     "job_id ",    "Job_id",   "state",
        "state_schemas", "alreadY",   "source",     "sourceid", "source_id ",
        "Source_id",     "source-id", "source_ids", "messages", "Message"};
    for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
        f = s_valid_fields(PROTO_ASSIGN);
        f.kv[f.n++] = (s_kv_t)KV_STR(near[i], "x");
        s_expect_reject_fields(&f, "unknown field");
    }
    for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
        f = s_valid_fields(PROTO_READY);
        f.kv[f.n++] = (s_kv_t)KV_STR(near[i], "x");
        s_expect_reject_fields(&f, "unknown field");
        f = s_valid_fields(PROTO_STOP);
        f.kv[f.n++] = (s_kv_t)KV_STR(near[i], "x");
        s_expect_reject_fields(&f, "unknown field");
    }
    f = s_valid_fields(PROTO_DONE);
    f.kv[s_find(&f, "already")].key = "Already";
    s_expect_reject_fields(&f, "unknown field 'Already'");
    f = s_valid_fields(PROTO_READY);
    f.kv[s_find(&f, "source_id")].key = "Source_id";
    s_expect_reject_fields(&f, "unknown field 'Source_id'");
    /* a key with a NUL after a real name, and an empty key */
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = (s_kv_t){.key = "pid\0x", .klen = 5, .t = V_INT, .i = 1};
    s_expect_reject_fields(&f, "unknown field");
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = (s_kv_t){.key = "", .klen = 0, .t = V_INT, .i = 1};
    s_expect_reject_fields(&f, "unknown field");
    /* a key that is not a string: map {1: 1} after type and version */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "stop", 4);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_int(&pk, PROTO_VERSION);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_int(&pk, 1);
    s_expect_reject(sb.data, sb.size, "not a string");
    msgpack_sbuffer_destroy(&sb);
}

static void test_decode_duplicate_key(void **state)
{
    (void)state;
    s_fields_t f = s_valid_fields(PROTO_HEARTBEAT);
    f.kv[f.n++] = (s_kv_t)KV_STR("type", "heartbeat");
    s_expect_reject_fields(&f, "duplicate field 'type'");
    f = s_valid_fields(PROTO_PROGRESS);
    f.kv[f.n++] = (s_kv_t)KV_INT("rows", 5);
    s_expect_reject_fields(&f, "duplicate field 'rows'");
    f = s_valid_fields(PROTO_FAILED);
    f.kv[f.n++] = f.kv[s_find(&f, "message")];
    s_expect_reject_fields(&f, "duplicate field 'message'");
    f = s_valid_fields(PROTO_DONE);
    f.kv[f.n++] = (s_kv_t)KV_BOOL("already", 0);
    s_expect_reject_fields(&f, "duplicate field 'already'");
    f = s_valid_fields(PROTO_ASSIGN);
    f.kv[f.n++] = f.kv[s_find(&f, "job_id")];
    s_expect_reject_fields(&f, "duplicate field 'job_id'");
    f = s_valid_fields(PROTO_ASSIGN);
    f.kv[f.n++] = (s_kv_t)KV_STR("state_schema", "other");
    s_expect_reject_fields(&f, "duplicate field 'state_schema'");
    f = s_valid_fields(PROTO_READY);
    f.kv[f.n++] = f.kv[s_find(&f, "source_id")];
    s_expect_reject_fields(&f, "duplicate field 'source_id'");
    f = s_valid_fields(PROTO_READY);
    f.kv[f.n++] = (s_kv_t)KV_STR("source_id", "");
    s_expect_reject_fields(&f, "duplicate field 'source_id'");
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = f.kv[s_find(&f, "message")];
    s_expect_reject_fields(&f, "duplicate field 'message'");
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = (s_kv_t)KV_STR("message", "");
    s_expect_reject_fields(&f, "duplicate field 'message'");
}

static void test_decode_too_many_fields(void **state)
{
    (void)state;
    for (size_t k = 0; k < S_NKINDS; k++) {
        s_fields_t f = s_valid_fields(s_all_kinds[k]);
        assert_true(f.n <= PROTO_MAX_FIELDS); /* the biggest kind fits */
        while (f.n <= PROTO_MAX_FIELDS)
            f.kv[f.n++] = (s_kv_t)KV_INT("bogus", 1);
        assert_int_equal(f.n, PROTO_MAX_FIELDS + 1);
        s_expect_reject_fields(&f, "entries");
    }
}

static void test_decode_trailing_bytes(void **state)
{
    (void)state;
    proto_msg_t m = s_sample(PROTO_HEARTBEAT);
    char *buf;
    size_t len;
    assert_true(proto_encode(&m, &buf, &len));
    char *two = malloc(2 * len);
    assert_non_null(two);
    memcpy(two, buf, len);
    memcpy(two + len, buf, len);
    s_expect_reject(two, 2 * len, "trailing"); /* two messages in one frame */
    two[len] = '\xc0';
    s_expect_reject(two, len + 1, "trailing"); /* a nil after the map */
    two[len] = '\x00';
    s_expect_reject(two, len + 1, "trailing"); /* a zero byte */
    free(two);
    free(buf);
}

static void test_decode_not_a_map(void **state)
{
    (void)state;
    static const unsigned char array[] = {0x92, 0xa4, 't', 'y', 'p', 'e',
                                          0xa4, 's',  't', 'o', 'p'};
    s_expect_reject(array, sizeof array, "not a map");
    static const unsigned char scalars[][1] = {{0xc0}, {0x01}, {0xc3}, {0xa0}};
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++)
        s_expect_reject(scalars[i], 1, "not a map");
}

/* Headers that announce more than the frame could hold: refused before
 * msgpack tries to allocate for them. */
static void test_decode_huge_headers(void **state)
{
    (void)state;
    static const unsigned char array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    s_expect_reject(array32, sizeof array32, "announces 4294967295 items");
    static const unsigned char map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    s_expect_reject(map32, sizeof map32, "announces 4294967295 items");
    static const unsigned char array16[] = {0xdc, 0xff, 0xff, 0xc0};
    s_expect_reject(array16, sizeof array16, "items");
    static const unsigned char str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
    s_expect_reject(str32, sizeof str32, "announces 4294967295 bytes");
    static const unsigned char bin32[] = {0xc6, 0x7f, 0xff, 0xff, 0xff};
    s_expect_reject(bin32, sizeof bin32, "bytes");
    static const unsigned char ext32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
    s_expect_reject(ext32, sizeof ext32, "bytes");

    /* a map32 of 100 entries with bytes for every one of them: more
     * entries than PROTO_MAX_FIELDS */
    size_t len = 5 + 2 * 100;
    unsigned char *many = calloc(1, len);
    assert_non_null(many);
    many[0] = 0xdf;
    many[4] = 100;
    memset(many + 5, 0xc0, len - 5);
    s_expect_reject(many, len, "at most 16");
    free(many);

    /* a huge string as a field value */
    s_fields_t f =
        s_with(PROTO_READY, "worker",
               (s_kv_t){.t = V_RAW, .s = "\xdb\xff\xff\xff\xff", .n = 5});
    s_expect_reject_fields(&f, "announces");
}

static void test_decode_nested(void **state)
{
    (void)state;
    s_fields_t f = s_with(PROTO_READY, "worker", (s_kv_t){.t = V_MAP});
    s_expect_reject_fields(&f, "nested");
    f = s_with(PROTO_READY, "pid", (s_kv_t){.t = V_ARRAY});
    s_expect_reject_fields(&f, "nested");
    f = s_valid_fields(PROTO_STOP);
    f.kv[f.n++] = (s_kv_t){.key = "bogus",
                           .t = V_RAW,
                           .s = "\x81\xa1k\x91\x01", /* {"k": [1]} */
                           .n = 5};
    s_expect_reject_fields(&f, "nested");

    /* 100,000 nested one-element arrays: no deep recursion anywhere */
    size_t len = 100001;
    unsigned char *deep = malloc(len);
    assert_non_null(deep);
    memset(deep, 0x91, len - 1);
    deep[len - 1] = 0xc0;
    s_expect_reject(deep, len, "nested");
    memset(deep, 0x81, len - 1); /* maps: {{{...}: nil}} */
    s_expect_reject(deep, len, NULL);
    free(deep);
}

static void test_decode_nul_in_string(void **state)
{
    (void)state;
    struct {
        proto_kind_t kind;
        const char *key;
    } cases[] = {
        {PROTO_READY, "worker"},        {PROTO_ASSIGN, "snapshot"},
        {PROTO_ASSIGN, "source_sql"},   {PROTO_ASSIGN, "target_schema"},
        {PROTO_WRITE, "target_table"},  {PROTO_FAILED, "message"},
        {PROTO_FAILED, "sqlstate"},     {PROTO_ASSIGN, "job_id"},
        {PROTO_ASSIGN, "state_schema"}, {PROTO_READY, "source_id"},
        {PROTO_STOP, "message"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        s_fields_t f = s_with(cases[i].kind, cases[i].key,
                              (s_kv_t){.t = V_STR, .s = "40\0001", .n = 5});
        s_expect_reject_fields(&f, "NUL");
        /* a NUL as the only byte, and as the last byte of a full-length
         * value (strnlen would hide it) */
        f = s_with(cases[i].kind, cases[i].key,
                   (s_kv_t){.t = V_STR, .s = "\0", .n = 1});
        s_expect_reject_fields(&f, "NUL");
    }
    char full[PROTO_MAX_ID];
    memset(full, 'a', sizeof full);
    full[PROTO_MAX_ID - 1] = '\0';
    static const char *const ids[] = {"job_id", "state_schema", "snapshot"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        s_fields_t f =
            s_with(PROTO_ASSIGN, ids[i],
                   (s_kv_t){.t = V_STR, .s = full, .n = sizeof full});
        s_expect_reject_fields(&f, "NUL");
    }
    /* source_id and message at their limits, a NUL last or first */
    struct {
        proto_kind_t kind;
        const char *key;
        size_t max;
    } longs[] = {
        {PROTO_READY, "source_id", PROTO_MAX_SOURCE_ID},
        {PROTO_STOP, "message", PROTO_MAX_MESSAGE},
        {PROTO_FAILED, "message", PROTO_MAX_MESSAGE},
    };
    char *text = malloc(PROTO_MAX_MESSAGE);
    assert_non_null(text);
    for (size_t i = 0; i < sizeof longs / sizeof *longs; i++) {
        memset(text, 'a', longs[i].max);
        text[longs[i].max - 1] = '\0';
        s_fields_t f =
            s_with(longs[i].kind, longs[i].key,
                   (s_kv_t){.t = V_STR, .s = text, .n = longs[i].max});
        s_expect_reject_fields(&f, "NUL");
        text[longs[i].max - 1] = 'a';
        text[0] = '\0';
        s_expect_reject_fields(&f, "NUL");
        text[0] = 'a'; /* and without the NUL, the same frame is fine */
        proto_msg_t out;
        s_expect_accept_fields(&f, &out);
        proto_msg_clear(&out);
    }
    free(text);
}

static void test_decode_invalid_sqlstate(void **state)
{
    (void)state;
    static const char *const bad[] = {"4000",
                                      "400011",
                                      "4000a",
                                      "40 01",
                                      "40-01",
                                      "\xc3\xa9"
                                      "000",
                                      "     "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_fields_t f =
            s_with(PROTO_FAILED, "sqlstate", (s_kv_t)KV_STR("", bad[i]));
        s_expect_reject_fields(&f, "sqlstate");
    }
    static const char *const good[] = {"", "XX000", "40P01", "57014"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        s_fields_t f =
            s_with(PROTO_FAILED, "sqlstate", (s_kv_t)KV_STR("", good[i]));
        proto_msg_t out;
        s_expect_accept_fields(&f, &out);
        assert_string_equal(out.sqlstate, good[i]);
        proto_msg_clear(&out);
    }
}

static void test_decode_out_of_range(void **state)
{
    (void)state;
    struct {
        proto_kind_t kind;
        const char *key;
        int64_t value;
    } cases[] = {
        {PROTO_ASSIGN, "chunk_id", -1},
        {PROTO_ASSIGN, "attempt", 0},
        {PROTO_DONE, "attempt", -5},
        {PROTO_DONE, "attempt", INT64_C(1) << 31},
        {PROTO_PROGRESS, "rows", -1},
        {PROTO_PROGRESS, "bytes", -1},
        {PROTO_READY, "pid", 0},
        {PROTO_READY, "pid", -1},
        {PROTO_FAILED, "side", 3},
        {PROTO_FAILED, "side", -1},
        {PROTO_FAILED, "chunk_id", INT64_MIN},
        {PROTO_DONE, "rows", PROTO_MAX_COUNT + 1},
        {PROTO_PROGRESS, "bytes", PROTO_MAX_COUNT + 1},
        {PROTO_DONE, "rejected", PROTO_MAX_COUNT + 1},
        {PROTO_REJECT, "row_index", PROTO_MAX_COUNT + 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        s_fields_t f = s_with(cases[i].kind, cases[i].key,
                              (s_kv_t)KV_INT("", cases[i].value));
        s_expect_reject_fields(&f, cases[i].key);
    }
    s_fields_t f = s_with(PROTO_READY, "pid",
                          (s_kv_t){.t = V_UINT, .u = (uint64_t)INT64_MAX + 1});
    s_expect_reject_fields(&f, "too large");
    /* int formats holding a valid value are fine: int8 0x05 for attempt */
    f = s_with(PROTO_DONE, "attempt",
               (s_kv_t){.t = V_RAW, .s = "\xd0\x05", .n = 2});
    proto_msg_t out;
    s_expect_accept_fields(&f, &out);
    assert_int_equal(out.attempt, 5);
    proto_msg_clear(&out);
}

static void test_decode_frame_bounds(void **state)
{
    (void)state;
    s_expect_reject(NULL, 0, "empty");
    s_expect_reject("", 0, "empty");
    s_expect_reject(NULL, 10, "empty");

    proto_msg_t m = s_sample(PROTO_HEARTBEAT);
    char *buf;
    size_t len;
    assert_true(proto_encode(&m, &buf, &len));
    char *big = calloc(1, PROTO_MAX_FRAME + 1);
    assert_non_null(big);
    memcpy(big, buf, len);
    s_expect_reject(big, PROTO_MAX_FRAME + 1, "more than");
    proto_msg_t out;
    char err[PROTO_ERR_LEN];
    assert_true(proto_decode(big, len, &out, err, sizeof err));
    assert_int_equal(out.kind, PROTO_HEARTBEAT);
    free(big);
    free(buf);

    static const unsigned char never_used[] = {0x81, 0xa4, 't', 'y',
                                               'p',  'e',  0xc1};
    s_expect_reject(never_used, sizeof never_used, "0xc1");

    /* a small err buffer is filled and terminated, never overrun */
    char small[8];
    memset(small, 'z', sizeof small);
    static const unsigned char array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_false(
        proto_decode(array32, sizeof array32, &out, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_false(proto_decode(array32, sizeof array32, &out, NULL, 0));
}

/* Every msgpack format is walked to its true end: strings land in
 * "message" (of failed and of stop), "state_schema" and "source_id",
 * integers in "rows", booleans in "already",
 * and everything else is refused by type (not as truncated or trailing,
 * which a wrong length would cause). */
static void test_decode_every_format(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        char is; /* 's' string "ab", 'i' integer 7, 'f'/'t' false/true,
                    'x' other */
    } values[] = {
#define V(b, is) {b, sizeof b - 1, is}
        V("\xc0", 'x'),
        V("\xc2", 'f'),
        V("\xc3", 't'),
        V("\xc4\x02"
          "ab",
          'x'),
        V("\xc5\x00\x02"
          "ab",
          'x'),
        V("\xc6\x00\x00\x00\x02"
          "ab",
          'x'),
        V("\xc7\x02\x01"
          "ab",
          'x'),
        V("\xc8\x00\x02\x01"
          "ab",
          'x'),
        V("\xc9\x00\x00\x00\x02\x01"
          "ab",
          'x'),
        V("\xca\x3f\x80\x00\x00", 'x'),
        V("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 'x'),
        V("\x07", 'i'),
        V("\xcc\x07", 'i'),
        V("\xcd\x00\x07", 'i'),
        V("\xce\x00\x00\x00\x07", 'i'),
        V("\xcf\x00\x00\x00\x00\x00\x00\x00\x07", 'i'),
        V("\xd0\x07", 'i'),
        V("\xd1\x00\x07", 'i'),
        V("\xd2\x00\x00\x00\x07", 'i'),
        V("\xd3\x00\x00\x00\x00\x00\x00\x00\x07", 'i'),
        V("\xd4\x01"
          "a",
          'x'),
        V("\xd5\x01"
          "ab",
          'x'),
        V("\xd6\x01"
          "abcd",
          'x'),
        V("\xd7\x01"
          "abcdefgh",
          'x'),
        V("\xd8\x01"
          "abcdefghijklmnop",
          'x'),
        V("\xa2"
          "ab",
          's'),
        V("\xd9\x02"
          "ab",
          's'),
        V("\xda\x00\x02"
          "ab",
          's'),
        V("\xdb\x00\x00\x00\x02"
          "ab",
          's'),
#undef V
    };
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        s_kv_t raw = {.t = V_RAW, .s = values[i].bytes, .n = values[i].n};
        s_fields_t as_int = s_with(PROTO_PROGRESS, "rows", raw);
        s_fields_t as_str = s_with(PROTO_FAILED, "message", raw);
        s_fields_t as_schema = s_with(PROTO_ASSIGN, "state_schema", raw);
        s_fields_t as_bool = s_with(PROTO_DONE, "already", raw);
        s_fields_t as_source = s_with(PROTO_READY, "source_id", raw);
        s_fields_t as_stop = s_with(PROTO_STOP, "message", raw);
        proto_msg_t out;
        if (values[i].is == 'i') {
            s_expect_accept_fields(&as_int, &out);
            assert_int_equal(out.rows, 7);
            proto_msg_clear(&out);
        } else {
            s_expect_reject_fields(&as_int, "field 'rows' must be an integer");
        }
        if (values[i].is == 's') {
            s_expect_accept_fields(&as_str, &out);
            assert_string_equal(out.message, "ab");
            proto_msg_clear(&out);
        } else {
            s_expect_reject_fields(&as_str, "field 'message' must be a string");
        }
        if (values[i].is == 's') {
            s_expect_accept_fields(&as_schema, &out);
            assert_string_equal(out.state_schema, "ab");
            proto_msg_clear(&out);
        } else {
            s_expect_reject_fields(&as_schema,
                                   "field 'state_schema' must be a string");
        }
        if (values[i].is == 'f' || values[i].is == 't') {
            s_expect_accept_fields(&as_bool, &out);
            assert_int_equal(out.already, values[i].is == 't');
            proto_msg_clear(&out);
        } else {
            s_expect_reject_fields(&as_bool, "field 'already' must be a bool");
        }
        if (values[i].is == 's') {
            s_expect_accept_fields(&as_source, &out);
            assert_string_equal(out.source_id, "ab");
            proto_msg_clear(&out);
            s_expect_accept_fields(&as_stop, &out);
            assert_int_equal(out.kind, PROTO_STOP);
            assert_string_equal(out.message, "ab");
            proto_msg_clear(&out);
        } else {
            s_expect_reject_fields(&as_source,
                                   "field 'source_id' must be a string");
            s_expect_reject_fields(&as_stop,
                                   "field 'message' must be a string");
        }
    }
}

/* Random mutations of valid frames: never a crash (ASan/valgrind watch),
 * and whatever is accepted re-encodes to an equal message. */
static uint64_t s_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_decode_fuzz(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    size_t accepted = 0, rejected = 0;
    for (size_t k = 0; k < S_NKINDS; k++) {
        proto_msg_t m = s_sample(s_all_kinds[k]);
        char *buf;
        size_t len;
        assert_true(proto_encode(&m, &buf, &len));
        proto_msg_clear(&m);
        for (size_t r = 0; r < S_FUZZ_ROUNDS; r++) {
            size_t n = len + s_rand(&seed) % 4;
            unsigned char *mut = malloc(n);
            assert_non_null(mut);
            memcpy(mut, buf, n < len ? n : len);
            for (size_t i = len; i < n; i++)
                mut[i] = (unsigned char)s_rand(&seed);
            size_t flips = 1 + s_rand(&seed) % 3;
            for (size_t i = 0; i < flips; i++)
                mut[s_rand(&seed) % n] = (unsigned char)s_rand(&seed);
            size_t cut = s_rand(&seed) % 8 == 0 ? s_rand(&seed) % n : n;

            proto_msg_t out;
            char err[PROTO_ERR_LEN];
            if (proto_decode(mut, cut, &out, err, sizeof err)) {
                accepted++;
                char *again;
                size_t again_len;
                proto_msg_t back;
                assert_true(proto_encode(&out, &again, &again_len));
                assert_true(
                    proto_decode(again, again_len, &back, err, sizeof err));
                s_assert_msg_equal(&out, &back);
                proto_msg_clear(&back);
                proto_msg_clear(&out);
                free(again);
            } else {
                rejected++;
                assert_true(err[0] != '\0');
            }
            free(mut);
        }
        free(buf);
    }
    assert_true(rejected > 0);
    assert_true(accepted > 0); /* some flips hit string bytes and survive */
}

static void test_peer_text(void **state)
{
    (void)state;
    char buf[PROTO_PEER_TEXT];
    assert_string_equal(proto_peer_text("worker-1", 8, buf, sizeof buf),
                        "worker-1");
    assert_string_equal(
        proto_peer_text("\x00\x80\x00\x41\xa7", 5, buf, sizeof buf),
        "0x00800041a7");
    assert_string_equal(proto_peer_text("a b", 3, buf, sizeof buf), "0x612062");
    assert_string_equal(proto_peer_text("", 0, buf, sizeof buf), "(empty)");
    unsigned char id[PROTO_MAX_PEER];
    memset(id, 0xff, sizeof id);
    proto_peer_text(id, sizeof id, buf, sizeof buf);
    assert_int_equal(strlen(buf), 2 + 2 * PROTO_MAX_PEER);
    char tiny[5];
    memset(tiny, 'z', sizeof tiny);
    assert_string_equal(proto_peer_text("\x01\x02\x03", 3, tiny, sizeof tiny),
                        "0x01");
    assert_string_equal(proto_peer_text("abcdefgh", 8, tiny, sizeof tiny),
                        "abcd");
}

/* ------------------------------------------------------------------ */
/* ZeroMQ: ROUTER <-> DEALER over inproc                               */

typedef struct {
    void *ctx;
    void *router;
    void *dealer;
    void *extra; /* a second dealer, when a test makes one */
    char endpoint[64];
} s_zmq_t;

#define S_DEALER_ID "worker-1"

static int s_zmq_setup(void **state)
{
    static int counter;
    s_zmq_t *z = calloc(1, sizeof *z);
    if (!z) return -1;
    *state = z; /* s_zmq_teardown frees whatever was built */
    snprintf(z->endpoint, sizeof z->endpoint, "inproc://test-proto-%d",
             ++counter);
    z->ctx = zmq_ctx_new();
    z->router = zmq_socket(z->ctx, ZMQ_ROUTER);
    z->dealer = zmq_socket(z->ctx, ZMQ_DEALER);
    if (!z->ctx || !z->router || !z->dealer) return -1;
    if (!proto_socket_setup(z->router, true)) return -1;
    if (!proto_socket_setup(z->dealer, false)) return -1;
    if (zmq_setsockopt(z->dealer, ZMQ_ROUTING_ID, S_DEALER_ID,
                       strlen(S_DEALER_ID)) != 0)
        return -1;
    if (zmq_bind(z->router, z->endpoint) != 0) return -1;
    if (zmq_connect(z->dealer, z->endpoint) != 0) return -1;
    return 0;
}

static int s_zmq_teardown(void **state)
{
    s_zmq_t *z = *state;
    if (!z) return 0;
    if (z->extra) zmq_close(z->extra);
    if (z->dealer) zmq_close(z->dealer);
    if (z->router) zmq_close(z->router);
    if (z->ctx) zmq_ctx_term(z->ctx);
    free(z);
    return 0;
}

/* proto_recv, waiting up to S_WAIT_MS for something to arrive. Returns 1 on
 * a message, -1 when a malformed one was dropped (errno EPROTO), 0 when
 * nothing came. */
static int s_recv_wait(void *socket, void *peer, size_t cap, size_t *peer_len,
                       proto_msg_t *out)
{
    for (int waited = 0;; waited += S_WAIT_STEP_MS) {
        errno = 0;
        if (proto_recv(socket, peer, cap, peer_len, out)) return 1;
        if (errno != EAGAIN) {
            assert_int_equal(errno, EPROTO);
            return -1;
        }
        if (waited >= S_WAIT_MS) return 0;
        zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
        zmq_poll(&item, 1, S_WAIT_STEP_MS);
    }
}

/* Nothing more is waiting on socket. */
static void s_assert_empty(void *socket, bool router)
{
    char peer[PROTO_MAX_PEER];
    size_t peer_len;
    proto_msg_t out;
    errno = 0;
    assert_false(
        proto_recv(socket, router ? peer : NULL, sizeof peer, &peer_len, &out));
    assert_int_equal(errno, EAGAIN);
}

static void test_zmq_socket_options(void **state)
{
    s_zmq_t *z = *state;
    void *sockets[] = {z->router, z->dealer};
    for (size_t i = 0; i < 2; i++) {
        int linger = -1;
        int64_t max = 0;
        size_t size = sizeof linger;
        assert_int_equal(zmq_getsockopt(sockets[i], ZMQ_LINGER, &linger, &size),
                         0);
        assert_int_equal(linger, 0);
        size = sizeof max;
        assert_int_equal(
            zmq_getsockopt(sockets[i], ZMQ_MAXMSGSIZE, &max, &size), 0);
        assert_int_equal(max, PROTO_MAX_FRAME);
    }
    /* ROUTER_MANDATORY: a message for an unknown peer is an error, not
     * silently dropped */
    proto_msg_t m = s_sample(PROTO_STOP);
    errno = 0;
    assert_false(proto_send(z->router, "nobody", 6, &m));
    assert_int_equal(errno, EHOSTUNREACH);
    proto_msg_clear(&m);
}

static void test_zmq_round_trip(void **state)
{
    s_zmq_t *z = *state;
    char peer[PROTO_MAX_PEER];
    size_t peer_len = 0;
    proto_msg_t out;

    s_assert_empty(z->router, true);
    proto_msg_t ready = s_sample(PROTO_READY);
    assert_true(proto_send(z->dealer, NULL, 0, &ready));
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_int_equal(peer_len, strlen(S_DEALER_ID));
    assert_memory_equal(peer, S_DEALER_ID, peer_len);
    s_assert_msg_equal(&ready, &out);
    proto_msg_clear(&out);

    for (size_t k = 0; k < S_NKINDS; k++) {
        proto_msg_t m = s_sample(s_all_kinds[k]);
        assert_true(proto_send(z->router, peer, peer_len, &m));
        assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), 1);
        s_assert_msg_equal(&m, &out);
        proto_msg_clear(&out);
        assert_true(proto_send(z->dealer, NULL, 0, &m));
        assert_int_equal(
            s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out), 1);
        s_assert_msg_equal(&m, &out);
        proto_msg_clear(&out);
        proto_msg_clear(&m);
    }
    s_assert_empty(z->router, true);
    s_assert_empty(z->dealer, false);

    /* a message that cannot be encoded is not sent */
    proto_msg_t bad = s_sample(PROTO_PROGRESS);
    bad.rows = -1;
    assert_false(proto_send(z->dealer, NULL, 0, &bad));
    assert_false(proto_send(z->router, peer, 0, &ready)); /* empty peer id */
    proto_msg_t no_reason = {.kind = PROTO_STOP};         /* message NULL */
    errno = 0;
    assert_false(proto_send(z->router, peer, peer_len, &no_reason));
    assert_int_equal(errno, EINVAL);
    proto_msg_t long_source = s_sample(PROTO_READY);
    memset(long_source.source_id, 'i', sizeof long_source.source_id);
    errno = 0;
    assert_false(proto_send(z->dealer, NULL, 0, &long_source));
    assert_int_equal(errno, EINVAL);
    zmq_pollitem_t items[] = {{.socket = z->router, .events = ZMQ_POLLIN},
                              {.socket = z->dealer, .events = ZMQ_POLLIN}};
    assert_int_equal(zmq_poll(items, 2, 100), 0);
    s_assert_empty(z->router, true);
    s_assert_empty(z->dealer, false);
}

/* The handshake the new fields serve: a worker announces its source in
 * "ready"; the coordinator answers a wrong one with a "stop" that says why,
 * and ends the job with a "stop" whose message is "". */
static void test_zmq_source_and_stop(void **state)
{
    s_zmq_t *z = *state;
    char peer[PROTO_MAX_PEER];
    size_t peer_len = 0;
    proto_msg_t out;

    /* a source_id at its limit, with bytes an id field would refuse */
    proto_msg_t ready = s_sample(PROTO_READY);
    static const char any_bytes[] =
        "7312345678901234567/caf\xc3\xa9 db\t\n\x7f";
    for (size_t i = 0; i < PROTO_MAX_SOURCE_ID; i++)
        ready.source_id[i] = any_bytes[i % (sizeof any_bytes - 1)];
    ready.source_id[PROTO_MAX_SOURCE_ID] = '\0';
    assert_true(proto_send(z->dealer, NULL, 0, &ready));
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_int_equal(out.kind, PROTO_READY);
    assert_int_equal(strlen(out.source_id), PROTO_MAX_SOURCE_ID);
    assert_memory_equal(out.source_id, ready.source_id,
                        PROTO_MAX_SOURCE_ID + 1);
    s_assert_msg_equal(&ready, &out);
    proto_msg_clear(&out);

    /* an empty source_id travels as such */
    ready.source_id[0] = '\0';
    assert_true(proto_send(z->dealer, NULL, 0, &ready));
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_string_equal(out.source_id, "");
    proto_msg_clear(&out);

    /* the refusal, at the message limit, then the end of the job */
    proto_msg_t refuse = {.kind = PROTO_STOP};
    refuse.message = malloc(PROTO_MAX_MESSAGE + 1);
    assert_non_null(refuse.message);
    memset(refuse.message, 'r', PROTO_MAX_MESSAGE);
    static const char why[] = "source database x is not the job's\n";
    memcpy(refuse.message, why, sizeof why - 1);
    refuse.message[PROTO_MAX_MESSAGE] = '\0';
    assert_true(proto_send(z->router, peer, peer_len, &refuse));
    proto_msg_t over = {.kind = PROTO_STOP, .message = (char *)""};
    assert_true(proto_send(z->router, peer, peer_len, &over));

    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), 1);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_string_equal(out.message, refuse.message);
    assert_string_equal(out.source_id, "");
    proto_msg_clear(&out);
    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), 1);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_non_null(out.message);
    assert_string_equal(out.message, "");
    proto_msg_clear(&out);

    /* a hand-made stop without message, and a ready without source_id, are
     * dropped; the valid message behind each arrives */
    s_fields_t bare = s_valid_fields(PROTO_STOP);
    bare.n--; /* message is the last key */
    assert_string_equal(bare.kv[bare.n].key, "message");
    msgpack_sbuffer sb;
    s_build(&bare, &sb);
    assert_int_equal(
        zmq_send(z->router, S_DEALER_ID, strlen(S_DEALER_ID), ZMQ_SNDMORE),
        (int)strlen(S_DEALER_ID));
    assert_int_equal(zmq_send(z->router, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_true(proto_send(z->router, peer, peer_len, &over));
    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), -1);
    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), 1);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_string_equal(out.message, "");
    proto_msg_clear(&out);

    s_fields_t sourceless = s_valid_fields(PROTO_READY);
    sourceless.n--; /* source_id is the last key */
    assert_string_equal(sourceless.kv[sourceless.n].key, "source_id");
    s_build(&sourceless, &sb);
    assert_int_equal(zmq_send(z->dealer, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    strcpy(ready.source_id, "7312345678901234567/app");
    assert_true(proto_send(z->dealer, NULL, 0, &ready));
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     -1);
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_string_equal(out.source_id, "7312345678901234567/app");
    proto_msg_clear(&out);

    s_assert_empty(z->router, true);
    s_assert_empty(z->dealer, false);
    proto_msg_clear(&refuse);
}

static void test_zmq_malformed_dropped(void **state)
{
    s_zmq_t *z = *state;
    char peer[PROTO_MAX_PEER];
    size_t peer_len = 0;
    proto_msg_t out;

    /* 1: garbage body */
    static const char junk[] = "\x81\xa4type\xa5ready";
    assert_int_equal(zmq_send(z->dealer, junk, sizeof junk - 1, 0),
                     (int)sizeof junk - 1);
    /* 2: three valid bodies in one multi-frame message */
    char *buf;
    size_t len;
    proto_msg_t hb = s_sample(PROTO_HEARTBEAT);
    assert_true(proto_encode(&hb, &buf, &len));
    assert_int_equal(zmq_send(z->dealer, buf, len, ZMQ_SNDMORE), (int)len);
    assert_int_equal(zmq_send(z->dealer, buf, len, ZMQ_SNDMORE), (int)len);
    assert_int_equal(zmq_send(z->dealer, buf, len, 0), (int)len);
    /* 3: a frame over PROTO_MAX_FRAME (inproc does not apply MAXMSGSIZE) */
    char *big = calloc(1, PROTO_MAX_FRAME + 1);
    assert_non_null(big);
    memcpy(big, buf, len);
    assert_int_equal(zmq_send(z->dealer, big, PROTO_MAX_FRAME + 1, 0),
                     PROTO_MAX_FRAME + 1);
    free(big);
    /* 4: an empty frame */
    assert_int_equal(zmq_send(z->dealer, "", 0, 0), 0);
    /* 5: then a good one */
    proto_msg_t done = s_sample(PROTO_DONE);
    assert_true(proto_send(z->dealer, NULL, 0, &done));

    for (int i = 0; i < 4; i++) {
        memset(&out, 0x5a, sizeof out);
        assert_int_equal(
            s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out), -1);
        assert_int_equal(out.kind, 0);
        assert_null(out.message);
    }
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    s_assert_msg_equal(&done, &out);
    assert_memory_equal(peer, S_DEALER_ID, peer_len);
    proto_msg_clear(&out);
    s_assert_empty(z->router, true);

    /* a routing id that does not fit the caller's buffer: dropped, and the
     * next message still arrives */
    assert_true(proto_send(z->dealer, NULL, 0, &hb));
    assert_true(proto_send(z->dealer, NULL, 0, &done));
    assert_int_equal(s_recv_wait(z->router, peer, 2, &peer_len, &out), -1);
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_int_equal(out.kind, PROTO_DONE);
    proto_msg_clear(&out);

    /* the DEALER side: a multi-frame message from the router is dropped,
     * the good one behind it arrives */
    assert_int_equal(
        zmq_send(z->router, S_DEALER_ID, strlen(S_DEALER_ID), ZMQ_SNDMORE),
        (int)strlen(S_DEALER_ID));
    assert_int_equal(zmq_send(z->router, buf, len, ZMQ_SNDMORE), (int)len);
    assert_int_equal(zmq_send(z->router, junk, sizeof junk - 1, 0),
                     (int)sizeof junk - 1);
    proto_msg_t stop = s_sample(PROTO_STOP);
    assert_true(proto_send(z->router, S_DEALER_ID, strlen(S_DEALER_ID), &stop));
    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), -1);
    assert_int_equal(s_recv_wait(z->dealer, NULL, 0, NULL, &out), 1);
    assert_int_equal(out.kind, PROTO_STOP);
    assert_string_equal(out.message, stop.message);
    proto_msg_clear(&out);
    s_assert_empty(z->dealer, false);
    free(buf);
    proto_msg_clear(&done);
    proto_msg_clear(&stop);
}

/* Routing ids are binary: copied exactly, usable to answer. */
static void test_zmq_binary_peer(void **state)
{
    s_zmq_t *z = *state;
    static const unsigned char id[] = {0x01, 0xfe, 0x00, 0x7f, 'a'};
    void *d2 = z->extra = zmq_socket(z->ctx, ZMQ_DEALER);
    assert_non_null(d2);
    assert_true(proto_socket_setup(d2, false));
    assert_int_equal(zmq_setsockopt(d2, ZMQ_ROUTING_ID, id, sizeof id), 0);
    assert_int_equal(zmq_connect(d2, z->endpoint), 0);

    proto_msg_t m = s_sample(PROTO_FAILED);
    assert_true(proto_send(d2, NULL, 0, &m));
    unsigned char peer[PROTO_MAX_PEER];
    size_t peer_len = 0;
    proto_msg_t out;
    assert_int_equal(s_recv_wait(z->router, peer, sizeof peer, &peer_len, &out),
                     1);
    assert_int_equal(peer_len, sizeof id);
    assert_memory_equal(peer, id, sizeof id);
    s_assert_msg_equal(&m, &out);
    proto_msg_clear(&out);

    proto_msg_t a = s_sample(PROTO_ASSIGN);
    assert_true(proto_send(z->router, peer, peer_len, &a));
    assert_int_equal(s_recv_wait(d2, NULL, 0, NULL, &out), 1);
    s_assert_msg_equal(&a, &out);
    s_assert_empty(z->dealer, false); /* went to d2 only */
    proto_msg_clear(&out);
    proto_msg_clear(&a);
    proto_msg_clear(&m);
}

int main(void)
{
    log_init("test", LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_round_trip_limits),
        cmocka_unit_test(test_data_limits),
        cmocka_unit_test(test_encode_only_kind_fields),
        cmocka_unit_test(test_key_field),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_reject_rows),
        cmocka_unit_test(test_decode_hand_built),
        cmocka_unit_test(test_decode_wrong_types),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_decode_oversized_strings),
        cmocka_unit_test(test_decode_unknown_type),
        cmocka_unit_test(test_decode_wrong_version),
        cmocka_unit_test(test_decode_missing_field),
        cmocka_unit_test(test_decode_unknown_field),
        cmocka_unit_test(test_decode_duplicate_key),
        cmocka_unit_test(test_decode_too_many_fields),
        cmocka_unit_test(test_decode_trailing_bytes),
        cmocka_unit_test(test_decode_not_a_map),
        cmocka_unit_test(test_decode_huge_headers),
        cmocka_unit_test(test_decode_nested),
        cmocka_unit_test(test_decode_nul_in_string),
        cmocka_unit_test(test_decode_string_charsets),
        cmocka_unit_test(test_decode_invalid_sqlstate),
        cmocka_unit_test(test_decode_out_of_range),
        cmocka_unit_test(test_decode_frame_bounds),
        cmocka_unit_test(test_decode_every_format),
        cmocka_unit_test(test_decode_fuzz),
        cmocka_unit_test(test_peer_text),
        cmocka_unit_test_setup_teardown(test_zmq_socket_options, s_zmq_setup,
                                        s_zmq_teardown),
        cmocka_unit_test_setup_teardown(test_zmq_round_trip, s_zmq_setup,
                                        s_zmq_teardown),
        cmocka_unit_test_setup_teardown(test_zmq_source_and_stop, s_zmq_setup,
                                        s_zmq_teardown),
        cmocka_unit_test_setup_teardown(test_zmq_malformed_dropped, s_zmq_setup,
                                        s_zmq_teardown),
        cmocka_unit_test_setup_teardown(test_zmq_binary_peer, s_zmq_setup,
                                        s_zmq_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
