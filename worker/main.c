/* worker/main.c - mapper-worker's command line: options, the DEALER to
 * the coordinator (CURVE or a plain endpoint it allows), signals; the loop
 * itself is worker/worker.c. Forked by mapper-coord, or started by hand
 * (or by runit, Kubernetes) on another host with --connect tcp://HOST:PORT. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "defaults.h"
#include "log.h"
#include "proto.h"
#include "worker.h"

#define WORKER_RECONNECT_MS     100
#define WORKER_RECONNECT_MAX_MS 5000

static void s_on_signal(int sig)
{
    (void)sig;
    worker_stop();
}

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: mapper-worker --connect ENDPOINT [options]\n"
        "\n"
        "Copies the chunks a mapper-coord hands out. Forked by mapper-coord,\n"
        "or started on another host with --connect tcp://HOST:PORT.\n"
        "\n"
        "  --connect ENDPOINT        the coordinator (tcp://HOST:PORT, "
        "ipc://...)\n"
        "  --source CONNINFO         source database (default: "
        "$" MAPPER_ENV_SOURCE ",\n"
        "                            then libpq's PG* defaults, .pgpass)\n"
        "  --target CONNINFO         target database (default: "
        "$" MAPPER_ENV_TARGET ")\n"
        "  --id ID                   routing id (default: HOSTNAME-PID)\n"
        "  --coordinator-timeout S   exit after S seconds without hearing the\n"
        "                            coordinator (default %.0f)\n"
        "  --curve-server-key FILE   the coordinator's public key (CURVE)\n"
        "  --curve-secret-key FILE   this worker's secret key (CURVE)\n"
        "  --insecure                allow plain TCP (no CURVE) to a\n"
        "                            coordinator beyond loopback\n"
        "  -v, --verbose             debug logging\n"
        "  -h, --help                this help\n"
        "\n"
        "Database credentials never cross the coordinator link. Exit status:\n"
        "0 the job ended (or SIGTERM: the chunk in hand was rolled back and\n"
        "reported); 2 usage; 3 refused by the coordinator, no coordinator, or\n"
        "the source database unreachable; 75 lost the coordinator.\n",
        MAPPER_COORD_TIMEOUT_S);
}

typedef struct {
    const char *endpoint, *id, *source, *target, *server_key, *secret_key;
    bool insecure; /* plain TCP beyond loopback allowed */
    long parent;
    double coord_timeout;
    log_level_t level;
} s_opts_t;

/* The options that only keep their value. */
static const struct {
    int opt;
    size_t at; /* a const char * in s_opts_t */
} s_strings[] = {
    {'c', offsetof(s_opts_t, endpoint)},
    {'i', offsetof(s_opts_t, id)},
    {'K', offsetof(s_opts_t, server_key)},
    {'S', offsetof(s_opts_t, secret_key)},
};

/* Whether c is one of s_strings: then optarg is kept. */
static bool s_string_option(int c, s_opts_t *o)
{
    for (size_t i = 0; i < sizeof s_strings / sizeof s_strings[0]; i++)
        if (s_strings[i].opt == c) {
            *(const char **)((char *)o + s_strings[i].at) = optarg;
            return true;
        }
    return false;
}

static int s_parse(int argc, char **argv, s_opts_t *o)
{
    static const struct option opts[] = {
        {"connect", required_argument, 0, 'c'},
        {"id", required_argument, 0, 'i'},
        {"parent", required_argument, 0, 'p'},
        {"source", required_argument, 0, 's'},
        {"target", required_argument, 0, 't'},
        {"coordinator-timeout", required_argument, 0, 'T'},
        {"curve-server-key", required_argument, 0, 'K'},
        {"curve-secret-key", required_argument, 0, 'S'},
        {"insecure", no_argument, 0, 'I'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    char *end;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
        if (s_string_option(c, o)) continue;
        switch (c) {
        case 'p':
            o->parent = strtol(optarg, NULL, 10);
            break;
        case 's':
        case 't': {
            char *copy = strdup(optarg);
            char why[512];
            if (!copy) return MAPPER_EXIT_CANNOT_RUN;
            if (!log_hide_conninfo(copy, optarg, why, sizeof why)) {
                log_error("--%s: %s", c == 's' ? "source" : "target", why);
                free(copy);
                return MAPPER_EXIT_USAGE;
            }
            if (c == 's')
                o->source = copy;
            else
                o->target = copy;
            break;
        }
        case 'T':
            o->coord_timeout = strtod(optarg, &end);
            if (*end || end == optarg || !(o->coord_timeout > 0)) {
                log_error("--coordinator-timeout: expected seconds > 0, got "
                          "'%s'",
                          optarg);
                return MAPPER_EXIT_USAGE;
            }
            break;
        case 'I':
            o->insecure = true;
            break;
        case 'v':
            o->level = LOG_DEBUG;
            break;
        case 'h':
            s_usage(stdout);
            return -1;
        case ':':
        default:
            log_bad_option(c, argv);
            return MAPPER_EXIT_USAGE;
        }
    }
    if (!o->endpoint) {
        log_error("--connect ENDPOINT is required (see --help)");
        return MAPPER_EXIT_USAGE;
    }
    if (!o->server_key != !o->secret_key) {
        log_error("--curve-server-key and --curve-secret-key go together");
        return MAPPER_EXIT_USAGE;
    }
    return MAPPER_EXIT_OK;
}

/* True for tcp://127.x.x.x:P, tcp://[::1]:P and tcp://localhost:P (after
 * a "SOURCE;" part, if any): literal loopback addresses, not names a DNS
 * answer could turn elsewhere. */
static bool s_loopback(const char *endpoint)
{
    const char *host = strrchr(endpoint, ';');
    host = host ? host + 1 : endpoint + strlen("tcp://");
    const char *colon = strrchr(host, ':');
    if (!colon || colon == host) return false;
    char addr[64];
    size_t n = (size_t)(colon - host);
    if (host[0] == '[' && colon[-1] == ']') {
        host++;
        n -= 2;
    }
    if (n >= sizeof addr) return false;
    memcpy(addr, host, n);
    addr[n] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(addr, "localhost")) return true;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, addr, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* Plain TCP beyond loopback only with --insecure: a spoofed or stale
 * address would otherwise hand this worker's databases to whoever
 * answers there. ipc:// (a forked worker's) is a private directory. */
static bool s_endpoint_allowed(const s_opts_t *o, bool curve)
{
    if (curve || o->insecure || !strncmp(o->endpoint, "ipc://", 6) ||
        (!strncmp(o->endpoint, "tcp://", 6) && s_loopback(o->endpoint)))
        return true;
    log_error("--connect %s: plain TCP beyond loopback; whoever answers "
              "there would direct this worker: use CURVE "
              "(--curve-server-key, --curve-secret-key) or say --insecure",
              o->endpoint);
    return false;
}

/* CURVE keys: from the files given, or (a forked worker) from the
 * environment the coordinator set; none: plain (*on_out false). The
 * coordinator is authenticated by its public key: a server without the
 * matching secret key fails the handshake. */
static bool s_curve(void *sock, const s_opts_t *o, bool *on_out)
{
    *on_out = false;
    char server[CURVE_KEY_LEN + 1], secret[CURVE_KEY_LEN + 1], err[256];
    const char *env_server = getenv(MAPPER_ENV_CURVE_SERVER);
    const char *env_secret = getenv(MAPPER_ENV_CURVE_SECRET);
    if (o->server_key) {
        if (!curve_read_key(o->server_key, false, server, err, sizeof err) ||
            !curve_read_key(o->secret_key, true, secret, err, sizeof err)) {
            log_error("%s", err);
            return false;
        }
    } else if (env_server && env_secret) {
        snprintf(server, sizeof server, "%s", env_server);
        snprintf(secret, sizeof secret, "%s", env_secret);
    } else {
        return true;
    }
    *on_out = true;
    return curve_client_setup(sock, server, secret);
}
int main(int argc, char **argv)
{
    log_init("worker", LOG_INFO);
    mallopt(M_MMAP_THRESHOLD, MAPPER_MMAP_THRESHOLD); /* see mapper-coord */
    mallopt(M_TRIM_THRESHOLD, MAPPER_MMAP_THRESHOLD);
    s_opts_t o = {.coord_timeout = MAPPER_COORD_TIMEOUT_S, .level = LOG_INFO};
    int rc = s_parse(argc, argv, &o);
    if (rc < 0) return MAPPER_EXIT_OK;
    if (rc != MAPPER_EXIT_OK) return rc;
    log_set_level(o.level);
    /* A forked worker dies with its coordinator, even if that was
     * SIGKILLed between fork and here. */
    if (o.parent > 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)o.parent) return MAPPER_EXIT_CANNOT_RUN;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char id[PROTO_MAX_ID + 1];
    if (o.id && (strlen(o.id) == 0 || strlen(o.id) > PROTO_MAX_ID)) {
        log_error("--id: expected 1 to %d bytes", PROTO_MAX_ID);
        return MAPPER_EXIT_USAGE;
    }
    if (o.id) {
        snprintf(id, sizeof id, "%s", o.id);
    } else {
        char host[PROTO_MAX_ID / 2] = "worker";
        gethostname(host, sizeof host - 1);
        snprintf(id, sizeof id, "%s-%ld", host, (long)getpid());
    }
    const char *src = o.source ? o.source : getenv(MAPPER_ENV_SOURCE);
    const char *dst = o.target ? o.target : getenv(MAPPER_ENV_TARGET);
    char why[512];
    if (!log_hide_conninfo(src, NULL, why, sizeof why) ||
        !log_hide_conninfo(dst, NULL, why, sizeof why)) {
        log_error("connection string: %s", why);
        return MAPPER_EXIT_USAGE;
    }
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    worker_t *w = NULL;
    /* IMMEDIATE: nothing is queued while no coordinator is connected, so
     * a coordinator that comes up late does not find a pile of stale
     * READYs (each would read as "gave my chunk up"). */
    int ivl = WORKER_RECONNECT_MS, ivl_max = WORKER_RECONNECT_MAX_MS, imm = 1;
    rc = MAPPER_EXIT_CANNOT_RUN;
    if (!sock || zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, strlen(id)) ||
        zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
        zmq_setsockopt(sock, ZMQ_IMMEDIATE, &imm, sizeof imm) ||
        zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) ||
        !proto_socket_setup(sock, false)) {
        log_error("cannot make a socket: %s", zmq_strerror(errno));
        goto out;
    }
    bool curve = false;
    if (!s_curve(sock, &o, &curve) || !s_endpoint_allowed(&o, curve)) {
        rc = MAPPER_EXIT_USAGE;
        goto out;
    }
    worker_config_t cfg = {.sock = sock,
                           .id = id,
                           .source_conninfo = src ? src : "",
                           .target_conninfo = dst ? dst : "",
                           .remote = o.parent <= 0,
                           .coord_timeout = o.coord_timeout};
    w = worker_new(&cfg);
    if (!w) goto out;
    if (zmq_connect(sock, o.endpoint)) {
        log_error("cannot connect to %s: %s", o.endpoint, zmq_strerror(errno));
        rc = MAPPER_EXIT_USAGE;
        goto out;
    }
    rc = worker_run(w);
out:
    worker_destroy(&w);
    if (sock) zmq_close(sock);
    if (ctx) zmq_ctx_term(ctx);
    free((char *)o.source);
    free((char *)o.target);
    return rc;
}
