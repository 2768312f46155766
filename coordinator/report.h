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

#endif
