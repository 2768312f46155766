/* worker/fault.c - test-only fault injection at named points (fault.h). */
#include "fault.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "defaults.h"
#include "log.h"

/* "pause-POINT:CHUNK" holds at POINT instead of dying: until the release
 * file exists (polled every FAULT_POLL_NS, at most FAULT_HOLD_S),
 * or for FAULT_PAUSE_S without one. */
#define FAULT_PAUSE   "pause-"
#define FAULT_PAUSE_S 3
#define FAULT_HOLD_S  120
#define FAULT_POLL_NS (10 * 1000 * 1000)

/* Hold until RELEASE exists (NULL: for FAULT_PAUSE_S) or SIGTERM or
 * SIGINT arrives; the caller's own checks then see why it was woken. The
 * caller blocked those signals before announcing the hold, and each wait
 * unblocks them atomically (pselect with the old mask), so a signal sent
 * the moment the hold is announced still ends it. */
static void s_fault_hold(const char *release, const sigset_t *old)
{
    if (!release || !*release) {
        struct timespec ts = {FAULT_PAUSE_S, 0};
        pselect(0, NULL, NULL, NULL, &ts, old);
        return;
    }
    long polls = (long)FAULT_HOLD_S * (1000000000L / FAULT_POLL_NS);
    for (long i = 0; i < polls && access(release, F_OK) != 0; i++) {
        struct timespec ts = {0, FAULT_POLL_NS};
        if (pselect(0, NULL, NULL, NULL, &ts, old) < 0 && errno == EINTR)
            return;
    }
}

/* Whether $MAPPER_FAULT (without its "pause-") names point and chunk_id:
 * a hold while its release file is missing, whichever attempt meets it;
 * any other fault on a first attempt. *pause_out tells the "pause-" form. */
static bool s_fault_named(const char *point, int64_t chunk_id, int32_t attempt,
                          bool *pause_out)
{
    const char *spec = getenv(MAPPER_ENV_FAULT);
    if (!spec) return false;
    const char *release = getenv(MAPPER_ENV_FAULT_RELEASE);
    *pause_out = !strncmp(spec, FAULT_PAUSE, strlen(FAULT_PAUSE));
    if (*pause_out) spec += strlen(FAULT_PAUSE);
    if (*pause_out && release && *release ? access(release, F_OK) == 0
                                          : attempt != 1)
        return false;
    size_t n = strlen(point);
    if (strncmp(spec, point, n) || spec[n] != ':') return false;
    return spec[n + 1] == '*' || strtoll(spec + n + 1, NULL, 10) == chunk_id;
}

bool fault_hit(const char *point, int64_t chunk_id, int32_t attempt)
{
    bool pause = false;
    if (!s_fault_named(point, chunk_id, attempt, &pause)) return false;
    log_warn("chunk %" PRId64 ": fault injection at %s", chunk_id, point);
    return true;
}

void fault_at(const char *point, int64_t chunk_id, int32_t attempt)
{
    bool pause = false;
    if (!s_fault_named(point, chunk_id, attempt, &pause)) return;
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, &old); /* see s_fault_hold */
    log_warn("chunk %" PRId64 ": fault injection at %s: %s", chunk_id, point,
             pause ? "pausing" : "SIGKILL");
    if (!pause) raise(SIGKILL);
    s_fault_hold(getenv(MAPPER_ENV_FAULT_RELEASE), &old);
    sigprocmask(SIG_SETMASK, &old, NULL);
    log_warn("chunk %" PRId64 ": fault injection at %s: going on", chunk_id,
             point);
}
