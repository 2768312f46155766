/* tests/unit/test_curve.c - unit tests for common/curve.c: key files, the
 * allow-list, and CURVE + ZAP over real ZeroMQ on tcp://127.0.0.1, driven
 * by a single-threaded poll loop with bounded waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "curve.h"

#define S_MAX_SOCKETS  8    /* sockets one test may open */
#define S_ENDPOINT_MAX 256  /* ZMQ_LAST_ENDPOINT text */
#define S_POLL_MS      20   /* one zmq_poll round */
#define S_ARRIVE_MS    5000 /* a message that must arrive does so by then */
#define S_REFUSE_MS    1000 /* a message that must not arrive: watch this long */
#define S_MAX_ROUNDS   100000 /* hard cap on poll rounds in one wait */
#define S_REPLY_FRAMES 10     /* reply frames s_zap_ask keeps */
#define S_REPLY_TEXT   64     /* bytes kept of each reply frame */
#define S_LOG_MAX      65536  /* captured stderr kept */
#define S_FLOOD_FRAMES 200    /* frames in the flooding ZAP request */

typedef struct {
    void *ctx;                               /* this test's context */
    void *sockets[S_MAX_SOCKETS];            /* closed by teardown */
    size_t nsockets;                         /* sockets in use */
    curve_zap_t *zap;                        /* the handler, or NULL */
    curve_allow_t *allow;                    /* holds client_public only */
    char dir[64];                            /* mkdtemp directory */
    char endpoint[S_ENDPOINT_MAX];           /* the server's tcp endpoint */
    char server_public[CURVE_KEY_LEN + 1];   /* the coordinator's pair */
    char server_secret[CURVE_KEY_LEN + 1];   /* ... */
    char client_public[CURVE_KEY_LEN + 1];   /* a worker on the list */
    char client_secret[CURVE_KEY_LEN + 1];   /* ... */
    char stranger_public[CURVE_KEY_LEN + 1]; /* a worker not on it */
    char stranger_secret[CURVE_KEY_LEN + 1]; /* ... */
    int saved_stderr;                        /* fd 2 while capturing, else -1 */
    char log[S_LOG_MAX];                     /* stderr captured last */
} s_state_t;

/* ---- fixture ---- */

static int s_setup(void **state)
{
    s_state_t *st = calloc(1, sizeof *st);
    assert_non_null(st);
    st->saved_stderr = -1;
    st->ctx = zmq_ctx_new();
    assert_non_null(st->ctx);
    snprintf(st->dir, sizeof st->dir, "/tmp/test_curve.XXXXXX");
    assert_non_null(mkdtemp(st->dir));
    assert_int_equal(zmq_curve_keypair(st->server_public, st->server_secret),
                     0);
    assert_int_equal(zmq_curve_keypair(st->client_public, st->client_secret),
                     0);
    assert_int_equal(
        zmq_curve_keypair(st->stranger_public, st->stranger_secret), 0);
    st->allow = curve_allow_new();
    assert_non_null(st->allow);
    assert_true(curve_allow_add(st->allow, st->client_public));
    *state = st;
    return 0;
}

static int s_rm(const char *path, const struct stat *sb, int flag,
                struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int s_teardown(void **state)
{
    s_state_t *st = *state;
    if (st->saved_stderr >= 0) {
        dup2(st->saved_stderr, STDERR_FILENO);
        close(st->saved_stderr);
    }
    for (size_t i = 0; i < st->nsockets; i++)
        zmq_close(st->sockets[i]);
    curve_zap_destroy(&st->zap);
    curve_allow_destroy(&st->allow);
    zmq_ctx_term(st->ctx);
    nftw(st->dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(st);
    return 0;
}

/* A socket with linger 0 that teardown closes. */
static void *s_socket(s_state_t *st, int type)
{
    assert_true(st->nsockets < S_MAX_SOCKETS);
    void *sock = zmq_socket(st->ctx, type);
    assert_non_null(sock);
    int linger = 0;
    assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger),
                     0);
    st->sockets[st->nsockets++] = sock;
    return sock;
}

/* Bind sock on a free port of 127.0.0.1 and remember the endpoint. */
static void s_bind_any(s_state_t *st, void *sock)
{
    assert_int_equal(zmq_bind(sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof st->endpoint;
    assert_int_equal(
        zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, st->endpoint, &len), 0);
}

/* The coordinator's side: the ZAP handler first, then a CURVE ROUTER. */
static void *s_curve_server(s_state_t *st)
{
    st->zap = curve_zap_new(st->ctx, st->allow);
    assert_non_null(st->zap);
    void *router = s_socket(st, ZMQ_ROUTER);
    assert_true(curve_server_setup(router, st->server_secret));
    s_bind_any(st, router);
    return router;
}

/* A worker: a DEALER (CURVE client when secret is set) that sends "hello". */
static void *s_client(s_state_t *st, const char *secret)
{
    void *dealer = s_socket(st, ZMQ_DEALER);
    if (secret)
        assert_true(curve_client_setup(dealer, st->server_public, secret));
    assert_int_equal(zmq_connect(dealer, st->endpoint), 0);
    assert_int_equal(zmq_send(dealer, "hello", 5, ZMQ_DONTWAIT), 5);
    return dealer;
}

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Poll the ZAP handler (if any) and sock for up to ms, answering ZAP
 * requests as they come. True as soon as sock has a message to read. */
static bool s_pump(s_state_t *st, void *sock, int ms)
{
    long deadline = s_now_ms() + ms;
    for (int round = 0; round < S_MAX_ROUNDS && s_now_ms() < deadline;
         round++) {
        zmq_pollitem_t items[2] = {{.socket = sock, .events = ZMQ_POLLIN}};
        int n = 1;
        if (st->zap)
            items[n++] = (zmq_pollitem_t){.socket = curve_zap_socket(st->zap),
                                          .events = ZMQ_POLLIN};
        int rc = zmq_poll(items, n, S_POLL_MS);
        if (rc < 0 && errno == EINTR) continue;
        assert_true(rc >= 0);
        if (n == 2 && (items[1].revents & ZMQ_POLLIN))
            curve_zap_handle(st->zap);
        if (items[0].revents & ZMQ_POLLIN) return true;
    }
    return false;
}

/* Send stderr to a file until s_capture_stop. */
static void s_capture_start(s_state_t *st)
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.log", st->dir);
    fflush(stderr);
    st->saved_stderr = dup(STDERR_FILENO);
    assert_true(st->saved_stderr >= 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Restore stderr and load what was written into st->log. */
static void s_capture_stop(s_state_t *st)
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.log", st->dir);
    fflush(stderr);
    dup2(st->saved_stderr, STDERR_FILENO);
    close(st->saved_stderr);
    st->saved_stderr = -1;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(st->log, 1, sizeof st->log - 1, f);
    st->log[n] = '\0';
    fclose(f);
    unlink(path);
}

/* True when one captured line contains both a and b. */
static bool s_log_line_has(const s_state_t *st, const char *a, const char *b)
{
    const char *line = st->log;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[4096];
        snprintf(buf, sizeof buf, "%.*s", (int)len, line);
        if (strstr(buf, a) && strstr(buf, b)) return true;
        line += len + (end ? 1 : 0);
    }
    return false;
}

/* Write a file of exactly len bytes and mode in the test directory. */
static const char *s_write_file(s_state_t *st, const char *name,
                                const void *data, size_t len, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", st->dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

static const char *s_write_text(s_state_t *st, const char *name,
                                const char *text, mode_t mode)
{
    return s_write_file(st, name, text, strlen(text), mode);
}

/* ---- CURVE over tcp ---- */

static void test_available(void **state)
{
    (void)state;
    assert_true(curve_available());
}

static void test_allowed_client_has_user_id(void **state)
{
    s_state_t *st = *state;
    void *router = s_curve_server(st);
    s_client(st, st->client_secret);
    assert_true(s_pump(st, router, S_ARRIVE_MS));

    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    assert_true(zmq_msg_recv(&id, router, ZMQ_DONTWAIT) >= 0);
    assert_true(zmq_msg_more(&id));
    assert_int_equal(zmq_msg_recv(&body, router, ZMQ_DONTWAIT), 5);
    assert_memory_equal(zmq_msg_data(&body), "hello", 5);

    char user[CURVE_KEY_LEN + 1];
    assert_false(curve_msg_user(&id, user, sizeof user)); /* no properties */
    assert_true(curve_msg_user(&body, user, sizeof user));
    assert_string_equal(user, st->client_public);
    char small[5];
    assert_true(curve_msg_user(&body, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, st->client_public, sizeof small - 1);
    assert_false(curve_msg_user(&body, user, 0));

    zmq_msg_close(&id);
    zmq_msg_close(&body);
    assert_int_equal(curve_zap_refused(st->zap), 0);
}

static void test_unknown_key_refused(void **state)
{
    s_state_t *st = *state;
    void *router = s_curve_server(st);
    s_client(st, st->stranger_secret);
    s_capture_start(st);
    bool arrived = s_pump(st, router, S_REFUSE_MS);
    s_capture_stop(st);
    assert_false(arrived);
    assert_true(curve_zap_refused(st->zap) >= 1);
    if (!s_log_line_has(st, st->stranger_public, "127.0.0.1"))
        fail_msg("no warning names the key and address: %s", st->log);
    assert_true(s_log_line_has(st, "warning", "refused"));
}

/* An allowed and a refused worker at once: only the allowed one's message
 * arrives, and it carries the allowed key. */
static void test_mixed_clients(void **state)
{
    s_state_t *st = *state;
    void *router = s_curve_server(st);
    s_capture_start(st);
    s_client(st, st->stranger_secret);
    s_client(st, st->client_secret);
    bool first = s_pump(st, router, S_ARRIVE_MS);
    char user[CURVE_KEY_LEN + 1] = "";
    int frames = 0;
    while (first) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, router, ZMQ_DONTWAIT) < 0) break;
        frames++;
        if (!zmq_msg_more(&msg) && !curve_msg_user(&msg, user, sizeof user))
            user[0] = '\0';
        bool more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        if (!more) break;
    }
    bool second = s_pump(st, router, S_REFUSE_MS);
    s_capture_stop(st);
    assert_true(first);
    assert_int_equal(frames, 2);
    assert_string_equal(user, st->client_public);
    assert_false(second);
    assert_true(curve_zap_refused(st->zap) >= 1);
}

static void test_null_client_gets_nothing_through(void **state)
{
    s_state_t *st = *state;
    void *router = s_curve_server(st);
    s_client(st, NULL);
    s_capture_start(st);
    bool arrived = s_pump(st, router, S_REFUSE_MS);
    s_capture_stop(st);
    assert_false(arrived);
}

/* A NULL-mechanism server in a ZAP domain asks the handler, which wants
 * CURVE: refused, and the warning names the mechanism and address. */
static void test_null_mechanism_refused_by_zap(void **state)
{
    s_state_t *st = *state;
    st->zap = curve_zap_new(st->ctx, st->allow);
    assert_non_null(st->zap);
    void *router = s_socket(st, ZMQ_ROUTER);
    assert_int_equal(zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, CURVE_ZAP_DOMAIN,
                                    strlen(CURVE_ZAP_DOMAIN)),
                     0);
    s_bind_any(st, router);
    s_client(st, NULL);
    s_capture_start(st);
    bool arrived = s_pump(st, router, S_REFUSE_MS);
    s_capture_stop(st);
    assert_false(arrived);
    assert_true(curve_zap_refused(st->zap) >= 1);
    assert_true(s_log_line_has(st, "NULL", "127.0.0.1"));
}

/* PLAIN likewise; its password never reaches the log. */
static void test_plain_mechanism_refused_by_zap(void **state)
{
    s_state_t *st = *state;
    st->zap = curve_zap_new(st->ctx, st->allow);
    assert_non_null(st->zap);
    void *router = s_socket(st, ZMQ_ROUTER);
    int on = 1;
    assert_int_equal(zmq_setsockopt(router, ZMQ_PLAIN_SERVER, &on, sizeof on),
                     0);
    assert_int_equal(zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, CURVE_ZAP_DOMAIN,
                                    strlen(CURVE_ZAP_DOMAIN)),
                     0);
    s_bind_any(st, router);
    void *dealer = s_socket(st, ZMQ_DEALER);
    assert_int_equal(zmq_setsockopt(dealer, ZMQ_PLAIN_USERNAME, "worker", 6),
                     0);
    assert_int_equal(zmq_setsockopt(dealer, ZMQ_PLAIN_PASSWORD, "pw-s3cret", 9),
                     0);
    assert_int_equal(zmq_connect(dealer, st->endpoint), 0);
    assert_int_equal(zmq_send(dealer, "hello", 5, ZMQ_DONTWAIT), 5);
    s_capture_start(st);
    bool arrived = s_pump(st, router, S_REFUSE_MS);
    s_capture_stop(st);
    assert_false(arrived);
    assert_true(curve_zap_refused(st->zap) >= 1);
    assert_true(s_log_line_has(st, "PLAIN", "127.0.0.1"));
    assert_null(strstr(st->log, "pw-s3cret"));
}

/* ---- hostile ZAP requests ---- */

typedef struct {
    const void *data; /* frame bytes */
    size_t size;      /* frame length */
} s_frame_t;

#define S_STR(s)                                                               \
    {                                                                          \
        s, sizeof(s) - 1                                                       \
    }

/* Send frames on sock, pump the handler, and read the reply frames into
 * reply (each cut to S_REPLY_TEXT - 1 bytes). Returns how many frames came
 * back, 0 when nothing did within S_REFUSE_MS. */
static size_t s_zap_ask(s_state_t *st, void *sock, const s_frame_t *frames,
                        size_t n, char reply[S_REPLY_FRAMES][S_REPLY_TEXT])
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(zmq_send(sock, frames[i].data, frames[i].size,
                                  i + 1 < n ? ZMQ_SNDMORE : 0),
                         (int)frames[i].size);
    if (!s_pump(st, sock, S_REFUSE_MS)) return 0;
    size_t got = 0;
    for (bool more = true; more;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        assert_true(zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) >= 0);
        if (got < S_REPLY_FRAMES)
            snprintf(reply[got], S_REPLY_TEXT, "%.*s", (int)zmq_msg_size(&msg),
                     (char *)zmq_msg_data(&msg));
        got++;
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
    }
    return got;
}

/* Ask over a fresh REQ and expect a refusal: "1.0", a non-200 status. */
static void s_expect_refused(s_state_t *st, const s_frame_t *frames, size_t n,
                             const char *what)
{
    void *req = s_socket(st, ZMQ_REQ);
    assert_int_equal(zmq_connect(req, CURVE_ZAP_ENDPOINT), 0);
    char reply[S_REPLY_FRAMES][S_REPLY_TEXT];
    size_t got = s_zap_ask(st, req, frames, n, reply);
    if (got != 6) fail_msg("%s: %zu reply frames", what, got);
    assert_string_equal(reply[0], "1.0");
    if (strcmp(reply[2], "200") == 0) fail_msg("%s: accepted", what);
    assert_string_equal(reply[4], "");
    /* teardown closes at most S_MAX_SOCKETS: close this one now */
    zmq_close(req);
    st->nsockets--;
}

static void test_hostile_zap_requests(void **state)
{
    s_state_t *st = *state;
    st->zap = curve_zap_new(st->ctx, st->allow);
    assert_non_null(st->zap);
    s_capture_start(st);
    assert_null(curve_zap_new(st->ctx, st->allow)); /* endpoint taken */
    s_capture_stop(st);
    assert_true(s_log_line_has(st, "ZAP", CURVE_ZAP_ENDPOINT));

    uint8_t key[CURVE_KEY_BYTES];
    assert_non_null(zmq_z85_decode(key, st->client_public));
    static char big[1 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7 + 1);

    /* The good request for an allowed key, spoiled in one way each: frame
     * `at` replaced (at >= 0), then cut or padded with "1.0" to n frames. */
    const s_frame_t good_request[] = {
        S_STR("1.0"), S_STR("1"),     S_STR("mapper"),  S_STR("127.0.0.1"),
        S_STR(""),    S_STR("CURVE"), {key, sizeof key}};
    const struct {
        int at;                                  /* frame replaced, or -1 */
        s_frame_t with;                          /* its replacement */
        size_t n;                                /* frames sent */
    } spoils[] = {{0, S_STR("2.0"), 7},          /* wrong version */
                  {-1, S_STR(""), 1},            /* the version alone */
                  {0, S_STR(""), 1},             /* one empty frame */
                  {-1, S_STR(""), 5},            /* no mechanism */
                  {-1, S_STR(""), 6},            /* no key */
                  {6, {key, sizeof key - 1}, 7}, /* short key */
                  {-1, S_STR(""), 8},            /* one frame too many */
                  {5, S_STR("curve"), 7},        /* mechanism in lower case */
                  {5, {"CURVE", 6}, 7},          /* mechanism with its NUL */
                  {3, {big, sizeof big}, 6}, /* binary megabyte of address */
                  {5, S_STR("NULL"), 6},     /* NULL mechanism */
                  {5, S_STR("PLAIN"), 8},    /* PLAIN: user, password */
                  {-1, S_STR(""), S_FLOOD_FRAMES}}; /* a flood of frames */
    const size_t ncases = sizeof spoils / sizeof spoils[0];

    s_capture_start(st);
    for (size_t i = 0; i < ncases; i++) {
        s_frame_t f[S_FLOOD_FRAMES];
        for (size_t k = 0; k < S_FLOOD_FRAMES; k++)
            f[k] = k < 7 ? good_request[k] : (s_frame_t)S_STR("1.0");
        if (spoils[i].at >= 0) f[spoils[i].at] = spoils[i].with;
        char what[32];
        snprintf(what, sizeof what, "spoiled request %zu", i);
        s_expect_refused(st, f, spoils[i].n, what);
    }

    /* A DEALER without the empty delimiter: the REP socket drops it. */
    void *dealer = s_socket(st, ZMQ_DEALER);
    assert_int_equal(zmq_connect(dealer, CURVE_ZAP_ENDPOINT), 0);
    s_frame_t no_envelope[7];
    memcpy(no_envelope, good_request, sizeof no_envelope);
    no_envelope[4] = (s_frame_t)S_STR("x"); /* "" would pass as delimiter */
    char reply[S_REPLY_FRAMES][S_REPLY_TEXT];
    size_t got_no_envelope = s_zap_ask(st, dealer, no_envelope, 7, reply);
    /* With the delimiter but nothing else of a request: refused. */
    const s_frame_t bare[] = {S_STR(""), S_STR("1.0")};
    size_t got_bare = s_zap_ask(st, dealer, bare, 2, reply);
    char bare_status[S_REPLY_TEXT];
    snprintf(bare_status, sizeof bare_status, "%s", reply[3]);
    /* The handler still answers a good request, echoing the request id. */
    const s_frame_t good[] = {S_STR(""),       S_STR("1.0"),       S_STR("42"),
                              S_STR("mapper"), S_STR("127.0.0.1"), S_STR(""),
                              S_STR("CURVE"),  {key, sizeof key}};
    size_t got_good = s_zap_ask(st, dealer, good, 8, reply);
    s_capture_stop(st);

    assert_int_equal(got_no_envelope, 0);
    assert_int_equal(got_bare, 7);
    assert_string_not_equal(bare_status, "200");
    assert_int_equal(got_good, 7);
    assert_string_equal(reply[0], "");
    assert_string_equal(reply[1], "1.0");
    assert_string_equal(reply[2], "42");
    assert_string_equal(reply[3], "200");
    assert_string_equal(reply[5], st->client_public);
    assert_int_equal(curve_zap_refused(st->zap), ncases + 1);
    /* The megabyte of binary address is cut and made printable. */
    assert_true(s_log_line_has(st, "malformed", "????"));
    for (const char *p = st->log; *p; p++)
        if (!((*p >= ' ' && *p < 0x7f) || *p == '\n'))
            fail_msg("unprintable byte 0x%02x in the log: %s",
                     (unsigned char)*p, st->log);
}

/* ---- setup and keys ---- */

static void test_setup_rejects_bad_keys(void **state)
{
    s_state_t *st = *state;
    void *router = s_socket(st, ZMQ_ROUTER);
    void *dealer = s_socket(st, ZMQ_DEALER);
    char garbage[CURVE_KEY_LEN + 1];
    memset(garbage, '#', CURVE_KEY_LEN); /* valid letters, value too big */
    garbage[CURVE_KEY_LEN] = '\0';
    char out[CURVE_KEY_LEN + 1] = "x";

    s_capture_start(st);
    bool server_short = curve_server_setup(router, "tooshort");
    bool server_garbage = curve_server_setup(router, garbage);
    bool client_bad_server = curve_client_setup(dealer, "x", st->client_secret);
    bool client_bad_secret =
        curve_client_setup(dealer, st->server_public, garbage);
    bool derive_bad = curve_public_from_secret(garbage, out);
    s_capture_stop(st);

    assert_false(server_short);
    assert_false(server_garbage);
    assert_false(client_bad_server);
    assert_false(client_bad_secret);
    assert_false(derive_bad);
    assert_string_equal(out, "");
    assert_true(s_log_line_has(st, "error", "CURVE"));

    assert_true(curve_public_from_secret(st->client_secret, out));
    assert_string_equal(out, st->client_public);
}

static void test_keygen(void **state)
{
    s_state_t *st = *state;
    char name[128], key_path[160], pub_path[160];
    snprintf(name, sizeof name, "%s/worker1", st->dir);
    snprintf(key_path, sizeof key_path, "%s.key", name);
    snprintf(pub_path, sizeof pub_path, "%s.pub", name);
    char err[CURVE_ERR_MAX] = "";

    mode_t old = umask(0077); /* the .pub mode must not depend on it */
    bool made = curve_keygen(name, err, sizeof err);
    umask(old);
    if (!made) fail_msg("keygen: %s", err);

    struct stat ks, ps;
    assert_int_equal(stat(key_path, &ks), 0);
    assert_int_equal(stat(pub_path, &ps), 0);
    assert_int_equal(ks.st_mode & 07777, 0600);
    assert_int_equal(ps.st_mode & 07777, 0644);
    assert_int_equal(ks.st_size, CURVE_KEY_LEN + 1);
    assert_int_equal(ps.st_size, CURVE_KEY_LEN + 1);

    char secret[CURVE_KEY_LEN + 1], public_z85[CURVE_KEY_LEN + 1];
    char derived[CURVE_KEY_LEN + 1];
    assert_true(curve_read_key(key_path, true, secret, err, sizeof err));
    assert_true(curve_read_key(pub_path, false, public_z85, err, sizeof err));
    assert_true(curve_public_from_secret(secret, derived));
    assert_string_equal(derived, public_z85);

    /* Again: refused, both files untouched. */
    assert_false(curve_keygen(name, err, sizeof err));
    assert_non_null(strstr(err, "exists"));
    assert_null(strchr(err, '\n'));
    struct stat ks2, ps2;
    char secret2[CURVE_KEY_LEN + 1], public2[CURVE_KEY_LEN + 1];
    assert_int_equal(stat(key_path, &ks2), 0);
    assert_int_equal(stat(pub_path, &ps2), 0);
    assert_int_equal(ks2.st_ino, ks.st_ino);
    assert_int_equal(ps2.st_ino, ps.st_ino);
    assert_true(ks2.st_mtim.tv_sec == ks.st_mtim.tv_sec &&
                ks2.st_mtim.tv_nsec == ks.st_mtim.tv_nsec);
    assert_true(ps2.st_mtim.tv_sec == ps.st_mtim.tv_sec &&
                ps2.st_mtim.tv_nsec == ps.st_mtim.tv_nsec);
    assert_true(curve_read_key(key_path, true, secret2, err, sizeof err));
    assert_true(curve_read_key(pub_path, false, public2, err, sizeof err));
    assert_string_equal(secret2, secret);
    assert_string_equal(public2, public_z85);

    /* Only the .pub left: still refused, no .key created. */
    assert_int_equal(unlink(key_path), 0);
    assert_false(curve_keygen(name, err, sizeof err));
    assert_non_null(strstr(err, pub_path));
    assert_int_equal(access(key_path, F_OK), -1);

    /* A directory that does not exist: one-line error, nothing made. */
    snprintf(name, sizeof name, "%s/missing/worker", st->dir);
    assert_false(curve_keygen(name, err, sizeof err));
    assert_true(strlen(err) > 0);
    assert_null(strchr(err, '\n'));
    assert_false(curve_keygen("", err, sizeof err));
}

/* Expect curve_read_key to refuse path; err must mention `needle`. */
static void s_expect_bad_key(const char *path, bool secret, const char *needle)
{
    char out[CURVE_KEY_LEN + 1] = "x";
    char err[CURVE_ERR_MAX] = "";
    if (curve_read_key(path, secret, out, err, sizeof err))
        fail_msg("accepted %s", path);
    assert_string_equal(out, "");
    if (!strstr(err, needle)) fail_msg("\"%s\" lacks \"%s\"", err, needle);
    assert_null(strchr(err, '\n'));
}

static void s_expect_good_key(const char *path, bool secret, const char *expect)
{
    char out[CURVE_KEY_LEN + 1];
    char err[CURVE_ERR_MAX] = "";
    if (!curve_read_key(path, secret, out, err, sizeof err))
        fail_msg("refused %s: %s", path, err);
    assert_string_equal(out, expect);
}

static void test_read_key(void **state)
{
    s_state_t *st = *state;
    const char *k = st->client_public;
    char text[512];

    snprintf(text, sizeof text, "%s\n", k);
    s_expect_good_key(s_write_text(st, "nl.pub", text, 0644), false, k);
    s_expect_good_key(s_write_text(st, "bare.pub", k, 0644), false, k);
    snprintf(text, sizeof text, "%s \t\r\n\n", k);
    s_expect_good_key(s_write_text(st, "ws.pub", text, 0644), false, k);

    s_expect_bad_key(s_write_text(st, "empty.pub", "", 0644), false, "found 0");
    s_expect_bad_key(s_write_text(st, "nl-only.pub", "\n", 0644), false,
                     "found 0");
    snprintf(text, sizeof text, "%.39s\n", k);
    s_expect_bad_key(s_write_text(st, "short.pub", text, 0644), false,
                     "found 39");
    snprintf(text, sizeof text, "%sA\n", k);
    s_expect_bad_key(s_write_text(st, "long.pub", text, 0644), false,
                     "found 41");
    snprintf(text, sizeof text, " %s\n", k);
    s_expect_bad_key(s_write_text(st, "lead.pub", text, 0644), false,
                     "found 0");
    snprintf(text, sizeof text, "%s\n%s\n", k, k);
    s_expect_bad_key(s_write_text(st, "two.pub", text, 0644), false,
                     "after the key");
    snprintf(text, sizeof text, "%s x\n", k);
    s_expect_bad_key(s_write_text(st, "trail.pub", text, 0644), false,
                     "after the key");
    memset(text, '~', CURVE_KEY_LEN); /* not a Z85 character */
    text[CURVE_KEY_LEN] = '\0';
    s_expect_bad_key(s_write_text(st, "tilde.pub", text, 0644), false,
                     "not a valid Z85");
    memset(text, '#', CURVE_KEY_LEN); /* Z85 letters, value over 2^32 */
    s_expect_bad_key(s_write_text(st, "hash.pub", text, 0644), false,
                     "not a valid Z85");
    memcpy(text, k, CURVE_KEY_LEN);
    text[20] = '\0'; /* a NUL inside */
    s_expect_bad_key(s_write_file(st, "nul.pub", text, CURVE_KEY_LEN, 0644),
                     false, "found 20");
    memcpy(text, k, CURVE_KEY_LEN);
    text[CURVE_KEY_LEN] = '\n';
    text[CURVE_KEY_LEN + 1] = '\0';
    s_expect_bad_key(
        s_write_file(st, "nul2.pub", text, CURVE_KEY_LEN + 2, 0644), false,
        "after the key");
    memset(text + CURVE_KEY_LEN, ' ', 300);
    s_expect_bad_key(
        s_write_file(st, "big.pub", text, CURVE_KEY_LEN + 300, 0644), false,
        "too long");
    s_expect_bad_key(st->dir, false, "not a regular file");
    s_expect_bad_key("/nonexistent/x.pub", false, "cannot open");

    /* Secret keys: only the owner may have access. */
    snprintf(text, sizeof text, "%s\n", st->client_secret);
    s_expect_good_key(s_write_text(st, "s600.key", text, 0600), true,
                      st->client_secret);
    s_expect_good_key(s_write_text(st, "s400.key", text, 0400), true,
                      st->client_secret);
    s_expect_bad_key(s_write_text(st, "s644.key", text, 0644), true,
                     "too open");
    s_expect_bad_key(s_write_text(st, "s640.key", text, 0640), true,
                     "too open");
    s_expect_bad_key(s_write_text(st, "s604.key", text, 0604), true,
                     "chmod 600");
    /* The same file read as a public key is fine. */
    s_expect_good_key(s_write_text(st, "s644b.key", text, 0644), false,
                      st->client_secret);
}

/* ---- the allow-list ---- */

static void test_allow_list_api(void **state)
{
    s_state_t *st = *state;
    curve_allow_t *allow = curve_allow_new();
    assert_non_null(allow);
    assert_int_equal(curve_allow_count(allow), 0);
    uint8_t key[CURVE_KEY_BYTES];
    assert_non_null(zmq_z85_decode(key, st->client_public));
    assert_false(curve_allow_has(allow, key));

    s_capture_start(st);
    bool bad_short = curve_allow_add(allow, "abc");
    bool bad_null = curve_allow_add(allow, NULL);
    bool bad_tilde =
        curve_allow_add(allow, "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~");
    s_capture_stop(st);
    assert_false(bad_short);
    assert_false(bad_null);
    assert_false(bad_tilde);
    assert_int_equal(curve_allow_count(allow), 0);

    assert_true(curve_allow_add(allow, st->client_public));
    assert_true(curve_allow_add(allow, st->client_public));
    assert_int_equal(curve_allow_count(allow), 1);
    assert_true(curve_allow_has(allow, key));
    assert_non_null(zmq_z85_decode(key, st->stranger_public));
    assert_false(curve_allow_has(allow, key));
    assert_false(curve_allow_has(NULL, key));

    curve_allow_destroy(&allow);
    assert_null(allow);
    curve_allow_destroy(&allow);
    curve_allow_destroy(NULL);
}

/* Load path and expect failure with err mentioning needle. */
static void s_expect_bad_list(const char *path, const char *needle)
{
    char err[CURVE_ERR_MAX] = "";
    curve_allow_t *allow = curve_allow_load(path, err, sizeof err);
    if (allow) {
        curve_allow_destroy(&allow);
        fail_msg("accepted %s", path);
    }
    if (!strstr(err, needle)) fail_msg("\"%s\" lacks \"%s\"", err, needle);
    assert_null(strchr(err, '\n'));
}

static void test_allow_list_file(void **state)
{
    s_state_t *st = *state;
    char text[1024], err[CURVE_ERR_MAX] = "";
    snprintf(text, sizeof text,
             "# workers allowed to connect\n"
             "\n"
             "%s\n"
             "   %s   # host-b\n"
             "\t%s\r\n"
             "#%s disabled\n"
             "   # indented comment\n",
             st->client_public, st->server_public, st->client_public,
             st->stranger_public);
    const char *path = s_write_text(st, "allow.txt", text, 0644);
    curve_allow_t *allow = curve_allow_load(path, err, sizeof err);
    if (!allow) fail_msg("load: %s", err);
    uint8_t key[CURVE_KEY_BYTES];
    assert_int_equal(curve_allow_count(allow), 2);
    assert_non_null(zmq_z85_decode(key, st->client_public));
    assert_true(curve_allow_has(allow, key));
    assert_non_null(zmq_z85_decode(key, st->server_public));
    assert_true(curve_allow_has(allow, key));
    assert_non_null(zmq_z85_decode(key, st->stranger_public));
    assert_false(curve_allow_has(allow, key));
    curve_allow_destroy(&allow);

    snprintf(text, sizeof text, "# ok\n%s\nnot-a-key\n", st->client_public);
    s_expect_bad_list(s_write_text(st, "bad1.txt", text, 0644), ":3:");
    snprintf(text, sizeof text, "%.39s\n", st->client_public);
    s_expect_bad_list(s_write_text(st, "bad2.txt", text, 0644), ":1:");
    snprintf(text, sizeof text, "%s#glued comment\n", st->client_public);
    s_expect_bad_list(s_write_text(st, "bad3.txt", text, 0644), ":1:");
    snprintf(text, sizeof text, "%s extra\n", st->client_public);
    s_expect_bad_list(s_write_text(st, "bad4.txt", text, 0644), ":1:");
    s_expect_bad_list(s_write_text(st, "comments.txt", "# none\n\n", 0644),
                      "no public key");
    snprintf(text, sizeof text, "%s\n", st->client_public);
    s_expect_bad_list(s_write_text(st, "open.txt", text, 0646),
                      "writable by others");
    s_expect_bad_list("/nonexistent/allow.txt", "cannot open");
    snprintf(text, sizeof text, "%s\n", st->client_public);
    memcpy(text + CURVE_KEY_LEN, "\0junk\n", 6);
    s_expect_bad_list(
        s_write_file(st, "nul.txt", text, CURVE_KEY_LEN + 6, 0644), ":1: NUL");
}

static void test_allow_list_dir(void **state)
{
    s_state_t *st = *state;
    char dir[128], text[256], err[CURVE_ERR_MAX] = "";
    snprintf(dir, sizeof dir, "%s/workers", st->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    s_expect_bad_list(dir, "no public key");

    snprintf(text, sizeof text, "%s\n", st->client_public);
    s_write_text(st, "workers/a.pub", text, 0644);
    s_write_text(st, "workers/b.pub", st->server_public, 0644);
    snprintf(text, sizeof text, "%s\n", st->stranger_public);
    s_write_text(st, "workers/c.key", text, 0600);
    s_write_text(st, "workers/README", "not keys\n", 0644);
    s_write_text(st, "workers/c.pub.bak", text, 0644);

    curve_allow_t *allow = curve_allow_load(dir, err, sizeof err);
    if (!allow) fail_msg("load: %s", err);
    uint8_t key[CURVE_KEY_BYTES];
    assert_int_equal(curve_allow_count(allow), 2);
    assert_non_null(zmq_z85_decode(key, st->client_public));
    assert_true(curve_allow_has(allow, key));
    assert_non_null(zmq_z85_decode(key, st->server_public));
    assert_true(curve_allow_has(allow, key));
    assert_non_null(zmq_z85_decode(key, st->stranger_public));
    assert_false(curve_allow_has(allow, key));
    curve_allow_destroy(&allow);

    snprintf(text, sizeof text, "%s\n", st->stranger_public);
    s_write_text(st, "workers/open.pub", text, 0646);
    s_expect_bad_list(dir, "writable by others");
    s_write_text(st, "workers/open.pub", "garbage\n", 0644);
    s_expect_bad_list(dir, "open.pub");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define S_TEST(f) cmocka_unit_test_setup_teardown(f, s_setup, s_teardown)
        S_TEST(test_available),
        S_TEST(test_allowed_client_has_user_id),
        S_TEST(test_unknown_key_refused),
        S_TEST(test_mixed_clients),
        S_TEST(test_null_client_gets_nothing_through),
        S_TEST(test_null_mechanism_refused_by_zap),
        S_TEST(test_plain_mechanism_refused_by_zap),
        S_TEST(test_hostile_zap_requests),
        S_TEST(test_setup_rejects_bad_keys),
        S_TEST(test_keygen),
        S_TEST(test_read_key),
        S_TEST(test_allow_list_api),
        S_TEST(test_allow_list_file),
        S_TEST(test_allow_list_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
