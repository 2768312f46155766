/* worker/stream.h - stream mode's reader: run the job's query once, as one
 * COPY ... TO STDOUT in the job's snapshot, and cut its rows into chunks of
 * a fixed number of rows that go to the coordinator as data frames. The
 * reader waits for credit before it starts a chunk, so the rows in flight
 * stay bounded whatever the size of the result. */
#ifndef MAPPER_STREAM_H
#define MAPPER_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "copy.h"
#include "proto.h"

/* How the reader talks to the coordinator (worker/main.c provides it). */
typedef struct {
    /* Queue m for sending, waiting while the socket is full; false when
     * the worker is stopping or lost the coordinator. */
    bool (*send)(void *arg, const proto_msg_t *m);
    /* Wait until chunk may be sent (chunk < the coordinator's limit);
     * false when the worker is stopping or lost the coordinator. */
    bool (*credit)(void *arg, int64_t chunk);
    /* Wait for the source's socket, serving the coordinator meanwhile
     * (copy_wait_fn; NULL: poll(2) alone). */
    copy_wait_fn wait;
    void *arg;
} stream_io_t;

/* One read: the job's snapshot, the COPY statement, rows per chunk. */
typedef struct {
    int32_t attempt;        /* the reader's attempt */
    const char *snapshot;   /* exported snapshot id */
    const char *source_sql; /* COPY (SELECT ...) TO STDOUT ... */
    int64_t chunk_rows;     /* rows per chunk (>= 1) */
} stream_read_t;

/* Read the whole result and send it. On COPY_OK, *chunks_out, *rows_out
 * and *bytes_out hold what was sent; COPY_ABORTED when io said stop;
 * COPY_FAILED with *err otherwise (the source session is closed). The
 * session reads with synchronized scans and parallel query off, so that
 * a re-read (after a reader died) returns rows in the same order. */
copy_status_t stream_read(copy_conns_t *conns, const stream_read_t *r,
                          const stream_io_t *io, int64_t *chunks_out,
                          int64_t *rows_out, int64_t *bytes_out,
                          pgutil_error_t *err);

#endif
