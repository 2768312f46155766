/* coordinator/report.c - progress output: bar, log lines or JSON lines,
 * and the formatters that make them. */
#include "report.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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

/* ---------------------------------------------------------------------
 * Lines: pure formatters of a snapshot */

/* A line being built; `fits` turns false for good once output was cut. */
typedef struct {
    char *buf;  /* destination */
    size_t n;   /* its size */
    size_t len; /* characters written */
    bool fits;  /* nothing was cut so far */
} s_line_t;

static s_line_t s_line(char *buf, size_t n)
{
    if (buf && n > 0) buf[0] = '\0';
    return (s_line_t){.buf = buf, .n = n, .fits = buf && n > 0};
}

static void s_put(s_line_t *line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_put(s_line_t *line, const char *fmt, ...)
{
    if (!line->fits) return;
    size_t room = line->n - line->len;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line->buf + line->len, room, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= room) {
        line->fits = false;
        line->len = line->n - 1;
    } else {
        line->len += (size_t)w;
    }
}

/* A finite number for output (NaN and infinities become 0). */
static double s_finite(double v)
{
    return isfinite(v) ? v : 0.0;
}

/* 950, 12.3k, 350k, 1.2M, ... */
static void s_human(double v, char *dst, size_t n)
{
    static const char *const units[] = {"", "k", "M", "G", "T", "P"};
    size_t last = sizeof units / sizeof units[0] - 1;
    size_t u = 0;
    v = s_finite(v);
    if (v < 0.0) v = 0.0;
    while (v >= PROGRESS_HUMAN_STEP && u < last) {
        v /= PROGRESS_HUMAN_STEP;
        u++;
    }
    if (u == 0)
        snprintf(dst, n, "%.0f", v);
    else if (v < PROGRESS_HUMAN_DECIMALS_BELOW)
        snprintf(dst, n, "%.1f%s", v, units[u]);
    else
        snprintf(dst, n, "%.0f%s", v, units[u]);
}

/* MM:SS, or H:MM:SS from an hour on; "--:--" when unknown. */
static void s_duration(double seconds, bool known, char *dst, size_t n)
{
    if (!known || !isfinite(seconds) || seconds < 0.0 ||
        seconds > (double)LLONG_MAX) {
        snprintf(dst, n, "--:--");
        return;
    }
    long long t = llround(seconds);
    long long h = t / PROGRESS_SECONDS_PER_HOUR;
    long long m = t % PROGRESS_SECONDS_PER_HOUR / PROGRESS_SECONDS_PER_MINUTE;
    long long sec = t % PROGRESS_SECONDS_PER_MINUTE;
    if (h > 0)
        snprintf(dst, n, "%lld:%02lld:%02lld", h, m, sec);
    else
        snprintf(dst, n, "%02lld:%02lld", m, sec);
}

/* A phase's name, as the lines show it. */
static const char *s_phase_name(mapper_phase phase)
{
    return phase == MAPPER_PHASE_INDEXES ? "indexes"
           : phase == MAPPER_PHASE_SWAP  ? "swap"
                                         : "copy";
}

/* The job name as a quoted logfmt value: cut to PROGRESS_JOB_NAME_MAX,
 * \" and \\ escaped, control characters shown as '?'. */
static void s_put_job(s_line_t *line, const char *job)
{
    if (!job) job = "job";
    size_t len = strnlen(job, PROGRESS_JOB_NAME_MAX);
    s_put(line, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)job[i];
        if (c == '"' || c == '\\')
            s_put(line, "\\%c", c);
        else
            s_put(line, "%c", c < ' ' ? '?' : c);
    }
    s_put(line, "\"");
}

bool report_format_log(const mapper_progress_snapshot *snap, const char *job,
                       char *buf, size_t n)
{
    assert(snap);
    s_line_t line = s_line(buf, n);
    s_put(&line, "job=");
    s_put_job(&line, job);
    s_put(&line,
          " pct=%.1f chunks=%" PRId64 "/%" PRId64 " failed_chunks=%" PRId64
          " chunks_in_progress=%" PRId64 " rows=%" PRId64
          " rows_failed=%" PRId64 " rows_in_flight=%" PRId64
          " rows_total_estimate=%" PRId64 " bytes=%" PRId64
          " rows_per_s=%.0f bytes_per_s=%.0f elapsed_s=%.1f",
          s_finite(snap->progress_percentage), snap->completed_chunks,
          snap->total_chunks, snap->failed_chunks, snap->chunks_in_progress,
          snap->total_rows_successful, snap->total_rows_failed,
          snap->rows_in_flight, snap->rows_total_estimate,
          snap->bytes_processed, s_finite(snap->rows_per_second),
          s_finite(snap->bytes_per_second), s_finite(snap->elapsed_time));
    if (snap->eta_known)
        s_put(&line, " eta_s=%.1f", s_finite(snap->estimated_remaining_time));
    else
        s_put(&line, " eta_s=unknown");
    s_put(&line, " retries=%" PRId64 " workers=%d/%d", snap->retries,
          snap->workers_busy, snap->workers);
    if (snap->indexes_total > 0)
        s_put(&line, " indexes=%d/%d", snap->indexes_built,
              snap->indexes_total);
    s_put(&line, " mode=%s", mapper_mode_name(snap->mode));
    if (snap->run > 0) s_put(&line, " run=%" PRId64, snap->run);
    s_put(&line, " phase=%s", s_phase_name(snap->phase));
    if (snap->swap_s > 0) s_put(&line, " swap_s=%.3f", s_finite(snap->swap_s));
    return line.fits;
}

bool report_format_json(const mapper_progress_snapshot *snap, char *buf,
                        size_t n)
{
    assert(snap);
    s_line_t line = s_line(buf, n);
    s_put(&line,
          "{\"total_chunks\":%" PRId64 ",\"completed_chunks\":%" PRId64
          ",\"failed_chunks\":%" PRId64 ",\"chunks_in_progress\":%" PRId64
          ",\"total_rows_processed\":%" PRId64
          ",\"total_rows_successful\":%" PRId64
          ",\"total_rows_failed\":%" PRId64 ",\"elapsed_time\":%.3f",
          snap->total_chunks, snap->completed_chunks, snap->failed_chunks,
          snap->chunks_in_progress, snap->total_rows_processed,
          snap->total_rows_successful, snap->total_rows_failed,
          s_finite(snap->elapsed_time));
    if (snap->eta_known)
        s_put(&line, ",\"estimated_remaining_time\":%.3f",
              s_finite(snap->estimated_remaining_time));
    else
        s_put(&line, ",\"estimated_remaining_time\":null");
    s_put(&line,
          ",\"eta_known\":%s,\"progress_percentage\":%.3f"
          ",\"rows_total_estimate\":%" PRId64 ",\"rows_in_flight\":%" PRId64
          ",\"bytes_processed\":%" PRId64
          ",\"rows_per_second\":%.3f,\"bytes_per_second\":%.3f"
          ",\"retries\":%" PRId64 ",\"workers\":%d,\"workers_busy\":%d"
          ",\"indexes_total\":%d,\"indexes_built\":%d"
          ",\"mode\":\"%s\",\"run\":%" PRId64
          ",\"phase\":\"%s\",\"swap_s\":%.3f}",
          snap->eta_known ? "true" : "false",
          s_finite(snap->progress_percentage), snap->rows_total_estimate,
          snap->rows_in_flight, snap->bytes_processed,
          s_finite(snap->rows_per_second), s_finite(snap->bytes_per_second),
          snap->retries, snap->workers, snap->workers_busy, snap->indexes_total,
          snap->indexes_built, mapper_mode_name(snap->mode), snap->run,
          s_phase_name(snap->phase), s_finite(snap->swap_s));
    return line.fits;
}

bool report_format_bar(const mapper_progress_snapshot *snap, int width,
                       char *buf, size_t n)
{
    assert(snap);
    if (width <= 0) width = PROGRESS_BAR_DEFAULT_WIDTH;
    if (width > PROGRESS_BAR_MAX_WIDTH) width = PROGRESS_BAR_MAX_WIDTH;
    double pct = s_finite(snap->progress_percentage);
    if (pct < 0.0) pct = 0.0;
    if (pct > PROGRESS_PCT_MAX) pct = PROGRESS_PCT_MAX;
    int filled = (int)floor(pct / PROGRESS_PCT_MAX * width);

    char cells[PROGRESS_BAR_MAX_WIDTH + 1];
    memset(cells, PROGRESS_BAR_FILL, (size_t)filled);
    memset(cells + filled, PROGRESS_BAR_EMPTY, (size_t)(width - filled));
    cells[width] = '\0';

    char done[PROGRESS_FIELD_MAX], total[PROGRESS_FIELD_MAX];
    char rate[PROGRESS_FIELD_MAX];
    char elapsed[PROGRESS_FIELD_MAX], eta[PROGRESS_FIELD_MAX];
    s_human((double)snap->total_rows_processed + (double)snap->rows_in_flight,
            done, sizeof done);
    s_human((double)snap->rows_total_estimate, total, sizeof total);
    s_human(snap->rows_per_second, rate, sizeof rate);
    s_duration(snap->elapsed_time, true, elapsed, sizeof elapsed);
    s_duration(snap->estimated_remaining_time, snap->eta_known, eta,
               sizeof eta);

    s_line_t line = s_line(buf, n);
    s_put(&line, "[%s] %5.1f%% %s", cells, pct, done);
    if (snap->rows_total_estimate > 0) s_put(&line, "/%s", total);
    s_put(&line, " rows %s rows/s %.1f MB/s %s eta %s chunks %" PRId64 "/",
          rate, s_finite(snap->bytes_per_second) / PROGRESS_BYTES_PER_MB,
          elapsed, eta, snap->completed_chunks);
    if (snap->total_chunks > 0)
        s_put(&line, "%" PRId64, snap->total_chunks);
    else
        s_put(&line, "?");
    s_put(&line, " busy %d", snap->workers_busy);
    if (snap->workers > 0) s_put(&line, "/%d", snap->workers);
    if (snap->retries > 0) s_put(&line, " retries %" PRId64, snap->retries);
    if (snap->failed_chunks > 0)
        s_put(&line, " failed %" PRId64, snap->failed_chunks);
    if (snap->indexes_total > 0)
        s_put(&line, " indexes %d/%d", snap->indexes_built,
              snap->indexes_total);
    s_put(&line, " %s", mapper_mode_name(snap->mode));
    if (snap->run > 0) s_put(&line, " run %" PRId64, snap->run);
    if (snap->phase == MAPPER_PHASE_SWAP) s_put(&line, " swap");
    if (snap->swap_s > 0) s_put(&line, " %.2fs", s_finite(snap->swap_s));
    return line.fits;
}

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
        if (!report_format_bar(snap, 0, line, sizeof line)) break;
        snprintf(r->bar, sizeof r->bar, "%s", line);
        fprintf(r->out, REPORT_CLEAR_LINE "%s", r->bar);
        fflush(r->out);
        break;
    case MAPPER_PROGRESS_LOG:
        if (!report_format_log(snap, r->job, line, sizeof line)) break;
        if (r->own_out)
            fprintf(r->out, "%s\n", log_one_line(clean, sizeof clean, line));
        else
            log_info("progress %s", line);
        break;
    case MAPPER_PROGRESS_JSON:
        if (!report_format_json(snap, line, sizeof line)) break;
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
