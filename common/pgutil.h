/* common/pgutil.h - PostgreSQL helpers both sides use: connecting with our
 * session settings, capturing an error (before anything closes the
 * connection), quoting identifiers. */
#ifndef MAPPER_PGUTIL_H
#define MAPPER_PGUTIL_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "proto.h"

/* An error from one side, captured while the connection is still intact. */
typedef struct {
    proto_side_t side;                     /* which database */
    char sqlstate[PROTO_SQLSTATE_LEN + 1]; /* "" when libpq gave none */
    bool conn_bad;                         /* connection is lost */
    char message[PROTO_MAX_MESSAGE];       /* one line, no password */
} pgutil_error_t;

/* "source", "target" or "worker". */
const char *pgutil_side_name(proto_side_t side);

/* Connect with conninfo (a connection string or URI; "" = libpq defaults),
 * adding connect_timeout, TCP keepalives and application_name unless the
 * conninfo sets them, and pin the settings that shape values as text
 * (DateStyle, IntervalStyle, extra_float_digits, bytea_output, xmloption,
 * client_encoding UTF8) whatever the server's defaults. On failure returns
 * NULL and fills *err. */
PGconn *pgutil_connect(const char *conninfo, proto_side_t side,
                       const char *app_name, pgutil_error_t *err);

/* Fill *err from res (may be NULL) and conn: SQLSTATE, connection status,
 * and a one-line message prefixed by nothing (the side is a field). */
void pgutil_capture(PGconn *conn, const PGresult *res, proto_side_t side,
                    pgutil_error_t *err);

/* Run a statement that returns no rows (or rows we ignore). */
bool pgutil_exec(PGconn *conn, const char *sql, proto_side_t side,
                 pgutil_error_t *err) __attribute__((warn_unused_result));

/* End a failed transaction; a ROLLBACK that fails too (the session is
 * broken, which the caller finds out on its next statement) is logged at
 * debug level, under context. */
void pgutil_rollback(PGconn *conn, proto_side_t side, const char *context);

/* Run a query with text parameters; returns its PGRES_TUPLES_OK result
 * (caller PQclear()s) or NULL with *err filled. */
PGresult *pgutil_query(PGconn *conn, const char *sql, int nparams,
                       const char *const *params, proto_side_t side,
                       pgutil_error_t *err);

/* A malloc'd, quoted identifier ("My Table" -> "\"My Table\""), or NULL. */
char *pgutil_quote_ident(PGconn *conn, const char *ident);

/* A probe of a database that stopped answering, advanced without blocking
 * (PQconnectStart/PQconnectPoll), or the reconnection of a session that
 * broke (PQresetStart/PQresetPoll): an event loop starts it and polls it
 * once a tick. */
typedef struct {
    PGconn *conn;   /* the connection being tried, or NULL */
    bool reset;     /* conn is a caller's session being reset (kept) */
    bool reading;   /* libpq waits to read (else to write) */
    double started; /* clock_now() when it began */
} pgutil_probe_t;

typedef enum {
    PGUTIL_PROBE_BUSY, /* no answer yet */
    PGUTIL_PROBE_UP,   /* the server answered: it accepts connections */
    PGUTIL_PROBE_DOWN, /* refused, failed, or no answer for the connect
                          timeout */
} pgutil_probe_state_t;

/* Start probing the server at conninfo (*p zeroed before the first use). */
pgutil_probe_state_t pgutil_probe_start(pgutil_probe_t *p,
                                        const char *conninfo);

/* Start reconnecting conn (PQresetStart), a session that broke, without
 * blocking; pgutil_probe_poll advances it. UP: conn is connected again
 * (the caller's session settings are not replayed). The probe never
 * closes conn: it stays the caller's. */
pgutil_probe_state_t pgutil_reset_start(pgutil_probe_t *p, PGconn *conn);

/* Advance the probe without blocking. A finished probe (UP or DOWN) has
 * closed its connection (a reset's: only let go of it). */
pgutil_probe_state_t pgutil_probe_poll(pgutil_probe_t *p);

/* Abandon a probe (no-op when none is running). */
void pgutil_probe_cancel(pgutil_probe_t *p);

/* The database's identity, "SYSTEM_IDENTIFIER/DBNAME" (the system
 * identifier when this role may read it, else empty). Run it outside a
 * transaction that matters: a refused query aborts it. */
void pgutil_source_identity(PGconn *conn, char *out, size_t n);

/* Write e as a reason into err (log_reason): "context: SQLSTATE message".
 * Returns false. */
bool pgutil_reason(char *err, size_t errlen, const char *context,
                   const pgutil_error_t *e);

/* Log err once: "<side>: [SQLSTATE] message" with a context prefix. */
void pgutil_log_error(const char *context, const pgutil_error_t *err);

#endif
