/* coordinator/retry.c - the retry policy: configuration from defaults and the
 * environment, exponential backoff with full jitter, chunk deadlines, and the
 * SQLSTATE table that decides what is worth retrying. */
#include "retry.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* splitmix64 (Steele, Lea, Flood 2014): the step and the output mixer. */
#define S_SPLITMIX_GAMMA  0x9E3779B97F4A7C15ULL
#define S_SPLITMIX_MUL1   0xBF58476D1CE4E5B9ULL
#define S_SPLITMIX_MUL2   0x94D049BB133111EBULL
#define S_SPLITMIX_SHIFT1 30
#define S_SPLITMIX_SHIFT2 27
#define S_SPLITMIX_SHIFT3 31
/* A double has a 53-bit mantissa: keep the top 53 of 64 random bits. */
#define S_DOUBLE_BITS 53
#define S_WORD_BITS   64
/* An SQLSTATE's class is its first two characters. */
#define S_CLASS_LEN 2
#define S_NS_PER_S  1000000000.0

/* ---- configuration ---- */

void retry_config_defaults(mapper_retry_config *cfg)
{
    cfg->enabled = MAPPER_RETRY_ENABLED;
    cfg->max_retries = MAPPER_RETRY_MAX_RETRIES;
    cfg->initial_delay = MAPPER_RETRY_INITIAL_DELAY_S;
    cfg->max_delay = MAPPER_RETRY_MAX_DELAY_S;
    cfg->exponential_base = MAPPER_RETRY_EXPONENTIAL_BASE;
    cfg->jitter = MAPPER_RETRY_JITTER;
    cfg->deadline = MAPPER_RETRY_DEADLINE_S;
}

/* Copy an environment value into dst for an error message: printable ASCII
 * only (anything else becomes '?'), at most RETRY_ENV_VALUE_SHOWN bytes. */
static void s_show_value(char dst[RETRY_ENV_VALUE_SHOWN + 1], const char *src)
{
    size_t i = 0;
    for (; src[i] && i < RETRY_ENV_VALUE_SHOWN; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= ' ' && c <= '~') ? (char)c : '?';
    }
    dst[i] = '\0';
}

/* true/false/1/0/yes/no in any case; anything else (even "") is refused. */
static bool s_parse_bool(const char *s, bool *out)
{
    static const struct {
        const char *word; /* accepted spelling */
        bool value;       /* what it means */
    } words[] = {{"true", true}, {"false", false}, {"1", true},
                 {"0", false},   {"yes", true},    {"no", false}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasecmp(s, words[i].word) == 0) {
            *out = words[i].value;
            return true;
        }
    }
    return false;
}

/* Decimal digits only (no sign, no blanks), fitting in an int. */
static bool s_parse_count(const char *s, int *out)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno == ERANGE || v > INT_MAX) return false;
    *out = (int)v;
    return true;
}

bool retry_config_from_env(mapper_retry_config *cfg, char *err, size_t err_len)
{
    char shown[RETRY_ENV_VALUE_SHOWN + 1];
    mapper_retry_config next = *cfg;

    const char *v = getenv(MAPPER_ENV_RETRY_ENABLED);
    if (v && !s_parse_bool(v, &next.enabled)) {
        s_show_value(shown, v);
        log_reason(err, err_len,
                   "%s='%s': expected true, false, 1, 0, yes or no",
                   MAPPER_ENV_RETRY_ENABLED, shown);
        return false;
    }
    v = getenv(MAPPER_ENV_MAX_RETRIES);
    if (v && !s_parse_count(v, &next.max_retries)) {
        s_show_value(shown, v);
        log_reason(err, err_len, "%s='%s': expected a non-negative integer",
                   MAPPER_ENV_MAX_RETRIES, shown);
        return false;
    }
    *cfg = next;
    return true;
}

/* A duration field must be finite and >= 0. */
static bool s_check_seconds(const char *field, double value, char *err,
                            size_t err_len)
{
    if (isfinite(value) && value >= 0) return true;
    log_reason(err, err_len, "retry %s must be a finite number >= 0 (got %g)",
               field, value);
    return false;
}

bool retry_config_validate(const mapper_retry_config *cfg, char *err,
                           size_t err_len)
{
    if (cfg->max_retries < 0) {
        log_reason(err, err_len, "retry max_retries must be >= 0 (got %d)",
                   cfg->max_retries);
        return false;
    }
    if (!s_check_seconds("initial_delay", cfg->initial_delay, err, err_len) ||
        !s_check_seconds("max_delay", cfg->max_delay, err, err_len) ||
        !s_check_seconds("deadline", cfg->deadline, err, err_len))
        return false;
    if (!(isfinite(cfg->exponential_base) && cfg->exponential_base >= 1)) {
        log_reason(
            err, err_len,
            "retry exponential_base must be a finite number >= 1 (got %g)",
            cfg->exponential_base);
        return false;
    }
    if (cfg->initial_delay > cfg->max_delay) {
        log_reason(err, err_len,
                   "retry initial_delay (%g) must not exceed max_delay (%g)",
                   cfg->initial_delay, cfg->max_delay);
        return false;
    }
    return true;
}

/* ---- random numbers and the clock ---- */

/* splitmix64's output function: a bijection on 64-bit values. */
static uint64_t s_mix(uint64_t z)
{
    z = (z ^ (z >> S_SPLITMIX_SHIFT1)) * S_SPLITMIX_MUL1;
    z = (z ^ (z >> S_SPLITMIX_SHIFT2)) * S_SPLITMIX_MUL2;
    return z ^ (z >> S_SPLITMIX_SHIFT3);
}

void retry_rng_seed(retry_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

/* 64 bits from the kernel, or 0 when neither source answers (the pid and
 * clocks mixed in afterwards still separate processes). */
static uint64_t s_kernel_random(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed = 0;
    close(fd);
    return seed;
}

static uint64_t s_timespec_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * (uint64_t)S_NS_PER_S + (uint64_t)ts.tv_nsec;
}

void retry_rng_seed_process(retry_rng *rng)
{
    /* Each step xors in one input and applies a bijection, so for the same
     * kernel bits and clocks two different pids give two different states. */
    uint64_t s = s_mix(s_kernel_random() ^ (uint64_t)getpid());
    s = s_mix(s ^ s_timespec_ns(CLOCK_MONOTONIC));
    s = s_mix(s ^ s_timespec_ns(CLOCK_REALTIME));
    rng->state = s;
}

uint64_t retry_rng_next(retry_rng *rng)
{
    rng->state += S_SPLITMIX_GAMMA;
    return s_mix(rng->state);
}

double retry_rng_uniform(retry_rng *rng)
{
    const uint64_t top = (UINT64_C(1) << S_DOUBLE_BITS) - 1;
    return (double)(retry_rng_next(rng) >> (S_WORD_BITS - S_DOUBLE_BITS)) /
           (double)top;
}

/* ---- delays and deadlines ---- */

double retry_backoff(const mapper_retry_config *cfg, int k)
{
    double cap = cfg->max_delay;
    double d = cfg->initial_delay;
    double base = cfg->exponential_base;
    if (k < 1) k = 1;
    if (d >= cap) return cap;
    if (d <= 0 || base <= 1) return d;
    /* Past this many doublings (or base-fold growths) the cap is reached:
     * answer it without computing base^(k-1), which could overflow. */
    double steps = (double)(k - 1);
    if (steps >= log(cap / d) / log(base)) return cap;
    d *= pow(base, steps);
    return d < cap ? d : cap;
}

double retry_delay(const mapper_retry_config *cfg, int k, retry_rng *rng)
{
    double d = retry_backoff(cfg, k);
    if (!cfg->jitter) return d;
    assert(rng != NULL);
    return d * retry_rng_uniform(rng);
}

bool retry_deadline_clamp(const mapper_retry_config *cfg, double first_start,
                          double now, double delay, double *delay_out)
{
    if (cfg->deadline <= 0) {
        *delay_out = delay;
        return true;
    }
    double left = first_start + cfg->deadline - now;
    if (!(left > 0)) {
        *delay_out = 0;
        return false;
    }
    *delay_out = delay < left ? delay : left;
    return true;
}

/* ---- classification ---- */

/* One row: an exact SQLSTATE (5 characters) or a class (2 characters). */
typedef struct {
    const char *pattern;    /* "40001" or "08" */
    bool retryable;         /* worth another attempt */
    bool unreachable;       /* the database is down or unreachable */
    const char *class_name; /* name for logs and the summary */
} s_rule;

/* Exact codes are tried before classes. Anything unmatched from the server
 * is "other", final (so is 55000, a snapshot that is gone: retrying cannot
 * bring it back). */
static const s_rule s_rules[] = {
    {"40001", true, false, "serialization"},
    {"40P01", true, false, "deadlock"},
    {"57P01", true, true, "shutdown"},   /* admin shutdown */
    {"57P02", true, true, "shutdown"},   /* crash shutdown */
    {"57P03", true, true, "shutdown"},   /* cannot connect now */
    {"55P03", true, false, "lock"},      /* lock not available */
    {"55006", true, false, "lock"},      /* object in use */
    {"57014", true, false, "cancelled"}, /* timeout, operator */
    {"58000", true, false, "system"},
    {"58030", true, false, "system"}, /* I/O error */
    {"3D000", false, false, "no-database"},
    {"0A000", false, false, "unsupported"},
    {"08", true, true, "connection"},
    {"53", true, false, "resources"},
    {"42", false, false, "syntax"}, /* also undefined, privilege */
    {"22", false, false, "data"},
    {"23", false, false, "integrity"},
    {"28", false, false, "auth"},
    {"XX", false, false, "internal"},
};

static const s_rule s_other = {"", false, false, "other"};
static const s_rule s_conn_lost = {"", true, true, "connection"};
static const retry_verdict s_crash = {true, "crash"};
static const retry_verdict s_heartbeat = {true, "heartbeat"};

/* Five characters of [0-9A-Z], as the server sends. */
static bool s_sqlstate_valid(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return i == PROTO_SQLSTATE_LEN;
}

/* The first row whose pattern has length len and matches err. */
static const s_rule *s_lookup(const retry_error *err, size_t len)
{
    for (size_t i = 0; i < sizeof s_rules / sizeof s_rules[0]; i++) {
        const s_rule *r = &s_rules[i];
        if (strlen(r->pattern) == len &&
            strncmp(r->pattern, err->sqlstate, len) == 0)
            return r;
    }
    return NULL;
}

/* The row for err's SQLSTATE or connection state. A valid SQLSTATE wins over
 * conn_lost: a failed connect with 28P01 (bad password) also has
 * CONNECTION_BAD, and must not be retried. */
static const s_rule *s_rule_for(const retry_error *err)
{
    if (s_sqlstate_valid(err->sqlstate)) {
        const s_rule *r = s_lookup(err, PROTO_SQLSTATE_LEN);
        if (!r) r = s_lookup(err, S_CLASS_LEN);
        return r ? r : &s_other;
    }
    return err->conn_lost ? &s_conn_lost : &s_other;
}

retry_verdict retry_classify(const retry_error *err)
{
    if (err->worker_crashed) return s_crash;
    if (err->heartbeat_lost) return s_heartbeat;
    const s_rule *r = s_rule_for(err);
    return (retry_verdict){r->retryable, r->class_name};
}

bool retry_is_connection_failure(const retry_error *err)
{
    if (err->side != PROTO_SIDE_SOURCE && err->side != PROTO_SIDE_TARGET)
        return false;
    return s_rule_for(err)->unreachable;
}

/* ---- decisions ---- */

static const char *const s_reason_names[] = {
    [RETRY_GO] = "retry",
    [RETRY_DISABLED] = "disabled",
    [RETRY_PERMANENT] = "permanent",
    [RETRY_EXHAUSTED] = "exhausted",
    [RETRY_PAST_DEADLINE] = "deadline",
};

const char *retry_reason_name(retry_reason reason)
{
    if ((size_t)reason >= sizeof s_reason_names / sizeof s_reason_names[0])
        return "unknown";
    return s_reason_names[reason];
}

retry_decision retry_decide(const mapper_retry_config *cfg, int attempts,
                            const retry_verdict *verdict, retry_rng *rng)
{
    assert(attempts >= 1);
    retry_decision d = {false, 0, RETRY_GO};
    if (!cfg->enabled)
        d.reason = RETRY_DISABLED;
    else if (!verdict->retryable)
        d.reason = RETRY_PERMANENT;
    else if (attempts > cfg->max_retries)
        d.reason = RETRY_EXHAUSTED;
    else {
        d.retry = true;
        d.delay = retry_delay(cfg, attempts, rng);
    }
    return d;
}

retry_decision retry_decide_chunk(const mapper_retry_config *cfg, int attempts,
                                  const retry_verdict *verdict,
                                  double first_start, clock_fn clock,
                                  retry_rng *rng)
{
    retry_decision d = retry_decide(cfg, attempts, verdict, rng);
    if (!d.retry) return d;
    double now = clock ? clock() : clock_now();
    if (!retry_deadline_clamp(cfg, first_start, now, d.delay, &d.delay)) {
        d.retry = false;
        d.delay = 0;
        d.reason = RETRY_PAST_DEADLINE;
    }
    return d;
}
