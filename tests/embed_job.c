/* tests/embed_job.c - a C program that runs a job through libmapper, as an
 * embedding application would: embed_job TABLE TARGET_TABLE WORKER_BIN.
 * Connection strings come from MAPPER_SOURCE_URL / MAPPER_TARGET_URL. It
 * also has a child of its own, which exits during the job: the library
 * must leave it for the program to reap ("child=42"). */
#include <inttypes.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapper.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: embed_job TABLE TARGET_TABLE WORKER_BIN\n");
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
    mapper_result r;
    int rc = mapper_job_run(&spec, &r);
    printf("rc=%d rows=%" PRId64 " chunks=%" PRId64 "/%" PRId64 "\n", rc,
           r.total_rows_successful, r.chunks_succeeded, r.chunks_total);
    mapper_result_free(&r);
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child)
        printf("child lost\n");
    else
        printf("child=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return rc;
}
