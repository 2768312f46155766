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
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
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
    FILE *f = why ? NULL : fdopen(fd, "a");
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

bool reject_buf_take(reject_buf_t *buf, proto_msg_t *msg)
{
    if (buf->n == buf->cap) {
        size_t cap = buf->cap ? buf->cap * 2 : 16;
        reject_row_t *v = realloc(buf->v, cap * sizeof *v);
        if (!v) {
            log_error("out of memory holding rejected rows");
            return false;
        }
        buf->v = v;
        buf->cap = cap;
    }
    reject_row_t *r = &buf->v[buf->n++];
    r->row_index = msg->row_index;
    memcpy(r->sqlstate, msg->sqlstate, sizeof r->sqlstate);
    r->message = msg->message;
    r->row = msg->row;
    msg->message = msg->row = NULL;
    return true;
}

void reject_buf_clear(reject_buf_t *buf)
{
    for (size_t i = 0; i < buf->n; i++) {
        free(buf->v[i].message);
        free(buf->v[i].row);
    }
    free(buf->v);
    memset(buf, 0, sizeof *buf);
}

bool reject_write(reject_t *self, int64_t chunk_id, reject_buf_t *buf)
{
    for (size_t i = 0; i < buf->n; i++) {
        const reject_row_t *r = &buf->v[i];
        char line[PROTO_MAX_MESSAGE];
        log_one_line(line, sizeof line, r->message);
        fputs(r->row, self->rows);
        fprintf(self->log, "chunk %" PRId64 " row %" PRId64 " %s %s\n",
                chunk_id, r->row_index + 1, r->sqlstate, line);
    }
    /* On disk before the caller counts them written. */
    bool ok = fflush(self->rows) == 0 && fflush(self->log) == 0 &&
              !ferror(self->rows) && !ferror(self->log) &&
              fsync(fileno(self->rows)) == 0 && fsync(fileno(self->log)) == 0;
    if (!ok && !self->write_error)
        log_error("--reject-file %s: cannot write chunk %" PRId64
                  "'s %zu rejected rows: %s",
                  self->path, chunk_id, buf->n, strerror(errno));
    self->write_error |= !ok;
    reject_buf_clear(buf);
    return ok;
}

bool reject_write_committed(reject_t *self, ledger_t *ledger, int64_t chunk_id,
                            int64_t rejected)
{
    reject_buf_t buf = {0};
    if (!ledger_load_rejects(ledger, chunk_id, &buf)) return false;
    if ((int64_t)buf.n != rejected)
        log_error("chunk %" PRId64 ": %" PRId64 " rows were set aside but the "
                  "ledger holds %zu: the reject file lacks %" PRId64,
                  chunk_id, rejected, buf.n, rejected - (int64_t)buf.n);
    if (!reject_write(self, chunk_id, &buf)) return false;
    ledger_rejects_written(ledger, chunk_id);
    return true;
}
