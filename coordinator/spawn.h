/* coordinator/spawn.h - start a local mapper-worker: fork, then exec in the
 * child (nothing of the parent's ZeroMQ context or PGconn is touched there).
 * Connection strings go through the child's environment, never argv. */
#ifndef MAPPER_SPAWN_H
#define MAPPER_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    char *bin;      /* mapper-worker path */
    char **envp;    /* environ with MAPPER_SOURCE_URL/TARGET_URL set */
    char *endpoint; /* coordinator's ipc:// endpoint */
    bool verbose;   /* pass -v */
} spawn_t;

/* Find the worker binary: explicit path, $MAPPER_WORKER_BIN, the directory
 * of the running executable, then $PATH. Returns a malloc'd path or NULL
 * (with a one-line reason in err). */
char *spawn_find_worker(const char *explicit_path, char *err, size_t errlen);

/* Prepare the environment handed to every worker: ours, with the source
 * and target connection strings, plus extra_env ("NAME=VALUE", NULL-ended;
 * may be NULL). */
bool spawn_init(spawn_t *s, const char *bin, const char *endpoint,
                const char *source, const char *target,
                const char *const *extra_env, bool verbose)
    __attribute__((warn_unused_result));

/* Start one worker with routing id `id`; returns its pid or -1 (logged). */
pid_t spawn_worker(const spawn_t *s, const char *id);

void spawn_free(spawn_t *s);

#endif
