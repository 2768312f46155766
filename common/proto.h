/* common/proto.h - the wire protocol between mapper-coord and mapper-worker:
 * message kinds, fields, limits and protocol version live here and nowhere
 * else. Every message body is one msgpack map with "type" and "version". */
#ifndef MAPPER_PROTO_H
#define MAPPER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 3: a coordinator may hand a worker up to MAPPER_AHEAD_MAX chunks ahead,
 * and the worker keeps them all waiting; a worker of version 2 kept one.
 * 4: a CREDIT names the read attempt it belongs to. */
#define PROTO_VERSION 4

/* Size limits. A frame larger than PROTO_MAX_FRAME is refused by ZeroMQ
 * itself (ZMQ_MAXMSGSIZE) and by proto_decode. */
#define PROTO_MAX_FRAME   (4 * 1024 * 1024)
#define PROTO_MAX_SQL     (1024 * 1024) /* source_sql */
#define PROTO_MAX_MESSAGE 4096          /* an error message */
/* A rejected row (COPY text, one line with its newline): what is left of
 * a frame after room for the other fields of a "reject" message. */
#define PROTO_MAX_ROW       (PROTO_MAX_FRAME - 64 * 1024)
#define PROTO_MAX_DATA      (1024 * 1024) /* data: bytes of rows per frame */
#define PROTO_MAX_ID        64  /* worker id, snapshot id, job id, schema */
#define PROTO_MAX_SOURCE_ID 160 /* "SYSTEM_IDENTIFIER/DBNAME" */
/* Rows, bytes, rows set aside: a worker's counts are 0..PROTO_MAX_COUNT
 * (2^48), so that sums over many chunks cannot overflow. */
#define PROTO_MAX_COUNT    (INT64_C(1) << 48)
#define PROTO_SQLSTATE_LEN 5
#define PROTO_MAX_FIELDS   16  /* keys in one message map */
#define PROTO_MAX_DEPTH    1   /* container nesting: the top map only */
#define PROTO_MAX_PEER     255 /* bytes in a ZeroMQ routing id */
#define PROTO_PEER_TEXT    (2 * PROTO_MAX_PEER + 3) /* proto_peer_text buffer */
#define PROTO_ERR_LEN      256 /* a proto_decode reason buffer */

/* The target of a chunk travels as names, never as SQL: the worker
 * quotes them itself. A name is 1..PROTO_MAX_NAME bytes (PostgreSQL's
 * NAMEDATALEN - 1); columns are 1..PROTO_MAX_COLUMNS names, each followed
 * by a NUL byte. */
#define PROTO_MAX_NAME         63
#define PROTO_MAX_COLUMNS      1600
#define PROTO_MAX_COLUMNS_SIZE (PROTO_MAX_COLUMNS * (PROTO_MAX_NAME + 1))

/* Field names on the wire. */
#define PROTO_F_TYPE         "type"
#define PROTO_F_VERSION      "version"
#define PROTO_F_WORKER       "worker"
#define PROTO_F_PID          "pid"
#define PROTO_F_CHUNK        "chunk_id"
#define PROTO_F_ATTEMPT      "attempt"
#define PROTO_F_SNAPSHOT     "snapshot"
#define PROTO_F_SOURCE_SQL   "source_sql"
#define PROTO_F_ROWS         "rows"
#define PROTO_F_BYTES        "bytes"
#define PROTO_F_SIDE         "side"
#define PROTO_F_SQLSTATE     "sqlstate"
#define PROTO_F_CONN_BAD     "conn_bad"
#define PROTO_F_SOURCE_ID    "source_id"
#define PROTO_F_JOB_ID       "job_id"
#define PROTO_F_STATE_SCHEMA "state_schema"
#define PROTO_F_ALREADY      "already"
#define PROTO_F_MESSAGE      "message"
#define PROTO_F_LIMIT        "limit"
#define PROTO_F_LAST         "last"
#define PROTO_F_DATA         "data"
#define PROTO_F_REJECT_ROWS  "reject_rows"
#define PROTO_F_ROW_INDEX    "row_index"
#define PROTO_F_ROW          "row"
#define PROTO_F_REJECTED     "rejected"
/* Where a chunk's rows go (assign, write): names, not SQL. */
#define PROTO_F_TARGET_SCHEMA "target_schema"
#define PROTO_F_TARGET_TABLE  "target_table"
#define PROTO_F_COLUMNS       "columns"
#define PROTO_F_BINARY        "binary"
/* Upsert (--mode upsert): the key columns the merge matches on, names as
 * columns; empty (no name) for the other modes. */
#define PROTO_F_KEY "key"

/* Message kinds; the wire carries the name ("ready", "assign", ...). */
typedef enum {
    PROTO_READY = 1, /* worker -> coord: worker, pid, source_id */
    PROTO_ASSIGN,    /* coord -> worker: chunk_id, attempt, snapshot,
                        job_id, state_schema, source_sql, target_schema,
                        target_table, columns, binary, key, reject_rows */
    PROTO_PROGRESS,  /* worker -> coord: chunk_id, attempt, rows, bytes */
    PROTO_DONE,      /* worker -> coord: chunk_id, attempt, rows, bytes,
                        already, rejected */
    PROTO_FAILED,    /* worker -> coord: chunk_id, attempt, side, sqlstate,
                        conn_bad, message */
    PROTO_STOP,      /* coord -> worker: message ("" = the job is over,
                        else why this worker is refused); exit */
    PROTO_HEARTBEAT, /* both ways: no fields */
    /* Stream mode: one worker reads the source query once and sends its
     * rows in chunks; the others write chunks they are handed. */
    PROTO_READ,   /* coord -> reader: attempt, snapshot, source_sql, rows
                     (rows per chunk), limit (chunks below it may be sent) */
    PROTO_CREDIT, /* coord -> reader: attempt, limit, raised as chunks commit */
    PROTO_DATA,   /* reader -> coord -> writer: chunk_id, attempt, rows (in
                     this frame), last (the chunk's final frame), data (rows
                     as COPY sends them, without a binary header/trailer) */
    PROTO_END,    /* reader -> coord: attempt, chunk_id (chunks in all),
                     rows, bytes (in all) */
    PROTO_WRITE,  /* coord -> writer: chunk_id, attempt, target_schema,
                     target_table, columns, binary, key, job_id,
                     reject_rows,
                     state_schema; its DATA frames follow */
    PROTO_REJECT, /* worker -> coord: chunk_id, attempt, row_index,
                     sqlstate, message, row; one per rejected row,
                     sent before the attempt's done */
} proto_kind_t;

/* Which database an error came from. */
typedef enum {
    PROTO_SIDE_NONE = 0, /* neither: worker-internal */
    PROTO_SIDE_SOURCE = 1,
    PROTO_SIDE_TARGET = 2,
} proto_side_t;

/* One decoded (or to-be-encoded) message. Only the fields of its kind are
 * meaningful. source_sql, message, row, data and columns are heap
 * buffers owned by the message (proto_msg_clear frees them). */
typedef struct {
    proto_kind_t kind;               /* message kind */
    char worker[PROTO_MAX_ID + 1];   /* ready: worker's routing id */
    int64_t pid;                     /* ready: worker's process id */
    int64_t chunk_id;                /* assign..failed: chunk id (>= 0) */
    int32_t attempt;                 /* assign..failed: attempt (>= 1) */
    char snapshot[PROTO_MAX_ID + 1]; /* assign: exported snapshot id */
    char *source_sql;                /* assign: COPY (...) TO STDOUT */
    char target_schema[PROTO_MAX_NAME + 1]; /* assign, write: target's
                                               schema (a name, unquoted) */
    char target_table[PROTO_MAX_NAME + 1];  /* assign, write: its table */
    char *columns;      /* assign, write: column names, each followed by a
                           NUL (heap, owned) */
    size_t columns_len; /* bytes at columns, with the NULs */
    bool binary;        /* assign, write: binary COPY */
    char *key;          /* assign, write: upsert key names as columns
                           (heap, owned), or NULL/none for other modes */
    size_t key_len;     /* bytes at key, 0 when none */
    int64_t rows;       /* progress/done: rows (>= 0) */
    int64_t bytes;      /* progress/done: bytes (>= 0) */
    proto_side_t side;  /* failed: which database */
    char sqlstate[PROTO_SQLSTATE_LEN + 1]; /* failed: "" when none */
    bool conn_bad;                         /* failed: connection was lost */
    char *message; /* failed: one-line error text; stop: why refused, or "" */
    char job_id[PROTO_MAX_ID + 1];           /* assign: ledger job, "" = none */
    char state_schema[PROTO_MAX_ID + 1];     /* assign: ledger schema name */
    char source_id[PROTO_MAX_SOURCE_ID + 1]; /* ready: the worker's source
                                                database identity */
    bool already;                            /* done: the ledger said the chunk
                                                was committed before */
    int64_t limit;                           /* read, credit: chunk limit */
    bool last;                               /* data: the chunk's last frame */
    char *data;        /* data: rows (heap, owned; not NUL-terminated) */
    size_t data_len;   /* data: bytes at data, 0..PROTO_MAX_DATA */
    bool reject_rows;  /* assign: set bad rows aside (--on-bad-rows) */
    int64_t row_index; /* reject: the row's index in the chunk (>= 0) */
    char *row;         /* reject: the row in COPY text, with its newline */
    int64_t rejected;  /* done: rows set aside (>= 0) */
} proto_msg_t;

/* The wire name of a kind ("ready", ...), or "unknown". */
const char *proto_kind_name(proto_kind_t kind);

/* Encode msg as one msgpack map into a malloc'd buffer (*buf_out, *len_out;
 * the caller frees it with free()).
 * Fails (logged) when a field of the kind is missing or over its limit.
 * Limits, checked on encode and decode alike: worker 1..PROTO_MAX_ID,
 * snapshot and job_id 0..PROTO_MAX_ID, printable ASCII without spaces;
 * state_schema 0..PROTO_MAX_ID and source_id 0..PROTO_MAX_SOURCE_ID bytes
 * without NUL; source_sql 1..PROTO_MAX_SQL bytes without NUL;
 * target_schema and target_table 1..PROTO_MAX_NAME bytes without NUL;
 * columns 1..PROTO_MAX_COLUMNS names of 1..PROTO_MAX_NAME bytes without
 * NUL, each followed by one NUL; key likewise but 0..PROTO_MAX_COLUMNS
 * names (empty: not an upsert);
 * message (failed, reject, and stop, where "" means the job is over)
 * 0..PROTO_MAX_MESSAGE bytes without NUL, never NULL; sqlstate "" or 5 of
 * [0-9A-Z]; row 1..PROTO_MAX_ROW bytes, exactly one line: ends with its
 * only newline, no NUL; pid > 0, chunk_id >= 0, attempt >= 1,
 * rows/bytes/row_index/rejected >= 0, side 0..2; limit >= 0; data
 * 0..PROTO_MAX_DATA bytes of anything. */
bool proto_encode(const proto_msg_t *msg, char **buf_out, size_t *len_out)
    __attribute__((warn_unused_result));

/* Decode one frame into *out (zeroed first). Rejects, without crashing, any
 * frame that is not exactly one map with a known type, the current version,
 * every required field of that kind with the right type and size, no
 * unknown or duplicate field, and no bytes left over. On failure writes a
 * one-line reason into err (size errlen) and leaves *out empty. */
bool proto_decode(const void *buf, size_t len, proto_msg_t *out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Check a frame's msgpack structure before msgpack allocates anything for
 * it (proto_decode's first step): no container bigger than the bytes left
 * could hold, at most PROTO_MAX_FIELDS entries, PROTO_MAX_DEPTH levels, no
 * bytes left over. On failure writes a one-line reason into err. */
bool proto_prescan(const void *buf, size_t len, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* One-line context for a message in a log line: its kind, and its chunk
 * and attempt when it has them. */
void proto_describe(const proto_msg_t *msg, char *dst, size_t n);

/* Free the heap strings of msg and zero it. Accepts NULL. */
void proto_msg_clear(proto_msg_t *msg);

/* Write a ZeroMQ routing id (binary) into dst (size n, PROTO_PEER_TEXT is
 * always enough) for logging: as is when all printable, else "0x" + hex.
 * Returns dst. */
const char *proto_peer_text(const void *peer, size_t len, char *dst, size_t n);

/* Set the socket options every mapper socket gets: ZMQ_LINGER 0,
 * ZMQ_MAXMSGSIZE PROTO_MAX_FRAME; on a ROUTER also ZMQ_ROUTER_MANDATORY. */
bool proto_socket_setup(void *socket, bool is_router)
    __attribute__((warn_unused_result));

/* Send msg on a socket. With peer (a ROUTER), frames are [peer][body];
 * without (a DEALER), [body]. Non-blocking (ZMQ_DONTWAIT); every failure is
 * logged and returns false (not warn_unused_result: a heartbeat's or a
 * stop's failure is the lease's business, and such a caller ignores it). */
bool proto_send(void *socket, const void *peer, size_t peer_len,
                const proto_msg_t *msg);

/* proto_send to a ROUTER's peer that may have left or be slow: its absence
 * (errno EHOSTUNREACH) or its full queue (EAGAIN) is an answer, not logged;
 * other failures are. */
bool proto_send_if_there(void *socket, const void *peer, size_t peer_len,
                         const proto_msg_t *msg)
    __attribute__((warn_unused_result));

/* Receive one message without blocking. On a ROUTER (peer_out non-NULL) the
 * first frame is the sender's routing id, copied into peer_out (capacity
 * peer_cap, length in *peer_len_out). Returns false when nothing is waiting
 * (errno EAGAIN) or when the message was malformed (logged with the peer,
 * and dropped; all its frames are consumed; errno EPROTO), so a drain loop
 * stops on errno == EAGAIN only. */
bool proto_recv(void *socket, void *peer_out, size_t peer_cap,
                size_t *peer_len_out, proto_msg_t *out)
    __attribute__((warn_unused_result));

/* proto_recv, also copying the message's authenticated identity (the
 * User-Id the ZAP handler set: a CURVE client's public key in Z85; "" when
 * none) into user_out (capacity user_cap). */
bool proto_recv_user(void *socket, void *peer_out, size_t peer_cap,
                     size_t *peer_len_out, char *user_out, size_t user_cap,
                     proto_msg_t *out) __attribute__((warn_unused_result));

#endif
