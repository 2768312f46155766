/* coordinator/spec.c - a job spec's defaults (mapper_job_spec_init),
 * mapper_job_spec_env: the seed's MAPPER_PARALLEL_* variables laid over a
 * job spec (mapper.h), and spec_check: the flags that cannot be (spec.h). */
#include "spec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "defaults.h"
#include "log.h"
#include "mapper.h"
#include "modes.h"
#include "proto.h"
#include "retry.h"

void mapper_job_spec_init(mapper_job_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    spec->workers = cpus > 0 ? (int)cpus : 1;
    spec->chunk_size = MAPPER_DEFAULT_CHUNK_SIZE;
    retry_config_defaults(&spec->retry);
    spec->outage_timeout = MAPPER_OUTAGE_TIMEOUT_S;
    spec->grace = MAPPER_GRACE_S;
    spec->worker_timeout = MAPPER_WORKER_TIMEOUT_S;
    spec->max_rejects = MAPPER_UNLIMITED_REJECTS;
}

/* MAPPER_PARALLEL_PROGRESS_ENABLED: true/false/1/0/yes/no (any case);
 * false turns progress output off, true leaves it as it is. */
static bool s_progress_env(mapper_progress_mode *mode, char *err, size_t errlen)
{
    const char *v = getenv(MAPPER_ENV_PROGRESS_ENABLED);
    if (!v) return true;
    static const char *const yes[] = {"true", "1", "yes"};
    static const char *const no[] = {"false", "0", "no"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcasecmp(v, yes[i])) return true;
        if (!strcasecmp(v, no[i])) {
            *mode = MAPPER_PROGRESS_NONE;
            return true;
        }
    }
    snprintf(err, errlen, "%s: expected true or false, got '%.*s'",
             MAPPER_ENV_PROGRESS_ENABLED, RETRY_ENV_VALUE_SHOWN, v);
    return false;
}

bool mapper_job_spec_env(mapper_job_spec *spec, char *err, size_t errlen)
{
    mapper_job_spec next = *spec;
    if (!retry_config_from_env(&next.retry, err, errlen) ||
        !s_progress_env(&next.progress, err, errlen))
        return false;
    *spec = next;
    return true;
}

/* A job id: 1 to PROTO_MAX_ID printable ASCII characters, no space. */
static bool s_valid_name(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > PROTO_MAX_ID) return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= ' ' || id[i] > '~') return false;
    return true;
}

bool spec_check(const mapper_job_spec *spec, char *err, size_t errlen)
{
    if (spec->table && spec->query)
        return log_reason(err, errlen,
                          "--table and --query exclude each other: give one");
    if (spec->query && (!spec->target_table || !*spec->target_table))
        return log_reason(err, errlen,
                          "--query needs --target-table (where its rows go)");
    if (!spec->query && (!spec->table || !*spec->table))
        return log_reason(err, errlen,
                          "no table or query given (--table or --query)");
    /* Half the limit leaves room for the column list and WHERE around it. */
    if (spec->query && strlen(spec->query) > PROTO_MAX_SQL / 2)
        return log_reason(err, errlen, "--query: longer than %d bytes",
                          PROTO_MAX_SQL / 2);
    if (spec->columns && !*spec->columns)
        return log_reason(err, errlen, "--columns: no column given");
    if (spec->if_target_missing != MAPPER_TARGET_CREATE &&
        spec->if_target_missing != MAPPER_TARGET_FAIL)
        return log_reason(err, errlen,
                          "if_target_missing: expected create or fail");
    if (spec->workers < (spec->listen ? 0 : 1) ||
        spec->workers > MAPPER_MAX_WORKERS)
        return log_reason(
            err, errlen, "workers must be between %d and %d, not %d%s",
            spec->listen ? 0 : 1, MAPPER_MAX_WORKERS, spec->workers,
            spec->listen ? "" : " (0 needs --listen)");
    if (spec->listen && strncmp(spec->listen, "tcp://", 6))
        return log_reason(err, errlen,
                          "--listen: expected tcp://ADDR:PORT, got '%s'",
                          spec->listen);
    /* Any process that reaches a plain port can say ready, loopback
     * included: plain TCP is the user's explicit choice. */
    if (spec->listen && !spec->curve_secret_key && !spec->insecure)
        return log_reason(
            err, errlen,
            "--listen %s: plain TCP lets any process that reaches "
            "the port take chunks: use CURVE (--curve-secret-key, "
            "--curve-allow) or say --insecure",
            spec->listen);
    if (spec->listen && spec->no_ledger)
        return log_reason(err, errlen,
                          "--no-ledger with --listen: a remote worker's done "
                          "cannot be checked without the ledger; drop one");
    if (spec->curve_allow && !spec->curve_secret_key)
        return log_reason(err, errlen,
                          "--curve-allow needs --curve-secret-key");
    if (!(spec->worker_timeout > 0))
        return log_reason(err, errlen, "worker timeout must be > 0");
    if (spec->max_inflight_chunks < 0 ||
        spec->max_inflight_chunks > MAPPER_MAX_INFLIGHT)
        return log_reason(
            err, errlen,
            "max inflight chunks must be between 1 and %d (0: the "
            "default), not %" PRId64,
            MAPPER_MAX_INFLIGHT, spec->max_inflight_chunks);
    if (spec->chunk_size < 1)
        return log_reason(err, errlen,
                          "chunk size must be at least 1, not %" PRId64,
                          spec->chunk_size);
    if (spec->resume && (spec->restart || spec->truncate || spec->no_ledger))
        return log_reason(err, errlen,
                          "--resume cannot be combined with --restart, "
                          "--truncate or --no-ledger");
    if (spec->resume_auto &&
        (spec->resume || spec->restart || spec->truncate || spec->no_ledger))
        return log_reason(err, errlen,
                          "--resume=auto cannot be combined with --resume, "
                          "--restart, --truncate or --no-ledger");
    if ((spec->resume || spec->restart) && spec->no_ledger)
        return log_reason(err, errlen,
                          "--restart needs the ledger (not --no-ledger)");
    if (spec->state_schema &&
        (!*spec->state_schema || strlen(spec->state_schema) > PROTO_MAX_ID / 2))
        return log_reason(err, errlen,
                          "--state-schema '%s': expected 1 to %d bytes",
                          spec->state_schema, PROTO_MAX_ID / 2);
    if (spec->job_id && !s_valid_name(spec->job_id))
        return log_reason(err, errlen,
                          "--job-id: expected 1 to %d printable characters "
                          "without spaces",
                          PROTO_MAX_ID);
    if (!(spec->grace >= 0))
        return log_reason(err, errlen, "grace must be >= 0 seconds");
    if (!retry_config_validate(&spec->retry, err, errlen) ||
        !modes_validate(spec, err, errlen))
        return false;
    if (!(spec->outage_timeout > 0))
        return log_reason(
            err, errlen, "outage timeout must be a positive number of seconds");
    if (spec->defer_indexes < MAPPER_DEFER_AUTO ||
        spec->defer_indexes > MAPPER_DEFER_OFF)
        return log_reason(err, errlen, "unknown defer_indexes mode %d",
                          (int)spec->defer_indexes);
    bool reject = spec->on_bad_rows == MAPPER_BAD_ROWS_REJECT;
    if (spec->on_bad_rows != MAPPER_BAD_ROWS_FAIL && !reject)
        return log_reason(err, errlen, "unknown on_bad_rows mode %d",
                          (int)spec->on_bad_rows);
    if (reject && (!spec->reject_file || !*spec->reject_file))
        return log_reason(err, errlen,
                          "--on-bad-rows=reject needs --reject-file FILE");
    if (!reject && spec->reject_file)
        return log_reason(err, errlen,
                          "--reject-file needs --on-bad-rows=reject");
    if (!reject && spec->max_rejects >= 0)
        return log_reason(err, errlen,
                          "--max-rejects needs --on-bad-rows=reject");
    return true;
}
