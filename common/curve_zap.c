/* common/curve_zap.c - the ZAP handler (RFC 27) of CURVE security
 * (curve.h): a REP socket that admits a connection only when its public
 * key is on the allow-list. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curve.h"
#include "log.h"

struct curve_zap {
    void *socket;               /* REP bound to CURVE_ZAP_ENDPOINT */
    const curve_allow_t *allow; /* borrowed allow-list */
    size_t refused;             /* requests answered with a non-200 status */
};

/* The frames of a ZAP request (RFC 27), in order. */
enum {
    S_ZAP_VERSION = 0,
    S_ZAP_REQUEST_ID,
    S_ZAP_DOMAIN,
    S_ZAP_ADDRESS,
    S_ZAP_ROUTING_ID,
    S_ZAP_MECHANISM,
    S_ZAP_CREDENTIALS,
    S_ZAP_CURVE_FRAMES = S_ZAP_CREDENTIALS + 1 /* CURVE: one 32-byte key */
};

curve_zap_t *curve_zap_new(void *ctx, const curve_allow_t *allow)
{
    if (!ctx || !allow) {
        log_error("ZAP: no context or no allow-list");
        return NULL;
    }
    curve_zap_t *self = calloc(1, sizeof *self);
    if (!self) {
        log_error("ZAP: out of memory");
        return NULL;
    }
    self->allow = allow;
    self->socket = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!self->socket ||
        zmq_setsockopt(self->socket, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(self->socket, CURVE_ZAP_ENDPOINT) != 0) {
        log_error("ZAP: cannot bind %s: %s", CURVE_ZAP_ENDPOINT,
                  zmq_strerror(errno));
        curve_zap_destroy(&self);
    }
    return self;
}

void *curve_zap_socket(curve_zap_t *zap)
{
    return zap ? zap->socket : NULL;
}

size_t curve_zap_refused(const curve_zap_t *zap)
{
    return zap ? zap->refused : 0;
}

void curve_zap_destroy(curve_zap_t **self_p)
{
    if (!self_p || !*self_p) return;
    if ((*self_p)->socket) zmq_close((*self_p)->socket);
    free(*self_p);
    *self_p = NULL;
}

/* A received request: the first frames, and how many arrived in all. */
typedef struct {
    zmq_msg_t frames[CURVE_ZAP_MAX_FRAMES]; /* the first `kept` frames */
    size_t kept;                            /* frames initialised above */
    size_t total;                           /* frames in the request */
} s_zap_request_t;

/* The answer to a request. */
typedef struct {
    const char *status;           /* "200", "400" or "500" */
    const char *text;             /* status text */
    char user[CURVE_KEY_LEN + 1]; /* User-Id: the key's Z85, or "" */
} s_zap_reply_t;

/* True when frame i arrived and holds exactly the string s. */
static bool s_frame_is(s_zap_request_t *req, size_t i, const char *s)
{
    if (i >= req->kept) return false;
    size_t n = strlen(s);
    return zmq_msg_size(&req->frames[i]) == n &&
           memcmp(zmq_msg_data(&req->frames[i]), s, n) == 0;
}

/* Put frame i into buf as printable text for a log line ("?" for other
 * bytes, "(none)" when absent), cut at CURVE_ZAP_TEXT_MAX. */
static void s_frame_text(s_zap_request_t *req, size_t i,
                         char buf[CURVE_ZAP_TEXT_MAX])
{
    if (i >= req->kept) {
        snprintf(buf, CURVE_ZAP_TEXT_MAX, "(none)");
        return;
    }
    const unsigned char *data = zmq_msg_data(&req->frames[i]);
    size_t n = zmq_msg_size(&req->frames[i]);
    if (n > CURVE_ZAP_TEXT_MAX - 1) n = CURVE_ZAP_TEXT_MAX - 1;
    for (size_t j = 0; j < n; j++)
        buf[j] = (data[j] >= ' ' && data[j] < 0x7f) ? (char)data[j] : '?';
    buf[n] = '\0';
}

/* Release the frames a request kept. */
static void s_zap_request_close(s_zap_request_t *req)
{
    for (size_t i = 0; i < req->kept; i++)
        zmq_msg_close(&req->frames[i]);
    req->kept = 0;
}

/* Receive one whole request without blocking, keeping its first frames.
 * False when none is pending (or, logged, when the socket fails). */
static bool s_zap_recv(curve_zap_t *self, s_zap_request_t *req)
{
    req->kept = req->total = 0;
    for (bool more = true; more; req->total++) {
        zmq_msg_t spare;
        zmq_msg_t *msg =
            req->kept < CURVE_ZAP_MAX_FRAMES ? &req->frames[req->kept] : &spare;
        zmq_msg_init(msg);
        if (zmq_msg_recv(msg, self->socket, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(msg);
            if (req->total > 0 || (e != EAGAIN && e != EINTR))
                log_error("ZAP: cannot receive a request: %s", zmq_strerror(e));
            s_zap_request_close(req);
            return false;
        }
        more = zmq_msg_more(msg);
        if (msg == &spare)
            zmq_msg_close(msg);
        else
            req->kept++;
    }
    return true;
}

/* Decide a request; refusals are logged here, once. */
static void s_zap_decide(curve_zap_t *self, s_zap_request_t *req,
                         s_zap_reply_t *reply)
{
    char address[CURVE_ZAP_TEXT_MAX], mechanism[CURVE_ZAP_TEXT_MAX];
    s_frame_text(req, S_ZAP_ADDRESS, address);
    s_frame_text(req, S_ZAP_MECHANISM, mechanism);
    reply->user[0] = '\0';
    reply->status = "500";
    reply->text = "malformed ZAP request";
    if (req->total <= S_ZAP_MECHANISM ||
        !s_frame_is(req, S_ZAP_VERSION, CURVE_ZAP_VERSION)) {
        log_warn("ZAP: refused a malformed request from %s "
                 "(%zu frames, mechanism %s; key none)",
                 address, req->total, mechanism);
        return;
    }
    if (!s_frame_is(req, S_ZAP_MECHANISM, "CURVE")) {
        reply->status = "400";
        reply->text = "CURVE required";
        log_warn("ZAP: refused a %s client from %s (key none): CURVE required",
                 mechanism, address);
        return;
    }
    if (req->total != S_ZAP_CURVE_FRAMES ||
        zmq_msg_size(&req->frames[S_ZAP_CREDENTIALS]) != CURVE_KEY_BYTES) {
        log_warn("ZAP: refused a malformed CURVE request from %s "
                 "(%zu frames; key none)",
                 address, req->total);
        return;
    }
    const uint8_t *key = zmq_msg_data(&req->frames[S_ZAP_CREDENTIALS]);
    char z85[CURVE_KEY_LEN + 1];
    zmq_z85_encode(z85, key, CURVE_KEY_BYTES);
    if (!curve_allow_has(self->allow, key)) {
        reply->status = "400";
        reply->text = "client key not allowed";
        log_warn("ZAP: refused CURVE client key %s from %s: not in the "
                 "allow-list",
                 z85, address);
        return;
    }
    reply->status = "200";
    reply->text = "OK";
    memcpy(reply->user, z85, sizeof z85);
    log_debug("ZAP: allowed CURVE client key %s from %s", z85, address);
}

/* Send the six reply frames. A REP socket never blocks on send (it drops
 * a reply to a gone or full peer), so this completes or fails at once. */
static void s_zap_send(curve_zap_t *self, s_zap_request_t *req,
                       const s_zap_reply_t *reply)
{
    const void *id = "";
    size_t id_len = 0;
    if (req->kept > S_ZAP_REQUEST_ID) {
        id = zmq_msg_data(&req->frames[S_ZAP_REQUEST_ID]);
        id_len = zmq_msg_size(&req->frames[S_ZAP_REQUEST_ID]);
    }
    const int more = ZMQ_SNDMORE | ZMQ_DONTWAIT;
    if (zmq_send(self->socket, CURVE_ZAP_VERSION, strlen(CURVE_ZAP_VERSION),
                 more) < 0 ||
        zmq_send(self->socket, id, id_len, more) < 0 ||
        zmq_send(self->socket, reply->status, strlen(reply->status), more) <
            0 ||
        zmq_send(self->socket, reply->text, strlen(reply->text), more) < 0 ||
        zmq_send(self->socket, reply->user, strlen(reply->user), more) < 0 ||
        zmq_send(self->socket, "", 0, ZMQ_DONTWAIT) < 0)
        log_error("ZAP: cannot send a reply: %s", zmq_strerror(errno));
}

void curve_zap_handle(curve_zap_t *zap)
{
    if (!zap) return;
    s_zap_request_t req;
    while (s_zap_recv(zap, &req)) {
        s_zap_reply_t reply;
        s_zap_decide(zap, &req, &reply);
        if (strcmp(reply.status, "200") != 0) zap->refused++;
        s_zap_send(zap, &req, &reply);
        s_zap_request_close(&req);
    }
}

bool curve_msg_user(zmq_msg_t *msg, char *out, size_t n)
{
    if (!out || n == 0) return false;
    out[0] = '\0';
    const char *user = msg ? zmq_msg_gets(msg, "User-Id") : NULL;
    if (!user || !*user) return false;
    snprintf(out, n, "%s", user);
    return true;
}
