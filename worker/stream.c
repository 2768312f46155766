/* worker/stream.c - stream mode's reader (stream.h). */
#include "stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "log.h"

/* Rows go out in data frames of about this many bytes (a row may span
 * frames: the writer only ever sees the chunk's bytes end to end). */
#define STREAM_FRAME_BYTES (256 * 1024)
/* A re-read must return the rows in the same order as the first read. */
#define STREAM_SESSION_SQL                                                     \
    "SET synchronize_seqscans = off; SET max_parallel_workers_per_gather = 0"

typedef struct {
    const stream_io_t *io;
    const stream_read_t *r;
    char *frame;       /* bytes not yet sent */
    size_t used;       /* bytes in frame */
    int64_t rows;      /* rows that ended in frame */
    int64_t chunk;     /* chunk being filled */
    int64_t in_chunk;  /* rows in it so far */
    int64_t total;     /* rows read */
    int64_t bytes;     /* bytes read (rows only) */
    bool binary;       /* binary COPY */
    bool header_seen;  /* binary: the header (on the first message) is gone */
    bool trailer_seen; /* binary: the trailer arrived */
    bool aborted;      /* stopped: told to, or the coordinator is gone */
} s_reader_t;

static bool s_flush(s_reader_t *rd, bool last)
{
    proto_msg_t m = {.kind = PROTO_DATA,
                     .chunk_id = rd->chunk,
                     .attempt = rd->r->attempt,
                     .rows = rd->rows,
                     .last = last,
                     .data = rd->frame,
                     .data_len = rd->used};
    bool ok = rd->io->send(rd->io->arg, &m);
    rd->used = 0;
    rd->rows = 0;
    if (ok && last) fault_at("after-send", rd->chunk, rd->r->attempt);
    return ok;
}

/* Append bytes to the frame, sending full frames. */
static bool s_append(s_reader_t *rd, const char *p, size_t n)
{
    while (n > 0) {
        size_t room = STREAM_FRAME_BYTES - rd->used;
        size_t take = n < room ? n : room;
        memcpy(rd->frame + rd->used, p, take);
        rd->used += take;
        p += take;
        n -= take;
        if (rd->used == STREAM_FRAME_BYTES && !s_flush(rd, false)) return false;
    }
    return true;
}

static uint32_t s_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
           u[3];
}

/* One CopyData message from the source: one row (binary: the first also
 * carries the header; the trailer comes alone). Returns false when the
 * reader must stop (rd->aborted: told to, else an error in *err). */
static bool s_row(void *arg, const char *p, size_t n, pgutil_error_t *err)
{
    s_reader_t *rd = arg;
    if (rd->binary && !rd->header_seen) {
        size_t skip = COPY_BINARY_HEADER_LEN;
        if (n >= COPY_BINARY_HEADER_LEN)
            skip += s_be32(p + COPY_BINARY_HEADER_LEN - 4);
        if (n < skip) {
            snprintf(err->message, sizeof err->message,
                     "binary COPY stream with a short header");
            return false;
        }
        rd->header_seen = true;
        p += skip;
        n -= skip;
    }
    if (rd->binary && n == 2 && (unsigned char)p[0] == 0xff &&
        (unsigned char)p[1] == 0xff) {
        rd->trailer_seen = true;
        return true;
    }
    if (n == 0) return true;
    if (rd->in_chunk == 0 && !rd->io->credit(rd->io->arg, rd->chunk)) {
        rd->aborted = true;
        return false;
    }
    if (!s_append(rd, p, n)) {
        rd->aborted = true;
        return false;
    }
    rd->rows++;
    rd->in_chunk++;
    rd->total++;
    rd->bytes += (int64_t)n;
    if (rd->in_chunk == rd->r->chunk_rows) {
        if (!s_flush(rd, true)) {
            rd->aborted = true;
            return false;
        }
        rd->chunk++;
        rd->in_chunk = 0;
    }
    return true;
}

copy_status_t stream_read(copy_conns_t *conns, const stream_read_t *r,
                          const stream_io_t *io, int64_t *chunks_out,
                          int64_t *rows_out, int64_t *bytes_out,
                          pgutil_error_t *err)
{
    memset(err, 0, sizeof *err);
    *chunks_out = *rows_out = *bytes_out = 0;
    s_reader_t rd = {.io = io, .r = r, .frame = malloc(STREAM_FRAME_BYTES)};
    copy_status_t st = COPY_FAILED;
    if (!rd.frame) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return COPY_FAILED;
    }
    if (!copy_open_source(conns, err) ||
        !pgutil_exec(conns->src, STREAM_SESSION_SQL, PROTO_SIDE_SOURCE, err) ||
        (st = copy_source_start(conns, r->snapshot, r->source_sql, io->wait,
                                io->arg, &rd.binary, err)) != COPY_OK) {
        if (st != COPY_ABORTED) st = COPY_FAILED;
        goto out;
    }
    log_debug("reader attempt %d: reading (%s COPY, %" PRId64 " rows a chunk)",
              r->attempt, rd.binary ? "binary" : "text", r->chunk_rows);
    st = copy_each_row(conns->src, s_row, &rd, io->wait, io->arg, err);
    if (st != COPY_OK) {
        if (rd.aborted) st = COPY_ABORTED;
        goto out;
    }
    st = COPY_FAILED;
    if (rd.binary && !rd.trailer_seen) {
        snprintf(err->message, sizeof err->message,
                 "binary COPY stream without its trailer");
        goto out;
    }
    if (rd.in_chunk > 0) {
        if (!s_flush(&rd, true)) {
            st = COPY_ABORTED;
            goto out;
        }
        rd.chunk++;
    }
    pgutil_error_t ignored;
    if (!pgutil_exec(conns->src, "COMMIT", PROTO_SIDE_SOURCE, &ignored)) {
        PQfinish(conns->src);
        conns->src = NULL;
    }
    *chunks_out = rd.chunk;
    *rows_out = rd.total;
    *bytes_out = rd.bytes;
    st = COPY_OK;
out:
    if (st != COPY_OK) {
        PQfinish(conns->src); /* ends the COPY and the transaction */
        conns->src = NULL;
    }
    free(rd.frame);
    return st;
}
