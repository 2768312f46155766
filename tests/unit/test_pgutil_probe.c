/* tests/unit/test_pgutil_probe.c - unit tests of the non-blocking database
 * probe in common/pgutil.c: a server that accepts the connection but never
 * answers leaves the probe busy (the caller's loop goes on) instead of
 * blocking for the connect timeout; a server that hangs up, or a port
 * nobody listens on, is down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "pgutil.h"

#define S_POLLS   400 /* polls of a probe that must end, at most */
#define S_STEP_MS 10  /* between them */

/* A TCP listener on 127.0.0.1 that never accepts by itself: the kernel
 * completes connections into its backlog, and nothing ever answers. */
static int s_listener(int *port_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port_out = ntohs(a.sin_port);
    return fd;
}

static void s_conninfo(char *dst, size_t n, int port)
{
    snprintf(dst, n,
             "host=127.0.0.1 port=%d user=nobody dbname=nothing "
             "sslmode=disable gssencmode=disable",
             port);
}

/* Poll p until it is no longer busy (at most S_POLLS times). */
static pgutil_probe_state_t s_until_done(pgutil_probe_t *p)
{
    pgutil_probe_state_t st = PGUTIL_PROBE_BUSY;
    for (int i = 0; i < S_POLLS && st == PGUTIL_PROBE_BUSY; i++) {
        (void)poll(NULL, 0, S_STEP_MS);
        st = pgutil_probe_poll(p);
    }
    return st;
}

static void test_silent_server_leaves_probe_busy(void **state)
{
    (void)state;
    int port;
    int lfd = s_listener(&port);
    char ci[256];
    s_conninfo(ci, sizeof ci, port);
    pgutil_probe_t p = {0};
    /* A blocking probe would only come back after the connect timeout,
     * and then as down. */
    assert_int_equal(pgutil_probe_start(&p, ci), PGUTIL_PROBE_BUSY);
    for (int i = 0; i < 5; i++) {
        (void)poll(NULL, 0, S_STEP_MS);
        assert_int_equal(pgutil_probe_poll(&p), PGUTIL_PROBE_BUSY);
    }
    assert_non_null(p.conn);
    /* The server hangs up: the probe ends, down. */
    int cfd = accept(lfd, NULL, NULL);
    assert_true(cfd >= 0);
    close(cfd);
    assert_int_equal(s_until_done(&p), PGUTIL_PROBE_DOWN);
    assert_null(p.conn);
    close(lfd);
}

static void test_nobody_listening_is_down(void **state)
{
    (void)state;
    int port;
    int lfd = s_listener(&port);
    close(lfd); /* the port is free again: connections are refused */
    char ci[256];
    s_conninfo(ci, sizeof ci, port);
    pgutil_probe_t p = {0};
    pgutil_probe_state_t st = pgutil_probe_start(&p, ci);
    if (st == PGUTIL_PROBE_BUSY) st = s_until_done(&p);
    assert_int_equal(st, PGUTIL_PROBE_DOWN);
    assert_null(p.conn);
}

static void test_cancel(void **state)
{
    (void)state;
    int port;
    int lfd = s_listener(&port);
    char ci[256];
    s_conninfo(ci, sizeof ci, port);
    pgutil_probe_t p = {0};
    assert_int_equal(pgutil_probe_start(&p, ci), PGUTIL_PROBE_BUSY);
    pgutil_probe_cancel(&p);
    assert_null(p.conn);
    pgutil_probe_cancel(&p); /* twice: nothing */
    assert_int_equal(pgutil_probe_poll(&p), PGUTIL_PROBE_DOWN);
    close(lfd);
}

int main(void)
{
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_server_leaves_probe_busy),
        cmocka_unit_test(test_nobody_listening_is_down),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
