/* coordinator/spawn.c - fork+exec of local workers (spawn.h). */
#include "spawn.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "defaults.h"
#include "hold.h"
#include "log.h"

extern char **environ;

#define SPAWN_WORKER_NAME "mapper-worker"

static bool s_executable(const char *path)
{
    return access(path, X_OK) == 0;
}

char *spawn_find_worker(const char *explicit_path, char *err, size_t errlen)
{
    const char *env = getenv(MAPPER_ENV_WORKER_BIN);
    const char *want =
        explicit_path ? explicit_path : (env && *env ? env : NULL);
    if (want) {
        if (s_executable(want)) return strdup(want);
        snprintf(err, errlen, "worker binary %s: %s", want, strerror(errno));
        return NULL;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash && (size_t)(slash - self) + sizeof SPAWN_WORKER_NAME + 1 <
                         sizeof self) {
            strcpy(slash + 1, SPAWN_WORKER_NAME);
            if (s_executable(self)) return strdup(self);
        }
    }
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save)) {
        char cand[PATH_MAX];
        snprintf(cand, sizeof cand, "%s/%s", dir, SPAWN_WORKER_NAME);
        if (s_executable(cand)) {
            free(copy);
            return strdup(cand);
        }
    }
    free(copy);
    snprintf(err, errlen,
             "cannot find %s next to this program or in PATH (set %s)",
             SPAWN_WORKER_NAME, MAPPER_ENV_WORKER_BIN);
    return NULL;
}

static char *s_env_entry(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 2;
    char *e = malloc(n);
    if (e) snprintf(e, n, "%s=%s", name, value);
    return e;
}

bool spawn_init(spawn_t *s, const char *bin, const char *endpoint,
                const char *source, const char *target,
                const char *const *extra_env, bool verbose)
{
    memset(s, 0, sizeof *s);
    size_t n = 0, extra = 0;
    while (environ[n])
        n++;
    while (extra_env && extra_env[extra])
        extra++;
    s->envp = calloc(n + extra + 3, sizeof *s->envp);
    s->bin = strdup(bin);
    s->endpoint = strdup(endpoint);
    s->verbose = verbose;
    if (!s->envp || !s->bin || !s->endpoint) goto oom;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strncmp(environ[i], MAPPER_ENV_SOURCE "=",
                     sizeof MAPPER_ENV_SOURCE) ||
            !strncmp(environ[i], MAPPER_ENV_TARGET "=",
                     sizeof MAPPER_ENV_TARGET))
            continue;
        if (!(s->envp[j++] = strdup(environ[i]))) goto oom;
    }
    if (!(s->envp[j++] = s_env_entry(MAPPER_ENV_SOURCE, source ? source : "")))
        goto oom;
    if (!(s->envp[j++] = s_env_entry(MAPPER_ENV_TARGET, target ? target : "")))
        goto oom;
    for (size_t i = 0; i < extra; i++)
        if (!(s->envp[j++] = strdup(extra_env[i]))) goto oom;
    return true;
oom:
    log_error("out of memory preparing the worker environment");
    spawn_free(s);
    return false;
}

pid_t spawn_worker(const spawn_t *s, const char *id)
{
    char parent[32];
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    char *argv[] = {
        s->bin,     "--connect", s->endpoint, "--id",
        (char *)id, "--parent",  parent,      s->verbose ? "-v" : NULL,
        NULL};
    const char *hold = hold_armed("spawn", 1); /* tests: before exec */
    fflush(stdout);
    fflush(stderr);
    /* Until its exec the child runs the coordinator's signal handlers,
     * which write to the coordinator's self-pipe: a SIGTERM for a worker
     * that has not started (a job ending, a lost lease) told the
     * coordinator it was interrupted itself. So the stop signals are
     * blocked across the fork, and the child puts back their defaults
     * before it takes them. */
    sigset_t stops, old;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &stops, &old);
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGTERM, &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        hold_until(hold);
        execve(s->bin, argv, s->envp);
        _exit(127);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) log_error("fork: %s", strerror(fork_errno));
    return pid;
}

void spawn_free(spawn_t *s)
{
    if (!s) return;
    for (size_t i = 0; s->envp && s->envp[i]; i++)
        free(s->envp[i]);
    free(s->envp);
    free(s->bin);
    free(s->endpoint);
    memset(s, 0, sizeof *s);
}
