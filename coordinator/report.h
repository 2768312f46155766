/* coordinator/report.h - where progress goes: a live bar on a terminal,
 * key=value log lines, or JSON lines (to stderr or a file). */
#ifndef MAPPER_REPORT_H
#define MAPPER_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "mapper.h"
#include "progress.h"

typedef struct report_t report_t;

/* Open the output for spec's progress mode. MAPPER_PROGRESS_AUTO becomes a
 * bar when stderr is a terminal, log lines otherwise. Returns NULL (with a
 * one-line reason in err) when the progress file cannot be opened. */
report_t *report_new(const mapper_job_spec *spec, char *err, size_t errlen);

/* The progress tracker's callback; user is the report_t. It writes the
 * output, and calls the spec's progress_callback at most once per
 * progress_interval (by the snapshots' elapsed time) and on the last call. */
void report_callback(const mapper_progress_snapshot *snap, void *user);

/* Seconds between callbacks for this output (the bar redraws faster). */
double report_interval(const report_t *self);

/* The next callback is the job's last (progress_finish): it reaches the
 * spec's progress_callback whatever the interval. Accepts NULL. */
void report_last(report_t *self);

/* Clear the bar (before the summary) and close a progress file. */
void report_destroy(report_t **self_p);

/* Formatters: pure, write one NUL-terminated line without newline into buf
 * (size n). Return false when it did not fit (buf then holds a truncated
 * prefix); PROGRESS_LINE_MAX bytes always fit. */

/* Stable key=value fields: job (quoted) pct chunks
 * (done/total) failed_chunks chunks_in_progress rows (committed)
 * rows_failed rows_in_flight rows_total_estimate bytes rows_per_s
 * bytes_per_s elapsed_s eta_s ("unknown" or seconds) retries workers
 * (busy/configured). */
bool report_format_log(const mapper_progress_snapshot *snap, const char *job,
                       char *buf, size_t n) __attribute__((warn_unused_result));

/* One JSON object with every snapshot field under its own name; an
 * unknown estimated_remaining_time is null. */
bool report_format_json(const mapper_progress_snapshot *snap, char *buf,
                        size_t n) __attribute__((warn_unused_result));

/* A terminal line: "[####------] 42.0% 1.2M/2.9M rows 350k rows/s 12.3 MB/s
 * 01:23 eta 02:10 chunks 3/10 busy 4/4", then "retries N" and "failed N"
 * when non-zero. width is the bar's cells (<= 0: default, capped). */
bool report_format_bar(const mapper_progress_snapshot *snap, int width,
                       char *buf, size_t n) __attribute__((warn_unused_result));

#endif
