/* coordinator/spec.c - a job spec's defaults (mapper_job_spec_init) and
 * mapper_job_spec_env: the seed's MAPPER_PARALLEL_* variables laid over a
 * job spec (mapper.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "defaults.h"
#include "mapper.h"
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
