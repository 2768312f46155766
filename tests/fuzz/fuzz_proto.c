/* tests/fuzz/fuzz_proto.c - libFuzzer target for proto_decode.
 *
 * Every input is one frame. Properties checked (abort() on a violation, so
 * libFuzzer saves the input as a crash artifact):
 *   - proto_decode never crashes, leaks or trips a sanitizer;
 *   - on failure it leaves the message empty (all zero) and writes a
 *     NUL-terminated one-line reason;
 *   - on success the message obeys the limits proto.h documents (checked
 *     here independently of proto.c), re-encodes (the limits are the same
 *     both ways), the encoding decodes again to an equal message, and
 *     encoding that message gives the same bytes again (canonical).
 * Build and run: make fuzz-smoke (20 s) or make fuzz FUZZ_SECONDS=N. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report a broken property and abort (libFuzzer saves the input). */
static void s_die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_proto: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

/* Both NULL, or both strings with the same bytes. */
static bool s_same_str(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

/* Whether two decoded messages are equal: the heap strings by content, and
 * every other byte as is (proto_decode zeroes the whole message first, so
 * padding, unused fields and the tails of the char arrays are all zero). A
 * heap field added to proto_msg_t later and not listed here makes the two
 * differ, so the fuzzer reports it rather than missing it. */
static bool s_same_msg(const proto_msg_t *a, const proto_msg_t *b)
{
    if (!s_same_str(a->source_sql, b->source_sql) ||
        a->columns_len != b->columns_len || !a->columns != !b->columns ||
        (a->columns_len && memcmp(a->columns, b->columns, a->columns_len)) ||
        !s_same_str(a->message, b->message) || !s_same_str(a->row, b->row) ||
        a->data_len != b->data_len || !a->data != !b->data ||
        (a->data_len && memcmp(a->data, b->data, a->data_len)))
        return false;
    proto_msg_t x, y;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    x.source_sql = x.columns = x.message = x.row = x.data = NULL;
    y.source_sql = y.columns = y.message = y.row = y.data = NULL;
    return memcmp(&x, &y, sizeof x) == 0;
}

/* Whether s (n bytes) is printable ASCII without spaces. */
static bool s_is_id(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~') return false;
    return true;
}

/* Check an accepted message against the limits proto.h documents, without
 * going through proto.c's own checks (which encode and decode share, so a
 * wrong limit there survives the round trip): every char array terminated
 * inside its array, ids printable without spaces, strings within their
 * lengths, integers within their ranges. Fields a kind does not carry are
 * zero and pass. */
static void s_check_limits(const proto_msg_t *m)
{
#define S_TERMINATED(a) (strnlen((a), sizeof(a)) < sizeof(a))
    if (m->kind < PROTO_READY || m->kind > PROTO_REJECT)
        s_die("accepted an unknown kind", NULL);
    if (!S_TERMINATED(m->worker) || strlen(m->worker) > PROTO_MAX_ID ||
        !s_is_id(m->worker, strlen(m->worker)))
        s_die("accepted a bad worker id", proto_kind_name(m->kind));
    if (!S_TERMINATED(m->snapshot) || strlen(m->snapshot) > PROTO_MAX_ID ||
        !s_is_id(m->snapshot, strlen(m->snapshot)))
        s_die("accepted a bad snapshot id", proto_kind_name(m->kind));
    if (!S_TERMINATED(m->job_id) || !S_TERMINATED(m->state_schema) ||
        !S_TERMINATED(m->source_id))
        s_die("accepted an unterminated id", proto_kind_name(m->kind));
    if (!S_TERMINATED(m->sqlstate))
        s_die("accepted an unterminated sqlstate", NULL);
    size_t n = strlen(m->sqlstate);
    if (n != 0 && n != PROTO_SQLSTATE_LEN)
        s_die("accepted a sqlstate of a bad length", m->sqlstate);
    for (size_t i = 0; i < n; i++)
        if (!((m->sqlstate[i] >= '0' && m->sqlstate[i] <= '9') ||
              (m->sqlstate[i] >= 'A' && m->sqlstate[i] <= 'Z')))
            s_die("accepted a sqlstate with a bad byte", m->sqlstate);
    if (m->source_sql && strlen(m->source_sql) > PROTO_MAX_SQL)
        s_die("accepted an over-long SQL statement", NULL);
    if (!S_TERMINATED(m->target_schema) || !S_TERMINATED(m->target_table))
        s_die("accepted an unterminated target name", NULL);
    bool targeted = m->kind == PROTO_ASSIGN || m->kind == PROTO_WRITE;
    if (targeted && (!m->target_schema[0] || !m->target_table[0] ||
                     !m->columns || m->columns_len == 0 ||
                     m->columns[m->columns_len - 1] != '\0'))
        s_die("accepted a target without names", proto_kind_name(m->kind));
    size_t names = 0;
    for (size_t at = 0; at < m->columns_len; names++) {
        size_t len = strlen(m->columns + at); /* ended by a NUL: checked */
        if (len == 0 || len > PROTO_MAX_NAME)
            s_die("accepted an empty or over-long column name", NULL);
        at += len + 1;
    }
    if (names > PROTO_MAX_COLUMNS) s_die("accepted too many columns", NULL);
    if (m->message && strlen(m->message) > PROTO_MAX_MESSAGE)
        s_die("accepted an over-long message", NULL);
    if (m->row) {
        size_t len = strlen(m->row);
        if (len == 0 || len > PROTO_MAX_ROW || m->row[len - 1] != '\n' ||
            strchr(m->row, '\n') != m->row + len - 1)
            s_die("accepted a row that is not one line", NULL);
    }
    if (m->pid < 0 || m->chunk_id < 0 || m->attempt < 0 || m->rows < 0 ||
        m->bytes < 0 || m->row_index < 0 || m->rejected < 0 || m->limit < 0)
        s_die("accepted a negative count", proto_kind_name(m->kind));
    if (m->data_len > PROTO_MAX_DATA || (m->kind == PROTO_DATA && !m->data))
        s_die("accepted a bad data field", NULL);
    if (m->side < PROTO_SIDE_NONE || m->side > PROTO_SIDE_TARGET)
        s_die("accepted a bad side", NULL);
#undef S_TERMINATED
}

/* Whether msg is all zero bytes, as a failed decode must leave it. */
static bool s_is_empty(const proto_msg_t *msg)
{
    static const proto_msg_t zero;
    return memcmp(msg, &zero, sizeof zero) == 0;
}

/* The reason a failed decode wrote: non-empty, terminated, one line. */
static void s_check_reason(const char *err, size_t errlen)
{
    size_t n = strnlen(err, errlen);
    if (n == errlen) s_die("decode reason is not NUL-terminated", NULL);
    if (n == 0) s_die("decode failed without a reason", NULL);
    if (strchr(err, '\n')) s_die("decode reason is not one line", err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init("fuzz", LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[PROTO_ERR_LEN];
    proto_msg_t first;
    if (!proto_decode(data, size, &first, err, sizeof err)) {
        if (!s_is_empty(&first))
            s_die("failed decode left fields in the message", err);
        s_check_reason(err, sizeof err);
        return 0;
    }

    /* Accepted: it must obey the limits and survive encode -> decode. */
    s_check_limits(&first);
    char *buf = NULL;
    size_t len = 0;
    if (!proto_encode(&first, &buf, &len))
        s_die("a decoded message does not re-encode",
              proto_kind_name(first.kind));
    proto_msg_t second;
    if (!proto_decode(buf, len, &second, err, sizeof err))
        s_die("a re-encoded message does not decode", err);
    if (!s_same_msg(&first, &second))
        s_die("round trip changed the message", proto_kind_name(first.kind));

    char *again = NULL;
    size_t again_len = 0;
    if (!proto_encode(&second, &again, &again_len))
        s_die("a round-tripped message does not re-encode",
              proto_kind_name(second.kind));
    if (again_len != len || memcmp(again, buf, len) != 0)
        s_die("encoding is not canonical", proto_kind_name(second.kind));

    free(again);
    free(buf);
    proto_msg_clear(&second);
    proto_msg_clear(&first);
    return 0;
}
