/* worker/relay.h - the relay from source to target that never blocks in
 * libpq: both sessions non-blocking while rows flow, every wait through
 * the caller's copy_wait_fn (the worker's poll over its coordinator's
 * socket and the libpq sockets). */
#ifndef MAPPER_RELAY_H
#define MAPPER_RELAY_H

#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "copy.h"
#include "pgutil.h"

/* Wait at most timeout_ms for fds (revents cleared, then filled) through
 * wait (gets arg), or poll(2) alone when wait is NULL. False to abort. */
bool relay_wait(copy_wait_fn wait, void *arg, struct pollfd *fds, int nfds,
                int timeout_ms) __attribute__((warn_unused_result));

/* Wait through wait (one poll interval at most) for conn to be readable,
 * and read what came. COPY_ABORTED when wait said stop, COPY_FAILED (*err)
 * when the connection failed. */
copy_status_t relay_read_more(PGconn *conn, proto_side_t side,
                              copy_wait_fn wait, void *arg, pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* relay_read_more for a source whose COPY has moved bytes so far: it
 * reads in gulps (see relay.c; naps counted in *naps). */
copy_status_t relay_read_source(PGconn *src, int64_t bytes, int64_t *naps,
                                copy_wait_fn wait, void *arg,
                                pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Wait through wait until conn has a whole result, so that PQgetResult
 * does not block. COPY_ABORTED when wait said stop, COPY_FAILED (*err)
 * when the connection failed. */
copy_status_t relay_await_result(PGconn *conn, proto_side_t side,
                                 copy_wait_fn wait, void *arg,
                                 pgutil_error_t *err)
    __attribute__((warn_unused_result));

/* Expect one result of status want from conn, then no more; false with
 * the error in *err otherwise. */
bool relay_result(PGconn *conn, ExecStatusType want, proto_side_t side,
                  pgutil_error_t *err) __attribute__((warn_unused_result));

/* Whether the relay, having read the source, naps before reading it
 * again (reading in gulps, see relay.c): chunk_bytes moved so far in
 * the chunk, queued bytes still waiting in the source's socket (-1:
 * unknown). */
bool relay_nap_due(int64_t chunk_bytes, int queued);

/* Stream the rows of the COPY TO STDOUT running on c->src into the COPY
 * FROM STDIN running on c->dst until the source's ends, then end the
 * target's and check both results. Reads the source while the target is
 * fed, through a bounded buffer; waits through job->wait; ticks (tick,
 * arg) every MAPPER_PROGRESS_EVERY_ROWS rows or MAPPER_PROGRESS_EVERY_MS.
 * *rows_out counts rows (binary: without header and trailer). Both
 * sessions are blocking again on return when it succeeds. */
copy_status_t relay_stream(copy_conns_t *c, copy_tick_fn tick, void *arg,
                           const copy_job_t *job, bool binary,
                           int64_t *rows_out, int64_t *bytes_out,
                           pgutil_error_t *err)
    __attribute__((warn_unused_result));

#endif
