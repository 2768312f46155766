/* coordinator/inflight.h - stream mode's chunks on the coordinator: the rows
 * of each chunk as the reader sent them, kept until the chunk commits (a
 * writer that dies costs a resend, not a re-read), and the credit that
 * bounds how many chunks are in memory at once. Every chunk's digest and
 * row count outlive its rows, so that a re-read after the reader died can
 * be checked against the first read. */
#ifndef MAPPER_INFLIGHT_H
#define MAPPER_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* A 64-bit digest of a byte stream, fed in pieces: the same bytes give
 * the same digest however they are cut. Not cryptographic: it tells a
 * re-read from the first read, both from our own reader. */
typedef struct {
    uint64_t h;      /* state */
    uint64_t tail;   /* bytes not yet mixed, little end first */
    unsigned ntail;  /* how many */
    uint64_t length; /* bytes fed */
} inflight_digest_t;

typedef struct {
    char *data;      /* rows, while held (NULL once released) */
    size_t len, cap; /* bytes at data, allocated */
    int64_t rows;    /* rows in the chunk */
    uint64_t digest; /* inflight_digest_end of its bytes */
} inflight_chunk_t;

typedef struct {
    inflight_chunk_t *chunks; /* known chunks, and the one arriving */
    size_t cap;               /* allocated entries */
    int64_t known;            /* chunks received complete */
    int64_t held;             /* complete and not released: in memory */
    int64_t max_held;         /* credit bound (--max-inflight-chunks) */
    int64_t chunk_rows;       /* rows a chunk may hold; 0: no bound */
    int64_t bytes_held;       /* bytes in held chunks (and arriving) */
    /* The current reader attempt's position. */
    int64_t at;                  /* chunk its next frame belongs to */
    int64_t at_rows;             /* rows of that chunk so far */
    size_t at_len;               /* bytes likewise */
    inflight_digest_t at_digest; /* digest so far */
} inflight_t;

/* What a data frame did. */
typedef enum {
    INFLIGHT_MORE,     /* part of a chunk */
    INFLIGHT_COMPLETE, /* completed a new chunk (id: *chunk_out) */
    INFLIGHT_SAME,     /* completed a re-read chunk, identical to the first */
    INFLIGHT_DIFFERS,  /* completed a re-read chunk that differs */
    INFLIGHT_BAD,      /* out of order, or out of memory (logged) */
    INFLIGHT_OVER_CREDIT, /* a chunk at or past the credit limit (logged) */
    INFLIGHT_OVER_SIZE,   /* more rows than chunk_rows, or more than
                             INFLIGHT_MAX_CHUNK_BYTES (logged) */
} inflight_event_t;

void inflight_init(inflight_t *s, int64_t max_held);
void inflight_free(inflight_t *s);

/* The most bytes one stream chunk may hold in the coordinator. */
#define INFLIGHT_MAX_CHUNK_BYTES (INT64_C(1) << 32)

/* A data frame from the current reader attempt. The reader is held to its
 * credit (chunks below inflight_limit) and to the chunk size on receipt:
 * a frame beyond either is refused before its bytes are kept. */
inflight_event_t inflight_on_data(inflight_t *s, const proto_msg_t *m,
                                  int64_t *chunk_out);

/* A new reader attempt starts from the first row: drop what arrived of an
 * incomplete chunk. */
void inflight_restart(inflight_t *s);

/* The chunk committed or failed for good: free its rows. */
void inflight_release(inflight_t *s, int64_t chunk);

/* Chunks below this may be sent by the reader: those known already, and
 * as many new ones as there is room for. */
int64_t inflight_limit(const inflight_t *s);

void inflight_digest_init(inflight_digest_t *d);
void inflight_digest_add(inflight_digest_t *d, const void *p, size_t n);
uint64_t inflight_digest_end(const inflight_digest_t *d);

#endif
