/* coordinator/summary.c - the job's result as a table and as JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mapper.h"

/* An error as it may leave the process: one line, no control characters,
 * no password (log_one_line). */
typedef struct {
    char s[1024];
} s_clean_t;

static s_clean_t s_clean(const char *text)
{
    s_clean_t c;
    log_one_line(c.s, sizeof c.s, text);
    return c;
}

static void s_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

/* s as a JSON string, or null when it is empty. */
static void s_json_string_or_null(FILE *out, const char *s)
{
    if (*s)
        s_json_string(out, s);
    else
        fputs("null", out);
}

static bool s_same_group(const mapper_chunk_error *a,
                         const mapper_chunk_error *b)
{
    return !strcmp(a->side, b->side) && !strcmp(a->sqlstate, b->sqlstate);
}

/* True when an earlier error has the same (side, SQLSTATE) as error i. */
static bool s_seen_before(const mapper_result *r, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (s_same_group(&r->chunk_errors[j], &r->chunk_errors[i])) return true;
    return false;
}

/* How many errors share error i's (side, SQLSTATE). */
static size_t s_group_count(const mapper_result *r, size_t i)
{
    size_t n = 0;
    for (size_t j = 0; j < r->n_chunk_errors; j++)
        if (s_same_group(&r->chunk_errors[j], &r->chunk_errors[i])) n++;
    return n;
}

const char *mapper_mode_name(mapper_write_mode mode)
{
    return mode == MAPPER_MODE_UPSERT    ? "upsert"
           : mode == MAPPER_MODE_REPLACE ? "replace"
                                         : "append";
}

void mapper_result_print(const mapper_result *r, FILE *out)
{
    fprintf(out,
            "\nmapper summary\n"
            "  total_rows_processed   %" PRId64 "\n"
            "  total_rows_successful  %" PRId64 "\n"
            "  total_rows_failed      %" PRId64 "\n"
            "  rows_rejected          %" PRId64 "\n"
            "  chunks_total           %" PRId64 "\n"
            "  chunks_succeeded       %" PRId64 "\n"
            "  chunks_failed          %" PRId64 "\n"
            "  elapsed_s              %.2f\n"
            "  rows_per_s             %.0f\n",
            r->total_rows_processed, r->total_rows_successful,
            r->total_rows_failed, r->rows_rejected, r->chunks_total,
            r->chunks_succeeded, r->chunks_failed, r->elapsed_s, r->rows_per_s);
    if (r->mode == MAPPER_MODE_APPEND)
        fprintf(out, "  mode                   append\n");
    if (r->mode == MAPPER_MODE_REPLACE && r->swapped)
        fprintf(out,
                "  mode                   replace (swapped in)\n"
                "  swap_s                 %.3f\n",
                r->swap_s);
    else if (r->mode == MAPPER_MODE_REPLACE)
        fprintf(out, "  mode                   replace (not swapped: the "
                     "target is as it was)\n");
    if (r->mode == MAPPER_MODE_UPSERT)
        fprintf(out,
                "  mode                   upsert\n"
                "  rows_inserted          %" PRId64 "\n"
                "  rows_updated           %" PRId64 "\n",
                r->rows_inserted, r->rows_updated);
    if (r->deferred_indexes[0])
        fprintf(out, "  index_build_s          %.2f (deferred: %s)\n",
                r->index_build_s, s_clean(r->deferred_indexes).s);
    if (r->n_chunk_errors) {
        fprintf(out, "\nfailed chunks\n  %-8s %-8s %-7s %-8s %-12s %s\n",
                "chunk", "attempts", "side", "sqlstate", "class", "error");
        for (size_t i = 0; i < r->n_chunk_errors; i++) {
            const mapper_chunk_error *e = &r->chunk_errors[i];
            fprintf(out, "  %-8" PRId64 " %-8d %-7s %-8s %-12s %s\n",
                    e->chunk_id, e->attempts, e->side,
                    e->sqlstate[0] ? e->sqlstate : "-", e->classification,
                    s_clean(e->error).s);
        }
        fprintf(out, "\nerrors by side and SQLSTATE\n");
        for (size_t i = 0; i < r->n_chunk_errors; i++) {
            if (s_seen_before(r, i)) continue;
            const mapper_chunk_error *e = &r->chunk_errors[i];
            fprintf(out, "  %-7s %-8s %zu chunk(s)\n", e->side,
                    e->sqlstate[0] ? e->sqlstate : "-", s_group_count(r, i));
        }
    }
    if (r->job_id[0])
        fprintf(out, "  job_id                 %s (run %" PRId64 ")%s\n",
                r->job_id, r->run, r->resumed ? " (resumed)" : "");
    if (r->resumed)
        fprintf(out, "\nresumed: chunks copied in this run read a new snapshot "
                     "of the source, not the first run's\n");
    if (!r->ledger && r->chunks_total > 0)
        fprintf(out, "\nno ledger: a chunk retried after its commit may have "
                     "been written twice\n");
    if (r->interrupted)
        fprintf(out,
                "\ninterrupted: %" PRId64 " of %" PRId64
                " chunks were not finished\n",
                r->chunks_total - r->chunks_succeeded - r->chunks_failed,
                r->chunks_total);
    if (r->error[0]) fprintf(out, "\nerror: %s\n", s_clean(r->error).s);
    fflush(out);
}

/* "index_build_s" and "deferred_indexes" (an array of names). */
static void s_json_indexes(const mapper_result *r, FILE *out)
{
    fprintf(out, ", \"index_build_s\": %.3f, \"deferred_indexes\": [",
            r->index_build_s);
    char names[sizeof r->deferred_indexes];
    snprintf(names, sizeof names, "%s", r->deferred_indexes);
    int i = 0;
    for (char *save = NULL, *n = strtok_r(names, ",", &save); n;
         n = strtok_r(NULL, ",", &save)) {
        fputs(i++ ? ", " : "", out);
        s_json_string(out, n);
    }
    fputs("]", out);
}

bool mapper_result_write_json(const mapper_result *r, FILE *out)
{
    fprintf(out,
            "{\"total_rows_processed\": %" PRId64
            ", \"total_rows_successful\": %" PRId64
            ", \"total_rows_failed\": %" PRId64 ", \"rows_rejected\": %" PRId64
            ", \"chunks_total\": %" PRId64 ", \"chunks_succeeded\": %" PRId64
            ", \"chunks_failed\": %" PRId64
            ", \"elapsed_s\": %.3f, \"rows_per_s\": %.1f, \"bytes\": %" PRId64
            ", \"interrupted\": %s, \"resumed\": %s, \"already_done\": %s"
            ", \"ledger\": %s, \"exit_code\": %d, \"error\": ",
            r->total_rows_processed, r->total_rows_successful,
            r->total_rows_failed, r->rows_rejected, r->chunks_total,
            r->chunks_succeeded, r->chunks_failed, r->elapsed_s, r->rows_per_s,
            r->bytes, r->interrupted ? "true" : "false",
            r->resumed ? "true" : "false", r->already_done ? "true" : "false",
            r->ledger ? "true" : "false", r->exit_code);
    s_json_string_or_null(out, s_clean(r->error).s);
    fprintf(out,
            ", \"planning_s\": %.3f, \"coord_max_rss_kb\": %" PRId64
            ", \"worker_max_rss_kb\": %" PRId64
            ", \"coord_cpu_s\": %.3f, \"workers_cpu_s\": %.3f",
            r->planning_s, r->coord_max_rss_kb, r->worker_max_rss_kb,
            r->coord_cpu_s, r->workers_cpu_s);
    s_json_indexes(r, out);
    fprintf(out, ", \"swapped\": %s, \"swap_s\": %.3f",
            r->swapped ? "true" : "false", r->swap_s);
    fprintf(out,
            ", \"mode\": \"%s\", \"rows_inserted\": %" PRId64
            ", \"rows_updated\": %" PRId64 ", \"run\": %" PRId64,
            mapper_mode_name(r->mode), r->rows_inserted, r->rows_updated,
            r->run);
    fputs(", \"job_id\": ", out);
    s_json_string_or_null(out, r->job_id);
    fputs(", \"chunk_errors\": [", out);
    for (size_t i = 0; i < r->n_chunk_errors; i++) {
        const mapper_chunk_error *e = &r->chunk_errors[i];
        fprintf(out, "%s{\"chunk_id\": %" PRId64 ", \"error\": ", i ? ", " : "",
                e->chunk_id);
        s_json_string(out, s_clean(e->error).s);
        fputs(", \"sqlstate\": ", out);
        s_json_string_or_null(out, e->sqlstate);
        fputs(", \"side\": ", out);
        s_json_string(out, e->side);
        fputs(", \"classification\": ", out);
        s_json_string(out, e->classification);
        fprintf(out, ", \"attempts\": %d}", e->attempts);
    }
    fputs("], \"error_groups\": [", out);
    bool first = true;
    for (size_t i = 0; i < r->n_chunk_errors; i++) {
        if (s_seen_before(r, i)) continue;
        const mapper_chunk_error *e = &r->chunk_errors[i];
        fputs(first ? "{\"side\": " : ", {\"side\": ", out);
        first = false;
        s_json_string(out, e->side);
        fputs(", \"sqlstate\": ", out);
        s_json_string_or_null(out, e->sqlstate);
        fprintf(out, ", \"count\": %zu}", s_group_count(r, i));
    }
    fputs("]}\n", out);
    return fflush(out) == 0 && !ferror(out);
}
