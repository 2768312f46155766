/* common/proto_socket.c - proto's messages on ZeroMQ sockets (proto.h):
 * the options every socket gets, non-blocking sends, receives that drop
 * (and log) what does not decode. */
#include "proto.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

/* Set one socket option, logging a failure. */
static bool s_setopt(void *socket, int option, const char *name,
                     const void *value, size_t size)
{
    if (zmq_setsockopt(socket, option, value, size) == 0) return true;
    log_error("zmq_setsockopt(%s): %s", name, zmq_strerror(errno));
    return false;
}

bool proto_socket_setup(void *socket, bool is_router)
{
    int linger = 0;
    int64_t max_size = PROTO_MAX_FRAME;
    int mandatory = 1;
    return s_setopt(socket, ZMQ_LINGER, "ZMQ_LINGER", &linger, sizeof linger) &&
           s_setopt(socket, ZMQ_MAXMSGSIZE, "ZMQ_MAXMSGSIZE", &max_size,
                    sizeof max_size) &&
           (!is_router ||
            s_setopt(socket, ZMQ_ROUTER_MANDATORY, "ZMQ_ROUTER_MANDATORY",
                     &mandatory, sizeof mandatory));
}

/* Log a failed zmq_send (unless quiet and the peer is simply gone or its
 * queue full) and
 * keep its errno for the caller. */
static bool s_send_failed(const proto_msg_t *msg, const char *who, bool quiet)
{
    int e = errno;
    if (quiet && (e == EHOSTUNREACH || e == EAGAIN)) return false;
    char what[PROTO_ERR_LEN];
    proto_describe(msg, what, sizeof what);
    if (e == EAGAIN || e == EHOSTUNREACH)
        log_warn("cannot send %s to %s: %s", what, who, zmq_strerror(e));
    else
        log_error("cannot send %s to %s: %s", what, who, zmq_strerror(e));
    errno = e;
    return false;
}

static bool s_send(void *socket, const void *peer, size_t peer_len,
                   const proto_msg_t *msg, bool quiet)
{
    char who[PROTO_PEER_TEXT] = "the router";
    if (peer) proto_peer_text(peer, peer_len, who, sizeof who);
    if (peer && (peer_len == 0 || peer_len > PROTO_MAX_PEER)) {
        log_error("cannot send to peer %s: routing id of %zu bytes", who,
                  peer_len);
        errno = EINVAL;
        return false;
    }
    char *buf;
    size_t len;
    if (!proto_encode(msg, &buf, &len)) {
        errno = EINVAL;
        return false;
    }
    bool ok = true;
    if (peer &&
        zmq_send(socket, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        ok = s_send_failed(msg, who, quiet);
    if (ok && zmq_send(socket, buf, len, ZMQ_DONTWAIT) < 0)
        ok = s_send_failed(msg, who, quiet);
    int e = errno;
    free(buf);
    errno = e;
    return ok;
}

bool proto_send(void *socket, const void *peer, size_t peer_len,
                const proto_msg_t *msg)
{
    return s_send(socket, peer, peer_len, msg, false);
}

bool proto_send_if_there(void *socket, const void *peer, size_t peer_len,
                         const proto_msg_t *msg)
{
    return s_send(socket, peer, peer_len, msg, true);
}

/* Receive the next frame. Only a first frame may find nothing waiting. */
static bool s_recv_frame(void *socket, zmq_msg_t *frame, bool first)
{
    zmq_msg_init(frame);
    if (zmq_msg_recv(frame, socket, ZMQ_DONTWAIT) >= 0) return true;
    int e = errno;
    zmq_msg_close(frame);
    if (!first || (e != EAGAIN && e != EINTR))
        log_error("zmq_msg_recv: %s", zmq_strerror(e));
    errno = e;
    return false;
}

bool proto_recv(void *socket, void *peer_out, size_t peer_cap,
                size_t *peer_len_out, proto_msg_t *out)
{
    return proto_recv_user(socket, peer_out, peer_cap, peer_len_out, NULL, 0,
                           out);
}

bool proto_recv_user(void *socket, void *peer_out, size_t peer_cap,
                     size_t *peer_len_out, char *user_out, size_t user_cap,
                     proto_msg_t *out)
{
    assert(out);
    memset(out, 0, sizeof *out);
    if (peer_len_out) *peer_len_out = 0;
    if (user_out && user_cap) user_out[0] = '\0';

    /* Take the frames we want ([peer][body] or [body]) and count the rest. */
    size_t want = peer_out ? 2 : 1;
    zmq_msg_t frames[2];
    size_t got = 0, extra = 0;
    for (bool more = true; more;) {
        zmq_msg_t spare;
        zmq_msg_t *frame = got < want ? &frames[got] : &spare;
        if (!s_recv_frame(socket, frame, got == 0)) {
            int e = errno;
            for (size_t i = 0; i < got; i++)
                zmq_msg_close(&frames[i]);
            errno = e;
            return false;
        }
        more = zmq_msg_more(frame);
        if (frame == &spare) {
            extra++;
            zmq_msg_close(&spare);
        } else {
            got++;
        }
    }

    char who[PROTO_PEER_TEXT] = "the router";
    char err[PROTO_ERR_LEN] = "";
    if (peer_out)
        proto_peer_text(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), who,
                        sizeof who);
    bool ok;
    if (got < want || extra > 0) {
        snprintf(err, sizeof err, "%zu frames, expected %zu", got + extra,
                 want);
        ok = false;
    } else if (peer_out && zmq_msg_size(&frames[0]) > peer_cap) {
        snprintf(err, sizeof err, "routing id of %zu bytes, room for %zu",
                 zmq_msg_size(&frames[0]), peer_cap);
        ok = false;
    } else {
        zmq_msg_t *body = &frames[want - 1];
        ok = proto_decode(zmq_msg_data(body), zmq_msg_size(body), out, err,
                          sizeof err);
    }
    if (ok && peer_out) {
        memcpy(peer_out, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]));
        if (peer_len_out) *peer_len_out = zmq_msg_size(&frames[0]);
    }
    if (ok && user_out && user_cap) {
        /* The identity the ZAP handler authenticated (CURVE), or none. */
        const char *user = zmq_msg_gets(&frames[want - 1], "User-Id");
        snprintf(user_out, user_cap, "%s", user ? user : "");
    }
    for (size_t i = 0; i < got; i++)
        zmq_msg_close(&frames[i]);
    if (!ok) {
        log_warn("dropping malformed message from %s: %s", who, err);
        errno = EPROTO;
    }
    return ok;
}
