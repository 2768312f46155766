/* tests/embed_job.c - a C program that runs a job through libmapper, as an
 * embedding application would, using mapper.h alone:
 *   embed_job TABLE TARGET_TABLE WORKER_BIN [PROGRESS_LOG]
 * Connection strings come from MAPPER_SOURCE_URL / MAPPER_TARGET_URL. It
 * also has a child of its own, which exits during the job: the library
 * must leave it for the program to reap ("child=42"). With PROGRESS_LOG,
 * progress output is off (MAPPER_PROGRESS_NONE) and a progress callback
 * appends one line per call to PROGRESS_LOG:
 *   pct=P rows=R chunks=C/T elapsed=S */
#include <inttypes.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapper.h"

/* The progress callback: one line per call, flushed at once so that a
 * test can watch the file while the job runs. */
static void s_on_progress(const mapper_progress_snapshot *snap, void *user)
{
    FILE *log = user;
    fprintf(log,
            "pct=%.1f rows=%" PRId64 " chunks=%" PRId64 "/%" PRId64
            " elapsed=%.3f\n",
            snap->progress_percentage, snap->total_rows_successful,
            snap->completed_chunks, snap->total_chunks, snap->elapsed_time);
    fflush(log);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: embed_job TABLE TARGET_TABLE WORKER_BIN "
                        "[PROGRESS_LOG]\n");
        return 2;
    }
    pid_t child = fork();
    if (child == 0) _exit(42);
    mapper_job_spec spec;
    mapper_job_spec_init(&spec);
    spec.table = argv[1];
    spec.target_table = argv[2];
    spec.worker_bin = argv[3];
    spec.workers = 2;
    spec.chunk_size = 1000;
    FILE *log = NULL;
    if (argc == 5) {
        if (!(log = fopen(argv[4], "w"))) {
            perror(argv[4]);
            return 2;
        }
        spec.progress = MAPPER_PROGRESS_NONE;
        spec.progress_interval = 0.05;
        spec.progress_callback = s_on_progress;
        spec.progress_user = log;
    }
    mapper_result r;
    int rc = mapper_job_run(&spec, &r);
    printf("rc=%d rows=%" PRId64 " chunks=%" PRId64 "/%" PRId64 "\n", rc,
           r.total_rows_successful, r.chunks_succeeded, r.chunks_total);
    mapper_result_free(&r);
    if (log) fclose(log);
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child)
        printf("child lost\n");
    else
        printf("child=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return rc;
}
