/* common/proto.c - the coordinator<->worker wire protocol: msgpack encoding,
 * decoding that survives hostile frames, and sending over ZeroMQ. */
#include "proto.h"

#include "log.h"

#include <assert.h>
#include <errno.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Every field of every kind, in wire order after "type" and "version". */
typedef enum {
    S_F_TYPE,
    S_F_VERSION,
    S_F_WORKER,
    S_F_PID,
    S_F_CHUNK,
    S_F_ATTEMPT,
    S_F_SNAPSHOT,
    S_F_SOURCE_SQL,
    S_F_TARGET_SCHEMA,
    S_F_TARGET_TABLE,
    S_F_COLUMNS,
    S_F_BINARY,
    S_F_ROWS,
    S_F_BYTES,
    S_F_SIDE,
    S_F_SQLSTATE,
    S_F_CONN_BAD,
    S_F_MESSAGE,
    S_F_JOB_ID,
    S_F_STATE_SCHEMA,
    S_F_ALREADY,
    S_F_SOURCE_ID,
    S_F_LIMIT,
    S_F_LAST,
    S_F_DATA,
    S_F_REJECT_ROWS,
    S_F_ROW_INDEX,
    S_F_ROW,
    S_F_REJECTED,
    S_F_KEY,
    S_F_COUNT
} s_field_t;

#define S_BIT(f) (1u << (f))

/* What a field's value is on the wire. */
typedef enum { S_T_INT, S_T_STR, S_T_BOOL, S_T_BIN } s_type_t;

/* Which bytes a string field may hold. */
typedef enum {
    S_C_TEXT,     /* anything but NUL */
    S_C_ID,       /* printable ASCII, no space */
    S_C_SQLSTATE, /* "" or PROTO_SQLSTATE_LEN of [0-9A-Z] */
    S_C_LINE,     /* one line: no NUL, its only '\n' at the end */
    S_C_NAMES,    /* binary: names of 1..PROTO_MAX_NAME bytes, each ended
                     by a NUL, at most PROTO_MAX_COLUMNS */
} s_charset_t;

/* How proto_msg_t holds a field. */
typedef enum {
    S_AT_NONE,  /* type, version: not stored as such */
    S_AT_I64,   /* int64_t */
    S_AT_I32,   /* int32_t */
    S_AT_SIDE,  /* proto_side_t */
    S_AT_BOOL,  /* bool */
    S_AT_CHARS, /* char[max + 1], NUL-terminated */
    S_AT_HEAP,  /* char *, malloc'd */
    S_AT_BLOB,  /* the data field: char *data and size_t data_len */
    S_AT_NAMES, /* the columns field: char *columns, size_t columns_len */
    S_AT_KEY,   /* the key field: char *key, size_t key_len */
} s_store_t;

/* A field's name, type, limits (integers: min..max; strings: lengths) and
 * where proto_msg_t keeps it. */
typedef struct {
    const char *name;    /* key on the wire */
    s_type_t type;       /* msgpack type it must have */
    int64_t min;         /* smallest integer, or shortest string */
    int64_t max;         /* largest integer, or longest string */
    s_charset_t charset; /* strings: allowed bytes */
    s_store_t store;     /* how proto_msg_t holds it */
    size_t offset;       /* where proto_msg_t holds it */
} s_spec_t;

#define S_AT(member) offsetof(proto_msg_t, member)

static const s_spec_t s_specs[S_F_COUNT] = {
    [S_F_TYPE] = {PROTO_F_TYPE, S_T_STR, 1, PROTO_MAX_ID, S_C_ID, S_AT_NONE, 0},
    [S_F_VERSION] = {PROTO_F_VERSION, S_T_INT, PROTO_VERSION, PROTO_VERSION,
                     S_C_TEXT, S_AT_NONE, 0},
    [S_F_WORKER] = {PROTO_F_WORKER, S_T_STR, 1, PROTO_MAX_ID, S_C_ID,
                    S_AT_CHARS, S_AT(worker)},
    [S_F_PID] = {PROTO_F_PID, S_T_INT, 1, INT64_MAX, S_C_TEXT, S_AT_I64,
                 S_AT(pid)},
    [S_F_CHUNK] = {PROTO_F_CHUNK, S_T_INT, 0, INT64_MAX, S_C_TEXT, S_AT_I64,
                   S_AT(chunk_id)},
    [S_F_ATTEMPT] = {PROTO_F_ATTEMPT, S_T_INT, 1, INT32_MAX, S_C_TEXT, S_AT_I32,
                     S_AT(attempt)},
    [S_F_SNAPSHOT] = {PROTO_F_SNAPSHOT, S_T_STR, 0, PROTO_MAX_ID, S_C_ID,
                      S_AT_CHARS, S_AT(snapshot)},
    [S_F_SOURCE_SQL] = {PROTO_F_SOURCE_SQL, S_T_STR, 1, PROTO_MAX_SQL, S_C_TEXT,
                        S_AT_HEAP, S_AT(source_sql)},
    [S_F_TARGET_SCHEMA] = {PROTO_F_TARGET_SCHEMA, S_T_STR, 1, PROTO_MAX_NAME,
                           S_C_TEXT, S_AT_CHARS, S_AT(target_schema)},
    [S_F_TARGET_TABLE] = {PROTO_F_TARGET_TABLE, S_T_STR, 1, PROTO_MAX_NAME,
                          S_C_TEXT, S_AT_CHARS, S_AT(target_table)},
    [S_F_COLUMNS] = {PROTO_F_COLUMNS, S_T_BIN, 2, PROTO_MAX_COLUMNS_SIZE,
                     S_C_NAMES, S_AT_NAMES, S_AT(columns)},
    [S_F_BINARY] = {PROTO_F_BINARY, S_T_BOOL, 0, 1, S_C_TEXT, S_AT_BOOL,
                    S_AT(binary)},
    [S_F_ROWS] = {PROTO_F_ROWS, S_T_INT, 0, PROTO_MAX_COUNT, S_C_TEXT, S_AT_I64,
                  S_AT(rows)},
    [S_F_BYTES] = {PROTO_F_BYTES, S_T_INT, 0, PROTO_MAX_COUNT, S_C_TEXT,
                   S_AT_I64, S_AT(bytes)},
    [S_F_SIDE] = {PROTO_F_SIDE, S_T_INT, PROTO_SIDE_NONE, PROTO_SIDE_TARGET,
                  S_C_TEXT, S_AT_SIDE, S_AT(side)},
    [S_F_SQLSTATE] = {PROTO_F_SQLSTATE, S_T_STR, 0, PROTO_SQLSTATE_LEN,
                      S_C_SQLSTATE, S_AT_CHARS, S_AT(sqlstate)},
    [S_F_CONN_BAD] = {PROTO_F_CONN_BAD, S_T_BOOL, 0, 1, S_C_TEXT, S_AT_BOOL,
                      S_AT(conn_bad)},
    [S_F_MESSAGE] = {PROTO_F_MESSAGE, S_T_STR, 0, PROTO_MAX_MESSAGE, S_C_TEXT,
                     S_AT_HEAP, S_AT(message)},
    [S_F_JOB_ID] = {PROTO_F_JOB_ID, S_T_STR, 0, PROTO_MAX_ID, S_C_ID,
                    S_AT_CHARS, S_AT(job_id)},
    [S_F_STATE_SCHEMA] = {PROTO_F_STATE_SCHEMA, S_T_STR, 0, PROTO_MAX_ID,
                          S_C_TEXT, S_AT_CHARS, S_AT(state_schema)},
    [S_F_SOURCE_ID] = {PROTO_F_SOURCE_ID, S_T_STR, 0, PROTO_MAX_SOURCE_ID,
                       S_C_TEXT, S_AT_CHARS, S_AT(source_id)},
    [S_F_ALREADY] = {PROTO_F_ALREADY, S_T_BOOL, 0, 1, S_C_TEXT, S_AT_BOOL,
                     S_AT(already)},
    [S_F_LIMIT] = {PROTO_F_LIMIT, S_T_INT, 0, INT64_MAX, S_C_TEXT, S_AT_I64,
                   S_AT(limit)},
    [S_F_LAST] = {PROTO_F_LAST, S_T_BOOL, 0, 1, S_C_TEXT, S_AT_BOOL,
                  S_AT(last)},
    [S_F_DATA] = {PROTO_F_DATA, S_T_BIN, 0, PROTO_MAX_DATA, S_C_TEXT, S_AT_BLOB,
                  S_AT(data)},
    [S_F_REJECT_ROWS] = {PROTO_F_REJECT_ROWS, S_T_BOOL, 0, 1, S_C_TEXT,
                         S_AT_BOOL, S_AT(reject_rows)},
    [S_F_ROW_INDEX] = {PROTO_F_ROW_INDEX, S_T_INT, 0, PROTO_MAX_COUNT, S_C_TEXT,
                       S_AT_I64, S_AT(row_index)},
    [S_F_ROW] = {PROTO_F_ROW, S_T_STR, 1, PROTO_MAX_ROW, S_C_LINE, S_AT_HEAP,
                 S_AT(row)},
    [S_F_REJECTED] = {PROTO_F_REJECTED, S_T_INT, 0, PROTO_MAX_COUNT, S_C_TEXT,
                      S_AT_I64, S_AT(rejected)},
    [S_F_KEY] = {PROTO_F_KEY, S_T_BIN, 0, PROTO_MAX_COLUMNS_SIZE, S_C_NAMES,
                 S_AT_KEY, S_AT(key)},
};

#define S_HEADER       (S_BIT(S_F_TYPE) | S_BIT(S_F_VERSION))
#define S_CHUNK_FIELDS (S_BIT(S_F_CHUNK) | S_BIT(S_F_ATTEMPT))
#define S_COUNT_FIELDS (S_CHUNK_FIELDS | S_BIT(S_F_ROWS) | S_BIT(S_F_BYTES))
/* Where a chunk's rows go, as names the worker quotes itself. */
#define S_TARGET_FIELDS                                                        \
    (S_BIT(S_F_TARGET_SCHEMA) | S_BIT(S_F_TARGET_TABLE) | S_BIT(S_F_COLUMNS) | \
     S_BIT(S_F_BINARY) | S_BIT(S_F_KEY))

/* Each kind's wire name and fields (all required, no others allowed). */
static const struct {
    const char *name;
    uint32_t fields;
} s_kinds[] = {
    [PROTO_READY] = {"ready",
                     S_BIT(S_F_WORKER) | S_BIT(S_F_PID) | S_BIT(S_F_SOURCE_ID)},
    [PROTO_ASSIGN] = {"assign", S_CHUNK_FIELDS | S_BIT(S_F_SNAPSHOT) |
                                    S_BIT(S_F_SOURCE_SQL) | S_TARGET_FIELDS |
                                    S_BIT(S_F_JOB_ID) |
                                    S_BIT(S_F_STATE_SCHEMA) |
                                    S_BIT(S_F_REJECT_ROWS)},
    [PROTO_PROGRESS] = {"progress", S_COUNT_FIELDS},
    [PROTO_DONE] = {"done",
                    S_COUNT_FIELDS | S_BIT(S_F_ALREADY) | S_BIT(S_F_REJECTED)},
    [PROTO_FAILED] = {"failed", S_CHUNK_FIELDS | S_BIT(S_F_SIDE) |
                                    S_BIT(S_F_SQLSTATE) | S_BIT(S_F_CONN_BAD) |
                                    S_BIT(S_F_MESSAGE)},
    [PROTO_STOP] = {"stop", S_BIT(S_F_MESSAGE)},
    [PROTO_HEARTBEAT] = {"heartbeat", 0},
    [PROTO_READ] = {"read", S_BIT(S_F_ATTEMPT) | S_BIT(S_F_SNAPSHOT) |
                                S_BIT(S_F_SOURCE_SQL) | S_BIT(S_F_ROWS) |
                                S_BIT(S_F_LIMIT)},
    [PROTO_CREDIT] = {"credit", S_BIT(S_F_ATTEMPT) | S_BIT(S_F_LIMIT)},
    [PROTO_DATA] = {"data", S_CHUNK_FIELDS | S_BIT(S_F_ROWS) | S_BIT(S_F_LAST) |
                                S_BIT(S_F_DATA)},
    [PROTO_END] = {"end", S_COUNT_FIELDS},
    [PROTO_WRITE] = {"write", S_CHUNK_FIELDS | S_TARGET_FIELDS |
                                  S_BIT(S_F_JOB_ID) | S_BIT(S_F_STATE_SCHEMA) |
                                  S_BIT(S_F_REJECT_ROWS)},
    [PROTO_REJECT] = {"reject", S_CHUNK_FIELDS | S_BIT(S_F_ROW_INDEX) |
                                    S_BIT(S_F_SQLSTATE) | S_BIT(S_F_MESSAGE) |
                                    S_BIT(S_F_ROW)},
};

#define S_KIND_FIRST PROTO_READY
#define S_KIND_LAST  PROTO_REJECT

/* Bytes of a frame besides its strings and data: keys, headers, numbers. */
#define S_ENCODE_SLACK 1024

/* How much of a hostile string goes into an error message. */
#define S_QUOTE_MAX 32

/* One field's value, whichever side of the wire it came from. Strings point
 * into the message or the frame and are not NUL-terminated. */
typedef struct {
    int64_t i;     /* S_T_INT */
    bool b;        /* S_T_BOOL */
    const char *s; /* S_T_STR; NULL when missing */
    size_t len;    /* S_T_STR: bytes at s */
} s_value_t;

/* Copy up to S_QUOTE_MAX bytes of an untrusted string into dst, printable
 * ASCII only (others become '?'), for quoting in an error message. */
static const char *s_quote(char *dst, size_t n, const char *s, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && i < S_QUOTE_MAX && j + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c >= ' ' && c <= '~') ? (char)c : '?';
    }
    if (n > 0) dst[j] = '\0';
    return dst;
}

const char *proto_kind_name(proto_kind_t kind)
{
    if (kind < S_KIND_FIRST || kind > S_KIND_LAST) return "unknown";
    return s_kinds[kind].name;
}

const char *proto_peer_text(const void *peer, size_t len, char *dst, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = peer;
    size_t show = len > PROTO_MAX_PEER ? PROTO_MAX_PEER : len;
    bool printable = true;
    for (size_t i = 0; i < show && printable; i++)
        printable = p[i] > ' ' && p[i] <= '~';
    if (n == 0) return dst;
    if (show == 0) {
        snprintf(dst, n, "(empty)");
    } else if (printable) {
        snprintf(dst, n, "%.*s", (int)show, (const char *)p);
    } else {
        snprintf(dst, n, "0x");
        size_t j = strlen(dst);
        for (size_t i = 0; i < show && j + 2 < n; i++) {
            dst[j++] = hex[p[i] >> 4];
            dst[j++] = hex[p[i] & 0x0f];
        }
        dst[j] = '\0';
    }
    return dst;
}

/* A names field: 1..PROTO_MAX_COLUMNS names of 1..PROTO_MAX_NAME bytes,
 * each ended by a NUL. */
static bool s_check_names(const s_spec_t *spec, const s_value_t *v, char *err,
                          size_t errlen)
{
    size_t count = 0;
    for (size_t at = 0; at < v->len;) {
        const char *nul = memchr(v->s + at, '\0', v->len - at);
        size_t n = nul ? (size_t)(nul - (v->s + at)) : v->len - at;
        if (!nul || n == 0 || n > PROTO_MAX_NAME)
            return log_reason(err, errlen,
                              "field '%s': name %zu is %s (1..%d bytes, each "
                              "ended by a NUL)",
                              spec->name, count + 1,
                              !nul ? "not ended by a NUL"
                              : n  ? "too long"
                                   : "empty",
                              PROTO_MAX_NAME);
        if (++count > PROTO_MAX_COLUMNS)
            return log_reason(err, errlen, "field '%s' has more than %d names",
                              spec->name, PROTO_MAX_COLUMNS);
        at += n + 1;
    }
    if (count == 0 && spec->min > 0)
        return log_reason(err, errlen, "field '%s' has no name", spec->name);
    return true;
}

/* Check a value against its field's limits (the same rules both ways). */
static bool s_check(s_field_t f, const s_value_t *v, char *err, size_t errlen)
{
    const s_spec_t *spec = &s_specs[f];
    if (spec->type == S_T_BOOL) return true;
    if (spec->type == S_T_INT) {
        if (v->i >= spec->min && v->i <= spec->max) return true;
        return log_reason(err, errlen, "field '%s' is %lld, allowed %lld..%lld",
                          spec->name, (long long)v->i, (long long)spec->min,
                          (long long)spec->max);
    }
    if (!v->s)
        return log_reason(err, errlen, "field '%s' is missing", spec->name);
    if (spec->type == S_T_BIN) {
        if (v->len > (size_t)spec->max)
            return log_reason(err, errlen,
                              "field '%s' has %zu bytes, at most %lld",
                              spec->name, v->len, (long long)spec->max);
        return spec->charset != S_C_NAMES ||
               s_check_names(spec, v, err, errlen);
    }
    if (v->len < (size_t)spec->min || v->len > (size_t)spec->max)
        return log_reason(
            err, errlen, "field '%s' has %zu bytes, allowed %lld..%lld",
            spec->name, v->len, (long long)spec->min, (long long)spec->max);
    if (memchr(v->s, '\0', v->len))
        return log_reason(err, errlen, "field '%s' contains a NUL byte",
                          spec->name);
    if (spec->charset == S_C_LINE &&
        memchr(v->s, '\n', v->len) != v->s + v->len - 1)
        return log_reason(
            err, errlen,
            "field '%s' must be one line ending in its only newline",
            spec->name);
    for (size_t i = 0; i < v->len; i++) {
        char c = v->s[i];
        bool ok = true;
        if (spec->charset == S_C_ID) ok = c > ' ' && c <= '~';
        if (spec->charset == S_C_SQLSTATE)
            ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
        if (!ok)
            return log_reason(err, errlen, "field '%s' has a bad byte 0x%02x",
                              spec->name, (unsigned char)c);
    }
    if (spec->charset == S_C_SQLSTATE && v->len != 0 &&
        v->len != PROTO_SQLSTATE_LEN)
        return log_reason(err, errlen,
                          "field '%s' must be empty or %d characters",
                          spec->name, PROTO_SQLSTATE_LEN);
    return true;
}

/* The value of field f in msg, for encoding. */
static s_value_t s_get(const proto_msg_t *msg, s_field_t f)
{
    const s_spec_t *spec = &s_specs[f];
    const char *at = (const char *)msg + spec->offset;
    s_value_t v = {0};
    switch (spec->store) {
    case S_AT_I64:
        v.i = *(const int64_t *)at;
        break;
    case S_AT_I32:
        v.i = *(const int32_t *)at;
        break;
    case S_AT_SIDE:
        v.i = *(const proto_side_t *)at;
        break;
    case S_AT_BOOL:
        v.b = *(const bool *)at;
        break;
    case S_AT_CHARS: /* unterminated: max + 1 bytes, over the limit */
        v.s = at;
        v.len = strnlen(at, (size_t)spec->max + 1);
        break;
    case S_AT_HEAP:
        v.s = *(char *const *)at;
        v.len = v.s ? strlen(v.s) : 0;
        break;
    case S_AT_BLOB: /* no data is an empty frame, not a missing field */
        v.s = msg->data ? msg->data : "";
        v.len = msg->data ? msg->data_len : 0;
        break;
    case S_AT_NAMES:
        v.s = msg->columns;
        v.len = msg->columns ? msg->columns_len : 0;
        break;
    case S_AT_KEY: /* no key is an empty field, not a missing one */
        v.s = msg->key ? msg->key : "";
        v.len = msg->key ? msg->key_len : 0;
        break;
    case S_AT_NONE:
        break;
    }
    return v;
}

/* A copy of v's bytes in *dst (malloc'd, never NULL on success) and their
 * count in *len. */
static bool s_set_bytes(char **dst, size_t *len, const s_value_t *v, char *err,
                        size_t errlen)
{
    *dst = malloc(v->len ? v->len : 1);
    if (!*dst) return log_reason(err, errlen, "out of memory");
    if (v->len) memcpy(*dst, v->s, v->len);
    *len = v->len;
    return true;
}

/* Store a checked value of field f into msg (strings are copied). */
static bool s_set(proto_msg_t *msg, s_field_t f, const s_value_t *v, char *err,
                  size_t errlen)
{
    const s_spec_t *spec = &s_specs[f];
    char *at = (char *)msg + spec->offset;
    char *copy = at;
    switch (spec->store) {
    case S_AT_I64:
        *(int64_t *)at = v->i;
        return true;
    case S_AT_I32:
        *(int32_t *)at = (int32_t)v->i;
        return true;
    case S_AT_SIDE:
        *(proto_side_t *)at = (proto_side_t)v->i;
        return true;
    case S_AT_BOOL:
        *(bool *)at = v->b;
        return true;
    case S_AT_BLOB:
        return s_set_bytes(&msg->data, &msg->data_len, v, err, errlen);
    case S_AT_NAMES:
        return s_set_bytes(&msg->columns, &msg->columns_len, v, err, errlen);
    case S_AT_KEY:
        return s_set_bytes(&msg->key, &msg->key_len, v, err, errlen);
    case S_AT_HEAP:
        copy = *(char **)at = malloc(v->len + 1);
        if (!copy) return log_reason(err, errlen, "out of memory");
        /* fall through */
    case S_AT_CHARS:
        if (v->len) memcpy(copy, v->s, v->len);
        copy[v->len] = '\0';
        return true;
    case S_AT_NONE:
        break;
    }
    return true;
}

/* Pack one checked value; returns the msgpack status (0 = ok). */
static int s_pack(msgpack_packer *pk, s_field_t f, const s_value_t *v)
{
    const char *name = s_specs[f].name;
    int rc = msgpack_pack_str_with_body(pk, name, strlen(name));
    switch (s_specs[f].type) {
    case S_T_INT:
        return rc | msgpack_pack_int64(pk, v->i);
    case S_T_BOOL:
        return rc | (v->b ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    case S_T_STR:
        return rc | msgpack_pack_str_with_body(pk, v->s, v->len);
    case S_T_BIN:
        return rc | msgpack_pack_bin_with_body(pk, v->s, v->len);
    }
    return -1;
}

void proto_describe(const proto_msg_t *msg, char *dst, size_t n)
{
    const char *kind = proto_kind_name(msg->kind);
    if (msg->kind >= S_KIND_FIRST && msg->kind <= S_KIND_LAST &&
        (s_kinds[msg->kind].fields & S_BIT(S_F_CHUNK)))
        snprintf(dst, n, "'%s' message (chunk %lld, attempt %d)", kind,
                 (long long)msg->chunk_id, (int)msg->attempt);
    else
        snprintf(dst, n, "'%s' message", kind);
}

bool proto_encode(const proto_msg_t *msg, char **buf_out, size_t *len_out)
{
    assert(msg && buf_out && len_out);
    *buf_out = NULL;
    *len_out = 0;
    char what[PROTO_ERR_LEN];
    char err[PROTO_ERR_LEN];
    proto_describe(msg, what, sizeof what);
    if (msg->kind < S_KIND_FIRST || msg->kind > S_KIND_LAST) {
        log_error("cannot encode message of unknown kind %d", (int)msg->kind);
        return false;
    }
    uint32_t fields = s_kinds[msg->kind].fields;
    uint32_t count = 2; /* type and version */
    for (s_field_t f = 0; f < S_F_COUNT; f++) {
        if (!(fields & S_BIT(f))) continue;
        s_value_t v = s_get(msg, f);
        if (!s_check(f, &v, err, sizeof err)) {
            log_error("cannot encode %s: %s", what, err);
            return false;
        }
        count++;
    }

    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    /* Room for the whole frame at once: a 1 MiB data field would otherwise
     * be copied again at every doubling of the buffer. */
    size_t bound =
        S_ENCODE_SLACK + msg->data_len + msg->columns_len + msg->key_len;
    for (s_field_t f = 0; f < S_F_COUNT; f++)
        if ((fields & S_BIT(f)) && s_specs[f].store == S_AT_HEAP)
            bound += s_get(msg, f).len;
    if ((sbuf.data = malloc(bound))) sbuf.alloc = bound;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    s_value_t type = {.s = s_kinds[msg->kind].name};
    s_value_t version = {.i = PROTO_VERSION};
    type.len = strlen(type.s);
    int rc = msgpack_pack_map(&pk, count); /* sticky: checked once below */
    rc |= s_pack(&pk, S_F_TYPE, &type);
    rc |= s_pack(&pk, S_F_VERSION, &version);
    for (s_field_t f = 0; f < S_F_COUNT; f++) {
        if (!(fields & S_BIT(f))) continue;
        s_value_t v = s_get(msg, f);
        rc |= s_pack(&pk, f, &v);
    }
    if (rc != 0) {
        log_error("cannot encode %s: out of memory", what);
        msgpack_sbuffer_destroy(&sbuf);
        return false;
    }
    if (sbuf.size > PROTO_MAX_FRAME) {
        log_error("cannot encode %s: %zu bytes, more than %d", what, sbuf.size,
                  PROTO_MAX_FRAME);
        msgpack_sbuffer_destroy(&sbuf);
        return false;
    }
    *len_out = sbuf.size;
    *buf_out = msgpack_sbuffer_release(&sbuf);
    return true;
}

/* Turn a msgpack object into a value of field f's type (not yet checked). */
static bool s_from_object(s_field_t f, const msgpack_object *o, s_value_t *v,
                          char *err, size_t errlen)
{
    const s_spec_t *spec = &s_specs[f];
    switch (spec->type) {
    case S_T_INT:
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            v->i = o->via.i64;
            return true;
        }
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) break;
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return log_reason(err, errlen, "field '%s' is %llu, too large",
                              spec->name, (unsigned long long)o->via.u64);
        v->i = (int64_t)o->via.u64;
        return true;
    case S_T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) break;
        v->b = o->via.boolean;
        return true;
    case S_T_STR:
        if (o->type != MSGPACK_OBJECT_STR) break;
        v->s = o->via.str.size ? o->via.str.ptr : "";
        v->len = o->via.str.size;
        return true;
    case S_T_BIN:
        if (o->type != MSGPACK_OBJECT_BIN) break;
        v->s = o->via.bin.size ? o->via.bin.ptr : "";
        v->len = o->via.bin.size;
        return true;
    }
    static const char *const want[] = {[S_T_INT] = "an integer",
                                       [S_T_STR] = "a string",
                                       [S_T_BOOL] = "a bool",
                                       [S_T_BIN] = "binary"};
    return log_reason(err, errlen, "field '%s' must be %s (msgpack type %d)",
                      spec->name, want[spec->type], (int)o->type);
}

/* The field whose wire name is key, or S_F_COUNT. */
static s_field_t s_field_by_name(const char *key, size_t len)
{
    for (s_field_t f = 0; f < S_F_COUNT; f++)
        if (strlen(s_specs[f].name) == len &&
            !memcmp(s_specs[f].name, key, len))
            return f;
    return S_F_COUNT;
}

/* The kind whose wire name is name, or 0. */
static proto_kind_t s_kind_by_name(const char *name, size_t len)
{
    for (proto_kind_t k = S_KIND_FIRST; k <= S_KIND_LAST; k++)
        if (strlen(s_kinds[k].name) == len &&
            !memcmp(s_kinds[k].name, name, len))
            return k;
    return 0;
}

/* Read a value and check it: the one path every field comes in by. */
static bool s_read(s_field_t f, const msgpack_object *o, s_value_t *v,
                   char *err, size_t errlen)
{
    return s_from_object(f, o, v, err, errlen) && s_check(f, v, err, errlen);
}

/* Validate the unpacked top-level object and fill *out. */
static bool s_decode_map(const msgpack_object *top, proto_msg_t *out, char *err,
                         size_t errlen)
{
    char q[S_QUOTE_MAX + 1];
    if (top->type != MSGPACK_OBJECT_MAP)
        return log_reason(err, errlen, "message is not a map (msgpack type %d)",
                          (int)top->type);
    if (top->via.map.size > PROTO_MAX_FIELDS)
        return log_reason(err, errlen, "message has %u fields, at most %d",
                          (unsigned)top->via.map.size, PROTO_MAX_FIELDS);

    const msgpack_object *vals[S_F_COUNT] = {0};
    for (uint32_t i = 0; i < top->via.map.size; i++) {
        const msgpack_object_kv *kv = &top->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return log_reason(err, errlen, "key %u is not a string", i);
        const char *key = kv->key.via.str.ptr;
        size_t klen = kv->key.via.str.size;
        s_field_t f = s_field_by_name(key, klen);
        if (f == S_F_COUNT)
            return log_reason(err, errlen, "unknown field '%s'",
                              s_quote(q, sizeof q, key, klen));
        if (vals[f])
            return log_reason(err, errlen, "duplicate field '%s'",
                              s_specs[f].name);
        vals[f] = &kv->val;
    }

    s_value_t type = {0}, version = {0};
    if (!vals[S_F_TYPE]) return log_reason(err, errlen, "missing field 'type'");
    if (!vals[S_F_VERSION])
        return log_reason(err, errlen, "missing field 'version'");
    if (!s_from_object(S_F_VERSION, vals[S_F_VERSION], &version, err, errlen))
        return false;
    if (version.i != PROTO_VERSION)
        return log_reason(err, errlen, "protocol version %lld, expected %d",
                          (long long)version.i, PROTO_VERSION);
    if (!s_read(S_F_TYPE, vals[S_F_TYPE], &type, err, errlen)) return false;
    proto_kind_t kind = s_kind_by_name(type.s, type.len);
    if (!kind)
        return log_reason(err, errlen, "unknown message type '%s'",
                          s_quote(q, sizeof q, type.s, type.len));

    uint32_t fields = S_HEADER | s_kinds[kind].fields;
    for (s_field_t f = 0; f < S_F_COUNT; f++) {
        bool wanted = fields & S_BIT(f);
        if (vals[f] && !wanted)
            return log_reason(err, errlen, "field '%s' not allowed in '%s'",
                              s_specs[f].name, s_kinds[kind].name);
        if (!vals[f] && wanted)
            return log_reason(err, errlen, "missing field '%s' in '%s'",
                              s_specs[f].name, s_kinds[kind].name);
    }
    out->kind = kind;
    for (s_field_t f = 0; f < S_F_COUNT; f++) {
        if (!(s_kinds[kind].fields & S_BIT(f))) continue;
        s_value_t v = {0};
        if (!s_read(f, vals[f], &v, err, errlen) ||
            !s_set(out, f, &v, err, errlen))
            return false;
    }
    return true;
}

bool proto_decode(const void *buf, size_t len, proto_msg_t *out, char *err,
                  size_t errlen)
{
    assert(out);
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    if (!proto_prescan(buf, len, err, errlen)) return false;

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(&up, buf, len, &off);
    bool ok;
    if (rc != MSGPACK_UNPACK_SUCCESS)
        ok = log_reason(err, errlen, "msgpack cannot unpack the frame (%d)",
                        (int)rc);
    else if (off != len)
        ok = log_reason(err, errlen, "%zu trailing bytes after the message",
                        len - off);
    else
        ok = s_decode_map(&up.data, out, err, errlen);
    msgpack_unpacked_destroy(&up);
    if (!ok) proto_msg_clear(out);
    return ok;
}

void proto_msg_clear(proto_msg_t *msg)
{
    if (!msg) return;
    void *owned[] = {msg->source_sql, msg->columns, msg->key,
                     msg->message,    msg->data,    msg->row};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
    memset(msg, 0, sizeof *msg);
}
