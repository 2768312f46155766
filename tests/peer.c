/* tests/peer.c - a hostile peer for the trust tests: it speaks the wire
 * protocol like a worker but lies or impersonates.
 *   peer lie ENDPOINT SOURCE_ID   say ready with that source id and answer
 *                                 every assign with done rows=0; prints
 *                                 "stop: MESSAGE" and exits 3 when refused,
 *                                 0 at the end of the job
 *   peer claim ENDPOINT ID        connect with routing id ID, say nothing,
 *                                 and print "got KIND" for the first
 *                                 message sent to that id (exit 0), or run
 *                                 until killed
 *   peer coord ENDPOINT TABLE     a coordinator: bind, wait for a worker's
 *                                 ready, hand it a write of one row ("1")
 *                                 into public.TABLE (column a), print its
 *                                 answer ("done ROWS" or "failed SQLSTATE
 *                                 MESSAGE"), stop it
 * Both give up after PEER_GIVE_UP_S seconds (exit 4). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "proto.h"

#define PEER_GIVE_UP_S 120
#define PEER_POLL_MS   100

/* The liar's routing id (and worker name): "liar-PID". */
static void s_liar_id(char *dst, size_t n)
{
    snprintf(dst, n, "liar-%ld", (long)getpid());
}

static int s_lie_run(void *sock, const char *source_id)
{
    proto_msg_t ready = {.kind = PROTO_READY, .pid = getpid()};
    s_liar_id(ready.worker, sizeof ready.worker);
    snprintf(ready.source_id, sizeof ready.source_id, "%s", source_id);
    time_t end = time(NULL) + PEER_GIVE_UP_S, last = 0;
    int lies = 0;
    while (time(NULL) < end) {
        if (time(NULL) != last) { /* ready until heard, then heartbeats */
            proto_msg_t hb = {.kind = PROTO_HEARTBEAT};
            if (!proto_send(sock, NULL, 0, lies ? &hb : &ready)) {
            }
            last = time(NULL);
        }
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, PEER_POLL_MS) <= 0) continue;
        proto_msg_t m;
        if (!proto_recv(sock, NULL, 0, NULL, &m)) continue;
        if (m.kind == PROTO_STOP) {
            printf("stop: %s\nlies told: %d\n", m.message, lies);
            int rc = m.message && *m.message ? 3 : 0;
            proto_msg_clear(&m);
            return rc;
        }
        if (m.kind == PROTO_ASSIGN || m.kind == PROTO_WRITE) {
            proto_msg_t d = {.kind = PROTO_DONE,
                             .chunk_id = m.chunk_id,
                             .attempt = m.attempt};
            if (proto_send(sock, NULL, 0, &d)) lies++;
        }
        proto_msg_clear(&m);
    }
    return 4;
}

static int s_claim(void *sock)
{
    time_t end = time(NULL) + PEER_GIVE_UP_S;
    while (time(NULL) < end) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, PEER_POLL_MS) <= 0) continue;
        proto_msg_t m;
        if (!proto_recv(sock, NULL, 0, NULL, &m)) continue;
        printf("got %s\n", proto_kind_name(m.kind));
        fflush(stdout);
        proto_msg_clear(&m);
        return 0;
    }
    return 4;
}

/* Receive one message on a ROUTER (the peer's id into peer/len), waiting
 * up to PEER_GIVE_UP_S. */
static bool s_router_recv(void *sock, char *peer, size_t *len, proto_msg_t *m)
{
    time_t end = time(NULL) + PEER_GIVE_UP_S;
    while (time(NULL) < end) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, PEER_POLL_MS) <= 0) continue;
        if (proto_recv(sock, peer, PROTO_MAX_PEER, len, m)) return true;
    }
    return false;
}

static int s_coord(void *sock, const char *table)
{
    char peer[PROTO_MAX_PEER];
    size_t len = 0;
    proto_msg_t m;
    proto_kind_t kind;
    do {
        if (!s_router_recv(sock, peer, &len, &m)) return 4;
        kind = m.kind;
        proto_msg_clear(&m);
    } while (kind != PROTO_READY);
    proto_msg_t w = {.kind = PROTO_WRITE, .chunk_id = 0, .attempt = 1};
    snprintf(w.target_schema, sizeof w.target_schema, "public");
    snprintf(w.target_table, sizeof w.target_table, "%s", table);
    w.columns = "a";
    w.columns_len = 2;
    proto_msg_t d = {.kind = PROTO_DATA,
                     .chunk_id = 0,
                     .attempt = 1,
                     .rows = 1,
                     .last = true,
                     .data = "1\n",
                     .data_len = 2};
    if (!proto_send(sock, peer, len, &w) || !proto_send(sock, peer, len, &d))
        return 2;
    for (;;) {
        if (!s_router_recv(sock, peer, &len, &m)) return 4;
        if (m.kind == PROTO_DONE || m.kind == PROTO_FAILED) break;
        proto_msg_clear(&m);
    }
    if (m.kind == PROTO_DONE)
        printf("done %lld\n", (long long)m.rows);
    else
        printf("failed %s %s\n", m.sqlstate, m.message);
    proto_msg_clear(&m);
    proto_msg_t stop = {.kind = PROTO_STOP, .message = ""};
    return proto_send(sock, peer, len, &stop) ? 0 : 2;
}

int main(int argc, char **argv)
{
    log_init("peer", LOG_INFO);
    if (argc != 4 || (strcmp(argv[1], "lie") && strcmp(argv[1], "claim") &&
                      strcmp(argv[1], "coord"))) {
        fprintf(stderr, "usage: peer lie ENDPOINT SOURCE_ID | "
                        "peer claim ENDPOINT ID | peer coord ENDPOINT TABLE\n");
        return 2;
    }
    bool lie = !strcmp(argv[1], "lie"), coord = !strcmp(argv[1], "coord");
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, coord ? ZMQ_ROUTER : ZMQ_DEALER);
    int rc = 2;
    if (!sock || !proto_socket_setup(sock, coord)) goto out;
    if (coord) {
        rc = zmq_bind(sock, argv[2]) ? 2 : s_coord(sock, argv[3]);
        goto out;
    }
    char id[PROTO_MAX_ID + 1];
    if (lie)
        s_liar_id(id, sizeof id);
    else
        snprintf(id, sizeof id, "%s", argv[3]);
    if (zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, strlen(id))) goto out;
    if (zmq_connect(sock, argv[2])) goto out;
    rc = lie ? s_lie_run(sock, argv[3]) : s_claim(sock);
out:
    fflush(stdout);
    if (sock) zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
