/* coordinator/retry.h - the retry policy: configuration, backoff delays with
 * full jitter, a per-chunk deadline, and the table that says which errors
 * retry. */
#ifndef MAPPER_RETRY_H
#define MAPPER_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "defaults.h"
#include "mapper.h"
#include "proto.h"

/* A buffer this big holds any message the retry_config_* functions write. */
#define RETRY_ERR_MAX 256
/* At most this many bytes of a bad environment value are quoted back. */
#define RETRY_ENV_VALUE_SHOWN 64

#define RETRY_WUR __attribute__((warn_unused_result))

/* mapper_retry_config, the retry knobs, is public: see mapper.h. */

/* Fill cfg with the defaults: enabled, 3 retries, 1 s .. 60 s, base 2,
 * jitter on, no deadline. */
void retry_config_defaults(mapper_retry_config *cfg);

/* Overlay MAPPER_PARALLEL_RETRY_ENABLED (true/false/1/0/yes/no, any case)
 * and MAPPER_PARALLEL_MAX_RETRIES (a non-negative integer) on cfg; unset
 * variables change nothing. On a bad value returns false, leaves cfg
 * unchanged and writes a one-line message naming the variable and value into
 * err (nothing is logged: the caller reports it and exits with status 2). */
bool retry_config_from_env(mapper_retry_config *cfg, char *err,
                           size_t err_len) RETRY_WUR;

/* True when every field of cfg is usable; otherwise false with a one-line
 * message naming the first bad field in err. Nothing is logged. */
bool retry_config_validate(const mapper_retry_config *cfg, char *err,
                           size_t err_len) RETRY_WUR;

/* A small PRNG (splitmix64). Each process owns its own; never share one. */
typedef struct {
    uint64_t state; /* advances by a fixed odd step per draw */
} retry_rng;

/* Seed rng with a fixed value: the same seed gives the same sequence. */
void retry_rng_seed(retry_rng *rng, uint64_t seed);

/* Seed rng for this process: getrandom() (else /dev/urandom) mixed with the
 * pid and the clocks, so processes forked from one parent, even at the same
 * instant, draw different sequences. Call it after fork. */
void retry_rng_seed_process(retry_rng *rng);

/* The next 64 random bits. */
uint64_t retry_rng_next(retry_rng *rng);

/* A uniform double in [0, 1] (both ends included, 53-bit resolution). */
double retry_rng_uniform(retry_rng *rng);

/* The delay before retry k (k >= 1) without jitter:
 * min(max_delay, initial_delay * base^(k-1)). Never overflows, whatever k
 * (the cap is applied before the power grows past it). cfg must be valid. */
double retry_backoff(const mapper_retry_config *cfg, int k);

/* The delay before retry k: retry_backoff(), or with cfg->jitter a draw
 * uniform in [0, retry_backoff()] from rng (which may be NULL without
 * jitter). */
double retry_delay(const mapper_retry_config *cfg, int k, retry_rng *rng);

/* The chunk deadline: a chunk first started at first_start may retry at
 * `now` after `delay` only if its deadline has not passed; *delay_out is the
 * delay clamped so the retry starts no later than the deadline. Returns false
 * (and *delay_out = 0) when the deadline has passed. No deadline (0): always
 * true, delay unchanged. */
bool retry_deadline_clamp(const mapper_retry_config *cfg, double first_start,
                          double now, double delay, double *delay_out);

/* What went wrong with one chunk attempt, as the coordinator knows it. */
typedef struct {
    char sqlstate[PROTO_SQLSTATE_LEN + 1]; /* server SQLSTATE; "" when none */
    proto_side_t side;   /* which database reported it, or none */
    bool conn_lost;      /* libpq CONNECTION_BAD with no SQLSTATE */
    bool worker_crashed; /* the worker died or was killed mid-chunk */
    bool heartbeat_lost; /* a remote worker's heartbeats stopped */
} retry_error;

/* The classification of one error. */
typedef struct {
    bool retryable;         /* worth another attempt */
    const char *class_name; /* static short name for logs ("connection") */
} retry_verdict;

/* Classify err by the table in retry.c: a crash or lost heartbeat first,
 * then the SQLSTATE (exact code, else its 2-character class), then a lost
 * connection; anything else is "other" and not retryable. */
retry_verdict retry_classify(const retry_error *err);

/* True when err says a database (source or target) is unreachable: class
 * 08, 57P01..57P03, or a connection lost without SQLSTATE, with side set.
 * Used for outage detection. */
bool retry_is_connection_failure(const retry_error *err);

/* Why a decision came out as it did. */
typedef enum {
    RETRY_GO = 0,        /* retry after delay */
    RETRY_DISABLED,      /* retries are off in the config */
    RETRY_PERMANENT,     /* the error is not retryable */
    RETRY_EXHAUSTED,     /* max_retries already used */
    RETRY_PAST_DEADLINE, /* the chunk's deadline has passed */
} retry_reason;

/* The outcome of retry_decide / retry_decide_chunk. */
typedef struct {
    bool retry;          /* true: run the chunk again after delay */
    double delay;        /* seconds to wait first; 0 when !retry */
    retry_reason reason; /* why */
} retry_decision;

/* A short name for reason ("retry", "disabled", "permanent", "exhausted",
 * "deadline"). */
const char *retry_reason_name(retry_reason reason);

/* Decide after `attempts` failed attempts (>= 1), i.e. about retry number
 * `attempts`: retry when enabled, the verdict is retryable and attempts <=
 * max_retries; the delay comes from retry_delay(). Ignores the deadline. */
retry_decision retry_decide(const mapper_retry_config *cfg, int attempts,
                            const retry_verdict *verdict, retry_rng *rng);

/* retry_decide, then retry_deadline_clamp with now = clock() (NULL: clock_now)
 * for a chunk first started at first_start. */
retry_decision retry_decide_chunk(const mapper_retry_config *cfg, int attempts,
                                  const retry_verdict *verdict,
                                  double first_start, clock_fn clock,
                                  retry_rng *rng);

#endif
