/* coordinator/reject.c - the reject file and its log (reject.h). */
#include "reject.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"

struct reject_t {
    FILE *rows;       /* the reject file: COPY text lines */
    FILE *log;        /* FILE.log: one line per row */
    char *path;       /* the reject file's name, for messages */
    bool write_error; /* a write failed (logged once) */
};

/* Open path for appending: created 0600 (it holds source rows), an
 * existing file made 0600, never through a symbolic link, never inherited
 * by a child. NULL with a one-line reason in err. */
static FILE *s_open(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
                  REJECT_FILE_MODE);
    struct stat st;
    const char *why = NULL;
    if (fd < 0)
        why = errno == ELOOP ? "it is a symbolic link (never followed)"
                             : strerror(errno);
    else if (fstat(fd, &st) || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if (fchmod(fd, REJECT_FILE_MODE))
        why = strerror(errno);
    FILE *f = why ? NULL : fdopen(fd, "a+");
    if (!f) {
        snprintf(err, errlen, "--reject-file: cannot open %s for appending: %s",
                 path, why ? why : strerror(errno));
        if (fd >= 0) close(fd);
    }
    return f;
}

reject_t *reject_new(const char *path, char *err, size_t errlen)
{
    reject_t *self = calloc(1, sizeof *self);
    size_t n = strlen(path) + strlen(REJECT_LOG_SUFFIX) + 1;
    char *log_path = malloc(n);
    if (!self || !log_path || !(self->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        free(log_path);
        reject_destroy(&self);
        return NULL;
    }
    snprintf(log_path, n, "%s%s", path, REJECT_LOG_SUFFIX);
    self->rows = s_open(path, err, errlen);
    bool failed = !self->rows || !(self->log = s_open(log_path, err, errlen));
    free(log_path);
    if (failed) reject_destroy(&self);
    return self;
}

void reject_destroy(reject_t **self_p)
{
    if (!self_p || !*self_p) return;
    reject_t *self = *self_p;
    if (self->rows) fclose(self->rows);
    if (self->log) fclose(self->log);
    free(self->path);
    free(self);
    *self_p = NULL;
}

/* What reject_write appends for buf: the rows, and the log lines
 * (malloc'd). False when out of memory. */
static bool s_render(int64_t chunk_id, const reject_buf_t *buf, char **rows,
                     size_t *nrows, char **lines, size_t *nlines)
{
    FILE *r = open_memstream(rows, nrows), *l = open_memstream(lines, nlines);
    for (size_t i = 0; r && l && i < buf->n; i++) {
        const reject_row_t *row = &buf->v[i];
        char line[PROTO_MAX_MESSAGE];
        log_one_line(line, sizeof line, row->message);
        fputs(row->row, r);
        fprintf(l, "chunk %" PRId64 " row %" PRId64 " %s %s\n", chunk_id,
                row->row_index + 1, row->sqlstate, line);
    }
    bool ok = r && l && !ferror(r) && !ferror(l);
    if (r) ok &= fclose(r) == 0;
    if (l) ok &= fclose(l) == 0;
    if (!ok) {
        if (r) free(*rows);
        if (l) free(*lines);
        *rows = *lines = NULL;
        log_error("out of memory writing rejected rows");
    }
    return ok;
}

/* Append text to f and sync it. */
static bool s_append(FILE *f, const char *text, size_t n)
{
    return fwrite(text, 1, n, f) == n && fflush(f) == 0 && !ferror(f) &&
           fsync(fileno(f)) == 0;
}

/* The file's size, -1 when unknown. */
static int64_t s_size(FILE *f)
{
    struct stat st;
    return fflush(f) == 0 && fstat(fileno(f), &st) == 0 ? (int64_t)st.st_size
                                                        : -1;
}

/* A write of text that began at byte at and was cut short (the process
 * died) is undone: when the file from at on is a prefix of text, it is
 * truncated back to at. Anything else there is left alone. */
static void s_undo_partial(FILE *f, int64_t at, const char *text, size_t n,
                           const char *path)
{
    int64_t size = s_size(f);
    if (at < 0 || size <= at) return;
    size_t have = (size_t)(size - at);
    char *b = have <= n ? malloc(have) : NULL;
    bool ours = b && pread(fileno(f), b, have, at) == (ssize_t)have &&
                !memcmp(b, text, have);
    free(b);
    if (ours && !ftruncate(fileno(f), at)) {
        log_info("--reject-file %s: removed the %zu bytes of an unfinished "
                 "write, to write them again whole",
                 path, have);
        return;
    }
    log_warn("--reject-file %s: %zu bytes were added after a write that may "
             "not have finished: left as they are",
             path, have);
}

/* Append rows and lines to both files and sync them; logged once. */
static bool s_write(reject_t *self, int64_t chunk_id, size_t n,
                    const char *rows, size_t nrows, const char *lines,
                    size_t nlines)
{
    bool ok =
        s_append(self->rows, rows, nrows) && s_append(self->log, lines, nlines);
    if (!ok && !self->write_error)
        log_error("--reject-file %s: cannot write chunk %" PRId64
                  "'s %zu rejected rows: %s",
                  self->path, chunk_id, n, strerror(errno));
    self->write_error |= !ok;
    return ok;
}

bool reject_write(reject_t *self, int64_t chunk_id, reject_buf_t *buf)
{
    char *rows = NULL, *lines = NULL;
    size_t nrows = 0, nlines = 0;
    bool ok = s_render(chunk_id, buf, &rows, &nrows, &lines, &nlines) &&
              s_write(self, chunk_id, buf->n, rows, nrows, lines, nlines);
    free(rows);
    free(lines);
    reject_buf_clear(buf);
    return ok;
}

bool reject_write_committed(reject_t *self, ledger_t *ledger, int64_t chunk_id,
                            int64_t rejected, const int64_t *at)
{
    reject_buf_t buf = {0};
    if (!ledger_load_rejects(ledger, chunk_id, &buf)) return false;
    if ((int64_t)buf.n != rejected)
        log_error("chunk %" PRId64 ": %" PRId64 " rows were set aside but the "
                  "ledger holds %zu: the reject file lacks %" PRId64,
                  chunk_id, rejected, buf.n, rejected - (int64_t)buf.n);
    char *rows = NULL, *lines = NULL;
    size_t nrows = 0, nlines = 0;
    bool ok = s_render(chunk_id, &buf, &rows, &nrows, &lines, &nlines);
    if (ok && at) {
        s_undo_partial(self->rows, at[0], rows, nrows, self->path);
        s_undo_partial(self->log, at[1], lines, nlines, self->path);
    }
    /* Where this write starts, recorded before it: a resume after a crash
     * in the middle of it can then undo what it left. */
    ok = ok &&
         ledger_rejects_at(ledger, chunk_id, s_size(self->rows),
                           s_size(self->log)) &&
         s_write(self, chunk_id, buf.n, rows, nrows, lines, nlines);
    if (ok) ledger_rejects_written(ledger, chunk_id);
    free(rows);
    free(lines);
    reject_buf_clear(&buf);
    return ok;
}
