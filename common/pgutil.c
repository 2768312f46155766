/* common/pgutil.c - PostgreSQL helpers: connect, capture errors, quote. */
#include "pgutil.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "defaults.h"
#include "log.h"

const char *pgutil_side_name(proto_side_t side)
{
    switch (side) {
    case PROTO_SIDE_SOURCE:
        return "source";
    case PROTO_SIDE_TARGET:
        return "target";
    default:
        return "worker";
    }
}

pgutil_probe_state_t pgutil_probe_start(pgutil_probe_t *p, const char *conninfo)
{
    pgutil_probe_cancel(p);
    const char *keys[] = {"dbname", NULL};
    const char *vals[] = {conninfo ? conninfo : "", NULL};
    p->conn = PQconnectStartParams(keys, vals, 1);
    p->reset = false;
    p->reading = false;
    p->started = clock_now();
    if (!p->conn || PQstatus(p->conn) == CONNECTION_BAD) {
        pgutil_probe_cancel(p);
        return PGUTIL_PROBE_DOWN;
    }
    return pgutil_probe_poll(p);
}

pgutil_probe_state_t pgutil_reset_start(pgutil_probe_t *p, PGconn *conn)
{
    pgutil_probe_cancel(p);
    p->started = clock_now();
    p->reading = false;
    if (!conn || !PQresetStart(conn)) return PGUTIL_PROBE_DOWN;
    p->conn = conn;
    p->reset = true;
    return pgutil_probe_poll(p);
}

/* A finished probe's answer: the connection is closed (a reset's stays
 * with its owner). */
static pgutil_probe_state_t s_probe_end(pgutil_probe_t *p, bool up)
{
    pgutil_probe_cancel(p);
    return up ? PGUTIL_PROBE_UP : PGUTIL_PROBE_DOWN;
}

pgutil_probe_state_t pgutil_probe_poll(pgutil_probe_t *p)
{
    if (!p->conn) return PGUTIL_PROBE_DOWN;
    for (;;) {
        /* libpq may be asked to go on only once its socket is ready. */
        struct pollfd pfd = {PQsocket(p->conn), p->reading ? POLLIN : POLLOUT,
                             0};
        int n = poll(&pfd, 1, 0);
        if (n == 0) {
            if (clock_now() - p->started > atof(MAPPER_CONNECT_TIMEOUT_S))
                return s_probe_end(p, false);
            return PGUTIL_PROBE_BUSY;
        }
        if (n < 0 && errno == EINTR) continue;
        switch (p->reset ? PQresetPoll(p->conn) : PQconnectPoll(p->conn)) {
        case PGRES_POLLING_READING:
            p->reading = true;
            continue;
        case PGRES_POLLING_WRITING:
            p->reading = false;
            continue;
        case PGRES_POLLING_OK:
            return s_probe_end(p, true);
        default: /* failed: answered only if it asked for a password */
            return s_probe_end(p, !p->reset &&
                                      PQconnectionNeedsPassword(p->conn) != 0);
        }
    }
}

void pgutil_probe_cancel(pgutil_probe_t *p)
{
    if (p->conn && !p->reset) PQfinish(p->conn);
    p->conn = NULL;
}

/* The settings that shape values as text, pinned on every session (as
 * pg_dump does) so that what one side prints the other reads back as the
 * same value, whatever each database's or role's defaults: ISO dates (a
 * DMY/MDY pair of databases would otherwise swap day and month), intervals
 * in the postgres style, floats with every digit, bytea in hex, XML as
 * content, and UTF8 on the wire: each server converts from and to its own
 * encoding, and a character the target's encoding lacks fails loudly.
 * lc_monetary is not pinned (money's value depends on it); schema.c
 * refuses money in text COPY between databases whose lc_monetary differ. */
#define PGUTIL_SESSION_SQL                                                     \
    "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = postgres; "               \
    "SET extra_float_digits = 3; SET bytea_output = hex; "                     \
    "SET xmloption = content; SET client_encoding = 'UTF8'"

/* Server notices (e.g. "schema already exists, skipping") are debug lines,
 * not stray text on stderr. */
static void s_notice(void *arg, const char *message)
{
    log_debug("%s notice: %s", (const char *)arg, message);
}

PGconn *pgutil_connect(const char *conninfo, proto_side_t side,
                       const char *app_name, pgutil_error_t *err)
{
    /* Our settings first: the user's conninfo (expanded last) wins. */
    const char *keys[] = {
        "connect_timeout",     "keepalives",       "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "application_name",    "dbname",           NULL};
    const char *vals[] = {MAPPER_CONNECT_TIMEOUT_S,
                          "1",
                          MAPPER_KEEPALIVES_IDLE_S,
                          MAPPER_KEEPALIVES_INTERVAL_S,
                          MAPPER_KEEPALIVES_COUNT,
                          MAPPER_TCP_USER_TIMEOUT_MS,
                          app_name,
                          conninfo ? conninfo : "",
                          NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, s_notice, (void *)pgutil_side_name(side));
        if (pgutil_exec(conn, PGUTIL_SESSION_SQL, side, err)) return conn;
        PQfinish(conn);
        return NULL;
    }
    pgutil_capture(conn, NULL, side, err);
    if (!conn) snprintf(err->message, sizeof err->message, "out of memory");
    err->conn_bad = true;
    PQfinish(conn);
    return NULL;
}

void pgutil_capture(PGconn *conn, const PGresult *res, proto_side_t side,
                    pgutil_error_t *err)
{
    memset(err, 0, sizeof *err);
    err->side = side;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strlen(state) == PROTO_SQLSTATE_LEN)
        memcpy(err->sqlstate, state, PROTO_SQLSTATE_LEN + 1);
    err->conn_bad = !conn || PQstatus(conn) == CONNECTION_BAD;
    const char *msg = NULL;
    if (res) msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg || !*msg) msg = res ? PQresultErrorMessage(res) : NULL;
    if ((!msg || !*msg) && conn) msg = PQerrorMessage(conn);
    if (!msg || !*msg) msg = "unknown error";
    log_one_line(err->message, sizeof err->message, msg);
}

bool pgutil_exec(PGconn *conn, const char *sql, proto_side_t side,
                 pgutil_error_t *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) pgutil_capture(conn, res, side, err);
    PQclear(res);
    return ok;
}

void pgutil_rollback(PGconn *conn, proto_side_t side, const char *context)
{
    pgutil_error_t e;
    if (!pgutil_exec(conn, "ROLLBACK", side, &e))
        log_debug("%s: ROLLBACK: %s", context, e.message);
}

PGresult *pgutil_query(PGconn *conn, const char *sql, int nparams,
                       const char *const *params, proto_side_t side,
                       pgutil_error_t *err)
{
    PGresult *res =
        PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) return res;
    pgutil_capture(conn, res, side, err);
    PQclear(res);
    return NULL;
}

char *pgutil_quote_ident(PGconn *conn, const char *ident)
{
    char *q = PQescapeIdentifier(conn, ident, strlen(ident));
    if (!q) return NULL;
    char *copy = strdup(q);
    PQfreemem(q);
    return copy;
}

void pgutil_log_error(const char *context, const pgutil_error_t *err)
{
    log_error("%s: %s: %s%s%s%s", context, pgutil_side_name(err->side),
              err->sqlstate[0] ? "[" : "", err->sqlstate,
              err->sqlstate[0] ? "] " : "", err->message);
}

bool pgutil_reason(char *err, size_t errlen, const char *context,
                   const pgutil_error_t *e)
{
    return log_reason(err, errlen, "%s: %s%s%s", context, e->sqlstate,
                      e->sqlstate[0] ? " " : "", e->message);
}

void pgutil_source_identity(PGconn *conn, char *out, size_t n)
{
    pgutil_error_t e;
    PGresult *res = pgutil_query(
        conn,
        "SELECT current_database(), system_identifier FROM pg_control_system()",
        0, NULL, PROTO_SIDE_SOURCE, &e);
    if (!res)
        res = pgutil_query(conn, "SELECT current_database(), ''", 0, NULL,
                           PROTO_SIDE_SOURCE, &e);
    if (!res) {
        snprintf(out, n, "?");
        return;
    }
    snprintf(out, n, "%s/%s", PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 0));
    PQclear(res);
}
