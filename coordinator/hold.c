/* coordinator/hold.c - test-only holds at named points (hold.h). */
#include "hold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "defaults.h"
#include "log.h"

const char *hold_armed(const char *point, int k)
{
    const char *f = getenv(MAPPER_ENV_FAULT);
    const char *rel = getenv(MAPPER_ENV_FAULT_RELEASE);
    char want[64];
    snprintf(want, sizeof want, "pause-%s:%d", point, k);
    if (!f || strcmp(f, want) != 0 || !rel || access(rel, F_OK) == 0)
        return NULL;
    return rel;
}

void hold_until(const char *release)
{
    for (int i = 0;
         release && i < MAPPER_FAULT_HOLD_POLLS && access(release, F_OK); i++)
        nanosleep(&(struct timespec){0, MAPPER_FAULT_POLL_NS}, NULL);
}

void hold_at(const char *point, int k)
{
    const char *rel = hold_armed(point, k);
    if (!rel) return;
    log_warn("fault injection at %s %d: pausing", point, k);
    hold_until(rel);
    log_warn("fault injection at %s %d: going on", point, k);
}
