/* coordinator/report.c - progress output: bar, log lines or JSON lines. */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* The bar is redrawn at most this often (seconds). */
#define REPORT_BAR_INTERVAL_S 0.1
#define REPORT_CLEAR_LINE     "\r\033[K"
/* The progress file holds counts, no rows: its owner writes it. */
#define REPORT_FILE_MODE 0644

struct report_t {
    mapper_progress_mode mode;   /* resolved: never AUTO */
    FILE *out;                   /* where lines go */
    bool own_out;                /* out is a file we opened */
    double interval;             /* seconds between callbacks */
    char job[64];                /* job name on log lines */
    char bar[PROGRESS_LINE_MAX]; /* last bar drawn, "" when none */
    mapper_progress_fn user_fn;  /* the spec's progress_callback, or NULL */
    void *user;                  /* its progress_user */
    double user_interval;        /* seconds between its calls */
    double user_last;            /* elapsed_time of its last call */
    bool last;                   /* the next callback is the final one */
};

/* The log hook: clear the bar before a log line, redraw it after, so the
 * two never share a line. */
static void s_log_hook(void *arg, int after)
{
    report_t *r = arg;
    if (!r->bar[0]) return;
    if (after)
        fprintf(stderr, "%s", r->bar);
    else
        fputs(REPORT_CLEAR_LINE, stderr);
    fflush(stderr);
}

report_t *report_new(const mapper_job_spec *spec, char *err, size_t errlen)
{
    report_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->mode = spec->progress;
    if (r->mode == MAPPER_PROGRESS_AUTO)
        r->mode =
            isatty(STDERR_FILENO) ? MAPPER_PROGRESS_BAR : MAPPER_PROGRESS_LOG;
    r->out = stderr;
    if (spec->progress_file && r->mode != MAPPER_PROGRESS_NONE) {
        /* Never through a symbolic link, never inherited by a worker. */
        int fd = open(spec->progress_file,
                      O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
                      REPORT_FILE_MODE);
        r->out = fd >= 0 ? fdopen(fd, "a") : NULL;
        if (!r->out) {
            snprintf(err, errlen, "--progress-file %s: %s", spec->progress_file,
                     errno == ELOOP ? "it is a symbolic link (never followed)"
                                    : strerror(errno));
            if (fd >= 0) close(fd);
            free(r);
            return NULL;
        }
        r->own_out = true;
    }
    r->interval = spec->progress_interval > 0
                      ? spec->progress_interval
                      : PROGRESS_DEFAULT_UPDATE_INTERVAL_S;
    if (r->mode == MAPPER_PROGRESS_BAR) {
        r->interval = REPORT_BAR_INTERVAL_S;
        log_set_hook(s_log_hook, r);
    }
    snprintf(r->job, sizeof r->job, "%s", spec->table ? spec->table : "job");
    r->user_fn = spec->progress_callback;
    r->user = spec->progress_user;
    r->user_interval = spec->progress_interval > 0
                           ? spec->progress_interval
                           : PROGRESS_DEFAULT_UPDATE_INTERVAL_S;
    return r;
}

double report_interval(const report_t *self)
{
    return self->interval;
}

void report_last(report_t *self)
{
    if (self) self->last = true;
}

/* The embedder's callback: throttled by the snapshots' own clock, which
 * the tracker advances by at least its interval between calls. */
static void s_user_callback(report_t *r, const mapper_progress_snapshot *snap)
{
    if (!r->user_fn) return;
    if (!r->last && snap->elapsed_time - r->user_last < r->user_interval)
        return;
    r->user_last = snap->elapsed_time;
    r->user_fn(snap, r->user);
}

void report_callback(const mapper_progress_snapshot *snap, void *user)
{
    report_t *r = user;
    s_user_callback(r, snap);
    char line[PROGRESS_LINE_MAX], clean[PROGRESS_LINE_MAX];
    switch (r->mode) {
    case MAPPER_PROGRESS_BAR:
        if (!progress_format_bar(snap, 0, line, sizeof line)) break;
        snprintf(r->bar, sizeof r->bar, "%s", line);
        fprintf(r->out, REPORT_CLEAR_LINE "%s", r->bar);
        fflush(r->out);
        break;
    case MAPPER_PROGRESS_LOG:
        if (!progress_format_log(snap, r->job, line, sizeof line)) break;
        if (r->own_out)
            fprintf(r->out, "%s\n", log_one_line(clean, sizeof clean, line));
        else
            log_info("progress %s", line);
        break;
    case MAPPER_PROGRESS_JSON:
        if (!progress_format_json(snap, line, sizeof line)) break;
        fprintf(r->out, "%s\n", log_one_line(clean, sizeof clean, line));
        fflush(r->out);
        break;
    default:
        break;
    }
}

void report_destroy(report_t **self_p)
{
    if (!self_p || !*self_p) return;
    report_t *r = *self_p;
    if (r->mode == MAPPER_PROGRESS_BAR) {
        log_set_hook(NULL, NULL);
        if (r->bar[0]) {
            fputs(REPORT_CLEAR_LINE, r->out);
            fflush(r->out);
        }
    }
    if (r->own_out) fclose(r->out);
    free(r);
    *self_p = NULL;
}
