/* worker/main.c - mapper-worker: connect a DEALER to the coordinator, say
 * ready, copy each assigned chunk, report progress and the outcome. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zmq.h>

#include "copy.h"
#include "defaults.h"
#include "log.h"
#include "proto.h"

#define WORKER_POLL_MS 1000

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct {
    void *sock;       /* DEALER to the coordinator */
    int64_t chunk_id; /* chunk being copied */
    int32_t attempt;  /* its attempt */
} s_worker_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: mapper-worker --connect ENDPOINT --id ID [--parent PID] "
            "[-v]\n"
            "Started by mapper-coord. Database connection strings come from\n"
            "the environment (" MAPPER_ENV_SOURCE ", " MAPPER_ENV_TARGET
            "), never from the command line.\n");
}

/* Read one message if there is one; a STOP (or a signal) ends the work. */
static bool s_should_stop(s_worker_t *w)
{
    proto_msg_t msg;
    while (!s_stop && proto_recv(w->sock, NULL, 0, NULL, &msg)) {
        if (msg.kind == PROTO_STOP)
            s_stop = 1;
        else
            log_warn("chunk %" PRId64 ": ignoring %s while copying",
                     w->chunk_id, proto_kind_name(msg.kind));
        proto_msg_clear(&msg);
    }
    return s_stop;
}

static bool s_tick(void *arg, int64_t rows, int64_t bytes)
{
    s_worker_t *w = arg;
    proto_msg_t m = {.kind = PROTO_PROGRESS,
                     .chunk_id = w->chunk_id,
                     .attempt = w->attempt,
                     .rows = rows,
                     .bytes = bytes};
    if (!proto_send(w->sock, NULL, 0, &m)) { /* logged; progress is advisory */
    }
    return !s_should_stop(w);
}

static void s_run_chunk(s_worker_t *w, copy_conns_t *conns,
                        const proto_msg_t *a)
{
    w->chunk_id = a->chunk_id;
    w->attempt = a->attempt;
    copy_job_t job = {a->chunk_id,   a->attempt, a->snapshot,    a->source_sql,
                      a->target_sql, a->job_id,  a->state_schema};
    int64_t rows = 0, bytes = 0;
    pgutil_error_t err;
    log_debug("chunk %" PRId64 " attempt %d: start", a->chunk_id, a->attempt);
    copy_status_t st = copy_chunk(conns, &job, s_tick, w, &rows, &bytes, &err);
    proto_msg_t r = {.chunk_id = a->chunk_id, .attempt = a->attempt};
    if (st == COPY_OK || st == COPY_ALREADY) {
        r.kind = PROTO_DONE;
        r.already = st == COPY_ALREADY;
        r.rows = rows;
        r.bytes = bytes;
    } else {
        r.kind = PROTO_FAILED;
        r.side = err.side;
        memcpy(r.sqlstate, err.sqlstate, sizeof r.sqlstate);
        r.conn_bad = err.conn_bad;
        r.message =
            st == COPY_ABORTED ? "aborted: worker asked to stop" : err.message;
        if (st == COPY_FAILED)
            log_warn("chunk %" PRId64 " attempt %d: %s: %s%s%s", a->chunk_id,
                     a->attempt, pgutil_side_name(err.side), err.sqlstate,
                     err.sqlstate[0] ? " " : "", err.message);
    }
    if (!proto_send(w->sock, NULL, 0, &r))
        log_error("chunk %" PRId64 ": could not report the outcome",
                  a->chunk_id);
    r.message = NULL; /* not ours to free */
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *id = NULL;
    long parent = 0;
    log_level_t level = LOG_INFO;
    static const struct option opts[] = {{"connect", required_argument, 0, 'c'},
                                         {"id", required_argument, 0, 'i'},
                                         {"parent", required_argument, 0, 'p'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            endpoint = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'p':
            parent = strtol(optarg, NULL, 10);
            break;
        case 'v':
            level = LOG_DEBUG;
            break;
        case 'h':
            s_usage(stdout);
            return MAPPER_EXIT_OK;
        default:
            s_usage(stderr);
            return MAPPER_EXIT_USAGE;
        }
    }
    log_init("worker", level);
    if (!endpoint || !id || strlen(id) > PROTO_MAX_ID) {
        log_error("--connect and --id (at most %d bytes) are required",
                  PROTO_MAX_ID);
        return MAPPER_EXIT_USAGE;
    }
    /* A forked worker dies with its coordinator, even if it was SIGKILLed
     * between fork and here. */
    if (parent > 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)parent) return MAPPER_EXIT_CANNOT_RUN;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    const char *src = getenv(MAPPER_ENV_SOURCE),
               *dst = getenv(MAPPER_ENV_TARGET);
    copy_conns_t conns = {src ? src : "", dst ? dst : "", NULL, NULL};
    void *ctx = zmq_ctx_new();
    s_worker_t w = {zmq_socket(ctx, ZMQ_DEALER), -1, 0};
    int rc = MAPPER_EXIT_CANNOT_RUN;
    if (!w.sock || zmq_setsockopt(w.sock, ZMQ_ROUTING_ID, id, strlen(id)) ||
        !proto_socket_setup(w.sock, false) || zmq_connect(w.sock, endpoint)) {
        log_error("cannot connect to %s: %s", endpoint, zmq_strerror(errno));
        goto out;
    }
    proto_msg_t ready = {.kind = PROTO_READY, .pid = getpid()};
    snprintf(ready.worker, sizeof ready.worker, "%s", id);
    if (!proto_send(w.sock, NULL, 0, &ready)) goto out;

    rc = MAPPER_EXIT_OK;
    while (!s_stop) {
        zmq_pollitem_t item = {w.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, WORKER_POLL_MS) < 0) {
            if (errno == EINTR) continue;
            log_error("poll: %s", zmq_strerror(errno));
            rc = MAPPER_EXIT_CANNOT_RUN;
            break;
        }
        proto_msg_t msg;
        while (!s_stop && proto_recv(w.sock, NULL, 0, NULL, &msg)) {
            if (msg.kind == PROTO_ASSIGN)
                s_run_chunk(&w, &conns, &msg);
            else if (msg.kind == PROTO_STOP)
                s_stop = 1;
            else if (msg.kind != PROTO_HEARTBEAT)
                log_warn("ignoring unexpected %s", proto_kind_name(msg.kind));
            proto_msg_clear(&msg);
        }
    }
out:
    copy_conns_close(&conns);
    if (w.sock) zmq_close(w.sock);
    zmq_ctx_term(ctx);
    return rc;
}
