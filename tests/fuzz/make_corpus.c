/* tests/fuzz/make_corpus.c - write the seed corpus of fuzz_proto into DIR
 * (make fuzz-corpus regenerates tests/fuzz/corpus):
 *   - valid frames of every message kind, made by proto_encode, some with
 *     every field at its limit;
 *   - one valid frame in a form proto_encode never writes;
 *   - "over-*": frames with one id, the attempt or a row just past its
 *     limit (a row of two lines), which proto_decode must refuse. A fuzzer
 * rarely makes a string one byte longer (the length prefix has to change with
 * it), so these put it next to the boundaries an off-by-one in a limit would
 * move. Usage: make_corpus DIR */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"

#define S_FILL 'Q' /* the bytes of an id stretched to its limit */

static const char *s_dir;
static int s_count;

/* Write len bytes to DIR/name. */
static void s_write(const char *name, const void *buf, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    s_count++;
}

/* Encode msg, which must be valid, or exit. */
static void s_encode(const char *name, const proto_msg_t *msg, char **buf,
                     size_t *len)
{
    if (!proto_encode(msg, buf, len)) {
        fprintf(stderr, "make_corpus: cannot encode %s\n", name);
        exit(1);
    }
}

/* Write msg to DIR/name, then free its strings. */
static void s_emit(const char *name, proto_msg_t *msg)
{
    char *buf;
    size_t len;
    s_encode(name, msg, &buf, &len);
    s_write(name, buf, len);
    free(buf);
    proto_msg_clear(msg);
}

/* Where the bytes pat (n) start in buf (len), or exit. */
static size_t s_find(const char *name, const char *buf, size_t len,
                     const char *pat, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(buf + i, pat, n)) return i;
    fprintf(stderr, "make_corpus: %s: pattern not found\n", name);
    exit(1);
}

/* Write msg to DIR/name with the id field (a char array of msg holding max
 * S_FILL bytes, 32 <= max < 255, so a str 8) one byte longer, then free its
 * strings. */
static void s_emit_long_id(const char *name, proto_msg_t *msg, size_t max)
{
    char *buf;
    size_t len;
    s_encode(name, msg, &buf, &len);
    char pat[2 + 255];
    pat[0] = (char)0xd9; /* str 8 */
    pat[1] = (char)max;
    memset(pat + 2, S_FILL, max);
    size_t at = s_find(name, buf, len, pat, 2 + max);
    char *out = malloc(len + 1);
    if (!out) exit(1);
    memcpy(out, buf, at + 1);
    out[at + 1] = (char)(max + 1);
    memset(out + at + 2, S_FILL, max + 1);
    memcpy(out + at + 3 + max, buf + at + 2 + max, len - at - 2 - max);
    s_write(name, out, len + 1);
    free(out);
    free(buf);
    proto_msg_clear(msg);
}

/* Set m's target: schema, table, n bytes of column names (each ended by
 * a NUL), binary. */
static void s_target(proto_msg_t *m, const char *schema, const char *table,
                     const char *cols, size_t n, bool binary)
{
    snprintf(m->target_schema, sizeof m->target_schema, "%s", schema);
    snprintf(m->target_table, sizeof m->target_table, "%s", table);
    m->columns = malloc(n);
    if (!m->columns) exit(1);
    memcpy(m->columns, cols, n);
    m->columns_len = n;
    m->binary = binary;
}

/* A valid "assign" into *m, for stretching one of its ids. */
static void s_assign(proto_msg_t *m)
{
    *m = (proto_msg_t){.kind = PROTO_ASSIGN, .chunk_id = 3, .attempt = 1};
    strcpy(m->snapshot, "00000003-0000001B-1");
    strcpy(m->job_id, "job-1");
    strcpy(m->state_schema, "mapper_state");
    m->source_sql = strdup("COPY (SELECT * FROM t) TO STDOUT");
    s_target(m, "public", "t", "a\0b\0", 4, false);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    s_dir = argv[1];
    log_init("make_corpus", LOG_ERROR);
    proto_msg_t m;

    m = (proto_msg_t){.kind = PROTO_READY, .pid = 4242};
    strcpy(m.worker, "worker-7");
    strcpy(m.source_id, "7312345678901234567/app");
    s_emit("ready", &m);

    m = (proto_msg_t){.kind = PROTO_READY, .pid = INT64_MAX};
    memset(m.worker, 'w', PROTO_MAX_ID); /* the longest ids */
    memset(m.source_id, 's', PROTO_MAX_SOURCE_ID);
    s_emit("ready-limits", &m);

    m = (proto_msg_t){.kind = PROTO_ASSIGN, .chunk_id = 12, .attempt = 2};
    strcpy(m.snapshot, "00000003-0000001B-1");
    strcpy(m.job_id, "job-20240101-1");
    strcpy(m.state_schema, "mapper_state");
    m.source_sql = strdup("COPY (SELECT * FROM public.t WHERE ctid >= "
                          "'(0,0)' AND ctid < '(100,0)') TO STDOUT");
    s_target(&m, "public", "t", "id\0v\0", 5, false);
    s_emit("assign", &m);

    m = (proto_msg_t){.kind = PROTO_ASSIGN, .chunk_id = 0, .attempt = 1};
    m.source_sql = strdup("COPY (SELECT \"ä\", E'\\t' FROM s.\"T\")\n"
                          "TO STDOUT (FORMAT binary)");
    s_target(&m, "s", "T", "\xc3\xa4\0\"x\" y\0", 9, true);
    s_emit("assign-no-snapshot-no-job", &m);

    /* The longest names, and the most columns. */
    s_assign(&m);
    memset(m.target_schema, S_FILL, PROTO_MAX_NAME);
    memset(m.target_table, S_FILL, PROTO_MAX_NAME);
    free(m.columns);
    m.columns_len = 2 * PROTO_MAX_COLUMNS;
    m.columns = malloc(m.columns_len);
    if (!m.columns) exit(1);
    for (size_t i = 0; i < m.columns_len; i += 2)
        memcpy(m.columns + i, "c", 2);
    s_emit("assign-limits", &m);

    s_assign(&m);
    m.reject_rows = true;
    s_emit("assign-reject-rows", &m);

    m = (proto_msg_t){.kind = PROTO_PROGRESS,
                      .chunk_id = 12,
                      .attempt = 1,
                      .rows = 5000000000LL,
                      .bytes = INT64_C(1) << 40};
    s_emit("progress", &m);

    m = (proto_msg_t){.kind = PROTO_PROGRESS,
                      .chunk_id = INT64_MAX,
                      .attempt = INT32_MAX,
                      .rows = 0,
                      .bytes = 0};
    s_emit("progress-limits", &m);

    m = (proto_msg_t){.kind = PROTO_DONE,
                      .chunk_id = 7,
                      .attempt = 1,
                      .rows = 100000,
                      .bytes = 6543210,
                      .already = true};
    s_emit("done", &m);

    m = (proto_msg_t){.kind = PROTO_DONE,
                      .chunk_id = 3,
                      .attempt = 2,
                      .rows = 99993,
                      .bytes = 123456,
                      .rejected = 7};
    s_emit("done-rejected", &m);

    m = (proto_msg_t){
        .kind = PROTO_REJECT, .chunk_id = 3, .attempt = 1, .row_index = 1233};
    strcpy(m.sqlstate, "23514");
    m.message = strdup("new row for relation \"t\" violates check "
                       "constraint \"c\"");
    m.row = strdup("1234\tab\\tc\\n\t\\N\n");
    s_emit("reject", &m);

    m = (proto_msg_t){
        .kind = PROTO_REJECT, .chunk_id = 0, .attempt = 1, .row_index = 0};
    strcpy(m.sqlstate, "22P02");
    m.message = strdup("invalid input syntax for type integer: \"x\"");
    m.row = strdup("\n");
    s_emit("reject-empty-row", &m);

    m = (proto_msg_t){.kind = PROTO_FAILED,
                      .chunk_id = 12,
                      .attempt = 3,
                      .side = PROTO_SIDE_TARGET};
    strcpy(m.sqlstate, "23505");
    m.message = strdup("duplicate key value violates unique constraint "
                       "\"t_pkey\"");
    s_emit("failed", &m);

    m = (proto_msg_t){.kind = PROTO_FAILED,
                      .chunk_id = 0,
                      .attempt = 1,
                      .side = PROTO_SIDE_NONE,
                      .conn_bad = true};
    m.message = strdup("");
    s_emit("failed-no-sqlstate", &m);

    m = (proto_msg_t){.kind = PROTO_STOP};
    m.message = strdup("");
    s_emit("stop", &m);

    m = (proto_msg_t){.kind = PROTO_STOP};
    m.message = strdup("source database 7312345678901234567/other is not "
                       "the job's");
    s_emit("stop-refused", &m);

    m = (proto_msg_t){.kind = PROTO_HEARTBEAT};
    s_emit("heartbeat", &m);

    m = (proto_msg_t){
        .kind = PROTO_READ, .attempt = 1, .rows = 50000, .limit = 8};
    strcpy(m.snapshot, "00000003-0000001B-1");
    m.source_sql = strdup("COPY (SELECT * FROM (\nSELECT 1\n) AS q) TO STDOUT");
    s_emit("read", &m);

    m = (proto_msg_t){.kind = PROTO_CREDIT, .attempt = 1, .limit = 9};
    s_emit("credit", &m);

    static const char rows[] = "1\tx\n2\t\\N\n\0\xff";
    m = (proto_msg_t){.kind = PROTO_DATA,
                      .chunk_id = 4,
                      .attempt = 1,
                      .rows = 2,
                      .last = true,
                      .data = malloc(sizeof rows - 1),
                      .data_len = sizeof rows - 1};
    memcpy(m.data, rows, m.data_len); /* s_emit frees it */
    s_emit("data", &m);

    m = (proto_msg_t){.kind = PROTO_END,
                      .chunk_id = 40,
                      .attempt = 2,
                      .rows = 2000000,
                      .bytes = 120000000};
    s_emit("end", &m);

    m = (proto_msg_t){.kind = PROTO_WRITE, .chunk_id = 4, .attempt = 1};
    s_target(&m, "public", "t", "a\0", 2, true);
    strcpy(m.job_id, "job-7");
    strcpy(m.state_schema, "mapper");
    s_emit("write", &m);

    /* A valid heartbeat in another form than proto_encode writes: map 16,
     * version first as an int 64, the keys and type as str 8. */
    char odd[] = "\xde\x00\x02"
                 "\xd9\x07"
                 "version"
                 "\xd3\0\0\0\0\0\0\0\x00" /* PROTO_VERSION, below */
                 "\xd9\x04"
                 "type"
                 "\xd9\x09"
                 "heartbeat";
    odd[3 + 2 + 7 + 8] = (char)PROTO_VERSION;
    s_write("heartbeat-noncanonical", odd, sizeof odd - 1);

    /* Just past the limits. */
    m = (proto_msg_t){.kind = PROTO_READY, .pid = 4242};
    memset(m.worker, S_FILL, PROTO_MAX_ID);
    strcpy(m.source_id, "7312345678901234567/app");
    s_emit_long_id("over-worker", &m, PROTO_MAX_ID);

    m = (proto_msg_t){.kind = PROTO_READY, .pid = 4242};
    strcpy(m.worker, "worker-7");
    memset(m.source_id, S_FILL, PROTO_MAX_SOURCE_ID);
    s_emit_long_id("over-source-id", &m, PROTO_MAX_SOURCE_ID);

    s_assign(&m);
    memset(m.snapshot, S_FILL, PROTO_MAX_ID);
    s_emit_long_id("over-snapshot", &m, PROTO_MAX_ID);
    s_assign(&m);
    memset(m.job_id, S_FILL, PROTO_MAX_ID);
    s_emit_long_id("over-job-id", &m, PROTO_MAX_ID);
    s_assign(&m);
    memset(m.state_schema, S_FILL, PROTO_MAX_ID);
    s_emit_long_id("over-state-schema", &m, PROTO_MAX_ID);
    s_assign(&m);
    memset(m.target_table, S_FILL, PROTO_MAX_NAME);
    s_emit_long_id("over-target-table", &m, PROTO_MAX_NAME);

    /* attempt INT32_MAX (uint 32 0x7fffffff) + 1. */
    m = (proto_msg_t){.kind = PROTO_PROGRESS, .chunk_id = 1, .attempt = 1};
    m.attempt = INT32_MAX;
    char *buf;
    size_t len;
    s_encode("over-attempt", &m, &buf, &len);
    size_t at = s_find("over-attempt", buf, len, "\xce\x7f\xff\xff\xff", 5);
    memcpy(buf + at + 1, "\x80\x00\x00\x00", 4);
    s_write("over-attempt", buf, len);
    free(buf);

    /* A reject whose row is two lines (the coordinator writes rows to a
     * line-per-row file): "a\tb\n" with b turned into a newline. */
    m = (proto_msg_t){.kind = PROTO_REJECT, .chunk_id = 1, .attempt = 1};
    strcpy(m.sqlstate, "23514");
    m.message = strdup("check");
    m.row = strdup("a\tb\n");
    s_encode("over-row-two-lines", &m, &buf, &len);
    at = s_find("over-row-two-lines", buf, len, "a\tb\n", 4);
    buf[at + 2] = '\n';
    s_write("over-row-two-lines", buf, len);
    free(buf);
    proto_msg_clear(&m);

    /* Column names "a\0b\0" with b made a NUL: an empty name. */
    s_assign(&m);
    s_encode("over-columns-empty-name", &m, &buf, &len);
    at = s_find("over-columns-empty-name", buf, len, "a\0b\0", 4);
    buf[at + 2] = '\0';
    s_write("over-columns-empty-name", buf, len);
    free(buf);
    proto_msg_clear(&m);

    printf("make_corpus: %d frames in %s\n", s_count, s_dir);
    return 0;
}
